//! Chatwoot adapter (`/api/v1/accounts/{account_id}/…`, header `api_access_token`).
//!
//! Owns the Chatwoot wire format and its quirks (see `docs/providers.md`, "Chatwoot"):
//! - listing pages of 15, always with `sort=created_at` and
//!   `include_contact_inboxes=false` (without a sort the order is undefined); the cursor is
//!   the page number; the scan stops on a short or empty page, when `page*15 >= count`, or
//!   when a `has_more: false` says so; `meta.current_page` may be a string or an integer;
//! - exact lookups through `POST /contacts/filter` (`equal_to`), re-checked here because
//!   the filter is case-insensitive on `identifier`;
//! - create answers `payload.contact` (200, not 201); a 422 "has already been taken"
//!   becomes [`ErrorKind::AlreadyExists`] with the colliding attributes in field names
//!   (`email`, `phone`, `source_id`);
//! - labels replace the whole set: tag adds and removes POST the full list computed from
//!   [`Target::tags`], after creating missing account labels so the label listing (how
//!   tags are read) shows them;
//! - `custom_attributes` merge on update; clearing one uses `destroy_custom_attributes`.

// `ProviderError` is large by design (context for the human); errors are the cold path.
#![allow(clippy::result_large_err)]

use super::http::{self, ApiRequest, AuthStyle, HttpDriver, Idempotency};
use super::wire::{self, DecodeError};
use super::settings::{self, KindProblem, KindSettings, ProviderSettings, SettingValue};
use super::{
    Adapter, BaseUrl, Capabilities, Created, ErrorKind, LookupKey, LookupKind, Page, Provider,
    ProviderError, ProviderKind, TagPage, Target,
};
use crate::domain::{Fields, RemoteRecord, Tags, attr_field, field, tag_key};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use tokio::sync::Mutex;
use url::Url;

/// Chatwoot's fixed page size.
pub const PAGE_SIZE: u64 = 15;

/// What the Chatwoot adapter can do.
pub const CAPABILITIES: Capabilities = Capabilities {
    enumerate: true,
    lookups: &[LookupKind::SourceId, LookupKind::Phone, LookupKind::Email],
    lookup_returns_fields: true,
    tags_read: true,
    tags_add: true,
    tags_on_create: true,
    tags_remove: true,
    create_finds_phone: false,
    tags_by_listing: true,
    needs_phone: false,
    phone_mutable: true,
    source_id_mutable: true,
    tags_read_by_id: true,
    delete: true,
    fields: &[field::NAME, field::EMAIL, field::PHONE, field::SOURCE_ID],
    attrs: true,
    external_key: Some("identifier"),
};

/// The key naming the environment variable that holds the webhook signing secret.
pub const WEBHOOK_SECRET_ENV: &str = "webhook_secret_env";
/// The key naming the file that holds the webhook signing secret.
pub const WEBHOOK_SECRET_FILE: &str = "webhook_secret_file";
/// The key that lets unsigned webhook events in (older Chatwoot versions do not sign).
pub const WEBHOOK_ALLOW_UNSIGNED: &str = "webhook_allow_unsigned";

