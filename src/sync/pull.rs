//! Pulling one provider: its listing page by page, in a pipeline (the pages queued so far
//! stored while the next is probed and normalised and the one after it fetched), each page
//! applied whole in one store transaction (pages that queued up while the writer was busy
//! share one);
//! then the end of a complete listing (gone links, the delete guard, propagated deletes)
//! and, for providers whose tags are read by listing them, the tags.

use super::failure::PullFailure;
use super::report::StageTimes;
use super::{CycleOptions, DELETE_GUARD_PERCENT, Engine, ProgressEvent, ProviderSlot, listing};
use crate::domain::merge::{NormalizedRecord, content_hash};
use crate::domain::normalize::DefaultRegion;
use crate::domain::{Fields, RemoteRecord, Tags};
use crate::provider::Provider;
use crate::store::StoreError;
use crate::store::pull::{self, FieldOwners, LinkSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Times a listing that changed under its cursor is restarted in one cycle.
const MAX_LISTING_RESTARTS: u32 = 2;

/// Normalised pages waiting for the writer, at most.
const PAGES_QUEUED: usize = 8;

/// Records the writer applies in one transaction, about: the pages queued when it is free
/// again, up to this many (a page is never split).
const BATCH_RECORDS: usize = 1_000;

impl<P: Provider> Engine<P> {
    /// Pulls one provider: its whole listing, page by page (a store transaction per batch of
    /// queued pages), then the end of the listing (gone links, propagated deletes) and its tags.
    pub(super) async fn pull_provider(
        &self,
        slot: &ProviderSlot<P>,
        provider_id: i64,
        order: usize,
        owners: Arc<Mutex<FieldOwners>>,
        opts: &CycleOptions,
    ) -> Result<PullOutcome, PullFailure> {
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
        let mut restarts = 0;
        let name = name.clone();
        // A pipeline: while the store applies the pages queued so far (in one
        // transaction), the next page is probed and normalised (on the engine's
        // normalising thread) and the one after it fetched and decoded (with up to
        // `listing::PAGES_AHEAD` pages requested at once when they are numbered). When the
        // writer is the slower stage, pages queue up and are committed together.
        let (queue, mut queued) = tokio::sync::mpsc::channel::<Vec<NormalizedRecord>>(PAGES_QUEUED);
        let mut stored_seen = LinkSet::new();
        // A provider without active links (its first import) has no unchanged record:
        // the pages go to the writer without a probe each.
        let mut probe = self
            .store
            .any_active_link(provider_id)
            .await?
            .then(pull::ProbeCursor::default);
        let listing_pages = async {
            let queue = queue;
            let mut listing = listing::Listing::new(&slot.client);
            let mut fetched = listing.first().await;
            loop {
                if opts.cancel.is_cancelled() {
                    return Ok(());
                }
                out.times.fetch += fetched.1;
                let page = match fetched.0 {
                    Ok(p) => p,
                    Err(e) if e.restart_listing() && restarts < MAX_LISTING_RESTARTS => {
                        // The listing changed under the cursor (MaiAgent answers "Invalid
                        // page." when contacts were deleted during the scan): start again
                        // (pages already queued are stored: what they show was listed).
                        tracing::info!(provider = %name, "listing changed during the scan; restarting it");
                        restarts += 1;
                        listing.restart();
                        fetched = listing.first().await;
                        continue;
                    }
                    Err(e) => return Err(PullFailure::Provider(e)),
                };
                out.pulled += page.records.len() as u64;
                if let Some(progress) = &opts.progress {
                    progress.emit(ProgressEvent::PagePulled {
                        provider: name.clone(),
                        records: page.records.len() as u64,
                    });
                }
                // The next page is fetched while this one is probed and normalised: a
                // cycle over unchanged data is then bound by the listing alone, not by
                // the listing plus the probe.
                let next = page.next;
                let fetching = listing.next(next.as_deref());
                let working = async {
                    let probing = Instant::now();
                    let changed = self
                        .unchanged_filter(page.records, provider_id, &mut probe, &mut seen)
                        .await?;
                    let probe_secs = probing.elapsed().as_secs_f64();
                    let normalized = self.normalizer.normalize(changed, self.region).await;
                    Ok::<_, StoreError>((probe_secs, normalized))
                };
                let (worked, next_page) = tokio::join!(working, fetching);
                let (probe_secs, normalized) = worked?;
                out.times.store += probe_secs;
                let (normalized, secs) = normalized.ok_or(PullFailure::Normalizer)?;
                out.times.normalize += secs;
                // The writer stopped (it failed): its error is the pull's.
                if !normalized.is_empty() && queue.send(normalized).await.is_err() {
                    return Ok(());
                }
                match next_page {
                    Some(next_page) => fetched = next_page,
                    None => return Ok(()),
                }
            }
        };
        let storing_pages = async {
            let mut tally = StoredPages::default();
            while let Some(first) = queued.recv().await {
                let mut records = first.len();
                let mut pages = vec![first];
                while records < BATCH_RECORDS {
                    let Ok(page) = queued.try_recv() else { break };
                    records += page.len();
                    pages.push(page);
                }
                let started = Instant::now();
                let outcomes = self
                    .store
                    .store_pages(pages, provider_id, order, Arc::clone(&owners), self.stamp())
                    .await?;
                tally.secs += started.elapsed().as_secs_f64();
                for page in outcomes {
                    tally.absorb(page, &mut stored_seen);
                }
            }
            Ok::<_, PullFailure>(tally)
        };
        let (listed, stored) = tokio::join!(listing_pages, storing_pages);
        if let Some(cursor) = &probe {
            let (ranged, looked_up) = cursor.counts();
            tracing::debug!(
                provider = %name,
                ranged,
                looked_up,
                "unchanged-probe: listed records found in ranges of links, and looked up one by one"
            );
        }
        let stored = stored?;
        listed?;
        out.times.store += stored.secs;
        out.matched += stored.matched;
        out.matched_by += stored.matched_by;
        out.conflicts += stored.conflicts;
        seen.union(&stored_seen);
        if opts.cancel.is_cancelled() {
            return Ok(out);
        }
        out.complete = true;
        let seen = Arc::new(seen);
        let storing = Instant::now();
        let end = self
            .store
            .finish_listing(
                provider_id,
                Arc::clone(&seen),
                DELETE_GUARD_PERCENT,
                self.propagate_deletes,
                self.stamp(),
            )
            .await?;
        let (marked, refused) = (end.gone, end.held_back);
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
                .await?;
        }
        out.times.pull = started.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Sorts a listed page: records whose content hash equals the one their active link
    /// keeps need nothing at all (not even normalising) and only go into `seen`; the
    /// others come back with their hash, to be normalised and applied. Without `probe`
    /// (the provider has no active link) every record comes back, and the store is not
    /// asked; with it, it is the listing's probe cursor, moved along.
    async fn unchanged_filter(
        &self,
        records: Vec<RemoteRecord>,
        provider_id: i64,
        probe: &mut Option<pull::ProbeCursor>,
        seen: &mut LinkSet,
    ) -> Result<Vec<(RemoteRecord, i64)>, StoreError> {
        let Some(cursor) = probe.as_mut() else {
            return Ok(records
                .into_iter()
                .map(|r| {
                    let hash = listed_hash(&r, self.region_salt);
                    (r, hash)
                })
                .collect());
        };
        // The remote ids go to the writer and come back (moved, not copied).
        let mut records = records;
        let listed: Vec<(String, i64)> = records
            .iter_mut()
            .map(|r| {
                let hash = listed_hash(r, self.region_salt);
                (std::mem::take(&mut r.remote_id), hash)
            })
            .collect();
        let (listed, unchanged, moved) = self
            .store
            .unchanged_links(provider_id, listed, std::mem::take(cursor))
            .await?;
        *cursor = moved;
        let mut changed = Vec::new();
        for ((mut record, (remote_id, hash)), link) in
            records.into_iter().zip(listed).zip(unchanged)
        {
            match link {
                Some(link_id) => seen.insert(link_id),
                None => {
                    record.remote_id = remote_id;
                    changed.push((record, hash));
                }
            }
        }
        Ok(changed)
    }

    async fn pull_tags(
        &self,
        slot: &ProviderSlot<P>,
        provider_id: i64,
        seen: Arc<LinkSet>,
        opts: &CycleOptions,
        times: &mut StageTimes,
    ) -> Result<(), PullFailure> {
        let fetching = Instant::now();
        let names = slot.client.list_tag_names().await?;
        times.fetch += fetching.elapsed().as_secs_f64();
        let universe: Tags = names.iter().collect();
        self.store.begin_tag_staging(provider_id).await?;
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
                let ids = page.remote_ids;
                let staging = async {
                    let started = Instant::now();
                    let staged = self
                        .store
                        .stage_tag_page(provider_id, tag.clone(), ids)
                        .await;
                    (staged, started.elapsed().as_secs_f64())
                };
                let ((staged, secs), next) =
                    tokio::join!(staging, listing.next(page.next.as_deref()));
                times.store += secs;
                staged?;
                match next {
                    Some(f) => fetched = f,
                    None => break,
                }
            }
        }
        let storing = Instant::now();
        self.store
            .apply_staged_tags(provider_id, universe, seen, self.stamp())
            .await?;
        times.store += storing.elapsed().as_secs_f64();
        Ok(())
    }
}

