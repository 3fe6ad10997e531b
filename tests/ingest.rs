//! Ingestion through the real binary against a real HTTP server on 127.0.0.1:
//! conditional GET, revisions and discoveries, hostile servers, redirects, 410 Gone,
//! charsets, the per-host cap and the User-Agent.

use std::time::Duration;

use crate::util::{count_kind, events, rss, vigia, vigia_ok, Dir, FeedServer, Route};

const RSS: &str = "application/rss+xml";

#[test]
fn unchanged_feeds_are_answered_304_and_append_no_article_events() {
    let dir = Dir::new();
    let server = FeedServer::start();
    server.feed(
        "a.xml",
        rss("A", &[("1", "First", "one"), ("2", "Second", "two")]),
        RSS,
    );
    server.feed("b.xml", rss("B", &[("1", "Other", "three")]), RSS);
    dir.config(
        &[("a", server.url("a.xml")), ("b", server.url("b.xml"))],
        "",
    );
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let first = events(&dir);
    assert_eq!(count_kind(&first, "ArticleDiscovered"), 3);

    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let second = events(&dir);
    assert_eq!(
        server.stats(|s| s.not_modified),
        2,
        "both feeds answered 304"
    );
    assert_eq!(count_kind(&second, "ArticleDiscovered"), 3);
    assert_eq!(count_kind(&second, "ArticleRevised"), 0);
    assert_eq!(count_kind(&second, "FeedPolled"), 4);

    // A changed title is a revision; a new item a discovery; the rest nothing.
    server.feed(
        "a.xml",
        rss(
            "A",
            &[
                ("1", "First, updated", "one"),
                ("2", "Second", "two"),
                ("3", "Third", "x"),
            ],
        ),
        RSS,
    );
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let third = events(&dir);
    assert_eq!(count_kind(&third, "ArticleDiscovered"), 4);
    assert_eq!(count_kind(&third, "ArticleRevised"), 1);
    let revision = third
        .iter()
        .find(|e| e["kind"] == "ArticleRevised")
        .unwrap();
    assert_eq!(revision["payload"]["title"], "First, updated");
    assert_eq!(revision["payload"]["revision"], 2);

    // The same content served again without validators (a new ETag) still appends nothing.
    server.feed(
        "a.xml",
        format!(
            "{}\n<!-- trailing change -->",
            rss(
                "A",
                &[
                    ("1", "First, updated", "one"),
                    ("2", "Second", "two"),
                    ("3", "Third", "x")
                ]
            )
        ),
        RSS,
    );
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let fourth = events(&dir);
    assert_eq!(count_kind(&fourth, "ArticleDiscovered"), 4);
    assert_eq!(count_kind(&fourth, "ArticleRevised"), 1);
}

fn failure_kind(events: &[serde_json::Value], feed: &str) -> Option<String> {
    events
        .iter()
        .rev()
        .find(|e| e["kind"] == "FeedPollFailed" && e["payload"]["feed"] == feed)
        .map(|e| e["payload"]["kind"].as_str().unwrap_or("").to_string())
}

#[test]
fn hostile_servers_fail_cleanly_and_the_healthy_feed_still_lands() {
    let dir = Dir::new();
    let server = FeedServer::start();
    server.feed("good.xml", rss("Good", &[("1", "Fine", "ok")]), RSS);
    server.set("slow.xml", Route::SlowDrip);
    server.set("endless.xml", Route::Endless);
    server.set("bomb.xml", Route::GzipBomb);
    server.set("loop.xml", Route::Redirect(302, "/loop.xml".into()));
    server.set("error.xml", Route::Status(500, vec![]));
    server.feed(
        "page.xml",
        "<!doctype html><html><body>Moved</body></html>",
        "text/html",
    );
    server.feed("garbage.xml", "<rss><channel><item><title>unclosed", RSS);
    server.set(
        "elsewhere.xml",
        Route::Redirect(302, "ftp://127.0.0.1/feed".into()),
    );
    let feeds = [
        "good",
        "slow",
        "endless",
        "bomb",
        "loop",
        "error",
        "page",
        "garbage",
        "missing",
        "elsewhere",
    ];
    let list: Vec<(&str, String)> = feeds
        .iter()
        .map(|f| (*f, server.url(&format!("{f}.xml"))))
        .collect();
    dir.config(&list, "");
    // Tight limits keep the test short: a 3 s budget per request and a 512 KB body cap.
    let text = std::fs::read_to_string(dir.join("vigia.toml")).unwrap();
    dir.write(
        "vigia.toml",
        &text.replace(
            "[mail]",
            "[daemon.fetch]\ntimeout_s = 3\nmax_body_kb = 512\n\n[mail]",
        ),
    );
    let started = std::time::Instant::now();
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the cycle waited on a hostile server"
    );
    let evs = events(&dir);
    assert_eq!(count_kind(&evs, "ArticleDiscovered"), 1);
    let expect = [
        ("slow", "timeout"),
        ("endless", "too_large"),
        ("bomb", "too_large"),
        ("loop", "too_many_redirects"),
        ("error", "http_status"),
        ("page", "not_a_feed"),
        ("garbage", "parse"),
        ("missing", "http_status"),
        ("elsewhere", "forbidden_redirect"),
    ];
    for (feed, kind) in expect {
        assert_eq!(
            failure_kind(&evs, feed).as_deref(),
            Some(kind),
            "feed {feed}"
        );
    }
    let table = vigia_ok(&["--config", "vigia.toml", "feeds"], &dir);
    for feed in feeds {
        assert!(table.contains(feed), "`vigia feeds` lists {feed}:\n{table}");
    }
    assert!(table.contains("too_large"), "{table}");
}

