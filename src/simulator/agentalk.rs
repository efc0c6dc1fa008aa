//! Simulated Agentalk contacts API.
//!
//! Owns the in-memory state of one Agentalk organization (contacts and the organization's
//! tags) and the axum router that serves it: `POST /api/contacts` (upsert keyed on the
//! normalised phone), `GET /api/contacts/search`, `PATCH /api/contacts/{id}/fields`,
//! `DELETE /api/contacts/{id}/fields/{key}`, `POST /api/contacts/{id}/tags`,
//! `DELETE /api/contacts/{id}/tags/{tag_id_or_name}` and `DELETE /api/contacts/{id}`, behind
//! `Authorization: Bearer {orgId}.{secret}`. No trailing slashes, no list endpoint, no GET by
//! id (a GET on `/api/contacts/{id}` answers 405). Fault injection and the request log are
//! middleware the simulator core wraps around [`router`]; this module does neither.
//!
//! Written from what is known of Agentalk's API alone; it shares no types with the
//! client in `src/provider/`.
//!
//! The published spec types every response body as an untyped object, so **all response
//! shapes here are guesses** (the spec leaves them open), as are these choices of ours:
//! - Contact JSON: `{"id", "phone" ("+digits"), "firstName", "lastName", "email",
//!   "tags": [{"id", "name"}], "fields": {}, "createdAt", "updatedAt"}` with RFC 3339
//!   timestamps. Tags are objects so a client can learn tag ids for removal. Seeded
//!   contacts came in through WhatsApp: about one in five shows its phone as the WhatsApp
//!   id it came with (`<digits>@s.whatsapp.net` or `<digits>@c.us`, [`seed::WaForm`]);
//!   a lookup by phone finds it all the same. With the identity cases
//!   ([`seed::IdentityCases`], off by default) it also holds WhatsApp contacts known only
//!   by their privacy id: the phone shows `<digits>@lid`, keyed on those digits.
//! - Phone: spaces, dashes, dots and parentheses are stripped; what remains must be `+`
//!   then 1–15 digits, the first not 0 (E.164), else 400 `{"phone": ["..."]}`.
//! - Upsert of an existing phone: `firstName`/`lastName`/`email` given as strings overwrite
//!   (an empty string clears; null is ignored), `tags` are added, `fields` merge.
//! - `fields` (upsert and PATCH): `email`, `firstName`/`first_name`, `lastName`/`last_name`
//!   set the standard attributes; other keys are custom fields; a null value removes the
//!   key; `phone` is refused (400) — it is the upsert key.
//! - Field, tag and fields-patch operations answer 200 `{"message", "contact"}`.
//! - Removing a tag the organization does not know: 404; one the contact lacks: 200 no-op.
//! - Clearing an unknown field: 200 no-op; clearing `phone`: 400.
//! - Search: `phone` matches exactly on normalised digits, `name` is a case-insensitive
//!   substring of the first or the last name; both given → both must match. `limit`
//!   (default [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`], the effective value is echoed) and
//!   `offset` (default 0) fall back to their defaults silently when invalid (DRF
//!   `LimitOffsetPagination`). Results in creation order.
//! - Auth failures: 401 `{"detail": "..."}`; an `X-Organization-ID` other than the
//!   credentials' organization: 403.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{self, Path, RawQuery, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use serde_json::{Map, Value, json};

use super::SimulatedProvider;
use super::floor::{FloorPerson, Requests};
use super::http::{
    Guarded, Reject, Reply, authorization, contains_ci, credential, detail, first, guard,
    query_pairs, respond,
};
use super::seed::{self, Dice, Person, PhoneStyle, TagStyle};

/// Default `limit` of the search endpoint (documented).
pub const DEFAULT_LIMIT: usize = 50;
/// Largest `limit` honoured by search (our choice; undocumented).
pub const MAX_LIMIT: usize = 1000;

/// What a client needs to talk to this simulated organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Organization UUID (lower-case; the token syntax only allows `[0-9a-f-]`).
    pub org_id: String,
    /// Secret part of the token.
    pub secret: String,
}

