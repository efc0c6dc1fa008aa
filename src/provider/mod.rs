//! Provider clients: one [`Provider`] trait, one adapter per platform, one HTTP driver.
//!
//! An adapter only builds requests and decodes responses into the shared
//! [`RemoteRecord`](crate::domain::RemoteRecord). Pacing, retry with backoff, timeouts,
//! secret redaction and metrics are written once, in [`http`]. The engine (`crate::sync`)
//! talks to every provider through [`Provider`] and asks [`Capabilities`] what it may do.

pub mod error;
pub mod http;
pub mod pacing;
mod registry;
pub mod settings;
pub mod wire;

pub use error::{ErrorKind, ProviderError};
pub use registry::{Adapter, BaseUrl};
pub use settings::{KindProblem, KindSettings, ProviderSettings, RetryPolicy, SettingValue};

use crate::domain::{Fields, RemoteRecord, Tags};
use std::future::Future;

// The registered platforms: one line per adapter (`Variant => module::Adapter`), the
// adapter being `src/provider/<module>.rs`. This generates the `mod`s, `ProviderKind`,
// `AnyProvider`, `build` and the delegation of `Provider` (see `registry.rs`).
registry::registry! {
    /// Chatwoot (open source; cloud or self-hosted).
    Chatwoot => chatwoot::Chatwoot,
    /// MaiAgent.
    Maiagent => maiagent::MaiAgent,
    /// Agentalk.
    Agentalk => agentalk::Agentalk,
    /// DM Champ.
    Dmchamp => dmchamp::DmChamp,
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ProviderKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ProviderKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown kind `{text}`; use one of {}",
                Self::names()
            ))
        })
    }
}

impl ProviderKind {
    /// The config spellings of every kind, comma-separated (for messages).
    pub fn names() -> String {
        Self::ALL.map(ProviderKind::as_str).join(", ")
    }
}

/// How a record can be looked up in a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupKind {
    /// By E.164 phone number.
    Phone,
    /// By email (case-insensitive).
    Email,
    /// By the external key (`source_id` field).
    SourceId,
}

/// A lookup request: the key kind and its normalised value (E.164 phone, lower-cased email).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKey<'a> {
    /// E.164 phone, e.g. `+14155550123`.
    Phone(&'a str),
    /// Trimmed, lower-cased email.
    Email(&'a str),
    /// External key.
    SourceId(&'a str),
}

impl LookupKey<'_> {
    /// The kind of this key.
    pub fn kind(&self) -> LookupKind {
        match self {
            LookupKey::Phone(_) => LookupKind::Phone,
            LookupKey::Email(_) => LookupKind::Email,
            LookupKey::SourceId(_) => LookupKind::SourceId,
        }
    }
}

/// What a provider can do. The engine plans only what the capabilities allow and counts
/// the rest as skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Can page through all contacts ([`Provider::list_page`]).
    pub enumerate: bool,
    /// Lookups the provider supports exactly (the adapter checks exactness itself).
    pub lookups: &'static [LookupKind],
    /// Whether a lookup answers with the record's fields (`false`: only the id, DM Champ).
    pub lookup_returns_fields: bool,
    /// Tags can be read (in the listing, by tag listing, or per contact).
    pub tags_read: bool,
    /// Tags can be added.
    pub tags_add: bool,
    /// A create carries the contact's tags (one request instead of a create plus a tag
    /// write).
    pub tags_on_create: bool,
    /// Tags can be removed.
    pub tags_remove: bool,
    /// A create of a phone the provider already holds answers that record's id instead of
    /// making a new one (DM Champ): the create doubles as the phone lookup.
    pub create_finds_phone: bool,
    /// The listing can be filtered by tag ([`Provider::list_tag_names`] /
    /// [`Provider::list_tag_page`]) — how Chatwoot labels are read without one request per
    /// contact.
    pub tags_by_listing: bool,
    /// A contact without a phone cannot be created (Agentalk, DM Champ).
    pub needs_phone: bool,
    /// The phone of an existing contact can be changed.
    pub phone_mutable: bool,
    /// The external key of an existing contact can be changed (DM Champ: create only).
    pub source_id_mutable: bool,
    /// One contact's tags can be read by its id ([`Provider::read_tags`]).
    pub tags_read_by_id: bool,
    /// Contacts can be deleted ([`Provider::delete`]).
    pub delete: bool,
    /// The fields (see [`crate::domain::field`]) this provider holds.
    pub fields: &'static [&'static str],
    /// Custom attributes (`attr.*` fields) are held.
    pub attrs: bool,
    /// What the provider calls the external key (`identifier`, `sourceId`, …), if it has one.
    pub external_key: Option<&'static str>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The records on this page.
    pub records: Vec<RemoteRecord>,
    /// Opaque cursor of the next page; `None` when this was the last page.
    pub next: Option<String>,
    /// How many pages the listing has, when it is addressed by page number and this
    /// (first) page said so (a total count and a full page). The engine then requests
    /// the following pages ahead ([`Provider::page_cursor`]); `None` otherwise.
    pub last_page: Option<u64>,
}

/// One page of the contacts carrying one tag.
#[derive(Debug, Clone, Default)]
pub struct TagPage {
    /// Remote ids of the contacts carrying the tag on this page.
    pub remote_ids: Vec<String>,
    /// Opaque cursor of the next page; `None` when this was the last page.
    pub next: Option<String>,
    /// How many pages this tag's listing has, when it is addressed by page number and
    /// this (first) page said so ([`Provider::tag_page_cursor`]); `None` otherwise.
    pub last_page: Option<u64>,
}

