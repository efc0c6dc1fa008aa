//! [`Engine::run_cycle`]: recover, pull, then plan and push each provider on its own.
//! An undo ([`super::undo`]) is the same cycle with its restorations between the pulls and
//! the first plan.

use super::failure::{ExecFailure, ProviderFailure};
use super::plan::Creates;
use super::push::{ExecOutcome, Executor, recover_creating};
use super::undo::{UndoOutcome, UndoRequest};
use super::{CycleOptions, CycleReport, Engine, Member, ProviderReport, ProviderSlot, SyncError};
use crate::domain::cycle_plan::Step;
use crate::provider::{Provider, ProviderError};
use crate::store::StoreError;
use crate::store::pull::FieldOwners;
use crate::store::runs::RunCounts;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Passes after the first that carry what records found by lookups filled in.
const MAX_FILL_PASSES: usize = 2;
/// How often a provider waiting to plan looks again at the health of pulls still running.
const TROUBLE_POLL: Duration = Duration::from_millis(100);

/// Where each provider's recover-and-pull stands in this cycle.
struct PullBoard {
    finished: Vec<AtomicBool>,
    complete: Vec<AtomicBool>,
    /// Whether each provider has made its first plan of the cycle (or will make none).
    planned: Vec<AtomicBool>,
    /// How many pulls have finished; waiters subscribe to it (a first plan made bumps it
    /// too, without counting).
    count: tokio::sync::watch::Sender<usize>,
}

/// Marks a provider's first plan of the cycle as made when dropped: after it planned, or
/// on whatever path leaves its task before it plans.
struct FirstPlan<'a> {
    board: &'a PullBoard,
    i: usize,
}

impl Drop for FirstPlan<'_> {
    fn drop(&mut self) {
        self.board.planned[self.i].store(true, Ordering::SeqCst);
        self.board.count.send_modify(|_| {});
    }
}

impl PullBoard {
    fn new(n: usize) -> Self {
        PullBoard {
            finished: (0..n).map(|_| AtomicBool::new(false)).collect(),
            complete: (0..n).map(|_| AtomicBool::new(false)).collect(),
            planned: (0..n).map(|_| AtomicBool::new(false)).collect(),
            count: tokio::sync::watch::Sender::new(0),
        }
    }

    fn first_plan(&self, i: usize) -> FirstPlan<'_> {
        FirstPlan { board: self, i }
    }

    /// Provider `i` may push: every other provider that takes writes and whose pull is
    /// finished has made its first plan. So no push changes the store under another
    /// provider's first plan, and the cycle's first plans are the ones `--dry-run`
    /// prints (a provider whose pull is still in trouble is not waited for).
    fn first_plans_made<P: Provider>(&self, i: usize, members: &[Member<P>]) -> bool {
        members
            .iter()
            .map(|m| &m.slot)
            .enumerate()
            .all(|(j, slot)| {
                j == i
                    || !slot.settings.push
                    || self.planned[j].load(Ordering::SeqCst)
                    || !self.is_finished(j)
            })
    }

    fn finish(&self, i: usize, complete: bool) {
        self.complete[i].store(complete, Ordering::SeqCst);
        self.finished[i].store(true, Ordering::SeqCst);
        self.count.send_modify(|n| *n += 1);
    }

    fn is_finished(&self, i: usize) -> bool {
        self.finished[i].load(Ordering::SeqCst)
    }

    /// Whether provider `i`'s listing completed in this cycle.
    fn is_complete(&self, i: usize) -> bool {
        self.complete[i].load(Ordering::SeqCst)
    }

    fn finished_count(&self) -> usize {
        *self.count.borrow()
    }

    /// Every pull is finished or in trouble (it failed an attempt, or was cut off).
    fn settled<P: Provider>(&self, members: &[Member<P>]) -> bool {
        members
            .iter()
            .map(|m| &m.slot)
            .enumerate()
            .all(|(i, slot)| {
                self.is_finished(i)
                    || slot
                        .client
                        .health()
                        .is_some_and(|h| h.streak() > 0 || h.is_cut_off())
            })
    }

    /// Waits until `ready` holds, looking again whenever a pull finishes and every
    /// [`TROUBLE_POLL`] (a provider can fall into trouble without a pull finishing).
    async fn wait_until(&self, ready: impl Fn() -> bool) {
        let mut changed = self.count.subscribe();
        while !ready() {
            let _ = tokio::time::timeout(TROUBLE_POLL, changed.changed()).await;
        }
    }
}

