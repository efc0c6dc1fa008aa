//! Simulated DM Champ contacts API.
//!
//! Owns the in-memory state of one DM Champ account (contacts with their hidden fields,
//! tags, lists, and the duplicate-create behaviour) and the axum router that serves it
//! under `/v1`: lookup `GET /v1/contacts?phoneNumber=|email=` (answers only the id),
//! `POST /v1/contacts`, `PUT /v1/contacts/{id}`, `GET /v1/contacts/tags/{id}`,
//! `GET /v1/contacts/messages/{id}`, `GET /v1/tags`, `POST /v1/tags`,
//! `POST /v1/contacts/lists` and `DELETE /v1/contacts/lists` (JSON body on a DELETE), all
//! behind the `apiKey` query parameter. There is no listing, no delete and no tag removal,
//! as in the real API. Fault injection and the request log are middleware the simulator
//! core wraps around [`router`]; this module does neither.
//!
//! Written from what is known of DM Champ's API alone; it shares no types with the
//! client in `src/provider/`.
//!
//! Choices of ours where DM Champ's behaviour is not known (not DM Champ facts):
//! - Contact ids: 24 lower-case hex digits (opaque to clients).
//! - Phones are stored in strict E.164 (`+` then 1–15 digits, first not 0); create refuses
//!   anything else with 400. Lookup compares the decoded `phoneNumber` with that string
//!   exactly, so a raw `+` (decoded as a space) never matches. `POST /v1/tags` takes the
//!   digits without `+` and prefixes one; a value with its own `+` does not match.
//!   Seeded contacts came in through WhatsApp: about one in five shows `phoneNumber` as
//!   the WhatsApp id it came with (`<digits>@s.whatsapp.net` or `<digits>@c.us`,
//!   [`seed::WaForm`]); lookups by phone find them all the same. With the identity cases
//!   ([`seed::IdentityCases`], off by default) it also holds WhatsApp contacts known only
//!   by their privacy id: `phoneNumber` shows `<digits>@lid`, keyed on those digits.
//! - Email lookup compares trimmed, lower-cased emails; the oldest contact wins when several
//!   share one. Email is not unique.
//! - Duplicate phone on create: see [`DuplicateMode`] (default: return the existing id).
//! - 400 bodies: the lookup answers a bare JSON string, every other endpoint
//!   `{"error": "..."}` (the spec allows both). 401: a bare JSON string. 404:
//!   `{"success": false, "message": "..."}`.
//! - `POST /v1/tags` answers 200 `{"success": true, "message": "Tag added to contact"}`;
//!   the tag is matched by trimmed, case-insensitive name and created (empty description)
//!   if missing. Parameters come from the query string, or from a JSON body if absent there.
//! - `PUT`: a blank or null `firstName`/`lastName` is ignored; a blank or null `email`
//!   clears it; a wrongly typed value is a 400.
//! - `GET /v1/contacts/messages/{id}` answers `[]` (no messages are simulated).
//! - Lists exist only once added with [`State::add_list`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{self, Path, RawQuery, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};

use super::SimulatedProvider;
use super::floor::{FloorPerson, Requests};
use super::http::{Guarded, Reject, Reply, first, guard, query_pairs, respond};
use super::seed::{self, Dice, Person, PhoneStyle, TagStyle};

/// Create-time fields stored as sent and shown only by [`State::dump`], with their
/// defaults.
const EXTRA_FIELDS: [&str; 8] = [
    "instagramId",
    "currentCampaign",
    "currentCampaignData",
    "channel",
    "isChatWindowOpen",
    "externalId",
    "customChannel",
    "chatWidgetId",
];

/// What a client needs to talk to this simulated account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The key sent as the `apiKey` query parameter.
    pub api_key: String,
}

/// What `POST /v1/contacts` does when the phone already belongs to a contact (the
/// API is documented to do either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateMode {
    /// 200 `{"success": true, "data": {"message": "Contact already exists", "contactId"}}`
    /// with the existing contact's id; nothing is changed.
    #[default]
    ReturnExisting,
    /// 409 `{"success": false, "message": "Contact already exists"}`.
    Conflict,
}

