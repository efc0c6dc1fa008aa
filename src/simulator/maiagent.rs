//! Simulated MaiAgent contacts API.
//!
//! Owns the in-memory state of one MaiAgent workspace (inboxes and contacts) and the axum
//! router that serves it: `/api/contacts/` and `/api/v1/contacts/` (Django style, trailing
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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{self, OriginalUri, Path, RawQuery, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::SimulatedProvider;
use super::http::{
    Guarded, Reject, Reply, authorization, contains_ci, credential, detail, first, guard,
    query_pairs, respond,
};
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
                id: new_uuid(),
                inboxes: Inboxes::One(inbox),
                name: name.into_boxed_str(),
                phone,
                phone_is_number,
                email,
                source_id: None,
                avatar: None,
                query_metadata: None,
                mcp_credentials: None,
                created_at: now,
                updated_at: now,
                has_conversations: p.index % CONVERSATIONS_EVERY == CONVERSATIONS_EVERY - 1,
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
// Validation (DRF serializer behaviour)

/// Fields a write will set; `Some(None)` clears a nullable field.
#[allow(
    clippy::option_option,
    reason = "absent (keep) / null (clear) / value (set) is exactly what DRF distinguishes"
)]
#[derive(Default)]
struct Changes {
    name: Option<Box<str>>,
    inboxes: Option<Vec<u32>>,
    avatar: Option<Option<Box<str>>>,
    phone: Option<Option<Box<str>>>,
    email: Option<Option<Box<str>>>,
    source_id: Option<Option<Box<str>>>,
    query_metadata: Option<Option<Box<Value>>>,
    mcp_credentials: Option<Option<Box<Value>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// POST and PUT: required fields must be present.
    Full,
    /// PATCH.
    Partial,
}

/// DRF field errors, keyed by camelCase field name.
type FieldErrors = Map<String, Value>;

fn add_error(errors: &mut FieldErrors, field: &str, message: impl Into<String>) {
    let entry = errors
        .entry(field.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(v) = entry {
        v.push(Value::String(message.into()));
    }
}

/// Value of a field sent in camelCase or snake_case (camelCase wins).
fn field<'a>(data: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    data.get(camel).or_else(|| data.get(snake))
}

/// DRF `CharField`: strings and numbers are accepted, whitespace trimmed.
fn char_field(v: &Value) -> Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err("Not a valid string."),
    }
}