/// The form of the webhook keys: at most one secret source, a boolean
/// `webhook_allow_unsigned`, and not both a secret and unsigned events.
fn check_webhook_keys(table: &KindSettings) -> Result<(), Vec<KindProblem>> {
    let mut problems = Vec::new();
    let env = table.text(WEBHOOK_SECRET_ENV);
    let file = table.text(WEBHOOK_SECRET_FILE);
    if env.is_some() && file.is_some() {
        problems.push(KindProblem::new(
            WEBHOOK_SECRET_ENV,
            "set only one of webhook_secret_env and webhook_secret_file",
        ));
    }
    let unsigned = match table.get(WEBHOOK_ALLOW_UNSIGNED) {
        None => false,
        Some(SettingValue::Bool(b)) => *b,
        Some(other) => match other.to_text().as_str() {
            "true" => true,
            "false" => false,
            text => {
                problems.push(KindProblem::new(
                    WEBHOOK_ALLOW_UNSIGNED,
                    format!("`{text}` is not true or false"),
                ));
                false
            }
        },
    };
    if unsigned && (env.is_some() || file.is_some()) {
        problems.push(KindProblem::new(
            WEBHOOK_ALLOW_UNSIGNED,
            "a provider with a webhook secret accepts signed events only; remove webhook_allow_unsigned, or the secret if your Chatwoot does not sign",
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// A Chatwoot account.
#[derive(Debug)]
pub struct Chatwoot {
    http: HttpDriver,
    account: Url,
    inbox_id: Option<u64>,
    /// Lower-cased titles of the account labels known to exist (filled on first use).
    labels: Mutex<Option<BTreeSet<String>>>,
}

/// The Chatwoot-only keys of a provider table, checked.
struct Ids {
    /// The account (the number in the app URL `/app/accounts/N`).
    account_id: u64,
    /// The inbox new contacts are attached to, if any.
    inbox_id: Option<u64>,
}

impl Ids {
    /// Reads `account_id` (required, a positive integer) and `inbox_id` (optional, an
    /// integer); every problem is returned.
    fn read(table: &KindSettings) -> Result<Self, Vec<KindProblem>> {
        let mut problems = Vec::new();
        let account_id = match table.text("account_id") {
            None => {
                problems.push(KindProblem::new(
                    "account_id",
                    "required for chatwoot: the number in your Chatwoot URL (/app/accounts/<id>/...)",
                ));
                None
            }
            Some(text) => text.parse::<u64>().ok().or_else(|| {
                problems.push(KindProblem::new(
                    "account_id",
                    format!("`{text}` is not a positive integer"),
                ));
                None
            }),
        };
        let inbox_id = table.text("inbox_id").and_then(|text| {
            text.parse::<u64>().ok().or_else(|| {
                problems.push(KindProblem::new(
                    "inbox_id",
                    format!("`{text}` is not an integer (chatwoot inbox ids are numbers)"),
                ));
                None
            })
        });
        match account_id {
            Some(account_id) if problems.is_empty() => Ok(Self {
                account_id,
                inbox_id,
            }),
            _ => Err(problems),
        }
    }
}

impl Adapter for Chatwoot {
    const KIND: &'static str = "chatwoot";
    const BASE_URL: BaseUrl = BaseUrl::Required {
        example: "https://app.chatwoot.com",
    };
    const KIND_KEYS: &'static [&'static str] = &[
        "account_id",
        "inbox_id",
        WEBHOOK_SECRET_ENV,
        WEBHOOK_SECRET_FILE,
        WEBHOOK_ALLOW_UNSIGNED,
    ];

    /// Checks `account_id` and `inbox_id` (kept, normalised) and the webhook keys (their
    /// form only: the config reads the secret and shows it as `***`, so they are not
    /// kept here).
    fn validate_kind_settings(
        table: &KindSettings,
        _push: bool,
    ) -> Result<KindSettings, Vec<KindProblem>> {
        let webhook = check_webhook_keys(table);
        let ids = Ids::read(table);
        let ids = match (ids, webhook) {
            (Ok(ids), Ok(())) => ids,
            (ids, webhook) => {
                let mut problems = ids.err().unwrap_or_default();
                problems.extend(webhook.err().unwrap_or_default());
                return Err(problems);
            }
        };
        let mut normalised = KindSettings::new().with("account_id", ids.account_id);
        if let Some(inbox_id) = ids.inbox_id {
            normalised.insert("inbox_id", inbox_id.to_string());
        }
        Ok(normalised)
    }

    /// A client for the account in `settings` (`account_id` is required).
    fn new(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let Ids {
            account_id,
            inbox_id,
        } = Ids::read(&settings.kind_settings)
            .map_err(|problems| settings::refused(&settings.name, &problems))?;
        let account = http::api_root(
            &settings.name,
            &settings.base_url,
            &["api", "v1", "accounts", &account_id.to_string()],
        )?;
        let hint = format!(
            "Check api_key_env / api_key_file of provider `{}`: Chatwoot wants the access token of a user (Profile settings → Access Token) who is an agent or administrator of account {account_id}; bot tokens cannot use the contacts API",
            settings.name
        );
        let http = HttpDriver::new(
            settings,
            AuthStyle::Header {
                name: "api_access_token",
                prefix: "",
            },
            hint,
        )?;
        Ok(Self {
            http,
            account,
            inbox_id,
            labels: Mutex::new(None),
        })
    }
}

impl Chatwoot {
    fn url(&self, segments: &[&str]) -> Url {
        http::join(&self.account, segments)
    }

    fn contacts_url(&self, page: u64, label: Option<&str>) -> Url {
        let mut url = self.url(&["contacts"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(label) = label {
                q.append_pair("labels[]", label);
            }
            q.append_pair("page", &page.to_string())
                .append_pair("sort", "created_at")
                .append_pair("include_contact_inboxes", "false");
        }
        url
    }

    fn parse_page_cursor(
        &self,
        cursor: Option<&str>,
        operation: &str,
    ) -> Result<u64, ProviderError> {
        match cursor {
            None => Ok(1),
            Some(c) => c
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| {
                    self.http.error(
                        operation,
                        ErrorKind::Permanent,
                        &format!("`{c}` is not a Chatwoot page cursor"),
                    )
                }),
        }
    }

    /// The 422 of a create or update: "has already been taken" → AlreadyExists with the
    /// colliding attributes; anything else stays as classified.
    fn write_error(&self, response: &http::ApiResponse) -> ProviderError {
        let error = self.http.status_error(response);
        if response.status() != 422 {
            return error;
        }
        let body = decode_error_body(response.body());
        if body.taken && !body.attributes.is_empty() {
            error
                .with_conflicting(body.attributes)
                .with_kind(ErrorKind::AlreadyExists)
        } else {
            error.with_hint(
                "Chatwoot refused the values (422): phones must be E.164 (+ and digits), emails valid, texts at most 255 characters",
            )
        }
    }

    async fn known_labels(&self) -> Result<BTreeSet<String>, ProviderError> {
        if let Some(known) = self.labels.lock().await.clone() {
            return Ok(known);
        }
        let names = self.fetch_label_names().await?;
        let known: BTreeSet<String> = names.iter().filter_map(|n| tag_key(n)).collect();
        *self.labels.lock().await = Some(known.clone());
        Ok(known)
    }

    async fn fetch_label_names(&self) -> Result<Vec<String>, ProviderError> {
        let request = ApiRequest::get(self.url(&["labels"]), "list account labels");
        self.http
            .fetch(request, Idempotency::Idempotent, decode_labels)
            .await
    }

    /// Creates the account labels missing for `tags`; returns the tags Chatwoot refused
    /// as account labels (titles allow only letters, digits, `-` and `_`).
    async fn ensure_labels(&self, tags: &[String]) -> Result<Vec<String>, ProviderError> {
        let known = self.known_labels().await?;
        let mut refused = Vec::new();
        for tag in tags {
            let Some(key) = tag_key(tag) else { continue };
            if known.contains(&key) {
                continue;
            }
            let request = ApiRequest::new(
                Method::POST,
                self.url(&["labels"]),
                format!("create account label `{}`", tag.trim()),
            )
            .json(&json!({"title": tag.trim(), "show_on_sidebar": false}));
            let response = self.http.send(request, Idempotency::NonIdempotent).await?;
            let already = response.status() == 422
                && wire::error_message(response.body())
                    .to_ascii_lowercase()
                    .contains("taken");
            if response.is_success() || already {
                if let Some(known) = self.labels.lock().await.as_mut() {
                    known.insert(key);
                }
            } else if response.status() == 422 || response.status() == 400 {
                tracing::warn!(
                    provider = %self.http.provider(),
                    tag = %tag.trim(),
                    reason = %wire::error_message(response.body()),
                    "Chatwoot refused the account label"
                );
                refused.push(tag.trim().to_owned());
            } else {
                return Err(self.http.status_error(&response));
            }
        }
        Ok(refused)
    }

    async fn set_labels(
        &self,
        remote_id: &str,
        labels: &Tags,
        operation: String,
    ) -> Result<(), ProviderError> {
        let names: Vec<&str> = labels.names().collect();
        let request = ApiRequest::new(
            Method::POST,
            self.url(&["contacts", remote_id, "labels"]),
            operation,
        )
        .json(&json!({ "labels": names }));
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        self.http.expect_success(&response)
    }
}

/// An account webhook as Chatwoot shows it (`/api/v1/accounts/{id}/webhooks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// Where Chatwoot posts the events.
    pub url: String,
    /// The events it is subscribed to (empty: older versions send every event).
    pub subscriptions: Vec<String>,
    /// The signing secret, when the version returns it [inferred]. Never logged.
    pub secret: Option<String>,
}

/// The events contact-sync subscribes a webhook to.
pub const WEBHOOK_EVENTS: [&str; 2] = ["contact_created", "contact_updated"];

impl Chatwoot {
    /// The account webhooks (`GET …/webhooks`).
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>, ProviderError> {
        let request = ApiRequest::get(self.url(&["webhooks"]), "list account webhooks");
        self.http
            .fetch(request, Idempotency::Idempotent, decode_webhooks)
            .await
    }

    /// Creates an account webhook to `url` subscribed to [`WEBHOOK_EVENTS`]
    /// (`POST …/webhooks`).
    pub async fn create_webhook(&self, url: &str) -> Result<Webhook, ProviderError> {
        let request = ApiRequest::new(
            Method::POST,
            self.url(&["webhooks"]),
            "create an account webhook",
        )
        .json(&webhook_body(url));
        let response = self.http.send(request, Idempotency::NonIdempotent).await?;
        self.http.decode(&response, decode_webhook)
    }

    /// Sets the URL and subscriptions of webhook `id` (`PATCH …/webhooks/{id}`).
    pub async fn update_webhook(&self, id: &str, url: &str) -> Result<Webhook, ProviderError> {
        let request = ApiRequest::new(
            Method::PATCH,
            self.url(&["webhooks", id]),
            format!("update account webhook {id}"),
        )
        .json(&webhook_body(url));
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        self.http.decode(&response, decode_webhook)
    }
}

fn webhook_body(url: &str) -> Value {
    json!({"webhook": {"url": url, "subscriptions": WEBHOOK_EVENTS}})
}

/// Decodes one webhook object.
fn decode_webhook_value(value: &Value) -> Result<Webhook, DecodeError> {
    let obj = wire::as_object(value, "a webhook")?;
    let id = wire::id_of(obj, &["id"])?;
    let subscriptions = obj
        .get("subscriptions")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(wire::value_text).collect())
        .unwrap_or_default();
    Ok(Webhook {
        id,
        url: wire::text_of(obj, &["url"]).unwrap_or_default(),
        subscriptions,
        secret: wire::text_of(obj, &["secret"]).filter(|s| !s.is_empty()),
    })
}

/// Decodes a webhook listing: `{"payload": {"webhooks": […]}}`; a `payload` list or a
/// bare list are accepted too.
pub fn decode_webhooks(body: &[u8]) -> Result<Vec<Webhook>, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let payload = root.get("payload").unwrap_or(&root);
    let items = match payload.get("webhooks").unwrap_or(payload) {
        Value::Array(items) => items,
        other => {
            return Err(DecodeError::new(format!(
                "expected a list of webhooks: {}",
                wire::excerpt(other.to_string().as_bytes())
            )));
        }
    };
    items.iter().map(decode_webhook_value).collect()
}

