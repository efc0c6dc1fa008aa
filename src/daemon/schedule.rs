//! The daemon's scheduling: one tokio-cron-scheduler **cron** job per distinct schedule
//! (never its repeated-interval jobs, which the crate's own bug tracker reports can stop
//! firing), each
//! running a cycle that pulls the providers on that schedule and pushes to all.
//!
//! - **One cycle at a time** on the engine (a `tokio::sync::Mutex` around it).
//! - **Single-flight per provider**: a tick for a provider whose previous cycle is still
//!   running or queued is skipped, logged and counted (`contact_sync_skipped_ticks_total`).
//! - **Panics are contained**: each cycle runs in its own task; a panic is caught from the
//!   `JoinError`, logged, counted, and the provider is tried again at its next tick.
//! - **Shutdown**: [`Daemon::shutdown`] cancels the cycles' token (the engine finishes the
//!   page or push in flight and commits) and waits for them, at most a given time.

use super::health::Health;
use super::{metrics, systemd};
use crate::provider::Provider;
use crate::store::Store;
use crate::sync::{CycleOptions, Engine, EventsOutcome, Targeted, WebhookTarget};

/// The daemon's wall clock (the engine gets the same one).
fn now_secs() -> i64 {
    crate::clock::Clock::system().now_secs()
}
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The running daemon's scheduling state (shared by the cron jobs).
pub struct Daemon<P> {
    engine: Arc<tokio::sync::Mutex<Engine<P>>>,
    store: Store,
    /// Per provider (config order): whether a cycle pulling it is running or queued.
    flights: Vec<(String, AtomicBool)>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    health: Arc<Health>,
    cycles: AtomicU64,
}

/// Clears the single-flight flags of a cycle when it ends, however it ends.
struct FlightRelease<P: Provider + 'static> {
    daemon: Arc<Daemon<P>>,
    names: Vec<String>,
}

impl<P: Provider + 'static> Drop for FlightRelease<P> {
    fn drop(&mut self) {
        for (name, flag) in &self.daemon.flights {
            if self.names.contains(name) {
                flag.store(false, Ordering::SeqCst);
            }
        }
    }
}

