//! Polite, defensive HTTP: one GET of a feed URL with everything a server may ask of
//! us and nothing a hostile one can force on us.
//!
//! Conditional GET (ETag, Last-Modified), gzip/brotli/deflate, connect and total
//! timeouts, a body cap enforced while streaming (so a huge body or a gzip bomb is cut
//! off early), redirects followed by hand (few, http(s) only, never from a public address
//! to a private one, permanent ones reported), a global and a per-host concurrency cap,
//! Retry-After and Cache-Control max-age read. What the body means is `crate::feed`'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use url::Url;

use crate::config::FetchLimits;
use crate::events::PollFailureKind;

pub const USER_AGENT: &str = concat!(
    "vigia/",
    env!("CARGO_PKG_VERSION"),
    " (news monitor; +https://github.com/vigia-news/vigia)"
);

/// Validators from the last successful poll, sent back for a conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What a poll brought back when the server answered usefully.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    /// Empty for a 304.
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub validators: Validators,
    /// The URL the body came from, after redirects.
    pub final_url: Url,
    /// Set when every redirect on the way was permanent (301/308): the feed has moved.
    pub moved_to: Option<Url>,
    /// Cache-Control max-age, a floor on how often to poll.
    pub max_age: Option<Duration>,
    pub elapsed: Duration,
    /// The fetcher's global slot, held for as long as the body is: a fetched body
    /// waiting to be parsed still counts against `max_concurrent`, so fetching never
    /// runs ahead of parsing and at most `max_concurrent` bodies are in memory.
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Fetched {
    pub fn not_modified(&self) -> bool {
        self.status == 304
    }
}

/// A poll that failed, with what the scheduler needs to decide the next one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub kind: PollFailureKind,
    pub message: String,
    pub status: Option<u16>,
    /// The server's Retry-After, if it gave one.
    pub retry_after: Option<Duration>,
    pub elapsed: Duration,
}

impl FetchError {
    fn new(kind: PollFailureKind, message: impl Into<String>) -> FetchError {
        FetchError {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
            elapsed: Duration::ZERO,
        }
    }
}

/// A shared HTTP client with the concurrency caps; clone it freely.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    limits: FetchLimits,
    global: Arc<Semaphore>,
    per_host: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl Fetcher {
    pub fn new(limits: &FetchLimits) -> Result<Fetcher, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(limits.connect_timeout_s))
            .timeout(Duration::from_secs(limits.timeout_s))
            .redirect(reqwest::redirect::Policy::none())
            .gzip(true)
            .brotli(true)
            .deflate(true)
            .pool_max_idle_per_host(limits.max_per_host)
            .build()
            .map_err(|e| {
                FetchError::new(
                    PollFailureKind::Other,
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        Ok(Fetcher {
            client,
            limits: limits.clone(),
            global: Arc::new(Semaphore::new(limits.max_concurrent)),
            per_host: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn host_gate(&self, url: &Url) -> Arc<Semaphore> {
        let key = format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut map = self.per_host.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.max_per_host)))
            .clone()
    }

    /// One poll: GET with validators, following redirects by hand.
    pub async fn fetch(&self, url: &Url, validators: &Validators) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let result = self.fetch_inner(url, validators, started).await;
        result.map_err(|mut e| {
            e.elapsed = started.elapsed();
            e
        })
    }

    async fn fetch_inner(
        &self,
        url: &Url,
        validators: &Validators,
        started: Instant,
    ) -> Result<Fetched, FetchError> {
        let mut current = url.clone();
        let mut all_permanent = true;
        let origin_is_private = is_private_host(url).await;
        for _hop in 0..=self.limits.max_redirects {
            check_scheme(&current)?;
            let gate = self.host_gate(&current);
            let _host = gate.acquire().await.map_err(|_| {
                FetchError::new(PollFailureKind::Other, "the fetcher is shutting down")
            })?;
            // Host first, then the global cap: a queue for one busy host never holds
            // global permits that other hosts could use.
            let global = self.global.clone().acquire_owned().await.map_err(|_| {
                FetchError::new(PollFailureKind::Other, "the fetcher is shutting down")
            })?;
            let mut request = self.client.get(current.clone());
            // Validators belong to the URL they came from: only send them to it.
            if current == *url {
                if let Some(etag) = &validators.etag {
                    request = request.header(header::IF_NONE_MATCH, etag);
                }
                if let Some(lm) = &validators.last_modified {
                    request = request.header(header::IF_MODIFIED_SINCE, lm);
                }
            }
            let response = request.send().await.map_err(classify_reqwest)?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                current = redirect_target(&current, &response, origin_is_private).await?;
                all_permanent &= matches!(
                    status,
                    StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT
                );
                continue;
            }
            let headers = response.headers().clone();
            refuse_status(status, &headers)?;
            let moved_to = (all_permanent && current != *url).then(|| current.clone());
            let validators = Validators {
                etag: header_text(&headers, header::ETAG),
                last_modified: header_text(&headers, header::LAST_MODIFIED),
            };
            let content_type = header_text(&headers, header::CONTENT_TYPE);
            let max_age = cache_max_age(&headers);
            let body = if status == StatusCode::NOT_MODIFIED {
                Vec::new()
            } else {
                self.read_capped(response).await?
            };
            return Ok(Fetched {
                status: status.as_u16(),
                body,
                content_type,
                validators,
                final_url: current,
                moved_to,
                max_age,
                elapsed: started.elapsed(),
                slot: (status != StatusCode::NOT_MODIFIED).then_some(global),
            });
        }
        Err(FetchError::new(
            PollFailureKind::TooManyRedirects,
            format!("more than {} redirects", self.limits.max_redirects),
        ))
    }

    /// Reads the (decompressed) body, stopping as soon as it passes the cap.
    async fn read_capped(&self, response: reqwest::Response) -> Result<Vec<u8>, FetchError> {
        let cap = self.limits.max_body_kb.saturating_mul(1024);
        if let Some(len) = response.content_length() {
            // Content-Length counts encoded bytes; only a plain body can be refused up front.
            if len > cap && !response.headers().contains_key(header::CONTENT_ENCODING) {
                return Err(FetchError::new(
                    PollFailureKind::TooLarge,
                    format!(
                        "body of {len} bytes is over the {} KB cap",
                        self.limits.max_body_kb
                    ),
                ));
            }
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(classify_reqwest)?;
            if body.len() as u64 + chunk.len() as u64 > cap {
                return Err(FetchError::new(
                    PollFailureKind::TooLarge,
                    format!(
                        "body passed the {} KB cap (after decompression); cut off",
                        self.limits.max_body_kb
                    ),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Where a redirect leads: its Location joined to the URL that answered, refused when
/// it is missing or invalid, leaves http(s), or leads from a public address to a
/// private or loopback one (a feed must not be a way into the operator's network).
async fn redirect_target(
    current: &Url,
    response: &reqwest::Response,
    origin_is_private: bool,
) -> Result<Url, FetchError> {
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            let mut e = FetchError::new(
                PollFailureKind::HttpStatus,
                format!("HTTP {status} redirect without a Location header"),
            );
            e.status = Some(status.as_u16());
            e
        })?;
    let next = current.join(location).map_err(|e| {
        FetchError::new(
            PollFailureKind::ForbiddenRedirect,
            format!("redirect to an invalid URL {location:?}: {e}"),
        )
    })?;
    check_scheme(&next)?;
    if !origin_is_private && is_private_host(&next).await {
        return Err(FetchError::new(
            PollFailureKind::ForbiddenRedirect,
            format!("redirect from a public address to a private or loopback one ({next}) refused"),
        ));
    }
    Ok(next)
}

/// A final answer that is not a feed: 410 Gone (polling stops) or any other status
/// but success and 304, with the server's Retry-After.
fn refuse_status(status: StatusCode, headers: &header::HeaderMap) -> Result<(), FetchError> {
    if status == StatusCode::GONE {
        let mut e = FetchError::new(
            PollFailureKind::Gone,
            "HTTP 410 Gone: the feed was removed; polling stops",
        );
        e.status = Some(410);
        return Err(e);
    }
    if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
        let mut e = FetchError::new(
            PollFailureKind::HttpStatus,
            format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        );
        e.status = Some(status.as_u16());
        e.retry_after = retry_after(headers);
        return Err(e);
    }
    Ok(())
}

fn check_scheme(url: &Url) -> Result<(), FetchError> {
    if matches!(url.scheme(), "http" | "https") {
        Ok(())
    } else {
        Err(FetchError::new(
            PollFailureKind::ForbiddenRedirect,
            format!("only http and https are polled, not {}:", url.scheme()),
        ))
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Retry-After as seconds or an HTTP date; capped at a day so a typo cannot stop a feed.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = header_text(headers, header::RETRY_AFTER)?;
    let secs = match value.parse::<u64>() {
        Ok(s) => s,
        Err(_) => {
            let when = chrono::DateTime::parse_from_rfc2822(&value).ok()?;
            let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
            delta.num_seconds().max(0) as u64
        }
    };
    Some(Duration::from_secs(secs.min(24 * 3600)))
}

fn cache_max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = header_text(headers, header::CACHE_CONTROL)?;
    value.split(',').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case("max-age"))
            .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(|s| Duration::from_secs(s.min(24 * 3600)))
    })
}