/// The whole simulated account, behind one mutex.
pub struct State {
    api_key: String,
    inner: Mutex<Inner>,
}

struct Tag {
    name: Box<str>,
    description: Box<str>,
}

struct List {
    id: String,
    name: String,
}

struct Contact {
    /// 96 random bits, shown as 24 hex digits.
    id: u128,
    /// E.164 digits without `+`.
    phone: u64,
    /// Seeded from WhatsApp: the phone is shown as that WhatsApp id.
    wa: Option<seed::WaForm>,
    first_name: Box<str>,
    last_name: Box<str>,
    email: Option<Box<str>>,
    is_bot_active: bool,
    do_not_disturb: bool,
    tags: Vec<u32>,
    lists: Vec<u32>,
    /// The other create-time fields, as sent.
    extra: Option<Box<Map<String, Value>>>,
}

#[derive(Default)]
struct Inner {
    duplicate_mode: DuplicateMode,
    slots: Vec<Contact>,
    by_id: HashMap<u128, u32>,
    by_phone: HashMap<u64, u32>,
    /// (trimmed lower-case email, slot): the first entry for an email is the oldest.
    by_email: BTreeSet<(Box<str>, u32)>,
    tags: Vec<Tag>,
    tag_by_name: HashMap<String, u32>,
    lists: Vec<List>,
}