impl<P: Provider + 'static> Daemon<P> {
    /// A daemon over `engine`; `cancel` stops the cycles (finish in-flight work, commit).
    pub fn new(engine: Engine<P>, health: Arc<Health>, cancel: CancellationToken) -> Arc<Self> {
        let store = engine.store().clone();
        let flights = engine
            .slots()
            .map(|s| (s.settings.name.clone(), AtomicBool::new(false)))
            .collect();
        Arc::new(Self {
            engine: Arc::new(tokio::sync::Mutex::new(engine)),
            store,
            flights,
            cancel,
            tracker: TaskTracker::new(),
            health,
            cycles: AtomicU64::new(0),
        })
    }

    /// The provider names, in config order.
    pub fn provider_names(&self) -> Vec<String> {
        self.flights.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Starts the first cycle: every provider pulled.
    pub fn start_initial(self: &Arc<Self>) {
        let all = self.provider_names();
        let claimed = self.claim(&all);
        self.spawn_cycle(claimed, None);
    }

    /// A schedule tick for `names`: starts a cycle pulling those of them that have no cycle
    /// running or queued; the others' ticks are skipped (logged, counted). Returns whether
    /// a cycle was started.
    pub fn tick(self: &Arc<Self>, names: &[String]) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        let claimed = self.claim(names);
        if claimed.is_empty() {
            return false;
        }
        let pull_only = Some(claimed.clone());
        self.spawn_cycle(claimed, pull_only);
        true
    }

    /// Takes the single-flight flag of each of `names` that is free.
    fn claim(&self, names: &[String]) -> Vec<String> {
        let mut claimed = Vec::new();
        for (name, flag) in &self.flights {
            if !names.contains(name) {
                continue;
            }
            if flag
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                claimed.push(name.clone());
            } else {
                tracing::warn!(provider = %name, "schedule tick skipped: the previous cycle of this provider is still running or queued");
                metrics::record_skipped_tick(name);
            }
        }
        claimed
    }

    fn spawn_cycle(self: &Arc<Self>, claimed: Vec<String>, pull_only: Option<Vec<String>>) {
        let release = FlightRelease {
            daemon: Arc::clone(self),
            names: claimed,
        };
        let this = Arc::clone(self);
        self.tracker.spawn(async move {
            let release = release;
            this.run_one(&release.names, pull_only).await;
        });
    }

    /// Waits for the engine, runs one cycle in its own task (so a panic is caught), and
    /// records the outcome.
    async fn run_one(&self, names: &[String], pull_only: Option<Vec<String>>) {
        let guard = tokio::select! {
            g = Arc::clone(&self.engine).lock_owned() => g,
            () = self.cancel.cancelled() => return,
        };
        if self.cancel.is_cancelled() {
            return;
        }
        let cycle = self.cycles.fetch_add(1, Ordering::SeqCst) + 1;
        let started_at = now_secs();
        let started = Instant::now();
        let opts = CycleOptions {
            cancel: self.cancel.clone(),
            pull_only: pull_only.clone(),
            ..CycleOptions::default()
        };
        let providers = names.join(",");
        // Both lines are logged while the engine is held: "started" and "finished" of
        // successive cycles never interleave.
        let handle = tokio::spawn(async move {
            let mut engine = guard;
            tracing::info!(cycle, providers = %providers, "cycle started");
            let result = engine.run_cycle(&opts).await;
            match &result {
                Ok(report) => tracing::info!(
                    cycle,
                    ok = report.ok(),
                    writes = report.write_requests(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    "cycle finished"
                ),
                Err(e) => tracing::error!(cycle, "cycle failed: {e}"),
            }
            result
        });
        let outcome = handle.await;
        let elapsed = started.elapsed();
        let finished_at = now_secs();
        match outcome {
            Ok(Ok(report)) => {
                metrics::record_cycle(&report, elapsed);
                let succeeded = self.health.record_cycle(
                    &report,
                    pull_only.as_deref(),
                    started_at,
                    finished_at,
                );
                for name in succeeded {
                    metrics::record_success(&name, finished_at);
                }
            }
            Ok(Err(e)) => {
                metrics::record_cycle_failure("error", elapsed);
                self.health
                    .record_failure(names, started_at, &e.to_string());
            }
            Err(join) => {
                let what = if join.is_panic() {
                    panic_message(&*join.into_panic())
                } else {
                    "the cycle task was cancelled".to_owned()
                };
                metrics::record_cycle_failure("panicked", elapsed);
                let error = format!("the cycle panicked (a bug; please report it): {what}");
                self.health.record_failure(names, started_at, &error);
                tracing::error!(cycle, providers = %names.join(","), "{error}; retried at the next tick");
            }
        }
        let store = self.store.clone();
        match store.intent_depth().await {
            Ok(depth) => metrics::record_queue(&depth),
            Err(e) => tracing::warn!("cannot read the queue depth: {e}"),
        }
        systemd::status(&status_line(&self.health.providers(), finished_at));
    }

    /// Runs a targeted cycle for webhook events under the engine lock (never beside a
    /// full cycle), in its own task so a panic is caught. Each target comes with what its
    /// events showed; a target whose every event shows what the store already holds is
    /// not read (returned as moot). `None` when cancelled before it ran, or when it failed
    /// (store error, panic): the events stay queued.
    pub async fn run_events(
        &self,
        targets: Vec<(WebhookTarget, Vec<crate::domain::Fields>)>,
    ) -> Option<EventsOutcome> {
        let guard = tokio::select! {
            g = Arc::clone(&self.engine).lock_owned() => g,
            () = self.cancel.cancelled() => return None,
        };
        if self.cancel.is_cancelled() {
            return None;
        }
        let started = Instant::now();
        let cancel = self.cancel.clone();
        let handle = tokio::spawn(async move {
            let mut engine = guard;
            let mut moot = Vec::new();
            let mut read = Vec::new();
            for (target, shown) in targets {
                let mut known = !shown.is_empty();
                for fields in &shown {
                    if !known {
                        break;
                    }
                    known = engine.event_is_known(&target, fields).await?;
                }
                if known {
                    moot.push(target);
                } else {
                    read.push(target);
                }
            }
            let opts = CycleOptions {
                cancel,
                ..CycleOptions::default()
            };
            let targeted = if read.is_empty() {
                Targeted::default()
            } else {
                engine.run_targeted(&read, &opts).await?
            };
            Ok::<_, crate::sync::SyncError>(EventsOutcome {
                moot,
                read,
                targeted,
            })
        });
        let outcome = handle.await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(Ok(out)) => {
                metrics::record_targeted(&out, elapsed);
                if !out.read.is_empty() {
                    tracing::info!(
                        run = out.targeted.report.run,
                        records = out.read.len(),
                        moot = out.moot.len(),
                        unread = out.targeted.unread.len(),
                        reads = out.targeted.reads,
                        writes = out.targeted.report.write_requests(),
                        duration_ms = elapsed.as_millis() as u64,
                        "webhook events applied"
                    );
                }
                Some(out)
            }
            Ok(Err(e)) => {
                tracing::error!("webhook events could not be applied: {e}; they stay queued");
                None
            }
            Err(join) => {
                let what = if join.is_panic() {
                    panic_message(&*join.into_panic())
                } else {
                    "the task was cancelled".to_owned()
                };
                tracing::error!(
                    "applying webhook events panicked (a bug; please report it): {what}; they stay queued"
                );
                None
            }
        }
    }

    /// Stops the cycles: cancels their token and waits for them, at most `timeout`.
    /// Returns whether everything finished in time.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// The STATUS= line after a cycle, from every provider's health (a provider not pulled in
