//! `vigia demo`: the real binary replays the shipped topic's examples offline (only
//! loopback), serves the pages over the result, and leaves a digest preview; the
//! configured database and mail folder are never touched.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::util::{self, http, Dir, VIGIA};

/// Enough recent examples for stance changes in several months, few enough for
/// seconds in a debug build.
const LIMIT: &str = "400";

/// The demo process, stopped however the test ends (a failed assertion included), so
/// no server outlives its test.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The demo's folder, as it printed it.
fn demo_folder(printed: &str) -> PathBuf {
    printed
        .lines()
        .find_map(|l| l.strip_prefix("folder:"))
        .map(|p| PathBuf::from(p.trim()))
        .unwrap_or_else(|| panic!("no folder in:\n{printed}"))
}

/// The undoing of the pages' HTML escaping, for comparing text taken from the log.
fn unescape(html: &str) -> String {
    html.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn the_demo_replays_the_examples_over_months_serves_stances_with_evidence_and_previews_a_digest() {
    let dir = Dir::new();
    let config = dir.write(
        "vigia.toml",
        &format!(
            "[daemon]\ndatabase = \"configured.db\"\nlisten = \"127.0.0.1:9\"\n\n\
             [mail]\ntransport = \"file\"\ndir = \"configured-outbox\"\nfrom = \"vigia <vigia@example.org>\"\n\n\
             [[subscriber]]\nemail = \"analyst@example.org\"\ntopics = [\"us-mx-security\"]\ndigest = \"on-change\"\n\n{}",
            util::shipped_topics()
        ),
    );
    let db = dir.join("demo.db");
    let mut child = Running(
        Command::new(VIGIA)
            .args([
                "--config",
                config.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ])
            .args(["demo", "--listen", "127.0.0.1:0", "--limit", LIMIT])
            .current_dir(dir.path())
            .env_remove("VIGIA_CONFIG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting vigia demo"),
    );
    // stdout line by line on a thread, so the wait for the URL has a deadline.
    let (tx, lines) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut printed = String::new();
    let url = loop {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                printed.push_str(&line);
                printed.push('\n');
                if let Some(rest) = line.strip_prefix("open http://") {
                    break rest.split('/').next().unwrap().to_string();
                }
            }
            Err(e) => {
                let _ = child.0.kill();
                let mut stderr = String::new();
                if let Some(mut err) = child.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
                }
                panic!("no URL from the demo ({e}); stdout:\n{printed}\nstderr:\n{stderr}");
            }
        }
    };
    let addr: std::net::SocketAddr = url.parse().expect(&printed);
    assert!(
        printed.contains(", 0 failed)"),
        "every demo poll works offline:\n{printed}"
    );

    // The pages: the current stances with their evidence sentences, from the log.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let evidence: Vec<(String, String)> = {
        let mut stmt = conn
            .prepare("SELECT stance, evidence FROM stances ORDER BY topic, issue, actor")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert!(!evidence.is_empty(), "some stance is held:\n{printed}");
    let home = http::get(addr, "/");
    assert_eq!(home.status, 200);
    let page = unescape(&home.body);
    for (stance, json) in &evidence {
        let shown = match stance.as_str() {
            "support" => "supports",
            "oppose" => "opposes",
            _ => "neutral",
        };
        assert!(page.contains(shown), "the page shows {shown}");
        let items: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        let sentence = items[0]["sentence"].as_str().unwrap();
        assert!(
            page.contains(sentence),
            "the page shows the evidence {sentence:?}"
        );
    }
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGINT);
    }
    let status = child.0.wait().unwrap();
    assert!(status.success(), "Ctrl-C stops the demo cleanly: {status}");

    // The log: articles and stance changes over more than one month, in the
    // articles' time (the clock followed them), not in the minute the demo ran.
    let articles: i64 = conn
        .query_row("SELECT COUNT(*) FROM articles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        articles.to_string(),
        LIMIT,
        "every example became an article"
    );
    let span = |sql: &str| -> (String, String, i64) {
        conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
    };
    let (first, last, months) = span(
        "SELECT MIN(recorded_at), MAX(recorded_at), COUNT(DISTINCT substr(recorded_at, 1, 7))
         FROM events WHERE kind = 'ArticleDiscovered'",
    );
    assert!(months > 1, "articles recorded from {first} to {last}");
    let (first, last, months) =
        span("SELECT MIN(at), MAX(at), COUNT(DISTINCT substr(at, 1, 7)) FROM stance_history");
    assert!(months > 1, "stance changes from {first} to {last}");
    let changes: i64 = conn
        .query_row("SELECT COUNT(*) FROM stance_history", [], |r| r.get(0))
        .unwrap();
    assert!(changes >= 2);

    // The digest preview names a change, and came through the file transport only.
    let folder = demo_folder(&printed);
    let eml = std::fs::read_to_string(folder.join("digest-preview.eml")).expect(&printed);
    let subject = eml
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .expect("a subject");
    assert!(
        ["now supports", "now opposes", "now neutral", "first"]
            .iter()
            .any(|w| subject.contains(w)),
        "the subject names a change: {subject}"
    );
    let html = std::fs::read_to_string(folder.join("digest-preview.html")).unwrap();
    assert!(
        html.contains("<h2") && (html.contains(" now ") || html.contains("First reading")),
        "the change, said in a sentence: {html}"
    );
    assert!(
        html.contains("<q>") || html.contains("<li"),
        "its evidence: {html}"
    );
    assert!(
        !dir.join("configured.db").exists(),
        "the configured database is untouched"
    );
    assert!(
        !dir.join("configured-outbox").exists(),
        "no mail left the demo"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn the_demo_refuses_a_database_that_holds_events_and_the_configured_one() {
    let dir = Dir::new();
    let config = dir.write(
        "vigia.toml",
        &format!(
            "[daemon]\ndatabase = \"configured.db\"\n\n[mail]\ntransport = \"file\"\ndir = \"out\"\nfrom = \"vigia <vigia@example.org>\"\n\n{}",
            util::shipped_topics()
        ),
    );
    let config = config.to_str().unwrap();
    let configured = dir.join("configured.db");
    let out = util::vigia(
        &[
            "--config",
            config,
            "--db",
            configured.to_str().unwrap(),
            "demo",
            "--no-serve",
        ],
        &dir,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        util::explain(&[], &dir, &out)
    );
    assert!(!configured.exists());

    let used = dir.join("used.db");
    let used = used.to_str().unwrap();
    let args = [
        "--config",
        config,
        "--db",
        used,
        "demo",
        "--no-serve",
        "--limit",
        "5",
    ];
    let first = util::vigia(&args, &dir);
    assert!(
        first.status.success(),
        "{}",
        util::explain(&args, &dir, &first)
    );
    std::fs::remove_dir_all(demo_folder(&String::from_utf8_lossy(&first.stdout))).unwrap();
    let again = util::vigia(&args, &dir);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds events"),
        "{}",
        util::explain(&args, &dir, &again)
    );
}
