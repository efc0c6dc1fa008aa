//! The outbox: planning inputs (contacts changed since a provider's watermark) and the
//! intents persisted from the plan, due, completed or failed.

use super::StoreError;
use super::contacts;
use super::journal::{self, NewEntry, Stamp};
use super::pull::{parse_fields, parse_tags};
use crate::domain::Tags;
use crate::domain::journal::{Changes, EventKind, add_tag_change, created};
use crate::domain::matching::ContactId;
use crate::domain::plan::{LinkView, Operation};
use crate::domain::{Fields, GoldenRecord};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// The planning watermark of a provider.
pub fn planned_seq(conn: &Connection, provider_id: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT planned_seq FROM providers WHERE id = ?1")?
        .query_row([provider_id], |r| r.get(0))?)
}

/// Moves the planning watermark.
pub fn set_planned_seq(conn: &Connection, provider_id: i64, seq: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE providers SET planned_seq = max(planned_seq, ?2) WHERE id = ?1")?
        .execute(params![provider_id, seq])?;
    Ok(())
}

/// One contact to plan, with its link in the provider.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The golden record.
    pub contact: GoldenRecord,
    /// Its change sequence.
    pub seq: i64,
    /// Its link in the provider.
    pub link: LinkView,
}

/// Contacts changed after `after_seq`, in sequence order, at most `limit`.
pub fn plan_inputs(
    conn: &Connection,
    provider_id: i64,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<PlanInput>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.seq, c.name, c.first_name, c.last_name, c.email, c.phone, c.source_id, c.attrs, c.phone_valid,
                l.state, l.remote_id, l.snapshot, l.tags,
                (SELECT json_group_array(tag) FROM contact_tags t WHERE t.contact_id = c.id),
                EXISTS (SELECT 1 FROM match_keys k WHERE k.contact_id = c.id), c.deleted,
                (SELECT json_group_array(field) FROM link_pins p WHERE p.link_id = l.id),
                (SELECT json_group_object(field, value) FROM withheld_fields w
                 WHERE w.provider_id = ?1 AND w.contact_id = c.id)
         FROM contacts c LEFT JOIN links l ON l.contact_id = c.id AND l.provider_id = ?1
         WHERE c.seq > ?2 ORDER BY c.seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![provider_id, after_seq, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                [
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ],
                r.get::<_, String>(8)?,
                r.get::<_, bool>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<String>>(11)?,
                r.get::<_, Option<String>>(12)?,
                r.get::<_, Option<String>>(13)?,
                r.get::<_, String>(14)?,
                r.get::<_, bool>(15)?,
                r.get::<_, bool>(16)?,
                r.get::<_, Option<String>>(17)?,
                r.get::<_, Option<String>>(18)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (
        id,
        seq,
        values,
        attrs,
        phone_valid,
        state,
        remote_id,
        snapshot,
        tags,
        contact_tags,
        has_key,
        deleted,
        pins,
        withheld,
    ) in rows
    {
        let link = match state.as_deref() {
            None => LinkView::None,
            Some("gone") => LinkView::Gone,
            Some("creating") => LinkView::Creating,
            Some(_) => LinkView::Active {
                remote_id: remote_id.unwrap_or_default(),
                snapshot: parse_fields(snapshot.as_deref().unwrap_or("{}"))?,
                tags: parse_tags(tags.as_deref())?,
            },
        };
        let mut fields = contacts::fields_from_row(values, &attrs)?;
        // Pinned fields (`review apart`) keep the value the provider holds.
        if let (LinkView::Active { snapshot, .. }, Some(pins)) = (&link, pins.as_deref()) {
            let pins: Vec<String> = serde_json::from_str(pins).unwrap_or_default();
            if !pins.is_empty() {
                crate::domain::review::hold_pinned(&mut fields, snapshot, &pins);
            }
        }
        // Values the provider refused because a different person's record there holds
        // them (`review apart` on a refusal) are not sent there while they stay the same.
        if let Some(withheld) = withheld.as_deref() {
            let withheld: std::collections::BTreeMap<String, String> =
                serde_json::from_str(withheld).unwrap_or_default();
            let snapshot = match &link {
                LinkView::Active { snapshot, .. } => Some(snapshot),
                _ => None,
            };
            let held: Vec<String> = withheld
                .into_iter()
                .filter(|(f, v)| fields.get(f) == Some(v))
                .map(|(f, _)| f)
                .collect();
            if !held.is_empty() {
                let none = Fields::new();
                crate::domain::review::hold_pinned(&mut fields, snapshot.unwrap_or(&none), &held);
            }
        }
        out.push(PlanInput {
            contact: GoldenRecord {
                id,
                fields,
                phone_valid,
                has_key,
                deleted,
                tags: parse_tags(Some(&contact_tags))?.unwrap_or_default(),
            },
            seq,
            link,
        });
    }
    Ok(out)
}

/// What an intent carries: the operation plus what the executor needs to address it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentPayload {
    /// The write.
    pub op: Operation,
    /// The contact projected onto the provider when planned.
    pub projection: Fields,
    /// The tags the provider held as far as known when planned.
    pub known_tags: Vec<String>,
}

