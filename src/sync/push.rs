//! The executor: runs one provider's steps of the cycle plan exactly as planned
//! ([`crate::domain::cycle_plan`]) and records each outcome — done, failed, or skipped with
//! its reason.
//!
//! - **Creates are crash-safe.** A `creating` link is written before a create is sent; if
//!   the answer is lost (5xx, timeout, dropped connection, a crash) the create is looked up
//!   by the keys it carried before it is ever sent again.
//! - **Transient failures are retried inside the cycle** with exponential backoff and full
//!   jitter, honouring `Retry-After`, while the retry budget (`sync.retry_budget`) lasts;
//!   what is left is kept for the next cycle.
//! - **A provider in trouble is cut off**: after a streak of consecutive failures the HTTP
//!   driver refuses further requests for the rest of the cycle; the remaining steps stay
//!   queued, and the other providers go on.
//! - Every success records the new link snapshot, so our own write never comes back as a
//!   change.

use super::failure::{ExecFailure, RecoverError};
use super::{CycleOptions, ProgressEvent, ProviderSlot, lookup_keys};
use crate::domain::cycle_plan::{Action, LookupBy, Step, StepShape, plan_provider};
use crate::domain::merge::normalize_record;
use crate::domain::normalize::DefaultRegion;
use crate::domain::{Fields, RemoteRecord, Tags, field};
use crate::provider::{Capabilities, ErrorKind, LookupKey, Provider, ProviderError, Target};
use crate::store::cycle::{CreateStart, LinkState, Linked, LinkedBy};
use crate::store::journal::Stamp;
use crate::store::links::ActiveLink;
use crate::store::runs::RunCounts;
use crate::store::{Store, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Attempts of one intent over all cycles before it is given up.
pub const MAX_ATTEMPTS: i64 = 8;
/// Intents read per store call.
const BATCH: usize = 500;
/// Contacts whose steps are in flight at once, per provider.
pub const PUSH_CONCURRENCY: usize = 8;
/// Steps kept in the report outside dry-run (unless every step is asked for).
pub const MAX_REPORTED_STEPS: usize = 50;
/// When a step is retried by a later cycle (daemon), at the earliest.
const NEXT_CYCLE_DELAY_SECS: i64 = 60;

/// What running one provider's steps did.
#[derive(Debug, Default)]
pub struct ExecOutcome {
    /// Counts.
    pub counts: RunCounts,
    /// Write requests sent (creates, updates, tag writes, deletes).
    pub writes: u64,
    /// The steps planned (every one in dry-run or when asked for; else the first few).
    pub steps: Vec<Step>,
    /// Steps that sent something.
    pub sends: u64,
    /// Steps that failed for good in this cycle (each also counted in `counts.failed`),
    /// with the error.
    pub failures: Vec<ProviderError>,
    /// Why the provider's part stopped early.
    pub failure: Option<ExecFailure>,
    /// Records found here that filled their contact's gaps (the other providers then
    /// have something new to receive).
    pub filled: u64,
}

/// Where one provider's steps go, and the cycle's limits.
pub struct Executor<'a, P> {
    /// The store.
    pub store: &'a Store,
    /// The provider.
    pub slot: &'a ProviderSlot<P>,
    /// Its id in the store.
    pub provider_id: i64,
    /// The default region for phones found by lookup.
    pub region: DefaultRegion,
    /// `sync.propagate_deletes`.
    pub propagate_deletes: bool,
    /// Retries of a failed step stop at the later of this and the step's first failure
    /// plus `budget`.
    pub deadline: Instant,
    /// `sync.retry_budget`.
    pub budget: Duration,
    /// Unix seconds now (the clock is passed in).
    pub now: &'a (dyn Fn() -> i64 + Send + Sync),
    /// The run in progress (what the journal entries of its writes are stamped with).
    pub run: Option<i64>,
}

/// The planner's view of a provider for turning intents into steps.
pub fn step_shape(caps: &Capabilities) -> StepShape {
    let lookups = [
        (crate::provider::LookupKind::SourceId, field::SOURCE_ID),
        (crate::provider::LookupKind::Phone, field::PHONE),
        (crate::provider::LookupKind::Email, field::EMAIL),
    ];
    // Lookup-only providers are searched by phone first (their key), then email, then
    // the external key, as the provider lists them.
    let mut ordered: Vec<String> = Vec::new();
    for kind in caps.lookups {
        if let Some((_, name)) = lookups.iter().find(|(k, _)| k == kind) {
            ordered.push((*name).to_owned());
        }
    }
    StepShape {
        enumerate: caps.enumerate,
        unlisted: false,
        lookups: ordered,
        create_finds: caps.create_finds_phone.then(|| field::PHONE.to_owned()),
        phone_mutable: caps.phone_mutable,
        source_id_mutable: caps.source_id_mutable,
    }
}

/// How one step ended.
enum StepEnd {
    Done,
    /// Nothing was sent: moot.
    Skipped,
    /// Failed for this cycle (recorded on the intent).
    Failed(ProviderError),
    /// Not run: the provider was cut off or the cycle cancelled (the intent is untouched).
    Deferred,
    /// The store failed: stop.
    Store(StoreError),
}

enum Fail {
    Store(StoreError),
    Provider(ProviderError),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl From<ProviderError> for Fail {
    fn from(e: ProviderError) -> Self {
        Fail::Provider(e)
    }
}

impl<P: Provider> Executor<'_, P> {
    /// The journal stamp of something happening now.
    fn stamp(&self) -> Stamp {
        Stamp {
            run: self.run,
            at: (self.now)(),
        }
    }

