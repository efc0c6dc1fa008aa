//! Receiving webhook events: `POST /webhooks/{provider name}` on `[http] listen`.
//!
//! Chatwoot (the only kind that sends them today) posts `contact_created` and
//! `contact_updated` with the contact's data; newer versions sign them
//! (`X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>`,
//! `X-Chatwoot-Timestamp`, `X-Chatwoot-Delivery`). An event is answered:
//! - **413** when its body is over [`MAX_BODY`] (nothing is read past it);
//! - **404** when no configured provider takes webhooks under that name;
//! - **401** when the signature is missing or wrong (checked in constant time), or its
//!   timestamp is more than [`MAX_SKEW_SECS`] away, or the provider has no secret and
//!   does not allow unsigned events — nothing is queued;
//! - **400** when the body is not an event;
//! - **200** when there is nothing to do: another event, a `contact_updated` whose only
//!   change is `last_activity_at`, an event of another account, or a delivery id seen
//!   before;
//! - **202** once the event is durably queued in the store (it survives a crash); the
//!   worker ([`run_worker`]) then runs a targeted cycle for it.

use super::metrics;
use super::schedule::Daemon;
use crate::config::WebhookSettings;
use crate::domain::Fields;
use crate::provider::Provider;
use crate::store::Store;
use crate::store::webhooks::{Enqueued, NewEvent, QueuedEvent};
use crate::sync::WebhookTarget;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The largest event body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// How far an event's `X-Chatwoot-Timestamp` may be from our clock (5 minutes).
pub const MAX_SKEW_SECS: i64 = 300;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-chatwoot-signature";
/// The timestamp header (unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-chatwoot-timestamp";
/// The delivery id header (the same across retries of one delivery).
pub const DELIVERY_HEADER: &str = "x-chatwoot-delivery";
/// The events acted on.
pub const EVENTS: [&str; 2] = ["contact_created", "contact_updated"];
/// Attributes whose change alone is not worth a read (Chatwoot sends `contact_updated`
/// when only the last activity moved) [inferred: `updated_at` may come with it].
const NOISE_ATTRIBUTES: [&str; 2] = ["last_activity_at", "updated_at"];

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// One provider's receiving side.
struct Receiver {
    secret: Option<SecretString>,
    allow_unsigned: bool,
    /// The account its events must belong to (`account.id` of the payload), if known.
    account_id: Option<String>,
}

/// Everything the webhook route needs (shared by the HTTP endpoint).
pub struct Receivers {
    by_name: HashMap<String, Receiver>,
    store: Store,
    wake: Arc<Notify>,
}

impl Receivers {
    /// The receivers of `webhooks`; `account_ids` are the providers' account ids (by
    /// name), checked against each event's `account.id`. `wake` is notified after each
    /// queued event.
    pub fn new(
        webhooks: &[WebhookSettings],
        account_ids: &HashMap<String, String>,
        store: Store,
        wake: Arc<Notify>,
    ) -> Self {
        let by_name = webhooks
            .iter()
            .map(|w| {
                (
                    w.provider.clone(),
                    Receiver {
                        secret: w.secret.clone(),
                        allow_unsigned: w.allow_unsigned,
                        account_id: account_ids.get(&w.provider).cloned(),
                    },
                )
            })
            .collect();
        Self {
            by_name,
            store,
            wake,
        }
    }
}

/// Why an event was refused with 401 (logged; never the secret or the signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `X-Chatwoot-Signature` (or no timestamp) and unsigned events are not allowed.
    Unsigned,
    /// The signature header is not `sha256=<hex>`.
    MalformedSignature,
    /// The timestamp is not unix seconds.
    MalformedTimestamp,
    /// The timestamp is more than [`MAX_SKEW_SECS`] away.
    Stale,
    /// The signature does not match the body.
    BadSignature,
}

impl Refusal {
    fn describe(self) -> &'static str {
        match self {
            Refusal::Unsigned => {
                "unsigned event (set webhook_secret_env/_file, or webhook_allow_unsigned = true for a Chatwoot that does not sign)"
            }
            Refusal::MalformedSignature => "the signature header is not sha256=<hex>",
            Refusal::MalformedTimestamp => "the timestamp header is not unix seconds",
            Refusal::Stale => {
                "the timestamp is more than 5 minutes away (replayed, or a clock is off)"
            }
            Refusal::BadSignature => "the signature does not match (wrong webhook secret?)",
        }
    }
}

