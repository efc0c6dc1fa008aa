//! Agentalk adapter (`/api/contacts`, header `Authorization: Bearer <orgId>.<secret>`).
//!
//! Owns the Agentalk wire format (`docs/providers.md`, "Agentalk"). No listing:
//! contacts are found by phone (`GET /api/contacts/search?phone=`, checked for an exact
//! E.164 match here) and written through the upsert `POST /api/contacts`, keyed on phone
//! (201 new / 200 existing, both a success). Response bodies are undocumented, so a
//! contact is accepted under `contact`, `data` or the root, with camelCase or snake_case
//! keys, and search results under `results`, `data`, `contacts` or as a bare list.
//!
//! Updates: first/last name and email are re-sent through the upsert (its documented
//! keys); custom attributes go through `PATCH …/fields` (merge); a cleared value is
//! `DELETE …/fields/{key}` (the spec says standard attributes such as `email` count as
//! fields). The phone is the upsert key and cannot be changed. Tags: additive
//! `POST …/tags`, `DELETE …/tags/{name}`; they are read only from search results.

// `ProviderError` is large by design (context for the human); errors are the cold path.
#![allow(clippy::result_large_err)]

use super::settings::ProviderSettings;
use super::http::{self, ApiRequest, AuthStyle, HttpDriver, Idempotency};
use super::wire::{self, DecodeError};
use super::{
    Adapter, BaseUrl, Capabilities, Created, ErrorKind, LookupKey, LookupKind, Page, Provider, ProviderError,
    ProviderKind, TagPage, Target,
};
use crate::domain::{Fields, RemoteRecord, Tags, attr_field, field};
use reqwest::Method;
use serde_json::{Map, Value, json};
use url::Url;

/// Search page size (the API default).
pub const SEARCH_LIMIT: u32 = 50;
/// Most search pages read for one phone lookup.
const LOOKUP_MAX_PAGES: u32 = 10;
/// Keys of the standard attributes, never read as custom `fields`.
const STANDARD_KEYS: &[&str] = &[
    "phone",
    "phoneNumber",
    "phone_number",
    "firstName",
    "first_name",
    "lastName",
    "last_name",
    "email",
];

/// What the Agentalk adapter can do.
pub const CAPABILITIES: Capabilities = Capabilities {
    enumerate: false,
    lookups: &[LookupKind::Phone],
    lookup_returns_fields: true,
    tags_read: true,
    tags_add: true,
    tags_on_create: true,
    tags_remove: true,
    create_finds_phone: false,
    tags_by_listing: false,
    needs_phone: true,
    phone_mutable: false,
    source_id_mutable: true,
    tags_read_by_id: false,
    delete: true,
    fields: &[
        field::FIRST_NAME,
        field::LAST_NAME,
        field::EMAIL,
        field::PHONE,
    ],
    attrs: true,
    external_key: None,
};

/// An Agentalk organisation.
#[derive(Debug)]
pub struct Agentalk {
    http: HttpDriver,
    root: Url,
}

impl Adapter for Agentalk {
    const KIND: &'static str = "agentalk";
    const BASE_URL: BaseUrl = BaseUrl::Default("https://api.agentalk.io");

    /// A client for `settings`.
    fn new(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let root = http::api_root(&settings.name, &settings.base_url, &["api"])?;
        let hint = format!(
            "Check api_key_env / api_key_file of provider `{}`: Agentalk wants an API token of the form <organization-uuid>.<secret> (a JWT is not accepted)",
            settings.name
        );
        let http = HttpDriver::new(
            settings,
            AuthStyle::Header {
                name: "authorization",
                prefix: "Bearer ",
            },
            hint,
        )?;
        Ok(Self { http, root })
    }
}

impl Agentalk {
    fn url(&self, segments: &[&str]) -> Url {
        http::join(&self.root, segments)
    }

    async fn upsert(&self, body: Value, operation: &str) -> Result<(Upserted, u16), ProviderError> {
        let request = ApiRequest::new(Method::POST, self.url(&["contacts"]), operation).json(&body);
        // The upsert is keyed on phone: a second copy updates the same contact.
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        let upserted = self.http.decode(&response, decode_upsert)?;
        Ok((upserted, response.status()))
    }

