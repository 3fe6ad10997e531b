//! `vigia demo`: a first look without the internet. It owns the demo's run: the
//! throwaway folder and database, the demo feeds made from the topics' labelled
//! examples (`feeds.rs`), the replay of those feeds through the daemon's own
//! pipeline on a clock that follows the articles' times, the digest preview, and
//! serving the pages over the result.
//!
//! **The same pipeline as real polling.** The examples are served as RSS, one demo
//! feed per outlet and language, from a loopback HTTP server, and polled with the
//! real fetcher (`ingest::poll`): fetching, feed parsing (identity, canonical URL,
//! clean text, language, date), the new-or-changed check, detection and the readings
//! recorded as one batch per poll, exactly as for a feed on the internet. Building
//! the events by hand would have skipped the parser and the poll's own events, and
//! could drift from what a poll records; a loopback server costs a few milliseconds
//! a poll. After each step's polls, `daemon::after_polls` runs as it does in the
//! daemon: stance tracking with its evidence rules, digests drafted, rendered,
//! queued and delivered, through the file transport only (the demo config's mail is
//! always `file`, into the demo folder: nothing is ever sent).
//!
//! **The clock.** Tracking reads when each observation was seen and when each stance
//! changed from the times the log wrote, and takes its "now" from the log too
//! (`SqliteStore::now`); digests and pages show those times. The demo opens its
//! database with a clock set by hand (`store::Clock`) and moves it through the
//! articles' publication times in steps of `STEP_HOURS` (the demo feeds' polling
//! interval): at each step the feeds with something new are polled, then tracking
//! and digests run, all at that step's time. So evidence windows, "since when" and
//! the timelines span the months the examples cover, as if vigia had been running
//! then; with the wall clock every change would fall in the same minute. Feeds with
//! nothing new in a step are not polled (their poll would record only a
//! `FeedPolled` with no news). When serving, the clock goes back to the wall.
//!
//! **What it reads.** The examples are the learned reader's training set, so the
//! readings here are better than on news it has never seen (the README's figures
//! for unseen articles are the honest ones).
//!
//! **Serving.** The pages are served read-only (`self_service` off: subscribing to
//! a demo whose mail goes to files would only confuse), on the config's `listen` or
//! the address given, with the stance pages, timelines and evidence of the demo's
//! database, until the shutdown future completes.

mod feeds;

pub use feeds::published_at;

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use crate::config::{
    Config, DigestMode, FeedConfig, MailTransport, Secret, SubscriberConfig, WebConfig,
};
use crate::detect::Detector;
use crate::events::{DigestReason, Event};
use crate::fetch::Fetcher;
use crate::ingest::{self, PollOutcome};
use crate::links::LinkSigner;
use crate::projections::{self, Articles, Outbox, OutboxStatus, Stances};
use crate::store::{Clock, OpenOptions, SqliteStore, StoreError};
use feeds::Catalog;

