//! Merging one page of a provider's listing into the golden records, as
//! a pure function: [`merge_page`] takes the page's normalised records and what the store
//! holds for them ([`Held`], read first in the page's transaction) and returns a
//! [`PageMerge`]: every write the store then applies, in order, in that same transaction.
//!
//! The rules:
//!
//! - A linked record brings only what changed in that provider since its link's snapshot
//!   ([`changed_fields`]): a field the provider never had is not a change; a value going
//!   from set to empty is. Its tag additions and removals since the tag snapshot apply to
//!   the contact's set.
//! - The most recent change wins, field by field; changes to one field of one contact by
//!   two providers in one cycle resolve by config order, the first provider winning
//!   ([`FieldOwners`]).
//! - A changed match key moves with its field unless another contact holds the value:
//!   then the key stays, the field still changes, and a conflict is recorded.
//! - A changed name side re-derives the other side ([`names::follow`]).
//! - Unlinked records are matched as one batch ([`match_batch`]: existing link → source id
//!   → phone → email, against the keys as the page's linked records left them). A new
//!   person becomes a contact; a record linked to an existing contact only fills its gaps;
//!   keys pointing at two contacts (or a person the provider holds twice) are a conflict,
//!   and nothing is merged.

use super::{NormalizedRecord, changed_fields, is_change, tag_changes};
use crate::domain::matching::{
    Candidate, ConflictReason, ContactId, KeyKind, MatchOutcome, MatchedBy, match_batch,
};
use crate::domain::names;
use crate::domain::record::{Fields, Tags, field, set_field};
use crate::domain::review::{ApartRule, ItemKind, filter_hits, key_field};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Which provider changed which field of which contact in this cycle, by config order:
/// changes to the same field by two providers in one cycle resolve to the provider listed
/// first (the merge policy README.md states). One value lives for one cycle, across
/// its pages.
#[derive(Debug, Default)]
pub struct FieldOwners(HashMap<(ContactId, String), usize>);

impl FieldOwners {
    /// Whether provider `order` may set `field` of `contact`; records it if so.
    pub fn claim(&mut self, contact: ContactId, field: &str, order: usize) -> bool {
        match self.0.get(&(contact, field.to_owned())) {
            Some(&owner) if owner < order => false,
            _ => {
                self.0.insert((contact, field.to_owned()), order);
                true
            }
        }
    }
}

/// Whether a linked record needs merging: its link is not active (it comes back), or the
/// provider shows other content than the link last recorded (another hash). The store
/// asks this while reading, so an unchanged record costs one lookup.
pub fn needs_merge(link_active: bool, link_hash: i64, record: &NormalizedRecord) -> bool {
    !link_active || link_hash != record.hash
}

/// The match keys whose owner the merge of a linked record looks up: the valid keys of the
/// fields that changed since the snapshot.
pub fn keys_to_read<'a>(
    record: &'a NormalizedRecord,
    snapshot: &'a Fields,
) -> impl Iterator<Item = (KeyKind, &'a str)> + 'a {
    record.keys.iter().filter(move |(kind, _)| {
        record
            .fields
            .get(key_field(*kind))
            .is_some_and(|v| is_change(snapshot.get(key_field(*kind)), v))
    })
}

/// What the store holds for one record of the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldRecord {
    /// No link of this provider holds the remote id: the record is matched.
    Unlinked,
    /// An active link that last showed exactly this content ([`needs_merge`] is false).
    Unchanged {
        /// The link id.
        link: i64,
    },
    /// A link whose record needs merging.
    Linked(HeldLink),
    /// No link: the record was merged into another record of the same person there
    /// (`review merge`); it is never matched, written or deleted.
    Merged,
}

/// A record's link, with what the provider last showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLink {
    /// The link id.
    pub id: i64,
    /// The linked contact.
    pub contact: ContactId,
    /// Whether the link is active (else `gone`: the record comes back).
    pub active: bool,
    /// Field snapshot.
    pub snapshot: Fields,
    /// Tag snapshot (`None`: unknown).
    pub tags: Option<Tags>,
    /// Fields pinned on the link (`review apart`): the provider's value never reaches
    /// the contact.
    pub pins: Vec<String>,
}

/// A golden record as the merge needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldContact {
    /// Its fields (empty ones absent).
    pub fields: Fields,
    /// Whether `phone` is valid E.164.
    pub phone_valid: bool,
    /// Its tags.
    pub tags: Tags,
}

/// A contact's link in the provider whose page is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkHere {
    /// A `creating` link: our own create whose answer a crash left unrecorded. A record
    /// matched to the contact takes this link over.
    Creating(i64),
    /// An active or gone link: the provider holds (or held) the person already.
    Held,
}

