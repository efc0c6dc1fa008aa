//! Applying what a provider shows to the store (`docs/architecture.md`): one transaction
//! per page, in three steps: read what the store holds for the page's records, let
//! [`crate::domain::merge`] decide what changes (only what changed in that provider since
//! its snapshot reaches the contact; unlinked records are matched, linked, created, or held
//! as conflicts), and apply that. Deletions are marked only after a complete listing, with
//! the 20 % guard.

use super::codec::{fields_json, parse_fields, parse_tags, tags_json};
use super::contacts;
use super::items::{
    ItemRecord, any_keys_under_review, key_under_review, record_conflict, set_review_keys,
};
use super::journal::{self, NewEntry, Stamp};
use super::links::insert_link;
use super::{Seq, StoreError};
use crate::domain::Tags;
use crate::domain::journal::{Changes, EventKind, add_tag_change, created, field_changes};
use crate::domain::matching::{ConflictReason, ContactId, KeyKind};
use crate::domain::merge::{
    Conflict, ConflictCause, ContactWrite, Held, HeldContact, HeldLink, HeldRecord, LinkHere,
    LinkUpdate, Matched, NewContact, NormalizedRecord, Step, keys_to_read, merge_page, needs_merge,
    tag_changes,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

pub use crate::domain::merge::FieldOwners;

/// What one page did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageOutcome {
    /// Records on the page.
    pub pulled: u64,
    /// Records linked to an existing contact for the first time.
    pub matched: u64,
    /// New golden records.
    pub new_contacts: u64,
    /// Linked records whose change reached the contact.
    pub changed: u64,
    /// Records held as conflicts.
    pub conflicts: u64,
    /// Records linked to an existing contact, by the key that found it.
    pub matched_by: crate::domain::matching::MatchCounts,
    /// Link ids seen on this page.
    pub seen: Vec<i64>,
}

/// A set of link ids (the links a listing showed), one bit per id: link ids are ordered
/// integers, so a million links take about 128 KiB however many pages they span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSet {
    bits: Vec<u64>,
}

impl LinkSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a link id (ids below 0 are ignored: SQLite never hands them out).
    pub fn insert(&mut self, id: i64) {
        let Ok(id) = usize::try_from(id) else { return };
        let word = id / 64;
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (id % 64);
    }

    /// Whether the set holds `id`.
    pub fn contains(&self, id: i64) -> bool {
        usize::try_from(id).is_ok_and(|id| {
            self.bits
                .get(id / 64)
                .is_some_and(|w| w & (1 << (id % 64)) != 0)
        })
    }
}

impl LinkSet {
    /// Adds every id of `other`.
    pub fn union(&mut self, other: &LinkSet) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (mine, theirs) in self.bits.iter_mut().zip(&other.bits) {
            *mine |= theirs;
        }
    }
}

impl Extend<i64> for LinkSet {
    fn extend<I: IntoIterator<Item = i64>>(&mut self, iter: I) {
        for id in iter {
            self.insert(id);
        }
    }
}

/// Where the unchanged-probe of one listing is (one per listing, carried from page to
/// page).
///
/// Links are made in the order a listing first showed their records, so a provider that
/// lists in a stable order shows them again in link-id order. The probe reads the
/// provider's links that follow the last one it read, in id order, as one range of the
/// table (pages next to each other, each row read once), and looks up by remote id only
/// the records that range does not hold. Looked up one by one, the records of a large
/// store are index leaves all over the file: each listed record cost a page read outside
/// SQLite's cache. Links a range read that its page did not show are kept for the next
/// page (records created a few at a time are listed a little out of link order), then
/// dropped. A listing in another order finds little in the ranges and is probed by
/// lookups alone after a few such pages (the range is tried again from time to time).
#[derive(Debug, Clone, Default)]
pub struct ProbeCursor {
    /// Where the next range starts (after this link id).
    after: i64,
    /// Links the last range read that its page did not show: (remote id, link).
    carried: Vec<(String, RangedLink)>,
    /// Pages in a row whose range held less than half of them.
    poor: u32,
    /// Pages left to probe by lookups alone.
    skip: u32,
    /// Records found in a range, and looked up one by one, so far.
    ranged: u64,
    looked_up: u64,
}

/// A link read by a range: id, content hash, whether it is active.
type RangedLink = (i64, i64, bool);

impl ProbeCursor {
    /// Records of the listing found in a range so far, and looked up one by one.
    pub fn counts(&self) -> (u64, u64) {
        (self.ranged, self.looked_up)
    }
}

