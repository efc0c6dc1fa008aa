//! The journal's rules, pure: how a change is written down ([`Changes`]), how a journal
//! entry reads as history events ([`Entry::lines`]), and which values an undo of a run
//! puts back ([`plan_restore`]).
//!
//! A journal entry is one event on one person: a provider changed it (`changed_in`),
//! contact-sync wrote it to a provider (`sent_to`), two people became one (`merged`), a
//! provider's record was tied to it (`linked`), or a provider's record went away (`gone`).
//! Its `changes` map each field (the store's own names: `name`, `first_name`, `last_name`,
//! `email`, `phone`, `source_id`, `attr.<key>`, and `tags`) to `[old, new]`; `null` is
//! absent, and `tags` holds the old and new sets as lists of names.

use super::matching::KeyKind;
use super::normalize::{DefaultRegion, Phone, normalize_phone};
use super::record::{Fields, Tags, field, set_field, tag_key};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The field name of a tag set change.
pub const TAGS: &str = "tags";

/// What happened to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A provider changed it (or, without a provider, an undo did).
    ChangedIn,
    /// contact-sync wrote it to a provider.
    SentTo,
    /// Two people were merged into this one.
    Merged,
    /// A provider's record was tied to this person.
    Linked,
    /// A provider's record of this person went away.
    Gone,
}

impl EventKind {
    /// The stored spelling (also the JSON one).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ChangedIn => "changed_in",
            EventKind::SentTo => "sent_to",
            EventKind::Merged => "merged",
            EventKind::Linked => "linked",
            EventKind::Gone => "gone",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "changed_in" => EventKind::ChangedIn,
            "sent_to" => EventKind::SentTo,
            "merged" => EventKind::Merged,
            "linked" => EventKind::Linked,
            "gone" => EventKind::Gone,
            _ => return None,
        })
    }
}

/// Field → `[old, new]` (`null`: absent; `tags`: lists of names).
pub type Changes = BTreeMap<String, [Value; 2]>;

fn text(v: Option<&String>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.clone()))
}

fn tag_list(tags: &Tags) -> Value {
    Value::Array(tags.names().map(|n| Value::String(n.to_owned())).collect())
}

fn tags_of(v: &Value) -> Tags {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The changes of a golden record's fields from `before` to `after` (a field absent on
/// one side is `null` there).
pub fn field_changes(before: &Fields, after: &Fields) -> Changes {
    let mut out = Changes::new();
    for (k, v) in before {
        if after.get(k) != Some(v) {
            out.insert(k.clone(), [Value::String(v.clone()), text(after.get(k))]);
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            out.insert(k.clone(), [Value::Null, Value::String(v.clone())]);
        }
    }
    out
}

/// The fields a write changed in a provider's snapshot: each field of `sent` whose value
/// differs from what the snapshot `known` held (`null`: it held nothing known).
pub fn sent_changes(known: &Fields, sent: &Fields) -> Changes {
    sent.iter()
        .filter(|(k, v)| known.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), [text(known.get(k)), Value::String(v.clone())]))
        .collect()
}

/// Adds the change of a tag set (compared case-insensitively) to `changes`, if any.
pub fn add_tag_change(changes: &mut Changes, before: &Tags, after: &Tags) {
    let keys = |t: &Tags| t.entries().map(|(k, _)| k.to_owned()).collect::<Vec<_>>();
    if keys(before) != keys(after) {
        changes.insert(TAGS.to_owned(), [tag_list(before), tag_list(after)]);
    }
}

/// The changes of a person that did not exist: every field and tag is new.
pub fn created(fields: &Fields, tags: Option<&Tags>) -> Changes {
    let mut out = field_changes(&Fields::new(), fields);
    if let Some(tags) = tags.filter(|t| !t.is_empty()) {
        add_tag_change(&mut out, &Tags::new(), tags);
    }
    out
}

/// One journal entry as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its id (entries are in time order by id).
    pub id: i64,
    /// The person.
    pub contact: i64,
    /// The run it happened in.
    pub run: Option<i64>,
    /// Unix seconds.
    pub at: i64,
    /// The provider instance name (`None`: contact-sync itself, an undo).
    pub provider: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// `sent_to`: the operation; `linked`: `create` when the record became a new person.
    pub op: Option<String>,
    /// The provider's id of the record, when known.
    pub remote_id: Option<String>,
    /// `sent_to`: `None` when it went through, else why not.
    pub outcome: Option<String>,
    /// Field → `[old, new]`.
    pub changes: Changes,
}

