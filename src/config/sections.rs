//! Reading each section of the config: the keys each may hold, the raw serde shapes,
//! and the checks that turn them into `Config` parts, every problem recorded with its
//! place. `Config::parse` (in mod.rs) calls these in turn.

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
const DAEMON_KEYS: &[&str] = &["database", "schedule", "listen", "ops_listen", "fetch"];
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
const WEB_KEYS: &[&str] = &[
    "public_url",
    "secret_env",
    "secret_file",
    "self_service",
    "templates",
    "trusted_proxies",
];
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
    "examples",
];

#[derive(Deserialize, Default)]
struct RawDaemon {
    database: Option<Spanned<String>>,
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
    templates: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
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

pub(super) fn read_daemon(
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
    if let (Some(a), Some(b)) = (listen, ops_listen) {
        if a == b {
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
    let database = raw
        .database
        .map(|d| resolve(base, d.get_ref()))
        .unwrap_or_else(|| base.join("data/vigia.db"));
    Some(DaemonConfig {
        database,
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

pub(super) fn read_secret(
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

pub(super) fn read_mail(
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

pub(super) fn read_web(
    diags: &mut Diagnostics<'_>,
    value: Option<Spanned<DeValue<'_>>>,
    base: &Path,
) -> Option<WebConfig> {
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
    let secret = match (raw.secret_env, raw.secret_file) {
        // A key file that does not exist yet is created on first start.
        (None, Some(file)) => Some(Secret::File(resolve(base, file.get_ref()))),
        (env, _) => {
            let name = env.as_ref().map(|e| (e.get_ref().clone(), e.span()));
            let secret = read_secret(diags, env, None, base, "web secret");
            if let (Some((name, span)), Some(_)) = (name, &secret) {
                let value = std::env::var(&name).unwrap_or_default();
                if let Err(e) = super::check_key_strength(value.trim().as_bytes()) {
                    diags.at(span, format!("web secret: {e} ({name})"));
                }
            }
            secret
        }
    };
    if !had_secret {
        diags.at(span, "[web] needs secret_env or secret_file: the key that signs confirm and unsubscribe links");
    }
    let mut trusted_proxies = Vec::new();
    for net in &raw.trusted_proxies {
        let text = net.get_ref().trim();
        // A bare address is a network of one.
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => trusted_proxies.push(n.trunc()),
            Err(_) => diags.at(
                net.span(),
                format!("web.trusted_proxies: {text:?} is not an address or a network such as 127.0.0.1/32"),
            ),
        }
    }
    Some(WebConfig {
        public_url: public_url?,
        secret: secret?,
        self_service: raw.self_service,
        templates: raw.templates.as_deref().map(|t| resolve(base, t)),
        trusted_proxies,
    })
}

pub(super) fn read_subscribers(
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
pub(super) fn valid_mailbox(mailbox: &str) -> bool {
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
