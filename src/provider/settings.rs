//! What one provider client is built from: the validated settings of one configured
//! instance ([`ProviderSettings`]), its [`RetryPolicy`], and the keys only its kind takes
//! ([`KindSettings`]), which the adapter itself checks
//! ([`Adapter::validate_kind_settings`](super::Adapter::validate_kind_settings)).
//!
//! The config module (`src/config/`) reads the file and fills these in; nothing here
//! reads a file.

use super::{ErrorKind, ProviderError, ProviderKind};
use secrecy::SecretString;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A validated provider instance: everything a client needs to be built.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Unique instance name (logs, status, `--provider`).
    pub name: String,
    /// Which platform.
    pub kind: ProviderKind,
    /// Base URL without a trailing slash, e.g. `https://app.chatwoot.com`; the client
    /// appends the documented paths.
    pub base_url: url::Url,
    /// The keys only this kind takes (Chatwoot's `account_id`, MaiAgent's `inbox_id`, …),
    /// as the adapter normalised them.
    pub kind_settings: KindSettings,
    /// The API key. Never logged or printed.
    pub api_key: SecretString,
    /// Cron schedule override (6 fields, normalised).
    pub schedule: Option<String>,
    /// Whether contact-sync writes to this provider.
    pub push: bool,
    /// Client-side pacing; `None` = unpaced.
    pub requests_per_second: Option<f64>,
    /// Per-request timeout (default 30 s).
    pub request_timeout: Duration,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
}

/// How a provider's requests are retried: exponential backoff with jitter from
/// `base_delay`, capped at `max_delay`, at most `max_retries` retries and `max_elapsed` in
/// all; a `Retry-After` from the server replaces the computed delay (capped at `max_delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay (default 1 s).
    pub base_delay: Duration,
    /// Longest single delay (default 30 s).
    pub max_delay: Duration,
    /// Most retries of one request (default 5).
    pub max_retries: usize,
    /// Most total time spent retrying one request (default 2 min).
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retries: 5,
            max_elapsed: Duration::from_mins(2),
        }
    }
}

/// One value of a kind-specific key: a scalar as the config wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum SettingValue {
    /// A string (also integers too large for `i64`).
    Text(String),
    /// An integer.
    Integer(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A table or an array (no kind-specific key takes one); described for the message.
    Other(String),
}

impl SettingValue {
    /// The value as trimmed text (numbers and booleans as written), for keys that take a
    /// string or a number.
    pub fn to_text(&self) -> String {
        match self {
            SettingValue::Text(s) | SettingValue::Other(s) => s.trim().to_owned(),
            SettingValue::Integer(i) => i.to_string(),
            SettingValue::Float(f) => f.to_string(),
            SettingValue::Bool(b) => b.to_string(),
        }
    }
}

impl fmt::Display for SettingValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl From<&str> for SettingValue {
    fn from(value: &str) -> Self {
        SettingValue::Text(value.to_owned())
    }
}

impl From<String> for SettingValue {
    fn from(value: String) -> Self {
        SettingValue::Text(value)
    }
}

impl From<u64> for SettingValue {
    fn from(value: u64) -> Self {
        i64::try_from(value).map_or_else(|_| SettingValue::Text(value.to_string()), Self::Integer)
    }
}

impl From<i64> for SettingValue {
    fn from(value: i64) -> Self {
        SettingValue::Integer(value)
    }
}

impl Serialize for SettingValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SettingValue::Text(s) | SettingValue::Other(s) => serializer.serialize_str(s),
            SettingValue::Integer(i) => serializer.serialize_i64(*i),
            SettingValue::Float(f) => serializer.serialize_f64(*f),
            SettingValue::Bool(b) => serializer.serialize_bool(*b),
        }
    }
}

/// The keys of one `[[providers]]` table that only its kind takes, by name (sorted).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindSettings(BTreeMap<String, SettingValue>);

impl KindSettings {
    /// No kind-specific keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// This table with `key` set to `value`.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<SettingValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: &str, value: impl Into<SettingValue>) {
        self.0.insert(key.to_owned(), value.into());
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&SettingValue> {
        self.0.get(key)
    }

    /// The value of `key` as trimmed text; `None` when unset or blank.
    pub fn text(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(SettingValue::to_text)
            .filter(|s| !s.is_empty())
    }

    /// The keys and values, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SettingValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, SettingValue)> for KindSettings {
    fn from_iter<I: IntoIterator<Item = (String, SettingValue)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// One problem with a kind-specific key, found by the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindProblem {
    /// The key inside the provider table, e.g. `account_id`.
    pub key: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl KindProblem {
    /// A problem with `key`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// The error of building a client from settings the adapter refuses (settings made
/// without the config module, e.g. in tests): the first problem, named by its key.
pub fn refused(name: &str, problems: &[KindProblem]) -> ProviderError {
    let message = problems.first().map_or_else(
        || "the provider settings are invalid".to_owned(),
        |p| format!("{}: {}", p.key, p.message),
    );
    ProviderError::new(name, "build the client", ErrorKind::Permanent, message).with_hint(
        "Fix this provider's table in the config; `contact-sync check-config` lists every problem",
    )
}
