//! Simulated MaiAgent contacts API.
//!
//! This module owns the in-memory state of one MaiAgent workspace (inboxes and contacts),
//! how people are seeded into it, its dump, its `Api-Key` auth and the axum router that
//! serves it; the handlers live in [`listing`] (the paginated, filtered list) and
//! [`contacts`] (one contact at a time), the serializer rules in [`validation`]. It serves `/api/contacts/` and `/api/v1/contacts/` (Django style, trailing
//! slash; `{id}/` for one contact), `Authorization: Api-Key KEY`, DRF `PageNumberPagination`
//! with absolute `next`/`previous` links, camelCase contact JSON with epoch-millisecond
//! string timestamps, and DRF-shaped errors. Fault injection and the request log are
//! middleware the simulator core wraps around [`router`]; this module does neither.
//!
//! Written from what is known of MaiAgent's API alone; it shares no types with the
//! client in `src/provider/`.
//!
//! Choices of ours where MaiAgent's behaviour is not known (not MaiAgent facts):
//! - Page size: default [`DEFAULT_PAGE_SIZE`], maximum [`MAX_PAGE_SIZE`]. `pageSize` is read
//!   first, then `page_size`; an invalid value falls back to the default silently, a larger
//!   one is clamped silently.
//! - Order: creation order, stable across requests.
//! - `query` matches name, source id or contact id (case-insensitive substring); `search`
//!   splits on spaces and commas and every term must occur (case-insensitive) in the name,
//!   email, phone or source id (DRF `SearchFilter` semantics); `inboxes` (or the deprecated
//!   `inbox`) takes one or more inbox UUIDs, repeated or comma-separated.
//! - A path without its trailing slash is a 404 (we do not imitate Django's redirect).
//! - `PUT` requires `name` and `inboxes` (or `inbox`), like create; fields it omits are kept
//!   (DRF `ModelSerializer.update` only sets what was validated).
//! - Delete refused because of conversations: 400 `{"detail": "..."}` (text undocumented).
//! - Seeding: every person whose `index` is a multiple of [`PHONE_AS_NUMBER_EVERY`] and who
//!   has a phone gets `phoneNumber` as a JSON number (the typed phone's digits, as the docs'
//!   examples send it); every person whose `index % CONVERSATIONS_EVERY ==
//!   CONVERSATIONS_EVERY - 1` is flagged as having conversations (so cannot be deleted).
//!   With the identity cases ([`seed::IdentityCases`], off by default), family members
//!   sharing a seeded person's phone and WhatsApp contacts whose `phoneNumber` is a
//!   privacy id (`<digits>@lid`) follow the population.

mod contacts;
mod listing;
mod validation;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{self, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use self::contacts::{create, destroy, partial_update, replace, retrieve};
use self::listing::list;
use self::validation::Changes;
use super::SimulatedProvider;
use super::floor::{self, FloorPerson, Requests};
use super::http::{Guarded, Reject, authorization, credential, detail, guard};
use super::seed::{self, Dice, Person, PhoneStyle, TagStyle};

/// Page size when the request gives none or an invalid one (our choice; undocumented).
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page size; larger requests are clamped silently (our choice; undocumented).
pub const MAX_PAGE_SIZE: usize = 100;
/// Seeded persons whose `index` is a multiple of this (and who have a phone) get
/// `phoneNumber` as a JSON number.
pub const PHONE_AS_NUMBER_EVERY: u64 = 7;
/// Seeded persons with `index % CONVERSATIONS_EVERY == CONVERSATIONS_EVERY - 1` are flagged
/// as having conversations, so deleting them answers 400.
pub const CONVERSATIONS_EVERY: u64 = 50;
/// Name of the inbox created from [`Credentials::inbox_id`].
pub const DEFAULT_INBOX_NAME: &str = "Simulated inbox";

/// Maximum length of `name` and `sourceId` (Django `CharField(max_length=255)`, inferred).
const MAX_CHARS: usize = 255;

/// What a client needs to talk to this simulated workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The key sent as `Authorization: Api-Key KEY`.
    pub api_key: String,
    /// UUID of the inbox the workspace starts with (new contacts need an inbox). A value
    /// that is not a UUID is replaced by a random one; [`State::inbox_id`] tells which.
    pub inbox_id: String,
}