/// A persisted intent.
#[derive(Debug, Clone)]
pub struct Intent {
    /// Id.
    pub id: i64,
    /// Contact.
    pub contact_id: ContactId,
    /// What to do.
    pub payload: IntentPayload,
    /// Attempts so far.
    pub attempts: i64,
}

/// Persists intents (before anything is sent).
pub fn insert_intents(
    tx: &Connection,
    provider_id: i64,
    intents: &[(ContactId, IntentPayload)],
    now: i64,
) -> Result<(), StoreError> {
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO intents (provider_id, contact_id, op, payload, state, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5)",
        )?;
        for (contact, payload) in intents {
            let json =
                serde_json::to_string(payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            stmt.execute(params![provider_id, contact, payload.op.kind(), json, now])?;
        }
    }
    Ok(())
}

/// Pending intents of a provider due at `now` (all pending ones when `now` is `None`),
/// oldest first, after id `after`, at most `limit`.
pub fn due_intents(
    conn: &Connection,
    provider_id: i64,
    now: Option<i64>,
    after: i64,
    limit: usize,
) -> Result<Vec<Intent>, StoreError> {
    // `+provider_id`, `+state`: walk the intents in id order (a range of the primary key)
    // rather than through `intents_due`, which would sort every pending intent of the
    // provider for each batch (quadratic over a first import's hundreds of thousands).
    let mut stmt = conn.prepare_cached(
        "SELECT id, contact_id, payload, attempts FROM intents
         WHERE +provider_id = ?1 AND +state = 'pending' AND next_attempt_at <= ?2 AND id > ?3 ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt
        .query_map(
            params![provider_id, now.unwrap_or(i64::MAX), after, limit as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, contact_id, payload, attempts)| {
            Ok(Intent {
                id,
                contact_id,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(format!("intent {id}: {e}")))?,
                attempts,
            })
        })
        .collect()
}

/// Removes a finished intent.
pub fn complete_intent(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM intents WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Journals a failed attempt of an intent (`sent_to`, in the caller's transaction): what
/// it tried to send, and why it did not go through.
pub fn journal_failure(
    conn: &Connection,
    id: i64,
    dead: bool,
    error: &str,
    stamp: Stamp,
) -> Result<(), StoreError> {
    let Some((provider_id, contact_id, payload)): Option<(i64, ContactId, String)> = conn
        .prepare_cached("SELECT provider_id, contact_id, payload FROM intents WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
    else {
        return Ok(());
    };
    let payload: IntentPayload = serde_json::from_str(&payload)
        .map_err(|e| StoreError::Corrupt(format!("intent {id}: {e}")))?;
    let known: Tags = payload.known_tags.iter().collect();
    let mut changes = Changes::new();
    let remote_id = match &payload.op {
        Operation::Create { fields, tags } => {
            changes = created(fields, Some(&tags.iter().collect()));
            None
        }
        Operation::Update {
            remote_id,
            changes: sent,
        } => {
            for c in sent {
                changes.insert(
                    c.field.clone(),
                    [c.old.clone().into(), c.new.clone().into()],
                );
            }
            Some(remote_id)
        }
        Operation::TagAdd { remote_id, tags } | Operation::TagRemove { remote_id, tags } => {
            let mut after = known.clone();
            for t in tags {
                if matches!(payload.op, Operation::TagAdd { .. }) {
                    after.insert(t);
                } else {
                    after.remove(t);
                }
            }
            add_tag_change(&mut changes, &known, &after);
            Some(remote_id)
        }
        Operation::Delete { remote_id } => Some(remote_id),
    };
    let outcome = format!("{}: {error}", if dead { "given up" } else { "failed" });
    journal::write(
        conn,
        stamp,
        NewEntry {
            contact: contact_id,
            provider: Some(provider_id),
            kind: EventKind::SentTo,
            op: Some(payload.op.kind()),
            remote_id: remote_id.map(String::as_str),
            outcome: Some(&outcome),
            changes: &changes,
        },
    )
}

/// Records a failed attempt: retried at `next_attempt_at`, or given up (`dead`).
pub fn fail_intent(
    conn: &Connection,
    id: i64,
    dead: bool,
    next_attempt_at: i64,
    error: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE intents SET attempts = attempts + 1, state = ?2, next_attempt_at = ?3, last_error = ?4, updated_at = ?5 WHERE id = ?1",
    )?
    .execute(params![id, if dead { "dead" } else { "pending" }, next_attempt_at, error, now])?;
    Ok(())
}
