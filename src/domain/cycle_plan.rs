//! The cycle plan: every write one cycle will send, as one value.
//!
//! The planner ([`super::plan`]) turns changed contacts into intents, which the store
//! persists (the outbox). Before anything is sent, [`plan_provider`] turns a provider's
//! due intents — the ones planned this cycle and the retries queued by earlier cycles —
//! and each contact's current link into [`Step`]s: exactly the operations the executor
//! runs, each with the reason it exists. Whatever became moot (the record is linked
//! already, the tag is already there, a newer intent supersedes an older one) is a
//! [`Action::Skip`] step with its reason, so nothing is dropped silently and nothing is
//! decided at send time. `--dry-run` prints the same value ([`CyclePlan::render`]).

use super::plan::{FieldChange, LinkView, Operation};
use super::record::{Fields, Tags, field};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;

/// Everything one cycle will send, per provider instance, in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CyclePlan {
    /// One entry per push-enabled provider instance.
    pub providers: Vec<ProviderPlan>,
}

/// The steps of one provider instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderPlan {
    /// The instance name (`[[providers]] name`).
    pub provider: String,
    /// Its kind.
    pub kind: String,
    /// The steps, in the order they are sent (one contact's steps stay in order).
    pub steps: Vec<Step>,
}

/// One operation of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The persisted intent this step runs (its outcome is recorded there).
    pub intent_id: i64,
    /// The contact in the store.
    pub contact_id: i64,
    /// Who, for a human (display name, else email, else phone).
    pub who: String,
    /// Attempts made by earlier cycles (a queued retry has `attempts > 0`).
    pub attempts: i64,
    /// What to send.
    pub action: Action,
    /// Why.
    pub reason: String,
}

/// A key a lookup-only provider is searched by, in the order tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookupBy {
    /// The field (`phone`, `email`, `source_id`).
    pub field: String,
    /// Its normalised value.
    pub value: String,
}

/// What a step sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    /// Create the contact with these fields and tags (a provider that can be listed).
    /// A `creating` link is written first; if the answer is lost, the create is looked up
    /// before it is sent again.
    Create {
        /// Fields to send.
        fields: Fields,
        /// Tags to set.
        tags: Vec<String>,
        /// The contact as this provider would hold it, empty fields included: what a
        /// record found instead (an answer that was lost, a duplicate refused) is brought
        /// to, exactly as the planner would for a linked record.
        desired: Fields,
    },
    /// Look the contact up by `lookup` (in order); link the first record found and bring
    /// it to `fields` and `tags`; create it only when nothing is found (lookup-only
    /// providers, which cannot be listed, and a listable provider whose listing the cycle
    /// did not read: a targeted cycle).
    CreateUnlessFound {
        /// Keys to search by.
        lookup: Vec<LookupBy>,
        /// The key the create itself finds: a provider whose create answers the record
        /// that already holds this key (DM Champ, by phone) is not searched by it first.
        create_finds: Option<LookupBy>,
        /// Fields the contact should hold.
        fields: Fields,
        /// Tags it should carry.
        tags: Vec<String>,
        /// The contact as this provider would hold it, empty fields included (see
        /// [`Action::Create`]).
        desired: Fields,
    },
    /// Change fields (`""` clears).
    Update {
        /// Remote id.
        remote_id: String,
        /// field: old → new.
        changes: Vec<FieldChange>,
        /// The fields the write addresses the contact by (providers that address
        /// contacts by phone get the phone they hold).
        address: Fields,
        /// The tags the provider holds, as far as known.
        known_tags: Tags,
    },
    /// Add tags.
    TagAdd {
        /// Remote id.
        remote_id: String,
        /// Tags to add (none of them held yet, as far as known).
        tags: Vec<String>,
        /// Addressing fields (see [`Action::Update`]).
        address: Fields,
        /// The tags the provider holds, as far as known.
        known_tags: Tags,
    },
    /// Remove tags.
    TagRemove {
        /// Remote id.
        remote_id: String,
        /// Tags to remove (all held, as far as known).
        tags: Vec<String>,
        /// Addressing fields.
        address: Fields,
        /// The tags the provider holds, as far as known.
        known_tags: Tags,
    },
    /// Delete the contact (`propagate_deletes = true`).
    Delete {
        /// Remote id.
        remote_id: String,
    },
    /// Merge record `remote_id` into `into`, both records of this person in a provider
    /// that merges (a `review merge` decision; Chatwoot's merge action). Not an intent:
    /// its outcome is recorded on the merged record.
    Merge {
        /// The record that disappears.
        remote_id: String,
        /// The record that stays (the survivor's).
        into: String,
    },
    /// Nothing is sent; the intent is closed for `reason`.
    Skip {
        /// Why nothing is sent.
        why: String,
    },
}

