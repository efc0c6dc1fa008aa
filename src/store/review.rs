//! The review queue (`contact-sync review`): open items, one item with its records and
//! people side by side, the decisions the `review` commands write, and carrying them out
//! at the start of the next cycle ([`apply_decisions`], one transaction per item).
//!
//! An item is a row of `conflicts`: open while it has neither a decision nor
//! `resolved_at`; decided (`decided_at`) until the next cycle carries the decision out
//! and sets `resolved_at`. The rules on values are pure, in [`crate::domain::review`].

use super::codec::{parse_fields, parse_tags, rfc3339};
use super::contacts;
use super::items::{ItemRecord, all_kept_apart, record_conflict};
use super::journal::{self, NewEntry, Stamp};
use super::links::insert_link;
use super::{Seq, StoreError};
use crate::domain::journal::{Changes, EventKind, add_tag_change, field_changes};
use crate::domain::matching::{ContactId, KeyKind};
use crate::domain::merge::NormalizedRecord;
use crate::domain::review::{
    ApartRule, Decision, FieldDecision, ItemKind, MergeRecord, field_decisions, fill_gaps,
    key_field, merge_people, strongest_owner,
};
use crate::domain::{Fields, Tags, field};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

/// One item of the queue, as `review --json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Item {
    /// The item's id (what `review show/merge/apart` take).
    pub id: i64,
    /// `ambiguous_match`, `duplicate_in_provider` or `refused`.
    pub kind: String,
    /// The provider's configured name.
    pub provider: String,
    /// The provider's id of the record.
    pub remote_id: String,
    /// The people (contact ids) involved.
    pub contacts: Vec<ContactId>,
    /// Why, for a human.
    pub reason: String,
    /// When it was opened, RFC 3339 UTC.
    pub opened_at: String,
}

/// A provider's record, as `review show` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordView {
    /// The provider's configured name.
    pub provider: String,
    /// The provider's id of the record.
    pub remote_id: String,
    /// Its fields as last shown (or sent).
    pub fields: Fields,
}

/// A record linked to a person.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkRef {
    /// The provider's configured name.
    pub provider: String,
    /// The provider's id of the record.
    pub remote_id: String,
}

/// A candidate person, as `review show` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ContactView {
    /// The contact id.
    pub id: ContactId,
    /// The golden record's fields.
    pub fields: Fields,
    /// The records linked to it.
    pub links: Vec<LinkRef>,
}

/// `review show ID --json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemDetail {
    /// The item.
    pub item: Item,
    /// The item's record, then the records the candidate people hold in that provider.
    pub records: Vec<RecordView>,
    /// The candidate people.
    pub contacts: Vec<ContactView>,
    /// What `review merge` decided earlier about these people or this record (oldest
    /// first): who survived, which values were kept from whom, which were not kept.
    pub history: Vec<MergeHistory>,
}

/// One merge carried out earlier, as `review show` prints it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MergeHistory {
    /// The item that was decided.
    pub item: i64,
    /// When the merge was carried out, RFC 3339 UTC.
    pub at: String,
    /// The item's provider (configured name) and record.
    pub provider: String,
    /// The item's record.
    pub remote_id: String,
    /// The person kept.
    pub survivor: Option<ContactId>,
    /// The people folded into it.
    pub absorbed: Vec<ContactId>,
    /// Records merged into the survivor's record in their provider (`PROVIDER:REMOTE_ID`).
    pub records: Vec<String>,
    /// Field by field: what was kept from whom, and what was not kept.
    pub fields: Vec<FieldDecision>,
}

/// The merges carried out earlier that concern `contacts` or the record `remote_id` of
/// `provider_id` (the item `id` itself included), oldest first.
fn merge_history(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
    contacts: &[ContactId],
) -> Result<Vec<MergeHistory>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.resolved_at, p.name, c.provider_id, c.remote_id, c.contact_ids, c.history,
                c.survivor, c.decision_contact
         FROM conflicts c JOIN providers p ON p.id = c.provider_id
         WHERE c.decision = 'merge' AND c.resolved_at IS NOT NULL ORDER BY c.resolved_at, c.id",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, Option<i64>>(8)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::new();
    for (id, at, provider, pid, remote, ids, history, survivor, chosen) in rows {
        let people: Vec<ContactId> = serde_json::from_str(&ids).unwrap_or_default();
        // Written before 0005, the history was a map of what was not kept: shown with
        // who survived, without the field decisions.
        let record: MergeRecord = history
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default();
        let survivor = record
            .survivor
            .or(survivor)
            .or(chosen)
            .or_else(|| people.iter().copied().min());
        let absorbed = if record.survivor.is_some() {
            record.absorbed
        } else {
            people
                .iter()
                .copied()
                .filter(|c| Some(*c) != survivor)
                .collect()
        };
        let concerns = (pid == provider_id && remote == remote_id)
            || contacts
                .iter()
                .any(|c| people.contains(c) || Some(*c) == survivor || absorbed.contains(c));
        if !concerns {
            continue;
        }
        out.push(MergeHistory {
            item: id,
            at: rfc3339(at),
            provider,
            remote_id: remote,
            survivor,
            absorbed,
            records: record.records,
            fields: record.fields,
        });
    }
    Ok(out)
}

/// Where an item stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemState {
    /// Awaiting a decision.
    Open,
    /// Decided (`merge` or `apart`); the next cycle carries it out.
    Decided(String),
    /// Closed: carried out, or the record no longer needs a decision.
    Resolved,
}

const ITEM_COLUMNS: &str = "c.id, c.kind, p.name, c.remote_id, c.contact_ids, c.reason, c.detected_at, c.decision, c.decided_at, c.resolved_at";

