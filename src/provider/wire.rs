//! Tolerant decoding helpers shared by the adapters: JSON parsing that reports HTML pages
//! and bad JSON as [`DecodeError`] (never a panic), and readers that accept a JSON value
//! of any scalar type where a provider's docs disagree (phone as number or string, ids as
//! integer or string, `null` for "empty").
//!
//! Wire structs stay in each adapter; only the value-level helpers live here.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Why a response body could not be decoded. Always means [`super::ErrorKind::Malformed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    /// A decode error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Longest excerpt of a body quoted in a message.
const EXCERPT_CHARS: usize = 200;

/// Whether `body` looks like an HTML page (a proxy error page, a login page, the wrong
/// base URL).
pub fn looks_like_html(body: &[u8]) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let head = &body[start..body.len().min(start + 64)];
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    head.starts_with("<!doctype")
        || head.starts_with("<html")
        || head.starts_with("<?xml")
        || head.starts_with("<head")
        || head.starts_with("<body")
        || head.starts_with("<h1")
}

/// The first characters of `body` as text, whitespace collapsed, for messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4 * EXCERPT_CHARS)]);
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed.chars().take(EXCERPT_CHARS).collect();
    if collapsed.chars().count() > EXCERPT_CHARS || body.len() > 4 * EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// Parses `body` as JSON into `T`; an HTML page, an empty body or invalid JSON becomes a
/// [`DecodeError`] saying which.
pub fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    if looks_like_html(body) {
        return Err(DecodeError::new(format!(
            "expected JSON but got an HTML page: {}",
            excerpt(body)
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(DecodeError::new("expected JSON but the body was empty"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() {
            "truncated JSON"
        } else if e.is_syntax() {
            "invalid JSON"
        } else {
            "unexpected JSON shape"
        };
        DecodeError::new(format!("{what} ({e})"))
    })
}

/// Renders a JSON value as field text: strings as they are, `null` as `""`, integers in
/// decimal (a phone sent as a number becomes its digits), floats without a useless `.0`,
/// booleans as `true`/`false`, objects and arrays as compact JSON text.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e17 => {
                        format!("{f:.0}")
                    }
                    _ => n.to_string(),
                }
            }
        }
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// The text of the first of `keys` present in `obj` (`Some("")` for `null`), or `None`
/// when none is present.
pub fn text_of(obj: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| obj.get(*k)).map(value_text)
}

/// Like [`text_of`], but a key holding `null` or `""` does not hide a later key with a
/// value (`phoneNumber: null, phone_number: "+1…"`).
pub fn text_of_any(obj: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    let mut seen_empty = false;
    for key in keys {
        if let Some(v) = obj.get(*key) {
            let text = value_text(v);
            if !text.is_empty() {
                return Some(text);
            }
            seen_empty = true;
        }
    }
    seen_empty.then(String::new)
}

/// A contact field that must hold text: the first of `keys` with a value (a string, or a
/// number rendered in decimal — a phone sent as a number); `""` when every key is absent
/// or `null`. An object, array or boolean is the wrong type: [`DecodeError`].
pub fn field_text(obj: &Map<String, Value>, keys: &[&str]) -> Result<String, DecodeError> {
    for key in keys {
        match obj.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(v @ (Value::String(_) | Value::Number(_))) => return Ok(value_text(v)),
            Some(other) => {
                return Err(DecodeError::new(format!(
                    "contact `{key}` should be text but is {}: {}",
                    type_name(other),
                    excerpt(other.to_string().as_bytes())
                )));
            }
        }
    }
    Ok(String::new())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A record id: a non-empty string or an integer (rendered in decimal).
pub fn id_of(obj: &Map<String, Value>, keys: &[&str]) -> Result<String, DecodeError> {
    for key in keys {
        match obj.get(*key) {
            Some(Value::String(s)) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => return Ok(n.to_string()),
            Some(Value::Null) | None => {}
            Some(other) => {
                return Err(DecodeError::new(format!(
                    "contact `{key}` is not an id: {}",
                    excerpt(other.to_string().as_bytes())
                )));
            }
        }
    }
    Err(DecodeError::new(format!(
        "contact without an id (expected one of {keys:?})"
    )))
}

/// The object under the first of `keys` that holds one (a JSON string holding an object
/// is accepted too, for APIs whose docs type the bag as a string).
pub fn object_of(obj: &Map<String, Value>, keys: &[&str]) -> Option<Map<String, Value>> {
    keys.iter().find_map(|k| match obj.get(*k) {
        Some(Value::Object(map)) => Some(map.clone()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        },
        _ => None,
    })
}

