//! The planner: a pure function from a golden record and what one provider
//! holds (its link snapshot) to the writes that bring the provider up to date. The same
//! code serves `--dry-run` (printed) and the real cycle (persisted as intents, then sent).

use super::names;
use super::record::{Fields, GoldenRecord, Tags, field};
use super::whatsapp;
use serde::{Deserialize, Serialize};

/// What one provider can hold and do, as far as planning is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderShape {
    /// The fields it holds.
    pub fields: Vec<String>,
    /// Custom attributes are held.
    pub attrs: bool,
    /// A contact without a valid phone cannot be created.
    pub needs_phone: bool,
    /// The phone of an existing contact can be changed.
    pub phone_mutable: bool,
    /// The source id of an existing contact can be changed.
    pub source_id_mutable: bool,
    /// Tags can be added / removed.
    pub tags_add: bool,
    /// Tags can be removed.
    pub tags_remove: bool,
    /// Contacts can be deleted.
    pub delete: bool,
}

/// The state of a contact's link in one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkView {
    /// Not linked: the provider does not hold the person as far as we know.
    None,
    /// Linked; the snapshot is what the provider last showed or was last sent.
    Active {
        /// Remote id.
        remote_id: String,
        /// Field snapshot.
        snapshot: Fields,
        /// Tag snapshot (`None`: unknown).
        tags: Option<Tags>,
    },
    /// A create was sent and its answer is not recorded yet: wait for recovery.
    Creating,
    /// Deleted in the provider: never re-created.
    Gone,
}

/// One planned write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Create the contact (lookup-only providers look it up first).
    Create {
        /// Fields to send.
        fields: Fields,
        /// Tags to set.
        tags: Vec<String>,
    },
    /// Change fields (`""` clears).
    Update {
        /// Remote id.
        remote_id: String,
        /// Changed fields: field → (old, new).
        changes: Vec<FieldChange>,
    },
    /// Add tags.
    TagAdd {
        /// Remote id.
        remote_id: String,
        /// Tags to add.
        tags: Vec<String>,
    },
    /// Remove tags.
    TagRemove {
        /// Remote id.
        remote_id: String,
        /// Tags to remove.
        tags: Vec<String>,
    },
    /// Delete the contact (only with `propagate_deletes = true`).
    Delete {
        /// Remote id.
        remote_id: String,
    },
}

impl Operation {
    /// The store's name of the operation.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Create { .. } => "create",
            Operation::Update { .. } => "update",
            Operation::TagAdd { .. } => "tag_add",
            Operation::TagRemove { .. } => "tag_remove",
            Operation::Delete { .. } => "delete",
        }
    }
}

/// One field change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Field name.
    pub field: String,
    /// The value the provider holds now (as far as we know).
    pub old: String,
    /// The value to write (`""` clears).
    pub new: String,
}

/// Why something was not planned (counted, never an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The provider needs a valid phone to create a contact.
    NeedsPhone,
    /// The provider cannot change this field of an existing contact (DM Champ's phone and
    /// external id, Agentalk's phone).
    Immutable,
    /// The provider cannot remove tags (DM Champ) or hold them (MaiAgent).
    TagsUnsupported,
    /// The provider's listing did not complete this cycle: no creates there now.
    EnumerationIncomplete,
    /// The contact was deleted in this provider and is never re-created.
    Gone,
    /// A create is awaiting recovery.
    Creating,
    /// The contact has no phone, email or source id to be recognised by.
    NoKey,
    /// The contact was deleted (propagated deletes) and is not created anywhere.
    Deleted,
    /// The provider cannot delete contacts (DM Champ).
    DeleteUnsupported,
}

/// The plan for one contact in one provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactPlan {
    /// Writes to send, in order.
    pub operations: Vec<Operation>,
    /// What was skipped, and why.
    pub skipped: Vec<Skip>,
}

