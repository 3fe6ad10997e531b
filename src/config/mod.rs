//! The configuration: one TOML file, read with serde and validated as a whole.
//!
//! `Config::load` reports every problem at once as `file:line:col: message` (syntax,
//! unknown keys, wrong types, bad cron expressions, non-http(s) URLs, duplicate ids,
//! unknown topics, malformed addresses, unset secret variables). Relative paths resolve
//! against the config file's folder. What the topics mean is `crate::detect`'s business;
//! this module only checks that they are well formed.

mod source;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::schedule::CronSchedule;
use source::Diagnostics;
pub use source::{line_col, Diagnostic};

/// The default path of the config file, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/vigia.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file's text, recorded with ConfigApplied.
    pub hash: String,
    pub daemon: DaemonConfig,
    pub feeds: Vec<FeedConfig>,
    pub mail: MailConfig,
    pub web: Option<WebConfig>,
    pub subscribers: Vec<SubscriberConfig>,
    pub topics: Vec<TopicConfig>,
    pub tracking: TrackingConfig,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub database: PathBuf,
    pub schedule: CronSchedule,
    pub listen: Option<SocketAddr>,
    pub fetch: FetchLimits,
}

/// Polling manners: how hard vigia may lean on the servers it polls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct FetchLimits {
    /// Polls in flight at once, over all hosts.
    pub max_concurrent: usize,
    /// Polls in flight at once to one host.
    pub max_per_host: usize,
    pub connect_timeout_s: u64,
    /// Whole request, body included: a slow drip is cut off here.
    pub timeout_s: u64,
    /// Largest body accepted, after decompression.
    pub max_body_kb: u64,
    pub max_redirects: usize,
    /// Longest wait between polls of a failing feed.
    pub max_backoff_s: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_concurrent: 32,
            max_per_host: 4,
            connect_timeout_s: 10,
            timeout_s: 30,
            max_body_kb: 10 * 1024,
            max_redirects: 5,
            max_backoff_s: 6 * 3600,
        }
    }
}

/// When a stance counts as changed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingConfig {
    /// Distinct stories, from distinct outlets, needed to establish or change a stance.
    pub min_sources: u32,
    /// How far back evidence counts, in hours.
    pub window_hours: u32,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        TrackingConfig {
            min_sources: 2,
            window_hours: 72,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    pub id: String,
    pub url: url::Url,
    pub schedule: Option<CronSchedule>,
    pub lang: Option<String>,
    /// The outlet's name as digests show it; defaults to the feed's own title.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MailTransport {
    Smtp {
        host: String,
        port: u16,
        tls: TlsMode,
        username: Option<String>,
        password: Option<Secret>,
    },
    Sendmail {
        command: PathBuf,
    },
    File {
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    Starttls,
    Tls,
}

/// Where a secret comes from; its value is read when needed and never logged.
#[derive(Clone, PartialEq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Env(name) => write!(f, "Secret::Env({name})"),
            Secret::File(path) => write!(f, "Secret::File({})", path.display()),
        }
    }
}

