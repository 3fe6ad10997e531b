//! The daemon as a service, through the real binary: SIGTERM mid-cycle, SIGHUP with a
//! good and a broken config, /metrics as Prometheus text with counters that move, and
//! /healthz turning unhealthy when the database cannot be reached.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::util::{rss, Daemon, Dir, FeedServer, Route};

const RSS: &str = "application/rss+xml";

/// A plain HTTP/1.1 GET: (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// The operators' endpoints on port 0: the daemon logs the port it was given.
fn write_config(dir: &Dir, feeds: &[(&str, String)], schedule: &str) {
    let mut text = format!(
        "[daemon]\ndatabase = \"vigia.db\"\nschedule = \"{schedule}\"\nops_listen = \"127.0.0.1:0\"\n\n[mail]\ntransport = \"file\"\ndir = \"outbox\"\n\n"
    );
    for (id, url) in feeds {
        text.push_str(&format!("[[feed]]\nid = \"{id}\"\nurl = \"{url}\"\n\n"));
    }
    text.push_str(
        "[[topic]]\nid = \"t\"\nrequire = [\"g\"]\n[topic.groups.g]\nterms = [\"council\"]\n",
    );
    dir.write("vigia.toml", &text);
}

fn events(dir: &Dir) -> Vec<serde_json::Value> {
    crate::util::events(dir)
}

#[test]
fn sigterm_mid_cycle_exits_0_quickly_and_leaves_no_half_recorded_poll() {
    let dir = Dir::new();
    let server = FeedServer::start();
    let mut feeds = Vec::new();
    for i in 0..6 {
        let items: Vec<(String, String, String)> = (0..5)
            .map(|j| {
                (
                    format!("{i}-{j}"),
                    format!("City council item {j}"),
                    "Votes".to_string(),
                )
            })
            .collect();
        let refs: Vec<(&str, &str, &str)> = items
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        // Some answer at once, some take seconds: SIGTERM lands mid-cycle.
        let delay = Duration::from_millis(if i % 2 == 0 { 10 } else { 2500 });
        server.set(
            &format!("f{i}.xml"),
            Route::Delayed(
                delay,
                Box::new(Route::Feed {
                    body: rss("F", &refs).into_bytes(),
                    content_type: RSS.into(),
                }),
            ),
        );
        feeds.push((format!("f{i}"), server.url(&format!("f{i}.xml"))));
    }
    let list: Vec<(&str, String)> = feeds.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    write_config(&dir, &list, "*/15 * * * *");
    let daemon = Daemon::start(&dir);
    wait_for("a slow poll in flight", Duration::from_secs(20), || {
        server.stats(|s| s.in_flight >= 1 && s.requests >= 4)
    });
    let (status, took) = daemon.stop();
    assert!(status.success(), "exit status {status}");
    assert!(took <= Duration::from_secs(10), "took {took:?}");

    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let evs = events(&dir);
    // The quick feeds had answered before SIGTERM: their polls are recorded.
    let recorded = evs.iter().filter(|e| e["kind"] == "FeedPolled").count();
    assert!(recorded >= 1, "no poll recorded: {evs:#?}");
    for (id, _) in &feeds {
        let polled: u64 = evs
            .iter()
            .filter(|e| e["kind"] == "FeedPolled" && e["payload"]["feed"] == id.as_str())
            .map(|e| e["payload"]["new_articles"].as_u64().unwrap())
            .sum();
        let discovered = evs
            .iter()
            .filter(|e| e["kind"] == "ArticleDiscovered" && e["payload"]["feed"] == id.as_str())
            .count();
        assert_eq!(
            polled as usize, discovered,
            "feed {id}: a poll is recorded whole or not at all"
        );
    }
}

