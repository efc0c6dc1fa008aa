//! The one HTTP driver every adapter sends through: a reqwest client built once per
//! provider instance (timeouts, user agent, no redirects), client-side pacing that learns
//! the provider's rate limit ([`Pacer`], [`super::pacing`]), retries with exponential backoff, jitter and `Retry-After`
//! ([`HttpDriver::send`]), a body size cap, error classification into
//! [`ErrorKind`], secret redaction for everything logged or put into an error, and the
//! request metrics.
//!
//! Adapters build [`ApiRequest`]s, say whether a second copy of the request would be
//! harmless ([`Idempotency`]) and decode the [`ApiResponse`]. They never see reqwest
//! errors, status-code tables or secrets.
//!
//! Metrics (through the `metrics` facade; the daemon installs the recorder):
//! `contact_sync_requests_total{provider,method,status_class}`,
//! `contact_sync_request_duration_seconds{provider}`,
//! `contact_sync_retries_total{provider}`, `contact_sync_rate_limited_total{provider}`,
//! `contact_sync_pacing_rate{provider,class}` (the learnt rate, requests a second, set
//! when a 429 lowers it).

// `ProviderError` is large by design (context for the human); errors are the cold path.
#![allow(clippy::result_large_err)]

use super::error::{ErrorKind, ProviderError};
pub use super::pacing::{Pacer, RequestClass};
use super::settings::{ProviderSettings, RetryPolicy};
use super::wire::{self, DecodeError};
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};
use url::Url;

/// Largest response body accepted for a successful answer; a larger one is
/// [`ErrorKind::Malformed`] and is not read further.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How much of an error response's body is read (for the message).
const ERROR_BODY_BYTES: usize = 64 * 1024;
/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("contact-sync/", env!("CARGO_PKG_VERSION"));
/// Upper bound of the TCP/TLS connect timeout (the request timeout bounds it too).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Query parameters whose values are credentials, compared case-insensitively.
const SENSITIVE_PARAMS: &[&str] = &[
    "apikey",
    "api_key",
    "api-key",
    "api_access_token",
    "access_token",
    "token",
    "userid",
    "secret",
    "password",
];
/// What replaces a secret in logs and errors.
const REDACTED: &str = "REDACTED";

/// Whether sending a request twice is harmless. Decides which failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// A second copy changes nothing (GET, PUT, PATCH, DELETE, replace-all POSTs, filter
    /// POSTs, upserts): retried on every transient failure (408, 429, 5xx, timeouts,
    /// broken connections).
    Idempotent,
    /// A second copy could duplicate something (creates, additive tag POSTs): retried only
    /// when the provider certainly did not process the first copy (429, connect errors).
    NonIdempotent,
}

/// How the API key travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// A header `name: prefix + key` (e.g. `authorization: Api-Key <key>`).
    Header {
        /// Header name (lower case).
        name: &'static str,
        /// Text before the key (`"Bearer "`, `""`).
        prefix: &'static str,
    },
    /// A query parameter on every request (DM Champ `apiKey`); redacted from every URL
    /// that is logged or put into an error.
    Query {
        /// Parameter name.
        param: &'static str,
    },
}

enum Auth {
    Header(HeaderName, HeaderValue),
    Query(&'static str, SecretString),
}

/// Removes credentials from URLs and text before they are logged or put into an error.
#[derive(Clone)]
pub struct Redactor {
    secrets: Vec<SecretString>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor([REDACTED])")
    }
}

impl Redactor {
    /// A redactor for `secret` (and its URL-encoded spelling).
    pub fn new(secret: &SecretString) -> Self {
        let raw = secret.expose_secret();
        let mut secrets = Vec::new();
        if raw.len() >= 4 {
            secrets.push(SecretString::from(raw.to_owned()));
            let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
            if encoded != raw {
                secrets.push(SecretString::from(encoded));
            }
        }
        Self { secrets }
    }