impl Secret {
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            Secret::Env(name) => std::env::var(name).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("environment variable {name} is not set"),
                )
            }),
            Secret::File(path) => {
                std::fs::read_to_string(path).map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MailConfig {
    pub transport: MailTransport,
    pub from: String,
    /// A folder whose digest.txt / digest.html replace the built-in templates.
    pub templates: Option<PathBuf>,
    /// The first wait before retrying a failed send; it doubles with each failure.
    pub retry_base_s: u64,
}

/// Default first wait before retrying a failed send.
pub const DEFAULT_RETRY_BASE_S: u64 = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    pub public_url: url::Url,
    pub secret: Secret,
    pub self_service: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DigestMode {
    OnChange,
    Every(Box<CronSchedule>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberConfig {
    pub email: String,
    pub name: Option<String>,
    pub topics: Vec<String>,
    pub digest: DigestMode,
}

/// A watch topic as written in the config; `crate::detect` compiles its rules.
pub type TopicConfig = crate::detect::rules::TopicRules;

// ------------------------------------------------------------------ raw sections

const TOP_KEYS: &[&str] = &[
    "daemon",
    "feed",
    "mail",
    "web",
    "subscriber",
    "topic",
    "tracking",
];
const DAEMON_KEYS: &[&str] = &["database", "schedule", "listen", "fetch"];
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
const MAIL_KEYS: &[&str] = &[
    "transport",
    "host",
    "port",
    "tls",
    "username",
    "password_env",
    "password_file",
    "from",
    "dir",
    "sendmail_command",
    "templates",
    "retry_base_s",
];
const WEB_KEYS: &[&str] = &["public_url", "secret_env", "secret_file", "self_service"];
const SUBSCRIBER_KEYS: &[&str] = &["email", "name", "topics", "digest"];
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
];

#[derive(Deserialize, Default)]
struct RawDaemon {
    database: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
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

#[derive(Deserialize)]
struct RawMail {
    transport: Option<Spanned<String>>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<TlsMode>,
    username: Option<String>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    dir: Option<String>,
    sendmail_command: Option<String>,
    templates: Option<String>,
    retry_base_s: Option<u64>,
}

#[derive(Deserialize)]
struct RawWeb {
    public_url: Spanned<String>,
    secret_env: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    #[serde(default = "yes")]
    self_service: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct RawSubscriber {
    email: Spanned<String>,
    name: Option<String>,
    topics: Spanned<Vec<Spanned<String>>>,
    digest: Option<Spanned<String>>,
}

impl Config {
    /// Reads and validates the config file; every problem is reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates config text as if it had been read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut diags = Diagnostics::new(path.display().to_string(), text);
        let (root, errors) = DeTable::parse_recoverable(text);
        for e in errors {
            diags.at(
                e.span().unwrap_or(0..0),
                format!("TOML syntax: {}", e.message().trim()),
            );
        }
        if !diags.list.is_empty() {
            return Err(ConfigError::Invalid(diags.list));
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut root = root.into_inner();
        diags.unknown_keys(&mut root, TOP_KEYS, "the top level");

        let daemon = read_daemon(&mut diags, root.remove("daemon"), &base);
        let topics = read_topics(&mut diags, root.remove("topic"));
        let topic_ids = check_unique(&mut diags, topics.iter().map(|(id, _)| id), "topic");
        let feeds = read_feeds(&mut diags, root.remove("feed"));
        let mail = read_mail(&mut diags, root.remove("mail"), &base);
        let web = read_web(&mut diags, root.remove("web"));
        let subscribers = read_subscribers(&mut diags, root.remove("subscriber"), &topic_ids);
        let tracking = match table_section(
            &mut diags,
            root.remove("tracking"),
            "tracking",
            &["min_sources", "window_hours"],
        ) {
            Some(v) => diags
                .section::<TrackingConfig>(v, "[tracking]")
                .unwrap_or_default(),
            None => TrackingConfig::default(),
        };
        if tracking.min_sources == 0 || tracking.window_hours == 0 {
            diags.at(
                0..0,
                "[tracking]: min_sources and window_hours must be at least 1",
            );
        }

        if !diags.list.is_empty() {
            diags.list.sort_by_key(|d| (d.line, d.col));
            return Err(ConfigError::Invalid(diags.list));
        }
        let (Some(daemon), Some(mail)) = (daemon, mail) else {
            return Err(ConfigError::Invalid(diags.list));
        };
        Ok(Config {
            path: path.to_path_buf(),
            hash: hex::encode(Sha256::digest(text.as_bytes())),
            daemon,
            feeds,
            mail,
            web,
            subscribers,
            topics: topics.into_iter().map(|(_, rules)| rules).collect(),
            tracking,
        })
    }

    /// The schedule a feed is polled on.
    pub fn schedule_of<'a>(&'a self, feed: &'a FeedConfig) -> &'a CronSchedule {
        feed.schedule.as_ref().unwrap_or(&self.daemon.schedule)
    }
}

/// Takes a section that must be a table; reports it if it is something else.
fn table_section<'i>(
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
fn read_array<'i>(
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
fn read_topics(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'_>>>,
) -> Vec<(Spanned<String>, TopicConfig)> {
    let mut out = Vec::new();
    for value in read_array(diags, value, "topic", TOPIC_KEYS) {
        let span = value.span();
        let id_span = match value.get_ref() {
            DeValue::Table(t) => t.get("id").map(|v| v.span()).unwrap_or(span.clone()),
            _ => span.clone(),
        };
        let Some(rules) = diags.section::<TopicConfig>(value, "[[topic]]") else {
            continue;
        };
        for problem in rules.problems() {
            diags.at(span.clone(), problem);
        }
        out.push((Spanned::new(id_span, rules.id.clone()), rules));
    }
    out
}

fn check_unique<'a>(
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

fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn read_schedule(diags: &mut Diagnostics<'_>, value: &Spanned<String>) -> Option<CronSchedule> {
    match CronSchedule::parse(value.get_ref()) {
        Ok(s) => Some(s),
        Err(message) => {
            diags.at(value.span(), message);
            None
        }
    }
}

fn read_daemon(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'_>>>,
    base: &Path,
) -> Option<DaemonConfig> {
    let section = table_section(diags, value, "daemon", DAEMON_KEYS);
    let span = section.as_ref().map(|v| v.span()).unwrap_or(0..0);
    let raw: RawDaemon = match section {
        Some(v) => diags.section(v, "[daemon]")?,
        None => RawDaemon::default(),
    };
    let schedule = match &raw.schedule {
        Some(s) => read_schedule(diags, s),
        None => CronSchedule::parse("*/15 * * * *").ok(),
    };
    let listen = match &raw.listen {
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                diags.at(
                    l.span(),
                    format!(
                        "listen: expected an address and port such as 127.0.0.1:9187, got {:?}",
                        l.get_ref()
                    ),
                );
                None
            }
        },
        None => None,
    };
    let f = &raw.fetch;
    if f.max_concurrent == 0 || f.max_per_host == 0 || f.timeout_s == 0 || f.max_body_kb == 0 {
        diags.at(
            span,
            "[daemon.fetch]: concurrency caps, timeout and body size must be greater than 0",
        );
    }
    let database = raw
        .database
        .map(|d| resolve(base, d.get_ref()))
        .unwrap_or_else(|| base.join("data/vigia.db"));
    Some(DaemonConfig {
        database,
        schedule: schedule?,
        listen,
        fetch: raw.fetch,
    })
}

fn read_feeds(diags: &mut Diagnostics<'_>, value: Option<Spanned<DeValue<'_>>>) -> Vec<FeedConfig> {
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

fn read_secret(
    diags: &mut Diagnostics<'_>,
    env: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    base: &Path,
    what: &str,
) -> Option<Secret> {
    if let Some(name) = env {
        if std::env::var_os(name.get_ref()).is_none() {
            diags.at(
                name.span(),
                format!("{what}: environment variable {} is not set", name.get_ref()),
            );
            return None;
        }
        return Some(Secret::Env(name.into_inner()));
    }
    if let Some(path) = file {
        let full = resolve(base, path.get_ref());
        if !full.is_file() {
            diags.at(
                path.span(),
                format!("{what}: file {} does not exist", full.display()),
            );
            return None;
        }
        return Some(Secret::File(full));
    }
    None
}

fn read_mail(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'_>>>,
    base: &Path,
) -> Option<MailConfig> {
    let Some(value) = table_section(diags, value, "mail", MAIL_KEYS) else {
        // No [mail]: digests are written as files beside the database, so a trial run works.
        return Some(MailConfig {
            transport: MailTransport::File {
                dir: base.join("data/outbox"),
            },
            from: "vigia <vigia@localhost>".into(),
            templates: None,
            retry_base_s: DEFAULT_RETRY_BASE_S,
        });
    };
    let span = value.span();
    let raw: RawMail = diags.section(value, "[mail]")?;
    let from = match raw.from {
        Some(f) if valid_mailbox(f.get_ref()) => f.into_inner(),
        Some(f) => {
            diags.at(
                f.span(),
                format!(
                    "mail.from {:?} is not an address such as \"vigia <vigia@example.org>\"",
                    f.get_ref()
                ),
            );
            return None;
        }
        None => "vigia <vigia@localhost>".into(),
    };
    let kind = raw
        .transport
        .as_ref()
        .map(|t| t.get_ref().as_str())
        .unwrap_or("file");
    let transport = match kind {
        "smtp" => {
            let password = read_secret(
                diags,
                raw.password_env,
                raw.password_file,
                base,
                "mail password",
            );
            let Some(host) = raw.host else {
                diags.at(span, "mail: transport \"smtp\" needs a host");
                return None;
            };
            let tls = raw.tls.unwrap_or(TlsMode::Starttls);
            MailTransport::Smtp {
                host,
                port: raw.port.unwrap_or(match tls {
                    TlsMode::Tls => 465,
                    TlsMode::Starttls => 587,
                    TlsMode::None => 25,
                }),
                tls,
                username: raw.username,
                password,
            }
        }
        "sendmail" => MailTransport::Sendmail {
            command: raw
                .sendmail_command
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/sbin/sendmail")),
        },
        "file" => MailTransport::File {
            dir: resolve(base, raw.dir.as_deref().unwrap_or("data/outbox")),
        },
        other => {
            let at = raw.transport.as_ref().map(|t| t.span()).unwrap_or(span);
            diags.at(
                at,
                format!("mail.transport must be smtp, sendmail or file, not {other:?}"),
            );
            return None;
        }
    };
    let templates = raw.templates.as_deref().map(|t| resolve(base, t));
    Some(MailConfig {
        transport,
        from,
        templates,
        retry_base_s: raw.retry_base_s.unwrap_or(DEFAULT_RETRY_BASE_S).max(1),
    })
}

fn read_web(diags: &mut Diagnostics<'_>, value: Option<Spanned<DeValue<'_>>>) -> Option<WebConfig> {
    let value = table_section(diags, value, "web", WEB_KEYS)?;
    let span = value.span();
    let raw: RawWeb = diags.section(value, "[web]")?;
    let public_url = match url::Url::parse(raw.public_url.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        _ => {
            diags.at(
                raw.public_url.span(),
                format!(
                    "web.public_url {:?} must be an http(s) URL",
                    raw.public_url.get_ref()
                ),
            );
            None
        }
    };
    let had_secret = raw.secret_env.is_some() || raw.secret_file.is_some();
    let secret = read_secret(
        diags,
        raw.secret_env,
        raw.secret_file,
        Path::new(""),
        "web secret",
    );
    if !had_secret {
        diags.at(span, "[web] needs secret_env or secret_file: the key that signs confirm and unsubscribe links");
    }
    Some(WebConfig {
        public_url: public_url?,
        secret: secret?,
        self_service: raw.self_service,
    })
}

fn read_subscribers(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'_>>>,
    topics: &HashSet<String>,
) -> Vec<SubscriberConfig> {
    let raws: Vec<RawSubscriber> = read_array(diags, value, "subscriber", SUBSCRIBER_KEYS)
        .into_iter()
        .filter_map(|v| diags.section(v, "[[subscriber]]"))
        .collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for raw in raws {
        let mut ok = true;
        let email = raw.email.get_ref().trim().to_string();
        if !valid_address(&email) {
            diags.at(
                raw.email.span(),
                format!("{email:?} is not an email address"),
            );
            ok = false;
        } else if !seen.insert(email.to_lowercase()) {
            diags.at(
                raw.email.span(),
                format!("subscriber {email} is listed twice"),
            );
            ok = false;
        }
        if raw.topics.get_ref().is_empty() {
            diags.at(raw.topics.span(), "a subscriber needs at least one topic");
            ok = false;
        }
        for topic in raw.topics.get_ref() {
            if !topics.contains(topic.get_ref()) {
                let mut known: Vec<&String> = topics.iter().collect();
                known.sort();
                diags.at(
                    topic.span(),
                    format!(
                        "unknown topic `{}`; the config defines: {}",
                        topic.get_ref(),
                        known
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                ok = false;
            }
        }
        let digest = match &raw.digest {
            None => Some(DigestMode::OnChange),
            Some(d) if d.get_ref() == "on-change" => Some(DigestMode::OnChange),
            Some(d) => match CronSchedule::parse(d.get_ref()) {
                Ok(s) => Some(DigestMode::Every(Box::new(s))),
                Err(e) => {
                    diags.at(
                        d.span(),
                        format!("digest must be \"on-change\" or a cron schedule: {e}"),
                    );
                    None
                }
            },
        };
        if let (true, Some(digest)) = (ok, digest) {
            out.push(SubscriberConfig {
                email,
                name: raw.name,
                topics: raw
                    .topics
                    .into_inner()
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
                digest,
            });
        }
    }
    out
}

/// A plain address: one @, a non-empty local part, a dotted domain, no spaces or
/// header-breaking characters. Deliverability is the mail server's to judge.
pub fn valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.len() <= 253
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && address.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')')
        })
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'))
}

/// "Name <address>" or a bare address.
fn valid_mailbox(mailbox: &str) -> bool {
    match (mailbox.find('<'), mailbox.rfind('>')) {
        (Some(open), Some(close)) if close == mailbox.len() - 1 && open < close => {
            valid_address(&mailbox[open + 1..close]) && !mailbox[..open].contains(['\r', '\n'])
        }
        (None, None) => valid_address(mailbox.trim()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(valid_address("ana@example.org"));
        assert!(valid_address("ana.b+news@sub.example.org"));
        assert!(!valid_address("ana@"));
        assert!(!valid_address("ana example.org"));
        assert!(!valid_address("ana@localhost"));
        assert!(!valid_address("ana@exa mple.org"));
        assert!(!valid_address("a\r\nBcc: x@y.org@example.org"));
        assert!(valid_mailbox("vigia <vigia@example.org>"));
        assert!(!valid_mailbox("vigia <vigia@example.org"));
    }
}
