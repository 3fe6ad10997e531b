//! The event log's promises, tested against real SQLite files: append-only at the
//! database level, optimistic concurrency, idempotency, replay equals incremental,
//! whole batches only after SIGKILL, and clear errors for broken storage.

use std::sync::{Arc, Barrier};

use rusqlite::Connection;
use vigia::detect::Stance;
use vigia::events::{
    ArticleBody, ArticleDiscovered, ArticleRevised, Event, FeedPollFailed, FeedPolled,
    PollFailureKind,
};
use vigia::projections;
use vigia::store::{ExpectedVersion, NewEvent, OpenOptions, SqliteStore, StoreError};

use crate::util::{explain, vigia, vigia_ok, Dir};

pub(crate) fn polled(feed: &str, n: u32) -> Event {
    Event::FeedPolled(FeedPolled {
        feed: feed.into(),
        url: format!("http://127.0.0.1/{feed}.xml"),
        status: 200,
        bytes: 1000 + u64::from(n),
        elapsed_ms: 5,
        etag: Some(format!("\"e{n}\"")),
        last_modified: None,
        items: n,
        new_articles: n,
        revised_articles: 0,
        moved_to: None,
        min_interval_s: None,
    })
}

fn failed(feed: &str, streak: u32) -> Event {
    Event::FeedPollFailed(FeedPollFailed {
        feed: feed.into(),
        url: format!("http://127.0.0.1/{feed}.xml"),
        kind: PollFailureKind::Timeout,
        message: "timed out".into(),
        status: None,
        elapsed_ms: 30_000,
        streak,
        retry_not_before: None,
    })
}

fn body(title: &str) -> ArticleBody {
    ArticleBody {
        title: title.into(),
        summary: format!("summary of {title}"),
        content: String::new(),
        url: Some(format!("http://example.org/{title}")),
        lang: Some("en".into()),
        published: None,
        outlet: Some("Outlet".into()),
    }
}

fn discovered(feed: &str, id: &str) -> Event {
    Event::ArticleDiscovered(ArticleDiscovered {
        article_id: id.into(),
        feed: feed.into(),
        guid: Some(id.into()),
        body: body(id),
        content_hash: format!("h-{id}-1"),
    })
}

fn revised(feed: &str, id: &str, revision: u32) -> Event {
    Event::ArticleRevised(ArticleRevised {
        article_id: id.into(),
        feed: feed.into(),
        revision,
        body: body(&format!("{id} rev {revision}")),
        content_hash: format!("h-{id}-{revision}"),
    })
}

fn classified(feed: &str, id: &str, rules: u32) -> Event {
    Event::ArticleClassified(vigia::events::ArticleClassified {
        article_id: id.into(),
        feed: feed.into(),
        content_hash: format!("h-{id}"),
        rules_hash: format!("rules-{rules}"),
        topics: if rules == 0 {
            vec![]
        } else {
            vec![vigia::events::TopicScore {
                id: "us-mx-security".into(),
                score: 0.5 + f64::from(rules) / 10.0,
                matched: vec!["Mexico".into()],
            }]
        },
    })
}

fn observed(feed: &str, id: &str, oppose: bool) -> Event {
    Event::StanceObserved(vigia::events::StanceObserved {
        article_id: id.into(),
        feed: feed.into(),
        topic: "us-mx-security".into(),
        issue: "us_military_action".into(),
        actor: "mx_gov".into(),
        stance: if oppose {
            Stance::Oppose
        } else {
            Stance::Support
        },
        confidence: 0.8,
        evidence: format!("{id} says so."),
        cues: vec!["rejects".into()],
        rules_hash: "rules-1".into(),
        url: None,
        outlet: Some("Outlet".into()),
        published: None,
    })
}

fn changed(oppose: bool) -> Event {
    Event::StanceChanged(vigia::events::StanceChanged {
        topic: "us-mx-security".into(),
        issue: "us_military_action".into(),
        actor: "mx_gov".into(),
        from: Some(if oppose {
            Stance::Support
        } else {
            Stance::Oppose
        }),
        to: if oppose {
            Stance::Oppose
        } else {
            Stance::Support
        },
        from_since: None,
        evidence: vec![],
    })
}