/// Pages in a row whose range held less than half of them before the range is left out.
const POOR_RANGES: u32 = 3;
/// Pages probed by lookups alone before the range is tried again.
const SKIPPED_PAGES: u32 = 32;

/// For each `(remote id, content hash)` of a listed page: the id of the provider's active
/// link that last showed exactly that content (same hash), else `None` (a new record, a
/// changed one, or one whose link is not active). Records with an id here need no work at
/// all — not even normalising — so a cycle over unchanged data only reads. `cursor` is
/// the listing's (see [`ProbeCursor`]).
pub fn unchanged_links(
    conn: &mut Connection,
    provider_id: i64,
    listed: &[(String, i64)],
    cursor: &mut ProbeCursor,
) -> Result<Vec<Option<i64>>, StoreError> {
    // One read transaction for the page: outside one, every lookup began and ended its
    // own (a shared lock taken and released per record, measured at ~8% of a no-change
    // cycle's CPU).
    let tx = conn.transaction()?;
    let with_range = cursor.skip == 0 && !listed.is_empty();
    let carried = std::mem::take(&mut cursor.carried);
    // The links of the range (and those carried from the page before), matched to the
    // listed records by remote id.
    let mut in_range: Vec<Option<RangedLink>> = vec![None; listed.len()];
    if with_range {
        let position: HashMap<&str, usize> = listed
            .iter()
            .enumerate()
            .map(|(i, (remote_id, _))| (remote_id.as_str(), i))
            .collect();
        let carried_count = carried.len();
        for (remote_id, link) in carried {
            if let Some(&i) = position.get(remote_id.as_str()) {
                in_range[i] = Some(link);
            }
        }
        // NOT INDEXED: the rowid range, never an index of the provider's links sorted by
        // id afterwards.
        let mut stmt = tx.prepare_cached(
            "SELECT id, remote_id, hash, state = 'active' FROM links NOT INDEXED
             WHERE id > ?2 AND provider_id = ?1 AND remote_id IS NOT NULL ORDER BY id LIMIT ?3",
        )?;
        // With those carried, as many links as the page has records and a few more
        // (links of records no longer listed take places in the range; what it misses
        // is looked up).
        let window = listed.len() + listed.len() / 8 + 4;
        let limit = i64::try_from(window.saturating_sub(carried_count)).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![provider_id, cursor.after, limit])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            cursor.after = id;
            let remote_id = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            let link = (id, row.get(2)?, row.get(3)?);
            match position.get(remote_id) {
                Some(&i) => in_range[i] = Some(link),
                None => cursor.carried.push((remote_id.to_owned(), link)),
            }
        }
    } else {
        cursor.skip = cursor.skip.saturating_sub(1);
    }
    let mut lookup = tx.prepare_cached(
        "SELECT id, hash FROM links WHERE provider_id = ?1 AND remote_id = ?2 AND state = 'active'",
    )?;
    let mut from_range = 0usize;
    let mut looked_up_last = None;
    let mut found = Vec::with_capacity(listed.len());
    for ((remote_id, hash), ranged) in listed.iter().zip(in_range) {
        let link = match ranged {
            Some((id, h, active)) => {
                from_range += 1;
                active.then_some((id, h))
            }
            None => {
                let link = lookup
                    .query_row(params![provider_id, remote_id], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()?;
                if let Some((id, _)) = link {
                    looked_up_last = Some(id);
                }
                link
            }
        };
        found.push(link.and_then(|(id, h)| (h == *hash).then_some(id)));
    }
    drop(lookup);
    tx.commit()?;
    cursor.ranged += from_range as u64;
    cursor.looked_up += (listed.len() - from_range) as u64;
    if from_range == 0
        && let Some(id) = looked_up_last
    {
        // Nothing came from a range: the listing went elsewhere; the next range starts
        // where the lookups found it.
        cursor.after = id;
        cursor.carried.clear();
    }
    if with_range {
        if from_range * 2 < listed.len() {
            cursor.poor += 1;
            if cursor.poor >= POOR_RANGES {
                cursor.poor = 0;
                cursor.skip = SKIPPED_PAGES;
            }
        } else {
            cursor.poor = 0;
        }
    }
    Ok(found)
}

struct LinkRow {
    id: i64,
    contact_id: ContactId,
    state: String,
    snapshot: String,
    tags: Option<String>,
    hash: i64,
}

fn find_link(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
) -> Result<Option<LinkRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, contact_id, state, snapshot, tags, hash FROM links WHERE provider_id = ?1 AND remote_id = ?2",
        )?
        .query_row(params![provider_id, remote_id], |r| {
            Ok(LinkRow {
                id: r.get(0)?,
                contact_id: r.get(1)?,
                state: r.get(2)?,
                snapshot: r.get(3)?,
                tags: r.get(4)?,
                hash: r.get(5)?,
            })
        })
        .optional()?)
}

