//! The event log in PostgreSQL: the same table and the same promises as SQLite's
//! (expected versions, idempotency returning the original, all-or-nothing batches,
//! UPDATE/DELETE/TRUNCATE refused by triggers), so `tests/conformance.rs` runs on it
//! unchanged. `connect.rs` opens every connection (the config's password, TLS with
//! rustls as `sslmode` asks, errors without the password); `leases.rs` holds the
//! building blocks for several daemons (feed leases, leadership). A database whose
//! schema has more steps than this build knows is refused on connect, as on SQLite.
//! `vigia migrate` copies a log in or out. The projections' tables live here too
//! (migration 0003), written by `write` jobs (`crate::projections` brings the code).
//! Still to come (issue 16): the projections' readers here, and the daemon wired to
//! the leases and leadership.
//!
//! Global order a follower can trust: in PostgreSQL a transaction can take a lower
//! `seq` and commit after one that took a higher, and a reader that moved past the
//! higher would never see the lower. Appends therefore take a transaction-level
//! advisory lock before they insert: one append transaction at a time, committing in
//! the order it took its positions, so every position a reader sees has all lower
//! ones committed before it.
//!
//! Threading: the synchronous `postgres` client runs its own small runtime and must
//! not be called from inside a tokio runtime, so one thread owns the connection and
//! runs each request in turn, like SQLite's writer thread; a second thread listens
//! for other daemons' appends (`listen_for_appends`).

mod connect;
mod leases;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::{Client, Row};
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::{now_rfc3339, Appended, EventStore, NewEvent, StoreError, StoredEvent};
use crate::config::PostgresDatabase;
use connect::Connector;
pub use leases::Leadership;

/// The schema, one step per file in `migrations/postgres/`; shipped steps are never
/// edited.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_events.sql"),
    include_str!("../../../migrations/postgres/0002_feed_leases.sql"),
    include_str!("../../../migrations/postgres/0003_projections.sql"),
];

/// The advisory lock key that serialises appends (and migrations): "vigia" in ASCII.
const LOG_LOCK: i64 = 0x0076_6967_6961;
/// The advisory lock key that serialises projection writes ("vigiap"): two daemons
/// catching up at once would otherwise both apply the events after one checkpoint
/// (counting a poll twice). Apart from `LOG_LOCK`, so catching up never holds up
/// appends.
const PROJECTIONS_LOCK: i64 = 0x7669_6769_6170;

const SELECT_EVENT: &str = "SELECT seq, stream, version, kind, schema_version, payload::text, \
     recorded_at, idempotency_key FROM events";

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// A clonable handle on the event log in a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Job>,
    head: watch::Sender<u64>,
    connector: Arc<Connector>,
}

/// What the server said, without the connection string: its own message and
/// SQLSTATE, or the client's account of a failure below SQL (refused, timed out, TLS).
fn server_says(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => crate::config::error_chain(e),
    }
}

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Postgres(server_says(&e))
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        pg(e)
    }
}