fn subscriber(email: &str, what: u8) -> Event {
    use vigia::events::*;
    match what {
        0 => Event::SubscriberRequested(Subscription {
            email: email.into(),
            name: None,
            topics: vec!["us-mx-security".into()],
            digest: "on-change".into(),
            via: SubscriptionChannel::Web,
            token: None,
        }),
        1 => Event::SubscriberConfirmed(Subscription {
            email: email.into(),
            name: Some("N".into()),
            topics: vec!["us-mx-security".into()],
            digest: "on-change".into(),
            via: SubscriptionChannel::Config,
            token: Some(format!("t-{email}")),
        }),
        _ => Event::SubscriberUnsubscribed(SubscriberUnsubscribed {
            email: email.into(),
            via: SubscriptionChannel::Link,
            token: Some(format!("u-{email}")),
        }),
    }
}

fn digest(id: &str, what: u8, attempt: u32) -> Event {
    use vigia::events::*;
    match what {
        0 => Event::DigestQueued(DigestQueued {
            digest_id: id.into(),
            to: "a@example.org".into(),
            subject: "s".into(),
            message_id: format!("<{id}@x>"),
            text: "t".into(),
            html: "h".into(),
            headers: vec![],
            changes: vec![1, 2],
            reason: DigestReason::OnChange,
            links: vec![],
            images: vec![],
        }),
        1 => Event::DigestSent(DigestSent {
            digest_id: id.into(),
            to: "a@example.org".into(),
            message_id: format!("<{id}@x>"),
            attempt,
            response: "ok".into(),
        }),
        _ => Event::DigestFailed(DigestFailed {
            digest_id: id.into(),
            to: "a@example.org".into(),
            attempt,
            permanent: attempt == 3,
            error: "421".into(),
            retry_not_before: None,
        }),
    }
}

#[test]
fn the_events_table_refuses_update_and_delete_at_the_sqlite_level() {
    let dir = Dir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    store
        .append_one(NewEvent::new("feed:a", polled("a", 1)))
        .unwrap();
    drop(store);
    let conn = Connection::open(dir.db()).unwrap();
    let update = conn.execute("UPDATE events SET payload = '{}'", []);
    let delete = conn.execute("DELETE FROM events", []);
    assert!(update.is_err(), "UPDATE went through");
    assert!(delete.is_err(), "DELETE went through");
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn two_writers_with_the_same_expected_version_exactly_one_wins() {
    let dir = Dir::new();
    let first = SqliteStore::open(&dir.db()).unwrap();
    first
        .append_one(NewEvent::new("feed:a", polled("a", 1)))
        .unwrap();
    for round in 0..10u64 {
        // Two handles: two connections and two writer threads, as two processes would have.
        let a = SqliteStore::open(&dir.db()).unwrap();
        let b = SqliteStore::open(&dir.db()).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let expected = ExpectedVersion::Exactly(1 + round);
        let run = |store: SqliteStore, barrier: Arc<Barrier>| {
            std::thread::spawn(move || {
                barrier.wait();
                store.append_one(NewEvent::new("feed:a", polled("a", 2)).expecting(expected))
            })
        };
        let ta = run(a, barrier.clone());
        let tb = run(b, barrier);
        let results = [ta.join().unwrap(), tb.join().unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict { .. })))
            .count();
        assert_eq!((wins, conflicts), (1, 1), "round {round}: {results:?}");
    }
    assert_eq!(first.read_stream("feed:a").unwrap().len(), 11);
}

#[test]
fn appending_the_same_idempotency_key_twice_gives_one_event() {
    let dir = Dir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    let event =
        || NewEvent::new("article:x", discovered("a", "x")).idempotent("article:x:discovered");
    let first = store.append_one(event()).unwrap();
    let second = store.append_one(event()).unwrap();
    assert!(first.is_new());
    assert!(!second.is_new());
    assert_eq!(first.event().seq, second.event().seq);
    // Also within one batch.
    let both = store.append(vec![event(), event()]).unwrap();
    assert_eq!(both.len(), 2, "an outcome per event");
    assert!(both.iter().all(|a| !a.is_new()));
    assert_eq!(store.head().unwrap(), 1);
}

