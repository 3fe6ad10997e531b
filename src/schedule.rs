//! Where and when each feed is polled: the URL (the configured one, or where a
//! permanent redirect moved it), and the time: the first slot of its cron schedule after its last poll
//! (one slot, however many were missed while vigia was down), spread within the minute
//! by feed id, and never sooner than the server's floor (max-age, ttl) or the backoff
//! after failures; a feed that answered 410 Gone is not polled until its URL changes.
//! The cron expressions themselves are `config::CronSchedule`'s.

use chrono::{DateTime, Utc};
use url::Url;

use crate::config::{Config, FeedConfig};
use crate::projections::FeedHealthRow;

/// The URL to poll: the configured one, or where a permanent redirect moved it.
pub fn target_url(feed: &FeedConfig, health: Option<&FeedHealthRow>) -> Url {
    health
        .filter(|h| h.moved_from.as_deref() == Some(feed.url.as_str()))
        .and_then(|h| h.moved_to.as_deref())
        .and_then(|u| Url::parse(u).ok())
        .unwrap_or_else(|| feed.url.clone())
}

/// Whether the feed answered 410 Gone at the URL the config still names.
pub fn is_gone(feed: &FeedConfig, health: Option<&FeedHealthRow>) -> bool {
    health.is_some_and(|h| h.gone && h.url == target_url(feed, Some(h)).as_str())
}

/// Seconds into the minute at which a feed on a minute-grained schedule fires, fixed
/// per feed id, so a hundred feeds on "*/15 * * * *" do not all fire in the same second.
fn spread(feed: &FeedConfig, config: &Config) -> chrono::Duration {
    let schedule = config.schedule_of(feed);
    let minute_grained =
        schedule.source().split_whitespace().count() == 5 || schedule.source().starts_with('@');
    if !minute_grained {
        return chrono::Duration::zero();
    }
    let hash = feed.id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    chrono::Duration::seconds((hash % 60) as i64)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// When the feed should next be polled: the first schedule slot after the last poll
/// (one slot, however many were missed while vigia was down), no sooner than the
/// server's floor or the backoff. `None` for a feed that is gone.
pub fn next_due(
    config: &Config,
    feed: &FeedConfig,
    health: Option<&FeedHealthRow>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if is_gone(feed, health) {
        return None;
    }
    let Some(last_poll) = health
        .and_then(|h| h.last_poll_at.as_deref())
        .and_then(parse_time)
    else {
        return Some(now);
    };
    let offset = spread(feed, config);
    let mut due = config
        .schedule_of(feed)
        .next_after(last_poll - offset)
        .map(|t| t + offset)
        .unwrap_or(now);
    if let Some(h) = health {
        if let (Some(floor), Some(success)) = (
            h.min_interval_s,
            h.last_success_at.as_deref().and_then(parse_time),
        ) {
            due = due.max(success + chrono::Duration::seconds(floor as i64));
        }
        if let Some(retry) = h.retry_not_before.as_deref().and_then(parse_time) {
            due = due.max(retry);
        }
    }
    Some(due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config() -> Config {
        Config::parse(
            Path::new("t.toml"),
            "[daemon]\ndatabase = \"x.db\"\nschedule = \"*/15 * * * *\"\n\n[[feed]]\nid = \"a\"\nurl = \"http://127.0.0.1/a.xml\"\n",
        )
        .unwrap()
    }

    fn health(last_poll: &str) -> FeedHealthRow {
        FeedHealthRow {
            feed_id: "a".into(),
            url: "http://127.0.0.1/a.xml".into(),
            moved_from: None,
            moved_to: None,
            last_poll_at: Some(last_poll.into()),
            last_success_at: Some(last_poll.into()),
            last_status: Some(200),
            last_error_kind: None,
            last_error: None,
            error_streak: 0,
            retry_not_before: None,
            etag: None,
            last_modified: None,
            min_interval_s: None,
            gone: false,
            polls: 1,
            failures: 0,
            articles: 0,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn a_never_polled_feed_is_due_now() {
        let c = config();
        let now = t("2026-11-27T10:00:00Z");
        assert_eq!(next_due(&c, &c.feeds[0], None, now), Some(now));
    }

    #[test]
    fn after_downtime_a_feed_is_due_once_at_the_first_missed_slot() {
        let c = config();
        let h = health("2026-11-27T08:01:00Z");
        let now = t("2026-11-27T12:00:00Z");
        let due = next_due(&c, &c.feeds[0], Some(&h), now).unwrap();
        // One slot, in the past: polled now, and the next is computed from that poll.
        assert!(due < now && due > t("2026-11-27T08:01:00Z"), "{due}");
        assert!(due <= t("2026-11-27T08:16:00Z"), "{due}");
    }

    #[test]
    fn polls_are_spread_within_the_minute_by_feed_id() {
        let c = config();
        let h = health("2026-11-27T10:00:30Z");
        let due = next_due(&c, &c.feeds[0], Some(&h), t("2026-11-27T10:01:00Z")).unwrap();
        let offset = spread(&c.feeds[0], &c).num_seconds();
        assert!((0..60).contains(&offset));
        assert_eq!(due.timestamp() % 60, offset);
    }

    #[test]
    fn server_floors_and_backoff_push_the_next_poll_out() {
        let c = config();
        let mut h = health("2026-11-27T10:00:00Z");
        h.min_interval_s = Some(3600);
        let due = next_due(&c, &c.feeds[0], Some(&h), t("2026-11-27T10:01:00Z")).unwrap();
        assert!(due >= t("2026-11-27T11:00:00Z"), "{due}");
        h.min_interval_s = None;
        h.retry_not_before = Some("2026-11-27T13:00:00Z".into());
        let due = next_due(&c, &c.feeds[0], Some(&h), t("2026-11-27T10:01:00Z")).unwrap();
        assert_eq!(due, t("2026-11-27T13:00:00Z"));
    }

    #[test]
    fn a_gone_feed_is_not_due_until_its_url_changes() {
        let mut c = config();
        let mut h = health("2026-11-27T10:00:00Z");
        h.gone = true;
        assert_eq!(
            next_due(&c, &c.feeds[0], Some(&h), t("2026-11-27T11:00:00Z")),
            None
        );
        c.feeds[0].url = url::Url::parse("http://127.0.0.1/b.xml").unwrap();
        assert!(next_due(&c, &c.feeds[0], Some(&h), t("2026-11-27T11:00:00Z")).is_some());
    }
}
