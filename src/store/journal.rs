//! The journal and the cycles (runs): writing an entry inside the unit of work it belongs
//! to, pruning after `store.history_days`, and the read-only views behind `contact-sync
//! runs` and `contact-sync history`. The rules (what a change is, what an undo puts back)
//! are in [`crate::domain::journal`].

use super::contacts;
use super::status::rfc3339;
use super::{Seq, StoreError};
use crate::domain::journal::{Changes, Entry, EventKind, Restore, UndoSubject, keys_to_restore};
use crate::domain::matching::{ContactId, KeyKind};
use crate::domain::normalize::{DefaultRegion, Email, Phone, normalize_email, normalize_phone};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::collections::HashMap;

/// When and in which run an entry happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The run (`cycles.id`); `None` outside a run.
    pub run: Option<i64>,
    /// Unix seconds.
    pub at: i64,
}

/// One entry to write.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// The person.
    pub contact: ContactId,
    /// The provider (`None`: contact-sync itself).
    pub provider: Option<i64>,
    /// What happened.
    pub kind: EventKind,
    /// The operation (`sent_to`), or `create` for a `linked` record that became a person.
    pub op: Option<&'a str>,
    /// The provider's id of the record.
    pub remote_id: Option<&'a str>,
    /// `sent_to`: why it did not go through (`None`: it did).
    pub outcome: Option<&'a str>,
    /// Field → `[old, new]`.
    pub changes: &'a Changes,
}

/// Writes one entry (inside the caller's transaction).
pub fn write(conn: &Connection, stamp: Stamp, e: NewEntry<'_>) -> Result<(), StoreError> {
    let changes = if e.changes.is_empty() {
        None
    } else {
        Some(serde_json::to_string(e.changes).map_err(|err| StoreError::Corrupt(err.to_string()))?)
    };
    conn.prepare_cached(
        "INSERT INTO journal (contact_id, run_id, at, provider_id, kind, op, remote_id, outcome, changes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.contact,
        stamp.run,
        stamp.at,
        e.provider,
        e.kind.as_str(),
        e.op,
        e.remote_id,
        e.outcome,
        changes
    ])?;
    Ok(())
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A scheduled or command-line cycle.
    Cycle,
    /// An undo of this run.
    Undo(i64),
    /// A targeted cycle for Chatwoot webhook events.
    Webhook,
}

/// Starts a cycle (a run) and returns its id; an undo names the run it undoes.
pub fn begin_cycle(conn: &Connection, now: i64, trigger: Trigger) -> Result<i64, StoreError> {
    let (undo_of, trigger) = match trigger {
        Trigger::Cycle => (None, None),
        Trigger::Undo(run) => (Some(run), None),
        Trigger::Webhook => (None, Some("webhook")),
    };
    conn.prepare_cached("INSERT INTO cycles (started_at, undo_of, trigger) VALUES (?1, ?2, ?3)")?
        .execute(params![now, undo_of, trigger])?;
    Ok(conn.last_insert_rowid())
}

/// Forgets run `id` (its cycle and provider rows) when it left no journal entry: a
/// targeted cycle that changed nothing (an event re-read with nothing new). Returns
/// whether it was forgotten.
pub fn forget_if_empty(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    let wrote: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM journal WHERE run_id = ?1)")?
        .query_row([id], |r| r.get(0))?;
    if wrote {
        return Ok(false);
    }
    conn.prepare_cached("DELETE FROM runs WHERE cycle_id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM cycles WHERE id = ?1")?
        .execute([id])?;
    Ok(true)
}

/// Finishes a cycle.
pub fn finish_cycle(conn: &Connection, id: i64, ok: bool, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE cycles SET finished_at = ?2, ok = ?3 WHERE id = ?1")?
        .execute(params![id, now, ok])?;
    Ok(())
}

/// Deletes journal entries older than `before` (unix seconds). Entry ids grow with time,
/// so this reads only the entries it deletes plus one.
pub fn prune(conn: &Connection, before: i64) -> Result<usize, StoreError> {
    let first_kept: Option<i64> = conn
        .prepare_cached("SELECT id FROM journal WHERE at >= ?1 ORDER BY id LIMIT 1")?
        .query_row([before], |r| r.get(0))
        .optional()?;
    let n = match first_kept {
        Some(id) => conn
            .prepare_cached("DELETE FROM journal WHERE id < ?1")?
            .execute([id])?,
        None => conn.prepare_cached("DELETE FROM journal")?.execute([])?,
    };
    Ok(n)
}