#[test]
fn a_conflict_rolls_back_the_whole_batch() {
    let dir = Dir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    store
        .append_one(NewEvent::new("s", polled("a", 1)))
        .unwrap();
    let batch = vec![
        NewEvent::new("other", polled("b", 1)),
        NewEvent::new("s", polled("a", 2)).expecting(ExpectedVersion::NoStream),
    ];
    assert!(matches!(
        store.append(batch),
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.head().unwrap(),
        1,
        "nothing of the failed batch is in the log"
    );
}

#[test]
fn subscribers_see_the_head_move() {
    let dir = Dir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    let mut rx = store.subscribe();
    store
        .append_one(NewEvent::new("s", polled("a", 1)))
        .unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
    let read = store.read_from(0, 10, None).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].decode().unwrap(), polled("a", 1));
}

pub(crate) fn projection_snapshot(path: &std::path::Path) -> Vec<(String, Vec<String>)> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for projection in projections::all() {
        for table in projection.tables() {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let columns = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    let mut s = String::new();
                    for i in 0..columns {
                        let v: rusqlite::types::Value = r.get(i)?;
                        s.push_str(&format!("{v:?}|"));
                    }
                    Ok(s)
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.sort();
            out.push((table.to_string(), rows));
        }
    }
    out
}

/// A poll with the variants the feed_health projection treats apart: a 304 (no
/// validators), a permanent redirect (`moved_to`), a server floor.
fn polled_variant(feed: &str, n: u32) -> Event {
    let Event::FeedPolled(mut p) = polled(feed, n) else {
        unreachable!()
    };
    match n % 3 {
        0 => {
            p.status = 304;
            p.etag = None;
        }
        1 => p.moved_to = Some(format!("http://127.0.0.1/{feed}-moved-{n}.xml")),
        _ => {
            p.min_interval_s = Some(u64::from(n) * 60);
            p.last_modified = Some("Tue, 03 Jun 2025 10:00:00 GMT".into());
        }
    }
    Event::FeedPolled(p)
}

fn gone(feed: &str, streak: u32) -> Event {
    Event::FeedPollFailed(FeedPollFailed {
        feed: feed.into(),
        url: format!("http://127.0.0.1/{feed}.xml"),
        kind: PollFailureKind::Gone,
        message: "410 Gone".into(),
        status: Some(410),
        elapsed_ms: 12,
        streak,
        retry_not_before: Some("2030-01-01T00:00:00.000Z".into()),
    })
}

/// A change on one of several pairs, first establishments (no `from`) included, with
/// evidence whose confidence is no round number.
fn changed_on(pair: u32, to: u8) -> Event {
    let stances = [Stance::Support, Stance::Oppose, Stance::Neutral];
    let to = stances[usize::from(to) % 3];
    Event::StanceChanged(vigia::events::StanceChanged {
        topic: "us-mx-security".into(),
        issue: ["us_military_action", "security_cooperation"][(pair % 2) as usize].into(),
        actor: ["mx_gov", "us_gov"][(pair / 2 % 2) as usize].into(),
        from: (!pair.is_multiple_of(3)).then_some(Stance::Neutral),
        to,
        from_since: Some("2025-01-01T00:00:00.000Z".into()),
        evidence: vec![vigia::events::Evidence {
            article_id: format!("a-{pair}"),
            story: format!("story-{pair}"),
            title: "Título «con» acentos".into(),
            outlet: Some("Outlet".into()),
            url: None,
            published: Some("2025-02-03T04:05:06Z".into()),
            sentence: "México rechaza \"la acción\".".into(),
            stance: to,
            confidence: 1.0 / 3.0,
        }],
    })
}

fn config_applied(n: u32) -> Event {
    Event::ConfigApplied(vigia::events::ConfigApplied {
        hash: format!("config-{n}"),
        path: "vigia.toml".into(),
        feeds: vec!["a".into(), "b".into()],
        topics: vec!["us-mx-security".into()],
        rules_hash: format!("rules-{n}"),
    })
}

fn corrected(id: &str) -> Event {
    Event::ReadingCorrected(vigia::events::ReadingCorrected {
        article_id: id.into(),
        topic: "us-mx-security".into(),
        issue: Some("us_military_action".into()),
        actor: Some("mx_gov".into()),
        stance: Some(vigia::events::CorrectedStance::Oppose),
        relevant: Some(true),
    })
}

