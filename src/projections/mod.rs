//! Projections: tables built from the event log, each owned by one projection.
//!
//! A projection applies events to its own tables; the runner here feeds it the events
//! after its checkpoint and writes its rows and its new checkpoint in one transaction,
//! so a crash never leaves the two out of step. `rebuild` clears every projection and
//! replays the whole log through the same `apply` path, which is why replay and
//! incremental processing give the same rows.

mod articles;
mod columns;
mod detections;
mod feeds;
mod outbox;
mod stances;
mod subscribers;

use rusqlite::{OptionalExtension, Transaction};

use crate::events::Event;
use crate::store::{SqliteStore, StoreError, StoredEvent};

pub use articles::{ArticleRow, Articles};
pub use detections::{Detections, RelevantArticle};
pub use feeds::{FeedHealth, FeedHealthRow};
pub use outbox::{Outbox, OutboxRow, OutboxStatus};
pub use stances::{CurrentStance, StanceChange, Stances, TimelinePoint};
pub use subscribers::{SubscriberRow, SubscriberStatus, Subscribers};

/// Events applied per transaction: bounds memory and the length of the writer's lock.
const CHUNK: usize = 20_000;
/// Payload bytes applied in one transaction, at most (about: the event that crosses it
/// is the last).
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

pub trait Projection: Send + Sync {
    /// Its name in `projection_checkpoints`.
    fn name(&self) -> &'static str;
    /// The tables it owns; cleared before a rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// Whether it reads events of this kind (others are skipped without decoding).
    fn handles(&self, kind: &str) -> bool;
    fn apply(
        &self,
        tx: &Transaction<'_>,
        stored: &StoredEvent,
        event: &Event,
    ) -> rusqlite::Result<()>;
}

/// Every projection vigia keeps, in the order they are applied.
pub fn all() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(FeedHealth),
        Box::new(Articles),
        Box::new(Detections),
        Box::new(Stances),
        Box::new(Subscribers),
        Box::new(Outbox),
    ]
}

/// Brings every projection up to the head of the log. Returns how many events were applied.
pub fn catch_up(store: &SqliteStore) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let (applied, more) = store.write(|tx| apply_chunk(tx, &all()))?;
        total += applied;
        if !more {
            return Ok(total);
        }
    }
}

/// Brings every projection up to date within the caller's transaction (a write job's):
/// what a check that reads projections runs first, in the same step as its append.
pub fn catch_up_in(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let projections = all();
    let mut total = 0;
    loop {
        let (applied, more) = apply_chunk(tx, &projections)?;
        total += applied;
        if !more {
            return Ok(total);
        }
    }
}

/// Clears every projection and rebuilds it from the whole log.
pub fn rebuild(store: &SqliteStore) -> Result<u64, StoreError> {
    store.write(|tx| {
        for projection in all() {
            for table in projection.tables() {
                tx.execute(&format!("DELETE FROM \"{table}\""), [])?;
            }
            tx.execute(
                "DELETE FROM projection_checkpoints WHERE projection = ?1",
                [projection.name()],
            )?;
        }
        Ok(())
    })?;
    catch_up(store)
}

fn checkpoint(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<u64> {
    Ok(tx
        .query_row(
            "SELECT seq FROM projection_checkpoints WHERE projection = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Applies the next events to every projection that has not seen them, within the
/// caller's transaction, and moves the checkpoints: at most `CHUNK` events or about
/// `CHUNK_BYTES` of payload, whichever comes first, read one row at a time, so a
/// transaction's size and the memory it takes stay bounded however far behind the
/// projections are. Returns the events read, and whether more may follow.
fn apply_chunk(
    tx: &Transaction<'_>,
    projections: &[Box<dyn Projection>],
) -> Result<(u64, bool), StoreError> {
    let checkpoints = projections
        .iter()
        .map(|p| checkpoint(tx, p.name()))
        .collect::<rusqlite::Result<Vec<u64>>>()?;
    let Some(&from) = checkpoints.iter().min() else {
        return Ok((0, false));
    };
    let mut stmt = tx.prepare_cached(
        "SELECT seq, stream, version, kind, schema_version, payload, recorded_at, idempotency_key
         FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query(rusqlite::params![from, CHUNK as i64])?;
    let (mut read, mut bytes, mut last) = (0u64, 0usize, None);
    while let Some(row) = rows.next()? {
        let stored = StoredEvent::from_row(row)?;
        read += 1;
        bytes += stored.payload.get().len();
        last = Some(stored.seq);
        let interested: Vec<&Box<dyn Projection>> = projections
            .iter()
            .zip(&checkpoints)
            .filter(|(p, &cp)| stored.seq > cp && p.handles(&stored.kind))
            .map(|(p, _)| p)
            .collect();
        if !interested.is_empty() {
            let event = stored.decode()?;
            for projection in interested {
                projection.apply(tx, &stored, &event)?;
            }
        }
        if bytes >= CHUNK_BYTES {
            break;
        }
    }
    drop(rows);
    drop(stmt);
    let Some(last) = last else {
        return Ok((0, false));
    };
    for projection in projections {
        tx.execute(
            "INSERT INTO projection_checkpoints (projection, seq) VALUES (?1, ?2)
             ON CONFLICT (projection) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            rusqlite::params![projection.name(), last],
        )?;
    }
    Ok((read, read == CHUNK as u64 || bytes >= CHUNK_BYTES))
}