impl State {
    /// An empty account, duplicate creates returning the existing contact.
    pub fn new(credentials: Credentials) -> Self {
        State {
            api_key: credentials.api_key,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Insert people as DM Champ would hold them: the phone in E.164 (people without an
    /// E.164 phone are skipped, DM Champ requires one; a phone seen again is skipped),
    /// names as typed ("Unknown" when blank), the email as typed, tags created as needed.
    pub fn seed(&self, people: impl IntoIterator<Item = Person>) {
        let mut inner = self.lock();
        for p in people {
            let Some(phone) = p
                .phone_e164
                .as_deref()
                .and_then(|e| e.trim().strip_prefix('+'))
                .and_then(e164_digits)
            else {
                continue;
            };
            if inner.by_phone.contains_key(&phone) {
                continue;
            }
            let slot = inner.insert(Contact {
                id: new_id(),
                phone,
                wa: seed::WaForm::of(p.index),
                first_name: name_or_unknown(&p.first_name),
                last_name: name_or_unknown(&p.last_name),
                email: p
                    .email
                    .filter(|e| !e.trim().is_empty())
                    .map(String::into_boxed_str),
                is_bot_active: true,
                do_not_disturb: false,
                tags: Vec::new(),
                lists: Vec::new(),
                extra: None,
            });
            for t in &p.tags {
                inner.tag_contact(slot, t);
            }
        }
    }

    /// Insert WhatsApp contacts known only by their privacy id ([`seed::IdentityCases`]):
    /// `phoneNumber` shows `<digits>@lid`, the names as their profile gives them, no
    /// email. The contact is keyed on the id's digits, as a phone would be.
    pub fn seed_lids(&self, lids: &[seed::LidContact]) {
        let mut inner = self.lock();
        for c in lids {
            if inner.by_phone.contains_key(&c.lid) {
                continue;
            }
            inner.insert(Contact {
                id: new_id(),
                phone: c.lid,
                wa: Some(seed::WaForm::Lid),
                first_name: name_or_unknown(&c.first_name),
                last_name: name_or_unknown(&c.last_name),
                email: None,
                is_bot_active: true,
                do_not_disturb: false,
                tags: Vec::new(),
                lists: Vec::new(),
                extra: None,
            });
        }
    }

    /// Everything, hidden fields included: `{"duplicateMode", "lists": [{"id","name"}],
    /// "tags": [{"name","description"}], "contacts": [{"contactId", "phoneNumber",
    /// "firstName", "lastName", "email", "is_bot_active", "do_not_disturb", "instagramId",
    /// "currentCampaign", "currentCampaignData", "channel", "isChatWindowOpen",
    /// "externalId", "customChannel", "chatWidgetId", "tags": [names], "lists": [list ids]}]}`.
    pub fn dump(&self) -> Value {
        let inner = self.lock();
        let contacts: Vec<Value> = inner.slots.iter().map(|c| inner.contact_dump(c)).collect();
        json!({
            "duplicateMode": match inner.duplicate_mode {
                DuplicateMode::ReturnExisting => "returnExisting",
                DuplicateMode::Conflict => "conflict",
            },
            "lists": inner.lists.iter().map(|l| json!({"id": l.id, "name": l.name})).collect::<Vec<_>>(),
            "tags": inner.tags.iter().map(tag_json).collect::<Vec<_>>(),
            "contacts": contacts,
        })
    }

    /// Number of contacts (DM Champ has no delete, so this only grows).
    pub fn contact_count(&self) -> usize {
        self.lock().slots.len()
    }

    /// Choose what a create with an existing phone does.
    pub fn set_duplicate_mode(&self, mode: DuplicateMode) {
        self.lock().duplicate_mode = mode;
    }

    /// Add a list contacts can be put in. False if a list with this id exists.
    pub fn add_list(&self, id: &str, name: &str) -> bool {
        let mut inner = self.lock();
        if inner.lists.iter().any(|l| l.id == id) {
            return false;
        }
        inner.lists.push(List {
            id: id.to_owned(),
            name: name.to_owned(),
        });
        true
    }
}

fn tag_json(t: &Tag) -> Value {
    json!({"name": t.name, "description": t.description})
}

fn name_or_unknown(s: &str) -> Box<str> {
    let s = s.trim();
    if s.is_empty() {
        "Unknown".into()
    } else {
        s.into()
    }
}

fn email_key(e: &str) -> Box<str> {
    e.trim().to_lowercase().into_boxed_str()
}

impl Inner {
    fn contact(&self, slot: u32) -> Option<&Contact> {
        self.slots.get(slot as usize)
    }

    fn slot_of(&self, id: &str) -> Option<u32> {
        parse_id(id).and_then(|u| self.by_id.get(&u).copied())
    }

    fn insert(&mut self, c: Contact) -> u32 {
        let slot = self.slots.len() as u32;
        self.by_id.insert(c.id, slot);
        self.by_phone.insert(c.phone, slot);
        if let Some(e) = &c.email {
            self.by_email.insert((email_key(e), slot));
        }
        self.slots.push(c);
        slot
    }

    fn find_by_email(&self, email: &str) -> Option<u32> {
        let key = email_key(email);
        self.by_email
            .range((Bound::Included((key.clone(), 0)), Bound::Unbounded))
            .next()
            .filter(|(k, _)| *k == key)
            .map(|&(_, slot)| slot)
    }

    fn find_by_e164(&self, phone: &str) -> Option<u32> {
        phone
            .strip_prefix('+')
            .and_then(e164_digits)
            .and_then(|d| self.by_phone.get(&d).copied())
    }

    fn set_email(&mut self, slot: u32, email: Option<Box<str>>) {
        let Some(c) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if let Some(old) = &c.email {
            self.by_email.remove(&(email_key(old), slot));
        }
        if let Some(new) = &email {
            self.by_email.insert((email_key(new), slot));
        }
        c.email = email;
    }

    /// Add a tag (created if missing, matched case-insensitively) to a contact.
    fn tag_contact(&mut self, slot: u32, name: &str) {
        let name = name.trim();
        if name.is_empty() {
            return;
        }
        let key = name.to_lowercase();
        let idx = if let Some(&idx) = self.tag_by_name.get(&key) {
            idx
        } else {
            let idx = self.tags.len() as u32;
            self.tags.push(Tag {
                name: name.into(),
                description: "".into(),
            });
            self.tag_by_name.insert(key, idx);
            idx
        };
        if let Some(c) = self.slots.get_mut(slot as usize)
            && !c.tags.contains(&idx)
        {
            c.tags.push(idx);
        }
    }

    fn contact_dump(&self, c: &Contact) -> Value {
        let mut m = Map::new();
        m.insert("contactId".into(), fmt_id(c.id).into());
        m.insert(
            "phoneNumber".into(),
            c.wa.map_or_else(|| format!("+{}", c.phone), |wa| wa.render(c.phone))
                .into(),
        );
        m.insert("firstName".into(), c.first_name.as_ref().into());
        m.insert("lastName".into(), c.last_name.as_ref().into());
        m.insert(
            "email".into(),
            c.email.as_deref().map_or(Value::Null, Value::from),
        );
        m.insert("is_bot_active".into(), c.is_bot_active.into());
        m.insert("do_not_disturb".into(), c.do_not_disturb.into());
        for key in EXTRA_FIELDS {
            let default = match key {
                "currentCampaignData" => json!({}),
                "isChatWindowOpen" => json!(false),
                _ => Value::Null,
            };
            let v = c
                .extra
                .as_ref()
                .and_then(|e| e.get(key))
                .cloned()
                .unwrap_or(default);
            m.insert(key.into(), v);
        }
        let tags: Vec<Value> = c
            .tags
            .iter()
            .filter_map(|&t| self.tags.get(t as usize))
            .map(|t| Value::from(t.name.as_ref()))
            .collect();
        m.insert("tags".into(), tags.into());
        let lists: Vec<Value> = c
            .lists
            .iter()
            .filter_map(|&l| self.lists.get(l as usize))
            .map(|l| Value::from(l.id.as_str()))
            .collect();
        m.insert("lists".into(), lists.into());
        Value::Object(m)
    }
}

/// 1–15 ASCII digits, the first not 0, as a number.
fn e164_digits(digits: &str) -> Option<u64> {
    let ok = (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok { digits.parse().ok() } else { None }
}

// ---------------------------------------------------------------------------------------
// HTTP

/// The router with every documented contact and tag path under `/v1`, behind `apiKey`.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/v1/contacts", get(lookup).post(create))
        .route("/v1/contacts/{id}", put(update))
        .route("/v1/contacts/tags/{id}", get(contact_tags))
        .route("/v1/contacts/messages/{id}", get(contact_messages))
        .route(
            "/v1/contacts/lists",
            post(add_to_list).delete(remove_from_list),
        )
        .route("/v1/tags", get(all_tags).post(tag_contact))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::<State>,
        ))
        .fallback(not_found)
        .with_state(state)
}

type Shared = extract::State<Arc<State>>;

fn success(body: Value) -> Response {
    respond(StatusCode::OK, body)
}

/// 400 `{"error": "..."}`.
fn bad_request(msg: &str) -> Reject {
    Reject(StatusCode::BAD_REQUEST, json!({ "error": msg }))
}

/// `{"success": false, "message": "..."}`.
fn failure(status: StatusCode, msg: &str) -> Reject {
    Reject(status, json!({"success": false, "message": msg}))
}

fn contact_not_found() -> Reject {
    failure(StatusCode::NOT_FOUND, "Contact not found")
}

async fn not_found() -> Reject {
    failure(StatusCode::NOT_FOUND, "Not found")
}

/// First value of a query parameter, if present and not empty (not trimmed: a `+` that
/// arrived raw is a space and stays one).
fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    first(params, key).filter(|v| !v.is_empty())
}