/// Batches of events of every kind, at least `n` events in all, drawn from `seed`:
/// polls (200, 304, moved, failed, gone), articles discovered and revised, readings
/// (each replacing the article's last), corrections, stance changes on several pairs,
/// subscriptions requested, confirmed and ended, digests queued, sent and failed, and
/// config applications. What the replay tests on both backends are fed.
pub(crate) fn mixed_batches(seed: u64, n: usize) -> Vec<Vec<NewEvent>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let feeds = ["a", "b", "c", "d", "e"];
    let mut revisions: std::collections::HashMap<String, u32> = Default::default();
    let (mut batches, mut total) = (Vec::new(), 0);
    while total < n {
        let batch_len = rng.usize(1..40);
        let mut batch = Vec::new();
        for _ in 0..batch_len {
            let feed = feeds[rng.usize(..feeds.len())];
            let id = format!("{feed}-{}", rng.u32(..400));
            let event = match rng.u8(..19) {
                0..=2 => polled(feed, rng.u32(..20)),
                3 => failed(feed, rng.u32(1..5)),
                4..=7 => match revisions.get_mut(&id) {
                    None => {
                        revisions.insert(id.clone(), 1);
                        discovered(feed, &id)
                    }
                    Some(rev) => {
                        *rev += 1;
                        revised(feed, &id, *rev)
                    }
                },
                8 => classified(feed, &id, rng.u32(..3)),
                9 => observed(feed, &id, rng.bool()),
                10 => changed(rng.bool()),
                11 => subscriber(&format!("s{}@example.org", rng.u32(..20)), rng.u8(..3)),
                12 | 13 => digest(&format!("d{}", rng.u32(..50)), rng.u8(..3), rng.u32(1..4)),
                14 => polled_variant(feed, rng.u32(..30)),
                15 => gone(feed, rng.u32(1..9)),
                16 => changed_on(rng.u32(..6), rng.u8(..3)),
                17 => config_applied(rng.u32(..5)),
                _ => corrected(&id),
            };
            batch.push(NewEvent::new(format!("s-{feed}"), event));
        }
        total += batch.len();
        batches.push(batch);
    }
    batches
}

/// A feed's polls and articles whose text (150 KB each) takes a log past a page's and
/// a chunk's payload bounds (about 1 MB and 4 MB) several times: 61 polls and 60
/// articles, one batch each.
pub(crate) fn big_article_batches() -> Vec<Vec<NewEvent>> {
    let mut batches = vec![vec![NewEvent::new("feed:big", polled("big", 0))]];
    for i in 1..=60 {
        let id = format!("big-{i}");
        let Event::ArticleDiscovered(mut a) = discovered("big", &id) else {
            unreachable!()
        };
        a.body.content = format!("{i} ").repeat(150 * 1024 / (i.to_string().len() + 1));
        batches.push(vec![NewEvent::new(
            format!("article:{id}"),
            Event::ArticleDiscovered(a),
        )]);
        batches.push(vec![NewEvent::new("feed:big", polled("big", i))]);
    }
    batches
}

