//! Opening review items: the `conflicts` rows a listing, a refused write or a clash
//! opens, and the `kept_apart` decisions that keep an item from opening again. The review
//! commands (`review.rs`) read and decide them.

use super::StoreError;
use super::codec::{fields_json, tags_json};
use crate::domain::matching::ContactId;
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
