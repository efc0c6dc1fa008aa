//! The webhook queue: events a provider pushed to the daemon (`POST /webhooks/{name}`),
//! accepted durably before they are answered 202, and the delivery ids already seen.
//!
//! An event is a row of `webhook_events` until the targeted cycle that read its record
//! has finished ([`Store::finish_webhook_events`]); a crash before that leaves it queued,
//! and the next start applies it. A delivery id (Chatwoot's `X-Chatwoot-Delivery`) is
//! remembered for [`DELIVERY_MEMORY_SECS`], so a repeated delivery queues nothing.

use super::codec::{fields_json, parse_fields};
use super::{Store, StoreError};
use crate::domain::Fields;
use rusqlite::{Connection, OptionalExtension, params};

/// How long a delivery id is remembered (seconds).
pub const DELIVERY_MEMORY_SECS: i64 = 24 * 3600;
/// Targeted cycles that may fail to read an event's record before the event is dropped
/// (the next full cycle reads every record anyway).
pub const MAX_EVENT_ATTEMPTS: i64 = 5;

/// An event to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The provider instance name.
    pub provider: String,
    /// The provider's id of the record the event is about.
    pub remote_id: String,
    /// The event name (`contact_created`, `contact_updated`).
    pub event: String,
    /// The record as the event showed it (decoded like a listed record).
    pub fields: Fields,
    /// The delivery id, when the sender gave one.
    pub delivery: Option<String>,
}

/// What queueing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued under this id.
    Queued(i64),
    /// The delivery id was seen before: nothing queued.
    Duplicate,
}

/// A queued event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// Its row id.
    pub id: i64,
    /// The provider instance name.
    pub provider: String,
    /// The record it is about.
    pub remote_id: String,
    /// The event name.
    pub event: String,
    /// The record as the event showed it.
    pub fields: Fields,
    /// Targeted cycles that could not read the record so far.
    pub attempts: i64,
}

fn enqueue(conn: &mut Connection, event: &NewEvent, now: i64) -> Result<Enqueued, StoreError> {
    let tx = conn.transaction()?;
    if let Some(delivery) = &event.delivery {
        tx.prepare_cached("DELETE FROM webhook_deliveries WHERE received_at < ?1")?
            .execute([now - DELIVERY_MEMORY_SECS])?;
        let fresh = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO webhook_deliveries (provider, delivery_id, received_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![event.provider, delivery, now])?;
        if fresh == 0 {
            tx.commit()?;
            return Ok(Enqueued::Duplicate);
        }
    }
    tx.prepare_cached(
        "INSERT INTO webhook_events (provider, remote_id, event, fields, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        event.provider,
        event.remote_id,
        event.event,
        fields_json(&event.fields),
        now
    ])?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Enqueued::Queued(id))
}

fn due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<QueuedEvent>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT id, provider, remote_id, event, fields, attempts FROM webhook_events
             WHERE next_attempt_at <= ?1 ORDER BY id LIMIT ?2",
        )?
        .query_map(params![now, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, provider, remote_id, event, fields, attempts)| {
            Ok(QueuedEvent {
                id,
                provider,
                remote_id,
                event,
                fields: parse_fields(&fields)?,
                attempts,
            })
        })
        .collect()
}

impl Store {
    /// Queues an event durably (one transaction), unless its delivery id was seen in the
    /// last [`DELIVERY_MEMORY_SECS`].
    pub async fn enqueue_webhook(&self, event: NewEvent, now: i64) -> Result<Enqueued, StoreError> {
        self.call(move |c| enqueue(c, &event, now)).await
    }

    /// Queued events due at `now`, oldest first, at most `limit`.
    pub async fn due_webhook_events(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        self.call(move |c| due(c, now, limit)).await
    }