/// Catching up crosses pages and chunks (cut by their payloads' bytes) without
/// skipping or repeating an event: every event read once, every article counted once.
#[test]
fn catching_up_crosses_pages_and_chunks_without_skipping_or_repeating() {
    let dir = Dir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    for batch in big_article_batches() {
        store.append(batch).unwrap();
    }
    let head = store.head().unwrap();
    assert_eq!(projections::catch_up(&store).unwrap(), head);
    let conn = Connection::open(dir.db()).unwrap();
    let (polls, articles): (u64, u64) = conn
        .query_row(
            "SELECT polls, articles FROM feed_health WHERE feed_id = 'big'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((polls, articles), (61, 60));
    let stored: u64 = conn
        .query_row("SELECT COUNT(*) FROM articles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 60);
    let behind: u64 = conn
        .query_row(
            "SELECT COUNT(*) FROM projection_checkpoints WHERE seq <> ?1",
            [head],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(behind, 0, "every checkpoint at the head");
    assert_eq!(projections::rebuild(&store).unwrap(), head);
}

#[test]
fn replay_equals_incremental() {
    let dir = Dir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut appended = 0;
    for batch in mixed_batches(7, 4000) {
        appended += batch.len();
        store.append(batch).unwrap();
        // Incremental: catch up at irregular points, as the daemon does.
        if rng.u8(..4) == 0 {
            projections::catch_up(&store).unwrap();
        }
    }
    projections::catch_up(&store).unwrap();
    let incremental = projection_snapshot(&dir.db());
    let tables: Vec<&str> = incremental.iter().map(|(t, _)| t.as_str()).collect();
    for table in [
        "feed_health",
        "articles",
        "stances",
        "subscribers",
        "outbox",
    ] {
        assert!(tables.contains(&table), "{table} is compared: {tables:?}");
    }
    assert!(
        incremental.iter().all(|(_, rows)| !rows.is_empty()),
        "every projection has rows"
    );
    let replayed = projections::rebuild(&store).unwrap();
    assert_eq!(replayed as usize, appended);
    let rebuilt = projection_snapshot(&dir.db());
    assert_eq!(rebuilt.len(), incremental.len());
    for ((table, a), (_, b)) in incremental.iter().zip(&rebuilt) {
        assert_eq!(a.len(), b.len(), "{table}: row counts differ");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x, y, "{table}: a row differs");
        }
    }
}

/// Environment variable that turns a run of this test binary into the crash child.
const CRASH_CHILD: &str = "VIGIA_TEST_CRASH_CHILD_DB";

/// The child: four threads append batches of 1..60 events until killed. Each event
/// names its batch and the batch's size, so the parent can tell whole from partial.
fn crash_child(db: &str) -> ! {
    let store = SqliteStore::open(std::path::Path::new(db)).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::new();
                let pid = std::process::id();
                for batch in 0u64.. {
                    let size = rng.u32(1..60);
                    let events = (0..size)
                        .map(|i| {
                            NewEvent::new(
                                format!("batch:{t}:{batch}"),
                                polled(&format!("{pid}:{t}:{batch}:{size}"), i),
                            )
                        })
                        .collect();
                    store.append(events).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0)
}

#[test]
fn sigkill_during_batched_appends_leaves_only_whole_batches() {
    if let Ok(db) = std::env::var(CRASH_CHILD) {
        crash_child(&db);
    }
    let dir = Dir::new();
    let db = dir.db();
    for trial in 0..5 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "event_store::sigkill_during_batched_appends_leaves_only_whole_batches",
                "--nocapture",
            ])
            .env(CRASH_CHILD, &db)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it is writing, then kill it at a random moment.
        let before = count_events(&db);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while count_events(&db) < before + 500 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The point of the trial: SIGKILL at a random moment of the writing.
        std::thread::sleep(std::time::Duration::from_millis(fastrand::u64(0..40)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let conn = Connection::open(&db).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "trial {trial}");
        let mut stmt = conn
            .prepare("SELECT json_extract(payload, '$.feed'), COUNT(*) FROM events GROUP BY 1")
            .unwrap();
        let batches: Vec<(String, u32)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            count_events(&db) > before,
            "trial {trial}: the child wrote nothing"
        );
        for (name, count) in batches {
            let size: u32 = name.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(count, size, "trial {trial}: batch {name} is partial");
        }
        // And the store still opens and appends after the crash.
        let store = SqliteStore::open(&db).unwrap();
        store
            .append_one(NewEvent::new(
                "after",
                polled(&format!("after{trial}:0:1"), 0),
            ))
            .unwrap();
    }
}