fn classify_reqwest(err: reqwest::Error) -> FetchError {
    let chain = error_chain(&err);
    let lower = chain.to_lowercase();
    let kind = if err.is_timeout() {
        PollFailureKind::Timeout
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup")
        || lower.contains("name or service not known")
    {
        PollFailureKind::Dns
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        PollFailureKind::Tls
    } else if err.is_connect() {
        PollFailureKind::Connect
    } else if err.is_decode()
        || lower.contains("decompress")
        || lower.contains("invalid gzip")
        || lower.contains("corrupt deflate")
    {
        PollFailureKind::Encoding
    } else if err.is_body() || err.is_request() {
        PollFailureKind::Io
    } else {
        PollFailureKind::Other
    };
    FetchError::new(kind, chain)
}

/// The error and its causes on one line, without the URL's query (it may hold a key).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Whether a URL's host is loopback, private, link-local or otherwise not public.
/// Hostnames are resolved; one private address is enough to count.
async fn is_private_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_private_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_private_ip(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            if name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost") {
                return true;
            }
            let port = url.port_or_known_default().unwrap_or(80);
            match tokio::net::lookup_host((name, port)).await {
                Ok(addrs) => addrs.into_iter().any(|a| is_private_ip(a.ip())),
                Err(_) => false,
            }
        }
        None => true,
    }
}

fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xC0) == 64) // 100.64/10, carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private_ip(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        assert!(is_private_ip("127.0.0.1".parse().unwrap()));
        assert!(is_private_ip("10.1.2.3".parse().unwrap()));
        assert!(is_private_ip("192.168.0.1".parse().unwrap()));
        assert!(is_private_ip("169.254.169.254".parse().unwrap()));
        assert!(is_private_ip("::1".parse().unwrap()));
        assert!(is_private_ip("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_private_ip("93.184.216.34".parse().unwrap()));
    }

    #[test]
    fn retry_after_reads_seconds_and_caps_them() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(header::RETRY_AFTER, "9999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            "public, max-age=600".parse().unwrap(),
        );
        assert_eq!(cache_max_age(&h), Some(Duration::from_secs(600)));
    }
}
