//! The front page under a long history: `/` built from the projections and rendered,
//! over a log of 100,000 articles (a fifth of them relevant) and 1,000 stance changes
//! with their evidence, with the shipped topics. Also the stance page of the busiest
//! pair. Run: cargo bench --bench web

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vigia::config::Config;
use vigia::detect::Stance;
use vigia::events::{
    ArticleBody, ArticleClassified, ArticleDiscovered, Event, Evidence, StanceChanged, TopicScore,
};
use vigia::projections;
use vigia::store::{NewEvent, SqliteStore};
use vigia::web::{home_view, stance_view, PageTemplates};

const ARTICLES: u64 = 100_000;
const CHANGES: u64 = 1_000;
const TOPIC: &str = "us-mx-security";

fn article(i: u64) -> Vec<NewEvent> {
    let id = format!("{i:024x}");
    let feed = format!("feed-{}", i % 40);
    let relevant = i.is_multiple_of(5);
    let title = if relevant {
        format!("Mexico and the US weigh security plan number {i} against cartels")
    } else {
        format!("City council approves budget line {i} for public parks")
    };
    let mut out = vec![NewEvent::new(
        format!("article:{id}"),
        Event::ArticleDiscovered(ArticleDiscovered {
            article_id: id.clone(),
            feed: feed.clone(),
            guid: Some(format!("guid-{i}")),
            body: ArticleBody {
                title,
                summary: format!(
                    "A lead paragraph about item {i}, long enough to shingle and compare."
                ),
                content: String::new(),
                url: Some(format!("https://outlet-{}.example/story/{i}", i % 40)),
                lang: Some("en".into()),
                published: Some("2026-11-27T10:00:00Z".into()),
                outlet: Some(format!("Outlet {}", i % 40)),
            },
            content_hash: format!("{:024x}", i * 7),
        }),
    )];
    out.push(NewEvent::new(
        format!("article:{id}"),
        Event::ArticleClassified(ArticleClassified {
            article_id: id,
            feed,
            content_hash: format!("{:024x}", i * 7),
            rules_hash: "bench".into(),
            topics: if relevant {
                vec![TopicScore {
                    id: TOPIC.into(),
                    score: 0.8,
                    matched: vec!["cartels".into()],
                }]
            } else {
                vec![]
            },
        }),
    ));
    out
}

fn change(i: u64) -> NewEvent {
    let pairs = [
        ("us_military_action", "mx_gov"),
        ("us_military_action", "us_gov"),
        ("security_cooperation", "mx_gov"),
        ("security_cooperation", "us_gov"),
    ];
    let (issue, actor) = pairs[(i % 4) as usize];
    let stances = [Stance::Oppose, Stance::Support, Stance::Neutral];
    let round = i / 4;
    let to = stances[(round % 3) as usize];
    let from = (round > 0).then(|| stances[((round + 2) % 3) as usize]);
    let evidence = (0..3)
        .map(|k| Evidence {
            article_id: format!("{:024x}", i * 10 + k),
            story: format!("story-{i}-{k}"),
            title: format!(
                "Headline {k} of change {i}: Mexico's government {}s the plan",
                to.as_str()
            ),
            outlet: Some(format!("Outlet {k}")),
            url: Some(format!("https://outlet-{k}.example/change/{i}")),
            published: Some("2026-11-27T10:00:00Z".into()),
            sentence: format!(
                "The government said it {}s the measure, officials told reporters ({i}/{k}).",
                to.as_str()
            ),
            stance: to,
            confidence: 0.9,
        })
        .collect();
    NewEvent::new(
        format!("stance:{TOPIC}:{issue}:{actor}"),
        Event::StanceChanged(StanceChanged {
            topic: TOPIC.into(),
            issue: issue.into(),
            actor: actor.into(),
            from,
            to,
            from_since: None,
            evidence,
        }),
    )
}

fn build() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("web.db")).unwrap();
    let per_change = ARTICLES / CHANGES;
    let mut batch = Vec::new();
    for i in 0..ARTICLES {
        batch.extend(article(i));
        if (i + 1).is_multiple_of(per_change) {
            batch.push(change(i / per_change));
        }
        if batch.len() >= 5_000 {
            store.append(std::mem::take(&mut batch)).unwrap();
        }
    }
    store.append(batch).unwrap();
    projections::catch_up(&store).unwrap();
    (dir, store)
}

fn pages(c: &mut Criterion) {
    let config_path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vigia.toml");
    let config = Config::load(std::path::Path::new(config_path)).unwrap();
    let (_dir, store) = build();
    let templates = PageTemplates::load(None).unwrap();
    let mut group = c.benchmark_group("page");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("/ (100k articles, 1k changes)", |b| {
        b.iter(|| {
            let view = store
                .read(|conn| home_view(conn, &config, chrono::Utc::now()))
                .unwrap();
            let html = templates.render("home.html", &view).unwrap();
            assert!(html.len() > 10_000);
            html
        })
    });
    group.bench_function("/ view only (queries, clustering, timelines)", |b| {
        b.iter(|| {
            store
                .read(|conn| home_view(conn, &config, chrono::Utc::now()))
                .unwrap()
        })
    });
    group.bench_function("/stances/us_military_action/mx_gov", |b| {
        b.iter(|| {
            let view = store
                .read(|conn| {
                    stance_view(
                        conn,
                        &config,
                        "us_military_action",
                        "mx_gov",
                        chrono::Utc::now(),
                    )
                })
                .unwrap()
                .unwrap();
            templates.render("stance.html", &view).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
