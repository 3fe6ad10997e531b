//! `vigia check` and the other entry points, through the real binary: every config
//! mistake reported at once with its place, exit codes, and clear errors at the edges.

use crate::util::{vigia, vigia_ok, Dir};

#[test]
fn check_reports_every_mistake_with_line_and_column_and_exits_2() {
    let dir = Dir::new();
    dir.write(
        "bad.toml",
        r#"[daemon]
database = "x.db"
schedule = "every tuesday"
bogus_key = 1

[[feed]]
id = "a"
url = "ftp://example.org/feed"

[[feed]]
id = "a"
url = "https://example.org/b.xml"
schedule = "61 * * * *"

[mail]
transport = "smtp"
host = "127.0.0.1"
password_env = "VIGIA_TEST_SURELY_UNSET_PASSWORD"

[[subscriber]]
email = "not-an-address"
topics = ["no-such-topic"]

[[topic]]
id = "us-mx-security"
"#,
    );
    let out = vigia(&["--config", "bad.toml", "check"], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for (place, words) in [
        ("bad.toml:3:12:", "cron"),
        ("bad.toml:4:1:", "unknown key `bogus_key`"),
        ("bad.toml:8:7:", "http or https"),
        ("bad.toml:11:6:", "duplicate feed id"),
        ("bad.toml:13:12:", "cron"),
        ("bad.toml:18:16:", "VIGIA_TEST_SURELY_UNSET_PASSWORD"),
        ("bad.toml:21:9:", "not an email address"),
        ("bad.toml:22:11:", "unknown topic `no-such-topic`"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(place))
            .unwrap_or_else(|| panic!("no diagnostic at {place}:\n{stderr}"));
        assert!(line.contains(words), "{place} should say {words:?}: {line}");
    }
}

#[test]
fn check_reports_a_syntax_error_with_its_place() {
    let dir = Dir::new();
    dir.write("broken.toml", "[daemon]\nschedule = \"*/5 * * * *\n");
    let out = vigia(&["--config", "broken.toml", "check"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.toml:2:"));
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = std::process::Command::new(crate::util::VIGIA)
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/vigia.toml"),
            "check",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("us-mx-security"));
}

#[test]
fn a_missing_config_names_the_file_and_exits_2() {
    let dir = Dir::new();
    let out = vigia(&["--config", "nowhere.toml", "check"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere.toml"));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = Dir::new();
    dir.write("conf/vigia.toml", "[daemon]\ndatabase = \"state/v.db\"\n");
    vigia_ok(&["--config", "conf/vigia.toml", "replay"], &dir);
    assert!(dir.join("conf/state/v.db").exists());
}

#[test]
fn the_db_option_overrides_the_config() {
    let dir = Dir::new();
    dir.config(&[], "");
    vigia_ok(
        &["--config", "vigia.toml", "--db", "other.db", "replay"],
        &dir,
    );
    assert!(dir.join("other.db").exists());
    assert!(!dir.db().exists());
}

#[test]
fn a_corrupt_database_is_a_runtime_error_not_a_panic() {
    let dir = Dir::new();
    dir.config(&[], "");
    std::fs::write(
        dir.db(),
        b"this is not sqlite at all, just text padding it out............",
    )
    .unwrap();
    let out = vigia(&["--config", "vigia.toml", "events"], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a vigia database"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn events_refuses_an_unknown_kind_with_usage_exit() {
    let dir = Dir::new();
    dir.config(&[], "");
    let out = vigia(
        &["--config", "vigia.toml", "events", "--kind", "Nope"],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ArticleDiscovered"));
}

#[test]
fn check_refuses_a_web_section_without_a_usable_key() {
    let dir = Dir::new();
    let base = "[daemon]\ndatabase = \"x.db\"\n\n[mail]\ntransport = \"file\"\ndir = \"out\"\n\n";
    for (web, says) in [
        ("[web]\npublic_url = \"https://v.example.org\"\n", "needs secret_env or secret_file"),
        ("[web]\npublic_url = \"ftp://v.example.org\"\nsecret_file = \"k\"\n", "http(s) URL"),
        ("[web]\npublic_url = \"https://v.example.org\"\nsecret_env = \"VIGIA_TEST_SHORT_SECRET\"\n", "at least 16"),
        ("[web]\npublic_url = \"https://v.example.org\"\nsecret_env = \"VIGIA_TEST_WEAK_SECRET\"\n", "too predictable"),
        ("[web]\npublic_url = \"https://v.example.org\"\nsecret_env = \"VIGIA_TEST_SURELY_UNSET_SECRET\"\n", "is not set"),
    ] {
        dir.write("web.toml", &format!("{base}{web}"));
        let out = std::process::Command::new(crate::util::VIGIA)
            .args(["--config", "web.toml", "check"])
            .current_dir(dir.path())
            .env("VIGIA_TEST_SHORT_SECRET", "short")
            .env("VIGIA_TEST_WEAK_SECRET", "aaaaaaaaaaaaaaaaaaaaaaaa")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{web}: {stderr}");
        assert!(stderr.contains("web.toml:") && stderr.contains(says), "{web}: {stderr}");
    }
    // A key file that does not exist yet is fine: it is created on first start.
    dir.write(
        "web.toml",
        &format!("{base}[web]\npublic_url = \"https://v.example.org\"\nsecret_file = \"keys/web.secret\"\n"),
    );
    let summary = vigia_ok(&["--config", "web.toml", "check"], &dir);
    assert!(summary.contains("self-service on"), "{summary}");
    assert!(
        !dir.join("keys/web.secret").exists(),
        "check creates nothing"
    );
    // A key file holding a predictable key is refused, as the daemon would refuse it.
    dir.write("weak.secret", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    dir.write(
        "web.toml",
        &format!(
            "{base}[web]\npublic_url = \"https://v.example.org\"\nsecret_file = \"weak.secret\"\n"
        ),
    );
    let out = std::process::Command::new(crate::util::VIGIA)
        .args(["--config", "web.toml", "check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("too predictable"), "{stderr}");
}

#[test]
fn a_postgres_database_is_connected_to_by_check_and_refused_clearly_where_sqlite_is_still_needed() {
    let dir = Dir::new();
    dir.write(
        "pg.toml",
        "[daemon]\ndatabase = \"postgres://vigia:s3cret@127.0.0.1:9/vigia\"\n\n[[feed]]\nid = \"a\"\nurl = \"https://example.org/a.xml\"\n\n[[topic]]\nid = \"us-mx-security\"\n",
    );
    // check connects (tests/pg.rs has it succeed): nothing listens on port 9.
    let check = vigia(&["--config", "pg.toml", "check"], &dir);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot connect to PostgreSQL at vigia@127.0.0.1:9/vigia"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let run = vigia(&["--config", "pg.toml", "run", "--once"], &dir);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("runs the daemon and these commands on SQLite only"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    // Nothing was created where a URL was once taken for a path.
    assert!(!dir.path().join("postgres:").exists());
}

#[test]
fn a_subscribers_unknown_time_zone_is_an_error_at_its_line() {
    let dir = Dir::new();
    dir.config(
        &[],
        "[[subscriber]]\nemail = \"ana@example.org\"\ntopics = [\"us-mx-security\"]\ntz = \"America/Mexico_City\"\n\n\
         [[subscriber]]\nemail = \"luis@example.org\"\ntopics = [\"us-mx-security\"]\ntz = \"Mars/Olympus_Mons\"\n",
    );
    let text = std::fs::read_to_string(dir.join("vigia.toml")).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("Mars/Olympus_Mons"))
        .unwrap()
        + 1;
    let out = vigia(&["--config", "vigia.toml", "check"], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("vigia.toml:{line}:")) && stderr.contains("unknown time zone"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("time zone").count(),
        1,
        "the valid zone passes: {stderr}"
    );
}
