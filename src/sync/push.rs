//! Executing intents against one provider (DESIGN §5.5): creates go through a `creating`
//! link written before the request (so a crash is resolved by lookup, never by a second
//! create); lookup-only providers are searched first; every success records the new link
//! snapshot so our own write never comes back as a change.

use super::{ProviderSlot, lookup_keys, now_secs};
use crate::domain::merge::normalize_record;
use crate::domain::normalize::DefaultRegion;
use crate::domain::plan::Operation;
use crate::domain::{Fields, RemoteRecord, Tags, field};
use crate::provider::{ErrorKind, LookupKey, Provider, ProviderError, Target};
use crate::store::outbox::{self, Intent, RunCounts};
use crate::store::{Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};

/// Attempts of one intent (one per cycle) before it is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// Intents read per store call.
const BATCH: usize = 500;
/// Contacts whose intents are in flight at once, per provider.
pub const PUSH_CONCURRENCY: usize = 8;

/// What pushing to one provider did.
#[derive(Debug, Default)]
pub struct PushOutcome {
    /// Counts.
    pub counts: RunCounts,
    /// Write requests sent (creates, updates, tag writes).
    pub writes: u64,
    /// A failure that stopped the push (auth) or the store.
    pub error: Option<String>,
}

/// Resolves links a crash left `creating`: looks the contact up by the keys that were
/// sent; found → linked; not found in a lookup-only provider → the create never landed
/// and is planned again. (In an enumerating provider the listing adopts or drops them.)
pub async fn recover_creating<P: Provider>(
    store: &Store,
    slot: &ProviderSlot<P>,
    provider_id: i64,
    region: DefaultRegion,
) -> Result<u64, String> {
    let pending = store
        .call(move |c| outbox::creating_links(c, provider_id))
        .await
        .map_err(|e| e.to_string())?;
    let caps = slot.client.capabilities();
    let mut linked = 0;
    for (link_id, contact_id, sent) in pending {
        match discover(slot, &sent, region).await {
            Ok(Some((remote_id, snapshot, tags))) => {
                tracing::info!(provider = %slot.settings.name, "an interrupted create had reached the provider; linked it");
                store
                    .call_seq(move |c, seq| {
                        outbox::finish_link(
                            c,
                            seq,
                            link_id,
                            contact_id,
                            &remote_id,
                            &snapshot,
                            tags.as_ref(),
                            true,
                            now_secs(),
                        )
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                linked += 1;
            }
            Ok(None) if !caps.enumerate => {
                store
                    .call_seq(move |c, seq| outbox::drop_creating(c, seq, link_id, contact_id))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(linked)
}

/// Looks a contact up by the keys in `fields`; returns the remote id, the snapshot to
/// record and the tags when known.
async fn discover<P: Provider>(
    slot: &ProviderSlot<P>,
    fields: &Fields,
    region: DefaultRegion,
) -> Result<Option<(String, Fields, Option<Tags>)>, ProviderError> {
    let caps = slot.client.capabilities();
    for key in lookup_keys(caps, fields) {
        let Some(record) = slot.client.lookup(key).await? else {
            continue;
        };
        return Ok(Some(linked_snapshot(slot, key, record, region).await?));
    }
    Ok(None)
}

async fn linked_snapshot<P: Provider>(
    slot: &ProviderSlot<P>,
    key: LookupKey<'_>,
    record: RemoteRecord,
    region: DefaultRegion,
) -> Result<(String, Fields, Option<Tags>), ProviderError> {
    let caps = slot.client.capabilities();
    let remote_id = record.remote_id.clone();
    let mut tags = record.tags.clone();
    let snapshot = if caps.lookup_returns_fields {
        normalize_record(&record, region).fields
    } else {
        // Only the id came back: we know the key we looked it up by.
        let mut f = Fields::new();
        match key {
            LookupKey::Phone(p) => f.insert(field::PHONE.into(), p.into()),
            LookupKey::Email(e) => f.insert(field::EMAIL.into(), e.into()),
            LookupKey::SourceId(s) => f.insert(field::SOURCE_ID.into(), s.into()),
        };
        f
    };
    if tags.is_none() && caps.tags_read_by_id && !caps.tags_by_listing {
        tags = Some(slot.client.read_tags(&remote_id).await?);
    }
    Ok((remote_id, snapshot, tags))
}

/// Sends the provider's pending intents (all of them with `drain_all`, else those due).
///
/// Intents of one contact are sent in order, one after the other (each builds on the link
/// snapshot the previous one recorded); up to [`PUSH_CONCURRENCY`] contacts are in flight
/// at once, so a first import is not one request round trip after another. The
/// provider's pacing (`requests_per_second`) still spaces every request.
pub async fn push_provider<P: Provider>(
    store: &Store,
    slot: &ProviderSlot<P>,
    provider_id: i64,
    region: DefaultRegion,
    propagate_deletes: bool,
    opts: &super::CycleOptions,
) -> PushOutcome {
    use futures::StreamExt;
    let mut out = PushOutcome::default();
    // Set by an auth failure or a store failure: no further intent is started.
    let stop = AtomicBool::new(false);
    let target = PushTarget {
        store,
        slot,
        provider_id,
        region,
        propagate_deletes,
    };
    let mut after = 0;
    loop {
        if opts.cancel.is_cancelled() {
            break;
        }
        let due = if opts.drain_all {
            None
        } else {
            Some(now_secs())
        };
        let intents = match store
            .call(move |c| outbox::due_intents(c, provider_id, due, after, BATCH))
            .await
        {
            Ok(i) => i,
            Err(e) => {
                out.error = Some(e.to_string());
                break;
            }
        };
        let Some(last) = intents.last() else { break };
        after = last.id;
        let outcomes: Vec<PushOutcome> = futures::stream::iter(by_contact(intents))
            .map(|group| push_contact(&target, opts, group, &stop))
            .buffer_unordered(PUSH_CONCURRENCY)
            .collect()
            .await;
        for o in outcomes {
            out.absorb(o);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    out
}

impl PushOutcome {
    /// Adds the outcome of one contact's intents (the first error is kept).
    fn absorb(&mut self, other: PushOutcome) {
        self.counts += other.counts;
        self.writes += other.writes;
        if self.error.is_none() {
            self.error = other.error;
        }
    }
}

/// The intents grouped by contact: groups in order of their first intent, each group in
/// intent order.
fn by_contact(intents: Vec<Intent>) -> Vec<Vec<Intent>> {
    let mut index: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<Intent>> = Vec::new();
    for intent in intents {
        match index.get(&intent.contact_id) {
            Some(&i) => groups[i].push(intent),
            None => {
                index.insert(intent.contact_id, groups.len());
                groups.push(vec![intent]);
            }
        }
    }
    groups
}

/// Sends one contact's intents in order; stops (and sets `stop`) on an auth or store
/// failure.
/// Where one provider's intents go.
struct PushTarget<'a, P> {
    store: &'a Store,
    slot: &'a ProviderSlot<P>,
    provider_id: i64,
    region: DefaultRegion,
    propagate_deletes: bool,
}

async fn push_contact<P: Provider>(
    target: &PushTarget<'_, P>,
    opts: &super::CycleOptions,
    intents: Vec<Intent>,
    stop: &AtomicBool,
) -> PushOutcome {
    let PushTarget {
        store,
        slot,
        provider_id,
        region,
        propagate_deletes,
    } = *target;
    let mut out = PushOutcome::default();
    for intent in intents {
        if opts.cancel.is_cancelled() || stop.load(Ordering::Relaxed) {
            break;
        }
        let result = execute(
            store,
            slot,
            provider_id,
            region,
            propagate_deletes,
            &intent,
            &mut out,
        )
        .await;
        if let Some(progress) = &opts.progress {
            progress.emit(super::ProgressEvent::IntentSent {
                provider: slot.settings.name.clone(),
            });
        }
        match result {
            Ok(()) => {}
            Err(Failure::Store(e)) => {
                out.error = Some(e.to_string());
                stop.store(true, Ordering::Relaxed);
                return out;
            }
            Err(Failure::Provider(e)) => {
                out.counts.failed += 1;
                let dead = !e.is_transient() || intent.attempts + 1 >= MAX_ATTEMPTS;
                let backoff = 60i64.saturating_mul(1 << intent.attempts.clamp(0, 10));
                let message = e.to_string();
                tracing::warn!(provider = %slot.settings.name, op = intent.payload.op.kind(), attempts = intent.attempts + 1, given_up = dead, "{message}");
                let id = intent.id;
                let now = now_secs();
                if let Err(e) = store
                    .call(move |c| outbox::fail_intent(c, id, dead, now + backoff, &message, now))
                    .await
                {
                    out.error = Some(e.to_string());
                    stop.store(true, Ordering::Relaxed);
                    return out;
                }
                if e.kind == ErrorKind::Auth {
                    out.error = Some(e.to_string());
                    stop.store(true, Ordering::Relaxed);
                    return out;
                }
            }
        }
    }
    out
}

enum Failure {
    Store(StoreError),
    Provider(ProviderError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure::Provider(e)
    }
}

async fn execute<P: Provider>(
    store: &Store,
    slot: &ProviderSlot<P>,
    provider_id: i64,
    region: DefaultRegion,
    propagate_deletes: bool,
    intent: &Intent,
    out: &mut PushOutcome,
) -> Result<(), Failure> {
    let contact_id = intent.contact_id;
    let intent_id = intent.id;
    let now = now_secs();
    match &intent.payload.op {
        Operation::Create { fields, .. } => {
            let sent = fields.clone();
            let begun = store
                .call(move |c| outbox::begin_create(c, provider_id, contact_id, &sent, now))
                .await?;
            let Some(link_id) = begun else {
                // Linked meanwhile (by a listing or an earlier intent): nothing to create.
                store
                    .call(move |c| outbox::complete_intent(c, intent_id))
                    .await?;
                return Ok(());
            };
            let caps = slot.client.capabilities();
            // Lookup-only providers: search before creating anything.
            let found = if caps.enumerate {
                None
            } else {
                match discover(slot, fields, region).await {
                    Ok(f) => f,
                    Err(e) => {
                        store
                            .call_seq(move |c, seq| {
                                outbox::drop_creating(c, seq, link_id, contact_id)
                            })
                            .await?;
                        return Err(e.into());
                    }
                }
            };
            let (remote_id, snapshot, tags, replan) = match found {
                Some((remote_id, snapshot, tags)) => {
                    out.counts.matched += 1;
                    (remote_id, snapshot, tags, true)
                }
                None => {
                    out.writes += 1;
                    match slot.client.create(fields, &Tags::new()).await {
                        Ok(created) => {
                            if created.existed {
                                out.counts.matched += 1;
                            } else {
                                out.counts.created += 1;
                            }
                            let tags = (caps.tags_read || caps.tags_add).then(Tags::new);
                            (created.remote_id, fields.clone(), tags, created.existed)
                        }
                        Err(e) if e.kind == ErrorKind::AlreadyExists => {
                            // Another record holds one of its keys: find it and link it.
                            match discover(slot, fields, region).await? {
                                Some((remote_id, snapshot, tags)) => {
                                    out.counts.matched += 1;
                                    (remote_id, snapshot, tags, true)
                                }
                                None => {
                                    store
                                        .call_seq(move |c, seq| {
                                            outbox::drop_creating(c, seq, link_id, contact_id)
                                        })
                                        .await?;
                                    return Err(e.into());
                                }
                            }
                        }
                        Err(e) if e.is_transient() => {
                            // It may have been created: keep the link `creating`; the next
                            // cycle resolves it by lookup before any new create.
                            store
                                .call(move |c| outbox::complete_intent(c, intent_id))
                                .await?;
                            return Err(e.into());
                        }
                        Err(e) => {
                            store
                                .call_seq(move |c, seq| {
                                    outbox::drop_creating(c, seq, link_id, contact_id)
                                })
                                .await?;
                            return Err(e.into());
                        }
                    }
                }
            };
            let with_tags = tags.clone();
            let contact_has_tags = !intent.payload.known_tags.is_empty()
                || matches!(&intent.payload.op, Operation::Create { tags, .. } if !tags.is_empty());
            let replan = replan || (contact_has_tags && caps.tags_add);
            store
                .call_seq(move |c, seq| {
                    outbox::finish_link(
                        c,
                        seq,
                        link_id,
                        contact_id,
                        &remote_id,
                        &snapshot,
                        with_tags.as_ref(),
                        replan,
                        now_secs(),
                    )?;
                    outbox::complete_intent(c, intent_id)
                })
                .await?;
        }
        Operation::Update { remote_id, changes } => {
            let Some(link) = active_link(store, provider_id, contact_id, intent_id).await? else {
                return Ok(());
            };
            let change_map: Fields = changes
                .iter()
                .map(|c| (c.field.clone(), c.new.clone()))
                .collect();
            let known = link.tags.clone().unwrap_or_default();
            let addressed = addressed_fields(
                slot.client.capabilities(),
                &intent.payload.projection,
                &link.snapshot,
            );
            let target = Target {
                remote_id,
                fields: &addressed,
                tags: &known,
            };
            out.writes += 1;
            if let Err(e) = slot.client.update(target, &change_map).await {
                return gone_or_fail(store, &link, intent_id, propagate_deletes, e).await;
            }
            out.counts.updated += 1;
            let mut snapshot = link.snapshot.clone();
            for (k, v) in change_map {
                snapshot.insert(k, v);
            }
            let link_id = link.id;
            store
                .call(move |c| {
                    outbox::update_link_snapshot(c, link_id, &snapshot, None, now)?;
                    outbox::complete_intent(c, intent_id)
                })
                .await?;
        }
        Operation::TagAdd { remote_id, tags } | Operation::TagRemove { remote_id, tags } => {
            let adding = matches!(intent.payload.op, Operation::TagAdd { .. });
            let Some(link) = active_link(store, provider_id, contact_id, intent_id).await? else {
                return Ok(());
            };
            let known = link.tags.clone().unwrap_or_default();
            let todo: Vec<String> = tags
                .iter()
                .filter(|t| {
                    if adding {
                        !known.contains(t)
                    } else {
                        known.contains(t)
                    }
                })
                .cloned()
                .collect();
            if !todo.is_empty() {
                let addressed = addressed_fields(
                    slot.client.capabilities(),
                    &intent.payload.projection,
                    &link.snapshot,
                );
                let target = Target {
                    remote_id,
                    fields: &addressed,
                    tags: &known,
                };
                out.writes += 1;
                let result = if adding {
                    slot.client.add_tags(target, &todo).await
                } else {
                    slot.client.remove_tags(target, &todo).await
                };
                if let Err(e) = result {
                    return gone_or_fail(store, &link, intent_id, propagate_deletes, e).await;
                }
                out.counts.tag_changes += todo.len() as u64;
            }
            let mut after = known;
            for t in &todo {
                if adding {
                    after.insert(t);
                } else {
                    after.remove(t);
                }
            }
            let link_id = link.id;
            let snapshot = link.snapshot.clone();
            store
                .call(move |c| {
                    outbox::update_link_snapshot(c, link_id, &snapshot, Some(&after), now)?;
                    outbox::complete_intent(c, intent_id)
                })
                .await?;
        }
        Operation::Delete { remote_id } => {
            let Some(link) = active_link(store, provider_id, contact_id, intent_id).await? else {
                return Ok(());
            };
            out.writes += 1;
            match slot.client.delete(remote_id).await {
                Ok(()) => {}
                // Already gone there: the goal is reached.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            out.counts.deleted += 1;
            let link_id = link.id;
            store
                .call(move |c| {
                    outbox::mark_link_gone(c, link_id, now)?;
                    outbox::complete_intent(c, intent_id)
                })
                .await?;
        }
    }
    Ok(())
}

/// The fields a write addresses the contact by: the projection, except that fields the
/// provider cannot change (Agentalk's and DM Champ's phone, DM Champ's external id) are the
/// values the provider holds — Agentalk upserts and DM Champ tags by phone, so the new
/// phone would address nobody, or a new contact.
fn addressed_fields(
    caps: &crate::provider::Capabilities,
    projection: &Fields,
    snapshot: &Fields,
) -> Fields {
    let mut fields = projection.clone();
    for (name, mutable) in [
        (field::PHONE, caps.phone_mutable),
        (field::SOURCE_ID, caps.source_id_mutable),
    ] {
        if mutable {
            continue;
        }
        match snapshot.get(name).filter(|v| !v.is_empty()) {
            Some(held) => {
                fields.insert(name.to_owned(), held.clone());
            }
            None => {
                fields.remove(name);
            }
        }
    }
    fields
}

/// The contact's active link, or `None` (and the intent dropped) if it is not active.
async fn active_link(
    store: &Store,
    provider_id: i64,
    contact_id: i64,
    intent_id: i64,
) -> Result<Option<outbox::ActiveLink>, Failure> {
    let link = store
        .call(move |c| outbox::link_of(c, provider_id, contact_id))
        .await?;
    match link {
        Some((state, link)) if state == "active" => Ok(Some(link)),
        _ => {
            store
                .call(move |c| outbox::complete_intent(c, intent_id))
                .await?;
            Ok(None)
        }
    }
}

/// A 404 on a linked record means it was deleted there: mark the link gone (never
/// re-created) and drop the intent. Anything else is a failure of the intent.
async fn gone_or_fail(
    store: &Store,
    link: &outbox::ActiveLink,
    intent_id: i64,
    propagate_deletes: bool,
    e: ProviderError,
) -> Result<(), Failure> {
    if e.kind == ErrorKind::NotFound {
        let link_id = link.id;
        let now = now_secs();
        store
            .call_seq(move |c, seq| {
                outbox::mark_link_gone(c, link_id, now)?;
                if propagate_deletes && let Some(contact) = outbox::contact_of_link(c, link_id)? {
                    outbox::mark_contacts_deleted(c, seq, &[contact])?;
                }
                outbox::complete_intent(c, intent_id)
            })
            .await?;
        tracing::info!(provider = %e.provider, "a linked record no longer exists there; marked gone");
        return Ok(());
    }
    Err(e.into())
}
