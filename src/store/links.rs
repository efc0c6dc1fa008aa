//! Links: which remote record of a provider is which contact, in which state
//! (`creating`, `active`, `gone`), with the snapshot of what the provider last held.

use super::codec::{fields_json, parse_fields, parse_tags, tags_json};
use super::contacts;
use super::journal::{self, NewEntry, Stamp};
use super::{Seq, StoreError};
use crate::domain::field;
use crate::domain::journal::{
    Changes, EventKind, add_tag_change, created, field_changes, sent_changes,
};
use crate::domain::matching::{ContactId, KeyKind};
use crate::domain::merge::NormalizedRecord;
use crate::domain::review::ItemKind;
use crate::domain::{Fields, Tags};
use rusqlite::{Connection, OptionalExtension, params};

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

/// How a `creating` link found its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOp {
    /// Our create went through: journaled as a `sent_to` create of what was sent.
    Created,
    /// The provider held the record already: journaled as `linked`.
    Found,
}

/// Records the answer of a create or a discovery: the link becomes active with `snapshot`,
/// the journal says how (`how`; what the record filled in is a `linked` entry), and the
/// record fills the contact's gaps. When `replan` is set the contact is planned
/// again (the provider may differ from it). Returns `None` when another contact holds the
/// record (a conflict, not linked), else whether the contact's gaps were filled. One unit
/// of work: the caller runs it in one transaction (or savepoint).
#[allow(clippy::too_many_arguments)]
pub fn finish_link(
    conn: &Connection,
    seq: &Seq,
    link_id: i64,
    contact_id: ContactId,
    remote_id: &str,
    snapshot: &Fields,
    tags: Option<&Tags>,
    replan: bool,
    how: LinkOp,
    intent: Option<i64>,
    stamp: Stamp,
) -> Result<Option<bool>, StoreError> {
    let now = stamp.at;
    let tx = conn;
    if let Some(id) = intent {
        super::intents::complete_intent(tx, id)?;
    }
    // Another link of this provider may already hold the remote id (a record the listing
    // linked to another contact): then this contact stays unlinked there.
    let provider_id: i64 = tx
        .prepare_cached("SELECT provider_id FROM links WHERE id = ?1")?
        .query_row([link_id], |r| r.get(0))?;
    let clash: Option<ContactId> = tx
        .prepare_cached(
            "SELECT contact_id FROM links WHERE provider_id = ?1 AND remote_id = ?2 AND id != ?3",
        )?
        .query_row(params![provider_id, remote_id, link_id], |r| r.get(0))
        .optional()?;
    if let Some(other) = clash {
        tx.prepare_cached("DELETE FROM links WHERE id = ?1")?
            .execute([link_id])?;
        let mut people = vec![contact_id, other];
        people.sort_unstable();
        people.dedup();
        super::items::record_conflict(
            tx,
            provider_id,
            super::items::ItemRecord {
                remote_id,
                fields: Some(snapshot),
                tags,
            },
            ItemKind::Refused,
            "the provider refused to hold this person again: the record it holds with this key is linked to another contact; not merged",
            &people,
            now,
        )?;
        return Ok(None);
    }
    tx.prepare_cached("UPDATE links SET remote_id = ?2, state = 'active', snapshot = ?3, tags = ?4, hash = 0, updated_at = ?5 WHERE id = ?1")?
        .execute(params![link_id, remote_id, fields_json(snapshot), tags.map(tags_json), now])?;
    let fills = fill_gaps(tx, contact_id, snapshot, tags, seq, now)?;
    let entry = |kind, op, changes: &Changes| {
        journal::write(
            tx,
            stamp,
            NewEntry {
                contact: contact_id,
                provider: Some(provider_id),
                kind,
                op,
                remote_id: Some(remote_id),
                outcome: None,
                changes,
            },
        )
    };
    match how {
        LinkOp::Created => {
            entry(EventKind::SentTo, Some("create"), &created(snapshot, tags))?;
            if let Some(fills) = &fills {
                entry(EventKind::Linked, None, fills)?;
            }
        }
        LinkOp::Found => entry(
            EventKind::Linked,
            None,
            fills.as_ref().unwrap_or(&Changes::new()),
        )?,
    }
    let filled = fills.is_some();
    if replan && !filled {
        contacts::bump(tx, contact_id, seq.next())?;
    }
    Ok(Some(filled))
}

