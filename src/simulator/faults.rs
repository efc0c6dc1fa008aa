//! Fault injection for the simulated providers: rules that make a server answer with an
//! error status, answer late, answer with a malformed body, or drop the connection.
//!
//! Rules are set per server, from tests through [`Faults`] (the handle
//! [`super::SimServer::faults`] returns) or from outside the process through the control
//! endpoint (`POST /__sim/faults` with a JSON [`FaultRule`], `DELETE /__sim/faults`). They
//! apply to the provider's routes only, never to `/__sim/`.
//!
//! Matching: a rule matches a request when its `method` (if any) equals the request's and
//! its `path` (if any) occurs in the request path (substring, so a prefix such as
//! `/api/v1/accounts/1/contacts` works too). Every matching rule counts the request; a rule
//! fires on every `every_nth` matching request it counts (1 = each one, 3 = the 3rd, 6th,
//! …) and at most `count` times if set. When several rules would fire on one request, the
//! first one added wins; the others still counted the request.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Size of the [`FaultAction::Oversized`] body when the rule gives none: 10 MB.
pub const TEN_MB: usize = 10 * 1024 * 1024;

/// What a firing rule does to the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status without running the handler. `body` defaults to empty,
    /// `content_type` to none (`text/plain` when a body is given).
    Status {
        /// HTTP status code.
        status: u16,
        /// A `Retry-After` header, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<RetryAfter>,
        /// Body text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// `Content-Type` of the body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
    },
    /// Wait this long, then serve normally.
    Delay {
        /// Milliseconds to wait.
        millis: u64,
    },
    /// Status 200, `application/json`, a body that is not JSON.
    InvalidJson,
    /// An HTML error page (as a proxy in front of the API would send) with this status,
    /// e.g. 200 or 502.
    HtmlPage {
        /// HTTP status code.
        status: u16,
    },
    /// The real response cut in the middle, as when a proxy or the network drops the
    /// connection mid-body: the status and the full `Content-Length` are sent, then half
    /// the body, then the connection is aborted. The client sees an incomplete message
    /// (a transport failure, retried), not a complete body holding broken JSON (that is
    /// [`FaultAction::InvalidJson`]).
    Truncated,
    /// The real response with every string value replaced by an object or a number.
    WrongTypes,
    /// The real response followed by whitespace up to `bytes` (still valid JSON, but far
    /// bigger than any page should be).
    Oversized {
        /// Total body size; [`TEN_MB`] when omitted.
        #[serde(default = "ten_mb")]
        bytes: usize,
    },
    /// Send the status line and headers, then abort the connection instead of a body.
    DropConnection,
}

fn ten_mb() -> usize {
    TEN_MB
}

/// A `Retry-After` header value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfter {
    /// Delay in seconds (`Retry-After: 3`).
    Seconds(u64),
    /// An HTTP date this many seconds after the response is sent
    /// (`Retry-After: Wed, 21 Oct 2026 07:28:00 GMT`).
    HttpDate(u64),
    /// This exact header text (for unparseable values).
    Raw(String),
}

impl FaultAction {
    /// Chatwoot's rate-limit answer (rack-attack default): 429, `text/plain`,
    /// `Retry later\n`, no `Retry-After`.
    pub fn chatwoot_throttled() -> Self {
        FaultAction::Status {
            status: 429,
            retry_after: None,
            body: Some("Retry later\n".to_owned()),
            content_type: Some("text/plain".to_owned()),
        }
    }

    /// A bare status with an empty body.
    pub fn status(status: u16) -> Self {
        FaultAction::Status {
            status,
            retry_after: None,
            body: None,
            content_type: None,
        }
    }

    /// 429 with `Retry-After` (no body).
    pub fn too_many_requests(retry_after: RetryAfter) -> Self {
        FaultAction::Status {
            status: 429,
            retry_after: Some(retry_after),
            body: None,
            content_type: None,
        }
    }

    /// A short name for logs (`status`, `delay`, `invalid_json`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            FaultAction::Status { .. } => "status",
            FaultAction::Delay { .. } => "delay",
            FaultAction::InvalidJson => "invalid_json",
            FaultAction::HtmlPage { .. } => "html_page",
            FaultAction::Truncated => "truncated",
            FaultAction::WrongTypes => "wrong_types",
            FaultAction::Oversized { .. } => "oversized",
            FaultAction::DropConnection => "drop_connection",
        }
    }
}

/// One fault rule (see the module doc for matching).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Only requests with this method (`"GET"`, `"POST"`, …); any when absent.
    #[serde(default, with = "method_opt", skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Only requests whose path contains this text; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Fire on every n-th matching request (1 = every one). 0 is read as 1.
    #[serde(default = "one")]
    pub every_nth: u32,
    /// Fire at most this many times; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// What to do.
    pub action: FaultAction,
}

fn one() -> u32 {
    1
}

impl FaultRule {
    /// A rule that fires on every request with `action`.
    pub fn new(action: FaultAction) -> Self {
        FaultRule {
            method: None,
            path: None,
            every_nth: 1,
            count: None,
            action,
        }
    }

    /// Only requests with `method`.
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only requests whose path contains `path`.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Fire on every `n`-th matching request.
    #[must_use]
    pub fn every_nth(mut self, n: u32) -> Self {
        self.every_nth = n;
        self
    }

    /// Fire at most `n` times.
    #[must_use]
    pub fn count(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path.as_deref().is_none_or(|p| path.contains(p))
    }
}