fn item_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Item, ItemState)> {
    let ids: String = r.get(4)?;
    let decision: Option<String> = r.get(7)?;
    let decided: Option<i64> = r.get(8)?;
    let resolved: Option<i64> = r.get(9)?;
    let state = match (resolved, decided) {
        (Some(_), _) => ItemState::Resolved,
        (None, Some(_)) => ItemState::Decided(decision.unwrap_or_default()),
        (None, None) => ItemState::Open,
    };
    Ok((
        Item {
            id: r.get(0)?,
            kind: r.get(1)?,
            provider: r.get(2)?,
            remote_id: r.get(3)?,
            contacts: serde_json::from_str(&ids).unwrap_or_default(),
            reason: r.get(5)?,
            opened_at: rfc3339(r.get(6)?),
        },
        state,
    ))
}

/// The SQL condition of an open item (alias `c`).
pub const OPEN: &str = "c.resolved_at IS NULL AND c.decided_at IS NULL";

/// The open items, oldest first.
pub fn open_items(conn: &Connection) -> Result<Vec<Item>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ITEM_COLUMNS} FROM conflicts c JOIN providers p ON p.id = c.provider_id
         WHERE {OPEN} ORDER BY c.id"
    ))?;
    let rows = stmt
        .query_map([], item_from_row)?
        .map(|r| r.map(|(item, _)| item))
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// One item (any state) with its records and candidate people.
pub fn show_item(
    conn: &Connection,
    id: i64,
) -> Result<Option<(ItemDetail, ItemState)>, StoreError> {
    let row = conn
        .prepare(&format!(
            "SELECT {ITEM_COLUMNS}, c.record, c.provider_id FROM conflicts c
             JOIN providers p ON p.id = c.provider_id WHERE c.id = ?1"
        ))?
        .query_row([id], |r| {
            let (item, state) = item_from_row(r)?;
            Ok((item, state, r.get::<_, String>(10)?, r.get::<_, i64>(11)?))
        })
        .optional()?;
    let Some((item, state, record, provider_id)) = row else {
        return Ok(None);
    };
    let mut records = vec![RecordView {
        provider: item.provider.clone(),
        remote_id: item.remote_id.clone(),
        fields: parse_fields(&record)?,
    }];
    let mut people = Vec::new();
    for &contact in &item.contacts {
        let Some(golden) = contacts::load(conn, contact)? else {
            continue;
        };
        let links = links_of(conn, contact)?;
        if let Some((remote_id, snapshot)) = conn
            .prepare_cached(
                "SELECT remote_id, snapshot FROM links WHERE provider_id = ?1 AND contact_id = ?2
                 AND state = 'active' AND remote_id IS NOT NULL",
            )?
            .query_row(params![provider_id, contact], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?
            .filter(|(remote_id, _)| *remote_id != item.remote_id)
        {
            records.push(RecordView {
                provider: item.provider.clone(),
                remote_id,
                fields: parse_fields(&snapshot)?,
            });
        }
        people.push(ContactView {
            id: contact,
            fields: golden.fields,
            links,
        });
    }
    let history = merge_history(conn, provider_id, &item.remote_id, &item.contacts)?;
    Ok(Some((
        ItemDetail {
            item,
            records,
            contacts: people,
            history,
        },
        state,
    )))
}

fn links_of(conn: &Connection, contact: ContactId) -> Result<Vec<LinkRef>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.name, l.remote_id FROM links l JOIN providers p ON p.id = l.provider_id
         WHERE l.contact_id = ?1 AND l.state = 'active' AND l.remote_id IS NOT NULL ORDER BY p.id",
    )?;
    let rows = stmt
        .query_map([contact], |r| {
            Ok(LinkRef {
                provider: r.get(0)?,
                remote_id: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// What writing a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Written; the next cycle carries it out.
    Written,
    /// No item has this id.
    Unknown,
    /// The item was decided or closed already (`state`).
    AlreadyDecided(ItemState),
    /// The contact named by `--keep`/`--link` cannot be used; why.
    BadContact(String),
}

/// Writes a decision on an open item, in one short write transaction (the only moment the
/// command holds the store's write lock; a running daemon carries it out next cycle).
pub fn decide(
    conn: &mut Connection,
    id: i64,
    decision: Decision,
    contact: Option<ContactId>,
    now: i64,
) -> Result<Decided, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row = tx
        .query_row(
            "SELECT c.contact_ids, c.decision, c.decided_at, c.resolved_at FROM conflicts c WHERE c.id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((ids, prior, decided_at, resolved_at)) = row else {
        return Ok(Decided::Unknown);
    };
    if resolved_at.is_some() {
        return Ok(Decided::AlreadyDecided(ItemState::Resolved));
    }
    if decided_at.is_some() {
        return Ok(Decided::AlreadyDecided(ItemState::Decided(
            prior.unwrap_or_default(),
        )));
    }
    let people: Vec<ContactId> = serde_json::from_str(&ids).unwrap_or_default();
    if let Some(c) = contact {
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM contacts WHERE id = ?1)",
            [c],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(Decided::BadContact(format!("there is no contact {c}")));
        }
        // `--link` may name anyone: a person the provider holds a record of already keeps
        // that one, and this record is kept as a second record of them (as when its
        // strongest key names them; see `link_record`).
        if matches!(decision, Decision::Merge) && !people.contains(&c) {
            return Ok(Decided::BadContact(format!(
                "contact {c} is not one of this item's people {people:?}; --keep names the one that survives"
            )));
        }
    }
    tx.execute(
        "UPDATE conflicts SET decision = ?2, decision_contact = ?3, decided_at = ?4 WHERE id = ?1",
        params![id, decision.as_str(), contact, now],
    )?;
    tx.commit()?;
    Ok(Decided::Written)
}

/// Whether any record of the provider was merged into another (`review merge`): when none
/// was, a page skips [`is_merged_record`].
pub fn any_merged_record(conn: &Connection, provider_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM merged_records WHERE provider_id = ?1)")?
        .query_row([provider_id], |r| r.get(0))?)
}

