//! Account webhooks of the simulated Chatwoot: registrations (`GET/POST …/webhooks`,
//! `PATCH/PUT/DELETE …/webhooks/{id}`, body `{"webhook": {"url", "subscriptions"}}`),
//! each with a generated `secret` (newer Chatwoot versions return it), and deliveries:
//! every contact create or update made through the API or the control endpoint
//! (`/__sim/contacts`) posts `contact_created` /
//! `contact_updated` to each subscribed URL — the contact's webhook data plus `event`,
//! `account` and, on updates, `changed_attributes` (a list of `{attribute:
//! {previous_value, current_value}}`); an update that changes nothing sends nothing.
//! Each delivery is signed: `X-Chatwoot-Timestamp` (unix seconds),
//! `X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`,
//! `X-Chatwoot-Delivery` (a UUID). One POST, 5 s timeout, no retries (older versions).
//!
//! Delivery faults (`POST /__sim/webhooks/faults` with `{"action": "drop" | "duplicate" |
//! "corrupt" | {"delay": millis}, "count": N}`, `DELETE /__sim/webhooks/faults`) drop a
//! delivery, send it twice (same delivery id), send it late, or send it with a body
//! changed after signing. `GET /__sim/webhooks/deliveries` lists what was sent and how the
//! receiver answered.
//!
//! Written from Chatwoot's behaviour as `docs/providers.md` describes it (marked
//! [inferred] there); shares no code with the receiver in `src/daemon/`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State as Ext};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::request::{not_found, ok, parse_body};
use super::{Contact, Shared, State, now_secs, random_uuid};
use crate::simulator::http::{Reject, Reply};
use crate::simulator::seed;

/// The events a webhook may subscribe to (Chatwoot's list).
const ALLOWED_EVENTS: &[&str] = &[
    "conversation_created",
    "conversation_status_changed",
    "conversation_updated",
    "contact_created",
    "contact_updated",
    "message_created",
    "message_updated",
    "webwidget_triggered",
    "inbox_created",
    "inbox_updated",
    "conversation_typing_on",
    "conversation_typing_off",
];
/// Chatwoot's delivery timeout.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

struct Hook {
    id: u64,
    url: String,
    subscriptions: Vec<String>,
    secret: String,
}

impl Hook {
    fn json(&self, account_id: u64) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "account_id": account_id,
            "webhook_type": "account_type",
            "inbox": null,
            "subscriptions": self.subscriptions,
            "secret": self.secret,
        })
    }
}

/// What a delivery fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryAction {
    /// Not sent at all.
    Drop,
    /// Sent twice, with the same delivery id.
    Duplicate,
    /// The body is changed after signing (the signature no longer matches).
    Corrupt,
    /// Sent this many milliseconds late.
    Delay(u64),
}

/// A delivery fault rule: fires on every delivery, at most `count` times if set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFault {
    /// What it does.
    pub action: DeliveryAction,
    /// How many deliveries it fires on (`None`: every one).
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default, skip)]
    fired: u64,
}

impl DeliveryFault {
    /// A rule firing `count` times (every time when `None`).
    pub fn new(action: DeliveryAction, count: Option<u64>) -> Self {
        Self {
            action,
            count,
            fired: 0,
        }
    }
}

/// One delivery as the receiver answered it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// `X-Chatwoot-Delivery`.
    pub delivery_id: String,
    /// The event.
    pub event: String,
    /// The contact.
    pub contact_id: u64,
    /// The receiver's status, or `None` when it could not be reached.
    pub status: Option<u16>,
    /// The fault applied, if any.
    pub fault: Option<String>,
}

/// The account's webhooks and their deliveries.
pub struct Webhooks {
    inner: Mutex<HooksInner>,
    client: Option<reqwest::Client>,
    log: Arc<DeliveryLog>,
}

#[derive(Default)]
struct HooksInner {
    next_id: u64,
    hooks: Vec<Hook>,
    faults: Vec<DeliveryFault>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self {
            inner: Mutex::new(HooksInner {
                next_id: 1,
                ..HooksInner::default()
            }),
            client: reqwest::Client::builder()
                .timeout(DELIVERY_TIMEOUT)
                .no_proxy()
                .build()
                .ok(),
            log: Arc::default(),
        }
    }
}

impl Webhooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HooksInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a delivery fault rule.
    pub fn add_fault(&self, fault: DeliveryFault) {
        self.lock().faults.push(fault);
    }

    /// Removes every delivery fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The deliveries so far (answered or not), in the order they finished.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.all()
    }

    /// The fault of the next delivery, if a rule fires.
    fn next_fault(&self) -> Option<DeliveryAction> {
        let mut inner = self.lock();
        let rule = inner
            .faults
            .iter_mut()
            .find(|r| r.count.is_none_or(|c| r.fired < c))?;
        rule.fired += 1;
        Some(rule.action.clone())
    }
}