impl Action {
    /// A short name (`create`, `create_unless_found`, `update`, `tag_add`, `tag_remove`,
    /// `delete`, `merge`, `skip`).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::CreateUnlessFound { .. } => "create_unless_found",
            Action::Update { .. } => "update",
            Action::TagAdd { .. } => "tag_add",
            Action::TagRemove { .. } => "tag_remove",
            Action::Delete { .. } => "delete",
            Action::Merge { .. } => "merge",
            Action::Skip { .. } => "skip",
        }
    }

    /// Whether the step sends anything.
    pub fn sends(&self) -> bool {
        !matches!(self, Action::Skip { .. })
    }
}

/// What planning needs to know of a provider to turn intents into steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepShape {
    /// It can be listed (a create there is plain; lookup-only providers search first).
    pub enumerate: bool,
    /// Its listing was not read in this cycle (a targeted cycle): a create there searches
    /// the contact's keys first too, since a record made after its last complete listing
    /// is known to nobody yet.
    pub unlisted: bool,
    /// The fields it can be searched by, in the order tried (`phone`, `email`,
    /// `source_id`).
    pub lookups: Vec<String>,
    /// The field whose existing holder a create answers instead of making a new record
    /// (DM Champ: `phone`): not searched before a create, the create finds it.
    pub create_finds: Option<String>,
    /// The phone of an existing contact can be changed (else writes address the contact
    /// by the phone the provider holds).
    pub phone_mutable: bool,
    /// The external key of an existing contact can be changed.
    pub source_id_mutable: bool,
}

/// One due intent with what the store holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueIntent {
    /// Intent id (ascending = planning order).
    pub intent_id: i64,
    /// Contact id.
    pub contact_id: i64,
    /// Who, for a human.
    pub who: String,
    /// Earlier attempts.
    pub attempts: i64,
    /// The planned write.
    pub op: Operation,
    /// The contact projected onto the provider when planned.
    pub projection: Fields,
    /// The contact's link in the provider now.
    pub link: LinkView,
    /// The open `refused` review item holding the contact back in this provider: nothing
    /// is sent for it there until the item is decided.
    pub held_by: Option<i64>,
}