/// Whether a record was merged into another record of the same person there.
pub fn is_merged_record(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM merged_records WHERE provider_id = ?1 AND remote_id = ?2)",
        )?
        .query_row(params![provider_id, remote_id], |r| r.get(0))?)
}

/// The "different people" decisions about a contact (either side).
pub fn apart_rules_of(conn: &Connection, contact: ContactId) -> Result<Vec<ApartRule>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT contact_id, other_id, kind, value FROM kept_apart WHERE contact_id = ?1
         UNION SELECT contact_id, other_id, kind, value FROM kept_apart WHERE other_id = ?1",
    )?;
    let rows = stmt
        .query_map([contact], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(contact, other, kind, value)| {
            key_kind(&kind).map(|kind| ApartRule {
                contact,
                other,
                kind,
                value,
            })
        })
        .collect())
}

fn key_kind(s: &str) -> Option<KeyKind> {
    [KeyKind::SourceId, KeyKind::Phone, KeyKind::Email]
        .into_iter()
        .find(|k| k.as_str() == s)
}

/// The fields pinned on a link.
pub fn pins_of(conn: &Connection, link_id: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT field FROM link_pins WHERE link_id = ?1")?;
    let rows = stmt
        .query_map([link_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Pins fields on a link.
pub fn pin_fields(conn: &Connection, link_id: i64, fields: &[String]) -> Result<(), StoreError> {
    let mut stmt =
        conn.prepare_cached("INSERT OR IGNORE INTO link_pins (link_id, field) VALUES (?1, ?2)")?;
    for f in fields {
        stmt.execute(params![link_id, f])?;
    }
    Ok(())
}

/// A record to merge into another record of the same person in a provider that can
/// merge (Chatwoot), as the executor runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMerge {
    /// The person.
    pub contact_id: ContactId,
    /// Who, for a human.
    pub who: String,
    /// The record that disappears into `into`.
    pub remote_id: String,
    /// The survivor's record (the base).
    pub into: String,
    /// Earlier failed attempts.
    pub attempts: i64,
}

/// The merges a provider still has to run.
pub fn pending_merges(conn: &Connection, provider_id: i64) -> Result<Vec<RemoteMerge>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.contact_id, c.name, c.email, c.phone, m.remote_id, m.into_remote_id, m.attempts
         FROM merged_records m JOIN contacts c ON c.id = m.contact_id
         WHERE m.provider_id = ?1 AND m.remote_merge = 'pending' ORDER BY m.merged_at, m.remote_id",
    )?;
    let rows = stmt
        .query_map([provider_id], |r| {
            let who = [r.get::<_, String>(1)?, r.get(2)?, r.get(3)?]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or_default();
            Ok(RemoteMerge {
                contact_id: r.get(0)?,
                who,
                remote_id: r.get(4)?,
                into: r.get(5)?,
                attempts: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Records how a merge in the provider went: `Ok` done; `Err((message, give_up))` failed
/// (tried again next cycle unless given up).
pub fn finish_merge(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
    outcome: Result<(), (String, bool)>,
) -> Result<(), StoreError> {
    match outcome {
        Ok(()) => conn.execute(
            "UPDATE merged_records SET remote_merge = 'done', last_error = NULL WHERE provider_id = ?1 AND remote_id = ?2",
            params![provider_id, remote_id],
        )?,
        Err((message, give_up)) => conn.execute(
            "UPDATE merged_records SET attempts = attempts + 1, last_error = ?3,
             remote_merge = CASE WHEN ?4 THEN 'failed' ELSE remote_merge END
             WHERE provider_id = ?1 AND remote_id = ?2",
            params![provider_id, remote_id, message, give_up],
        )?,
    };
    Ok(())
}

/// A decision that could not be carried out as decided: the item asks again, saying why.
#[derive(Debug, Clone)]
struct AskAgain {
    reason: String,
}

impl AskAgain {
    fn because(reason: String) -> Self {
        Self { reason }
    }
}

/// A decided item, as carrying it out needs it.
#[derive(Debug, Clone)]
struct DecidedItem {
    id: i64,
    provider_id: i64,
    remote_id: String,
    kind: ItemKind,
    contacts: Vec<ContactId>,
    record: Fields,
    tags: Option<Tags>,
    decision: Decision,
    chosen: Option<ContactId>,
}

/// What carrying out the decisions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedDecisions {
    /// Items carried out.
    pub applied: u64,
    /// Items that could not be carried out as decided and were opened again (with a
    /// reason saying why).
    pub reopened: u64,
}

/// Carries out every decided item, oldest first, one transaction each. `can_merge` holds
/// the providers that merge records themselves (Chatwoot).
pub fn apply_decisions(
    conn: &mut Connection,
    seq: &Seq,
    can_merge: &[i64],
    stamp: Stamp,
) -> Result<AppliedDecisions, StoreError> {
    let now = stamp.at;
    let ids: Vec<i64> = conn
        .prepare(
            "SELECT id FROM conflicts WHERE decided_at IS NOT NULL AND resolved_at IS NULL ORDER BY decided_at, id",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = AppliedDecisions::default();
    for id in ids {
        let tx = conn.transaction()?;
        let Some(item) = load_decided(&tx, id)? else {
            continue;
        };
        let reopened = match item.decision {
            Decision::Apart => apply_apart(&tx, seq, &item, now)?,
            Decision::Merge => apply_merge(&tx, seq, &item, can_merge, stamp)?,
        };
        if reopened.is_none() {
            release_refusals(&tx, seq, &item)?;
        }
        if let Some(again) = reopened {
            tracing::warn!(
                item = id,
                "review decision could not be carried out as decided: {}",
                again.reason
            );
            tx.execute(
                "UPDATE conflicts SET decision = NULL, decision_contact = NULL, decided_at = NULL, reason = ?2,
                 detected_at = ?3 WHERE id = ?1",
                params![id, again.reason, now],
            )?;
            out.reopened += 1;
        } else {
            tx.execute(
                "UPDATE conflicts SET resolved_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            out.applied += 1;
        }
        tx.commit()?;
    }
    Ok(out)
}

/// A decided `refused` item lets the people it held back be planned again in its
/// provider: after `apart`, without the values the holder (a different person's record)
/// holds there; after `merge`, as the one person they became.
fn release_refusals(conn: &Connection, seq: &Seq, item: &DecidedItem) -> Result<(), StoreError> {
    let holder = link_of_record(conn, item.provider_id, &item.remote_id)?.map(|(_, c)| c);
    for (contact, fields) in refusals_of(conn, item.id)? {
        if !contact_exists(conn, contact)? {
            continue;
        }
        if item.decision == Decision::Apart && holder != Some(contact) {
            withhold(conn, item.provider_id, contact, &fields)?;
        }
        contacts::bump(conn, contact, seq.next())?;
    }
    Ok(())
}

fn load_decided(conn: &Connection, id: i64) -> Result<Option<DecidedItem>, StoreError> {
    let row = conn
        .query_row(
            "SELECT provider_id, remote_id, kind, contact_ids, record, record_tags, decision, decision_contact
             FROM conflicts WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                ))
            },
        )
        .optional()?;
    let Some((provider_id, remote_id, kind, ids, record, tags, decision, chosen)) = row else {
        return Ok(None);
    };
    let Some(decision) = decision.as_deref().and_then(Decision::parse) else {
        return Ok(None);
    };
    let mut people: Vec<ContactId> = Vec::new();
    for c in serde_json::from_str::<Vec<ContactId>>(&ids).unwrap_or_default() {
        if contact_exists(conn, c)? {
            people.push(c);
        }
    }
    Ok(Some(DecidedItem {
        id,
        provider_id,
        remote_id,
        kind: ItemKind::parse(&kind).unwrap_or(ItemKind::AmbiguousMatch),
        contacts: people,
        record: parse_fields(&record)?,
        tags: parse_tags(tags.as_deref())?,
        decision,
        chosen,
    }))
}

fn contact_exists(conn: &Connection, id: ContactId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM contacts WHERE id = ?1)")?
        .query_row([id], |r| r.get(0))?)
}

/// The record's match keys `(kind, value)` in matching order, from its stored fields
/// (normalised when it was held).
fn record_keys(record: &Fields) -> Vec<(KeyKind, String)> {
    let mut out = Vec::new();
    for kind in [KeyKind::SourceId, KeyKind::Phone, KeyKind::Email] {
        let Some(v) = record.get(key_field(kind)).filter(|v| !v.is_empty()) else {
            continue;
        };
        let valid = match kind {
            KeyKind::Phone => is_e164(v),
            KeyKind::Email => v.contains('@'),
            KeyKind::SourceId => true,
        };
        if valid {
            out.push((kind, v.clone()));
        }
    }
    out
}

fn is_e164(v: &str) -> bool {
    v.strip_prefix('+')
        .is_some_and(|d| d.len() >= 7 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The record's key hits now: `(kind, value, owner)`.
fn record_hits(
    conn: &Connection,
    record: &Fields,
) -> Result<Vec<(KeyKind, String, ContactId)>, StoreError> {
    let mut out = Vec::new();
    for (kind, value) in record_keys(record) {
        if let Some(owner) = contacts::key_owner(conn, kind, &value)? {
            out.push((kind, value, owner));
        }
    }
    Ok(out)
}

/// `(link id, contact, state)` of the record in its provider.
fn link_of_record(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
) -> Result<Option<(i64, ContactId)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, contact_id FROM links WHERE provider_id = ?1 AND remote_id = ?2",
        )?
        .query_row(params![provider_id, remote_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// `(link id, remote id, state)` of a contact in a provider.
fn link_here(
    conn: &Connection,
    provider_id: i64,
    contact: ContactId,
) -> Result<Option<(i64, Option<String>, String)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, remote_id, state FROM links WHERE provider_id = ?1 AND contact_id = ?2",
        )?
        .query_row(params![provider_id, contact], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?)
}

fn record_as_normalized(item: &DecidedItem) -> NormalizedRecord {
    NormalizedRecord {
        remote_id: item.remote_id.clone(),
        fields: item.record.clone(),
        keys: crate::domain::matching::Keys::default(),
        tags: item.tags.clone(),
        // Not what the provider's listing hashes to: the next listing compares the
        // record with this snapshot field by field.
        hash: 0,
    }
}

/// Links the item's record to `contact` (or moves its link there), filling the contact's
/// gaps from the record except `pins`, giving it the record's free keys except `shared`,
/// and pinning `pins` on the link. When the provider holds the contact already, the
/// record is kept as a second record of that person there: never written, never
/// deleted, never matched again.
fn link_record(
    conn: &Connection,
    seq: &Seq,
    item: &DecidedItem,
    contact: ContactId,
    shared: &[KeyKind],
    now: i64,
) -> Result<Result<(), AskAgain>, StoreError> {
    let pins: Vec<String> = shared.iter().map(|k| key_field(*k).to_owned()).collect();
    let current = link_of_record(conn, item.provider_id, &item.remote_id)?;
    let link_id = match current {
        Some((link, owner)) if owner == contact => link,
        other => {
            match link_here(conn, item.provider_id, contact)? {
                None => {}
                // Its record there was deleted: this one takes its place.
                Some((gone, _, state)) if state == "gone" => {
                    conn.execute("DELETE FROM links WHERE id = ?1", [gone])?;
                }
                // The provider holds the person already: this record is a second one of
                // that person there, kept as it is (never written, never deleted).
                Some((_, held, _)) => {
                    if let Some((link, _)) = other {
                        conn.execute("DELETE FROM links WHERE id = ?1", [link])?;
                    }
                    conn.execute(
                        "INSERT OR REPLACE INTO merged_records (provider_id, remote_id, contact_id, into_remote_id, remote_merge, merged_at)
                         VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
                        params![item.provider_id, item.remote_id, contact, held.unwrap_or_default(), now],
                    )?;
                    for (kind, value) in record_keys(&item.record) {
                        if !shared.contains(&kind) {
                            contacts::add_key_if_free(conn, contact, kind, &value)?;
                        }
                    }
                    return Ok(Ok(()));
                }
            }
            match other {
                Some((link, _)) => {
                    conn.execute(
                        "UPDATE links SET contact_id = ?2, updated_at = ?3 WHERE id = ?1",
                        params![link, contact, now],
                    )?;
                    link
                }
                None => insert_link(
                    conn,
                    item.provider_id,
                    contact,
                    &record_as_normalized(item),
                    now,
                )?,
            }
        }
    };
    pin_fields(conn, link_id, &pins)?;
    if let Some(mut golden) = contacts::load_held(conn, contact)? {
        let skip: Vec<&str> = pins.iter().map(String::as_str).collect();
        let had_phone = golden.fields.contains_key(field::PHONE);
        fill_gaps(&mut golden.fields, &item.record, &skip);
        let phone_valid = if had_phone {
            golden.phone_valid
        } else {
            golden.fields.get(field::PHONE).is_some_and(|p| is_e164(p))
        };
        contacts::save_fields(conn, contact, &golden.fields, phone_valid, seq.next(), now)?;
    }
    for (kind, value) in record_keys(&item.record) {
        if !shared.contains(&kind) {
            contacts::add_key_if_free(conn, contact, kind, &value)?;
        }
    }
    if let Some(tags) = &item.tags {
        let names: Vec<String> = tags.names().map(str::to_owned).collect();
        contacts::add_tags(conn, contact, &names)?;
    }
    contacts::bump(conn, contact, seq.next())?;
    Ok(Ok(()))
}

/// `review apart`: the record goes to the named person (else the one its strongest key
/// names; for a duplicate, a new person); the values it shares with the others are kept
/// apart for good.
fn apply_apart(
    conn: &Connection,
    seq: &Seq,
    item: &DecidedItem,
    now: i64,
) -> Result<Option<AskAgain>, StoreError> {
    let hits = record_hits(conn, &item.record)?;
    let plain: Vec<(KeyKind, ContactId)> = hits.iter().map(|(k, _, c)| (*k, *c)).collect();
    let linked_now = link_of_record(conn, item.provider_id, &item.remote_id)?.map(|(_, c)| c);
    let target = match (item.chosen, item.kind) {
        (Some(c), _) => Some(c),
        (None, ItemKind::DuplicateInProvider) => None,
        // The holder stays with the person it is linked to (else it is a person of its
        // own); the people it held back are written there without its values.
        (None, ItemKind::Refused) => linked_now,
        (None, _) => strongest_owner(&plain, &item.contacts).or(linked_now),
    };
    let target = match target {
        Some(t) => t,
        None => {
            // A different person from everyone the provider holds: a new contact, without
            // the values it shares with them.
            let held_elsewhere: Vec<&str> = hits.iter().map(|(k, _, _)| key_field(*k)).collect();
            let mut fields = Fields::new();
            fill_gaps(&mut fields, &item.record, &held_elsewhere);
            let phone_valid = fields.get(field::PHONE).is_some_and(|p| is_e164(p));
            contacts::insert(conn, &fields, phone_valid, seq.next(), now)?
        }
    };
    let mut shared = Vec::new();
    for (kind, value, owner) in &hits {
        if *owner == target {
            continue;
        }
        shared.push(*kind);
        conn.execute(
            "INSERT OR IGNORE INTO kept_apart (contact_id, other_id, kind, value, decided_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![target, owner, kind.as_str(), value, now],
        )?;
    }
    // People named by the item whom no key of the record points at any more are kept
    // apart too (the record's values changed since), so the item is not asked again.
    for &other in &item.contacts {
        if other != target && !hits.iter().any(|(_, _, o)| *o == other) {
            conn.execute(
                "INSERT OR IGNORE INTO kept_apart (contact_id, other_id, kind, value, decided_at) VALUES (?1, ?2, 'item', ?3, ?4)",
                params![target, other, item.id.to_string(), now],
            )?;
        }
    }
    Ok(link_record(conn, seq, item, target, &shared, now)?.err())
}

/// `review merge`: the people become one (the `--keep` one survives, else the one known
/// longest), and the record is linked to the survivor, or merged into the survivor's
/// record there when the provider holds the survivor already.
fn apply_merge(
    conn: &Connection,
    seq: &Seq,
    item: &DecidedItem,
    can_merge: &[i64],
    stamp: Stamp,
) -> Result<Option<AskAgain>, StoreError> {
    let now = stamp.at;
    let hits = record_hits(conn, &item.record)?;
    let mut people = item.contacts.clone();
    if people.is_empty() {
        // A duplicate found among new records: the person its keys name now.
        people.extend(hits.iter().map(|(_, _, c)| *c).min());
    }
    let survivor = item
        .chosen
        .filter(|c| people.contains(c))
        .or_else(|| people.iter().copied().min());
    let Some(survivor) = survivor else {
        return Ok(Some(AskAgain::because(
            "none of the people this record matched exist any more; decide again".to_owned(),
        )));
    };
    let before = contacts::load_held(conn, survivor)?;
    let mut history = MergeRecord {
        survivor: Some(survivor),
        ..MergeRecord::default()
    };
    for &other in &people {
        if other != survivor {
            let decided = merge_contacts(conn, seq, survivor, other, can_merge, stamp)?;
            history.absorbed.push(other);
            history.fields.extend(decided);
        }
    }
    // The record itself.
    let linked_now = link_of_record(conn, item.provider_id, &item.remote_id)?;
    let mut merged_record = None;
    match linked_now {
        Some((_, c)) if c == survivor => {}
        _ => match link_here(conn, item.provider_id, survivor)? {
            Some((_, Some(into), state)) if state == "active" => {
                if let Some((link, _)) = linked_now {
                    conn.execute("DELETE FROM links WHERE id = ?1", [link])?;
                }
                let remote_merge = can_merge.contains(&item.provider_id).then_some("pending");
                conn.execute(
                    "INSERT OR REPLACE INTO merged_records (provider_id, remote_id, contact_id, into_remote_id, remote_merge, merged_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![item.provider_id, item.remote_id, survivor, into, remote_merge, now],
                )?;
                let record_is = format!(
                    "{}:{}",
                    provider_name(conn, item.provider_id)?,
                    item.remote_id
                );
                history.records.push(record_is.clone());
                if let Some(mut golden) = contacts::load_held(conn, survivor)? {
                    history.fields.extend(field_decisions(
                        &golden.fields,
                        &item.record,
                        &format!("contact {survivor}"),
                        &record_is,
                    ));
                    let (merged, _) = merge_people(&golden.fields, &item.record);
                    let phone_valid =
                        golden.phone_valid || merged.get(field::PHONE).is_some_and(|p| is_e164(p));
                    golden.fields = merged;
                    contacts::save_fields(
                        conn,
                        survivor,
                        &golden.fields,
                        phone_valid,
                        seq.next(),
                        now,
                    )?;
                }
                for (kind, value) in record_keys(&item.record) {
                    contacts::add_key_if_free(conn, survivor, kind, &value)?;
                }
                if let Some(tags) = &item.tags {
                    let names: Vec<String> = tags.names().map(str::to_owned).collect();
                    contacts::add_tags(conn, survivor, &names)?;
                }
                merged_record = Some(into);
            }
            Some((_, remote, state)) => {
                return Ok(Some(AskAgain::because(format!(
                    "contact {survivor} is {state} in this provider ({}); decide again",
                    remote.unwrap_or_default()
                ))));
            }
            None => {
                if let Err(reason) = link_record(conn, seq, item, survivor, &[], now)? {
                    return Ok(Some(reason));
                }
            }
        },
    }
    // The journal: what the merge changed on the survivor, and on each person folded in.
    if let (Some(before), Some(after)) = (before, contacts::load_held(conn, survivor)?) {
        let mut changes = field_changes(&before.fields, &after.fields);
        add_tag_change(&mut changes, &before.tags, &after.tags);
        let empty = Changes::new();
        for (i, &other) in history.absorbed.iter().enumerate() {
            let op = format!("{other} into {survivor}");
            for (contact, changes) in [
                (survivor, if i == 0 { &changes } else { &empty }),
                (other, &empty),
            ] {
                journal::write(
                    conn,
                    stamp,
                    NewEntry {
                        contact,
                        provider: None,
                        kind: EventKind::Merged,
                        op: Some(&op),
                        remote_id: None,
                        outcome: None,
                        changes,
                    },
                )?;
            }
        }
        if let Some(into) = merged_record {
            let op = format!("{} into {into}", item.remote_id);
            journal::write(
                conn,
                stamp,
                NewEntry {
                    contact: survivor,
                    provider: Some(item.provider_id),
                    kind: EventKind::Merged,
                    op: Some(&op),
                    remote_id: Some(&item.remote_id),
                    outcome: None,
                    changes: if history.absorbed.is_empty() {
                        &changes
                    } else {
                        &empty
                    },
                },
            )?;
        }
    }
    conn.execute(
        "UPDATE conflicts SET history = ?2, survivor = ?3 WHERE id = ?1",
        params![
            item.id,
            serde_json::to_string(&history).unwrap_or_else(|_| "{}".to_owned()),
            survivor
        ],
    )?;
    Ok(None)
}

fn provider_name(conn: &Connection, provider_id: i64) -> Result<String, StoreError> {
    Ok(conn
        .prepare_cached("SELECT name FROM providers WHERE id = ?1")?
        .query_row([provider_id], |r| r.get(0))?)
}

/// Makes `other` part of `survivor`: fields (the survivor's values win; the other's are
/// returned, nothing is lost), tags, keys, links (a provider holding both keeps the
/// survivor's record as the link and the other as merged), decisions and items. The
/// other contact row is removed. Returns the other's fields.
fn merge_contacts(
    conn: &Connection,
    seq: &Seq,
    survivor: ContactId,
    other: ContactId,
    can_merge: &[i64],
    stamp: Stamp,
) -> Result<Vec<FieldDecision>, StoreError> {
    let now = stamp.at;
    let (Some(mut keep), Some(gone)) = (
        contacts::load_held(conn, survivor)?,
        contacts::load_held(conn, other)?,
    ) else {
        return Ok(Vec::new());
    };
    let decided = field_decisions(
        &keep.fields,
        &gone.fields,
        &format!("contact {survivor}"),
        &format!("contact {other}"),
    );
    let (merged, _replaced) = merge_people(&keep.fields, &gone.fields);
    let phone_valid = if keep.fields.contains_key(field::PHONE) {
        keep.phone_valid
    } else {
        gone.phone_valid
    };
    keep.fields = merged;
    contacts::save_fields(conn, survivor, &keep.fields, phone_valid, seq.next(), now)?;
    let tags: Vec<String> = gone.tags.names().map(str::to_owned).collect();
    contacts::add_tags(conn, survivor, &tags)?;
    conn.execute(
        "UPDATE match_keys SET contact_id = ?1 WHERE contact_id = ?2",
        params![survivor, other],
    )?;
    let links: Vec<(i64, i64, Option<String>, String)> = conn
        .prepare("SELECT id, provider_id, remote_id, state FROM links WHERE contact_id = ?1")?
        .query_map([other], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    for (link, provider, remote, state) in links {
        match link_here(conn, provider, survivor)? {
            None => {
                conn.execute(
                    "UPDATE links SET contact_id = ?2, updated_at = ?3 WHERE id = ?1",
                    params![link, survivor, now],
                )?;
            }
            Some((mine, Some(into), my_state)) if my_state == "active" && state == "active" => {
                let _ = mine;
                conn.execute("DELETE FROM links WHERE id = ?1", [link])?;
                if let Some(remote) = remote {
                    let remote_merge = can_merge.contains(&provider).then_some("pending");
                    conn.execute(
                        "INSERT OR REPLACE INTO merged_records (provider_id, remote_id, contact_id, into_remote_id, remote_merge, merged_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![provider, remote, survivor, into, remote_merge, now],
                    )?;
                }
            }
            Some((mine, _, my_state)) if my_state != "active" && state == "active" => {
                // The survivor's record there is gone (or unanswered): the other's
                // record becomes the link.
                conn.execute("DELETE FROM links WHERE id = ?1", [mine])?;
                conn.execute(
                    "UPDATE links SET contact_id = ?2, updated_at = ?3 WHERE id = ?1",
                    params![link, survivor, now],
                )?;
            }
            Some(_) => {
                conn.execute("DELETE FROM links WHERE id = ?1", [link])?;
            }
        }
    }
    conn.execute("DELETE FROM intents WHERE contact_id = ?1", [other])?;
    conn.execute(
        "UPDATE merged_records SET contact_id = ?1 WHERE contact_id = ?2",
        params![survivor, other],
    )?;
    for column in ["contact_id", "other_id"] {
        conn.execute(
            &format!("UPDATE OR IGNORE kept_apart SET {column} = ?1 WHERE {column} = ?2"),
            params![survivor, other],
        )?;
    }
    conn.execute(
        "DELETE FROM kept_apart WHERE contact_id = other_id OR contact_id = ?1 OR other_id = ?1",
        [other],
    )?;
    rewrite_items(conn, survivor, other, now)?;
    conn.execute(
        "UPDATE OR IGNORE refusals SET contact_id = ?1 WHERE contact_id = ?2",
        params![survivor, other],
    )?;
    conn.execute("DELETE FROM refusals WHERE contact_id = ?1", [other])?;
    conn.execute("DELETE FROM contacts WHERE id = ?1", [other])?;
    contacts::bump(conn, survivor, seq.next())?;
    Ok(decided)
}

/// Items naming `other` name `survivor` instead; an open ambiguous item left with one
/// person is closed (its record is matched again by the next listing).
fn rewrite_items(
    conn: &Connection,
    survivor: ContactId,
    other: ContactId,
    now: i64,
) -> Result<(), StoreError> {
    let rows: Vec<(i64, String, String, bool)> = conn
        .prepare(
            "SELECT id, contact_ids, kind, decided_at IS NULL FROM conflicts WHERE resolved_at IS NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (id, ids, kind, open) in rows {
        let mut people: Vec<ContactId> = serde_json::from_str(&ids).unwrap_or_default();
        if !people.contains(&other) {
            continue;
        }
        for p in &mut people {
            if *p == other {
                *p = survivor;
            }
        }
        people.sort_unstable();
        people.dedup();
        let text = serde_json::to_string(&people).unwrap_or_else(|_| "[]".to_owned());
        let close = open && kind == ItemKind::AmbiguousMatch.as_str() && people.len() < 2;
        conn.execute(
            "UPDATE conflicts SET contact_ids = ?2, resolved_at = CASE WHEN ?3 THEN ?4 ELSE resolved_at END WHERE id = ?1",
            params![id, text, close, now],
        )?;
    }
    Ok(())
}

/// Opens a `refused` item (see [`record_conflict`]).
pub fn open_refused(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
    fields: &Fields,
    reason: &str,
    contacts: &[ContactId],
    now: i64,
) -> Result<bool, StoreError> {
    record_conflict(
        conn,
        provider_id,
        ItemRecord {
            remote_id,
            fields: Some(fields),
            tags: None,
        },
        ItemKind::Refused,
        reason,
        contacts,
        now,
    )
}

/// What a provider's record (the holder of a refused key) names besides the person whose
/// write was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolderNames {
    /// The other people: the person it is linked to (or merged into) there, and the owners
    /// of its keys.
    pub others: Vec<ContactId>,
    /// It waits for a review decision itself (an open `ambiguous_match` or
    /// `duplicate_in_provider` item about it), or one of its keys that no person holds is
    /// held by another record under review: linking it would decide that item.
    pub under_review: bool,
}

impl HolderNames {
    /// Nothing contradicts linking the holder to the person.
    pub fn is_empty(&self) -> bool {
        self.others.is_empty() && !self.under_review
    }
}

/// What a provider's record names besides `contact` (see [`HolderNames`]).
pub fn holder_people(
    conn: &Connection,
    provider_id: i64,
    contact: ContactId,
    remote_id: &str,
    keys: &crate::domain::matching::Keys,
) -> Result<HolderNames, StoreError> {
    let mut out = Vec::new();
    if let Some((_, owner)) = link_of_record(conn, provider_id, remote_id)? {
        out.push(owner);
    }
    let merged: Option<ContactId> = conn
        .prepare_cached(
            "SELECT contact_id FROM merged_records WHERE provider_id = ?1 AND remote_id = ?2",
        )?
        .query_row(params![provider_id, remote_id], |r| r.get(0))
        .optional()?;
    out.extend(merged);
    let mut under_review: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM conflicts WHERE provider_id = ?1 AND remote_id = ?2
                AND resolved_at IS NULL AND decided_at IS NULL
                AND kind IN ('ambiguous_match', 'duplicate_in_provider'))",
        )?
        .query_row(params![provider_id, remote_id], |r| r.get(0))?;
    for (kind, value) in keys.iter() {
        match contacts::key_owner(conn, kind, value)? {
            Some(owner) => out.push(owner),
            None => {
                under_review = under_review
                    || super::items::key_under_review(conn, kind, value, provider_id, remote_id)?;
            }
        }
    }
    out.retain(|&c| c != contact);
    out.sort_unstable();
    out.dedup();
    Ok(HolderNames {
        others: out,
        under_review,
    })
}

