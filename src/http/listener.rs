//! The HTTP listener in front of a router: who may hold a connection, and for how long.
//!
//! A public listener meets clients that open connections and send nothing, trickle a
//! request's header or body, or keep idle connections alive, to use up what serves
//! everyone else. Here every connection has a bounded life: its header must arrive
//! within `header_timeout` (an idle kept-alive connection waiting for its next request
//! included), a request is answered (408) within `request_timeout` however slowly its
//! body comes, and no connection outlives `lifetime`. One client (an IPv4 address, or
//! an IPv6 /64) holds at most `per_client` connections; further ones are closed at
//! once, before they take a slot. Slots overall are capped at `max_connections`; more
//! wait in the kernel's backlog. A trusted proxy's connections are not capped per
//! client: it carries many clients, and it is told apart by configuration only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

use crate::http::client::{bucket, ClientAddr, TrustedProxies};

/// How a listener treats its connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's backlog. Bounds the file
    /// descriptors that the web face can take from polling.
    pub max_connections: usize,
    /// Connections one client may hold at once (browsers open at most six).
    pub per_client: usize,
    /// Time for a request's header to arrive, and for an idle connection to send its
    /// next request.
    pub header_timeout: Duration,
    /// Time to answer a request, its body included: a trickled body gets a 408.
    pub request_timeout: Duration,
    /// The longest any connection stays open.
    pub lifetime: Duration,
}

impl Limits {
    /// The public pages' listener.
    pub fn public() -> Limits {
        Limits {
            max_connections: 256,
            per_client: 16,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(60),
        }
    }

    /// The operators' listener (health checks and scrapes: few, short).
    pub fn operators() -> Limits {
        Limits {
            max_connections: 32,
            per_client: 16,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            lifetime: Duration::from_secs(60),
        }
    }
}

/// Open connections per client bucket.
type ClientCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One client's share of connections, returned when the connection closes.
struct ClientShare {
    counts: ClientCounts,
    bucket: Option<IpAddr>,
}

impl ClientShare {
    /// A share for `peer`, or None when its bucket already holds `limit` connections.
    fn take(counts: &ClientCounts, peer: IpAddr, limit: usize, exempt: bool) -> Option<Self> {
        if exempt {
            return Some(ClientShare {
                counts: counts.clone(),
                bucket: None,
            });
        }
        let key = bucket(peer);
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(key).or_insert(0);
        if *open >= limit {
            return None;
        }
        *open += 1;
        Some(ClientShare {
            counts: counts.clone(),
            bucket: Some(key),
        })
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let Some(key) = self.bucket else { return };
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&key) {
            *open -= 1;
            if *open == 0 {
                map.remove(&key);
            }
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then lets
/// the requests in progress finish for a moment.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    trusted: TrustedProxies,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let counts: ClientCounts = Arc::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was taken:
                // wait a little rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let exempt = trusted.contains(peer.ip());
        let Some(share) = ClientShare::take(&counts, peer.ip(), limits.per_client, exempt) else {
            metrics::counter!("vigia_connections_refused_total", "reason" => "per_client")
                .increment(1);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(BoundedStream {
            io: tcp,
            deadline: Box::pin(tokio::time::sleep(limits.lifetime)),
            _slot: slot,
            _share: share,
        });
        let (app, request_timeout) = (app.clone(), limits.request_timeout);
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
            let app = app.clone();
            async move {
                let answer = tokio::time::timeout(request_timeout, app.oneshot(req.map(Body::new)));
                Ok::<_, Infallible>(match answer.await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => too_slow(),
                })
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, peer = %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(2), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("connections still open at shutdown were dropped");
    }
    Ok(())
}

/// A request whose body did not arrive in time; the connection is closed after it.
fn too_slow() -> Response<Body> {
    let mut response = Response::new(Body::from("the request took too long to arrive\n"));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    super::add_security_headers(headers);
    response
}

/// A connection that errors out once its lifetime is over (an idle one included: the
/// deadline wakes the pending read), and frees its slot and its client's share when
/// dropped.
struct BoundedStream {
    io: tokio::net::TcpStream,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _share: ClientShare,
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve_with(limits: Limits) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/form", post(|body: String| async move { body }));
        tokio::spawn(serve(
            listener,
            app,
            limits,
            TrustedProxies::none(),
            std::future::pending(),
        ));
        addr
    }

    fn quick(max: usize, per_client: usize) -> Limits {
        Limits {
            max_connections: max,
            per_client,
            header_timeout: Duration::from_millis(400),
            request_timeout: Duration::from_millis(400),
            lifetime: Duration::from_secs(30),
        }
    }

    async fn connect_from(source: &str, addr: SocketAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    async fn ask(mut s: tokio::net::TcpStream) -> String {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        out
    }

    /// Whether the server closes `s` within `within` (reads EOF or an error).
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(within, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
        let addr = serve_with(quick(8, 8)).await;
        let mut idle = connect_from("127.0.0.1", addr).await;
        assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_early() {
        let addr = serve_with(quick(8, 8)).await;
        let mut s = connect_from("127.0.0.1", addr).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("ok"));
        assert!(
            closed_within(&mut s, Duration::from_secs(5)).await,
            "kept alive but idle: closed"
        );
    }

    #[tokio::test]
    async fn a_body_that_never_comes_is_answered_408() {
        let addr = serve_with(quick(8, 8)).await;
        let mut s = connect_from("127.0.0.1", addr).await;
        s.write_all(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\nab")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("content-security-policy"), "{out}");
    }

    #[tokio::test]
    async fn one_client_cannot_hold_more_than_its_share_and_others_are_served() {
        let mut limits = quick(64, 4);
        limits.header_timeout = Duration::from_secs(30);
        let addr = serve_with(limits).await;
        let mut hogs = Vec::new();
        for _ in 0..20 {
            hogs.push(connect_from("127.0.0.1", addr).await);
        }
        // The hog's connections past its share are closed at once.
        let mut closed = 0;
        for hog in &mut hogs {
            if closed_within(hog, Duration::from_millis(200)).await {
                closed += 1;
            }
        }
        assert_eq!(closed, 16, "the hog keeps exactly its share of 4");
        let answer = ask(connect_from("127.0.0.2", addr).await).await;
        assert!(answer.ends_with("ok"), "another client is served: {answer}");
    }

    #[tokio::test]
    async fn connections_beyond_the_total_cap_wait_for_a_free_slot() {
        let mut limits = quick(1, 8);
        limits.header_timeout = Duration::from_secs(30);
        let addr = serve_with(limits).await;
        let mut hog = connect_from("127.0.0.1", addr).await;
        // The hog is answered once, so the server has taken its connection (and the
        // only slot), which it keeps open: no pause hoping that it was accepted.
        hog.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answered = String::new();
        let mut buf = [0u8; 512];
        while !answered.ends_with("ok") {
            let n = tokio::time::timeout(Duration::from_secs(5), hog.read(&mut buf))
                .await
                .expect("the hog is answered")
                .unwrap();
            assert!(n > 0, "the hog's connection stays open: {answered}");
            answered.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let waiting = tokio::spawn(async move { ask(connect_from("127.0.0.2", addr).await).await });
        // What is checked is that nothing happens for a while: this wait is the point.
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
