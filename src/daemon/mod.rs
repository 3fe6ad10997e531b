//! The cycle and the long-running service around it.
//!
//! `run_once` polls every feed now and brings the projections up to date; `run`
//! (`running.rs`) polls each feed when `schedule` says it is due, never the same feed
//! twice at once, and stops when the `shutdown` future completes. Both start the same
//! way (`started`: the detector, the config recorded as an event, the link key) and
//! end a round the same way (`after_polls`: tracking, digests, delivery).

mod running;

pub use running::run;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::config::{Config, FeedConfig};
use crate::detect::Detector;
use crate::events::stream;
use crate::events::{ConfigApplied, Event};
use crate::fetch::Fetcher;
use crate::http::client::TrustedProxies;
use crate::ingest::{self, PollOutcome};
use crate::links::{KeyFile, KeyFileState, LinkSigner};
use crate::ops::Health;
use crate::projections::{self, FeedHealth};
use crate::schedule;
use crate::store::{NewEvent, SqliteStore};

/// What one cycle did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    pub polled: u32,
    pub failed: u32,
    pub new_articles: u32,
    pub revised_articles: u32,
    pub after: AfterReport,
}

impl CycleReport {
    fn add(&mut self, outcome: &PollOutcome) {
        match outcome {
            PollOutcome::Polled { new, revised, .. } => {
                self.polled += 1;
                self.new_articles += new;
                self.revised_articles += revised;
            }
            PollOutcome::Failed { .. } => self.failed += 1,
        }
    }
}

/// Records the config as applied, unless the last applied one was the same text.
pub fn apply_config(config: &Config, store: &SqliteStore, detector: &Detector) -> Result<bool> {
    let last = store.last_of_kind("ConfigApplied")?;
    let same = match last.map(|e| e.decode()).transpose()? {
        Some(Event::ConfigApplied(applied)) => applied.hash == config.hash,
        _ => false,
    };
    if same {
        return Ok(false);
    }
    let event = Event::ConfigApplied(ConfigApplied {
        hash: config.hash.clone(),
        path: config.path.display().to_string(),
        feeds: config.feeds.iter().map(|f| f.id.clone()).collect(),
        topics: config.topics.iter().map(|t| t.id.clone()).collect(),
        rules_hash: detector.rules_hash.clone(),
    });
    store.append_one(NewEvent::new(stream::CONFIG, event))?;
    Ok(true)
}

/// Applies the config: recorded if it changed, and its subscribers recorded as events.
pub fn apply(config: &Config, store: &SqliteStore, detector: &Detector) -> Result<()> {
    apply_config(config, store, detector)?;
    crate::subscribers::apply_config(store, config).context("applying the config's subscribers")?;
    Ok(())
}

/// After polling: track stances, queue the digests due, and send what the outbox
/// holds (signing its links with `signer`). Each step's events are in the log before
/// the next step reads them.
pub async fn after_polls(
    config: &Config,
    store: &SqliteStore,
    signer: Option<LinkSigner>,
) -> Result<AfterReport> {
    let (config, store) = (config.clone(), store.clone());
    tokio::task::spawn_blocking(move || -> Result<AfterReport> {
        let started = std::time::Instant::now();
        // The log's time, not the wall's: tracking compares it with the times the log
        // wrote (when observations were seen, when stances changed), and a replayed
        // log (`vigia demo`) moves that clock along the articles' times.
        let now = store.now();
        projections::catch_up(&store)?;
        let changes = crate::tracking::track(&store, &config.tracking, now)?;
        projections::catch_up(&store)?;
        let templates = crate::digest::Templates::load(config.mail.templates.as_deref())?;
        let drafts = store.read(|c| crate::digest::drafts(c, &config, signer.as_ref(), now))?;
        let queued = crate::digest::queue(&store, &config, &templates, drafts, now)?;
        projections::catch_up(&store)?;
        let delivery = match crate::digest::mail::Mailer::new(&config, signer) {
            Ok(mailer) => crate::digest::mail::deliver_due(&store, &mailer, now)?,
            Err(e) => {
                tracing::error!(error = %e, "mail is not set up: digests stay in the outbox");
                Default::default()
            }
        };
        projections::catch_up(&store)?;
        metrics::counter!("vigia_stance_changes_total").increment(changes.len() as u64);
        metrics::counter!("vigia_digests_queued_total").increment(queued as u64);
        metrics::counter!("vigia_digests_sent_total").increment(u64::from(delivery.sent));
        metrics::counter!("vigia_digests_failed_total", "permanent" => "false")
            .increment(u64::from(delivery.failed));
        metrics::counter!("vigia_digests_failed_total", "permanent" => "true")
            .increment(u64::from(delivery.given_up));
        if let Ok(depth) = store.read(crate::projections::Outbox::depth) {
            metrics::gauge!("vigia_outbox_depth").set(depth as f64);
        }
        metrics::histogram!("vigia_cycle_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(AfterReport {
            stance_changes: changes.len() as u32,
            digests_queued: queued as u32,
            delivery,
        })
    })
    .await
    .context("the stance and digest task panicked")?
}

