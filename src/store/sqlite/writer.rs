//! The store's single writer: a thread that owns the write connection.
//!
//! Appends from every task queue here; the thread takes whatever is waiting and writes
//! it in one transaction (group commit), each request under its own savepoint so that
//! one caller's conflict does not fail another's events. One writer means SQLite never
//! sees two writers of ours competing for its lock, and a crash loses whole
//! transactions only, never part of one.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::watch;

use super::queue::{QueueBudget, QueueSlot};
use super::{Appended, Clock, NewEvent, StoreError, StoredEvent, SELECT_EVENT};

/// Most append requests grouped into one transaction; bounds the latency of the first.
const MAX_GROUP: usize = 512;

thread_local! {
    /// The clock of the store whose writer runs on this thread: appends made inside a
    /// write job (`append_in`) are stamped by the same clock as the writer's own.
    static CLOCK: std::cell::RefCell<Clock> = std::cell::RefCell::new(Clock::wall());
}

/// A unit of work run in its own transaction on the writer's connection.
type WriteJob = Box<dyn FnOnce(&Transaction<'_>) -> JobDone + Send>;

/// What a job asks for when its work is done: commit or not, and whom to tell the
/// outcome once the transaction is really over (a caller must never hear "done"
/// before the commit, or it could read, or exit, before the rows are there).
struct JobDone {
    commit: bool,
    finish: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

enum Request {
    Append {
        events: Vec<Encoded>,
        reply: Reply,
        /// The request's bytes in the queue, given back once it is answered.
        slot: QueueSlot,
    },
    Job(WriteJob),
}

type Answer = Result<Vec<Appended>, StoreError>;

/// Where an append's outcome goes: a thread waiting on a channel, or a task awaiting
/// it (so async callers never block a runtime worker on the writer).
enum Reply {
    Blocking(mpsc::Sender<Answer>),
    Async(tokio::sync::oneshot::Sender<Answer>),
}

impl Reply {
    fn send(self, answer: Answer) {
        // A caller that went away (a cancelled task) no longer needs the answer; the
        // events are recorded or not all the same.
        match self {
            Reply::Blocking(tx) => drop(tx.send(answer)),
            Reply::Async(tx) => drop(tx.send(answer)),
        }
    }
}

/// An event with its payload already encoded: the caller's thread does the JSON, so
/// the one writer thread only writes.
struct Encoded {
    new: NewEvent,
    payload: Box<serde_json::value::RawValue>,
}

pub(super) struct Writer {
    requests: mpsc::Sender<Request>,
    queue: Arc<QueueBudget>,
}

impl Writer {
    pub(super) fn spawn(
        conn: Connection,
        path: PathBuf,
        head: watch::Sender<u64>,
        clock: Clock,
        queue: Arc<QueueBudget>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("vigia-store-writer".into())
            .spawn(move || {
                CLOCK.with(|c| *c.borrow_mut() = clock);
                run(conn, path, head, rx)
            })
            .expect("spawning the store writer thread: the OS refused a thread at start-up");
        Writer {
            requests: tx,
            queue,
        }
    }

    pub(super) fn queue(&self) -> &QueueBudget {
        &self.queue
    }

    pub(super) fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let events = encode(events)?;
        let slot = self.queue.take(queued_bytes(&events));
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(Request::Append {
                events,
                reply: Reply::Blocking(reply),
                slot,
            })
            .map_err(|_| StoreError::WriterGone)?;
        answer.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// The same as `append`, awaited instead of waited for.
    pub(super) async fn append_async(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Appended>, StoreError> {
        let events = encode(events)?;
        let slot = self.queue.take_async(queued_bytes(&events)).await;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send(Request::Append {
                events,
                reply: Reply::Async(reply),
                slot,
            })
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    pub(super) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::channel();
        let boxed: WriteJob = Box::new(move |tx| {
            let result = job(tx);
            JobDone {
                commit: result.is_ok(),
                finish: Box::new(move |committed| {
                    let _ = reply.send(committed.and(result));
                }),
            }
        });
        self.requests
            .send(Request::Job(boxed))
            .map_err(|_| StoreError::WriterGone)?;
        answer.recv().map_err(|_| StoreError::WriterGone)?
    }
}

/// What a request holds in the queue: its payloads and stream names.
fn queued_bytes(events: &[Encoded]) -> usize {
    events
        .iter()
        .map(|e| e.payload.get().len() + e.new.stream.len())
        .sum()
}

fn encode(events: Vec<NewEvent>) -> Result<Vec<Encoded>, StoreError> {
    events
        .into_iter()
        .map(|new| {
            Ok(Encoded {
                payload: new.event.payload_raw()?,
                new,
            })
        })
        .collect()
}

/// Appends within a write job's transaction (see `SqliteStore::write`): how a check
/// and the append it allows happen as one step, with no other write between them.
pub fn append_in(tx: &Transaction<'_>, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
    let path = PathBuf::from(tx.path().unwrap_or_default());
    let events = encode(events)?;
    let step = |sql: &str| {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::from_sqlite(e, &path))
    };
    step("SAVEPOINT append_in_job")?;
    match append_all(tx, events, &path) {
        Ok(appended) => {
            step("RELEASE append_in_job")?;
            Ok(appended)
        }
        Err(err) if tx.is_autocommit() => Err(err),
        Err(err) => {
            step("ROLLBACK TO append_in_job")?;
            step("RELEASE append_in_job")?;
            Err(err)
        }
    }
}

fn run(
    mut conn: Connection,
    path: PathBuf,
    head: watch::Sender<u64>,
    requests: mpsc::Receiver<Request>,
) {
    while let Ok(first) = requests.recv() {
        let mut appends = Vec::new();
        // The group's bytes stay counted in the queue until the group is answered.
        let mut slots = Vec::new();
        let mut pending = Some(first);
        while let Some(request) = pending.take() {
            match request {
                Request::Append {
                    events,
                    reply,
                    slot,
                } => {
                    appends.push((events, reply));
                    slots.push(slot);
                }
                Request::Job(job) => {
                    // Keep log order: appends queued before the job are written first.
                    write_group(&mut conn, &path, &head, std::mem::take(&mut appends));
                    slots.clear();
                    run_job(&mut conn, &path, &head, job);
                }
            }
            if appends.len() < MAX_GROUP {
                pending = requests.try_recv().ok();
            }
        }
        write_group(&mut conn, &path, &head, appends);
        drop(slots);
    }
}

fn write_group(
    conn: &mut Connection,
    path: &Path,
    head: &watch::Sender<u64>,
    group: Vec<(Vec<Encoded>, Reply)>,
) {
    if group.is_empty() {
        return;
    }
    let (batches, replies): (Vec<Vec<Encoded>>, Vec<Reply>) = group.into_iter().unzip();
    let mut results: Vec<Result<Vec<Appended>, StoreError>> = Vec::with_capacity(batches.len());
    let outcome = (|| -> Result<u64, StoreError> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::from_sqlite(e, path))?;
        // Each request under its own savepoint (prepared once, not parsed per
        // request), so one caller's conflict does not undo another's events. A lone
        // request needs none: the transaction is its undo. That matters, because
        // under a savepoint SQLite copies every page the request touches first into a
        // statement journal (a fifth of a large batch's time).
        let lone = batches.len() == 1;
        let step = |tx: &Transaction<'_>, sql: &str| -> Result<(), StoreError> {
            if lone {
                return Ok(());
            }
            tx.prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute([]))
                .map(|_| ())
                .map_err(|e| StoreError::from_sqlite(e, path))
        };
        for events in batches {
            step(&tx, "SAVEPOINT append_request")?;
            match append_all(&tx, events, path) {
                Ok(appended) => {
                    step(&tx, "RELEASE append_request")?;
                    results.push(Ok(appended));
                }
                // A lone request's failure undoes the transaction (dropped
                // uncommitted), and its caller gets the error itself.
                Err(err) if lone || tx.is_autocommit() => {
                    // SQLite rolled the whole transaction back itself (a full disk
                    // does, when an insert has no statement journal to undo just
                    // itself): the group fails as one, with the real cause.
                    return Err(err);
                }
                Err(err) => {
                    step(&tx, "ROLLBACK TO append_request")?;
                    step(&tx, "RELEASE append_request")?;
                    results.push(Err(err));
                }
            }
        }
        let head_seq: u64 = tx
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| StoreError::from_sqlite(e, path))?;
        tx.commit().map_err(|e| StoreError::from_sqlite(e, path))?;
        Ok(head_seq)
    })();
    match outcome {
        Ok(seq) => {
            super::super::advance_head(head, seq);
            for (reply, result) in replies.into_iter().zip(results) {
                reply.send(result);
            }
        }
        Err(err) if replies.len() == 1 => {
            // The transaction did not commit: nothing of the request is in the log.
            if let Some(reply) = replies.into_iter().next() {
                reply.send(Err(err));
            }
        }
        Err(err) => {
            // The transaction did not commit: nothing of the group is in the log.
            for reply in replies {
                reply.send(Err(err.for_another_caller()));
            }
        }
    }
}