/// Decodes a create or update answer: `{"payload": {"webhook": {…}}}`; a bare `payload`
/// webhook or a bare webhook are accepted too.
pub fn decode_webhook(body: &[u8]) -> Result<Webhook, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let payload = root.get("payload").unwrap_or(&root);
    decode_webhook_value(payload.get("webhook").unwrap_or(payload))
}

/// One decoded page of contacts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactPage {
    /// The contacts on the page.
    pub records: Vec<RemoteRecord>,
    /// `meta.count` (total matching contacts), when present.
    pub count: Option<u64>,
    /// `meta.current_page` (string or integer), when present.
    pub current_page: Option<u64>,
    /// `has_more` (newer Chatwoot search pagination), when present.
    pub has_more: Option<bool>,
}

impl ContactPage {
    /// How many pages of [`PAGE_SIZE`] the listing has, from `meta.count`, when this
    /// page is full (a short first page is the only page) and the answer is not
    /// `has_more`-paginated.
    pub fn last_page(&self) -> Option<u64> {
        if self.has_more.is_some() || (self.records.len() as u64) < PAGE_SIZE {
            return None;
        }
        self.count.map(|count| count.div_ceil(PAGE_SIZE))
    }

    /// The page after `page`, or `None` when `page` was the last one.
    pub fn next_page(&self, page: u64) -> Option<u64> {
        if self.records.is_empty() {
            return None;
        }
        if let Some(more) = self.has_more {
            return more.then_some(page + 1);
        }
        if (self.records.len() as u64) < PAGE_SIZE {
            return None;
        }
        if self
            .count
            .is_some_and(|count| page.saturating_mul(PAGE_SIZE) >= count)
        {
            return None;
        }
        Some(page + 1)
    }
}

