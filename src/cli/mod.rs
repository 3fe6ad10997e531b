//! The command line: argument parsing (clap), dispatch, and the mapping from errors
//! to exit codes. This is the only layer that prints; the library below it returns
//! values and typed errors. `detection.rs` holds classify and eval; `reports.rs` the
//! commands that show the state (check, events, feeds, stances, digests, subscribers).

mod detection;
mod reports;

use detection::{classify, cross_validate, detector, eval, print_readings, topic_or_first, train};
use reports::{check, preview, print_events, print_feeds, print_stances, subscribers};

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError, Secrets};
use crate::projections;
use crate::store::{SqliteStore, StoreError};

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
    /// A first look without the internet: the topics' example articles fed through
    /// the pipeline as demo feeds, in publication order, into a throwaway database
    /// (a temporary folder, or --db); then a digest preview and the pages, until Ctrl-C
    Demo {
        /// Serve the pages here (port 0: any free port) [default: the config's listen]
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Build, print where everything is, and exit without serving
        #[arg(long)]
        no_serve: bool,
        /// Only the N most recently published examples (quicker; tests use it)
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Validate the config: a summary and exit 0, or every error and exit 2
    Check,
    /// Copy the event log (the config's database, SQLite or PostgreSQL), in order and
    /// exactly, into an empty database: a SQLite file path (its projections are then
    /// rebuilt) or a postgres:// URL (the log only: the projections on PostgreSQL are
    /// still to come)
    Migrate {
        /// The empty database to copy to
        #[arg(long, value_name = "URL_OR_PATH")]
        to: String,
    },
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
    /// Train each topic's learned reader on its examples and the operators'
    /// corrections, and write its model file beside the examples
    Train {
        /// Only this topic
        #[arg(long)]
        topic: Option<String>,
    },
    /// Stored readings: each relevant article's topic score and stances
    Readings {
        /// The least confident first (what is worth correcting)
        #[arg(long)]
        uncertain: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Record an operator's label for a stored article (training takes it)
    Correct {
        article_id: String,
        /// The topic [default: the config's first]
        #[arg(long)]
        topic: Option<String>,
        #[arg(long)]
        issue: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// support, oppose, neutral, or none (the article says nothing of it)
        #[arg(long, value_parser = ["support", "oppose", "neutral", "none"])]
        stance: Option<String>,
        /// Whether the article is about the topic at all
        #[arg(long, value_parser = ["yes", "no"])]
        relevant: Option<String>,
    },
    /// Score the detector against a labelled JSON Lines file, or cross-validate a
    /// topic's learned reader on its examples (--cv K)
    Eval {
        /// Labelled articles, one JSON object a line (not with --cv)
        #[arg(required_unless_present = "cv", conflicts_with = "cv")]
        file: Option<PathBuf>,
        /// K-fold cross-validation on the topic's examples, folds grouped by story
        #[arg(long, value_name = "K")]
        cv: Option<usize>,
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

/// Whether the error is only that stdout was closed by its reader.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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
    // The daemon and the digest preview sign links and send mail: they need the
    // config's secrets. Commands that only read or record do not ask for them.
    let strict = || load_config(&config_path, args.db.as_deref(), Secrets::Required);
    let config = || load_config(&config_path, args.db.as_deref(), Secrets::NotNeeded);
    let with_store = |f: &dyn Fn(&Config, &SqliteStore) -> Result<()>| -> Result<()> {
        let config = config()?;
        let store = open_store(&config)?;
        f(&config, &store)
    };
    match &args.command {
        Command::Check => check(&config_path),
        Command::Demo {
            listen,
            no_serve,
            limit,
        } => {
            // The demo never writes to the configured database: --db names its own.
            // It signs with a key of its own and mails to files: no secrets needed.
            let config = load_config(&config_path, None, Secrets::NotNeeded)?;
            let same = |a: &Path, b: &Path| {
                std::path::absolute(a)
                    .ok()
                    .is_some_and(|a| Some(a) == std::path::absolute(b).ok())
            };
            if args
                .db
                .as_deref()
                .is_some_and(|db| same(db, &config.daemon.database))
            {
                return Err(UsageError(format!(
                    "--db {} is the configured database: the demo fills a throwaway one",
                    config.daemon.database.display()
                ))
                .into());
            }
            demo(config, args.db.clone(), *listen, !*no_serve, *limit)
        }
        Command::Run { once } => run_daemon(strict()?, *once),
        Command::Replay { reclassify } => {
            let config = config()?;
            match &config.daemon.postgres {
                Some(pg) => replay_postgres(pg, *reclassify),
                None => replay(&config, &open_store(&config)?, *reclassify),
            }
        }
        // The one command that reads a PostgreSQL log: it opens its own source.
        Command::Migrate { to } => migrate(&config()?, to),
        Command::Events {
            since,
            kind,
            follow,
        } => {
            let config = config()?;
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
        Command::Feeds => with_store(&print_feeds),
        Command::Stances { history } => with_store(&|c, s| print_stances(c, s, *history)),
        Command::Digest(DigestCommand::Preview { to }) => {
            let config = strict()?;
            preview(&config, &open_store(&config)?, to.as_deref())
        }
        Command::Subscribers(cmd) => with_store(&|c, s| subscribers(c, s, cmd)),
        Command::Classify => classify(&config()?),
        Command::Eval {
            file,
            cv,
            topic,
            json,
            verbose,
        } => {
            let config = config()?;
            match (file, cv) {
                (_, Some(k)) => cross_validate(&config, *k, topic.as_deref(), *json, *verbose),
                (Some(file), None) => eval(&config, file, topic.as_deref(), *json, *verbose),
                (None, None) => Err(UsageError("give a labelled FILE or --cv K".into()).into()),
            }
        }
        Command::Train { topic } => {
            let config = config()?;
            // Training needs no database; it takes corrections from one that exists.
            let store = if config.daemon.database.exists() {
                Some(open_store(&config)?)
            } else {
                None
            };
            train(&config, store.as_ref(), topic.as_deref())
        }
        Command::Readings { uncertain, limit } => {
            with_store(&|_, s| print_readings(s, *uncertain, *limit))
        }
        Command::Correct {
            article_id,
            topic,
            issue,
            actor,
            stance,
            relevant,
        } => with_store(&|c, s| {
            let correction = crate::events::ReadingCorrected {
                article_id: article_id.clone(),
                topic: topic_or_first(c, topic.as_deref())?,
                issue: issue.clone(),
                actor: actor.clone(),
                stance: stance.as_deref().map(corrected_stance),
                relevant: relevant.as_deref().map(|r| r == "yes"),
            };
            correct(c, s, correction)
        }),
    }
}

/// `vigia run [--once]`: one cycle, or the daemon until SIGTERM/SIGINT.
fn run_daemon(config: Config, once: bool) -> Result<()> {
    let store = open_store(&config)?;
    let runtime = runtime()?;
    if !once {
        return runtime.block_on(crate::daemon::run(
            config,
            store,
            crate::daemon::shutdown_signal(),
        ));
    }
    let report = runtime.block_on(crate::daemon::run_once(config, &store))?;
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
}

/// `vigia demo`: binds the pages' address first (so the digests link to where the
/// pages really are, port 0 included), builds the demo, says where to look, and
/// serves until Ctrl-C unless asked not to.
fn demo(
    config: Config,
    db: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    serve: bool,
    limit: Option<usize>,
) -> Result<()> {
    let runtime = runtime()?;
    runtime.block_on(async move {
        let addr = listen
            .or(config.daemon.listen)
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9187)));
        let listener = if serve {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "listening on {addr} for the pages (--listen 127.0.0.1:0 takes any free port)"
                )
            })?)
        } else {
            None
        };
        let pages = match &listener {
            Some(l) => Some(
                l.local_addr()
                    .context("the pages' listener has no address")?,
            ),
            None => Some(addr),
        };
        println!(
            "vigia demo: feeding the topics' example articles through the pipeline, offline..."
        );
        let options = crate::demo::Options { db, pages, limit };
        // A full database or a config without examples is the caller's to change (2).
        let demo = crate::demo::build(config, &options)
            .await
            .map_err(|e| match e {
                crate::demo::DemoError::NotEmpty(_) | crate::demo::DemoError::NoExamples => {
                    anyhow::Error::from(UsageError(e.to_string()))
                }
                e => e.into(),
            })?;
        print_demo(&demo);
        let Some(listener) = listener else {
            return Ok(());
        };
        println!(
            "\nopen http://{}/  (Ctrl-C to stop)",
            demo.pages().unwrap_or(addr)
        );
        demo.serve(listener, crate::daemon::shutdown_signal())
            .await?;
        Ok(())
    })
}