    async fn clear_field(&self, id: &str, key: &str) -> Result<(), ProviderError> {
        let request = ApiRequest::new(
            Method::DELETE,
            self.url(&["contacts", id, "fields", key]),
            format!("clear field `{key}` of contact {id}"),
        );
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        // Already absent is what we wanted.
        if response.status() == 404 {
            return Ok(());
        }
        self.http.expect_success(&response)
    }
}

/// One decoded search answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPage {
    /// The contacts found.
    pub records: Vec<RemoteRecord>,
    /// `count`, when present.
    pub count: Option<u64>,
}

/// The answer of an upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    /// The contact as returned.
    pub record: RemoteRecord,
    /// `isNew`, when present.
    pub is_new: Option<bool>,
}

/// Decodes a search answer: `{"count", "limit", "offset", "results": [...]}`, the list
/// under `data` / `contacts` / `items` (or `data.results`), or a bare list.
pub fn decode_search(body: &[u8]) -> Result<SearchPage, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let (items, count) = match &root {
        Value::Array(items) => (items.as_slice(), None),
        Value::Object(obj) => {
            let mut list = None;
            for key in ["results", "data", "contacts", "items"] {
                match obj.get(key) {
                    Some(Value::Array(items)) => {
                        list = Some(items.as_slice());
                        break;
                    }
                    Some(Value::Object(inner)) => {
                        if let Some(Value::Array(items)) =
                            inner.get("results").or_else(|| inner.get("contacts"))
                        {
                            list = Some(items.as_slice());
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let count =
                wire::lenient_u64(obj.get("count")).or_else(|| wire::lenient_u64(obj.get("total")));
            match list {
                Some(items) => (items, count),
                None if count == Some(0) || obj.is_empty() => (&[][..], count),
                None => {
                    return Err(DecodeError::new(format!(
                        "the search answer holds no list of contacts: {}",
                        wire::excerpt(body)
                    )));
                }
            }
        }
        other => {
            return Err(DecodeError::new(format!(
                "the search answer is not JSON object or list: {}",
                wire::excerpt(other.to_string().as_bytes())
            )));
        }
    };
    let records = items
        .iter()
        .map(decode_contact_value)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SearchPage { records, count })
}

/// Decodes an upsert answer: `{"isNew", "contact": {...}}`, the contact under `data`, or
/// the contact at the root.
pub fn decode_upsert(body: &[u8]) -> Result<Upserted, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let obj = wire::as_object(&root, "the upsert answer")?;
    let contact = ["contact", "data"]
        .iter()
        .find_map(|k| obj.get(*k).filter(|v| v.is_object()))
        .unwrap_or(&root);
    let record = decode_contact_value(contact)?;
    let is_new = ["isNew", "is_new", "created"]
        .iter()
        .find_map(|k| wire::lenient_bool(obj.get(*k)))
        .or_else(|| {
            contact
                .as_object()
                .and_then(|c| wire::lenient_bool(c.get("isNew").or_else(|| c.get("is_new"))))
        });
    Ok(Upserted { record, is_new })
}

/// Decodes one contact object.
pub fn decode_contact_value(value: &Value) -> Result<RemoteRecord, DecodeError> {
    let obj = wire::as_object(value, "a contact")?;
    let remote_id = wire::id_of(obj, &["id", "contactId", "contact_id", "uuid"])?;
    let custom = wire::object_of(obj, &["fields", "customFields", "custom_fields"]);
    let standard = |keys: &[&str]| -> Result<String, DecodeError> {
        let top = wire::field_text(obj, keys)?;
        if !top.is_empty() {
            return Ok(top);
        }
        match &custom {
            Some(c) => wire::field_text(c, keys),
            None => Ok(top),
        }
    };
    let mut fields = Fields::new();
    fields.insert(
        field::FIRST_NAME.into(),
        standard(&["firstName", "first_name"])?,
    );
    fields.insert(
        field::LAST_NAME.into(),
        standard(&["lastName", "last_name"])?,
    );
    fields.insert(field::EMAIL.into(), standard(&["email"])?);
    fields.insert(
        field::PHONE.into(),
        standard(&["phone", "phoneNumber", "phone_number"])?,
    );
    if let Some(custom) = &custom {
        for (key, value) in custom {
            if !STANDARD_KEYS.contains(&key.as_str()) {
                fields.insert(attr_field(key), wire::value_text(value));
            }
        }
    }
    let tags = match obj.get("tags") {
        Some(v @ Value::Array(_)) => Some(wire::tag_names(v)?.iter().collect::<Tags>()),
        _ => None,
    };
    Ok(RemoteRecord {
        remote_id,
        fields,
        tags,
    })
}

/// The Agentalk upsert key of our standard fields.
fn wire_name(name: &str) -> Option<&'static str> {
    match name {
        field::FIRST_NAME => Some("firstName"),
        field::LAST_NAME => Some("lastName"),
        field::EMAIL => Some("email"),
        _ => None,
    }
}

