//! The long-running daemon: a loop that polls feeds as they fall due, runs tracking
//! and delivery after news and on a tick, serves the listeners, reloads on SIGHUP and
//! drains on shutdown. Its state between turns is a `Daemon`; each turn's steps are
//! its methods, so the loop itself reads in one screen.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::*;

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
    let (config, detector, signer) = started(config, &store).await?;
    let mut daemon = Daemon::new(config, store, detector, signer)?;
    let services = daemon.serve().await?;
    let mut reload = reload_signal()?;
    tokio::pin!(shutdown);
    tracing::info!(feeds = daemon.config.feeds.len(), database = %daemon.config.daemon.database.display(), "vigia running");
    loop {
        if daemon.after_polls_due() {
            daemon.track_and_deliver().await;
        }
        let wake = daemon.start_due_polls().await?;
        let nudge = daemon.outbox_nudge.clone();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reload.recv() => daemon.reload().await?,
            Some(joined) = daemon.polls.join_next(), if !daemon.polls.is_empty() => {
                daemon.poll_finished(joined).await?;
            }
            // A confirmation mail was queued: deliver it with the next round.
            _ = nudge.notified() => daemon.news = true,
            _ = tokio::time::sleep(wake) => {}
        }
    }
    daemon.stop(services).await
}

/// How often the daemon gives the allocator's free memory back (`ops::return_free_memory`).
const RETURN_FREE_MEMORY_EVERY: Duration = Duration::from_secs(60);

type PollResult = (String, Result<PollOutcome, crate::store::StoreError>);

/// The running daemon's state between turns of its loop.
struct Daemon {
    store: SqliteStore,
    config: Arc<Config>,
    /// The config as the web pages see it (replaced on reload).
    config_tx: watch::Sender<Arc<Config>>,
    detector: Arc<Detector>,
    /// The key that signs links, loaded at start and at SIGHUP only: requests never
    /// read the key file.
    links_tx: watch::Sender<Option<LinkSigner>>,
    /// What was last said about the key file, so a change is logged once.
    key_file: KeyFileState,
    fetcher: Fetcher,
    health: Health,
    /// Feeds being polled now: a feed is never polled twice at once.
    in_flight: HashSet<String>,
    polls: JoinSet<PollResult>,
    /// Polls brought news since tracking and delivery last ran.
    news: bool,
    last_after: Option<tokio::time::Instant>,
    /// When free memory was last given back to the system (`ops::return_free_memory`).
    last_trim: Option<tokio::time::Instant>,
    /// Told when a confirmation mail is queued, so it goes out at once.
    outbox_nudge: Arc<tokio::sync::Notify>,
    /// Stops the listeners.
    stop_services: watch::Sender<bool>,
}

impl Daemon {
    fn new(
        config: Config,
        store: SqliteStore,
        detector: Arc<Detector>,
        signer: Option<LinkSigner>,
    ) -> Result<Daemon> {
        let config = Arc::new(config);
        let fetcher = Fetcher::new(&config.daemon.fetch).context("setting up HTTP")?;
        crate::ops::metrics_handle();
        let (links_tx, links_rx) = watch::channel(signer);
        let mut health = Health::new(store.clone(), MAX_CYCLE_AGE);
        health.links = Some(links_rx);
        Ok(Daemon {
            config_tx: watch::channel(config.clone()).0,
            store,
            config,
            detector,
            links_tx,
            key_file: KeyFileState::InUse,
            fetcher,
            health,
            in_flight: HashSet::new(),
            polls: JoinSet::new(),
            news: false,
            last_after: None,
            last_trim: None,
            outbox_nudge: Arc::new(tokio::sync::Notify::new()),
            stop_services: watch::channel(false).0,
        })
    }