/// One line of a person's history (what `history --json` prints per event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Its kind.
    pub kind: EventKind,
    /// The field (`None`: the event concerns the record, e.g. a link).
    pub field: Option<String>,
    /// The value before.
    pub old: Value,
    /// The value after.
    pub new: Value,
}

impl Entry {
    /// The entry as history lines: one per field changed; a link, a record gone or a
    /// delete sent is one line without a field, with the provider's record id; a merge
    /// is one line without a field from the absorbed to the surviving id (contact ids,
    /// or record ids when the entry has a provider), then its field changes.
    pub fn lines(&self) -> Vec<Line> {
        let remote = text(self.remote_id.as_ref());
        let mut out = Vec::new();
        match self.kind {
            EventKind::Linked => out.push(Line {
                kind: self.kind,
                field: None,
                old: Value::Null,
                new: remote,
            }),
            EventKind::Gone => out.push(Line {
                kind: self.kind,
                field: None,
                old: remote,
                new: Value::Null,
            }),
            // A merge names who went into whom (`op`: "7 into 3"; people by contact id,
            // records of a provider by their id there).
            EventKind::Merged if self.op.as_deref().is_some_and(|op| op.contains(" into ")) => {
                let (from, into) = self
                    .op
                    .as_deref()
                    .and_then(|op| op.split_once(" into "))
                    .unwrap_or_default();
                let id = |s: &str| match (&self.provider, s.parse::<i64>()) {
                    (None, Ok(n)) => Value::from(n),
                    _ => Value::String(s.to_owned()),
                };
                out.push(Line {
                    kind: self.kind,
                    field: None,
                    old: id(from),
                    new: id(into),
                });
            }
            EventKind::SentTo | EventKind::Merged if self.changes.is_empty() => {
                out.push(Line {
                    kind: self.kind,
                    field: None,
                    old: remote,
                    new: Value::Null,
                });
            }
            _ => {}
        }
        for (f, [old, new]) in &self.changes {
            out.push(Line {
                kind: self.kind,
                field: Some(f.clone()),
                old: old.clone(),
                new: new.clone(),
            });
        }
        out
    }

    /// Whether this entry changed the golden record (what an undo looks at).
    fn changes_golden(&self) -> bool {
        matches!(
            self.kind,
            EventKind::ChangedIn | EventKind::Linked | EventKind::Merged
        )
    }
}

/// Who changed a field after the run being undone (or why it is left alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftBecause {
    /// A later run changed it: in this provider (`None`: an undo), at this time.
    ChangedLater {
        /// The provider instance (`None`: an undo).
        provider: Option<String>,
        /// The run.
        run: Option<i64>,
        /// Unix seconds.
        at: i64,
    },
    /// It differs from what the run left, and the journal does not say why (e.g. its
    /// history was pruned).
    DiffersNow,
    /// Another person holds that email, phone or source id now.
    KeyTaken,
}

/// A field (or tag) an undo leaves as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftAlone {
    /// The person.
    pub contact: i64,
    /// The field (`tags:<name>` for a tag).
    pub field: String,
    /// Why.
    pub because: LeftBecause,
}

/// What an undo does to one person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restore {
    /// The person.
    pub contact: i64,
    /// Its fields after the undo (`None`: no field is put back).
    pub fields: Option<Fields>,
    /// Whether its phone is valid E.164 afterwards.
    pub phone_valid: bool,
    /// Match keys to move, in order (`None`: the key is dropped).
    pub keys: Vec<(KeyKind, Option<String>)>,
    /// Tags to add back.
    pub tags_add: Vec<String>,
    /// Tags to remove.
    pub tags_remove: Vec<String>,
    /// What changes, for the journal.
    pub changes: Changes,
    /// What is left alone, and why.
    pub left: Vec<LeftAlone>,
}

