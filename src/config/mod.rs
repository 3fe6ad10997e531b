//! The configuration: one TOML file, read with serde and validated as a whole.
//!
//! `Config::load` reports every problem at once as `file:line:col: message` (syntax,
//! unknown keys, wrong types, bad cron expressions, non-http(s) URLs, duplicate ids,
//! unknown topics, malformed addresses, unset secret variables). Relative paths resolve
//! against the config file's folder. What the topics mean is `crate::detect`'s business;
//! this module only checks that they are well formed.

mod cron;
mod database;
mod recipients;
mod secret;
mod sections;
mod source;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::de::DeTable;

use crate::detect::examples::{self, ExampleSet, ExamplesError};
pub use cron::CronSchedule;
pub use database::{error_chain, PgUrl, SslMode};
use recipients::*;
pub use recipients::{valid_address, valid_public_address};
pub use secret::{check_key_strength, estimated_bits, Secret, WeakKey, MIN_KEY_BITS, MIN_KEY_LEN};
use sections::*;
use source::Diagnostics;
pub use source::Secrets;
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
    /// Each topic's labelled examples, by topic id (topics with an `examples` file).
    pub examples: BTreeMap<String, Arc<ExampleSet>>,
    /// What is not wrong but worth saying (`vigia check` prints it, the daemon logs it):
    /// an examples file that does not exist, so its topic is read by the rules alone.
    pub warnings: Vec<String>,
    pub tracking: TrackingConfig,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The SQLite file (the default beside the config when `postgres` is set).
    pub database: PathBuf,
    /// `database = "postgres://…"`: the log in PostgreSQL (issue 16, the log only so
    /// far: the daemon and the CLI still need SQLite).
    pub postgres: Option<PostgresDatabase>,
    pub schedule: CronSchedule,
    /// The public pages (`[web]`'s forms and the stance pages).
    pub listen: Option<SocketAddr>,
    /// `/healthz` and `/metrics`, apart from the pages (None: not served).
    pub ops_listen: Option<SocketAddr>,
    /// Whether `ops_listen` was written in the config (else it is the default, which
    /// may be taken by another daemon on the machine without that being fatal).
    pub ops_listen_chosen: bool,
    pub fetch: FetchLimits,
}

/// A PostgreSQL database named by URL; its Debug output hides any password.
#[derive(Clone, PartialEq)]
pub struct PostgresDatabase {
    pub url: String,
    /// From `database_password_env` / `database_password_file` (else in the URL).
    pub password: Option<Secret>,
}

impl PostgresDatabase {
    /// The URL without its password, for logs and summaries.
    pub fn shown(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            Ok(url) => url.to_string(),
            Err(_) => "postgres://…".to_string(),
        }
    }
}

impl std::fmt::Debug for PostgresDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PostgresDatabase({}, password {:?})",
            self.shown(),
            self.password
        )
    }
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
/// Where `/healthz` and `/metrics` are served unless `[daemon] ops_listen` says.
pub const DEFAULT_OPS_LISTEN: &str = "127.0.0.1:9188";

#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    pub public_url: url::Url,
    pub secret: Secret,
    pub self_service: bool,
    /// A folder whose page templates replace the built-in ones.
    pub templates: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` names the client (empty: it is never read).
    pub trusted_proxies: Vec<ipnet::IpNet>,
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
    /// Dates in this subscriber's digests are in this zone (UTC without one).
    pub tz: Option<chrono_tz::Tz>,
}

/// A watch topic as written in the config; `crate::detect` compiles its rules.
pub type TopicConfig = crate::detect::rules::TopicRules;

impl Config {
    /// Drops the examples' texts, keeping each file's hash (which says whether a
    /// model is fresh). A running daemon reads with the detector built from them and
    /// needs them again only when a reload reads the file anew; held, the shipped
    /// topic's examples would keep about 5 MB resident for nothing.
    pub fn forget_example_texts(&mut self) {
        for set in self.examples.values_mut() {
            *set = Arc::new(ExampleSet {
                items: Vec::new(),
                hash: set.hash.clone(),
            });
        }
    }

    /// Reads and validates the config file; every problem is reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for(path, Secrets::Required)
    }

    /// Reads the config; with `Secrets::NotNeeded` a secret named by an environment
    /// variable that is not set is no error (the command will not sign or send).
    pub fn load_for(path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_for(path, &text, secrets)
    }

    /// Validates config text as if it had been read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_for(path, text, Secrets::Required)
    }

    fn parse_for(path: &Path, text: &str, secrets: Secrets) -> Result<Config, ConfigError> {
        let mut diags = Diagnostics::new(path.display().to_string(), text);
        diags.secrets = secrets;
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
        let topics = read_topics(&mut diags, root.remove("topic"), &base);
        let mut example_sets = BTreeMap::new();
        let mut warnings = Vec::new();
        for (_, rules) in &topics {
            let Some(path) = &rules.examples else {
                continue;
            };
            match examples::load(path, rules) {
                Ok(set) => {
                    example_sets.insert(rules.id.clone(), Arc::new(set));
                }
                Err(ExamplesError::Invalid(problems)) => {
                    diags.list.extend(problems.into_iter().map(|p| Diagnostic {
                        file: path.display().to_string(),
                        line: p.line,
                        col: p.col,
                        message: p.message,
                    }))
                }
                // A topic section copied without its examples is still a topic: its
                // rules read it, and the operator is told.
                Err(ExamplesError::Unreadable { path, source })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    warnings.push(format!(
                        "topic `{}`: no examples file at {path}: its rules read it alone",
                        rules.id
                    ))
                }
                Err(e) => diags.at(0..0, format!("topic `{}`: {e}", rules.id)),
            }
        }
        let topic_ids = check_unique(&mut diags, topics.iter().map(|(id, _)| id), "topic");
        let feeds = read_feeds(&mut diags, root.remove("feed"));
        let mail = read_mail(&mut diags, root.remove("mail"), &base);
        let web = read_web(&mut diags, root.remove("web"), &base);
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
            examples: example_sets,
            warnings,
            tracking,
        })
    }

    /// The schedule a feed is polled on.
    pub fn schedule_of<'a>(&'a self, feed: &'a FeedConfig) -> &'a CronSchedule {
        feed.schedule.as_ref().unwrap_or(&self.daemon.schedule)
    }
}
