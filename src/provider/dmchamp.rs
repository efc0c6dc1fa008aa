//! DM Champ adapter (`/v1/…`, query parameter `apiKey` on every request).
//!
//! Owns the DM Champ wire format (`docs/providers.md`). DM Champ is a write-mostly
//! sink: lookups by phone or email answer only `contactId` (the record's fields stay
//! empty); there is no listing, no delete and no tag removal, the phone cannot be
//! changed and `externalId` is accepted on create only. A create of an existing phone
//! either answers 200 with the existing id or an "already exists" error; both end as
//! `Created { existed: true }` (on the error, the phone is looked up). Tags are added per
//! tag with `POST /v1/tags`, addressing the contact by phone digits without `+` (or by
//! email). Error bodies may be bare JSON strings.
//!
//! The key travels in the query string, so the driver adds it at send time and redacts
//! it from every logged URL and every error.

// `ProviderError` is large by design (context for the human); errors are the cold path.
#![allow(clippy::result_large_err)]

use super::settings::ProviderSettings;
use super::http::{self, ApiRequest, ApiResponse, AuthStyle, HttpDriver, Idempotency};
use super::wire::{self, DecodeError};
use super::{
    Adapter, BaseUrl, Capabilities, Created, ErrorKind, LookupKey, LookupKind, Page, Provider, ProviderError,
    ProviderKind, TagPage, Target,
};
use crate::domain::{Fields, RemoteRecord, Tags, field};
use reqwest::Method;
use serde_json::{Map, Value};
use url::Url;

/// What the DM Champ adapter can do.
pub const CAPABILITIES: Capabilities = Capabilities {
    enumerate: false,
    lookups: &[LookupKind::Phone, LookupKind::Email],
    lookup_returns_fields: false,
    tags_read: true,
    tags_add: true,
    tags_on_create: false,
    tags_remove: false,
    create_finds_phone: true,
    tags_by_listing: false,
    needs_phone: true,
    phone_mutable: false,
    source_id_mutable: false,
    tags_read_by_id: true,
    delete: false,
    fields: &[
        field::FIRST_NAME,
        field::LAST_NAME,
        field::EMAIL,
        field::PHONE,
        field::SOURCE_ID,
    ],
    attrs: false,
    external_key: Some("externalId"),
};

/// A DM Champ account.
#[derive(Debug)]
pub struct DmChamp {
    http: HttpDriver,
    root: Url,
}

impl Adapter for DmChamp {
    const KIND: &'static str = "dmchamp";
    const BASE_URL: BaseUrl = BaseUrl::Default("https://api.dmchamp.com");

    /// A client for `settings`.
    fn new(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let root = http::api_root(&settings.name, &settings.base_url, &["v1"])?;
        let hint = format!(
            "Check api_key_env / api_key_file of provider `{}`: DM Champ wants an API key from Settings → API Keys (regenerating a key invalidates the old one)",
            settings.name
        );
        let http = HttpDriver::new(settings, AuthStyle::Query { param: "apiKey" }, hint)?;
        Ok(Self { http, root })
    }
}

impl DmChamp {
    fn url(&self, segments: &[&str]) -> Url {
        http::join(&self.root, segments)
    }

    async fn lookup_id(&self, key: LookupKey<'_>) -> Result<Option<String>, ProviderError> {
        let mut url = self.url(&["contacts"]);
        let what = match key {
            LookupKey::Phone(phone) => {
                url.query_pairs_mut().append_pair("phoneNumber", phone);
                "phone"
            }
            LookupKey::Email(email) => {
                url.query_pairs_mut().append_pair("email", email);
                "email"
            }
            LookupKey::SourceId(_) => {
                return Err(self
                    .http
                    .error(
                        "look up contact",
                        ErrorKind::Permanent,
                        "DM Champ cannot look contacts up by external id",
                    )
                    .with_hint("DM Champ contacts are found by phone or email"));
            }
        };
        let request = ApiRequest::get(url, format!("look up contact by {what}"));
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        if is_not_found(&response) {
            return Ok(None);
        }
        self.http.decode(&response, decode_lookup)
    }