/// The link state of a contact in a provider, if any.
pub fn link_state_of(
    conn: &Connection,
    provider_id: i64,
    contact_id: ContactId,
) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id, state FROM links WHERE provider_id = ?1 AND contact_id = ?2")?
        .query_row(params![provider_id, contact_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

fn resolve_conflict(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE conflicts SET resolved_at = ?3 WHERE provider_id = ?1 AND remote_id = ?2 AND resolved_at IS NULL",
    )?
    .execute(params![provider_id, remote_id, now])?;
    Ok(())
}

/// Applies consecutive pages of normalised records of one listing from provider
/// `provider_id` (config position `order`) in one transaction, page by page (a page sees
/// what the pages before it wrote): a pull whose writer falls behind the listing commits
/// once per batch instead of once per page.
#[allow(clippy::too_many_arguments)]
pub fn apply_pages(
    conn: &mut Connection,
    seq: &Seq,
    owners: &mut FieldOwners,
    provider_id: i64,
    order: usize,
    pages: &[Vec<NormalizedRecord>],
    stamp: Stamp,
) -> Result<Vec<PageOutcome>, StoreError> {
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(pages.len());
    for records in pages {
        out.push(apply_page_in(
            &tx,
            seq,
            owners,
            provider_id,
            order,
            records,
            stamp,
        )?);
    }
    tx.commit()?;
    Ok(out)
}

/// One page of [`apply_pages`], inside the caller's transaction.
fn apply_page_in(
    tx: &Connection,
    seq: &Seq,
    owners: &mut FieldOwners,
    provider_id: i64,
    order: usize,
    records: &[NormalizedRecord],
    stamp: Stamp,
) -> Result<PageOutcome, StoreError> {
    let now = stamp.at;
    let held = read_held(tx, provider_id, records)?;
    // The people as they were before this page, for the journal (only those the page
    // may change are held: an unchanged record costs nothing here).
    let mut before = held.contacts.clone();
    let merge = merge_page(records, held, owners, order);
    let journal = PageJournal { provider_id, stamp };
    let mut out = PageOutcome {
        pulled: records.len() as u64,
        ..PageOutcome::default()
    };
    // The contact each new record of the page became, and the records held as
    // duplicates of one (recorded once the page's creates are done).
    let mut created: HashMap<usize, ContactId> = HashMap::new();
    let mut duplicates: Vec<(usize, usize)> = Vec::new();
    for step in merge.steps {
        match step {
            Step::Unchanged { link } => out.seen.push(link),
            Step::Update(update) => {
                out.seen.push(update.link);
                if update.contact_changed() {
                    out.changed += 1;
                }
                let rec = &records[update.record];
                apply_update(tx, seq, provider_id, rec, &update, now)?;
                journal.update(tx, &mut before, rec, &update)?;
            }
            Step::Create(new) => {
                let rec = &records[new.record];
                let (link, contact) = apply_create(tx, seq, provider_id, rec, &new, now)?;
                created.insert(new.record, contact);
                out.seen.push(link);
                journal.created(tx, contact, rec, &new)?;
                out.new_contacts += 1;
            }
            Step::Match(matched) => {
                let rec = &records[matched.record];
                out.seen
                    .push(apply_match(tx, seq, provider_id, rec, &matched, now)?);
                journal.matched(tx, &mut before, rec, &matched)?;
                resolve_conflict(tx, provider_id, &rec.remote_id, now)?;
                out.matched += 1;
                if let Some(by) = matched.by {
                    out.matched_by.add(by);
                }
            }
            Step::Conflict(conflict) => {
                hold(
                    tx,
                    provider_id,
                    &records[conflict.record],
                    &conflict,
                    now,
                    &mut out,
                )?;
            }
            Step::Duplicate { record, of } => duplicates.push((record, of)),
            Step::Merged => {}
        }
    }
    for (record, of) in duplicates {
        let conflict = Conflict {
            record,
            contacts: created.get(&of).copied().into_iter().collect(),
            cause: ConflictCause::Match(ConflictReason::DuplicateInProvider),
        };
        hold(tx, provider_id, &records[record], &conflict, now, &mut out)?;
    }
    Ok(out)
}

/// Holds `rec` for review (opens or updates its item), in the page's transaction.
fn hold(
    tx: &Connection,
    provider_id: i64,
    rec: &NormalizedRecord,
    conflict: &Conflict,
    now: i64,
    out: &mut PageOutcome,
) -> Result<(), StoreError> {
    let text = conflict.cause.describe();
    let opened = record_conflict(
        tx,
        provider_id,
        item_record(rec),
        conflict.cause.item_kind(),
        &text,
        &conflict.contacts,
        now,
    )?;
    if matches!(conflict.cause, ConflictCause::Match(_)) {
        set_review_keys(tx, provider_id, &rec.remote_id, rec.keys.iter())?;
    }
    if opened {
        tracing::warn!(provider_id, remote_id = %rec.remote_id, contacts = ?conflict.contacts, "held for review: {text}");
        out.conflicts += 1;
    }
    Ok(())
}

/// Writes a page's journal entries, in the page's transaction: what each record changed
/// on its person (`changed_in`), and records tied to a person (`linked`).
struct PageJournal {
    provider_id: i64,
    stamp: Stamp,
}

impl PageJournal {
    fn entry(
        &self,
        conn: &Connection,
        contact: ContactId,
        kind: EventKind,
        op: Option<&str>,
        rec: &NormalizedRecord,
        changes: &Changes,
    ) -> Result<(), StoreError> {
        journal::write(
            conn,
            self.stamp,
            NewEntry {
                contact,
                provider: Some(self.provider_id),
                kind,
                op,
                remote_id: Some(&rec.remote_id),
                outcome: None,
                changes,
            },
        )
    }

    /// A linked record's changes; the person's state moves on in `before`.
    fn update(
        &self,
        conn: &Connection,
        before: &mut HashMap<ContactId, HeldContact>,
        rec: &NormalizedRecord,
        update: &LinkUpdate,
    ) -> Result<(), StoreError> {
        if update.reactivate {
            self.entry(
                conn,
                update.contact,
                EventKind::Linked,
                None,
                rec,
                &Changes::new(),
            )?;
        }
        if !update.contact_changed() {
            return Ok(());
        }
        let Some(held) = before.get_mut(&update.contact) else {
            return Ok(());
        };
        let mut changes = match &update.write {
            ContactWrite::Fields { fields, .. } => {
                let changes = field_changes(&held.fields, fields);
                held.fields = fields.clone();
                changes
            }
            _ => Changes::new(),
        };
        let mut tags = held.tags.clone();
        for t in &update.tags_add {
            tags.insert(t);
        }
        for t in &update.tags_remove {
            tags.remove(t);
        }
        add_tag_change(&mut changes, &held.tags, &tags);
        held.tags = tags;
        if changes.is_empty() {
            return Ok(());
        }
        self.entry(
            conn,
            update.contact,
            EventKind::ChangedIn,
            None,
            rec,
            &changes,
        )
    }

    /// A record that became a new person.
    fn created(
        &self,
        conn: &Connection,
        contact: ContactId,
        rec: &NormalizedRecord,
        new: &NewContact,
    ) -> Result<(), StoreError> {
        let tags: Tags = new.tags.iter().collect();
        let changes = created(&new.fields, Some(&tags));
        self.entry(
            conn,
            contact,
            EventKind::Linked,
            Some("create"),
            rec,
            &changes,
        )
    }

    /// A record tied to a person who existed: what it filled in.
    fn matched(
        &self,
        conn: &Connection,
        before: &mut HashMap<ContactId, HeldContact>,
        rec: &NormalizedRecord,
        matched: &Matched,
    ) -> Result<(), StoreError> {
        let mut changes = Changes::new();
        if let Some(held) = before.get_mut(&matched.contact) {
            if let Some((fields, _)) = &matched.write {
                changes = field_changes(&held.fields, fields);
                held.fields = fields.clone();
            }
            let mut tags = held.tags.clone();
            for t in &matched.tags {
                tags.insert(t);
            }
            add_tag_change(&mut changes, &held.tags, &tags);
            held.tags = tags;
        }
        self.entry(
            conn,
            matched.contact,
            EventKind::Linked,
            None,
            rec,
            &changes,
        )
    }
}

fn item_record(rec: &NormalizedRecord) -> ItemRecord<'_> {
    ItemRecord {
        remote_id: &rec.remote_id,
        fields: Some(&rec.fields),
        tags: rec.tags.as_ref(),
    }
}

