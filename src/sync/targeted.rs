//! [`Engine::run_targeted`]: a cycle for a few records a provider told us about (webhook
//! events), through the same steps as the full cycle — read, merge
//! ([`crate::store::Store::store_page`], the page path), plan
//! ([`Engine::plan_provider`]) and push (the [`super::push::Executor`]) — for those people
//! only. The daemon runs it under the same engine lock as full cycles, so the two never
//! overlap.
//!
//! Each record costs one read of the record and, where tags are read per contact, one of
//! its tags; a record read again with nothing changed is stopped by its hash and writes
//! nothing.
//!
//! A person new to a provider that can be listed (MaiAgent, another Chatwoot account) is
//! created there in the same targeted cycle when that provider's listing completed once
//! and it can be searched by one of the person's keys ([`Creates::IfFindable`]): the
//! step is a create-unless-found ([`CycleOptions::unlisted`]), so a record made there
//! since its last listing is found and linked, never duplicated. A person it cannot be
//! searched by waits for its next complete listing, as in a full cycle whose listing of
//! it did not complete.
//!
//! A targeted cycle is a run (`trigger = webhook`): `contact-sync runs` lists it,
//! `history` names it and `undo --run` undoes it. One that changed nothing (events that
//! only echo our own writes, a record read again unchanged) is forgotten at its end, so
//! echoes leave no runs behind.

use super::failure::ProviderFailure;
use super::plan::Creates;
use super::{CycleOptions, CycleReport, Engine, ProviderReport, SyncError};
use crate::domain::RemoteRecord;
use crate::domain::merge::content_hash;
use crate::provider::{Provider, ProviderError};
use crate::store::journal::Trigger;
use crate::store::pull::FieldOwners;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Records read at once per provider.
const READ_CONCURRENCY: usize = 8;

/// A record to read: the provider instance and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookTarget {
    /// The provider instance name.
    pub provider: String,
    /// The record's id in that provider.
    pub remote_id: String,
}

/// What applying a batch of webhook events did.
#[derive(Debug, Default)]
pub struct EventsOutcome {
    /// Targets whose events showed nothing new: not read.
    pub moot: Vec<WebhookTarget>,
    /// Targets read (see [`Targeted::unread`] for those that could not be).
    pub read: Vec<WebhookTarget>,
    /// The targeted cycle.
    pub targeted: Targeted,
}

/// What a targeted cycle did.
#[derive(Debug, Default)]
pub struct Targeted {
    /// What was read, merged and pushed, per provider (as a full cycle reports it); its
    /// `run` is the run recorded, `None` when the cycle changed nothing.
    pub report: CycleReport,
    /// The targets that could not be read (a provider error, or an unknown provider):
    /// worth another try.
    pub unread: Vec<WebhookTarget>,
    /// Read requests sent (records and their tags).
    pub reads: u64,
}