/// The contact as Chatwoot's webhook data shows it.
fn webhook_data(st: &State, c: &Contact) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("id".into(), json!(c.id));
    map.insert("name".into(), json!(&*c.name));
    map.insert("email".into(), json!(c.email.as_deref()));
    map.insert("phone_number".into(), json!(c.phone.as_deref()));
    map.insert("identifier".into(), json!(c.identifier.as_deref()));
    map.insert("blocked".into(), json!(c.blocked));
    map.insert(
        "additional_attributes".into(),
        Value::Object(c.additional.clone()),
    );
    map.insert("custom_attributes".into(), Value::Object(c.custom.clone()));
    map.insert("thumbnail".into(), json!(""));
    map.insert("type".into(), json!("contact"));
    map.insert(
        "account".into(),
        json!({"id": st.creds.account_id, "name": "Simulated account"}),
    );
    map
}

impl State {
    /// The contact's webhook data before a change (to compute `changed_attributes`).
    pub(super) fn before_change(&self, c: &Contact) -> Map<String, Value> {
        webhook_data(self, c)
    }

    /// Posts `contact_created` for `c` to every subscribed webhook.
    pub(super) fn contact_created(&self, c: &Contact) {
        let data = webhook_data(self, c);
        self.deliver("contact_created", data, None);
    }

    /// Posts `contact_updated` for `c` (shown as `before` until now) when an attribute
    /// changed.
    pub(super) fn contact_updated(&self, before: &Map<String, Value>, c: &Contact) {
        let after = webhook_data(self, c);
        let changed: Vec<Value> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, v)| {
                json!({ k.clone(): {"previous_value": before.get(k).cloned().unwrap_or(Value::Null), "current_value": v}})
            })
            .collect();
        if changed.is_empty() {
            return;
        }
        self.deliver("contact_updated", after, Some(changed));
    }

    fn deliver(&self, event: &str, mut data: Map<String, Value>, changed: Option<Vec<Value>>) {
        let targets: Vec<(String, String)> = {
            let inner = self.hooks.lock();
            inner
                .hooks
                .iter()
                .filter(|h| {
                    h.subscriptions.iter().any(|s| s == event) || h.subscriptions.is_empty()
                })
                .map(|h| (h.url.clone(), h.secret.clone()))
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let Some(client) = self.hooks.client.clone() else {
            return;
        };
        let contact_id = data.get("id").and_then(Value::as_u64).unwrap_or(0);
        data.insert("event".into(), json!(event));
        if let Some(changed) = changed {
            data.insert("changed_attributes".into(), Value::Array(changed));
        }
        let body = Value::Object(data).to_string();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for (url, secret) in targets {
            let fault = self.hooks.next_fault();
            let post = Post {
                client: client.clone(),
                url,
                secret,
                body: body.clone(),
                event: event.to_owned(),
                contact_id,
                delivery_id: random_uuid(),
            };
            let hooks = Arc::clone(&self.hooks.log);
            runtime.spawn(async move {
                let record = |status: Option<u16>, fault: Option<&DeliveryAction>| Delivery {
                    delivery_id: post.delivery_id.clone(),
                    event: post.event.clone(),
                    contact_id: post.contact_id,
                    status,
                    fault: fault.map(|f| format!("{f:?}").to_lowercase()),
                };
                match fault {
                    Some(DeliveryAction::Drop) => {
                        hooks.push(record(None, Some(&DeliveryAction::Drop)));
                    }
                    Some(DeliveryAction::Duplicate) => {
                        let first = post.send(false).await;
                        hooks.push(record(first, Some(&DeliveryAction::Duplicate)));
                        let second = post.send(false).await;
                        hooks.push(record(second, Some(&DeliveryAction::Duplicate)));
                    }
                    Some(DeliveryAction::Corrupt) => {
                        let status = post.send(true).await;
                        hooks.push(record(status, Some(&DeliveryAction::Corrupt)));
                    }
                    Some(DeliveryAction::Delay(millis)) => {
                        tokio::time::sleep(Duration::from_millis(millis)).await;
                        let status = post.send(false).await;
                        hooks.push(record(status, Some(&DeliveryAction::Delay(millis))));
                    }
                    None => {
                        let status = post.send(false).await;
                        hooks.push(record(status, None));
                    }
                }
            });
        }
    }
}

/// Where finished deliveries are recorded (shared with the delivery tasks).
#[derive(Default)]
pub struct DeliveryLog(Mutex<Vec<Delivery>>);

impl DeliveryLog {
    fn push(&self, d: Delivery) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(d);
    }

    /// Every delivery so far.
    pub fn all(&self) -> Vec<Delivery> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct Post {
    client: reqwest::Client,
    url: String,
    secret: String,
    body: String,
    event: String,
    contact_id: u64,
    delivery_id: String,
}