/// One provider's plan-and-push rounds of a cycle, summed.
#[derive(Default)]
struct PushDone {
    plan_secs: f64,
    push_secs: f64,
    skipped: u64,
    counts: RunCounts,
    writes: u64,
    sends: u64,
    steps: Vec<Step>,
    failures: Vec<ProviderError>,
    failure: Option<ExecFailure>,
    store_error: Option<StoreError>,
    filled: u64,
}

impl PushDone {
    fn merge(&mut self, other: PushDone) {
        self.plan_secs += other.plan_secs;
        self.push_secs += other.push_secs;
        self.skipped += other.skipped;
        self.counts += other.counts;
        self.writes += other.writes;
        self.sends += other.sends;
        self.steps.extend(other.steps);
        self.failures.extend(other.failures);
        self.filled += other.filled;
        if self.failure.is_none() {
            self.failure = other.failure;
        }
        if self.store_error.is_none() {
            self.store_error = other.store_error;
        }
    }

    fn add(&mut self, outcome: ExecOutcome) {
        self.filled += outcome.filled;
        self.counts += outcome.counts;
        self.writes += outcome.writes;
        self.sends += outcome.sends;
        self.steps.extend(outcome.steps);
        self.failures.extend(outcome.failures);
        if self.failure.is_none() {
            self.failure = outcome.failure;
        }
    }
}