/// Decodes a contact list / filter / search answer:
/// `{"meta": {"count", "current_page"}, "payload": [contact…]}`.
pub fn decode_contact_page(body: &[u8]) -> Result<ContactPage, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let obj = wire::as_object(&root, "the contact page")?;
    let payload = match obj.get("payload") {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Null) | None => &[],
        Some(other) => {
            return Err(DecodeError::new(format!(
                "`payload` is not a list of contacts: {}",
                wire::excerpt(other.to_string().as_bytes())
            )));
        }
    };
    let records = payload
        .iter()
        .map(decode_contact_value)
        .collect::<Result<Vec<_>, _>>()?;
    let meta = obj.get("meta").and_then(Value::as_object);
    Ok(ContactPage {
        records,
        count: meta.and_then(|m| wire::lenient_u64(m.get("count"))),
        current_page: meta.and_then(|m| wire::lenient_u64(m.get("current_page"))),
        has_more: wire::lenient_bool(obj.get("has_more"))
            .or_else(|| meta.and_then(|m| wire::lenient_bool(m.get("has_more")))),
    })
}

/// Decodes one contact object (with or without `contact_inboxes`).
pub fn decode_contact_value(value: &Value) -> Result<RemoteRecord, DecodeError> {
    let obj = wire::as_object(value, "a contact")?;
    let remote_id = wire::id_of(obj, &["id"])?;
    let mut fields = Fields::new();
    fields.insert(field::NAME.into(), wire::field_text(obj, &["name"])?);
    fields.insert(field::EMAIL.into(), wire::field_text(obj, &["email"])?);
    fields.insert(
        field::PHONE.into(),
        wire::field_text(obj, &["phone_number"])?,
    );
    fields.insert(
        field::SOURCE_ID.into(),
        wire::field_text(obj, &["identifier"])?,
    );
    if let Some(attrs) = wire::object_of(obj, &["custom_attributes"]) {
        for (key, value) in &attrs {
            fields.insert(attr_field(key), wire::value_text(value));
        }
    }
    Ok(RemoteRecord {
        remote_id,
        fields,
        tags: None,
    })
}

