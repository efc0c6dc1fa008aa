//! Matching of unlinked records to golden records, as a pure function over
//! one batch: existing link → source id → phone → email.
//!
//! Records of one batch (one page of one provider) that share a key value are the same
//! person; the whole group resolves together, so the outcome does not depend on the order
//! of the records in the batch:
//!
//! - the group's keys point at no contact → one new contact;
//! - at exactly one contact → linked to it (unless that contact is already linked in this
//!   provider: then the provider holds the person twice → conflict; or another of the
//!   group's keys is held by a record under review that no contact holds: then linking
//!   would decide that item → conflict);
//! - at two or more contacts → conflict: kept apart, never merged silently.
//!
//! Only one record per group can be linked (a provider holds a person once); the others
//! become "duplicate in provider" conflicts. The one kept is the record with direct key
//! hits of the most kinds (a family member sharing only the phone is not the person
//! whose phone and email both agree), then the smallest remote id; in a group that names nobody yet, the record with the
//! smallest remote id, and the others are duplicates of the person it becomes.

use std::collections::{BTreeMap, BTreeSet};

/// A golden record's id in the store.
pub type ContactId = i64;

/// The kinds of match key, in matching order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// External key.
    SourceId,
    /// E.164 phone.
    Phone,
    /// Lower-cased email.
    Email,
}

impl KeyKind {
    /// The store's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::SourceId => "source_id",
            KeyKind::Phone => "phone",
            KeyKind::Email => "email",
        }
    }
}

/// Which key linked a record to an existing person (the first-run match report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// Its source id.
    SourceId,
    /// Its phone, as written.
    Phone,
    /// Another WhatsApp form of its phone.
    PhoneVariant,
    /// Its email.
    Email,
}

/// How many records were linked to an existing person, by key (`--dry-run` report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MatchCounts {
    /// By source id.
    pub source_id: u64,
    /// By phone.
    pub phone: u64,
    /// By email.
    pub email: u64,
    /// By a WhatsApp form of the phone.
    pub phone_variant: u64,
}

impl MatchCounts {
    /// Counts one match.
    pub fn add(&mut self, by: MatchedBy) {
        match by {
            MatchedBy::SourceId => self.source_id += 1,
            MatchedBy::Phone => self.phone += 1,
            MatchedBy::PhoneVariant => self.phone_variant += 1,
            MatchedBy::Email => self.email += 1,
        }
    }
}

impl std::ops::AddAssign for MatchCounts {
    fn add_assign(&mut self, o: Self) {
        self.source_id += o.source_id;
        self.phone += o.phone;
        self.email += o.email;
        self.phone_variant += o.phone_variant;
    }
}

/// The normalised keys of one record (only valid values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// External key.
    pub source_id: Option<String>,
    /// E.164 phone.
    pub phone: Option<String>,
    /// Lower-cased email.
    pub email: Option<String>,
    /// The phone's other forms (WhatsApp variants): extra phone keys of the same person.
    pub phone_variants: Vec<String>,
}

impl Keys {
    /// `(kind, value)` pairs in matching order (a phone's variants right after it).
    pub fn iter(&self) -> impl Iterator<Item = (KeyKind, &str)> {
        [
            (KeyKind::SourceId, self.source_id.as_deref()),
            (KeyKind::Phone, self.phone.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .chain(
            self.phone_variants
                .iter()
                .map(|v| (KeyKind::Phone, v.as_str())),
        )
        .chain(self.email.as_deref().map(|v| (KeyKind::Email, v)))
    }
}

/// One unlinked record of the batch, with what its keys point at in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidate {
    /// The provider's id of the record.
    pub remote_id: String,
    /// Its keys.
    pub keys: Keys,
    /// The contacts its keys point at: `(kind, contact)` in matching order.
    pub hits: Vec<(KeyKind, ContactId)>,
    /// Its keys that no contact holds but another record held for review does (an open
    /// `ambiguous_match` or `duplicate_in_provider` item): they name someone not decided
    /// yet.
    pub held_for_review: Vec<KeyKind>,
}

/// What to do with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutcome {
    /// Link to an existing contact, found by this key.
    Existing {
        /// The contact.
        contact: ContactId,
        /// The key that found it (`None` when found through another record of the group).
        by: Option<KeyKind>,
    },
    /// Create a new contact for this record.
    New,
    /// Hold for review as a second record of the person the batch's record `remote_id`
    /// becomes (a new contact): the provider holds that person twice.
    DuplicateOf {
        /// The record of the batch that becomes the new contact.
        remote_id: String,
    },
    /// Hold for review; nothing is linked or merged.
    Conflict {
        /// The contacts involved (sorted), if any.
        contacts: Vec<ContactId>,
        /// Why.
        reason: ConflictReason,
    },
}