impl<P: Provider> Engine<P> {
    pub(super) fn executor<'a>(
        &'a self,
        slot: &'a ProviderSlot<P>,
        provider_id: i64,
        deadline: tokio::time::Instant,
    ) -> Executor<'a, P> {
        Executor {
            store: &self.store,
            slot,
            provider_id,
            region: self.region,
            propagate_deletes: self.propagate_deletes,
            deadline,
            budget: self.retry_budget,
            now: self.clock.as_fn(),
            run: self.run,
        }
    }

    /// Runs one cycle. In dry-run the store must be a copy (the plan is persisted there
    /// as on a real run, and printed instead of sent).
    pub async fn run_cycle(&mut self, opts: &CycleOptions) -> Result<CycleReport, SyncError> {
        Ok(self.cycle(opts, None).await?.0)
    }

    /// One cycle; with `undo`, the run it names is put back once every pull has finished
    /// and before any provider plans, so the restored values go out through the same plan
    /// and executor in this run.
    pub(super) async fn cycle(
        &mut self,
        opts: &CycleOptions,
        undo: Option<&UndoRequest>,
    ) -> Result<(CycleReport, Option<UndoOutcome>), SyncError> {
        let now = self.clock.now_secs();
        let deadline = self.begin_cycle().await?;
        let mut reports: Vec<ProviderReport> = self
            .members
            .iter()
            .map(|m| &m.slot)
            .map(|s| ProviderReport::new(&s.settings.name, s.settings.kind.as_str()))
            .collect();
        // A dry run records its run too: its store is a copy, and an undo's dry run must
        // see the changes its pull finds as later than the run it undoes.
        let prune_before = now.saturating_sub(i64::from(self.history_days) * 86_400);
        let trigger = match undo {
            Some(u) => crate::store::journal::Trigger::Undo(u.run),
            None => crate::store::journal::Trigger::Cycle,
        };
        let (run, run_ids) = self
            .store
            .begin_runs(self.ids(), trigger, prune_before, now)
            .await?;
        self.run = Some(run);
        // Review decisions written since the last cycle are carried out first (journaled
        // in this run).
        let can_merge: Vec<i64> = self
            .members
            .iter()
            .map(|m| (&m.slot, &m.id))
            .filter(|(s, _)| s.client.can_merge())
            .map(|(_, &id)| id)
            .collect();
        let stamp = crate::store::journal::Stamp {
            run: Some(run),
            at: now,
        };
        let decided = self.store.apply_decisions(can_merge, stamp).await?;
        if decided.applied + decided.reopened > 0 {
            tracing::info!(
                applied = decided.applied,
                reopened = decided.reopened,
                "review decisions carried out"
            );
        }

        let this = &*self;
        let board = PullBoard::new(this.members.len());
        let board = &board;
        let owners = Arc::new(Mutex::new(FieldOwners::default()));
        // An undo puts the run's values back once, when every pull has finished, before
        // the first provider plans.
        let undo_cell = tokio::sync::OnceCell::new();
        let undo_once = &undo_cell;
        let put_back = || async move {
            match undo {
                Some(request) if !opts.cancel.is_cancelled() => {
                    Some(this.put_back(request).await.map_err(|e| e.to_string()))
                }
                _ => None,
            }
        };

        // 1–2. Each provider on its own: recover the creates a crash left unanswered,
        // then pull.
        let pulls = futures::future::join_all(
            this.members
                .iter()
                .map(|m| (&m.slot, &m.id))
                .enumerate()
                .map(|(order, (slot, &id))| {
                    let owners = owners.clone();
                    async move {
                        let started = Instant::now();
                        let recovered = recover_creating(&this.executor(slot, id, deadline)).await;
                        let recover_secs = started.elapsed().as_secs_f64();
                        let pulled = this.pull_provider(slot, id, order, owners, opts).await;
                        board.finish(order, matches!(&pulled, Ok(p) if p.complete));
                        (recovered, recover_secs, pulled)
                    }
                }),
        );

        // 3. Plan and push, each provider on its own: one provider's trouble never holds
        // back another's writes. A provider plans once its own pull is done and every
        // other pull is done or in trouble (a failed attempt); a pull in trouble that
        // completes later in the cycle brings another round, so what it read still goes
        // out in this run.
        let pushes = futures::future::join_all(
            this.members
                .iter()
                .map(|m| (&m.slot, &m.id))
                .enumerate()
                .filter(|(_, (s, _))| s.settings.push)
                .map(|(i, (slot, &id))| async move {
                    let mut done = PushDone::default();
                    let mut first_plan = Some(board.first_plan(i));
                    board.wait_until(|| board.is_finished(i)).await;
                    if undo.is_some() {
                        board
                            .wait_until(|| board.finished_count() == this.members.len())
                            .await;
                        if let Some(Err(_)) = undo_once.get_or_init(put_back).await {
                            return (i, done);
                        }
                    }
                    loop {
                        board.wait_until(|| board.settled(&this.members)).await;
                        let seen = board.finished_count();
                        if opts.cancel.is_cancelled() {
                            break;
                        }
                        let caps = slot.client.capabilities();
                        let may_create = !caps.enumerate || board.is_complete(i);
                        let planning = Instant::now();
                        let planned = this
                            .plan_provider(slot, id, Creates::when(may_create))
                            .await;
                        match planned {
                            Ok(p) => done.skipped += p.skipped,
                            Err(e) => {
                                done.store_error = Some(e);
                                break;
                            }
                        }
                        if first_plan.take().is_some() {
                            board
                                .wait_until(|| board.first_plans_made(i, &this.members))
                                .await;
                        }
                        done.plan_secs += planning.elapsed().as_secs_f64();
                        let pushing = Instant::now();
                        let outcome = this.executor(slot, id, deadline).run(opts).await;
                        done.push_secs += pushing.elapsed().as_secs_f64();
                        let stopped = outcome.failure.is_some();
                        done.add(outcome);
                        if stopped {
                            break;
                        }
                        if board.finished_count() == seen {
                            if seen == this.members.len() {
                                break;
                            }
                            board.wait_until(|| board.finished_count() > seen).await;
                        }
                    }
                    (i, done)
                }),
        );
        let (pulls, mut pushes) = futures::future::join(pulls, pushes).await;
        // No provider takes writes: the undo still puts the values back in the store.
        undo_once.get_or_init(put_back).await;
        let undone = match undo_cell.into_inner().flatten() {
            Some(Err(e)) => return Err(SyncError::Undo(e)),
            Some(Ok(outcome)) => Some(outcome),
            None => None,
        };

        // 4. Records found by lookups fill their contacts' gaps (an email only a lookup-only
        // platform held, its tags): one more plan-and-push pass carries that to the others
        // in this same run.
        for _ in 0..MAX_FILL_PASSES {
            let filled: u64 = pushes.iter().map(|(_, d)| d.filled).sum();
            if filled == 0 || opts.cancel.is_cancelled() || opts.dry_run {
                break;
            }
            tracing::debug!(
                filled,
                "records found by lookup filled contacts; one more pass"
            );
            for (_, done) in &mut pushes {
                done.filled = 0;
            }
            let more = futures::future::join_all(pushes.iter().map(|(i, done)| {
                let i = *i;
                let stopped = done.failure.is_some() || done.store_error.is_some();
                async move {
                    let mut again = PushDone::default();
                    if stopped {
                        return again;
                    }
                    let (slot, id) = (&this.members[i].slot, this.members[i].id);
                    let caps = slot.client.capabilities();
                    let may_create = !caps.enumerate || board.is_complete(i);
                    let planning = Instant::now();
                    let planned = this
                        .plan_provider(slot, id, Creates::when(may_create))
                        .await;
                    again.plan_secs += planning.elapsed().as_secs_f64();
                    match planned {
                        Ok(p) => again.skipped += p.skipped,
                        Err(e) => {
                            again.store_error = Some(e);
                            return again;
                        }
                    }
                    let pushing = Instant::now();
                    let outcome = this.executor(slot, id, deadline).run(opts).await;
                    again.push_secs += pushing.elapsed().as_secs_f64();
                    again.add(outcome);
                    again
                }
            }))
            .await;
            for ((_, done), again) in pushes.iter_mut().zip(more) {
                done.merge(again);
            }
        }

        for (report, (recovered, recover_secs, pulled)) in reports.iter_mut().zip(pulls) {
            report.timings.pull += recover_secs;
            match recovered {
                Ok(n) => report.counts.matched += n,
                Err(e) => report.fail(ProviderFailure::Recover(e)),
            }
            match pulled {
                Ok(p) if !p.pulled_now => {}
                Ok(p) => {
                    report.timings.fetch += p.times.fetch;
                    report.timings.normalize += p.times.normalize;
                    report.timings.store += p.times.store;
                    report.timings.pull += p.times.pull;
                    report.counts.pulled += p.pulled;
                    report.counts.matched += p.matched;
                    report.conflicts += p.conflicts;
                    report.matched_by += p.matched_by;
                    report.gone += p.gone;
                    report.complete = p.complete;
                    if let Some(w) = p.warning {
                        report.warnings.push(w);
                    }
                }
                Err(e) => report.fail(ProviderFailure::Pull(e)),
            }
        }
        for (i, done) in pushes {
            let report = &mut reports[i];
            report.timings.plan += done.plan_secs;
            report.timings.push += done.push_secs;
            report.counts.skipped += done.skipped;
            if let Some(e) = done.store_error {
                return Err(SyncError::Store(e));
            }
            report.counts += done.counts;
            report.write_requests += done.writes;
            report.planned_sends += done.sends;
            report.steps = done.steps;
            report.last_step_failure = done.failures.last().cloned();
            if let Some(f) = done.failure {
                report.fail(ProviderFailure::Push(f));
            }
        }

        // 5. Record the runs.
        {
            let finished = self.clock.now_secs();
            for ((report, &run_id), &id) in reports
                .iter()
                .zip(&run_ids)
                .zip(self.members.iter().map(|m| &m.id))
            {
                let error = report.error.as_ref().map(ToString::to_string).or_else(|| {
                    report
                        .last_step_failure
                        .as_ref()
                        .filter(|_| report.counts.failed > 0)
                        .map(|e| format!("{} write(s) failed; last: {e}", report.counts.failed))
                });
                self.store
                    .finish_run(
                        run_id,
                        id,
                        report.counts.clone(),
                        error,
                        report.complete,
                        finished,
                    )
                    .await?;
            }
            let ok = reports.iter().all(ProviderReport::ok);
            self.store.finish_cycle(run, ok, finished).await?;
        }
        self.run = None;
        Ok((
            CycleReport {
                providers: reports,
                dry_run: opts.dry_run,
                run: Some(run),
            },
            undone,
        ))
    }
}