    async fn tag_one(&self, tag: &str, contact: &ContactRef) -> Result<(), ProviderError> {
        let mut url = self.url(&["tags"]);
        let mut body = Map::new();
        body.insert("tag".into(), Value::String(tag.to_owned()));
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("tag", tag);
            match contact {
                ContactRef::Phone(digits) => {
                    q.append_pair("phoneNumber", digits);
                    body.insert("phoneNumber".into(), Value::String(digits.clone()));
                }
                ContactRef::Email(email) => {
                    q.append_pair("email", email);
                    body.insert("email".into(), Value::String(email.clone()));
                }
            }
        }
        let request = ApiRequest::new(Method::POST, url, format!("add tag `{tag}`"))
            .json(&Value::Object(body));
        let response = self.http.send(request, Idempotency::NonIdempotent).await?;
        self.http.expect_success(&response)
    }

    async fn add_tags_by(
        &self,
        contact: &ContactRef,
        tags: &[String],
    ) -> Result<(), ProviderError> {
        for tag in tags.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            self.tag_one(tag, contact).await?;
        }
        Ok(())
    }
}

/// How a tag request addresses the contact.
enum ContactRef {
    /// Phone digits without `+`.
    Phone(String),
    Email(String),
}

impl ContactRef {
    fn of(fields: &Fields) -> Option<Self> {
        let digits = fields
            .get(field::PHONE)
            .map(|p| wire::phone_digits(p))
            .filter(|d| !d.is_empty());
        if let Some(digits) = digits {
            return Some(Self::Phone(digits));
        }
        fields
            .get(field::EMAIL)
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .map(Self::Email)
    }
}

/// A lookup miss: 404, or a 400 saying "not found".
fn is_not_found(response: &ApiResponse) -> bool {
    match response.status() {
        404 => true,
        400 => wire::error_message(response.body())
            .to_ascii_lowercase()
            .contains("not found"),
        _ => false,
    }
}

/// Whether an error answer says the contact already exists.
fn says_already_exists(response: &ApiResponse) -> bool {
    let text = wire::error_message(response.body()).to_ascii_lowercase();
    text.contains("already exist") || text.contains("duplicate")
}

/// Decodes a lookup answer `{"success": true, "contactId": "…"}`; `success: false` or a
/// missing id is a miss.
pub fn decode_lookup(body: &[u8]) -> Result<Option<String>, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let obj = wire::as_object(&root, "the lookup answer")?;
    if wire::lenient_bool(obj.get("success")) == Some(false) {
        return Ok(None);
    }
    let holder = match obj.get("data") {
        Some(Value::Object(data)) => data,
        _ => obj,
    };
    match wire::id_of(holder, &["contactId", "contact_id", "id"]) {
        Ok(id) => Ok(Some(id)),
        Err(_)
            if ["contactId", "contact_id", "id"]
                .iter()
                .all(|k| holder.get(*k).is_none_or(Value::is_null)) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The answer of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedBody {
    /// The contact id.
    pub contact_id: String,
    /// The answer says the contact already existed.
    pub existed: bool,
}

/// Decodes a create answer `{"success": true, "data": {"message", "contactId"}}` (the id
/// at the root is accepted too).
pub fn decode_created(body: &[u8]) -> Result<CreatedBody, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let obj = wire::as_object(&root, "the create answer")?;
    let data = match obj.get("data") {
        Some(Value::Object(data)) => data,
        _ => obj,
    };
    let contact_id = wire::id_of(data, &["contactId", "contact_id", "id"])
        .or_else(|_| wire::id_of(obj, &["contactId", "contact_id", "id"]))?;
    let message = wire::text_of_any(data, &["message"])
        .or_else(|| wire::text_of_any(obj, &["message"]))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let flagged = ["existed", "alreadyExists", "exists"]
        .iter()
        .find_map(|k| wire::lenient_bool(data.get(*k).or_else(|| obj.get(*k))))
        .or_else(|| {
            ["isNew", "created"]
                .iter()
                .find_map(|k| wire::lenient_bool(data.get(*k).or_else(|| obj.get(*k))))
                .map(|new| !new)
        });
    let existed =
        flagged.unwrap_or_else(|| message.contains("exist") && !message.contains("new contact"));
    Ok(CreatedBody {
        contact_id,
        existed,
    })
}

