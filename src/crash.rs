//! Crash points: named places in a cycle where a crash matters, reachable from tests.
//!
//! In a debug build (the one `cargo test` runs), setting `CRASH_POINT=NAME` (not
//! `CONTACT_SYNC_…`: that prefix is the config's environment layer)
//! (or `NAME@N` for the N-th time the point is reached) aborts the process right there,
//! as a power cut or `kill -9` would: no destructor runs, nothing is flushed beyond what
//! SQLite committed. Release builds compile the check away. The points:
//!
//! - `after-page-stored`: a listed page was committed to the store.
//! - `after-plan-persisted`: the planned writes of a batch were committed as intents.
//! - `after-write-sent`: a write request was answered and its outcome is not recorded yet.
//! - `after-mark-gone`: a complete listing's missing links were marked gone, inside the
//!   transaction that also propagates the deletes (so the crash rolls both back).
//! - `mid-propagated-delete`: a propagated delete was sent and not yet recorded.

/// Aborts the process if `CRASH_POINT` names this point (debug builds only).
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(debug_assertions)]
        $crate::crash::reached($name);
    };
}

#[cfg(debug_assertions)]
static HITS: std::sync::Mutex<Vec<(&'static str, u32)>> = std::sync::Mutex::new(Vec::new());

/// Counts a visit of `name` and aborts when it is the one asked for.
#[cfg(debug_assertions)]
pub fn reached(name: &'static str) {
    let Ok(wanted) = std::env::var("CRASH_POINT") else {
        return;
    };
    let (point, nth) = match wanted.split_once('@') {
        Some((p, n)) => (p.to_owned(), n.parse::<u32>().unwrap_or(1)),
        None => (wanted, 1),
    };
    if point != name {
        return;
    }
    let count = {
        let mut hits = HITS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = hits.iter_mut().find(|(n, _)| *n == name) {
            entry.1 += 1;
            entry.1
        } else {
            hits.push((name, 1));
            1
        }
    };
    if count == nth {
        eprintln!("crash point {name} reached (CRASH_POINT); aborting");
        std::process::abort();
    }
}
