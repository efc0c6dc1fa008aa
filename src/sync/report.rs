//! What a cycle did, per provider: the counts shared by the summary table, the run rows,
//! `--dry-run` output and metrics.

use super::failure::ProviderFailure;
use crate::domain::cycle_plan::{CyclePlan, ProviderPlan, Step};
use crate::provider::ProviderError;
use crate::store::runs::RunCounts;
use serde::Serialize;
use std::fmt::Write;

/// One provider's part of a cycle.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderReport {
    /// Instance name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Counts.
    pub counts: RunCounts,
    /// Records held as conflicts this cycle.
    pub conflicts: u64,
    /// Listed records linked to an existing person, by the key that found it.
    pub matched_by: crate::domain::matching::MatchCounts,
    /// Links marked gone this cycle.
    pub gone: u64,
    /// Whether its listing completed (enumerating providers).
    pub complete: bool,
    /// Write requests sent.
    pub write_requests: u64,
    /// The first failure, if any (a provider that could not be read, an auth error, a
    /// provider cut off).
    pub error: Option<ProviderFailure>,
    /// The last step that failed for this cycle (its intent keeps it for the next).
    #[serde(skip)]
    pub last_step_failure: Option<ProviderError>,
    /// Warnings worth showing (e.g. the delete guard).
    pub warnings: Vec<String>,
    /// The steps of the cycle plan for this provider (all in dry-run or with
    /// `record_steps`; the first few otherwise).
    pub steps: Vec<Step>,
    /// Steps of the plan that send something.
    pub planned_sends: u64,
    /// Where this provider's part of the cycle spent its time.
    pub timings: StageTimes,
}

/// Wall-clock seconds one provider's part of a cycle spent in each stage (for the
/// benchmarks and debug logs). Providers run concurrently, so the stages of different
/// providers overlap; within one provider, `fetch`, `normalize` and `store` are parts of
/// `pull` (they overlap each other when pages are fetched ahead of the store write).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// Waiting for listing pages and tag listing pages (request, transfer, decode).
    pub fetch: f64,
    /// Normalising listed records (phones, emails, hashes).
    pub normalize: f64,
    /// Waiting for the store to apply listed pages (and tag pages, and deletions).
    pub store: f64,
    /// The whole pull, recovery of interrupted creates included.
    pub pull: f64,
    /// Planning: reading changed contacts, planning them, persisting intents.
    pub plan: f64,
    /// Pushing: sending intents (and lookups) and recording the answers.
    pub push: f64,
}

impl ProviderReport {
    /// An empty report.
    pub fn new(name: &str, kind: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: kind.to_owned(),
            counts: RunCounts::default(),
            conflicts: 0,
            matched_by: crate::domain::matching::MatchCounts::default(),
            gone: 0,
            complete: false,
            write_requests: 0,
            error: None,
            last_step_failure: None,
            warnings: Vec::new(),
            steps: Vec::new(),
            planned_sends: 0,
            timings: StageTimes::default(),
        }
    }

    /// Records a failure (the first one is kept).
    pub fn fail(&mut self, failure: ProviderFailure) {
        tracing::error!(provider = %self.name, "{failure}");
        if self.error.is_none() {
            self.error = Some(failure);
        }
    }

    /// Whether this provider synced without failure.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.counts.failed == 0
    }
}

/// The whole cycle.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CycleReport {
    /// Per provider, in config order.
    pub providers: Vec<ProviderReport>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The run id (`contact-sync runs`, `history`, `undo --run`).
    pub run: Option<i64>,
}

impl CycleReport {
    /// Whether everything synced (exit code 0).
    pub fn ok(&self) -> bool {
        self.providers.iter().all(ProviderReport::ok)
    }

    /// Total write requests sent.
    pub fn write_requests(&self) -> u64 {
        self.providers.iter().map(|p| p.write_requests).sum()
    }