fn print_demo(demo: &crate::demo::Demo) {
    let r = &demo.report;
    let day = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    let at = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| s.get(..10))
            .unwrap_or("")
            .to_string()
    };
    println!(
        "fed {} articles from {} demo feeds (one per outlet and language), published {} to {}, in {} polling steps of {} h ({} polls, {} failed), in {:.1} s",
        r.articles,
        r.feeds,
        day(r.first_published),
        day(r.last_published),
        r.steps,
        crate::demo::STEP_HOURS,
        r.polls,
        r.failed_polls,
        r.elapsed.as_secs_f64()
    );
    if r.undated > 0 {
        println!(
            "left out {} examples whose story id names no year",
            r.undated
        );
    }
    println!(
        "stance changes: {} in {} months ({} to {}); stances held now: {}",
        r.stance_changes,
        r.months_with_changes,
        at(&r.first_change),
        at(&r.last_change),
        r.stances_held
    );
    println!("folder:   {}", demo.dir.display());
    println!(
        "database: {}   (try: vigia --db {} stances --history)",
        demo.db.display(),
        demo.db.display()
    );
    println!(
        "digests:  {} written to {} (file transport: nothing is sent)",
        r.digests_sent,
        demo.outbox.display()
    );
    match &demo.preview {
        Some(p) => {
            println!("newest digest, to {}: {:?}", p.to, p.subject);
            println!("  as mail: {}", p.eml.display());
            println!("  as HTML: {}", p.html.display());
        }
        None => println!("no digest was written (no subscriber saw a change)"),
    }
}

