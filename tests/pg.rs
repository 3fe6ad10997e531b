//! The PostgreSQL store on its own (the `postgres` feature, `$VIGIA_TEST_POSTGRES`):
//! passwords from the config and TLS over TCP, clear one-line errors from `vigia
//! check`, a database from a newer vigia refused, `vigia migrate` into PostgreSQL
//! (projections rebuilt there) and back to SQLite, and the building blocks for several daemons (feed leases, leadership).
//!
//! The TCP tests log in as a role with a password (`pg_hba.conf` asks for one over
//! TCP): the role is created here, once per run, by the admin connection (which
//! `.ci/run` gives CREATEROLE). TLS is the server's own: Debian's cluster has
//! `ssl = on` with the snakeoil certificate (CN and DNS name `localhost`).

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vigia::config::PostgresDatabase;
use vigia::projections;
use vigia::store::{EventStore, NewEvent, PgStore, SqliteStore, StoreError};

use crate::conformance::{admin, assert_same_events, database_url, new_database};
use crate::event_store::{polled, projection_snapshot, varied_log};
use crate::pg_projections::{assert_same_rows, pg_snapshot, sqlite_snapshot};
use crate::util::{Dir, VIGIA};

/// The certificate Debian's cluster serves.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
const ROLE: &str = "vigia_test_password";

/// The password of the test role, made (or reset) once per run.
fn role_password() -> &'static str {
    static PASSWORD: OnceLock<String> = OnceLock::new();
    PASSWORD.get_or_init(|| {
        let password = format!(
            "pw-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let (_, mut admin) = admin();
        let exists = admin
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&ROLE])
            .unwrap()
            .is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        admin
            .batch_execute(&format!("{verb} ROLE {ROLE} LOGIN PASSWORD '{password}'"))
            .unwrap();
        password
    })
}

/// A fresh database (`{prefix}_{pid}`) the test role may create its tables in.
fn database_for_role(prefix: &str) -> String {
    role_password();
    let (name, url) = new_database(prefix);
    let mut owner = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    owner
        .batch_execute(&format!("GRANT ALL ON SCHEMA public TO {ROLE}"))
        .unwrap();
    name
}

