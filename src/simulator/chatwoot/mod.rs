//! Simulated Chatwoot account API, as Chatwoot v4.9.1 behaves.
//!
//! This module owns one Chatwoot account's in-memory state (contacts, their indexes,
//! contact labels, account labels, one API inbox), how people are seeded into it, its
//! dump, its auth check and the router that serves it under
//! `/api/v1/accounts/{account_id}`. One server serves one account: another account id
//! in the path gets 404, so two accounts are two servers. The handlers live in the child
//! modules, one per concern:
//! - [`listing`]: contacts list / search / active, sorting and paging (15 a page);
//! - [`filter`]: `POST contacts/filter` and its query language;
//! - [`contacts`]: show / create / update (PUT and PATCH) / delete, custom attribute
//!   removal and `actions/contact_merge`, with Chatwoot's model validations;
//! - [`labels`]: contact labels (GET, POST replaces the whole set) and account labels;
//! - [`request`]: how Chatwoot's Rails stack reads parameters and words its errors.
//!
//! Control: `POST /__sim/contacts/unlisted` with a contact body (`name`, `email`,
//! `phone_number`, `identifier`) adds a contact, validated as a create is (422 with
//! Chatwoot's body when a value is taken), that the contacts list does not show until
//! something asks for it by key or id (filter, show): a record made after a client's
//! listing ran, so a write of that client meets Chatwoot's "has already been taken" for a
//! record it never saw. Answers 201 `{"id": N}`.
//!
//! Auth is the `api_access_token` header. Fault injection and the request log are
//! middleware the simulator core wraps around [`router`]; not here.
//!
//! Written from Chatwoot's documented and observed behaviour alone; it shares no types
//! with the client in `src/provider/`.
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
//! Choices of ours where Chatwoot's behaviour is not known (not Chatwoot facts):
//! - ids start at a number derived from the account id; `created_at` never goes
//!   backwards in id order (like a database clock); seeded contacts are dated from
//!   2020-09-13 on, one minute apart.
//! - Request bodies are JSON only; a body that is not JSON gets 400
//!   `{"status": 400, "error": "Bad Request"}`. An unknown path gets 404
//!   `{"error": "Resource could not be found"}`.
//! - Contact labels keep the first spelling a label was ever given (acts-as-taggable-on
//!   matches existing tags case-insensitively); seeded labels are lower-case and are also
//!   created as account labels.
//! - The `crm_v2` flag is off, no contact is ever online.
//! - [`webhooks`]: account webhooks, signed deliveries of `contact_created` and
//!   `contact_updated` on every create or update made through the API or the control
//!   endpoint, delivery faults.
//!
//! Control endpoint (besides the shared `/__sim/` routes; no auth, not logged or
//! counted): `POST /__sim/contacts` creates a contact and `PUT|PATCH /__sim/contacts/{id}`
//! edits one, as an agent would in the UI (the API's body, validations and answers), each
//! delivering its webhook event like an API edit.

