//! The SQLite store: the only module with SQL.
//!
//! One writer connection lives on its own thread ([`tokio_rusqlite`]); the process that
//! syncs holds an exclusive lock on `<store>.lock` so a second syncing process is refused.
//! Read-only commands (`status`) open the file read-only and never take the lock, so they
//! work while the daemon runs (WAL mode lets readers and the writer proceed together).

pub mod codec;
pub mod contacts;
pub mod cycle;
mod group;
pub mod intents;
pub mod items;
pub mod journal;
pub mod links;
pub mod migrations;
pub mod pull;
pub mod review;
pub mod runs;
pub mod status;
pub mod webhooks;

use rusqlite::{Connection, OpenFlags};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A store failure, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the sync lock.
    #[error(
        "another contact-sync process is already syncing with the store {path} (lock {lock} held{pid}); stop it first, or use `contact-sync status`, which works alongside it",
        path = .path.display(), lock = .lock.display(), pid = .pid.as_ref().map(|p| format!(" by pid {p}")).unwrap_or_default()
    )]
    Locked {
        /// The store file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid, if it wrote one.
        pid: Option<String>,
    },
    /// The store was written by a newer contact-sync.
    #[error(
        "the store {path} has schema version {found}, newer than this contact-sync supports ({supported}); run the newer contact-sync, or point store.path at another file",
        path = .path.display()
    )]
    TooNew {
        /// The store file.
        path: PathBuf,
        /// Version found in the file.
        found: usize,
        /// Newest version this binary knows.
        supported: usize,
    },
    /// The file or its directory cannot be opened or created.
    #[error("cannot open the store {path}: {message}; check store.path and that the directory is writable", path = .path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Applying the migrations failed.
    #[error("cannot migrate the store {path}: {message}", path = .path.display())]
    Migrate {
        /// The store file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// An SQL statement failed.
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// JSON stored in the database could not be read.
    #[error("store holds unreadable data: {0}")]
    Corrupt(String),
    /// The writer thread is gone.
    #[error("the store connection was closed")]
    Closed,
    /// The transaction a unit of work was grouped in did not commit.
    #[error("store error: the write was not committed: {0}")]
    Commit(String),
}

impl From<tokio_rusqlite::Error<StoreError>> for StoreError {
    fn from(e: tokio_rusqlite::Error<StoreError>) -> Self {
        match e {
            tokio_rusqlite::Error::Error(inner) => inner,
            tokio_rusqlite::Error::Close((_, err)) => StoreError::Sqlite(err),
            _ => StoreError::Closed,
        }
    }
}

/// The exclusive sync lock on `<store>.lock`, released when dropped (or when the process
/// dies: the kernel drops the lock with the file descriptor, so a SIGKILL never leaves a
/// stale lock behind).
#[derive(Debug)]
pub struct SyncLock {
    _file: File,
    path: PathBuf,
}

impl SyncLock {
    /// The lock file path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of a store.
pub fn lock_path(store: &Path) -> PathBuf {
    let mut name = store
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(".lock");
    store.with_file_name(name)
}

/// Takes the sync lock of `store`, or explains who holds it.
pub fn acquire_lock(store: &Path) -> Result<SyncLock, StoreError> {
    let path = lock_path(store);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Open {
            path: store.to_owned(),
            message: format!("lock file {}: {e}", path.display()),
        })?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = writeln!(file, "{}", std::process::id());
            Ok(SyncLock { _file: file, path })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim().to_owned();
            Err(StoreError::Locked {
                path: store.to_owned(),
                lock: path,
                pid: (!pid.is_empty()).then_some(pid),
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Open {
            path: store.to_owned(),
            message: format!("cannot lock {}: {e}", path.display()),
        }),
    }
}

/// Pages the write-ahead log may hold before SQLite copies them back into the database
/// (SQLite's default is 1,000). Every page transaction of a first import dirties pages
/// all over the match-key and remote-id indexes; with the default, a checkpoint (and its
/// fsync) ran every few pages and copied the same index pages again and again. 10,000
/// pages is a WAL of at most ~40 MiB on disk (no memory: the WAL index is 32 KiB per
/// 4,096 pages).
pub const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;
/// Prepared statements kept per connection (rusqlite's default is 16). A cycle uses more
/// than a hundred distinct statements (pull, plan, push, journal, items, runs), and a
/// cache smaller than that set evicts statements that are needed again at once, so they
/// are prepared again and again.
const STATEMENT_CACHE: usize = 256;

/// The settings of the writer connection (also used by the benchmark's bare-insert
/// ceiling, so that it and the store run on equal terms).
pub fn apply_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Temporary tables (the staged tag listing of a provider, a row per contact and tag)
    // live in a temporary file whose pages SQLite caches like any other, not in memory
    // (the bundled SQLite's default): memory stays flat however many contacts there are.
    conn.pragma_update(None, "temp_store", "FILE")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn schema_version(conn: &Connection) -> rusqlite::Result<usize> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok(usize::try_from(v).unwrap_or(0))
}