mod method_opt {
    use axum::http::Method;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
    pub fn serialize<S: Serializer>(m: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.serialize_str(m.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Method>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            Method::from_bytes(t.trim().to_ascii_uppercase().as_bytes())
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// A rule with its counters, as [`Faults::rules`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleStatus {
    /// The rule.
    #[serde(flatten)]
    pub rule: FaultRule,
    /// Matching requests counted so far.
    pub seen: u32,
    /// Times it fired.
    pub fired: u32,
}

/// The fault rules of one server. Cheap to clone (a shared handle).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<RuleStatus>>>,
}

impl Faults {
    /// Adds a rule (after the existing ones).
    pub fn add(&self, rule: FaultRule) {
        self.lock().push(RuleStatus {
            rule,
            seen: 0,
            fired: 0,
        });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The rules with their counters.
    pub fn rules(&self) -> Vec<RuleStatus> {
        self.lock().clone()
    }

    /// Total times any current rule fired.
    pub fn fired(&self) -> u32 {
        self.lock().iter().map(|r| r.fired).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RuleStatus>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the request against every matching rule and returns the action of the
    /// first rule that fires, if any.
    pub(crate) fn pick(&self, method: &Method, path: &str) -> Option<FaultAction> {
        let mut rules = self.lock();
        let mut chosen = None;
        for status in rules.iter_mut() {
            if !status.rule.matches(method, path) {
                continue;
            }
            status.seen = status.seen.saturating_add(1);
            let nth = status.rule.every_nth.max(1);
            let exhausted = status.rule.count.is_some_and(|c| status.fired >= c);
            if chosen.is_none() && !exhausted && status.seen % nth == 0 {
                status.fired += 1;
                chosen = Some(status.rule.action.clone());
            }
        }
        chosen
    }
}

/// Runs `req` through `next` with `action` applied.
pub(crate) async fn apply(action: FaultAction, req: Request, next: Next) -> Response {
    match action {
        FaultAction::Status {
            status,
            retry_after,
            body,
            content_type,
        } => status_response(status, retry_after.as_ref(), body, content_type.as_deref()),
        FaultAction::Delay { millis } => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            next.run(req).await
        }
        FaultAction::InvalidJson => simple(
            StatusCode::OK,
            "application/json; charset=utf-8",
            Body::from(
                r#"{"meta": {"count": 3, "current_page": 1}, "payload": [{"id": 1, "name": "#,
            ),
        ),
        FaultAction::HtmlPage { status } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let title = format!(
                "{} {}",
                code.as_u16(),
                code.canonical_reason().unwrap_or("Error")
            );
            let page = format!(
                "<!DOCTYPE html>\n<html>\n<head><title>{title}</title></head>\n<body>\n\
                 <center><h1>{title}</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n"
            );
            simple(code, "text/html; charset=utf-8", Body::from(page))
        }
        FaultAction::Truncated => {
            let (mut parts, bytes) = run_collect(req, next).await;
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            let head = bytes.slice(..bytes.len() / 2);
            // The status, headers and half the body go out (the pause lets them be
            // flushed), then the connection is aborted.
            let stream = futures::stream::iter([Ok(head)]).chain(futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "simulated truncated body",
                ))
            }));
            Response::from_parts(parts, Body::from_stream(stream))
        }
        FaultAction::WrongTypes => {
            let (parts, bytes) = run_collect(req, next).await;
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(mut value) => {
                    let mut counter = 0u64;
                    scramble(&mut value, &mut counter);
                    rebuild(parts, Bytes::from(value.to_string()))
                }
                Err(_) => rebuild(parts, bytes),
            }
        }
        FaultAction::Oversized { bytes: size } => {
            let (parts, bytes) = run_collect(req, next).await;
            let mut body = Vec::with_capacity(size.max(bytes.len()));
            body.extend_from_slice(&bytes);
            body.resize(size.max(bytes.len()), b' ');
            rebuild(parts, Bytes::from(body))
        }
        FaultAction::DropConnection => {
            let stream = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated dropped connection",
                ))
            });
            simple(
                StatusCode::OK,
                "application/json; charset=utf-8",
                Body::from_stream(stream),
            )
        }
    }
}

fn status_response(
    status: u16,
    retry_after: Option<&RetryAfter>,
    body: Option<String>,
    content_type: Option<&str>,
) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = content_type.or(body.as_ref().map(|_| "text/plain"));
    let mut response = Response::new(Body::from(body.unwrap_or_default()));
    *response.status_mut() = code;
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    let retry = retry_after.map(|r| match r {
        RetryAfter::Seconds(s) => s.to_string(),
        RetryAfter::HttpDate(s) => {
            httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(*s))
        }
        RetryAfter::Raw(text) => text.clone(),
    });
    if let Some(value) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn simple(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn run_collect(req: Request, next: Next) -> (axum::http::response::Parts, Bytes) {
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    (parts, bytes)
}

fn rebuild(mut parts: axum::http::response::Parts, bytes: Bytes) -> Response {
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// Replaces every string in `value` by an object (even positions) or a number (odd).
fn scramble(value: &mut Value, counter: &mut u64) {
    match value {
        Value::String(s) => {
            let original = std::mem::take(s);
            *counter += 1;
            *value = if counter.is_multiple_of(2) {
                serde_json::json!({ "value": original })
            } else {
                Value::from(original.len())
            };
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scramble(v, counter)),
        Value::Object(map) => map.values_mut().for_each(|v| scramble(v, counter)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}
