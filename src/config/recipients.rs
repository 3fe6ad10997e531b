//! The sections that say who is told and how: `[mail]` (transport, sender, the
//! password's source), `[web]` (public URL, the link key's source, trusted proxies)
//! and `[[subscriber]]`, with the address rules they share.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use toml::de::DeValue;
use toml::Spanned;

use super::sections::*;
use super::source::{Diagnostics, Secrets};
use super::*;

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
const SUBSCRIBER_KEYS: &[&str] = &["email", "name", "topics", "digest", "tz"];

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
    tz: Option<Spanned<String>>,
}

pub(super) fn read_secret(
    diags: &mut Diagnostics<'_>,
    env: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    base: &Path,
    what: &str,
) -> Option<Secret> {
    if let Some(name) = env {
        if std::env::var_os(name.get_ref()).is_none() && diags.secrets == Secrets::Required {
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
                let judged = diags.secrets == Secrets::Required || !value.is_empty();
                if let (true, Err(e)) = (judged, super::check_key_strength(value.trim().as_bytes()))
                {
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
        let tz = match &raw.tz {
            None => Ok(None),
            Some(name) => name.get_ref().parse::<chrono_tz::Tz>().map(Some).map_err(|_| {
                diags.at(
                    name.span(),
                    format!(
                        "unknown time zone {:?}: use an IANA name such as \"America/Mexico_City\" or \"UTC\"",
                        name.get_ref()
                    ),
                );
            }),
        };
        if let (true, Some(digest), Ok(tz)) = (ok, digest, tz) {
            out.push(SubscriberConfig {
                tz,
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

/// A plain address as RFC 5321 writes one: one @, a local part of at most 64
/// characters, a domain of labels (letters, digits, hyphens, none starting or ending
/// with a hyphen) joined by dots, with no spaces or header-breaking characters. A
/// one-label domain (`root@localhost`) is valid: it is what a single machine with
/// sendmail delivers to. Deliverability is the mail server's to judge.
pub fn valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && address.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')')
        })
}

/// An address a visitor of the public pages may subscribe: valid, and on a dotted
/// domain. A one-label domain names a mailbox on this machine or its network
/// (`root@localhost`), which strangers must not be able to have mailed.
pub fn valid_public_address(address: &str) -> bool {
    valid_address(address)
        && address
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.contains('.'))
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
        assert!(valid_address("root@localhost"));
        assert!(!valid_public_address("root@localhost"));
        assert!(valid_public_address("ana@example.org"));
        assert!(!valid_address("ana@-bad.example.org"));
        assert!(!valid_address("ana@example..org"));
        assert!(!valid_address("ana@.example.org"));
        assert!(!valid_address("ana@exa mple.org"));
        assert!(!valid_address("a\r\nBcc: x@y.org@example.org"));
        assert!(valid_mailbox("vigia <vigia@example.org>"));
        assert!(!valid_mailbox("vigia <vigia@example.org"));
        assert!(valid_mailbox("vigia <vigia@localhost>"));
    }
}