/// The `apiKey` query parameter.
impl Guarded for State {
    fn refuse(&self, req: &Request) -> Option<Response> {
        let params = query_pairs(req.uri().query());
        (param(&params, "apiKey") != Some(self.api_key.as_str())).then(|| {
            respond(
                StatusCode::UNAUTHORIZED,
                Value::String("Unauthorized: invalid or missing apiKey".into()),
            )
        })
    }
}

async fn lookup(extract::State(st): Shared, RawQuery(raw): RawQuery) -> Reply {
    let params = query_pairs(raw.as_deref());
    let inner = st.lock();
    let found = match (param(&params, "phoneNumber"), param(&params, "email")) {
        (Some(phone), _) => inner.find_by_e164(phone),
        (None, Some(email)) => inner.find_by_email(email),
        (None, None) => {
            return Err(Reject(
                StatusCode::BAD_REQUEST,
                Value::String("Either phoneNumber or email is required".into()),
            ));
        }
    };
    let c = found
        .and_then(|s| inner.contact(s))
        .ok_or_else(contact_not_found)?;
    Ok(success(json!({"success": true, "contactId": fmt_id(c.id)})))
}

fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Reject> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("Request body must be a JSON object")),
        Err(_) => Err(bad_request("Invalid JSON body")),
    }
}