/// Checks an event's signature: `sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`
/// with a timestamp within [`MAX_SKEW_SECS`] of `now`. Constant-time comparison.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Refusal> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (Some(signature), Some(timestamp)) = (header(SIGNATURE_HEADER), header(TIMESTAMP_HEADER))
    else {
        return Err(Refusal::Unsigned);
    };
    let ts: i64 = timestamp.parse().map_err(|_| Refusal::MalformedTimestamp)?;
    if (now - ts).abs() > MAX_SKEW_SECS {
        return Err(Refusal::Stale);
    }
    let hex_digest = signature
        .strip_prefix("sha256=")
        .ok_or(Refusal::MalformedSignature)?;
    let given = hex::decode(hex_digest).map_err(|_| Refusal::MalformedSignature)?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| Refusal::BadSignature)?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| Refusal::BadSignature)
}

/// What an event body asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Read this record: `(remote id, event name, the record's fields as sent)`.
    Queue {
        /// The contact's id.
        remote_id: String,
        /// `contact_created` or `contact_updated`.
        event: String,
        /// The contact as the event showed it.
        fields: Fields,
    },
    /// Nothing to do, and why.
    Ignore(String),
}

/// Reads an event body: the event name, the account, the changed attributes and the
/// contact. `Err` when it is not a JSON object with an `event` (400).
pub fn parse_event(body: &[u8], account_id: Option<&str>) -> Result<Parsed, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err("the body is not a JSON object".into());
    };
    let Some(event) = obj.get("event").and_then(Value::as_str) else {
        return Err("the body has no `event`".into());
    };
    if !EVENTS.contains(&event) {
        return Ok(Parsed::Ignore(format!("event `{event}` is not acted on")));
    }
    if let (Some(expected), Some(account)) = (
        account_id,
        obj.get("account")
            .and_then(|a| a.get("id"))
            .map(crate::provider::wire::value_text),
    ) && account != expected
    {
        return Ok(Parsed::Ignore(format!(
            "the event is of account {account}, not of the configured account {expected}"
        )));
    }
    if event == "contact_updated" {
        let changed = changed_attributes(obj.get("changed_attributes"));
        if !changed.is_empty()
            && changed
                .iter()
                .all(|c| NOISE_ATTRIBUTES.contains(&c.as_str()))
        {
            return Ok(Parsed::Ignore("only last_activity_at changed".into()));
        }
    }
    let record = crate::provider::chatwoot::decode_contact_value(&value)
        .map_err(|e| format!("the event's contact cannot be read: {e}"))?;
    Ok(Parsed::Queue {
        remote_id: record.remote_id,
        event: event.to_owned(),
        fields: record.fields,
    })
}

/// The names in `changed_attributes`: a list of `{field: {previous_value,
/// current_value}}` objects, or one such object.
fn changed_attributes(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.keys().cloned())
            .collect(),
        Some(Value::Object(o)) => o.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn answer(status: StatusCode, what: &str) -> Response {
    (status, axum::Json(json!({ "status": what }))).into_response()
}

/// The receivers the endpoint serves (`None`: no provider takes webhooks; every
/// `POST /webhooks/{name}` answers 404). The endpoint's state hands it out.
#[derive(Clone, Default)]
pub struct Mounted(pub Option<Arc<Receivers>>);

