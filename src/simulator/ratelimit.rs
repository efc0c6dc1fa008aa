//! Rate limits for the simulated providers, enforced as the platforms do (`contact-sync
//! simulate --rate-limits real`): fixed windows (rack-attack keys its counters by
//! `epoch / period`), a request over a limit answered with the provider's own 429 and
//! never reaching the handler. Off by default, so tests and the call floor are unaffected.
//!
//! Each simulated provider states its limits ([`super::SimulatedProvider::rate_limits`]):
//! Chatwoot 3,000 requests a minute per client IP (every simulated client is on
//! loopback: one bucket per server) and 100 a minute for contact search per account; the
//! others, whose limits are not documented, one configurable limit
//! ([`RateLimitSettings::others_per_minute`]). Its 429 body is its own
//! ([`super::SimulatedProvider::throttled`]).
//!
//! A window shorter than a minute ([`RateLimitSettings::window`]) scales every limit with
//! it (3,000 a minute becomes 50 a second), so a test sees the same rates in seconds.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Limits on for a whole simulation: the window and the limit of the providers that
/// document none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Length of one fixed window (a minute on the real platforms); every per-minute limit
    /// is scaled to it.
    pub window: Duration,
    /// Requests a minute allowed by the providers that document no limit (MaiAgent,
    /// Agentalk, DM Champ).
    pub others_per_minute: u64,
}

/// The default [`RateLimitSettings::others_per_minute`].
pub const DEFAULT_OTHERS_PER_MINUTE: u64 = 1_200;

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            window: Duration::from_mins(1),
            others_per_minute: DEFAULT_OTHERS_PER_MINUTE,
        }
    }
}

impl RateLimitSettings {
    /// `per_minute` scaled to one window (at least 1).
    pub fn per_window(&self, per_minute: u64) -> u64 {
        let scaled = u128::from(per_minute) * self.window.as_millis() / 60_000;
        u64::try_from(scaled).unwrap_or(u64::MAX).max(1)
    }

    /// `per_minute` as requests a second.
    pub fn per_second(&self, per_minute: u64) -> f64 {
        self.per_window(per_minute) as f64 / self.window.as_secs_f64()
    }
}

/// One limit a provider enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// What it limits, for logs and the bench (`all requests`, `contact search`).
    pub name: &'static str,
    /// Only requests whose path contains this; every request when `None`.
    pub path_contains: Option<&'static str>,
    /// Requests a minute.
    pub per_minute: u64,
}

impl Limit {
    /// A limit on every request.
    pub const fn all(per_minute: u64) -> Limit {
        Limit {
            name: "all requests",
            path_contains: None,
            per_minute,
        }
    }

    fn applies(&self, path: &str) -> bool {
        self.path_contains.is_none_or(|p| path.contains(p))
    }
}

/// What a throttled request is answered with, given the time left in the window.
pub type Throttled = fn(Duration) -> Response;

struct Bucket {
    limit: Limit,
    per_window: u64,
    window_index: u64,
    count: u64,
}

struct Active {
    window: Duration,
    buckets: Vec<Bucket>,
    respond: Throttled,
}

/// The rate limits of one server: off until [`RateLimits::set`]. Cheap to clone (a
/// handle).
#[derive(Clone, Default)]
pub struct RateLimits {
    inner: Arc<Mutex<Option<Active>>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        f.debug_struct("RateLimits").field("on", &on).finish()
    }
}

impl RateLimits {
    /// Enforces `limits` from now on, in windows of `settings.window`, answering a
    /// throttled request with `respond`.
    pub fn set(&self, settings: &RateLimitSettings, limits: &[Limit], respond: Throttled) {
        let window = settings.window.max(Duration::from_millis(1));
        let buckets = limits
            .iter()
            .map(|l| Bucket {
                limit: *l,
                per_window: settings.per_window(l.per_minute),
                window_index: 0,
                count: 0,
            })
            .collect();
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Some(Active {
            window,
            buckets,
            respond,
        });
    }

    /// Turns the limits off.
    pub fn clear(&self) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether limits are enforced.
    pub fn is_on(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// The limits in force, each with its allowed rate in requests a second.
    pub fn allowed(&self) -> Vec<(Limit, f64)> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map_or_else(Vec::new, |a| {
            a.buckets
                .iter()
                .map(|b| (b.limit, b.per_window as f64 / a.window.as_secs_f64()))
                .collect()
        })
    }

    /// Counts a request to `path` at `now` against every limit that applies; the 429 to
    /// answer when one is exceeded. Every request counts, a throttled one too (as
    /// rack-attack counts before it checks).
    pub fn check(&self, path: &str, now: SystemTime) -> Option<Response> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let active = guard.as_mut()?;
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let window_ms = active.window.as_millis().max(1);
        let index = u64::try_from(since_epoch.as_millis() / window_ms).unwrap_or(u64::MAX);
        let mut over = false;
        for b in active.buckets.iter_mut().filter(|b| b.limit.applies(path)) {
            if b.window_index != index {
                b.window_index = index;
                b.count = 0;
            }
            b.count += 1;
            over |= b.count > b.per_window;
        }
        if !over {
            return None;
        }
        let into = u64::try_from(since_epoch.as_millis() % window_ms).unwrap_or(0);
        let left = Duration::from_millis(u64::try_from(window_ms).unwrap_or(u64::MAX) - into);
        Some((active.respond)(left))
    }
}

/// rack-attack's default answer (Chatwoot): 429, `text/plain`, `Retry later\n`, no
/// `Retry-After`.
pub fn throttled_text() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        "Retry later\n",
    )
        .into_response()
}

/// 429 with a JSON `body` and, when given, `Retry-After: secs`.
pub fn throttled_json(body: &serde_json::Value, retry_after_secs: Option<u64>) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response();
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(_: Duration) -> Response {
        StatusCode::TOO_MANY_REQUESTS.into_response()
    }

    #[test]
    fn limits_scale_with_the_window() {
        let s = RateLimitSettings {
            window: Duration::from_secs(1),
            others_per_minute: 600,
        };
        assert_eq!(s.per_window(3_000), 50);
        assert_eq!(s.per_window(100), 1);
        assert_eq!(s.per_window(30), 1);
        assert!((s.per_second(3_000) - 50.0).abs() < 1e-9);
        assert_eq!(RateLimitSettings::default().per_window(3_000), 3_000);
    }

    #[test]
    fn fixed_windows_count_every_request_and_reset_at_the_boundary() {
        let limits = RateLimits::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_mins(28_333_334);
        assert!(limits.check("/x", t0).is_none(), "off by default");
        let settings = RateLimitSettings {
            window: Duration::from_mins(1),
            others_per_minute: 0,
        };
        let search = Limit {
            name: "contact search",
            path_contains: Some("/contacts/search"),
            per_minute: 2,
        };
        limits.set(&settings, &[Limit::all(5), search], respond);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(limits.check("/contacts/search", at(1)).is_none());
        assert!(limits.check("/contacts/search", at(2)).is_none());
        assert!(
            limits.check("/contacts/search", at(3)).is_some(),
            "the search limit"
        );
        assert!(limits.check("/contacts", at(4)).is_none());
        assert!(limits.check("/contacts", at(5)).is_none());
        assert!(
            limits.check("/contacts", at(6)).is_some(),
            "the 6th request of the window, the throttled search counted"
        );
        // t0 is a minute boundary: the next window starts 60 s later.
        assert!(limits.check("/contacts", at(60)).is_none());
        assert!(limits.check("/contacts/search", at(61)).is_none());
        limits.clear();
        assert!(!limits.is_on());
    }
}