/// A string field: `Ok(None)` when absent or null.
fn opt_string<'a>(data: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Reject> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_request(&format!("{key} must be a string"))),
    }
}

fn opt_bool(data: &Map<String, Value>, key: &str) -> Result<Option<bool>, Reject> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad_request(&format!("{key} must be a boolean"))),
    }
}

/// Everything `POST /v1/contacts` accepts, validated.
struct NewContact {
    phone: u64,
    first_name: Box<str>,
    last_name: Box<str>,
    email: Option<Box<str>>,
    is_bot_active: bool,
    do_not_disturb: bool,
    list_ids: Vec<String>,
    extra: Option<Box<Map<String, Value>>>,
}

fn parse_new_contact(data: &Map<String, Value>) -> Result<NewContact, Reject> {
    let phone = opt_string(data, "phoneNumber")?
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| bad_request("phoneNumber is required"))?;
    let phone = phone
        .strip_prefix('+')
        .and_then(e164_digits)
        .ok_or_else(|| {
            bad_request("phoneNumber must include a valid country code, e.g. +14155550123")
        })?;
    let first_name = name_or_unknown(opt_string(data, "firstName")?.unwrap_or_default());
    let last_name = name_or_unknown(opt_string(data, "lastName")?.unwrap_or_default());
    let email = opt_string(data, "email")?
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(Box::from);
    let is_bot_active = opt_bool(data, "is_bot_active")?.unwrap_or(true);
    let do_not_disturb = opt_bool(data, "do_not_disturb")?.unwrap_or(false);
    // `listIds` wins over `listId`.
    let list_ids = match (data.get("listIds"), data.get("listId")) {
        (Some(Value::Array(ids)), _) => ids
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad_request("listIds must be strings"))?,
        (Some(Value::Null) | None, Some(Value::String(id))) => vec![id.clone()],
        (Some(Value::Null) | None, None | Some(Value::Null)) => Vec::new(),
        _ => return Err(bad_request("listId/listIds are invalid")),
    };
    let extra: Map<String, Value> = EXTRA_FIELDS
        .iter()
        .filter_map(|&k| data.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect();
    Ok(NewContact {
        phone,
        first_name,
        last_name,
        email,
        is_bot_active,
        do_not_disturb,
        list_ids,
        extra: (!extra.is_empty()).then(|| Box::new(extra)),
    })
}

async fn create(extract::State(st): Shared, body: Bytes) -> Reply {
    let new = parse_new_contact(&parse_object(&body)?)?;
    let mut inner = st.lock();
    if let Some(&slot) = inner.by_phone.get(&new.phone) {
        return match inner.duplicate_mode {
            DuplicateMode::ReturnExisting => Ok(success(json!({"success": true, "data": {
                "message": "Contact already exists",
                "contactId": inner.contact(slot).map(|c| fmt_id(c.id)),
            }}))),
            DuplicateMode::Conflict => Err(failure(StatusCode::CONFLICT, "Contact already exists")),
        };
    }
    // If any list is missing, nothing is created.
    let mut lists = Vec::with_capacity(new.list_ids.len());
    for id in &new.list_ids {
        let idx = inner
            .lists
            .iter()
            .position(|l| &l.id == id)
            .ok_or_else(|| failure(StatusCode::NOT_FOUND, "List not found"))?
            as u32;
        if !lists.contains(&idx) {
            lists.push(idx);
        }
    }
    let id = new_id();
    inner.insert(Contact {
        id,
        phone: new.phone,
        wa: None,
        first_name: new.first_name,
        last_name: new.last_name,
        email: new.email,
        is_bot_active: new.is_bot_active,
        do_not_disturb: new.do_not_disturb,
        tags: Vec::new(),
        lists,
        extra: new.extra,
    });
    Ok(success(json!({"success": true, "data": {
        "message": "Successfully created new contact",
        "contactId": fmt_id(id),
    }})))
}