/// Which contact holds each looked-up match key value. A value that was looked up and is
/// absent is free.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOwners([HashMap<String, ContactId>; 3]);

impl KeyOwners {
    fn slot(kind: KeyKind) -> usize {
        match kind {
            KeyKind::SourceId => 0,
            KeyKind::Phone => 1,
            KeyKind::Email => 2,
        }
    }

    /// The contact holding `value` of `kind`.
    pub fn get(&self, kind: KeyKind, value: &str) -> Option<ContactId> {
        self.0[Self::slot(kind)].get(value).copied()
    }

    /// Records that `contact` holds `value` of `kind`.
    pub fn insert(&mut self, kind: KeyKind, value: &str, contact: ContactId) {
        self.0[Self::slot(kind)].insert(value.to_owned(), contact);
    }

    /// Points key `kind` of `contact` at `value` (`None`: drops it), as the store's
    /// `match_keys` would after the move. Returns the move to apply, `Ok(None)` when the
    /// contact holds the value already, or the other contact holding it (nothing moves).
    fn assign(
        &mut self,
        contact: ContactId,
        kind: KeyKind,
        value: Option<&str>,
    ) -> Result<Option<KeyMove>, ContactId> {
        if let Some(v) = value {
            match self.get(kind, v) {
                Some(owner) if owner == contact => return Ok(None),
                Some(owner) => return Err(owner),
                None => {}
            }
        }
        let slot = &mut self.0[Self::slot(kind)];
        slot.retain(|_, owner| *owner != contact);
        if let Some(v) = value {
            slot.insert(v.to_owned(), contact);
        }
        Ok(Some(KeyMove {
            kind,
            value: value.map(str::to_owned),
        }))
    }
}

/// What the store holds for the records of one page, read in the page's transaction before
/// merging:
///
/// - `records`: for each record, in page order, its link by (provider, remote id);
/// - `contacts`: the contact of each [`HeldLink`], and each contact an unlinked record's key
///   points at whose link here is not [`LinkHere::Held`];
/// - `keys`: the owners of every key of each unlinked record, and of [`keys_to_read`] of
///   each [`HeldLink`];
/// - `links_here`: the link in this provider of each contact an unlinked record's key points
///   at (absent: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// One per record, in page order.
    pub records: Vec<HeldRecord>,
    /// Contacts by id.
    pub contacts: HashMap<ContactId, HeldContact>,
    /// Key owners.
    pub keys: KeyOwners,
    /// Links of key owners in this provider.
    pub links_here: HashMap<ContactId, LinkHere>,
    /// The "different people" decisions about the key owners.
    pub apart: Vec<ApartRule>,
    /// Keys of the unlinked records that no contact holds but the record of another open
    /// `ambiguous_match` or `duplicate_in_provider` item does.
    pub under_review: HashSet<(KeyKind, String)>,
}

/// A match key moving to a value (`None`: the contact's key of that kind is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMove {
    /// Which key.
    pub kind: KeyKind,
    /// Its new value.
    pub value: Option<String>,
}

/// How a contact's row changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactWrite {
    /// Not at all.
    Unchanged,
    /// Its fields become these (the whole map) and it is planned again.
    Fields {
        /// All fields (empty ones absent).
        fields: Fields,
        /// Whether `phone` is valid E.164.
        phone_valid: bool,
    },
    /// Only its tags changed: it is planned again.
    Bump,
}

/// A linked record's merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkUpdate {
    /// The record's position on the page.
    pub record: usize,
    /// The link.
    pub link: i64,
    /// The link was gone and becomes active again.
    pub reactivate: bool,
    /// The linked contact.
    pub contact: ContactId,
    /// Key moves, in order.
    pub keys: Vec<KeyMove>,
    /// Keys that could not move (another contact holds the value), in order.
    pub conflicts: Vec<Conflict>,
    /// Tags the contact gains.
    pub tags_add: Vec<String>,
    /// Tags the contact loses.
    pub tags_remove: Vec<String>,
    /// The contact's row.
    pub write: ContactWrite,
    /// The link's new field snapshot: the old one with every field the record shows.
    pub snapshot: Fields,
    /// The link's new tag snapshot (`None`: unchanged, the listing carried no tags).
    pub snapshot_tags: Option<Tags>,
}

impl LinkUpdate {
    /// Whether the change reached the contact.
    pub fn contact_changed(&self) -> bool {
        self.write != ContactWrite::Unchanged
    }
}

