//! Event store throughput: appends one at a time and batched, reads from a global
//! position, a follower (`vigia events --follow`'s loop) keeping up with a cold
//! cycle's appends, and a full replay of the projections over 1,000,000 events.
//! Run: cargo bench --bench event_store

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigia::events::{ArticleBody, ArticleDiscovered, Event, FeedPolled};
use vigia::projections;
use vigia::store::{NewEvent, SqliteStore};

fn polled(i: u64) -> Event {
    Event::FeedPolled(FeedPolled {
        feed: format!("feed-{}", i % 100),
        url: format!("https://example.org/feed-{}.xml", i % 100),
        status: 200,
        bytes: 10_000 + i % 1000,
        elapsed_ms: 12,
        etag: Some(format!("\"{i:x}\"")),
        last_modified: None,
        items: 20,
        new_articles: 1,
        revised_articles: 0,
        moved_to: None,
        min_interval_s: None,
    })
}

fn discovered(i: u64) -> Event {
    Event::ArticleDiscovered(ArticleDiscovered {
        article_id: format!("{i:024x}"),
        feed: format!("feed-{}", i % 100),
        guid: Some(format!("guid-{i}")),
        body: ArticleBody {
            title: "Mexico rejects any US military operation against cartels on its territory".into(),
            summary: "President Claudia Sheinbaum said on Monday that Mexico would not accept US troops or strikes on its soil.".into(),
            content: String::new(),
            url: Some(format!("https://example.org/story/{i}")),
            lang: Some("en".into()),
            published: Some("2026-11-27T10:00:00Z".into()),
            outlet: Some("Example".into()),
        },
        content_hash: format!("{:024x}", i * 7),
    })
}

/// A realistic mix: one poll event to every four article events.
fn mixed(i: u64) -> NewEvent {
    if i.is_multiple_of(5) {
        NewEvent::new(format!("feed:{}", i % 100), polled(i))
    } else {
        NewEvent::new(format!("article:{i}"), discovered(i))
    }
}

fn fresh_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bench.db")).unwrap();
    (dir, store)
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    let (_dir, store) = fresh_store();
    let mut i = 0u64;
    group.bench_function("one at a time", |b| {
        b.iter(|| {
            i += 1;
            store.append_one(mixed(i)).unwrap();
        })
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("batches of 1000", |b| {
        b.iter(|| {
            let batch = (0..1000).map(|_| {
                i += 1;
                mixed(i)
            });
            store.append(batch.collect()).unwrap();
        })
    });
    // Small events: poll outcomes (about 250 bytes of payload) on a hundred streams.
    group.bench_function("small events, batches of 1000", |b| {
        b.iter(|| {
            let batch = (0..1000).map(|_| {
                i += 1;
                NewEvent::new(format!("feed:{}", i % 100), polled(i))
            });
            store.append(batch.collect()).unwrap();
        })
    });
    group.finish();
}

fn fill(store: &SqliteStore, n: u64) {
    let mut i = 0;
    while i < n {
        let batch: Vec<NewEvent> = (i..(i + 5000).min(n)).map(mixed).collect();
        i += batch.len() as u64;
        store.append(batch).unwrap();
    }
}

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    group.sample_size(10);
    let (_dir, store) = fresh_store();
    fill(&store, 100_000);
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("100k from seq 0, pages of 10k", |b| {
        b.iter(|| {
            let mut after = 0;
            loop {
                let page = store.read_from(after, 10_000, None).unwrap();
                match page.last() {
                    Some(e) => after = e.seq,
                    None => break,
                }
            }
        })
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(60));
    let (_dir, store) = fresh_store();
    let started = Instant::now();
    fill(&store, 1_000_000);
    eprintln!(
        "filled 1,000,000 events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("rebuild projections from 1M events", |b| {
        b.iter(|| projections::rebuild(&store).unwrap())
    });
    group.finish();
}

/// A cold cycle's appends: 1,000 polls, each one batch of its poll outcome and 20
/// discoveries (21,000 events), from 8 threads as the blocking pool would.
fn cold_cycle_appends(store: &SqliteStore) -> u64 {
    let next = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| loop {
                let poll = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if poll >= 1000 {
                    break;
                }
                let mut batch = vec![NewEvent::new(format!("feed:{poll}"), polled(poll))];
                batch.extend((0..20).map(|j| {
                    let i = poll * 20 + j;
                    NewEvent::new(format!("article:{i}"), discovered(i))
                }));
                store.append(batch).unwrap();
            });
        }
    });
    store.head().unwrap()
}

/// `vigia events --follow`'s loop, in another handle on the same file (as another
/// process would be): pages of 10,000, each event printed as a JSON line, a pause of
/// 300 ms when caught up. Returns when it has printed `last`.
fn follow_until(path: &std::path::Path, last: &std::sync::atomic::AtomicU64) -> u64 {
    use std::io::Write;
    let store = SqliteStore::open(path).unwrap();
    let mut out = std::io::BufWriter::new(std::io::sink());
    let (mut after, mut printed) = (0u64, 0u64);
    loop {
        let page = store.read_from(after, 10_000, None).unwrap();
        for event in &page {
            writeln!(out, "{}", serde_json::to_string(event).unwrap()).unwrap();
            after = event.seq;
            printed += 1;
        }
        let target = last.load(std::sync::atomic::Ordering::Acquire);
        if target > 0 && after >= target {
            return printed;
        }
        if page.len() < 10_000 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn follow(c: &mut Criterion) {
    let mut group = c.benchmark_group("follow a cold cycle");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements(21_000));
    group.bench_function("appends alone (21,000 events, a batch per poll)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (_dir, store) = fresh_store();
                let started = Instant::now();
                cold_cycle_appends(&store);
                total += started.elapsed();
            }
            total
        })
    });
    // Until the follower has printed the cycle's last event: the appends' time plus
    // the follower's lag behind them.
    group.bench_function("appends until a follower has printed them all", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (dir, store) = fresh_store();
                let path = dir.path().join("bench.db");
                let last = std::sync::atomic::AtomicU64::new(0);
                let started = Instant::now();
                std::thread::scope(|scope| {
                    let follower = scope.spawn(|| follow_until(&path, &last));
                    let head = cold_cycle_appends(&store);
                    last.store(head, std::sync::atomic::Ordering::Release);
                    assert_eq!(follower.join().unwrap(), 21_000);
                });
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, appends, reads, follow, replay);
criterion_main!(benches);
