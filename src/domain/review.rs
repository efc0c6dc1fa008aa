//! The review queue's rules, pure: what kinds of item there are, how a decision is
//! carried out on values (which person a record goes to, how two people's fields become
//! one, which values a provider keeps), and how a "different people" decision keeps
//! applying to later records ([`filter_hits`]).
//!
//! Nothing is merged silently: matching only ever links a record to one person; two
//! people become one only through a `review merge` decision.

use super::matching::{ContactId, KeyKind, Keys};
use super::names;
use super::record::{Fields, field};

/// What an item asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A record's keys point at two (or more) people.
    AmbiguousMatch,
    /// One provider holds two records that match one person.
    DuplicateInProvider,
    /// The provider refused a write because another of its records holds the key.
    Refused,
}

impl ItemKind {
    /// The store's and the JSON's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::AmbiguousMatch => "ambiguous_match",
            ItemKind::DuplicateInProvider => "duplicate_in_provider",
            ItemKind::Refused => "refused",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ambiguous_match" => Some(ItemKind::AmbiguousMatch),
            "duplicate_in_provider" => Some(ItemKind::DuplicateInProvider),
            "refused" => Some(ItemKind::Refused),
            _ => None,
        }
    }
}

/// A decision on an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// They are one person (`review merge`).
    Merge,
    /// They are different people (`review apart`).
    Apart,
}

impl Decision {
    /// The store's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Merge => "merge",
            Decision::Apart => "apart",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "merge" => Some(Decision::Merge),
            "apart" => Some(Decision::Apart),
            _ => None,
        }
    }
}

/// One "different people" decision: a record linked to `contact` shared `value` (a key of
/// `kind`) with `other`. That value never matches `other` when it comes with `contact`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApartRule {
    /// The person the record was linked to.
    pub contact: ContactId,
    /// The other person.
    pub other: ContactId,
    /// The key.
    pub kind: KeyKind,
    /// The shared value.
    pub value: String,
}

/// A record's key hits after the "different people" decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredHits {
    /// The hits left, in matching order.
    pub hits: Vec<(KeyKind, ContactId)>,
    /// The keys whose values belong to another person the record was kept apart from:
    /// not copied onto the record's person, and kept in the provider as it holds them.
    pub shared: Vec<KeyKind>,
}

/// Applies the "different people" decisions to the hits of one record (`hits` in
/// matching order, as [`crate::domain::matching::Candidate`] holds them):
///
/// - a hit on `other` through a value decided to be shared with a person the record also
///   hits is dropped;
/// - when the people left were all decided to be different people (by other values), the
///   record goes to the person its strongest key names, and the others' values are shared.
///
/// A record whose hits name people nobody decided about is left as it is (a new item).
pub fn filter_hits(
    keys: &Keys,
    hits: Vec<(KeyKind, ContactId)>,
    rules: &[ApartRule],
) -> FilteredHits {
    let people = |h: &[(KeyKind, ContactId)]| {
        let mut v: Vec<ContactId> = h.iter().map(|(_, c)| *c).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let all = people(&hits);
    if all.len() < 2 || rules.is_empty() {
        return FilteredHits {
            hits,
            shared: Vec::new(),
        };
    }
    let value_of = |kind: KeyKind| keys.iter().find(|(k, _)| *k == kind).map(|(_, v)| v);
    let mut shared = Vec::new();
    let mut kept: Vec<(KeyKind, ContactId)> = Vec::new();
    for &(kind, c) in &hits {
        let dropped = value_of(kind).is_some_and(|value| {
            rules.iter().any(|r| {
                r.other == c
                    && r.kind == kind
                    && r.value == value
                    && r.contact != c
                    && all.contains(&r.contact)
            })
        });
        if dropped {
            shared.push(kind);
        } else {
            kept.push((kind, c));
        }
    }
    if kept.is_empty() {
        return FilteredHits {
            hits,
            shared: Vec::new(),
        };
    }
    let left = people(&kept);
    let apart = |a: ContactId, b: ContactId| {
        rules
            .iter()
            .any(|r| (r.contact == a && r.other == b) || (r.contact == b && r.other == a))
    };
    let all_apart = left.len() >= 2
        && left
            .iter()
            .enumerate()
            .all(|(i, &a)| left[i + 1..].iter().all(|&b| apart(a, b)));
    if all_apart {
        let strongest = kept.iter().min_by_key(|(k, _)| *k).map(|(_, c)| *c);
        let (mine, others): (Vec<_>, Vec<_>) =
            kept.into_iter().partition(|(_, c)| Some(*c) == strongest);
        shared.extend(others.into_iter().map(|(k, _)| k));
        kept = mine;
    }
    shared.sort_unstable();
    shared.dedup();
    FilteredHits { hits: kept, shared }
}

/// The person a record goes to when nobody named one: the owner of its strongest key, in
/// the match order (source id, phone, email), among `candidates`.
pub fn strongest_owner(
    hits: &[(KeyKind, ContactId)],
    candidates: &[ContactId],
) -> Option<ContactId> {
    hits.iter()
        .filter(|(_, c)| candidates.contains(c))
        .min_by_key(|(k, _)| *k)
        .map(|(_, c)| *c)
}

/// The field of a match key.
pub fn key_field(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Phone => field::PHONE,
        KeyKind::Email => field::EMAIL,
        KeyKind::SourceId => field::SOURCE_ID,
    }
}

