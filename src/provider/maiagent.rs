//! MaiAgent adapter (`/api/contacts/`, header `Authorization: Api-Key <key>`).
//!
//! Owns the MaiAgent wire format and its uncertainties (see `docs/providers.md`,
//! "MaiAgent"):
//! - the listing is DRF-paginated; the cursor is the absolute `next` URL, with its scheme,
//!   host and port rewritten to the configured base (a proxy may hand out `http://` or an
//!   internal host, and the API key must never travel to another host);
//! - camelCase and snake_case keys are both read; `phoneNumber` may be a number;
//!   timestamps are not read (any form is accepted); `results` may be nested one level
//!   deeper (`[[{…}]]`, the docs' example);
//! - a 404 on a `next` page means the listing shrank during the scan: the error kind is
//!   [`ErrorKind::ListingChanged`] and the engine restarts from the first page;
//! - updates are `PATCH` with only the changed keys (`null` clears email, phone and
//!   source id); `queryMetadata` is sent whole, built from the target's `attr.*` fields,
//!   because a JSON field is replaced, not merged;
//! - lookup by source id is `?query=` (fuzzy), by phone or email `?search=` (full-text,
//!   fields undocumented), each plus an exact check here;
//! - the API root is `<base>/api/`; a base URL already ending in `/api` or `/api/v1` is
//!   used as it is (`/api/v1/` is the examples repo's prefix).

// `ProviderError` is large by design (context for the human); errors are the cold path.
#![allow(clippy::result_large_err)]

use super::settings::{KindProblem, KindSettings, ProviderSettings};
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

/// Page size asked for (the server may clamp or ignore it).
pub const PAGE_SIZE: u32 = 100;
/// Most pages followed when looking a source id up through the fuzzy `query` filter.
const LOOKUP_MAX_PAGES: usize = 10;

/// What the MaiAgent adapter can do.
pub const CAPABILITIES: Capabilities = Capabilities {
    enumerate: true,
    lookups: &[LookupKind::SourceId, LookupKind::Phone, LookupKind::Email],
    lookup_returns_fields: true,
    tags_read: false,
    tags_add: false,
    tags_on_create: false,
    tags_remove: false,
    create_finds_phone: false,
    tags_by_listing: false,
    needs_phone: false,
    phone_mutable: true,
    source_id_mutable: true,
    tags_read_by_id: false,
    delete: true,
    fields: &[field::NAME, field::EMAIL, field::PHONE, field::SOURCE_ID],
    attrs: true,
    external_key: Some("sourceId"),
};

/// A MaiAgent organisation.
#[derive(Debug)]
pub struct MaiAgent {
    http: HttpDriver,
    base: Url,
    root: Url,
    inbox_id: Option<String>,
}

impl Adapter for MaiAgent {
    const KIND: &'static str = "maiagent";
    const BASE_URL: BaseUrl = BaseUrl::Default("https://api.maiagent.ai");
    const KIND_KEYS: &'static [&'static str] = &["inbox_id"];

    fn validate_kind_settings(
        table: &KindSettings,
        push: bool,
    ) -> Result<KindSettings, Vec<KindProblem>> {
        match table.text("inbox_id") {
            Some(inbox_id) => Ok(KindSettings::new().with("inbox_id", inbox_id)),
            None if push => Err(vec![KindProblem::new(
                "inbox_id",
                "required for maiagent when push = true: new contacts are created in this inbox (its UUID); or set push = false",
            )]),
            None => Ok(KindSettings::new()),
        }
    }

    /// A client for `settings` (`inbox_id` is needed only to create contacts).
    fn new(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let base = &settings.base_url;
        let segments: Vec<&str> = base
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let root = if segments.ends_with(&["api", "v1"]) {
            http::api_root(&settings.name, base, &[])?
        } else {
            http::api_root(&settings.name, base, &["api"])?
        };
        let hint = format!(
            "Check api_key_env / api_key_file of provider `{}`: MaiAgent wants an API key from the MaiAgent console, sent as `Authorization: Api-Key <key>`",
            settings.name
        );
        let http = HttpDriver::new(
            settings,
            AuthStyle::Header {
                name: "authorization",
                prefix: "Api-Key ",
            },
            hint,
        )?;
        Ok(Self {
            http,
            base: base.clone(),
            root,
            inbox_id: settings.kind_settings.text("inbox_id"),
        })
    }
}