    /// `text` with every occurrence of the secret and every `apiKey=…`-style parameter
    /// value replaced by `REDACTED`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            let s = secret.expose_secret();
            if out.contains(s) {
                out = out.replace(s, REDACTED);
            }
        }
        redact_params_in_text(&out)
    }

    /// `url` without user info and with sensitive query values replaced, for logs.
    pub fn url(&self, url: &Url) -> String {
        let mut clean = url.clone();
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        if clean.query().is_some() {
            let pairs: Vec<(String, String)> = clean
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_sensitive_param(&k) {
                        REDACTED.to_owned()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            clean.query_pairs_mut().clear().extend_pairs(pairs);
        }
        self.scrub(clean.as_str())
    }
}

fn is_sensitive_param(name: &str) -> bool {
    SENSITIVE_PARAMS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// Replaces the value of every `name=value` whose name is sensitive, in free text (error
/// messages that quote a URL).
fn redact_params_in_text(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let hit = at_boundary
            .then(|| {
                SENSITIVE_PARAMS.iter().find(|p| {
                    bytes
                        .get(i..i + p.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(p.as_bytes()))
                        && bytes.get(i + p.len()) == Some(&b'=')
                })
            })
            .flatten();
        if let Some(param) = hit {
            let value_start = i + param.len() + 1;
            let mut end = value_start;
            while end < bytes.len()
                && !matches!(
                    bytes[end],
                    b'&' | b'#' | b'"' | b'\'' | b'<' | b'>' | b')' | b','
                )
                && !bytes[end].is_ascii_whitespace()
            {
                end += 1;
            }
            out.push_str(&text[copied..value_start]);
            if end > value_start {
                out.push_str(REDACTED);
            }
            copied = end;
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// One request as an adapter describes it. The URL never carries the credential: the
/// driver adds it at send time.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
    operation: String,
}

impl ApiRequest {
    /// A request with no body; `operation` names it in errors ("list contacts page 3").
    pub fn new(method: Method, url: Url, operation: impl Into<String>) -> Self {
        Self {
            method,
            url,
            body: None,
            operation: operation.into(),
        }
    }

    /// `GET url`.
    pub fn get(url: Url, operation: impl Into<String>) -> Self {
        Self::new(Method::GET, url, operation)
    }

    /// Sets a JSON body.
    #[must_use]
    pub fn json(mut self, body: &serde_json::Value) -> Self {
        self.body = Some(body.to_string().into_bytes());
        self
    }

    /// The operation name.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The URL (without credentials).
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// A response that was not retried away: any status except the transient ones (which
/// come back as errors once the retry budget is spent).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    status: StatusCode,
    content_type: Option<String>,
    location: Option<String>,
    body: Vec<u8>,
    operation: String,
}

impl ApiResponse {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The body (at most [`MAX_BODY_BYTES`]; for errors at most 64 KiB).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The operation this answers.
    pub fn operation(&self) -> &str {
        &self.operation
    }
}

/// The failure of one attempt, with what the retry decision needs.
struct Attempt {
    error: ProviderError,
    /// The provider certainly did not act on the request (429, connect failure).
    unprocessed: bool,
}

impl Attempt {
    fn retryable(&self, idempotency: Idempotency) -> bool {
        self.error.is_transient() && (idempotency == Idempotency::Idempotent || self.unprocessed)
    }
}

/// Consecutive failures (after their retries) that cut a provider off for the rest of a
/// cycle.
pub const CUT_OFF_STREAK: u32 = 5;

/// How one provider instance is faring in the current cycle: the streak of consecutive
/// failed attempts (timeouts, broken connections, 5xx — not 429, which is an answer), the
/// cycle's retry deadline, and whether the provider was cut off. Reset by the engine at
/// the start of each cycle ([`Health::begin_cycle`]).
#[derive(Debug, Default)]
pub struct Health {
    streak: AtomicU32,
    cut_off: std::sync::atomic::AtomicBool,
    deadline: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Health {
    /// Starts a cycle: no streak, not cut off, retries allowed until `deadline`.
    pub fn begin_cycle(&self, deadline: tokio::time::Instant) {
        self.streak.store(0, Ordering::Relaxed);
        self.cut_off.store(false, Ordering::Relaxed);
        if let Ok(mut d) = self.deadline.lock() {
            *d = Some(deadline);
        }
    }

    /// Whether the provider was cut off for the rest of this cycle.
    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Relaxed)
    }

    /// The current streak of consecutive failures.
    pub fn streak(&self) -> u32 {
        self.streak.load(Ordering::Relaxed)
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline.lock().ok().and_then(|d| *d)
    }

    /// Records the outcome of one attempt: an answer resets the streak; a failure that
    /// says nothing about the provider being alive extends it (and cuts it off at
    /// [`CUT_OFF_STREAK`]).
    fn record(&self, failed: bool) {
        if failed {
            let n = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= CUT_OFF_STREAK {
                self.cut_off.store(true, Ordering::Relaxed);
            }
        } else {
            self.streak.store(0, Ordering::Relaxed);
        }
    }

    /// Cuts the provider off now (the engine does when its budget is spent).
    pub fn cut_off(&self) {
        self.cut_off.store(true, Ordering::Relaxed);
    }
}

/// The HTTP side of one provider instance. Cheap to share by reference; never prints its
/// secret (`Debug` is redacted).
pub struct HttpDriver {
    health: Health,
    client: reqwest::Client,
    provider: String,
    auth: Auth,
    redactor: Redactor,
    pacer: Pacer,
    retry: RetryPolicy,
    auth_hint: String,
    max_body: usize,
}

impl fmt::Debug for HttpDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpDriver")
            .field("provider", &self.provider)
            .field("auth", &"[REDACTED]")
            .field("pacer", &self.pacer)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Builds the reqwest client: `connect_timeout`, `timeout`, user agent, no redirects (a
/// redirect could carry a credential to another host). Never `Client::new()`, which
/// panics on a machine without CA certificates.
pub fn build_client(request_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(request_timeout.min(MAX_CONNECT_TIMEOUT))
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

impl HttpDriver {
    /// A driver for the provider instance `settings`, authenticating with `auth`.
    /// `auth_hint` is what a 401/403 error tells the human.
    pub fn new(
        settings: &ProviderSettings,
        auth: AuthStyle,
        auth_hint: impl Into<String>,
    ) -> Result<Self, ProviderError> {
        let redactor = Redactor::new(&settings.api_key);
        let client = build_client(settings.request_timeout).map_err(|e| {
            ProviderError::new(
                &settings.name,
                "build the HTTP client",
                ErrorKind::Permanent,
                redactor.scrub(&error_chain(&e.without_url())),
            )
            .with_hint(
                "The TLS client could not be set up, usually because no CA certificates were found: install the ca-certificates package in the image (or point SSL_CERT_FILE at a CA bundle)",
            )
        })?;
        let auth = match auth {
            AuthStyle::Header { name, prefix } => {
                let name = HeaderName::from_static(name);
                let mut value =
                    HeaderValue::from_str(&format!("{prefix}{}", settings.api_key.expose_secret()))
                        .map_err(|_| {
                            ProviderError::new(
                                &settings.name,
                                "build the HTTP client",
                                ErrorKind::Permanent,
                                "the API key contains characters that cannot travel in an HTTP header",
                            )
                            .with_hint(
                                "Check api_key_env / api_key_file: the key must be one line of printable text (no trailing newline inside quotes)",
                            )
                        })?;
                value.set_sensitive(true);
                Auth::Header(name, value)
            }
            AuthStyle::Query { param } => Auth::Query(param, settings.api_key.clone()),
        };
        Ok(Self {
            client,
            provider: settings.name.clone(),
            auth,
            redactor,
            pacer: Pacer::new(
                &settings.name,
                settings.requests_per_second,
                settings.retry.base_delay,
            ),
            retry: settings.retry,
            auth_hint: auth_hint.into(),
            max_body: MAX_BODY_BYTES,
            health: Health::default(),
        })
    }

    /// How this provider instance fares in the current cycle.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Its pacing (the learnt rates).
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// The provider instance name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Sends `request`, retrying transient failures per the retry policy and
    /// `idempotency`. Returns every non-transient answer (2xx and 4xx alike) as an
    /// [`ApiResponse`]; transient failures left after the budget, transport errors and
    /// oversized bodies come back as a [`ProviderError`].
    pub async fn send(
        &self,
        request: ApiRequest,
        idempotency: Idempotency,
    ) -> Result<ApiResponse, ProviderError> {
        if self.health.is_cut_off() {
            return Err(ProviderError::new(
                &self.provider,
                &request.operation,
                ErrorKind::CutOff,
                format!(
                    "not sent: the provider was cut off for the rest of this cycle after {CUT_OFF_STREAK} consecutive failures"
                ),
            ));
        }
        let attempts = AtomicU32::new(0);
        let other_retries = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let policy = self.retry;
        // 429s are not counted against `max_retries`: the pacer makes every request wait
        // while the provider throttles (as long as the provider's window lasts), and a
        // throttled request is retried until the request's or the cycle's time is up.
        let backoff = ExponentialBuilder::new()
            .with_min_delay(policy.base_delay)
            .with_max_delay(policy.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(usize::MAX);
        let result = (|| self.attempt(&request, &attempts))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|a: &Attempt| a.retryable(idempotency) && !self.health.is_cut_off())
            .adjust(|a: &Attempt, next: Option<Duration>| {
                let next = next?;
                let throttled = a.error.status == Some(429);
                if !throttled
                    && other_retries.fetch_add(1, Ordering::Relaxed) as usize >= policy.max_retries
                {
                    return None;
                }
                // A 429's wait is the pacer's (the Retry-After, else its probe delay).
                let delay = if throttled {
                    a.error.retry_after.unwrap_or(Duration::ZERO)
                } else {
                    a.error.retry_after.unwrap_or(next)
                }
                .min(policy.max_delay);
                let within_request = started.elapsed() + delay <= policy.max_elapsed;
                // A provider in trouble or throttling is not retried past the cycle's
                // retry deadline.
                let within_cycle = (self.health.streak() == 0 && !throttled)
                    || self
                        .health
                        .deadline()
                        .is_none_or(|d| tokio::time::Instant::now() + delay <= d);
                (within_request && within_cycle).then_some(delay)
            })
            .notify(|a: &Attempt, delay: Duration| {
                metrics::counter!("contact_sync_retries_total", "provider" => self.provider.clone())
                    .increment(1);
                tracing::debug!(
                    provider = %self.provider,
                    operation = %request.operation,
                    delay_ms = delay.as_millis() as u64,
                    server_hint = a.error.retry_after.is_some(),
                    error = %a.error.message,
                    "retrying provider request"
                );
            })
            .await;
        result.map_err(|a| {
            let mut error = a.error;
            let n = attempts.load(Ordering::Relaxed);
            if n > 1 {
                error.message = format!("{} (gave up after {n} attempts)", error.message);
            }
            error
        })
    }

    /// Sends `request` and decodes a 2xx body with `decode`; any other status becomes the
    /// classified error ([`HttpDriver::status_error`]).
    pub async fn fetch<T>(
        &self,
        request: ApiRequest,
        idempotency: Idempotency,
        decode: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
    ) -> Result<T, ProviderError> {
        let response = self.send(request, idempotency).await?;
        self.decode(&response, decode)
    }

    /// Decodes a 2xx `response` with `decode` (a decode failure is
    /// [`ErrorKind::Malformed`]); a non-2xx status becomes the classified error.
    pub fn decode<T>(
        &self,
        response: &ApiResponse,
        decode: impl FnOnce(&[u8]) -> Result<T, DecodeError>,
    ) -> Result<T, ProviderError> {
        if !response.is_success() {
            return Err(self.status_error(response));
        }
        if response
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("text/html"))
        {
            return Err(self.malformed(
                &response.operation,
                &DecodeError::new(format!(
                    "expected JSON but got an HTML page: {}",
                    wire::excerpt(&response.body)
                )),
            ));
        }
        decode(&response.body).map_err(|e| {
            self.malformed(&response.operation, &e)
                .with_status(response.status())
        })
    }

    /// Checks that `response` is 2xx, ignoring the body.
    pub fn expect_success(&self, response: &ApiResponse) -> Result<(), ProviderError> {
        if response.is_success() {
            Ok(())
        } else {
            Err(self.status_error(response))
        }
    }

    /// A [`ErrorKind::Malformed`] error for `operation`.
    pub fn malformed(&self, operation: &str, error: &DecodeError) -> ProviderError {
        ProviderError::new(
            &self.provider,
            operation,
            ErrorKind::Malformed,
            self.redactor.scrub(&error.0),
        )
    }

    /// An error of `kind` for `operation` with `message` (secrets scrubbed).
    pub fn error(&self, operation: &str, kind: ErrorKind, message: &str) -> ProviderError {
        ProviderError::new(
            &self.provider,
            operation,
            kind,
            self.redactor.scrub(message),
        )
    }

    /// The classified error of a non-2xx `response`: 401/403 → Auth (with the provider's
    /// hint), 404 → NotFound, 409 → AlreadyExists, 408/429/5xx → Transient, 3xx and
    /// other 4xx → Permanent. The message is the provider's own error text, bounded and
    /// scrubbed.
    pub fn status_error(&self, response: &ApiResponse) -> ProviderError {
        let status = response.status();
        let kind = match status {
            401 | 403 => ErrorKind::Auth,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::AlreadyExists,
            408 | 429 | 500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        };
        let message = self.redactor.scrub(&wire::error_message(&response.body));
        let error = ProviderError::new(&self.provider, &response.operation, kind, message)
            .with_status(status);
        match status {
            401 | 403 => error.with_hint(self.auth_hint.clone()),
            300..=399 => {
                let to = response
                    .location
                    .as_deref()
                    .map_or_else(String::new, |l| format!(" to {l}"));
                error.with_hint(format!(
                    "The provider redirects{to}: set base_url to the address the API is really served at (redirects are not followed, so credentials never leave for another host)"
                ))
            }
            429 => error.with_hint(
                "The provider kept rate-limiting until the retry time was up; contact-sync now paces itself below the rate it learnt and the next cycle tries again (a requests_per_second set for this provider caps that rate)",
            ),
            _ => error,
        }
    }

    async fn attempt(
        &self,
        request: &ApiRequest,
        attempts: &AtomicU32,
    ) -> Result<ApiResponse, Attempt> {
        let result = self.attempt_once(request, attempts).await;
        let failed = match &result {
            Ok(_) => false,
            // A 429 is an answer: the provider is alive, only busy.
            Err(a) => a.error.is_transient() && a.error.status != Some(429),
        };
        self.health.record(failed);
        result
    }

    async fn attempt_once(
        &self,
        request: &ApiRequest,
        attempts: &AtomicU32,
    ) -> Result<ApiResponse, Attempt> {
        let turn = self.pacer.wait(RequestClass::of(&request.url)).await;
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let mut url = request.url.clone();
        let mut builder = match &self.auth {
            Auth::Query(param, secret) => {
                url.query_pairs_mut()
                    .append_pair(param, secret.expose_secret());
                self.client.request(request.method.clone(), url)
            }
            Auth::Header(name, value) => self
                .client
                .request(request.method.clone(), url)
                .header(name.clone(), value.clone()),
        };
        builder = builder.header(ACCEPT, "application/json");
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let method = request.method.as_str();
        let started = std::time::Instant::now();
        let outcome = match builder.send().await {
            Ok(response) => self.read_response(request, response).await,
            Err(e) => Err(self.transport_error(request, &e)),
        };
        let elapsed = started.elapsed();
        let status = match &outcome {
            Ok(r) => Some(r.status()),
            Err(a) => a.error.status,
        };
        let class = status.map_or("error", |s| match s {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        });
        metrics::counter!(
            "contact_sync_requests_total",
            "provider" => self.provider.clone(),
            "method" => method.to_owned(),
            "status_class" => class
        )
        .increment(1);
        metrics::histogram!("contact_sync_request_duration_seconds", "provider" => self.provider.clone())
            .record(elapsed.as_secs_f64());
        match (status, &outcome) {
            (Some(429), Err(a)) => {
                metrics::counter!("contact_sync_rate_limited_total", "provider" => self.provider.clone())
                    .increment(1);
                turn.throttled(a.error.retry_after);
            }
            (Some(_), _) => turn.answered(),
            (None, _) => turn.released(),
        }
        tracing::debug!(
            provider = %self.provider,
            method,
            url = %self.redactor.url(&request.url),
            status = status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
            latency_ms = elapsed.as_millis() as u64,
            attempt,
            "provider request"
        );
        outcome
    }

    async fn read_response(
        &self,
        request: &ApiRequest,
        mut response: reqwest::Response,
    ) -> Result<ApiResponse, Attempt> {
        let status = response.status();
        let headers = response.headers();
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let location =
            headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| match Url::parse(l) {
                    Ok(u) => self.redactor.url(&u),
                    Err(_) => self.redactor.scrub(l),
                });
        let limit = if status.is_success() {
            self.max_body
        } else {
            ERROR_BODY_BYTES
        };
        let too_large = |size: String| Attempt {
            error: ProviderError::new(
                &self.provider,
                &request.operation,
                ErrorKind::Malformed,
                format!(
                    "response body of {size} bytes exceeds the {} MiB limit; not read further",
                    limit / (1024 * 1024)
                ),
            )
            .with_status(status.as_u16()),
            unprocessed: false,
        };
        if status.is_success() && response.content_length().is_some_and(|l| l > limit as u64) {
            let size = response.content_length().unwrap_or_default().to_string();
            return Err(too_large(size));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        if status.is_success() {
                            return Err(too_large(format!("more than {limit}")));
                        }
                        body.extend_from_slice(&chunk[..limit - body.len()]);
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    let mut error = self.transport_error(request, &e);
                    error.error.status = Some(status.as_u16());
                    error.error.message = format!(
                        "the connection broke while reading the response: {}",
                        error.error.message
                    );
                    return Err(error);
                }
            }
        }
        let response = ApiResponse {
            status,
            content_type,
            location,
            body,
            operation: request.operation.clone(),
        };
        let code = status.as_u16();
        if matches!(code, 408 | 429 | 500..=599) {
            return Err(Attempt {
                error: self.status_error(&response).with_retry_after(retry_after),
                unprocessed: code == 429,
            });
        }
        Ok(response)
    }

    fn transport_error(&self, request: &ApiRequest, e: &reqwest::Error) -> Attempt {
        let detail = self.redactor.scrub(&error_chain(e));
        let (kind, message, hint) = if e.is_builder() {
            (
                ErrorKind::Permanent,
                format!("the request could not be built: {detail}"),
                "This is a bug or an unusable base_url; check base_url".to_owned(),
            )
        } else if e.is_timeout() {
            (
                ErrorKind::Transient,
                format!("timed out: {detail}"),
                "The provider did not answer within the request timeout; contact-sync retries with backoff and the next cycle tries again".to_owned(),
            )
        } else if e.is_connect() {
            (
                ErrorKind::Transient,
                format!("could not connect: {detail}"),
                "Check base_url and that the provider is reachable from this host (DNS, firewall, proxy)".to_owned(),
            )
        } else {
            (
                ErrorKind::Transient,
                detail,
                super::error::default_hint(ErrorKind::Transient).to_owned(),
            )
        };
        Attempt {
            error: ProviderError::new(&self.provider, &request.operation, kind, message)
                .with_hint(hint),
            unprocessed: e.is_connect(),
        }
    }
}