fn count_events(db: &std::path::Path) -> u64 {
    Connection::open(db)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .unwrap_or(0)
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing_recorded() {
    let dir = Dir::new();
    let store = SqliteStore::open_with(
        &dir.db(),
        OpenOptions {
            max_pages: Some(64),
            ..Default::default()
        },
    )
    .unwrap();
    let mut recorded = 0;
    let err = loop {
        let batch = (0..50)
            .map(|i| NewEvent::new("big", polled("big", i)))
            .collect();
        match store.append(batch) {
            Ok(v) => recorded += v.len(),
            Err(e) => break e,
        }
        assert!(recorded < 1_000_000, "the size cap never hit");
    };
    assert!(matches!(err, StoreError::DiskFull), "{err}");
    assert!(err.to_string().contains("disk is full"));
    assert_eq!(
        store.head().unwrap() as usize,
        recorded,
        "the failed batch left nothing"
    );
    drop(store);
    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(
        store.read_from(0, usize::MAX, None).unwrap().len(),
        recorded
    );
}

/// Appends from eight threads and eight async tasks, each a batch of about 30 KB,
/// against a writer's queue bounded at 64 KB: the queue never holds more than its
/// bound, it held at least one batch (so the bound was in play), and every event lands
/// once, in whole batches.
#[test]
fn the_writers_queue_stays_within_its_bound_in_bytes_and_every_append_lands() {
    const BOUND: usize = 64 * 1024;
    const ROUNDS: usize = 10;
    let dir = Dir::new();
    let store = SqliteStore::open_with(
        &dir.db(),
        OpenOptions {
            queue_bytes: Some(BOUND),
            ..Default::default()
        },
    )
    .unwrap();
    let batch = |who: &str, round: usize| -> Vec<NewEvent> {
        (0..20)
            .map(|i| {
                let id = format!("{who}-{round}-{i}");
                let Event::ArticleDiscovered(mut a) = discovered(who, &id) else {
                    unreachable!()
                };
                a.body.content = "word ".repeat(300);
                NewEvent::new(format!("article:{id}"), Event::ArticleDiscovered(a))
            })
            .collect()
    };
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    assert_eq!(
                        store.append(batch(&format!("t{t}"), round)).unwrap().len(),
                        20
                    );
                }
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for round in 0..ROUNDS {
                        let appended = store
                            .append_async(batch(&format!("a{t}"), round))
                            .await
                            .unwrap();
                        assert_eq!(appended.len(), 20);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(store.head().unwrap(), 16 * ROUNDS as u64 * 20);
    let one_batch: usize = batch("t0", 0)
        .iter()
        .map(|e| e.event.payload_raw().unwrap().get().len())
        .sum();
    let peak = store.queue().peak();
    assert!(
        peak <= BOUND,
        "the queue held {peak} bytes, past its bound of {BOUND}"
    );
    assert!(
        peak >= one_batch,
        "the queue held {peak} bytes, less than one batch ({one_batch})"
    );
}

#[test]
fn a_corrupt_database_file_is_a_clear_error() {
    let dir = Dir::new();
    std::fs::write(dir.db(), vec![0x42u8; 8192]).unwrap();
    let err = SqliteStore::open(&dir.db())
        .err()
        .expect("a garbage file must not open");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("not a vigia database"), "{err}");
}

