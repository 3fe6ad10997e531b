//! The command line: argument parsing (clap), one function per command, and the
//! mapping from errors to exit codes. This is the only layer that prints; the library
//! below it returns values and typed errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError, MailTransport};
use crate::detect::{ArticleText, Detector};
use crate::projections::{self, FeedHealth};
use crate::store::EventStore;

#[derive(Debug, Parser)]
#[command(
    name = "vigia",
    version,
    about = "News-monitoring daemon: feeds in, stances and digests out"
)]
pub struct Args {
    /// Config file [default: $VIGIA_CONFIG, else config/vigia.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Database file, overriding the config's [daemon] database
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logging (-v debug, -vv trace)
    #[arg(short = 'v', global = true, action = clap::ArgAction::Count)]
    pub log_verbosity: u8,
    /// Less logging (errors only)
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM/SIGINT (or one cycle with --once)
    Run {
        /// Poll every feed now, deliver what is due, then exit
        #[arg(long)]
        once: bool,
    },
    /// Validate the config: a summary and exit 0, or every error and exit 2
    Check,
    /// Rebuild every projection from the event log
    Replay {
        /// First re-run detection over every stored article under the config's
        /// current topic rules (no refetching); earlier classifications stay in the log
        #[arg(long)]
        reclassify: bool,
    },
    /// Print the event log as JSON Lines
    Events {
        /// Only events after this sequence number
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        since: u64,
        /// Only events of this kind (e.g. ArticleDiscovered)
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Keep printing new events as they are recorded
        #[arg(long)]
        follow: bool,
    },
    /// Per-feed health: last poll, status, error streak, next due time, articles
    Feeds,
    /// Current stance per issue and actor, since when, and the evidence
    Stances {
        /// Every recorded change, oldest first
        #[arg(long)]
        history: bool,
    },
    /// Digests
    #[command(subcommand)]
    Digest(DigestCommand),
    /// Manage subscribers (recorded as events; works while the daemon runs)
    #[command(subcommand)]
    Subscribers(SubscribersCommand),
    /// JSON Lines articles on stdin → topics and stances as JSON Lines on stdout
    Classify,
    /// Score the detector against a labelled JSON Lines file
    Eval {
        /// Labelled articles, one JSON object a line
        file: PathBuf,
        /// The topic whose relevance is scored [default: the config's first]
        #[arg(long)]
        topic: Option<String>,
        /// Print the metrics as one JSON object
        #[arg(long)]
        json: bool,
        /// Print every miss
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DigestCommand {
    /// Render what would be sent now, without sending
    Preview {
        /// Only this subscriber's digest
        #[arg(long, value_name = "EMAIL")]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubscribersCommand {
    /// Every subscriber, confirmed, pending or gone
    List,
    /// Subscribe an address (confirmed at once: the operator vouches for it)
    Add {
        email: String,
        /// A topic id (repeat for several)
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        /// "on-change", or a cron schedule for periodic digests
        #[arg(long, default_value = "on-change")]
        digest: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Unsubscribe an address
    Remove { email: String },
}

/// An error in how vigia was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<ConfigError>().is_some() || err.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// The error as the operator should read it: config diagnostics one per line.
pub fn describe(err: &anyhow::Error) -> String {
    if let Some(ConfigError::Invalid(diags)) = err.downcast_ref::<ConfigError>() {
        let n = diags.len();
        return format!(
            "the config has {n} problem{}:\n{err}",
            if n == 1 { "" } else { "s" }
        );
    }
    format!("{err:#}")
}

pub fn run(args: Args) -> Result<()> {
    init_logging(&args);
    let config_path = args
        .config
        .clone()
        .or_else(|| std::env::var_os("VIGIA_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
    match &args.command {
        Command::Check => check(&config_path),
        Command::Run { once } => {
            let config = load_config(&config_path, args.db.as_deref())?;
            let store = open_store(&config)?;
            let runtime = runtime()?;
            if *once {
                let report = runtime.block_on(crate::daemon::run_once(&config, &store))?;
                tracing::info!(
                    polled = report.polled,
                    failed = report.failed,
                    new_articles = report.new_articles,
                    revised_articles = report.revised_articles,
                    stance_changes = report.after.stance_changes,
                    digests_queued = report.after.digests_queued,
                    digests_sent = report.after.delivery.sent,
                    digests_failed = report.after.delivery.failed + report.after.delivery.given_up,
                    "cycle done"
                );
                Ok(())
            } else {
                runtime.block_on(crate::daemon::run(
                    config,
                    store,
                    crate::daemon::shutdown_signal(),
                ))
            }
        }
        Command::Replay { reclassify } => {
            let config = load_config(&config_path, args.db.as_deref())?;
            let store = open_store(&config)?;
            let started = std::time::Instant::now();
            if *reclassify {
                let detector = detector(&config)?;
                let (read, new) =
                    crate::observe::reclassify(&detector, &store).context("reclassifying")?;
                println!(
                    "reclassified {read} articles under rules {}: {new} new readings, {} unchanged",
                    detector.rules_hash,
                    read - new
                );
            }
            let applied = projections::rebuild(&store).context("rebuilding the projections")?;
            println!(
                "replayed {applied} events into {} projections in {:.2}s",
                projections::all().len(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Events {
            since,
            kind,
            follow,
        } => {
            let config = load_config(&config_path, args.db.as_deref())?;
            if let Some(kind) = kind {
                if !crate::events::KINDS.contains(&kind.as_str()) {
                    return Err(UsageError(format!(
                        "unknown event kind {kind:?}; kinds: {}",
                        crate::events::KINDS.join(", ")
                    ))
                    .into());
                }
            }
            let store = open_store(&config)?;
            print_events(&store, *since, kind.as_deref(), *follow)
        }
        Command::Feeds => {
            let config = load_config(&config_path, args.db.as_deref())?;
            let store = open_store(&config)?;
            print_feeds(&config, &store)
        }
        Command::Stances { history } => {
            let config = load_config(&config_path, args.db.as_deref())?;
            let store = open_store(&config)?;
            print_stances(&config, &store, *history)
        }
        Command::Digest(DigestCommand::Preview { to }) => {
            let config = load_config(&config_path, args.db.as_deref())?;
            let store = open_store(&config)?;
            preview(&config, &store, to.as_deref())
        }
        Command::Subscribers(cmd) => {
            let config = load_config(&config_path, args.db.as_deref())?;
            let store = open_store(&config)?;
            subscribers(&config, &store, cmd)
        }
        Command::Classify => {
            let config = load_config(&config_path, args.db.as_deref())?;
            classify(&config)
        }
        Command::Eval {
            file,
            topic,
            json,
            verbose,
        } => {
            let config = load_config(&config_path, args.db.as_deref())?;
            eval(&config, file, topic.as_deref(), *json, *verbose)
        }
    }
}

/// An article as `vigia classify` reads it; only id and title are required.
#[derive(Debug, serde::Deserialize)]
struct ClassifyInput {
    id: serde_json::Value,
    title: String,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    lang: Option<String>,
}

fn detector(config: &Config) -> Result<Detector> {
    Ok(Detector::new(&config.topics)?)
}

fn classify(config: &Config) -> Result<()> {
    use std::io::BufRead;
    let detector = detector(config)?;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut bad = 0usize;
    for (n, line) in stdin.lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let input: ClassifyInput = match serde_json::from_str(&line) {
            Ok(i) => i,
            Err(e) => {
                bad += 1;
                eprintln!("vigia: line {}: not an article ({e}); skipped", n + 1);
                continue;
            }
        };
        let result = detector.classify(&ArticleText {
            title: &input.title,
            summary: input.summary.as_deref().unwrap_or(""),
            content: input.content.as_deref().unwrap_or(""),
            lang: input.lang.as_deref(),
        });
        let line =
            serde_json::json!({"id": input.id, "topics": result.topics, "stances": result.stances});
        if writeln!(out, "{line}").is_err() {
            return Ok(());
        }
    }
    out.flush()?;
    if bad > 0 {
        anyhow::bail!(
            "{bad} input line{} could not be read (see above)",
            if bad == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn eval(
    config: &Config,
    file: &Path,
    topic: Option<&str>,
    json: bool,
    verbose: bool,
) -> Result<()> {
    let detector = detector(config)?;
    let topic = match topic {
        Some(t) if config.topics.iter().any(|c| c.id == t) => t.to_string(),
        Some(t) => {
            return Err(UsageError(format!(
                "unknown topic {t:?}; the config defines {:?}",
                detector.topic_ids()
            ))
            .into())
        }
        None => config
            .topics
            .first()
            .map(|t| t.id.clone())
            .ok_or_else(|| UsageError("the config defines no topic to score".into()))?,
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut items = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let item: crate::eval::Labelled = serde_json::from_str(line).map_err(|e| {
            UsageError(format!(
                "{}:{}: not a labelled article: {e}",
                file.display(),
                n + 1
            ))
        })?;
        items.push(item);
    }
    let report = crate::eval::score(&detector, &items, &topic);
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = report.to_json();
        if verbose {
            value["misses"] = serde_json::to_value(&report.misses)?;
        }
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let all = report.overall();
    writeln!(out, "{} items, topic {topic}", report.items)?;
    writeln!(
        out,
        "relevance  precision {:.3}  recall {:.3}  F1 {:.3}   (tp {}, fp {}, fn {})",
        report.precision(),
        report.recall(),
        report.f1(),
        report.tp,
        report.fp,
        report.fn_
    )?;
    writeln!(
        out,
        "stance     accuracy {:.3}  coverage {:.3}  macro-F1 {:.3}   ({} labelled, {} predicted, {} correct)",
        all.accuracy(),
        all.coverage(),
        all.macro_f1(),
        all.labelled,
        all.predicted,
        all.correct
    )?;
    writeln!(
        out,
        "\n{:<22} {:<8} {:>8} {:>9} {:>9} {:>9}",
        "ISSUE", "ACTOR", "LABELLED", "ACCURACY", "COVERAGE", "MACRO-F1"
    )?;
    for ((issue, actor), c) in &report.pairs {
        writeln!(
            out,
            "{issue:<22} {actor:<8} {:>8} {:>9.3} {:>9.3} {:>9.3}",
            c.labelled,
            c.accuracy(),
            c.coverage(),
            c.macro_f1()
        )?;
    }
    if verbose {
        writeln!(out, "\nmisses:")?;
        for m in &report.misses {
            writeln!(
                out,
                "{} {:<40} expected {:<8} got {:<8} {}",
                m.id, m.what, m.expected, m.got, m.title
            )?;
        }
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_logging(args: &Args) {
    let level = if args.quiet {
        "error"
    } else {
        match args.log_verbosity {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("vigia={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn load_config(path: &Path, db_override: Option<&Path>) -> Result<Config> {
    let mut config = Config::load(path)?;
    if let Some(db) = db_override {
        config.daemon.database = db.to_path_buf();
    }
    Ok(config)
}

fn open_store(config: &Config) -> Result<EventStore> {
    let store = EventStore::open(&config.daemon.database)?;
    projections::catch_up(&store).context("bringing the projections up to date")?;
    Ok(store)
}

fn check(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: ok", path.display())?;
    writeln!(out, "  database:    {}", config.daemon.database.display())?;
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
        Some(addr) => writeln!(out, "  listen:      {addr}")?,
        None => writeln!(out, "  listen:      off")?,
    }
    Ok(())
}

fn print_events(store: &EventStore, since: u64, kind: Option<&str>, follow: bool) -> Result<()> {
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

fn print_feeds(config: &Config, store: &EventStore) -> Result<()> {
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
        let due = crate::daemon::next_due(config, feed, row, now);
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

fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn print_stances(config: &Config, store: &EventStore, history: bool) -> Result<()> {
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
                "{}  {} {} {}: {} -> {}   ({actor_label} on {issue_label}; {} {})",
                short_time(&c.at),
                c.topic,
                c.issue,
                c.actor,
                c.from.as_deref().unwrap_or("none"),
                c.to,
                c.evidence.len(),
                if c.evidence.len() == 1 {
                    "story"
                } else {
                    "stories"
                }
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
                            "{:<18} {:<22} {:<8} {:<8} {:<20} {} {}",
                            topic.id,
                            issue.id,
                            actor.id,
                            c.stance,
                            short_time(&c.since),
                            c.evidence.len(),
                            if c.evidence.len() == 1 {
                                "story"
                            } else {
                                "stories"
                            }
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

fn preview(config: &Config, store: &EventStore, to: Option<&str>) -> Result<()> {
    use crate::projections::Subscribers;
    let templates = crate::digest::Templates::load(config.mail.templates.as_deref())?;
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
        match store.read(|c| crate::digest::draft_for(c, config, &sub, now))? {
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

fn subscribers(config: &Config, store: &EventStore, cmd: &SubscribersCommand) -> Result<()> {
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
                    s.status,
                    s.topics.join(","),
                    s.digest,
                    s.via
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
                    crate::schedule::CronSchedule::parse(digest)
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