/// Decodes a contact's tags: a bare list of `{name, description}` (or of names), or the
/// list under `data` / `tags`.
pub fn decode_tags(body: &[u8]) -> Result<Tags, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let list = match &root {
        Value::Object(obj) => obj
            .get("tags")
            .or_else(|| obj.get("data"))
            .ok_or_else(|| DecodeError::new("the tag answer holds no list"))?,
        other => other,
    };
    if list.is_null() {
        return Ok(Tags::new());
    }
    Ok(wire::tag_names(list)?.iter().collect())
}

fn unsupported(http: &HttpDriver, operation: &str, why: &str, hint: &str) -> ProviderError {
    http.error(operation, ErrorKind::Permanent, why)
        .with_hint(hint)
}

impl Provider for DmChamp {
    fn name(&self) -> &str {
        self.http.provider()
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Dmchamp
    }

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    fn health(&self) -> Option<&super::http::Health> {
        Some(self.http.health())
    }

    async fn list_page(&self, _cursor: Option<&str>) -> Result<Page, ProviderError> {
        Err(unsupported(
            &self.http,
            "list contacts",
            "DM Champ cannot list contacts",
            "DM Champ is a push target looked up by phone or email",
        ))
    }

    async fn list_tag_names(&self) -> Result<Vec<String>, ProviderError> {
        Err(unsupported(
            &self.http,
            "list tags",
            "DM Champ cannot list contacts by tag",
            "DM Champ tags are read per contact",
        ))
    }

    async fn list_tag_page(
        &self,
        _tag: &str,
        _cursor: Option<&str>,
    ) -> Result<TagPage, ProviderError> {
        Err(unsupported(
            &self.http,
            "list tagged contacts",
            "DM Champ cannot list contacts by tag",
            "DM Champ tags are read per contact",
        ))
    }

    async fn lookup(&self, key: LookupKey<'_>) -> Result<Option<RemoteRecord>, ProviderError> {
        let empty = match key {
            LookupKey::Phone(v) | LookupKey::Email(v) | LookupKey::SourceId(v) => {
                v.trim().is_empty()
            }
        };
        if empty {
            return Ok(None);
        }
        Ok(self.lookup_id(key).await?.map(|remote_id| RemoteRecord {
            remote_id,
            fields: Fields::new(),
            tags: None,
        }))
    }

    async fn create(&self, fields: &Fields, tags: &Tags) -> Result<Created, ProviderError> {
        let phone = fields.get(field::PHONE).map_or("", String::as_str).trim();
        if phone.is_empty() {
            return Err(self
                .http
                .error(
                    "create contact",
                    ErrorKind::Permanent,
                    "DM Champ needs a phone to create a contact",
                )
                .with_hint("Contacts without a phone are skipped for DM Champ"));
        }
        let mut body = Map::new();
        body.insert("phoneNumber".into(), Value::String(phone.to_owned()));
        for (name, key) in [
            (field::FIRST_NAME, "firstName"),
            (field::LAST_NAME, "lastName"),
            (field::EMAIL, "email"),
            (field::SOURCE_ID, "externalId"),
        ] {
            if let Some(value) = fields.get(name).filter(|v| !v.is_empty()) {
                body.insert(key.into(), Value::String(value.clone()));
            }
        }
        let request = ApiRequest::new(Method::POST, self.url(&["contacts"]), "create contact")
            .json(&Value::Object(body));
        let response = self.http.send(request, Idempotency::NonIdempotent).await?;
        let created = if response.is_success() {
            let decoded = self.http.decode(&response, decode_created)?;
            Created {
                remote_id: decoded.contact_id,
                existed: decoded.existed,
            }
        } else if (400..500).contains(&response.status()) && says_already_exists(&response) {
            let Some(remote_id) = self.lookup_id(LookupKey::Phone(phone)).await? else {
                return Err(self
                    .http
                    .status_error(&response)
                    .with_kind(ErrorKind::AlreadyExists)
                    .with_conflicting(vec![field::PHONE.to_owned()])
                    .with_hint(
                        "DM Champ says the contact exists but the phone lookup finds none; it may exist under the email",
                    ));
            };
            Created {
                remote_id,
                existed: true,
            }
        } else {
            return Err(self.http.status_error(&response));
        };
        if !tags.is_empty() {
            let names: Vec<String> = tags.names().map(str::to_owned).collect();
            let digits = wire::phone_digits(phone);
            self.add_tags_by(&ContactRef::Phone(digits), &names).await?;
        }
        Ok(created)
    }