impl Credentials {
    /// The bearer token: `{org_id}.{secret}`.
    pub fn token(&self) -> String {
        format!("{}.{}", self.org_id, self.secret)
    }
}

/// The whole simulated organization, behind one mutex.
pub struct State {
    org_id: String,
    token: String,
    inner: Mutex<Inner>,
}

struct Tag {
    id: u128,
    name: Box<str>,
}

struct Contact {
    id: u128,
    /// E.164 digits without the `+` (never starts with 0, at most 15 digits).
    phone: u64,
    /// Seeded from WhatsApp: the phone is shown as that WhatsApp id.
    wa: Option<seed::WaForm>,
    first_name: Option<Box<str>>,
    last_name: Option<Box<str>>,
    email: Option<Box<str>>,
    tags: Vec<u32>,
    fields: Option<Box<Map<String, Value>>>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Default)]
struct Inner {
    /// Every contact ever created, in creation order; `None` once deleted.
    slots: Vec<Option<Contact>>,
    live: usize,
    by_id: HashMap<u128, u32>,
    by_phone: HashMap<u64, u32>,
    tags: Vec<Tag>,
    tag_by_name: HashMap<String, u32>,
    tag_by_id: HashMap<u128, u32>,
}

/// One change to a contact's attributes, from `fields` or the upsert body.
enum FieldOp {
    Email(Option<Box<str>>),
    FirstName(Option<Box<str>>),
    LastName(Option<Box<str>>),
    Custom(String, Option<Value>),
}