/// Turns a provider's due intents into the steps the executor runs. Pure: the same
/// intents and links always give the same steps.
pub fn plan_provider(shape: &StepShape, intents: Vec<DueIntent>) -> Vec<Step> {
    // A newer intent of the same kind for the same contact supersedes an older one: it was
    // planned from the same contact against the same (unchanged) snapshot.
    let mut newest: HashMap<(i64, &'static str), i64> = HashMap::new();
    for i in &intents {
        let key = (i.contact_id, i.op.kind());
        let e = newest.entry(key).or_insert(i.intent_id);
        *e = (*e).max(i.intent_id);
    }
    let mut steps = Vec::with_capacity(intents.len());
    for intent in intents {
        let superseded = newest
            .get(&(intent.contact_id, intent.op.kind()))
            .is_some_and(|&id| id != intent.intent_id);
        let (action, reason) = if let Some(item) = intent.held_by {
            (
                skip(&format!(
                    "held for review item {item}: the provider refused a write of this person; nothing is sent here until `contact-sync review merge/apart {item}`"
                )),
                "refused earlier".to_owned(),
            )
        } else if superseded {
            (
                skip("a newer plan for this contact replaces it"),
                "planned earlier".to_owned(),
            )
        } else {
            step_for(shape, &intent)
        };
        steps.push(Step {
            intent_id: intent.intent_id,
            contact_id: intent.contact_id,
            who: intent.who,
            attempts: intent.attempts,
            action,
            reason,
        });
    }
    steps
}

fn skip(why: &str) -> Action {
    Action::Skip {
        why: why.to_owned(),
    }
}

fn retry_note(attempts: i64) -> String {
    if attempts > 0 {
        format!(" (retry; {attempts} earlier attempt(s) failed)")
    } else {
        String::new()
    }
}

fn step_for(shape: &StepShape, intent: &DueIntent) -> (Action, String) {
    let again = retry_note(intent.attempts);
    match (&intent.op, &intent.link) {
        (Operation::Create { fields, tags }, LinkView::None) => {
            if shape.enumerate && !shape.unlisted {
                (
                    Action::Create {
                        fields: fields.clone(),
                        tags: tags.clone(),
                        desired: intent.projection.clone(),
                    },
                    format!("not in this provider's listing{again}"),
                )
            } else {
                // The create finds the record holding that key — unless another key is
                // searched first: a record found by another key must be known by this
                // one too (DM Champ tags by phone), so then it is searched as well.
                let keys = lookup_keys(shape, fields);
                let create_finds = shape.create_finds.as_ref().and_then(|name| {
                    let only_key = keys.iter().all(|k| &k.field == name);
                    fields
                        .get(name)
                        .filter(|v| only_key && !v.is_empty())
                        .map(|v| LookupBy {
                            field: name.clone(),
                            value: v.clone(),
                        })
                });
                let lookup = keys
                    .into_iter()
                    .filter(|k| create_finds.as_ref().is_none_or(|c| c.field != k.field))
                    .collect();
                let why = if shape.enumerate {
                    "not linked here yet; its listing was not read in this cycle"
                } else {
                    "not linked here yet; the provider cannot be listed"
                };
                (
                    Action::CreateUnlessFound {
                        lookup,
                        create_finds,
                        fields: fields.clone(),
                        tags: tags.clone(),
                        desired: intent.projection.clone(),
                    },
                    format!("{why}{again}"),
                )
            }
        }
        (Operation::Create { .. }, LinkView::Active { remote_id, .. }) => (
            skip(&format!("already linked to record {remote_id}")),
            "planned as a create".to_owned(),
        ),
        (Operation::Create { .. }, LinkView::Creating) => (
            skip("an earlier create is being verified"),
            "planned as a create".to_owned(),
        ),
        (_, LinkView::Gone) => (
            skip("the record was deleted in this provider"),
            format!("planned as {}", intent.op.kind()),
        ),
        (
            Operation::Update { changes, .. },
            LinkView::Active {
                remote_id,
                snapshot,
                tags,
            },
        ) => {
            let pending: Vec<FieldChange> = changes
                .iter()
                .filter(|c| snapshot.get(&c.field).map_or("", String::as_str) != c.new)
                .map(|c| FieldChange {
                    field: c.field.clone(),
                    old: snapshot.get(&c.field).cloned().unwrap_or_default(),
                    new: c.new.clone(),
                })
                .collect();
            if pending.is_empty() {
                return (
                    skip("the provider already holds these values"),
                    "planned as an update".to_owned(),
                );
            }
            let fields: Vec<&str> = pending.iter().map(|c| c.field.as_str()).collect();
            (
                Action::Update {
                    remote_id: remote_id.clone(),
                    address: addressed_fields(shape, &intent.projection, snapshot),
                    known_tags: tags.clone().unwrap_or_default(),
                    changes: pending.clone(),
                },
                format!("changed: {}{again}", fields.join(", ")),
            )
        }
        (
            Operation::TagAdd { tags: wanted, .. } | Operation::TagRemove { tags: wanted, .. },
            LinkView::Active {
                remote_id,
                snapshot,
                tags,
            },
        ) => {
            let adding = matches!(intent.op, Operation::TagAdd { .. });
            let known = tags.clone().unwrap_or_default();
            let todo: Vec<String> = wanted
                .iter()
                .filter(|t| known.contains(t) != adding)
                .cloned()
                .collect();
            if todo.is_empty() {
                let why = if adding {
                    "the record already carries these tags"
                } else {
                    "the record no longer carries these tags"
                };
                return (skip(why), format!("planned as {}", intent.op.kind()));
            }
            let address = addressed_fields(shape, &intent.projection, snapshot);
            let reason = format!(
                "{} {}{again}",
                if adding {
                    "the contact carries"
                } else {
                    "the contact no longer carries"
                },
                todo.join(", ")
            );
            let action = if adding {
                Action::TagAdd {
                    remote_id: remote_id.clone(),
                    tags: todo,
                    address,
                    known_tags: known,
                }
            } else {
                Action::TagRemove {
                    remote_id: remote_id.clone(),
                    tags: todo,
                    address,
                    known_tags: known,
                }
            };
            (action, reason)
        }
        (Operation::Delete { .. }, LinkView::Active { remote_id, .. }) => (
            Action::Delete {
                remote_id: remote_id.clone(),
            },
            format!("deleted in another provider (propagate_deletes){again}"),
        ),
        (_, LinkView::None | LinkView::Creating) => (
            skip("the contact is not linked in this provider"),
            format!("planned as {}", intent.op.kind()),
        ),
    }
}

/// The keys a lookup-only provider is searched by, in the provider's order.
pub fn lookup_keys(shape: &StepShape, fields: &Fields) -> Vec<LookupBy> {
    shape
        .lookups
        .iter()
        .filter_map(|name| {
            fields
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| LookupBy {
                    field: name.clone(),
                    value: v.clone(),
                })
        })
        .collect()
}