/// A write a provider refused because another of its records (the holder) holds a key.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The provider.
    pub provider_id: i64,
    /// The person whose write was refused.
    pub contact: ContactId,
    /// The refused intent (closed here).
    pub intent: i64,
    /// The `creating` link of a refused create (dropped here).
    pub creating_link: Option<i64>,
    /// The holder's id there.
    pub remote_id: String,
    /// The holder as the lookup showed it (normalised).
    pub record: Fields,
    /// Its tags, when known.
    pub tags: Option<Tags>,
    /// The refused fields (the keys the holder holds).
    pub fields: Vec<String>,
    /// The other people the holder names (see [`holder_people`]); empty when it is linked
    /// to no one and names nobody else.
    pub others: Vec<ContactId>,
    /// Why, for a human (the item's reason).
    pub reason: String,
    /// The provider's message (journaled with the refused write).
    pub error: String,
}

/// What a refusal became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalOutcome {
    /// A `refused` item (its id) holds the person back in that provider.
    Held(i64),
    /// The people were decided to be different people already: the refused values are
    /// withheld from that provider for this person, who is planned again without them.
    Withheld,
}

/// Records a refusal in one transaction: closes the refused intent (journaled as a write
/// that did not go through), drops a refused create's `creating` link, and opens (or
/// joins) the `refused` item about the holder, which holds the person back in that
/// provider until it is decided. When the people were decided apart already, withholds
/// the refused values instead.
pub fn record_refusal(
    conn: &mut Connection,
    seq: &Seq,
    r: &Refusal,
    stamp: super::journal::Stamp,
) -> Result<RefusalOutcome, StoreError> {
    let tx = conn.transaction()?;
    let mut people = r.others.clone();
    people.push(r.contact);
    people.sort_unstable();
    people.dedup();
    let apart = !r.others.is_empty() && all_kept_apart(&tx, &people)?;
    let outcome = if apart {
        withhold(&tx, r.provider_id, r.contact, &r.fields)?;
        contacts::bump(&tx, r.contact, seq.next())?;
        RefusalOutcome::Withheld
    } else {
        record_conflict(
            &tx,
            r.provider_id,
            ItemRecord {
                remote_id: &r.remote_id,
                fields: Some(&r.record),
                tags: r.tags.as_ref(),
            },
            ItemKind::Refused,
            &r.reason,
            &people,
            stamp.at,
        )?;
        let item: i64 = tx.query_row(
            "SELECT id FROM conflicts WHERE provider_id = ?1 AND remote_id = ?2",
            params![r.provider_id, r.remote_id],
            |row| row.get(0),
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO refusals (item_id, contact_id, fields) VALUES (?1, ?2, ?3)",
            params![
                item,
                r.contact,
                serde_json::to_string(&r.fields).unwrap_or_else(|_| "[]".to_owned())
            ],
        )?;
        RefusalOutcome::Held(item)
    };
    let note = match outcome {
        RefusalOutcome::Held(item) => format!("{}; held for review (item {item})", r.error),
        RefusalOutcome::Withheld => format!(
            "{}; decided to be different people: sent again without {}",
            r.error,
            r.fields.join(", ")
        ),
    };
    super::intents::journal_failure(&tx, r.intent, true, &note, stamp)?;
    super::intents::complete_intent(&tx, r.intent)?;
    if let Some(link) = r.creating_link {
        tx.execute(
            "DELETE FROM links WHERE id = ?1 AND state = 'creating'",
            [link],
        )?;
    }
    tx.commit()?;
    Ok(outcome)
}