/// A new contact for a record nobody holds; the record is linked to it with the record as
/// the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    /// The record's position on the page.
    pub record: usize,
    /// Its fields (empty ones absent, names completed).
    pub fields: Fields,
    /// Whether `phone` is valid E.164.
    pub phone_valid: bool,
    /// Its keys.
    pub keys: Vec<(KeyKind, String)>,
    /// Its tags.
    pub tags: Vec<String>,
}

/// A record linked to an existing contact (it only fills the contact's gaps); the link's
/// snapshot is the record, and the record's open conflict is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The record's position on the page.
    pub record: usize,
    /// The contact.
    pub contact: ContactId,
    /// The contact's fields after filling its gaps (`None`: the contact was not found;
    /// only the link is made). The contact is planned again either way.
    pub write: Option<(Fields, bool)>,
    /// Keys the contact gains (those of the record nobody holds).
    pub keys: Vec<(KeyKind, String)>,
    /// Tags the contact gains.
    pub tags: Vec<String>,
    /// A `creating` link to take over instead of making a new one.
    pub adopt: Option<i64>,
    /// Fields whose values another person shares (kept apart by a `review apart`
    /// decision): not copied onto the contact, pinned on the new link.
    pub pins: Vec<String>,
    /// The key that found the contact (`None`: another record of the page did).
    pub by: Option<MatchedBy>,
}

/// Why a record is held for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictCause {
    /// Matching did not link it.
    Match(ConflictReason),
    /// Its changed key equals that of another contact; the key was not moved.
    KeyTaken(KeyKind),
}

impl ConflictCause {
    /// The kind of review item it opens.
    pub fn item_kind(self) -> ItemKind {
        match self {
            ConflictCause::Match(ConflictReason::DuplicateInProvider) => {
                ItemKind::DuplicateInProvider
            }
            ConflictCause::Match(ConflictReason::Ambiguous | ConflictReason::HeldRecord)
            | ConflictCause::KeyTaken(_) => ItemKind::AmbiguousMatch,
        }
    }

    /// Human text, as stored with the conflict.
    pub fn describe(self) -> Cow<'static, str> {
        match self {
            ConflictCause::Match(reason) => reason.describe().into(),
            ConflictCause::KeyTaken(kind) => format!(
                "its {} now equals that of another contact; the key was not moved",
                kind.as_str()
            )
            .into(),
        }
    }
}

/// A record held for review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The record's position on the page.
    pub record: usize,
    /// The contacts involved.
    pub contacts: Vec<ContactId>,
    /// Why.
    pub cause: ConflictCause,
}

/// One step of a page's merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A linked record that shows what its link last showed: only seen.
    Unchanged {
        /// The link.
        link: i64,
    },
    /// A linked record's changes.
    Update(LinkUpdate),
    /// A new contact.
    Create(NewContact),
    /// A record linked to an existing contact.
    Match(Matched),
    /// A record held for review: nothing linked, nothing merged.
    Conflict(Conflict),
    /// A record held for review as a second record of the person another record of the
    /// page becomes (a [`Step::Create`]): the provider holds that person twice. Nothing
    /// linked, nothing merged; the item names the new contact.
    Duplicate {
        /// The record's position on the page.
        record: usize,
        /// The position of the record that becomes the new contact.
        of: usize,
    },
    /// A record merged into another one of the same person (`review merge`): ignored.
    Merged,
}

/// Everything one page changes, in the order to apply it: the linked records in page
/// order, then the unlinked ones in page order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageMerge {
    /// The steps, one per record.
    pub steps: Vec<Step>,
}

