//! Simulated Chatwoot account API (`reference/providers.md` §3 and §6.4), v4.9.1 behaviour.
//!
//! Owns the in-memory state of one Chatwoot account (contacts, contact labels, account
//! labels, one API inbox) and the axum router that serves it under
//! `/api/v1/accounts/{account_id}`: contacts list / search / filter / active / show /
//! create / update (PUT and PATCH) / delete, contact labels (GET, POST replaces the whole
//! set), `destroy_custom_attributes`, account labels (GET, POST) and
//! `actions/contact_merge`. Auth is the `api_access_token` header. Fault injection and the
//! request log are middleware the simulator core wraps around [`router`]; not here.
//!
//! Written from the reference alone; it shares no types with the client in
//! `src/provider/`.
//!
//! How it scales: contacts live in a vector indexed by id; the ids of *resolved* contacts
//! (email, phone or identifier non-empty: the only ones the list shows) are kept sorted,
//! which is also creation order, and so is each label's list of resolved ids. A page of
//! `sort=created_at` (or `-created_at`) is therefore a slice, whatever the contact count.
//! Other sort keys sort once and keep the order until the next write. Without `sort`, each
//! request lists the contacts rotated by a random offset, so the order changes between
//! requests, as Postgres without `ORDER BY` may: a client paging without `sort` sees
//! duplicates and misses.
//!
//! Choices of ours where the reference leaves a gap (not Chatwoot facts):
//! - ids start at a number derived from the account id; `created_at` never goes
//!   backwards in id order (like a database clock); seeded contacts are dated from
//!   2020-09-13 on, one minute apart.
//! - Request bodies are JSON only; a body that is not JSON gets 400
//!   `{"status": 400, "error": "Bad Request"}`. An unknown path gets 404
//!   `{"error": "Resource could not be found"}`.
//! - Contact labels keep the first spelling a label was ever given (acts-as-taggable-on
//!   matches existing tags case-insensitively); seeded labels are lower-case and are also
//!   created as account labels.
//! - The `crm_v2` flag is off, no contact is ever online, no webhooks are sent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State as Ext};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::seed::{Dice, Person, mix, uuid_from};

/// Contacts per page (`RESULTS_PER_PAGE`); there is no parameter to change it.
pub const PAGE_SIZE: usize = 15;
/// Longest string column value (characters).
const MAX_CHARS: usize = 255;
/// `created_at` of the first seeded contact (2020-09-13).
const SEED_EPOCH: i64 = 1_600_000_000;

/// What a client needs to talk to this simulated account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account in `/api/v1/accounts/{account_id}`.
    pub account_id: u64,
    /// The account's API inbox (contacts created with `inbox_id` join it).
    pub inbox_id: u64,
    /// The `api_access_token` header value (an administrator's token).
    pub api_key: String,
}

/// The whole simulated account.
pub struct State {
    creds: Credentials,
    /// The inbox as `contact_inboxes` shows it (built once: every listed contact has it).
    inbox: Value,
    inner: RwLock<Inner>,
    /// Orders of the resolved contacts by a sort key other than `created_at`, each with the
    /// write generation it was computed at.
    sorted: Mutex<SortCache>,
}

/// Sorted orders by sort key, with the write generation each was computed at.
type SortCache = HashMap<Sort, (u64, Arc<Vec<u64>>)>;

/// A contact's membership of the inbox, with its `source_id`.
enum SourceId {
    /// Seeded: a UUID derived from the contact id (saves memory at a million contacts).
    Derived,
    Given(Box<str>),
}

struct Contact {
    id: u64,
    name: Box<str>,
    email: Option<Box<str>>,
    phone: Option<Box<str>>,
    identifier: Option<Box<str>>,
    blocked: bool,
    created_at: i64,
    last_activity_at: Option<i64>,
    additional: Map<String, Value>,
    custom: Map<String, Value>,
    /// Tag ids, in the order they were set.
    labels: Vec<u32>,
    inbox: Option<SourceId>,
}

/// The indexed values of one contact, taken before a change to update the indexes.
#[derive(Clone, PartialEq, Eq, Default)]
struct Keys {
    resolved: bool,
    email: Option<Box<str>>,
    phone: Option<Box<str>>,
    identifier: Option<Box<str>>,
    labels: Vec<u32>,
}

struct AccountLabel {
    id: u64,
    title: String,
    description: String,
    color: String,
    show_on_sidebar: bool,
}

struct Inner {
    first_id: u64,
    /// Contact `first_id + i` at `slots[i]`; `None` once deleted.
    slots: Vec<Option<Contact>>,
    live: usize,
    /// Ids of resolved contacts, ascending (= creation order).
    resolved: Vec<u64>,
    by_email: HashMap<Box<str>, u64>,
    by_phone: HashMap<Box<str>, u64>,
    by_identifier: HashMap<Box<str>, u64>,
    by_identifier_lower: HashMap<Box<str>, Vec<u64>>,
    /// Tag id → first spelling; lower-case spelling → tag id.
    tags: Vec<Box<str>>,
    tag_ids: HashMap<Box<str>, u32>,
    /// Tag id → ids of resolved contacts with that tag, ascending.
    by_tag: Vec<Vec<u64>>,
    account_labels: Vec<AccountLabel>,
    /// Bumped by every write (invalidates sorted orders).
    generation: u64,
    last_created_at: i64,
}

// ---------------------------------------------------------------------------------------
// State