/// Reads what the merge of `records` needs (see [`Held`]): each record's link; for a link
/// to merge, its contact and the owners of its changed keys; for an unlinked record, the
/// owners of its keys, their links in this provider, and those that could be matched.
fn read_held(
    conn: &Connection,
    provider_id: i64,
    records: &[NormalizedRecord],
) -> Result<Held, StoreError> {
    let mut held = Held {
        records: Vec::with_capacity(records.len()),
        ..Held::default()
    };
    // Key owners whose link here was looked up.
    let mut owners_seen = HashSet::new();
    let reviewing = any_keys_under_review(conn)?;
    let merged_here = super::review::any_merged_record(conn, provider_id)?;
    for rec in records {
        let Some(link) = find_link(conn, provider_id, &rec.remote_id)? else {
            if merged_here && super::review::is_merged_record(conn, provider_id, &rec.remote_id)? {
                held.records.push(HeldRecord::Merged);
                continue;
            }
            for (kind, value) in rec.keys.iter() {
                let Some(owner) = contacts::key_owner(conn, kind, value)? else {
                    if reviewing
                        && key_under_review(conn, kind, value, provider_id, &rec.remote_id)?
                    {
                        held.under_review.insert((kind, value.to_owned()));
                    }
                    continue;
                };
                held.keys.insert(kind, value, owner);
                if !owners_seen.insert(owner) {
                    continue;
                }
                for rule in super::review::apart_rules_of(conn, owner)? {
                    if !held.apart.contains(&rule) {
                        held.apart.push(rule);
                    }
                }
                let here = link_state_of(conn, provider_id, owner)?.map(|(link_id, state)| {
                    if state == "creating" {
                        LinkHere::Creating(link_id)
                    } else {
                        LinkHere::Held
                    }
                });
                if let Some(here) = here {
                    held.links_here.insert(owner, here);
                }
                if here != Some(LinkHere::Held)
                    && !held.contacts.contains_key(&owner)
                    && let Some(contact) = contacts::load_held(conn, owner)?
                {
                    held.contacts.insert(owner, contact);
                }
            }
            held.records.push(HeldRecord::Unlinked);
            continue;
        };
        let active = link.state == "active";
        if !needs_merge(active, link.hash, rec) {
            held.records.push(HeldRecord::Unchanged { link: link.id });
            continue;
        }
        let snapshot = parse_fields(&link.snapshot)?;
        for (kind, value) in keys_to_read(rec, &snapshot) {
            if let Some(owner) = contacts::key_owner(conn, kind, value)? {
                held.keys.insert(kind, value, owner);
            }
        }
        if let Entry::Vacant(slot) = held.contacts.entry(link.contact_id)
            && let Some(contact) = contacts::load_held(conn, link.contact_id)?
        {
            slot.insert(contact);
        }
        held.records.push(HeldRecord::Linked(HeldLink {
            id: link.id,
            contact: link.contact_id,
            active,
            snapshot,
            tags: parse_tags(link.tags.as_deref())?,
            pins: super::review::pins_of(conn, link.id)?,
        }));
    }
    Ok(held)
}

