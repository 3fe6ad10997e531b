//! The commands that show vigia's state: check, events, feeds, stances, digest
//! preview and subscribers.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::{SubscribersCommand, UsageError};
use crate::config::{Config, MailTransport};
use crate::projections::FeedHealth;
use crate::store::{PgStore, SqliteStore, StoreError};

/// How `check` describes a topic's reader; a stale model adds a warning.
fn reader_line(
    rules: &crate::detect::rules::TopicRules,
    set: Option<&crate::detect::examples::ExampleSet>,
    warnings: &mut Vec<String>,
) -> String {
    let examples = set.map_or(0, |s| s.items.len());
    match crate::detect::topic_models::status(rules, set) {
        crate::detect::TopicModelStatus::RulesOnly => "rules only (no examples)".to_string(),
        crate::detect::TopicModelStatus::Fresh { path, corrections } => format!(
            "learned, {examples} examples{}, model {}",
            if corrections > 0 {
                format!(" + {corrections} corrections")
            } else {
                String::new()
            },
            path.display()
        ),
        crate::detect::TopicModelStatus::Stale { path, why } => {
            warnings.push(format!(
                "topic `{}`: model {} is not usable ({why}): it is trained each time vigia starts until `vigia train` saves it",
                rules.id,
                path.display()
            ));
            format!("learned, {examples} examples, trained at start (stale model)")
        }
    }
}

/// How `check` describes `[web]`.
fn web_line(web: Option<&crate::config::WebConfig>) -> String {
    let Some(web) = web else {
        return "no [web]: stance pages only, digests unsubscribe by mailto".to_string();
    };
    let forwarded = if web.trusted_proxies.is_empty() {
        "ignored".to_string()
    } else {
        let nets: Vec<String> = web.trusted_proxies.iter().map(|n| n.to_string()).collect();
        format!("read from {}", nets.join(", "))
    };
    format!(
        "{} (self-service {}; X-Forwarded-For {forwarded})",
        web.public_url,
        if web.self_service { "on" } else { "off" }
    )
}

/// How `check` describes a PostgreSQL database, once it has connected to it (an
/// unreachable server, a refused password, a missing database or a schema from a
/// newer vigia is an error); the password is never shown.
fn postgres_line(pg: &crate::config::PostgresDatabase) -> Result<String, StoreError> {
    let status = PgStore::inspect(pg)?;
    let schema = if status.schema == 0 {
        "no vigia schema yet: created at first use".to_string()
    } else {
        format!("schema {} of {}", status.schema, status.known)
    };
    Ok(format!(
        "PostgreSQL {} (connected{}; {schema}; the log only in this build: run and the other commands need SQLite)",
        pg.shown(),
        if status.encrypted { " over TLS" } else { ", not encrypted" },
    ))
}