async fn update(extract::State(st): Shared, Path(id): Path<String>, body: Bytes) -> Reply {
    let data = parse_object(&body)?;
    // Only these fields can change; `phoneNumber` and anything else is ignored.
    let first = opt_string(&data, "firstName")?
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let last = opt_string(&data, "lastName")?
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let bot = opt_bool(&data, "is_bot_active")?;
    let dnd = opt_bool(&data, "do_not_disturb")?;
    let email_given = data.contains_key("email");
    let email = opt_string(&data, "email")?
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(Box::from);
    let mut inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(contact_not_found)?;
    if email_given {
        // null or "" clears the email.
        inner.set_email(slot, email);
    }
    if let Some(c) = inner.slots.get_mut(slot as usize) {
        if let Some(f) = first {
            c.first_name = f.into();
        }
        if let Some(l) = last {
            c.last_name = l.into();
        }
        if let Some(b) = bot {
            c.is_bot_active = b;
        }
        if let Some(d) = dnd {
            c.do_not_disturb = d;
        }
    }
    Ok(success(
        json!({"success": true, "message": "Contact updated successfully"}),
    ))
}

async fn contact_tags(extract::State(st): Shared, Path(id): Path<String>) -> Reply {
    let inner = st.lock();
    let c = inner
        .slot_of(&id)
        .and_then(|s| inner.contact(s))
        .ok_or_else(contact_not_found)?;
    let tags: Vec<Value> = c
        .tags
        .iter()
        .filter_map(|&t| inner.tags.get(t as usize))
        .map(tag_json)
        .collect();
    Ok(success(Value::Array(tags)))
}

async fn contact_messages(extract::State(st): Shared, Path(id): Path<String>) -> Reply {
    let inner = st.lock();
    inner.slot_of(&id).ok_or_else(contact_not_found)?;
    Ok(success(json!([])))
}

async fn all_tags(extract::State(st): Shared) -> Reply {
    let inner = st.lock();
    Ok(success(Value::Array(
        inner.tags.iter().map(tag_json).collect(),
    )))
}