/// Applies a linked record's merge: its contact's keys, conflicts, tags and row, then the
/// link's snapshot.
fn apply_update(
    conn: &Connection,
    seq: &Seq,
    provider_id: i64,
    rec: &NormalizedRecord,
    update: &LinkUpdate,
    now: i64,
) -> Result<(), StoreError> {
    if update.reactivate {
        conn.prepare_cached("UPDATE links SET state = 'active' WHERE id = ?1")?
            .execute([update.link])?;
    }
    for moved in &update.keys {
        contacts::move_key(conn, update.contact, moved.kind, moved.value.as_deref())?;
        // A phone's WhatsApp variants move with it (where nobody else holds them).
        if moved.kind == KeyKind::Phone && moved.value.is_some() {
            for v in &rec.keys.phone_variants {
                contacts::add_key_if_free(conn, update.contact, KeyKind::Phone, v)?;
            }
        }
    }
    for conflict in &update.conflicts {
        record_conflict(
            conn,
            provider_id,
            item_record(rec),
            conflict.cause.item_kind(),
            &conflict.cause.describe(),
            &conflict.contacts,
            now,
        )?;
    }
    contacts::add_tags(conn, update.contact, &update.tags_add)?;
    contacts::remove_tags(conn, update.contact, &update.tags_remove)?;
    match &update.write {
        ContactWrite::Unchanged => {}
        ContactWrite::Fields {
            fields,
            phone_valid,
        } => contacts::save_fields(conn, update.contact, fields, *phone_valid, seq.next(), now)?,
        ContactWrite::Bump => contacts::bump(conn, update.contact, seq.next())?,
    }
    conn.prepare_cached("UPDATE links SET snapshot = ?2, tags = coalesce(?3, tags), hash = ?4, seen_at = ?5, updated_at = ?5 WHERE id = ?1")?
        .execute(params![
            update.link,
            fields_json(&update.snapshot),
            update.snapshot_tags.as_ref().map(tags_json),
            rec.hash,
            now
        ])?;
    Ok(())
}