impl State {
    /// An empty account with one API inbox.
    pub fn new(credentials: Credentials) -> Self {
        let first_id = 1 + mix(credentials.account_id) % 50_000;
        State {
            inbox: inbox_json(credentials.inbox_id),
            creds: credentials,
            inner: RwLock::new(Inner {
                first_id,
                slots: Vec::new(),
                live: 0,
                resolved: Vec::new(),
                by_email: HashMap::new(),
                by_phone: HashMap::new(),
                by_identifier: HashMap::new(),
                by_identifier_lower: HashMap::new(),
                tags: Vec::new(),
                tag_ids: HashMap::new(),
                by_tag: Vec::new(),
                account_labels: Vec::new(),
                generation: 0,
                last_created_at: 0,
            }),
            sorted: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials the account was made with.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts people as an agent would have typed them into Chatwoot's UI: name as one
    /// string, email lower-cased (Chatwoot does) and trimmed (the UI refuses spaces), the
    /// phone as typed if Chatwoot's format check accepts it, else its E.164 form, labels
    /// lower-case. A value another contact already holds is left out (Chatwoot would
    /// refuse it); a person left with no email, phone or identifier is still created
    /// (unresolved: the list does not show them). Seeded contacts belong to the inbox;
    /// about 60% have a `last_activity_at`, some an `additional_attributes.company_name`.
    pub fn seed(&self, people: impl IntoIterator<Item = Person>) {
        let mut inner = self.write();
        for person in people {
            let mut d = Dice::new(self.creds.account_id, person.index, 0x6377);
            let email = person
                .email
                .as_deref()
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty() && email_format_ok(e))
                .filter(|e| !inner.by_email.contains_key(e.as_str()));
            let phone = person
                .phone
                .as_deref()
                .filter(|p| phone_format_ok(p))
                .or(person.phone_e164.as_deref())
                .filter(|p| phone_format_ok(p) && !inner.by_phone.contains_key(*p))
                .map(str::to_owned);
            let labels: Vec<u32> = dedupe_labels(person.tags.iter().map(|t| t.to_lowercase()))
                .iter()
                .map(|t| inner.tag_id(t))
                .collect();
            for &tag in &labels {
                let title = inner.tags[tag as usize].to_string();
                inner.ensure_account_label(&title);
            }
            let created_at = SEED_EPOCH + i64::try_from(person.index).unwrap_or(0) * 60;
            let last_activity_at = d
                .chance(60)
                .then(|| created_at + i64::try_from(d.below(90 * 86_400)).unwrap_or(0));
            let mut additional = Map::new();
            if d.chance(25) {
                additional.insert("company_name".to_owned(), Value::from(*d.pick(COMPANIES)));
            }
            inner.insert(
                Contact {
                    id: 0,
                    name: person.full_name().into_boxed_str(),
                    email: email.map(String::into_boxed_str),
                    phone: phone.map(String::into_boxed_str),
                    identifier: None,
                    blocked: false,
                    created_at,
                    last_activity_at,
                    additional,
                    custom: Map::new(),
                    labels,
                    inbox: Some(SourceId::Derived),
                },
                Some(created_at),
            );
        }
    }

    /// The whole account in Chatwoot's own shapes: `{"account_id", "inbox": inbox,
    /// "labels": [account label], "contacts": [contact JSON with `contact_inboxes` and an
    /// extra `"labels": [names]`, in id order, unresolved ones included]}`.
    pub fn dump(&self) -> Value {
        let inner = self.read();
        let contacts: Vec<Value> = inner
            .slots
            .iter()
            .flatten()
            .map(|c| {
                let mut v = self.contact_json(c, true);
                if let Value::Object(map) = &mut v {
                    map.insert("labels".to_owned(), json!(inner.label_names(c)));
                }
                v
            })
            .collect();
        json!({
            "account_id": self.creds.account_id,
            "inbox": self.full_inbox_json(),
            "labels": inner.account_labels.iter().map(AccountLabel::json).collect::<Vec<_>>(),
            "contacts": contacts,
        })
    }

    /// Number of contacts (resolved or not).
    pub fn contact_count(&self) -> usize {
        self.read().live
    }

    /// Number of contacts the list shows (email, phone or identifier non-empty).
    pub fn resolved_count(&self) -> usize {
        self.read().resolved.len()
    }

    fn full_inbox_json(&self) -> Value {
        let mut v = self.inbox.clone();
        if let Value::Object(map) = &mut v {
            let extra = json!({
                "greeting_enabled": false,
                "greeting_message": null,
                "working_hours_enabled": false,
                "enable_email_collect": true,
                "csat_survey_enabled": false,
                "enable_auto_assignment": true,
                "auto_assignment_config": {},
                "out_of_office_message": null,
                "working_hours": [],
                "timezone": "UTC",
                "callback_webhook_url": null,
                "allow_messages_after_resolved": true,
                "lock_to_single_conversation": false,
                "sender_name_type": "friendly",
                "business_name": null,
                "webhook_url": "",
                "inbox_identifier": derived_uuid(self.creds.inbox_id, 0x1b),
                "additional_attributes": {},
            });
            if let Value::Object(extra) = extra {
                map.extend(extra);
            }
        }
        v
    }

    fn contact_json(&self, c: &Contact, with_inboxes: bool) -> Value {
        let mut map = Map::new();
        map.insert(
            "additional_attributes".into(),
            Value::Object(c.additional.clone()),
        );
        map.insert("availability_status".into(), json!("offline"));
        map.insert("email".into(), json!(c.email.as_deref()));
        map.insert("id".into(), json!(c.id));
        map.insert("name".into(), json!(&*c.name));
        map.insert("phone_number".into(), json!(c.phone.as_deref()));
        map.insert("blocked".into(), json!(c.blocked));
        map.insert("identifier".into(), json!(c.identifier.as_deref()));
        map.insert("thumbnail".into(), json!(""));
        map.insert("custom_attributes".into(), Value::Object(c.custom.clone()));
        if let Some(t) = c.last_activity_at {
            map.insert("last_activity_at".into(), json!(t));
        }
        map.insert("created_at".into(), json!(c.created_at));
        if with_inboxes {
            let inboxes: Vec<Value> = c
                .inbox
                .iter()
                .map(|s| json!({"source_id": source_id(c.id, s), "inbox": self.inbox}))
                .collect();
            map.insert("contact_inboxes".into(), Value::Array(inboxes));
        }
        Value::Object(map)
    }

    fn authorize(&self, headers: &HeaderMap, account: &str) -> Result<(), Reject> {
        let token = headers
            .get("api_access_token")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .filter(|t| !t.trim().is_empty());
        match token {
            None => Err(Reject(
                StatusCode::UNAUTHORIZED,
                json!({"errors": ["You need to sign in or sign up before continuing."]}),
            )),
            Some(t) if t != self.creds.api_key => Err(Reject(
                StatusCode::UNAUTHORIZED,
                json!({"error": "Invalid Access Token"}),
            )),
            Some(_) if account.parse::<u64>().ok() != Some(self.creds.account_id) => {
                Err(not_found())
            }
            Some(_) => Ok(()),
        }
    }
}

/// An inbox as `contact_inboxes` entries show it.
fn inbox_json(inbox_id: u64) -> Value {
    json!({
        "id": inbox_id,
        "avatar_url": "",
        "channel_id": inbox_id + 100,
        "name": "API inbox",
        "channel_type": "Channel::Api",
        "provider": null,
    })
}

const COMPANIES: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Ltd",
    "株式会社サンプル",
    "Müller & Söhne GmbH",
    "台灣範例有限公司",
];

impl AccountLabel {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "color": self.color,
            "show_on_sidebar": self.show_on_sidebar,
        })
    }
}

impl Inner {
    fn index_of(&self, id: u64) -> Option<usize> {
        usize::try_from(id.checked_sub(self.first_id)?).ok()
    }