/// Why a record was held as a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    /// Its keys (or its group's) point at two or more different contacts.
    Ambiguous,
    /// The provider holds the same person more than once.
    DuplicateInProvider,
    /// Its keys point at one contact, and another of its keys at a record held for review
    /// that is not linked to that contact: linking it now would decide that item.
    HeldRecord,
}

impl ConflictReason {
    /// Human text.
    pub fn describe(self) -> &'static str {
        match self {
            ConflictReason::Ambiguous => {
                "its phone, email or source id belong to different contacts; not merged"
            }
            ConflictReason::DuplicateInProvider => {
                "the provider holds this person more than once; only one record is linked"
            }
            ConflictReason::HeldRecord => {
                "one of its keys names a contact, another a record held for review; not linked until that item is decided"
            }
        }
    }
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Matches a batch. `linked_here(contact)` tells whether a contact already has a link in
/// this provider. Returns one outcome per candidate, in input order.
pub fn match_batch(
    candidates: &[Candidate],
    linked_here: &dyn Fn(ContactId) -> bool,
) -> Vec<MatchOutcome> {
    let n = candidates.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut first_with_key: BTreeMap<(KeyKind, &str), usize> = BTreeMap::new();
    // Records that find the same person by different keys (one by phone, one by email)
    // are one group too: two records of one provider naming one person are a duplicate
    // there, never two links to that person.
    let mut first_with_contact: BTreeMap<ContactId, usize> = BTreeMap::new();
    let union = |parent: &mut [usize], i: usize, j: usize| {
        let (a, b) = (find(parent, i), find(parent, j));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    };
    for (i, c) in candidates.iter().enumerate() {
        for key in c.keys.iter() {
            match first_with_key.get(&key) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    first_with_key.insert(key, i);
                }
            }
        }
        for &(_, contact) in &c.hits {
            match first_with_contact.get(&contact) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    first_with_contact.insert(contact, i);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    let mut out = vec![MatchOutcome::New; n];
    for members in groups.values() {
        let contacts: BTreeSet<ContactId> = members
            .iter()
            .flat_map(|&i| candidates[i].hits.iter().map(|(_, c)| *c))
            .collect();
        match contacts.len() {
            0 => {
                let keep = *members
                    .iter()
                    .min_by(|&&a, &&b| candidates[a].remote_id.cmp(&candidates[b].remote_id))
                    .unwrap_or(&members[0]);
                for &i in members {
                    out[i] = if i == keep {
                        MatchOutcome::New
                    } else {
                        MatchOutcome::DuplicateOf {
                            remote_id: candidates[keep].remote_id.clone(),
                        }
                    };
                }
            }
            1 if members
                .iter()
                .any(|&i| !candidates[i].held_for_review.is_empty())
                && !linked_here(*contacts.iter().next().unwrap_or(&0)) =>
            {
                // Another key names a record nobody has decided about yet (the family
                // member whose email is that record's): not linked, not merged. (When the
                // person is linked here already, the record is a duplicate, as below.)
                let contact = *contacts.iter().next().unwrap_or(&0);
                for &i in members {
                    out[i] = MatchOutcome::Conflict {
                        contacts: vec![contact],
                        reason: ConflictReason::HeldRecord,
                    };
                }
            }
            1 => {
                let contact = *contacts.iter().next().unwrap_or(&0);
                let taken = linked_here(contact);
                // The record more of the person's keys agree with is the person's (a
                // family member sharing only the phone is the duplicate); then the
                // smallest remote id.
                let agreeing = |i: usize| {
                    candidates[i]
                        .hits
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<BTreeSet<KeyKind>>()
                        .len()
                };
                let keep = members
                    .iter()
                    .copied()
                    .filter(|&i| !candidates[i].hits.is_empty())
                    .min_by(|&a, &b| {
                        agreeing(b)
                            .cmp(&agreeing(a))
                            .then_with(|| candidates[a].remote_id.cmp(&candidates[b].remote_id))
                    });
                for &i in members {
                    out[i] = if !taken && Some(i) == keep {
                        MatchOutcome::Existing {
                            contact,
                            by: candidates[i].hits.iter().map(|(k, _)| *k).min(),
                        }
                    } else {
                        MatchOutcome::Conflict {
                            contacts: vec![contact],
                            reason: ConflictReason::DuplicateInProvider,
                        }
                    };
                }
            }
            _ => {
                let all: Vec<ContactId> = contacts.into_iter().collect();
                for &i in members {
                    out[i] = MatchOutcome::Conflict {
                        contacts: all.clone(),
                        reason: ConflictReason::Ambiguous,
                    };
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(
        id: &str,
        phone: Option<&str>,
        email: Option<&str>,
        hits: &[(KeyKind, i64)],
    ) -> Candidate {
        Candidate {
            remote_id: id.into(),
            keys: Keys {
                source_id: None,
                phone: phone.map(Into::into),
                email: email.map(Into::into),
                phone_variants: Vec::new(),
            },
            hits: hits.to_vec(),
            held_for_review: Vec::new(),
        }
    }

    #[test]
    fn a_record_whose_other_key_names_a_record_held_for_review_is_held_too() {
        // MaiAgent held "b" (phone P, email E) as a second record of the person "a"
        // became (phone P, email K). A Chatwoot record with P and E finds that person by
        // phone, but its email is the held record's: it is held, not linked.
        let mut c = cand("c", Some("+1"), Some("e@x"), &[(KeyKind::Phone, 7)]);
        c.held_for_review = vec![KeyKind::Email];
        assert_eq!(
            match_batch(&[c.clone()], &|_| false),
            vec![MatchOutcome::Conflict {
                contacts: vec![7],
                reason: ConflictReason::HeldRecord
            }]
        );
        // A key of a record held for review alone names nobody: a new person.
        let mut d = cand("d", None, Some("e@x"), &[]);
        d.held_for_review = vec![KeyKind::Email];
        assert_eq!(match_batch(&[d], &|_| false), vec![MatchOutcome::New]);
        // A person the provider holds already: the record is a duplicate there, whatever
        // its other keys name.
        assert_eq!(
            match_batch(&[c.clone()], &|c| c == 7),
            vec![MatchOutcome::Conflict {
                contacts: vec![7],
                reason: ConflictReason::DuplicateInProvider
            }]
        );
        // Without it, the phone links.
        c.held_for_review.clear();
        assert!(matches!(
            match_batch(&[c], &|_| false)[0],
            MatchOutcome::Existing { contact: 7, .. }
        ));
    }

    #[test]
    fn of_two_records_sharing_a_phone_the_one_whose_email_agrees_too_is_the_person() {
        // "a" is a family member sharing only the phone; "b" is the person (phone and
        // email). The smaller remote id must not win over the agreeing keys, in either
        // order of the batch.
        let family = cand(
            "a",
            Some("+15550001"),
            Some("kid@x"),
            &[(KeyKind::Phone, 7)],
        );
        let person = cand(
            "b",
            Some("+15550001"),
            Some("ana@x"),
            &[(KeyKind::Phone, 7), (KeyKind::Email, 7)],
        );
        for batch in [
            vec![family.clone(), person.clone()],
            vec![person.clone(), family.clone()],
        ] {
            let out = match_batch(&batch, &|_| false);
            for (c, o) in batch.iter().zip(&out) {
                if c.remote_id == "b" {
                    assert!(
                        matches!(o, MatchOutcome::Existing { contact: 7, .. }),
                        "{o:?}"
                    );
                } else {
                    assert_eq!(
                        o,
                        &MatchOutcome::Conflict {
                            contacts: vec![7],
                            reason: ConflictReason::DuplicateInProvider
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn existing_key_links_and_order_of_keys_is_reported() {
        let out = match_batch(
            &[cand(
                "1",
                Some("+1"),
                Some("a@x"),
                &[(KeyKind::Email, 7), (KeyKind::Phone, 7)],
            )],
            &|_| false,
        );
        assert_eq!(
            out,
            vec![MatchOutcome::Existing {
                contact: 7,
                by: Some(KeyKind::Phone)
            }]
        );
    }

    #[test]
    fn keys_pointing_at_two_contacts_are_a_conflict() {
        let out = match_batch(
            &[cand(
                "1",
                Some("+1"),
                Some("a@x"),
                &[(KeyKind::Phone, 1), (KeyKind::Email, 2)],
            )],
            &|_| false,
        );
        assert_eq!(
            out,
            vec![MatchOutcome::Conflict {
                contacts: vec![1, 2],
                reason: ConflictReason::Ambiguous
            }]
        );
    }

    #[test]
    fn a_contact_already_linked_here_is_not_linked_twice() {
        let out = match_batch(
            &[cand("9", Some("+1"), None, &[(KeyKind::Phone, 3)])],
            &|c| c == 3,
        );
        assert!(matches!(
            out[0],
            MatchOutcome::Conflict {
                reason: ConflictReason::DuplicateInProvider,
                ..
            }
        ));
    }

    #[test]
    fn records_sharing_a_key_form_one_person() {
        let out = match_batch(
            &[
                cand("b", Some("+1"), None, &[]),
                cand("a", Some("+1"), Some("e@x"), &[]),
                cand("c", None, Some("e@x"), &[]),
            ],
            &|_| false,
        );
        assert_eq!(out[1], MatchOutcome::New);
        // The others are held as duplicates of the person "a" becomes.
        let of_a = MatchOutcome::DuplicateOf {
            remote_id: "a".into(),
        };
        assert_eq!(out[0], of_a);
        assert_eq!(out[2], of_a);
    }

    #[test]
    fn two_records_finding_one_person_by_different_keys_are_a_duplicate_not_two_links() {
        // "a" finds person 7 by phone, "b" finds the same person by email; the records
        // share no key. Linking both would give person 7 two records in one provider
        // (the store refuses that, and the page failed every cycle).
        let out = match_batch(
            &[
                cand("b", None, Some("e@x"), &[(KeyKind::Email, 7)]),
                cand("a", Some("+1"), None, &[(KeyKind::Phone, 7)]),
            ],
            &|_| false,
        );
        assert_eq!(
            out[1],
            MatchOutcome::Existing {
                contact: 7,
                by: Some(KeyKind::Phone)
            }
        );
        assert_eq!(
            out[0],
            MatchOutcome::Conflict {
                contacts: vec![7],
                reason: ConflictReason::DuplicateInProvider,
            }
        );
    }

    fn arb_candidate() -> impl Strategy<Value = Candidate> {
        (
            "[a-f]{1,3}",
            proptest::option::of(0u8..4),
            proptest::option::of(0u8..4),
            proptest::collection::vec((0u8..3, 1i64..4), 0..3),
            any::<bool>(),
        )
            .prop_map(|(id, phone, email, hits, held)| Candidate {
                remote_id: id,
                keys: Keys {
                    source_id: None,
                    phone: phone.map(|p| format!("+1{p}")),
                    email: email.map(|e| format!("{e}@x")),
                    phone_variants: Vec::new(),
                },
                hits: hits
                    .into_iter()
                    .map(|(k, c)| {
                        let kind =
                            [KeyKind::SourceId, KeyKind::Phone, KeyKind::Email][usize::from(k)];
                        (kind, c)
                    })
                    .collect(),
                held_for_review: if held {
                    vec![KeyKind::Email]
                } else {
                    Vec::new()
                },
            })
    }

    proptest! {
        #[test]
        fn matching_is_order_independent(
            batch in proptest::collection::vec(arb_candidate(), 0..8),
            seed in any::<u64>(),
        ) {
            // Remote ids are unique within one page of one provider.
            let mut batch = batch;
            for (i, c) in batch.iter_mut().enumerate() {
                c.remote_id = format!("{}-{i}", c.remote_id);
            }
            let linked = |c: ContactId| c == 3;
            let forward = match_batch(&batch, &linked);
            let mut order: Vec<usize> = (0..batch.len()).collect();
            // A deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let shuffled: Vec<Candidate> = order.iter().map(|&i| batch[i].clone()).collect();
            let result = match_batch(&shuffled, &linked);
            for (pos, &orig) in order.iter().enumerate() {
                prop_assert_eq!(&result[pos], &forward[orig]);
            }
        }

        #[test]
        fn a_person_gets_at_most_one_record_of_a_page(
            batch in proptest::collection::vec(arb_candidate(), 0..8),
        ) {
            let mut batch = batch;
            for (i, c) in batch.iter_mut().enumerate() {
                c.remote_id = format!("{}-{i}", c.remote_id);
            }
            let out = match_batch(&batch, &|c: ContactId| c == 3);
            let mut linked = BTreeSet::new();
            for o in &out {
                if let MatchOutcome::Existing { contact, .. } = o {
                    prop_assert!(linked.insert(*contact), "contact {} linked twice: {:?}", contact, out);
                    prop_assert_ne!(*contact, 3, "a contact already linked here was linked again");
                }
            }
        }
    }
}
