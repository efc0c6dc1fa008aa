//! Providers and runs: the provider rows (with their planning watermark and last success)
//! and one `runs` row per provider per cycle with its counts (the cycle itself, the run
//! `contact-sync runs` lists, is in [`super::journal`]).

use super::StoreError;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// Ensures a provider row exists; returns its id.
pub fn ensure_provider(conn: &Connection, name: &str, kind: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT INTO providers (name, kind) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET kind = excluded.kind")?
        .execute(params![name, kind])?;
    Ok(conn
        .prepare_cached("SELECT id FROM providers WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

/// Counts of one provider's part of a cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Records read.
    pub pulled: u64,
    /// Records linked to an existing contact.
    pub matched: u64,
    /// Contacts created in the provider.
    pub created: u64,
    /// Contacts updated in the provider.
    pub updated: u64,
    /// Tags added or removed in the provider.
    pub tag_changes: u64,
    /// Things skipped (cannot hold, cannot do).
    pub skipped: u64,
    /// Writes that failed.
    pub failed: u64,
    /// Contacts deleted in the provider (`propagate_deletes`).
    pub deleted: u64,
}

impl std::ops::AddAssign for RunCounts {
    fn add_assign(&mut self, other: RunCounts) {
        // Destructured so a new counter cannot be forgotten here.
        let RunCounts {
            pulled,
            matched,
            created,
            updated,
            tag_changes,
            skipped,
            failed,
            deleted,
        } = other;
        self.pulled += pulled;
        self.matched += matched;
        self.created += created;
        self.updated += updated;
        self.tag_changes += tag_changes;
        self.skipped += skipped;
        self.failed += failed;
        self.deleted += deleted;
    }
}

/// Starts a provider's row of run (cycle) `cycle`.
pub fn begin_run(
    conn: &Connection,
    provider_id: i64,
    cycle: i64,
    now: i64,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO runs (provider_id, started_at, cycle_id) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![provider_id, now, cycle])?;
    Ok(conn.last_insert_rowid())
}

/// Finishes a run row.
pub fn finish_run(
    conn: &Connection,
    run_id: i64,
    counts: &RunCounts,
    error: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE runs SET finished_at = ?2, ok = ?3, pulled = ?4, matched = ?5, created = ?6, updated = ?7, tag_changes = ?8,
         skipped = ?9, failed = ?10, error = ?11 WHERE id = ?1",
    )?
    .execute(params![
        run_id,
        now,
        error.is_none(),
        counts.pulled as i64,
        counts.matched as i64,
        counts.created as i64,
        counts.updated as i64,
        counts.tag_changes as i64,
        counts.skipped as i64,
        counts.failed as i64,
        error
    ])?;
    Ok(())
}

/// Records a successful cycle for a provider.
pub fn mark_success(
    conn: &Connection,
    provider_id: i64,
    complete: bool,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE providers SET last_success_at = ?2, last_complete_at = CASE WHEN ?3 THEN ?2 ELSE last_complete_at END WHERE id = ?1",
    )?
    .execute(params![provider_id, now, complete])?;
    Ok(())
}

/// Whether the provider's listing has ever completed.
pub fn listed_once(conn: &Connection, provider_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT last_complete_at IS NOT NULL FROM providers WHERE id = ?1")?
        .query_row([provider_id], |r| r.get(0))
        .optional()?
        .unwrap_or(false))
}