/// Opens (creating if absent) and migrates the store synchronously. Used by
/// [`Store::open`] on the writer thread.
pub fn open_writer_connection(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            message: format!("cannot create directory {}: {e}", dir.display()),
        })?;
    }
    let mut conn = Connection::open(path).map_err(|e| StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let found = schema_version(&conn).map_err(|e| StoreError::Open {
        path: path.to_owned(),
        message: format!("not a contact-sync store ({e})"),
    })?;
    let supported = migrations::latest_version();
    if found > supported {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    apply_pragmas(&conn)?;
    migrations::migrations()
        .to_latest(&mut conn)
        .map_err(|e| StoreError::Migrate {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    Ok(conn)
}

/// Opens an existing store with `flags` and checks it is a contact-sync store this binary
/// can read: the connection and the schema version found. `Ok(None)` when the file does
/// not exist.
fn open_existing(
    path: &Path,
    flags: OpenFlags,
    busy: std::time::Duration,
) -> Result<Option<(Connection, usize)>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    conn.busy_timeout(busy)?;
    let found = schema_version(&conn).map_err(|e| StoreError::Open {
        path: path.to_owned(),
        message: format!("not a contact-sync store ({e})"),
    })?;
    let supported = migrations::latest_version();
    if found > supported {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    Ok(Some((conn, found)))
}

/// Opens an existing store read-only; `Ok(None)` when the file does not exist.
pub fn open_read_only(path: &Path) -> Result<Option<Connection>, StoreError> {
    Ok(open_existing(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        std::time::Duration::from_secs(5),
    )?
    .map(|(conn, _)| conn))
}

/// Whether a store opened read-only has every migration this binary knows (a store last
/// written by an older contact-sync is brought up to date by the next sync, which opens it
/// for writing).
pub fn is_current(conn: &Connection) -> Result<bool, StoreError> {
    Ok(schema_version(conn)? >= migrations::latest_version())
}

/// Opens an existing store to write one review decision, without the sync lock (a
/// running daemon keeps it): SQLite's own write lock is held only for the decision's
/// transaction. A store at an older schema is migrated first, which needs the sync lock
/// (a daemon running an older contact-sync must be upgraded first). `Ok(None)` when the
/// file does not exist.
pub fn open_for_decision(path: &Path) -> Result<Option<Connection>, StoreError> {
    let Some((conn, found)) = open_existing(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        std::time::Duration::from_secs(10),
    )?
    else {
        return Ok(None);
    };
    let supported = migrations::latest_version();
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if found < supported {
        drop(conn);
        let _lock = acquire_lock(path)?;
        return open_writer_connection(path).map(Some);
    }
    Ok(Some(conn))
}

/// The change sequence of golden records: every change takes the next number, so
/// planning finds what changed since its watermark. Only the writer thread advances it.
#[derive(Debug, Clone, Default)]
pub struct Seq(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl Seq {
    /// The next number.
    pub fn next(&self) -> i64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }
}

/// The writer handle: one connection on a dedicated thread, plus the sync lock.
#[derive(Clone)]
pub struct Store {
    conn: tokio_rusqlite::Connection,
    path: PathBuf,
    seq: Seq,
    group: std::sync::Arc<group::GroupQueue>,
    _lock: std::sync::Arc<SyncLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Takes the sync lock, opens (creating if absent) and migrates the store.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                message: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        let lock = acquire_lock(path)?;
        let owned = path.to_owned();
        let conn = tokio_rusqlite::Connection::open_in_memory()
            .await
            .map_err(StoreError::Sqlite)?;
        // Replace the placeholder with the real, migrated connection on the writer thread.
        let max_seq = conn
            .call(move |c| -> Result<i64, StoreError> {
                *c = open_writer_connection(&owned)?;
                Ok(
                    c.query_row("SELECT coalesce(max(seq), 0) FROM contacts", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await?;
        Ok(Self {
            conn,
            path: path.to_owned(),
            seq: Seq(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(
                max_seq,
            ))),
            group: std::sync::Arc::default(),
            _lock: std::sync::Arc::new(lock),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer thread.
    ///
    /// Outside `src/store/` only tests use it: the engine, the daemon and the demo call
    /// the units of work in [`cycle`] (one step, one transaction).
    #[doc(hidden)]
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.conn.call(f).await?)
    }

    /// Runs `f` on the writer thread with the change sequence.
    pub(crate) async fn call_seq<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection, &Seq) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let seq = self.seq.clone();
        Ok(self.conn.call(move |c| f(c, &seq)).await?)
    }

    /// Runs `f` on the writer thread as one unit of a group commit (see [`group`]): in a
    /// savepoint of a transaction shared with the units queued at the same time, answered
    /// once that transaction committed. For the small, frequent units of the pushes.
    pub(crate) async fn call_grouped<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection, &Seq) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (answer, schedule) = self.group.push(f);
        if schedule {
            let queue = std::sync::Arc::clone(&self.group);
            let seq = self.seq.clone();
            let drained = self
                .conn
                .call(move |c| {
                    queue.drain(c, &seq);
                    Ok::<_, StoreError>(())
                })
                .await;
            if let Err(e) = drained {
                self.group.abandon();
                return Err(e.into());
            }
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Copies the store at `path` (if it exists) into `dest` with `VACUUM INTO`, for a dry
/// run that must leave the real store as it was. Returns whether there was a store.
pub fn copy_for_dry_run(path: &Path, dest: &Path) -> Result<bool, StoreError> {
    let Some(conn) = open_read_only(path)? else {
        return Ok(false);
    };
    let target = dest.to_str().ok_or_else(|| StoreError::Open {
        path: dest.to_owned(),
        message: "the temporary path is not valid UTF-8".into(),
    })?;
    conn.execute("VACUUM INTO ?1", [target])?;
    Ok(true)
}
