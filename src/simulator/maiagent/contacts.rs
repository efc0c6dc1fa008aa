//! One contact at a time: create, retrieve, replace (PUT), partial update (PATCH) and
//! delete (refused while the contact has conversations), over JSON bodies.

use axum::body::Bytes;
use axum::extract::{self, Path};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Map, Value, json};

use super::validation::{Mode, python_type};
use super::{Contact, Inboxes, Shared, State, not_found_detail, now_ms};
use crate::simulator::http::{Reject, Reply, detail, respond};

/// Parse a JSON object body the way DRF's `JSONParser` plus a serializer would.
pub(super) fn parse_body(body: &Bytes) -> Result<Map<String, Value>, Reject> {
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

pub(super) async fn create(extract::State(st): Shared, body: Bytes) -> Reply {
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
    let slot = inner.insert(Contact::new(
        Inboxes::from_vec(inboxes),
        ch.name.take().unwrap_or_default(),
        now,
    ));
    inner.apply(slot, ch, now);
    if let Some(c) = inner.contact_mut(slot) {
        c.updated_at = now;
    }
    Ok(respond(StatusCode::CREATED, inner.slot_json(slot)))
}

pub(super) async fn retrieve(extract::State(st): Shared, Path(id): Path<String>) -> Reply {
    let inner = st.lock();
    let slot = inner.slot_of(&id).ok_or_else(not_found_detail)?;
    Ok(respond(StatusCode::OK, inner.slot_json(slot)))
}

/// PUT and PATCH: 404 before validation, as DRF's `get_object` runs first.
pub(super) fn update(st: &State, id: &str, body: &Bytes, mode: Mode) -> Reply {
    let mut inner = st.lock();
    let slot = inner.slot_of(id).ok_or_else(not_found_detail)?;
    let data = parse_body(body)?;
    let ch = inner
        .validate(&data, mode, Some(slot))
        .map_err(|errors| Reject(StatusCode::BAD_REQUEST, Value::Object(errors)))?;
    inner.apply(slot, ch, now_ms());
    Ok(respond(StatusCode::OK, inner.slot_json(slot)))
}

pub(super) async fn replace(
    extract::State(st): Shared,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    update(&st, &id, &body, Mode::Full)
}

pub(super) async fn partial_update(
    extract::State(st): Shared,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    update(&st, &id, &body, Mode::Partial)
}

pub(super) async fn destroy(extract::State(st): Shared, Path(id): Path<String>) -> Reply {
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