/// Decodes a create answer: `{"payload": {"contact": {…}, "contact_inbox": …}}`; a bare
/// `payload` contact or a one-element `payload` list are accepted too.
pub fn decode_created(body: &[u8]) -> Result<RemoteRecord, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let obj = wire::as_object(&root, "the create answer")?;
    let payload = obj.get("payload").unwrap_or(&root);
    let contact = match payload {
        Value::Object(p) => p.get("contact").unwrap_or(payload),
        Value::Array(items) => items
            .first()
            .ok_or_else(|| DecodeError::new("the create answer holds no contact"))?,
        other => other,
    };
    decode_contact_value(contact)
}

/// Decodes a label list: `{"payload": [...]}` of names or of `{title}` objects (contact
/// labels and account labels), or a bare list.
pub fn decode_labels(body: &[u8]) -> Result<Vec<String>, DecodeError> {
    let root: Value = wire::decode_json(body)?;
    let list = match &root {
        Value::Object(obj) => obj
            .get("payload")
            .or_else(|| obj.get("labels"))
            .or_else(|| obj.get("data"))
            .ok_or_else(|| DecodeError::new("the label answer has no `payload`"))?,
        other => other,
    };
    if list.is_null() {
        return Ok(Vec::new());
    }
    wire::tag_names(list)
}

struct ErrorBody {
    taken: bool,
    attributes: Vec<String>,
}

fn decode_error_body(body: &[u8]) -> ErrorBody {
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(body).ok();
    let Some(obj) = parsed else {
        return ErrorBody {
            taken: false,
            attributes: Vec::new(),
        };
    };
    let message = wire::text_of(&obj, &["message", "error"]).unwrap_or_default();
    let attributes = obj
        .get("attributes")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|v| field_of_attribute(&wire::value_text(v)))
                .collect()
        })
        .unwrap_or_default();
    ErrorBody {
        taken: message.to_ascii_lowercase().contains("already been taken")
            || message.to_ascii_lowercase().contains("already exists"),
        attributes,
    }
}

/// A Chatwoot attribute name in our field vocabulary.
fn field_of_attribute(attribute: &str) -> String {
    match attribute {
        "phone_number" => field::PHONE.to_owned(),
        "identifier" => field::SOURCE_ID.to_owned(),
        "email" => field::EMAIL.to_owned(),
        "name" => field::NAME.to_owned(),
        other => other.to_owned(),
    }
}

/// The exact-match check behind a filter lookup.
fn matches_key(record: &RemoteRecord, key: LookupKey<'_>) -> bool {
    let get = |f: &str| record.fields.get(f).map_or("", String::as_str);
    match key {
        LookupKey::Phone(phone) => {
            let digits = wire::phone_digits(phone);
            !digits.is_empty() && wire::phone_digits(get(field::PHONE)) == digits
        }
        LookupKey::Email(email) => {
            !email.trim().is_empty() && get(field::EMAIL).trim().eq_ignore_ascii_case(email.trim())
        }
        LookupKey::SourceId(id) => !id.is_empty() && get(field::SOURCE_ID) == id,
    }
}

