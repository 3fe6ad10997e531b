//! Reading the sections that say what to watch and when (`[daemon]`, `[[feed]]`,
//! `[[topic]]`): the keys each may hold, the raw serde shapes, and the checks that
//! turn them into `Config` parts, every problem recorded with its place; and the
//! helpers every section uses (tables, arrays, unique ids, paths, schedules).
//! `recipients` reads the rest; `Config::parse` (in mod.rs) calls these in turn.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::DeValue;
use toml::Spanned;

use super::source::Diagnostics;
use super::CronSchedule;
use super::*;

// ------------------------------------------------------------------ raw sections

pub(super) const TOP_KEYS: &[&str] = &[
    "daemon",
    "feed",
    "mail",
    "web",
    "subscriber",
    "topic",
    "tracking",
];
const DAEMON_KEYS: &[&str] = &[
    "database",
    "database_password_env",
    "database_password_file",
    "schedule",
    "listen",
    "ops_listen",
    "fetch",
];
const FETCH_KEYS: &[&str] = &[
    "max_concurrent",
    "max_per_host",
    "connect_timeout_s",
    "timeout_s",
    "max_body_kb",
    "max_redirects",
    "max_backoff_s",
];
const FEED_KEYS: &[&str] = &["id", "url", "schedule", "lang", "name"];
const TOPIC_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "threshold",
    "groups",
    "require",
    "require_any",
    "exclude",
    "actors",
    "non_actors",
    "joint_actors",
    "issues",
    "cues",
    "examples",
];

#[derive(Deserialize, Default)]
struct RawDaemon {
    database: Option<Spanned<String>>,
    database_password_env: Option<Spanned<String>>,
    database_password_file: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    ops_listen: Option<Spanned<String>>,
    #[serde(default)]
    fetch: FetchLimits,
}

#[derive(Deserialize)]
struct RawFeed {
    id: Spanned<String>,
    url: Spanned<String>,
    schedule: Option<Spanned<String>>,
    lang: Option<String>,
    name: Option<String>,
}