/// Creates a new contact and links the record to it; returns the link id and the contact.
fn apply_create(
    conn: &Connection,
    seq: &Seq,
    provider_id: i64,
    rec: &NormalizedRecord,
    new: &NewContact,
    now: i64,
) -> Result<(i64, ContactId), StoreError> {
    let id = contacts::insert(conn, &new.fields, new.phone_valid, seq.next(), now)?;
    for (kind, value) in &new.keys {
        contacts::add_key_if_free(conn, id, *kind, value)?;
    }
    contacts::add_tags(conn, id, &new.tags)?;
    Ok((insert_link(conn, provider_id, id, rec, now)?, id))
}

/// Fills a matched contact's gaps and links the record to it; returns the link id.
fn apply_match(
    conn: &Connection,
    seq: &Seq,
    provider_id: i64,
    rec: &NormalizedRecord,
    matched: &Matched,
    now: i64,
) -> Result<i64, StoreError> {
    if let Some((fields, phone_valid)) = &matched.write {
        contacts::save_fields(conn, matched.contact, fields, *phone_valid, seq.next(), now)?;
    }
    for (kind, value) in &matched.keys {
        contacts::add_key_if_free(conn, matched.contact, *kind, value)?;
    }
    contacts::add_tags(conn, matched.contact, &matched.tags)?;
    let link_id = match matched.adopt {
        Some(link_id) => {
            adopt_link(conn, link_id, rec, now)?;
            link_id
        }
        None => insert_link(conn, provider_id, matched.contact, rec, now)?,
    };
    super::review::pin_fields(conn, link_id, &matched.pins)?;
    Ok(link_id)
}

fn adopt_link(
    conn: &Connection,
    link_id: i64,
    rec: &NormalizedRecord,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE links SET remote_id = ?2, state = 'active', snapshot = ?3, tags = ?4, hash = ?5, seen_at = ?6, updated_at = ?6 WHERE id = ?1",
    )?
    .execute(params![link_id, rec.remote_id, fields_json(&rec.fields), rec.tags.as_ref().map(tags_json), rec.hash, now])?;
    Ok(())
}

/// Starts staging the tag listing of one provider (a temporary table on the writer).
pub fn begin_tag_staging(conn: &Connection, provider_id: i64) -> Result<(), StoreError> {
    conn.execute_batch(
        // Keyed by link: applying looks every link's staged tags up (without the key, each
        // lookup scanned the whole table, quadratic in the number of contacts).
        "CREATE TEMP TABLE IF NOT EXISTS staged_tags (link_id INTEGER NOT NULL, tag TEXT NOT NULL,
             PRIMARY KEY (link_id, tag)) WITHOUT ROWID;",
    )?;
    // Only this provider's rows: two accounts of one platform stage their tag listings at
    // the same time, and link ids are unique across providers.
    conn.prepare_cached(
        "DELETE FROM staged_tags WHERE link_id IN (SELECT id FROM links WHERE provider_id = ?1)",
    )?
    .execute([provider_id])?;
    Ok(())
}