/// this cycle keeps the state its own last cycle left):
/// `last cycle at T: support ok, sales-bot FAILING since T0 (…)`.
pub fn status_line(providers: &[super::health::ProviderHealth], finished_at: i64) -> String {
    let mut s = format!(
        "last cycle at {}:",
        crate::store::codec::rfc3339(finished_at)
    );
    for (i, p) in providers.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = match (p.failing_since, &p.last_error) {
            (Some(since), error) => write!(
                s,
                "{sep}{} FAILING since {} ({})",
                p.name,
                crate::store::codec::rfc3339(since),
                truncate(error.as_deref().unwrap_or("unknown error"), 80)
            ),
            (None, _) if p.last_success.is_none() => write!(s, "{sep}{} not synced yet", p.name),
            (None, _) => write!(s, "{sep}{} ok", p.name),
        };
    }
    s
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// Groups providers by schedule: `(cron, names)` in config order of first appearance.
pub fn schedule_groups(
    default: &str,
    providers: &[(String, Option<String>)],
) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (name, schedule) in providers {
        let cron = schedule.clone().unwrap_or_else(|| default.to_owned());
        match groups.iter_mut().find(|(c, _)| *c == cron) {
            Some((_, names)) => names.push(name.clone()),
            None => groups.push((cron, vec![name.clone()])),
        }
    }
    groups
}