#[test]
fn sighup_applies_a_good_config_and_refuses_a_broken_one() {
    let dir = Dir::new();
    let server = FeedServer::start();
    server.feed(
        "alpha.xml",
        rss("A", &[("1", "City council meets", "x")]),
        RSS,
    );
    server.feed(
        "bravo.xml",
        rss("B", &[("1", "Another council vote", "y")]),
        RSS,
    );
    write_config(&dir, &[("alpha", server.url("alpha.xml"))], "*/2 * * * * *");
    let daemon = Daemon::start(&dir);
    let ops = daemon.ops();
    wait_for("/healthz", Duration::from_secs(30), || {
        get(ops, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    wait_for("alpha polled", Duration::from_secs(15), || {
        server.stats(|s| s.by_path.contains_key("/alpha.xml"))
    });

    write_config(
        &dir,
        &[
            ("alpha", server.url("alpha.xml")),
            ("bravo", server.url("bravo.xml")),
        ],
        "*/2 * * * * *",
    );
    daemon.signal(libc::SIGHUP);
    wait_for("bravo polled after SIGHUP", Duration::from_secs(15), || {
        server.stats(|s| s.by_path.contains_key("/bravo.xml"))
    });
    let applied = events(&dir)
        .iter()
        .filter(|e| e["kind"] == "ConfigApplied")
        .count();
    assert_eq!(applied, 2, "the reload is recorded with its hash");

    let good = std::fs::read_to_string(dir.join("vigia.toml")).unwrap();
    dir.write("vigia.toml", &format!("{good}\n[[feed]]\nid = 7\n"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("config reload refused", Duration::from_secs(10));
    let requests = server.stats(|s| s.requests);
    wait_for(
        "polling goes on with the old config",
        Duration::from_secs(10),
        || server.stats(|s| s.requests) > requests,
    );
    assert_eq!(get(ops, "/healthz").map(|(s, _)| s), Some(200));
    let log = daemon.log();
    let (status, _) = daemon.stop();
    assert!(status.success());
    assert!(log.contains("vigia.toml:"), "the log says why: {log}");
}

/// Prometheus text exposition: comments, and `name{labels} value` samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let kind = rest.split_whitespace().next().unwrap_or("");
            assert!(
                matches!(kind, "TYPE" | "HELP"),
                "unexpected comment: {line}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name.contains('{') {
            assert!(name.ends_with('}'), "unclosed labels: {line}");
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.push((name.to_string(), v));
    }
    samples
}

#[test]
fn metrics_move_after_a_cycle_and_health_follows_the_database() {
    let dir = Dir::new();
    let server = FeedServer::start();
    server.feed(
        "alpha.xml",
        rss(
            "A",
            &[
                ("1", "City council meets", "x"),
                ("2", "Council votes", "y"),
            ],
        ),
        RSS,
    );
    write_config(&dir, &[("alpha", server.url("alpha.xml"))], "*/2 * * * * *");
    let daemon = Daemon::start(&dir);
    let ops = daemon.ops();
    wait_for("/healthz", Duration::from_secs(30), || {
        get(ops, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    wait_for("a poll counted", Duration::from_secs(20), || {
        get(ops, "/metrics").is_some_and(|(_, body)| body.contains("vigia_polls_total"))
    });
    let (status, body) = get(ops, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE vigia_polls_total counter"), "{body}");
    assert!(
        body.contains("# TYPE vigia_poll_duration_seconds histogram"),
        "{body}"
    );
    let samples = parse_prometheus(&body);
    let articles: f64 = samples
        .iter()
        .filter(|(n, _)| n.starts_with("vigia_articles_total{kind=\"discovered\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(articles, 2.0, "{body}");
    let polls = |samples: &[(String, f64)]| -> f64 {
        samples
            .iter()
            .filter(|(n, _)| n.starts_with("vigia_polls_total"))
            .map(|(_, v)| v)
            .sum()
    };
    let first = polls(&samples);
    wait_for("more polls counted", Duration::from_secs(15), || {
        polls(&parse_prometheus(&get(ops, "/metrics").unwrap().1)) > first
    });

    // The database goes away: health says so; it comes back: healthy again.
    let aside = dir.join("vigia.db.aside");
    std::fs::rename(dir.db(), &aside).unwrap();
    let (status, body) = get(ops, "/healthz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unhealthy"), "{body}");
    std::fs::rename(&aside, dir.db()).unwrap();
    wait_for("healthy again", Duration::from_secs(10), || {
        get(ops, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    let (status, _) = daemon.stop();
    assert!(status.success());
}
