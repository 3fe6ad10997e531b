//! The operators' endpoints: `/healthz` and Prometheus `/metrics`, on their own
//! listener (`[daemon] ops_listen`, loopback by default), apart from the public pages
//! of `crate::web`.
//!
//! Metrics are recorded with the `metrics` crate's macros where things happen (polls,
//! articles, detection, stance changes, digests) and rendered by its Prometheus
//! exporter; none of them tells one subscription request from another. Health says
//! whether the last cycle is recent, the database answers and the web key file still
//! holds the key in use (the store's `probe` opens the database afresh for that, as any
//! other process would), and names no path and no error (the daemon's log has them).
//!
//! It also keeps the process itself in trim for months of running: the metrics
//! recorder's upkeep, and free memory handed back to the system.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::SqliteStore;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds buckets for poll and cycle durations.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Allocator arenas the process uses at most. glibc gives each thread that allocates
/// an arena of its own (up to eight per core), and every arena keeps what its thread
/// freed: with the blocking pool, the writer and the runtime's workers that is a
/// dozen arenas holding megabytes each. Two arenas cut a cold cycle's peak resident
/// memory from 38 to 34 MB (`benches/ingest_cycle.py`, `MALLOC_ARENA_MAX=2` beside
/// none); the threads that share one contend little, as most of the work is I/O.
const ALLOCATOR_ARENAS: i32 = 2;

/// Bounds the allocator's arenas (see `ALLOCATOR_ARENAS`), unless the operator chose a
/// number with glibc's own `MALLOC_ARENA_MAX`. Call it first thing in `main`: an
/// arena made before it stays.
pub fn bound_allocator_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's tunables; called before any other
    // thread exists, it races with nothing.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ALLOCATOR_ARENAS);
    }
}

/// Gives the allocator's free memory back to the system. glibc keeps what a thread's
/// arena freed for that arena's next use, and with the blocking pool's threads taking
/// turns, a long-running daemon's resident memory crept up by megabytes an hour
/// though its live heap stayed near 5 MB (seen in a 2.5-hour soak: `malloc_trim`
/// took 48 MB down to 35 MB). The daemon calls this about once a minute.
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it takes
    // the arenas' locks, so it is safe beside other threads' allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder (once; later calls reuse it).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            // Histogram samples wait in the recorder until upkeep folds them into their
            // buckets; a daemon that nobody scrapes would otherwise keep every poll's
            // sample for ever (metrics-rs/metrics#467). The exporter leaves that to us.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("vigia-metrics-upkeep".into())
                .stack_size(64 * 1024)
                .spawn(move || loop {
                    std::thread::sleep(METRICS_UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread: histograms fold in at scrapes only");
            }
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "vigia_polls_total",
        "Feed polls, by result (ok, not_modified, failed)"
    );
    describe_counter!("vigia_poll_failures_total", "Failed polls, by kind");
    describe_counter!(
        "vigia_articles_total",
        "Articles recorded, by kind (discovered, revised)"
    );
    describe_counter!(
        "vigia_classifications_total",
        "Articles read by the detector"
    );
    describe_counter!("vigia_stance_changes_total", "Stance changes recorded");
    describe_counter!("vigia_digests_queued_total", "Digests queued in the outbox");
    describe_counter!("vigia_digests_sent_total", "Digests delivered");
    describe_counter!(
        "vigia_digests_failed_total",
        "Failed delivery attempts, by permanence"
    );
    describe_counter!(
        "vigia_subscription_requests_total",
        "Subscribe form posts, by outcome: accepted (the same for an address mailed now or within the hour), hourly_cap, client_rate"
    );
    describe_gauge!("vigia_outbox_depth", "Messages waiting in the outbox");
    describe_counter!(
        "vigia_connections_refused_total",
        "Connections closed at once because their client held its share"
    );
    describe_gauge!(
        "vigia_last_cycle_timestamp_seconds",
        "When the last cycle of tracking and delivery finished"
    );
    describe_histogram!(
        "vigia_poll_duration_seconds",
        "Time per poll, fetch to record"
    );
    describe_histogram!(
        "vigia_cycle_duration_seconds",
        "Time per cycle of tracking and delivery"
    );
}