fn unsupported(http: &HttpDriver, operation: &str, why: &str) -> ProviderError {
    http.error(operation, ErrorKind::Permanent, why)
        .with_hint("Agentalk has no contact listing; it is a push target looked up by phone")
}

impl Provider for Agentalk {
    fn name(&self) -> &str {
        self.http.provider()
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Agentalk
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
            "Agentalk cannot list contacts",
        ))
    }

    async fn list_tag_names(&self) -> Result<Vec<String>, ProviderError> {
        Err(unsupported(
            &self.http,
            "list tags",
            "Agentalk cannot list tags",
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
            "Agentalk cannot list contacts by tag",
        ))
    }

    async fn lookup(&self, key: LookupKey<'_>) -> Result<Option<RemoteRecord>, ProviderError> {
        let LookupKey::Phone(phone) = key else {
            return Err(unsupported(
                &self.http,
                "look up contact",
                "Agentalk contacts can be looked up by phone only",
            ));
        };
        let digits = wire::phone_digits(phone);
        if digits.is_empty() {
            return Ok(None);
        }
        for page in 0..LOOKUP_MAX_PAGES {
            let mut url = self.url(&["contacts", "search"]);
            url.query_pairs_mut()
                .append_pair("phone", phone)
                .append_pair("limit", &SEARCH_LIMIT.to_string())
                .append_pair("offset", &(page * SEARCH_LIMIT).to_string());
            let request = ApiRequest::get(url, "look up contact by phone");
            let found = self
                .http
                .fetch(request, Idempotency::Idempotent, decode_search)
                .await?;
            let n = found.records.len();
            if let Some(hit) = found.records.into_iter().find(|r| {
                r.fields
                    .get(field::PHONE)
                    .is_some_and(|p| wire::phone_digits(p) == digits)
            }) {
                return Ok(Some(hit));
            }
            if n < SEARCH_LIMIT as usize {
                break;
            }
        }
        Ok(None)
    }

    async fn create(&self, fields: &Fields, tags: &Tags) -> Result<Created, ProviderError> {
        let phone = fields.get(field::PHONE).map_or("", String::as_str);
        if phone.is_empty() {
            return Err(self
                .http
                .error(
                    "create contact",
                    ErrorKind::Permanent,
                    "Agentalk needs a phone to create a contact",
                )
                .with_hint("Contacts without a phone are skipped for Agentalk"));
        }
        let mut body = Map::new();
        body.insert("phone".into(), Value::String(phone.to_owned()));
        let mut custom = Map::new();
        for (name, value) in fields {
            if value.is_empty() {
                continue;
            }
            if let Some(key) = name.strip_prefix(field::ATTR_PREFIX) {
                custom.insert(key.to_owned(), Value::String(value.clone()));
            } else if let Some(wire) = wire_name(name) {
                body.insert(wire.to_owned(), Value::String(value.clone()));
            }
        }
        if !custom.is_empty() {
            body.insert("fields".into(), Value::Object(custom));
        }
        if !tags.is_empty() {
            body.insert("tags".into(), json!(tags.names().collect::<Vec<_>>()));
        }
        let (upserted, status) = self.upsert(Value::Object(body), "create contact").await?;
        Ok(Created {
            remote_id: upserted.record.remote_id,
            existed: upserted.is_new.map_or(status == 200, |new| !new),
        })
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
                    "Agentalk keys contacts by phone; the phone of an existing contact cannot be changed through its API",
                )
                .with_hint("Change the phone in Agentalk itself; contact-sync keeps the other fields in step"));
        }
        let mut upsert = Map::new();
        let mut patch = Map::new();
        let mut clear = Vec::new();
        for (name, value) in changes {
            if let Some(key) = name.strip_prefix(field::ATTR_PREFIX) {
                if value.is_empty() {
                    clear.push(key.to_owned());
                } else {
                    patch.insert(key.to_owned(), Value::String(value.clone()));
                }
            } else if let Some(wire) = wire_name(name) {
                if value.is_empty() {
                    clear.push(wire.to_owned());
                } else {
                    upsert.insert(wire.to_owned(), Value::String(value.clone()));
                }
            }
        }
        if !upsert.is_empty() {
            let phone = target.fields.get(field::PHONE).map_or("", String::as_str);
            if phone.is_empty() {
                return Err(self.http.error(
                    &operation,
                    ErrorKind::Permanent,
                    "names and email are written through the phone-keyed upsert, and this contact has no phone",
                ));
            }
            upsert.insert("phone".into(), Value::String(phone.to_owned()));
            let (upserted, _) = self.upsert(Value::Object(upsert), &operation).await?;
            if upserted.record.remote_id != id {
                tracing::warn!(
                    provider = %self.http.provider(),
                    expected = %id,
                    got = %upserted.record.remote_id,
                    "Agentalk upsert answered with another contact id"
                );
            }
        }
        if !patch.is_empty() {
            let request = ApiRequest::new(
                Method::PATCH,
                self.url(&["contacts", id, "fields"]),
                format!("update fields of contact {id}"),
            )
            .json(&json!({ "fields": patch }));
            let response = self.http.send(request, Idempotency::Idempotent).await?;
            self.http.expect_success(&response)?;
        }
        for key in clear {
            self.clear_field(id, &key).await?;
        }
        Ok(())
    }

    async fn read_tags(&self, _remote_id: &str) -> Result<Tags, ProviderError> {
        Err(unsupported(
            &self.http,
            "read tags",
            "Agentalk shows tags only in search results (by phone), not by contact id",
        ))
    }

    async fn add_tags(&self, target: Target<'_>, add: &[String]) -> Result<(), ProviderError> {
        let names: Vec<&str> = add
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let id = target.remote_id;
        let request = ApiRequest::new(
            Method::POST,
            self.url(&["contacts", id, "tags"]),
            format!("add tags to contact {id}"),
        )
        .json(&json!({ "tags": names }));
        let response = self.http.send(request, Idempotency::NonIdempotent).await?;
        self.http.expect_success(&response)
    }

    async fn remove_tags(
        &self,
        target: Target<'_>,
        remove: &[String],
    ) -> Result<(), ProviderError> {
        let id = target.remote_id;
        for tag in remove.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let request = ApiRequest::new(
                Method::DELETE,
                self.url(&["contacts", id, "tags", tag]),
                format!("remove tag from contact {id}"),
            );
            let response = self.http.send(request, Idempotency::Idempotent).await?;
            // Already gone is what we wanted.
            if response.status() != 404 {
                self.http.expect_success(&response)?;
            }
        }
        Ok(())
    }

    async fn delete(&self, remote_id: &str) -> Result<(), ProviderError> {
        let request = ApiRequest::new(
            Method::DELETE,
            self.url(&["contacts", remote_id]),
            format!("delete contact {remote_id}"),
        );
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        self.http.expect_success(&response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_under_any_envelope() {
        for body in [
            &br#"{"isNew": true, "contact": {"id": "c1", "phone": "+1555"}}"#[..],
            br#"{"data": {"id": "c1", "phone": "+1555", "isNew": true}}"#,
            br#"{"id": "c1", "phone": "+1555", "isNew": true}"#,
        ] {
            let up = decode_upsert(body).unwrap();
            assert_eq!(up.record.remote_id, "c1");
            assert_eq!(up.is_new, Some(true));
        }
    }

    #[test]
    fn search_results_carry_tags_and_fields() {
        let body = br#"{"count": 1, "limit": 50, "offset": 0, "results": [
            {"id": "c1", "phone": "+14155550123", "firstName": "Ann", "last_name": null,
             "tags": ["VIP", {"id": "t2", "name": "lead"}], "fields": {"city": "Oslo", "email": "a@x.io"}}]}"#;
        let page = decode_search(body).unwrap();
        let r = &page.records[0];
        assert_eq!(r.fields["first_name"], "Ann");
        assert_eq!(r.fields["last_name"], "");
        assert_eq!(r.fields["email"], "a@x.io");
        assert_eq!(r.fields["attr.city"], "Oslo");
        assert!(!r.fields.contains_key("attr.email"));
        let tags = r.tags.as_ref().unwrap();
        assert!(tags.contains("vip") && tags.contains("LEAD"));
        assert!(decode_search(b"[]").unwrap().records.is_empty());
        assert!(
            decode_search(br#"{"count": 0}"#)
                .unwrap()
                .records
                .is_empty()
        );
    }
}