/// Builds the scheduler: one cron job per schedule group, plus the systemd watchdog
/// heartbeat when `watchdog` is set (pings come from the scheduler, so a stalled
/// scheduler stops them and systemd restarts the service).
pub async fn scheduler<P: Provider + 'static>(
    daemon: &Arc<Daemon<P>>,
    groups: Vec<(String, Vec<String>)>,
    watchdog: Option<Duration>,
) -> Result<JobScheduler, String> {
    let sched = JobScheduler::new()
        .await
        .map_err(|e| format!("cannot start the scheduler: {e}"))?;
    for (cron, names) in groups {
        let d = Arc::clone(daemon);
        let job_names = names.clone();
        let job = Job::new_async(cron.as_str(), move |_id, _sched| {
            let d = Arc::clone(&d);
            let names = job_names.clone();
            Box::pin(async move {
                d.tick(&names);
            })
        })
        .map_err(|e| {
            format!(
                "schedule `{cron}` of {} cannot be scheduled: {e}",
                names.join(", ")
            )
        })?;
        sched
            .add(job)
            .await
            .map_err(|e| format!("cannot add the job for `{cron}`: {e}"))?;
        tracing::info!(schedule = %cron, providers = %names.join(","), "scheduled (cron, UTC)");
    }
    if let Some(interval) = watchdog {
        let cron = systemd::watchdog_cron(interval);
        let job = Job::new_async(cron.as_str(), |_id, _sched| {
            Box::pin(async {
                systemd::watchdog();
            })
        })
        .map_err(|e| format!("cannot schedule the watchdog heartbeat: {e}"))?;
        sched
            .add(job)
            .await
            .map_err(|e| format!("cannot add the watchdog heartbeat: {e}"))?;
        tracing::info!(schedule = %cron, "systemd watchdog heartbeat scheduled");
    }
    Ok(sched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Fields, Tags};
    use crate::provider::{
        Capabilities, Created, LookupKey, Page, ProviderError, ProviderKind, TagPage, Target,
    };
    use crate::sync::ProviderSlot;
    use std::sync::atomic::AtomicUsize;

    const CAPS: Capabilities = Capabilities {
        enumerate: true,
        lookups: &[],
        lookup_returns_fields: true,
        tags_read: false,
        tags_add: false,
        tags_on_create: false,
        tags_remove: false,
        create_finds_phone: false,
        tags_by_listing: false,
        needs_phone: false,
        phone_mutable: true,
        source_id_mutable: true,
        tags_read_by_id: false,
        delete: false,
        fields: &["name"],
        attrs: false,
        external_key: None,
    };

    /// A provider whose first listing panics (`panic_first`) or waits for `gate`.
    struct Fake {
        calls: AtomicUsize,
        panic_first: bool,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    type Res<T> = Result<T, ProviderError>;

    impl Provider for Fake {
        fn name(&self) -> &'static str {
            "a"
        }
        fn kind(&self) -> ProviderKind {
            ProviderKind::Chatwoot
        }
        fn capabilities(&self) -> &Capabilities {
            &CAPS
        }
        async fn list_page(&self, _cursor: Option<&str>) -> Res<Page> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            assert!(
                !(self.panic_first && call == 0),
                "simulated bug in a provider"
            );
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            Ok(Page::default())
        }
        async fn list_tag_names(&self) -> Res<Vec<String>> {
            Ok(Vec::new())
        }
        async fn list_tag_page(&self, _tag: &str, _cursor: Option<&str>) -> Res<TagPage> {
            Ok(TagPage::default())
        }
        async fn lookup(&self, _key: LookupKey<'_>) -> Res<Option<crate::domain::RemoteRecord>> {
            Ok(None)
        }
        async fn create(&self, _fields: &Fields, _tags: &Tags) -> Res<Created> {
            Ok(Created {
                remote_id: "1".into(),
                existed: false,
            })
        }
        async fn update(&self, _target: Target<'_>, _changes: &Fields) -> Res<()> {
            Ok(())
        }
        async fn read_tags(&self, _remote_id: &str) -> Res<Tags> {
            Ok(Tags::new())
        }
        async fn add_tags(&self, _target: Target<'_>, _add: &[String]) -> Res<()> {
            Ok(())
        }
        async fn remove_tags(&self, _target: Target<'_>, _remove: &[String]) -> Res<()> {
            Ok(())
        }
        async fn delete(&self, _remote_id: &str) -> Res<()> {
            Ok(())
        }
    }

    async fn daemon(dir: &std::path::Path, fake: Fake) -> (Arc<Daemon<Fake>>, Arc<Health>) {
        let settings = crate::config::from_toml_str(
            "[[providers]]\nname = \"a\"\nkind = \"agentalk\"\napi_key = \"k\"\n",
        )
        .unwrap();
        let store = Store::open(&dir.join("c.db")).await.unwrap();
        let slots = vec![ProviderSlot {
            settings: settings.providers[0].clone(),
            client: fake,
        }];
        let engine = Engine::new(
            store,
            slots,
            settings.default_region,
            crate::clock::Clock::system(),
        );
        let health = Arc::new(Health::new(&["a".into()], Duration::from_mins(30)));
        health.set_store_open(true);
        let d = Daemon::new(engine, Arc::clone(&health), CancellationToken::new());
        (d, health)
    }

    async fn wait_cycles(health: &Health, n: u64) {
        // Generous bound: a loaded CI machine can be slow; this is not a timing assertion.
        for _ in 0..6000 {
            if health.cycles_finished() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("cycle {n} never finished");
    }

    /// Ticks provider `a` until a tick starts a cycle (its flag is free again); `false` if
    /// none did within the (generous, not timed) bound.
    async fn tick_once_free(d: &Arc<Daemon<Fake>>) -> bool {
        for _ in 0..6000 {
            if d.tick(&["a".into()]) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_panicking_cycle_is_caught_and_the_provider_retried_next_tick() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake {
            calls: AtomicUsize::new(0),
            panic_first: true,
            gate: None,
        };
        let (d, health) = daemon(dir.path(), fake).await;
        d.start_initial();
        wait_cycles(&health, 1).await;
        let h = &health.providers()[0];
        assert!(h.failing_since.is_some());
        let error = h.last_error.clone().unwrap();
        assert!(
            error.contains("panicked") && error.contains("simulated bug"),
            "{error}"
        );
        // The flag is released (when the cycle's task ends, just after it is counted) and
        // the engine lock too: the next tick runs a cycle.
        let ticked = tick_once_free(&d).await;
        assert!(
            ticked,
            "the provider's flag was never released after the panic"
        );
        wait_cycles(&health, 2).await;
        let h = &health.providers()[0];
        assert_eq!(h.failing_since, None, "{h:?}");
        assert!(h.last_success.is_some());
        assert!(d.shutdown(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_tick_while_the_previous_cycle_runs_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let fake = Fake {
            calls: AtomicUsize::new(0),
            panic_first: false,
            gate: Some(Arc::clone(&gate)),
        };
        let (d, health) = daemon(dir.path(), fake).await;
        d.start_initial();
        // The first cycle waits in its listing: ticks now are skipped, not queued.
        assert!(!d.tick(&["a".into()]));
        assert!(!d.tick(&["a".into()]));
        gate.add_permits(1);
        wait_cycles(&health, 1).await;
        assert_eq!(health.cycles_finished(), 1, "skipped ticks queue nothing");
        // Free again (once the finished cycle's task has ended): the next tick runs.
        let ticked = tick_once_free(&d).await;
        assert!(ticked, "the provider's flag was never released");
        gate.add_permits(1);
        wait_cycles(&health, 2).await;
        assert!(d.shutdown(Duration::from_secs(5)).await);
    }

    #[test]
    fn providers_sharing_a_schedule_share_a_job() {
        let groups = schedule_groups(
            "0 */5 * * * *",
            &[
                ("a".into(), None),
                ("b".into(), Some("*/2 * * * * *".into())),
                ("c".into(), None),
            ],
        );
        assert_eq!(
            groups,
            vec![
                (
                    "0 */5 * * * *".to_owned(),
                    vec!["a".to_owned(), "c".to_owned()]
                ),
                ("*/2 * * * * *".to_owned(), vec!["b".to_owned()]),
            ]
        );
    }
}
