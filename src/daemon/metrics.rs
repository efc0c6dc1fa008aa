//! Prometheus metrics of the daemon: the recorder behind `/metrics`, and the one place
//! that turns a [`CycleReport`] into metrics (the engine itself emits none; the HTTP
//! driver in `crate::provider::http` emits the request counters and latency histogram).
//!
//! Metric names (all prefixed `contact_sync_`), per provider unless noted:
//! - counters `pulled_total`, `matched_total`, `created_total`, `updated_total`,
//!   `tag_changes_total`, `failed_total` (writes that failed), `skipped_total` (records a
//!   provider cannot hold), `conflicts_total`, `provider_errors_total` (cycles in which the
//!   provider failed), `skipped_ticks_total` (schedule ticks dropped by single-flight);
//! - counter `cycles_total{result="ok|failed|error|panicked"}` and histogram
//!   `cycle_duration_seconds` (no provider label);
//! - gauges `intents_pending`, `intents_dead`, `last_success_timestamp_seconds`;
//! - from the HTTP driver: `requests_total{provider,method,status_class}`,
//!   `request_duration_seconds` (histogram), `retries_total`, `rate_limited_total`;
//! - webhooks: counter `webhook_events_total{provider,outcome="queued|duplicate|ignored|unauthorized|malformed"}`,
//!   counter `webhook_records_total{outcome="read|moot|unread"}`, counter
//!   `targeted_cycles_total`, gauge `webhook_queue` (events waiting).

use crate::store::status::IntentDepth;
use crate::sync::CycleReport;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

/// Histogram buckets (seconds) for request latency and cycle duration.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Installs the global Prometheus recorder and returns the handle `/metrics` renders.
/// Fails when a recorder is already installed (only once per process).
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Makes the per-provider series exist (at zero) before the first cycle, so dashboards
/// and alerts see them from the start.
pub fn register_providers(names: &[String]) {
    for name in names {
        metrics::counter!("contact_sync_skipped_ticks_total", "provider" => name.clone())
            .increment(0);
        metrics::counter!("contact_sync_provider_errors_total", "provider" => name.clone())
            .increment(0);
    }
}

/// Records what one cycle did: the per-provider counters from `report`, the cycle's
/// outcome and duration.
pub fn record_cycle(report: &CycleReport, duration: Duration) {
    for p in &report.providers {
        let c = &p.counts;
        let name = p.name.clone();
        for (metric, value) in [
            ("contact_sync_pulled_total", c.pulled),
            ("contact_sync_matched_total", c.matched),
            ("contact_sync_created_total", c.created),
            ("contact_sync_updated_total", c.updated),
            ("contact_sync_tag_changes_total", c.tag_changes),
            ("contact_sync_failed_total", c.failed),
            ("contact_sync_skipped_total", c.skipped),
            ("contact_sync_conflicts_total", p.conflicts),
        ] {
            metrics::counter!(metric, "provider" => name.clone()).increment(value);
        }
        if p.error.is_some() {
            metrics::counter!("contact_sync_provider_errors_total", "provider" => name)
                .increment(1);
        }
    }
    let result = if report.ok() { "ok" } else { "failed" };
    metrics::counter!("contact_sync_cycles_total", "result" => result).increment(1);
    metrics::histogram!("contact_sync_cycle_duration_seconds").record(duration.as_secs_f64());
}

/// Records a cycle that did not produce a report (`"error"`: the store failed;
/// `"panicked"`: a bug, caught).
pub fn record_cycle_failure(result: &'static str, duration: Duration) {
    metrics::counter!("contact_sync_cycles_total", "result" => result).increment(1);
    metrics::histogram!("contact_sync_cycle_duration_seconds").record(duration.as_secs_f64());
}

/// Counts a schedule tick skipped because `provider`'s previous cycle was still running
/// or queued.
pub fn record_skipped_tick(provider: &str) {
    metrics::counter!("contact_sync_skipped_ticks_total", "provider" => provider.to_owned())
        .increment(1);
}

/// Sets the queue-depth gauges read from the store.
pub fn record_queue(depth: &[IntentDepth]) {
    for d in depth {
        metrics::gauge!("contact_sync_intents_pending", "provider" => d.provider.clone())
            .set(d.pending as f64);
        metrics::gauge!("contact_sync_intents_dead", "provider" => d.provider.clone())
            .set(d.dead as f64);
    }
}

/// Sets the last-success gauge of `provider` (unix seconds).
pub fn record_success(provider: &str, unix_secs: i64) {
    metrics::gauge!("contact_sync_last_success_timestamp_seconds", "provider" => provider.to_owned())
        .set(unix_secs as f64);
}

/// Counts one webhook event by how it was answered.
pub fn record_webhook(provider: &str, outcome: &'static str) {
    metrics::counter!("contact_sync_webhook_events_total", "provider" => provider.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Records what applying a batch of webhook events did: its per-provider counters (as a
/// cycle's), the records read, moot and unread.
pub fn record_targeted(out: &crate::sync::EventsOutcome, duration: Duration) {
    let read = (out.read.len() - out.targeted.unread.len().min(out.read.len())) as u64;
    for (outcome, n) in [
        ("read", read),
        ("moot", out.moot.len() as u64),
        ("unread", out.targeted.unread.len() as u64),
    ] {
        metrics::counter!("contact_sync_webhook_records_total", "outcome" => outcome).increment(n);
    }
    if out.read.is_empty() {
        return;
    }
    for p in &out.targeted.report.providers {
        let c = &p.counts;
        for (metric, value) in [
            ("contact_sync_pulled_total", c.pulled),
            ("contact_sync_matched_total", c.matched),
            ("contact_sync_created_total", c.created),
            ("contact_sync_updated_total", c.updated),
            ("contact_sync_tag_changes_total", c.tag_changes),
            ("contact_sync_failed_total", c.failed),
        ] {
            metrics::counter!(metric, "provider" => p.name.clone()).increment(value);
        }
    }
    metrics::counter!("contact_sync_targeted_cycles_total").increment(1);
    metrics::histogram!("contact_sync_targeted_cycle_duration_seconds")
        .record(duration.as_secs_f64());
}

/// The number of webhook events waiting.
pub fn record_webhook_queue(len: i64) {
    metrics::gauge!("contact_sync_webhook_queue").set(len as f64);
}
