//! One sync cycle (DESIGN §5), level-triggered: every cycle recomputes what is needed.
//!
//! 1. **Recover**: links left `creating` by a crash are resolved by lookup before anything
//!    else, so a create is never sent twice.
//! 2. **Pull** every provider that can enumerate, concurrently, one store transaction per
//!    page ([`crate::store::pull`]): only what changed in a provider since its snapshot
//!    reaches the golden record; unlinked records are matched (link → source id → phone →
//!    email) or held as conflicts. Chatwoot labels are read by listing each label. After
//!    a complete listing, missing records are marked `gone` (20 % guard).
//! 3. **Plan** ([`crate::domain::plan`], pure) every contact changed since the provider's
//!    watermark; **persist** the writes as intents; **push** them per provider,
//!    concurrently, with the HTTP driver's pacing and retries ([`push`]). Lookup-only
//!    providers are searched before anything is created there. A write that succeeds
//!    updates the link snapshot, so it never comes back as a change.
//! 4. Plan and push repeat (at most [`MAX_ROUNDS`]) while a push revealed more to do
//!    (e.g. a contact found by lookup whose fields differ).

pub mod listing;
pub mod phone_regexes;
pub mod push;
pub mod report;

use crate::config::ProviderSettings;
use crate::domain::RemoteRecord;
use crate::domain::merge::{NormalizedRecord, content_hash, normalize_record};
use crate::domain::normalize::DefaultRegion;
use crate::domain::plan::{ProviderShape, plan_contact};
use crate::domain::{Fields, Tags, field};
use crate::provider::{Capabilities, LookupKey, LookupKind, Provider};
use crate::store::outbox::{self, IntentPayload};
use crate::store::pull::{self, FieldOwners, LinkSet};
use crate::store::{Store, StoreError};
pub use report::{CycleReport, PlannedWrite, ProviderReport, StageTimes};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Plan/push rounds per cycle.
pub const MAX_ROUNDS: usize = 3;
/// Contacts planned per store read.
const PLAN_BATCH: usize = 2_000;
/// At most this share (percent) of a provider's links may be marked gone at once.
pub const DELETE_GUARD_PERCENT: u64 = 20;
/// A provider taking part in the cycle.
pub struct ProviderSlot<P> {
    /// Its validated config.
    pub settings: ProviderSettings,
    /// Its client.
    pub client: P,
}

/// How a cycle runs.
#[derive(Debug, Clone, Default)]
pub struct CycleOptions {
    /// Compute and report the plan; send no write (run it on a copy of the store).
    pub dry_run: bool,
    /// Send every pending intent now, not only those due (one-shot runs).
    pub drain_all: bool,
    /// Stop between pages and pushes when cancelled.
    pub cancel: CancellationToken,
    /// Pull only these providers (by name); `None` pulls all. Pushes always go to every
    /// push-enabled provider, so a change pulled from one reaches the others in the same
    /// cycle (the daemon runs one such cycle per provider schedule).
    pub pull_only: Option<Vec<String>>,
    /// Told about progress (pages pulled, intents sent), e.g. to draw progress bars.
    pub progress: Option<Progress>,
}

/// Progress of a cycle, reported to [`CycleOptions::progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A page of `records` was read from `provider` and stored.
    PagePulled {
        /// Instance name.
        provider: String,
        /// Records on the page.
        records: u64,
    },
    /// One intent was sent to `provider` (whatever its outcome).
    IntentSent {
        /// Instance name.
        provider: String,
    },
}

/// A progress callback (cheap to clone).
#[derive(Clone)]
pub struct Progress(pub Arc<dyn Fn(ProgressEvent) + Send + Sync>);