/// The whole simulated workspace: inboxes and contacts, behind one mutex.
pub struct State {
    api_key: String,
    inner: Mutex<Inner>,
}

struct Inbox {
    id: u128,
    name: String,
}

/// Inbox membership: nearly every contact has exactly one, so that case costs no heap.
enum Inboxes {
    One(u32),
    Many(Box<[u32]>),
}

impl Inboxes {
    fn from_vec(mut v: Vec<u32>) -> Self {
        if v.len() == 1 {
            Inboxes::One(v[0])
        } else {
            v.shrink_to_fit();
            Inboxes::Many(v.into_boxed_slice())
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Inboxes::One(i) => std::slice::from_ref(i),
            Inboxes::Many(v) => v,
        }
    }
}

struct Contact {
    id: u128,
    inboxes: Inboxes,
    name: Box<str>,
    /// Stored as a string; `phone_is_number` makes it render as a JSON number.
    phone: Option<Box<str>>,
    phone_is_number: bool,
    email: Option<Box<str>>,
    source_id: Option<Box<str>>,
    avatar: Option<Box<str>>,
    query_metadata: Option<Box<Value>>,
    mcp_credentials: Option<Box<Value>>,
    created_at: u64,
    updated_at: u64,
    has_conversations: bool,
}

impl Contact {
    /// A contact as the API creates it: a new id, its inboxes and name, nothing else.
    fn new(inboxes: Inboxes, name: Box<str>, now: u64) -> Self {
        Contact {
            id: new_uuid(),
            inboxes,
            name,
            phone: None,
            phone_is_number: false,
            email: None,
            source_id: None,
            avatar: None,
            query_metadata: None,
            mcp_credentials: None,
            created_at: now,
            updated_at: now,
            has_conversations: false,
        }
    }
}

struct Inner {
    inboxes: Vec<Inbox>,
    inbox_by_id: HashMap<u128, u32>,
    default_inbox: u32,
    /// Every contact ever created, by creation sequence; `None` once deleted.
    slots: Vec<Option<Contact>>,
    /// Live slots in creation order (ascending): the sorted index pages are cut from.
    order: Vec<u32>,
    by_id: HashMap<u128, u32>,
    /// (inbox, sourceId) → slot: `sourceId` is unique per inbox.
    source_ids: HashMap<(u32, Box<str>), u32>,
}