/// The fields a write addresses the contact by: the projection, except that fields the
/// provider cannot change (Agentalk's and DM Champ's phone, DM Champ's external id) are
/// the values the provider holds — Agentalk upserts and DM Champ tags by phone, so the
/// new phone would address nobody, or a new contact.
pub fn addressed_fields(shape: &StepShape, projection: &Fields, snapshot: &Fields) -> Fields {
    let mut fields = projection.clone();
    for (name, mutable) in [
        (field::PHONE, shape.phone_mutable),
        (field::SOURCE_ID, shape.source_id_mutable),
    ] {
        if mutable {
            continue;
        }
        match snapshot.get(name).filter(|v| !v.is_empty()) {
            Some(held) => {
                fields.insert(name.to_owned(), held.clone());
            }
            None => {
                fields.remove(name);
            }
        }
    }
    fields
}

impl CyclePlan {
    /// Steps that send something, over all providers.
    pub fn sends(&self) -> usize {
        self.providers
            .iter()
            .map(|p| p.steps.iter().filter(|s| s.action.sends()).count())
            .sum()
    }

    /// The plan for a human: per provider, one line per step.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.providers {
            let sends = p.steps.iter().filter(|s| s.action.sends()).count();
            let _ = writeln!(
                out,
                "{} ({}): {} planned write(s)",
                p.provider, p.kind, sends
            );
            for s in &p.steps {
                let _ = writeln!(out, "  {}", s.describe());
            }
        }
        out
    }
}

impl Step {
    /// One line: `update      Ana López (id 345): name "Ana" → "Ana López" — changed: name`.
    pub fn describe(&self) -> String {
        let who = &self.who;
        let mut s = match &self.action {
            Action::Create { fields, tags, .. } => {
                let mut s = format!("create      {who}:");
                push_fields(&mut s, fields, tags);
                s
            }
            Action::CreateUnlessFound {
                lookup,
                create_finds,
                fields,
                tags,
                ..
            } => {
                let mut by: Vec<String> = lookup
                    .iter()
                    .map(|k| format!("{}={:?}", k.field, k.value))
                    .collect();
                if let Some(k) = create_finds {
                    by.push(format!("the create itself ({}={:?})", k.field, k.value));
                }
                let mut s = format!("create      {who} unless found by {}:", by.join(" or "));
                push_fields(&mut s, fields, tags);
                s
            }
            Action::Update {
                remote_id, changes, ..
            } => {
                let parts: Vec<String> = changes
                    .iter()
                    .map(|c| format!("{} {:?} → {:?}", c.field, c.old, c.new))
                    .collect();
                format!("update      {who} (id {remote_id}): {}", parts.join(", "))
            }
            Action::TagAdd {
                remote_id, tags, ..
            } => format!("tag add     {who} (id {remote_id}): {}", tags.join(", ")),
            Action::TagRemove {
                remote_id, tags, ..
            } => format!("tag remove  {who} (id {remote_id}): {}", tags.join(", ")),
            Action::Delete { remote_id } => format!("delete      {who} (id {remote_id})"),
            Action::Merge { remote_id, into } => {
                format!("merge       {who}: record {remote_id} into record {into}")
            }
            Action::Skip { why } => format!("skip        {who}: {why}"),
        };
        let _ = write!(s, " — {}", self.reason);
        s
    }
}

