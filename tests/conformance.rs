//! The `EventStore` contract as one suite, written against the trait and run here on
//! SQLite: whatever backend comes next (PostgreSQL) runs the same functions. Each
//! check names the promise it holds the backend to; payloads are compared as decoded
//! values, never as text (another backend may order a JSON object's keys its own way).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use vigia::events::{ConfigApplied, Event};
use vigia::store::{
    Appended, EventStore, ExpectedVersion, NewEvent, SqliteStore, StoreError, StoredEvent,
};

use crate::util::Dir;

fn applied(n: u32) -> Event {
    Event::ConfigApplied(ConfigApplied {
        hash: format!("hash-{n}"),
        path: "vigia.toml".into(),
        feeds: vec![format!("feed-{n}")],
        topics: vec!["us-mx-security".into()],
        rules_hash: format!("rules-{n}"),
    })
}

fn decoded(store: &dyn EventStore, stream: &str) -> Vec<Event> {
    store
        .read_stream(stream)
        .unwrap()
        .iter()
        .map(|e| e.decode().unwrap())
        .collect()
}

/// Versions count from 1 per stream; `NoStream` and `Exactly` are enforced, a
/// mismatch is a `Conflict` naming the stream's real version, and nothing is written.
fn expected_versions_are_enforced(store: &dyn EventStore) {
    let first = store
        .append(vec![
            NewEvent::new("s:a", applied(1)).expecting(ExpectedVersion::NoStream)
        ])
        .unwrap();
    assert_eq!(first[0].event().version, 1);
    let again = store.append(vec![
        NewEvent::new("s:a", applied(2)).expecting(ExpectedVersion::NoStream)
    ]);
    match again {
        Err(StoreError::Conflict { stream, actual, .. }) => {
            assert_eq!((stream.as_str(), actual), ("s:a", 1))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let stale = store.append(vec![
        NewEvent::new("s:a", applied(3)).expecting(ExpectedVersion::Exactly(0))
    ]);
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    store
        .append(vec![
            NewEvent::new("s:a", applied(4)).expecting(ExpectedVersion::Exactly(1))
        ])
        .unwrap();
    assert_eq!(decoded(store, "s:a"), vec![applied(1), applied(4)]);
}

/// The same idempotency key appended again writes nothing and returns the original.
fn idempotent_appends_return_the_original(store: &dyn EventStore) {
    let key = "conformance:once";
    let first = store
        .append(vec![NewEvent::new("s:b", applied(1)).idempotent(key)])
        .unwrap();
    let second = store
        .append(vec![NewEvent::new("s:b", applied(2)).idempotent(key)])
        .unwrap();
    assert!(first[0].is_new());
    match &second[0] {
        Appended::Duplicate(original) => {
            assert_eq!(original.seq, first[0].event().seq);
            assert_eq!(original.decode().unwrap(), applied(1));
        }
        Appended::New(e) => panic!("a second event for one key: {e:?}"),
    }
    assert_eq!(decoded(store, "s:b"), vec![applied(1)]);
}

/// A batch is all or nothing: one failing event (a conflict, last in the batch)
/// leaves none of the others, on any stream.
fn a_failing_event_leaves_nothing_of_its_batch(store: &dyn EventStore) {
    let head = store.head().unwrap();
    let batch = vec![
        NewEvent::new("s:c", applied(1)),
        NewEvent::new("s:d", applied(2)).idempotent("conformance:in-failed-batch"),
        NewEvent::new("s:c", applied(3)).expecting(ExpectedVersion::Exactly(7)),
    ];
    assert!(matches!(
        store.append(batch),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.head().unwrap(), head);
    assert!(store.read_stream("s:c").unwrap().is_empty());
    assert!(store.read_stream("s:d").unwrap().is_empty());
    // The key of an event that was not recorded is free.
    let later = store
        .append(vec![
            NewEvent::new("s:d", applied(4)).idempotent("conformance:in-failed-batch")
        ])
        .unwrap();
    assert!(later[0].is_new());
}

/// Concurrent writers: every append lands once, global positions are unique and
/// increase in the order a reader sees them, each stream's versions run 1..n without
/// a gap, and reading from a position returns exactly what follows it.
fn order_holds_under_concurrent_writers(store: Arc<dyn EventStore>) {
    const WRITERS: usize = 6;
    const EACH: usize = 40;
    let start = store.head().unwrap();
    let barrier = Arc::new(Barrier::new(WRITERS));
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..EACH {
                    // Half to the writer's own stream, half to one they all share.
                    let stream = if i % 2 == 0 {
                        format!("w:{w}")
                    } else {
                        "w:shared".to_string()
                    };
                    store
                        .append(vec![NewEvent::new(stream, applied((w * EACH + i) as u32))])
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let all = store.read_from(start, usize::MAX, None).unwrap();
    assert_eq!(all.len(), WRITERS * EACH);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut streams: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for e in &all {
        streams
            .entry(e.stream.as_str())
            .or_default()
            .push(e.version);
    }
    assert_eq!(streams.len(), WRITERS + 1);
    for (stream, versions) in &streams {
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, &expected, "{stream}");
    }
    // Reading on from the middle gives exactly the rest, in pages.
    let middle = all[all.len() / 2].seq;
    let mut rest = Vec::new();
    let mut from = middle;
    loop {
        let page = store.read_from(from, 17, None).unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq;
        rest.extend(page.into_iter().map(|e| e.seq));
    }
    let expected: Vec<u64> = all.iter().map(|e| e.seq).filter(|s| *s > middle).collect();
    assert_eq!(rest, expected);
}

/// A follower hears of appends and, reading from its own position, misses none.
fn a_follower_misses_nothing(store: Arc<dyn EventStore>) {
    let mut follow = store.follow();
    let mut position = store.head().unwrap();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..50 {
                store
                    .append(vec![NewEvent::new("f:follow", applied(i))])
                    .unwrap();
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut seen = Vec::new();
    runtime.block_on(async {
        while seen.len() < 50 {
            let moved = tokio::time::timeout(Duration::from_secs(10), follow.changed()).await;
            assert!(matches!(moved, Ok(Ok(()))), "the follower heard nothing");
            for e in store.read_from(position, usize::MAX, None).unwrap() {
                position = e.seq;
                seen.push(e.decode().unwrap());
            }
        }
    });
    writer.join().unwrap();
    assert_eq!(seen, (0..50).map(applied).collect::<Vec<_>>());
}

/// Several handles on one log (several daemons, each with its own connection) append
/// at once while a reader follows by position, moving past the highest it has seen:
/// it must see every event. A backend whose positions can commit out of order
/// (PostgreSQL without its append lock) makes the reader skip some for ever.
fn a_reader_by_position_never_skips(handles: Vec<Arc<dyn EventStore>>) {
    const BATCHES: usize = 60;
    const BATCH: usize = 10;
    let reader = handles[0].clone();
    let start = reader.head().unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = handles
        .iter()
        .enumerate()
        .map(|(w, store)| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                for b in 0..BATCHES {
                    let batch = (0..BATCH)
                        .map(|i| {
                            let n = (w * BATCHES + b) * BATCH + i;
                            NewEvent::new(format!("r:{w}:{}", n % 7), applied(n as u32))
                        })
                        .collect();
                    store.append(batch).unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    let total = handles.len() * BATCHES * BATCH;
    let (mut position, mut seen) = (start, 0usize);
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst) == handles.len();
        let page = reader.read_from(position, 1000, None).unwrap();
        for e in &page {
            assert!(e.seq > position);
            position = e.seq;
            seen += 1;
        }
        if finished && page.is_empty() {
            break;
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    let all = reader.read_from(start, usize::MAX, None).unwrap().len();
    assert_eq!(all, total);
    assert_eq!(seen, total, "the reader skipped {} events", total - seen);
}

/// An import copies a log exactly (positions, versions, times, keys, payloads as
/// values) and appends go on after it; an import that would not extend the log in
/// order is refused whole.
fn an_import_copies_a_log_exactly(source: &dyn EventStore, target: &dyn EventStore) {
    for i in 0..30 {
        let mut e = NewEvent::new(format!("m:{}", i % 4), applied(i));
        if i % 3 == 0 {
            e = e.idempotent(format!("m-key-{i}"));
        }
        source.append(vec![e]).unwrap();
    }
    let events = source.read_from(0, usize::MAX, None).unwrap();
    target.import(events[..10].to_vec()).unwrap();
    target.import(events[10..].to_vec()).unwrap();
    assert_same_events(&events, &target.read_from(0, usize::MAX, None).unwrap());
    assert!(
        target.import(events[..1].to_vec()).is_err(),
        "an import behind the head"
    );
    assert_eq!(target.head().unwrap(), events.last().unwrap().seq);
    let next = target
        .append(vec![NewEvent::new("m:0", applied(99))])
        .unwrap();
    assert!(next[0].event().seq > events.last().unwrap().seq);
    assert_eq!(next[0].event().version, 9);
    // Keys came across: the original answers for them.
    let again = target
        .append(vec![
            NewEvent::new("m:0", applied(100)).idempotent("m-key-0")
        ])
        .unwrap();
    assert!(!again[0].is_new());
}

/// Two logs hold the same events: positions, streams, versions, kinds, schema
/// versions, times, keys, and payloads as JSON values (PostgreSQL's jsonb orders an
/// object's keys its own way).
pub(crate) fn assert_same_events(a: &[StoredEvent], b: &[StoredEvent]) {
    assert_eq!(a.len(), b.len());
    let value = |e: &StoredEvent| -> serde_json::Value {
        serde_json::from_str(e.payload.get()).expect("a stored payload is JSON")
    };
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            (x.seq, &x.stream, x.version, &x.kind, x.schema_version),
            (y.seq, &y.stream, y.version, &y.kind, y.schema_version)
        );
        assert_eq!(
            (&x.recorded_at, &x.idempotency_key, value(x)),
            (&y.recorded_at, &y.idempotency_key, value(y)),
            "event {}",
            x.seq
        );
    }
}

/// The whole suite, on one backend. `open` gives a fresh, empty store.
fn conformance(open: impl Fn() -> Arc<dyn EventStore>) {
    expected_versions_are_enforced(open().as_ref());
    idempotent_appends_return_the_original(open().as_ref());
    a_failing_event_leaves_nothing_of_its_batch(open().as_ref());
    order_holds_under_concurrent_writers(open());
    a_follower_misses_nothing(open());
    an_import_copies_a_log_exactly(open().as_ref(), open().as_ref());
    let store = open();
    assert_eq!(store.probe().unwrap(), store.head().unwrap());
}

#[test]
fn sqlite_keeps_the_event_store_contract() {
    let dir = Dir::new();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(SqliteStore::open(&dir.path().join(format!("log-{i}.db"))).unwrap())
    });
    // Four handles on one file, as four processes would have.
    let shared = dir.path().join("shared.db");
    a_reader_by_position_never_skips(
        (0..4)
            .map(|_| Arc::new(SqliteStore::open(&shared).unwrap()) as Arc<dyn EventStore>)
            .collect(),
    );
}

/// The same suite on PostgreSQL (the `postgres` feature; `.ci/run` starts Debian's
/// PostgreSQL 15 and names it in `VIGIA_TEST_POSTGRES`, a URL for a role that may
/// create databases). Each fresh store is a database of its own, dropped afterwards.
#[cfg(feature = "postgres")]
#[test]
fn postgres_keeps_the_event_store_contract() {
    let (admin_url, mut admin) = admin();
    let prefix = format!("vigia_conformance_{}", std::process::id());
    let created = std::sync::Mutex::new(Vec::new());
    let n = std::sync::atomic::AtomicUsize::new(0);
    // Databases are made up front: the admin connection is not Sync.
    let names: Vec<String> = (0..9).map(|i| format!("{prefix}_{i}")).collect();
    for name in &names {
        fresh_database(&mut admin, name);
    }
    conformance(|| {
        let name = &names[n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)];
        created.lock().unwrap().push(name.clone());
        let url = database_url(&admin_url, name);
        Arc::new(vigia::store::PgStore::connect(&url).unwrap())
    });
    // Four connections on one database, as four daemons would have.
    let shared_name = names.last().unwrap();
    let shared = database_url(&admin_url, shared_name);
    created.lock().unwrap().push(shared_name.clone());
    a_reader_by_position_never_skips(
        (0..4)
            .map(|_| {
                Arc::new(vigia::store::PgStore::connect(&shared).unwrap()) as Arc<dyn EventStore>
            })
            .collect(),
    );
    // On PostgreSQL a follower hears other daemons' appends too (LISTEN/NOTIFY).
    let (mine, theirs) = (
        vigia::store::PgStore::connect(&shared).unwrap(),
        vigia::store::PgStore::connect(&shared).unwrap(),
    );
    let mut follow = mine.follow();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let appended = theirs
        .append(vec![NewEvent::new("f:other", applied(7))])
        .unwrap();
    let heard = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            follow.wait_for(|head| *head >= appended[0].event().seq),
        )
        .await
        .is_ok()
    });
    assert!(
        heard,
        "a follower on one handle did not hear another handle's append"
    );
    // The append-only rule is the database's own, as in SQLite.
    let url = database_url(&admin_url, &names[0]);
    let mut direct = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for sql in [
        "UPDATE events SET kind = 'X'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let refused = direct.batch_execute(sql).unwrap_err();
        assert!(
            format!("{refused:?}").contains("append-only"),
            "{sql}: {refused:?}"
        );
    }
    drop(direct);
    // The stores' connections close with their threads when the suite's handles drop;
    // FORCE ends any that linger.
    for name in created.into_inner().unwrap() {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    }
}