/// `vigia replay [--reclassify]`: the projections rebuilt from the log, after reading
/// every stored article again under the current rules if asked.
fn replay(config: &Config, store: &SqliteStore, reclassify: bool) -> Result<()> {
    let started = std::time::Instant::now();
    if reclassify {
        let detector = detector(config)?;
        let (read, new) = crate::observe::reclassify(&detector, store).context("reclassifying")?;
        println!(
            "reclassified {read} articles under rules {}: {new} new readings, {} unchanged",
            detector.rules_hash,
            read - new
        );
    }
    let applied = projections::rebuild(store).context("rebuilding the projections")?;
    println!(
        "replayed {applied} events into {} projections in {:.2}s",
        projections::all().len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `vigia replay` on a PostgreSQL log: the projections there rebuilt. Reclassifying
/// reads stored articles, which this build reads from SQLite only.
fn replay_postgres(db: &crate::config::PostgresDatabase, reclassify: bool) -> Result<()> {
    if reclassify {
        return Err(UsageError(format!(
            "replay --reclassify: [daemon] database is PostgreSQL ({}); this build reclassifies \
             stored articles on SQLite only (plain `vigia replay` rebuilds the projections there)",
            db.shown()
        ))
        .into());
    }
    let started = std::time::Instant::now();
    let store = crate::store::PgStore::open(db).context("opening the PostgreSQL log")?;
    let applied = projections::rebuild(&store).context("rebuilding the projections")?;
    println!(
        "replayed {applied} events into {} projections in {:.2}s",
        projections::all().len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `vigia migrate --to`: the log copied page by page, from the config's database
/// (SQLite or PostgreSQL) into an empty one of either kind, then compared (count and
/// last position), and the projections rebuilt there.
fn migrate(config: &Config, to: &str) -> Result<()> {
    use crate::store::EventStore;
    const PAGE: usize = 10_000;
    let source: Box<dyn EventStore> = match &config.daemon.postgres {
        Some(pg) => {
            if pg.url == to {
                return Err(UsageError("--to names the database being copied".into()).into());
            }
            Box::new(crate::store::PgStore::open(pg).context("opening the PostgreSQL log")?)
        }
        None => {
            if std::path::Path::new(to) == config.daemon.database {
                return Err(UsageError("--to names the database being copied".into()).into());
            }
            Box::new(open_store(config)?)
        }
    };
    let is_postgres = to.starts_with("postgres://") || to.starts_with("postgresql://");
    // The target as messages name it: a URL without its password.
    let shown = if is_postgres {
        crate::config::PostgresDatabase {
            url: to.to_string(),
            password: None,
        }
        .shown()
    } else {
        to.to_string()
    };
    // The target twice: as a log to copy into, and as the store its projections are
    // rebuilt in.
    type Rebuild = Box<dyn Fn() -> Result<u64, StoreError>>;
    let (target, rebuild): (Box<dyn EventStore>, Rebuild) = if is_postgres {
        let store = crate::store::PgStore::connect(to).context("opening the target database")?;
        (
            Box::new(store.clone()),
            Box::new(move || projections::rebuild(&store)),
        )
    } else if to.contains("://") {
        let scheme = to.split("://").next().unwrap_or_default();
        return Err(UsageError(format!(
            "--to: a SQLite file path or a postgres:// URL, not a {scheme}:// URL"
        ))
        .into());
    } else {
        let store =
            SqliteStore::open(std::path::Path::new(to)).context("opening the target database")?;
        (
            Box::new(store.clone()),
            Box::new(move || projections::rebuild(&store)),
        )
    };
    if target.head()? != 0 {
        return Err(UsageError(format!(
            "--to {shown}: it already holds events; migrate copies into an empty database only"
        ))
        .into());
    }
    let started = std::time::Instant::now();
    let (mut after, mut copied) = (0u64, 0usize);
    loop {
        let page = source.read_from(after, PAGE, None)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        copied += page.len();
        target.import(page)?;
    }
    if target.head()? != source.head()? {
        anyhow::bail!(
            "the copy ends at {} but the log at {}",
            target.head()?,
            source.head()?
        );
    }
    println!(
        "copied {copied} events to {} in {:.2}s",
        if is_postgres { "PostgreSQL" } else { to },
        started.elapsed().as_secs_f64()
    );
    let applied = rebuild().context("rebuilding the projections")?;
    println!(
        "rebuilt {} projections from {applied} events",
        projections::all().len()
    );
    Ok(())
}

/// The command line's stance word (clap has checked it is one of these).
fn corrected_stance(word: &str) -> crate::events::CorrectedStance {
    match word {
        "support" => crate::events::CorrectedStance::Support,
        "oppose" => crate::events::CorrectedStance::Oppose,
        "neutral" => crate::events::CorrectedStance::Neutral,
        _ => crate::events::CorrectedStance::None,
    }
}

/// `vigia correct`: an operator's label recorded on the article's stream.
fn correct(
    config: &Config,
    store: &SqliteStore,
    correction: crate::events::ReadingCorrected,
) -> Result<()> {
    let seq = crate::readings::correct(config, store, correction).map_err(|e| match e {
        crate::readings::CorrectionError::Store(e) => anyhow::Error::from(e),
        other => UsageError(other.to_string()).into(),
    })?;
    println!("recorded ReadingCorrected (seq {seq}); `vigia train` takes it into the model");
    Ok(())
}

/// The async runtime: a worker per core, and a blocking pool sized to the machine
/// rather than tokio's 512 threads. Blocking work here is SQLite and CPU (parsing,
/// detection), which more threads than cores only slow down, and every extra thread
/// costs its stack and, under glibc, may cost a malloc arena of its own.
fn runtime() -> Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(4 * cores + 4)
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
    // The demo says what it did on stdout; of its pipeline's log (a line per digest
    // written, ...) only warnings and its progress show, unless -v asks for more.
    let default = match (&args.command, level) {
        (Command::Demo { .. }, "info") => "vigia=warn,vigia::demo=info,warn".to_string(),
        _ => format!("vigia={level},warn"),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn load_config(path: &Path, db_override: Option<&Path>, secrets: Secrets) -> Result<Config> {
    let mut config = Config::load_for(path, secrets)?;
    if let Some(db) = db_override {
        config.daemon.database = db.to_path_buf();
        config.daemon.postgres = None;
    }
    Ok(config)
}

fn open_store(config: &Config) -> Result<SqliteStore> {
    if let Some(pg) = &config.daemon.postgres {
        return Err(UsageError(format!(
            "[daemon] database is PostgreSQL ({}): this build can hold the event log and \
             its projections there (`vigia migrate --to` fills them, `vigia replay` rebuilds \
             them) but runs the daemon and these commands on SQLite only; point database at \
             a SQLite file for now",
            pg.shown()
        ))
        .into());
    }
    let store = SqliteStore::open(&config.daemon.database)?;
    projections::catch_up(&store).context("bringing the projections up to date")?;
    Ok(store)
}
