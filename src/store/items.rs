//! Opening review items: the `conflicts` rows a listing, a refused write or a clash
//! opens, and the `kept_apart` decisions that keep an item from opening again. The review
//! commands (`review.rs`) read and decide them.

use super::StoreError;
use super::codec::{fields_json, tags_json};
use crate::domain::matching::{ContactId, KeyKind};
use crate::domain::review::ItemKind;
use crate::domain::{Fields, Tags};
use rusqlite::{Connection, params};

/// What a review item says about the record it is about.
#[derive(Debug, Clone, Copy)]
pub struct ItemRecord<'a> {
    /// The provider's id of the record.
    pub remote_id: &'a str,
    /// Its fields as the provider showed them (or as they were sent), if known.
    pub fields: Option<&'a Fields>,
    /// Its tags, if known.
    pub tags: Option<&'a Tags>,
}

/// Opens (or refreshes) a review item about a record. An item whose people were decided
/// to be different people (`review apart`) is never opened again; an item decided but
/// not yet carried out keeps its decision. Returns whether the item is open.
pub fn record_conflict(
    conn: &Connection,
    provider_id: i64,
    record: ItemRecord<'_>,
    kind: ItemKind,
    reason: &str,
    contacts: &[ContactId],
    now: i64,
) -> Result<bool, StoreError> {
    if all_kept_apart(conn, contacts)? {
        tracing::debug!(provider_id, remote_id = %record.remote_id, ?contacts, "not held for review: decided to be different people");
        return Ok(false);
    }
    let ids = serde_json::to_string(contacts).unwrap_or_else(|_| "[]".to_owned());
    let n = conn
        .prepare_cached(
            "INSERT INTO conflicts (provider_id, remote_id, kind, reason, contact_ids, record, record_tags, detected_at)
             VALUES (?1, ?2, ?3, ?4, ?5, coalesce(?6, '{}'), ?7, ?8)
             ON CONFLICT (provider_id, remote_id) DO UPDATE SET
             kind = CASE WHEN kind = 'refused' AND resolved_at IS NULL AND decided_at IS NULL THEN kind ELSE excluded.kind END,
             reason = CASE WHEN kind = 'refused' AND resolved_at IS NULL AND decided_at IS NULL THEN reason ELSE excluded.reason END,
             contact_ids = excluded.contact_ids,
             record = CASE WHEN ?6 IS NULL THEN record ELSE excluded.record END,
             record_tags = coalesce(excluded.record_tags, record_tags),
             detected_at = CASE WHEN resolved_at IS NULL AND decided_at IS NULL THEN detected_at ELSE excluded.detected_at END,
             resolved_at = NULL, decision = NULL, decision_contact = NULL, decided_at = NULL, history = NULL
             WHERE decided_at IS NULL OR resolved_at IS NOT NULL",
        )?
        .execute(params![
            provider_id,
            record.remote_id,
            kind.as_str(),
            reason,
            ids,
            record.fields.map(fields_json),
            record.tags.map(tags_json),
            now
        ])?;
    Ok(n > 0)
}

/// Whether `contacts` (two or more) were all decided to be different people, pair by pair.
pub fn all_kept_apart(conn: &Connection, contacts: &[ContactId]) -> Result<bool, StoreError> {
    if contacts.len() < 2 {
        return Ok(false);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM kept_apart WHERE (contact_id = ?1 AND other_id = ?2) OR (contact_id = ?2 AND other_id = ?1))",
    )?;
    for (i, &a) in contacts.iter().enumerate() {
        for &b in &contacts[i + 1..] {
            if !stmt.query_row(params![a, b], |r| r.get::<_, bool>(0))? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Keeps the match keys of a record held for review by matching (replacing those it had),
/// so that another record carrying one of them is held too ([`key_under_review`]).
pub fn set_review_keys<'a>(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
    keys: impl Iterator<Item = (KeyKind, &'a str)>,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM review_keys WHERE provider_id = ?1 AND remote_id = ?2")?
        .execute(params![provider_id, remote_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO review_keys (provider_id, remote_id, kind, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (kind, value) in keys {
        insert.execute(params![provider_id, remote_id, kind.as_str(), value])?;
    }
    Ok(())
}

/// Whether any record is held for review by matching with its keys kept (an open
/// `ambiguous_match` or `duplicate_in_provider` item): when none is, a page skips
/// [`key_under_review`].
pub fn any_keys_under_review(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM review_keys k JOIN conflicts c
                 ON c.provider_id = k.provider_id AND c.remote_id = k.remote_id
              WHERE c.resolved_at IS NULL AND c.kind IN ('ambiguous_match', 'duplicate_in_provider'))",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Whether a record other than `(provider_id, remote_id)` that is held for review (an open
/// `ambiguous_match` or `duplicate_in_provider` item) carries key `kind` = `value`.
pub fn key_under_review(
    conn: &Connection,
    kind: KeyKind,
    value: &str,
    provider_id: i64,
    remote_id: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM review_keys k JOIN conflicts c
                 ON c.provider_id = k.provider_id AND c.remote_id = k.remote_id
              WHERE k.kind = ?1 AND k.value = ?2
                AND NOT (k.provider_id = ?3 AND k.remote_id = ?4)
                AND c.resolved_at IS NULL AND c.kind IN ('ambiguous_match', 'duplicate_in_provider'))",
        )?
        .query_row(params![kind.as_str(), value, provider_id, remote_id], |r| {
            r.get(0)
        })?)
}