/// `POST /v1/tags?tag=…&phoneNumber=<digits without +>` or `&email=…`.
async fn tag_contact(extract::State(st): Shared, RawQuery(raw): RawQuery, body: Bytes) -> Reply {
    let params = query_pairs(raw.as_deref());
    let body: Map<String, Value> = serde_json::from_slice(&body).unwrap_or_default();
    let get = |key: &str| -> Option<String> {
        param(&params, key).map(str::to_owned).or_else(|| {
            body.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
    };
    let tag = get("tag")
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| bad_request("tag is required"))?;
    let mut inner = st.lock();
    let slot = match (get("phoneNumber"), get("email")) {
        (Some(digits), _) => inner.find_by_e164(&format!("+{digits}")),
        (None, Some(email)) => inner.find_by_email(&email),
        (None, None) => return Err(bad_request("phoneNumber or email is required")),
    };
    let slot = slot.ok_or_else(contact_not_found)?;
    inner.tag_contact(slot, &tag);
    Ok(success(
        json!({"success": true, "message": "Tag added to contact"}),
    ))
}

/// Validated `{"contactId", "listId"}` → (contact slot, list index).
fn list_membership(inner: &Inner, body: &Bytes) -> Result<(u32, u32), Reject> {
    let data = parse_object(body)?;
    let contact_id = opt_string(&data, "contactId")?.filter(|s| !s.is_empty());
    let list_id = opt_string(&data, "listId")?.filter(|s| !s.is_empty());
    let (Some(contact_id), Some(list_id)) = (contact_id, list_id) else {
        return Err(bad_request("contactId and listId are required"));
    };
    let slot = inner.slot_of(contact_id).ok_or_else(contact_not_found)?;
    let list = inner
        .lists
        .iter()
        .position(|l| l.id == list_id)
        .ok_or_else(|| failure(StatusCode::NOT_FOUND, "List not found"))?;
    Ok((slot, list as u32))
}

async fn add_to_list(extract::State(st): Shared, body: Bytes) -> Reply {
    let mut inner = st.lock();
    let (slot, list) = list_membership(&inner, &body)?;
    let name = inner.lists[list as usize].name.clone();
    if let Some(c) = inner.slots.get_mut(slot as usize)
        && !c.lists.contains(&list)
    {
        c.lists.push(list);
    }
    Ok(success(
        json!({"success": true, "message": format!("Contact successfully added to list {name}")}),
    ))
}

async fn remove_from_list(extract::State(st): Shared, body: Bytes) -> Reply {
    let mut inner = st.lock();
    let (slot, list) = list_membership(&inner, &body)?;
    let name = inner.lists[list as usize].name.clone();
    if let Some(c) = inner.slots.get_mut(slot as usize) {
        c.lists.retain(|&l| l != list);
    }
    Ok(success(json!({
        "success": true,
        "message": format!("Contact successfully removed from list {name}"),
    })))
}

// ---------------------------------------------------------------------------------------
// Ids

/// 96 random bits.
fn new_id() -> u128 {
    rand::random::<u128>() >> 32
}

fn fmt_id(id: u128) -> String {
    format!("{id:024x}")
}

fn parse_id(s: &str) -> Option<u128> {
    (s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
}

// ---------------------------------------------------------------------------------------
// Registry

impl SimulatedProvider for State {
    fn throttled(_left: std::time::Duration) -> axum::response::Response {
        // Inferred (no rate limit is documented): its usual error shape, no `Retry-After`.
        super::ratelimit::throttled_json(
            &json!({"success": false, "message": "Too many requests"}),
            None,
        )
    }

    const KIND: &'static str = "dmchamp";
    const DEMO_NAME: &'static str = "campaigns";
    const REVEALS_FIELDS: bool = false;
    const SEED: seed::Provider = seed::Provider {
        kind: Self::KIND,
        share: 30,
        // Contacts are keyed by phone.
        needs_phone: true,
        // There is no listing, only lookup by phone or email.
        listable: false,
        phone: PhoneStyle::E164,
        stray_spaces: true,
        tags: TagStyle::AnySpelling,
        salt: 0x44,
    };
    type Credentials = Credentials;

    fn credentials(dice: &mut Dice) -> Credentials {
        Credentials {
            api_key: seed::token(dice, seed::HEX, 32),
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
        State::seed_lids(self, &seed::identity_cases(seed, contacts, Self::SEED).lids);
    }
    fn dump(&self) -> Value {
        State::dump(self)
    }
    fn contact_count(&self) -> usize {
        State::contact_count(self)
    }
    fn info(credentials: &Credentials, base_url: &str) -> Value {
        json!({"base_url": base_url, "api_key": credentials.api_key})
    }
    fn config_lines(_info: &Value) -> Vec<String> {
        Vec::new()
    }

    fn import_floor(p: &FloorPerson<'_>) -> Requests {
        // It cannot be listed and holds only people with a phone. Its create answers the
        // contact holding the phone, so it doubles as the phone lookup.
        if !p.known || p.phone.is_none() {
            return Requests::default();
        }
        // With an email, the phone is looked up first (a record found by its email must be
        // known by its phone too: tags are written by phone), then the email; with only a
        // phone, the create itself finds it.
        let has_email = p.email.is_some();
        let tag_writes = p.missing_tags() as u64;
        let tag_read = u64::from(!p.tags.is_empty());
        match p.held {
            // A contact it holds shows only its id: one update brings its fields (they
            // cannot be read), its tags are read where it should carry any, and each
            // missing tag is written.
            Some(_) if has_email => Requests {
                reads: 1 + tag_read,
                writes: 1 + tag_writes,
            },
            Some(_) => Requests {
                reads: tag_read,
                writes: 2 + tag_writes,
            },
            // Created, then one write per tag.
            None => Requests {
                reads: 2 * u64::from(has_email),
                writes: 1 + tag_writes,
            },
        }
    }

    fn listing_floor(_held: u64, _labels: &BTreeMap<String, u64>) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = new_id();
        let s = fmt_id(id);
        assert_eq!(s.len(), 24);
        assert_eq!(parse_id(&s), Some(id));
        assert_eq!(parse_id("abc"), None);
        assert_eq!(parse_id(&format!("+{}", &s[1..])), None);
    }

    #[test]
    fn e164_bounds() {
        assert_eq!(e164_digits("14155550123"), Some(14_155_550_123));
        assert_eq!(e164_digits("014155550123"), None);
        assert_eq!(e164_digits(" 14155550123"), None);
        assert_eq!(e164_digits("1234567890123456"), None);
    }
}
