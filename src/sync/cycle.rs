//! [`Engine::run_cycle`]: recover, pull, then plan and push each provider on its own.

use super::failure::ProviderFailure;
use super::push::{Executor, recover_creating};
use super::{CycleOptions, CycleReport, Engine, ProviderReport, ProviderSlot, SyncError};
use crate::provider::Provider;
use crate::store::pull::FieldOwners;
use std::sync::{Arc, Mutex};
use std::time::Instant;

impl<P: Provider> Engine<P> {
    fn executor<'a>(
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
        }
    }

    /// Runs one cycle. In dry-run the store must be a copy (the plan is persisted there
    /// as on a real run, and printed instead of sent).
    pub async fn run_cycle(&mut self, opts: &CycleOptions) -> Result<CycleReport, SyncError> {
        let now = self.clock.now_secs();
        let deadline = tokio::time::Instant::now() + self.retry_budget;
        for slot in &self.slots {
            if let Some(health) = slot.client.health() {
                health.begin_cycle(deadline);
            }
        }
        if self.ids.len() != self.slots.len() {
            let names: Vec<(String, String)> = self
                .slots
                .iter()
                .map(|s| (s.settings.name.clone(), s.settings.kind.as_str().to_owned()))
                .collect();
            self.ids = self.store.ensure_providers(names).await?;
        }
        // Review decisions written since the last cycle are carried out first.
        let can_merge: Vec<i64> = self
            .slots
            .iter()
            .zip(&self.ids)
            .filter(|(s, _)| s.client.can_merge())
            .map(|(_, &id)| id)
            .collect();
        let decided = self.store.apply_decisions(can_merge, now).await?;
        if decided.applied + decided.reopened > 0 {
            tracing::info!(
                applied = decided.applied,
                reopened = decided.reopened,
                "review decisions carried out"
            );
        }
        let mut reports: Vec<ProviderReport> = self
            .slots
            .iter()
            .map(|s| ProviderReport::new(&s.settings.name, s.settings.kind.as_str()))
            .collect();
        let run_ids = if opts.dry_run {
            Vec::new()
        } else {
            self.store.begin_runs(self.ids.clone(), now).await?
        };

        let this = &*self;
        // 1. Recover creates a crash left unanswered.
        let recoveries = futures::future::join_all(this.slots.iter().zip(&this.ids).map(
            |(slot, &id)| async move {
                let started = Instant::now();
                let result = recover_creating(&this.executor(slot, id, deadline)).await;
                (result, started.elapsed().as_secs_f64())
            },
        ))
        .await;
        for (report, (result, secs)) in reports.iter_mut().zip(recoveries) {
            report.timings.pull += secs;
            match result {
                Ok(n) => report.counts.matched += n,
                Err(e) => report.fail(ProviderFailure::Recover(e)),
            }
        }

        // 2. Pull.
        let owners = Arc::new(Mutex::new(FieldOwners::default()));
        let pulls =
            futures::future::join_all(this.slots.iter().zip(&this.ids).enumerate().map(
                |(order, (slot, &id))| this.pull_provider(slot, id, order, owners.clone(), opts),
            ))
            .await;
        let mut listing_complete = vec![false; this.slots.len()];
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
                    report.matched_by += p.matched_by;
                    report.gone += p.gone;
                    report.complete = p.complete;
                    if let Some(w) = p.warning {
                        report.warnings.push(w);
                    }
                    listing_complete[i] = p.complete;
                }
                Err(e) => report.fail(ProviderFailure::Pull(e)),
            }
        }

        // 3. Plan and push, each provider on its own: one provider's trouble never holds
        // back another's writes.
        if !opts.cancel.is_cancelled() {
            let listing_complete = &listing_complete;
            let work = futures::future::join_all(
                this.slots
                    .iter()
                    .zip(&this.ids)
                    .enumerate()
                    .filter(|(_, (s, _))| s.settings.push)
                    .map(|(i, (slot, &id))| async move {
                        let caps = slot.client.capabilities();
                        let may_create = !caps.enumerate || listing_complete[i];
                        let planning = Instant::now();
                        let planned = this.plan_provider(slot, id, may_create).await;
                        let plan_secs = planning.elapsed().as_secs_f64();
                        let pushing = Instant::now();
                        let pushed = match planned {
                            Ok(_) => Some(this.executor(slot, id, deadline).run(opts).await),
                            Err(_) => None,
                        };
                        (
                            i,
                            planned,
                            plan_secs,
                            pushed,
                            pushing.elapsed().as_secs_f64(),
                        )
                    }),
            )
            .await;
            for (i, planned, plan_secs, pushed, push_secs) in work {
                let report = &mut reports[i];
                report.timings.plan += plan_secs;
                report.timings.push += push_secs;
                match planned {
                    Ok(p) => report.counts.skipped += p.skipped,
                    Err(e) => return Err(SyncError::Store(e)),
                }
                if let Some(outcome) = pushed {
                    report.counts += outcome.counts;
                    report.write_requests += outcome.writes;
                    report.planned_sends += outcome.sends;
                    report.steps = outcome.steps;
                    report.last_step_failure = outcome.failures.last().cloned();
                    if let Some(f) = outcome.failure {
                        report.fail(ProviderFailure::Push(f));
                    }
                }
            }
        }

        // 4. Record the runs.
        if !opts.dry_run {
            let finished = self.clock.now_secs();
            for ((report, &run_id), &id) in reports.iter().zip(&run_ids).zip(&self.ids) {
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
        }
        Ok(CycleReport {
            providers: reports,
            dry_run: opts.dry_run,
        })
    }
}