    fn get(&self, id: u64) -> Option<&Contact> {
        self.slots.get(self.index_of(id)?)?.as_ref()
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Contact> {
        let i = self.index_of(id)?;
        self.slots.get_mut(i)?.as_mut()
    }

    fn label_names(&self, c: &Contact) -> Vec<&str> {
        c.labels.iter().map(|&t| &*self.tags[t as usize]).collect()
    }

    /// The tag id of `name`, matched case-insensitively; new tags keep this spelling.
    fn tag_id(&mut self, name: &str) -> u32 {
        let key = name.to_lowercase();
        if let Some(&id) = self.tag_ids.get(key.as_str()) {
            return id;
        }
        let id = u32::try_from(self.tags.len()).unwrap_or(u32::MAX);
        self.tags.push(name.into());
        self.tag_ids.insert(key.into_boxed_str(), id);
        self.by_tag.push(Vec::new());
        id
    }

    fn ensure_account_label(&mut self, title: &str) {
        let title = title.to_lowercase();
        if self.account_labels.iter().any(|l| l.title == title) {
            return;
        }
        let id = self.account_labels.len() as u64 + 1;
        let color = LABEL_COLORS[self.account_labels.len() % LABEL_COLORS.len()];
        self.account_labels.push(AccountLabel {
            id,
            title,
            description: String::new(),
            color: color.to_owned(),
            show_on_sidebar: true,
        });
    }

    fn keys(c: &Contact) -> Keys {
        Keys {
            resolved: is_resolved(c),
            email: c.email.clone(),
            phone: c.phone.clone(),
            identifier: c.identifier.clone(),
            labels: c.labels.clone(),
        }
    }

    /// Adds `c` with the next id; `created_at` is `at` (or now), never before the
    /// previous contact's.
    fn insert(&mut self, mut c: Contact, at: Option<i64>) -> u64 {
        let id = self.first_id + self.slots.len() as u64;
        let created = at.unwrap_or_else(now_secs).max(self.last_created_at);
        self.last_created_at = created;
        c.id = id;
        c.created_at = created;
        let keys = Self::keys(&c);
        self.slots.push(Some(c));
        self.live += 1;
        self.reindex(id, &Keys::default(), &keys);
        id
    }

    fn remove(&mut self, id: u64) -> Option<Contact> {
        let i = self.index_of(id)?;
        let c = self.slots.get_mut(i)?.take()?;
        self.live -= 1;
        self.reindex(id, &Self::keys(&c), &Keys::default());
        Some(c)
    }

    /// Brings every index from `old` to `new` for contact `id` (only what changed).
    fn reindex(&mut self, id: u64, old: &Keys, new: &Keys) {
        self.generation += 1;
        if old.email != new.email {
            unmap(&mut self.by_email, old.email.as_deref(), id);
            if let Some(e) = new.email.as_deref().filter(|e| !e.is_empty()) {
                self.by_email.insert(e.into(), id);
            }
        }
        if old.phone != new.phone {
            unmap(&mut self.by_phone, old.phone.as_deref(), id);
            if let Some(p) = new.phone.as_deref().filter(|p| !p.is_empty()) {
                self.by_phone.insert(p.into(), id);
            }
        }
        if old.identifier != new.identifier {
            unmap(&mut self.by_identifier, old.identifier.as_deref(), id);
            if let Some(i) = old.identifier.as_deref() {
                let key = i.to_lowercase();
                if let Some(ids) = self.by_identifier_lower.get_mut(key.as_str()) {
                    ids.retain(|&x| x != id);
                    if ids.is_empty() {
                        self.by_identifier_lower.remove(key.as_str());
                    }
                }
            }
            if let Some(i) = new.identifier.as_deref().filter(|i| !i.is_empty()) {
                self.by_identifier.insert(i.into(), id);
                self.by_identifier_lower
                    .entry(i.to_lowercase().into_boxed_str())
                    .or_default()
                    .push(id);
            }
        }
        if old.resolved != new.resolved {
            if new.resolved {
                insert_sorted(&mut self.resolved, id);
            } else {
                remove_sorted(&mut self.resolved, id);
            }
        }
        let old_tags: &[u32] = if old.resolved { &old.labels } else { &[] };
        let new_tags: &[u32] = if new.resolved { &new.labels } else { &[] };
        if old_tags != new_tags {
            for t in old_tags.iter().filter(|t| !new_tags.contains(t)) {
                remove_sorted(&mut self.by_tag[*t as usize], id);
            }
            for t in new_tags.iter().filter(|t| !old_tags.contains(t)) {
                insert_sorted(&mut self.by_tag[*t as usize], id);
            }
        }
    }
}

const LABEL_COLORS: &[&str] = &["#1f93ff", "#ff6b6b", "#2ecc71", "#f39c12", "#9b59b6"];

fn unmap(map: &mut HashMap<Box<str>, u64>, key: Option<&str>, id: u64) {
    if let Some(k) = key
        && map.get(k) == Some(&id)
    {
        map.remove(k);
    }
}

fn insert_sorted(v: &mut Vec<u64>, id: u64) {
    if v.last().is_none_or(|&last| last < id) {
        v.push(id);
    } else if let Err(pos) = v.binary_search(&id) {
        v.insert(pos, id);
    }
}

fn remove_sorted(v: &mut Vec<u64>, id: u64) {
    if let Ok(pos) = v.binary_search(&id) {
        v.remove(pos);
    }
}

fn source_id(id: u64, s: &SourceId) -> String {
    match s {
        SourceId::Derived => derived_uuid(id, 0x50),
        SourceId::Given(g) => g.to_string(),
    }
}

fn is_resolved(c: &Contact) -> bool {
    let set = |v: &Option<Box<str>>| v.as_deref().is_some_and(|s| !s.is_empty());
    set(&c.email) || set(&c.phone) || set(&c.identifier)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A UUID (version 4 layout) derived from `n`.
fn derived_uuid(n: u64, salt: u64) -> String {
    let a = mix(n ^ mix(salt));
    uuid_from(a, mix(a ^ n))
}

fn random_uuid() -> String {
    uuid_from(rand::random(), rand::random())
}

/// Devise's `email_regexp`: `\A[^@\s]+@[^@\s]+\z`.
fn email_format_ok(e: &str) -> bool {
    let bad = |s: &str| s.is_empty() || s.chars().any(|c| c == '@' || c.is_ascii_whitespace());
    match e.split_once('@') {
        Some((local, domain)) => !bad(local) && !bad(domain),
        None => false,
    }
}

/// Chatwoot's unanchored `\+[1-9]\d{1,14}\z`: the text must *end* with `+`, a digit 1-9
/// and 1 to 14 more digits; anything may come before.
fn phone_format_ok(p: &str) -> bool {
    let Some(plus) = p.rfind('+') else {
        return false;
    };
    let tail = &p[plus + 1..];
    (2..=15).contains(&tail.len())
        && tail.bytes().all(|b| b.is_ascii_digit())
        && tail.as_bytes()[0] != b'0'
}

/// Trims, drops blanks, splits on commas and removes case-insensitive duplicates (first
/// spelling wins), as acts-as-taggable-on does with a tag list.
fn dedupe_labels(labels: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for raw in labels {
        for part in raw.split(',') {
            let t = part.trim();
            if !t.is_empty() && seen.insert(t.to_lowercase()) {
                out.push(t.to_owned());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Responses and request helpers

/// An error answer: status and JSON body.
#[derive(Debug)]
struct Reject(StatusCode, Value);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        respond(self.0, &self.1)
    }
}

type Answer = Result<Response, Reject>;

fn respond(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

#[allow(clippy::unnecessary_wraps)] // the success arm of every handler
fn ok(body: &Value) -> Answer {
    Ok(respond(StatusCode::OK, body))
}

fn not_found() -> Reject {
    Reject(
        StatusCode::NOT_FOUND,
        json!({"error": "Resource could not be found"}),
    )
}

fn invalid(errors: &[(&'static str, String)]) -> Reject {
    let message = errors
        .iter()
        .map(|(_, m)| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut attributes: Vec<&str> = Vec::new();
    for (a, _) in errors {
        if !attributes.contains(a) {
            attributes.push(a);
        }
    }
    Reject(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": message, "attributes": attributes}),
    )
}

fn unprocessable(error: &str) -> Reject {
    Reject(StatusCode::UNPROCESSABLE_ENTITY, json!({"error": error}))
}

/// Query parameters as sent (repeated keys kept, in order).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<&str>) -> Self {
        Params(
            raw.map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    /// The last value of `key` (as Rails keeps it).
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `labels[]=a&labels[]=b` (or `labels=a,b`), blanks dropped.
    fn labels(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| k == "labels[]")
            .map(|(_, v)| v.clone())
            .collect();
        if out.is_empty()
            && let Some(v) = self.get("labels")
        {
            out = v.split(',').map(str::to_owned).collect();
        }
        out.into_iter()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn include_contact_inboxes(&self) -> bool {
        match self.get("include_contact_inboxes") {
            Some(v) if !v.trim().is_empty() => v == "true",
            _ => true,
        }
    }

    fn sort(&self) -> Option<Sort> {
        Sort::parse(self.get("sort")?)
    }
}

/// The request page: Kaminari reads the number like Ruby's `to_i` (leading digits, `1` for
/// anything below 1); `meta.current_page` echoes the raw parameter, or the integer 1.
struct PageParam {
    number: u64,
    echo: Value,
}

impl PageParam {
    fn from(raw: Option<&str>) -> Self {
        match raw {
            None => PageParam {
                number: 1,
                echo: json!(1),
            },
            Some(raw) => PageParam {
                number: u64::try_from(ruby_to_i(raw)).unwrap_or(1).max(1),
                echo: json!(raw),
            },
        }
    }

    fn offset(&self) -> usize {
        usize::try_from((self.number - 1).saturating_mul(PAGE_SIZE as u64)).unwrap_or(usize::MAX)
    }
}

/// Ruby's `String#to_i`: optional leading whitespace and sign, then leading digits; 0 if
/// none.
fn ruby_to_i(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg { -n } else { n }
}

fn parse_body(bytes: &Bytes) -> Result<Map<String, Value>, Reject> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Ok(Map::new()),
        Err(_) => Err(Reject(
            StatusCode::BAD_REQUEST,
            json!({"status": 400, "error": "Bad Request"}),
        )),
    }
}

/// A scalar parameter that was sent.
enum Sent {
    Null,
    Text(String),
}

impl Sent {
    fn text(self) -> Option<String> {
        match self {
            Sent::Null => None,
            Sent::Text(t) => Some(t),
        }
    }
}

/// A permitted scalar parameter: `None` when absent or not a scalar (Rails' `permit` drops
/// arrays and hashes).
fn scalar(params: &Map<String, Value>, key: &str) -> Option<Sent> {
    match params.get(key)? {
        Value::Null => Some(Sent::Null),
        Value::String(s) => Some(Sent::Text(s.clone())),
        Value::Number(n) => Some(Sent::Text(n.to_string())),
        Value::Bool(b) => Some(Sent::Text(b.to_string())),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// The text of a scalar parameter (absent, `null` and non-scalars give `None`).
fn text(params: &Map<String, Value>, key: &str) -> Option<String> {
    scalar(params, key).and_then(Sent::text)
}

fn object(params: &Map<String, Value>, key: &str) -> Option<Map<String, Value>> {
    match params.get(key)? {
        Value::Object(m) => Some(m.clone()),
        _ => None,
    }
}

/// Rails' boolean cast.
fn boolean(params: &Map<String, Value>, key: &str) -> Option<bool> {
    match params.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_i64() != Some(0)),
        Value::String(s) => Some(!matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "f" | "false" | "off" | "n" | "no"
        )),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Sorting and paging

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SortField {
    Name,
    Email,
    Phone,
    LastActivity,
    CreatedAt,
    Company,
    City,
    Country,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Sort {
    field: SortField,
    desc: bool,
}

impl Sort {
    /// `name`, `-email`, … ; unknown keys are ignored (no sort), as Sift does.
    fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (desc, key) = match raw.strip_prefix('-') {
            Some(k) => (true, k),
            None => (false, raw),
        };
        let field = match key {
            "name" => SortField::Name,
            "email" => SortField::Email,
            "phone_number" => SortField::Phone,
            "last_activity_at" => SortField::LastActivity,
            "created_at" => SortField::CreatedAt,
            "company" | "company_name" => SortField::Company,
            "city" => SortField::City,
            "country" => SortField::Country,
            _ => return None,
        };
        Some(Sort { field, desc })
    }

    /// Orders `ids` by this sort (ties by id, ascending).
    fn order(self, inner: &Inner, ids: &[u64]) -> Vec<u64> {
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Key {
            Int(i64),
            Text(String),
        }
        let attr = |c: &Contact, k: &str| {
            c.additional
                .get(k)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .map(Key::Text)
        };
        let key_of = |c: &Contact| -> Option<Key> {
            match self.field {
                SortField::Name => {
                    let n = &*c.name;
                    let special =
                        n.starts_with('+') || n.starts_with(|ch: char| ch.is_ascii_digit());
                    Some(Key::Text(if special {
                        "z".to_owned()
                    } else {
                        n.to_lowercase()
                    }))
                }
                SortField::Email => c.email.as_deref().map(|e| Key::Text(e.to_lowercase())),
                SortField::Phone => c.phone.as_deref().map(|p| Key::Text(p.to_lowercase())),
                SortField::LastActivity => c.last_activity_at.map(Key::Int),
                SortField::CreatedAt => Some(Key::Int(c.created_at)),
                SortField::Company => attr(c, "company_name"),
                SortField::City => attr(c, "city"),
                SortField::Country => attr(c, "country"),
            }
        };
        // Postgres puts NULLs last ascending and first descending; Chatwoot writes NULLS
        // LAST for every sort key except email and phone_number.
        let nulls_first = self.desc && matches!(self.field, SortField::Email | SortField::Phone);
        let mut keyed: Vec<(Option<Key>, u64)> = ids
            .iter()
            .filter_map(|&id| inner.get(id).map(|c| (key_of(c), id)))
            .collect();
        keyed.sort_by(|(ka, ia), (kb, ib)| {
            use std::cmp::Ordering;
            let by_key = match (ka, kb) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) if nulls_first => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) if nulls_first => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) if self.desc => b.cmp(a),
                (Some(a), Some(b)) => a.cmp(b),
            };
            by_key.then(ia.cmp(ib))
        });
        keyed.into_iter().map(|(_, id)| id).collect()
    }
}

/// The contacts a listing draws from: all resolved contacts, or a subset (ascending ids).
enum Base<'a> {
    Resolved(&'a [u64]),
    Subset(Vec<u64>),
}

impl Base<'_> {
    fn ids(&self) -> &[u64] {
        match self {
            Base::Resolved(ids) => ids,
            Base::Subset(ids) => ids,
        }
    }
}

impl State {
    /// One page of `base` under `sort` (or in a fresh random rotation without one).
    fn page(
        &self,
        inner: &Inner,
        base: &Base<'_>,
        sort: Option<Sort>,
        page: &PageParam,
    ) -> Vec<u64> {
        let ids = base.ids();
        let total = ids.len();
        let offset = page.offset();
        if offset >= total {
            return Vec::new();
        }
        let end = (offset + PAGE_SIZE).min(total);
        match sort {
            Some(Sort {
                field: SortField::CreatedAt,
                desc,
            }) => {
                // created_at never decreases with the id: id order is created_at order.
                if desc {
                    (offset..end).map(|pos| ids[total - 1 - pos]).collect()
                } else {
                    ids[offset..end].to_vec()
                }
            }
            Some(sort) => {
                let ordered = match base {
                    Base::Resolved(_) => self.sorted_resolved(inner, sort),
                    Base::Subset(ids) => Arc::new(sort.order(inner, ids)),
                };
                ordered[offset..end.min(ordered.len())].to_vec()
            }
            None => {
                let rotation = usize::try_from(rand::random::<u64>() % total as u64).unwrap_or(0);
                (offset..end)
                    .map(|pos| ids[(pos + rotation) % total])
                    .collect()
            }
        }
    }

    fn sorted_resolved(&self, inner: &Inner, sort: Sort) -> Arc<Vec<u64>> {
        let mut cache = self.sorted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((generation, ids)) = cache.get(&sort)
            && *generation == inner.generation
        {
            return Arc::clone(ids);
        }
        let ids = Arc::new(sort.order(inner, &inner.resolved));
        cache.insert(sort, (inner.generation, Arc::clone(&ids)));
        ids
    }

    fn envelope(&self, inner: &Inner, base: &Base<'_>, params: &Params, page: &PageParam) -> Value {
        let with_inboxes = params.include_contact_inboxes();
        let ids = self.page(inner, base, params.sort(), page);
        let payload: Vec<Value> = ids
            .iter()
            .filter_map(|&id| inner.get(id))
            .map(|c| self.contact_json(c, with_inboxes))
            .collect();
        json!({
            "meta": {"count": base.ids().len(), "current_page": page.echo},
            "payload": payload,
        })
    }
}

/// Resolved contacts carrying any of `labels` (case-insensitive), ascending ids.
fn labelled(inner: &Inner, labels: &[String]) -> Vec<u64> {
    let mut tag_ids: Vec<usize> = labels
        .iter()
        .filter_map(|l| inner.tag_ids.get(l.to_lowercase().as_str()))
        .map(|&t| t as usize)
        .collect();
    tag_ids.sort_unstable();
    tag_ids.dedup();
    match tag_ids.as_slice() {
        [] => Vec::new(),
        [one] => inner.by_tag[*one].clone(),
        many => {
            let mut all: Vec<u64> = many
                .iter()
                .flat_map(|&t| inner.by_tag[t].iter().copied())
                .collect();
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

// ---------------------------------------------------------------------------------------
// Validation and assignment

/// The assignable fields of a create or update, as sent (`None` = not sent).
#[derive(Default)]
struct Changes {
    name: Option<String>,
    email: Option<Sent>,
    phone: Option<Sent>,
    identifier: Option<Sent>,
    blocked: Option<bool>,
    additional: Option<Map<String, Value>>,
    custom: Option<Map<String, Value>>,
}

impl Changes {
    fn from(params: &Map<String, Value>) -> Self {
        Changes {
            name: scalar(params, "name").map(|n| n.text().unwrap_or_default()),
            // `email.present? ? email.downcase : nil`
            email: scalar(params, "email").map(|e| match e.text() {
                Some(e) if !e.trim().is_empty() => Sent::Text(e.to_lowercase()),
                _ => Sent::Null,
            }),
            phone: scalar(params, "phone_number"),
            identifier: scalar(params, "identifier"),
            blocked: boolean(params, "blocked"),
            additional: object(params, "additional_attributes"),
            custom: object(params, "custom_attributes"),
        }
    }
}

/// The candidate values of a contact after a change, for validation.
struct Candidate<'a> {
    name: &'a str,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    identifier: Option<&'a str>,
}

/// Chatwoot's model validations, in its order; `own` is the contact being updated.
fn validate(inner: &Inner, c: &Candidate<'_>, own: Option<u64>) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    let other = |hit: Option<&u64>| hit.is_some_and(|&id| Some(id) != own);
    let too_long = |v: Option<&str>| v.is_some_and(|v| v.chars().count() > MAX_CHARS);
    for (attr, human, value) in [
        ("name", "Name", Some(c.name)),
        ("email", "Email", c.email),
        ("phone_number", "Phone number", c.phone),
        ("identifier", "Identifier", c.identifier),
    ] {
        if too_long(value) {
            errors.push((
                attr,
                format!("{human} is too long (maximum is {MAX_CHARS} characters)"),
            ));
        }
    }
    if let Some(e) = c.email.filter(|e| !e.is_empty()) {
        if other(inner.by_email.get(e)) {
            errors.push(("email", "Email has already been taken".to_owned()));
        }
        if !email_format_ok(e) {
            errors.push(("email", "Email Invalid email".to_owned()));
        }
    }
    if let Some(i) = c.identifier.filter(|i| !i.trim().is_empty())
        && other(inner.by_identifier.get(i))
    {
        errors.push(("identifier", "Identifier has already been taken".to_owned()));
    }
    if let Some(p) = c.phone.filter(|p| !p.trim().is_empty()) {
        if other(inner.by_phone.get(p)) {
            errors.push((
                "phone_number",
                "Phone number has already been taken".to_owned(),
            ));
        }
        if !phone_format_ok(p) {
            errors.push((
                "phone_number",
                "Phone number should be in e164 format".to_owned(),
            ));
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------
// Router and handlers

type Shared = Arc<State>;

/// The Chatwoot routes, under `/api/v1/accounts/{account_id}`.
pub fn router(state: Arc<State>) -> Router {
    const BASE: &str = "/api/v1/accounts/{account_id}";
    Router::new()
        .route(&format!("{BASE}/contacts"), get(list).post(create))
        .route(&format!("{BASE}/contacts/search"), get(search))
        .route(&format!("{BASE}/contacts/filter"), post(filter))
        .route(&format!("{BASE}/contacts/active"), get(active))
        .route(
            &format!("{BASE}/contacts/{{id}}"),
            get(show).put(update).patch(update).delete(destroy),
        )
        .route(
            &format!("{BASE}/contacts/{{id}}/labels"),
            get(contact_labels).post(set_contact_labels),
        )
        .route(
            &format!("{BASE}/contacts/{{id}}/destroy_custom_attributes"),
            post(destroy_custom_attributes),
        )
        .route(
            &format!("{BASE}/labels"),
            get(account_labels).post(create_account_label),
        )
        .route(&format!("{BASE}/actions/contact_merge"), post(merge))
        .fallback(|| async { not_found() })
        .with_state(state)
}

async fn list(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = Params::parse(query.as_deref());
    let page = PageParam::from(params.get("page"));
    let inner = st.read();
    let labels = params.labels();
    let base = if labels.is_empty() {
        Base::Resolved(&inner.resolved)
    } else {
        Base::Subset(labelled(&inner, &labels))
    };
    ok(&st.envelope(&inner, &base, &params, &page))
}

async fn active(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = Params::parse(query.as_deref());
    let page = PageParam::from(params.get("page"));
    ok(&json!({"meta": {"count": 0, "current_page": page.echo}, "payload": []}))
}

async fn search(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = Params::parse(query.as_deref());
    let Some(q) = params.get("q").map(str::trim).filter(|q| !q.is_empty()) else {
        return Err(unprocessable("Specify search string with parameter q"));
    };
    let page = PageParam::from(params.get("page"));
    let inner = st.read();
    let pattern: Vec<char> = format!("%{q}%").chars().collect();
    let pattern_lower: Vec<char> = format!("%{}%", q.to_lowercase()).chars().collect();
    let ilike = |v: Option<&str>| v.is_some_and(|v| like(&v.to_lowercase(), &pattern_lower));
    let ids: Vec<u64> = inner
        .resolved
        .iter()
        .copied()
        .filter(|&id| {
            inner.get(id).is_some_and(|c| {
                ilike(Some(&c.name))
                    || ilike(c.email.as_deref())
                    || ilike(c.phone.as_deref())
                    || ilike(c.additional.get("company_name").and_then(Value::as_str))
                    || c.identifier.as_deref().is_some_and(|i| like(i, &pattern))
            })
        })
        .collect();
    ok(&st.envelope(&inner, &Base::Subset(ids), &params, &page))
}

/// SQL `LIKE`: `%` any run, `_` any one character, `\` escapes the next one.
fn like(text: &str, pattern: &[char]) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Any,
        One,
        Lit(char),
    }
    let mut toks = Vec::with_capacity(pattern.len());
    let mut it = pattern.iter();
    while let Some(&c) = it.next() {
        toks.push(match c {
            '%' => Tok::Any,
            '_' => Tok::One,
            '\\' => Tok::Lit(it.next().copied().unwrap_or('\\')),
            c => Tok::Lit(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                t += 1;
                p += 1;
            }
            Some(Tok::Lit(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| matches!(t, Tok::Any))
}

/// The contact filter keys and their operators (`lib/filters/filter_keys.yml`).
const FILTER_KEYS: &[(&str, &[&str])] = &[
    (
        "name",
        &["equal_to", "not_equal_to", "contains", "does_not_contain"],
    ),
    (
        "phone_number",
        &[
            "equal_to",
            "not_equal_to",
            "contains",
            "does_not_contain",
            "starts_with",
        ],
    ),
    (
        "email",
        &["equal_to", "not_equal_to", "contains", "does_not_contain"],
    ),
    ("identifier", &["equal_to", "not_equal_to"]),
    ("country_code", &["equal_to", "not_equal_to"]),
    (
        "city",
        &["equal_to", "not_equal_to", "contains", "does_not_contain"],
    ),
    (
        "company",
        &["equal_to", "not_equal_to", "contains", "does_not_contain"],
    ),
    (
        "labels",
        &["equal_to", "not_equal_to", "is_present", "is_not_present"],
    ),
    (
        "created_at",
        &["is_greater_than", "is_less_than", "days_before"],
    ),
    (
        "last_activity_at",
        &["is_greater_than", "is_less_than", "days_before"],
    ),
    ("blocked", &["equal_to", "not_equal_to"]),
];

struct Condition {
    key: String,
    op: String,
    values: Vec<Value>,
    /// Joins this condition to the next one (`AND` / `OR`).
    joiner: Option<String>,
}

fn parse_conditions(body: &Map<String, Value>) -> Result<Vec<Condition>, Reject> {
    let Some(Value::Array(items)) = body.get("payload") else {
        return Err(unprocessable(
            "Invalid value. The values provided for payload are invalid",
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let joiner = match item.get("query_operator") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let op = v.as_str().unwrap_or("").to_ascii_uppercase();
                if op != "AND" && op != "OR" {
                    return Err(unprocessable(
                        r#"Query operator must be either "AND" or "OR"."#,
                    ));
                }
                Some(op)
            }
        };
        let values = match item.get("values") {
            Some(Value::Array(v)) => v.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(v) => vec![v.clone()],
        };
        out.push(Condition {
            key: text("attribute_key"),
            op: text("filter_operator"),
            values,
            joiner,
        });
    }
    for c in &out {
        let Some((_, ops)) = FILTER_KEYS.iter().find(|(k, _)| *k == c.key) else {
            let keys: Vec<&str> = FILTER_KEYS.iter().map(|(k, _)| *k).collect();
            return Err(unprocessable(&format!(
                "Invalid attribute key - [{}]. The key should be one of [{}] or a custom attribute defined in the account.",
                c.key,
                keys.join(",")
            )));
        };
        if !ops.contains(&c.op.as_str()) {
            return Err(unprocessable(&format!(
                "Invalid operator. The allowed operators for {} are [{}].",
                c.key,
                ops.join(",")
            )));
        }
        let needs_values = !matches!(c.op.as_str(), "is_present" | "is_not_present");
        let blank = |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
        if needs_values && (c.values.is_empty() || c.values.iter().all(blank)) {
            return Err(unprocessable(&format!(
                "Invalid value. The values provided for {} are invalid",
                c.key
            )));
        }
    }
    Ok(out)
}

fn value_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// Epoch seconds of a filter date value (`2024-01-31`, an RFC 3339 time, or epoch seconds).
fn value_time(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Some(ts.as_second());
    }
    let date = s.get(..10).unwrap_or(s).parse::<jiff::civil::Date>().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_second())
}

impl Condition {
    fn text_of<'c>(&self, c: &'c Contact) -> Option<&'c str> {
        match self.key.as_str() {
            "name" => Some(&c.name),
            "email" => c.email.as_deref(),
            "phone_number" => c.phone.as_deref(),
            "identifier" => c.identifier.as_deref(),
            "city" => c.additional.get("city").and_then(Value::as_str),
            "company" => c.additional.get("company_name").and_then(Value::as_str),
            "country_code" => c.additional.get("country_code").and_then(Value::as_str),
            _ => None,
        }
    }

    /// The value `equal_to` compares with: `"+" + digits` for phones, lower-case else.
    fn equal_value(&self) -> String {
        let first = self.values.first().map(value_text).unwrap_or_default();
        if self.key == "phone_number" {
            let digits: String = first.chars().filter(char::is_ascii_digit).collect();
            format!("+{digits}")
        } else {
            first.to_lowercase()
        }
    }

    fn holds(&self, inner: &Inner, c: &Contact) -> bool {
        match self.key.as_str() {
            "labels" => {
                let wanted: Vec<String> = self
                    .values
                    .iter()
                    .map(|v| value_text(v).to_lowercase())
                    .collect();
                let names = inner.label_names(c);
                let any = names.iter().any(|n| wanted.iter().any(|w| w == n));
                match self.op.as_str() {
                    "equal_to" => any,
                    "not_equal_to" => !any,
                    "is_present" => !names.is_empty(),
                    _ => names.is_empty(),
                }
            }
            "created_at" | "last_activity_at" => {
                let at = if self.key == "created_at" {
                    Some(c.created_at)
                } else {
                    c.last_activity_at
                };
                let bound = if self.op == "days_before" {
                    let days = self.values.first().map_or(0, |v| ruby_to_i(&value_text(v)));
                    Some(now_secs() / 86_400 * 86_400 - days * 86_400)
                } else {
                    self.values.first().and_then(value_time)
                };
                match (at, bound) {
                    (Some(at), Some(b)) if self.op == "is_greater_than" => at > b,
                    (Some(at), Some(b)) => at < b,
                    _ => false,
                }
            }
            "blocked" => {
                let want = self
                    .values
                    .first()
                    .is_some_and(|v| v.as_bool().unwrap_or_else(|| value_text(v) == "true"));
                (c.blocked == want) == (self.op == "equal_to")
            }
            _ => {
                let Some(text) = self.text_of(c) else {
                    return false; // SQL: a comparison with NULL is never true
                };
                let patterns = || {
                    self.values.iter().map(|v| {
                        format!("%{}%", value_text(v).trim().to_lowercase())
                            .chars()
                            .collect::<Vec<_>>()
                    })
                };
                let lower = text.to_lowercase();
                match self.op.as_str() {
                    "equal_to" if self.key == "phone_number" => text == self.equal_value(),
                    "equal_to" => lower == self.equal_value(),
                    "not_equal_to" if self.key == "phone_number" => text != self.equal_value(),
                    "not_equal_to" => lower != self.equal_value(),
                    "contains" => patterns().any(|p| like(&lower, &p)),
                    "does_not_contain" => patterns().all(|p| !like(&lower, &p)),
                    _ => {
                        let prefix = self.values.first().map(value_text).unwrap_or_default();
                        lower.starts_with(&prefix.to_lowercase())
                    }
                }
            }
        }
    }
}

/// Ids matching `conds` (SQL precedence: AND binds tighter than OR), ascending.
fn run_filter(inner: &Inner, conds: &[Condition]) -> Vec<u64> {
    // Fast path for the exact lookups a sync uses: one `equal_to` on an indexed key.
    if let [c] = conds
        && c.op == "equal_to"
    {
        let hits: Option<Vec<u64>> = match c.key.as_str() {
            "phone_number" => Some(
                inner
                    .by_phone
                    .get(c.equal_value().as_str())
                    .copied()
                    .into_iter()
                    .collect(),
            ),
            "email" => Some(
                inner
                    .by_email
                    .get(c.equal_value().as_str())
                    .copied()
                    .into_iter()
                    .collect(),
            ),
            "identifier" => Some(
                inner
                    .by_identifier_lower
                    .get(c.equal_value().as_str())
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        if let Some(mut ids) = hits {
            ids.retain(|id| inner.get(*id).is_some_and(is_resolved));
            ids.sort_unstable();
            return ids;
        }
    }
    let mut groups: Vec<Vec<&Condition>> = vec![Vec::new()];
    for (i, c) in conds.iter().enumerate() {
        if let Some(group) = groups.last_mut() {
            group.push(c);
        }
        if i + 1 < conds.len() && c.joiner.as_deref() == Some("OR") {
            groups.push(Vec::new());
        }
    }
    inner
        .resolved
        .iter()
        .copied()
        .filter(|&id| {
            inner.get(id).is_some_and(|contact| {
                groups
                    .iter()
                    .any(|g| g.iter().all(|c| c.holds(inner, contact)))
            })
        })
        .collect()
}

async fn filter(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Answer {
    st.authorize(&headers, &account)?;
    let body = parse_body(&body)?;
    let conds = parse_conditions(&body)?;
    let params = Params::parse(query.as_deref());
    let body_page = body.get("page").map(value_text);
    let page = PageParam::from(params.get("page").or(body_page.as_deref()));
    let inner = st.read();
    let ids = run_filter(&inner, &conds);
    ok(&st.envelope(&inner, &Base::Subset(ids), &params, &page))
}

async fn show(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = Params::parse(query.as_deref());
    let inner = st.read();
    match id.parse().ok().and_then(|id| inner.get(id)) {
        Some(c) => ok(&json!({"payload": st.contact_json(c, params.include_contact_inboxes())})),
        None => Err(not_found()),
    }
}

async fn create(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = parse_body(&body)?;
    let ch = Changes::from(&params);
    let inbox = match text(&params, "inbox_id").filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(raw) if raw.trim().parse::<u64>().ok() == Some(st.creds.inbox_id) => {
            let source = text(&params, "source_id")
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(random_uuid);
            Some(SourceId::Given(source.into_boxed_str()))
        }
        Some(_) => return Err(not_found()),
    };
    let name = ch.name.unwrap_or_default();
    let email = ch.email.and_then(Sent::text);
    let phone = ch.phone.and_then(Sent::text);
    let identifier = ch.identifier.and_then(Sent::text);
    let mut inner = st.write();
    let errors = validate(
        &inner,
        &Candidate {
            name: &name,
            email: email.as_deref(),
            phone: phone.as_deref(),
            identifier: identifier.as_deref(),
        },
        None,
    );
    if !errors.is_empty() {
        return Err(invalid(&errors));
    }
    let has_inbox = inbox.is_some();
    let id = inner.insert(
        Contact {
            id: 0,
            name: name.into_boxed_str(),
            email: email.map(String::into_boxed_str),
            phone: phone.map(String::into_boxed_str),
            identifier: identifier.map(String::into_boxed_str),
            blocked: ch.blocked.unwrap_or(false),
            created_at: 0,
            last_activity_at: None,
            additional: ch.additional.unwrap_or_default(),
            custom: ch.custom.unwrap_or_default(),
            labels: Vec::new(),
            inbox,
        },
        None,
    );
    let Some(c) = inner.get(id) else {
        return Err(not_found());
    };
    let contact_inbox = match (&c.inbox, has_inbox) {
        (Some(s), true) => json!({"inbox": st.full_inbox_json(), "source_id": source_id(id, s)}),
        _ => json!({"inbox": null, "source_id": null}),
    };
    ok(&json!({"payload": {"contact": st.contact_json(c, true), "contact_inbox": contact_inbox}}))
}

async fn update(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = parse_body(&body)?;
    let ch = Changes::from(&params);
    let mut inner = st.write();
    let Some(id) = id.parse::<u64>().ok().filter(|&id| inner.get(id).is_some()) else {
        return Err(not_found());
    };
    let Some(current) = inner.get(id) else {
        return Err(not_found());
    };
    let keep = |v: &Option<Box<str>>| v.as_deref().map(str::to_owned);
    let name = ch.name.unwrap_or_else(|| current.name.to_string());
    let email = ch.email.map_or_else(|| keep(&current.email), Sent::text);
    let phone = ch.phone.map_or_else(|| keep(&current.phone), Sent::text);
    let identifier = ch
        .identifier
        .map_or_else(|| keep(&current.identifier), Sent::text);
    let errors = validate(
        &inner,
        &Candidate {
            name: &name,
            email: email.as_deref(),
            phone: phone.as_deref(),
            identifier: identifier.as_deref(),
        },
        Some(id),
    );
    if !errors.is_empty() {
        return Err(invalid(&errors));
    }
    let old = Inner::keys(current);
    let new = {
        let Some(c) = inner.get_mut(id) else {
            return Err(not_found());
        };
        c.name = name.into_boxed_str();
        c.email = email.map(String::into_boxed_str);
        c.phone = phone.map(String::into_boxed_str);
        c.identifier = identifier.map(String::into_boxed_str);
        if let Some(b) = ch.blocked {
            c.blocked = b;
        }
        if let Some(extra) = ch.additional {
            c.additional.extend(extra);
        }
        if let Some(extra) = ch.custom {
            c.custom.extend(extra);
        }
        Inner::keys(c)
    };
    inner.reindex(id, &old, &new);
    let params = Params::parse(query.as_deref());
    match inner.get(id) {
        Some(c) => ok(&json!({"payload": st.contact_json(c, params.include_contact_inboxes())})),
        None => Err(not_found()),
    }
}

async fn destroy(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    st.authorize(&headers, &account)?;
    let mut inner = st.write();
    match id.parse().ok().and_then(|id| inner.remove(id)) {
        Some(_) => Ok(StatusCode::OK.into_response()),
        None => Err(not_found()),
    }
}

async fn contact_labels(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    st.authorize(&headers, &account)?;
    let inner = st.read();
    match id.parse().ok().and_then(|id| inner.get(id)) {
        Some(c) => ok(&json!({"payload": inner.label_names(c)})),
        None => Err(not_found()),
    }
}

async fn set_contact_labels(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = parse_body(&body)?;
    let requested: Vec<String> = match params.get("labels") {
        Some(Value::Array(items)) => items
            .iter()
            .filter(|v| !v.is_null())
            .map(value_text)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let mut inner = st.write();
    let Some(id) = id.parse::<u64>().ok().filter(|&id| inner.get(id).is_some()) else {
        return Err(not_found());
    };
    let tags: Vec<u32> = dedupe_labels(requested)
        .iter()
        .map(|l| inner.tag_id(l))
        .collect();
    let Some(c) = inner.get_mut(id) else {
        return Err(not_found());
    };
    let old = Inner::keys(c);
    c.labels = tags;
    let new = Inner::keys(c);
    inner.reindex(id, &old, &new);
    match inner.get(id) {
        Some(c) => ok(&json!({"payload": inner.label_names(c)})),
        None => Err(not_found()),
    }
}

async fn destroy_custom_attributes(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = parse_body(&body)?;
    let keys: Vec<String> = match params.get("custom_attributes") {
        Some(Value::Array(items)) => items.iter().map(value_text).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let mut inner = st.write();
    let Some(c) = id.parse().ok().and_then(|id| inner.get_mut(id)) else {
        return Err(not_found());
    };
    for k in &keys {
        c.custom.remove(k);
    }
    let id = c.id;
    inner.generation += 1;
    match inner.get(id) {
        Some(c) => ok(&json!({"payload": st.contact_json(c, true)})),
        None => Err(not_found()),
    }
}

async fn account_labels(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Answer {
    st.authorize(&headers, &account)?;
    let inner = st.read();
    ok(&json!({"payload": inner.account_labels.iter().map(AccountLabel::json).collect::<Vec<_>>()}))
}

async fn create_account_label(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = parse_body(&body)?;
    let title = text(&params, "title").unwrap_or_default().to_lowercase();
    let mut inner = st.write();
    if title.trim().is_empty() {
        return Err(invalid(&[("title", "Title can't be blank".to_owned())]));
    }
    // UNICODE_CHARACTER_NUMBER_HYPHEN_UNDERSCORE
    if !title
        .chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(&[("title", "Title is invalid".to_owned())]));
    }
    if inner.account_labels.iter().any(|l| l.title == title) {
        return Err(invalid(&[(
            "title",
            "Title has already been taken".to_owned(),
        )]));
    }
    let label = AccountLabel {
        id: inner.account_labels.iter().map(|l| l.id).max().unwrap_or(0) + 1,
        title,
        description: text(&params, "description").unwrap_or_default(),
        color: text(&params, "color").unwrap_or_else(|| "#1f93ff".to_owned()),
        show_on_sidebar: boolean(&params, "show_on_sidebar").unwrap_or(false),
    };
    let body = label.json();
    inner.account_labels.push(label);
    ok(&body)
}

/// `POST /actions/contact_merge`: the mergee is destroyed; the base keeps its values and
/// takes the mergee's only where it has none (attribute hashes deep-merged, base wins).
async fn merge(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    st.authorize(&headers, &account)?;
    let params = parse_body(&body)?;
    let id_of = |k: &str| text(&params, k).and_then(|s| s.trim().parse::<u64>().ok());
    let (Some(base_id), Some(mergee_id)) = (id_of("base_contact_id"), id_of("mergee_contact_id"))
    else {
        return Err(not_found());
    };
    let mut inner = st.write();
    if inner.get(base_id).is_none() || inner.get(mergee_id).is_none() {
        return Err(not_found());
    }
    if base_id != mergee_id {
        let Some(mergee) = inner.remove(mergee_id) else {
            return Err(not_found());
        };
        let Some(base) = inner.get(base_id) else {
            return Err(not_found());
        };
        let old = Inner::keys(base);
        let new = {
            let Some(base) = inner.get_mut(base_id) else {
                return Err(not_found());
            };
            let blank = |v: &Option<Box<str>>| v.as_deref().is_none_or(|s| s.trim().is_empty());
            if base.name.trim().is_empty() {
                base.name = mergee.name;
            }
            if blank(&base.email) {
                base.email = mergee.email.filter(|s| !s.trim().is_empty());
            }
            if blank(&base.phone) {
                base.phone = mergee.phone.filter(|s| !s.trim().is_empty());
            }
            if blank(&base.identifier) {
                base.identifier = mergee.identifier.filter(|s| !s.trim().is_empty());
            }
            deep_merge_missing(&mut base.additional, mergee.additional);
            deep_merge_missing(&mut base.custom, mergee.custom);
            if base.inbox.is_none() {
                base.inbox = match mergee.inbox {
                    Some(SourceId::Derived) => Some(SourceId::Given(
                        derived_uuid(mergee_id, 0x50).into_boxed_str(),
                    )),
                    other => other,
                };
            }
            Inner::keys(base)
        };
        inner.reindex(base_id, &old, &new);
    }
    match inner.get(base_id) {
        Some(c) => ok(&st.contact_json(c, false)),
        None => Err(not_found()),
    }
}

/// Adds to `base` what only `extra` has (nested objects merged the same way).
fn deep_merge_missing(base: &mut Map<String, Value>, extra: Map<String, Value>) {
    for (k, v) in extra {
        let blank = v.is_null() || v.as_str().is_some_and(str::is_empty);
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(e)) => deep_merge_missing(b, e),
            (Some(existing), v) if existing.is_null() && !blank => *existing = v,
            (None, v) if !blank => {
                base.insert(k, v);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_regex_is_unanchored_at_the_start() {
        assert!(phone_format_ok("+12"));
        assert!(phone_format_ok("abc+15551234567"));
        assert!(phone_format_ok("+886912345678"));
        assert!(!phone_format_ok("123456789"));
        assert!(!phone_format_ok("+1 555 123"));
        assert!(!phone_format_ok("+0123456"));
        assert!(!phone_format_ok("+1234567890123456"));
    }

    #[test]
    fn email_format_is_devise_s() {
        assert!(email_format_ok("a@b"));
        assert!(!email_format_ok(" a@b.com"));
        assert!(!email_format_ok("<2324234234"));
        assert!(!email_format_ok("a@@b"));
    }

    #[test]
    fn like_handles_wildcards() {
        let p = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(like("maria garcia", &p("%garc%")));
        assert!(like("maria garcia", &p("%g_rc%")));
        assert!(!like("maria", &p("%garc%")));
        assert!(like("50%off", &p("%0\\%o%")));
        assert!(like("abc", &p("%%")));
    }

    #[test]
    fn ruby_to_i_reads_leading_digits() {
        assert_eq!(ruby_to_i("2"), 2);
        assert_eq!(ruby_to_i("2abc"), 2);
        assert_eq!(ruby_to_i("abc"), 0);
        assert_eq!(ruby_to_i(" -3"), -3);
        assert_eq!(ruby_to_i(""), 0);
    }

    #[test]
    fn derived_uuids_look_like_v4() {
        let u = derived_uuid(42, 1);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
