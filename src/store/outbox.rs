//! Planning inputs, the outbox of intents, link updates after a write, providers and runs.

use super::contacts;
use super::pull::{fields_json, parse_fields, parse_tags, tags_json};
use super::{Seq, StoreError};
use crate::domain::matching::ContactId;
use crate::domain::plan::{GoldenRecord, LinkView, Operation};
use crate::domain::{Fields, Tags};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Ensures a provider row exists; returns its id.
pub fn ensure_provider(conn: &Connection, name: &str, kind: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT INTO providers (name, kind) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET kind = excluded.kind")?
        .execute(params![name, kind])?;
    Ok(conn
        .prepare_cached("SELECT id FROM providers WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

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
                EXISTS (SELECT 1 FROM match_keys k WHERE k.contact_id = c.id), c.deleted
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
        out.push(PlanInput {
            contact: GoldenRecord {
                id,
                fields: contacts::fields_from_row(values, &attrs)?,
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

/// An active link's id, remote id, snapshot and tags.
#[derive(Debug, Clone)]
pub struct ActiveLink {
    /// Link id.
    pub id: i64,
    /// Remote id.
    pub remote_id: String,
    /// Snapshot.
    pub snapshot: Fields,
    /// Tag snapshot.
    pub tags: Option<Tags>,
}

/// The link of a contact in a provider, with its state.
pub fn link_of(
    conn: &Connection,
    provider_id: i64,
    contact_id: ContactId,
) -> Result<Option<(String, ActiveLink)>, StoreError> {
    let row = conn
        .prepare_cached("SELECT id, state, remote_id, snapshot, tags FROM links WHERE provider_id = ?1 AND contact_id = ?2")?
        .query_row(params![provider_id, contact_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()?;
    row.map(|(id, state, remote_id, snapshot, tags)| {
        Ok((
            state,
            ActiveLink {
                id,
                remote_id: remote_id.unwrap_or_default(),
                snapshot: parse_fields(&snapshot)?,
                tags: parse_tags(tags.as_deref())?,
            },
        ))
    })
    .transpose()
}

/// Writes a `creating` link before a create is sent; returns its id. Fails with `None`
/// when the contact already has a link in the provider.
pub fn begin_create(
    conn: &Connection,
    provider_id: i64,
    contact_id: ContactId,
    sent: &Fields,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO links (provider_id, contact_id, remote_id, state, snapshot, updated_at) VALUES (?1, ?2, NULL, 'creating', ?3, ?4)",
        )?
        .execute(params![provider_id, contact_id, fields_json(sent), now])?;
    Ok((n == 1).then(|| conn.last_insert_rowid()))
}

/// Records the answer of a create or a discovery: the link becomes active with `snapshot`.
/// When `replan` is set the contact is planned again (the provider may differ from it).
#[allow(clippy::too_many_arguments)]
pub fn finish_link(
    conn: &mut Connection,
    seq: &Seq,
    link_id: i64,
    contact_id: ContactId,
    remote_id: &str,
    snapshot: &Fields,
    tags: Option<&Tags>,
    replan: bool,
    intent: Option<i64>,
    now: i64,
) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    if let Some(id) = intent {
        complete_intent(&tx, id)?;
    }
    // Another link of this provider may already hold the remote id (a record the listing
    // linked to another contact): then this contact stays unlinked there.
    let provider_id: i64 = tx.query_row(
        "SELECT provider_id FROM links WHERE id = ?1",
        [link_id],
        |r| r.get(0),
    )?;
    let clash: Option<i64> = tx
        .query_row(
            "SELECT id FROM links WHERE provider_id = ?1 AND remote_id = ?2 AND id != ?3",
            params![provider_id, remote_id, link_id],
            |r| r.get(0),
        )
        .optional()?;
    if clash.is_some() {
        tx.execute("DELETE FROM links WHERE id = ?1", [link_id])?;
        super::pull::record_conflict(
            &tx,
            provider_id,
            remote_id,
            "the provider answered with a record already linked to another contact; not merged",
            &[contact_id],
            now,
        )?;
        tx.commit()?;
        return Ok(false);
    }
    tx.prepare_cached("UPDATE links SET remote_id = ?2, state = 'active', snapshot = ?3, tags = ?4, hash = 0, updated_at = ?5 WHERE id = ?1")?
        .execute(params![link_id, remote_id, fields_json(snapshot), tags.map(tags_json), now])?;
    if replan {
        contacts::bump(&tx, contact_id, seq.next())?;
    }
    tx.commit()?;
    Ok(true)
}

/// Drops a `creating` link whose create never reached the provider, and marks the
/// contact to be planned again.
pub fn drop_creating(
    conn: &Connection,
    seq: &Seq,
    link_id: i64,
    contact_id: ContactId,
) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM links WHERE id = ?1 AND state = 'creating'")?
        .execute([link_id])?;
    if n > 0 {
        contacts::bump(conn, contact_id, seq.next())?;
    }
    Ok(())
}

/// Links left `creating` (by a crash) in a provider: `(link id, contact id, sent fields)`.
pub fn creating_links(
    conn: &Connection,
    provider_id: i64,
) -> Result<Vec<(i64, ContactId, Fields)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, contact_id, snapshot FROM links WHERE provider_id = ?1 AND state = 'creating'",
    )?;
    let rows = stmt
        .query_map([provider_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(l, c, s)| Ok((l, c, parse_fields(&s)?)))
        .collect()
}

/// After a successful update or tag write: the new snapshot of the link. The hash is reset
/// so the next listing compares fields rather than skipping.
pub fn update_link_snapshot(
    conn: &Connection,
    link_id: i64,
    snapshot: &Fields,
    tags: Option<&Tags>,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE links SET snapshot = ?2, tags = coalesce(?3, tags), hash = 0, updated_at = ?4 WHERE id = ?1")?
        .execute(params![link_id, fields_json(snapshot), tags.map(tags_json), now])?;
    Ok(())
}

/// Marks a link gone (the provider answered 404 for it).
pub fn mark_link_gone(conn: &Connection, link_id: i64, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE links SET state = 'gone', updated_at = ?2 WHERE id = ?1")?
        .execute(params![link_id, now])?;
    Ok(())
}

/// With `propagate_deletes`: marks contacts deleted and to be planned again (their
/// active links elsewhere get a delete).
pub fn mark_contacts_deleted(
    conn: &Connection,
    seq: &Seq,
    contacts: &[ContactId],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE contacts SET deleted = 1, seq = ?2 WHERE id = ?1 AND deleted = 0",
    )?;
    for id in contacts {
        stmt.execute(params![id, seq.next()])?;
    }
    Ok(())
}

/// The contact a link belongs to.
pub fn contact_of_link(conn: &Connection, link_id: i64) -> Result<Option<ContactId>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT contact_id FROM links WHERE id = ?1")?
        .query_row([link_id], |r| r.get(0))
        .optional()?)
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

/// Starts a run row.
pub fn begin_run(conn: &Connection, provider_id: i64, now: i64) -> Result<i64, StoreError> {
    conn.prepare_cached("INSERT INTO runs (provider_id, started_at) VALUES (?1, ?2)")?
        .execute(params![provider_id, now])?;
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

/// A few people with the providers holding them, for the demo: `(contact, [(provider, remote id)])`.
pub fn sample_people(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<(GoldenRecord, Vec<(String, String)>)>, StoreError> {
    let ids: Vec<i64> = conn
        .prepare(
            "SELECT contact_id FROM links WHERE state = 'active' GROUP BY contact_id ORDER BY count(*) DESC, contact_id LIMIT ?1",
        )?
        .query_map([limit as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(c) = contacts::load(conn, id)? {
            let links: Vec<(String, String)> = conn
                .prepare_cached(
                    "SELECT p.name, l.remote_id FROM links l JOIN providers p ON p.id = l.provider_id
                     WHERE l.contact_id = ?1 AND l.state = 'active' ORDER BY p.id",
                )?
                .query_map([id], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default())))?
                .collect::<Result<_, _>>()?;
            out.push((c, links));
        }
    }
    Ok(out)
}
