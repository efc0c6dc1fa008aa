//! [`ProviderError`]: what went wrong talking to a provider, whether retrying can help,
//! and what the human should do about it.

use std::time::Duration;

/// What kind of failure a provider call ended in. Decides retrying and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 408, 429, 5xx, timeouts, connection resets: worth retrying later.
    Transient,
    /// 401/403: the credentials are wrong or lack a permission. Retrying will not help.
    Auth,
    /// 404 on a specific record.
    NotFound,
    /// The record collides with an existing one (Chatwoot 422 "has already been taken",
    /// DM Champ "Contact already exists").
    AlreadyExists,
    /// Any other 4xx: the request is wrong for this provider. Retrying will not help.
    Permanent,
    /// The response could not be decoded (bad JSON, wrong types, HTML page, too large).
    Malformed,
    /// The listing changed under a page cursor (MaiAgent answers 404 "Invalid page." when
    /// contacts were deleted during a scan): the cursor is dead, restart the scan from the
    /// first page. Nothing is wrong with the provider or the config.
    ListingChanged,
    /// Not sent: the provider kept failing (a streak of timeouts, broken connections or
    /// 5xx after their retries) and was cut off for the rest of this cycle. Its remaining
    /// work is kept for the next cycle.
    CutOff,
}

/// A failed provider call, with the provider instance name, the operation, the HTTP status
/// (if one came back) and a hint for the human. Never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: {operation} failed{status_text}: {message}. {hint}", status_text = status_text(*.status))]
pub struct ProviderError {
    /// Provider instance name from the config.
    pub provider: String,
    /// What we were doing, e.g. "list contacts page 3".
    pub operation: String,
    /// Classification.
    pub kind: ErrorKind,
    /// HTTP status if a response arrived.
    pub status: Option<u16>,
    /// What happened (response body excerpt, decoder message), secrets removed.
    pub message: String,
    /// What to do about it.
    pub hint: String,
    /// Server-requested delay (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// For [`ErrorKind::AlreadyExists`]: which attributes collide (e.g. `email`).
    pub conflicting: Vec<String>,
}

fn status_text(status: Option<u16>) -> String {
    status.map_or_else(String::new, |s| format!(" (HTTP {s})"))
}

impl ProviderError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// A new error of `kind` with the default hint for that kind.
    pub fn new(
        provider: impl Into<String>,
        operation: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            provider: provider.into(),
            operation: operation.into(),
            kind,
            status: None,
            message: message.into(),
            hint: default_hint(kind).to_owned(),
            retry_after: None,
            conflicting: Vec::new(),
        }
    }

    /// Sets the HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Replaces the hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// Reclassifies the error as `kind`, with that kind's default hint.
    #[must_use]
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        default_hint(kind).clone_into(&mut self.hint);
        self
    }

    /// Sets the server-requested delay.
    #[must_use]
    pub fn with_retry_after(mut self, delay: Option<Duration>) -> Self {
        self.retry_after = delay;
        self
    }

    /// Sets the colliding attributes (for [`ErrorKind::AlreadyExists`]).
    #[must_use]
    pub fn with_conflicting(mut self, attributes: Vec<String>) -> Self {
        self.conflicting = attributes;
        self
    }

    /// Whether the listing changed under the cursor and the scan must restart from the
    /// first page ([`ErrorKind::ListingChanged`]).
    pub fn restart_listing(&self) -> bool {
        self.kind == ErrorKind::ListingChanged
    }
}

/// The hint shown when an adapter has nothing more specific to say.
pub fn default_hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Transient => {
            "The provider is busy or unreachable; contact-sync retries with backoff and the next cycle tries again"
        }
        ErrorKind::Auth => {
            "Check the API key (api_key_env / api_key_file) and that its user may read and write contacts"
        }
        ErrorKind::NotFound => {
            "The record or account does not exist: check account_id / inbox_id and base_url"
        }
        ErrorKind::AlreadyExists => {
            "Another contact in this provider already holds that value; it will be linked by lookup"
        }
        ErrorKind::Permanent => {
            "The provider refused the request; see the message, fix the data or the config, then rerun"
        }
        ErrorKind::Malformed => {
            "The provider sent a response contact-sync cannot read; nothing was changed for this page. Check base_url points at the API, then rerun"
        }
        ErrorKind::CutOff => {
            "The provider did not answer or kept failing; its remaining work is kept for the next cycle. Check that it is up and reachable (base_url, network), and its status page"
        }
        ErrorKind::ListingChanged => {
            "Contacts were removed while the listing was being read; the scan restarts from the first page"
        }
    }
}
