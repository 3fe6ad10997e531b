//! The cycle and the long-running service around it.
//!
//! `run_once` polls every feed now and brings the projections up to date; `run` keeps
//! a schedule per feed (cron, spread within the minute, backoff and server hints as
//! floors), polls what is due, never the same feed twice at once, and stops when the
//! `shutdown` future completes. Applying a config is recorded as an event.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
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
        let now = Utc::now();
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
async fn started(
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

/// The daemon: polls feeds as they fall due until `shutdown` completes, runs tracking
/// and delivery after polls and on a tick, serves the pages (`listen`) and /healthz
/// and /metrics (`ops_listen`), and reloads its config and web key on SIGHUP (an
/// invalid config or a lost key file is refused and the old ones keep running).
/// On shutdown it lets the polls in flight finish (each records its outcome in one
/// atomic append) and returns.
pub async fn run(
    config: Config,
    store: SqliteStore,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    // The key that signs links is loaded here and again only at SIGHUP: requests
    // never read the key file.
    let (config, mut detector, signer) = started(config, &store).await?;
    let (links_tx, links_rx) = tokio::sync::watch::channel(signer);
    let mut key_file = KeyFileState::InUse;
    let mut config = Arc::new(config);
    let (config_tx, config_rx) = tokio::sync::watch::channel(config.clone());
    let outbox_nudge = Arc::new(tokio::sync::Notify::new());
    let mut fetcher = Fetcher::new(&config.daemon.fetch).context("setting up HTTP")?;
    crate::ops::metrics_handle();
    let mut health = Health::new(store.clone(), MAX_CYCLE_AGE);
    health.links = Some(links_rx.clone());
    let (stop_service, service_stopped) = tokio::sync::watch::channel(false);
    let stop = || {
        let mut stopped = service_stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut services = Vec::new();
    if let Some(addr) = config.daemon.listen {
        let web = crate::web::Web::new(store.clone(), config_rx, links_rx, outbox_nudge.clone())
            .context("loading the page templates")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for the web pages"))?;
        // The address bound, not the one asked for: with port 0 the system picks one,
        // and this line is how a test or a supervisor learns it.
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(addr = %bound, "serving the web pages");
        services.push(tokio::spawn(crate::http::listener::serve(
            listener,
            crate::web::routes(Arc::new(web)),
            crate::http::listener::Limits::public(),
            TrustedProxies::from_config(&config),
            stop(),
        )));
    }
    if let Some(addr) = config.daemon.ops_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => services.push(tokio::spawn(crate::ops::serve_ops(
                listener,
                health.clone(),
                stop(),
            ))),
            // The default address may be taken by another vigia on this machine: that
            // is worth a warning, not a refusal to run. A chosen one must work.
            Err(e) if !config.daemon.ops_listen_chosen => tracing::warn!(
                addr = %addr, error = %e,
                "/healthz and /metrics are not served: the default ops_listen address is taken (set [daemon] ops_listen)"
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("listening on {addr} for /healthz and /metrics"))
            }
        }
    }
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<(String, Result<PollOutcome, crate::store::StoreError>)> =
        JoinSet::new();
    let mut reload = reload_signal()?;
    tokio::pin!(shutdown);
    tracing::info!(feeds = config.feeds.len(), database = %config.daemon.database.display(), "vigia running");
    // Tracking and delivery run after polls have brought news (at most every few
    // seconds), and on a slow tick for retries and periodic digests.
    let mut news = false;
    let mut last_after: Option<tokio::time::Instant> = None;
    loop {
        let after_due = match last_after {
            None => true,
            Some(t) => {
                (news && t.elapsed() >= AFTER_POLLS_MIN_GAP) || t.elapsed() >= AFTER_POLLS_TICK
            }
        };
        if after_due {
            let signer = links_tx.borrow().clone();
            match after_polls(&config, &store, signer.clone()).await {
                Ok(_) => health.cycle_done(),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "stance tracking or delivery failed; retrying next cycle")
                }
            }
            if let Some(signer) = signer {
                let state = tokio::task::spawn_blocking(move || signer.key_file_state())
                    .await
                    .unwrap_or(KeyFileState::InUse);
                if state != key_file {
                    match state.problem() {
                        Some(problem) => tracing::error!("{problem}"),
                        None => tracing::info!("the web key file holds the key in use again"),
                    }
                    key_file = state;
                }
            }
            news = false;
            last_after = Some(tokio::time::Instant::now());
        }
        let now = Utc::now();
        let feed_health = store.read_async(FeedHealth::list).await?;
        let mut next_wake =
            now + chrono::Duration::from_std(AFTER_POLLS_MIN_GAP).unwrap_or_default();
        for feed in &config.feeds {
            if in_flight.contains(&feed.id) {
                continue;
            }
            let row = feed_health.iter().find(|h| h.feed_id == feed.id);
            let Some(due) = schedule::next_due(&config, feed, row, now) else {
                continue;
            };
            if due <= now {
                in_flight.insert(feed.id.clone());
                tasks.spawn(poll_task(&fetcher, &store, feed, &config, &detector));
            } else {
                next_wake = next_wake.min(due);
            }
        }
        let sleep = (next_wake - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reload.recv() => {
                // Off the runtime: a reload may train a topic's reader (seconds).
                let (current, handle) = (Arc::clone(&config), store.clone());
                let outcome = tokio::task::spawn_blocking(move || reloaded(&current, &handle))
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("the reload failed: {e}")));
                match outcome {
                    Ok((new_config, new_detector, new_signer)) => {
                        if new_config.daemon.fetch != config.daemon.fetch {
                            fetcher = Fetcher::new(&new_config.daemon.fetch).context("setting up HTTP")?;
                        }
                        if new_config.daemon.listen != config.daemon.listen
                            || new_config.daemon.ops_listen != config.daemon.ops_listen
                        {
                            tracing::warn!("a new listen or ops_listen address takes effect at the next restart");
                        }
                        if TrustedProxies::from_config(&new_config) != TrustedProxies::from_config(&config) {
                            tracing::warn!("the listener's per-client cap sees new trusted_proxies at the next restart (the form's limits see them now)");
                        }
                        let _ = links_tx.send(new_signer);
                        detector = new_detector;
                        config = Arc::new(new_config);
                        let _ = config_tx.send(config.clone());
                        tracing::info!(feeds = config.feeds.len(), "config reloaded");
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "config reload refused; the running config stays"),
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                match joined {
                    Ok((feed, outcome)) => {
                        in_flight.remove(&feed);
                        if let Err(e) = outcome {
                            tracing::error!(feed = %feed, error = %e, "a poll could not be recorded");
                        }
                        let s = store.clone();
                        tokio::task::spawn_blocking(move || projections::catch_up(&s)).await??;
                        news = true;
                    }
                    Err(e) => tracing::error!(error = %e, "a poll task panicked"),
                }
            }
            // A confirmation mail was queued: deliver it with the next round.
            _ = outbox_nudge.notified() => news = true,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    tracing::info!(
        in_flight = tasks.len(),
        "stopping: letting polls in flight finish"
    );
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        // A poll still running has appended nothing yet (each poll appends once, at
        // its end): abandoning it loses no recorded state.
        tasks.abort_all();
    }
    let _ = stop_service.send(true);
    for service in services {
        let _ = tokio::time::timeout(Duration::from_secs(3), service).await;
    }
    let s = store.clone();
    tokio::task::spawn_blocking(move || projections::catch_up(&s)).await??;
    tracing::info!("stopped");
    Ok(())
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