/// A record just linked fills the contact's gaps with what it holds (never a field the
/// contact has; an email or external key only when no other contact holds it; a phone
/// never, since its validity is not known here) and brings its tags. Returns what changed
/// on the contact, if anything (then it is planned again, so the other providers get it
/// too).
fn fill_gaps(
    conn: &Connection,
    contact_id: ContactId,
    found: &Fields,
    found_tags: Option<&Tags>,
    seq: &Seq,
    now: i64,
) -> Result<Option<Changes>, StoreError> {
    let Some(held) = contacts::load_held(conn, contact_id)? else {
        return Ok(None);
    };
    let mut fills = crate::domain::merge::gaps_filled_by(&held.fields, found);
    fills.remove(field::PHONE);
    for (key, kind) in [
        (field::EMAIL, KeyKind::Email),
        (field::SOURCE_ID, KeyKind::SourceId),
    ] {
        if let Some(value) = fills.get(key)
            && !contacts::add_key_if_free(conn, contact_id, kind, value)?
        {
            fills.remove(key);
        }
    }
    let new_tags: Vec<String> = found_tags
        .map(|t| {
            t.names()
                .filter(|n| !held.tags.contains(n))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if fills.is_empty() && new_tags.is_empty() {
        return Ok(None);
    }
    let mut fields = held.fields.clone();
    fields.extend(fills);
    crate::domain::names::complete(&mut fields);
    contacts::save_fields(conn, contact_id, &fields, held.phone_valid, seq.next(), now)?;
    contacts::add_tags(conn, contact_id, &new_tags)?;
    let mut changes = field_changes(&held.fields, &fields);
    let mut tags_after = held.tags.clone();
    for t in &new_tags {
        tags_after.insert(t);
    }
    add_tag_change(&mut changes, &held.tags, &tags_after);
    Ok(Some(changes))
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

/// Journals a write that went through (`sent_to`, in the caller's transaction): each field
/// of `snapshot` that differs from the link's snapshot now (the value it replaced there, as
/// far as the store knew it), and the tag set when `tags` changes it.
pub fn journal_write(
    conn: &Connection,
    link_id: i64,
    op: &str,
    snapshot: &Fields,
    tags: Option<&Tags>,
    stamp: Stamp,
) -> Result<(), StoreError> {
    let (provider_id, contact_id, remote_id, old, old_tags): (
        i64,
        ContactId,
        Option<String>,
        String,
        Option<String>,
    ) = conn
        .prepare_cached(
            "SELECT provider_id, contact_id, remote_id, snapshot, tags FROM links WHERE id = ?1",
        )?
        .query_row([link_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    let mut changes = sent_changes(&parse_fields(&old)?, snapshot);
    if let Some(tags) = tags {
        add_tag_change(
            &mut changes,
            &parse_tags(old_tags.as_deref())?.unwrap_or_default(),
            tags,
        );
    }
    journal::write(
        conn,
        stamp,
        NewEntry {
            contact: contact_id,
            provider: Some(provider_id),
            kind: EventKind::SentTo,
            op: Some(op),
            remote_id: remote_id.as_deref(),
            outcome: None,
            changes: &changes,
        },
    )
}

/// Journals a link going away (in the caller's transaction): our delete (`sent_to`
/// delete) or the provider's (`gone`).
pub fn journal_gone(
    conn: &Connection,
    link_id: i64,
    deleted_by_us: bool,
    stamp: Stamp,
) -> Result<(), StoreError> {
    let Some((provider_id, contact_id, remote_id)): Option<(i64, ContactId, Option<String>)> = conn
        .prepare_cached("SELECT provider_id, contact_id, remote_id FROM links WHERE id = ?1")?
        .query_row([link_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
    else {
        return Ok(());
    };
    let (kind, op) = if deleted_by_us {
        (EventKind::SentTo, Some("delete"))
    } else {
        (EventKind::Gone, None)
    };
    journal::write(
        conn,
        stamp,
        NewEntry {
            contact: contact_id,
            provider: Some(provider_id),
            kind,
            op,
            remote_id: remote_id.as_deref(),
            outcome: None,
            changes: &Changes::new(),
        },
    )
}

/// Marks a link gone (the provider answered 404 for it).
pub fn mark_link_gone(conn: &Connection, link_id: i64, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE links SET state = 'gone', updated_at = ?2 WHERE id = ?1")?
        .execute(params![link_id, now])?;
    Ok(())
}

/// The contact a link belongs to.
pub fn contact_of_link(conn: &Connection, link_id: i64) -> Result<Option<ContactId>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT contact_id FROM links WHERE id = ?1")?
        .query_row([link_id], |r| r.get(0))
        .optional()?)
}

/// Links a record to a contact with the record as the snapshot; returns the link id.
/// Whether the provider has an active link (else no listed record can be unchanged).
pub fn any_active(conn: &Connection, provider_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM links WHERE provider_id = ?1 AND state = 'active')",
        )?
        .query_row([provider_id], |r| r.get(0))?)
}

pub fn insert_link(
    conn: &Connection,
    provider_id: i64,
    contact: ContactId,
    rec: &NormalizedRecord,
    now: i64,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO links (provider_id, contact_id, remote_id, state, snapshot, tags, hash, seen_at, updated_at)
         VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![
        provider_id,
        contact,
        rec.remote_id,
        fields_json(&rec.fields),
        rec.tags.as_ref().map(tags_json),
        rec.hash,
        now
    ])?;
    Ok(conn.last_insert_rowid())
}