/// The result of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The provider's id of the (new or existing) contact.
    pub remote_id: String,
    /// The provider answered with a contact that already existed (upsert / duplicate).
    pub existed: bool,
}

/// The contact a write is aimed at.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Provider id of the contact.
    pub remote_id: &'a str,
    /// The full projection of the contact onto this provider after the write (the phone
    /// and email, for providers that address contacts by them).
    pub fields: &'a Fields,
    /// The tags the provider holds now, as far as we know (Chatwoot replaces the whole set).
    pub tags: &'a Tags,
}

type Res<T> = Result<T, ProviderError>;

/// The operations every provider adapter offers. Operations a provider lacks (per its
/// [`Capabilities`]) return a [`ErrorKind::Permanent`] error; the engine never calls them.
pub trait Provider: Send + Sync {
    /// The instance name from the config.
    fn name(&self) -> &str;
    /// The kind of provider.
    fn kind(&self) -> ProviderKind;
    /// What this provider can do.
    fn capabilities(&self) -> &Capabilities;
    /// One page of all contacts; `cursor` is `None` for the first page.
    fn list_page(&self, cursor: Option<&str>) -> impl Future<Output = Res<Page>> + Send;
    /// The cursor of page `number` (1-based) of the contact listing, for listings
    /// addressed by page number; `None` (the default) when pages can only be followed.
    fn page_cursor(&self, number: u64) -> Option<String> {
        let _ = number;
        None
    }
    /// The tag names that [`Provider::list_tag_page`] can filter by (the tag universe).
    fn list_tag_names(&self) -> impl Future<Output = Res<Vec<String>>> + Send;
    /// One page of the ids of contacts carrying `tag`.
    fn list_tag_page(
        &self,
        tag: &str,
        cursor: Option<&str>,
    ) -> impl Future<Output = Res<TagPage>> + Send;
    /// The cursor of page `number` (1-based) of the listing of `tag`, for listings
    /// addressed by page number; `None` (the default) when pages can only be followed.
    fn tag_page_cursor(&self, tag: &str, number: u64) -> Option<String> {
        let _ = (tag, number);
        None
    }
    /// Exact lookup; `Ok(None)` when nothing matches. When the provider returns only an id,
    /// the record's `fields` are empty.
    fn lookup(&self, key: LookupKey<'_>) -> impl Future<Output = Res<Option<RemoteRecord>>> + Send;
    /// Creates a contact from `fields` (only fields the provider holds) with `tags` where the
    /// provider takes tags on create.
    fn create(&self, fields: &Fields, tags: &Tags) -> impl Future<Output = Res<Created>> + Send;
    /// Writes the changed fields (`""` clears a field).
    fn update(&self, target: Target<'_>, changes: &Fields) -> impl Future<Output = Res<()>> + Send;
    /// Reads one contact by its id (fields only; its tags through
    /// [`Provider::read_tags`]); `Ok(None)` when it does not exist (any more). A webhook
    /// event names a record this way. The default cannot.
    fn read_record(
        &self,
        remote_id: &str,
    ) -> impl Future<Output = Res<Option<RemoteRecord>>> + Send {
        let _ = remote_id;
        std::future::ready(Err(ProviderError::new(
            self.name(),
            "read a contact by id",
            ErrorKind::Permanent,
            "this provider cannot read a contact by its id",
        )))
    }
    /// Reads one contact's tags.
    fn read_tags(&self, remote_id: &str) -> impl Future<Output = Res<Tags>> + Send;
    /// Adds tags to a contact.
    fn add_tags(&self, target: Target<'_>, add: &[String]) -> impl Future<Output = Res<()>> + Send;
    /// Removes tags from a contact.
    fn remove_tags(
        &self,
        target: Target<'_>,
        remove: &[String],
    ) -> impl Future<Output = Res<()>> + Send;
    /// Deletes a contact.
    fn delete(&self, remote_id: &str) -> impl Future<Output = Res<()>> + Send;
    /// How this instance fares in the current cycle (failure streak, cut-off, retry
    /// deadline); `None` for clients without an HTTP driver.
    fn health(&self) -> Option<&http::Health> {
        None
    }
    /// Whether [`Provider::merge`] merges two records of one person into one (Chatwoot's
    /// merge action); providers that cannot keep both records.
    fn can_merge(&self) -> bool {
        false
    }
    /// Merges record `mergee` into record `base` (base values win; the mergee only fills
    /// the base's gaps; the mergee disappears). The default cannot.
    fn merge(&self, base: &str, mergee: &str) -> impl Future<Output = Res<()>> + Send {
        let _ = (base, mergee);
        std::future::ready(Err(ProviderError::new(
            self.name(),
            "merge contacts",
            ErrorKind::Permanent,
            "this provider cannot merge contacts",
        )))
    }
    /// Whether [`Provider::find_created`] can tell if a create whose answer was lost
    /// landed, for contacts its exact lookups cannot find (MaiAgent: by name).
    fn can_find_created(&self) -> bool {
        false
    }
    /// Looks for the record a create of `sent` may have made when its answer was lost:
    /// `Ok(None)` only when it certainly does not exist. The default cannot tell.
    fn find_created(
        &self,
        sent: &Fields,
    ) -> impl Future<Output = Res<Option<RemoteRecord>>> + Send {
        let _ = sent;
        std::future::ready(Err(ProviderError::new(
            self.name(),
            "confirm an interrupted create",
            ErrorKind::Permanent,
            "this provider cannot be searched for it",
        )))
    }
}