/// An optional text field: null and blank clear it.
#[allow(
    clippy::option_option,
    reason = "absent / clear / set, as in `Changes`"
)]
fn optional_text(
    errors: &mut FieldErrors,
    data: &Map<String, Value>,
    camel: &str,
    snake: &str,
    max: Option<usize>,
) -> Option<Option<Box<str>>> {
    let v = field(data, camel, snake)?;
    match char_field(v) {
        Ok(Some(s)) if s.is_empty() => Some(None),
        Ok(Some(s)) => {
            if let Some(max) = max
                && s.chars().count() > max
            {
                add_error(
                    errors,
                    camel,
                    format!("Ensure this field has no more than {max} characters."),
                );
                return None;
            }
            Some(Some(s.into_boxed_str()))
        }
        Ok(None) => Some(None),
        Err(msg) => {
            add_error(errors, camel, msg);
            None
        }
    }
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

impl Inner {
    fn parse_inbox_ref(&self, item: &Value) -> Result<u32, String> {
        let raw = match item {
            Value::Object(o) => match o.get("id") {
                Some(Value::String(s)) => s.as_str(),
                Some(_) => return Err("Must be a valid UUID.".to_owned()),
                None => return Err("This field is required.".to_owned()),
            },
            Value::String(s) => s.as_str(),
            _ => return Err("Must be a valid UUID.".to_owned()),
        };
        let id = parse_uuid(raw).ok_or_else(|| "Must be a valid UUID.".to_owned())?;
        self.inbox_by_id
            .get(&id)
            .copied()
            .ok_or_else(|| format!("Invalid pk \"{raw}\" - object does not exist."))
    }

    fn parse_inboxes(
        &self,
        errors: &mut FieldErrors,
        data: &Map<String, Value>,
    ) -> Option<Vec<u32>> {
        if let Some(v) = data.get("inboxes") {
            let items = match v {
                Value::Array(items) => items,
                Value::Null => {
                    add_error(errors, "inboxes", "This field may not be null.");
                    return None;
                }
                other => {
                    add_error(
                        errors,
                        "inboxes",
                        format!(
                            "Expected a list of items but got type \"{}\".",
                            python_type(other)
                        ),
                    );
                    return None;
                }
            };
            if items.is_empty() {
                add_error(errors, "inboxes", "This list may not be empty.");
                return None;
            }
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match self.parse_inbox_ref(item) {
                    Ok(idx) if !out.contains(&idx) => out.push(idx),
                    Ok(_) => {}
                    Err(msg) => add_error(errors, "inboxes", msg),
                }
            }
            return Some(out);
        }
        // Legacy single inbox.
        let v = data.get("inbox")?;
        if v.is_null() {
            add_error(errors, "inbox", "This field may not be null.");
            return None;
        }
        match self.parse_inbox_ref(v) {
            Ok(idx) => Some(vec![idx]),
            Err(msg) => {
                add_error(errors, "inbox", msg);
                None
            }
        }
    }

    /// Validate a request body against the contact serializer. `current` is the contact
    /// being updated (None on create).
    fn validate(
        &self,
        data: &Map<String, Value>,
        mode: Mode,
        current: Option<u32>,
    ) -> Result<Changes, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut ch = Changes::default();

        match data.get("name") {
            None if mode == Mode::Full => add_error(&mut errors, "name", "This field is required."),
            None => {}
            Some(Value::Null) => add_error(&mut errors, "name", "This field may not be null."),
            Some(v) => match char_field(v) {
                Ok(Some(s)) if s.is_empty() => {
                    add_error(&mut errors, "name", "This field may not be blank.");
                }
                Ok(Some(s)) if s.chars().count() > MAX_CHARS => add_error(
                    &mut errors,
                    "name",
                    format!("Ensure this field has no more than {MAX_CHARS} characters."),
                ),
                Ok(Some(s)) => ch.name = Some(s.into_boxed_str()),
                Ok(None) => add_error(&mut errors, "name", "This field may not be null."),
                Err(msg) => add_error(&mut errors, "name", msg),
            },
        }

        let inboxes_given = data.contains_key("inboxes") || data.contains_key("inbox");
        if !inboxes_given && mode == Mode::Full {
            add_error(&mut errors, "inboxes", "This field is required.");
        }
        ch.inboxes = self.parse_inboxes(&mut errors, data);

        ch.avatar = optional_text(&mut errors, data, "avatar", "avatar", None);
        ch.phone = optional_text(&mut errors, data, "phoneNumber", "phone_number", None);
        ch.source_id = optional_text(&mut errors, data, "sourceId", "source_id", Some(MAX_CHARS));
        ch.email = optional_text(&mut errors, data, "email", "email", None);
        if let Some(Some(e)) = &ch.email
            && !valid_email(e)
        {
            add_error(&mut errors, "email", "Enter a valid email address.");
        }
        if let Some(v) = field(data, "queryMetadata", "query_metadata") {
            ch.query_metadata = Some((!v.is_null()).then(|| Box::new(v.clone())));
        }
        if let Some(v) = field(data, "mcpCredentials", "mcp_credentials") {
            ch.mcp_credentials = Some((!v.is_null()).then(|| Box::new(v.clone())));
        }

        if errors.is_empty() {
            // `sourceId` is unique within each inbox the contact belongs to.
            let cur = current.and_then(|s| self.contact(s));
            let source_id = match &ch.source_id {
                Some(sid) => sid.clone(),
                None => cur.and_then(|c| c.source_id.clone()),
            };
            let inboxes: Vec<u32> = match &ch.inboxes {
                Some(v) => v.clone(),
                None => cur
                    .map(|c| c.inboxes.as_slice().to_vec())
                    .unwrap_or_default(),
            };
            if let Some(sid) = source_id {
                let taken = inboxes.iter().any(|&ib| {
                    self.source_ids
                        .get(&(ib, sid.clone()))
                        .is_some_and(|&holder| Some(holder) != current)
                });
                if taken {
                    add_error(
                        &mut errors,
                        "sourceId",
                        "contact with this source id already exists.",
                    );
                }
            }
        }

        if errors.is_empty() {
            Ok(ch)
        } else {
            Err(errors)
        }
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

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    first(params, key)
}

/// DRF `_positive_int(strict=True, cutoff=max)`, falling back to the default.
fn page_size(params: &[(String, String)]) -> usize {
    let raw = param(params, "pageSize").or_else(|| param(params, "page_size"));
    match raw.map(|s| s.trim().parse::<i64>()) {
        Some(Ok(n)) if n > 0 => (n as usize).min(MAX_PAGE_SIZE),
        _ => DEFAULT_PAGE_SIZE,
    }
}

/// Django `Paginator.validate_number`; `None` means "Invalid page.".
fn page_number(params: &[(String, String)], num_pages: usize) -> Option<usize> {
    match param(params, "page") {
        None => Some(1),
        Some("last") => Some(num_pages),
        Some(s) => {
            let n = s.trim().parse::<i64>().ok()?;
            (n >= 1 && (n as usize) <= num_pages).then_some(n as usize)
        }
    }
}

