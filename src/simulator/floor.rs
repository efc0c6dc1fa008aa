//! The call floor: the least number of requests each simulated provider's API allows for
//! a first import of a seeded population, computed from the seed alone (not from what the
//! engine did), so the benchmark and the tests can hold the engine's request counts
//! against it.
//!
//! What every person ends up as after a first import (the golden record) follows from the
//! seed: one name, the phone, an email if any provider holding them has one, and the union
//! of the tags they carry anywhere (compared case-insensitively; after the import the
//! providers carry the union of those shown by a provider's API). Each provider states its
//! own floor for one person ([`super::SimulatedProvider::import_floor`]) and for reading
//! its whole listing ([`super::SimulatedProvider::listing_floor`]); this module walks the
//! population and the registry and adds them up.

use std::collections::{BTreeMap, BTreeSet};

use super::PROVIDERS;
use super::seed::{self, Person as Seeded};

/// Requests of one provider, split as the simulators count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Reads (`GET`).
    pub reads: u64,
    /// Writes (everything else).
    pub writes: u64,
}

impl std::ops::AddAssign for Requests {
    fn add_assign(&mut self, other: Requests) {
        self.reads += other.reads;
        self.writes += other.writes;
    }
}

impl Requests {
    /// Reads plus writes.
    pub fn total(self) -> u64 {
        self.reads + self.writes
    }
}

/// One person, as one provider's floor sees them.
#[derive(Debug)]
pub struct FloorPerson<'a> {
    /// The sync can know them: a provider that can be listed holds them.
    pub known: bool,
    /// Their phone (E.164), if any.
    pub phone: Option<&'a str>,
    /// The email the golden record ends with (lower-cased), if any.
    pub email: Option<&'a str>,
    /// The tags the golden record ends with (lower-cased keys).
    pub tags: &'a BTreeSet<String>,
    /// How this provider holds them, if it does.
    pub held: Option<&'a Seeded>,
}

impl FloorPerson<'_> {
    /// The provider holds them without the golden record's email.
    pub fn lacks_email(&self) -> bool {
        self.held
            .is_some_and(|h| self.email.is_some() && h.email_key().is_none())
    }

    /// The tags of the golden record the provider's copy lacks.
    pub fn missing_tags(&self) -> usize {
        let Some(held) = self.held else {
            return self.tags.len();
        };
        let has: BTreeSet<String> = held.tags.iter().map(|t| t.to_lowercase()).collect();
        self.tags.difference(&has).count()
    }
}

/// The floor of one provider for a first import of the first `people` of `seed`'s
/// population into an empty store, and for the cycles after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Floor {
    /// First import into an empty store.
    pub import: Requests,
    /// A cycle after the import in which nothing changed: one whole listing of what the
    /// provider holds then (every person a listable provider holds, with the union of
    /// their tags), no write; nothing for a provider that cannot be listed (its people are
    /// linked). [`super::RunningProvider::listing_floor`] gives the same from what a
    /// running provider holds.
    pub no_change: Requests,
}

impl Floor {
    /// A cycle after the import in which `changed` people had their name changed in
    /// another provider: the listing of [`Floor::no_change`] plus, per changed person,
    /// one update if this provider holds them after the import (a provider that can be
    /// listed holds every person known; one that cannot, every such person with a phone).
    /// `changed` yields, per changed person, whether they have a phone.
    pub fn changed(
        &self,
        entry: &super::Entry,
        changed: impl IntoIterator<Item = bool>,
    ) -> Requests {
        let writes = changed
            .into_iter()
            .filter(|has_phone| entry.seed.listable || *has_phone)
            .count() as u64;
        Requests {
            reads: self.no_change.reads,
            writes: self.no_change.writes + writes,
        }
    }
}

/// Each registered provider's floor, by kind.
pub fn floors(seed_value: u64, people: u64) -> BTreeMap<&'static str, Floor> {
    let mut out: BTreeMap<&'static str, Floor> = BTreeMap::new();
    // Per provider: people held, and how many of them carry each label (lower-cased).
    let mut held: BTreeMap<&'static str, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    // The same after the import, for the providers that can be listed: every person known
    // (held or created), with the union of their tags.
    let mut after: BTreeMap<&'static str, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for person in seed::people(seed_value, people) {
        let at = seed::placement(seed_value, person.index);
        let copies: Vec<(&'static str, Seeded)> = PROVIDERS
            .iter()
            .filter(|e| at.contains(e.seed))
            .map(|e| (e.kind, seed::written_for(seed_value, &person, e.seed)))
            .collect();
        let known = PROVIDERS
            .iter()
            .any(|e| e.seed.listable && at.contains(e.seed));
        // The email can only be learnt from a provider that shows it.
        let email = copies
            .iter()
            .filter(|(k, _)| PROVIDERS.iter().any(|e| e.kind == *k && e.reveals_fields))
            .find_map(|(_, c)| c.email_key());
        let tags: BTreeSet<String> = copies
            .iter()
            .flat_map(|(_, c)| c.tags.iter().map(|t| t.to_lowercase()))
            .collect();
        // What the providers end up carrying: the tags of the providers that show them
        // (MaiAgent's cannot be read). The import floor above still counts every tag (a
        // floor at least as high as what an import may need); see BENCHMARKS.md.
        let shown_tags: BTreeSet<String> = copies
            .iter()
            .filter(|(k, _)| PROVIDERS.iter().any(|e| e.kind == *k && e.reveals_tags))
            .flat_map(|(_, c)| c.tags.iter().map(|t| t.to_lowercase()))
            .collect();
        for entry in PROVIDERS {
            let copy = copies
                .iter()
                .find(|(k, _)| *k == entry.kind)
                .map(|(_, c)| c);
            let view = FloorPerson {
                known,
                phone: person.phone_e164.as_deref(),
                email: email.as_deref(),
                tags: &tags,
                held: copy,
            };
            out.entry(entry.kind).or_default().import += (entry.import_floor)(&view);
            if entry.seed.listable && (known || copy.is_some()) {
                let (n, labels) = after.entry(entry.kind).or_default();
                *n += 1;
                for t in &shown_tags {
                    *labels.entry(t.clone()).or_default() += 1;
                }
            }
            if let Some(c) = copy {
                let (n, labels) = held.entry(entry.kind).or_default();
                *n += 1;
                for t in c
                    .tags
                    .iter()
                    .map(|t| t.to_lowercase())
                    .collect::<BTreeSet<_>>()
                {
                    *labels.entry(t).or_default() += 1;
                }
            }
        }
    }
    for entry in PROVIDERS {
        let floor = out.entry(entry.kind).or_default();
        let (n, labels) = held.remove(entry.kind).unwrap_or_default();
        floor.import.reads += (entry.listing_floor)(n, &labels);
        let (n, labels) = after.remove(entry.kind).unwrap_or_default();
        floor.no_change.reads = if entry.seed.listable {
            (entry.listing_floor)(n, &labels)
        } else {
            0
        };
    }
    out
}

/// Pages of `per_page` needed to list `n` items (a listing always reads one page).
pub fn pages(n: u64, per_page: u64) -> u64 {
    n.div_ceil(per_page.max(1)).max(1)
}
