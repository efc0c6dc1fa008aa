//! The shared vocabulary of contact data: [`Fields`], [`Tags`] and [`RemoteRecord`].
//!
//! Every provider adapter decodes its wire format into a [`RemoteRecord`] and every write
//! is expressed in [`Fields`] and tag names, so the sync engine never sees a provider's
//! JSON. Field values are plain strings; a key that is absent means "this provider does
//! not hold that field", while an empty string means "the provider holds it and it is
//! empty" (so a field a provider never had is not a change, while set → empty is).

use std::collections::BTreeMap;

/// Well-known field names. Custom attributes use [`attr_field`] (`attr.<key>`).
pub mod field {
    /// Display name (Chatwoot `name`, MaiAgent `name`).
    pub const NAME: &str = "name";
    /// Given name (Agentalk `firstName`, DM Champ `firstName`).
    pub const FIRST_NAME: &str = "first_name";
    /// Family name (Agentalk `lastName`, DM Champ `lastName`).
    pub const LAST_NAME: &str = "last_name";
    /// Email address as the provider holds it (the engine normalises it).
    pub const EMAIL: &str = "email";
    /// Phone number as the provider holds it (the engine normalises it to E.164).
    pub const PHONE: &str = "phone";
    /// The external key (Chatwoot `identifier`, MaiAgent `sourceId`, DM Champ `externalId`).
    pub const SOURCE_ID: &str = "source_id";
    /// Prefix of custom attribute fields.
    pub const ATTR_PREFIX: &str = "attr.";
}

/// The field name of custom attribute `key`.
pub fn attr_field(key: &str) -> String {
    format!("{}{key}", field::ATTR_PREFIX)
}

/// Field name → value. Absent key: not held by the provider; `""`: held and empty.
pub type Fields = BTreeMap<String, String>;

/// Sets field `name` to `value`; an empty value removes it (the golden record keeps no
/// empty fields).
pub fn set_field(fields: &mut Fields, name: &str, value: impl Into<String>) {
    let value = value.into();
    if value.is_empty() {
        fields.remove(name);
    } else {
        fields.insert(name.to_owned(), value);
    }
}

/// A set of tags, compared case-insensitively after trimming.
///
/// The map key is the comparison key ([`tag_key`]); the value is the spelling first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tags(BTreeMap<String, String>);

/// The comparison key of a tag name: trimmed and lower-cased. Empty names have no key.
pub fn tag_key(name: &str) -> Option<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        None
    } else {
        Some(trimmed.to_lowercase())
    }
}

impl Tags {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tag (trimmed); returns false if an equal tag was present or the name is blank.
    pub fn insert(&mut self, name: &str) -> bool {
        match tag_key(name) {
            Some(key) if !self.0.contains_key(&key) => {
                self.0.insert(key, name.trim().to_owned());
                true
            }
            _ => false,
        }
    }

    /// Removes the tag equal to `name`; returns whether one was present.
    pub fn remove(&mut self, name: &str) -> bool {
        tag_key(name).is_some_and(|key| self.0.remove(&key).is_some())
    }

    /// Whether a tag equal to `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        tag_key(name).is_some_and(|key| self.0.contains_key(&key))
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tag names in key order, in their stored spelling.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }

    /// `(key, spelling)` pairs in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Tags in `self` that are not in `other`, in their stored spelling.
    pub fn difference<'a>(&'a self, other: &'a Tags) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(|(k, _)| !other.0.contains_key(*k))
            .map(|(_, v)| v.as_str())
    }
}

impl<S: AsRef<str>> FromIterator<S> for Tags {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut tags = Tags::new();
        for name in iter {
            tags.insert(name.as_ref());
        }
        tags
    }
}

/// One contact as a provider shows it, decoded but not yet normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteRecord {
    /// The provider's id of the contact (integers are rendered in decimal).
    pub remote_id: String,
    /// The fields this provider holds for the contact (see the module doc).
    pub fields: Fields,
    /// The contact's tags when the listing carries them; `None` when they were not read.
    pub tags: Option<Tags>,
}

/// The golden record: one person as the store holds them, merged from every provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoldenRecord {
    /// Store id.
    pub id: i64,
    /// Normalised fields (name, first_name, last_name, email, phone, source_id, attr.*);
    /// empty fields are absent.
    pub fields: Fields,
    /// Whether `phone` is a valid E.164 number.
    pub phone_valid: bool,
    /// Whether the contact has any match key (valid phone or email, or a source id):
    /// without one it could never be recognised again, so it is not created anywhere.
    pub has_key: bool,
    /// Deleted in a provider while `propagate_deletes` is on: delete it everywhere.
    pub deleted: bool,
    /// Tag set.
    pub tags: Tags,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_compare_case_insensitively_after_trimming() {
        let mut tags = Tags::new();
        assert!(tags.insert(" VIP "));
        assert!(!tags.insert("vip"));
        assert!(!tags.insert("   "));
        assert!(tags.contains("Vip"));
        assert_eq!(tags.names().collect::<Vec<_>>(), vec!["VIP"]);
        assert!(tags.remove("vIp"));
        assert!(tags.is_empty());
    }

    #[test]
    fn difference_uses_keys_not_spelling() {
        let a: Tags = ["Lead", "vip"].into_iter().collect();
        let b: Tags = ["LEAD"].into_iter().collect();
        assert_eq!(a.difference(&b).collect::<Vec<_>>(), vec!["vip"]);
    }
}