impl MaiAgent {
    fn contacts_url(&self) -> Url {
        http::join(&self.root, &["contacts", ""])
    }

    fn contact_url(&self, id: &str) -> Url {
        http::join(&self.root, &["contacts", id, ""])
    }

    fn write_error(&self, response: &http::ApiResponse) -> ProviderError {
        let error = self.http.status_error(response);
        if response.status() != 400 {
            return error;
        }
        let conflicting = duplicate_fields(response.body());
        if conflicting.is_empty() {
            error.with_hint("MaiAgent refused the values (400); see the message")
        } else {
            error
                .with_conflicting(conflicting)
                .with_kind(ErrorKind::AlreadyExists)
        }
    }
}

/// One decoded page of contacts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactPage {
    /// The contacts on the page.
    pub records: Vec<RemoteRecord>,
    /// `count` (total matching contacts), when present.
    pub count: Option<u64>,
    /// The `next` link as the server sent it; `None` on the last page.
    pub next: Option<String>,
}

/// Decodes a DRF page `{"count", "next", "previous", "results": [...]}`; `results`
/// nested one level deeper and a bare list (no pagination) are accepted.
pub fn decode_contact_page(body: &[u8]) -> Result<ContactPage, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let (items, count, next) = match &root {
        Value::Array(items) => (items.as_slice(), None, None),
        Value::Object(obj) => {
            let items = match obj.get("results").or_else(|| obj.get("data")) {
                Some(Value::Array(items)) => items.as_slice(),
                Some(Value::Null) | None => &[],
                Some(other) => {
                    return Err(DecodeError::new(format!(
                        "`results` is not a list of contacts: {}",
                        wire::excerpt(other.to_string().as_bytes())
                    )));
                }
            };
            let next = match obj.get("next") {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Some(Value::String(_) | Value::Null) | None => None,
                Some(other) => {
                    return Err(DecodeError::new(format!(
                        "`next` is not a URL: {}",
                        wire::excerpt(other.to_string().as_bytes())
                    )));
                }
            };
            (items, wire::lenient_u64(obj.get("count")), next)
        }
        other => {
            return Err(DecodeError::new(format!(
                "the contact page is not a JSON object: {}",
                wire::excerpt(other.to_string().as_bytes())
            )));
        }
    };
    let mut records = Vec::with_capacity(items.len());
    for item in items {
        match item {
            // The docs' example nests the list one level deeper: `[[{…}]]`.
            Value::Array(inner) => {
                for contact in inner {
                    records.push(decode_contact_value(contact)?);
                }
            }
            contact => records.push(decode_contact_value(contact)?),
        }
    }
    Ok(ContactPage {
        records,
        count,
        next,
    })
}

/// Decodes one contact object (camelCase or snake_case).
pub fn decode_contact_value(value: &Value) -> Result<RemoteRecord, DecodeError> {
    let obj = wire::as_object(value, "a contact")?;
    let remote_id = wire::id_of(obj, &["id", "uuid"])?;
    let mut fields = Fields::new();
    fields.insert(field::NAME.into(), wire::field_text(obj, &["name"])?);
    fields.insert(field::EMAIL.into(), wire::field_text(obj, &["email"])?);
    fields.insert(
        field::PHONE.into(),
        wire::field_text(obj, &["phoneNumber", "phone_number", "phone"])?,
    );
    fields.insert(
        field::SOURCE_ID.into(),
        wire::field_text(obj, &["sourceId", "source_id"])?,
    );
    if let Some(meta) = wire::object_of(obj, &["queryMetadata", "query_metadata"]) {
        for (key, value) in &meta {
            fields.insert(attr_field(key), wire::value_text(value));
        }
    }
    Ok(RemoteRecord {
        remote_id,
        fields,
        tags: None,
    })
}

