//! The read-only status report behind `contact-sync status`; its `--json` keys are the ones
//! README.md lists, which scripts rely on.

use super::StoreError;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

/// The last run of one provider.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastRun {
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time; `None` while running (or if the process died).
    pub finished_at: Option<String>,
    /// Whether the run succeeded; `None` while running.
    pub ok: Option<bool>,
    /// Records read.
    pub pulled: i64,
    /// Contacts created in this provider.
    pub created: i64,
    /// Contacts updated in this provider.
    pub updated: i64,
    /// Tags added or removed in this provider.
    pub tag_changes: i64,
    /// Writes that failed.
    pub failed: i64,
    /// The error, if the run failed.
    pub error: Option<String>,
}

/// One provider in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProviderStatus {
    /// Instance name.
    pub name: String,
    /// Kind (`chatwoot`, …).
    pub kind: String,
    /// Active links (contacts known to be held by this provider).
    pub linked: i64,
    /// The last run, if any.
    pub last_run: Option<LastRun>,
}

/// The report of `status --json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct StatusReport {
    /// Golden records.
    pub contacts: i64,
    /// Providers: those configured, in config order, then any others the store knows.
    pub providers: Vec<ProviderStatus>,
    /// Queued pushes.
    pub pending: i64,
    /// Pushes given up.
    pub dead: i64,
    /// Review items awaiting a decision (every kind; `contact-sync review`).
    pub conflicts: i64,
    /// The most recent of them (at most [`CONFLICTS_SHOWN`]).
    pub conflict_details: Vec<ConflictView>,
}

/// How many conflicts `status` lists.
pub const CONFLICTS_SHOWN: i64 = 50;

/// One conflict awaiting review.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConflictView {
    /// Provider instance name.
    pub provider: String,
    /// The provider's id of the record held apart.
    pub remote_id: String,
    /// Why it was held.
    pub reason: String,
    /// Store ids of the contacts involved.
    pub contacts: Vec<i64>,
    /// RFC 3339 time it was (last) detected.
    pub detected_at: String,
}

/// Formats unix seconds as RFC 3339.
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// Builds the report. `configured` are `(name, kind)` pairs from the config; `conn` is a
/// read-only connection, or `None` when the store does not exist yet (all zeros).
pub fn report(
    conn: Option<&Connection>,
    configured: &[(String, String)],
) -> Result<StatusReport, StoreError> {
    let mut out = StatusReport {
        providers: configured
            .iter()
            .map(|(name, kind)| ProviderStatus {
                name: name.clone(),
                kind: kind.clone(),
                linked: 0,
                last_run: None,
            })
            .collect(),
        ..StatusReport::default()
    };
    let Some(conn) = conn else {
        return Ok(out);
    };
    let count =
        |sql: &str| -> Result<i64, StoreError> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    out.contacts = count("SELECT count(*) FROM contacts")?;
    out.pending = count("SELECT count(*) FROM intents WHERE state = 'pending'")?;
    out.dead = count("SELECT count(*) FROM intents WHERE state = 'dead'")?;
    out.conflicts = count(&format!(
        "SELECT count(*) FROM conflicts c WHERE {}",
        super::review::OPEN
    ))?;
    let mut stmt = conn.prepare(&format!(
        "SELECT p.name, c.remote_id, c.reason, c.contact_ids, c.detected_at FROM conflicts c
         JOIN providers p ON p.id = c.provider_id WHERE {}
         ORDER BY c.detected_at DESC, c.id DESC LIMIT ?1",
        super::review::OPEN
    ))?;
    out.conflict_details = stmt
        .query_map([CONFLICTS_SHOWN], |r| {
            let ids: String = r.get(3)?;
            Ok(ConflictView {
                provider: r.get(0)?,
                remote_id: r.get(1)?,
                reason: r.get(2)?,
                contacts: serde_json::from_str(&ids).unwrap_or_default(),
                detected_at: rfc3339(r.get(4)?),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare("SELECT id, name, kind FROM providers ORDER BY id")?;
    let known: Vec<(i64, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (id, name, kind) in known {
        let linked: i64 = conn.query_row(
            "SELECT count(*) FROM links WHERE provider_id = ?1 AND state = 'active'",
            [id],
            |r| r.get(0),
        )?;
        let last_run = conn
            .query_row(
                // The last full cycle's row: a targeted (webhook) run reads no listing.
                "SELECT r.started_at, r.finished_at, r.ok, r.pulled, r.created, r.updated, r.tag_changes,
                        r.failed, r.error
                 FROM runs r LEFT JOIN cycles c ON c.id = r.cycle_id
                 WHERE r.provider_id = ?1 AND c.trigger IS NULL ORDER BY r.id DESC LIMIT 1",
                [id],
                |r| {
                    Ok(LastRun {
                        started_at: rfc3339(r.get(0)?),
                        finished_at: r.get::<_, Option<i64>>(1)?.map(rfc3339),
                        ok: r.get::<_, Option<bool>>(2)?,
                        pulled: r.get(3)?,
                        created: r.get(4)?,
                        updated: r.get(5)?,
                        tag_changes: r.get(6)?,
                        failed: r.get(7)?,
                        error: r.get(8)?,
                    })
                },
            )
            .optional()?;
        if let Some(p) = out.providers.iter_mut().find(|p| p.name == name) {
            p.linked = linked;
            p.last_run = last_run;
        } else {
            out.providers.push(ProviderStatus {
                name,
                kind,
                linked,
                last_run,
            });
        }
    }
    Ok(out)
}

/// Queued and given-up pushes of one provider (the daemon's queue-depth gauges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentDepth {
    /// Instance name.
    pub provider: String,
    /// Queued pushes.
    pub pending: i64,
    /// Pushes given up.
    pub dead: i64,
}

/// Pending and dead intents per provider the store knows (read-only).
pub fn intent_depth(conn: &Connection) -> Result<Vec<IntentDepth>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT p.name,
                coalesce(sum(i.state = 'pending'), 0),
                coalesce(sum(i.state = 'dead'), 0)
         FROM providers p LEFT JOIN intents i ON i.provider_id = p.id
         GROUP BY p.id ORDER BY p.id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(IntentDepth {
                provider: r.get(0)?,
                pending: r.get(1)?,
                dead: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