impl<P: Provider> Engine<P> {
    /// Reads `targets` (deduplicated), stores them through the page path, then plans
    /// and pushes the people they belong to in every push-enabled provider. Returns what
    /// it did; a provider failing is reported, never an error.
    pub async fn run_targeted(
        &mut self,
        targets: &[WebhookTarget],
        opts: &CycleOptions,
    ) -> Result<Targeted, SyncError> {
        // Its run begins with the first record stored (a batch whose reads all failed is
        // no run), even when a full cycle before it ended early and left its run id set.
        self.run = None;
        let mut run_rows: Vec<i64> = Vec::new();
        let deadline = self.begin_cycle().await?;
        let mut reports: Vec<ProviderReport> = self
            .members
            .iter()
            .map(|m| &m.slot)
            .map(|s| ProviderReport::new(&s.settings.name, s.settings.kind.as_str()))
            .collect();
        let mut out = Targeted::default();
        let mut seen = HashSet::new();
        let targets: Vec<&WebhookTarget> = targets.iter().filter(|t| seen.insert(*t)).collect();
        for t in &targets {
            if !self
                .members
                .iter()
                .map(|m| &m.slot)
                .any(|s| s.settings.name == t.provider)
            {
                tracing::warn!(provider = %t.provider, "webhook event for a provider that is not configured; dropped");
            }
        }

        // 1. Read and store, provider by provider.
        let mut people: HashSet<i64> = HashSet::new();
        for (order, (slot, &id)) in self.members.iter().map(|m| (&m.slot, &m.id)).enumerate() {
            let wanted: Vec<String> = targets
                .iter()
                .filter(|t| t.provider == slot.settings.name)
                .map(|t| t.remote_id.clone())
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let read = read_records(&slot.client, wanted).await;
            let mut records = Vec::new();
            for (remote_id, result) in read {
                match result {
                    Ok((found, requests)) => {
                        out.reads += requests;
                        if let Some(record) = found {
                            let hash = content_hash(&record.fields, None) ^ self.region_salt;
                            records.push((record, hash));
                        } else {
                            tracing::debug!(provider = %slot.settings.name, %remote_id, "the record of a webhook event is gone; the next full cycle marks it");
                        }
                    }
                    Err((e, requests)) => {
                        out.reads += requests;
                        tracing::warn!(provider = %slot.settings.name, %remote_id, "cannot read the record of a webhook event: {e}");
                        out.unread.push(WebhookTarget {
                            provider: slot.settings.name.clone(),
                            remote_id: remote_id.clone(),
                        });
                        reports[order].last_step_failure = Some(e);
                    }
                }
            }
            if records.is_empty() {
                continue;
            }
            let remote_ids: Vec<String> =
                records.iter().map(|(r, _)| r.remote_id.clone()).collect();
            let report = &mut reports[order];
            report.counts.pulled += records.len() as u64;
            let (normalized, _) = self
                .normalizer
                .normalize(records, self.region)
                .await
                .ok_or_else(|| {
                    SyncError::Store(crate::store::StoreError::Corrupt(
                        "the normalising thread stopped".into(),
                    ))
                })?;
            if self.run.is_none() {
                let now = self.clock.now_secs();
                let prune_before = now.saturating_sub(i64::from(self.history_days) * 86_400);
                let (run, rows) = self
                    .store
                    .begin_runs(self.ids(), Trigger::Webhook, prune_before, now)
                    .await?;
                self.run = Some(run);
                run_rows = rows;
            }
            let owners = Arc::new(Mutex::new(FieldOwners::default()));
            let page = self
                .store
                .store_page(normalized, id, order, owners, self.stamp())
                .await?;
            report.counts.matched += page.matched;
            report.conflicts += page.conflicts;
            people.extend(self.store.contacts_of_records(id, remote_ids).await?);
        }

        // 2. Plan and push those people, each provider on its own.
        if !people.is_empty() && !opts.cancel.is_cancelled() {
            let listed = self.store.listed_once(self.ids()).await?;
            let people = Arc::new(people);
            let opts = CycleOptions {
                only_contacts: Some(people.clone()),
                unlisted: true,
                ..opts.clone()
            };
            let people = &*people;
            let listed = &listed;
            let this = &*self;
            let opts = &opts;
            let pushes = futures::future::join_all(
                this.members
                    .iter()
                    .map(|m| (&m.slot, &m.id))
                    .enumerate()
                    .filter(|(_, (s, _))| s.settings.push)
                    .map(|(i, (slot, &id))| async move {
                        let creates = if !slot.client.capabilities().enumerate {
                            Creates::Now
                        } else if listed[i] {
                            Creates::IfFindable(people)
                        } else {
                            Creates::Wait
                        };
                        let planned = this.plan_provider(slot, id, creates).await;
                        let outcome = match planned {
                            Ok(p) => Ok((p, this.executor(slot, id, deadline).run(opts).await)),
                            Err(e) => Err(e),
                        };
                        (i, outcome)
                    }),
            )
            .await;
            for (i, outcome) in pushes {
                let (planned, outcome) = outcome?;
                let report = &mut reports[i];
                report.counts.skipped += planned.skipped;
                report.counts += outcome.counts;
                report.write_requests += outcome.writes;
                report.planned_sends += outcome.sends;
                report.steps = outcome.steps;
                if let Some(e) = outcome.failures.last() {
                    report.last_step_failure = Some(e.clone());
                }
                if let Some(f) = outcome.failure {
                    report.fail(ProviderFailure::Push(f));
                }
            }
        }
        let run = match self.run.take() {
            Some(run) => {
                let finished = self.clock.now_secs();
                let rows = reports
                    .iter()
                    .zip(&run_rows)
                    .map(|(r, &row)| (row, r.counts.clone(), run_error(r)))
                    .collect();
                let ok = reports.iter().all(ProviderReport::ok);
                let changed = reports.iter().any(|r| {
                    let c = &r.counts;
                    c.matched
                        + c.created
                        + c.updated
                        + c.tag_changes
                        + c.failed
                        + c.deleted
                        + r.conflicts
                        > 0
                        || r.error.is_some()
                });
                let kept = self
                    .store
                    .finish_targeted_run(run, rows, ok, changed, finished)
                    .await?;
                kept.then_some(run)
            }
            None => None,
        };
        out.report = CycleReport {
            providers: reports,
            dry_run: false,
            run,
        };
        Ok(out)
    }
}

