//! The daemon's HTTP listener: `/healthz` and Prometheus `/metrics` for operators,
//! beside the public pages of `crate::web`.
//!
//! Metrics are recorded with the `metrics` crate's macros where things happen (polls,
//! articles, detection, stance changes, digests) and rendered by its Prometheus
//! exporter. Health says whether the last cycle is recent and the database answers;
//! it opens the database afresh for that, as any other process would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rusqlite::{Connection, OpenFlags};

/// Seconds buckets for poll and cycle durations.
const DURATION_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

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
        "Subscribe form posts past the cross-site checks, by outcome (mail_queued, too_soon_for_address, hourly_cap, client_rate)"
    );
    describe_gauge!("vigia_outbox_depth", "Messages waiting in the outbox");
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
    pub database: PathBuf,
    /// Unix seconds of the last successful cycle (0: none yet).
    pub last_cycle: Arc<AtomicI64>,
    pub started: i64,
    /// A cycle older than this makes the daemon unhealthy.
    pub max_cycle_age: Duration,
}

impl Health {
    pub fn new(database: PathBuf, max_cycle_age: Duration) -> Health {
        Health {
            database,
            last_cycle: Arc::new(AtomicI64::new(0)),
            started: chrono::Utc::now().timestamp(),
            max_cycle_age,
        }
    }

    pub fn cycle_done(&self) {
        let now = chrono::Utc::now().timestamp();
        self.last_cycle.store(now, Ordering::Relaxed);
        metrics::gauge!("vigia_last_cycle_timestamp_seconds").set(now as f64);
    }

    fn database_answers(&self) -> Result<u64, String> {
        let conn = Connection::open_with_flags(
            &self.database,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| e.to_string())
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
    let db = tokio::task::spawn_blocking(move || h.database_answers())
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let ok = fresh && db.is_ok();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unhealthy" },
        "last_cycle_age_s": if last > 0 { Some(age) } else { None },
        "cycle_fresh": fresh,
        "database": match &db { Ok(_) => "ok".to_string(), Err(e) => e.clone() },
        "events": db.ok(),
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

/// Connections served at once; more wait in the kernel's backlog. Bounds the file
/// descriptors the web face can take from polling.
pub const MAX_CONNECTIONS: usize = 256;
/// The longest a connection may stay open: pages are small, so this only ever cuts
/// off clients that trickle or idle (slowloris), which would otherwise hold a slot.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The peer's address, as handlers see it (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// A TCP listener that serves at most `max` connections at once, each for at most
/// `lifetime`.
pub struct BoundedListener {
    inner: tokio::net::TcpListener,
    slots: Arc<tokio::sync::Semaphore>,
    lifetime: Duration,
}

impl BoundedListener {
    pub fn new(inner: tokio::net::TcpListener, max: usize, lifetime: Duration) -> BoundedListener {
        BoundedListener {
            inner,
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            lifetime,
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoundedStream, SocketAddr) {
        // The semaphore is never closed, so acquiring only waits.
        let slot = loop {
            if let Ok(slot) = self.slots.clone().acquire_owned().await {
                break slot;
            }
        };
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let stream = BoundedStream {
            io,
            deadline: Box::pin(tokio::time::sleep(self.lifetime)),
            _slot: slot,
        };
        (stream, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, BoundedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, BoundedListener>) -> ClientAddr {
        ClientAddr(*stream.remote_addr())
    }
}

/// A connection that errors out once its lifetime is over (an idle one included: the
/// deadline wakes the pending read) and frees its slot when dropped.
pub struct BoundedStream {
    io: tokio::net::TcpStream,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl BoundedStream {
    fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        std::future::Future::poll(self.deadline.as_mut(), cx).is_ready()
    }
}

fn lifetime_over() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the connection's lifetime is over",
    )
}

impl tokio::io::AsyncRead for BoundedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return std::task::Poll::Ready(Err(lifetime_over()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return std::task::Poll::Ready(Err(lifetime_over()));
        }
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves /healthz, /metrics and the web pages on a bound listener until `shutdown`
/// completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Health,
    web: Option<Arc<crate::web::Web>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = metrics_handle();
    let mut app = Router::new()
        .route("/healthz", get(healthz).with_state(health))
        .route("/metrics", get(prometheus).with_state(handle));
    if let Some(web) = web {
        app = app.merge(crate::web::routes(web));
    }
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving /healthz, /metrics and the web pages");
    let listener = BoundedListener::new(listener, MAX_CONNECTIONS, CONNECTION_LIFETIME);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<ClientAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve_bounded(max: usize, lifetime: Duration) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let bounded = BoundedListener::new(listener, max, lifetime);
        tokio::spawn(async move {
            axum::serve(
                bounded,
                app.into_make_service_with_connect_info::<ClientAddr>(),
            )
            .await
        });
        addr
    }

    async fn ask(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_when_its_lifetime_is_over() {
        let addr = serve_bounded(4, Duration::from_millis(300)).await;
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "closed by the server: {read:?}"
        );
        assert!(ask(addr).await.ends_with("ok"), "and others are served");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_for_a_free_slot() {
        let addr = serve_bounded(1, Duration::from_secs(30)).await;
        let hog = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Let the server take the hog's connection (and its only slot).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = tokio::spawn(ask(addr));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "no slot while the hog holds it");
        drop(hog);
        let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("served once the slot is free")
            .unwrap();
        assert!(answer.ends_with("ok"), "{answer}");
    }
}