/// How often, in the demo's time, its feeds are polled and tracking runs.
pub const STEP_HOURS: i64 = 6;
/// The demo's link key, in its folder.
const KEY_FILE: &str = "web.secret";
/// Who gets the digests when the config names no subscriber.
pub const DEMO_SUBSCRIBER: &str = "demo@example.org";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("no topic in the config names an examples file with dated stories: the demo has no articles to feed")]
    NoExamples,
    #[error("{} already holds events: the demo fills an empty database only", .0.display())]
    NotEmpty(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the demo feed server: {0}")]
    FeedServer(#[source] std::io::Error),
    #[error("the web pages: {0}")]
    Pages(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A step of the daemon's pipeline failed (the daemon reports with anyhow).
    #[error("{0:#}")]
    Pipeline(anyhow::Error),
}

impl From<anyhow::Error> for DemoError {
    fn from(e: anyhow::Error) -> Self {
        DemoError::Pipeline(e)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the demo is asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The database to fill (it must be new or empty); else one in the demo folder.
    pub db: Option<PathBuf>,
    /// Where the pages will be served: digests link there.
    pub pages: Option<SocketAddr>,
    /// Only the N most recently published examples.
    pub limit: Option<usize>,
}

/// What building the demo did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub articles: u64,
    pub feeds: usize,
    /// Examples left out because their story names no year.
    pub undated: usize,
    pub first_published: Option<DateTime<Utc>>,
    pub last_published: Option<DateTime<Utc>>,
    pub polls: u32,
    pub failed_polls: u32,
    pub steps: usize,
    pub stance_changes: usize,
    /// The first and last change, as the log recorded them.
    pub first_change: Option<String>,
    pub last_change: Option<String>,
    /// Distinct months (`YYYY-MM`) in which some stance changed.
    pub months_with_changes: usize,
    pub stances_held: usize,
    pub digests_sent: u32,
    pub elapsed: Duration,
}

/// The newest digest the subscriber got, as files to open.
#[derive(Debug, Clone)]
pub struct Preview {
    pub eml: PathBuf,
    pub html: PathBuf,
    pub subject: String,
    pub to: String,
}

/// A built demo: its folder, database and what it holds, ready to serve.
pub struct Demo {
    pub dir: PathBuf,
    pub db: PathBuf,
    pub outbox: PathBuf,
    pub report: Report,
    pub preview: Option<Preview>,
    store: SqliteStore,
    clock: Clock,
    config: Config,
    signer: Option<LinkSigner>,
}

/// A new folder of the demo's own under the system's temporary folder, its owner's
/// alone (it holds the demo's link key), with that key written in it: a new key is
/// what the demo wants, and the daemon would warn on creating one.
fn demo_folder() -> Result<PathBuf, DemoError> {
    let base = std::env::temp_dir();
    let stamp = Utc::now().format("%Y%m%d-%H%M%S");
    for n in 0..100 {
        let dir = base.join(format!("vigia-demo-{stamp}-{}-{n}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&dir) {
            Ok(()) => {
                let key =
                    crate::links::random_hex(32).map_err(|e| io(&dir)(std::io::Error::other(e)))?;
                let path = dir.join(KEY_FILE);
                std::fs::write(&path, key).map_err(io(&path))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    Err(io(&base)(std::io::Error::other(
        "no free name for a demo folder",
    )))
}

/// The config the demo runs on: the operator's topics, tracking rules, templates and
/// subscribers (or one demo subscriber), with the demo feeds, its own database, file
/// mail into the demo folder, a key of its own, read-only pages and no operators'
/// listener (a running daemon may hold that port).
fn demo_config(
    mut config: Config,
    catalog: &Catalog,
    feed_server: SocketAddr,
    dir: &Path,
    db: &Path,
    pages: SocketAddr,
) -> Result<Config, DemoError> {
    config.daemon.database = db.to_path_buf();
    config.daemon.postgres = None;
    config.daemon.listen = Some(pages);
    config.daemon.ops_listen = None;
    config.feeds = catalog
        .feeds
        .iter()
        .map(|f| {
            let url = format!("http://{feed_server}/{}.xml", f.id);
            Ok(FeedConfig {
                id: f.id.clone(),
                url: url::Url::parse(&url)
                    .map_err(|e| DemoError::FeedServer(std::io::Error::other(e)))?,
                schedule: None,
                lang: Some(f.lang.clone()),
                name: Some(f.outlet.clone()),
            })
        })
        .collect::<Result<_, DemoError>>()?;
    config.mail.transport = MailTransport::File {
        dir: dir.join("outbox"),
    };
    let public_url = url::Url::parse(&format!("http://{pages}/"))
        .map_err(|e| DemoError::Pages(e.to_string()))?;
    config.web = Some(WebConfig {
        public_url,
        secret: Secret::File(dir.join(KEY_FILE)),
        self_service: false,
        templates: config.web.as_ref().and_then(|w| w.templates.clone()),
        trusted_proxies: Vec::new(),
    });
    if config.subscribers.is_empty() {
        config.subscribers.push(SubscriberConfig {
            email: DEMO_SUBSCRIBER.into(),
            name: Some("Demo subscriber".into()),
            topics: config.topics.iter().map(|t| t.id.clone()).collect(),
            digest: DigestMode::OnChange,
            tz: None,
        });
    }
    Ok(config)
}

/// Builds the demo: a new folder (and database), the topics' examples served as demo
/// feeds and replayed through the pipeline in publication order, then the preview of
/// the newest digest.
pub async fn build(config: Config, options: &Options) -> Result<Demo, DemoError> {
    let started_at = Instant::now();
    let catalog = Arc::new(Catalog::from_examples(&config, options.limit));
    let (Some(first), Some(last)) = (catalog.articles.first(), catalog.articles.last()) else {
        return Err(DemoError::NoExamples);
    };
    let (first_published, last_published) = (first.published, last.published);
    let dir = demo_folder()?;
    let db = options
        .db
        .clone()
        .unwrap_or_else(|| dir.join("vigia-demo.db"));
    // Everything recorded before the first article (the config, the subscribers)
    // happens an hour before it, in the demo's time.
    let clock = Clock::manual(first_published - chrono::Duration::hours(1));
    let store = SqliteStore::open_with(
        &db,
        OpenOptions {
            clock: clock.clone(),
            ..Default::default()
        },
    )?;
    if store.head()? != 0 {
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        return Err(DemoError::NotEmpty(db));
    }
    projections::catch_up(&store)?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(DemoError::FeedServer)?;
    let feed_server = listener.local_addr().map_err(DemoError::FeedServer)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, feeds::routes(catalog.clone(), clock.clone()))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );

    let pages = options
        .pages
        .or(config.daemon.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9187)));
    let config = demo_config(config, &catalog, feed_server, &dir, &db, pages)?;
    let (config, detector, signer) = crate::daemon::started(config, &store).await?;
    let mut report = Report {
        feeds: catalog.feeds.len(),
        undated: catalog.undated,
        first_published: Some(first_published),
        last_published: Some(last_published),
        ..Default::default()
    };
    let replayed = replay(
        &config,
        &store,
        &clock,
        &catalog,
        &detector,
        &signer,
        &mut report,
    )
    .await;
    let _ = stop_tx.send(());
    let _ = server.await;
    replayed?;

    projections::catch_up(&store)?;
    let (articles, timeline, held) = store.read(|c| {
        Ok((
            Articles::count(c)?,
            Stances::timeline(c)?,
            Stances::current(c)?,
        ))
    })?;
    report.articles = articles;
    report.stance_changes = timeline.len();
    report.first_change = timeline.first().map(|p| p.at.clone());
    report.last_change = timeline.last().map(|p| p.at.clone());
    report.months_with_changes = timeline
        .iter()
        .filter_map(|p| p.at.get(..7))
        .collect::<BTreeSet<_>>()
        .len();
    report.stances_held = held.len();
    let outbox = dir.join("outbox");
    let preview = preview(&store, signer.as_ref(), &dir, &outbox)?;
    report.elapsed = started_at.elapsed();
    Ok(Demo {
        dir,
        db,
        outbox,
        report,
        preview,
        store,
        clock,
        config,
        signer,
    })
}

/// Moves the clock through the articles' times, step by step: at each step the
/// demo feeds with something new are polled (at once, as the daemon polls feeds that
/// fall due together), then tracking, digests and delivery run at that time.
async fn replay(
    config: &Config,
    store: &SqliteStore,
    clock: &Clock,
    catalog: &Catalog,
    detector: &Arc<Detector>,
    signer: &Option<LinkSigner>,
    report: &mut Report,
) -> Result<(), DemoError> {
    let step = STEP_HOURS * 3600;
    let mut steps: BTreeMap<i64, BTreeSet<usize>> = BTreeMap::new();
    for a in &catalog.articles {
        let end = (a.published.timestamp().div_euclid(step) + 1) * step;
        steps.entry(end).or_default().insert(a.feed);
    }
    report.steps = steps.len();
    let fetcher = Fetcher::new(&config.daemon.fetch)
        .map_err(|e| DemoError::FeedServer(std::io::Error::other(e)))?;
    let tenth = (steps.len() / 10).max(1);
    for (n, (end, feeds)) in steps.into_iter().enumerate() {
        let Some(at) = DateTime::from_timestamp(end, 0) else {
            continue;
        };
        clock.set(at);
        let mut polls = JoinSet::new();
        for feed in feeds {
            let (fetcher, store, feed, limits, detector) = (
                fetcher.clone(),
                store.clone(),
                config.feeds[feed].clone(),
                config.daemon.fetch.clone(),
                detector.clone(),
            );
            polls.spawn(async move {
                let outcome = ingest::poll(&fetcher, &store, &feed, &limits, &detector).await;
                (feed.id, outcome)
            });
        }
        while let Some(joined) = polls.join_next().await {
            let (feed, outcome) =
                joined.map_err(|e| DemoError::Pipeline(anyhow::anyhow!("a poll panicked: {e}")))?;
            report.polls += 1;
            if let PollOutcome::Failed { kind, message } = outcome? {
                report.failed_polls += 1;
                tracing::warn!(feed = %feed, kind = kind.as_str(), error = %message, "a demo feed's poll failed");
            }
        }
        let after = crate::daemon::after_polls(config, store, signer.clone()).await?;
        report.digests_sent += after.delivery.sent;
        if (n + 1) % tenth == 0 {
            tracing::info!(
                at = %at.format("%Y-%m-%d"),
                polls = report.polls,
                "demo: replayed {}%",
                (n + 1) * 100 / report.steps
            );
        }
    }
    Ok(())
}

/// The newest digest delivered, as the subscriber's mail (a copy of its .eml) and
/// its HTML part with the links signed, as sending signed them.
fn preview(
    store: &SqliteStore,
    signer: Option<&LinkSigner>,
    dir: &Path,
    outbox: &Path,
) -> Result<Option<Preview>, DemoError> {
    let rows = store.read(Outbox::all)?;
    let Some(newest) = rows
        .iter()
        .rev()
        .find(|r| r.status == OutboxStatus::Sent && r.reason != DigestReason::Confirmation)
    else {
        return Ok(None);
    };
    let queued = store
        .read_stream(&crate::events::stream::digest(&newest.digest_id))?
        .into_iter()
        .find_map(|e| match e.decode() {
            Ok(Event::DigestQueued(q)) => Some(q),
            _ => None,
        });
    let Some(queued) = queued else {
        return Ok(None);
    };
    let eml = dir.join("digest-preview.eml");
    let sent = outbox.join(format!("{}.eml", newest.digest_id));
    std::fs::copy(&sent, &eml).map_err(io(&sent))?;
    let html = dir.join("digest-preview.html");
    let body = match signer {
        Some(s) => s.fill(&queued.html, &queued.links),
        None => queued.html.clone(),
    };
    std::fs::write(&html, body).map_err(io(&html))?;
    Ok(Some(Preview {
        eml,
        html,
        subject: queued.subject,
        to: queued.to,
    }))
}

impl Demo {
    /// The pages' address the digests link to.
    pub fn pages(&self) -> Option<SocketAddr> {
        self.config.daemon.listen
    }

    /// Serves the pages over the demo's database on `listener` until `shutdown`
    /// completes. The log's clock goes back to the wall: the replay is over.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), DemoError> {
        self.clock.follow_wall();
        let trusted = crate::http::client::TrustedProxies::from_config(&self.config);
        let (_config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(self.config));
        let (_links_tx, links_rx) = tokio::sync::watch::channel(self.signer);
        let web = crate::web::Web::new(
            self.store,
            config_rx,
            links_rx,
            Arc::new(tokio::sync::Notify::new()),
        )
        .map_err(|e| DemoError::Pages(e.to_string()))?;
        crate::http::listener::serve(
            listener,
            crate::web::routes(Arc::new(web)),
            crate::http::listener::Limits::public(),
            trusted,
            shutdown,
        )
        .await
        .map_err(|e| DemoError::Pages(e.to_string()))
    }
}