    async fn update(&self, target: Target<'_>, changes: &Fields) -> Result<(), ProviderError> {
        let id = target.remote_id;
        let operation = format!("update contact {id}");
        if changes.contains_key(field::PHONE) {
            return Err(self
                .http
                .error(
                    &operation,
                    ErrorKind::Permanent,
                    "DM Champ cannot change the phone of an existing contact",
                )
                .with_hint("Change the phone in DM Champ itself; contact-sync keeps names and email in step"));
        }
        if changes.contains_key(field::SOURCE_ID) {
            return Err(self
                .http
                .error(
                    &operation,
                    ErrorKind::Permanent,
                    "DM Champ accepts externalId only when a contact is created",
                )
                .with_hint("The external id of an existing DM Champ contact cannot be changed through its API"));
        }
        let mut body = Map::new();
        for (name, key) in [
            (field::FIRST_NAME, "firstName"),
            (field::LAST_NAME, "lastName"),
            (field::EMAIL, "email"),
        ] {
            if let Some(value) = changes.get(name) {
                body.insert(key.into(), Value::String(value.clone()));
            }
        }
        if body.is_empty() {
            return Ok(());
        }
        let request = ApiRequest::new(Method::PUT, self.url(&["contacts", id]), operation)
            .json(&Value::Object(body));
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        self.http.expect_success(&response)
    }

    async fn read_tags(&self, remote_id: &str) -> Result<Tags, ProviderError> {
        let request = ApiRequest::get(
            self.url(&["contacts", "tags", remote_id]),
            format!("read tags of contact {remote_id}"),
        );
        self.http
            .fetch(request, Idempotency::Idempotent, decode_tags)
            .await
    }

    async fn add_tags(&self, target: Target<'_>, add: &[String]) -> Result<(), ProviderError> {
        let Some(contact) = ContactRef::of(target.fields) else {
            return Err(self.http.error(
                "add tags",
                ErrorKind::Permanent,
                "DM Champ tags a contact by phone or email, and this contact has neither",
            ));
        };
        self.add_tags_by(&contact, add).await
    }

    async fn remove_tags(
        &self,
        _target: Target<'_>,
        _remove: &[String],
    ) -> Result<(), ProviderError> {
        Err(unsupported(
            &self.http,
            "remove tags",
            "DM Champ has no way to remove a tag through its API",
            "Tag removals are skipped for DM Champ",
        ))
    }

    async fn delete(&self, _remote_id: &str) -> Result<(), ProviderError> {
        Err(unsupported(
            &self.http,
            "delete contact",
            "DM Champ has no way to delete a contact through its API",
            "Deletes are never propagated to DM Champ",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_answers() {
        assert_eq!(
            decode_lookup(br#"{"success": true, "contactId": "abc123"}"#).unwrap(),
            Some("abc123".to_owned())
        );
        assert_eq!(
            decode_lookup(br#"{"success": true, "contactId": 42}"#).unwrap(),
            Some("42".to_owned())
        );
        assert_eq!(
            decode_lookup(br#"{"success": false, "message": "nope"}"#).unwrap(),
            None
        );
        assert!(decode_lookup(br#""Invalid API key""#).is_err());
    }

    #[test]
    fn created_answers() {
        let c = decode_created(
            br#"{"success": true, "data": {"message": "Successfully created new contact", "contactId": "abc"}}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            CreatedBody {
                contact_id: "abc".into(),
                existed: false
            }
        );
        let c = decode_created(br#"{"success": true, "data": {"message": "Contact already exists", "contactId": "abc"}}"#)
            .unwrap();
        assert!(c.existed);
    }

    #[test]
    fn tag_lists() {
        let tags = decode_tags(br#"[{"name": "VIP", "description": ""}, "lead"]"#).unwrap();
        assert_eq!(tags.len(), 2);
        assert!(decode_tags(br#"{"tags": null}"#).unwrap().is_empty());
    }
}