fn drop_database(name: &str) {
    let (_, mut admin) = admin();
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

/// The test role's URL over TCP (the port the admin URL names, else 5432), without
/// its password, with `query` appended.
fn tcp_url(host: &str, database: &str, query: &str) -> String {
    let (admin_url, _) = admin();
    let port = url::Url::parse(&admin_url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(5432);
    format!("postgres://{ROLE}@{host}:{port}/{database}{query}")
}

fn with_password(url: &str) -> PostgresDatabase {
    PostgresDatabase {
        url: url.replacen(
            &format!("{ROLE}@"),
            &format!("{ROLE}:{}@", role_password()),
            1,
        ),
        password: None,
    }
}

/// `vigia` with extra environment variables; the output whatever the status.
fn vigia_with(dir: &Dir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(VIGIA);
    command
        .args(args)
        .current_dir(dir.path())
        .env_remove("VIGIA_CONFIG");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("running vigia")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config whose database is `database` (the `[daemon]` keys after it as written).
fn pg_config(dir: &Dir, database: &str, more: &str) -> String {
    dir.write(
        "pg.toml",
        &format!(
            "[daemon]\ndatabase = \"{database}\"\n{more}\n\n[mail]\ntransport = \"file\"\ndir = \"outbox\"\nfrom = \"vigia <vigia@example.org>\"\n\n[[topic]]\nid = \"us-mx-security\"\nname = \"US–Mexico security\"\n"
        ),
    )
    .to_str()
    .unwrap()
    .to_string()
}

/// `sslmode=require` encrypts (as the server's own statistics say) without checking
/// the certificate; no sslmode and `disable` do not encrypt; `verify-full` refuses the
/// self-signed snakeoil certificate against webpki's roots, and against itself as the
/// root when the host name does not match; `verify-ca` accepts it as the root.
#[test]
fn tls_is_used_as_the_url_asks() {
    let db = database_for_role("vigia_pg_tls");
    let encrypted = |host: &str, query: &str| -> Result<bool, StoreError> {
        PgStore::inspect(&with_password(&tcp_url(host, &db, query))).map(|s| s.encrypted)
    };
    assert!(encrypted("127.0.0.1", "?sslmode=require").unwrap());
    assert!(encrypted("127.0.0.1", "?sslmode=prefer").unwrap());
    assert!(!encrypted("127.0.0.1", "").unwrap());
    assert!(!encrypted("127.0.0.1", "?sslmode=disable").unwrap());

    // The store itself works over TLS (its schema, an append, the listener).
    let store = PgStore::open(&with_password(&tcp_url(
        "127.0.0.1",
        &db,
        "?sslmode=require",
    )))
    .unwrap();
    let appended = store
        .append(vec![NewEvent::new("tls", polled("a", 1))])
        .unwrap();
    assert_eq!(
        store.read_stream("tls").unwrap()[0].seq,
        appended[0].event().seq
    );
    drop(store);

    let refused = encrypted("127.0.0.1", "?sslmode=verify-full").unwrap_err();
    let message = refused.to_string();
    assert!(
        matches!(refused, StoreError::PgConnect { .. }),
        "{refused:?}"
    );
    assert!(
        message.contains("sslmode=verify-full") && message.contains("certificate"),
        "{message}"
    );
    assert!(!message.contains(role_password()), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");

    let root = format!("&sslrootcert={SNAKEOIL}");
    assert!(
        std::path::Path::new(SNAKEOIL).is_file(),
        "{SNAKEOIL}: Debian's PostgreSQL serves it (package ssl-cert)"
    );
    let wrong_name = encrypted("127.0.0.1", &format!("?sslmode=verify-full{root}")).unwrap_err();
    assert!(
        wrong_name.to_string().contains("not valid for name"),
        "{wrong_name}"
    );
    assert!(encrypted("127.0.0.1", &format!("?sslmode=verify-ca{root}")).unwrap());
    assert!(encrypted("localhost", &format!("?sslmode=verify-full{root}")).unwrap());
    drop_database(&db);
}

/// The password comes from `database_password_env` or `_file` when one is named (over
/// the URL's own), else from the URL; `vigia check` connects with it and shows it
/// nowhere, nor a wrong one in its one-line error (exit 2).
#[test]
fn the_password_comes_from_the_config_and_is_never_shown() {
    let db = database_for_role("vigia_pg_password");
    let dir = Dir::new();
    let password = role_password();
    let check = |config: &str, env: &[(&str, &str)]| {
        let out = vigia_with(&dir, &["--config", config, "check"], env);
        let (stdout, stderr) = text(&out);
        assert!(
            !stdout.contains(password) && !stderr.contains(password),
            "{stdout}{stderr}"
        );
        (out.status.code(), stdout, stderr)
    };

    // From the environment, over a wrong password in the URL.
    let url = tcp_url("127.0.0.1", &db, "?sslmode=require").replacen(
        &format!("{ROLE}@"),
        &format!("{ROLE}:wrong-in-url@"),
        1,
    );
    let config = pg_config(
        &dir,
        &url,
        "database_password_env = \"VIGIA_TEST_PG_PASSWORD\"",
    );
    let (code, stdout, stderr) = check(&config, &[("VIGIA_TEST_PG_PASSWORD", password)]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("connected over TLS"), "{stdout}");
    assert!(!stdout.contains("wrong-in-url"), "{stdout}");

    // A wrong one: a clear line, exit 2, the attempt not shown either.
    let (code, stdout, stderr) = check(
        &config,
        &[("VIGIA_TEST_PG_PASSWORD", "not-the-password-42")],
    );
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password-42"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // From a file (its final newline is not part of it).
    dir.write("pg-password", &format!("{password}\n"));
    let config = pg_config(
        &dir,
        &tcp_url("127.0.0.1", &db, ""),
        "database_password_file = \"pg-password\"",
    );
    let (code, stdout, stderr) = check(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("not encrypted"), "{stdout}");

    // In the URL: used, and shown as ***.
    let config = pg_config(&dir, &with_password(&tcp_url("127.0.0.1", &db, "")).url, "");
    let (code, stdout, stderr) = check(&config, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(":***@"), "{stdout}");

    // The store itself takes the password from the config's secret.
    std::env::set_var("VIGIA_TEST_PG_PASSWORD_LIB", password);
    let store = PgStore::open(&PostgresDatabase {
        url: tcp_url("127.0.0.1", &db, ""),
        password: Some(vigia::config::Secret::Env(
            "VIGIA_TEST_PG_PASSWORD_LIB".into(),
        )),
    })
    .unwrap();
    assert_eq!(store.head().unwrap(), 0);
    drop(store);
    drop_database(&db);
}

/// `vigia check` connects: an unreachable server, a missing database and a database
/// written by a newer vigia are each one clear line and exit 2; the store refuses the
/// newer schema on connect, in SQLite's words.
#[test]
fn check_reports_what_stops_a_connection_in_one_line() {
    let (admin_url, _) = admin();
    let dir = Dir::new();
    let one_line_refusal = |database: &str, says: &str| {
        let config = pg_config(&dir, database, "");
        let out = vigia_with(&dir, &["--config", &config, "check"], &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };

    let (_closed, port) = crate::util::refused_port();
    one_line_refusal(
        &format!("postgres://vigia:s3cret@127.0.0.1:{port}/vigia"),
        "cannot connect to PostgreSQL at vigia@127.0.0.1",
    );
    let config = pg_config(
        &dir,
        &format!("postgres://vigia:s3cret@127.0.0.1:{port}/vigia"),
        "",
    );
    let (_, stderr) = text(&vigia_with(&dir, &["--config", &config, "check"], &[]));
    assert!(
        stderr.contains("refused") && !stderr.contains("s3cret"),
        "{stderr}"
    );

    let missing = format!("vigia_pg_missing_{}", std::process::id());
    one_line_refusal(
        &database_url(&admin_url, &missing),
        &format!("database \"{missing}\" does not exist"),
    );

    let (name, url) = new_database("vigia_pg_newer");
    drop(PgStore::connect(&url).unwrap());
    let config = pg_config(&dir, &url, "");
    let out = vigia_with(&dir, &["--config", &config, "check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    // A step this build does not know, as a newer vigia would have recorded it.
    let mut direct = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let known: i64 = direct
        .query_one("SELECT COUNT(*) FROM vigia_schema", &[])
        .unwrap()
        .get(0);
    assert!(
        text(&out).0.contains(&format!("schema {known} of {known}")),
        "{:?}",
        text(&out)
    );
    direct
        .execute(
            "INSERT INTO vigia_schema (version) VALUES ($1)",
            &[&(known as i32 + 1)],
        )
        .unwrap();
    drop(direct);
    let newer = known + 1;
    one_line_refusal(
        &url,
        &format!("was written by a newer vigia (schema {newer}, this build knows up to {known}); upgrade vigia to open it"),
    );
    match PgStore::connect(&url) {
        Err(StoreError::TooNewPostgres {
            found, known: k, ..
        }) => {
            assert_eq!((found, k as i64), (newer, known))
        }
        Err(other) => panic!("expected TooNewPostgres, got {other:?}"),
        Ok(_) => panic!("a database from a newer vigia was opened"),
    }
    drop_database(&name);
}

/// SQLite → PostgreSQL → SQLite with `vigia migrate`: the same events (payloads
/// compared as values: jsonb orders keys its own way) and the same projection rows as
/// the original; a target that holds events is refused.
#[test]
fn migrate_round_trip_through_postgres_keeps_events_and_projections() {
    let (name, url) = new_database("vigia_pg_round_trip");

    let dir = Dir::new();
    let store = SqliteStore::open(&dir.db()).unwrap();
    varied_log(&store, 300);
    projections::catch_up(&store).unwrap();
    let sqlite_config = dir.config(&[("a", "http://127.0.0.1:9/a.xml".to_string())], "");
    let (sqlite_config, db) = (sqlite_config.to_str().unwrap(), dir.db());
    let to_pg = [
        "--config",
        sqlite_config,
        "--db",
        db.to_str().unwrap(),
        "migrate",
        "--to",
        &url,
    ];
    let out = vigia_with(&dir, &to_pg, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("copied 300 events"), "{stdout}");
    assert!(
        stdout.contains("rebuilt 6 projections from 300 events"),
        "{stdout}"
    );
    // The projections rebuilt there hold SQLite's rows.
    let sqlite_rows = sqlite_snapshot(&dir.db());
    assert_same_rows(&sqlite_rows, &pg_snapshot(&url));

    // `vigia replay` on the PostgreSQL log rebuilds the same rows there.
    let pg_config = pg_config(&dir, &url, "");
    let out = vigia_with(&dir, &["--config", &pg_config, "replay"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("replayed 300 events"), "{stdout}");
    assert_same_rows(&sqlite_rows, &pg_snapshot(&url));

    let back = dir.path().join("back").join("vigia.db");
    let to_sqlite = [
        "--config",
        pg_config.as_str(),
        "migrate",
        "--to",
        back.to_str().unwrap(),
    ];
    let out = vigia_with(&dir, &to_sqlite, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("copied 300 events"), "{stdout}");
    assert!(stdout.contains("rebuilt"), "{stdout}");

    assert_same_events(
        &store.read_from(0, usize::MAX, None).unwrap(),
        &SqliteStore::open(&back)
            .unwrap()
            .read_from(0, usize::MAX, None)
            .unwrap(),
    );
    assert_eq!(projection_snapshot(&dir.db()), projection_snapshot(&back));

    // Neither direction copies into a log that holds events.
    for args in [&to_pg[..], &to_sqlite[..]] {
        let again = vigia_with(&dir, args, &[]);
        let (stdout, stderr) = text(&again);
        assert_eq!(again.status.code(), Some(2), "{stdout}{stderr}");
        assert!(stderr.contains("already holds events"), "{stderr}");
    }
    drop_database(&name);
}

/// A fresh database for the several-daemons tests and `n` handles on it (each its own
/// connection, as daemons have).
fn handles(prefix: &str, n: usize) -> (String, Vec<PgStore>) {
    let (name, url) = new_database(prefix);
    let stores = (0..n).map(|_| PgStore::connect(&url).unwrap()).collect();
    (name, stores)
}

fn feeds(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("feed-{i:02}")).collect()
}

/// Claimers on several connections, claiming at the same moment, over a few feeds
/// with short leases: each takes what it can, then either releases it after a moment
/// or lets it lapse (so the next round races for expired rows). No feed is ever taken while another
/// claimer's lease on it can still be running: each claimer believes it holds a feed
/// until its call began plus the ttl, which ends no later than the server's lease.
#[test]
fn a_lease_is_held_by_one_holder_at_a_time() {
    const CLAIMERS: usize = 4;
    let ttl = Duration::from_millis(100);
    let (name, stores) = handles("vigia_pg_leases", CLAIMERS);
    let all = feeds(6);
    let owners: Arc<Mutex<HashMap<String, (usize, Instant)>>> = Default::default();
    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let threads: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(me, store)| {
            let (owners, barrier, all) = (owners.clone(), barrier.clone(), all.clone());
            std::thread::spawn(move || {
                let holder = format!("daemon-{me}");
                let mut taken = 0;
                barrier.wait();
                for round in 0..30 {
                    // All claim at once: the race the row locks must settle.
                    barrier.wait();
                    let asked = Instant::now();
                    let got = store.take_leases(&holder, &all, ttl, 3).unwrap();
                    assert!(got.len() <= 3, "{got:?}");
                    let now = Instant::now();
                    for feed in &got {
                        let mut owners = owners.lock().unwrap();
                        if let Some((other, until)) = owners.get(feed) {
                            assert!(
                                *other == me || *until <= now,
                                "{feed}: daemon-{me} took it while daemon-{other}'s lease ran"
                            );
                        }
                        owners.insert(feed.clone(), (me, asked + ttl));
                    }
                    taken += got.len();
                    std::thread::sleep(Duration::from_millis(5));
                    if round % 2 == 0 {
                        let mut owners = owners.lock().unwrap();
                        for feed in &got {
                            if owners.get(feed).is_some_and(|(owner, _)| *owner == me) {
                                owners.remove(feed);
                            }
                        }
                        // Fewer if a slow round let a lease lapse and another took it.
                        let released = store.release_leases(&holder, &got).unwrap();
                        assert!(released <= got.len() as u64);
                    } else {
                        // Let every lease lapse: the next round claims expired rows.
                        std::thread::sleep(ttl);
                    }
                }
                taken
            })
        })
        .collect();
    let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(taken > 0);
    drop_database(&name);
}

/// A lease is its holder's until it expires (renewable meanwhile); then another holder
/// takes it, and the first can no longer renew it.
#[test]
fn an_expired_lease_goes_to_another_holder() {
    let (name, stores) = handles("vigia_pg_expiry", 2);
    let (a, b) = (&stores[0], &stores[1]);
    let feed = vec!["feed-x".to_string()];
    let short = Duration::from_millis(1500);
    assert_eq!(a.take_leases("a", &feed, short, 5).unwrap(), feed);
    assert!(b.take_leases("b", &feed, short, 5).unwrap().is_empty());
    assert!(b.renew_leases("b", &feed, short).unwrap().is_empty());
    assert_eq!(a.renew_leases("a", &feed, short).unwrap(), feed);
    // Taking again what one holds renews it (and counts towards max).
    assert_eq!(a.take_leases("a", &feed, short, 1).unwrap(), feed);
    std::thread::sleep(short + Duration::from_millis(300));
    assert_eq!(b.take_leases("b", &feed, short, 5).unwrap(), feed);
    assert!(a.renew_leases("a", &feed, short).unwrap().is_empty());
    assert_eq!(a.release_leases("a", &feed).unwrap(), 0);
    assert_eq!(b.release_leases("b", &feed).unwrap(), 1);
    // Released: free at once.
    assert_eq!(a.take_leases("a", &feed, short, 5).unwrap(), feed);
    // `max` caps what one claim takes.
    let many = feeds(6);
    assert_eq!(b.take_leases("b", &many, short, 2).unwrap().len(), 2);
    drop(stores);
    drop_database(&name);
}

/// One leader at a time; when the leader's handle is dropped, or its connection is
/// killed, another takes over within seconds.
#[test]
fn leadership_is_exclusive_and_passes_on() {
    let (name, stores) = handles("vigia_pg_leader", 3);
    let first = stores[0]
        .try_lead("first")
        .unwrap()
        .expect("no one leads yet");
    assert!(first.is_held());
    assert!(stores[1].try_lead("second").unwrap().is_none());
    assert!(stores[0].try_lead("first-again").unwrap().is_none());

    let takes_over = |store: &PgStore, holder: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(leader) = store.try_lead(holder).unwrap() {
                return leader;
            }
            assert!(Instant::now() < deadline, "{holder} never took over");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    drop(first);
    let second = takes_over(&stores[1], "second");
    assert!(stores[2].try_lead("third").unwrap().is_none());

    // The leader's session killed (as a crash or a lost network would end it).
    let (_, mut admin) = admin();
    let killed: i64 = admin
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'vigia leader second'",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let third = takes_over(&stores[2], "third");
    let deadline = Instant::now() + Duration::from_secs(5);
    while second.is_held() {
        assert!(
            Instant::now() < deadline,
            "the killed leader still thinks it leads"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(third.is_held());
    drop((second, third, stores));
    drop_database(&name);
}

/// The server ends every session of the store (a restart, a failover, an
/// administrator's `pg_terminate_backend`): the next append may fail with a clear
/// error, never a panic; the store connects again by itself and appends go on after
/// the events already there, none lost or doubled; and a follower hears appends again.
#[test]
fn a_lost_connection_is_made_again_and_no_event_is_lost_or_doubled() {
    let (name, stores) = handles("vigia_pg_reconnect", 1);
    let store = &stores[0];
    let first = store
        .append(vec![NewEvent::new("feed:f", polled("f", 1))])
        .unwrap();
    assert_eq!(first.len(), 1);
    let follow = store.follow();

    let (admin_url, mut admin) = admin();
    let killed: i64 = admin
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert!(
        killed >= 2,
        "the store's request and listening sessions, got {killed}"
    );

    // Each try is either refused with the connection's error or recorded; the store
    // must be writing again within the first reconnection's wait or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    let mut appended = 1;
    while appended < 3 {
        match store.append(vec![NewEvent::new("feed:f", polled("f", appended + 1))]) {
            Ok(_) => appended += 1,
            Err(StoreError::Postgres(why)) => {
                refused += 1;
                assert!(!why.is_empty());
                assert!(Instant::now() < deadline, "still refused after 10 s: {why}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(
        refused <= 3,
        "{refused} appends refused before the store reconnected"
    );
    let versions: Vec<u64> = store
        .read_stream("feed:f")
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);

    // Another handle's append is heard again by this one's follower.
    let other = PgStore::connect(&database_url(&admin_url, &name)).unwrap();
    other
        .append(vec![NewEvent::new("feed:g", polled("g", 1))])
        .unwrap();
    let head = other.head().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while *follow.borrow() < head {
        assert!(
            Instant::now() < deadline,
            "the follower never heard seq {head}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((stores, other));
    drop_database(&name);
}
