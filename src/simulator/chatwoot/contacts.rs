//! One contact at a time: show, create, update (PUT and PATCH), delete, removing custom
//! attributes and `actions/contact_merge`, with Chatwoot's model validations (length,
//! uniqueness of email / phone / identifier, email and e164 formats).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as Ext};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::request::{
    Params, Sent, boolean, invalid, not_found, object, ok, parse_body, scalar, text, value_text,
};
use super::{
    Contact, Inner, MAX_CHARS, Shared, SourceId, derived_uuid, email_format_ok, phone_format_ok,
    random_uuid, source_id,
};
use crate::simulator::http::Reply;

// ---------------------------------------------------------------------------------------
// Validation and assignment

/// The assignable fields of a create or update, as sent (`None` = not sent).
#[derive(Default)]
pub(super) struct Changes {
    name: Option<String>,
    email: Option<Sent>,
    phone: Option<Sent>,
    identifier: Option<Sent>,
    blocked: Option<bool>,
    additional: Option<Map<String, Value>>,
    custom: Option<Map<String, Value>>,
}

impl Changes {
    pub(super) fn from(params: &Map<String, Value>) -> Self {
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
pub(super) struct Candidate<'a> {
    name: &'a str,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    identifier: Option<&'a str>,
}

/// Chatwoot's model validations, in its order; `own` is the contact being updated.
pub(super) fn validate(
    inner: &Inner,
    c: &Candidate<'_>,
    own: Option<u64>,
) -> Vec<(&'static str, String)> {
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

pub(super) async fn show(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Reply {
    st.authorize(&headers, &account)?;
    let params = Params::parse(query.as_deref());
    let id: Option<u64> = id.parse().ok();
    if let Some(id) = id
        && st.read().unlisted.contains(&id)
    {
        // Asked for by id: listed from now on.
        st.write().unlisted.remove(&id);
    }
    let inner = st.read();
    match id.and_then(|id| inner.get(id)) {
        Some(c) => ok(&json!({"payload": st.contact_json(c, params.include_contact_inboxes())})),
        None => Err(not_found()),
    }
}

/// `POST /__sim/contacts/unlisted`: a contact the contacts list does not show until it is
/// asked for by key or id (see the module doc of [`super`]). Validated as a create.
pub(super) async fn add_unlisted(Ext(st): Ext<Shared>, body: Bytes) -> Reply {
    let params = parse_body(&body)?;
    let ch = Changes::from(&params);
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
    let id = inner.insert(
        Contact {
            id: 0,
            name: name.into_boxed_str(),
            email: email.map(String::into_boxed_str),
            phone: phone.map(String::into_boxed_str),
            identifier: identifier.map(String::into_boxed_str),
            blocked: false,
            created_at: 0,
            last_activity_at: None,
            additional: Map::new(),
            custom: Map::new(),
            labels: Vec::new(),
            inbox: None,
        },
        None,
    );
    inner.unlisted.insert(id);
    Ok(crate::simulator::http::respond(
        StatusCode::CREATED,
        json!({"id": id}),
    ))
}

pub(super) async fn create(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    st.authorize(&headers, &account)?;
    create_contact(&st, &body)
}

/// `POST /__sim/contacts` (control endpoint, no auth): a contact created as an agent
/// would in Chatwoot's UI — the same validations and the same `contact_created` webhook
/// deliveries as the API, but not logged or counted as an API request.
pub(super) async fn sim_create(Ext(st): Ext<Shared>, body: Bytes) -> Reply {
    create_contact(&st, &body)
}

/// `PUT|PATCH /__sim/contacts/{id}` (control endpoint, no auth): an edit made as an agent
/// would, delivered as `contact_updated` like an API edit.
pub(super) async fn sim_update(Ext(st): Ext<Shared>, Path(id): Path<String>, body: Bytes) -> Reply {
    update_contact(&st, &id, None, &body)
}

fn create_contact(st: &Shared, body: &Bytes) -> Reply {
    let params = parse_body(body)?;
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
    st.contact_created(c);
    let contact_inbox = match (&c.inbox, has_inbox) {
        (Some(s), true) => json!({"inbox": st.full_inbox_json(), "source_id": source_id(id, s)}),
        _ => json!({"inbox": null, "source_id": null}),
    };
    ok(&json!({"payload": {"contact": st.contact_json(c, true), "contact_inbox": contact_inbox}}))
}

pub(super) async fn update(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Reply {
    st.authorize(&headers, &account)?;
    update_contact(&st, &id, query.as_deref(), &body)
}

fn update_contact(st: &Shared, id: &str, query: Option<&str>, body: &Bytes) -> Reply {
    let params = parse_body(body)?;
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
    let before = st.before_change(current);
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
    let params = Params::parse(query);
    match inner.get(id) {
        Some(c) => {
            st.contact_updated(&before, c);
            ok(&json!({"payload": st.contact_json(c, params.include_contact_inboxes())}))
        }
        None => Err(not_found()),
    }
}

pub(super) async fn destroy(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    st.authorize(&headers, &account)?;
    let mut inner = st.write();
    match id.parse().ok().and_then(|id| inner.remove(id)) {
        Some(_) => Ok(StatusCode::OK.into_response()),
        None => Err(not_found()),
    }
}

pub(super) async fn destroy_custom_attributes(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
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
    let before = st.before_change(c);
    for k in &keys {
        c.custom.remove(k);
    }
    let id = c.id;
    inner.generation += 1;
    match inner.get(id) {
        Some(c) => {
            st.contact_updated(&before, c);
            ok(&json!({"payload": st.contact_json(c, true)}))
        }
        None => Err(not_found()),
    }
}

/// `POST /actions/contact_merge`: the mergee is destroyed; the base keeps its values and
/// takes the mergee's only where it has none (attribute hashes deep-merged, base wins).
pub(super) async fn merge(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
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
pub(super) fn deep_merge_missing(base: &mut Map<String, Value>, extra: Map<String, Value>) {
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