/// The contact as `shape` would hold it: only fields the provider holds; names adapted
/// (display name ↔ first/last, by [`names::completed`]); phone only when valid E.164.
pub fn project(contact: &GoldenRecord, shape: &ProviderShape) -> Fields {
    let get = |k: &str| contact.fields.get(k).cloned().unwrap_or_default();
    let name = names::completed(&contact.fields);
    let mut out = Fields::new();
    for f in &shape.fields {
        let value = match f.as_str() {
            field::NAME => name.name.to_string(),
            field::FIRST_NAME => name.first.to_string(),
            field::LAST_NAME => name.last.to_string(),
            field::PHONE => {
                if contact.phone_valid {
                    get(field::PHONE)
                } else {
                    continue;
                }
            }
            other => get(other),
        };
        out.insert(f.clone(), value);
    }
    if shape.attrs {
        for (k, v) in contact.fields.range(field::ATTR_PREFIX.to_owned()..) {
            if !k.starts_with(field::ATTR_PREFIX) {
                break;
            }
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Plans one contact for one provider.
///
/// `may_create` is false when the provider's listing did not complete this cycle (its
/// unread pages may already hold the person).
pub fn plan_contact(
    contact: &GoldenRecord,
    link: &LinkView,
    shape: &ProviderShape,
    may_create: bool,
) -> ContactPlan {
    let mut plan = ContactPlan::default();
    if contact.deleted {
        match link {
            LinkView::Active { remote_id, .. } if shape.delete => {
                plan.operations.push(Operation::Delete {
                    remote_id: remote_id.clone(),
                });
            }
            LinkView::Active { .. } => plan.skipped.push(Skip::DeleteUnsupported),
            _ => plan.skipped.push(Skip::Deleted),
        }
        return plan;
    }
    let desired = project(contact, shape);
    match link {
        LinkView::Gone => plan.skipped.push(Skip::Gone),
        LinkView::Creating => plan.skipped.push(Skip::Creating),
        LinkView::None => {
            if !contact.has_key {
                plan.skipped.push(Skip::NoKey);
            } else if shape.needs_phone && !contact.phone_valid {
                plan.skipped.push(Skip::NeedsPhone);
            } else if !may_create {
                plan.skipped.push(Skip::EnumerationIncomplete);
            } else {
                let fields: Fields = desired.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                let tags: Vec<String> = if shape.tags_add {
                    contact.tags.names().map(str::to_owned).collect()
                } else {
                    if !contact.tags.is_empty() {
                        plan.skipped.push(Skip::TagsUnsupported);
                    }
                    Vec::new()
                };
                plan.operations.push(Operation::Create { fields, tags });
            }
        }
        LinkView::Active {
            remote_id,
            snapshot,
            tags,
        } => {
            let mut changes = Vec::new();
            // The provider's own split of the same name into given and family name is not
            // a change.
            let same_name = names::same_name(&desired, snapshot);
            for (f, new) in &desired {
                let old = snapshot.get(f).cloned().unwrap_or_default();
                // A phone the provider holds in another WhatsApp form of the same number
                // is never rewritten because of the equivalence.
                if &old == new
                    || (same_name && names::is_split_name_field(f))
                    || (f == field::PHONE && whatsapp::equivalent(&old, new))
                {
                    continue;
                }
                let immutable = (f == field::PHONE && !shape.phone_mutable)
                    || (f == field::SOURCE_ID && !shape.source_id_mutable);
                if immutable {
                    plan.skipped.push(Skip::Immutable);
                    continue;
                }
                changes.push(FieldChange {
                    field: f.clone(),
                    old,
                    new: new.clone(),
                });
            }
            if !changes.is_empty() {
                plan.operations.push(Operation::Update {
                    remote_id: remote_id.clone(),
                    changes,
                });
            }
            let known = tags.clone().unwrap_or_default();
            let add: Vec<String> = contact.tags.difference(&known).map(str::to_owned).collect();
            // Removing needs to know what the provider holds.
            let remove: Vec<String> = if tags.is_some() {
                known.difference(&contact.tags).map(str::to_owned).collect()
            } else {
                Vec::new()
            };
            if !add.is_empty() {
                if shape.tags_add {
                    plan.operations.push(Operation::TagAdd {
                        remote_id: remote_id.clone(),
                        tags: add,
                    });
                } else {
                    plan.skipped.push(Skip::TagsUnsupported);
                }
            }
            if !remove.is_empty() {
                if shape.tags_remove {
                    plan.operations.push(Operation::TagRemove {
                        remote_id: remote_id.clone(),
                        tags: remove,
                    });
                } else {
                    plan.skipped.push(Skip::TagsUnsupported);
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(fields: &[&str], needs_phone: bool) -> ProviderShape {
        ProviderShape {
            fields: fields.iter().map(|s| (*s).to_owned()).collect(),
            attrs: false,
            needs_phone,
            phone_mutable: true,
            source_id_mutable: true,
            tags_add: true,
            tags_remove: true,
            delete: true,
        }
    }

    fn contact(name: &str, phone: Option<&str>, tags: &[&str]) -> GoldenRecord {
        let mut fields = Fields::new();
        fields.insert(field::NAME.into(), name.into());
        if let Some(p) = phone {
            fields.insert(field::PHONE.into(), p.into());
        }
        GoldenRecord {
            id: 1,
            fields,
            phone_valid: phone.is_some(),
            has_key: phone.is_some(),
            deleted: false,
            tags: tags.iter().collect(),
        }
    }

    #[test]
    fn first_last_providers_get_a_split_name() {
        let c = contact("María del Carmen", Some("+34612345678"), &[]);
        let p = project(&c, &shape(&["first_name", "last_name", "phone"], true));
        assert_eq!(p["first_name"], "María");
        assert_eq!(p["last_name"], "del Carmen");
    }

    #[test]
    fn no_phone_no_create_where_a_phone_is_needed() {
        let mut c = contact("Ana", None, &[]);
        c.has_key = true; // e.g. an email
        let needs_phone = shape(&["first_name", "phone"], true);
        let plan = plan_contact(&c, &LinkView::None, &needs_phone, true);
        assert!(plan.operations.is_empty());
        assert_eq!(plan.skipped, vec![Skip::NeedsPhone]);
        c.has_key = false;
        let plan = plan_contact(&c, &LinkView::None, &shape(&["name"], false), true);
        assert_eq!(
            plan.skipped,
            vec![Skip::NoKey],
            "a contact without any key is created nowhere"
        );
    }

    #[test]
    fn unchanged_link_plans_nothing_and_changes_are_field_by_field() {
        let c = contact("Ana", Some("+34612345678"), &["vip"]);
        let s = shape(&["name", "phone"], false);
        let snapshot = project(&c, &s);
        let link = LinkView::Active {
            remote_id: "9".into(),
            snapshot: snapshot.clone(),
            tags: Some(["VIP"].into_iter().collect()),
        };
        assert_eq!(plan_contact(&c, &link, &s, true), ContactPlan::default());
        let renamed = contact("Ana B", Some("+34612345678"), &["vip", "lead"]);
        let plan = plan_contact(&renamed, &link, &s, true);
        assert_eq!(
            plan.operations,
            vec![
                Operation::Update {
                    remote_id: "9".into(),
                    changes: vec![FieldChange {
                        field: "name".into(),
                        old: "Ana".into(),
                        new: "Ana B".into()
                    }],
                },
                Operation::TagAdd {
                    remote_id: "9".into(),
                    tags: vec!["lead".into()]
                },
            ]
        );
    }

    #[test]
    fn gone_links_are_never_recreated_and_incomplete_listings_get_no_creates() {
        let c = contact("Ana", Some("+34612345678"), &[]);
        let s = shape(&["name"], false);
        assert_eq!(
            plan_contact(&c, &LinkView::Gone, &s, true).skipped,
            vec![Skip::Gone]
        );
        assert_eq!(
            plan_contact(&c, &LinkView::None, &s, false).skipped,
            vec![Skip::EnumerationIncomplete]
        );
    }

    #[test]
    fn tag_removal_is_skipped_where_unsupported() {
        let c = contact("Ana", Some("+34612345678"), &[]);
        let mut s = shape(&["name"], false);
        s.tags_remove = false;
        let link = LinkView::Active {
            remote_id: "1".into(),
            snapshot: project(&c, &s),
            tags: Some(["old"].into_iter().collect()),
        };
        let plan = plan_contact(&c, &link, &s, true);
        assert!(plan.operations.is_empty());
        assert_eq!(plan.skipped, vec![Skip::TagsUnsupported]);
    }

    #[test]
    fn a_deleted_contact_is_deleted_where_linked_and_created_nowhere() {
        let mut c = contact("Ana", Some("+34612345678"), &[]);
        c.deleted = true;
        let s = shape(&["name"], false);
        let link = LinkView::Active {
            remote_id: "7".into(),
            snapshot: Fields::new(),
            tags: None,
        };
        assert_eq!(
            plan_contact(&c, &link, &s, true).operations,
            vec![Operation::Delete {
                remote_id: "7".into()
            }]
        );
        assert_eq!(
            plan_contact(&c, &LinkView::None, &s, true).skipped,
            vec![Skip::Deleted]
        );
        let mut cannot = s.clone();
        cannot.delete = false;
        assert_eq!(
            plan_contact(&c, &link, &cannot, true).skipped,
            vec![Skip::DeleteUnsupported]
        );
    }
}
