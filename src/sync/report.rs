//! What a cycle did, per provider: the counts shared by the summary table, the run rows,
//! `--dry-run` output and metrics.

use crate::domain::field;
use crate::domain::plan::{GoldenRecord, Operation};
use crate::store::outbox::RunCounts;
use serde::Serialize;
use std::fmt::Write;

/// Planned writes kept per provider for reporting outside dry-run.
pub const MAX_REPORTED_WRITES: usize = 50;

/// One planned write, described for a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedWrite {
    /// Store id of the contact.
    pub contact_id: i64,
    /// Who (display name, else email, else phone).
    pub who: String,
    /// The operation.
    pub op: Operation,
}

impl PlannedWrite {
    /// Describes `op` on `contact`.
    pub fn new(contact: &GoldenRecord, op: &Operation) -> Self {
        let who = [field::NAME, field::EMAIL, field::PHONE]
            .iter()
            .find_map(|f| contact.fields.get(*f).filter(|v| !v.is_empty()))
            .cloned()
            .unwrap_or_else(|| format!("contact #{}", contact.id));
        Self {
            contact_id: contact.id,
            who,
            op: op.clone(),
        }
    }

    /// One line: `update  Ana López (#12 → 345): name "Ana" → "Ana López"`.
    pub fn describe(&self) -> String {
        match &self.op {
            Operation::Create { fields, tags } => {
                let mut s = format!("create      {}:", self.who);
                for (k, v) in fields {
                    let _ = write!(s, " {k}={v:?}");
                }
                if !tags.is_empty() {
                    let _ = write!(s, " tags={tags:?}");
                }
                s
            }
            Operation::Update { remote_id, changes } => {
                let parts: Vec<String> = changes
                    .iter()
                    .map(|c| format!("{} {:?} → {:?}", c.field, c.old, c.new))
                    .collect();
                format!(
                    "update      {} (id {remote_id}): {}",
                    self.who,
                    parts.join(", ")
                )
            }
            Operation::TagAdd { remote_id, tags } => {
                format!(
                    "tag add     {} (id {remote_id}): {}",
                    self.who,
                    tags.join(", ")
                )
            }
            Operation::Delete { remote_id } => {
                format!("delete      {} (id {remote_id})", self.who)
            }
            Operation::TagRemove { remote_id, tags } => {
                format!(
                    "tag remove  {} (id {remote_id}): {}",
                    self.who,
                    tags.join(", ")
                )
            }
        }
    }
}

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
    /// Links marked gone this cycle.
    pub gone: u64,
    /// Whether its listing completed (enumerating providers).
    pub complete: bool,
    /// Write requests sent.
    pub write_requests: u64,
    /// The first failure, if any (a provider that could not be read, an auth error).
    pub error: Option<String>,
    /// Warnings worth showing (e.g. the delete guard).
    pub warnings: Vec<String>,
    /// Planned writes (all in dry-run; the first few otherwise).
    pub planned: Vec<PlannedWrite>,
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
            gone: 0,
            complete: false,
            write_requests: 0,
            error: None,
            warnings: Vec::new(),
            planned: Vec::new(),
            timings: StageTimes::default(),
        }
    }

    /// Records a failure (the first one is kept).
    pub fn fail(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::error!(provider = %self.name, "{message}");
        if self.error.is_none() {
            self.error = Some(message);
        }
    }

    /// Whether this provider synced without failure.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.counts.failed == 0
    }
}

/// The whole cycle.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    /// Per provider, in config order.
    pub providers: Vec<ProviderReport>,
    /// Whether this was a dry run.
    pub dry_run: bool,
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
                None if c.failed > 0 => {
                    format!("{} writes failed (see log; retried next cycle)", c.failed)
                }
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

    /// The dry-run listing: every planned write per provider.
    pub fn plan_listing(&self) -> String {
        let mut out = String::new();
        for p in &self.providers {
            let _ = writeln!(
                out,
                "{} ({}): {} planned write(s)",
                p.name,
                p.kind,
                p.planned.len()
            );
            for w in &p.planned {
                let _ = writeln!(out, "  {}", w.describe());
            }
        }
        out
    }
}