impl State {
    /// An empty organization.
    pub fn new(credentials: Credentials) -> Self {
        State {
            token: credentials.token(),
            org_id: credentials.org_id,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Insert people as someone typing them into Agentalk would have. The phone is
    /// required there, so people without one (neither a typed phone with `+` nor an
    /// E.164 phone) are skipped; a phone seen twice merges like an upsert.
    pub fn seed(&self, people: impl IntoIterator<Item = Person>) {
        let mut inner = self.lock();
        let now = now_ms();
        for p in people {
            let phone = p
                .phone
                .as_deref()
                .and_then(normalize_phone)
                .or_else(|| p.phone_e164.as_deref().and_then(normalize_phone));
            let Some(phone) = phone else { continue };
            let text = |s: String| (!s.trim().is_empty()).then(|| s.into_boxed_str());
            let ops = [
                text(p.first_name).map(|v| FieldOp::FirstName(Some(v))),
                text(p.last_name).map(|v| FieldOp::LastName(Some(v))),
                p.email.and_then(text).map(|v| FieldOp::Email(Some(v))),
            ]
            .into_iter()
            .flatten()
            .collect();
            let (slot, new) = inner.upsert(phone, ops, &p.tags, now);
            if new && let Some(c) = inner.slots.get_mut(slot as usize).and_then(Option::as_mut) {
                c.wa = seed::WaForm::of(p.index);
            }
        }
    }

    /// Insert WhatsApp contacts known only by their privacy id ([`seed::IdentityCases`]):
    /// the phone shows as `<digits>@lid`, the name as their profile gives it, no email.
    /// The contact is keyed on the id's digits, as a phone would be.
    pub fn seed_lids(&self, lids: &[seed::LidContact]) {
        let mut inner = self.lock();
        let now = now_ms();
        for c in lids {
            let text = |s: &str| (!s.trim().is_empty()).then(|| Box::from(s));
            let ops = [
                text(&c.first_name).map(|v| FieldOp::FirstName(Some(v))),
                text(&c.last_name).map(|v| FieldOp::LastName(Some(v))),
            ]
            .into_iter()
            .flatten()
            .collect();
            let (slot, new) = inner.upsert(c.lid, ops, &[], now);
            if new
                && let Some(contact) = inner.slots.get_mut(slot as usize).and_then(Option::as_mut)
            {
                contact.wa = Some(seed::WaForm::Lid);
            }
        }
    }

    /// The whole state: `{"organizationId", "tags": [{"id","name"}], "contacts":
    /// [contact JSON, in creation order]}`.
    pub fn dump(&self) -> Value {
        let inner = self.lock();
        let tags: Vec<Value> = inner
            .tags
            .iter()
            .map(|t| json!({"id": fmt_uuid(t.id), "name": t.name}))
            .collect();
        let contacts: Vec<Value> = inner
            .slots
            .iter()
            .flatten()
            .map(|c| inner.contact_json(c))
            .collect();
        json!({"organizationId": self.org_id, "tags": tags, "contacts": contacts})
    }

    /// Number of live contacts.
    pub fn contact_count(&self) -> usize {
        self.lock().live
    }
}

impl Inner {
    fn contact(&self, slot: u32) -> Option<&Contact> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn slot_of(&self, id: &str) -> Option<u32> {
        parse_uuid(id).and_then(|u| self.by_id.get(&u).copied())
    }

    /// The organization's tag of that name (trimmed, case-insensitive), created if new.
    fn tag_index(&mut self, name: &str) -> Option<u32> {
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let key = name.to_lowercase();
        if let Some(&idx) = self.tag_by_name.get(&key) {
            return Some(idx);
        }
        let idx = self.tags.len() as u32;
        let id = new_uuid();
        self.tags.push(Tag {
            id,
            name: name.into(),
        });
        self.tag_by_name.insert(key, idx);
        self.tag_by_id.insert(id, idx);
        Some(idx)
    }

    fn find_tag(&self, id_or_name: &str) -> Option<u32> {
        if let Some(id) = parse_uuid(id_or_name)
            && let Some(&idx) = self.tag_by_id.get(&id)
        {
            return Some(idx);
        }
        self.tag_by_name
            .get(&id_or_name.trim().to_lowercase())
            .copied()
    }

    fn contact_json(&self, c: &Contact) -> Value {
        let tags: Vec<Value> = c
            .tags
            .iter()
            .filter_map(|&t| self.tags.get(t as usize))
            .map(|t| json!({"id": fmt_uuid(t.id), "name": t.name}))
            .collect();
        json!({
            "id": fmt_uuid(c.id),
            "phone": c.wa.map_or_else(|| format!("+{}", c.phone), |wa| wa.render(c.phone)),
            "firstName": c.first_name,
            "lastName": c.last_name,
            "email": c.email,
            "tags": tags,
            "fields": c.fields.as_deref().cloned().unwrap_or_default(),
            "createdAt": fmt_time(c.created_at),
            "updatedAt": fmt_time(c.updated_at),
        })
    }

    fn slot_json(&self, slot: u32) -> Value {
        self.contact(slot)
            .map_or(Value::Null, |c| self.contact_json(c))
    }

    /// Apply attribute changes and add tags to a live contact.
    fn modify(&mut self, slot: u32, ops: Vec<FieldOp>, tags: &[String], now: i64) {
        let tag_ids: Vec<u32> = tags.iter().filter_map(|t| self.tag_index(t)).collect();
        let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        for op in ops {
            match op {
                FieldOp::Email(v) => c.email = v,
                FieldOp::FirstName(v) => c.first_name = v,
                FieldOp::LastName(v) => c.last_name = v,
                FieldOp::Custom(k, None) => {
                    if let Some(f) = c.fields.as_mut() {
                        f.remove(&k);
                        if f.is_empty() {
                            c.fields = None;
                        }
                    }
                }
                FieldOp::Custom(k, Some(v)) => {
                    c.fields.get_or_insert_with(Box::default).insert(k, v);
                }
            }
        }
        for t in tag_ids {
            if !c.tags.contains(&t) {
                c.tags.push(t);
            }
        }
        c.updated_at = now.max(c.updated_at + 1);
    }

    /// Upsert by phone; returns the slot and whether the contact is new.
    fn upsert(&mut self, phone: u64, ops: Vec<FieldOp>, tags: &[String], now: i64) -> (u32, bool) {
        if let Some(&slot) = self.by_phone.get(&phone) {
            self.modify(slot, ops, tags, now);
            return (slot, false);
        }
        let slot = self.slots.len() as u32;
        let id = new_uuid();
        self.slots.push(Some(Contact {
            id,
            phone,
            wa: None,
            first_name: None,
            last_name: None,
            email: None,
            tags: Vec::new(),
            fields: None,
            created_at: now,
            updated_at: now,
        }));
        self.by_id.insert(id, slot);
        self.by_phone.insert(phone, slot);
        self.live += 1;
        self.modify(slot, ops, tags, now);
        if let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            c.updated_at = now;
        }
        (slot, true)
    }

    fn remove(&mut self, slot: u32) {
        if let Some(c) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.by_id.remove(&c.id);
            self.by_phone.remove(&c.phone);
            self.live -= 1;
        }
    }
}