impl State {
    /// An empty workspace with one inbox (`credentials.inbox_id`).
    pub fn new(credentials: Credentials) -> Self {
        let inbox = parse_uuid(&credentials.inbox_id).unwrap_or_else(new_uuid);
        let inner = Inner {
            inboxes: vec![Inbox {
                id: inbox,
                name: DEFAULT_INBOX_NAME.to_owned(),
            }],
            inbox_by_id: HashMap::from([(inbox, 0)]),
            default_inbox: 0,
            slots: Vec::new(),
            order: Vec::new(),
            by_id: HashMap::new(),
            source_ids: HashMap::new(),
        };
        State {
            api_key: credentials.api_key,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Insert people as someone typing them into MaiAgent would have: `name` is
    /// "first last", phone and email exactly as typed, in the default inbox, no source id.
    /// See the module doc for which ones get a numeric phone or conversations.
    pub fn seed(&self, people: impl IntoIterator<Item = Person>) {
        let mut inner = self.lock();
        let inbox = inner.default_inbox;
        let now = now_ms();
        for p in people {
            let name = display_name(&p.first_name, &p.last_name);
            let typed = p.phone.as_deref().map(str::trim).filter(|s| !s.is_empty());
            let (phone, phone_is_number) = match typed {
                Some(typed) if p.index % PHONE_AS_NUMBER_EVERY == 0 => {
                    let digits: String = typed.chars().filter(char::is_ascii_digit).collect();
                    match digits.parse::<u64>() {
                        Ok(n) => (Some(n.to_string().into_boxed_str()), true),
                        Err(_) => (Some(typed.into()), false),
                    }
                }
                Some(typed) => (Some(typed.into()), false),
                None => (None, false),
            };
            let email = p
                .email
                .filter(|e| !e.trim().is_empty())
                .map(String::into_boxed_str);
            inner.insert(Contact {
                phone,
                phone_is_number,
                email,
                has_conversations: p.index % CONVERSATIONS_EVERY == CONVERSATIONS_EVERY - 1,
                ..Contact::new(Inboxes::One(inbox), name.into_boxed_str(), now)
            });
        }
    }

    /// Insert identity cases ([`seed::IdentityCases`]), after the population: the
    /// privacy-id contacts (name, `phoneNumber` `<digits>@lid`, no email) and the family
    /// members sharing a seeded person's phone (typed as that person's, see [`State::seed`]).
    pub fn seed_identity_cases(&self, cases: &seed::IdentityCases) {
        self.seed(cases.shared_phones.iter().cloned());
        let mut inner = self.lock();
        let inbox = inner.default_inbox;
        let now = now_ms();
        for c in &cases.lids {
            let name = display_name(&c.first_name, &c.last_name).into_boxed_str();
            inner.insert(Contact {
                phone: Some(c.id().into_boxed_str()),
                ..Contact::new(Inboxes::One(inbox), name, now)
            });
        }
    }

    /// The whole state: `{"inboxes": [{"id","name"}], "contacts": [contact as the API
    /// shows it, in creation order], "withConversations": [contact ids]}`.
    pub fn dump(&self) -> Value {
        let inner = self.lock();
        let inboxes: Vec<Value> = inner
            .inboxes
            .iter()
            .map(|i| json!({"id": fmt_uuid(i.id), "name": i.name}))
            .collect();
        let mut contacts = Vec::with_capacity(inner.order.len());
        let mut with_conversations = Vec::new();
        for c in inner.order.iter().filter_map(|&s| inner.contact(s)) {
            contacts.push(inner.contact_json(c));
            if c.has_conversations {
                with_conversations.push(Value::String(fmt_uuid(c.id)));
            }
        }
        json!({
            "inboxes": inboxes,
            "contacts": contacts,
            "withConversations": with_conversations,
        })
    }

    /// Number of live contacts.
    pub fn contact_count(&self) -> usize {
        self.lock().order.len()
    }

    /// UUID of the inbox made from the credentials (seeded contacts live there).
    pub fn inbox_id(&self) -> String {
        let inner = self.lock();
        fmt_uuid(inner.inboxes[inner.default_inbox as usize].id)
    }

    /// Add another inbox. False if `id` is not a UUID or the inbox exists already.
    pub fn add_inbox(&self, id: &str, name: &str) -> bool {
        let Some(id) = parse_uuid(id) else {
            return false;
        };
        let mut inner = self.lock();
        if inner.inbox_by_id.contains_key(&id) {
            return false;
        }
        let idx = inner.inboxes.len() as u32;
        inner.inboxes.push(Inbox {
            id,
            name: name.to_owned(),
        });
        inner.inbox_by_id.insert(id, idx);
        true
    }

    /// Flag a contact as having (or not) conversations; a flagged contact cannot be
    /// deleted. False if there is no such contact.
    pub fn set_has_conversations(&self, contact_id: &str, flag: bool) -> bool {
        let mut inner = self.lock();
        match inner.slot_of(contact_id).and_then(|s| inner.contact_mut(s)) {
            Some(c) => {
                c.has_conversations = flag;
                true
            }
            None => false,
        }
    }

    /// Whether a contact is flagged as having conversations; `None` if it does not exist.
    pub fn has_conversations(&self, contact_id: &str) -> Option<bool> {
        let inner = self.lock();
        inner
            .slot_of(contact_id)
            .and_then(|s| inner.contact(s))
            .map(|c| c.has_conversations)
    }
}

impl Inner {
    fn contact(&self, slot: u32) -> Option<&Contact> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn contact_mut(&mut self, slot: u32) -> Option<&mut Contact> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn slot_of(&self, id: &str) -> Option<u32> {
        parse_uuid(id).and_then(|u| self.by_id.get(&u).copied())
    }

    fn insert(&mut self, contact: Contact) -> u32 {
        let slot = self.slots.len() as u32;
        self.by_id.insert(contact.id, slot);
        if let Some(sid) = &contact.source_id {
            for &ib in contact.inboxes.as_slice() {
                self.source_ids.insert((ib, sid.clone()), slot);
            }
        }
        self.slots.push(Some(contact));
        self.order.push(slot);
        slot
    }

    fn remove(&mut self, slot: u32) {
        let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.by_id.remove(&c.id);
        if let Some(sid) = c.source_id {
            for &ib in c.inboxes.as_slice() {
                self.source_ids.remove(&(ib, sid.clone()));
            }
        }
        if let Ok(pos) = self.order.binary_search(&slot) {
            self.order.remove(pos);
        }
    }

    fn inbox_json(&self, idx: u32) -> Option<Value> {
        self.inboxes
            .get(idx as usize)
            .map(|i| json!({"id": fmt_uuid(i.id), "name": i.name}))
    }

    /// The contact as the API shows it.
    fn contact_json(&self, c: &Contact) -> Value {
        let inboxes: Vec<Value> = c
            .inboxes
            .as_slice()
            .iter()
            .filter_map(|&i| self.inbox_json(i))
            .collect();
        let phone = match (&c.phone, c.phone_is_number) {
            (Some(p), true) => p
                .parse::<u64>()
                .map_or_else(|_| Value::String(p.to_string()), Value::from),
            (Some(p), false) => Value::String(p.to_string()),
            (None, _) => Value::Null,
        };
        json!({
            "id": fmt_uuid(c.id),
            "inboxes": inboxes,
            "inbox": inboxes.first(),
            "name": c.name,
            "avatar": c.avatar.as_deref().unwrap_or(""),
            "phoneNumber": phone,
            "email": c.email,
            "sourceId": c.source_id,
            "queryMetadata": c.query_metadata.as_deref(),
            "mcpCredentials": c.mcp_credentials.as_deref().cloned().unwrap_or_else(|| json!([])),
            "createdAt": c.created_at.to_string(),
            "updatedAt": c.updated_at.to_string(),
        })
    }

    fn slot_json(&self, slot: u32) -> Value {
        self.contact(slot)
            .map_or(Value::Null, |c| self.contact_json(c))
    }

    /// Apply validated changes to a live contact, keeping the source-id index in step.
    fn apply(&mut self, slot: u32, ch: Changes, now: u64) {
        let Inner {
            slots, source_ids, ..
        } = self;
        let Some(c) = slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(sid) = &c.source_id {
            for &ib in c.inboxes.as_slice() {
                source_ids.remove(&(ib, sid.clone()));
            }
        }
        if let Some(name) = ch.name {
            c.name = name;
        }
        if let Some(inboxes) = ch.inboxes {
            c.inboxes = Inboxes::from_vec(inboxes);
        }
        if let Some(avatar) = ch.avatar {
            c.avatar = avatar;
        }
        if let Some(phone) = ch.phone {
            c.phone = phone;
            c.phone_is_number = false;
        }
        if let Some(email) = ch.email {
            c.email = email;
        }
        if let Some(sid) = ch.source_id {
            c.source_id = sid;
        }
        if let Some(qm) = ch.query_metadata {
            c.query_metadata = qm;
        }
        if let Some(mcp) = ch.mcp_credentials {
            c.mcp_credentials = mcp;
        }
        if let Some(sid) = &c.source_id {
            for &ib in c.inboxes.as_slice() {
                source_ids.insert((ib, sid.clone()), slot);
            }
        }
        // `updatedAt` must move on every write, even two within one millisecond.
        c.updated_at = now.max(c.updated_at + 1);
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

/// The router: `/api/contacts/`, `/api/contacts/{id}/` and the same under `/api/v1/`,
/// all behind `Api-Key` auth.
pub fn router(state: Arc<State>) -> Router {
    let mut r = Router::new();
    for prefix in ["/api", "/api/v1"] {
        r = r
            .route(&format!("{prefix}/contacts/"), get(list).post(create))
            .route(
                &format!("{prefix}/contacts/{{id}}/"),
                get(retrieve)
                    .put(replace)
                    .patch(partial_update)
                    .delete(destroy),
            );
    }
    r.route_layer(middleware::from_fn_with_state(
        state.clone(),
        guard::<State>,
    ))
    .fallback(not_found)
    .with_state(state)
}

type Shared = extract::State<Arc<State>>;

fn not_found_detail() -> Reject {
    detail(StatusCode::NOT_FOUND, "Not found.")
}

async fn not_found() -> Reject {
    not_found_detail()
}

fn unauthorized(msg: &str) -> Response {
    let mut resp = detail(StatusCode::UNAUTHORIZED, msg).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Api-Key"),
    );
    resp
}

/// `Authorization: Api-Key KEY` (keyword case-insensitive, as djangorestframework-api-key).
impl Guarded for State {
    fn refuse(&self, req: &Request) -> Option<Response> {
        let key = authorization(req.headers()).and_then(|h| credential(h, "Api-Key"));
        match key {
            None => Some(unauthorized(
                "Authentication credentials were not provided.",
            )),
            Some(k) if k == self.api_key => None,
            Some(_) => Some(unauthorized("Invalid API key.")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn display_name(first: &str, last: &str) -> String {
    match (first.trim(), last.trim()) {
        ("", "") => "Unknown".to_owned(),
        (f, "") => f.to_owned(),
        ("", l) => l.to_owned(),
        (f, l) => format!("{f} {l}"),
    }
}

/// A random version-4 UUID.
fn new_uuid() -> u128 {
    let r: u128 = rand::random();
    (r & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62)
}

fn fmt_uuid(u: u128) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        u >> 96,
        (u >> 80) & 0xFFFF,
        (u >> 64) & 0xFFFF,
        (u >> 48) & 0xFFFF,
        u & 0xFFFF_FFFF_FFFF
    )
}

/// Hyphenated (8-4-4-4-12) or plain 32-digit hex, any case.
fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    let hex: String = match b.len() {
        36 if [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') => {
            s.chars().filter(|&c| c != '-').collect()
        }
        32 => s.to_owned(),
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

// ---------------------------------------------------------------------------------------
// Registry

impl SimulatedProvider for State {
    fn throttled(left: std::time::Duration) -> axum::response::Response {
        // Django REST framework's throttling answer (inferred: MaiAgent documents no 429):
        // `{"detail": ...}` with a `Retry-After` in seconds.
        let secs = left.as_secs_f64().ceil().max(1.0) as u64;
        super::ratelimit::throttled_json(
            &serde_json::json!({
                "detail": format!("Request was throttled. Expected available in {secs} seconds.")
            }),
            Some(secs),
        )
    }

    const KIND: &'static str = "maiagent";
    const DEMO_NAME: &'static str = "sales-bot";
    const SEED: seed::Provider = seed::Provider {
        kind: Self::KIND,
        share: 60,
        needs_phone: false,
        listable: true,
        // The phone is free text.
        phone: PhoneStyle::FreeText,
        stray_spaces: true,
        tags: TagStyle::AnySpelling,
        salt: 0x22,
    };
    // Its contacts carry no tags anyone can read through the API.
    const REVEALS_TAGS: bool = false;
    type Credentials = Credentials;

    fn credentials(dice: &mut Dice) -> Credentials {
        // `prefix.secret`, djangorestframework-api-key style.
        let prefix = seed::token(dice, seed::ALNUM, 8);
        let secret = seed::token(dice, seed::ALNUM, 32);
        Credentials {
            api_key: format!("{prefix}.{secret}"),
            inbox_id: seed::uuid(dice),
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
    fn seed_identity_cases(&self, seed: u64, contacts: u64) {
        State::seed_identity_cases(self, &seed::identity_cases(seed, contacts, Self::SEED));
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
            "inbox_id": credentials.inbox_id,
            "api_key": credentials.api_key,
        })
    }
    fn config_lines(info: &Value) -> Vec<String> {
        vec![format!(
            "inbox_id = \"{}\"",
            info["inbox_id"].as_str().unwrap_or_default()
        )]
    }

    fn import_floor(p: &FloorPerson<'_>) -> Requests {
        if !p.known {
            return Requests::default();
        }
        let writes = match p.held {
            None => 1,
            Some(_) => u64::from(p.lacks_email()),
        };
        Requests { reads: 0, writes }
    }

    fn listing_floor_now(&self) -> u64 {
        floor::pages(self.contact_count() as u64, MAX_PAGE_SIZE as u64)
    }

    fn listing_floor(held: u64, _labels: &BTreeMap<String, u64>) -> u64 {
        // Pages of the largest size it serves.
        floor::pages(held, MAX_PAGE_SIZE as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trip_and_version() {
        let u = new_uuid();
        let s = fmt_uuid(u);
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(parse_uuid(&s), Some(u));
        assert_eq!(parse_uuid(&s.to_uppercase()), Some(u));
        assert_eq!(parse_uuid(&s.replace('-', "")), Some(u));
        assert_eq!(parse_uuid("not-a-uuid"), None);
        assert_eq!(parse_uuid(&format!("+{}", &s.replace('-', "")[1..])), None);
    }
}
