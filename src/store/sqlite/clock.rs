//! The time the log writes on each event (`recorded_at`).
//!
//! It is the wall clock, except for a log that replays the past: `vigia demo` feeds
//! months of example articles through the pipeline in seconds, and tracking, digests
//! and the pages read every time they show from the log (when an observation was
//! seen, when a stance changed). With the wall clock, all of that would happen in the
//! same minute; with a clock moved along the articles' own times, the log reads as if
//! the news had come in when it was published. Whoever holds the clock moves it, only
//! forward, and can hand it back to the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

/// Marks a clock that follows the wall clock.
const WALL: i64 = i64::MIN;

/// A clonable clock: every clone tells the same time.
#[derive(Debug, Clone)]
pub struct Clock {
    /// Milliseconds since the epoch, or `WALL`.
    millis: Arc<AtomicI64>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::wall()
    }
}

impl Clock {
    /// The wall clock.
    pub fn wall() -> Clock {
        Clock {
            millis: Arc::new(AtomicI64::new(WALL)),
        }
    }

    /// A clock that stands at `at` until it is moved.
    pub fn manual(at: DateTime<Utc>) -> Clock {
        let clock = Clock::wall();
        clock.set(at);
        clock
    }

    /// Moves the clock to `at`; a time before the one it shows is ignored, so the log's
    /// times never go backwards.
    pub fn set(&self, at: DateTime<Utc>) {
        self.millis
            .fetch_max(at.timestamp_millis().max(WALL + 1), Ordering::SeqCst);
    }

    /// From now on, the wall clock (for a replay that has caught up with the present).
    pub fn follow_wall(&self) {
        self.millis.store(WALL, Ordering::SeqCst);
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.millis.load(Ordering::SeqCst) {
            WALL => Utc::now(),
            ms => DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now),
        }
    }

    /// `now` as the log writes it: RFC 3339 in UTC with milliseconds, so text order is
    /// time order.
    pub fn now_rfc3339(&self) -> String {
        self.now().to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_forward_and_can_return_to_the_wall() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let clock = Clock::manual(t("2025-02-03T06:00:00Z"));
        let other = clock.clone();
        other.set(t("2025-03-01T00:00:00Z"));
        assert_eq!(clock.now_rfc3339(), "2025-03-01T00:00:00.000Z");
        clock.set(t("2025-01-01T00:00:00Z"));
        assert_eq!(other.now(), t("2025-03-01T00:00:00Z"), "never backwards");
        clock.follow_wall();
        assert!(other.now() > t("2026-01-01T00:00:00Z"));
    }
}