/// A reqwest error and its sources as one line, without the URL (which may carry a
/// credential).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    // The top-level Display of a reqwest error names the URL; describe it by kind instead.
    parts.push(
        if e.is_timeout() {
            "operation timed out"
        } else if e.is_connect() {
            "error connecting"
        } else if e.is_body() {
            "error reading the body"
        } else if e.is_decode() {
            "error decoding the body"
        } else if e.is_request() {
            "error sending the request"
        } else if e.is_builder() {
            "error building the request"
        } else {
            "HTTP error"
        }
        .to_owned(),
    );
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (relative to `now`; a date
/// in the past means "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `root` with `segments` appended as path segments (each one percent-encoded, so a tag
/// or id cannot change the path).
pub fn join(root: &Url, segments: &[&str]) -> Url {
    let mut url = root.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

/// The API root: `base` with `suffix` appended, unless `base`'s path already ends with a
/// prefix of `suffix` (a base URL given as `https://host/api` plus suffix `["api", "v1"]`
/// gives `https://host/api/v1`). Refuses URLs that cannot hold a path.
pub fn api_root(provider: &str, base: &Url, suffix: &[&str]) -> Result<Url, ProviderError> {
    if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
        return Err(ProviderError::new(
            provider,
            "build the client",
            ErrorKind::Permanent,
            format!("base_url `{base}` is not an http(s) URL"),
        )
        .with_hint("Set base_url to the provider's https:// address"));
    }
    let existing: Vec<&str> = base
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let overlap = (0..=suffix.len().min(existing.len()))
        .rev()
        .find(|k| existing.ends_with(&suffix[..*k]))
        .unwrap_or(0);
    let mut root = base.clone();
    root.set_query(None);
    root.set_fragment(None);
    Ok(join(&root, &suffix[overlap..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn urls_lose_their_keys() {
        let redactor = Redactor::new(&SecretString::from("s3cr3t-key"));
        let url =
            Url::parse("https://api.dmchamp.com/v1/contacts?phoneNumber=%2B1555&apiKey=s3cr3t-key")
                .unwrap();
        let shown = redactor.url(&url);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("apiKey=REDACTED"), "{shown}");
        assert!(shown.contains("phoneNumber=%2B1555"), "{shown}");
        let text = redactor.scrub("GET https://x/y?APIKEY=other&x=1 failed, key s3cr3t-key");
        assert_eq!(
            text,
            "GET https://x/y?APIKEY=REDACTED&x=1 failed, key REDACTED"
        );
    }

    #[test]
    fn api_roots_do_not_double_prefixes() {
        let root = |base: &str, suffix: &[&str]| {
            api_root("p", &Url::parse(base).unwrap(), suffix)
                .unwrap()
                .to_string()
        };
        assert_eq!(root("https://h", &["api", "v1"]), "https://h/api/v1");
        assert_eq!(root("https://h/", &["api", "v1"]), "https://h/api/v1");
        assert_eq!(root("https://h/api", &["api", "v1"]), "https://h/api/v1");
        assert_eq!(root("https://h/api/v1", &["api", "v1"]), "https://h/api/v1");
        assert_eq!(
            root("https://h/chatwoot", &["api"]),
            "https://h/chatwoot/api"
        );
        assert_eq!(
            join(
                &Url::parse("https://h/api").unwrap(),
                &["contacts", "a/b", ""]
            )
            .to_string(),
            "https://h/api/contacts/a%2Fb/"
        );
    }

    #[test]
    fn only_transient_unprocessed_failures_retry_non_idempotent_requests() {
        let err = |kind| ProviderError::new("p", "op", kind, "m");
        let a = Attempt {
            error: err(ErrorKind::Transient),
            unprocessed: false,
        };
        assert!(a.retryable(Idempotency::Idempotent));
        assert!(!a.retryable(Idempotency::NonIdempotent));
        let a = Attempt {
            error: err(ErrorKind::Transient),
            unprocessed: true,
        };
        assert!(a.retryable(Idempotency::NonIdempotent));
        let a = Attempt {
            error: err(ErrorKind::Permanent),
            unprocessed: true,
        };
        assert!(!a.retryable(Idempotency::Idempotent));
    }
}
