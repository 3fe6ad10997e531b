//! The event log in SQLite: the one place that opens the database.
//!
//! `SqliteStore::open` creates the folder, sets WAL, synchronous and a busy timeout,
//! applies the numbered migrations in `migrations/`, and hands out a cheap clonable
//! handle. All writes go through one writer thread (`writer`), which groups concurrent
//! appends into one transaction. Reads use their own connection. The projections'
//! tables live in the same database: `read` and `write` hand out its connections.

mod clock;
mod queue;
mod writer;

pub use clock::Clock;
pub use queue::{QueueBudget, DEFAULT_QUEUE_BYTES};
pub use writer::append_in;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use tokio::sync::watch;

pub(crate) use super::{Appended, EventStore, NewEvent, StoreError, StoredEvent};

/// The schema, one step per file in `migrations/`; shipped steps are never edited.
const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("../../../migrations/0001_events.sql")),
    M::up(include_str!("../../../migrations/0002_projections.sql")),
    M::up(include_str!("../../../migrations/0003_detection.sql")),
    M::up(include_str!("../../../migrations/0004_stances_digests.sql")),
    M::up(include_str!(
        "../../../migrations/0005_subscriptions_web.sql"
    )),
    M::up(include_str!(
        "../../../migrations/0006_article_text_once.sql"
    )),
    M::up(include_str!(
        "../../../migrations/0007_events_lean_appends.sql"
    )),
];

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// A health probe answers sooner than that, or the database counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Knobs for opening the store.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Caps the database file at this many pages (SQLite's `max_page_count`); beyond it
    /// appends fail as a full disk would. For operators who want a hard size cap, and for
    /// tests of the disk-full path.
    pub max_pages: Option<u32>,
    /// The time written on each event (`recorded_at`); the wall clock by default.
    pub clock: Clock,
    /// Payload bytes that appends may hold in the writer's queue at once
    /// (`DEFAULT_QUEUE_BYTES` when None).
    pub queue_bytes: Option<usize>,
}

const SELECT_EVENT: &str =
    "SELECT seq, stream, version, kind, schema_version, payload, recorded_at, idempotency_key FROM events";

impl EventStore for SqliteStore {
    fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        SqliteStore::append(self, events)
    }
    fn read_from(
        &self,
        after_seq: u64,
        limit: usize,
        kind: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        SqliteStore::read_from(self, after_seq, limit, kind)
    }
    fn read_stream(&self, stream: &str) -> Result<Vec<StoredEvent>, StoreError> {
        SqliteStore::read_stream(self, stream)
    }
    fn head(&self) -> Result<u64, StoreError> {
        SqliteStore::head(self)
    }
    fn follow(&self) -> watch::Receiver<u64> {
        self.subscribe()
    }
    fn probe(&self) -> Result<u64, StoreError> {
        SqliteStore::probe(self)
    }
    fn import(&self, events: Vec<StoredEvent>) -> Result<(), StoreError> {
        let last = events.last().map(|e| e.seq);
        self.write(move |tx| {
            super::check_import_order(head_seq(tx)?, &events)?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (seq, stream, version, kind, schema_version, payload, recorded_at, idempotency_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in &events {
                insert.execute(rusqlite::params![
                    e.seq,
                    e.stream,
                    e.version,
                    e.kind,
                    e.schema_version,
                    e.payload.get(),
                    e.recorded_at,
                    e.idempotency_key
                ])?;
            }
            Ok(())
        })?;
        if let Some(seq) = last {
            super::advance_head(&self.inner.head, seq);
        }
        Ok(())
    }
}