    /// The summary table.
    pub fn summary_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:>7} {:>7} {:>7} {:>7} {:>5} {:>7} {:>6}  result",
            "provider",
            "kind",
            "pulled",
            "matched",
            "created",
            "updated",
            "tags",
            "skipped",
            "failed"
        );
        for p in &self.providers {
            let c = &p.counts;
            let result = match &p.error {
                Some(e) => format!("FAILED: {e}"),
                None if c.failed > 0 => match &p.last_step_failure {
                    Some(e) => format!(
                        "{} write(s) failed (kept for the next cycle); last: {e}",
                        c.failed
                    ),
                    None => format!(
                        "{} write(s) failed (see log; kept for the next cycle)",
                        c.failed
                    ),
                },
                None => "ok".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<16} {:<9} {:>7} {:>7} {:>7} {:>7} {:>5} {:>7} {:>6}  {result}",
                p.name,
                p.kind,
                c.pulled,
                c.matched,
                c.created,
                c.updated,
                c.tag_changes,
                c.skipped,
                c.failed
            );
            for w in &p.warnings {
                let _ = writeln!(out, "  warning: {w}");
            }
            if c.deleted > 0 {
                let _ = writeln!(
                    out,
                    "  {} contact(s) deleted here because they were deleted elsewhere",
                    c.deleted
                );
            }
            if p.conflicts > 0 {
                let _ = writeln!(
                    out,
                    "  {} record(s) held as conflicts (see `contact-sync status`)",
                    p.conflicts
                );
            }
        }
        out
    }

    /// The cycle plan: every provider's steps (complete in dry-run or with
    /// `record_steps`).
    pub fn plan(&self) -> CyclePlan {
        CyclePlan {
            providers: self
                .providers
                .iter()
                .map(|p| ProviderPlan {
                    provider: p.name.clone(),
                    kind: p.kind.clone(),
                    steps: p.steps.clone(),
                })
                .collect(),
        }
    }

    /// The dry-run listing: the cycle plan, every step per provider with its reason.
    pub fn plan_listing(&self) -> String {
        self.plan().render()
    }

    /// The first-run match report of a dry run: records linked to a known person by each
    /// key, the people each provider would gain (its planned creates), and `items`, the
    /// review items that would be opened.
    pub fn match_report(&self, items: &[crate::store::review::Item]) -> MatchReport {
        let mut out = MatchReport::default();
        for p in &self.providers {
            out.matched_by += p.matched_by;
            let creates = p
                .steps
                .iter()
                .filter(|s| matches!(s.action.name(), "create" | "create_unless_found"))
                .count() as u64;
            out.new_people.insert(p.name.clone(), creates);
        }
        out.items = items.to_vec();
        out
    }
}

/// The first-run match report (`--sync-now --dry-run` on a store with no links).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MatchReport {
    /// Records linked to a person already known, by the key that found it.
    pub matched_by: crate::domain::matching::MatchCounts,
    /// Per provider (configured name): the people it would gain.
    pub new_people: std::collections::BTreeMap<String, u64>,
    /// The review items that would be opened.
    pub items: Vec<crate::store::review::Item>,
}

impl MatchReport {
    /// The report for a human, printed before the plan.
    pub fn render(&self) -> String {
        let m = &self.matched_by;
        let mut out = String::from(
            "first-run match report (nothing is linked yet; review it before the first real run):
",
        );
        let _ = writeln!(
            out,
            "  matched to a person already known: {} by source id, {} by phone, {} by email, {} by another WhatsApp form of the phone",
            m.source_id, m.phone, m.email, m.phone_variant
        );
        let gains: Vec<String> = self
            .new_people
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  people each provider would gain: {}",
            gains.join(", ")
        );
        let _ = writeln!(
            out,
            "  review items that would be opened: {}",
            self.items.len()
        );
        for i in &self.items {
            let _ = writeln!(
                out,
                "    {} {} record {} (contacts {:?}): {}",
                i.kind, i.provider, i.remote_id, i.contacts, i.reason
            );
        }
        out
    }
}