/// The Chatwoot spelling of our writable fields.
fn wire_name(name: &str) -> Option<&'static str> {
    match name {
        field::NAME => Some("name"),
        field::EMAIL => Some("email"),
        field::PHONE => Some("phone_number"),
        field::SOURCE_ID => Some("identifier"),
        _ => None,
    }
}

impl Provider for Chatwoot {
    fn name(&self) -> &str {
        self.http.provider()
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Chatwoot
    }

    fn capabilities(&self) -> &Capabilities {
        &CAPABILITIES
    }

    fn health(&self) -> Option<&super::http::Health> {
        Some(self.http.health())
    }

    async fn list_page(&self, cursor: Option<&str>) -> Result<Page, ProviderError> {
        let page = self.parse_page_cursor(cursor, "list contacts")?;
        let request = ApiRequest::get(
            self.contacts_url(page, None),
            format!("list contacts page {page}"),
        );
        let decoded = self
            .http
            .fetch(request, Idempotency::Idempotent, decode_contact_page)
            .await?;
        Ok(Page {
            next: decoded.next_page(page).map(|p| p.to_string()),
            last_page: (page == 1).then(|| decoded.last_page()).flatten(),
            records: decoded.records,
        })
    }

    fn page_cursor(&self, number: u64) -> Option<String> {
        Some(number.to_string())
    }

    async fn list_tag_names(&self) -> Result<Vec<String>, ProviderError> {
        let names = self.fetch_label_names().await?;
        *self.labels.lock().await = Some(names.iter().filter_map(|n| tag_key(n)).collect());
        Ok(names)
    }

    async fn list_tag_page(
        &self,
        tag: &str,
        cursor: Option<&str>,
    ) -> Result<TagPage, ProviderError> {
        let page = self.parse_page_cursor(cursor, "list labelled contacts")?;
        let request = ApiRequest::get(
            self.contacts_url(page, Some(tag)),
            format!("list contacts labelled `{tag}` page {page}"),
        );
        let decoded = self
            .http
            .fetch(request, Idempotency::Idempotent, decode_contact_page)
            .await?;
        Ok(TagPage {
            next: decoded.next_page(page).map(|p| p.to_string()),
            last_page: (page == 1).then(|| decoded.last_page()).flatten(),
            remote_ids: decoded.records.into_iter().map(|r| r.remote_id).collect(),
        })
    }

    fn tag_page_cursor(&self, _tag: &str, number: u64) -> Option<String> {
        Some(number.to_string())
    }

    async fn lookup(&self, key: LookupKey<'_>) -> Result<Option<RemoteRecord>, ProviderError> {
        let (attribute, value, what) = match key {
            LookupKey::Phone(v) => ("phone_number", v, "phone"),
            LookupKey::Email(v) => ("email", v, "email"),
            LookupKey::SourceId(v) => ("identifier", v, "identifier"),
        };
        if value.trim().is_empty() {
            return Ok(None);
        }
        let mut url = self.url(&["contacts", "filter"]);
        url.query_pairs_mut()
            .append_pair("page", "1")
            .append_pair("include_contact_inboxes", "false");
        let body = json!({
            "payload": [{
                "attribute_key": attribute,
                "filter_operator": "equal_to",
                "values": [value],
                "query_operator": null,
            }]
        });
        let request =
            ApiRequest::new(Method::POST, url, format!("look up contact by {what}")).json(&body);
        let decoded = self
            .http
            .fetch(request, Idempotency::Idempotent, decode_contact_page)
            .await?;
        Ok(decoded.records.into_iter().find(|r| matches_key(r, key)))
    }

    async fn create(&self, fields: &Fields, tags: &Tags) -> Result<Created, ProviderError> {
        let mut body = Map::new();
        let mut attrs = Map::new();
        for (name, value) in fields {
            if let Some(key) = name.strip_prefix(field::ATTR_PREFIX) {
                if !value.is_empty() {
                    attrs.insert(key.to_owned(), Value::String(value.clone()));
                }
            } else if let Some(wire) = wire_name(name)
                && !value.is_empty()
            {
                body.insert(wire.to_owned(), Value::String(value.clone()));
            }
        }
        if !attrs.is_empty() {
            body.insert("custom_attributes".into(), Value::Object(attrs));
        }
        if let Some(inbox) = self.inbox_id {
            body.insert("inbox_id".into(), json!(inbox));
        }
        let request = ApiRequest::new(Method::POST, self.url(&["contacts"]), "create contact")
            .json(&Value::Object(body));
        let response = self.http.send(request, Idempotency::NonIdempotent).await?;
        if !response.is_success() {
            return Err(self.write_error(&response));
        }
        let record = self.http.decode(&response, decode_created)?;
        if !tags.is_empty() {
            let wanted: Vec<String> = tags.names().map(str::to_owned).collect();
            let refused = self.ensure_labels(&wanted).await?;
            self.set_labels(&record.remote_id, tags, "label the new contact".into())
                .await?;
            refused_error(&self.http, "label the new contact", &refused)?;
        }
        Ok(Created {
            remote_id: record.remote_id,
            existed: false,
        })
    }