/// Decodes a single-contact answer (create, update): the contact at the root or under
/// `data` / `contact`.
pub fn decode_contact(body: &[u8]) -> Result<RemoteRecord, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let obj = wire::as_object(&root, "the contact answer")?;
    match obj.get("data").or_else(|| obj.get("contact")) {
        Some(inner @ Value::Object(_)) if !obj.contains_key("id") => decode_contact_value(inner),
        _ => decode_contact_value(&root),
    }
}

/// `next` rewritten onto `base`'s scheme, host and port (a relative `next` is resolved
/// against `base`).
pub fn rewrite_next(next: &str, base: &Url) -> Result<Url, DecodeError> {
    let mut url = match Url::parse(next) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => base
            .join(next)
            .map_err(|e| DecodeError::new(format!("`next` is not a URL ({e})")))?,
        Err(e) => return Err(DecodeError::new(format!("`next` is not a URL ({e})"))),
    };
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(DecodeError::new("`next` is not an http(s) URL"));
    }
    let moved = url.scheme() != base.scheme()
        || url.host_str() != base.host_str()
        || url.port_or_known_default() != base.port_or_known_default();
    if moved {
        url.set_scheme(base.scheme())
            .map_err(|()| DecodeError::new("`next` cannot be moved onto base_url"))?;
        url.set_host(base.host_str())
            .map_err(|e| DecodeError::new(format!("`next` cannot be moved onto base_url ({e})")))?;
        url.set_port(base.port())
            .map_err(|()| DecodeError::new("`next` cannot be moved onto base_url"))?;
    }
    url.set_username("").ok();
    url.set_password(None).ok();
    Ok(url)
}

/// The fields a DRF 400 body reports as duplicates (`{"sourceId": ["… already exists."]}`).
fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    obj.iter()
        .filter(|(_, v)| {
            let text = wire::value_text(v).to_ascii_lowercase();
            text.contains("already exists") || text.contains("unique")
        })
        .map(|(k, _)| match k.as_str() {
            "sourceId" | "source_id" => field::SOURCE_ID.to_owned(),
            "phoneNumber" | "phone_number" => field::PHONE.to_owned(),
            other => other.to_owned(),
        })
        .collect()
}

/// The MaiAgent spelling of our writable fields.
fn wire_name(name: &str) -> Option<&'static str> {
    match name {
        field::NAME => Some("name"),
        field::EMAIL => Some("email"),
        field::PHONE => Some("phoneNumber"),
        field::SOURCE_ID => Some("sourceId"),
        _ => None,
    }
}

/// The `queryMetadata` object for `fields` (`attr.*`, empty values left out).
fn metadata_of(fields: &Fields) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(field::ATTR_PREFIX)?;
            (!value.is_empty()).then(|| (key.to_owned(), Value::String(value.clone())))
        })
        .collect()
}

fn unsupported(http: &HttpDriver, operation: &str) -> ProviderError {
    http.error(
        operation,
        ErrorKind::Permanent,
        "MaiAgent contacts have no tags",
    )
    .with_hint("MaiAgent holds no tags; tag changes for it are skipped")
}

impl Provider for MaiAgent {
    fn name(&self) -> &str {
        self.http.provider()
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Maiagent
    }

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    fn health(&self) -> Option<&super::http::Health> {
        Some(self.http.health())
    }

