//! From what a provider shows to what changes in the golden record:
//! normalisation of a whole record, the content hash used to skip unchanged records, the
//! per-field change detection against the link snapshot, and ([`page`]) the merge of one
//! page into the golden records.

mod page;

pub use page::{
    Conflict, ConflictCause, ContactWrite, FieldOwners, Held, HeldContact, HeldLink, HeldRecord,
    KeyMove, KeyOwners, LinkHere, LinkUpdate, Matched, NewContact, PageMerge, Step, keys_to_read,
    merge_page, needs_merge,
};

use super::matching::Keys;
use super::normalize::{
    DefaultRegion, Email, Phone, normalize_email, normalize_phone, phone_variants,
};
use super::record::{Fields, RemoteRecord, Tags, field};
use std::hash::{Hash, Hasher};

/// A record after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedRecord {
    /// Provider id.
    pub remote_id: String,
    /// Normalised fields (held-but-empty fields are `""`).
    pub fields: Fields,
    /// Its valid match keys.
    pub keys: Keys,
    /// Tags, when the listing carried them.
    pub tags: Option<Tags>,
    /// Content hash of fields and tags: equal hash, nothing changed.
    pub hash: i64,
}

/// What a record found by a lookup (for a contact not yet linked in that provider) adds to
/// the contact: like a record a listing matches, it only fills the contact's gaps — the
/// fields the contact lacks, never one it has — and brings its tags. Returns the fields it
/// fills.
pub fn gaps_filled_by(contact: &Fields, found: &Fields) -> Fields {
    // The name is one value written in up to three fields: a contact with any of them
    // has a name, which a found record's other spelling of it must not complete.
    let names = [field::NAME, field::FIRST_NAME, field::LAST_NAME];
    let has_name = names
        .iter()
        .any(|n| contact.get(*n).is_some_and(|v| !v.is_empty()));
    found
        .iter()
        .filter(|(k, v)| !v.is_empty() && contact.get(*k).is_none_or(String::is_empty))
        .filter(|(k, _)| !(has_name && names.contains(&k.as_str())))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Normalises every field of a record: phones to E.164 (raw text kept if invalid),
/// emails lower-cased (raw kept if invalid), text trimmed.
pub fn normalize_record(record: &RemoteRecord, region: DefaultRegion) -> NormalizedRecord {
    let mut fields = Fields::new();
    let mut keys = Keys::default();
    for (k, v) in &record.fields {
        let value = match k.as_str() {
            field::PHONE => match normalize_phone(v, region) {
                Some(Phone::E164(e)) => {
                    keys.phone_variants = phone_variants(&e, region);
                    keys.phone = Some(e.clone());
                    e
                }
                Some(Phone::Invalid(raw)) => raw,
                None => String::new(),
            },
            field::EMAIL => match normalize_email(v) {
                Some(Email::Valid(e)) => {
                    keys.email = Some(e.clone());
                    e
                }
                Some(Email::Invalid(raw)) => raw,
                None => String::new(),
            },
            field::SOURCE_ID => {
                let s = v.trim().to_owned();
                if !s.is_empty() {
                    keys.source_id = Some(s.clone());
                }
                s
            }
            _ => v.trim().to_owned(),
        };
        fields.insert(k.clone(), value);
    }
    let hash = content_hash(&fields, record.tags.as_ref());
    NormalizedRecord {
        remote_id: record.remote_id.clone(),
        fields,
        keys,
        tags: record.tags.clone(),
        hash,
    }
}

/// A stable 63-bit hash of fields and tags (FNV-1a over a canonical encoding), so equal
/// content gives an equal hash across runs and builds.
pub fn content_hash(fields: &Fields, tags: Option<&Tags>) -> i64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for (k, v) in fields {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    match tags {
        Some(tags) => {
            1u8.hash(&mut h);
            for (key, _) in tags.entries() {
                key.hash(&mut h);
            }
        }
        None => 0u8.hash(&mut h),
    }
    (h.0 >> 1) as i64
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The fields a provider changed since its snapshot: present in `current` and different
/// from the snapshot. A field the provider never had (absent from `current`) is not a
/// change; a value going from set to empty is. Without a snapshot, every non-empty field
/// is new information.
pub fn changed_fields(snapshot: Option<&Fields>, current: &Fields) -> Fields {
    current
        .iter()
        .filter(|(k, v)| is_change(snapshot.and_then(|s| s.get(*k)), v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether a field the provider shows as `current` changed since the snapshot value `old`
/// (`None`: the snapshot lacks the field, so only a non-empty value is news).
fn is_change(old: Option<&String>, current: &str) -> bool {
    old.map_or(!current.is_empty(), |old| old != current)
}

/// Tag changes a provider made since its tag snapshot: `(added, removed)`. Without a
/// snapshot everything it shows is an addition and nothing is a removal. `universe`
/// limits removals to tags the provider could have shown (`None`: all).
pub fn tag_changes(
    snapshot: Option<&Tags>,
    current: &Tags,
    universe: Option<&Tags>,
) -> (Vec<String>, Vec<String>) {
    let empty = Tags::new();
    let snap = snapshot.unwrap_or(&empty);
    let added = current.difference(snap).map(str::to_owned).collect();
    let removed = if snapshot.is_some() {
        snap.difference(current)
            .filter(|t| universe.is_none_or(|u| u.contains(t)))
            .map(str::to_owned)
            .collect()
    } else {
        Vec::new()
    };
    (added, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_found_record_fills_only_the_gaps() {
        let contact: Fields = [("name", "Ana"), ("email", "")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Fields = [("name", "Ana Maria"), ("email", "ana@x.io"), ("city", "")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let filled = gaps_filled_by(&contact, &found);
        assert_eq!(filled.len(), 1, "{filled:?}");
        assert_eq!(filled.get("email").map(String::as_str), Some("ana@x.io"));
        // A contact named by its display name does not get the found first/last names.
        let found: Fields = [("first_name", "陳美玲"), ("last_name", "陳")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert!(gaps_filled_by(&contact, &found).is_empty());
        // A contact without any name takes the found one.
        assert_eq!(gaps_filled_by(&Fields::new(), &found).len(), 2);
    }

    #[test]
    fn only_present_and_different_fields_are_changes() {
        let snap = fields(&[
            ("name", "Ana"),
            ("email", "a@x.io"),
            ("phone", "+14155552671"),
        ]);
        let now = fields(&[("name", "Ana B"), ("email", "")]);
        assert_eq!(
            changed_fields(Some(&snap), &now),
            fields(&[("name", "Ana B"), ("email", "")])
        );
        assert_eq!(
            changed_fields(None, &fields(&[("name", ""), ("email", "a@x.io")])),
            fields(&[("email", "a@x.io")])
        );
    }

    #[test]
    fn normalised_records_carry_keys_and_a_stable_hash() {
        let record = RemoteRecord {
            remote_id: "1".into(),
            fields: fields(&[
                ("phone", "(415) 555-2671"),
                ("email", " Ana@X.io "),
                ("name", " Ana "),
            ]),
            tags: None,
        };
        let n = normalize_record(&record, DefaultRegion::default());
        assert_eq!(n.fields["phone"], "+14155552671");
        assert_eq!(n.keys.email.as_deref(), Some("ana@x.io"));
        assert_eq!(n.fields["name"], "Ana");
        assert_eq!(
            n.hash,
            normalize_record(&record, DefaultRegion::default()).hash
        );
        let mut other = record.clone();
        other.tags = Some(Tags::new());
        assert_ne!(
            n.hash,
            normalize_record(&other, DefaultRegion::default()).hash
        );
    }

    #[test]
    fn tag_removals_need_a_snapshot_and_the_universe() {
        let snap: Tags = ["a", "b", "c"].into_iter().collect();
        let now: Tags = ["a", "d"].into_iter().collect();
        let universe: Tags = ["a", "b", "d"].into_iter().collect();
        let (added, removed) = tag_changes(Some(&snap), &now, Some(&universe));
        assert_eq!(added, vec!["d"]);
        assert_eq!(removed, vec!["b"]);
        assert_eq!(tag_changes(None, &now, None).1, Vec::<String>::new());
    }
}