#[test]
fn retry_after_and_backoff_push_the_next_poll_out() {
    let dir = Dir::new();
    let server = FeedServer::start();
    server.set(
        "busy.xml",
        Route::Status(503, vec![("Retry-After".into(), "7200".into())]),
    );
    dir.config(&[("busy", server.url("busy.xml"))], "");
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let evs = events(&dir);
    let failed = evs.iter().find(|e| e["kind"] == "FeedPollFailed").unwrap();
    let retry = chrono::DateTime::parse_from_rfc3339(
        failed["payload"]["retry_not_before"].as_str().unwrap(),
    )
    .unwrap();
    let wait = retry.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::minutes(115),
        "Retry-After 7200 s honoured: {wait}"
    );
    assert_eq!(failed["payload"]["streak"], 1);
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let evs = events(&dir);
    let last = evs
        .iter()
        .rev()
        .find(|e| e["kind"] == "FeedPollFailed")
        .unwrap();
    assert_eq!(last["payload"]["streak"], 2, "the error streak grows");
}

#[test]
fn a_permanent_redirect_moves_the_feed_and_410_stops_it() {
    let dir = Dir::new();
    let server = FeedServer::start();
    server.set("old.xml", Route::Redirect(301, "/new.xml".into()));
    server.feed("new.xml", rss("N", &[("1", "Moved story", "x")]), RSS);
    server.set("gone.xml", Route::Status(410, vec![]));
    dir.config(
        &[
            ("moving", server.url("old.xml")),
            ("gone", server.url("gone.xml")),
        ],
        "",
    );
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let evs = events(&dir);
    let polled = evs.iter().find(|e| e["kind"] == "FeedPolled").unwrap();
    assert_eq!(polled["payload"]["moved_to"], server.url("new.xml"));
    assert_eq!(failure_kind(&evs, "gone").as_deref(), Some("gone"));

    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let health = vigia_ok(&["--config", "vigia.toml", "feeds"], &dir);
    assert_eq!(
        server.stats(|s| s.by_path.get("/old.xml").copied()),
        Some(1),
        "the moved feed is polled at its new URL:\n{health}"
    );
    assert_eq!(
        server.stats(|s| s.by_path.get("/new.xml").copied()),
        Some(2)
    );
    assert_eq!(
        server.stats(|s| s.by_path.get("/gone.xml").copied()),
        Some(1),
        "a gone feed is not polled again"
    );
    let table = vigia_ok(&["--config", "vigia.toml", "feeds"], &dir);
    assert!(table.contains("410 Gone"), "{table}");
}

#[test]
fn the_charset_in_content_type_is_respected() {
    let dir = Dir::new();
    let server = FeedServer::start();
    let doc = rss(
        "Noticias",
        &[(
            "1",
            "Intervención y soberanía",
            "México rechazó la operación",
        )],
    )
    .replace("encoding=\"UTF-8\"", "");
    let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode(&doc);
    server.feed(
        "latin1.xml",
        latin1.into_owned(),
        "application/rss+xml; charset=ISO-8859-1",
    );
    dir.config(&[("latin1", server.url("latin1.xml"))], "");
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let evs = events(&dir);
    let article = evs
        .iter()
        .find(|e| e["kind"] == "ArticleDiscovered")
        .expect("decoded");
    assert_eq!(article["payload"]["title"], "Intervención y soberanía");
    assert_eq!(article["payload"]["summary"], "México rechazó la operación");
}