/// What tracking and delivery did in one cycle.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AfterReport {
    pub stance_changes: u32,
    pub digests_queued: u32,
    pub delivery: crate::digest::mail::DeliveryReport,
}

/// One full cycle: every feed polled now (except those gone for good), then the
/// projections brought up to date.
pub async fn run_once(config: Config, store: &SqliteStore) -> Result<CycleReport> {
    let (config, detector, signer) = started(config, store).await?;
    let config = &config;
    let fetcher = Fetcher::new(&config.daemon.fetch).context("setting up HTTP")?;
    let health = store.read_async(FeedHealth::list).await?;
    let mut tasks = JoinSet::new();
    for feed in &config.feeds {
        let row = health.iter().find(|h| h.feed_id == feed.id);
        if schedule::is_gone(feed, row) {
            tracing::info!(feed = %feed.id, "skipped: the server said 410 Gone; change its url to resume");
            continue;
        }
        tasks.spawn(poll_task(&fetcher, store, feed, config, &detector));
    }
    let mut report = CycleReport::default();
    while let Some(joined) = tasks.join_next().await {
        let (_, outcome) = joined.context("a poll task panicked")?;
        report.add(&outcome?);
    }
    report.after = after_polls(config, store, signer).await?;
    Ok(report)
}

/// What a cycle or the daemon starts from, prepared on the blocking pool (training a
/// stale model and recording the config are store and CPU work): the config (its
/// examples' texts dropped once the detector is built), the detector, and the key
/// that signs links (loaded once; its file created if this is the first start).
pub async fn started(
    mut config: Config,
    store: &SqliteStore,
) -> Result<(Config, Arc<Detector>, Option<LinkSigner>)> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let detector = Arc::new(detector_for(&config, &store)?);
        config.forget_example_texts();
        apply(&config, &store, &detector)?;
        let signer = LinkSigner::from_config(&config, KeyFile::CreateIfMissing)?;
        Ok((config, detector, signer))
    })
    .await
    .context("the start-up task panicked")?
}

/// One poll as a task of its own: (feed id, outcome).
fn poll_task(
    fetcher: &Fetcher,
    store: &SqliteStore,
    feed: &FeedConfig,
    config: &Config,
    detector: &Arc<Detector>,
) -> impl Future<Output = (String, Result<PollOutcome, crate::store::StoreError>)> + Send + 'static
{
    let (fetcher, store, feed, limits, detector) = (
        fetcher.clone(),
        store.clone(),
        feed.clone(),
        config.daemon.fetch.clone(),
        detector.clone(),
    );
    async move {
        let outcome = ingest::poll(&fetcher, &store, &feed, &limits, &detector).await;
        (feed.id, outcome)
    }
}

/// How long polls in flight may take to finish after a stop is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A daemon whose last cycle is older than this is unhealthy (cycles run every
/// AFTER_POLLS_TICK at least).
const MAX_CYCLE_AGE: Duration = Duration::from_secs(300);

/// Least time between two rounds of tracking and delivery while news comes in.
const AFTER_POLLS_MIN_GAP: Duration = Duration::from_secs(2);
/// Tracking and delivery also run this often with no news: retries, periodic digests.
const AFTER_POLLS_TICK: Duration = Duration::from_secs(30);

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Reads the config file and the web key again and applies them, keeping the
/// database the daemon has open (a new database path takes a restart). The key file
/// must still exist: a lost one is never silently replaced by a new key, which would
/// break every link sent so far. Only a key file the config names anew is created.
fn reloaded(
    current: &Config,
    store: &SqliteStore,
) -> Result<(Config, Arc<Detector>, Option<LinkSigner>)> {
    let mut new = Config::load(&current.path)?;
    if new.daemon.database != current.daemon.database {
        tracing::warn!("a new database path takes effect at the next restart");
        new.daemon.database = current.daemon.database.clone();
    }
    let same_key_source = match (&current.web, &new.web) {
        (Some(a), Some(b)) => a.secret == b.secret,
        _ => false,
    };
    let missing = if same_key_source {
        KeyFile::MustExist
    } else {
        KeyFile::CreateIfMissing
    };
    let signer = LinkSigner::from_config(&new, missing)?;
    let detector = Arc::new(detector_for(&new, store)?);
    new.forget_example_texts();
    apply(&new, store, &detector)?;
    Ok((new, detector, signer))
}

/// The config's detector: its rules, and each topic's learned reader (the model file
/// when it matches the examples and rules, else trained now on the examples and the
/// operators' corrections in the log).
pub fn detector_for(config: &Config, store: &SqliteStore) -> Result<Detector> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let (detector, notes) = crate::detect::load(&config.topics, &config.examples, &mut || {
        Ok(crate::readings::corrected_examples(store)?)
    })?;
    for note in notes {
        tracing::warn!("{note}");
    }
    Ok(detector)
}

/// SIGHUP, as a stream of reload requests (never fires where there is no SIGHUP).
struct ReloadSignal {
    #[cfg(unix)]
    inner: tokio::signal::unix::Signal,
}

impl ReloadSignal {
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.inner.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    }
}

fn reload_signal() -> Result<ReloadSignal> {
    Ok(ReloadSignal {
        #[cfg(unix)]
        inner: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?,
    })
}
