//! The feed corpus (../shared/feeds, ~1,800 real publishers' feeds and parser edge
//! cases), each file served over loopback HTTP and polled by the real binary in one
//! `vigia run --once`. A file that feed-rs accepts must give its entries as articles
//! (less true duplicates); one that it rejects must end in a failed poll that names the
//! problem; nothing may panic. The folder comes from $VIGIA_FEED_CORPUS; without it
//! the test fails rather than passing empty. Run by .ci/run:
//!     VIGIA_FEED_CORPUS=../shared/feeds cargo test --features corpus --test corpus

#[path = "util/mod.rs"]
mod util;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use util::{count_kind, events, vigia, Dir, FeedServer};

struct Row {
    file: String,
    expect: String,
    feedrs: String,
}

fn manifest(folder: &std::path::Path) -> Vec<Row> {
    let text = std::fs::read_to_string(folder.join("MANIFEST.tsv"))
        .expect("MANIFEST.tsv in the corpus folder");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let (file, expect, feedrs) = (col("file"), col("expect"), col("feedrs"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            Row {
                file: cells[file].to_string(),
                expect: cells[expect].to_string(),
                feedrs: cells[feedrs].to_string(),
            }
        })
        .collect()
}

/// Distinct identities among a document's entries, by the rule vigia documents:
/// the guid, else the link (without fragment), else title and date.
fn distinct_entries(bytes: &[u8]) -> usize {
    let feed = feed_rs::parser::Builder::new()
        .id_generator(|_, _, _| String::new())
        .build()
        .parse(bytes)
        .expect("the manifest says feed-rs accepts it");
    let mut keys = HashSet::new();
    for e in feed.entries {
        let key = if !e.id.trim().is_empty() {
            format!("g:{}", e.id.trim())
        } else if let Some(link) = e
            .links
            .iter()
            .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
            .or(e.links.first())
            .filter(|l| {
                url::Url::parse("http://127.0.0.1/")
                    .unwrap()
                    .join(l.href.trim())
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            })
        {
            format!("l:{}", link.href.trim().split('#').next().unwrap_or(""))
        } else {
            format!(
                "t:{}:{:?}",
                e.title.map(|t| t.content).unwrap_or_default(),
                e.published.or(e.updated)
            )
        };
        keys.insert(key);
    }
    keys.len()
}

#[test]
fn every_corpus_file_becomes_its_articles_or_a_named_failure() {
    let folder = PathBuf::from(
        std::env::var("VIGIA_FEED_CORPUS")
            .expect("set VIGIA_FEED_CORPUS to the corpus folder (../shared/feeds)"),
    );
    assert!(
        folder.join("MANIFEST.tsv").is_file(),
        "no corpus at {}",
        folder.display()
    );
    let rows = manifest(&folder);
    assert!(rows.len() > 1500, "the manifest lists {} files", rows.len());

    let dir = Dir::new();
    let server = FeedServer::start();
    let mut feeds = Vec::new();
    let mut by_id = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let bytes = std::fs::read(folder.join(&row.file)).unwrap();
        let ctype = if row.file.ends_with(".json") {
            "application/feed+json"
        } else {
            "application/xml"
        };
        let path = format!("c{i}");
        server.feed(&path, bytes, ctype);
        let id = format!("c{i:04}");
        feeds.push((id.clone(), server.url(&path)));
        by_id.insert(id, row);
    }
    let list: Vec<(&str, String)> = feeds.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    dir.config(&list, "");
    let text = std::fs::read_to_string(dir.join("vigia.toml")).unwrap();
    dir.write(
        "vigia.toml",
        &text.replace("[mail]", "[daemon.fetch]\nmax_per_host = 16\n\n[mail]"),
    );

    let out = vigia(&["--config", "vigia.toml", "run", "--once"], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}",
        util::explain(&["run", "--once"], &dir, &out)
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let evs = events(&dir);
    let mut articles: HashMap<String, usize> = HashMap::new();
    let mut failures: HashMap<String, (String, String)> = HashMap::new();
    for e in &evs {
        let feed = e["payload"]["feed"].as_str().unwrap_or("").to_string();
        match e["kind"].as_str() {
            Some("ArticleDiscovered") => *articles.entry(feed).or_default() += 1,
            Some("FeedPollFailed") => {
                failures.insert(
                    feed,
                    (
                        e["payload"]["kind"].as_str().unwrap_or("").to_string(),
                        e["payload"]["message"].as_str().unwrap_or("").to_string(),
                    ),
                );
            }
            _ => {}
        }
    }
    let mut problems = Vec::new();
    let mut rescued = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for (id, row) in &by_id {
        if let Some(n) = row.feedrs.strip_prefix("ok:") {
            accepted += 1;
            let n: usize = n.parse().unwrap();
            let got = articles.get(id).copied().unwrap_or(0);
            if let Some((kind, message)) = failures.get(id) {
                problems.push(format!(
                    "{} (feed-rs ok:{n}) failed: {kind}: {message}",
                    row.file
                ));
                continue;
            }
            let want = if got == n {
                n
            } else {
                distinct_entries(&std::fs::read(folder.join(&row.file)).unwrap())
            };
            if got != want {
                problems.push(format!(
                    "{}: {got} articles, feed-rs gives {n} entries ({want} distinct)",
                    row.file
                ));
            }
        } else {
            rejected += 1;
            match failures.get(id) {
                Some((kind, message))
                    if !message.is_empty()
                        && matches!(kind.as_str(), "parse" | "not_a_feed" | "encoding") => {}
                Some((kind, message)) => problems.push(format!(
                    "{} ({}): failed as {kind}: {message:?}",
                    row.file, row.feedrs
                )),
                None => rescued.push(format!(
                    "{} ({}, {}): {} articles",
                    row.file,
                    row.expect,
                    row.feedrs,
                    articles.get(id).copied().unwrap_or(0)
                )),
            }
        }
    }
    eprintln!(
        "corpus: {} files, {accepted} accepted by feed-rs, {rejected} rejected; {} articles in all; rescued by vigia: {rescued:#?}",
        rows.len(),
        count_kind(&evs, "ArticleDiscovered")
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(
        count_kind(&evs, "FeedPolled") + count_kind(&evs, "FeedPollFailed"),
        rows.len()
    );
}
