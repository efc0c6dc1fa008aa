//! Configuration: figment layering (built-in defaults < TOML file < `CONTACT_SYNC_` env),
//! validation into [`Settings`], and secret loading. Nothing here sends a request or
//! creates a file.

use crate::provider::ProviderKind;
use secrecy::SecretString;
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
    /// Chatwoot account id (required for chatwoot).
    pub account_id: Option<u64>,
    /// Chatwoot: inbox id (integer, as text); MaiAgent: inbox UUID.
    pub inbox_id: Option<String>,
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

/// How a provider's requests are retried (DESIGN §6): exponential backoff with jitter from
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
