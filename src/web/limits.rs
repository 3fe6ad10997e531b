//! Per-client request rates for the subscribe form, and the form tokens already used.
//!
//! A fixed budget per client bucket (an IPv4 address or an IPv6 /64, see
//! `client::bucket`) in a sliding window, kept in memory: a restart forgets it (the
//! per-address and hourly limits on confirmation mails live in the event log and do
//! not forget). The table is bounded; when it is full the least recently seen clients
//! are forgotten, never the newcomer refused, so no one party can fill it and lock
//! everyone else out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Subscribe requests one client may make in `SUBSCRIBE_WINDOW`.
pub const SUBSCRIBE_BURST: usize = 5;
pub const SUBSCRIBE_WINDOW: Duration = Duration::from_secs(600);
/// Most clients remembered at once: memory stays bounded under a spray of addresses.
const MAX_CLIENTS: usize = 10_000;
/// Most used form tokens remembered (each is remembered until it expires).
const MAX_USED_FORMS: usize = 100_000;

pub struct RateLimiter {
    burst: usize,
    window: Duration,
    capacity: usize,
    seen: HashMap<IpAddr, VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(burst: usize, window: Duration) -> RateLimiter {
        RateLimiter::with_capacity(burst, window, MAX_CLIENTS)
    }

    fn with_capacity(burst: usize, window: Duration, capacity: usize) -> RateLimiter {
        RateLimiter {
            burst,
            window,
            capacity: capacity.max(8),
            seen: HashMap::new(),
        }
    }

    /// Whether this client bucket may make one more request now (and counts it).
    pub fn allow(&mut self, client: IpAddr, now: Instant) -> bool {
        if self.seen.len() >= self.capacity && !self.seen.contains_key(&client) {
            self.make_room(now);
        }
        let times = self.seen.entry(client).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.burst {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Forgets clients whose window has passed, then, if the table is still full, the
    /// eighth of it seen least recently (so eviction is rare, not once per newcomer).
    fn make_room(&mut self, now: Instant) {
        let window = self.window;
        self.seen.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.duration_since(*t) < window)
        });
        if self.seen.len() < self.capacity {
            return;
        }
        let mut last_seen: Vec<(Instant, IpAddr)> = self
            .seen
            .iter()
            .filter_map(|(ip, times)| times.back().map(|t| (*t, *ip)))
            .collect();
        let evict = (self.capacity / 8).max(1).min(last_seen.len());
        last_seen.select_nth_unstable(evict - 1);
        for (_, ip) in &last_seen[..evict] {
            self.seen.remove(ip);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// The ids of form tokens already posted, until they expire: a form token works once.
#[derive(Default)]
pub struct UsedForms {
    /// Token id → its expiry (Unix seconds).
    used: HashMap<String, i64>,
}

impl UsedForms {
    /// Marks a token used; false when it was used before (or the table is full of
    /// live tokens, which fails closed: the visitor reloads the form).
    pub fn first_use(&mut self, id: &str, expires: i64, now: i64) -> bool {
        if self.used.contains_key(id) {
            return false;
        }
        if self.used.len() >= MAX_USED_FORMS {
            self.used.retain(|_, exp| *exp > now);
            if self.used.len() >= MAX_USED_FORMS {
                return false;
            }
        }
        self.used.insert(id.to_string(), expires);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_window() {
        let mut limiter = RateLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow(a, t0)));
        assert!(!limiter.allow(a, t0 + Duration::from_secs(1)));
        assert!(
            limiter.allow(b, t0 + Duration::from_secs(1)),
            "clients are counted apart"
        );
        assert!(limiter.allow(a, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn a_full_table_forgets_its_oldest_clients_rather_than_refusing_newcomers() {
        let mut limiter = RateLimiter::with_capacity(1, Duration::from_secs(600), 64);
        let t0 = Instant::now();
        let early: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(limiter.allow(early, t0));
        // A spray of addresses fills the table within the window.
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limiter.allow(ip, t0 + Duration::from_millis(u64::from(i) + 1));
        }
        assert!(limiter.len() <= 64, "bounded: {}", limiter.len());
        let newcomer: IpAddr = "203.0.113.5".parse().unwrap();
        assert!(
            limiter.allow(newcomer, t0 + Duration::from_secs(2)),
            "a newcomer is served"
        );
    }

    #[test]
    fn a_form_token_works_once() {
        let mut used = UsedForms::default();
        assert!(used.first_use("abc", 2000, 1000));
        assert!(!used.first_use("abc", 2000, 1001));
        assert!(used.first_use("def", 2000, 1001));
    }
}