    fn name(&self) -> &str {
        &self.slot.settings.name
    }

    fn caps(&self) -> &Capabilities {
        self.slot.client.capabilities()
    }

    fn cut_off(&self) -> bool {
        self.slot
            .client
            .health()
            .is_some_and(crate::provider::http::Health::is_cut_off)
    }

    /// Plans and runs the provider's due intents (all of them with `drain_all`), batch
    /// by batch; in dry-run only plans them.
    pub async fn run(&self, opts: &CycleOptions) -> ExecOutcome {
        use futures::StreamExt;
        let mut out = ExecOutcome::default();
        let shape = StepShape {
            unlisted: opts.unlisted,
            ..step_shape(self.caps())
        };
        let stop = AtomicBool::new(false);
        let mut after = 0;
        let mut left = 0u64;
        // Records a review decided to merge go first: the survivor's record may take a
        // phone or email the merged record holds (Chatwoot refuses a value held twice).
        if let Err(e) = self.run_merges(opts, &mut out).await {
            out.failure = Some(ExecFailure::Store(e.to_string()));
            return out;
        }
        loop {
            if opts.cancel.is_cancelled() {
                break;
            }
            let due = (!opts.drain_all).then(|| (self.now)());
            let intents = match self
                .store
                .due_intents(self.provider_id, due, after, BATCH)
                .await
            {
                Ok(i) => i,
                Err(e) => {
                    out.failure = Some(ExecFailure::Store(e.to_string()));
                    break;
                }
            };
            let Some(last) = intents.last() else { break };
            after = last.intent_id;
            let mut intents = intents;
            if let Some(only) = &opts.only_contacts {
                intents.retain(|i| only.contains(&i.contact_id));
            }
            let steps = plan_provider(&shape, intents);
            out.sends += steps.iter().filter(|s| s.action.sends()).count() as u64;
            let keep = if opts.dry_run || opts.record_steps {
                steps.len()
            } else {
                MAX_REPORTED_STEPS
                    .saturating_sub(out.steps.len())
                    .min(steps.len())
            };
            out.steps.extend(steps.iter().take(keep).cloned());
            if opts.dry_run {
                continue;
            }
            if self.cut_off() || stop.load(Ordering::Relaxed) {
                left += steps.len() as u64;
                continue;
            }
            let results: Vec<(ExecOutcome, u64)> = futures::stream::iter(by_contact(steps))
                .map(|group| self.run_contact(opts, group, &stop))
                .buffer_unordered(PUSH_CONCURRENCY)
                .collect()
                .await;
            for (o, l) in results {
                left += l;
                out.absorb(o);
            }
        }
        if out.failure.is_none() && self.cut_off() {
            out.failure = Some(ExecFailure::CutOff {
                last: out.failures.last().cloned(),
                left,
            });
        }
        out
    }

    /// Runs the provider's pending merges (`review merge` where the provider holds both
    /// records of the person and merges them itself), each as a `merge` step of the plan.
    async fn run_merges(
        &self,
        opts: &CycleOptions,
        out: &mut ExecOutcome,
    ) -> Result<(), StoreError> {
        if !self.slot.client.can_merge() {
            return Ok(());
        }
        let merges = self.store.pending_merges(self.provider_id).await?;
        for m in merges {
            let step = Step {
                intent_id: 0,
                contact_id: m.contact_id,
                who: m.who,
                attempts: m.attempts,
                action: Action::Merge {
                    remote_id: m.remote_id.clone(),
                    into: m.into.clone(),
                },
                reason: "review: decided to be one person".to_owned(),
            };
            out.sends += 1;
            if opts.dry_run || opts.record_steps || out.steps.len() < MAX_REPORTED_STEPS {
                out.steps.push(step.clone());
            }
            if opts.dry_run || opts.cancel.is_cancelled() || self.cut_off() {
                continue;
            }
            out.writes += 1;
            let outcome = match self.slot.client.merge(&m.into, &m.remote_id).await {
                Ok(()) => Ok(()),
                // Merged already (an earlier answer was lost): the mergee is gone.
                Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
                Err(e) if e.kind == ErrorKind::CutOff => continue,
                Err(e) => {
                    let give_up = !e.is_transient() || m.attempts + 1 >= MAX_ATTEMPTS;
                    tracing::warn!(provider = %self.name(), op = "merge", attempts = m.attempts + 1, given_up = give_up, "{e}");
                    out.counts.failed += 1;
                    let text = e.to_string();
                    out.failures.push(e);
                    Err((text, give_up))
                }
            };
            if outcome.is_ok() {
                out.counts.updated += 1;
            }
            self.store
                .finish_merge(self.provider_id, m.remote_id, outcome)
                .await?;
        }
        Ok(())
    }