impl Progress {
    /// Wraps `f`.
    pub fn new(f: impl Fn(ProgressEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Reports `event`.
    pub fn emit(&self, event: ProgressEvent) {
        (self.0)(event);
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// Failures of the engine itself (a provider failing is reported, not an error).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The engine: the store plus the providers of this cycle, in config order.
pub struct Engine<P> {
    store: Store,
    slots: Vec<ProviderSlot<P>>,
    region: DefaultRegion,
    region_salt: i64,
    normalizer: Normalizer,
    /// `sync.propagate_deletes`: a contact deleted in one provider is deleted in the others.
    propagate_deletes: bool,
    ids: Vec<i64>,
    /// Whether each provider's last listing completed (creates there need it).
    listing_complete: Vec<bool>,
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The planner's view of a provider's capabilities.
pub fn shape_of(caps: &Capabilities) -> ProviderShape {
    ProviderShape {
        fields: caps.fields.iter().map(|f| (*f).to_owned()).collect(),
        attrs: caps.attrs,
        needs_phone: caps.needs_phone,
        phone_mutable: caps.phone_mutable,
        source_id_mutable: caps.source_id_mutable,
        tags_add: caps.tags_add,
        tags_remove: caps.tags_remove,
        delete: caps.delete,
    }
}

/// The lookups to try for a record we hold, in order.
pub fn lookup_keys<'a>(caps: &Capabilities, fields: &'a Fields) -> Vec<LookupKey<'a>> {
    let mut keys = Vec::new();
    for kind in [LookupKind::SourceId, LookupKind::Phone, LookupKind::Email] {
        if !caps.lookups.contains(&kind) {
            continue;
        }
        let (name, make): (&str, fn(&'a str) -> LookupKey<'a>) = match kind {
            LookupKind::SourceId => (field::SOURCE_ID, LookupKey::SourceId),
            LookupKind::Phone => (field::PHONE, LookupKey::Phone),
            LookupKind::Email => (field::EMAIL, LookupKey::Email),
        };
        if let Some(v) = fields.get(name).filter(|v| !v.is_empty()) {
            keys.push(make(v.as_str()));
        }
    }
    keys
}

impl<P: Provider> Engine<P> {
    /// An engine over `store` for `slots` (config order decides same-cycle conflicts).
    pub fn new(store: Store, slots: Vec<ProviderSlot<P>>, region: DefaultRegion) -> Self {
        phone_regexes::enlarge_cache();
        Self {
            store,
            slots,
            region,
            region_salt: region_salt(region),
            normalizer: Normalizer::start(),
            propagate_deletes: false,
            ids: Vec::new(),
            listing_complete: Vec::new(),
        }
    }

    /// Sets `sync.propagate_deletes` (off by default): a contact deleted in one provider is
    /// then deleted in every other provider that holds it and can delete.
    #[must_use]
    pub fn with_propagate_deletes(mut self, on: bool) -> Self {
        self.propagate_deletes = on;
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The providers.
    pub fn slots(&self) -> &[ProviderSlot<P>] {
        &self.slots
    }

    /// Runs one cycle.
    pub async fn run_cycle(&mut self, opts: &CycleOptions) -> Result<CycleReport, SyncError> {
        let now = now_secs();
        if self.ids.len() != self.slots.len() {
            let names: Vec<(String, String)> = self
                .slots
                .iter()
                .map(|s| (s.settings.name.clone(), s.settings.kind.as_str().to_owned()))
                .collect();
            self.ids = self
                .store
                .call(move |c| {
                    names
                        .iter()
                        .map(|(n, k)| outbox::ensure_provider(c, n, k))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await?;
        }
        let mut reports: Vec<ProviderReport> = self
            .slots
            .iter()
            .map(|s| ProviderReport::new(&s.settings.name, s.settings.kind.as_str()))
            .collect();
        let mut run_ids = Vec::new();
        if !opts.dry_run {
            for &id in &self.ids {
                run_ids.push(
                    self.store
                        .call(move |c| outbox::begin_run(c, id, now))
                        .await?,
                );
            }
        }

        // 1. Recover creates a crash left unanswered.
        let (store, region) = (&self.store, self.region);
        let recoveries = futures::future::join_all(self.slots.iter().zip(&self.ids).map(
            |(slot, &id)| async move {
                let started = Instant::now();
                let result = push::recover_creating(store, slot, id, region).await;
                (result, started.elapsed().as_secs_f64())
            },
        ))
        .await;
        for (report, (result, secs)) in reports.iter_mut().zip(recoveries) {
            report.timings.pull += secs;
            match result {
                Ok(n) => report.counts.matched += n,
                Err(e) => report.fail(e.clone()),
            }
        }

        // 2. Pull.
        let owners = Arc::new(Mutex::new(FieldOwners::default()));
        let pulls =
            futures::future::join_all(self.slots.iter().zip(&self.ids).enumerate().map(
                |(order, (slot, &id))| self.pull_provider(slot, id, order, owners.clone(), opts),
            ))
            .await;
        self.listing_complete.resize(self.slots.len(), false);
        for (i, (report, result)) in reports.iter_mut().zip(pulls).enumerate() {
            match result {
                Ok(p) if !p.pulled_now => {}
                Ok(p) => {
                    report.timings.fetch += p.times.fetch;
                    report.timings.normalize += p.times.normalize;
                    report.timings.store += p.times.store;
                    report.timings.pull += p.times.pull;
                    report.counts.pulled += p.pulled;
                    report.counts.matched += p.matched;
                    report.conflicts += p.conflicts;
                    report.gone += p.gone;
                    report.complete = p.complete;
                    if let Some(w) = p.warning {
                        report.warnings.push(w);
                    }
                    self.listing_complete[i] = p.complete;
                }
                Err(e) => {
                    report.fail(e);
                    self.listing_complete[i] = false;
                }
            }
        }

        // 3. Plan and push.
        for round in 0..MAX_ROUNDS {
            if opts.cancel.is_cancelled() {
                break;
            }
            let mut planned_any = false;
            for (i, slot) in self.slots.iter().enumerate() {
                if !slot.settings.push {
                    continue;
                }
                let caps = slot.client.capabilities();
                let may_create = !caps.enumerate || self.listing_complete[i];
                let started = Instant::now();
                let (n, skipped, writes) = self
                    .plan_provider(slot, self.ids[i], may_create, opts.dry_run)
                    .await?;
                reports[i].timings.plan += started.elapsed().as_secs_f64();
                planned_any |= n > 0;
                if round == 0 {
                    reports[i].counts.skipped += skipped;
                }
                reports[i].planned.extend(writes);
            }
            if opts.dry_run {
                break;
            }
            let (store, region, propagate) = (&self.store, self.region, self.propagate_deletes);
            let pushes = futures::future::join_all(
                self.slots
                    .iter()
                    .zip(&self.ids)
                    .filter(|(s, _)| s.settings.push)
                    .map(|(slot, &id)| async move {
                        let started = Instant::now();
                        let outcome =
                            push::push_provider(store, slot, id, region, propagate, opts).await;
                        (outcome, started.elapsed().as_secs_f64())
                    }),
            )
            .await;
            let mut pushed = pushes.into_iter();
            for (i, slot) in self.slots.iter().enumerate() {
                if !slot.settings.push {
                    continue;
                }
                if let Some((outcome, secs)) = pushed.next() {
                    let report = &mut reports[i];
                    report.timings.push += secs;
                    // Pushes count no pulled or skipped records: those stay the pull's.
                    report.counts += outcome.counts;
                    report.write_requests += outcome.writes;
                    if let Some(e) = outcome.error {
                        report.fail(e);
                    }
                }
            }
            if !planned_any {
                break;
            }
        }

        // 4. Record the runs.
        let finished = now_secs();
        if !opts.dry_run {
            for ((report, &run_id), &id) in reports.iter().zip(&run_ids).zip(&self.ids) {
                let counts = report.counts.clone();
                let error = report.error.clone();
                let complete = report.complete;
                self.store
                    .call(move |c| {
                        outbox::finish_run(c, run_id, &counts, error.as_deref(), finished)?;
                        if error.is_none() {
                            outbox::mark_success(c, id, complete, finished)?;
                        }
                        Ok(())
                    })
                    .await?;
            }
        }
        Ok(CycleReport {
            providers: reports,
            dry_run: opts.dry_run,
        })
    }

    async fn pull_provider(
        &self,
        slot: &ProviderSlot<P>,
        provider_id: i64,
        order: usize,
        owners: Arc<Mutex<FieldOwners>>,
        opts: &CycleOptions,
    ) -> Result<PullOutcome, String> {
        let caps = slot.client.capabilities();
        let mut out = PullOutcome::default();
        let selected = opts
            .pull_only
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == &slot.settings.name));
        if !caps.enumerate || !selected {
            return Ok(out);
        }
        out.pulled_now = true;
        let started = Instant::now();
        let name = &slot.settings.name;
        let mut seen = LinkSet::new();
        let mut cursor: Option<String> = None;
        let mut restarts = 0;
        // A pipeline: while the store applies page N, page N+1 is probed and normalised
        // (on the engine's normalising thread) and page N+2 is fetched and decoded (with
        // up to `listing::PAGES_AHEAD` pages requested at once when they are numbered).
        let mut listing = listing::Listing::new(&slot.client);
        let mut fetched = listing.first().await;
        let mut ready: Option<Vec<NormalizedRecord>> = None;
        loop {
            if opts.cancel.is_cancelled() {
                return Ok(out);
            }
            out.times.fetch += fetched.1;
            let page = match fetched.0 {
                Ok(p) => p,
                Err(e)
                    if e.kind == crate::provider::ErrorKind::NotFound
                        && cursor.is_some()
                        && restarts < 2 =>
                {
                    // The listing shrank under us (MaiAgent "Invalid page."): start again.
                    tracing::info!(provider = %name, "listing changed during the scan; restarting it");
                    // The page waiting to be stored is listed again (or is gone).
                    ready = None;
                    restarts += 1;
                    cursor = None;
                    listing.restart();
                    fetched = listing.first().await;
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            out.pulled += page.records.len() as u64;
            if let Some(progress) = &opts.progress {
                progress.emit(ProgressEvent::PagePulled {
                    provider: name.clone(),
                    records: page.records.len() as u64,
                });
            }
            // The next page is fetched while this one is probed, normalised and the
            // previous one stored: a cycle over unchanged data is then bound by the
            // listing alone, not by the listing plus the probe.
            let next = page.next;
            let fetching = listing.next(next.as_deref());
            let previous = ready.take();
            let seen_now = &mut seen;
            let working = async {
                let probing = Instant::now();
                let changed = self
                    .unchanged_filter(page.records, provider_id, seen_now)
                    .await?;
                let probe_secs = probing.elapsed().as_secs_f64();
                let normalizing = self.normalizer.normalize(changed, self.region);
                let storing = async {
                    match previous {
                        Some(records) => {
                            Some(self.store_page(records, provider_id, order, &owners).await)
                        }
                        None => None,
                    }
                };
                let (normalized, stored) = tokio::join!(normalizing, storing);
                Ok::<_, StoreError>((probe_secs, normalized, stored))
            };
            let (worked, next_page) = tokio::join!(working, fetching);
            let (probe_secs, normalized, stored) = worked.map_err(|e| e.to_string())?;
            out.times.store += probe_secs;
            if let Some(stored) = stored {
                out.absorb(stored.map_err(|e| e.to_string())?, &mut seen);
            }
            let (normalized, secs) =
                normalized.ok_or("the thread normalising listed records stopped")?;
            out.times.normalize += secs;
            ready = (!normalized.is_empty()).then_some(normalized);
            if let Some(next_page) = next_page {
                fetched = next_page;
                cursor = next;
            } else {
                if let Some(records) = ready.take() {
                    let stored = self
                        .store_page(records, provider_id, order, &owners)
                        .await
                        .map_err(|e| e.to_string())?;
                    out.absorb(stored, &mut seen);
                }
                break;
            }
        }
        if opts.cancel.is_cancelled() {
            return Ok(out);
        }
        out.complete = true;
        let seen = Arc::new(seen);
        let now = now_secs();
        let storing = Instant::now();
        let seen_for_gone = Arc::clone(&seen);
        let propagate = self.propagate_deletes;
        let (marked, refused) = self
            .store
            .call_seq(move |c, seq| {
                let (gone, refused) =
                    pull::mark_gone(c, provider_id, &seen_for_gone, DELETE_GUARD_PERCENT, now)?;
                if propagate {
                    outbox::mark_contacts_deleted(c, seq, &gone)?;
                }
                let r = (gone.len() as u64, refused);
                // Creates that never landed (no record adopted them): plan them again.
                for (link_id, contact_id, _) in outbox::creating_links(c, provider_id)? {
                    outbox::drop_creating(c, seq, link_id, contact_id)?;
                }
                Ok(r)
            })
            .await
            .map_err(|e| e.to_string())?;
        out.times.store += storing.elapsed().as_secs_f64();
        out.gone = marked;
        if refused > 0 {
            let msg = format!(
                "{refused} linked records are missing from {name}'s listing (more than {DELETE_GUARD_PERCENT}% of its links); none were marked deleted. Records are only marked deleted by a listing that misses at most {DELETE_GUARD_PERCENT}% of them; if this listing was wrong (API key, account, proxy), nothing was lost"
            );
            tracing::warn!(provider = %name, "{msg}");
            out.warning = Some(msg);
        } else if marked > 0 {
            tracing::info!(provider = %name, count = marked, "records deleted in the provider are marked gone (never re-created there)");
        }
        // Tags last, and only for records this listing showed: a record missing from it
        // (deleted, or held back by the guard) has not lost its tags.
        if caps.tags_by_listing {
            self.pull_tags(slot, provider_id, seen, opts, &mut out.times)
                .await
                .map_err(|e| e.to_string())?;
        }
        out.times.pull = started.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Sorts a listed page: records whose content hash equals the one their active link
    /// keeps need nothing at all (not even normalising) and only go into `seen`; the
    /// others come back with their hash, to be normalised and applied.
    async fn unchanged_filter(
        &self,
        records: Vec<RemoteRecord>,
        provider_id: i64,
        seen: &mut LinkSet,
    ) -> Result<Vec<(RemoteRecord, i64)>, StoreError> {
        let listed: Vec<(String, i64)> = records
            .iter()
            .map(|r| (r.remote_id.clone(), listed_hash(r, self.region_salt)))
            .collect();
        let (listed, unchanged) = self
            .store
            .call(move |c| {
                let unchanged = pull::unchanged_links(c, provider_id, &listed)?;
                Ok((listed, unchanged))
            })
            .await?;
        let mut changed = Vec::new();
        for ((record, (_, hash)), link) in records.into_iter().zip(listed).zip(unchanged) {
            match link {
                Some(link_id) => seen.insert(link_id),
                None => changed.push((record, hash)),
            }
        }
        Ok(changed)
    }

    /// Applies normalised records of one page in one store transaction.
    async fn store_page(
        &self,
        records: Vec<NormalizedRecord>,
        provider_id: i64,
        order: usize,
        owners: &Arc<Mutex<FieldOwners>>,
    ) -> Result<(pull::PageOutcome, f64), StoreError> {
        let owners = Arc::clone(owners);
        let now = now_secs();
        let started = Instant::now();
        let outcome = self
            .store
            .call_seq(move |c, seq| {
                let mut owners = owners.lock().map_err(|_| StoreError::Closed)?;
                pull::apply_page(c, seq, &mut owners, provider_id, order, &records, now)
            })
            .await?;
        Ok((outcome, started.elapsed().as_secs_f64()))
    }

    async fn pull_tags(
        &self,
        slot: &ProviderSlot<P>,
        provider_id: i64,
        seen: Arc<LinkSet>,
        opts: &CycleOptions,
        times: &mut StageTimes,
    ) -> Result<(), crate::provider::ProviderError> {
        let fetching = Instant::now();
        let names = slot.client.list_tag_names().await?;
        times.fetch += fetching.elapsed().as_secs_f64();
        let universe: Tags = names.iter().collect();
        self.store
            .call(|c| pull::begin_tag_staging(c))
            .await
            .map_err(|e| store_as_provider_error(slot, &e))?;
        for tag in &names {
            // Each label's pages (ahead when numbered), staged while the next is fetched.
            let mut listing = listing::Listing::tagged(&slot.client, tag);
            let mut fetched = listing.first().await;
            loop {
                if opts.cancel.is_cancelled() {
                    return Ok(());
                }
                times.fetch += fetched.1;
                let page = fetched.0?;
                let tag_owned = tag.clone();
                let ids = page.remote_ids;
                let staging = async {
                    let started = Instant::now();
                    let staged = self
                        .store
                        .call(move |c| pull::stage_tag_page(c, provider_id, &tag_owned, &ids))
                        .await;
                    (staged, started.elapsed().as_secs_f64())
                };
                let ((staged, secs), next) =
                    tokio::join!(staging, listing.next(page.next.as_deref()));
                times.store += secs;
                staged.map_err(|e| store_as_provider_error(slot, &e))?;
                match next {
                    Some(f) => fetched = f,
                    None => break,
                }
            }
        }
        let now = now_secs();
        let storing = Instant::now();
        self.store
            .call_seq(move |c, seq| {
                pull::apply_staged_tags(c, seq, provider_id, &universe, &seen, now)
            })
            .await
            .map_err(|e| store_as_provider_error(slot, &e))?;
        times.store += storing.elapsed().as_secs_f64();
        Ok(())
    }

    /// Plans every contact changed since the provider's watermark; persists the intents
    /// (unless dry-run). Returns (intents planned, things skipped, the writes for the report).
    async fn plan_provider(
        &self,
        slot: &ProviderSlot<P>,
        provider_id: i64,
        may_create: bool,
        dry_run: bool,
    ) -> Result<(u64, u64, Vec<PlannedWrite>), SyncError> {
        let shape = shape_of(slot.client.capabilities());
        let mut after = self
            .store
            .call(move |c| outbox::planned_seq(c, provider_id))
            .await?;
        let mut planned = 0u64;
        let mut skipped = 0u64;
        let mut writes = Vec::new();
        // Creates held back because the listing is incomplete are planned again later:
        // the watermark stops just before the first of them.
        let mut held_back = i64::MAX;
        loop {
            let inputs = self
                .store
                .call(move |c| outbox::plan_inputs(c, provider_id, after, PLAN_BATCH))
                .await?;
            let Some(last) = inputs.last() else { break };
            let last_seq = last.seq;
            let mut intents = Vec::new();
            for input in &inputs {
                let plan = plan_contact(&input.contact, &input.link, &shape, may_create);
                skipped += plan.skipped.len() as u64;
                if plan
                    .skipped
                    .contains(&crate::domain::plan::Skip::EnumerationIncomplete)
                {
                    held_back = held_back.min(input.seq - 1);
                }
                if plan.operations.is_empty() {
                    continue;
                }
                let projection = crate::domain::plan::project(&input.contact, &shape);
                let known_tags: Vec<String> = match &input.link {
                    crate::domain::plan::LinkView::Active { tags: Some(t), .. } => {
                        t.names().map(str::to_owned).collect()
                    }
                    _ => Vec::new(),
                };
                for op in plan.operations {
                    if dry_run || writes.len() < report::MAX_REPORTED_WRITES {
                        writes.push(PlannedWrite::new(&input.contact, &op));
                    }
                    intents.push((
                        input.contact.id,
                        IntentPayload {
                            op,
                            projection: projection.clone(),
                            known_tags: known_tags.clone(),
                        },
                    ));
                }
            }
            planned += intents.len() as u64;
            let watermark = last_seq.min(held_back);
            if !dry_run {
                let now = now_secs();
                self.store
                    .call(move |c| {
                        outbox::insert_intents(c, provider_id, &intents, now)?;
                        outbox::set_planned_seq(c, provider_id, watermark)
                    })
                    .await?;
            }
            after = last_seq;
        }
        Ok((planned, skipped, writes))
    }
}

fn store_as_provider_error<P: Provider>(
    slot: &ProviderSlot<P>,
    e: &StoreError,
) -> crate::provider::ProviderError {
    crate::provider::ProviderError::new(
        slot.settings.name.clone(),
        "store tag listing",
        crate::provider::ErrorKind::Permanent,
        e.to_string(),
    )
}

/// Normalised records of a page and the seconds normalising took.
type Normalized = (Vec<NormalizedRecord>, f64);

/// A page of listed records (each with its listed hash) to normalise, and where to answer.
type NormalizeJob = (
    Vec<(RemoteRecord, i64)>,
    DefaultRegion,
    tokio::sync::oneshot::Sender<Normalized>,
);

/// One thread, owned by the engine, that normalises listed records for every provider:
/// the work overlaps fetching the next page and storing the previous one, and the phone
/// regex caches `phonenumber` grows per thread exist once (a pool of blocking threads
/// would grow one set per thread, and one malloc arena each).
struct Normalizer {
    jobs: Option<std::sync::mpsc::Sender<NormalizeJob>>,
}

impl Normalizer {
    /// Starts the thread; it ends when the engine is dropped. If no thread can be started,
    /// records are normalised on the caller's task instead.
    fn start() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<NormalizeJob>();
        let spawned = std::thread::Builder::new()
            .name("contact-sync-normalize".into())
            .spawn(move || {
                let mut budget = phone_regexes::DfaBudget::new();
                while let Ok((records, region, reply)) = queue.recv() {
                    let _ = reply.send(normalize_page(&records, region));
                    budget.enforce();
                }
            });
        Self {
            jobs: spawned.ok().map(|_| jobs),
        }
    }

    /// Normalises `records`, setting each one's hash to its listed hash. `None` if the
    /// thread died with the records (a bug): the pull must then fail, not skip them.
    async fn normalize(
        &self,
        records: Vec<(RemoteRecord, i64)>,
        region: DefaultRegion,
    ) -> Option<Normalized> {
        if records.is_empty() {
            return Some((Vec::new(), 0.0));
        }
        let Some(jobs) = &self.jobs else {
            return Some(normalize_page(&records, region));
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Err(std::sync::mpsc::SendError((records, region, _))) =
            jobs.send((records, region, reply))
        {
            return Some(normalize_page(&records, region));
        }
        answer.await.ok()
    }
}

fn normalize_page(records: &[(RemoteRecord, i64)], region: DefaultRegion) -> Normalized {
    let started = Instant::now();
    let out = records
        .iter()
        .map(|(record, hash)| {
            let mut rec = normalize_record(record, region);
            rec.hash = *hash;
            rec
        })
        .collect();
    (out, started.elapsed().as_secs_f64())
}

/// The content hash of a record as the provider listed it (before normalisation), salted
/// with the default region (which decides how its phone normalises). It is what a link
/// keeps: an equal hash in the next listing means nothing changed there, so the record is
/// neither normalised nor written.
fn listed_hash(record: &RemoteRecord, salt: i64) -> i64 {
    content_hash(&record.fields, record.tags.as_ref()) ^ salt
}

/// The salt of [`listed_hash`] for a default region.
fn region_salt(region: DefaultRegion) -> i64 {
    let key = Fields::from([(String::new(), format!("{region:?}"))]);
    content_hash(&key, None)
}

impl PullOutcome {
    /// Counts a page the store applied.
    fn absorb(&mut self, (page, secs): (pull::PageOutcome, f64), seen: &mut LinkSet) {
        self.times.store += secs;
        self.matched += page.matched;
        self.conflicts += page.conflicts;
        seen.extend(page.seen);
    }
}

/// What the pull of one provider did.
#[derive(Debug, Default)]
struct PullOutcome {
    pulled: u64,
    matched: u64,
    conflicts: u64,
    gone: u64,
    complete: bool,
    pulled_now: bool,
    warning: Option<String>,
    times: StageTimes,
}