impl Post {
    /// Signs and sends once; the receiver's status, or `None` if it could not be reached.
    async fn send(&self, corrupt: bool) -> Option<u16> {
        let ts = now_secs().to_string();
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes()) else {
            return None;
        };
        mac.update(format!("{ts}.{}", self.body).as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        let body = if corrupt {
            self.body
                .replacen("\"name\":", "\"name\":\"tampered\",\"was\":", 1)
        } else {
            self.body.clone()
        };
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-chatwoot-timestamp", ts)
            .header("x-chatwoot-signature", format!("sha256={signature}"))
            .header("x-chatwoot-delivery", &self.delivery_id)
            .body(body)
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }
}

// ---------------------------------------------------------------------------------------
// Routes

#[derive(Deserialize, Default)]
struct WebhookParams {
    url: Option<String>,
    subscriptions: Option<Vec<String>>,
}

fn params(body: &Bytes) -> Result<WebhookParams, Reject> {
    let map = parse_body(body)?;
    let inner = map.get("webhook").cloned().unwrap_or(Value::Object(map));
    serde_json::from_value(inner).map_err(|e| {
        Reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": format!("Invalid webhook: {e}")}),
        )
    })
}

fn check(url: Option<&str>, subscriptions: &[String]) -> Result<(), Reject> {
    let valid_url = url
        .is_some_and(|u| url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https")));
    if !valid_url {
        return Err(Reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Url is invalid"}),
        ));
    }
    if let Some(bad) = subscriptions
        .iter()
        .find(|s| !ALLOWED_EVENTS.contains(&s.as_str()))
    {
        return Err(Reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": format!("Subscriptions Invalid events: {bad}")}),
        ));
    }
    Ok(())
}

/// `GET …/webhooks`.
pub(super) async fn list(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
) -> Reply {
    st.authorize(&headers, &account)?;
    let inner = st.hooks.lock();
    let hooks: Vec<Value> = inner
        .hooks
        .iter()
        .map(|h| h.json(st.creds.account_id))
        .collect();
    ok(&json!({"payload": {"webhooks": hooks}}))
}

/// `POST …/webhooks`.
pub(super) async fn create(
    Ext(st): Ext<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    st.authorize(&headers, &account)?;
    let p = params(&body)?;
    let subscriptions = p
        .subscriptions
        .unwrap_or_else(|| ALLOWED_EVENTS.iter().map(|s| (*s).to_owned()).collect());
    check(p.url.as_deref(), &subscriptions)?;
    let mut inner = st.hooks.lock();
    let id = inner.next_id;
    inner.next_id += 1;
    let mut dice = seed::Dice::new(st.creds.account_id, id, rand::random());
    let hook = Hook {
        id,
        url: p.url.unwrap_or_default(),
        subscriptions,
        secret: seed::token(&mut dice, seed::BASE58, 24),
    };
    let answer = json!({"payload": {"webhook": hook.json(st.creds.account_id)}});
    inner.hooks.push(hook);
    ok(&answer)
}

/// `PATCH/PUT …/webhooks/{id}`.
pub(super) async fn update(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    st.authorize(&headers, &account)?;
    let p = params(&body)?;
    let mut inner = st.hooks.lock();
    let Some(hook) = inner
        .hooks
        .iter_mut()
        .find(|h| id.parse::<u64>().ok() == Some(h.id))
    else {
        return Err(not_found());
    };
    let url = p.url.unwrap_or_else(|| hook.url.clone());
    let subscriptions = p
        .subscriptions
        .unwrap_or_else(|| hook.subscriptions.clone());
    check(Some(&url), &subscriptions)?;
    hook.url = url;
    hook.subscriptions = subscriptions;
    ok(&json!({"payload": {"webhook": hook.json(st.creds.account_id)}}))
}

/// `DELETE …/webhooks/{id}`.
pub(super) async fn destroy(
    Ext(st): Ext<Shared>,
    Path((account, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    st.authorize(&headers, &account)?;
    let mut inner = st.hooks.lock();
    let before = inner.hooks.len();
    inner.hooks.retain(|h| id.parse::<u64>().ok() != Some(h.id));
    if inner.hooks.len() == before {
        return Err(not_found());
    }
    Ok(StatusCode::OK.into_response())
}

/// `POST /__sim/webhooks/faults`: adds a delivery fault rule.
pub(super) async fn add_fault(Ext(st): Ext<Shared>, Json(rule): Json<DeliveryFault>) -> Response {
    st.hooks.add_fault(rule);
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /__sim/webhooks/faults`.
pub(super) async fn clear_faults(Ext(st): Ext<Shared>) -> Response {
    st.hooks.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /__sim/webhooks/deliveries`.
pub(super) async fn deliveries(Ext(st): Ext<Shared>) -> Response {
    Json(json!({"deliveries": st.hooks.deliveries()})).into_response()
}