    async fn update(&self, target: Target<'_>, changes: &Fields) -> Result<(), ProviderError> {
        let mut body = Map::new();
        let mut attrs = Map::new();
        let mut cleared = Vec::new();
        for (name, value) in changes {
            if let Some(key) = name.strip_prefix(field::ATTR_PREFIX) {
                if value.is_empty() {
                    cleared.push(Value::String(key.to_owned()));
                } else {
                    attrs.insert(key.to_owned(), Value::String(value.clone()));
                }
            } else if let Some(wire) = wire_name(name) {
                body.insert(wire.to_owned(), Value::String(value.clone()));
            }
        }
        if !attrs.is_empty() {
            body.insert("custom_attributes".into(), Value::Object(attrs));
        }
        let id = target.remote_id;
        if !body.is_empty() {
            let request = ApiRequest::new(
                Method::PUT,
                self.url(&["contacts", id]),
                format!("update contact {id}"),
            )
            .json(&Value::Object(body));
            let response = self.http.send(request, Idempotency::Idempotent).await?;
            if !response.is_success() {
                return Err(self.write_error(&response));
            }
        }
        if !cleared.is_empty() {
            let request = ApiRequest::new(
                Method::POST,
                self.url(&["contacts", id, "destroy_custom_attributes"]),
                format!("clear custom attributes of contact {id}"),
            )
            .json(&json!({ "custom_attributes": cleared }));
            let response = self.http.send(request, Idempotency::Idempotent).await?;
            self.http.expect_success(&response)?;
        }
        Ok(())
    }

    async fn read_record(&self, remote_id: &str) -> Result<Option<RemoteRecord>, ProviderError> {
        let request = ApiRequest::get(
            self.url(&["contacts", remote_id]),
            format!("read contact {remote_id}"),
        );
        let response = self.http.send(request, Idempotency::Idempotent).await?;
        if response.status() == 404 {
            return Ok(None);
        }
        self.http.expect_success(&response)?;
        self.http.decode(&response, decode_created).map(Some)
    }

    async fn read_tags(&self, remote_id: &str) -> Result<Tags, ProviderError> {
        let request = ApiRequest::get(
            self.url(&["contacts", remote_id, "labels"]),
            format!("read labels of contact {remote_id}"),
        );
        let names = self
            .http
            .fetch(request, Idempotency::Idempotent, decode_labels)
            .await?;
        Ok(names.iter().collect())
    }

    async fn add_tags(&self, target: Target<'_>, add: &[String]) -> Result<(), ProviderError> {
        let refused = self.ensure_labels(add).await?;
        let mut labels = target.tags.clone();
        for tag in add {
            labels.insert(tag);
        }
        let operation = format!("add labels to contact {}", target.remote_id);
        self.set_labels(target.remote_id, &labels, operation.clone())
            .await?;
        refused_error(&self.http, &operation, &refused)
    }