#[test]
fn a_database_from_a_newer_vigia_is_refused() {
    let dir = Dir::new();
    drop(SqliteStore::open(&dir.db()).unwrap());
    Connection::open(dir.db())
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let err = SqliteStore::open(&dir.db()).err().expect("must refuse");
    assert!(
        matches!(err, StoreError::TooNew { found: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer vigia"));
}

/// A database as vigia left it before migration 0007 (AUTOINCREMENT, json_valid),
/// with events written by that schema, opens under this build with the same rows and
/// positions, keeps refusing UPDATE and DELETE, and appends after its last position.
#[test]
fn a_log_written_before_the_lean_events_table_upgrades_in_place() {
    let dir = Dir::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let conn = Connection::open(dir.db()).unwrap();
    for step in [
        "0001_events.sql",
        "0002_projections.sql",
        "0003_detection.sql",
        "0004_stances_digests.sql",
        "0005_subscriptions_web.sql",
        "0006_article_text_once.sql",
    ] {
        conn.execute_batch(&std::fs::read_to_string(root.join(step)).unwrap())
            .unwrap();
    }
    conn.pragma_update(None, "user_version", 6).unwrap();
    let mut insert = conn
        .prepare(
            "INSERT INTO events (stream, version, kind, schema_version, payload, recorded_at, idempotency_key)
             VALUES (?1, ?2, 'FeedPolled', 1, ?3, '2026-11-01T00:00:00Z', ?4)",
        )
        .unwrap();
    for i in 1..=50u32 {
        let payload = polled("a", i).payload_raw().unwrap().get().to_string();
        let key = (i % 10 == 0).then(|| format!("key-{i}"));
        insert
            .execute(rusqlite::params![
                format!("feed:{}", i % 3),
                i,
                payload,
                key
            ])
            .unwrap();
    }
    // The old schema's json_valid check is what it was: this is the log being upgraded.
    assert!(conn
        .execute(
            "INSERT INTO events (stream, version, kind, schema_version, payload, recorded_at)
             VALUES ('x', 1, 'FeedPolled', 1, 'not json', 'now')",
            [],
        )
        .is_err());
    drop(insert);
    let dump = |conn: &Connection| -> Vec<(i64, String, i64, String)> {
        let mut stmt = conn
            .prepare("SELECT seq, stream, version, payload FROM events ORDER BY seq")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let before = dump(&conn);
    drop(conn);

    let store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.head().unwrap(), 50);
    let appended = store
        .append_one(NewEvent::new("feed:0", polled("a", 51)))
        .unwrap();
    assert_eq!(appended.event().seq, 51);
    let again = store
        .append_one(NewEvent::new("feed:1", polled("a", 10)).idempotent("key-10"))
        .unwrap();
    assert_eq!(again.event().seq, 10, "the idempotency index came through");
    drop(store);

    let conn = Connection::open(dir.db()).unwrap();
    let after = dump(&conn);
    assert_eq!(&after[..50], &before[..], "rows and positions kept");
    assert!(conn
        .execute("UPDATE events SET payload = '{}'", [])
        .is_err());
    assert!(conn
        .execute("DELETE FROM events WHERE seq = 51", [])
        .is_err());
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 7);
}

#[test]
fn a_database_in_a_read_only_place_is_a_clear_error() {
    // Tests run as root here, so permissions cannot make a folder read-only; sysfs is.
    let err = SqliteStore::open(std::path::Path::new("/sys/vigia-test/vigia.db"))
        .err()
        .expect("sysfs is not writable");
    assert!(
        matches!(
            err,
            StoreError::CreateDir { .. } | StoreError::Open { .. } | StoreError::ReadOnly(_)
        ),
        "{err}"
    );
    let err = SqliteStore::open(std::path::Path::new("/sys/vigia.db"))
        .err()
        .expect("sysfs is not writable");
    assert!(err.to_string().contains("/sys/vigia.db"), "{err}");
}

/// `n` events of every kind the projections read, on three feeds, each with an
/// idempotency key: a log worth copying.
pub(crate) fn varied_log(store: &SqliteStore, n: u32) {
    for i in 0..n {
        let feed = ["a", "b", "c"][(i % 3) as usize];
        let id = format!("{feed}-{}", i % 40);
        let event = match i % 6 {
            0 => polled(feed, i),
            1 => failed(feed, i % 4 + 1),
            2 => discovered(feed, &id),
            3 => observed(feed, &id, i % 4 == 3),
            4 => subscriber(&format!("s{}@example.org", i % 7), (i % 3) as u8),
            _ => digest(&format!("d{}", i % 9), (i % 3) as u8, i % 3 + 1),
        };
        let key = format!("migrate-{i}");
        store
            .append(vec![
                NewEvent::new(format!("s-{feed}"), event).idempotent(key)
            ])
            .unwrap();
    }
}

#[test]
fn migrate_copies_the_log_exactly_and_rebuilds_the_same_projections() {
    let dir = Dir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    varied_log(&store, 300);
    projections::catch_up(&store).unwrap();
    let config = dir.config(&[("a", "http://127.0.0.1:9/a.xml".to_string())], "");
    let config = config.to_str().unwrap();
    let target = dir.path().join("copy").join("vigia.db");
    let target_arg = target.to_str().unwrap();
    let db = dir.db();
    let db = db.to_str().unwrap();
    let out = vigia_ok(
        &[
            "--config", config, "--db", db, "migrate", "--to", target_arg,
        ],
        &dir,
    );
    assert!(out.contains("copied 300 events"), "{out}");
    let source_events = store.read_from(0, usize::MAX, None).unwrap();
    let copy = SqliteStore::open(&target).unwrap();
    let copied_events = copy.read_from(0, usize::MAX, None).unwrap();
    assert_eq!(
        serde_json::to_string(&source_events).unwrap(),
        serde_json::to_string(&copied_events).unwrap()
    );
    assert_eq!(projection_snapshot(&dir.db()), projection_snapshot(&target));
    // Into a database that holds events: refused, and nothing is added.
    let again = vigia(
        &[
            "--config", config, "--db", db, "migrate", "--to", target_arg,
        ],
        &dir,
    );
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        explain(&[], &dir, &again)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds events"));
    assert_eq!(copy.head().unwrap(), store.head().unwrap());
}
