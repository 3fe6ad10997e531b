//! Per-client request rates for the subscribe form: a fixed budget per client address
//! in a sliding window, kept in memory (a restart forgets it; the per-address and
//! hourly limits on confirmation mails live in the event log and do not forget).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Subscribe requests one client may make in `SUBSCRIBE_WINDOW`.
pub const SUBSCRIBE_BURST: usize = 5;
pub const SUBSCRIBE_WINDOW: Duration = Duration::from_secs(600);
/// Most clients remembered at once: memory stays bounded under a spray of addresses.
const MAX_CLIENTS: usize = 10_000;

pub struct RateLimiter {
    burst: usize,
    window: Duration,
    seen: HashMap<IpAddr, VecDeque<Instant>>,
}

impl RateLimiter {
    pub fn new(burst: usize, window: Duration) -> RateLimiter {
        RateLimiter {
            burst,
            window,
            seen: HashMap::new(),
        }
    }

    /// Whether this client may make one more request now (and counts it if so).
    pub fn allow(&mut self, client: IpAddr, now: Instant) -> bool {
        if self.seen.len() >= MAX_CLIENTS && !self.seen.contains_key(&client) {
            let window = self.window;
            self.seen.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
            if self.seen.len() >= MAX_CLIENTS {
                return false;
            }
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
}
