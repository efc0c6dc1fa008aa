//! Applying what a provider shows to the store (DESIGN §5.1–5.2, §5.6): one transaction
//! per page; only what changed in that provider since its snapshot reaches the contact;
//! unlinked records are matched, linked, created, or held as conflicts; deletions are
//! marked only after a complete listing, with the 20 % guard.

use super::contacts;
use super::{Seq, StoreError};
use crate::domain::matching::{
    Candidate, ConflictReason, ContactId, KeyKind, MatchOutcome, match_batch,
};
use crate::domain::merge::{NormalizedRecord, changed_fields, tag_changes};
use crate::domain::names::{join as join_name, split as split_name};
use crate::domain::{Fields, Tags, field};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{HashMap, HashSet};

/// Which provider changed which field of which contact in this cycle, by config order:
/// changes to the same field by two providers in one cycle resolve to the provider listed
/// first (DESIGN §5 merge policy).
#[derive(Debug, Default)]
pub struct FieldOwners(HashMap<(ContactId, String), usize>);

impl FieldOwners {
    /// Whether provider `order` may set `field` of `contact`; records it if so.
    fn claim(&mut self, contact: ContactId, field: &str, order: usize) -> bool {
        match self.0.get(&(contact, field.to_owned())) {
            Some(&owner) if owner < order => false,
            _ => {
                self.0.insert((contact, field.to_owned()), order);
                true
            }
        }
    }
}

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

impl Extend<i64> for LinkSet {
    fn extend<I: IntoIterator<Item = i64>>(&mut self, iter: I) {
        for id in iter {
            self.insert(id);
        }
    }
}

/// For each `(remote id, content hash)` of a listed page: the id of the provider's active
/// link that last showed exactly that content (same hash), else `None` (a new record, a
/// changed one, or one whose link is not active). Records with an id here need no work at
/// all — not even normalising — so a cycle over unchanged data only reads.
pub fn unchanged_links(
    conn: &Connection,
    provider_id: i64,
    listed: &[(String, i64)],
) -> Result<Vec<Option<i64>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, hash FROM links WHERE provider_id = ?1 AND remote_id = ?2 AND state = 'active'",
    )?;
    listed
        .iter()
        .map(|(remote_id, hash)| {
            Ok(stmt
                .query_row(params![provider_id, remote_id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()?
                .and_then(|(id, h)| (h == *hash).then_some(id)))
        })
        .collect()
}

/// Serialises a field map.
pub fn fields_json(fields: &Fields) -> String {
    serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_owned())
}

/// Serialises a tag set.
pub fn tags_json(tags: &Tags) -> String {
    serde_json::to_string(&tags.names().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".to_owned())
}

/// Parses a stored field map.
pub fn parse_fields(text: &str) -> Result<Fields, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("link snapshot: {e}")))
}