mod contacts;
mod filter;
mod labels;
mod listing;
mod request;
pub mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use self::contacts::{
    create, destroy, destroy_custom_attributes, merge, show, sim_create, sim_update, update,
};
use self::filter::filter;
use self::labels::{
    account_labels, contact_labels, create_account_label, dedupe_labels, set_contact_labels,
};
use self::listing::{Sort, active, list, search};
use self::request::not_found;
use super::SimulatedProvider;
use super::floor::{self, FloorPerson, Requests};
use super::http::Reject;
use super::seed::{self, Dice, Person, PhoneStyle, TagStyle, mix, uuid_from};

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
    /// Account webhooks and their deliveries.
    hooks: webhooks::Webhooks,
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
    /// Contacts the contacts list does not show yet (added through
    /// `POST /__sim/contacts/unlisted`): a record made after the client's listing ran.
    /// Anything that asks for one by key or id (filter, show) sees it, and so does every
    /// listing from then on.
    unlisted: std::collections::BTreeSet<u64>,
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
                unlisted: std::collections::BTreeSet::new(),
                generation: 0,
                last_created_at: 0,
            }),
            sorted: Mutex::new(HashMap::new()),
            hooks: webhooks::Webhooks::default(),
        }
    }

    /// The account webhooks (delivery faults, the deliveries made).
    pub fn webhooks(&self) -> &webhooks::Webhooks {
        &self.hooks
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
        self.unlisted.remove(&id);
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

// ---------------------------------------------------------------------------------------
// Router and handlers

type Shared = Arc<State>;

/// Rails answers JSON as `application/json; charset=utf-8`.
async fn rails_content_type(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/json")
    {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    response
}

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
        .route(
            &format!("{BASE}/webhooks"),
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            &format!("{BASE}/webhooks/{{id}}"),
            axum::routing::patch(webhooks::update)
                .put(webhooks::update)
                .delete(webhooks::destroy),
        )
        .route(
            "/__sim/webhooks/faults",
            post(webhooks::add_fault).delete(webhooks::clear_faults),
        )
        .route("/__sim/webhooks/deliveries", get(webhooks::deliveries))
        .route("/__sim/contacts/unlisted", post(contacts::add_unlisted))
        .route("/__sim/contacts", post(sim_create))
        .route(
            "/__sim/contacts/{id}",
            axum::routing::put(sim_update).patch(sim_update),
        )
        .fallback(|| async { not_found() })
        .layer(middleware::map_response(rails_content_type))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Registry

impl SimulatedProvider for State {
    fn rate_limits(
        _settings: &super::ratelimit::RateLimitSettings,
    ) -> Vec<super::ratelimit::Limit> {
        // rack-attack's defaults (config/initializers/rack_attack.rb): `req/ip` 3,000 a
        // minute (RACK_ATTACK_LIMIT), contact search 100 a minute per account
        // (RATE_LIMIT_CONTACT_SEARCH).
        vec![
            super::ratelimit::Limit::all(3_000),
            super::ratelimit::Limit {
                name: "contact search",
                path_contains: Some("/contacts/search"),
                per_minute: 100,
            },
        ]
    }

    fn throttled(_left: std::time::Duration) -> axum::response::Response {
        // rack-attack's default responder: 429, text/plain, no Retry-After.
        super::ratelimit::throttled_text()
    }

    const KIND: &'static str = "chatwoot";
    const DEMO_NAME: &'static str = "support";
    const SEED: seed::Provider = seed::Provider {
        kind: Self::KIND,
        share: 70,
        needs_phone: false,
        listable: true,
        // Chatwoot insists on a country code.
        phone: PhoneStyle::E164,
        // Its UI refuses spaces in an email.
        stray_spaces: false,
        // Its labels are lower-case.
        tags: TagStyle::LowerCase,
        salt: 0x11,
    };
    type Credentials = Credentials;

    fn credentials(dice: &mut Dice) -> Credentials {
        let account_id = 1 + dice.below(999);
        let inbox_id = 1 + dice.below(99);
        let api_key = seed::token(dice, seed::BASE58, 24);
        Credentials {
            account_id,
            inbox_id,
            api_key,
        }
    }
    fn new(credentials: Credentials) -> Self {
        State::new(credentials)
    }
    fn router(state: Arc<Self>) -> Router {
        router(state)
    }
    fn seed(&self, people: Box<dyn Iterator<Item = Person> + Send>) {
        State::seed(self, people);
    }
    fn dump(&self) -> Value {
        State::dump(self)
    }
    fn contact_count(&self) -> usize {
        State::contact_count(self)
    }
    fn info(credentials: &Credentials, base_url: &str) -> Value {
        json!({
            "base_url": base_url,
            "account_id": credentials.account_id,
            "inbox_id": credentials.inbox_id,
            "api_key": credentials.api_key,
        })
    }
    fn config_lines(info: &Value) -> Vec<String> {
        vec![
            format!("account_id = {}", info["account_id"]),
            format!("inbox_id = {}", info["inbox_id"]),
        ]
    }

    fn import_floor(p: &FloorPerson<'_>) -> Requests {
        if !p.known {
            return Requests::default();
        }
        let writes = match p.held {
            // A create, then its labels in one write.
            None => 1 + u64::from(!p.tags.is_empty()),
            // An update where its fields differ, one label write where its labels do.
            Some(_) => u64::from(p.lacks_email()) + u64::from(p.missing_tags() > 0),
        };
        Requests { reads: 0, writes }
    }

    fn listing_floor_now(&self) -> u64 {
        // The listed (resolved) contacts' pages, the account's label list, and each
        // account label's listing pages.
        let inner = self.read();
        let per_page = PAGE_SIZE as u64;
        let labels: u64 = inner
            .account_labels
            .iter()
            .map(|l| {
                let n = inner
                    .tag_ids
                    .get(l.title.to_lowercase().as_str())
                    .and_then(|&t| inner.by_tag.get(t as usize))
                    .map_or(0, |v| v.len() as u64);
                floor::pages(n, per_page)
            })
            .sum();
        floor::pages(inner.resolved.len() as u64, per_page) + 1 + labels
    }

    fn listing_floor(held: u64, labels: &BTreeMap<String, u64>) -> u64 {
        // Its contact pages, the account's label list, each label's listing pages.
        let per_page = PAGE_SIZE as u64;
        floor::pages(held, per_page)
            + 1
            + labels
                .values()
                .map(|&n| floor::pages(n, per_page))
                .sum::<u64>()
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
    fn derived_uuids_look_like_v4() {
        let u = derived_uuid(42, 1);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