/// What `vigia check` reports of a PostgreSQL database, found without writing to it.
#[derive(Debug, Clone)]
pub struct PgStatus {
    /// `user@host:port/dbname`, without the password.
    pub server: String,
    /// Whether the session is encrypted (TLS).
    pub encrypted: bool,
    /// Schema steps applied (0: vigia has not written there yet).
    pub schema: i64,
    /// Schema steps this build knows.
    pub known: usize,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/dbname`, its password and TLS
    /// options in the URL) and brings the schema up to date.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        PgStore::start(Connector::new(url, None)?)
    }

    /// Connects to the config's database: the password from `database_password_env`
    /// or `_file` when one is named, else the URL's.
    pub fn open(db: &PostgresDatabase) -> Result<PgStore, StoreError> {
        PgStore::start(Connector::for_database(db)?)
    }

    /// Connects and reads what `vigia check` shows, changing nothing: a database
    /// written by a newer vigia is refused as `connect` would refuse it.
    pub fn inspect(db: &PostgresDatabase) -> Result<PgStatus, StoreError> {
        let connector = Connector::for_database(db)?;
        let mut client = connector.connect()?;
        let row = client
            .query_one(
                "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false),
                        to_regclass('vigia_schema') IS NOT NULL",
                &[],
            )
            .map_err(pg)?;
        let (encrypted, has_schema): (bool, bool) =
            (row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?);
        let schema = if has_schema {
            schema_version(&mut client)?
        } else {
            0
        };
        refuse_newer(connector.server(), schema)?;
        Ok(PgStatus {
            server: connector.server().to_string(),
            encrypted,
            schema,
            known: MIGRATIONS.len(),
        })
    }

    /// The connection's thread, started; answers once the schema is up to date.
    fn start(connector: Connector) -> Result<PgStore, StoreError> {
        let connector = Arc::new(connector);
        let for_thread = connector.clone();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::Builder::new()
            .name("vigia-store-postgres".into())
            .spawn(move || {
                let opened = for_thread.connect().and_then(|mut c| {
                    migrate(&mut c, for_thread.server())?;
                    Ok(c)
                });
                let mut client = match opened {
                    Ok(mut c) => {
                        let head = head_seq(&mut c);
                        let _ = ready_tx.send(head);
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut reconnect = Reconnect::default();
                while let Ok(job) = queue.recv() {
                    if client.is_closed() {
                        if let Some(fresh) = reconnect.attempt(&for_thread) {
                            client = fresh;
                        }
                    }
                    job(&mut client);
                }
            })
            .map_err(|e| StoreError::Postgres(format!("cannot start its thread: {e}")))?;
        let head = ready.recv().map_err(|_| StoreError::WriterGone)??;
        let inner = Arc::new(Inner {
            jobs,
            head: watch::channel(head).0,
            connector,
        });
        listen_for_appends(inner.connector.clone(), Arc::downgrade(&inner));
        Ok(PgStore { inner })
    }

    /// Runs `job` in one transaction on the connection's thread, under the projections'
    /// lock: committed if it returns `Ok`, rolled back otherwise. How projections write
    /// their rows and checkpoints together, one writer at a time across every daemon
    /// on the database (appends are not held up: they take a lock of their own).
    pub fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(move |client| {
            let mut tx = client.transaction().map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PROJECTIONS_LOCK])
                .map_err(pg)?;
            let out = job(&mut tx)?;
            tx.commit().map_err(pg)?;
            Ok(out)
        })
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::channel();
        self.inner
            .jobs
            .send(Box::new(move |client| {
                let _ = reply.send(f(client));
            }))
            .map_err(|_| StoreError::WriterGone)?;
        answer.recv().map_err(|_| StoreError::WriterGone)?
    }
}

/// The first wait before another reconnection attempt, doubled by each failure.
const RECONNECT_FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between reconnection attempts.
const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(30);

/// Reconnection after the server dropped the connection (a restart, a failover, a
/// network cut, an administrator's `pg_terminate_backend`): tried before the next job
/// once the connection is seen closed, then no sooner than a wait that doubles with
/// each failure. A job that arrives while the connection is down fails at once with
/// the client's "connection closed" (the caller retries its work, as after any store
/// error), so nothing waits on a server that is gone, and nothing is half written:
/// the transaction the connection was in is rolled back by the server.
#[derive(Default)]
struct Reconnect {
    failures: u32,
    not_before: Option<Instant>,
}

impl Reconnect {
    fn attempt(&mut self, connector: &Connector) -> Option<Client> {
        if self.not_before.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        match connector.connect() {
            Ok(client) => {
                tracing::info!(
                    server = connector.server(),
                    after_failures = self.failures,
                    "reconnected to PostgreSQL"
                );
                *self = Reconnect::default();
                Some(client)
            }
            Err(e) => {
                self.failures += 1;
                let wait = RECONNECT_FIRST_WAIT
                    .saturating_mul(1 << (self.failures - 1).min(5))
                    .min(RECONNECT_MAX_WAIT);
                self.not_before = Some(Instant::now() + wait);
                tracing::warn!(server = connector.server(), error = %e, retry_in_s = wait.as_secs(), "cannot reconnect to PostgreSQL");
                None
            }
        }
    }
}

/// Followers hear every daemon's appends, not only this handle's: each append
/// transaction notifies `vigia_events` with its last position at commit, and a thread
/// with a connection of its own listens. It is listening when this returns, so an
/// append made after `connect` returned is heard. It stops when the store is dropped
/// (checked every second). A lost connection is made again as `Reconnect` allows;
/// meanwhile `follow` hears this handle's own appends only, as on SQLite, and a
/// follower still misses nothing when it reads.
fn listen_for_appends(connector: Arc<Connector>, store: std::sync::Weak<Inner>) {
    use postgres::fallible_iterator::FallibleIterator;
    let (listening_tx, listening) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("vigia-store-postgres-listen".into())
        .spawn(move || {
            let started = connector.connect().and_then(|mut client| {
                client.batch_execute("LISTEN vigia_events").map_err(pg)?;
                Ok(client)
            });
            let mut client = match started {
                Ok(client) => {
                    let _ = listening_tx.send(Ok(()));
                    client
                }
                Err(e) => {
                    let _ = listening_tx.send(Err(e));
                    return;
                }
            };
            let mut reconnect = Reconnect::default();
            loop {
                let Some(inner) = store.upgrade() else { return };
                let lost = {
                    let mut notifications = client.notifications();
                    let mut arrived = notifications.timeout_iter(Duration::from_secs(1));
                    loop {
                        match arrived.next() {
                            Ok(Some(note)) => {
                                if let Ok(seq) = note.payload().parse::<u64>() {
                                    super::advance_head(&inner.head, seq);
                                }
                            }
                            Ok(None) => break false,
                            Err(_) => break true,
                        }
                    }
                };
                drop(inner);
                if lost {
                    match listen_again(&connector, &store, &mut reconnect) {
                        Some(fresh) => client = fresh,
                        None => return,
                    }
                }
            }
        });
    let failed = match spawned {
        Err(e) => Some(e.to_string()),
        Ok(_) => match listening.recv() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("its thread stopped".to_string()),
        },
    };
    if let Some(error) = failed {
        tracing::warn!(%error, "not listening for other daemons' appends");
    }
}

/// A listening connection again after the last one was lost, trying as `Reconnect`
/// allows until it works or the store is dropped (None). The head moves to the log's
/// last position on the way, since notifications sent while nobody listened are gone.
fn listen_again(
    connector: &Connector,
    store: &std::sync::Weak<Inner>,
    reconnect: &mut Reconnect,
) -> Option<Client> {
    loop {
        let inner = store.upgrade()?;
        if let Some(mut client) = reconnect.attempt(connector) {
            if client.batch_execute("LISTEN vigia_events").is_ok() {
                if let Ok(head) = head_seq(&mut client) {
                    super::advance_head(&inner.head, head);
                }
                return Some(client);
            }
        }
        drop(inner);
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn migrate(client: &mut Client, server: &str) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
        .map_err(pg)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS vigia_schema (version INTEGER NOT NULL)")
        .map_err(pg)?;
    let current = schema_version(&mut tx)?;
    refuse_newer(server, current)?;
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).map_err(pg)?;
        tx.execute(
            "INSERT INTO vigia_schema (version) VALUES ($1)",
            &[&(step as i32 + 1)],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)
}

/// The schema steps applied (one row each in `vigia_schema`).
fn schema_version(client: &mut impl postgres::GenericClient) -> Result<i64, StoreError> {
    client
        .query_one("SELECT COUNT(*) FROM vigia_schema", &[])
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)
}

/// A schema with more steps than this build knows was written by a newer vigia,
/// whose events and tables this one may misread: refused, as SQLite's store does.
fn refuse_newer(server: &str, found: i64) -> Result<(), StoreError> {
    let known = MIGRATIONS.len();
    if found > known as i64 {
        return Err(StoreError::TooNewPostgres {
            database: server.to_string(),
            found,
            known,
        });
    }
    Ok(())
}

fn head_seq(client: &mut Client) -> Result<u64, StoreError> {
    let head: i64 = client
        .query_one("SELECT COALESCE(MAX(seq), 0) FROM events", &[])
        .map_err(pg)?
        .get(0);
    Ok(head as u64)
}

/// Rows fetched at a time by `events_after_in`.
const FETCH: i32 = 16;

/// Events after `after`, in log order, at most `limit`, stopping after the one that
/// brings their payloads to `max_bytes`, within a transaction already open (a write
/// job's, see `PgStore::write`). Rows come `FETCH` at a time through a portal, so
/// memory stays near `max_bytes` however large the payloads.
pub fn events_after_in(
    tx: &mut postgres::Transaction<'_>,
    after: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let statement = tx
        .prepare(&format!(
            "{SELECT_EVENT} WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .map_err(pg)?;
    let portal = tx.bind(&statement, &[&after, &limit]).map_err(pg)?;
    let (mut events, mut bytes) = (Vec::new(), 0);
    loop {
        let rows = tx.query_portal(&portal, FETCH).map_err(pg)?;
        let exhausted = rows.len() < FETCH as usize;
        for row in &rows {
            let event = stored(row)?;
            bytes += event.payload.get().len();
            events.push(event);
            if bytes >= max_bytes {
                return Ok(events);
            }
        }
        if exhausted {
            return Ok(events);
        }
    }
}

fn stored(row: &Row) -> Result<StoredEvent, StoreError> {
    let payload: String = row.get(5);
    Ok(StoredEvent {
        seq: row.get::<_, i64>(0) as u64,
        stream: row.get(1),
        version: row.get::<_, i64>(2) as u64,
        kind: row.get(3),
        schema_version: row.get::<_, i32>(4) as u32,
        payload: RawValue::from_string(payload)?,
        recorded_at: row.get(6),
        idempotency_key: row.get(7),
    })
}

fn append_all(client: &mut Client, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
    let encoded = events
        .into_iter()
        .map(|new| Ok((new.event.payload_raw()?, new)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
        .map_err(pg)?;
    let recorded_at = now_rfc3339();
    let mut versions = std::collections::HashMap::<String, u64>::new();
    let mut out = Vec::with_capacity(encoded.len());
    for (payload, new) in encoded {
        if let Some(key) = &new.idempotency_key {
            let existing = tx
                .query_opt(
                    &format!("{SELECT_EVENT} WHERE idempotency_key = $1"),
                    &[key],
                )
                .map_err(pg)?;
            if let Some(row) = existing {
                out.push(Appended::Duplicate(stored(&row)?));
                continue;
            }
        }
        let current = match versions.get(&new.stream) {
            Some(v) => *v,
            None => {
                let v: i64 = tx
                    .query_one(
                        "SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = $1",
                        &[&new.stream],
                    )
                    .map_err(pg)?
                    .get(0);
                v as u64
            }
        };
        // On a conflict the transaction is dropped unfinished: nothing of the batch
        // is recorded.
        new.expected.admit(&new.stream, current)?;
        let version = current + 1;
        let seq: i64 = tx
            .query_one(
                "INSERT INTO events (stream, version, kind, schema_version, payload, recorded_at, idempotency_key)
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7) RETURNING seq",
                &[
                    &new.stream,
                    &(version as i64),
                    &new.event.kind(),
                    &(new.event.schema_version() as i32),
                    &payload.get(),
                    &recorded_at,
                    &new.idempotency_key,
                ],
            )
            .map_err(pg)?
            .get(0);
        versions.insert(new.stream.clone(), version);
        out.push(Appended::New(StoredEvent {
            seq: seq as u64,
            stream: new.stream.clone(),
            version,
            kind: new.event.kind().to_string(),
            schema_version: new.event.schema_version(),
            recorded_at: recorded_at.clone(),
            idempotency_key: new.idempotency_key.clone(),
            payload,
        }));
    }
    if let Some(last) = out
        .iter()
        .filter(|a| a.is_new())
        .map(|a| a.event().seq)
        .max()
    {
        // Delivered at commit, to every listening handle (other daemons too).
        tx.execute("SELECT pg_notify('vigia_events', $1)", &[&last.to_string()])
            .map_err(pg)?;
    }
    tx.commit().map_err(pg)?;
    Ok(out)
}

impl EventStore for PgStore {
    fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let appended = self.run(move |client| append_all(client, events))?;
        if let Some(last) = appended
            .iter()
            .filter(|a| a.is_new())
            .map(|a| a.event().seq)
            .max()
        {
            super::advance_head(&self.inner.head, last);
        }
        Ok(appended)
    }

    fn read_from(
        &self,
        after_seq: u64,
        limit: usize,
        kind: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let after = after_seq as i64;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let kind = kind.map(str::to_string);
        self.run(move |client| {
            let rows = match &kind {
                Some(kind) => client.query(
                    &format!("{SELECT_EVENT} WHERE seq > $1 AND kind = $2 ORDER BY seq LIMIT $3"),
                    &[&after, kind, &limit],
                ),
                None => client.query(
                    &format!("{SELECT_EVENT} WHERE seq > $1 ORDER BY seq LIMIT $2"),
                    &[&after, &limit],
                ),
            }
            .map_err(pg)?;
            rows.iter().map(stored).collect()
        })
    }

    fn read_stream(&self, stream: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let stream = stream.to_string();
        self.run(move |client| {
            client
                .query(
                    &format!("{SELECT_EVENT} WHERE stream = $1 ORDER BY version"),
                    &[&stream],
                )
                .map_err(pg)?
                .iter()
                .map(stored)
                .collect()
        })
    }

    fn head(&self) -> Result<u64, StoreError> {
        self.run(head_seq)
    }

    fn follow(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    fn probe(&self) -> Result<u64, StoreError> {
        self.run(head_seq)
    }

    fn import(&self, events: Vec<StoredEvent>) -> Result<(), StoreError> {
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(());
        };
        self.run(move |client| {
            let mut tx = client.transaction().map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])
                .map_err(pg)?;
            let head: i64 = tx
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM events", &[])
                .map_err(pg)?
                .get(0);
            super::check_import_order(head as u64, &events)?;
            let insert = tx
                .prepare(
                    "INSERT INTO events (seq, stream, version, kind, schema_version, payload, recorded_at, idempotency_key)
                     OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8)",
                )
                .map_err(pg)?;
            for e in &events {
                tx.execute(
                    &insert,
                    &[
                        &(e.seq as i64),
                        &e.stream,
                        &(e.version as i64),
                        &e.kind,
                        &(e.schema_version as i32),
                        &e.payload.get(),
                        &e.recorded_at,
                        &e.idempotency_key,
                    ],
                )
                .map_err(pg)?;
            }
            // Later appends take positions after the imported ones.
            tx.execute(
                "SELECT setval(pg_get_serial_sequence('events', 'seq'), $1)",
                &[&(last as i64)],
            )
            .map_err(pg)?;
            tx.commit().map_err(pg)
        })?;
        super::advance_head(&self.inner.head, last);
        Ok(())
    }
}