    async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let (url, operation) = match cursor {
            None => {
                let mut url = self.contacts_url();
                url.query_pairs_mut()
                    .append_pair("page", "1")
                    .append_pair("pageSize", &PAGE_SIZE.to_string());
                (url, "list contacts page 1".to_owned())
            }
            Some(cursor) => {
                let url = rewrite_next(cursor, &self.base).map_err(|e| {
                    self.http.error(
                        "list contacts",
                        ErrorKind::Permanent,
                        &format!("bad cursor: {e}"),
                    )
                })?;
                let page = url
                    .query_pairs()
                    .find(|(k, _)| k == "page" || k == "offset")
                    .map_or_else(|| "next page".to_owned(), |(k, v)| format!("{k} {v}"));
                (url, format!("list contacts {page}"))
            }
        };
        let response = self
            .http
            .send(ApiRequest::get(url, operation), Idempotency::Idempotent)
            .await?;
        if cursor.is_some() && response.status() == 404 {
            return Err(self
                .http
                .status_error(&response)
                .with_kind(ErrorKind::ListingChanged));
        }
        let decoded = self.http.decode(&response, decode_contact_page)?;
        let next = match decoded.next {
            None => None,
            Some(next) => Some(
                rewrite_next(&next, &self.base)
                    .map_err(|e| self.http.malformed(response.operation(), &e))?
                    .to_string(),
            ),
        };
        // An empty page with a `next` would loop forever on a broken server.
        let next = next.filter(|_| !decoded.records.is_empty());
        // Pages are numbered: a full first page with a count tells how many there are.
        let last_page = decoded
            .count
            .filter(|_| cursor.is_none() && decoded.records.len() == PAGE_SIZE as usize)
            .map(|count| count.div_ceil(u64::from(PAGE_SIZE)));
        Ok(Page {
            records: decoded.records,
            next,
            last_page,
        })
    }

    fn page_cursor(&self, number: u64) -> Option<String> {
        let mut url = self.contacts_url();
        url.query_pairs_mut()
            .append_pair("page", &number.to_string())
            .append_pair("pageSize", &PAGE_SIZE.to_string());
        Some(url.to_string())
    }

    async fn list_tag_names(&self) -> Result<Vec<String>, ProviderError> {
        Err(unsupported(&self.http, "list tags"))
    }

    async fn list_tag_page(
        &self,
        _tag: &str,
        _cursor: Option<&str>,
    ) -> Result<TagPage, ProviderError> {
        Err(unsupported(&self.http, "list tagged contacts"))
    }

    async fn lookup(&self, key: LookupKey<'_>) -> Result<Option<RemoteRecord>, ProviderError> {
        // Source id: the documented `query` (fuzzy over name, source id and id). Phone and
        // email: the full-text `search` [inferred: its fields are not documented], by the
        // phone's digits (a stored `+` or a number both contain them). Every result is
        // checked exactly here, whatever the server matched.
        let (param, term, operation): (&str, String, &str) = match key {
            LookupKey::SourceId(s) => ("query", s.to_owned(), "look up contact by source id"),
            LookupKey::Phone(p) => ("search", digits(p), "look up contact by phone"),
            LookupKey::Email(e) => ("search", e.trim().to_owned(), "look up contact by email"),
        };
        if term.is_empty() {
            return Ok(None);
        }
        let is_it = |r: &RemoteRecord| {
            let held = |f: &str| r.fields.get(f).map_or("", |v| v.trim());
            match key {
                LookupKey::SourceId(s) => held(field::SOURCE_ID) == s,
                LookupKey::Phone(_) => digits(held(field::PHONE)) == term,
                LookupKey::Email(e) => held(field::EMAIL).eq_ignore_ascii_case(e.trim()),
            }
        };
        let mut url = self.contacts_url();
        url.query_pairs_mut()
            .append_pair(param, &term)
            .append_pair("pageSize", &PAGE_SIZE.to_string());
        for _ in 0..LOOKUP_MAX_PAGES {
            let request = ApiRequest::get(url, operation);
            let page = self
                .http
                .fetch(request, Idempotency::Idempotent, decode_contact_page)
                .await?;
            if let Some(found) = page.records.into_iter().find(|r| is_it(r)) {
                return Ok(Some(found));
            }
            match page.next {
                Some(next) => {
                    url = rewrite_next(&next, &self.base)
                        .map_err(|e| self.http.malformed(operation, &e))?;
                }
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    fn can_find_created(&self) -> bool {
        true
    }

    /// A create whose answer was lost is searched for by its name (`query` matches names)
    /// and recognised by every key it was sent with (phone, email, source id).
    async fn find_created(&self, sent: &Fields) -> Result<Option<RemoteRecord>, ProviderError> {
        const OPERATION: &str = "confirm an interrupted create";
        let name = sent.get(field::NAME).map_or("", |n| n.trim());
        if name.is_empty() {
            return Err(self.http.error(
                OPERATION,
                ErrorKind::Permanent,
                "the create carried no name to search by",
            ));
        }
        let matches = |r: &RemoteRecord| {
            [field::PHONE, field::EMAIL, field::SOURCE_ID]
                .iter()
                .filter_map(|k| sent.get(*k).filter(|v| !v.is_empty()).map(|v| (*k, v)))
                .all(|(k, v)| {
                    r.fields
                        .get(k)
                        .is_some_and(|held| held.trim().eq_ignore_ascii_case(v.trim()))
                })
        };
        let mut url = self.contacts_url();
        url.query_pairs_mut()
            .append_pair("query", name)
            .append_pair("pageSize", &PAGE_SIZE.to_string());
        for _ in 0..LOOKUP_MAX_PAGES {
            let request = ApiRequest::get(url, OPERATION);
            let page = self
                .http
                .fetch(request, Idempotency::Idempotent, decode_contact_page)
                .await?;
            if let Some(found) = page.records.into_iter().find(|r| matches(r)) {
                return Ok(Some(found));
            }
            match page.next {
                Some(next) => {
                    url = rewrite_next(&next, &self.base)
                        .map_err(|e| self.http.malformed(OPERATION, &e))?;
                }
                None => return Ok(None),
            }
        }
        Err(self.http.error(
            OPERATION,
            ErrorKind::Permanent,
            "too many contacts share its name to tell",
        ))
    }

    async fn create(&self, fields: &Fields, _tags: &Tags) -> Result<Created, ProviderError> {
        let Some(inbox) = &self.inbox_id else {
            return Err(self
                .http
                .error(
                    "create contact",
                    ErrorKind::Permanent,
                    "no inbox_id is configured, and MaiAgent creates contacts only inside an inbox",
                )
                .with_hint("Set inbox_id (the inbox UUID) for this maiagent provider"));
        };
        let mut body = Map::new();
        body.insert("name".into(), Value::String(String::new()));
        for (name, value) in fields {
            if let Some(wire) = wire_name(name)
                && !value.is_empty()
            {
                body.insert(wire.to_owned(), Value::String(value.clone()));
            }
        }
        let metadata = metadata_of(fields);
        if !metadata.is_empty() {
            body.insert("queryMetadata".into(), Value::Object(metadata));
        }
        body.insert("inboxes".into(), json!([{ "id": inbox }]));
        let request = ApiRequest::new(Method::POST, self.contacts_url(), "create contact")
            .json(&Value::Object(body));
        let response = self.http.send(request, Idempotency::NonIdempotent).await?;
        if !response.is_success() {
            return Err(self.write_error(&response));
        }
        let record = self.http.decode(&response, decode_contact)?;
        Ok(Created {
            remote_id: record.remote_id,
            existed: false,
        })
    }

    async fn update(&self, target: Target<'_>, changes: &Fields) -> Result<(), ProviderError> {
        let mut body = Map::new();
        let mut attrs_changed = false;
        for (name, value) in changes {
            if name.starts_with(field::ATTR_PREFIX) {
                attrs_changed = true;
            } else if let Some(wire) = wire_name(name) {
                let value = if value.is_empty() && name != field::NAME {
                    Value::Null
                } else {
                    Value::String(value.clone())
                };
                body.insert(wire.to_owned(), value);
            }
        }
        if attrs_changed {
            let mut all = target.fields.clone();
            all.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
            body.insert("queryMetadata".into(), Value::Object(metadata_of(&all)));
        }
        if body.is_empty() {
            return Ok(());
        }
        let id = target.remote_id;
        let request = ApiRequest::new(
            Method::PATCH,
            self.contact_url(id),
            format!("update contact {id}"),
        )
        .json(&Value::Object(body));
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        if response.is_success() {
            Ok(())
        } else {
            Err(self.write_error(&response))
        }
    }

    async fn read_tags(&self, _remote_id: &str) -> Result<Tags, ProviderError> {
        Err(unsupported(&self.http, "read tags"))
    }

    async fn add_tags(&self, _target: Target<'_>, _add: &[String]) -> Result<(), ProviderError> {
        Err(unsupported(&self.http, "add tags"))
    }

    async fn remove_tags(
        &self,
        _target: Target<'_>,
        _remove: &[String],
    ) -> Result<(), ProviderError> {
        Err(unsupported(&self.http, "remove tags"))
    }

    async fn delete(&self, remote_id: &str) -> Result<(), ProviderError> {
        let request = ApiRequest::new(
            Method::DELETE,
            self.contact_url(remote_id),
            format!("delete contact {remote_id}"),
        );
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        self.http.expect_success(&response)
    }
}

/// The digits of a phone (`+1 (415) 555-0123` → `14155550123`).
fn digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_is_required_only_to_push() {
        let none = KindSettings::new().with("inbox_id", "  ");
        let refused = MaiAgent::validate_kind_settings(&none, true).unwrap_err();
        assert_eq!(refused[0].key, "inbox_id");
        assert!(refused[0].message.contains("required for maiagent"));
        assert_eq!(
            MaiAgent::validate_kind_settings(&none, false).unwrap(),
            KindSettings::new()
        );
        let set = KindSettings::new().with("inbox_id", " 3f2c-uuid ");
        assert_eq!(
            MaiAgent::validate_kind_settings(&set, true)
                .unwrap()
                .text("inbox_id")
                .as_deref(),
            Some("3f2c-uuid")
        );
    }

    #[test]
    fn next_is_moved_onto_the_base() {
        let base = Url::parse("https://api.maiagent.ai").unwrap();
        let next = rewrite_next(
            "http://10.0.0.7:8000/api/contacts/?page=2&pageSize=100",
            &base,
        )
        .unwrap();
        assert_eq!(
            next.as_str(),
            "https://api.maiagent.ai/api/contacts/?page=2&pageSize=100"
        );
        let local = Url::parse("http://127.0.0.1:4100").unwrap();
        let next = rewrite_next("https://public.example/api/contacts/?page=3", &local).unwrap();
        assert_eq!(next.as_str(), "http://127.0.0.1:4100/api/contacts/?page=3");
        let rel = rewrite_next("/api/contacts/?page=4", &local).unwrap();
        assert_eq!(rel.as_str(), "http://127.0.0.1:4100/api/contacts/?page=4");
        assert!(rewrite_next("ftp://x/y", &local).is_err());
    }

    #[test]
    fn snake_case_numbers_and_nesting() {
        let body = br#"{"count": 2, "next": null, "results": [[
            {"id": "u1", "name": "Ann", "phone_number": 886912345678, "source_id": "k1",
             "query_metadata": {"plan": "gold"}, "created_at": "2024-01-01T00:00:00Z"},
            {"id": "u2", "name": null, "phoneNumber": "+1", "sourceId": null, "queryMetadata": null,
             "createdAt": 1751875361000}
        ]]}"#;
        let page = decode_contact_page(body).unwrap();
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.records[0].fields["phone"], "886912345678");
        assert_eq!(page.records[0].fields["source_id"], "k1");
        assert_eq!(page.records[0].fields["attr.plan"], "gold");
        assert_eq!(page.records[1].fields["name"], "");
        assert_eq!(page.records[1].fields["email"], "");
    }

    #[test]
    fn duplicate_source_ids_are_recognised() {
        assert_eq!(
            duplicate_fields(br#"{"sourceId": ["contact with this source id already exists."]}"#),
            vec!["source_id".to_owned()]
        );
        assert!(duplicate_fields(br#"{"name": ["This field is required."]}"#).is_empty());
    }
}