/// `+` then digits after stripping spaces, dashes, dots and parentheses; E.164 bounds.
fn normalize_phone(raw: &str) -> Option<u64> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let digits = cleaned.strip_prefix('+')?;
    e164_digits(digits)
}

/// 1–15 ASCII digits, the first not 0, as a number.
fn e164_digits(digits: &str) -> Option<u64> {
    let ok = (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok { digits.parse().ok() } else { None }
}

// ---------------------------------------------------------------------------------------
// Request bodies

type FieldErrors = Map<String, Value>;

/// Constructor of a standard-attribute change.
type MakeOp = fn(Option<Box<str>>) -> FieldOp;

fn error_list(msg: &str) -> Value {
    json!([msg])
}

fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Reject> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(detail(
            StatusCode::BAD_REQUEST,
            "Invalid data. Expected a JSON object.",
        )),
        Err(e) => Err(detail(
            StatusCode::BAD_REQUEST,
            &format!("JSON parse error - {e}"),
        )),
    }
}

/// A text attribute: a string sets it (blank clears), anything else is an error.
fn text_value(v: &Value) -> Result<Option<Box<str>>, &'static str> {
    match v {
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.trim().into())),
        Value::Null => Ok(None),
        _ => Err("Not a valid string."),
    }
}

/// Validate a `fields` object into operations (all-or-nothing).
fn field_ops(fields: &Map<String, Value>) -> Result<Vec<FieldOp>, FieldErrors> {
    let mut ops = Vec::with_capacity(fields.len());
    let mut errors = FieldErrors::new();
    for (k, v) in fields {
        let make: Option<MakeOp> = match k.as_str() {
            "email" => Some(FieldOp::Email),
            "firstName" | "first_name" => Some(FieldOp::FirstName),
            "lastName" | "last_name" => Some(FieldOp::LastName),
            "phone" => {
                errors.insert(
                    k.clone(),
                    error_list("The phone is the contact's key and cannot be set as a field."),
                );
                continue;
            }
            _ => None,
        };
        match make {
            Some(make) => match text_value(v) {
                Ok(t) => ops.push(make(t)),
                Err(msg) => {
                    errors.insert(k.clone(), error_list(msg));
                }
            },
            None if k.trim().is_empty() => {
                errors.insert(k.clone(), error_list("Field keys may not be blank."));
            }
            None => ops.push(FieldOp::Custom(
                k.clone(),
                (!v.is_null()).then(|| v.clone()),
            )),
        }
    }
    if errors.is_empty() {
        Ok(ops)
    } else {
        Err(errors)
    }
}

/// A `tags` value: an array of strings.
fn tag_list(v: &Value) -> Result<Vec<String>, &'static str> {
    let Value::Array(items) = v else {
        return Err("Expected a list of strings.");
    };
    items
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_owned)
                .ok_or("Expected a list of strings.")
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// HTTP

/// The router with every documented contact path, behind bearer-token auth.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/contacts", post(upsert))
        .route("/api/contacts/search", get(search))
        .route("/api/contacts/{id}", delete(destroy))
        .route("/api/contacts/{id}/fields", patch(update_fields))
        .route("/api/contacts/{id}/fields/{key}", delete(clear_field))
        .route("/api/contacts/{id}/tags", post(add_tags))
        .route("/api/contacts/{id}/tags/{tag}", delete(remove_tag))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::<State>,
        ))
        .fallback(not_found)
        .with_state(state)
}

type Shared = extract::State<Arc<State>>;

fn contact_not_found() -> Reject {
    detail(StatusCode::NOT_FOUND, "Not found.")
}