    /// When the next queued event is due (`None`: the queue is empty).
    pub async fn next_webhook_due(&self) -> Result<Option<i64>, StoreError> {
        self.call(|c| {
            Ok(
                c.query_row("SELECT min(next_attempt_at) FROM webhook_events", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })?,
            )
        })
        .await
    }

    /// How many events are queued.
    pub async fn webhook_queue_len(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT count(*) FROM webhook_events", [], |r| r.get(0))?))
            .await
    }

    /// The events are applied (or moot): removed from the queue, in one transaction.
    pub async fn finish_webhook_events(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached("DELETE FROM webhook_events WHERE id = ?1")?;
                for id in &ids {
                    stmt.execute([id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The events' records could not be read: tried again from `next_attempt_at`, or
    /// dropped after [`MAX_EVENT_ATTEMPTS`]. Returns how many were dropped.
    pub async fn postpone_webhook_events(
        &self,
        ids: Vec<i64>,
        next_attempt_at: i64,
    ) -> Result<u64, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE webhook_events SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id = ?1",
                )?;
                for id in &ids {
                    stmt.execute(params![id, next_attempt_at])?;
                }
            }
            let dropped = tx
                .prepare_cached("DELETE FROM webhook_events WHERE attempts >= ?1")?
                .execute([MAX_EVENT_ATTEMPTS])?;
            tx.commit()?;
            Ok(dropped as u64)
        })
        .await
    }

    /// What the store last saw of `remote_id` in provider `provider` (by instance name):
    /// the snapshot of its active link, `None` when it has none.
    pub async fn active_snapshot(
        &self,
        provider: String,
        remote_id: String,
    ) -> Result<Option<Fields>, StoreError> {
        self.call(move |c| {
            let text: Option<String> = c
                .prepare_cached(
                    "SELECT l.snapshot FROM links l JOIN providers p ON p.id = l.provider_id
                     WHERE p.name = ?1 AND l.remote_id = ?2 AND l.state = 'active'",
                )?
                .query_row(params![provider, remote_id], |r| r.get(0))
                .optional()?;
            text.as_deref().map(parse_fields).transpose()
        })
        .await
    }

    /// The contacts the records `remote_ids` of provider `provider_id` are linked to.
    pub async fn contacts_of_records(
        &self,
        provider_id: i64,
        remote_ids: Vec<String>,
    ) -> Result<Vec<i64>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT contact_id FROM links WHERE provider_id = ?1 AND remote_id = ?2",
            )?;
            let mut out = Vec::new();
            for id in &remote_ids {
                if let Some(contact) = stmt
                    .query_row(params![provider_id, id], |r| r.get(0))
                    .optional()?
                {
                    out.push(contact);
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(remote_id: &str, delivery: Option<&str>) -> NewEvent {
        NewEvent {
            provider: "support".into(),
            remote_id: remote_id.into(),
            event: "contact_updated".into(),
            fields: Fields::from([("name".to_owned(), "Ann".to_owned())]),
            delivery: delivery.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn a_delivery_is_queued_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let store = Store::open(&path).await.unwrap();
            let first = store
                .enqueue_webhook(event("7", Some("d-1")), 1_000)
                .await
                .unwrap();
            assert!(matches!(first, Enqueued::Queued(_)));
            let again = store
                .enqueue_webhook(event("7", Some("d-1")), 1_001)
                .await
                .unwrap();
            assert_eq!(again, Enqueued::Duplicate);
            // No delivery id: nothing to deduplicate by.
            store
                .enqueue_webhook(event("8", None), 1_002)
                .await
                .unwrap();
        }
        let store = Store::open(&path).await.unwrap();
        let due = store.due_webhook_events(2_000, 10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|e| e.remote_id.as_str()).collect();
        assert_eq!(ids, ["7", "8"]);
        assert_eq!(due[0].fields["name"], "Ann");
        // A day later the delivery id is forgotten.
        let later = store
            .enqueue_webhook(event("7", Some("d-1")), 1_000 + DELIVERY_MEMORY_SECS + 1)
            .await
            .unwrap();
        assert!(matches!(later, Enqueued::Queued(_)));
        store
            .finish_webhook_events(due.iter().map(|e| e.id).collect())
            .await
            .unwrap();
        assert_eq!(store.webhook_queue_len().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn postponed_events_wait_and_are_dropped_after_the_last_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).await.unwrap();
        store.enqueue_webhook(event("7", None), 0).await.unwrap();
        let id = store.due_webhook_events(0, 10).await.unwrap()[0].id;
        for attempt in 1..MAX_EVENT_ATTEMPTS {
            let dropped = store
                .postpone_webhook_events(vec![id], 100 * attempt)
                .await
                .unwrap();
            assert_eq!(dropped, 0);
            assert!(
                store
                    .due_webhook_events(100 * attempt - 1, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(store.next_webhook_due().await.unwrap(), Some(100 * attempt));
        }
        let dropped = store
            .postpone_webhook_events(vec![id], 10_000)
            .await
            .unwrap();
        assert_eq!(dropped, 1);
        assert_eq!(store.next_webhook_due().await.unwrap(), None);
    }
}
