//! The HTTP plumbing every simulated provider uses: JSON answers, the error answer a
//! handler returns early ([`Reject`]), query-string parsing, reading an `Authorization`
//! header, the auth middleware ([`guard`] over [`Guarded`]) and a case-insensitive
//! substring test for search handlers.
//!
//! Shared by the simulators only: nothing here is shared with the clients in
//! `src/provider/` (a simulator built from the client's own helpers would agree with the
//! client's mistakes).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// An answer other than success: status and JSON body (kept small so `Result`s are cheap).
#[derive(Debug)]
pub struct Reject(pub StatusCode, pub Value);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        respond(self.0, self.1)
    }
}

/// What a handler returns: its answer, or a [`Reject`].
pub type Reply = Result<Response, Reject>;

/// `status` with `body` as JSON (`content-type: application/json`).
pub fn respond(status: StatusCode, body: impl Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The query string's pairs, decoded, in order, repeated keys kept.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

/// The first value of `key` in `pairs`, as sent.
pub fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The `Authorization` header as text (`None` when absent or not visible ASCII).
pub fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The credential of an `Authorization` value written `{scheme} {credential}`, the scheme
/// compared case-insensitively; the credential is everything after the first space.
pub fn credential<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (keyword, rest) = value.split_once(' ')?;
    keyword.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// A provider state whose routes are behind an auth check.
pub trait Guarded: Send + Sync + 'static {
    /// The answer refusing `req`, or `None` to let it through.
    fn refuse(&self, req: &Request) -> Option<Response>;
}

/// Middleware (`axum::middleware::from_fn_with_state(state, guard::<S>)`): lets a request
/// through to the routes only if [`Guarded::refuse`] has no objection.
pub async fn guard<S: Guarded>(State(st): State<Arc<S>>, req: Request, next: Next) -> Response {
    match st.refuse(&req) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}

/// Case-insensitive substring test. `needle` is already lower-case; `buf` is scratch
/// space reused across calls so a scan over a million contacts does not allocate.
pub fn contains_ci(buf: &mut String, hay: &str, needle: &str) -> bool {
    buf.clear();
    if hay.is_ascii() {
        buf.push_str(hay);
        buf.make_ascii_lowercase();
    } else {
        buf.extend(hay.chars().flat_map(char::to_lowercase));
    }
    buf.contains(needle)
}

/// Django REST framework's error body `{"detail": msg}` with `status`.
pub fn detail(status: StatusCode, msg: &str) -> Reject {
    Reject(status, serde_json::json!({ "detail": msg }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_ci_handles_unicode() {
        let mut buf = String::new();
        assert!(contains_ci(&mut buf, "Ada LOVELACE", "lovelace"));
        assert!(contains_ci(&mut buf, "Zoë ÄRGER", "ärger"));
        assert!(!contains_ci(&mut buf, "Ada", "bob"));
    }
}