/// Two people become one: the survivor keeps its values; its empty fields are filled from
/// the other. Returns the merged fields and the other's values that were not kept (the
/// history a merge records, so nothing is lost).
pub fn merge_people(survivor: &Fields, other: &Fields) -> (Fields, Fields) {
    let mut merged = survivor.clone();
    let mut replaced = Fields::new();
    // The name sides follow each other: fill them as one.
    let has_name = [field::NAME, field::FIRST_NAME, field::LAST_NAME]
        .iter()
        .any(|f| survivor.get(*f).is_some_and(|v| !v.is_empty()));
    for (k, v) in other {
        if v.is_empty() {
            continue;
        }
        let name_side = matches!(
            k.as_str(),
            field::NAME | field::FIRST_NAME | field::LAST_NAME
        );
        match merged.get(k).filter(|m| !m.is_empty()) {
            Some(mine) if mine != v => {
                replaced.insert(k.clone(), v.clone());
            }
            Some(_) => {}
            None if name_side && has_name => {
                replaced.insert(k.clone(), v.clone());
            }
            None => {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    names::complete(&mut merged);
    (merged, replaced)
}

/// One field a merge decided: the value kept and who it came from, and the value of the
/// other side that was not kept (it stays in the item's history), if any.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldDecision {
    /// The field (the store's name).
    pub field: String,
    /// The value the person kept.
    pub kept: String,
    /// Who that value came from (`contact 3`, `PROVIDER:REMOTE_ID`).
    pub kept_from: String,
    /// The other side's value that was not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
    /// Who held the value not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_from: Option<String>,
}

/// What merging `other` (called `other_is`) into `survivor` (`survivor_is`) decides, field
/// by field, as [`merge_people`] does it: the fields filled from the other, and those
/// where both held different values (the survivor's kept, the other's dropped). Fields
/// both hold alike are left out.
pub fn field_decisions(
    survivor: &Fields,
    other: &Fields,
    survivor_is: &str,
    other_is: &str,
) -> Vec<FieldDecision> {
    let (merged, replaced) = merge_people(survivor, other);
    let mut out = Vec::new();
    for (k, v) in other {
        if v.is_empty() {
            continue;
        }
        if let Some(dropped) = replaced.get(k) {
            out.push(FieldDecision {
                field: k.clone(),
                kept: merged.get(k).cloned().unwrap_or_default(),
                kept_from: survivor_is.to_owned(),
                dropped: Some(dropped.clone()),
                dropped_from: Some(other_is.to_owned()),
            });
        } else if survivor.get(k).is_none_or(String::is_empty) && merged.get(k) == Some(v) {
            out.push(FieldDecision {
                field: k.clone(),
                kept: v.clone(),
                kept_from: other_is.to_owned(),
                dropped: None,
                dropped_from: None,
            });
        }
    }
    out
}

/// What a carried-out `review merge` decided (kept with the item, shown by `review show`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MergeRecord {
    /// The person kept.
    #[serde(default)]
    pub survivor: Option<ContactId>,
    /// The people folded into it.
    #[serde(default)]
    pub absorbed: Vec<ContactId>,
    /// Records of one provider merged into the survivor's record there
    /// (`PROVIDER:REMOTE_ID`).
    #[serde(default)]
    pub records: Vec<String>,
    /// Field by field: what was kept from whom, and what was not kept.
    #[serde(default)]
    pub fields: Vec<FieldDecision>,
}

/// Fills a person's empty fields from a record, except `skip` (values shared with
/// another person). Returns whether anything changed.
pub fn fill_gaps(person: &mut Fields, record: &Fields, skip: &[&str]) -> bool {
    let before = person.clone();
    for (k, v) in record {
        if v.is_empty() || skip.contains(&k.as_str()) {
            continue;
        }
        if person.get(k).is_none_or(String::is_empty) {
            person.insert(k.clone(), v.clone());
        }
    }
    names::complete(person);
    *person != before
}

/// The person as one provider should hold it when some of its fields are pinned there
/// (`review apart`): a pinned field keeps the value the provider holds (`snapshot`), so
/// it is never overwritten there.
pub fn hold_pinned(person: &mut Fields, snapshot: &Fields, pins: &[String]) {
    for f in pins {
        match snapshot.get(f).filter(|v| !v.is_empty()) {
            Some(v) => {
                person.insert(f.clone(), v.clone());
            }
            None => {
                person.remove(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(phone: Option<&str>, email: Option<&str>) -> Keys {
        Keys {
            source_id: None,
            phone: phone.map(Into::into),
            email: email.map(Into::into),
            phone_variants: Vec::new(),
        }
    }

    fn rule(contact: i64, other: i64, kind: KeyKind, value: &str) -> ApartRule {
        ApartRule {
            contact,
            other,
            kind,
            value: value.into(),
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn without_decisions_hits_stay() {
        let k = keys(Some("+1"), Some("b@x"));
        let hits = vec![(KeyKind::Phone, 1), (KeyKind::Email, 2)];
        let out = filter_hits(&k, hits.clone(), &[]);
        assert_eq!(out.hits, hits);
        assert!(out.shared.is_empty());
        // A decision about other people changes nothing.
        let out = filter_hits(&k, hits.clone(), &[rule(3, 4, KeyKind::Email, "b@x")]);
        assert_eq!(out.hits, hits);
    }

    #[test]
    fn a_shared_value_no_longer_matches_the_other_person() {
        // Apart: the record went to 1; its email was 2's.
        let k = keys(Some("+1"), Some("b@x"));
        let out = filter_hits(
            &k,
            vec![(KeyKind::Phone, 1), (KeyKind::Email, 2)],
            &[rule(1, 2, KeyKind::Email, "b@x")],
        );
        assert_eq!(out.hits, vec![(KeyKind::Phone, 1)]);
        assert_eq!(out.shared, vec![KeyKind::Email]);
    }

    #[test]
    fn a_family_phone_goes_with_the_decision_not_the_strongest_key() {
        // Apart, linked to 2 (the email's owner): the phone is the family's, held by 1.
        let k = keys(Some("+1"), Some("son@x"));
        let out = filter_hits(
            &k,
            vec![(KeyKind::Phone, 1), (KeyKind::Email, 2)],
            &[rule(2, 1, KeyKind::Phone, "+1")],
        );
        assert_eq!(out.hits, vec![(KeyKind::Email, 2)]);
        assert_eq!(out.shared, vec![KeyKind::Phone]);
    }

    #[test]
    fn people_kept_apart_by_other_values_go_to_the_strongest_key() {
        let k = keys(Some("+9"), Some("c@x"));
        let out = filter_hits(
            &k,
            vec![(KeyKind::Phone, 1), (KeyKind::Email, 2)],
            &[rule(1, 2, KeyKind::Email, "other@x")],
        );
        assert_eq!(out.hits, vec![(KeyKind::Phone, 1)]);
        assert_eq!(out.shared, vec![KeyKind::Email]);
    }

    #[test]
    fn a_third_person_keeps_it_an_item() {
        let k = Keys {
            source_id: Some("s".into()),
            phone: Some("+1".into()),
            email: Some("b@x".into()),
            phone_variants: Vec::new(),
        };
        let out = filter_hits(
            &k,
            vec![
                (KeyKind::SourceId, 3),
                (KeyKind::Phone, 1),
                (KeyKind::Email, 2),
            ],
            &[rule(1, 2, KeyKind::Email, "b@x")],
        );
        assert_eq!(out.hits, vec![(KeyKind::SourceId, 3), (KeyKind::Phone, 1)]);
    }

    #[test]
    fn merging_keeps_the_survivors_values_and_records_the_rest() {
        let (merged, replaced) = merge_people(
            &fields(&[("name", "Ana"), ("email", "ana@x")]),
            &fields(&[
                ("name", "Ana B"),
                ("email", "ana.b@x"),
                ("phone", "+1555"),
                ("attr.city", "Lima"),
            ]),
        );
        assert_eq!(merged["email"], "ana@x");
        assert_eq!(merged["phone"], "+1555");
        assert_eq!(merged["attr.city"], "Lima");
        assert_eq!(merged["name"], "Ana");
        assert_eq!(replaced["email"], "ana.b@x");
        assert_eq!(replaced["name"], "Ana B");
        assert!(!replaced.contains_key("phone"));
    }

    #[test]
    fn merge_decisions_say_what_was_kept_from_whom() {
        let d = field_decisions(
            &fields(&[("name", "Ana"), ("email", "ana@x")]),
            &fields(&[("email", "ana.b@x"), ("phone", "+1555"), ("name", "Ana")]),
            "contact 1",
            "contact 2",
        );
        assert_eq!(d.len(), 2, "{d:?}");
        let email = d.iter().find(|f| f.field == "email").unwrap();
        assert_eq!(email.kept, "ana@x");
        assert_eq!(email.kept_from, "contact 1");
        assert_eq!(email.dropped.as_deref(), Some("ana.b@x"));
        assert_eq!(email.dropped_from.as_deref(), Some("contact 2"));
        let phone = d.iter().find(|f| f.field == "phone").unwrap();
        assert_eq!(
            (phone.kept.as_str(), phone.kept_from.as_str()),
            ("+1555", "contact 2")
        );
        assert_eq!(phone.dropped, None);
    }

    #[test]
    fn pinned_fields_keep_the_providers_value() {
        let mut person = fields(&[("email", "ana@x"), ("name", "Ana")]);
        hold_pinned(
            &mut person,
            &fields(&[("email", "bruno@x")]),
            &["email".into()],
        );
        assert_eq!(person["email"], "bruno@x");
        let mut person = fields(&[("email", "ana@x")]);
        hold_pinned(&mut person, &Fields::new(), &["email".into()]);
        assert!(!person.contains_key("email"));
    }

    #[test]
    fn gaps_are_filled_except_shared_values() {
        let mut person = fields(&[("name", "Ana")]);
        assert!(fill_gaps(
            &mut person,
            &fields(&[("email", "b@x"), ("phone", "+1"), ("name", "Other")]),
            &["email"],
        ));
        assert_eq!(person.get("email"), None);
        assert_eq!(person["phone"], "+1");
        assert_eq!(person["name"], "Ana");
    }
}
