//! The projections' write side on PostgreSQL (the `postgres` feature,
//! `$VIGIA_TEST_POSTGRES`): the same `apply` code fed the same log gives the same rows
//! on SQLite and on PostgreSQL, table by table, compared as values; a failing write
//! leaves neither its rows nor its checkpoint; two daemons catching up at once apply
//! each event once.

use vigia::projections::{
    self,
    sql::{Cell, PgTx, SqliteTx, Tx},
};
use vigia::store::{EventStore, PgStore, SqliteStore, StoredEvent};

use crate::conformance::{admin, new_database};
use crate::event_store::{big_article_batches, mixed_batches};
use crate::util::Dir;

/// One row: its columns by name (sorted), each a value.
type Row = Vec<(String, Cell)>;
/// Every projection table (and the checkpoints), each with its rows sorted: no table
/// here has an order of its own, so rows are compared as sets.
pub(crate) type Snapshot = Vec<(String, Vec<Row>)>;

/// SQLite has no boolean type and keeps 0/1 where PostgreSQL keeps a BOOLEAN: the
/// same fact, compared as the same value.
fn as_compared(cell: Cell) -> Cell {
    match cell {
        Cell::Bool(b) => Cell::Int(i64::from(b)),
        other => other,
    }
}

fn snapshot(tx: &mut dyn Tx) -> Snapshot {
    let mut tables: Vec<&str> = projections::all()
        .iter()
        .flat_map(|p| p.tables().to_vec())
        .collect();
    tables.push("projection_checkpoints");
    tables
        .into_iter()
        .map(|table| {
            let mut rows: Vec<Row> = tx
                .query_rows(&format!("SELECT * FROM \"{table}\""), &[])
                .unwrap()
                .into_iter()
                .map(|r| {
                    let mut row: Row = r
                        .names()
                        .iter()
                        .cloned()
                        .zip(r.cells().iter().cloned().map(as_compared))
                        .collect();
                    row.sort_by(|a, b| a.0.cmp(&b.0));
                    row
                })
                .collect();
            rows.sort_by(|a, b| a.partial_cmp(b).expect("no NaN in projections"));
            (table.to_string(), rows)
        })
        .collect()
}

pub(crate) fn sqlite_snapshot(path: &std::path::Path) -> Snapshot {
    let conn = rusqlite::Connection::open(path).unwrap();
    snapshot(&mut SqliteTx(&conn))
}

pub(crate) fn pg_snapshot(url: &str) -> Snapshot {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut tx = client.transaction().unwrap();
    snapshot(&mut PgTx::new(&mut tx))
}

/// Table by table, naming the first row that differs.
pub(crate) fn assert_same_rows(expected: &Snapshot, found: &Snapshot) {
    let names = |s: &Snapshot| s.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    assert_eq!(names(expected), names(found));
    for ((table, a), (_, b)) in expected.iter().zip(found) {
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x, y, "{table}: a row differs (expected left, found right)");
        }
        assert_eq!(a.len(), b.len(), "{table}: row counts differ");
    }
}

/// A SQLite log of every event kind, its projections caught up at irregular points as
/// the daemon does: the log and the store.
fn sqlite_log(dir: &Dir, seed: u64, n: usize) -> (SqliteStore, Vec<StoredEvent>) {
    let store = SqliteStore::open(&dir.db()).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    for batch in mixed_batches(seed, n) {
        store.append(batch).unwrap();
        if rng.u8(..4) == 0 {
            projections::catch_up(&store).unwrap();
        }
    }
    projections::catch_up(&store).unwrap();
    let events = store.read_from(0, usize::MAX, None).unwrap();
    (store, events)
}