/// Takes a section that must be a table; reports it if it is something else.
pub(super) fn table_section<'i>(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'i>>>,
    name: &str,
    allowed: &[&str],
) -> Option<Spanned<DeValue<'i>>> {
    let value = value?;
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(mut table) => {
            diags.unknown_keys(&mut table, allowed, &format!("[{name}]"));
            if name == "daemon" {
                if let Some(fetch) = table.get_mut("fetch") {
                    if let DeValue::Table(inner) = fetch.get_mut() {
                        diags.unknown_keys(inner, FETCH_KEYS, "[daemon.fetch]");
                    }
                }
            }
            Some(Spanned::new(span, DeValue::Table(table)))
        }
        other => {
            diags.at(
                span,
                format!(
                    "`{name}` must be a table ([{name}]), not a {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

/// Takes a section that must be an array of tables ([[name]]).
pub(super) fn read_array<'i>(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'i>>>,
    name: &str,
    allowed: &[&str],
) -> Vec<Spanned<DeValue<'i>>> {
    let Some(value) = value else {
        return Vec::new();
    };
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        diags.at(
            span,
            format!("`{name}` must be an array of tables ([[{name}]])"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let span = item.span();
        match item.into_inner() {
            DeValue::Table(mut table) => {
                diags.unknown_keys(&mut table, allowed, &format!("[[{name}]]"));
                out.push(Spanned::new(span, DeValue::Table(table)));
            }
            other => diags.at(
                span,
                format!("each `{name}` must be a table, not a {}", other.type_str()),
            ),
        }
    }
    out
}

/// Each topic with its id's place, for the duplicate check; rule problems reported
/// at the topic.
pub(super) fn read_topics(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'_>>>,
    base: &std::path::Path,
) -> Vec<(Spanned<String>, TopicConfig)> {
    let mut out = Vec::new();
    for value in read_array(diags, value, "topic", TOPIC_KEYS) {
        let span = value.span();
        let id_span = match value.get_ref() {
            DeValue::Table(t) => t.get("id").map(|v| v.span()).unwrap_or(span.clone()),
            _ => span.clone(),
        };
        let Some(mut rules) = diags.section::<TopicConfig>(value, "[[topic]]") else {
            continue;
        };
        for problem in rules.problems() {
            diags.at(span.clone(), problem);
        }
        rules.examples = rules.examples.take().map(|p| base.join(p));
        out.push((Spanned::new(id_span, rules.id.clone()), rules));
    }
    out
}

pub(super) fn check_unique<'a>(
    diags: &mut Diagnostics<'_>,
    ids: impl Iterator<Item = &'a Spanned<String>>,
    what: &str,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    for id in ids {
        if id.get_ref().trim().is_empty() {
            diags.at(id.span(), format!("a {what} id must not be empty"));
        } else if !seen.insert(id.get_ref().clone()) {
            diags.at(
                id.span(),
                format!("duplicate {what} id `{}`; ids must be unique", id.get_ref()),
            );
        }
    }
    seen
}

pub(super) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(super) fn read_schedule(
    diags: &mut Diagnostics<'_>,
    value: &Spanned<String>,
) -> Option<CronSchedule> {
    match CronSchedule::parse(value.get_ref()) {
        Ok(s) => Some(s),
        Err(message) => {
            diags.at(value.span(), message);
            None
        }
    }
}

/// `database`: a SQLite file path (no scheme), or a `postgres://` URL with its
/// password in the URL or from `database_password_env` / `database_password_file`;
/// any other scheme is an error. The SQLite path stays the default file beside the
/// config when the database is PostgreSQL, unused.
fn read_database(
    diags: &mut Diagnostics<'_>,
    raw: &mut RawDaemon,
    base: &Path,
) -> (PathBuf, Option<PostgresDatabase>) {
    let default = base.join("data/vigia.db");
    let password_keys = (
        raw.database_password_env.take(),
        raw.database_password_file.take(),
    );
    let Some(value) = raw.database.take() else {
        refuse_password_keys(diags, password_keys);
        return (default, None);
    };
    let Some((scheme, _)) = value.get_ref().split_once("://") else {
        refuse_password_keys(diags, password_keys);
        return (resolve(base, value.get_ref()), None);
    };
    if scheme != "postgres" && scheme != "postgresql" {
        diags.at(
            value.span(),
            format!("database: {scheme}:// is not a database vigia knows; give a SQLite file path or a postgres:// URL"),
        );
        return (default, None);
    }
    if let Err(e) = super::PgUrl::parse(value.get_ref()) {
        diags.at(value.span(), format!("database: not a PostgreSQL URL: {e}"));
        return (default, None);
    }
    let password = super::recipients::read_secret(
        diags,
        password_keys.0,
        password_keys.1,
        base,
        "database password",
    );
    (
        default,
        Some(PostgresDatabase {
            url: value.into_inner(),
            password,
        }),
    )
}

fn refuse_password_keys(
    diags: &mut Diagnostics<'_>,
    (env, file): (Option<Spanned<String>>, Option<Spanned<String>>),
) {
    if let Some(key) = env.or(file) {
        diags.at(
            key.span(),
            "database_password_env / database_password_file: only for a postgres:// database",
        );
    }
}

pub(super) fn read_daemon(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'_>>>,
    base: &Path,
) -> Option<DaemonConfig> {
    let section = table_section(diags, value, "daemon", DAEMON_KEYS);
    let span = section.as_ref().map(|v| v.span()).unwrap_or(0..0);
    let mut raw: RawDaemon = match section {
        Some(v) => diags.section(v, "[daemon]")?,
        None => RawDaemon::default(),
    };
    let schedule = match &raw.schedule {
        Some(s) => read_schedule(diags, s),
        None => CronSchedule::parse("*/15 * * * *").ok(),
    };
    let mut address = |key: &str, value: &Option<Spanned<String>>, example: &str| match value {
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                diags.at(
                    l.span(),
                    format!(
                        "{key}: expected an address and port such as {example}, got {:?}",
                        l.get_ref()
                    ),
                );
                None
            }
        },
        None => None,
    };
    let listen = address("listen", &raw.listen, "127.0.0.1:9187");
    // The operators' endpoints are always served, on loopback unless told otherwise;
    // `ops_listen = ""` turns them off.
    let ops_listen = match &raw.ops_listen {
        Some(l) if l.get_ref().trim().is_empty() => None,
        Some(_) => address("ops_listen", &raw.ops_listen, DEFAULT_OPS_LISTEN),
        None => DEFAULT_OPS_LISTEN.parse().ok(),
    };
    // Port 0 asks the system for a free port, a different one for each listener.
    if let (Some(a), Some(b)) = (listen, ops_listen) {
        if a == b && a.port() != 0 {
            diags.at(
                span.clone(),
                format!("[daemon]: listen and ops_listen are both {a}; the operators' endpoints need their own address"),
            );
        }
    }
    let f = &raw.fetch;
    if f.max_concurrent == 0 || f.max_per_host == 0 || f.timeout_s == 0 || f.max_body_kb == 0 {
        diags.at(
            span,
            "[daemon.fetch]: concurrency caps, timeout and body size must be greater than 0",
        );
    }
    let (database, postgres) = read_database(diags, &mut raw, base);
    Some(DaemonConfig {
        database,
        postgres,
        schedule: schedule?,
        listen,
        ops_listen,
        ops_listen_chosen: raw.ops_listen.is_some(),
        fetch: raw.fetch,
    })
}