/// The server to test on, and a connection to it that may create databases.
#[cfg(feature = "postgres")]
pub(crate) fn admin() -> (String, postgres::Client) {
    let url = std::env::var("VIGIA_TEST_POSTGRES")
        .expect("VIGIA_TEST_POSTGRES names the PostgreSQL server to test on");
    let client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    (url, client)
}

/// An empty database called `name` (one left by an earlier run is dropped first).
#[cfg(feature = "postgres")]
pub(crate) fn fresh_database(admin: &mut postgres::Client, name: &str) {
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
}

/// A fresh, empty database called `{prefix}_{pid}`: its name and URL.
#[cfg(feature = "postgres")]
pub(crate) fn new_database(prefix: &str) -> (String, String) {
    let (admin_url, mut admin) = admin();
    let name = format!("{prefix}_{}", std::process::id());
    fresh_database(&mut admin, &name);
    let url = database_url(&admin_url, &name);
    (name, url)
}

/// The admin URL with its database replaced.
#[cfg(feature = "postgres")]
pub(crate) fn database_url(admin_url: &str, database: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("VIGIA_TEST_POSTGRES is a postgres:// URL");
    url.set_path(database);
    url.to_string()
}

/// `vigia migrate --to postgres://…` copies a SQLite log into an empty PostgreSQL
/// database exactly, and refuses one that holds events.
#[cfg(feature = "postgres")]
#[test]
fn migrate_copies_a_sqlite_log_into_postgres() {
    let (name, url) = new_database("vigia_migrate");

    let dir = Dir::new();
    let source = SqliteStore::open(&dir.db()).unwrap();
    for i in 0..120 {
        let e = NewEvent::new(format!("p:{}", i % 5), applied(i)).idempotent(format!("p-{i}"));
        source.append(vec![e]).unwrap();
    }
    let config = dir.config(&[("a", "http://127.0.0.1:9/a.xml".to_string())], "");
    let (config, db) = (config.to_str().unwrap(), dir.db());
    let args = [
        "--config",
        config,
        "--db",
        db.to_str().unwrap(),
        "migrate",
        "--to",
        &url,
    ];
    let out = crate::util::vigia_ok(&args, &dir);
    assert!(out.contains("copied 120 events"), "{out}");

    let copy = vigia::store::PgStore::connect(&url).unwrap();
    assert_same_events(
        &source.read_from(0, usize::MAX, None).unwrap(),
        &copy.read_from(0, usize::MAX, None).unwrap(),
    );
    let again = crate::util::vigia(&args, &dir);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(copy.head().unwrap(), source.head().unwrap());
    drop(copy);
    let _ = admin()
        .1
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}