    /// Completes when the listeners are told to stop.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.stop_services.subscribe();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    /// Starts the listeners: the pages on `listen`, /healthz and /metrics on
    /// `ops_listen`. Each logs the address it bound (with port 0 the system picks
    /// one, and that line is how a test or a supervisor learns it).
    async fn serve(&self) -> Result<Vec<tokio::task::JoinHandle<std::io::Result<()>>>> {
        let mut services = Vec::new();
        if let Some(addr) = self.config.daemon.listen {
            let web = crate::web::Web::new(
                self.store.clone(),
                self.config_tx.subscribe(),
                self.links_tx.subscribe(),
                self.outbox_nudge.clone(),
            )
            .context("loading the page templates")?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} for the web pages"))?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(addr = %bound, "serving the web pages");
            services.push(tokio::spawn(crate::http::listener::serve(
                listener,
                crate::web::routes(Arc::new(web)),
                crate::http::listener::Limits::public(),
                TrustedProxies::from_config(&self.config),
                self.stopped(),
            )));
        }
        if let Some(addr) = self.config.daemon.ops_listen {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => services.push(tokio::spawn(crate::ops::serve_ops(
                    listener,
                    self.health.clone(),
                    self.stopped(),
                ))),
                // The default address may be taken by another vigia on this machine:
                // that is worth a warning, not a refusal to run. A chosen one must work.
                Err(e) if !self.config.daemon.ops_listen_chosen => tracing::warn!(
                    addr = %addr, error = %e,
                    "/healthz and /metrics are not served: the default ops_listen address is taken (set [daemon] ops_listen)"
                ),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("listening on {addr} for /healthz and /metrics"))
                }
            }
        }
        Ok(services)
    }

    /// Tracking and delivery run after polls have brought news (at most every few
    /// seconds), and on a slow tick for retries and periodic digests.
    fn after_polls_due(&self) -> bool {
        match self.last_after {
            None => true,
            Some(t) => {
                (self.news && t.elapsed() >= AFTER_POLLS_MIN_GAP) || t.elapsed() >= AFTER_POLLS_TICK
            }
        }
    }

    async fn track_and_deliver(&mut self) {
        if self
            .last_trim
            .is_none_or(|t| t.elapsed() >= RETURN_FREE_MEMORY_EVERY)
        {
            self.last_trim = Some(tokio::time::Instant::now());
            let _ = tokio::task::spawn_blocking(crate::ops::return_free_memory).await;
        }
        let signer = self.links_tx.borrow().clone();
        match after_polls(&self.config, &self.store, signer.clone()).await {
            Ok(_) => self.health.cycle_done(),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "stance tracking or delivery failed; retrying next cycle")
            }
        }
        if let Some(signer) = signer {
            let state = tokio::task::spawn_blocking(move || signer.key_file_state())
                .await
                .unwrap_or(KeyFileState::InUse);
            if state != self.key_file {
                match state.problem() {
                    Some(problem) => tracing::error!("{problem}"),
                    None => tracing::info!("the web key file holds the key in use again"),
                }
                self.key_file = state;
            }
        }
        self.news = false;
        self.last_after = Some(tokio::time::Instant::now());
    }

    /// Starts a poll of every feed that is due and not already being polled; returns
    /// how long the loop may sleep before something else falls due.
    async fn start_due_polls(&mut self) -> Result<Duration> {
        let now = Utc::now();
        let feed_health = self.store.read_async(FeedHealth::list).await?;
        let mut next_wake =
            now + chrono::Duration::from_std(AFTER_POLLS_MIN_GAP).unwrap_or_default();
        for feed in &self.config.feeds {
            if self.in_flight.contains(&feed.id) {
                continue;
            }
            let row = feed_health.iter().find(|h| h.feed_id == feed.id);
            let Some(due) = schedule::next_due(&self.config, feed, row, now) else {
                continue;
            };
            if due <= now {
                self.in_flight.insert(feed.id.clone());
                self.polls.spawn(poll_task(
                    &self.fetcher,
                    &self.store,
                    feed,
                    &self.config,
                    &self.detector,
                ));
            } else {
                next_wake = next_wake.min(due);
            }
        }
        Ok((next_wake - Utc::now()).to_std().unwrap_or(Duration::ZERO))
    }

    async fn poll_finished(
        &mut self,
        joined: Result<PollResult, tokio::task::JoinError>,
    ) -> Result<()> {
        match joined {
            Ok((feed, outcome)) => {
                self.in_flight.remove(&feed);
                if let Err(e) = outcome {
                    tracing::error!(feed = %feed, error = %e, "a poll could not be recorded");
                }
                let s = self.store.clone();
                tokio::task::spawn_blocking(move || projections::catch_up(&s)).await??;
                self.news = true;
            }
            Err(e) => tracing::error!(error = %e, "a poll task panicked"),
        }
        Ok(())
    }

    /// SIGHUP: the config and key read again, off the runtime (a reload may train a
    /// topic's reader, which takes seconds). A refused reload keeps the running ones.
    async fn reload(&mut self) -> Result<()> {
        let (current, handle) = (Arc::clone(&self.config), self.store.clone());
        let outcome = tokio::task::spawn_blocking(move || reloaded(&current, &handle))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the reload failed: {e}")));
        let (config, detector, signer) = match outcome {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "config reload refused; the running config stays");
                return Ok(());
            }
        };
        let old = &self.config.daemon;
        if config.daemon.fetch != old.fetch {
            self.fetcher = Fetcher::new(&config.daemon.fetch).context("setting up HTTP")?;
        }
        if config.daemon.listen != old.listen || config.daemon.ops_listen != old.ops_listen {
            tracing::warn!("a new listen or ops_listen address takes effect at the next restart");
        }
        if TrustedProxies::from_config(&config) != TrustedProxies::from_config(&self.config) {
            tracing::warn!("the listener's per-client cap sees new trusted_proxies at the next restart (the form's limits see them now)");
        }
        self.links_tx.send_replace(signer);
        self.detector = detector;
        self.config = Arc::new(config);
        self.config_tx.send_replace(self.config.clone());
        tracing::info!(feeds = self.config.feeds.len(), "config reloaded");
        Ok(())
    }

    /// Lets the polls in flight finish (for a grace period), stops the listeners and
    /// brings the projections up to date.
    async fn stop(
        mut self,
        services: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    ) -> Result<()> {
        tracing::info!(
            in_flight = self.polls.len(),
            "stopping: letting polls in flight finish"
        );
        let drain = async { while self.polls.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            // A poll still running has appended nothing yet (each poll appends once,
            // at its end): abandoning it loses no recorded state.
            self.polls.abort_all();
        }
        self.stop_services.send_replace(true);
        for service in services {
            let _ = tokio::time::timeout(Duration::from_secs(3), service).await;
        }
        let s = self.store.clone();
        tokio::task::spawn_blocking(move || projections::catch_up(&s)).await??;
        tracing::info!("stopped");
        Ok(())
    }
}
