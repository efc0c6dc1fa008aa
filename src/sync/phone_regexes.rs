//! The memory and speed of the regular expressions `phonenumber` compiles from its
//! metadata. They live in one process-wide LRU cache ([`phonenumber::metadata::DATABASE`]);
//! this module sizes that cache and bounds what each compiled expression may hold.
//!
//! Two problems, both measured with `cargo bench --bench sync` (BENCHMARKS.md):
//! - **Speed.** The cache keeps 100 expressions. Numbers from a dozen countries use more
//!   (a `+1` number alone is tried against the patterns of some 25 regions), so it
//!   thrashed and every miss compiled an expression again: ~2.7 ms per phone.
//!   [`enlarge_cache`] raises it to [`CACHE_CAPACITY`] once per process.
//! - **Memory.** `regex` gives each expression a lazy DFA cache of up to 2 MiB that grows
//!   as it meets new numbers; over a million phones the ~200 expressions in use grew
//!   past 40 MiB of heap. [`DfaBudget::enforce`] recompiles each expression the cache
//!   holds, once, with a [`DFA_CACHE_BYTES`] limit: the lazy DFA then clears itself
//!   instead of growing (national numbers are short, so matching stays fast).

use std::collections::HashMap;

/// Compiled expressions kept (`phonenumber`'s default is 100).
pub const CACHE_CAPACITY: usize = 1_024;

/// Lazy DFA cache allowed to each expression.
pub const DFA_CACHE_BYTES: usize = 64 * 1024;

/// The compiled-program limit `regex_cache` uses (kept as it is).
const PROGRAM_BYTES: usize = 10 * (1 << 20);

/// Raises the capacity of `phonenumber`'s expression cache to [`CACHE_CAPACITY`] (once
/// per process; never lowers it).
pub fn enlarge_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cache = phonenumber::metadata::DATABASE.cache();
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.capacity() < CACHE_CAPACITY {
            cache.set_capacity(CACHE_CAPACITY);
        }
    });
}

/// Which cached expressions have been recompiled with the bounded DFA cache. Held by the
/// one thread that normalises records; call [`DfaBudget::enforce`] after each batch.
#[derive(Debug, Default)]
pub struct DfaBudget {
    /// Pattern → address of the pattern text inside the expression we compiled: an
    /// expression `phonenumber` compiled again after an eviction has another address.
    bounded: HashMap<String, usize>,
}

impl DfaBudget {
    /// A budget that has bounded nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Recompiles, with the bounded DFA cache, every cached expression not yet bounded.
    /// Cheap when nothing new was compiled (one map lookup per cached expression).
    /// Returns how many were recompiled.
    pub fn enforce(&mut self) -> usize {
        let cache = phonenumber::metadata::DATABASE.cache();
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut recompiled = 0;
        for (pattern, regex) in cache.iter_mut() {
            let address = regex.as_str().as_ptr() as usize;
            if self.bounded.get(pattern) == Some(&address) {
                continue;
            }
            // The options `phonenumber` compiles its metadata with (`ignore_whitespace`),
            // plus the DFA limit. A pattern that does not compile here stays as it was.
            if let Ok(bounded) = regex::RegexBuilder::new(pattern)
                .ignore_whitespace(true)
                .size_limit(PROGRAM_BYTES)
                .dfa_size_limit(DFA_CACHE_BYTES)
                .build()
            {
                *regex = bounded;
                recompiled += 1;
            }
            self.bounded
                .insert(pattern.clone(), regex.as_str().as_ptr() as usize);
        }
        if self.bounded.len() > 2 * CACHE_CAPACITY {
            // Patterns evicted long ago: forget them (they are recompiled if they return).
            self.bounded.clear();
        }
        recompiled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::normalize::{DefaultRegion, Phone, normalize_phone};

    #[test]
    fn bounded_expressions_still_validate_numbers() {
        enlarge_cache();
        let region = DefaultRegion::parse("US").unwrap();
        let normalize_all = || -> Vec<_> {
            [
                "+44 20 7946 0958",
                "(415) 555-0123",
                "+81 3-1234-5678",
                "12",
            ]
            .iter()
            .map(|p| normalize_phone(p, region))
            .collect()
        };
        let before = normalize_all();
        let mut budget = DfaBudget::new();
        assert!(
            budget.enforce() > 0,
            "the numbers above compiled expressions"
        );
        let after = normalize_all();
        assert_eq!(before, after);
        assert!(after[0].as_ref().and_then(Phone::key).is_some());
        assert!(after[3].as_ref().and_then(Phone::key).is_none());
    }
}