/// The content hash of a record as the provider listed it (before normalisation), salted
/// with the default region (which decides how its phone normalises). It is what a link
/// keeps: an equal hash in the next listing means nothing changed there, so the record is
/// neither normalised nor written.
fn listed_hash(record: &RemoteRecord, salt: i64) -> i64 {
    content_hash(&record.fields, record.tags.as_ref()) ^ salt
}

/// The salt of [`listed_hash`] for a default region.
pub(super) fn region_salt(region: DefaultRegion) -> i64 {
    let key = Fields::from([(String::new(), format!("{region:?}"))]);
    content_hash(&key, None)
}

/// What the writer did with the pages of one listing.
#[derive(Debug, Default)]
struct StoredPages {
    secs: f64,
    matched: u64,
    matched_by: crate::domain::matching::MatchCounts,
    conflicts: u64,
}

impl StoredPages {
    fn absorb(&mut self, page: pull::PageOutcome, seen: &mut LinkSet) {
        self.matched += page.matched;
        self.matched_by += page.matched_by;
        self.conflicts += page.conflicts;
        seen.extend(page.seen);
    }
}

/// What the pull of one provider did.
#[derive(Debug, Default)]
pub(super) struct PullOutcome {
    pub(super) pulled: u64,
    pub(super) matched: u64,
    pub(super) matched_by: crate::domain::matching::MatchCounts,
    pub(super) conflicts: u64,
    pub(super) gone: u64,
    pub(super) complete: bool,
    pub(super) pulled_now: bool,
    pub(super) warning: Option<String>,
    pub(super) times: StageTimes,
}