/// `value` as an object, or a [`DecodeError`] naming `what`.
pub fn as_object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, DecodeError> {
    value.as_object().ok_or_else(|| {
        DecodeError::new(format!(
            "{what} is not a JSON object: {}",
            excerpt(value.to_string().as_bytes())
        ))
    })
}

/// An integer that may arrive as a number or a numeric string.
pub fn lenient_u64(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean that may arrive as `true`/`false` or as the strings `"true"`/`"false"`.
pub fn lenient_bool(value: Option<&Value>) -> Option<bool> {
    match value? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_u64().map(|v| v != 0),
        _ => None,
    }
}

/// A list of tag names from an array of strings or of objects carrying `name`/`title`.
pub fn tag_names(value: &Value) -> Result<Vec<String>, DecodeError> {
    let items = value.as_array().ok_or_else(|| {
        DecodeError::new(format!(
            "tags are not a JSON array: {}",
            excerpt(value.to_string().as_bytes())
        ))
    })?;
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => names.push(s.clone()),
            Value::Object(obj) => {
                if let Some(name) = text_of_any(obj, &["name", "title", "label", "tag"]) {
                    names.push(name);
                } else {
                    return Err(DecodeError::new(format!(
                        "tag object without a name: {}",
                        excerpt(item.to_string().as_bytes())
                    )));
                }
            }
            Value::Null => {}
            other => names.push(value_text(other)),
        }
    }
    Ok(names)
}

/// Digits of a phone number, for exact comparison across spellings (`+1 415-555-0123`
/// equals `+14155550123`).
pub fn phone_digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

/// A short human message from a provider's error body: `message`, `error`, `detail`,
/// `errors`, a bare JSON string, or the raw excerpt.
pub fn error_message(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return "empty response body".to_owned();
    }
    if looks_like_html(body) {
        return format!("an HTML page: {}", excerpt(body));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::String(s)) => excerpt(s.as_bytes()),
        Ok(Value::Object(obj)) => {
            for key in ["message", "error", "detail", "errors", "msg"] {
                if let Some(v) = obj.get(key) {
                    let text = match v {
                        Value::Array(items) => {
                            items.iter().map(value_text).collect::<Vec<_>>().join("; ")
                        }
                        other => value_text(other),
                    };
                    if !text.is_empty() {
                        return excerpt(text.as_bytes());
                    }
                }
            }
            excerpt(body)
        }
        _ => excerpt(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_render_as_digits() {
        assert_eq!(value_text(&json!(912_345_678)), "912345678");
        assert_eq!(value_text(&json!(912_345_678.0)), "912345678");
        assert_eq!(value_text(&json!(1.5)), "1.5");
        assert_eq!(value_text(&json!(null)), "");
        assert_eq!(value_text(&json!({"a": 1})), r#"{"a":1}"#);
    }

    #[test]
    fn html_is_reported_as_html() {
        let err =
            decode_json::<Value>(b"  <!DOCTYPE html><html><body>502</body></html>").unwrap_err();
        assert!(err.0.contains("HTML"), "{err}");
        let err = decode_json::<Value>(br#"{"a": [1, 2"#).unwrap_err();
        assert!(err.0.contains("truncated"), "{err}");
    }

    #[test]
    fn field_text_rejects_wrong_types() {
        let obj = json!({"a": null, "b": "", "c": 5, "d": {"value": "x"}, "e": true, "f": "x"});
        let obj = obj.as_object().unwrap();
        assert_eq!(field_text(obj, &["missing"]).unwrap(), "");
        assert_eq!(field_text(obj, &["a", "b", "f"]).unwrap(), "x");
        assert_eq!(field_text(obj, &["c"]).unwrap(), "5");
        assert!(field_text(obj, &["d"]).is_err());
        assert!(field_text(obj, &["e"]).is_err());
    }

    #[test]
    fn ids_accept_strings_and_integers_only() {
        let obj = json!({"id": 42, "uuid": "abc", "bad": [1]});
        let obj = obj.as_object().unwrap();
        assert_eq!(id_of(obj, &["id"]).unwrap(), "42");
        assert_eq!(id_of(obj, &["missing", "uuid"]).unwrap(), "abc");
        assert!(id_of(obj, &["bad"]).is_err());
        assert!(id_of(obj, &["missing"]).is_err());
    }

    #[test]
    fn error_messages_prefer_known_keys() {
        assert_eq!(error_message(br#""Invalid API key""#), "Invalid API key");
        assert_eq!(
            error_message(
                br#"{"message": "Email has already been taken", "attributes": ["email"]}"#
            ),
            "Email has already been taken"
        );
        assert_eq!(error_message(b"Retry later\n"), "Retry later");
    }
}