fn run_job(conn: &mut Connection, path: &Path, head: &watch::Sender<u64>, job: WriteJob) {
    match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => {
            let done = job(&tx);
            // A job may have appended (`append_in`): followers hear of it as of any
            // append, once it is committed.
            let seq = super::head_seq(&tx).ok();
            let outcome = if done.commit {
                tx.commit().map_err(|e| StoreError::from_sqlite(e, path))
            } else {
                tx.rollback().map_err(|e| StoreError::from_sqlite(e, path))
            };
            if let (true, Ok(()), Some(seq)) = (done.commit, &outcome, seq) {
                super::super::advance_head(head, seq);
            }
            (done.finish)(outcome);
        }
        Err(e) => {
            // The job's reply channel drops with it: the caller sees WriterGone.
            tracing::error!(error = %StoreError::from_sqlite(e, path), "cannot begin a write transaction");
        }
    }
}

fn append_all(
    tx: &Connection,
    events: Vec<Encoded>,
    path: &Path,
) -> Result<Vec<Appended>, StoreError> {
    let recorded_at = CLOCK.with(|c| c.borrow().now_rfc3339());
    let mut out = Vec::with_capacity(events.len());
    let mut versions: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let sqlite = |e| StoreError::from_sqlite(e, path);
    // Prepared once per request rather than looked up in the cache per event.
    let mut by_key = tx
        .prepare_cached(&format!("{SELECT_EVENT} WHERE idempotency_key = ?1"))
        .map_err(sqlite)?;
    let mut stream_version = tx
        .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?1")
        .map_err(sqlite)?;
    // No RETURNING (it runs through a temporary table and a statement journal, a
    // quarter of an append's time) and OR FAIL (no statement journal either): a failed
    // insert rolls back the whole request's savepoint anyway.
    let mut insert = tx
        .prepare_cached(
            "INSERT OR FAIL INTO events (stream, version, kind, schema_version, payload, recorded_at, idempotency_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(sqlite)?;
    for Encoded { new, payload } in events {
        if let Some(key) = &new.idempotency_key {
            let existing = by_key
                .query_row([key], StoredEvent::from_row)
                .optional()
                .map_err(sqlite)?;
            if let Some(existing) = existing {
                out.push(Appended::Duplicate(existing));
                continue;
            }
        }
        // A stream seen earlier in this request is at the version we gave it.
        let current: u64 = match versions.get(new.stream.as_str()) {
            Some(v) => *v,
            None => stream_version
                .query_row([&new.stream], |r| r.get(0))
                .map_err(sqlite)?,
        };
        new.expected.admit(&new.stream, current)?;
        let version = current + 1;
        insert
            .execute(rusqlite::params![
                new.stream,
                version,
                new.event.kind(),
                new.event.schema_version(),
                payload.get(),
                recorded_at,
                new.idempotency_key
            ])
            .map_err(sqlite)?;
        let seq = tx.last_insert_rowid() as u64;
        versions.insert(new.stream.clone(), version);
        out.push(Appended::New(StoredEvent {
            seq,
            stream: new.stream.clone(),
            version,
            kind: new.event.kind().to_string(),
            schema_version: new.event.schema_version(),
            recorded_at: recorded_at.clone(),
            idempotency_key: new.idempotency_key.clone(),
            payload,
        }));
    }
    Ok(out)
}
