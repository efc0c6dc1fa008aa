//! The normalising thread: one thread, owned by the engine, turns listed records into
//! normalised ones (phones to E.164, emails lower-cased) while the next page is fetched
//! and the previous one stored.

use super::phone_regexes;
use crate::domain::RemoteRecord;
use crate::domain::merge::{NormalizedRecord, normalize_record};
use crate::domain::normalize::DefaultRegion;
use std::time::Instant;

/// Normalised records of a page and the seconds normalising took.
pub(super) type Normalized = (Vec<NormalizedRecord>, f64);

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
pub(super) struct Normalizer {
    jobs: Option<std::sync::mpsc::Sender<NormalizeJob>>,
}

impl Normalizer {
    /// Starts the thread; it ends when the engine is dropped. If no thread can be started,
    /// records are normalised on the caller's task instead.
    pub(super) fn start() -> Self {
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
    pub(super) async fn normalize(
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