/// `POST /webhooks/{name}`.
pub async fn receive(
    State(Mounted(receivers)): State<Mounted>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(receivers) = receivers else {
        return answer(StatusCode::NOT_FOUND, "no provider takes webhooks here");
    };
    let Some(receiver) = receivers.by_name.get(&name) else {
        return answer(
            StatusCode::NOT_FOUND,
            "no provider of this name takes webhooks",
        );
    };
    let now = crate::clock::Clock::system().now_secs();
    let signed = match &receiver.secret {
        Some(secret) => verify(secret.expose_secret().as_bytes(), &headers, &body, now),
        None if receiver.allow_unsigned => Ok(()),
        None => Err(Refusal::Unsigned),
    };
    if let Err(refusal) = signed {
        tracing::warn!(provider = %name, "webhook event refused (401): {}", refusal.describe());
        metrics::record_webhook(&name, "unauthorized");
        return answer(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let parsed = match parse_event(&body, receiver.account_id.as_deref()) {
        Ok(p) => p,
        Err(reason) => {
            tracing::warn!(provider = %name, "webhook event refused (400): {reason}");
            metrics::record_webhook(&name, "malformed");
            return answer(StatusCode::BAD_REQUEST, "not an event");
        }
    };
    let (remote_id, event, fields) = match parsed {
        Parsed::Queue {
            remote_id,
            event,
            fields,
        } => (remote_id, event, fields),
        Parsed::Ignore(reason) => {
            tracing::debug!(provider = %name, "webhook event ignored: {reason}");
            metrics::record_webhook(&name, "ignored");
            return answer(StatusCode::OK, "ignored");
        }
    };
    let delivery = headers
        .get(DELIVERY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.chars().take(200).collect::<String>());
    let queued = receivers
        .store
        .enqueue_webhook(
            NewEvent {
                provider: name.clone(),
                remote_id: remote_id.clone(),
                event: event.clone(),
                fields,
                delivery,
            },
            now,
        )
        .await;
    match queued {
        Ok(Enqueued::Queued(_)) => {
            tracing::debug!(provider = %name, %remote_id, %event, "webhook event queued");
            metrics::record_webhook(&name, "queued");
            receivers.wake.notify_one();
            answer(StatusCode::ACCEPTED, "queued")
        }
        Ok(Enqueued::Duplicate) => {
            tracing::debug!(provider = %name, %remote_id, "repeated webhook delivery: already queued once");
            metrics::record_webhook(&name, "duplicate");
            answer(StatusCode::OK, "duplicate")
        }
        Err(e) => {
            tracing::error!(provider = %name, "cannot queue a webhook event: {e}");
            answer(StatusCode::SERVICE_UNAVAILABLE, "cannot queue the event")
        }
    }
}

/// Events taken from the queue per targeted cycle (events for one record coalesce).
pub const BATCH: usize = 1_000;
/// When a record that could not be read is tried again (seconds).
pub const RETRY_AFTER_SECS: i64 = 30;
/// How long the worker sleeps with nothing due (a wake-up or a due event comes first).
const IDLE: Duration = Duration::from_hours(1);

/// The worker: whenever events are queued (a wake-up from the route, or events left by a
/// previous run), takes them in batches, coalesces them per record and applies each
/// batch as one targeted cycle ([`Daemon::run_events`]); events are removed from the
/// queue only once their cycle finished. Records that could not be read are tried again
/// after [`RETRY_AFTER_SECS`]. Stops when `cancel` fires.
pub async fn run_worker<P: Provider + 'static>(
    daemon: Arc<Daemon<P>>,
    store: Store,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let clock = crate::clock::Clock::system();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let events = match store.due_webhook_events(clock.now_secs(), BATCH).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("cannot read the webhook queue: {e}");
                Vec::new()
            }
        };
        if !events.is_empty() {
            if !apply(&daemon, &store, events, clock.now_secs()).await {
                // Cancelled, or the cycle failed: leave the events and wait.
                if cancel.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(RETRY_AFTER_SECS as u64)) => {}
                    () = cancel.cancelled() => return,
                }
            }
            continue;
        }
        if let Ok(len) = store.webhook_queue_len().await {
            metrics::record_webhook_queue(len);
        }
        let idle = match store.next_webhook_due().await {
            Ok(Some(due)) => Duration::from_secs((due - clock.now_secs()).clamp(1, 3600) as u64),
            _ => IDLE,
        };
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(idle) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Applies one batch; `false` when it did not run (the events stay queued as they are).
async fn apply<P: Provider + 'static>(
    daemon: &Arc<Daemon<P>>,
    store: &Store,
    events: Vec<QueuedEvent>,
    now: i64,
) -> bool {
    let mut groups: Vec<(WebhookTarget, Vec<Fields>, Vec<i64>)> = Vec::new();
    let mut index: HashMap<WebhookTarget, usize> = HashMap::new();
    for e in events {
        let target = WebhookTarget {
            provider: e.provider,
            remote_id: e.remote_id,
        };
        let at = *index.entry(target.clone()).or_insert_with(|| {
            groups.push((target, Vec::new(), Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(e.fields);
        groups[at].2.push(e.id);
    }
    let ids: HashMap<WebhookTarget, Vec<i64>> = groups
        .iter()
        .map(|(t, _, ids)| (t.clone(), ids.clone()))
        .collect();
    let targets = groups.into_iter().map(|(t, f, _)| (t, f)).collect();
    let Some(outcome) = daemon.run_events(targets).await else {
        return false;
    };
    let unread: std::collections::HashSet<&WebhookTarget> =
        outcome.targeted.unread.iter().collect();
    let mut done = Vec::new();
    let mut again = Vec::new();
    for (target, event_ids) in &ids {
        if unread.contains(target) {
            again.extend(event_ids);
        } else {
            done.extend(event_ids);
        }
    }
    if let Err(e) = store.finish_webhook_events(done).await {
        tracing::error!("cannot clear applied webhook events: {e}");
    }
    if !again.is_empty() {
        match store
            .postpone_webhook_events(again, now + RETRY_AFTER_SECS)
            .await
        {
            Ok(0) => {}
            Ok(dropped) => tracing::warn!(
                dropped,
                "webhook events whose record could not be read after several tries were dropped; the next full cycle reads those records"
            ),
            Err(e) => tracing::error!("cannot postpone webhook events: {e}"),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn signed(secret: &[u8], ts: i64, body: &[u8]) -> HeaderMap {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&format!("sha256={sig}")).unwrap(),
        );
        h.insert(
            TIMESTAMP_HEADER,
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        h
    }

    #[test]
    fn signatures_are_checked_with_the_timestamp_and_body() {
        let body = br#"{"event":"contact_updated"}"#;
        let now = 1_800_000_000;
        assert_eq!(
            verify(b"s3cret", &signed(b"s3cret", now, body), body, now),
            Ok(())
        );
        assert_eq!(
            verify(b"s3cret", &signed(b"s3cret", now - 200, body), body, now),
            Ok(())
        );
        assert_eq!(
            verify(b"other", &signed(b"s3cret", now, body), body, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", &signed(b"s3cret", now, body), b"{}", now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", &signed(b"s3cret", now - 301, body), body, now),
            Err(Refusal::Stale)
        );
        assert_eq!(
            verify(b"s3cret", &signed(b"s3cret", now + 301, body), body, now),
            Err(Refusal::Stale)
        );
        // The timestamp is signed: moving it breaks the signature.
        let mut moved = signed(b"s3cret", now - 10, body);
        moved.insert(
            TIMESTAMP_HEADER,
            HeaderValue::from_str(&now.to_string()).unwrap(),
        );
        assert_eq!(
            verify(b"s3cret", &moved, body, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            verify(b"s3cret", &HeaderMap::new(), body, now),
            Err(Refusal::Unsigned)
        );
        let mut bad = signed(b"s3cret", now, body);
        bad.insert(SIGNATURE_HEADER, HeaderValue::from_static("md5=abc"));
        assert_eq!(
            verify(b"s3cret", &bad, body, now),
            Err(Refusal::MalformedSignature)
        );
        bad.insert(SIGNATURE_HEADER, HeaderValue::from_static("sha256=zz"));
        assert_eq!(
            verify(b"s3cret", &bad, body, now),
            Err(Refusal::MalformedSignature)
        );
    }

    #[test]
    fn events_are_read_and_noise_is_ignored() {
        let updated = br#"{"event":"contact_updated","id":12,"name":"Ann Lee","email":"ann@example.com","phone_number":null,"identifier":null,"custom_attributes":{"plan":"gold"},"additional_attributes":{},"thumbnail":"","type":"contact","account":{"id":3,"name":"Acme"},"changed_attributes":[{"name":{"previous_value":"Ann","current_value":"Ann Lee"}}]}"#;
        match parse_event(updated, Some("3")).unwrap() {
            Parsed::Queue {
                remote_id,
                event,
                fields,
            } => {
                assert_eq!(remote_id, "12");
                assert_eq!(event, "contact_updated");
                assert_eq!(fields["name"], "Ann Lee");
                assert_eq!(fields["attr.plan"], "gold");
            }
            other @ Parsed::Ignore(_) => panic!("{other:?}"),
        }
        let activity = br#"{"event":"contact_updated","id":12,"account":{"id":3},"changed_attributes":[{"last_activity_at":{"previous_value":1,"current_value":2}},{"updated_at":{"previous_value":1,"current_value":2}}]}"#;
        assert!(matches!(
            parse_event(activity, Some("3")),
            Ok(Parsed::Ignore(_))
        ));
        let other_account = br#"{"event":"contact_created","id":12,"account":{"id":4}}"#;
        assert!(matches!(
            parse_event(other_account, Some("3")),
            Ok(Parsed::Ignore(_))
        ));
        let other_event = br#"{"event":"message_created","id":1}"#;
        assert!(matches!(
            parse_event(other_event, None),
            Ok(Parsed::Ignore(_))
        ));
        assert!(parse_event(b"[1]", None).is_err());
        assert!(parse_event(b"not json", None).is_err());
        assert!(parse_event(br#"{"event":"contact_created"}"#, None).is_err());
    }
}
