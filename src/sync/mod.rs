//! One sync cycle, level-triggered: every cycle recomputes what is needed.
//!
//! 1. **Recover** ([`push::recover_creating`]): links left `creating` by a crash are
//!    resolved by lookup before anything else, so a create is never sent twice.
//! 2. **Pull** ([`pull`]) every provider that can enumerate, concurrently, one store
//!    transaction per page: only what changed in a provider since its snapshot reaches the
//!    golden record; unlinked records are matched (link → source id → phone → email) or
//!    held as conflicts. After a complete listing, missing records are marked `gone`
//!    (20 % guard) and, with `propagate_deletes`, their contacts deleted — one transaction.
//! 3. **Plan** ([`plan`]): every contact changed since the provider's watermark is planned
//!    ([`crate::domain::plan`], pure) and the writes are persisted as intents.
//! 4. **Push** ([`push`]): each provider's due intents — this cycle's and the retries
//!    queued by earlier ones — become the steps of the cycle plan
//!    ([`crate::domain::cycle_plan`], pure), which the executor runs exactly as written,
//!    each provider on its own, retrying transient failures within `sync.retry_budget`.
//!    `--dry-run` prints the same steps instead of running them.
//!
//! Everything kept per provider (listing state, tag staging, pacing, health, links)
//! belongs to the provider *instance* (its `name`), never to its kind.

mod cycle;
pub mod failure;
pub mod listing;
mod normalizer;
pub mod phone_regexes;
pub mod plan;
pub mod pull;
pub mod push;
pub mod report;
mod targeted;
pub mod undo;

use crate::clock::Clock;
use crate::config::ProviderSettings;
use crate::domain::Fields;
use crate::domain::normalize::DefaultRegion;
use crate::domain::plan::ProviderShape;
use crate::provider::{Capabilities, LookupKey, LookupKind, Provider};
use crate::store::{Store, StoreError};
pub use failure::ProviderFailure;
use normalizer::Normalizer;
pub use report::{CycleReport, ProviderReport, StageTimes};
use std::sync::Arc;
pub use targeted::{EventsOutcome, Targeted, WebhookTarget};
use tokio_util::sync::CancellationToken;

/// Contacts planned per store read. Each batch holds whole contacts (fields, tags, the
/// link's snapshot) and every provider plans at once, so the batch bounds the peak memory
/// of planning: 4 providers × 2,000 contacts added ~20 MiB to the peak RSS of a
/// four-provider import; 500 keeps it near what one provider planning alone used.
const PLAN_BATCH: usize = 500;
/// At most this share (percent) of a provider's links may be marked gone at once.
pub const DELETE_GUARD_PERCENT: u64 = 20;
/// The default `sync.retry_budget`.
pub const DEFAULT_RETRY_BUDGET: std::time::Duration = std::time::Duration::from_mins(2);
/// The default `store.history_days`.
pub const DEFAULT_HISTORY_DAYS: u32 = 90;
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
    /// Keep every step of the plan in the report (not only the first few); dry-run
    /// always does.
    pub record_steps: bool,
    /// Push only the intents of these contacts (a targeted cycle); `None` pushes every
    /// due intent.
    pub only_contacts: Option<Arc<std::collections::HashSet<i64>>>,
    /// No listing is read in this cycle (a targeted cycle): a create in a provider that
    /// can be listed searches the contact's keys first, as in a lookup-only provider.
    pub unlisted: bool,
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
    /// Putting a run's values back failed (nothing of it was applied).
    #[error("the undo could not put the values back: {0}")]
    Undo(String),
}

/// One provider of the engine: its slot and its row in the store.
pub(crate) struct Member<P> {
    /// Its config and client.
    pub(crate) slot: ProviderSlot<P>,
    /// Its `providers` row, registered by the first cycle ([`Engine::begin_cycle`]).
    pub(crate) id: i64,
}