pub(super) fn check(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    let mut warnings: Vec<String> = config.warnings.clone();
    if let Some(web) = &config.web {
        use crate::links::{KeyError, KeyFile, SigningKey};
        match SigningKey::load(&web.secret, KeyFile::MustExist) {
            Ok(_) => {}
            Err(KeyError::Missing(file)) => warnings.push(format!(
                "web key file {file} does not exist yet: the daemon creates it (0600) at its first start"
            )),
            // A short, predictable or unreadable key is refused, as the daemon would.
            Err(e) => return Err(UsageError(format!("{}: {e}", path.display())).into()),
        }
    }
    let database = match &config.daemon.postgres {
        Some(pg) => {
            postgres_line(pg).map_err(|e| UsageError(format!("{}: {e}", path.display())))?
        }
        None => config.daemon.database.display().to_string(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: ok", path.display())?;
    writeln!(out, "  database:    {database}")?;
    writeln!(
        out,
        "  feeds:       {} (default schedule \"{}\")",
        config.feeds.len(),
        config.daemon.schedule.source()
    )?;
    let topics: Vec<&str> = config.topics.iter().map(|t| t.id.as_str()).collect();
    writeln!(
        out,
        "  topics:      {}",
        if topics.is_empty() {
            "none".to_string()
        } else {
            topics.join(", ")
        }
    )?;
    for rules in &config.topics {
        let set = config.examples.get(&rules.id).map(|s| s.as_ref());
        writeln!(
            out,
            "  reader:      {}: {}",
            rules.id,
            reader_line(rules, set, &mut warnings)
        )?;
        if let Some(set) = set {
            warnings.extend(crate::detect::topic_models::thin_classes(rules, set));
        }
    }
    writeln!(out, "  subscribers: {}", config.subscribers.len())?;
    let mail = match &config.mail.transport {
        MailTransport::Smtp {
            host, port, tls, ..
        } => format!("smtp {host}:{port} ({tls:?})"),
        MailTransport::Sendmail { command } => format!("sendmail ({})", command.display()),
        MailTransport::File { dir } => format!("files under {}", dir.display()),
    };
    writeln!(out, "  mail:        {mail}")?;
    match config.daemon.listen {
        Some(addr) => writeln!(out, "  listen:      {addr} (the pages)")?,
        None => writeln!(out, "  listen:      off")?,
    }
    match config.daemon.ops_listen {
        Some(addr) => writeln!(out, "  ops_listen:  {addr} (/healthz, /metrics)")?,
        None => writeln!(out, "  ops_listen:  off")?,
    }
    writeln!(out, "  web:         {}", web_line(config.web.as_ref()))?;
    for warning in &warnings {
        writeln!(out, "warning: {warning}")?;
    }
    Ok(())
}

pub(super) fn print_events(
    store: &SqliteStore,
    since: u64,
    kind: Option<&str>,
    follow: bool,
) -> Result<()> {
    const PAGE: usize = 10_000;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut after = since;
    loop {
        let page = store.read_from(after, PAGE, kind)?;
        for event in &page {
            let line = serde_json::to_string(event)?;
            if writeln!(out, "{line}").is_err() {
                return Ok(()); // the reader went away (a closed pipe): not an error
            }
            after = event.seq;
        }
        if page.len() == PAGE {
            continue;
        }
        if out.flush().is_err() || !follow {
            return Ok(());
        }
        // Another process may be appending: poll the database for new events.
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub(super) fn print_feeds(config: &Config, store: &SqliteStore) -> Result<()> {
    let health = store.read(FeedHealth::list)?;
    let now = chrono::Utc::now();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<20} {:>6} {:>6} {:<20} {:>8}  LAST ERROR",
        "FEED", "LAST POLL", "STATUS", "ERRORS", "NEXT DUE", "ARTICLES"
    )?;
    for feed in &config.feeds {
        let row = health.iter().find(|h| h.feed_id == feed.id);
        let due = crate::schedule::next_due(config, feed, row, now);
        let status = row
            .and_then(|h| h.last_status)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        let last_poll = row
            .and_then(|h| h.last_poll_at.clone())
            .map(|t| short_time(&t))
            .unwrap_or_else(|| "never".into());
        let due = match due {
            Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => "stopped (410 Gone)".into(),
        };
        let error = row
            .and_then(|h| {
                h.last_error_kind
                    .as_ref()
                    .map(|k| format!("{k}: {}", h.last_error.clone().unwrap_or_default()))
            })
            .unwrap_or_default();
        writeln!(
            out,
            "{:<24} {:<20} {:>6} {:>6} {:<20} {:>8}  {}",
            feed.id,
            last_poll,
            status,
            row.map(|h| h.error_streak).unwrap_or(0),
            due,
            row.map(|h| h.articles).unwrap_or(0),
            error
        )?;
    }
    let orphans: Vec<&str> = health
        .iter()
        .filter(|h| !config.feeds.iter().any(|f| f.id == h.feed_id))
        .map(|h| h.feed_id.as_str())
        .collect();
    if !orphans.is_empty() {
        writeln!(
            out,
            "\nno longer in the config (history kept): {}",
            orphans.join(", ")
        )?;
    }
    Ok(())
}

/// "1 story", "3 stories".
fn stories(n: usize) -> String {
    format!("{n} {}", if n == 1 { "story" } else { "stories" })
}

fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

pub(super) fn print_stances(config: &Config, store: &SqliteStore, history: bool) -> Result<()> {
    use crate::projections::Stances;
    let mut out = std::io::stdout().lock();
    let label = |topic: &str, issue: &str, actor: &str| {
        let rules = config.topics.iter().find(|t| t.id == topic);
        (
            rules
                .map(|r| r.issue_label(issue))
                .unwrap_or_else(|| issue.to_string()),
            rules
                .map(|r| r.actor_label(actor))
                .unwrap_or_else(|| actor.to_string()),
        )
    };
    if history {
        let changes = store.read(|c| Stances::changes_since(c, 0))?;
        if changes.is_empty() {
            writeln!(out, "no stance has been established yet")?;
        }
        for c in changes {
            let (issue_label, actor_label) = label(&c.topic, &c.issue, &c.actor);
            writeln!(
                out,
                "{}  {} {} {}: {} -> {}   ({actor_label} on {issue_label}; {})",
                short_time(&c.at),
                c.topic,
                c.issue,
                c.actor,
                c.from.map_or("none", |s| s.as_str()),
                c.to.as_str(),
                stories(c.evidence.len())
            )?;
            for e in &c.evidence {
                writeln!(
                    out,
                    "      {} — {}: \"{}\"",
                    e.outlet.as_deref().unwrap_or("?"),
                    e.title,
                    e.sentence
                )?;
            }
        }
        return Ok(());
    }
    let current = store.read(Stances::current)?;
    writeln!(
        out,
        "{:<18} {:<22} {:<8} {:<8} {:<20} EVIDENCE",
        "TOPIC", "ISSUE", "ACTOR", "STANCE", "SINCE"
    )?;
    for topic in &config.topics {
        for issue in &topic.issues {
            for actor in &topic.actors {
                let row = current
                    .iter()
                    .find(|c| c.topic == topic.id && c.issue == issue.id && c.actor == actor.id);
                match row {
                    Some(c) => {
                        writeln!(
                            out,
                            "{:<18} {:<22} {:<8} {:<8} {:<20} {}",
                            topic.id,
                            issue.id,
                            actor.id,
                            c.stance.as_str(),
                            short_time(&c.since),
                            stories(c.evidence.len())
                        )?;
                        for e in &c.evidence {
                            writeln!(
                                out,
                                "    {} — {} {}\n      \"{}\"",
                                e.outlet.as_deref().unwrap_or("?"),
                                e.title,
                                e.url.as_deref().unwrap_or(""),
                                e.sentence
                            )?;
                        }
                    }
                    None => writeln!(
                        out,
                        "{:<18} {:<22} {:<8} {:<8}",
                        topic.id, issue.id, actor.id, "-"
                    )?,
                }
            }
        }
    }
    Ok(())
}

pub(super) fn preview(config: &Config, store: &SqliteStore, to: Option<&str>) -> Result<()> {
    use crate::projections::Subscribers;
    let templates = crate::digest::Templates::load(config.mail.templates.as_deref())?;
    // The preview shows links as they are queued, with a placeholder for the token
    // that sending signs in; a key that cannot be read shows the mailto instead.
    let signer = crate::links::LinkSigner::from_config(config, crate::links::KeyFile::MustExist)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "previewing without the signed unsubscribe link");
            None
        });
    let now = chrono::Utc::now();
    let subs = store.read(Subscribers::confirmed)?;
    let subs: Vec<_> = match to {
        Some(email) => {
            let found: Vec<_> = subs
                .into_iter()
                .filter(|s| s.email == email.to_lowercase())
                .collect();
            if found.is_empty() {
                return Err(UsageError(format!("{email} is not a confirmed subscriber")).into());
            }
            found
        }
        None => subs,
    };
    let mut out = std::io::stdout().lock();
    if subs.is_empty() {
        writeln!(out, "no confirmed subscribers")?;
    }
    for sub in subs {
        match store.read(|c| crate::digest::draft_for(c, config, signer.as_ref(), &sub, now))? {
            Some(draft) => {
                let (text, _html) = templates.render(&draft)?;
                writeln!(
                    out,
                    "To: {}\nSubject: {}\n\n{}",
                    sub.address, draft.subject, text
                )?;
            }
            None => writeln!(out, "{}: nothing to send now", sub.address)?,
        }
    }
    Ok(())
}