/// What /healthz needs to know.
#[derive(Clone)]
pub struct Health {
    /// The log, whose `probe` says whether the database answers.
    pub store: SqliteStore,
    /// Unix seconds of the last successful cycle (0: none yet).
    pub last_cycle: Arc<AtomicI64>,
    pub started: i64,
    /// A cycle older than this makes the daemon unhealthy.
    pub max_cycle_age: Duration,
    /// The link signer in use, to tell whether its key file still holds its key.
    pub links: Option<tokio::sync::watch::Receiver<Option<crate::links::LinkSigner>>>,
}

impl Health {
    pub fn new(store: SqliteStore, max_cycle_age: Duration) -> Health {
        Health {
            store,
            last_cycle: Arc::new(AtomicI64::new(0)),
            started: chrono::Utc::now().timestamp(),
            max_cycle_age,
            links: None,
        }
    }

    /// What is wrong with the web key file, if anything.
    pub fn key_problem(&self) -> Option<String> {
        let signer = self.links.as_ref()?.borrow().clone()?;
        signer.key_file_state().problem()
    }

    pub fn cycle_done(&self) {
        let now = chrono::Utc::now().timestamp();
        self.last_cycle.store(now, Ordering::Relaxed);
        metrics::gauge!("vigia_last_cycle_timestamp_seconds").set(now as f64);
    }

    fn database_answers(&self) -> Result<u64, String> {
        self.store.probe().map_err(|e| e.to_string())
    }
}

async fn healthz(State(health): State<Health>) -> impl IntoResponse {
    let now = chrono::Utc::now().timestamp();
    let last = health.last_cycle.load(Ordering::Relaxed);
    let age = if last > 0 {
        now - last
    } else {
        now - health.started
    };
    let fresh = age <= health.max_cycle_age.as_secs() as i64;
    let h = health.clone();
    let (db, key_problem) =
        tokio::task::spawn_blocking(move || (h.database_answers(), h.key_problem()))
            .await
            .unwrap_or_else(|e| (Err(e.to_string()), None));
    if let Err(e) = &db {
        tracing::error!(error = %e, "health check: the database does not answer");
    }
    let ok = fresh && db.is_ok();
    // A missing or replaced key file degrades the daemon but does not fail it: the key
    // in memory still works, and a restart (what a failing health check brings) would
    // be what breaks the links.
    let status = match (ok, &key_problem) {
        (false, _) => "unhealthy",
        (true, Some(_)) => "degraded",
        (true, None) => "ok",
    };
    let body = serde_json::json!({
        "status": status,
        "last_cycle_age_s": if last > 0 { Some(age) } else { None },
        "cycle_fresh": fresh,
        "database": if db.is_ok() { "ok" } else { "unavailable" },
        "signing_key": if key_problem.is_some() { "file missing or changed; see the log" } else { "ok" },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn prometheus(State(handle): State<Option<PrometheusHandle>>) -> impl IntoResponse {
    match handle {
        Some(h) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            "# metrics recorder unavailable\n".to_string(),
        ),
    }
}

/// Serves `/healthz` and `/metrics` on the operators' own listener until `shutdown`
/// completes. The public pages have their own listener (`crate::http::listener`), so
/// no amount of page traffic takes these endpoints' connections.
pub async fn serve_ops(
    listener: tokio::net::TcpListener,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = metrics_handle();
    let app = Router::new()
        .route("/healthz", get(healthz).with_state(health))
        .route("/metrics", get(prometheus).with_state(handle));
    let app = crate::http::with_security_headers(app);
    match listener.local_addr() {
        Ok(bound) => tracing::info!(addr = %bound, "serving /healthz and /metrics"),
        Err(e) => tracing::warn!(error = %e, "serving /healthz and /metrics (address unknown)"),
    }
    crate::http::listener::serve(
        listener,
        app,
        crate::http::listener::Limits::operators(),
        crate::http::client::TrustedProxies::none(),
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_names_no_path_and_no_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigia.db");
        let store = SqliteStore::open(&path).unwrap();
        let health = Health::new(store.clone(), Duration::from_secs(60));
        let answering = healthz(State(health.clone())).await.into_response();
        assert_eq!(answering.status(), StatusCode::OK);
        // The handle's own connections would still answer from a deleted file: the
        // probe opens it afresh.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let response = healthz(State(health)).await.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("vigia.db"), "{text}");
        assert!(!text.contains("events"), "{text}");
        assert!(text.contains("\"database\":\"unavailable\""), "{text}");
    }
}