async fn not_found() -> Reject {
    contact_not_found()
}

/// Shape `^[0-9a-f-]{36}\.[^.]+$`.
fn token_shape_ok(token: &str) -> bool {
    let Some((org, secret)) = token.split_once('.') else {
        return false;
    };
    org.len() == 36
        && org
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
        && !secret.is_empty()
        && !secret.contains('.')
}

/// Three non-empty base64url segments: a JWT, which Agentalk refuses.
fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        })
}

/// The reason a request is not authorised, or `None` if it is.
fn auth_failure(st: &State, headers: &HeaderMap) -> Option<Reject> {
    let unauthorized = |msg: &str| Some(detail(StatusCode::UNAUTHORIZED, msg));
    let token = authorization(headers)
        .and_then(|h| credential(h.trim(), "Bearer"))
        .map(str::trim);
    let Some(token) = token else {
        return unauthorized("Authentication credentials were not provided.");
    };
    if looks_like_jwt(token) {
        return unauthorized(
            "JWT tokens are not accepted; use an API token of the form {orgId}.{secretToken}.",
        );
    }
    if !token_shape_ok(token) {
        return unauthorized("Invalid token format; expected {orgId}.{secretToken}.");
    }
    if token != st.token {
        return unauthorized("Invalid token.");
    }
    let org = headers
        .get("x-organization-id")
        .map(|v| v.to_str().unwrap_or_default().trim());
    match org {
        Some(org) if !org.eq_ignore_ascii_case(&st.org_id) => Some(detail(
            StatusCode::FORBIDDEN,
            "You do not have access to this organization.",
        )),
        _ => None,
    }
}

impl Guarded for State {
    fn refuse(&self, req: &Request) -> Option<Response> {
        auth_failure(self, req.headers()).map(IntoResponse::into_response)
    }
}

async fn upsert(extract::State(st): Shared, body: Bytes) -> Reply {
    let data = parse_object(&body)?;
    let mut errors = FieldErrors::new();
    let phone = match data.get("phone") {
        None | Some(Value::Null) => {
            errors.insert("phone".into(), error_list("This field is required."));
            None
        }
        Some(Value::String(s)) => {
            let p = normalize_phone(s);
            if p.is_none() {
                errors.insert(
                    "phone".into(),
                    error_list("Enter a valid phone number with country code, e.g. +14155550123."),
                );
            }
            p
        }
        Some(_) => {
            errors.insert("phone".into(), error_list("Not a valid string."));
            None
        }
    };
    let mut ops = Vec::new();
    let standard: [(&str, &str, MakeOp); 3] = [
        ("firstName", "first_name", FieldOp::FirstName),
        ("lastName", "last_name", FieldOp::LastName),
        ("email", "email", FieldOp::Email),
    ];
    for (camel, snake, make) in standard {
        match data.get(camel).or_else(|| data.get(snake)) {
            None | Some(Value::Null) => {}
            Some(v) => match text_value(v) {
                Ok(t) => ops.push(make(t)),
                Err(msg) => {
                    errors.insert(camel.into(), error_list(msg));
                }
            },
        }
    }
    let tags = match data.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => tag_list(v).unwrap_or_else(|msg| {
            errors.insert("tags".into(), error_list(msg));
            Vec::new()
        }),
    };
    match data.get("fields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(f)) => match field_ops(f) {
            Ok(more) => ops.extend(more),
            Err(e) => {
                errors.insert("fields".into(), Value::Object(e));
            }
        },
        Some(_) => {
            errors.insert("fields".into(), error_list("Expected a JSON object."));
        }
    }
    let Some(phone) = phone.filter(|_| errors.is_empty()) else {
        return Err(Reject(StatusCode::BAD_REQUEST, Value::Object(errors)));
    };
    let mut inner = st.lock();
    let (slot, is_new) = inner.upsert(phone, ops, &tags, now_ms());
    let status = if is_new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(respond(
        status,
        json!({"isNew": is_new, "contact": inner.slot_json(slot)}),
    ))
}

/// First value of a query parameter, trimmed, if not empty.
fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    first(params, key).map(str::trim).filter(|v| !v.is_empty())
}