/// A run as `contact-sync runs` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunView {
    /// The run id (grows with time).
    pub id: i64,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC; `None` while running (or if the process died).
    pub finished_at: Option<String>,
    /// Whether every provider's part went through; `None` while running.
    pub ok: Option<bool>,
    /// The run this one undid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo_of: Option<i64>,
    /// What started it when not a scheduled or command-line cycle: `webhook` (a targeted
    /// cycle for Chatwoot webhook events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Per provider, in config order.
    pub providers: Vec<RunProvider>,
}

/// One provider's part of a run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunProvider {
    /// Instance name.
    pub name: String,
    /// Records read.
    pub pulled: i64,
    /// Contacts created there.
    pub created: i64,
    /// Contacts updated there.
    pub updated: i64,
    /// Tags added or removed there.
    pub tag_changes: i64,
    /// Writes that failed.
    pub failed: i64,
}

/// The most recent runs, newest first (read-only).
pub fn list_runs(conn: &Connection, limit: usize) -> Result<Vec<RunView>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, started_at, finished_at, ok, undo_of, trigger FROM cycles ORDER BY id DESC LIMIT ?1",
    )?;
    let cycles = stmt
        .query_map([limit as i64], |r| {
            Ok(RunView {
                id: r.get(0)?,
                started_at: rfc3339(r.get(1)?),
                finished_at: r.get::<_, Option<i64>>(2)?.map(rfc3339),
                ok: r.get(3)?,
                undo_of: r.get(4)?,
                trigger: r.get(5)?,
                providers: Vec::new(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT p.name, r.pulled, r.created, r.updated, r.tag_changes, r.failed
         FROM runs r JOIN providers p ON p.id = r.provider_id WHERE r.cycle_id = ?1 ORDER BY r.id",
    )?;
    cycles
        .into_iter()
        .map(|mut c| {
            c.providers = stmt
                .query_map([c.id], |r| {
                    Ok(RunProvider {
                        name: r.get(0)?,
                        pulled: r.get(1)?,
                        created: r.get(2)?,
                        updated: r.get(3)?,
                        tag_changes: r.get(4)?,
                        failed: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(c)
        })
        .collect()
}

/// A run's times and what it undid: `(started_at, finished_at, undo_of)`.
pub fn run_info(
    conn: &Connection,
    id: i64,
) -> Result<Option<(i64, Option<i64>, Option<i64>)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT started_at, finished_at, undo_of FROM cycles WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// The person a history key names: an email, a phone, a contact id, or
/// `PROVIDER:REMOTE_ID`. `None` when nobody matches.
pub fn resolve_key(
    conn: &Connection,
    key: &str,
    region: DefaultRegion,
) -> Result<Option<ContactId>, StoreError> {
    let key = key.trim();
    if let Some((provider, remote)) = key.split_once(':') {
        let found: Option<ContactId> = conn
            .prepare_cached(
                "SELECT l.contact_id FROM links l JOIN providers p ON p.id = l.provider_id
                 WHERE p.name = ?1 AND l.remote_id = ?2",
            )?
            .query_row(params![provider, remote], |r| r.get(0))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    if key.contains('@') {
        if let Some(Email::Valid(e)) = normalize_email(key) {
            return contacts::key_owner(conn, KeyKind::Email, &e);
        }
        return Ok(None);
    }
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
        let id: Option<ContactId> = key.parse().ok();
        if let Some(id) = id {
            let exists: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM contacts WHERE id = ?1)
                     OR EXISTS (SELECT 1 FROM journal WHERE contact_id = ?1)",
                )?
                .query_row([id], |r| r.get(0))?;
            if exists {
                return Ok(Some(id));
            }
        }
    }
    if let Some(Phone::E164(p)) = normalize_phone(key, region) {
        return contacts::key_owner(conn, KeyKind::Phone, &p);
    }
    Ok(None)
}

fn read_entries(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<Entry>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(args, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(
            |(id, contact, run, at, provider, kind, op, remote_id, outcome, changes)| {
                Ok(Entry {
                    id,
                    contact,
                    run,
                    at,
                    provider,
                    kind: EventKind::parse(&kind).ok_or_else(|| {
                        StoreError::Corrupt(format!("journal entry {id}: unknown kind {kind:?}"))
                    })?,
                    op,
                    remote_id,
                    outcome,
                    changes: match changes {
                        Some(text) => serde_json::from_str(&text)
                            .map_err(|e| StoreError::Corrupt(format!("journal entry {id}: {e}")))?,
                        None => Changes::new(),
                    },
                })
            },
        )
        .collect()
}

const ENTRY_COLUMNS: &str =
    "j.id, j.contact_id, j.run_id, j.at, p.name, j.kind, j.op, j.remote_id, j.outcome, j.changes
     FROM journal j LEFT JOIN providers p ON p.id = j.provider_id";

/// A person's journal, oldest first.
pub fn history(conn: &Connection, contact: ContactId) -> Result<Vec<Entry>, StoreError> {
    read_entries(
        conn,
        &format!("SELECT {ENTRY_COLUMNS} WHERE j.contact_id = ?1 ORDER BY j.id"),
        [contact],
    )
}

/// A run's journal, oldest first.
pub fn run_entries(conn: &Connection, run: i64) -> Result<Vec<Entry>, StoreError> {
    read_entries(
        conn,
        &format!("SELECT {ENTRY_COLUMNS} WHERE j.run_id = ?1 ORDER BY j.id"),
        [run],
    )
}

/// One event of a person's history as `history --json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryEvent {
    /// RFC 3339 UTC.
    pub at: String,
    /// The run.
    pub run: Option<i64>,
    /// The provider instance (`None`: contact-sync itself, an undo).
    pub provider: Option<String>,
    /// `changed_in`, `sent_to`, `merged`, `linked` or `gone`.
    pub kind: EventKind,
    /// The field (`None`: the event concerns the record as a whole).
    pub field: Option<String>,
    /// The value before (`tags`: the set).
    pub old: serde_json::Value,
    /// The value after (`tags`: the set).
    pub new: serde_json::Value,
    /// `sent_to`: the operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// `sent_to`: `ok`, or why it did not go through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// The history events of a person's entries.
pub fn history_events(entries: &[Entry]) -> Vec<HistoryEvent> {
    let mut out = Vec::new();
    for e in entries {
        let sent = e.kind == EventKind::SentTo;
        for line in e.lines() {
            out.push(HistoryEvent {
                at: rfc3339(e.at),
                run: e.run,
                provider: e.provider.clone(),
                kind: line.kind,
                field: line.field,
                old: line.old,
                new: line.new,
                op: e.op.clone().filter(|_| sent),
                outcome: sent.then(|| e.outcome.clone().unwrap_or_else(|| "ok".to_owned())),
            });
        }
    }
    out
}

/// The people a run changed (`changed_in` entries), each with what an undo needs: its
/// state now, the run's entries, later runs' entries, and who holds the key values the
/// undo would put back.
pub fn undo_subjects(conn: &Connection, run: i64) -> Result<Vec<UndoSubject>, StoreError> {
    let entries = read_entries(
        conn,
        &format!(
            "SELECT {ENTRY_COLUMNS} WHERE j.run_id = ?1 AND j.kind = 'changed_in' ORDER BY j.id"
        ),
        [run],
    )?;
    let mut by_contact: Vec<(ContactId, Vec<Entry>)> = Vec::new();
    let mut index: HashMap<ContactId, usize> = HashMap::new();
    for e in entries {
        match index.get(&e.contact) {
            Some(&i) => by_contact[i].1.push(e),
            None => {
                index.insert(e.contact, by_contact.len());
                by_contact.push((e.contact, vec![e]));
            }
        }
    }
    let mut out = Vec::with_capacity(by_contact.len());
    for (contact, in_run) in by_contact {
        let Some(held) = contacts::load_held(conn, contact)? else {
            continue;
        };
        let later = read_entries(
            conn,
            &format!(
                "SELECT {ENTRY_COLUMNS} WHERE j.contact_id = ?1 AND j.run_id > ?2
                 AND j.kind IN ('changed_in', 'linked', 'merged') ORDER BY j.id"
            ),
            params![contact, run],
        )?;
        let mut key_owners = HashMap::new();
        for (kind, value) in keys_to_restore(&in_run) {
            if let Some(owner) = contacts::key_owner(conn, kind, &value)? {
                key_owners.insert((kind, value), owner);
            }
        }
        out.push(UndoSubject {
            contact,
            fields: held.fields,
            phone_valid: held.phone_valid,
            tags: held.tags,
            in_run,
            later,
            key_owners,
        });
    }
    Ok(out)
}

/// Applies what an undo puts back on one person (inside the caller's transaction): its
/// fields, keys and tags, a new change sequence number (so every provider is planned
/// again), and a `changed_in` entry without a provider.
pub fn apply_restore(
    conn: &Connection,
    seq: &Seq,
    stamp: Stamp,
    restore: &Restore,
) -> Result<(), StoreError> {
    if !restore.changes_anything() {
        return Ok(());
    }
    let id = restore.contact;
    for (kind, value) in &restore.keys {
        contacts::move_key(conn, id, *kind, value.as_deref())?;
    }
    contacts::add_tags(conn, id, &restore.tags_add)?;
    contacts::remove_tags(conn, id, &restore.tags_remove)?;
    match &restore.fields {
        Some(fields) => {
            contacts::save_fields(conn, id, fields, restore.phone_valid, seq.next(), stamp.at)?;
        }
        None => contacts::bump(conn, id, seq.next())?,
    }
    write(
        conn,
        stamp,
        NewEntry {
            contact: id,
            provider: None,
            kind: EventKind::ChangedIn,
            op: None,
            remote_id: None,
            outcome: None,
            changes: &restore.changes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrations::migrations()
            .to_latest(&mut conn)
            .unwrap();
        conn
    }

    fn entry(conn: &Connection, contact: ContactId, run: i64, at: i64) {
        let mut changes = Changes::new();
        changes.insert("name".into(), ["Ana".into(), "Ana B".into()]);
        write(
            conn,
            Stamp { run: Some(run), at },
            NewEntry {
                contact,
                provider: None,
                kind: EventKind::ChangedIn,
                op: None,
                remote_id: None,
                outcome: None,
                changes: &changes,
            },
        )
        .unwrap();
    }

    #[test]
    fn runs_grow_and_old_entries_are_pruned() {
        let conn = store();
        let first = begin_cycle(&conn, 100, Trigger::Cycle).unwrap();
        let second = begin_cycle(&conn, 200, Trigger::Undo(first)).unwrap();
        assert!(second > first);
        finish_cycle(&conn, second, true, 210).unwrap();
        entry(&conn, 1, first, 100);
        entry(&conn, 1, second, 200);
        entry(&conn, 2, second, 205);
        assert_eq!(prune(&conn, 150).unwrap(), 1);
        let kept = history(&conn, 1).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].run, Some(second));
        assert_eq!(kept[0].changes["name"][1], "Ana B");
        let runs = list_runs(&conn, 10).unwrap();
        assert_eq!(runs[0].id, second);
        assert_eq!(runs[0].undo_of, Some(first));
        assert_eq!(runs[0].ok, Some(true));
        assert_eq!(runs[0].finished_at.as_deref(), Some("1970-01-01T00:03:30Z"));
        assert_eq!(prune(&conn, 1_000).unwrap(), 2, "everything older goes");
    }

    #[test]
    fn a_webhook_run_that_wrote_nothing_is_forgotten() {
        let conn = store();
        let full = begin_cycle(&conn, 100, Trigger::Cycle).unwrap();
        let echo = begin_cycle(&conn, 200, Trigger::Webhook).unwrap();
        assert!(forget_if_empty(&conn, echo).unwrap());
        let change = begin_cycle(&conn, 300, Trigger::Webhook).unwrap();
        assert!(change > echo, "ids are never handed out twice");
        entry(&conn, 1, change, 300);
        assert!(!forget_if_empty(&conn, change).unwrap());
        let runs = list_runs(&conn, 10).unwrap();
        let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
        assert_eq!(ids, [change, full]);
        assert_eq!(runs[0].trigger.as_deref(), Some("webhook"));
        assert_eq!(runs[1].trigger, None);
    }

    #[test]
    fn runs_recorded_before_the_journal_become_runs_of_their_own() {
        let mut conn = Connection::open_in_memory().unwrap();
        let migrations = super::super::migrations::migrations();
        migrations.to_version(&mut conn, 1).unwrap();
        conn.execute_batch(
            "INSERT INTO providers (id, name, kind) VALUES (1, 'a', 'chatwoot'), (2, 'b', 'agentalk');
             INSERT INTO runs (provider_id, started_at, finished_at, ok, pulled) VALUES
                (1, 100, 110, 1, 5), (2, 100, 111, 0, 0), (1, 200, 210, 1, 7), (2, 200, 211, 1, 0);",
        )
        .unwrap();
        migrations.to_latest(&mut conn).unwrap();
        let runs = list_runs(&conn, 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].providers.len(), 2);
        assert_eq!(runs[0].providers[0].pulled, 7);
        assert_eq!(
            runs[1].ok,
            Some(false),
            "one provider failed in the older run"
        );
    }
}