/// A provider's error in a run row, as a full cycle writes it.
fn run_error(report: &ProviderReport) -> Option<String> {
    report.error.as_ref().map(ToString::to_string).or_else(|| {
        report
            .last_step_failure
            .as_ref()
            .filter(|_| report.counts.failed > 0)
            .map(|e| format!("{} write(s) failed; last: {e}", report.counts.failed))
    })
}

impl<P: Provider> Engine<P> {
    /// Whether an event showing `fields` for `target` tells nothing new: the record's
    /// active link already holds exactly these values (our own write coming back, or a
    /// change a cycle has read since). Such an event needs no read at all.
    pub async fn event_is_known(
        &self,
        target: &WebhookTarget,
        fields: &crate::domain::Fields,
    ) -> Result<bool, crate::store::StoreError> {
        let Some(snapshot) = self
            .store
            .active_snapshot(target.provider.clone(), target.remote_id.clone())
            .await?
        else {
            return Ok(false);
        };
        Ok(event_matches_snapshot(&snapshot, fields, self.region))
    }
}

/// Whether `fields` (as an event showed a record) normalise to exactly what `snapshot`
/// holds for every field the event carries (a field it does not carry is not a change).
pub fn event_matches_snapshot(
    snapshot: &crate::domain::Fields,
    fields: &crate::domain::Fields,
    region: crate::domain::normalize::DefaultRegion,
) -> bool {
    let record = RemoteRecord {
        remote_id: String::new(),
        fields: fields.clone(),
        tags: None,
    };
    let normalized = crate::domain::merge::normalize_record(&record, region);
    crate::domain::merge::changed_fields(Some(snapshot), &normalized.fields).is_empty()
}

/// Reads each record and, where tags are read per contact, its tags, a few at once:
/// per record, `(found or not, requests)` or `(error, requests)`.
async fn read_records<P: Provider>(
    client: &P,
    remote_ids: Vec<String>,
) -> Vec<(String, ReadResult)> {
    use futures::StreamExt;
    let tags_by_id = client.capabilities().tags_read_by_id;
    let reads = remote_ids.into_iter().map(|remote_id| async move {
        let result = match client.read_record(&remote_id).await {
            Err(e) => Err((e, 1)),
            Ok(None) => Ok((None, 1)),
            Ok(Some(mut record)) if tags_by_id => match client.read_tags(&remote_id).await {
                Ok(tags) => {
                    record.tags = Some(tags);
                    Ok((Some(record), 2))
                }
                Err(e) => Err((e, 2)),
            },
            Ok(Some(record)) => Ok((Some(record), 1)),
        };
        (remote_id, result)
    });
    futures::stream::iter(reads)
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await
}

/// One record read: found (or gone) with the requests it took, or the error.
type ReadResult = Result<(Option<RemoteRecord>, u64), (ProviderError, u64)>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Fields;

    #[test]
    fn an_event_showing_what_the_link_holds_is_known() {
        let region = crate::domain::normalize::DefaultRegion::parse("US").unwrap();
        let snapshot = Fields::from([
            ("name".to_owned(), "Ann Lee".to_owned()),
            ("email".to_owned(), "ann@example.com".to_owned()),
            ("phone".to_owned(), "+14155550123".to_owned()),
        ]);
        let echo = Fields::from([
            ("name".to_owned(), " Ann Lee".to_owned()),
            ("email".to_owned(), "Ann@Example.com".to_owned()),
            ("phone".to_owned(), "+1 415 555 0123".to_owned()),
        ]);
        assert!(event_matches_snapshot(&snapshot, &echo, region));
        let mut renamed = echo.clone();
        renamed.insert("name".into(), "Ann Smith".into());
        assert!(!event_matches_snapshot(&snapshot, &renamed, region));
        let mut attr = echo;
        attr.insert("attr.plan".into(), "gold".into());
        assert!(!event_matches_snapshot(&snapshot, &attr, region));
    }
}