/// `http://{Host}{path}` of the request, as DRF's `build_absolute_uri` would see it.
fn absolute_base(headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(ToString::to_string))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("http://{host}{}", uri.path())
}

/// DRF `replace_query_param` / `remove_query_param`: keys sorted, other params kept.
fn page_link(base: &str, params: &[(String, String)], page: Option<usize>) -> String {
    let mut grouped: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (k, v) in params {
        if k != "page" {
            grouped.entry(k.as_str()).or_default().push(v.clone());
        }
    }
    if let Some(p) = page {
        grouped.insert("page", vec![p.to_string()]);
    }
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, vs) in &grouped {
        for v in vs {
            ser.append_pair(k, v);
        }
    }
    let q = ser.finish();
    if q.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{q}")
    }
}

/// The hyphenated lower-case form of a UUID, without allocating.
fn uuid_ascii(u: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut nibble = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        *slot = HEX[((u >> (124 - 4 * nibble)) & 0xF) as usize];
        nibble += 1;
    }
    out
}

/// List filters from the query string.
struct Filter {
    query: Option<String>,
    query_may_be_id: bool,
    search: Vec<String>,
    inboxes: Option<Vec<u32>>,
}

impl Filter {
    fn from_params(params: &[(String, String)], inner: &Inner) -> Result<Self, Reject> {
        let query = param(params, "query")
            .map(|q| q.trim().to_lowercase())
            .filter(|q| !q.is_empty());
        let query_may_be_id = query
            .as_deref()
            .is_some_and(|q| q.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        let search = param(params, "search")
            .map(|s| {
                s.replace('\0', "")
                    .replace(',', " ")
                    .split_whitespace()
                    .map(str::to_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let mut inbox_values = params
            .iter()
            .filter(|(k, _)| k == "inboxes" || k == "inbox")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .peekable();
        let inboxes = if inbox_values.peek().is_some() {
            let mut out = Vec::new();
            for v in inbox_values {
                let Some(id) = parse_uuid(v) else {
                    return Err(Reject(
                        StatusCode::BAD_REQUEST,
                        json!({"inboxes": ["Enter a valid UUID."]}),
                    ));
                };
                // An inbox that does not exist simply matches nothing.
                if let Some(&idx) = inner.inbox_by_id.get(&id) {
                    out.push(idx);
                }
            }
            Some(out)
        } else {
            None
        };
        Ok(Filter {
            query,
            query_may_be_id,
            search,
            inboxes,
        })
    }

    fn is_empty(&self) -> bool {
        self.query.is_none() && self.search.is_empty() && self.inboxes.is_none()
    }

    fn matches(&self, c: &Contact, buf: &mut String) -> bool {
        if let Some(wanted) = &self.inboxes
            && !c.inboxes.as_slice().iter().any(|i| wanted.contains(i))
        {
            return false;
        }
        if let Some(q) = &self.query {
            let hit = contains_ci(buf, &c.name, q)
                || c.source_id
                    .as_deref()
                    .is_some_and(|s| contains_ci(buf, s, q))
                || (self.query_may_be_id
                    && std::str::from_utf8(&uuid_ascii(c.id))
                        .is_ok_and(|id| id.contains(q.as_str())));
            if !hit {
                return false;
            }
        }
        self.search.iter().all(|term| {
            contains_ci(buf, &c.name, term)
                || [&c.email, &c.phone, &c.source_id]
                    .into_iter()
                    .any(|f| f.as_deref().is_some_and(|s| contains_ci(buf, s, term)))
        })
    }
}

async fn list(
    extract::State(st): Shared,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Reply {
    let params = query_pairs(raw.as_deref());
    let size = page_size(&params);
    let inner = st.lock();
    let filter = Filter::from_params(&params, &inner)?;
    let mut buf = String::new();
    let matched: Option<Vec<u32>> = (!filter.is_empty()).then(|| {
        inner
            .order
            .iter()
            .copied()
            .filter(|&s| {
                inner
                    .contact(s)
                    .is_some_and(|c| filter.matches(c, &mut buf))
            })
            .collect()
    });
    let all: &[u32] = matched.as_deref().unwrap_or(&inner.order);
    let count = all.len();
    let num_pages = count.div_ceil(size).max(1);
    let page = page_number(&params, num_pages)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "Invalid page."))?;
    let start = (page - 1) * size;
    let end = (start + size).min(count);
    let results: Vec<Value> = all[start..end]
        .iter()
        .filter_map(|&s| inner.contact(s))
        .map(|c| inner.contact_json(c))
        .collect();
    drop(inner);
    let base = absolute_base(&headers, &uri);
    let next = (page < num_pages).then(|| page_link(&base, &params, Some(page + 1)));
    let previous = (page > 1).then(|| page_link(&base, &params, (page > 2).then_some(page - 1)));
    Ok(respond(
        StatusCode::OK,
        json!({"count": count, "next": next, "previous": previous, "results": results}),
    ))
}

/// Parse a JSON object body the way DRF's `JSONParser` plus a serializer would.
fn parse_body(body: &Bytes) -> Result<Map<String, Value>, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Reject(
            StatusCode::BAD_REQUEST,
            json!({"nonFieldErrors": [format!(
                "Invalid data. Expected a dictionary, but got {}.",
                python_type(&other)
            )]}),
        )),
        Err(e) => Err(detail(
            StatusCode::BAD_REQUEST,
            &format!("JSON parse error - {e}"),
        )),
    }
}

