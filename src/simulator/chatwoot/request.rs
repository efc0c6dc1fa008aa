//! How Chatwoot's Rails stack reads a request and words an error: query parameters
//! (repeated keys, `labels[]`), the page parameter read like Ruby's `to_i`, JSON bodies,
//! permitted scalar parameters and Rails' boolean cast; the 404 / 422 answers shared by
//! every handler.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::PAGE_SIZE;
use crate::simulator::http::{Reject, Reply, query_pairs, respond};

// ---------------------------------------------------------------------------------------
// Responses and request helpers

#[allow(clippy::unnecessary_wraps)] // the success arm of every handler
pub(super) fn ok(body: &Value) -> Reply {
    Ok(respond(StatusCode::OK, body))
}

pub(super) fn not_found() -> Reject {
    Reject(
        StatusCode::NOT_FOUND,
        json!({"error": "Resource could not be found"}),
    )
}

pub(super) fn invalid(errors: &[(&'static str, String)]) -> Reject {
    let message = errors
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut attributes: Vec<&str> = Vec::new();
    for (a, _) in errors {
        if !attributes.contains(a) {
            attributes.push(a);
        }
    }
    Reject(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": message, "attributes": attributes}),
    )
}

pub(super) fn unprocessable(error: &str) -> Reject {
    Reject(StatusCode::UNPROCESSABLE_ENTITY, json!({"error": error}))
}

/// Query parameters as sent (repeated keys kept, in order).
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn parse(raw: Option<&str>) -> Self {
        Params(query_pairs(raw))
    }

    /// The last value of `key` (as Rails keeps it).
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `labels[]=a&labels[]=b` (or `labels=a,b`), blanks dropped.
    pub(super) fn labels(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| k == "labels[]")
            .map(|(_, v)| v.clone())
            .collect();
        if out.is_empty()
            && let Some(v) = self.get("labels")
        {
            out = v.split(',').map(str::to_owned).collect();
        }
        out.into_iter()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    pub(super) fn include_contact_inboxes(&self) -> bool {
        match self.get("include_contact_inboxes") {
            Some(v) if !v.trim().is_empty() => v == "true",
            _ => true,
        }
    }

    /// The raw `sort` parameter (see `listing::Sort::parse`).
    pub(super) fn sort(&self) -> Option<&str> {
        self.get("sort")
    }
}

/// The request page: Kaminari reads the number like Ruby's `to_i` (leading digits, `1` for
/// anything below 1); `meta.current_page` echoes the raw parameter, or the integer 1.
pub(super) struct PageParam {
    pub(super) number: u64,
    pub(super) echo: Value,
}

impl PageParam {
    pub(super) fn from(raw: Option<&str>) -> Self {
        match raw {
            None => PageParam {
                number: 1,
                echo: json!(1),
            },
            Some(raw) => PageParam {
                number: u64::try_from(ruby_to_i(raw)).unwrap_or(1).max(1),
                echo: json!(raw),
            },
        }
    }

    pub(super) fn offset(&self) -> usize {
        usize::try_from((self.number - 1).saturating_mul(PAGE_SIZE as u64)).unwrap_or(usize::MAX)
    }
}

/// Ruby's `String#to_i`: optional leading whitespace and sign, then leading digits; 0 if
/// none.
pub(super) fn ruby_to_i(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg { -n } else { n }
}

pub(super) fn parse_body(bytes: &Bytes) -> Result<Map<String, Value>, Reject> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Ok(Map::new()),
        Err(_) => Err(Reject(
            StatusCode::BAD_REQUEST,
            json!({"status": 400, "error": "Bad Request"}),
        )),
    }
}

/// A scalar parameter that was sent.
pub(super) enum Sent {
    Null,
    Text(String),
}

impl Sent {
    pub(super) fn text(self) -> Option<String> {
        match self {
            Sent::Null => None,
            Sent::Text(t) => Some(t),
        }
    }
}

/// A permitted scalar parameter: `None` when absent or not a scalar (Rails' `permit` drops
/// arrays and hashes).
pub(super) fn scalar(params: &Map<String, Value>, key: &str) -> Option<Sent> {
    match params.get(key)? {
        Value::Null => Some(Sent::Null),
        Value::String(s) => Some(Sent::Text(s.clone())),
        Value::Number(n) => Some(Sent::Text(n.to_string())),
        Value::Bool(b) => Some(Sent::Text(b.to_string())),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// The text of a scalar parameter (absent, `null` and non-scalars give `None`).
pub(super) fn text(params: &Map<String, Value>, key: &str) -> Option<String> {
    scalar(params, key).and_then(Sent::text)
}

pub(super) fn object(params: &Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    match params.get(key)? {
        Value::Object(m) => Some(m.clone()),
        _ => None,
    }
}

/// Rails' boolean cast.
pub(super) fn boolean(params: &Map<String, Value>, key: &str) -> Option<bool> {
    match params.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_i64() != Some(0)),
        Value::String(s) => Some(!matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "f" | "false" | "off" | "n" | "no"
        )),
        _ => None,
    }
}

pub(super) fn value_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruby_to_i_reads_leading_digits() {
        assert_eq!(ruby_to_i("2"), 2);
        assert_eq!(ruby_to_i("2abc"), 2);
        assert_eq!(ruby_to_i("abc"), 0);
        assert_eq!(ruby_to_i(" -3"), -3);
        assert_eq!(ruby_to_i(""), 0);
    }
}
