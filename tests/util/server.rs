//! A real HTTP/1.1 server on 127.0.0.1 for tests: serves feed routes with ETag/304,
//! and the hostile cases (slow drip, endless body, gzip bomb, redirect loop, errors).
//! One thread per connection, `Connection: close`; everything stops when it drops.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Route {
    /// 200 with ETag; 304 when If-None-Match matches; gzip when asked.
    Feed {
        body: Vec<u8>,
        content_type: String,
    },
    /// A plain status with optional headers and no body.
    Status(u16, Vec<(String, String)>),
    Redirect(u16, String),
    /// Sends one byte every half second, for a minute.
    SlowDrip,
    /// 200 with no length that never ends.
    Endless,
    /// A small gzip body that inflates to 200 MB.
    GzipBomb,
    /// Waits, then serves the inner route.
    Delayed(Duration, Box<Route>),
}

#[derive(Default, Debug)]
pub struct Stats {
    pub requests: u64,
    pub not_modified: u64,
    pub in_flight: u64,
    pub max_in_flight: u64,
    pub by_path: HashMap<String, u64>,
    pub user_agents: Vec<String>,
}

pub struct FeedServer {
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
}

impl FeedServer {
    pub fn start() -> FeedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let stats: Arc<Mutex<Stats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (routes.clone(), stats.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, s, st) = (r.clone(), s.clone(), st.clone());
                        thread::spawn(move || {
                            let _ = handle(stream, &r, &s, &st);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FeedServer {
            addr,
            routes,
            stats,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn set(&self, path: &str, route: Route) {
        if matches!(route, Route::GzipBomb) {
            gzip_bomb(); // made now, not while a client waits
        }
        self.routes
            .lock()
            .unwrap()
            .insert(format!("/{}", path.trim_start_matches('/')), route);
    }

    pub fn feed(&self, path: &str, body: impl Into<Vec<u8>>, content_type: &str) {
        self.set(
            path,
            Route::Feed {
                body: body.into(),
                content_type: content_type.to_string(),
            },
        );
    }

    pub fn stats<T>(&self, f: impl FnOnce(&Stats) -> T) -> T {
        f(&self.stats.lock().unwrap())
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    stats: &Mutex<Stats>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let route_path = path.split('?').next().unwrap_or("/").to_string();
    let route = routes.lock().unwrap().get(&route_path).cloned();
    {
        let mut s = stats.lock().unwrap();
        s.requests += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        *s.by_path.entry(route_path.clone()).or_default() += 1;
        if let Some(ua) = headers.get("user-agent") {
            s.user_agents.push(ua.clone());
        }
    }
    let mut done = Some(|| stats.lock().unwrap().in_flight -= 1);
    let result = respond(&mut stream, route, &headers, stats, stop, &mut || {
        if let Some(f) = done.take() {
            f()
        }
    });
    if let Some(f) = done.take() {
        f()
    }
    result
}

fn respond(
    stream: &mut TcpStream,
    route: Option<Route>,
    headers: &HashMap<String, String>,
    stats: &Mutex<Stats>,
    stop: &AtomicBool,
    finishing: &mut dyn FnMut(),
) -> std::io::Result<()> {
    let Some(route) = route else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    match route {
        Route::Delayed(wait, inner) => {
            thread::sleep(wait);
            respond(stream, Some(*inner), headers, stats, stop, finishing)
        }
        Route::Feed { body, content_type } => {
            let etag = format!("\"{:016x}\"", fnv(&body));
            if headers.get("if-none-match") == Some(&etag) {
                stats.lock().unwrap().not_modified += 1;
                return stream.write_all(
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n").as_bytes(),
                );
            }
            let gzip = headers.get("accept-encoding").is_some_and(|a| a.contains("gzip"));
            let (body, encoding) = if gzip {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&body)?;
                (enc.finish()?, "Content-Encoding: gzip\r\n")
            } else {
                (body, "")
            };
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nETag: {etag}\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            response.extend_from_slice(&body);
            // The client may start its next request as soon as it has read this; count
            // this one as finished first, so the in-flight peak is what the client did.
            finishing();
            stream.write_all(&response)
        }
        Route::Status(code, extra) => {
            let mut head = format!("HTTP/1.1 {code} Status\r\nContent-Length: 0\r\nConnection: close\r\n");
            for (k, v) in extra {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes())
        }
        Route::Redirect(code, to) => stream.write_all(
            format!("HTTP/1.1 {code} Moved\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        ),
        Route::SlowDrip => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n<rss>")?;
            for _ in 0..120 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                stream.write_all(b" ")?;
                thread::sleep(Duration::from_millis(500));
            }
            Ok(())
        }
        Route::Endless => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nConnection: close\r\n\r\n<rss><channel>")?;
            let chunk = vec![b'x'; 64 * 1024];
            // ~6.5 GB unless the client hangs up first (it must).
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                stream.write_all(&chunk)?;
            }
            Ok(())
        }
        Route::GzipBomb => {
            let body = gzip_bomb();
            stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )?;
            stream.write_all(&body)
        }
    }
}

fn gzip_bomb() -> Vec<u8> {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>")
            .unwrap();
        let block = vec![b' '; 1 << 20];
        for _ in 0..200 {
            enc.write_all(&block).unwrap();
        }
        enc.finish().unwrap()
    })
    .clone()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Reads a whole HTTP response body from a reader (for tests that fetch by hand).
pub fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}