/// A clonable handle on the event log in SQLite, and on the projections' tables
/// beside it (`read` and `write` hand out its connections).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Clock,
    path: PathBuf,
    reader: Mutex<Connection>,
    writer: writer::Writer,
    head: watch::Sender<u64>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, OpenOptions::default())
    }

    pub fn open_with(path: &Path, options: OpenOptions) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut write_conn = connect(path, &options)?;
        migrate(&mut write_conn, path)?;
        let reader = connect(path, &options)?;
        let head = head_seq(&reader).map_err(|e| StoreError::from_sqlite(e, path))?;
        let (head_tx, _) = watch::channel(head);
        let writer = writer::Writer::spawn(
            write_conn,
            path.to_path_buf(),
            head_tx.clone(),
            options.clock.clone(),
            QueueBudget::new(options.queue_bytes.unwrap_or(DEFAULT_QUEUE_BYTES)),
        );
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                clock: options.clock,
                path: path.to_path_buf(),
                reader: Mutex::new(reader),
                writer,
                head: head_tx,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The writer's queue and the most bytes it ever held (tests, benchmarks).
    pub fn queue(&self) -> &QueueBudget {
        self.inner.writer.queue()
    }

    /// Now, as this log tells time (what its next event will be stamped with): the
    /// wall clock, unless the store was opened with a clock set by hand. Whatever
    /// compares times with the log's (tracking's evidence window, digests' "since")
    /// takes its "now" here, so both agree.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.clock.now()
    }

    /// Appends events atomically: all of them are recorded, or (on a conflict or error)
    /// none. An event whose idempotency key is already in the log is not written again;
    /// its original comes back as `Appended::Duplicate`.
    pub fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.writer.append(events)
    }

    pub fn append_one(&self, event: NewEvent) -> Result<Appended, StoreError> {
        self.append(vec![event])?
            .pop()
            .ok_or(StoreError::WriterGone)
    }

    /// `append`, awaited: for async tasks, which must not block a runtime worker
    /// while the writer commits.
    pub async fn append_async(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.writer.append_async(events).await
    }

    /// `read`, on the blocking pool: for async tasks.
    pub async fn read_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| StoreError::Panicked(e.to_string()))?
    }

    /// `write`, awaited: for async tasks.
    pub async fn write_async<T: Send + 'static>(
        &self,
        job: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(job))
            .await
            .map_err(|e| StoreError::Panicked(e.to_string()))?
    }

    /// Opens the database afresh, read-only, and reads its head: what a health check
    /// asks (the handle's own connections would still answer from a deleted file).
    pub fn probe(&self) -> Result<u64, StoreError> {
        let path = &self.inner.path;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::from_sqlite(e, path))?;
        conn.busy_timeout(PROBE_TIMEOUT)
            .map_err(|e| StoreError::from_sqlite(e, path))?;
        head_seq(&conn).map_err(|e| StoreError::from_sqlite(e, path))
    }

    /// Runs `job` on the writer's connection inside one transaction: how projections
    /// write their rows and checkpoint together without competing with appends, and
    /// how a check and the append it allows happen as one step (`append_in`): no
    /// other write comes between them, so callers need no lock of their own.
    pub fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.inner.writer.run(job)
    }

    /// Reads with the store's reader connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self
            .inner
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&conn).map_err(|e| StoreError::from_sqlite(e, &self.inner.path))
    }

    /// Events after `after_seq` in log order, at most `limit`, optionally of one kind.
    pub fn read_from(
        &self,
        after_seq: u64,
        limit: usize,
        kind: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            match kind {
                Some(kind) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "{SELECT_EVENT} WHERE seq > ?1 AND kind = ?2 ORDER BY seq LIMIT ?3"
                    ))?;
                    let rows = stmt.query_map(
                        rusqlite::params![after_seq, kind, limit],
                        StoredEvent::from_row,
                    )?;
                    rows.collect()
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "{SELECT_EVENT} WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                    ))?;
                    let rows =
                        stmt.query_map(rusqlite::params![after_seq, limit], StoredEvent::from_row)?;
                    rows.collect()
                }
            }
        })
    }

    /// Every event of one stream, in version order.
    pub fn read_stream(&self, stream: &str) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(|conn| stream_events(conn, stream))
    }

    /// The last event of a kind, if any.
    pub fn last_of_kind(&self, kind: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.read(|conn| {
            conn.query_row(
                &format!("{SELECT_EVENT} WHERE kind = ?1 ORDER BY seq DESC LIMIT 1"),
                [kind],
                StoredEvent::from_row,
            )
            .optional()
        })
    }

    /// The highest seq in the log, read from the database (sees other processes' appends).
    pub fn head(&self) -> Result<u64, StoreError> {
        self.read(head_seq)
    }

    /// Follows appends made through this handle: the receiver holds the latest seq.
    /// Consumers read from their own position when it moves, so nothing is missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }
}

/// Every event of one stream, in version order, on a connection already open (a
/// write job's transaction).
pub fn stream_events(conn: &Connection, stream: &str) -> rusqlite::Result<Vec<StoredEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT_EVENT} WHERE stream = ?1 ORDER BY version"
    ))?;
    let rows = stmt.query_map([stream], StoredEvent::from_row)?;
    rows.collect()
}

/// Events after `after`, in log order, at most `limit`, stopping after the one that
/// brings their payloads to `max_bytes`, on a connection already open (a write job's
/// transaction). Rows are read one at a time, so memory stays near `max_bytes`.
pub fn events_after_in(
    conn: &Connection,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT_EVENT} WHERE seq > ?1 ORDER BY seq LIMIT ?2"
    ))?;
    let mut rows = stmt.query(rusqlite::params![after, limit])?;
    let (mut events, mut bytes) = (Vec::new(), 0);
    while let Some(row) = rows.next()? {
        let event = StoredEvent::from_row(row)?;
        bytes += event.payload.get().len();
        events.push(event);
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(events)
}

fn head_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
}

/// Prepared statements kept per connection (see `connect`).
const STATEMENT_CACHE: usize = 64;

fn connect(path: &Path, options: &OpenOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| StoreError::from_sqlite(e, path))?;
    // The writer's connection runs some 27 distinct statements in a cycle (appends,
    // every projection, paging the log); rusqlite's cache holds 16 by default, and a
    // least-recently-used cache smaller than the loop it serves misses every time.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // WAL lets readers (the CLI, the web pages) run beside the daemon's writer;
    // synchronous=NORMAL in WAL mode never corrupts the file, at worst it loses the last
    // commits on power loss (not on a process crash).
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| StoreError::from_sqlite(e, path))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| StoreError::from_sqlite(e, path))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| StoreError::from_sqlite(e, path))?;
    // Each append request runs under a savepoint; its rollback journal (and any sort
    // or temporary index) stays in memory instead of a temporary file written for
    // every page a batch touches. The page cache is sized, not left to the default:
    // 2 MB per connection.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(|e| StoreError::from_sqlite(e, path))?;
    conn.pragma_update(None, "cache_size", -2048)
        .map_err(|e| StoreError::from_sqlite(e, path))?;
    if let Some(pages) = options.max_pages {
        conn.pragma_update(None, "max_page_count", pages)
            .map_err(|e| StoreError::from_sqlite(e, path))?;
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    use rusqlite_migration::{Error as MigrationError, MigrationDefinitionError};
    let migrations = Migrations::from_slice(MIGRATIONS);
    match migrations.to_latest(conn) {
        Ok(()) => Ok(()),
        Err(MigrationError::MigrationDefinition(MigrationDefinitionError::DatabaseTooFarAhead)) => {
            let found: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap_or(-1);
            Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                known: MIGRATIONS.len(),
            })
        }
        Err(MigrationError::RusqliteError { err, .. }) => Err(StoreError::from_sqlite(err, path)),
        Err(other) => Err(StoreError::Open {
            path: path.to_path_buf(),
            reason: other.to_string(),
        }),
    }
}