async fn create(extract::State(st): Shared, body: Bytes) -> Reply {
    let data = parse_body(&body)?;
    let mut inner = st.lock();
    let mut ch = inner
        .validate(&data, Mode::Full, None)
        .map_err(|errors| Reject(StatusCode::BAD_REQUEST, Value::Object(errors)))?;
    let now = now_ms();
    let inboxes = ch
        .inboxes
        .take()
        .unwrap_or_else(|| vec![inner.default_inbox]);
    let slot = inner.insert(Contact {
        id: new_uuid(),
        inboxes: Inboxes::from_vec(inboxes),
        name: ch.name.take().unwrap_or_default(),
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
    });
    inner.apply(slot, ch, now);
    if let Some(c) = inner.contact_mut(slot) {
        c.updated_at = now;
    }
    Ok(respond(StatusCode::CREATED, inner.slot_json(slot)))
}

async fn retrieve(extract::State(st): Shared, Path(id): Path<String>) -> Reply {
    let inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(not_found_detail)?;
    Ok(respond(StatusCode::OK, inner.slot_json(slot)))
}

/// PUT and PATCH: 404 before validation, as DRF's `get_object` runs first.
fn update(st: &State, id: &str, body: &Bytes, mode: Mode) -> Reply {
    let mut inner = st.lock();
    let slot = inner.slot_of(id).ok_or_else(not_found_detail)?;
    let data = parse_body(body)?;
    let ch = inner
        .validate(&data, mode, Some(slot))
        .map_err(|errors| Reject(StatusCode::BAD_REQUEST, Value::Object(errors)))?;
    inner.apply(slot, ch, now_ms());
    Ok(respond(StatusCode::OK, inner.slot_json(slot)))
}

async fn replace(extract::State(st): Shared, Path(id): Path<String>, body: Bytes) -> Reply {
    update(&st, &id, &body, Mode::Full)
}

async fn partial_update(extract::State(st): Shared, Path(id): Path<String>, body: Bytes) -> Reply {
    update(&st, &id, &body, Mode::Partial)
}

async fn destroy(extract::State(st): Shared, Path(id): Path<String>) -> Reply {
    let mut inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(not_found_detail)?;
    if inner.contact(slot).is_some_and(|c| c.has_conversations) {
        return Err(detail(
            StatusCode::BAD_REQUEST,
            "Cannot delete a contact that still has associated conversations.",
        ));
    }
    inner.remove(slot);
    Ok(StatusCode::NO_CONTENT.into_response())
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

    #[test]
    fn page_links_sort_keys_and_drop_page_for_first() {
        let params = vec![
            ("pageSize".to_owned(), "5".to_owned()),
            ("page".to_owned(), "3".to_owned()),
            ("query".to_owned(), "a b".to_owned()),
        ];
        assert_eq!(
            page_link("http://h/api/contacts/", &params, Some(4)),
            "http://h/api/contacts/?page=4&pageSize=5&query=a+b"
        );
        assert_eq!(
            page_link("http://h/api/contacts/", &params, None),
            "http://h/api/contacts/?pageSize=5&query=a+b"
        );
    }

    #[test]
    fn contains_ci_handles_unicode() {
        let mut buf = String::new();
        assert!(contains_ci(&mut buf, "Ada LOVELACE", "lovelace"));
        assert!(contains_ci(&mut buf, "Zoë ÄRGER", "ärger"));
        assert!(!contains_ci(&mut buf, "Ada", "bob"));
    }

    #[test]
    fn uuid_ascii_matches_fmt_uuid() {
        for _ in 0..100 {
            let u = new_uuid();
            assert_eq!(std::str::from_utf8(&uuid_ascii(u)).unwrap(), fmt_uuid(u));
        }
    }
}