#[test]
fn many_feeds_on_one_host_never_exceed_the_per_host_cap() {
    let dir = Dir::new();
    let server = FeedServer::start();
    let mut feeds = Vec::new();
    for i in 0..1000 {
        let path = format!("f{i}.xml");
        server.set(
            &path,
            Route::Delayed(
                Duration::from_millis(4),
                Box::new(Route::Feed {
                    body: rss(&format!("F{i}"), &[(&format!("{i}"), "Item", "x")]).into_bytes(),
                    content_type: RSS.into(),
                }),
            ),
        );
        feeds.push((format!("f{i}"), server.url(&path)));
    }
    let list: Vec<(&str, String)> = feeds.iter().map(|(a, b)| (a.as_str(), b.clone())).collect();
    dir.config(&list, "");
    let text = std::fs::read_to_string(dir.join("vigia.toml")).unwrap();
    dir.write(
        "vigia.toml",
        &text.replace("[mail]", "[daemon.fetch]\nmax_per_host = 3\n\n[mail]"),
    );
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let (requests, peak) = server.stats(|s| (s.requests, s.max_in_flight));
    assert_eq!(requests, 1000);
    assert!(peak <= 3, "the server saw {peak} requests at once");
    assert!(peak >= 2, "polls ran concurrently (peak {peak})");
    assert_eq!(count_kind(&events(&dir), "ArticleDiscovered"), 1000);
}

#[test]
fn the_user_agent_names_vigia_and_its_version() {
    let dir = Dir::new();
    let server = FeedServer::start();
    server.feed("a.xml", rss("A", &[("1", "x", "y")]), RSS);
    dir.config(&[("a", server.url("a.xml"))], "");
    vigia_ok(&["--config", "vigia.toml", "run", "--once"], &dir);
    let agents = server.stats(|s| s.user_agents.clone());
    assert!(!agents.is_empty(), "the feed was fetched");
    assert!(
        agents
            .iter()
            .all(|a| a.starts_with(&format!("vigia/{}", env!("CARGO_PKG_VERSION")))),
        "{agents:?}"
    );
}

#[test]
fn an_unreachable_feed_fails_with_connect_and_does_not_stop_the_cycle() {
    let dir = Dir::new();
    // A port that refuses connections, held for the whole test so that no other
    // process can start listening on it meanwhile.
    let (_held, port) = crate::util::refused_port();
    dir.config(
        &[("closed", format!("http://127.0.0.1:{port}/feed.xml"))],
        "",
    );
    let out = vigia(&["--config", "vigia.toml", "run", "--once"], &dir);
    assert!(out.status.success());
    assert_eq!(
        failure_kind(&events(&dir), "closed").as_deref(),
        Some("connect")
    );
}

#[test]
fn the_daemon_never_polls_a_feed_that_is_still_being_polled() {
    let dir = Dir::new();
    let server = FeedServer::start();
    // Each poll of this feed takes 2.5 s; the schedule asks for one every second.
    server.set(
        "slow.xml",
        Route::Delayed(
            Duration::from_millis(2500),
            Box::new(Route::Feed {
                body: rss("S", &[("1", "x", "y")]).into_bytes(),
                content_type: RSS.into(),
            }),
        ),
    );
    dir.config(&[("slow", server.url("slow.xml"))], "");
    let text = std::fs::read_to_string(dir.join("vigia.toml")).unwrap();
    dir.write(
        "vigia.toml",
        &text.replace(
            "schedule = \"*/15 * * * *\"",
            // Port 0: the operators' endpoints take no fixed port on the test machine.
            "schedule = \"* * * * * *\"\nops_listen = \"127.0.0.1:0\"",
        ),
    );
    let mut daemon = std::process::Command::new(crate::util::VIGIA)
        .args(["--config", "vigia.toml", "run"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the second poll to start (a readiness condition, not a fixed sleep).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.stats(|s| s.requests) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak = server.stats(|s| s.max_in_flight);
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM stops the daemon cleanly: {status}"
    );
    assert!(
        server.stats(|s| s.requests) >= 2,
        "the daemon polled on its schedule"
    );
    assert_eq!(peak, 1, "one poll of the feed at a time");
}