    /// Runs one contact's steps in order; stops at the first that cannot run.
    async fn run_contact(
        &self,
        opts: &CycleOptions,
        steps: Vec<Step>,
        stop: &AtomicBool,
    ) -> (ExecOutcome, u64) {
        let mut out = ExecOutcome::default();
        let total = steps.len() as u64;
        let mut ran = 0u64;
        for step in steps {
            if opts.cancel.is_cancelled() || stop.load(Ordering::Relaxed) || self.cut_off() {
                break;
            }
            let sends = step.action.sends();
            let end = self.run_step(opts, &step, &mut out).await;
            if sends && let Some(progress) = &opts.progress {
                progress.emit(ProgressEvent::IntentSent {
                    provider: self.name().to_owned(),
                });
            }
            match end {
                StepEnd::Done | StepEnd::Skipped => ran += 1,
                StepEnd::Failed(e) => {
                    ran += 1;
                    out.counts.failed += 1;
                    if e.kind == ErrorKind::Auth {
                        out.failure = Some(ExecFailure::Auth(e.clone()));
                        stop.store(true, Ordering::Relaxed);
                    }
                    out.failures.push(e);
                    // The contact's later steps build on this one: keep them for later.
                    break;
                }
                StepEnd::Deferred => break,
                StepEnd::Store(e) => {
                    out.failure = Some(ExecFailure::Store(e.to_string()));
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        (out, total - ran)
    }

    /// Runs one step, retrying transient failures within the budget.
    async fn run_step(&self, opts: &CycleOptions, step: &Step, out: &mut ExecOutcome) -> StepEnd {
        if let Action::Skip { why } = &step.action {
            tracing::debug!(provider = %self.name(), contact = step.contact_id, "skipped: {why}");
            return match self.store.close_intent(step.intent_id).await {
                Ok(()) => StepEnd::Skipped,
                Err(e) => StepEnd::Store(e),
            };
        }
        let mut tries: u32 = 0;
        let mut first_failure: Option<Instant> = None;
        loop {
            if self.cut_off() || opts.cancel.is_cancelled() {
                return StepEnd::Deferred;
            }
            let error = match self.attempt(step, out).await {
                Ok(()) => return StepEnd::Done,
                Err(Fail::Store(e)) => return StepEnd::Store(e),
                Err(Fail::Provider(e)) => e,
            };
            if error.kind == ErrorKind::CutOff {
                return StepEnd::Deferred;
            }
            let now = Instant::now();
            if error.is_transient() {
                tries += 1;
                let since = *first_failure.get_or_insert(now);
                let delay = error
                    .retry_after
                    .unwrap_or_else(|| backoff(&self.slot.settings.retry, tries));
                let limit = self.deadline.max(since + self.budget);
                if now + delay <= limit {
                    tracing::info!(provider = %self.name(), operation = %error.operation, attempt = tries, delay_ms = delay.as_millis() as u64, "transient failure; retrying within the cycle: {}", error.message);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = opts.cancel.cancelled() => return StepEnd::Deferred,
                    }
                }
            }
            return self.record_failure(step, error).await;
        }
    }

    /// Records a step that failed for this cycle on its intent.
    async fn record_failure(&self, step: &Step, error: ProviderError) -> StepEnd {
        let attempts = step.attempts + 1;
        let dead = !error.is_transient() || attempts >= MAX_ATTEMPTS;
        let now = (self.now)();
        let wait = NEXT_CYCLE_DELAY_SECS.saturating_mul(1 << step.attempts.clamp(0, 10));
        tracing::warn!(
            provider = %self.name(),
            op = step.action.name(),
            attempts,
            given_up = dead,
            "{error}"
        );
        match self
            .store
            .fail_intent(
                step.intent_id,
                dead,
                now + wait,
                error.to_string(),
                self.stamp(),
            )
            .await
        {
            Ok(()) => StepEnd::Failed(error),
            Err(e) => StepEnd::Store(e),
        }
    }

    /// One try of a step.
    async fn attempt(&self, step: &Step, out: &mut ExecOutcome) -> Result<(), Fail> {
        let contact_id = step.contact_id;
        let intent = step.intent_id;
        match &step.action {
            Action::Skip { .. } | Action::Merge { .. } => Ok(()),
            Action::Create {
                fields,
                tags,
                desired,
            } => {
                let want = Wanted {
                    fields,
                    desired,
                    tags,
                };
                self.ensure_created(step, &want, None, out).await
            }
            Action::CreateUnlessFound {
                lookup,
                fields,
                tags,
                desired,
                ..
            } => {
                let want = Wanted {
                    fields,
                    desired,
                    tags,
                };
                self.ensure_created(step, &want, Some(lookup), out).await
            }
            Action::Update {
                remote_id,
                changes,
                address,
                known_tags,
            } => {
                let Some(link) = self.active_link(contact_id).await? else {
                    self.store.close_intent(intent).await?;
                    return Ok(());
                };
                let change_map: Fields = changes
                    .iter()
                    .map(|c| (c.field.clone(), c.new.clone()))
                    .collect();
                let target = Target {
                    remote_id,
                    fields: address,
                    tags: known_tags,
                };
                out.writes += 1;
                if let Err(e) = self.slot.client.update(target, &change_map).await {
                    if e.kind == ErrorKind::AlreadyExists {
                        let refused = Refused {
                            sent: &change_map,
                            creating: None,
                            want: None,
                            own: Some(&link.remote_id),
                        };
                        return self.refused(step, e, refused, out).await;
                    }
                    return self.gone_or_fail(link.id, intent, e).await;
                }
                crate::crash_point!("after-write-sent");
                out.counts.updated += 1;
                let mut snapshot = link.snapshot;
                snapshot.extend(change_map);
                self.store
                    .record_write(
                        link.id,
                        "update",
                        snapshot,
                        None,
                        Some(intent),
                        self.stamp(),
                    )
                    .await?;
                Ok(())
            }
            Action::TagAdd {
                remote_id,
                tags,
                address,
                known_tags,
            }
            | Action::TagRemove {
                remote_id,
                tags,
                address,
                known_tags,
            } => {
                let adding = matches!(step.action, Action::TagAdd { .. });
                let Some(link) = self.active_link(contact_id).await? else {
                    self.store.close_intent(intent).await?;
                    return Ok(());
                };
                let target = Target {
                    remote_id,
                    fields: address,
                    tags: known_tags,
                };
                out.writes += 1;
                let result = if adding {
                    self.slot.client.add_tags(target, tags).await
                } else {
                    self.slot.client.remove_tags(target, tags).await
                };
                if let Err(e) = result {
                    return self.gone_or_fail(link.id, intent, e).await;
                }
                crate::crash_point!("after-write-sent");
                out.counts.tag_changes += tags.len() as u64;
                let mut after = link.tags.unwrap_or_else(|| known_tags.clone());
                for t in tags {
                    if adding {
                        after.insert(t);
                    } else {
                        after.remove(t);
                    }
                }
                let op = if adding { "tag_add" } else { "tag_remove" };
                self.store
                    .record_write(
                        link.id,
                        op,
                        link.snapshot,
                        Some(after),
                        Some(intent),
                        self.stamp(),
                    )
                    .await?;
                Ok(())
            }
            Action::Delete { remote_id } => {
                let Some(link) = self.active_link(contact_id).await? else {
                    self.store.close_intent(intent).await?;
                    return Ok(());
                };
                out.writes += 1;
                match self.slot.client.delete(remote_id).await {
                    Ok(()) => {}
                    // Already gone there: the goal is reached.
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                crate::crash_point!("mid-propagated-delete");
                out.counts.deleted += 1;
                self.store
                    .record_gone(link.id, intent, false, true, self.stamp())
                    .await?;
                Ok(())
            }
        }
    }

    async fn active_link(
        &self,
        contact_id: i64,
    ) -> Result<Option<crate::store::links::ActiveLink>, Fail> {
        Ok(self
            .store
            .link_now(self.provider_id, contact_id)
            .await?
            .filter(|l| l.state == LinkState::Active)
            .map(|l| l.link))
    }

    /// A create step: linked already (an earlier try got through) → bring the record up
    /// to date; a `creating` link (an answer was lost) → look it up before sending again;
    /// `search_first` (lookup-only providers) → look up, create only if nothing is found.
    async fn ensure_created(
        &self,
        step: &Step,
        want: &Wanted<'_>,
        search_first: Option<&[LookupBy]>,
        out: &mut ExecOutcome,
    ) -> Result<(), Fail> {
        let (fields, tags) = (want.fields, want.tags);
        let contact_id = step.contact_id;
        let now = (self.now)();
        let start = self
            .store
            .begin_create(self.provider_id, contact_id, fields.clone(), now)
            .await?;
        let link_id = match start {
            CreateStart::Linked(l) if l.state == LinkState::Active => {
                return self.converge(step, want, l.link, out).await;
            }
            CreateStart::Linked(l) if l.state == LinkState::Gone => {
                self.store.close_intent(step.intent_id).await?;
                return Ok(());
            }
            CreateStart::Linked(l) => {
                // An earlier try's answer was lost: was it created?
                match self.verify(fields).await? {
                    Verified::Found(found) => {
                        tracing::info!(provider = %self.name(), "a create whose answer was lost had reached the provider; linked it");
                        out.counts.matched += 1;
                        return self
                            .link_and_converge(step, l.link.id, found, LinkedBy::Created, want, out)
                            .await;
                    }
                    Verified::Absent => l.link.id,
                    Verified::Unknown => {
                        // Not sent again (it may have landed) and not a failure: the link
                        // stays `creating` until the provider's next complete listing
                        // shows the record (linked) or not (dropped, so it is planned
                        // again).
                        tracing::warn!(
                            provider = %self.name(),
                            "a create whose answer was lost cannot be confirmed by a search (this provider cannot be searched by the contact's keys); it is not sent again, and the next complete listing shows whether it landed"
                        );
                        out.counts.skipped += 1;
                        self.store.close_intent(step.intent_id).await?;
                        return Ok(());
                    }
                }
            }
            CreateStart::Begun(id) => {
                if let Some(keys) = search_first {
                    match self.find_by(keys).await {
                        Ok(Some(found)) => {
                            out.counts.matched += 1;
                            return self
                                .link_and_converge(step, id, found, LinkedBy::Found, want, out)
                                .await;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            // Nothing was sent: the create has not begun.
                            self.store.drop_creating(id, contact_id).await?;
                            return Err(e.into());
                        }
                    }
                }
                id
            }
        };
        let caps = self.caps();
        let create_tags: Tags = if caps.tags_on_create {
            tags.iter().collect()
        } else {
            Tags::new()
        };
        out.writes += 1;
        match self.slot.client.create(fields, &create_tags).await {
            Ok(created) => {
                crate::crash_point!("after-write-sent");
                let held_tags = if caps.tags_on_create {
                    Some(create_tags)
                } else {
                    (caps.tags_read || caps.tags_add).then(Tags::new)
                };
                let (snapshot, tags_now, how) = if created.existed {
                    out.counts.matched += 1;
                    // An existing contact answered: we know only the key it was found by
                    // (a provider whose create finds the phone: the phone), not whatever
                    // else we sent, which it did not take.
                    let found_by = if caps.create_finds_phone {
                        fields
                            .iter()
                            .filter(|(k, _)| k.as_str() == field::PHONE)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    } else {
                        self.key_fields(fields)
                    };
                    // Its tags are read where they can be, so only the missing ones are
                    // written.
                    let tags = if caps.tags_read_by_id && !caps.tags_by_listing {
                        Some(self.slot.client.read_tags(&created.remote_id).await?)
                    } else {
                        None
                    };
                    (found_by, tags, LinkedBy::Found)
                } else {
                    out.counts.created += 1;
                    (fields.clone(), held_tags, LinkedBy::Created)
                };
                let found = Linked {
                    remote_id: created.remote_id,
                    snapshot,
                    tags: tags_now,
                };
                self.link_and_converge(step, link_id, found, how, want, out)
                    .await
            }
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                // Another record holds one of its keys: find it, and link it unless it is
                // someone else's.
                let refused = Refused {
                    sent: fields,
                    creating: Some(link_id),
                    want: Some(want),
                    own: None,
                };
                self.refused(step, e, refused, out).await
            }
            // It may have been created: the link stays `creating`, and the retry looks it
            // up before sending again.
            Err(e) if e.is_transient() || e.kind == ErrorKind::CutOff => Err(e.into()),
            Err(e) => {
                self.store.drop_creating(link_id, contact_id).await?;
                Err(e.into())
            }
        }
    }

    /// Links the record found or created, then brings it to `fields` and `tags`.
    async fn link_and_converge(
        &self,
        step: &Step,
        link_id: i64,
        found: Linked,
        how: LinkedBy,
        want: &Wanted<'_>,
        out: &mut ExecOutcome,
    ) -> Result<(), Fail> {
        let link = ActiveLink {
            id: link_id,
            remote_id: found.remote_id.clone(),
            snapshot: found.snapshot.clone(),
            tags: found.tags.clone(),
        };
        // A record found here for the first time fills the contact's gaps (the store
        // records them on the contact with the link) and keeps its tags: what only it
        // holds is never erased.
        let mut desired = want.desired.clone();
        desired.extend(crate::domain::merge::gaps_filled_by(
            want.desired,
            &found.snapshot,
        ));
        let mut wanted: Tags = want.tags.iter().collect();
        for tag in found.tags.iter().flat_map(Tags::names) {
            wanted.insert(tag);
        }
        let tags: Vec<String> = wanted.names().map(str::to_owned).collect();
        let want = &Wanted {
            fields: want.fields,
            desired: &desired,
            tags: &tags,
        };
        if self.left_to_converge(want, &link).is_none() {
            // The record holds what the contact wants: linked and the intent closed in one
            // transaction.
            let filled = self
                .store
                .link_found(
                    link_id,
                    step.contact_id,
                    found,
                    false,
                    how,
                    Some(step.intent_id),
                    self.stamp(),
                )
                .await?;
            out.filled += u64::from(filled == Some(true));
            return Ok(());
        }
        let linked = self
            .store
            // Planned again next cycle: should this step be cut off before it converges
            // the record (a crash), the planner sees what is left against the new link.
            .link_found(
                link_id,
                step.contact_id,
                found,
                true,
                how,
                None,
                self.stamp(),
            )
            .await?;
        let Some(filled) = linked else {
            // The record is linked to another contact: held as a conflict, not merged.
            self.store.close_intent(step.intent_id).await?;
            return Ok(());
        };
        out.filled += u64::from(filled);
        self.converge(step, want, link, out).await
    }

    /// A create or update the provider refused because another of its records (the
    /// holder) holds one of the keys sent. Never sent again blindly: the holder is looked
    /// up by the refused keys; a refused create is linked to it when nothing contradicts
    /// that (it is linked to no other person, none of its keys names another person, and
    /// neither it nor a record sharing its keys waits for a review decision)
    /// and brought up to date; otherwise a `refused` review item holds the person back in
    /// this provider until it is decided (the intent is closed, the refusal journaled).
    async fn refused(
        &self,
        step: &Step,
        e: ProviderError,
        r: Refused<'_>,
        out: &mut ExecOutcome,
    ) -> Result<(), Fail> {
        let contact_id = step.contact_id;
        let key_fields = [field::SOURCE_ID, field::PHONE, field::EMAIL];
        let is_key = |f: &str| key_fields.contains(&f);
        let mut refused: Vec<String> = e
            .conflicting
            .iter()
            .filter(|f| is_key(f) && r.sent.get(*f).is_some_and(|v| !v.is_empty()))
            .cloned()
            .collect();
        if refused.is_empty() {
            refused = key_fields
                .iter()
                .filter(|f| r.sent.get(**f).is_some_and(|v| !v.is_empty()))
                .map(|f| (*f).to_owned())
                .collect();
        }
        let holder = match self.find_holder(r.sent, &refused, r.own).await {
            Ok(h) => h,
            Err(lookup) => {
                if let Some(link) = r.creating {
                    self.store.drop_creating(link, contact_id).await?;
                }
                return Err(lookup.into());
            }
        };
        let Some((found, keys, held)) = holder else {
            // Nobody to be found by those keys: a refusal we cannot act on (given up,
            // not retried).
            if let Some(link) = r.creating {
                self.store.drop_creating(link, contact_id).await?;
            }
            return Err(e.into());
        };
        let names = self
            .store
            .holder_people(self.provider_id, contact_id, found.remote_id.clone(), keys)
            .await?;
        if names.is_empty()
            && let (Some(link_id), Some(want)) = (r.creating, r.want)
        {
            tracing::info!(provider = %self.name(), contact = contact_id, "a create was refused because a record there holds its key; that record is linked to no one else, so it is linked to this person");
            out.counts.matched += 1;
            return self
                .link_and_converge(step, link_id, found, LinkedBy::Found, want, out)
                .await;
        }
        let reason = refusal_reason(
            self.name(),
            contact_id,
            r.creating.is_some(),
            r.own,
            &found.remote_id,
            &held,
            &names,
        );
        let refusal = crate::store::review::Refusal {
            provider_id: self.provider_id,
            contact: contact_id,
            intent: step.intent_id,
            creating_link: r.creating,
            remote_id: found.remote_id,
            record: found.snapshot,
            tags: found.tags,
            fields: held,
            others: names.others,
            reason,
            error: e.to_string(),
        };
        let outcome = self.store.record_refusal(refusal, self.stamp()).await?;
        match outcome {
            crate::store::review::RefusalOutcome::Held(item) => tracing::warn!(
                provider = %self.name(),
                contact = contact_id,
                item,
                "a write was refused because another record there, someone else's, holds its key; held for review (`contact-sync review show {item}`)"
            ),
            crate::store::review::RefusalOutcome::Withheld => tracing::info!(
                provider = %self.name(),
                contact = contact_id,
                "a write was refused because a different person's record there holds its key; it is sent again without that value"
            ),
        }
        out.counts.skipped += 1;
        Ok(())
    }

    /// The record holding the refused keys: looked up by each refused key (then by the
    /// other keys sent), skipping the person's own record `own`. Returns it as linked,
    /// its match keys, and the refused fields it holds.
    async fn find_holder(
        &self,
        sent: &Fields,
        refused: &[String],
        own: Option<&str>,
    ) -> Result<Option<(Linked, crate::domain::matching::Keys, Vec<String>)>, ProviderError> {
        let caps = self.caps();
        for f in refused {
            let Some(value) = sent.get(f).filter(|v| !v.is_empty()) else {
                continue;
            };
            let (key, kind) = match f.as_str() {
                field::PHONE => (LookupKey::Phone(value), crate::provider::LookupKind::Phone),
                field::EMAIL => (LookupKey::Email(value), crate::provider::LookupKind::Email),
                field::SOURCE_ID => (
                    LookupKey::SourceId(value),
                    crate::provider::LookupKind::SourceId,
                ),
                _ => continue,
            };
            if !caps.lookups.contains(&kind) {
                continue;
            }
            let Some(record) = self.slot.client.lookup(key).await? else {
                continue;
            };
            if Some(record.remote_id.as_str()) == own {
                continue;
            }
            let normalized = normalize_record(&record, self.region);
            let mut keys = normalized.keys.clone();
            // A number the phone library rejects (a WhatsApp form such as Brazil's
            // 8-digit mobiles) can still be another person's phone key.
            if keys.phone.is_none()
                && let Some(raw) = normalized.fields.get(field::PHONE).filter(|p| {
                    p.strip_prefix('+')
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                })
            {
                keys.phone_variants.push(raw.clone());
            }
            if !caps.lookup_returns_fields {
                match key {
                    LookupKey::Phone(p) => keys.phone = Some(p.to_owned()),
                    LookupKey::Email(m) => keys.email = Some(m.to_owned()),
                    LookupKey::SourceId(s) => keys.source_id = Some(s.to_owned()),
                }
            }
            let linked = self.linked_from(key, record).await?;
            let held: Vec<String> = refused
                .iter()
                .filter(|r| linked.snapshot.get(*r) == sent.get(*r) || r.as_str() == f.as_str())
                .cloned()
                .collect();
            return Ok(Some((linked, keys, held)));
        }
        Ok(None)
    }

    /// What converging `link` to what the contact wants would send: the field changes
    /// and the tags to add and remove; `None` when nothing.
    fn left_to_converge(&self, want: &Wanted<'_>, link: &ActiveLink) -> Option<Converge> {
        let caps = self.caps();
        // The provider's own split of the same name into given and family name is not a
        // change (as the planner sees it).
        let same_name = crate::domain::names::same_name(want.desired, &link.snapshot);
        let changes: Fields = want
            .desired
            .iter()
            .filter(|(k, v)| link.snapshot.get(*k).map_or("", String::as_str) != v.as_str())
            .filter(|(k, _)| !(same_name && crate::domain::names::is_split_name_field(k)))
            .filter(|(k, _)| {
                (k.as_str() != field::PHONE || caps.phone_mutable)
                    && (k.as_str() != field::SOURCE_ID || caps.source_id_mutable)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let wanted: Tags = want.tags.iter().collect();
        let known = link.tags.clone().unwrap_or_default();
        // As the planner compares a linked record: add what it lacks; remove what it
        // carries beyond the contact's tags only when its tags are known.
        let add: Vec<String> = if caps.tags_add {
            wanted.difference(&known).map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        let remove: Vec<String> = if caps.tags_remove && link.tags.is_some() {
            known.difference(&wanted).map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        (!changes.is_empty() || !add.is_empty() || !remove.is_empty()).then_some(Converge {
            changes,
            add,
            remove,
        })
    }

    /// Brings a linked record to the contact as this provider would hold it (the fields
    /// it can change, compared as the planner compares a linked record: a field set there
    /// and empty here is cleared) and adds the tags it lacks, then closes the intent. Each
    /// write records the new snapshot, so a retry after a failure here sends only what is
    /// still missing.
    async fn converge(
        &self,
        step: &Step,
        want: &Wanted<'_>,
        link: ActiveLink,
        out: &mut ExecOutcome,
    ) -> Result<(), Fail> {
        let Some(Converge {
            changes,
            add,
            remove,
        }) = self.left_to_converge(want, &link)
        else {
            self.store.close_intent(step.intent_id).await?;
            return Ok(());
        };
        let shape = step_shape(self.caps());
        let address =
            crate::domain::cycle_plan::addressed_fields(&shape, want.desired, &link.snapshot);
        let known = link.tags.clone().unwrap_or_default();
        let mut snapshot = link.snapshot.clone();
        if !changes.is_empty() {
            let target = Target {
                remote_id: &link.remote_id,
                fields: &address,
                tags: &known,
            };
            out.writes += 1;
            if let Err(e) = self.slot.client.update(target, &changes).await {
                if e.kind == ErrorKind::AlreadyExists {
                    let refused = Refused {
                        sent: &changes,
                        creating: None,
                        want: None,
                        own: Some(&link.remote_id),
                    };
                    return Box::pin(self.refused(step, e, refused, out)).await;
                }
                return self.gone_or_fail(link.id, step.intent_id, e).await;
            }
            out.counts.updated += 1;
            snapshot.extend(changes);
            self.store
                .record_write(
                    link.id,
                    "update",
                    snapshot.clone(),
                    None,
                    None,
                    self.stamp(),
                )
                .await?;
        }
        let mut held = known.clone();
        for (adding, todo) in [(true, add), (false, remove)] {
            if todo.is_empty() {
                continue;
            }
            let target = Target {
                remote_id: &link.remote_id,
                fields: &address,
                tags: &held,
            };
            out.writes += 1;
            let result = if adding {
                self.slot.client.add_tags(target, &todo).await
            } else {
                self.slot.client.remove_tags(target, &todo).await
            };
            if let Err(e) = result {
                return self.gone_or_fail(link.id, step.intent_id, e).await;
            }
            out.counts.tag_changes += todo.len() as u64;
            for t in &todo {
                if adding {
                    held.insert(t);
                } else {
                    held.remove(t);
                }
            }
            let op = if adding { "tag_add" } else { "tag_remove" };
            self.store
                .record_write(
                    link.id,
                    op,
                    snapshot.clone(),
                    Some(held.clone()),
                    None,
                    self.stamp(),
                )
                .await?;
        }
        self.store.close_intent(step.intent_id).await?;
        Ok(())
    }

    /// The fields known of a record found by its keys (when the lookup answers only an
    /// id): the keys.
    fn key_fields(&self, fields: &Fields) -> Fields {
        let shape = step_shape(self.caps());
        fields
            .iter()
            .filter(|(k, _)| shape.lookups.iter().any(|l| l == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Looks a contact up by `keys`, in order (the step's own lookups).
    async fn find_by(&self, keys: &[LookupBy]) -> Result<Option<Linked>, ProviderError> {
        for k in keys {
            let key = match k.field.as_str() {
                field::PHONE => LookupKey::Phone(&k.value),
                field::EMAIL => LookupKey::Email(&k.value),
                field::SOURCE_ID => LookupKey::SourceId(&k.value),
                _ => continue,
            };
            let Some(record) = self.slot.client.lookup(key).await? else {
                continue;
            };
            return Ok(Some(self.linked_from(key, record).await?));
        }
        Ok(None)
    }

    /// Looks a contact up by the keys in `fields`, in the provider's order.
    async fn find(&self, fields: &Fields) -> Result<Option<Linked>, ProviderError> {
        for key in lookup_keys(self.caps(), fields) {
            let Some(record) = self.slot.client.lookup(key).await? else {
                continue;
            };
            return Ok(Some(self.linked_from(key, record).await?));
        }
        Ok(None)
    }

    /// Whether a create whose answer was lost landed: found, certainly absent (searched
    /// by at least one key), or unknown (no key it can be searched by). A provider that
    /// can confirm a create by what it carried (MaiAgent: a search by its name, every key
    /// it was sent with matching) does so with that one request; the others, and a create
    /// without a name, are looked up by their keys.
    async fn verify(&self, fields: &Fields) -> Result<Verified, ProviderError> {
        let named = fields
            .get(field::NAME)
            .is_some_and(|n| !n.trim().is_empty());
        let keyless = lookup_keys(self.caps(), fields).is_empty();
        if self.slot.client.can_find_created() && (named || keyless) {
            return Ok(match self.slot.client.find_created(fields).await? {
                Some(record) => Verified::Found(Linked {
                    remote_id: record.remote_id.clone(),
                    snapshot: normalize_record(&record, self.region).fields,
                    tags: record.tags,
                }),
                None => Verified::Absent,
            });
        }
        if keyless {
            return Ok(Verified::Unknown);
        }
        Ok(match self.find(fields).await? {
            Some(found) => Verified::Found(found),
            None => Verified::Absent,
        })
    }

    async fn linked_from(
        &self,
        key: LookupKey<'_>,
        record: RemoteRecord,
    ) -> Result<Linked, ProviderError> {
        let caps = self.caps();
        let remote_id = record.remote_id.clone();
        let mut tags = record.tags.clone();
        let snapshot = if caps.lookup_returns_fields {
            normalize_record(&record, self.region).fields
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
            tags = Some(self.slot.client.read_tags(&remote_id).await?);
        }
        Ok(Linked {
            remote_id,
            snapshot,
            tags,
        })
    }

    /// A 404 on a linked record means it was deleted there: the link is marked gone
    /// (never re-created) and the intent closed. Anything else is a failure of the step.
    async fn gone_or_fail(&self, link_id: i64, intent: i64, e: ProviderError) -> Result<(), Fail> {
        if e.kind == ErrorKind::NotFound {
            self.store
                .record_gone(link_id, intent, self.propagate_deletes, false, self.stamp())
                .await?;
            tracing::info!(provider = %e.provider, "a linked record no longer exists there; marked gone");
            return Ok(());
        }
        Err(e.into())
    }
}

/// What a create step wants the provider to hold.
struct Wanted<'a> {
    /// The fields sent with a create (the non-empty ones).
    fields: &'a Fields,
    /// The contact as this provider would hold it, empty fields included.
    desired: &'a Fields,
    /// Its tags.
    tags: &'a [String],
}

/// A refused write, as [`Executor::refused`] needs it.
struct Refused<'a> {
    /// The fields sent.
    sent: &'a Fields,
    /// The `creating` link of a refused create.
    creating: Option<i64>,
    /// What a refused create wanted (to link the holder and bring it up to date).
    want: Option<&'a Wanted<'a>>,
    /// The person's own record there (a refused update).
    own: Option<&'a str>,
}

/// The field as a human says it.
fn field_words(f: &str) -> &str {
    match f {
        field::SOURCE_ID => "external id",
        other => other,
    }
}

/// The reason of a `refused` item, for a human.
fn refusal_reason(
    provider: &str,
    contact: i64,
    create: bool,
    own: Option<&str>,
    holder: &str,
    fields: &[String],
    names: &crate::store::review::HolderNames,
) -> String {
    let what = fields
        .iter()
        .map(|f| field_words(f))
        .collect::<Vec<_>>()
        .join(" and ");
    let write = match (create, own) {
        (true, _) | (false, None) => format!("{provider} refused to create contact {contact}"),
        (false, Some(own)) => {
            format!("{provider} refused to update contact {contact}'s record {own}")
        }
    };
    let whose = match names.others.as_slice() {
        [] if names.under_review => {
            "waits for a review decision (it or a record sharing its keys is held for review)"
                .to_owned()
        }
        [] => "is linked to no one".to_owned(),
        [one] => format!("belongs to contact {one}"),
        many => format!(
            "belongs to contacts {}",
            many.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "{write}: its record {holder} already holds that {what} and {whose}. Nothing more is sent for contact {contact} there until you decide: `review merge` if they are one person, `review apart` if not (contact {contact} is then written there without that {what})."
    )
}

/// What converging a linked record sends.
struct Converge {
    changes: Fields,
    add: Vec<String>,
    remove: Vec<String>,
}

enum Verified {
    Found(Linked),
    Absent,
    Unknown,
}

/// Exponential backoff from the provider's base delay, capped at its max delay, with
/// full jitter.
fn backoff(policy: &crate::config::RetryPolicy, tries: u32) -> Duration {
    let base = policy.base_delay.as_secs_f64();
    let cap = policy.max_delay.as_secs_f64().max(base);
    let exp = (base * 2f64.powi(tries.saturating_sub(1).min(20) as i32)).min(cap);
    let jittered = exp * (0.5 + rand::random::<f64>() * 0.5);
    Duration::from_secs_f64(jittered)
}

/// The steps grouped by contact: groups in order of their first step, each in order.
fn by_contact(steps: Vec<Step>) -> Vec<Vec<Step>> {
    let mut index: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<Step>> = Vec::new();
    for step in steps {
        match index.get(&step.contact_id) {
            Some(&i) => groups[i].push(step),
            None => {
                index.insert(step.contact_id, groups.len());
                groups.push(vec![step]);
            }
        }
    }
    groups
}

impl ExecOutcome {
    fn absorb(&mut self, other: ExecOutcome) {
        self.counts += other.counts;
        self.writes += other.writes;
        self.filled += other.filled;
        self.failures.extend(other.failures);
        if self.failure.is_none() {
            self.failure = other.failure;
        }
    }
}

/// Resolves links a crash left `creating`: looks the contact up by the keys that were
/// sent; found → linked; certainly not there in a lookup-only provider → the create never
/// landed and is planned again. (In a provider that can be listed, the listing adopts or
/// drops them.)
pub async fn recover_creating<P: Provider>(ex: &Executor<'_, P>) -> Result<u64, RecoverError> {
    let pending = ex
        .store
        .creating_links(ex.provider_id)
        .await
        .map_err(|e| RecoverError::Store(e.to_string()))?;
    let mut linked = 0;
    for (link_id, contact_id, sent) in pending {
        match ex.verify(&sent).await.map_err(RecoverError::Provider)? {
            Verified::Found(found) => {
                tracing::info!(provider = %ex.name(), "an interrupted create had reached the provider; linked it");
                ex.store
                    .link_found(
                        link_id,
                        contact_id,
                        found,
                        true,
                        LinkedBy::Created,
                        None,
                        ex.stamp(),
                    )
                    .await
                    .map_err(|e| RecoverError::Store(e.to_string()))?;
                linked += 1;
            }
            Verified::Absent if !ex.caps().enumerate => {
                ex.store
                    .drop_creating(link_id, contact_id)
                    .await
                    .map_err(|e| RecoverError::Store(e.to_string()))?;
            }
            _ => {}
        }
    }
    Ok(linked)
}