/// The open `refused` item holding `contact` back in a provider, if any.
pub fn held_by(
    conn: &Connection,
    provider_id: i64,
    contact: ContactId,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT r.item_id FROM refusals r JOIN conflicts c ON c.id = r.item_id
             WHERE r.contact_id = ?1 AND c.provider_id = ?2 AND c.resolved_at IS NULL
             ORDER BY r.item_id LIMIT 1",
        )?
        .query_row(params![contact, provider_id], |r| r.get(0))
        .optional()?)
}

/// Withholds `fields` (at the person's current values) from a provider.
fn withhold(
    conn: &Connection,
    provider_id: i64,
    contact: ContactId,
    fields: &[String],
) -> Result<(), StoreError> {
    let Some(held) = contacts::load_held(conn, contact)? else {
        return Ok(());
    };
    for f in fields {
        if let Some(value) = held.fields.get(f).filter(|v| !v.is_empty()) {
            conn.execute(
                "INSERT OR REPLACE INTO withheld_fields (provider_id, contact_id, field, value) VALUES (?1, ?2, ?3, ?4)",
                params![provider_id, contact, f, value],
            )?;
        }
    }
    Ok(())
}

/// The fields withheld from a provider for a person, with the value each was withheld at.
pub fn withheld_of(
    conn: &Connection,
    provider_id: i64,
    contact: ContactId,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT field, value FROM withheld_fields WHERE provider_id = ?1 AND contact_id = ?2",
    )?;
    let rows = stmt
        .query_map(params![provider_id, contact], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The people a `refused` item held back, with the refused fields.
fn refusals_of(conn: &Connection, item: i64) -> Result<Vec<(ContactId, Vec<String>)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT contact_id, fields FROM refusals WHERE item_id = ?1")?;
    let rows = stmt
        .query_map([item], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(c, f)| (c, serde_json::from_str(&f).unwrap_or_default()))
        .collect())
}