/// The engine: the store plus the providers of this cycle, in config order.
pub struct Engine<P> {
    store: Store,
    members: Vec<Member<P>>,
    /// Whether the members' store rows are registered (their `id`s are known).
    registered: bool,
    region: DefaultRegion,
    region_salt: i64,
    normalizer: Normalizer,
    /// `sync.propagate_deletes`: a contact deleted in one provider is deleted in the others.
    propagate_deletes: bool,
    /// `sync.retry_budget`: how long one cycle keeps retrying transient failures.
    retry_budget: std::time::Duration,
    /// The wall clock, handed in by the owner of the engine.
    clock: Clock,
    /// `store.history_days`: journal entries older than this are pruned.
    history_days: u32,
    /// The run (cycle) in progress, which journal entries are stamped with.
    run: Option<i64>,
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

/// The lookups to try for a record we hold, in the provider's order (`caps.lookups`,
/// the same order the cycle plan prints them in).
pub fn lookup_keys<'a>(caps: &Capabilities, fields: &'a Fields) -> Vec<LookupKey<'a>> {
    let mut keys = Vec::new();
    for &kind in caps.lookups {
        let (name, make): (&str, fn(&'a str) -> LookupKey<'a>) = match kind {
            LookupKind::SourceId => (crate::domain::field::SOURCE_ID, LookupKey::SourceId),
            LookupKind::Phone => (crate::domain::field::PHONE, LookupKey::Phone),
            LookupKind::Email => (crate::domain::field::EMAIL, LookupKey::Email),
        };
        if let Some(v) = fields.get(name).filter(|v| !v.is_empty()) {
            keys.push(make(v.as_str()));
        }
    }
    keys
}

impl<P: Provider> Engine<P> {
    /// Starts a cycle (full or targeted): the retry deadline, each provider's health reset
    /// to it, and the providers' store rows ensured. Returns the deadline.
    pub(super) async fn begin_cycle(&mut self) -> Result<tokio::time::Instant, SyncError> {
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        for m in &self.members {
            if let Some(health) = m.slot.client.health() {
                health.begin_cycle(deadline);
            }
        }
        if !self.registered {
            let names: Vec<(String, String)> = self
                .members
                .iter()
                .map(|m| {
                    let s = &m.slot.settings;
                    (s.name.clone(), s.kind.as_str().to_owned())
                })
                .collect();
            let ids = self.store.ensure_providers(names).await?;
            for (m, id) in self.members.iter_mut().zip(ids) {
                m.id = id;
            }
            self.registered = true;
        }
        Ok(deadline)
    }

    /// The providers' store rows, in config order.
    fn ids(&self) -> Vec<i64> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// An engine over `store` for `slots` (config order decides same-cycle conflicts),
    /// stamping runs, links and intents with `clock` (the caller's: the engine reads no
    /// clock of its own).
    pub fn new(
        store: Store,
        slots: Vec<ProviderSlot<P>>,
        region: DefaultRegion,
        clock: Clock,
    ) -> Self {
        phone_regexes::enlarge_cache();
        Self {
            store,
            members: slots
                .into_iter()
                .map(|slot| Member { slot, id: 0 })
                .collect(),
            registered: false,
            region,
            region_salt: pull::region_salt(region),
            normalizer: Normalizer::start(),
            propagate_deletes: false,
            retry_budget: DEFAULT_RETRY_BUDGET,
            clock,
            history_days: DEFAULT_HISTORY_DAYS,
            run: None,
        }
    }

    /// Sets `store.history_days` (default 90): journal entries older than this many days
    /// are pruned when a run begins.
    #[must_use]
    pub fn with_history_days(mut self, days: u32) -> Self {
        self.history_days = days;
        self
    }

    /// The journal stamp of something happening now in the run in progress.
    fn stamp(&self) -> crate::store::journal::Stamp {
        crate::store::journal::Stamp {
            run: self.run,
            at: self.clock.now_secs(),
        }
    }

    /// Sets `sync.propagate_deletes` (off by default): a contact deleted in one provider is
    /// then deleted in every other provider that holds it and can delete.
    #[must_use]
    pub fn with_propagate_deletes(mut self, on: bool) -> Self {
        self.propagate_deletes = on;
        self
    }

    /// Sets `sync.retry_budget` (default two minutes): how long one cycle keeps retrying
    /// transient failures before it leaves them for the next cycle.
    #[must_use]
    pub fn with_retry_budget(mut self, budget: std::time::Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The providers.
    pub fn slots(&self) -> impl Iterator<Item = &ProviderSlot<P>> {
        self.members.iter().map(|m| &m.slot)
    }
}