/// Merges one page of provider `order` (its config position). See the module doc.
pub fn merge_page(
    records: &[NormalizedRecord],
    held: Held,
    owners: &mut FieldOwners,
    order: usize,
) -> PageMerge {
    let Held {
        records: held_records,
        mut contacts,
        mut keys,
        links_here,
        apart,
        under_review,
    } = held;
    debug_assert_eq!(records.len(), held_records.len());
    let mut steps = Vec::with_capacity(records.len());
    let mut unlinked = Vec::new();
    // Contacts linked here through this page: taken, whatever `links_here` says.
    let mut linked_here = HashSet::new();
    for (i, (rec, held)) in records.iter().zip(held_records).enumerate() {
        match held {
            HeldRecord::Unchanged { link } => steps.push(Step::Unchanged { link }),
            HeldRecord::Linked(link) => {
                linked_here.insert(link.contact);
                let contact = contacts.get_mut(&link.contact);
                steps.push(Step::Update(merge_linked(
                    i, rec, link, contact, &mut keys, owners, order,
                )));
            }
            HeldRecord::Unlinked => unlinked.push(i),
            HeldRecord::Merged => steps.push(Step::Merged),
        }
    }
    if unlinked.is_empty() {
        return PageMerge { steps };
    }
    let mut shared = Vec::with_capacity(unlinked.len());
    let candidates: Vec<Candidate> = unlinked
        .iter()
        .map(|&i| {
            let rec = &records[i];
            let hits = rec
                .keys
                .iter()
                .filter_map(|(kind, value)| keys.get(kind, value).map(|c| (kind, c)))
                .collect();
            let filtered = filter_hits(&rec.keys, hits, &apart);
            shared.push(filtered.shared);
            let held_for_review = if under_review.is_empty() {
                Vec::new()
            } else {
                rec.keys
                    .iter()
                    .filter(|&(kind, value)| {
                        keys.get(kind, value).is_none()
                            && under_review.contains(&(kind, value.to_owned()))
                    })
                    .map(|(kind, _)| kind)
                    .collect()
            };
            Candidate {
                remote_id: rec.remote_id.clone(),
                keys: rec.keys.clone(),
                hits: filtered.hits,
                held_for_review,
            }
        })
        .collect();
    let taken =
        |c: ContactId| linked_here.contains(&c) || links_here.get(&c) == Some(&LinkHere::Held);
    let outcomes = match_batch(&candidates, &taken);
    let mut adopted = HashSet::new();
    for ((&i, outcome), shared) in unlinked.iter().zip(outcomes).zip(shared) {
        let rec = &records[i];
        steps.push(match outcome {
            MatchOutcome::New => {
                let mut fields: Fields = rec
                    .fields
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                names::complete(&mut fields);
                Step::Create(NewContact {
                    record: i,
                    fields,
                    phone_valid: rec.keys.phone.is_some(),
                    keys: rec
                        .keys
                        .iter()
                        .map(|(kind, value)| (kind, value.to_owned()))
                        .collect(),
                    tags: rec
                        .tags
                        .iter()
                        .flat_map(Tags::names)
                        .map(str::to_owned)
                        .collect(),
                })
            }
            MatchOutcome::Existing { contact, by } => {
                let adopt = match links_here.get(&contact) {
                    Some(&LinkHere::Creating(link)) if adopted.insert(contact) => Some(link),
                    _ => None,
                };
                // A phone match needed the WhatsApp rules when the person's phone is
                // written another way than the record's.
                let theirs = contacts
                    .get(&contact)
                    .and_then(|c| c.fields.get(field::PHONE))
                    .filter(|p| !p.is_empty());
                let by = by.map(|kind| match kind {
                    KeyKind::SourceId => MatchedBy::SourceId,
                    KeyKind::Email => MatchedBy::Email,
                    KeyKind::Phone if theirs.is_some() && theirs != rec.keys.phone.as_ref() => {
                        MatchedBy::PhoneVariant
                    }
                    KeyKind::Phone => MatchedBy::Phone,
                });
                Step::Match(match_existing(
                    by,
                    i,
                    rec,
                    contact,
                    contacts.get_mut(&contact),
                    &mut keys,
                    adopt,
                    &shared,
                ))
            }
            MatchOutcome::DuplicateOf { remote_id } => {
                match records.iter().position(|r| r.remote_id == remote_id) {
                    Some(of) => Step::Duplicate { record: i, of },
                    None => Step::Conflict(Conflict {
                        record: i,
                        contacts: Vec::new(),
                        cause: ConflictCause::Match(ConflictReason::DuplicateInProvider),
                    }),
                }
            }
            MatchOutcome::Conflict { contacts, reason } => Step::Conflict(Conflict {
                record: i,
                contacts,
                cause: ConflictCause::Match(reason),
            }),
        });
    }
    PageMerge { steps }
}

