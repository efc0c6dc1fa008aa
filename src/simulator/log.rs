//! The request log of a simulated server: what was asked (secrets redacted), what was
//! answered, and read/write counters.
//!
//! The log keeps the last [`DEFAULT_CAPACITY`] requests in a ring buffer, so a
//! million-contact run stays flat in memory; the counters count every request. Requests to
//! the control endpoint (`/__sim/…`) are neither logged nor counted.
//!
//! A request is a *read* when it cannot change state: `GET`, `HEAD`, `OPTIONS`, and the
//! read-only `POST`s (a path ending in `/contacts/filter` — Chatwoot's exact lookup).
//! Everything else is a *write*.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::Method;
use serde::Serialize;

/// Entries kept by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Query parameters whose values are secrets (compared case-insensitively).
const SECRET_PARAMS: &[&str] = &[
    "apikey",
    "api_key",
    "api_access_token",
    "access_token",
    "token",
    "userid",
    "secret",
    "password",
];

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// Sequence number (0 for the first request since start or reset).
    pub seq: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string with secret values replaced by `***`, if there was one.
    pub query: Option<String>,
    /// Status sent (for a dropped connection, the status line sent before the drop).
    pub status: u16,
    /// Whether the request counted as a read (else a write).
    pub read: bool,
    /// The injected fault, if one fired (`status`, `delay`, `drop_connection`, …).
    pub fault: Option<String>,
    /// When it was answered: milliseconds since the log was created.
    pub at_ms: u64,
}

/// Request counters since start or the last reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// All requests.
    pub requests: u64,
    /// Reads (see the module doc).
    pub reads: u64,
    /// Writes.
    pub writes: u64,
    /// Requests answered with a status of 400 or more.
    pub errors: u64,
    /// Requests where an injected fault fired.
    pub faults: u64,
    /// Requests answered 429 (a rate limit or an injected 429).
    pub throttled: u64,
    /// When the first request counted was answered (milliseconds since the log was
    /// created; 0 when none was).
    pub first_at_ms: u64,
    /// When the last one was.
    pub last_at_ms: u64,
}

#[derive(Debug)]
struct Atomics {
    requests: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    faults: AtomicU64,
    throttled: AtomicU64,
    /// `u64::MAX` until a request is counted.
    first_ms: AtomicU64,
    last_ms: AtomicU64,
}

impl Default for Atomics {
    fn default() -> Self {
        Atomics {
            requests: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            first_ms: AtomicU64::new(u64::MAX),
            last_ms: AtomicU64::new(0),
        }
    }
}

#[derive(Debug)]
struct Ring {
    capacity: usize,
    entries: VecDeque<LogEntry>,
}

/// The log of one server. Cheap to clone (a shared handle).
#[derive(Debug, Clone)]
pub struct RequestLog {
    ring: Arc<Mutex<Ring>>,
    counts: Arc<Atomics>,
    created: std::time::Instant,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl RequestLog {
    /// A log that keeps the last `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        RequestLog {
            ring: Arc::new(Mutex::new(Ring {
                capacity: capacity.max(1),
                entries: VecDeque::new(),
            })),
            counts: Arc::new(Atomics::default()),
            created: std::time::Instant::now(),
        }
    }

    /// The kept entries, oldest first.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.lock().entries.iter().cloned().collect()
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        let c = &self.counts;
        Counters {
            requests: c.requests.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            faults: c.faults.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            first_at_ms: match c.first_ms.load(Ordering::Relaxed) {
                u64::MAX => 0,
                ms => ms,
            },
            last_at_ms: c.last_ms.load(Ordering::Relaxed),
        }
    }

    /// Empties the log and zeroes the counters.
    pub fn reset(&self) {
        let mut ring = self.lock();
        ring.entries.clear();
        let c = &self.counts;
        for counter in [
            &c.requests,
            &c.reads,
            &c.writes,
            &c.errors,
            &c.faults,
            &c.throttled,
            &c.last_ms,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        c.first_ms.store(u64::MAX, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one answered request.
    pub(crate) fn record(
        &self,
        method: &Method,
        path: &str,
        raw_query: Option<&str>,
        status: u16,
        fault: Option<&str>,
    ) {
        let read = is_read(method, path);
        let at_ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let c = &self.counts;
        c.first_ms.fetch_min(at_ms, Ordering::Relaxed);
        c.last_ms.fetch_max(at_ms, Ordering::Relaxed);
        let seq = c.requests.fetch_add(1, Ordering::Relaxed);
        if read { &c.reads } else { &c.writes }.fetch_add(1, Ordering::Relaxed);
        if status >= 400 {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        if status == 429 {
            c.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if fault.is_some() {
            c.faults.fetch_add(1, Ordering::Relaxed);
        }
        let entry = LogEntry {
            seq,
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            query: raw_query.map(redact_query),
            status,
            read,
            fault: fault.map(str::to_owned),
            at_ms,
        };
        let mut ring = self.lock();
        if ring.entries.len() >= ring.capacity {
            ring.entries.pop_front();
        }
        ring.entries.push_back(entry);
    }
}

/// Whether a request cannot change state (see the module doc).
pub fn is_read(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || (*method == Method::POST && path.trim_end_matches('/').ends_with("/contacts/filter"))
}

/// The query string with the value of every secret parameter (DM Champ's `apiKey`,
/// `userId`, tokens…) replaced by `***`; everything else is kept as sent.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let (raw_name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name: String = url::form_urlencoded::parse(raw_name.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            if !value.is_empty()
                && SECRET_PARAMS
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(name.trim()))
            {
                format!("{raw_name}=***")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_keeps_other_params() {
        assert_eq!(
            redact_query("phoneNumber=%2B14155550123&apiKey=s3cret"),
            "phoneNumber=%2B14155550123&apiKey=***"
        );
        assert_eq!(redact_query("APIKEY=x&page=2"), "APIKEY=***&page=2");
        assert_eq!(redact_query("page=2"), "page=2");
    }

    #[test]
    fn ring_is_bounded() {
        let log = RequestLog::with_capacity(3);
        for i in 0..10 {
            log.record(&Method::GET, &format!("/p{i}"), None, 200, None);
        }
        let entries = log.entries();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].path, "/p7");
        assert_eq!(log.counters().requests, 10);
    }
}
