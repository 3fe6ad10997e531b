//! Projections: tables built from the event log, each owned by one projection.
//!
//! A projection applies events to its own tables; the runner here feeds it the events
//! after its checkpoint and writes its rows and its new checkpoint in one transaction,
//! so a crash never leaves the two out of step. `rebuild` clears every projection and
//! replays the whole log through the same `apply` path, which is why replay and
//! incremental processing give the same rows.
//!
//! The write side runs on either backend: `apply` is written once against `sql::Tx`,
//! and `ProjectionStore` is the store that runs a transaction for it (SQLite's writer
//! thread, or PostgreSQL's connection thread under the projections' lock). The
//! readers below each projection still read SQLite.

mod articles;
mod columns;
mod detections;
mod feeds;
mod outbox;
pub mod sql;
mod stances;
mod subscribers;

use rusqlite::Transaction;

use crate::events::Event;
use crate::store::{PgStore, SqliteStore, StoreError, StoredEvent};
use sql::{PgTx, SqliteTx, Tx};

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
/// A page: the events read from the log at a time within a chunk, at most, and their
/// payloads' bytes, about (the event that crosses it ends the page). What bounds the
/// memory a chunk takes while it is applied.
const PAGE: usize = 256;
const PAGE_BYTES: usize = 1024 * 1024;

pub trait Projection: Send + Sync {
    /// Its name in `projection_checkpoints`.
    fn name(&self) -> &'static str;
    /// The tables it owns; cleared before a rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// Whether it reads events of this kind (others are skipped without decoding).
    fn handles(&self, kind: &str) -> bool;
    fn apply(&self, tx: &mut dyn Tx, stored: &StoredEvent, event: &Event)
        -> Result<(), StoreError>;
}

/// A store that holds projections: it runs a job in one transaction on its database,
/// committed if the job succeeds and rolled back if not.
pub trait ProjectionStore {
    fn transact<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError>;
}

impl ProjectionStore for SqliteStore {
    fn transact<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write(move |tx| job(&mut SqliteTx(tx)))
    }
}

impl ProjectionStore for PgStore {
    fn transact<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut dyn Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write(move |tx| job(&mut PgTx::new(tx)))
    }
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
pub fn catch_up(store: &impl ProjectionStore) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let (applied, more) = store.transact(|tx| apply_chunk(tx, &all()))?;
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
        let (applied, more) = apply_chunk(&mut SqliteTx(tx), &projections)?;
        total += applied;
        if !more {
            return Ok(total);
        }
    }
}

/// Clears every projection and rebuilds it from the whole log.
pub fn rebuild(store: &impl ProjectionStore) -> Result<u64, StoreError> {
    store.transact(|tx| {
        for projection in all() {
            for table in projection.tables() {
                tx.execute(&format!("DELETE FROM \"{table}\""), &[])?;
            }
            tx.execute(
                "DELETE FROM projection_checkpoints WHERE projection = ?1",
                &[&projection.name()],
            )?;
        }
        Ok(())
    })?;
    catch_up(store)
}

fn checkpoint(tx: &mut dyn Tx, name: &str) -> Result<u64, StoreError> {
    let row = tx.query_opt(
        "SELECT seq FROM projection_checkpoints WHERE projection = ?1",
        &[&name],
    )?;
    Ok(row.map(|r| r.get::<u64>(0)).transpose()?.unwrap_or(0))
}

/// Applies the next events to every projection that has not seen them, within the
/// caller's transaction, and moves the checkpoints: at most `CHUNK` events or about
/// `CHUNK_BYTES` of payload, whichever comes first, read a page (`PAGE` events or
/// about `PAGE_BYTES`) at a time, so a transaction's size and the memory it takes stay
/// bounded however far behind the projections are. Returns the events read, and whether more may follow.
fn apply_chunk(
    tx: &mut dyn Tx,
    projections: &[Box<dyn Projection>],
) -> Result<(u64, bool), StoreError> {
    let checkpoints = projections
        .iter()
        .map(|p| checkpoint(tx, p.name()))
        .collect::<Result<Vec<u64>, StoreError>>()?;
    let Some(&from) = checkpoints.iter().min() else {
        return Ok((0, false));
    };
    let (mut read, mut bytes, mut last) = (0u64, 0usize, None);
    let mut more = true;
    'pages: while more {
        let want = PAGE.min(CHUNK - read as usize);
        let page = tx.events_after(last.unwrap_or(from), want, PAGE_BYTES)?;
        // A page cut short by its bytes may have more behind it; one short of both
        // limits reached the head of the log.
        let page_bytes: usize = page.iter().map(|e| e.payload.get().len()).sum();
        more = page.len() == want || page_bytes >= PAGE_BYTES;
        for stored in page {
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
                break 'pages;
            }
        }
        if read == CHUNK as u64 {
            break;
        }
    }
    let Some(last) = last else {
        return Ok((0, false));
    };
    for projection in projections {
        tx.execute(
            "INSERT INTO projection_checkpoints (projection, seq) VALUES (?1, ?2)
             ON CONFLICT (projection) DO UPDATE SET seq = CASE
                 WHEN excluded.seq > projection_checkpoints.seq THEN excluded.seq
                 ELSE projection_checkpoints.seq END",
            &[&projection.name(), &last],
        )?;
    }
    Ok((read, read == CHUNK as u64 || bytes >= CHUNK_BYTES))
}