/// The match key of a field.
fn key_of(field_name: &str) -> Option<KeyKind> {
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

fn merge_linked(
    record: usize,
    rec: &NormalizedRecord,
    link: HeldLink,
    contact: Option<&mut HeldContact>,
    keys: &mut KeyOwners,
    owners: &mut FieldOwners,
    order: usize,
) -> LinkUpdate {
    let HeldLink {
        id,
        contact: contact_id,
        active,
        mut snapshot,
        tags: snapshot_tags,
        pins,
    } = link;
    let mut update = LinkUpdate {
        record,
        link: id,
        reactivate: !active,
        contact: contact_id,
        keys: Vec::new(),
        conflicts: Vec::new(),
        tags_add: Vec::new(),
        tags_remove: Vec::new(),
        write: ContactWrite::Unchanged,
        snapshot: Fields::new(),
        snapshot_tags: rec.tags.clone(),
    };
    if let Some(contact) = contact {
        let before = contact.fields.clone();
        let mut phone_valid = contact.phone_valid;
        for (f, v) in &changed_fields(Some(&snapshot), &rec.fields) {
            if pins.contains(f) || !owners.claim(contact_id, f, order) {
                continue;
            }
            if let Some(kind) = key_of(f) {
                let value = key_value(rec, kind);
                match keys.assign(contact_id, kind, value) {
                    Ok(Some(moved)) => update.keys.push(moved),
                    Ok(None) => {}
                    Err(other) => update.conflicts.push(Conflict {
                        record,
                        contacts: vec![contact_id, other],
                        cause: ConflictCause::KeyTaken(kind),
                    }),
                }
                if kind == KeyKind::Phone {
                    phone_valid = value.is_some();
                }
            }
            set_field(&mut contact.fields, f, v);
            names::follow(&mut contact.fields, f);
        }
        if let Some(tags) = &rec.tags {
            let (added, removed) = tag_changes(snapshot_tags.as_ref(), tags, None);
            for tag in added {
                if contact.tags.insert(&tag) {
                    update.tags_add.push(tag);
                }
            }
            for tag in removed {
                if contact.tags.remove(&tag) {
                    update.tags_remove.push(tag);
                }
            }
        }
        if contact.fields != before || phone_valid != contact.phone_valid {
            contact.phone_valid = phone_valid;
            update.write = ContactWrite::Fields {
                fields: contact.fields.clone(),
                phone_valid,
            };
        } else if !update.tags_add.is_empty() || !update.tags_remove.is_empty() {
            update.write = ContactWrite::Bump;
        }
    }
    for (k, v) in &rec.fields {
        snapshot.insert(k.clone(), v.clone());
    }
    update.snapshot = snapshot;
    update
}

#[allow(clippy::too_many_arguments)]
fn match_existing(
    by: Option<MatchedBy>,
    record: usize,
    rec: &NormalizedRecord,
    contact_id: ContactId,
    contact: Option<&mut HeldContact>,
    keys: &mut KeyOwners,
    adopt: Option<i64>,
    shared: &[KeyKind],
) -> Matched {
    let pins: Vec<String> = shared.iter().map(|k| key_field(*k).to_owned()).collect();
    let mut matched = Matched {
        record,
        contact: contact_id,
        write: None,
        keys: Vec::new(),
        tags: Vec::new(),
        adopt,
        pins,
        by,
    };
    let Some(golden) = contact else {
        return matched;
    };
    // A newly linked record only fills the contact's gaps; the values the contact already
    // has are then pushed to this provider.
    let mut phone_valid = golden.phone_valid;
    for (k, v) in &rec.fields {
        if !v.is_empty() && !golden.fields.contains_key(k) && !matched.pins.contains(k) {
            golden.fields.insert(k.clone(), v.clone());
            if k == field::PHONE {
                phone_valid = rec.keys.phone.is_some();
            }
        }
    }
    names::complete(&mut golden.fields);
    golden.phone_valid = phone_valid;
    matched.write = Some((golden.fields.clone(), phone_valid));
    for (kind, value) in rec.keys.iter() {
        if keys.get(kind, value).is_none() && !shared.contains(&kind) {
            keys.insert(kind, value, contact_id);
            matched.keys.push((kind, value.to_owned()));
        }
    }
    if let Some(tags) = &rec.tags {
        for tag in tags.names() {
            if golden.tags.insert(tag) {
                matched.tags.push(tag.to_owned());
            }
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::matching::Keys;
    use crate::domain::merge::content_hash;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn tags(names: &[&str]) -> Tags {
        names.iter().collect()
    }

    /// A normalised record; phone and email values are taken as valid keys.
    fn record(
        remote_id: &str,
        pairs: &[(&str, &str)],
        tag_names: Option<&[&str]>,
    ) -> NormalizedRecord {
        let fields = fields(pairs);
        let key = |f: &str| fields.get(f).filter(|v| !v.is_empty()).cloned();
        let tags = tag_names.map(tags);
        NormalizedRecord {
            remote_id: remote_id.into(),
            keys: Keys {
                source_id: key(field::SOURCE_ID),
                phone: key(field::PHONE),
                email: key(field::EMAIL),
                phone_variants: Vec::new(),
            },
            hash: content_hash(&fields, tags.as_ref()),
            fields,
            tags,
        }
    }

    fn linked(
        id: i64,
        contact: ContactId,
        snapshot: &[(&str, &str)],
        tag_names: Option<&[&str]>,
    ) -> HeldRecord {
        HeldRecord::Linked(HeldLink {
            id,
            contact,
            active: true,
            snapshot: fields(snapshot),
            tags: tag_names.map(tags),
            pins: Vec::new(),
        })
    }

    fn contact(pairs: &[(&str, &str)], tag_names: &[&str]) -> HeldContact {
        HeldContact {
            fields: fields(pairs),
            phone_valid: pairs.iter().any(|(k, _)| *k == field::PHONE),
            tags: tags(tag_names),
        }
    }

    fn update(merge: &PageMerge, i: usize) -> &LinkUpdate {
        match &merge.steps[i] {
            Step::Update(u) => u,
            other => panic!("step {i} is not an update: {other:?}"),
        }
    }

    /// One linked record of contact 7 (link 70) merged by provider `order`.
    fn merge_one(
        rec: &NormalizedRecord,
        snapshot: &[(&str, &str)],
        golden: HeldContact,
        owners: &mut FieldOwners,
        order: usize,
    ) -> LinkUpdate {
        let held = Held {
            records: vec![linked(70, 7, snapshot, None)],
            contacts: HashMap::from([(7, golden)]),
            ..Held::default()
        };
        let merge = merge_page(std::slice::from_ref(rec), held, owners, order);
        update(&merge, 0).clone()
    }

    #[test]
    fn a_field_the_provider_never_had_is_not_a_change() {
        let golden = contact(&[("name", "Ana"), ("email", "ana@x.io")], &[]);
        // The provider holds no email (absent), then an empty one it never had set.
        for rec in [
            record("1", &[("name", "Ana")], None),
            record("1", &[("name", "Ana"), ("email", "")], None),
        ] {
            let u = merge_one(
                &rec,
                &[("name", "Ana")],
                golden.clone(),
                &mut FieldOwners::default(),
                0,
            );
            assert_eq!(u.write, ContactWrite::Unchanged);
            assert!(u.keys.is_empty());
            assert!(!u.contact_changed());
            assert_eq!(
                u.snapshot, rec.fields,
                "the snapshot still records what was shown"
            );
        }
    }

    #[test]
    fn set_to_empty_is_a_change() {
        let golden = contact(&[("name", "Ana"), ("email", "ana@x.io")], &[]);
        let rec = record("1", &[("name", "Ana"), ("email", "")], None);
        let u = merge_one(
            &rec,
            &[("name", "Ana"), ("email", "ana@x.io")],
            golden,
            &mut FieldOwners::default(),
            0,
        );
        assert_eq!(
            u.write,
            ContactWrite::Fields {
                fields: fields(&[("name", "Ana")]),
                phone_valid: false
            }
        );
        assert_eq!(
            u.keys,
            vec![KeyMove {
                kind: KeyKind::Email,
                value: None
            }]
        );
    }

    #[test]
    fn a_changed_name_side_re_derives_the_other() {
        let golden = contact(
            &[
                ("name", "Ana Bel"),
                ("first_name", "Ana"),
                ("last_name", "Bel"),
            ],
            &[],
        );
        let rec = record("1", &[("first_name", "Eva"), ("last_name", "Bel")], None);
        let u = merge_one(
            &rec,
            &[("first_name", "Ana"), ("last_name", "Bel")],
            golden,
            &mut FieldOwners::default(),
            0,
        );
        assert_eq!(
            u.write,
            ContactWrite::Fields {
                fields: fields(&[
                    ("name", "Eva Bel"),
                    ("first_name", "Eva"),
                    ("last_name", "Bel")
                ]),
                phone_valid: false
            }
        );
    }

    #[test]
    fn two_providers_changing_one_field_in_one_cycle_resolve_by_config_order() {
        let golden = || contact(&[("name", "Ana")], &[]);
        let snapshot = [("name", "Ana")];
        let first = record("1", &[("name", "Ana First")], None);
        let second = record("1", &[("name", "Ana Second")], None);
        let name_of = |u: &LinkUpdate| match &u.write {
            ContactWrite::Fields { fields, .. } => fields.get("name").cloned(),
            _ => None,
        };

        // The second provider in config order pulls first; the first still wins.
        let mut owners = FieldOwners::default();
        let u = merge_one(&second, &snapshot, golden(), &mut owners, 1);
        assert_eq!(name_of(&u).as_deref(), Some("Ana Second"));
        let u = merge_one(&first, &snapshot, golden(), &mut owners, 0);
        assert_eq!(name_of(&u).as_deref(), Some("Ana First"));

        // The first pulls first: the second's change of that field is not applied.
        let mut owners = FieldOwners::default();
        merge_one(&first, &snapshot, golden(), &mut owners, 0);
        let u = merge_one(&second, &snapshot, golden(), &mut owners, 1);
        assert_eq!(u.write, ContactWrite::Unchanged);
        assert_eq!(
            u.snapshot["name"], "Ana Second",
            "the link still records what its provider shows"
        );

        // Other fields and other contacts are not held by the claim.
        let email = record("1", &[("name", "Ana Second"), ("email", "a@x.io")], None);
        let u = merge_one(&email, &snapshot, golden(), &mut owners, 1);
        assert!(
            matches!(u.write, ContactWrite::Fields { ref fields, .. } if fields["email"] == "a@x.io" && fields["name"] == "Ana")
        );
    }

    #[test]
    fn keys_pointing_at_two_contacts_are_a_conflict_and_nothing_is_merged() {
        let rec = record(
            "9",
            &[
                ("name", "Ana"),
                ("phone", "+34612345678"),
                ("email", "a@x.io"),
            ],
            Some(&["vip"]),
        );
        let mut keys = KeyOwners::default();
        keys.insert(KeyKind::Phone, "+34612345678", 1);
        keys.insert(KeyKind::Email, "a@x.io", 2);
        let held = Held {
            records: vec![HeldRecord::Unlinked],
            contacts: HashMap::from([(1, contact(&[], &[])), (2, contact(&[], &[]))]),
            keys,
            links_here: HashMap::new(),
            apart: Vec::new(),
            under_review: HashSet::new(),
        };
        let merge = merge_page(&[rec], held, &mut FieldOwners::default(), 0);
        assert_eq!(
            merge.steps,
            vec![Step::Conflict(Conflict {
                record: 0,
                contacts: vec![1, 2],
                cause: ConflictCause::Match(ConflictReason::Ambiguous),
            })]
        );
    }

    #[test]
    fn records_of_one_page_sharing_a_phone_are_one_new_person_and_a_duplicate_of_it() {
        // A family's one number, on two records of a first page: the record with the
        // smaller id becomes the person, the other is held as a second record of them.
        let phone = "+34612345678";
        let member = record(
            "b",
            &[("name", "Eva"), ("phone", phone), ("email", "e@x.io")],
            None,
        );
        let person = record(
            "a",
            &[("name", "Ana"), ("phone", phone), ("email", "a@x.io")],
            None,
        );
        let held = Held {
            records: vec![HeldRecord::Unlinked, HeldRecord::Unlinked],
            ..Held::default()
        };
        let merge = merge_page(&[member, person], held, &mut FieldOwners::default(), 0);
        assert!(matches!(&merge.steps[1], Step::Create(new) if new.record == 1));
        assert_eq!(merge.steps[0], Step::Duplicate { record: 0, of: 1 });
    }

    #[test]
    fn a_record_matched_by_key_fills_the_contacts_gaps_only() {
        let rec = record(
            "9",
            &[
                ("name", "Ana Bel"),
                ("phone", "+34612345678"),
                ("email", "a@x.io"),
            ],
            Some(&["vip", "new"]),
        );
        let mut keys = KeyOwners::default();
        keys.insert(KeyKind::Phone, "+34612345678", 1);
        let held = Held {
            records: vec![HeldRecord::Unlinked],
            contacts: HashMap::from([(
                1,
                contact(&[("name", "Ana"), ("phone", "+34612345678")], &["VIP"]),
            )]),
            keys,
            links_here: HashMap::from([(1, LinkHere::Creating(40))]),
            apart: Vec::new(),
            under_review: HashSet::new(),
        };
        let merge = merge_page(&[rec], held, &mut FieldOwners::default(), 0);
        assert_eq!(
            merge.steps,
            vec![Step::Match(Matched {
                record: 0,
                contact: 1,
                write: Some((
                    fields(&[
                        ("name", "Ana"),
                        ("first_name", "Ana"),
                        ("phone", "+34612345678"),
                        ("email", "a@x.io")
                    ]),
                    true
                )),
                keys: vec![(KeyKind::Email, "a@x.io".into())],
                tags: vec!["new".into()],
                adopt: Some(40),
                pins: Vec::new(),
                by: Some(MatchedBy::Phone),
            })]
        );
    }

    #[test]
    fn a_key_moved_by_a_linked_record_counts_when_matching_the_page() {
        // Contact 7 (linked here) takes a phone; a new record with that phone on the same
        // page finds contact 7, linked here already: the provider holds it twice.
        let phone = "+34612345678";
        let moved = record("1", &[("phone", phone)], None);
        let newcomer = record("2", &[("name", "Eva"), ("phone", phone)], None);
        let held = Held {
            records: vec![linked(70, 7, &[], None), HeldRecord::Unlinked],
            contacts: HashMap::from([(7, contact(&[], &[]))]),
            ..Held::default()
        };
        let merge = merge_page(&[moved, newcomer], held, &mut FieldOwners::default(), 0);
        assert_eq!(
            update(&merge, 0).keys,
            vec![KeyMove {
                kind: KeyKind::Phone,
                value: Some(phone.into())
            }]
        );
        assert_eq!(
            merge.steps[1],
            Step::Conflict(Conflict {
                record: 1,
                contacts: vec![7],
                cause: ConflictCause::Match(ConflictReason::DuplicateInProvider),
            })
        );
    }

    #[test]
    fn a_key_held_by_another_contact_stays_and_is_a_conflict() {
        let rec = record("1", &[("email", "b@x.io")], None);
        let mut keys = KeyOwners::default();
        keys.insert(KeyKind::Email, "b@x.io", 8);
        let held = Held {
            records: vec![linked(70, 7, &[("email", "a@x.io")], None)],
            contacts: HashMap::from([(7, contact(&[("email", "a@x.io")], &[]))]),
            keys,
            ..Held::default()
        };
        let merge = merge_page(&[rec], held, &mut FieldOwners::default(), 0);
        let u = update(&merge, 0);
        assert!(u.keys.is_empty());
        assert_eq!(
            u.conflicts,
            vec![Conflict {
                record: 0,
                contacts: vec![7, 8],
                cause: ConflictCause::KeyTaken(KeyKind::Email),
            }]
        );
        assert_eq!(
            u.write,
            ContactWrite::Fields {
                fields: fields(&[("email", "b@x.io")]),
                phone_valid: false
            },
            "the field still changes"
        );
    }

    #[test]
    fn tags_added_and_removed_in_the_provider_apply_to_the_contact() {
        let rec = record("1", &[("name", "Ana")], Some(&["b", "C"]));
        let held = Held {
            records: vec![linked(70, 7, &[("name", "Ana")], Some(&["a", "b"]))],
            contacts: HashMap::from([(7, contact(&[("name", "Ana")], &["A", "b", "x"]))]),
            ..Held::default()
        };
        let merge = merge_page(
            std::slice::from_ref(&rec),
            held,
            &mut FieldOwners::default(),
            0,
        );
        let u = update(&merge, 0);
        assert_eq!(u.tags_add, vec!["C"]);
        assert_eq!(u.tags_remove, vec!["a"]);
        assert_eq!(u.write, ContactWrite::Bump, "only tags changed");
        assert_eq!(u.snapshot_tags, rec.tags);

        // What the contact has already (or lacks already) is no change.
        let held = Held {
            records: vec![linked(70, 7, &[("name", "Ana")], Some(&["a", "b"]))],
            contacts: HashMap::from([(7, contact(&[("name", "Ana")], &["b", "c"]))]),
            ..Held::default()
        };
        let merge = merge_page(&[rec], held, &mut FieldOwners::default(), 0);
        assert_eq!(update(&merge, 0).write, ContactWrite::Unchanged);
    }

    #[test]
    fn unchanged_records_are_only_seen_and_new_ones_become_contacts() {
        let same = record("1", &[("name", "Ana")], None);
        let new = record(
            "2",
            &[("last_name", "Cruz"), ("email", "c@x.io"), ("phone", "")],
            Some(&["lead"]),
        );
        assert!(!needs_merge(true, same.hash, &same));
        assert!(
            needs_merge(false, same.hash, &same),
            "a gone link comes back"
        );
        let held = Held {
            records: vec![HeldRecord::Unchanged { link: 70 }, HeldRecord::Unlinked],
            ..Held::default()
        };
        let merge = merge_page(&[same, new], held, &mut FieldOwners::default(), 0);
        assert_eq!(
            merge.steps,
            vec![
                Step::Unchanged { link: 70 },
                Step::Create(NewContact {
                    record: 1,
                    fields: fields(&[("name", "Cruz"), ("last_name", "Cruz"), ("email", "c@x.io")]),
                    phone_valid: false,
                    keys: vec![(KeyKind::Email, "c@x.io".into())],
                    tags: vec!["lead".into()],
                }),
            ]
        );
    }

    #[test]
    fn only_changed_keys_are_read_for_a_linked_record() {
        let rec = record("1", &[("phone", "+34612345678"), ("email", "a@x.io")], None);
        let snapshot = fields(&[("phone", "+34612345678"), ("email", "old@x.io")]);
        assert_eq!(
            keys_to_read(&rec, &snapshot).collect::<Vec<_>>(),
            vec![(KeyKind::Email, "a@x.io")]
        );
    }
}