fn drop_database(name: &str) {
    let (_, mut admin) = admin();
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

/// The same log (copied event for event, times and all) built into projections on
/// both: incrementally on each, at different points, then rebuilt on PostgreSQL.
#[test]
fn sqlite_and_postgres_build_the_same_projection_rows() {
    let dir = Dir::new();
    let (_sqlite, events) = sqlite_log(&dir, 11, 3000);
    let expected = sqlite_snapshot(&dir.db());
    for (table, rows) in &expected {
        assert!(!rows.is_empty(), "{table} has rows on SQLite");
    }

    let (name, url) = new_database("vigia_pg_projections");
    let pg = PgStore::connect(&url).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    let mut rest = &events[..];
    while !rest.is_empty() {
        let (page, after) = rest.split_at(rng.usize(1..600).min(rest.len()));
        pg.import(page.to_vec()).unwrap();
        if rng.bool() {
            projections::catch_up(&pg).unwrap();
        }
        rest = after;
    }
    projections::catch_up(&pg).unwrap();
    assert_same_rows(&expected, &pg_snapshot(&url));

    let replayed = projections::rebuild(&pg).unwrap();
    assert_eq!(replayed as usize, events.len());
    assert_same_rows(&expected, &pg_snapshot(&url));
    drop(pg);
    drop_database(&name);
}

/// A write that fails half-way through a chunk leaves the projections as they were:
/// no row of the chunk, every checkpoint where it stood. Whether the database refuses
/// a row (a constraint on one stance change, after dozens of other events were applied
/// in the same transaction; once it is gone, catching up gives SQLite's rows) or the
/// code refuses an event (a payload from a newer schema, after polls were applied:
/// PostgreSQL has not aborted that transaction itself, so only the job's rollback
/// keeps the polls out).
#[test]
fn a_failing_projection_write_leaves_neither_its_rows_nor_its_checkpoint() {
    let dir = Dir::new();
    let (_sqlite, events) = sqlite_log(&dir, 23, 1500);
    let (first, second) = events.split_at(events.len() / 2);
    let refused = second
        .iter()
        .rev()
        .find(|e| e.kind == "StanceChanged")
        .expect("the second half holds a stance change")
        .seq;
    let before_refused = second.iter().filter(|e| e.seq < refused).count();
    assert!(
        before_refused > 50,
        "{before_refused} events come before it"
    );

    let (name, url) = new_database("vigia_pg_projection_failure");
    let pg = PgStore::connect(&url).unwrap();
    pg.import(first.to_vec()).unwrap();
    projections::catch_up(&pg).unwrap();
    let halfway = pg_snapshot(&url);
    let checkpoints = |s: &Snapshot| {
        s.iter()
            .find(|(t, _)| t == "projection_checkpoints")
            .map(|(_, rows)| rows.clone())
            .unwrap()
    };
    let half_seq = Cell::Int(first.last().unwrap().seq as i64);
    assert_eq!(checkpoints(&halfway).len(), projections::all().len());
    assert!(checkpoints(&halfway)
        .iter()
        .all(|row| row.iter().any(|(c, v)| c == "seq" && *v == half_seq)));

    pg.import(second.to_vec()).unwrap();
    let mut direct = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    direct
        .batch_execute(&format!(
            "ALTER TABLE stance_history ADD CONSTRAINT refused_in_test CHECK (seq <> {refused})"
        ))
        .unwrap();
    let failed = projections::catch_up(&pg).unwrap_err().to_string();
    assert!(failed.contains("refused_in_test"), "{failed}");
    assert_same_rows(&halfway, &pg_snapshot(&url));

    direct
        .batch_execute("ALTER TABLE stance_history DROP CONSTRAINT refused_in_test")
        .unwrap();
    projections::catch_up(&pg).unwrap();
    let caught_up = pg_snapshot(&url);
    assert_same_rows(&sqlite_snapshot(&dir.db()), &caught_up);

    let poll = events.iter().find(|e| e.kind == "FeedPolled").unwrap();
    let head = events.last().unwrap().seq;
    let mut more: Vec<StoredEvent> = (1..=30)
        .map(|i| StoredEvent {
            seq: head + i,
            stream: "feed:later".into(),
            version: i,
            idempotency_key: None,
            ..poll.clone()
        })
        .collect();
    more.push(StoredEvent {
        seq: head + 31,
        stream: "feed:later".into(),
        version: 31,
        schema_version: 99,
        idempotency_key: None,
        ..poll.clone()
    });
    pg.import(more).unwrap();
    let failed = projections::catch_up(&pg).unwrap_err().to_string();
    assert!(
        failed.contains(&format!("stored event {}", head + 31)),
        "{failed}"
    );
    assert_same_rows(&caught_up, &pg_snapshot(&url));
    drop((direct, pg));
    drop_database(&name);
}

/// Two daemons (two handles, each its own connection) catching up the same log at the
/// same moment: the projections' lock lets one apply each chunk and the other find
/// its checkpoint moved, so no poll is counted twice and no row inserted twice.
#[test]
fn two_daemons_catching_up_at_once_apply_each_event_once() {
    let dir = Dir::new();
    let (_sqlite, events) = sqlite_log(&dir, 31, 2000);
    let (name, url) = new_database("vigia_pg_projection_race");
    let handles: Vec<PgStore> = (0..2).map(|_| PgStore::connect(&url).unwrap()).collect();
    handles[0].import(events).unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let racers: Vec<_> = handles
        .into_iter()
        .map(|pg| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                projections::catch_up(&pg)
            })
        })
        .collect();
    for racer in racers {
        racer.join().unwrap().unwrap();
    }
    assert_same_rows(&sqlite_snapshot(&dir.db()), &pg_snapshot(&url));
    drop_database(&name);
}

/// Payloads past a page's and a chunk's byte bounds: PostgreSQL crosses them (rows
/// fetched through a portal) as SQLite does, and ends with SQLite's rows.
#[test]
fn postgres_crosses_pages_and_chunks_as_sqlite_does() {
    let dir = Dir::new();
    let sqlite = SqliteStore::open(&dir.db()).unwrap();
    for batch in big_article_batches() {
        sqlite.append(batch).unwrap();
    }
    let head = sqlite.head().unwrap();
    assert_eq!(projections::catch_up(&sqlite).unwrap(), head);

    let (name, url) = new_database("vigia_pg_projection_chunks");
    let pg = PgStore::connect(&url).unwrap();
    pg.import(sqlite.read_from(0, usize::MAX, None).unwrap())
        .unwrap();
    assert_eq!(projections::catch_up(&pg).unwrap(), head);
    assert_same_rows(&sqlite_snapshot(&dir.db()), &pg_snapshot(&url));
    drop(pg);
    drop_database(&name);
}