pub(super) fn subscribers(
    config: &Config,
    store: &SqliteStore,
    cmd: &SubscribersCommand,
) -> Result<()> {
    use crate::projections::Subscribers;
    let mut out = std::io::stdout().lock();
    match cmd {
        SubscribersCommand::List => {
            writeln!(
                out,
                "{:<36} {:<12} {:<24} {:<14} VIA",
                "EMAIL", "STATUS", "TOPICS", "DIGEST"
            )?;
            for s in store.read(Subscribers::all)? {
                writeln!(
                    out,
                    "{:<36} {:<12} {:<24} {:<14} {}",
                    s.address,
                    s.status.as_str(),
                    s.topics.join(","),
                    s.digest,
                    s.via.as_str()
                )?;
            }
        }
        SubscribersCommand::Add {
            email,
            topics,
            digest,
            name,
        } => {
            if !crate::config::valid_address(email) {
                return Err(UsageError(format!("{email:?} is not an email address")).into());
            }
            for t in topics {
                if !config.topics.iter().any(|c| &c.id == t) {
                    return Err(UsageError(format!("unknown topic {t:?}")).into());
                }
            }
            let digest = if digest == "on-change" {
                crate::config::DigestMode::OnChange
            } else {
                crate::config::DigestMode::Every(Box::new(
                    crate::config::CronSchedule::parse(digest)
                        .map_err(|e| UsageError(format!("--digest: {e}")))?,
                ))
            };
            crate::subscribers::add(
                store,
                &crate::config::SubscriberConfig {
                    email: email.clone(),
                    name: name.clone(),
                    topics: topics.clone(),
                    digest,
                    tz: None,
                },
            )?;
            writeln!(out, "subscribed {email}")?;
        }
        SubscribersCommand::Remove { email } => {
            if crate::subscribers::remove(store, email)? {
                writeln!(out, "unsubscribed {email}")?;
            } else {
                return Err(UsageError(format!("{email} is not subscribed")).into());
            }
        }
    }
    Ok(())
}