pub(super) fn read_feeds(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'_>>>,
) -> Vec<FeedConfig> {
    let raws: Vec<RawFeed> = read_array(diags, value, "feed", FEED_KEYS)
        .into_iter()
        .filter_map(|v| diags.section(v, "[[feed]]"))
        .collect();
    check_unique(diags, raws.iter().map(|f| &f.id), "feed");
    let mut feeds = Vec::new();
    for raw in raws {
        let id_ok = raw
            .id
            .get_ref()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            diags.at(
                raw.id.span(),
                format!(
                    "feed id `{}`: use letters, digits, '-', '_' or '.' only",
                    raw.id.get_ref()
                ),
            );
        }
        let url = match url::Url::parse(raw.url.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(u) => {
                diags.at(
                    raw.url.span(),
                    format!("feed url must be http or https, not {:?}", u.scheme()),
                );
                None
            }
            Err(e) => {
                diags.at(
                    raw.url.span(),
                    format!("feed url {:?} is not a valid URL: {e}", raw.url.get_ref()),
                );
                None
            }
        };
        let schedule = match &raw.schedule {
            Some(s) => match read_schedule(diags, s) {
                Some(s) => Some(s),
                None => continue,
            },
            None => None,
        };
        let Some(url) = url else { continue };
        feeds.push(FeedConfig {
            id: raw.id.into_inner(),
            url,
            schedule,
            lang: raw.lang,
            name: raw.name,
        });
    }
    feeds
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    fn parse(daemon: &str) -> Result<Config, super::super::ConfigError> {
        Config::parse(
            Path::new("t.toml"),
            &format!("[daemon]\ndatabase = \"x.db\"\n{daemon}\n\n[[feed]]\nid = \"a\"\nurl = \"http://127.0.0.1/a.xml\"\n"),
        )
    }

    #[test]
    fn the_pages_and_the_operators_endpoints_need_their_own_addresses() {
        let same = parse("listen = \"127.0.0.1:8080\"\nops_listen = \"127.0.0.1:8080\"");
        assert!(
            format!("{:?}", same.unwrap_err()).contains("need their own address"),
            "one address for both is refused"
        );
        // Port 0 gives each listener a port of its own.
        let config = parse("listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"").unwrap();
        assert_eq!(config.daemon.listen, config.daemon.ops_listen);
    }

    fn with_database(database: &str) -> Result<Config, super::super::ConfigError> {
        Config::parse(
            Path::new("t.toml"),
            &format!(
                "[daemon]\n{database}\n\n[[feed]]\nid = \"a\"\nurl = \"http://127.0.0.1/a.xml\"\n"
            ),
        )
    }

    #[test]
    fn a_database_is_a_sqlite_path_or_a_postgres_url_and_nothing_else() {
        let sqlite = with_database("database = \"data/x.db\"").unwrap();
        assert!(sqlite.daemon.postgres.is_none());
        assert!(sqlite.daemon.database.ends_with("data/x.db"));
        let pg =
            with_database("database = \"postgres://vigia:s3cret@db.example:5432/vigia\"").unwrap();
        let target = pg.daemon.postgres.as_ref().unwrap();
        assert_eq!(target.url, "postgres://vigia:s3cret@db.example:5432/vigia");
        assert!(!format!("{target:?}").contains("s3cret"), "{target:?}");
        for (text, says) in [
            (
                "database = \"mysql://h/db\"",
                "mysql:// is not a database vigia knows",
            ),
            (
                "database = \"x.db\"\ndatabase_password_env = \"PW\"",
                "only for a postgres:// database",
            ),
            (
                "database = \"postgres://h/db\"\ndatabase_password_file = \"missing-pw\"",
                "does not exist",
            ),
        ] {
            let err = format!("{:?}", with_database(text).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