async fn search(extract::State(st): Shared, RawQuery(raw): RawQuery) -> Reply {
    let params = query_pairs(raw.as_deref());
    let phone = param(&params, "phone");
    let name = param(&params, "name").map(str::to_lowercase);
    if phone.is_none() && name.is_none() {
        return Err(detail(
            StatusCode::BAD_REQUEST,
            "At least one of the query parameters 'phone' or 'name' is required.",
        ));
    }
    let limit = match param(&params, "limit").map(str::parse::<usize>) {
        Some(Ok(n)) if n > 0 => n.min(MAX_LIMIT),
        _ => DEFAULT_LIMIT,
    };
    let offset = param(&params, "offset")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let mut buf = String::new();
    let mut name_matches = |c: &Contact| {
        name.as_deref().is_none_or(|n| {
            c.first_name
                .as_deref()
                .is_some_and(|f| contains_ci(&mut buf, f, n))
                || c.last_name
                    .as_deref()
                    .is_some_and(|l| contains_ci(&mut buf, l, n))
        })
    };
    let inner = st.lock();
    let hits: Vec<u32> = match phone {
        Some(p) => {
            let digits: String = p.chars().filter(char::is_ascii_digit).collect();
            e164_digits(&digits)
                .and_then(|d| inner.by_phone.get(&d).copied())
                .filter(|&s| inner.contact(s).is_some_and(&mut name_matches))
                .into_iter()
                .collect()
        }
        None => (0..inner.slots.len() as u32)
            .filter(|&s| inner.contact(s).is_some_and(&mut name_matches))
            .collect(),
    };
    let results: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|&s| inner.slot_json(s))
        .collect();
    Ok(respond(
        StatusCode::OK,
        json!({"count": hits.len(), "limit": limit, "offset": offset, "results": results}),
    ))
}

async fn destroy(extract::State(st): Shared, Path(id): Path<String>) -> Reply {
    let mut inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(contact_not_found)?;
    inner.remove(slot);
    Ok(respond(
        StatusCode::OK,
        json!({"message": "Contact deleted"}),
    ))
}

/// 200 `{"message", "contact"}` after a change to one contact.
fn changed_reply(inner: &Inner, slot: u32, message: &str) -> Response {
    respond(
        StatusCode::OK,
        json!({"message": message, "contact": inner.slot_json(slot)}),
    )
}

async fn update_fields(extract::State(st): Shared, Path(id): Path<String>, body: Bytes) -> Reply {
    let data = parse_object(&body)?;
    let bad = |v: Value| Reject(StatusCode::BAD_REQUEST, json!({ "fields": v }));
    let ops = match data.get("fields") {
        Some(Value::Object(f)) => field_ops(f).map_err(|e| bad(Value::Object(e)))?,
        None | Some(Value::Null) => return Err(bad(error_list("This field is required."))),
        Some(_) => return Err(bad(error_list("Expected a JSON object."))),
    };
    let mut inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(contact_not_found)?;
    inner.modify(slot, ops, &[], now_ms());
    Ok(changed_reply(&inner, slot, "Fields updated"))
}

async fn clear_field(extract::State(st): Shared, Path((id, key)): Path<(String, String)>) -> Reply {
    let op = match key.as_str() {
        "email" => FieldOp::Email(None),
        "firstName" | "first_name" => FieldOp::FirstName(None),
        "lastName" | "last_name" => FieldOp::LastName(None),
        "phone" => {
            return Err(detail(
                StatusCode::BAD_REQUEST,
                "The phone is required and cannot be cleared.",
            ));
        }
        _ => FieldOp::Custom(key, None),
    };
    let mut inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(contact_not_found)?;
    inner.modify(slot, vec![op], &[], now_ms());
    Ok(changed_reply(&inner, slot, "Field cleared"))
}