fn push_fields(s: &mut String, fields: &Fields, tags: &[String]) {
    for (k, v) in fields {
        let _ = write!(s, " {k}={v:?}");
    }
    if !tags.is_empty() {
        let _ = write!(s, " tags={tags:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(enumerate: bool) -> StepShape {
        StepShape {
            enumerate,
            unlisted: false,
            lookups: vec!["phone".into(), "email".into()],
            create_finds: None,
            phone_mutable: enumerate,
            source_id_mutable: true,
        }
    }

    #[test]
    fn a_create_that_finds_the_phone_is_not_preceded_by_a_phone_lookup() {
        let shape = StepShape {
            create_finds: Some("phone".into()),
            ..shape(false)
        };
        let op = Operation::Create {
            fields: fields(&[("email", "ana@x.io"), ("phone", "+34600000001")]),
            tags: vec![],
        };
        let steps = plan_provider(&shape, vec![due(1, 7, op, LinkView::None)]);
        let Action::CreateUnlessFound {
            lookup,
            create_finds,
            ..
        } = &steps[0].action
        else {
            panic!("{:?}", steps[0].action);
        };
        // With an email to search, the phone is searched too (first): a record found by
        // its email must be known there by its phone as well.
        assert_eq!(
            lookup.iter().map(|k| k.field.as_str()).collect::<Vec<_>>(),
            ["phone", "email"]
        );
        assert!(create_finds.is_none());
        // With only a phone there is nothing to search: the create itself finds it.
        let op = Operation::Create {
            fields: fields(&[("phone", "+34600000001")]),
            tags: vec![],
        };
        let steps = plan_provider(&shape, vec![due(2, 8, op, LinkView::None)]);
        let Action::CreateUnlessFound {
            lookup,
            create_finds,
            ..
        } = &steps[0].action
        else {
            panic!("{:?}", steps[0].action);
        };
        assert!(lookup.is_empty());
        assert_eq!(
            create_finds.as_ref().map(|k| k.value.as_str()),
            Some("+34600000001")
        );
        assert!(
            steps[0].describe().contains("the create itself (phone="),
            "{}",
            steps[0].describe()
        );
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn due(id: i64, contact: i64, op: Operation, link: LinkView) -> DueIntent {
        DueIntent {
            intent_id: id,
            contact_id: contact,
            who: format!("c{contact}"),
            attempts: 0,
            op,
            projection: fields(&[("name", "Ana"), ("phone", "+34600000001")]),
            link,
            held_by: None,
        }
    }

    fn active(snapshot: Fields, tags: Option<&[&str]>) -> LinkView {
        LinkView::Active {
            remote_id: "r1".into(),
            snapshot,
            tags: tags.map(|t| t.iter().collect()),
        }
    }

    #[test]
    fn a_person_held_by_a_refusal_gets_only_a_skip() {
        let op = Operation::Create {
            fields: fields(&[("email", "ana@x.io")]),
            tags: vec![],
        };
        let mut intent = due(1, 7, op, LinkView::None);
        intent.held_by = Some(4);
        let steps = plan_provider(&shape(true), vec![intent]);
        let Action::Skip { why } = &steps[0].action else {
            panic!("{:?}", steps[0].action);
        };
        assert!(why.contains("review item 4"), "{why}");
        assert!(!steps[0].action.sends());
    }

    #[test]
    fn lookup_only_providers_search_before_they_create() {
        let op = Operation::Create {
            fields: fields(&[("email", "ana@x.io"), ("phone", "+34600000001")]),
            tags: vec!["vip".into()],
        };
        let steps = plan_provider(&shape(false), vec![due(1, 7, op.clone(), LinkView::None)]);
        let Action::CreateUnlessFound { lookup, tags, .. } = &steps[0].action else {
            panic!("{:?}", steps[0].action);
        };
        assert_eq!(
            lookup.iter().map(|k| k.field.as_str()).collect::<Vec<_>>(),
            ["phone", "email"],
            "keys in the provider's lookup order"
        );
        assert_eq!(tags, &["vip".to_owned()]);
        let steps = plan_provider(&shape(true), vec![due(1, 7, op.clone(), LinkView::None)]);
        assert_eq!(steps[0].action.name(), "create");
        // A listable provider whose listing this cycle did not read (a targeted cycle)
        // searches first too: a record made since its last listing would be a duplicate.
        let unlisted = StepShape {
            unlisted: true,
            ..shape(true)
        };
        let steps = plan_provider(&unlisted, vec![due(1, 7, op, LinkView::None)]);
        let Action::CreateUnlessFound { lookup, .. } = &steps[0].action else {
            panic!("{:?}", steps[0].action);
        };
        assert_eq!(lookup.len(), 2);
        assert!(
            steps[0].reason.contains("listing was not read"),
            "{}",
            steps[0].reason
        );
    }

    #[test]
    fn moot_intents_become_skips_with_a_reason() {
        let snap = fields(&[("name", "Ana")]);
        let update = Operation::Update {
            remote_id: "r1".into(),
            changes: vec![FieldChange {
                field: "name".into(),
                old: "An".into(),
                new: "Ana".into(),
            }],
        };
        let add = Operation::TagAdd {
            remote_id: "r1".into(),
            tags: vec!["VIP".into()],
        };
        let create = Operation::Create {
            fields: snap.clone(),
            tags: vec![],
        };
        let steps = plan_provider(
            &shape(true),
            vec![
                due(1, 1, update, active(snap.clone(), Some(&["vip"]))),
                due(2, 1, add, active(snap.clone(), Some(&["vip"]))),
                due(3, 2, create.clone(), active(snap.clone(), None)),
                due(4, 3, create, LinkView::Gone),
            ],
        );
        assert!(steps.iter().all(|s| !s.action.sends()), "{steps:#?}");
        let whys: Vec<String> = steps
            .iter()
            .map(|s| match &s.action {
                Action::Skip { why } => why.clone(),
                _ => String::new(),
            })
            .collect();
        assert!(whys[0].contains("already holds"), "{whys:?}");
        assert!(
            whys[1].contains("already carries"),
            "tags compare case-insensitively: {whys:?}"
        );
        assert!(whys[2].contains("already linked"), "{whys:?}");
        assert!(whys[3].contains("deleted"), "{whys:?}");
    }

    #[test]
    fn a_newer_intent_supersedes_an_older_one_of_its_kind() {
        let change = |new: &str| Operation::Update {
            remote_id: "r1".into(),
            changes: vec![FieldChange {
                field: "name".into(),
                old: "An".into(),
                new: new.into(),
            }],
        };
        let link = active(fields(&[("name", "An")]), None);
        let mut old = due(1, 1, change("Ana"), link.clone());
        old.attempts = 2;
        let steps = plan_provider(&shape(true), vec![old, due(5, 1, change("Anna"), link)]);
        assert_eq!(steps[0].action.name(), "skip");
        let Action::Update { changes, .. } = &steps[1].action else {
            panic!("{:?}", steps[1].action);
        };
        assert_eq!(changes[0].new, "Anna");
    }

    #[test]
    fn writes_address_immutable_phones_by_the_value_the_provider_holds() {
        let update = Operation::Update {
            remote_id: "r1".into(),
            changes: vec![FieldChange {
                field: "name".into(),
                old: "An".into(),
                new: "Ana".into(),
            }],
        };
        let held = fields(&[("name", "An"), ("phone", "+34600000009")]);
        let steps = plan_provider(&shape(false), vec![due(1, 1, update, active(held, None))]);
        let Action::Update { address, .. } = &steps[0].action else {
            panic!("{:?}", steps[0].action);
        };
        assert_eq!(address["phone"], "+34600000009");
        assert_eq!(address["name"], "Ana");
    }

    #[test]
    fn rendering_names_every_step_and_its_reason() {
        let plan = CyclePlan {
            providers: vec![ProviderPlan {
                provider: "support".into(),
                kind: "chatwoot".into(),
                steps: plan_provider(
                    &shape(false),
                    vec![due(
                        1,
                        1,
                        Operation::Create {
                            fields: fields(&[("phone", "+34600000001")]),
                            tags: vec![],
                        },
                        LinkView::None,
                    )],
                ),
            }],
        };
        let text = plan.render();
        assert!(
            text.starts_with("support (chatwoot): 1 planned write(s)"),
            "{text}"
        );
        assert!(
            text.contains("unless found by phone=\"+34600000001\""),
            "{text}"
        );
        assert!(text.contains("cannot be listed"), "{text}");
        assert_eq!(plan.sends(), 1);
    }
}