/// Stages one page of a tag listing: `remote_ids` carry `tag`.
pub fn stage_tag_page(
    conn: &mut Connection,
    provider_id: i64,
    tag: &str,
    remote_ids: &[String],
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO staged_tags (link_id, tag) SELECT id, ?3 FROM links WHERE provider_id = ?1 AND remote_id = ?2",
        )?;
        for id in remote_ids {
            stmt.execute(params![provider_id, id, tag])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Applies the staged tag listing: each linked contact's tags as the provider shows them,
/// compared with the link's tag snapshot. Only links in `seen` (the links the contact
/// listing showed) are considered, and removals are inferred only for tags in
/// `universe` (tags the listing could show). Returns the number of contacts changed.
pub fn apply_staged_tags(
    conn: &mut Connection,
    seq: &Seq,
    provider_id: i64,
    universe: &Tags,
    seen: &LinkSet,
    stamp: Stamp,
) -> Result<u64, StoreError> {
    /// Links read per batch (memory stays flat however many links the provider has).
    const BATCH: i64 = 2_000;
    let now = stamp.at;
    let tx = conn.transaction()?;
    let mut changed = 0;
    let mut after = 0i64;
    loop {
        // `+l.provider_id`: walk the links in id order (a range of the primary key) rather
        // than through the provider index, which would sort all of them for every batch.
        let rows = tx
            .prepare_cached(
                "SELECT l.id, l.contact_id, l.tags, (SELECT json_group_array(tag) FROM staged_tags s WHERE s.link_id = l.id)
                 FROM links l WHERE +l.provider_id = ?1 AND l.state = 'active' AND l.id > ?2
                 AND (l.tags IS NULL OR l.tags != '[]' OR EXISTS (SELECT 1 FROM staged_tags s WHERE s.link_id = l.id))
                 ORDER BY l.id LIMIT ?3",
            )?
            .query_map(params![provider_id, after, BATCH], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let Some(&(last, ..)) = rows.last() else {
            break;
        };
        after = last;
        for (link_id, contact_id, snap, staged) in rows {
            if !seen.contains(link_id) {
                continue;
            }
            let snap = parse_tags(snap.as_deref())?;
            let seen: Tags = parse_tags(Some(&staged))?.unwrap_or_default();
            // Tags outside the universe are invisible to the listing: keep them as known.
            let mut shown = seen.clone();
            if let Some(s) = &snap {
                for t in s.names() {
                    if !universe.contains(t) {
                        shown.insert(t);
                    }
                }
            }
            if snap.as_ref() == Some(&shown) {
                continue;
            }
            let (added, removed) = tag_changes(snap.as_ref(), &shown, Some(universe));
            let before = if added.is_empty() && removed.is_empty() {
                Tags::new()
            } else {
                contacts::load_tags(&tx, contact_id)?
            };
            let mut touched = contacts::add_tags(&tx, contact_id, &added)? > 0;
            touched |= contacts::remove_tags(&tx, contact_id, &removed)? > 0;
            tx.prepare_cached("UPDATE links SET tags = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![link_id, tags_json(&shown), now])?;
            if touched {
                contacts::bump(&tx, contact_id, seq.next())?;
                changed += 1;
                let mut changes = Changes::new();
                add_tag_change(
                    &mut changes,
                    &before,
                    &contacts::load_tags(&tx, contact_id)?,
                );
                let remote_id: Option<String> = tx
                    .prepare_cached("SELECT remote_id FROM links WHERE id = ?1")?
                    .query_row([link_id], |r| r.get(0))?;
                // Tags first seen on this link (none known before) came with the record,
                // as a link's fields do: a `linked` entry, not a change made there.
                let kind = if snap.is_some() {
                    EventKind::ChangedIn
                } else {
                    EventKind::Linked
                };
                journal::write(
                    &tx,
                    stamp,
                    NewEntry {
                        contact: contact_id,
                        provider: Some(provider_id),
                        kind,
                        op: None,
                        remote_id: remote_id.as_deref(),
                        outcome: None,
                        changes: &changes,
                    },
                )?;
            }
        }
    }
    // Only this provider's rows: another account of the same platform may be staging.
    tx.prepare_cached(
        "DELETE FROM staged_tags WHERE link_id IN (SELECT id FROM links WHERE provider_id = ?1)",
    )?
    .execute([provider_id])?;
    tx.commit()?;
    Ok(changed)
}

/// Marks active links of a provider not `seen` in a complete listing as `gone` — unless
/// more than `guard_percent` of them would go at once (then none, and the count is
/// returned as refused). Returns `(contacts of the links marked, refused)`. Runs inside
/// the caller's transaction (finishing a listing is one unit of work).
pub fn mark_gone(
    tx: &Connection,
    provider_id: i64,
    seen: &LinkSet,
    guard_percent: u64,
    stamp: Stamp,
) -> Result<(Vec<ContactId>, u64), StoreError> {
    let now = stamp.at;
    // Count first, collect only when the guard lets them go (memory stays flat even when
    // a whole listing went missing).
    let missing_ids = |collect: bool| -> Result<(u64, u64, Vec<i64>), StoreError> {
        let mut stmt =
            tx.prepare_cached("SELECT id FROM links WHERE provider_id = ?1 AND state = 'active'")?;
        let mut rows = stmt.query([provider_id])?;
        let (mut active, mut missing, mut ids) = (0u64, 0u64, Vec::new());
        while let Some(row) = rows.next()? {
            active += 1;
            let id: i64 = row.get(0)?;
            if !seen.contains(id) {
                missing += 1;
                if collect {
                    ids.push(id);
                }
            }
        }
        Ok((active, missing, ids))
    };
    let (active, missing, _) = missing_ids(false)?;
    if missing == 0 {
        return Ok((Vec::new(), 0));
    }
    if missing * 100 > active * guard_percent {
        return Ok((Vec::new(), missing));
    }
    let (_, _, missing) = missing_ids(true)?;
    let mut contacts = Vec::with_capacity(missing.len());
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE links SET state = 'gone', updated_at = ?2 WHERE id = ?1 RETURNING contact_id, remote_id",
        )?;
        for id in &missing {
            let (contact, remote_id): (ContactId, Option<String>) =
                stmt.query_row(params![id, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            journal::write(
                tx,
                stamp,
                NewEntry {
                    contact,
                    provider: Some(provider_id),
                    kind: EventKind::Gone,
                    op: None,
                    remote_id: remote_id.as_deref(),
                    outcome: None,
                    changes: &Changes::new(),
                },
            )?;
            contacts.push(contact);
        }
    }
    Ok((contacts, 0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A store with two providers whose links interleave (as several providers' pulls
    /// and pushes make them): provider 1 holds `r0`..`r299` in that order, some gone, some
    /// still being created (no remote id yet), each with its index as its hash.
    fn store_with_links(dir: &std::path::Path) -> Connection {
        let conn = super::super::open_writer_connection(&dir.join("probe.db")).unwrap();
        conn.execute_batch(
            "INSERT INTO providers (id, name, kind) VALUES (1, 'one', 'maiagent'), (2, 'two', 'chatwoot')",
        )
        .unwrap();
        for i in 0..300i64 {
            conn.execute(
                "INSERT INTO contacts (id, seq, created_at, updated_at) VALUES (?1, ?1, 0, 0)",
                [i + 1],
            )
            .unwrap();
            let (remote, state) = match i {
                i if i % 23 == 0 => (None, "creating"),
                i if i % 17 == 0 => (Some(format!("r{i}")), "gone"),
                i => (Some(format!("r{i}")), "active"),
            };
            for (provider, remote) in [(1, remote), (2, Some(format!("r{i}")))] {
                conn.execute(
                    "INSERT INTO links (provider_id, contact_id, remote_id, state, hash, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                    params![provider, i + 1, remote, state, i],
                )
                .unwrap();
            }
        }
        conn
    }

    /// What the probe must answer, one lookup per record.
    fn expected(conn: &Connection, listed: &[(String, i64)]) -> Vec<Option<i64>> {
        listed
            .iter()
            .map(|(remote, hash)| {
                conn.query_row(
                    "SELECT id, hash FROM links WHERE provider_id = 1 AND remote_id = ?1 AND state = 'active'",
                    [remote],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .unwrap()
                .and_then(|(id, h)| (h == *hash).then_some(id))
            })
            .collect()
    }

    #[test]
    fn the_probe_answers_the_same_whatever_order_the_listing_shows_records_in() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = store_with_links(dir.path());
        // Every tenth record changed, and records the store has never seen between them.
        let record = |i: i64| {
            let hash = if i % 10 == 3 { i + 1_000 } else { i };
            (format!("r{i}"), hash)
        };
        let stable: Vec<_> = (0..300).map(record).collect();
        let mut with_new = Vec::new();
        for (i, r) in stable.iter().enumerate() {
            with_new.push(r.clone());
            if i % 40 == 5 {
                with_new.push((format!("new{i}"), 7));
            }
        }
        let reversed: Vec<_> = stable.iter().rev().cloned().collect();
        let shuffled: Vec<_> = (0..300).map(|i| record(i * 7_919 % 300)).collect();
        // Created eight at a time, answered in another order: each block of eight
        // listed backwards.
        let blocks: Vec<_> = (0..296).map(|i| record(i / 8 * 8 + 7 - i % 8)).collect();
        for (name, listing) in [
            ("stable", &stable),
            ("with new records", &with_new),
            ("in blocks", &blocks),
            ("reversed", &reversed),
            ("shuffled", &shuffled),
        ] {
            let mut cursor = ProbeCursor::default();
            let mut got = Vec::new();
            for page in listing.chunks(25) {
                got.extend(unchanged_links(&mut conn, 1, page, &mut cursor).unwrap());
            }
            assert_eq!(got, expected(&conn, listing), "{name}");
            let unchanged = got.iter().flatten().count();
            assert!(unchanged > 200, "{name}: {unchanged} unchanged");
            let (ranged, looked_up) = cursor.counts();
            assert_eq!(ranged + looked_up, listing.len() as u64, "{name}");
            // A listing in link order keeps reading ranges; one in another order soon
            // stops paying for them.
            match name {
                "stable" | "with new records" | "in blocks" => {
                    assert_eq!(cursor.skip, 0, "{name}");
                    // All but the records with no active link (gone ones are in the
                    // range; records being created and new ones are not).
                    assert!(
                        ranged * 10 >= listing.len() as u64 * 9,
                        "{name}: {cursor:?}"
                    );
                }
                _ => assert!(cursor.skip > 0, "{name}: {cursor:?}"),
            }
        }
    }
}