async fn add_tags(extract::State(st): Shared, Path(id): Path<String>, body: Bytes) -> Reply {
    let data = parse_object(&body)?;
    let bad = |msg: &str| Reject(StatusCode::BAD_REQUEST, json!({ "tags": [msg] }));
    let tags = match data.get("tags") {
        None | Some(Value::Null) => return Err(bad("This field is required.")),
        Some(v) => tag_list(v).map_err(bad)?,
    };
    let mut inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(contact_not_found)?;
    inner.modify(slot, Vec::new(), &tags, now_ms());
    Ok(changed_reply(&inner, slot, "Tags added"))
}

async fn remove_tag(extract::State(st): Shared, Path((id, tag)): Path<(String, String)>) -> Reply {
    let mut inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(contact_not_found)?;
    let tag_idx = inner
        .find_tag(&tag)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "Tag not found."))?;
    let now = now_ms();
    if let Some(c) = inner.slots.get_mut(slot as usize).and_then(Option::as_mut)
        && let Some(pos) = c.tags.iter().position(|&t| t == tag_idx)
    {
        c.tags.remove(pos);
        c.updated_at = now.max(c.updated_at + 1);
    }
    Ok(changed_reply(&inner, slot, "Tag removed"))
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn fmt_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| String::new(), |t| t.to_string())
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

/// Hyphenated 8-4-4-4-12 hex, any case.
fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 || ![8, 13, 18, 23].iter().all(|&i| b[i] == b'-') {
        return None;
    }
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

// ---------------------------------------------------------------------------------------
// Registry

impl SimulatedProvider for State {
    fn throttled(_left: std::time::Duration) -> axum::response::Response {
        // Inferred (no rate limit is documented): an `{"error": ...}` body, no
        // `Retry-After`.
        super::ratelimit::throttled_json(&json!({"error": "Too many requests"}), None)
    }

    const KIND: &'static str = "agentalk";
    const DEMO_NAME: &'static str = "whatsapp";
    const SEED: seed::Provider = seed::Provider {
        kind: Self::KIND,
        share: 30,
        // Contacts are keyed by phone.
        needs_phone: true,
        // There is no list endpoint, only search.
        listable: false,
        phone: PhoneStyle::E164,
        stray_spaces: true,
        tags: TagStyle::AnySpelling,
        salt: 0x33,
    };
    type Credentials = Credentials;

    fn credentials(dice: &mut Dice) -> Credentials {
        let org_id = seed::uuid(dice);
        let secret = seed::token(dice, seed::ALNUM, 32);
        Credentials { org_id, secret }
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
        json!({"base_url": base_url, "api_key": credentials.token()})
    }
    fn config_lines(_info: &Value) -> Vec<String> {
        Vec::new()
    }

    fn import_floor(p: &FloorPerson<'_>) -> Requests {
        // It cannot be listed: one phone lookup per person known elsewhere with a phone
        // (its upsert would otherwise overwrite a contact nobody has read).
        if !p.known || p.phone.is_none() {
            return Requests::default();
        }
        let writes = match p.held {
            // One upsert carrying the tags.
            None => 1,
            Some(_) => u64::from(p.lacks_email()) + u64::from(p.missing_tags() > 0),
        };
        Requests { reads: 1, writes }
    }

    fn listing_floor(_held: u64, _labels: &BTreeMap<String, u64>) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_normalisation() {
        assert_eq!(normalize_phone("+1 (415) 555-0123"), Some(14_155_550_123));
        assert_eq!(normalize_phone("+44.20.7946.0958"), Some(442_079_460_958));
        assert_eq!(normalize_phone("(415) 555-0123"), None);
        assert_eq!(normalize_phone("+0123"), None);
        assert_eq!(normalize_phone("+1234567890123456"), None);
        assert_eq!(normalize_phone("+1 415 CALL ME"), None);
        assert_eq!(normalize_phone("+"), None);
    }

    #[test]
    fn token_shapes() {
        let org = "15c94c3c-1873-4a09-bfbb-03357c29ea50";
        assert!(token_shape_ok(&format!("{org}.abc123xyz")));
        assert!(!token_shape_ok(&format!("{}.abc", org.to_uppercase())));
        assert!(!token_shape_ok(&format!("{org}.a.b")));
        assert!(!token_shape_ok(&format!("{org}.")));
        assert!(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"));
        assert!(!looks_like_jwt(&format!("{org}.abc")));
    }
}
