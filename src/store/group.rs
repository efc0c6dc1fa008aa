//! Group commit on the writer thread: small units of work queued by concurrent callers
//! (the pushes' `creating` links, answers and closed intents) run one after another in
//! one transaction, each in its own savepoint, and every caller is answered only after
//! that transaction committed.
//!
//! A unit that fails rolls back to its savepoint and fails alone; a commit that fails
//! fails every unit of the group. Nothing is answered before it is durable, so a crash
//! at any point loses only units nobody was told about — exactly as if each had run in
//! its own transaction and the crash had come before it.

use super::{Seq, StoreError};
use rusqlite::Connection;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Hands a unit's result (or the group's commit failure) to its caller.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// A queued unit of work: runs in its savepoint and returns how to answer its caller.
type Unit = Box<dyn FnOnce(&mut rusqlite::Transaction<'_>, &Seq) -> Deliver + Send>;

/// The units waiting for the writer, and whether a drain of them is scheduled on it.
#[derive(Default)]
pub(super) struct GroupQueue {
    units: Mutex<Vec<Unit>>,
    scheduled: AtomicBool,
}

impl GroupQueue {
    /// Queues `f`; returns the receiver of its result and whether the caller must
    /// schedule a drain (no drain was pending).
    pub(super) fn push<R, F>(
        &self,
        f: F,
    ) -> (tokio::sync::oneshot::Receiver<Result<R, StoreError>>, bool)
    where
        F: FnOnce(&Connection, &Seq) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let unit: Unit = Box::new(move |outer, seq| {
            let result = (|| {
                let sp = outer.savepoint()?;
                let r = f(&sp, seq)?;
                sp.commit()?;
                Ok(r)
            })();
            Box::new(move |commit_failed: Option<&str>| {
                let answer = match (result, commit_failed) {
                    (Ok(_), Some(why)) => Err(StoreError::Commit(why.to_owned())),
                    (r, _) => r,
                };
                // The caller may have stopped waiting (a cancelled cycle): nothing to do.
                let _ = tx.send(answer);
            })
        });
        if let Ok(mut units) = self.units.lock() {
            units.push(unit);
        }
        let schedule = !self.scheduled.swap(true, Ordering::SeqCst);
        (rx, schedule)
    }

    /// The writer is gone: every queued unit is dropped (its caller gets
    /// [`StoreError::Closed`]) and the next unit schedules a drain again.
    pub(super) fn abandon(&self) {
        if let Ok(mut units) = self.units.lock() {
            units.clear();
        }
        self.scheduled.store(false, Ordering::SeqCst);
    }

    /// Runs every queued unit in one transaction, then answers them (on the writer
    /// thread).
    pub(super) fn drain(&self, conn: &mut Connection, seq: &Seq) {
        // Units queued from now on schedule another drain.
        self.scheduled.store(false, Ordering::SeqCst);
        let units = match self.units.lock() {
            Ok(mut units) => std::mem::take(&mut *units),
            Err(_) => return,
        };
        if units.is_empty() {
            return;
        }
        let mut tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                // Not run: a savepoint outside a transaction would commit on its own.
                // Dropping the units answers their callers with `StoreError::Closed`.
                drop(units);
                tracing::error!("the store could not begin a transaction: {e}");
                return;
            }
        };
        let deliveries: Vec<Deliver> = units.into_iter().map(|u| u(&mut tx, seq)).collect();
        let committed = tx.commit().map_err(|e| e.to_string());
        let why = committed.err();
        for deliver in deliveries {
            deliver(why.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn insert(conn: &Connection, v: i64) -> Result<i64, StoreError> {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
        Ok(conn.last_insert_rowid())
    }

    #[tokio::test]
    async fn a_failing_unit_fails_alone_and_the_others_are_answered_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("g.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL UNIQUE)")
            .unwrap();
        let queue = GroupQueue::default();
        let seq = Seq(std::sync::Arc::default());
        let (first, schedule) = queue.push(|c, _| insert(c, 1));
        assert!(schedule, "the first unit schedules the drain");
        // Two statements, the second violating UNIQUE: the unit's first row is undone too.
        let (failing, again) = queue.push(|c, _| {
            insert(c, 2)?;
            insert(c, 1)
        });
        assert!(!again, "a drain is pending already");
        let (third, _) = queue.push(|c, _| insert(c, 3));
        queue.drain(&mut conn, &seq);
        assert!(first.await.unwrap().is_ok());
        assert!(failing.await.unwrap().is_err());
        assert!(third.await.unwrap().is_ok());
        let values: Vec<i64> = conn
            .prepare("SELECT v FROM t ORDER BY v")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(values, vec![1, 3]);
        // Committed: another connection sees them.
        let other = Connection::open(dir.path().join("g.db")).unwrap();
        let n: i64 = other
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        // The next unit schedules a new drain.
        let (_, schedule) = queue.push(|c, _| insert(c, 4));
        assert!(schedule);
    }
}
