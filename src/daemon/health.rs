//! What `/readyz` decides from: whether the store is open, how many cycles finished, and
//! since when each provider has been failing. Updated by the scheduler after each cycle,
//! read by the HTTP endpoint.

use crate::sync::CycleReport;
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// One provider's health.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProviderHealth {
    /// Instance name.
    pub name: String,
    /// Unix seconds of the last cycle in which it synced without failure.
    pub last_success: Option<i64>,
    /// Unix seconds since which it has been failing (`None`: not failing).
    pub failing_since: Option<i64>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The daemon's health, shared by the scheduler and the HTTP endpoint.
#[derive(Debug)]
pub struct Health {
    store_open: AtomicBool,
    cycles_finished: AtomicU64,
    unready_after: Duration,
    providers: Mutex<Vec<ProviderHealth>>,
}

/// The answer of `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the daemon is ready.
    pub ready: bool,
    /// Why not (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Cycles finished since start.
    pub cycles_finished: u64,
}

impl Health {
    /// Health for `providers` (instance names); unready once one has been failing for
    /// longer than `unready_after`.
    pub fn new(providers: &[String], unready_after: Duration) -> Self {
        Self {
            store_open: AtomicBool::new(false),
            cycles_finished: AtomicU64::new(0),
            unready_after,
            providers: Mutex::new(
                providers
                    .iter()
                    .map(|n| ProviderHealth {
                        name: n.clone(),
                        ..ProviderHealth::default()
                    })
                    .collect(),
            ),
        }
    }

    /// Records whether the store is open.
    pub fn set_store_open(&self, open: bool) {
        self.store_open.store(open, Ordering::SeqCst);
    }

    /// Cycles finished so far.
    pub fn cycles_finished(&self) -> u64 {
        self.cycles_finished.load(Ordering::SeqCst)
    }

    /// Records a finished cycle that started at `started` (unix seconds) and pulled
    /// `selected` (`None`: every provider). A provider that failed starts (or keeps) its
    /// failing window; one that was selected and synced cleanly ends it. (A provider not
    /// selected in this cycle only had pushes: a clean push says nothing about its pull.)
    /// Returns the providers that succeeded, for the last-success gauge.
    pub fn record_cycle(
        &self,
        report: &CycleReport,
        selected: Option<&[String]>,
        started: i64,
        finished: i64,
    ) -> Vec<String> {
        let mut succeeded = Vec::new();
        if let Ok(mut providers) = self.providers.lock() {
            for p in &report.providers {
                let Some(h) = providers.iter_mut().find(|h| h.name == p.name) else {
                    continue;
                };
                let was_selected = selected.is_none_or(|s| s.iter().any(|n| n == &p.name));
                if !p.ok() {
                    h.failing_since.get_or_insert(started);
                    h.last_error = Some(p.error.as_ref().map_or_else(
                        || format!("{} write(s) failed", p.counts.failed),
                        ToString::to_string,
                    ));
                } else if was_selected {
                    h.failing_since = None;
                    h.last_error = None;
                    h.last_success = Some(finished);
                    succeeded.push(p.name.clone());
                }
            }
        }
        self.cycles_finished.fetch_add(1, Ordering::SeqCst);
        succeeded
    }

    /// Records a cycle that ended without a report (store failure, panic) for `names`.
    pub fn record_failure(&self, names: &[String], started: i64, error: &str) {
        if let Ok(mut providers) = self.providers.lock() {
            for h in providers.iter_mut().filter(|h| names.contains(&h.name)) {
                h.failing_since.get_or_insert(started);
                h.last_error = Some(error.to_owned());
            }
        }
        self.cycles_finished.fetch_add(1, Ordering::SeqCst);
    }

    /// A snapshot of every provider's health.
    pub fn providers(&self) -> Vec<ProviderHealth> {
        self.providers.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Ready when the store is open, at least one cycle finished, and no provider has been
    /// failing for longer than the window (`now`: unix seconds).
    pub fn readiness(&self, now: i64) -> Readiness {
        let cycles_finished = self.cycles_finished();
        let not_ready = |reason: String| Readiness {
            ready: false,
            reason: Some(reason),
            cycles_finished,
        };
        if !self.store_open.load(Ordering::SeqCst) {
            return not_ready("the store is not open".into());
        }
        if cycles_finished == 0 {
            return not_ready("no sync cycle has finished yet".into());
        }
        let window = i64::try_from(self.unready_after.as_secs()).unwrap_or(i64::MAX);
        for p in self.providers() {
            if let Some(since) = p.failing_since
                && now.saturating_sub(since) > window
            {
                let for_how_long = humantime::format_duration(Duration::from_secs(
                    now.saturating_sub(since).max(0) as u64,
                ));
                return not_ready(format!(
                    "provider {} has been failing for {for_how_long} (longer than http.unready_after = {}): {}",
                    p.name,
                    humantime::format_duration(self.unready_after),
                    p.last_error.as_deref().unwrap_or("unknown error")
                ));
            }
        }
        Readiness {
            ready: true,
            reason: None,
            cycles_finished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::ProviderReport;

    fn report(ok: bool) -> CycleReport {
        let mut p = ProviderReport::new("a", "chatwoot");
        if !ok {
            p.error = Some(crate::sync::ProviderFailure::Pull(
                crate::sync::failure::PullFailure::Store("boom".into()),
            ));
        }
        CycleReport {
            providers: vec![p, ProviderReport::new("b", "agentalk")],
            dry_run: false,
            run: None,
        }
    }

    #[test]
    fn ready_only_after_a_cycle_with_the_store_open() {
        let h = Health::new(&["a".into(), "b".into()], Duration::from_mins(1));
        assert!(!h.readiness(0).ready);
        h.set_store_open(true);
        let r = h.readiness(0);
        assert!(!r.ready);
        assert!(r.reason.unwrap().contains("no sync cycle"));
        h.record_cycle(&report(true), None, 0, 1);
        assert!(h.readiness(2).ready);
    }

    #[test]
    fn unready_once_a_provider_fails_longer_than_the_window() {
        let h = Health::new(&["a".into(), "b".into()], Duration::from_mins(1));
        h.set_store_open(true);
        h.record_cycle(&report(false), None, 100, 101);
        assert!(h.readiness(150).ready, "within the window");
        h.record_cycle(&report(false), None, 200, 201);
        let r = h.readiness(200);
        assert!(!r.ready);
        let reason = r.reason.unwrap();
        assert!(
            reason.contains("provider a") && reason.contains("boom"),
            "{reason}"
        );
        // A cycle that did not pull `a` does not clear its failure...
        h.record_cycle(&report(true), Some(&["b".into()]), 210, 211);
        assert!(!h.readiness(211).ready);
        // ...one that pulled it cleanly does.
        let ok = h.record_cycle(&report(true), Some(&["a".into()]), 220, 221);
        assert_eq!(ok, vec!["a".to_owned()]);
        assert!(h.readiness(221).ready);
    }
}