    async fn remove_tags(
        &self,
        target: Target<'_>,
        remove: &[String],
    ) -> Result<(), ProviderError> {
        let mut labels = target.tags.clone();
        for tag in remove {
            labels.remove(tag);
        }
        let operation = format!("remove labels from contact {}", target.remote_id);
        self.set_labels(target.remote_id, &labels, operation).await
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

    fn can_merge(&self) -> bool {
        true
    }

    /// `POST /actions/contact_merge` (the base keeps its values, the mergee fills its
    /// gaps and is destroyed). Not idempotent (a repeat after success answers 404 for the
    /// mergee, which the caller takes as done), so a lost answer is not resent blindly.
    async fn merge(&self, base: &str, mergee: &str) -> Result<(), ProviderError> {
        let operation = format!("merge contact {mergee} into {base}");
        let id = |s: &str| {
            s.parse::<u64>().map_err(|_| {
                self.http.error(
                    &operation,
                    ErrorKind::Permanent,
                    &format!("`{s}` is not a Chatwoot contact id"),
                )
            })
        };
        let body = json!({"base_contact_id": id(base)?, "mergee_contact_id": id(mergee)?});
        let request = ApiRequest::new(
            Method::POST,
            self.url(&["actions", "contact_merge"]),
            operation,
        )
        .json(&body);
        let response = self.http.send(request, Idempotency::NonIdempotent).await?;
        self.http.expect_success(&response)
    }
}

/// After labelling: a Permanent error naming the tags Chatwoot refused as account labels
/// (they were set on the contact but the label listing cannot show them).
fn refused_error(
    http: &HttpDriver,
    operation: &str,
    refused: &[String],
) -> Result<(), ProviderError> {
    if refused.is_empty() {
        return Ok(());
    }
    Err(http
        .error(
            operation,
            ErrorKind::Permanent,
            &format!(
                "Chatwoot refused to create account label(s) {}; they were set on the contact but cannot be read back through the label listing",
                refused.join(", ")
            ),
        )
        .with_hint("Chatwoot label titles may hold only letters, digits, '-' and '_': rename the tag(s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_settings_need_an_integer_account_and_take_an_integer_inbox() {
        let missing = Chatwoot::validate_kind_settings(&KindSettings::new(), false).unwrap_err();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].key, "account_id");
        assert!(missing[0].message.contains("required for chatwoot"));
        let bad = KindSettings::new()
            .with("account_id", "x")
            .with("inbox_id", "inbox");
        let keys: Vec<&str> = Chatwoot::validate_kind_settings(&bad, true)
            .unwrap_err()
            .iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, ["account_id", "inbox_id"]);
        let ok = KindSettings::new()
            .with("account_id", " 12 ")
            .with("inbox_id", 7u64);
        let normalised = Chatwoot::validate_kind_settings(&ok, true).unwrap();
        assert_eq!(normalised.get("account_id"), Some(&12u64.into()));
        assert_eq!(normalised.get("inbox_id"), Some(&"7".into()));
    }

    #[test]
    fn next_page_rules() {
        let page = |n: usize, count: Option<u64>, has_more: Option<bool>| ContactPage {
            records: vec![RemoteRecord::default(); n],
            count,
            current_page: None,
            has_more,
        };
        assert_eq!(page(15, Some(100), None).next_page(1), Some(2));
        assert_eq!(page(14, Some(100), None).next_page(1), None);
        assert_eq!(page(0, Some(100), None).next_page(9), None);
        assert_eq!(page(15, Some(30), None).next_page(2), None);
        assert_eq!(page(15, None, None).next_page(2), Some(3));
        assert_eq!(page(15, Some(15), Some(true)).next_page(1), Some(2));
        assert_eq!(page(15, None, Some(false)).next_page(1), None);
    }

    #[test]
    fn contact_fields_and_attrs() {
        let body = br#"{"meta":{"count":"1","current_page":"1"},"payload":[{"id":7,"name":"Ann","email":null,"phone_number":"+14155550123","identifier":"k1","custom_attributes":{"plan":"gold","seats":3,"flags":{"a":true},"gone":null},"contact_inboxes":[]}]}"#;
        let page = decode_contact_page(body).unwrap();
        assert_eq!(page.count, Some(1));
        let r = &page.records[0];
        assert_eq!(r.remote_id, "7");
        assert_eq!(r.fields["email"], "");
        assert_eq!(r.fields["phone"], "+14155550123");
        assert_eq!(r.fields["source_id"], "k1");
        assert_eq!(r.fields["attr.plan"], "gold");
        assert_eq!(r.fields["attr.seats"], "3");
        assert_eq!(r.fields["attr.flags"], r#"{"a":true}"#);
        assert_eq!(r.fields["attr.gone"], "");
    }

    #[test]
    fn exactness_is_checked_locally() {
        let mut record = RemoteRecord::default();
        record.fields.insert("source_id".into(), "ABC".into());
        record
            .fields
            .insert("phone".into(), "+1 415 555 0123".into());
        record
            .fields
            .insert("email".into(), "Ann@Example.com".into());
        assert!(!matches_key(&record, LookupKey::SourceId("abc")));
        assert!(matches_key(&record, LookupKey::SourceId("ABC")));
        assert!(matches_key(&record, LookupKey::Phone("+14155550123")));
        assert!(!matches_key(&record, LookupKey::Phone("+1415555012")));
        assert!(matches_key(&record, LookupKey::Email("ann@example.com")));
    }
}