/// Parses a stored tag list.
pub fn parse_tags(text: Option<&str>) -> Result<Option<Tags>, StoreError> {
    text.map(|t| {
        serde_json::from_str::<Vec<String>>(t)
            .map(|v| v.into_iter().collect())
            .map_err(|e| StoreError::Corrupt(format!("link tags: {e}")))
    })
    .transpose()
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

/// Records (or refreshes) a conflict.
pub fn record_conflict(
    conn: &Connection,
    provider_id: i64,
    remote_id: &str,
    reason: &str,
    contacts: &[ContactId],
    now: i64,
) -> Result<(), StoreError> {
    let ids = serde_json::to_string(contacts).unwrap_or_else(|_| "[]".to_owned());
    conn.prepare_cached(
        "INSERT INTO conflicts (provider_id, remote_id, reason, contact_ids, detected_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (provider_id, remote_id) DO UPDATE SET reason = excluded.reason, contact_ids = excluded.contact_ids,
         detected_at = excluded.detected_at, resolved_at = NULL",
    )?
    .execute(params![provider_id, remote_id, reason, ids, now])?;
    Ok(())
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

fn key_kind_of(field_name: &str) -> Option<KeyKind> {
    match field_name {
        field::PHONE => Some(KeyKind::Phone),
        field::EMAIL => Some(KeyKind::Email),
        field::SOURCE_ID => Some(KeyKind::SourceId),
        _ => None,
    }
}

fn key_value(rec: &NormalizedRecord, kind: KeyKind) -> Option<&str> {
    match kind {
        KeyKind::Phone => rec.keys.phone.as_deref(),
        KeyKind::Email => rec.keys.email.as_deref(),
        KeyKind::SourceId => rec.keys.source_id.as_deref(),
    }
}

/// Applies one page of normalised records from provider `provider_id` (config position
/// `order`) in one transaction.
pub fn apply_page(
    conn: &mut Connection,
    seq: &Seq,
    owners: &mut FieldOwners,
    provider_id: i64,
    order: usize,
    records: &[NormalizedRecord],
    now: i64,
) -> Result<PageOutcome, StoreError> {
    let tx = conn.transaction()?;
    let mut out = PageOutcome {
        pulled: records.len() as u64,
        ..PageOutcome::default()
    };
    let mut unlinked: Vec<&NormalizedRecord> = Vec::new();
    for rec in records {
        match find_link(&tx, provider_id, &rec.remote_id)? {
            Some(link) => {
                out.seen.push(link.id);
                if link.state != "active" {
                    tx.prepare_cached("UPDATE links SET state = 'active' WHERE id = ?1")?
                        .execute([link.id])?;
                } else if link.hash == rec.hash {
                    continue;
                }
                if apply_linked(&tx, seq, owners, provider_id, order, &link, rec, now)? {
                    out.changed += 1;
                }
            }
            None => unlinked.push(rec),
        }
    }
    if !unlinked.is_empty() {
        link_or_create(&tx, seq, provider_id, &unlinked, now, &mut out)?;
    }
    tx.commit()?;
    Ok(out)
}

/// Applies a linked record's changes since its snapshot. Returns whether the contact
/// changed.
#[allow(clippy::too_many_arguments)]
fn apply_linked(
    conn: &Connection,
    seq: &Seq,
    owners: &mut FieldOwners,
    provider_id: i64,
    order: usize,
    link: &LinkRow,
    rec: &NormalizedRecord,
    now: i64,
) -> Result<bool, StoreError> {
    let snapshot = parse_fields(&link.snapshot)?;
    let snap_tags = parse_tags(link.tags.as_deref())?;
    let changes = changed_fields(Some(&snapshot), &rec.fields);
    let mut contact_changed = false;
    if let Some(mut contact) = contacts::load(conn, link.contact_id)? {
        let before = contact.fields.clone();
        let mut phone_valid = contact.phone_valid;
        for (f, v) in &changes {
            if !owners.claim(contact.id, f, order) {
                continue;
            }
            if let Some(kind) = key_kind_of(f) {
                let key = key_value(rec, kind);
                if let Some(other) = contacts::set_key(conn, contact.id, kind, key)? {
                    record_conflict(
                        conn,
                        provider_id,
                        &rec.remote_id,
                        &format!(
                            "its {} now equals that of another contact; the key was not moved",
                            kind.as_str()
                        ),
                        &[contact.id, other],
                        now,
                    )?;
                }
                if kind == KeyKind::Phone {
                    phone_valid = key.is_some();
                }
            }
            set_field(&mut contact.fields, f, v);
            match f.as_str() {
                field::NAME => {
                    let (first, last) = split_name(v);
                    set_field(&mut contact.fields, field::FIRST_NAME, &first);
                    set_field(&mut contact.fields, field::LAST_NAME, &last);
                }
                field::FIRST_NAME | field::LAST_NAME => {
                    let name = join_name(
                        contact
                            .fields
                            .get(field::FIRST_NAME)
                            .map_or("", String::as_str),
                        contact
                            .fields
                            .get(field::LAST_NAME)
                            .map_or("", String::as_str),
                    );
                    set_field(&mut contact.fields, field::NAME, &name);
                }
                _ => {}
            }
        }
        let mut tags_changed = false;
        if let Some(tags) = &rec.tags {
            let (added, removed) = tag_changes(snap_tags.as_ref(), tags, None);
            tags_changed |= contacts::add_tags(conn, contact.id, &added)? > 0;
            tags_changed |= contacts::remove_tags(conn, contact.id, &removed)? > 0;
        }
        if contact.fields != before || phone_valid != contact.phone_valid {
            contacts::save_fields(
                conn,
                contact.id,
                &contact.fields,
                phone_valid,
                seq.next(),
                now,
            )?;
            contact_changed = true;
        } else if tags_changed {
            contacts::bump(conn, contact.id, seq.next())?;
            contact_changed = true;
        }
    }
    let mut merged = snapshot;
    for (k, v) in &rec.fields {
        merged.insert(k.clone(), v.clone());
    }
    let tags_text = match &rec.tags {
        Some(t) => Some(tags_json(t)),
        None => link.tags.clone(),
    };
    conn.prepare_cached("UPDATE links SET snapshot = ?2, tags = ?3, hash = ?4, seen_at = ?5, updated_at = ?5 WHERE id = ?1")?
        .execute(params![link.id, fields_json(&merged), tags_text, rec.hash, now])?;
    Ok(contact_changed)
}

fn set_field(fields: &mut Fields, name: &str, value: &str) {
    if value.is_empty() {
        fields.remove(name);
    } else {
        fields.insert(name.to_owned(), value.to_owned());
    }
}

fn link_or_create(
    conn: &Connection,
    seq: &Seq,
    provider_id: i64,
    records: &[&NormalizedRecord],
    now: i64,
    out: &mut PageOutcome,
) -> Result<(), StoreError> {
    let mut candidates = Vec::with_capacity(records.len());
    let mut hit_contacts = HashSet::new();
    for rec in records {
        let mut hits = Vec::new();
        for (kind, value) in rec.keys.iter() {
            if let Some(c) = contacts::key_owner(conn, kind, value)? {
                hits.push((kind, c));
                hit_contacts.insert(c);
            }
        }
        candidates.push(Candidate {
            remote_id: rec.remote_id.clone(),
            keys: rec.keys.clone(),
            hits,
        });
    }
    // Links of hit contacts in this provider: active/gone ones make a duplicate; a
    // `creating` one is the answer to our own create that a crash left unrecorded.
    let mut taken = HashSet::new();
    let mut creating = HashMap::new();
    for c in &hit_contacts {
        match link_state_of(conn, provider_id, *c)? {
            Some((link_id, state)) if state == "creating" => {
                creating.insert(*c, link_id);
            }
            Some(_) => {
                taken.insert(*c);
            }
            None => {}
        }
    }
    let outcomes = match_batch(&candidates, &|c| taken.contains(&c));
    for (rec, outcome) in records.iter().zip(outcomes) {
        match outcome {
            MatchOutcome::New => {
                let phone_valid = rec.keys.phone.is_some();
                let fields: Fields = rec
                    .fields
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let id = contacts::insert(conn, &fields, phone_valid, seq.next(), now)?;
                for (kind, value) in rec.keys.iter() {
                    contacts::add_key_if_free(conn, id, kind, value)?;
                }
                if let Some(tags) = &rec.tags {
                    let names: Vec<String> = tags.names().map(str::to_owned).collect();
                    contacts::add_tags(conn, id, &names)?;
                }
                out.seen.push(insert_link(conn, provider_id, id, rec, now)?);
                out.new_contacts += 1;
            }
            MatchOutcome::Existing { contact, .. } => {
                if let Some(mut golden) = contacts::load(conn, contact)? {
                    // A newly linked record only fills the contact's gaps; the values
                    // the contact already has are then pushed to this provider.
                    let mut phone_valid = golden.phone_valid;
                    for (k, v) in &rec.fields {
                        if !v.is_empty() && !golden.fields.contains_key(k) {
                            golden.fields.insert(k.clone(), v.clone());
                            if k == field::PHONE {
                                phone_valid = rec.keys.phone.is_some();
                            }
                        }
                    }
                    let (name, first, last) = contacts::complete_names(
                        golden.fields.get(field::NAME).map_or("", String::as_str),
                        golden
                            .fields
                            .get(field::FIRST_NAME)
                            .map_or("", String::as_str),
                        golden
                            .fields
                            .get(field::LAST_NAME)
                            .map_or("", String::as_str),
                    );
                    set_field(&mut golden.fields, field::NAME, &name);
                    set_field(&mut golden.fields, field::FIRST_NAME, &first);
                    set_field(&mut golden.fields, field::LAST_NAME, &last);
                    contacts::save_fields(
                        conn,
                        contact,
                        &golden.fields,
                        phone_valid,
                        seq.next(),
                        now,
                    )?;
                    for (kind, value) in rec.keys.iter() {
                        contacts::add_key_if_free(conn, contact, kind, value)?;
                    }
                    if let Some(tags) = &rec.tags {
                        let names: Vec<String> = tags.names().map(str::to_owned).collect();
                        contacts::add_tags(conn, contact, &names)?;
                    }
                }
                let link_id = if let Some(link_id) = creating.remove(&contact) {
                    adopt_link(conn, link_id, rec, now)?;
                    link_id
                } else {
                    insert_link(conn, provider_id, contact, rec, now)?
                };
                out.seen.push(link_id);
                resolve_conflict(conn, provider_id, &rec.remote_id, now)?;
                out.matched += 1;
            }
            MatchOutcome::Conflict { contacts, reason } => {
                let text = match reason {
                    ConflictReason::Ambiguous | ConflictReason::DuplicateInProvider => {
                        reason.describe()
                    }
                };
                record_conflict(conn, provider_id, &rec.remote_id, text, &contacts, now)?;
                tracing::warn!(provider_id, remote_id = %rec.remote_id, contacts = ?contacts, "conflict: {text}");
                out.conflicts += 1;
            }
        }
    }
    Ok(())
}

fn insert_link(
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
pub fn begin_tag_staging(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        // Keyed by link: applying looks every link's staged tags up (without the key, each
        // lookup scanned the whole table, quadratic in the number of contacts).
        "CREATE TEMP TABLE IF NOT EXISTS staged_tags (link_id INTEGER NOT NULL, tag TEXT NOT NULL,
             PRIMARY KEY (link_id, tag)) WITHOUT ROWID;
         DELETE FROM staged_tags;",
    )?;
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
    now: i64,
) -> Result<u64, StoreError> {
    /// Links read per batch (memory stays flat however many links the provider has).
    const BATCH: i64 = 2_000;
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
            let mut touched = contacts::add_tags(&tx, contact_id, &added)? > 0;
            touched |= contacts::remove_tags(&tx, contact_id, &removed)? > 0;
            tx.prepare_cached("UPDATE links SET tags = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![link_id, tags_json(&shown), now])?;
            if touched {
                contacts::bump(&tx, contact_id, seq.next())?;
                changed += 1;
            }
        }
    }
    tx.execute("DELETE FROM staged_tags", [])?;
    tx.commit()?;
    Ok(changed)
}

/// Marks active links of a provider not `seen` in a complete listing as `gone` — unless
/// more than `guard_percent` of them would go at once (then none, and the count is
/// returned as refused). Returns `(contacts of the links marked, refused)`.
pub fn mark_gone(
    conn: &mut Connection,
    provider_id: i64,
    seen: &LinkSet,
    guard_percent: u64,
    now: i64,
) -> Result<(Vec<ContactId>, u64), StoreError> {
    let tx = conn.transaction()?;
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
            "UPDATE links SET state = 'gone', updated_at = ?2 WHERE id = ?1 RETURNING contact_id",
        )?;
        for id in &missing {
            contacts.push(stmt.query_row(params![id, now], |r| r.get(0))?);
        }
    }
    tx.commit()?;
    Ok((contacts, 0))
}