impl Restore {
    /// Whether the undo changes this person.
    pub fn changes_anything(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// One person a run changed, as the undo needs it.
#[derive(Debug, Clone, Default)]
pub struct UndoSubject {
    /// The person.
    pub contact: i64,
    /// Its fields now (empty ones absent).
    pub fields: Fields,
    /// Whether its phone is valid E.164 now.
    pub phone_valid: bool,
    /// Its tags now.
    pub tags: Tags,
    /// The run's entries changing it (`changed_in`), in order.
    pub in_run: Vec<Entry>,
    /// Entries of later runs changing it (`changed_in`, `linked`, `merged`), in order.
    pub later: Vec<Entry>,
    /// Who holds each match key value the undo would put back (`(kind, value)` → person),
    /// for the values someone holds.
    pub key_owners: HashMap<(KeyKind, String), i64>,
}

/// The match key of a field.
pub fn key_of(name: &str) -> Option<KeyKind> {
    match name {
        field::PHONE => Some(KeyKind::Phone),
        field::EMAIL => Some(KeyKind::Email),
        field::SOURCE_ID => Some(KeyKind::SourceId),
        _ => None,
    }
}

/// The match key values an undo of `in_run` could put back (the store looks their owners
/// up for [`UndoSubject::key_owners`]).
pub fn keys_to_restore(in_run: &[Entry]) -> Vec<(KeyKind, String)> {
    let mut out = Vec::new();
    for e in in_run {
        for (f, [old, _]) in &e.changes {
            if let (Some(kind), Some(v)) = (key_of(f), old.as_str()) {
                out.push((kind, v.to_owned()));
            }
        }
    }
    out
}

/// What undoing a run does to one person: each field the run changed goes back to its
/// value before the run — unless a later run changed it (the newest such change is named),
/// it differs now from what the run left, or (a match key) another person holds the old
/// value now; each tag the run added is removed and each it removed is added back, unless
/// a later run added or removed that tag.
pub fn plan_restore(subject: &UndoSubject, region: DefaultRegion) -> Restore {
    let mut out = Restore {
        contact: subject.contact,
        phone_valid: subject.phone_valid,
        ..Restore::default()
    };
    // Per field: the value before the run (first old) and after it (last new).
    let mut span: BTreeMap<&str, (&Value, &Value)> = BTreeMap::new();
    for e in &subject.in_run {
        for (f, [old, new]) in &e.changes {
            span.entry(f.as_str())
                .and_modify(|s| s.1 = new)
                .or_insert((old, new));
        }
    }
    // The newest later change of each field, and of each tag (by key).
    let mut later: HashMap<String, &Entry> = HashMap::new();
    let mut later_tags: HashMap<String, &Entry> = HashMap::new();
    for e in subject.later.iter().filter(|e| e.changes_golden()) {
        for (f, [old, new]) in &e.changes {
            if f == TAGS {
                let (old, new) = (tags_of(old), tags_of(new));
                for t in old.difference(&new).chain(new.difference(&old)) {
                    if let Some(k) = tag_key(t) {
                        later_tags.insert(k, e);
                    }
                }
            } else {
                later.insert(f.clone(), e);
            }
        }
    }
    let because = |e: &Entry| LeftBecause::ChangedLater {
        provider: e.provider.clone(),
        run: e.run,
        at: e.at,
    };
    let mut fields = subject.fields.clone();
    for (f, (before, after)) in span {
        if f == TAGS {
            let (before, after) = (tags_of(before), tags_of(after));
            let mut tags_now = subject.tags.clone();
            let mut moved = false;
            for (adding, tag) in before
                .difference(&after)
                .map(|t| (true, t))
                .chain(after.difference(&before).map(|t| (false, t)))
            {
                let Some(k) = tag_key(tag) else { continue };
                if let Some(e) = later_tags.get(&k) {
                    out.left.push(LeftAlone {
                        contact: subject.contact,
                        field: format!("{TAGS}:{tag}"),
                        because: because(e),
                    });
                    continue;
                }
                if adding && tags_now.insert(tag) {
                    out.tags_add.push(tag.to_owned());
                    moved = true;
                } else if !adding && tags_now.remove(tag) {
                    out.tags_remove.push(tag.to_owned());
                    moved = true;
                }
            }
            if moved {
                add_tag_change(&mut out.changes, &subject.tags, &tags_now);
            }
            continue;
        }
        let left = |because| LeftAlone {
            contact: subject.contact,
            field: f.to_owned(),
            because,
        };
        if let Some(e) = later.get(f) {
            out.left.push(left(because(e)));
            continue;
        }
        let now = subject.fields.get(f);
        let after = after.as_str().filter(|s| !s.is_empty());
        if now.map(String::as_str) != after {
            out.left.push(left(LeftBecause::DiffersNow));
            continue;
        }
        let before = before.as_str().filter(|s| !s.is_empty());
        if now.map(String::as_str) == before {
            continue;
        }
        if let Some(kind) = key_of(f) {
            let valid_key = match kind {
                KeyKind::Phone => before
                    .and_then(|p| match normalize_phone(p, region) {
                        Some(Phone::E164(e)) if e == p => Some(e),
                        _ => None,
                    })
                    .is_some(),
                KeyKind::Email => before.is_some_and(|e| e.contains('@')),
                KeyKind::SourceId => before.is_some(),
            };
            if let Some(v) = before.filter(|_| valid_key)
                && subject
                    .key_owners
                    .get(&(kind, v.to_owned()))
                    .is_some_and(|&owner| owner != subject.contact)
            {
                out.left.push(left(LeftBecause::KeyTaken));
                continue;
            }
            out.keys
                .push((kind, before.filter(|_| valid_key).map(str::to_owned)));
            if kind == KeyKind::Phone {
                out.phone_valid = valid_key;
            }
        }
        set_field(&mut fields, f, before.unwrap_or_default());
    }
    if fields != subject.fields {
        let tags = out.changes.remove(TAGS);
        out.changes = field_changes(&subject.fields, &fields);
        if let Some(t) = tags {
            out.changes.insert(TAGS.to_owned(), t);
        }
        out.fields = Some(fields);
    }
    out
}

/// People a run created in providers, as `(provider, person)` pairs in entry order: its
/// `sent_to` creates that went through.
pub fn created_by(entries: &[Entry]) -> Vec<(String, i64)> {
    let mut seen = HashSet::new();
    entries
        .iter()
        .filter(|e| {
            e.kind == EventKind::SentTo && e.op.as_deref() == Some("create") && e.outcome.is_none()
        })
        .filter_map(|e| e.provider.clone().map(|p| (p, e.contact)))
        .filter(|pair| seen.insert(pair.clone()))
        .collect()
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

    fn entry(id: i64, run: i64, provider: &str, changes: Changes) -> Entry {
        Entry {
            id,
            contact: 7,
            run: Some(run),
            at: 1_000 + id,
            provider: Some(provider.to_owned()),
            kind: EventKind::ChangedIn,
            op: None,
            remote_id: None,
            outcome: None,
            changes,
        }
    }

    fn renamed(from: &str, to: &str) -> Changes {
        field_changes(&fields(&[("name", from)]), &fields(&[("name", to)]))
    }

    #[test]
    fn changes_name_absent_fields_null_and_tags_as_sets() {
        let c = field_changes(
            &fields(&[("name", "Ana"), ("email", "a@x.io")]),
            &fields(&[("name", "Ana B"), ("phone", "+14155552671")]),
        );
        assert_eq!(c["name"], [Value::from("Ana"), Value::from("Ana B")]);
        assert_eq!(c["email"], [Value::from("a@x.io"), Value::Null]);
        assert_eq!(c["phone"], [Value::Null, Value::from("+14155552671")]);
        let mut c = Changes::new();
        add_tag_change(
            &mut c,
            &["vip"].into_iter().collect(),
            &["VIP"].into_iter().collect(),
        );
        assert!(c.is_empty(), "tags compare case-insensitively");
        add_tag_change(
            &mut c,
            &["vip"].into_iter().collect(),
            &["vip", "lead"].into_iter().collect(),
        );
        assert_eq!(c["tags"][1], serde_json::json!(["lead", "vip"]));
        let sent = sent_changes(
            &fields(&[("name", "Ana"), ("phone", "+1")]),
            &fields(&[("name", "Ana B"), ("phone", "+1")]),
        );
        assert_eq!(sent.keys().collect::<Vec<_>>(), ["name"]);
    }

    #[test]
    fn an_undo_puts_back_what_the_run_changed_and_names_who_changed_a_field_since() {
        let mut subject = UndoSubject {
            contact: 7,
            fields: fields(&[("name", "Ana B"), ("email", "c@x.io")]),
            in_run: vec![
                entry(1, 5, "support", renamed("Ana", "Ana B")),
                entry(
                    2,
                    5,
                    "support",
                    field_changes(
                        &fields(&[("email", "a@x.io")]),
                        &fields(&[("email", "b@x.io")]),
                    ),
                ),
            ],
            later: vec![entry(
                9,
                6,
                "sales-bot",
                field_changes(
                    &fields(&[("email", "b@x.io")]),
                    &fields(&[("email", "c@x.io")]),
                ),
            )],
            ..UndoSubject::default()
        };
        let r = plan_restore(&subject, DefaultRegion::default());
        assert_eq!(
            r.fields,
            Some(fields(&[("name", "Ana"), ("email", "c@x.io")]))
        );
        assert_eq!(r.changes.keys().collect::<Vec<_>>(), ["name"]);
        assert_eq!(
            r.left,
            vec![LeftAlone {
                contact: 7,
                field: "email".into(),
                because: LeftBecause::ChangedLater {
                    provider: Some("sales-bot".into()),
                    run: Some(6),
                    at: 1_009
                }
            }]
        );
        // Nothing later, but the value differs from what the run left: left alone.
        subject.later.clear();
        subject.fields.insert("name".into(), "Someone".into());
        let r = plan_restore(&subject, DefaultRegion::default());
        assert!(
            r.left
                .iter()
                .any(|l| l.field == "name" && l.because == LeftBecause::DiffersNow)
        );
        // The email goes back, and its key with it.
        subject.fields.insert("email".into(), "b@x.io".into());
        let r = plan_restore(&subject, DefaultRegion::default());
        assert_eq!(r.keys, vec![(KeyKind::Email, Some("a@x.io".into()))]);
        // Unless another person holds it now.
        subject
            .key_owners
            .insert((KeyKind::Email, "a@x.io".into()), 8);
        let r = plan_restore(&subject, DefaultRegion::default());
        assert!(r.keys.is_empty());
        assert!(
            r.left
                .iter()
                .any(|l| l.field == "email" && l.because == LeftBecause::KeyTaken)
        );
    }

    #[test]
    fn an_undo_adds_back_removed_tags_and_removes_added_ones_unless_touched_since() {
        let tags = |names: &[&str]| -> Tags { names.iter().collect() };
        let mut run = Changes::new();
        add_tag_change(&mut run, &tags(&["a", "b"]), &tags(&["b", "c", "d"]));
        let mut since = Changes::new();
        add_tag_change(&mut since, &tags(&["b", "c", "d"]), &tags(&["b", "c"]));
        let subject = UndoSubject {
            contact: 7,
            tags: tags(&["b", "c"]),
            in_run: vec![entry(1, 5, "support", run)],
            later: vec![entry(2, 6, "whatsapp", since)],
            ..UndoSubject::default()
        };
        let r = plan_restore(&subject, DefaultRegion::default());
        assert_eq!(r.tags_add, vec!["a"]);
        assert_eq!(r.tags_remove, vec!["c"]);
        assert_eq!(r.left.len(), 1);
        assert_eq!(r.left[0].field, "tags:d");
        assert_eq!(r.changes["tags"][1], serde_json::json!(["a", "b"]));
        assert!(r.fields.is_none());
    }

    #[test]
    fn an_undo_of_an_undo_restores_what_the_undo_replaced() {
        let subject = UndoSubject {
            contact: 7,
            fields: fields(&[("name", "Ana")]),
            in_run: vec![Entry {
                provider: None,
                ..entry(3, 8, "-", renamed("Ana B", "Ana"))
            }],
            ..UndoSubject::default()
        };
        let r = plan_restore(&subject, DefaultRegion::default());
        assert_eq!(r.fields, Some(fields(&[("name", "Ana B")])));
    }

    #[test]
    fn entries_read_as_history_lines() {
        let linked = Entry {
            kind: EventKind::Linked,
            remote_id: Some("42".into()),
            op: Some("create".into()),
            ..entry(1, 1, "support", created(&fields(&[("name", "Ana")]), None))
        };
        let lines = linked.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].field.as_deref(), &lines[0].new),
            (None, &Value::from("42"))
        );
        assert_eq!(lines[1].field.as_deref(), Some("name"));
        let sent = Entry {
            kind: EventKind::SentTo,
            op: Some("create".into()),
            ..entry(2, 1, "sales-bot", Changes::new())
        };
        assert_eq!(
            created_by(&[linked, sent.clone(), sent]),
            vec![("sales-bot".into(), 7)]
        );
    }
}
