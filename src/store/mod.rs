//! The append-only event log: what it promises (`EventStore`), what goes in and comes
//! out of it (`NewEvent`, `StoredEvent`, `Appended`, `ExpectedVersion`) and how it
//! fails (`StoreError`), whatever the backend. `sqlite` is today's backend, and the
//! one place that opens the database. What events mean is left to `crate::events`;
//! what is built from them, to `crate::projections`.

mod error;
mod postgres;
mod sqlite;

pub use self::postgres::{events_after_in as pg_events_after_in, Leadership, PgStatus, PgStore};
pub use error::StoreError;
pub use sqlite::{append_in, events_after_in, stream_events, Clock, OpenOptions, SqliteStore};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::events::Event;

/// What the appender believes the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this version.
    Exactly(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exactly(v) => write!(f, "version {v}"),
        }
    }
}

/// An event on its way into the log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub event: Event,
    pub idempotency_key: Option<String>,
}

impl NewEvent {
    pub fn new(stream: impl Into<String>, event: Event) -> Self {
        NewEvent {
            stream: stream.into(),
            expected: ExpectedVersion::Any,
            event,
            idempotency_key: None,
        }
    }

    pub fn expecting(mut self, expected: ExpectedVersion) -> Self {
        self.expected = expected;
        self
    }

    pub fn idempotent(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// An event as the log holds it. The payload stays raw JSON until someone decodes it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub stream: String,
    pub version: u64,
    pub kind: String,
    pub schema_version: u32,
    pub recorded_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub payload: Box<RawValue>,
}

impl StoredEvent {
    pub fn decode(&self) -> Result<Event, StoreError> {
        Event::decode(&self.kind, self.schema_version, self.payload.get()).map_err(|source| {
            StoreError::Decode {
                seq: self.seq,
                source,
            }
        })
    }

    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
        let payload: String = row.get(5)?;
        Ok(StoredEvent {
            seq: row.get(0)?,
            stream: row.get(1)?,
            version: row.get(2)?,
            kind: row.get(3)?,
            schema_version: row.get(4)?,
            payload: RawValue::from_string(payload).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    5,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            recorded_at: row.get(6)?,
            idempotency_key: row.get(7)?,
        })
    }
}

/// What happened to one appended event.
#[derive(Debug, Clone)]
pub enum Appended {
    /// Written now.
    New(StoredEvent),
    /// Its idempotency key was already in the log: this is the original event.
    Duplicate(StoredEvent),
}

impl Appended {
    pub fn event(&self) -> &StoredEvent {
        match self {
            Appended::New(e) | Appended::Duplicate(e) => e,
        }
    }

    pub fn is_new(&self) -> bool {
        matches!(self, Appended::New(_))
    }
}

/// The event log's contract: what every backend gives, and all that the log's own
/// users (ingestion, tracking, delivery, `vigia events`, replay) may rely on. Events
/// are appended to streams at an expected version, atomically per batch, each at most
/// once per idempotency key; they are read back in one global order, from a position
/// or by stream; a follower hears of new events and reads from where it stopped.
/// `SqliteStore` is today's backend; `tests/event_store.rs` holds the conformance
/// suite a second one must pass.
pub trait EventStore: Send + Sync {
    /// Appends events atomically: all of them, or (on a conflict or error) none. An
    /// event whose idempotency key is already in the log is not written again; its
    /// original comes back as `Appended::Duplicate`.
    fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError>;
    /// Events after `after_seq` in log order, at most `limit`, optionally of one kind.
    fn read_from(
        &self,
        after_seq: u64,
        limit: usize,
        kind: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Every event of one stream, in version order.
    fn read_stream(&self, stream: &str) -> Result<Vec<StoredEvent>, StoreError>;
    /// The highest position in the log, as the database has it now.
    fn head(&self) -> Result<u64, StoreError>;
    /// The latest position appended through this handle, as it moves. A follower
    /// reads from its own position whenever this changes, so it misses nothing.
    fn follow(&self) -> watch::Receiver<u64>;
    /// Whether the database answers a fresh connection (health checks).
    fn probe(&self) -> Result<u64, StoreError>;
    /// Copies events exactly as another log recorded them (position, stream, version,
    /// kind, payload, time, key), in one transaction: how `vigia migrate` moves a log.
    /// Refused unless each event comes after this log's head, in order, so an import
    /// can only extend a log (an empty one, in practice), never interleave with it.
    fn import(&self, events: Vec<StoredEvent>) -> Result<(), StoreError>;
}

impl ExpectedVersion {
    /// Whether a stream at `current` may take the next event; a `Conflict` naming the
    /// stream's real version if not.
    pub(crate) fn admit(self, stream: &str, current: u64) -> Result<(), StoreError> {
        let fits = match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exactly(v) => current == v,
        };
        if fits {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                stream: stream.to_string(),
                expected: self.to_string(),
                actual: current,
            })
        }
    }
}

/// Moves a handle's head to `seq` if that is further on, telling its followers.
pub(crate) fn advance_head(head: &watch::Sender<u64>, seq: u64) {
    head.send_if_modified(|current| {
        let moved = seq > *current;
        *current = (*current).max(seq);
        moved
    });
}

/// Why an import was refused: the events do not follow the log's head in order.
pub(crate) fn check_import_order(head: u64, events: &[StoredEvent]) -> Result<(), StoreError> {
    let mut last = head;
    for e in events {
        if e.seq <= last {
            return Err(StoreError::Write(format!(
                "import refused: event {} does not come after position {last} (the target log must be empty, and the events in order)",
                e.seq
            )));
        }
        last = e.seq;
    }
    Ok(())
}

/// Now, as the log writes it: RFC 3339 in UTC with milliseconds, so text order is time order.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
