//! Feed health: per feed, the last poll, its status, the error streak, the validators
//! for the next conditional GET, and how many articles it has given. Read by
//! `vigia feeds` and by the scheduler (backoff, Retry-After, 410 Gone).

use rusqlite::{Connection, OptionalExtension};

use super::sql::Tx;
use super::Projection;
use crate::events::{Event, PollFailureKind};
use crate::store::{StoreError, StoredEvent};

pub struct FeedHealth;

impl Projection for FeedHealth {
    fn name(&self) -> &'static str {
        "feed_health"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["feed_health"]
    }

    fn handles(&self, kind: &str) -> bool {
        matches!(kind, "FeedPolled" | "FeedPollFailed" | "ArticleDiscovered")
    }

    fn apply(
        &self,
        tx: &mut dyn Tx,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), StoreError> {
        match event {
            Event::FeedPolled(p) => {
                // A 304 carries no new validators: keep the ones from the last 200.
                // A move is remembered with the configured URL it started from, so a chain
                // of moves still leads back to the config's URL.
                tx.execute(
                    "INSERT INTO feed_health (feed_id, url, moved_from, moved_to, last_poll_at, last_success_at,
                         last_status, error_streak, etag, last_modified, min_interval_s, polls)
                     VALUES (?1, ?2, CASE WHEN CAST(?8 AS TEXT) IS NULL THEN NULL ELSE ?2 END, ?8, ?3, ?3, ?4, 0, ?5, ?6, ?7, 1)
                     ON CONFLICT (feed_id) DO UPDATE SET
                         moved_from = CASE WHEN CAST(?8 AS TEXT) IS NULL THEN feed_health.moved_from
                                           WHEN excluded.url = feed_health.moved_to THEN feed_health.moved_from
                                           ELSE excluded.url END,
                         moved_to = COALESCE(?8, feed_health.moved_to),
                         url = excluded.url, last_poll_at = excluded.last_poll_at,
                         last_success_at = excluded.last_success_at, last_status = excluded.last_status,
                         last_error_kind = NULL, last_error = NULL, error_streak = 0, retry_not_before = NULL,
                         etag = COALESCE(excluded.etag, feed_health.etag),
                         last_modified = COALESCE(excluded.last_modified, feed_health.last_modified),
                         min_interval_s = excluded.min_interval_s, gone = FALSE, polls = feed_health.polls + 1",
                    &[
                        &p.feed,
                        &p.url,
                        &stored.recorded_at,
                        &p.status,
                        &p.etag,
                        &p.last_modified,
                        &p.min_interval_s,
                        &p.moved_to,
                    ],
                )?;
            }
            Event::FeedPollFailed(f) => {
                tx.execute(
                    "INSERT INTO feed_health (feed_id, url, last_poll_at, last_status, last_error_kind, last_error,
                         error_streak, retry_not_before, gone, failures, polls)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, 1)
                     ON CONFLICT (feed_id) DO UPDATE SET
                         url = excluded.url, last_poll_at = excluded.last_poll_at, last_status = excluded.last_status,
                         last_error_kind = excluded.last_error_kind, last_error = excluded.last_error,
                         error_streak = excluded.error_streak, retry_not_before = excluded.retry_not_before,
                         gone = excluded.gone, failures = feed_health.failures + 1, polls = feed_health.polls + 1",
                    &[
                        &f.feed,
                        &f.url,
                        &stored.recorded_at,
                        &f.status,
                        &f.kind.as_str(),
                        &f.message,
                        &f.streak,
                        &f.retry_not_before,
                        &(f.kind == PollFailureKind::Gone),
                    ],
                )?;
            }
            Event::ArticleDiscovered(a) => {
                tx.execute(
                    "UPDATE feed_health SET articles = articles + 1 WHERE feed_id = ?1",
                    &[&a.feed],
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// One feed's health as `vigia feeds` and the scheduler read it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FeedHealthRow {
    pub feed_id: String,
    pub url: String,
    pub moved_from: Option<String>,
    pub moved_to: Option<String>,
    pub last_poll_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error_kind: Option<String>,
    pub last_error: Option<String>,
    pub error_streak: u32,
    pub retry_not_before: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub min_interval_s: Option<u64>,
    pub gone: bool,
    pub polls: u64,
    pub failures: u64,
    pub articles: u64,
}

const SELECT: &str = "SELECT feed_id, url, moved_from, moved_to, last_poll_at, last_success_at, last_status, last_error_kind, last_error,
    error_streak, retry_not_before, etag, last_modified, min_interval_s, gone, polls, failures, articles
    FROM feed_health";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FeedHealthRow> {
    Ok(FeedHealthRow {
        feed_id: r.get(0)?,
        url: r.get(1)?,
        moved_from: r.get(2)?,
        moved_to: r.get(3)?,
        last_poll_at: r.get(4)?,
        last_success_at: r.get(5)?,
        last_status: r.get(6)?,
        last_error_kind: r.get(7)?,
        last_error: r.get(8)?,
        error_streak: r.get(9)?,
        retry_not_before: r.get(10)?,
        etag: r.get(11)?,
        last_modified: r.get(12)?,
        min_interval_s: r.get(13)?,
        gone: r.get(14)?,
        polls: r.get(15)?,
        failures: r.get(16)?,
        articles: r.get(17)?,
    })
}

impl FeedHealth {
    pub fn get(conn: &Connection, feed_id: &str) -> rusqlite::Result<Option<FeedHealthRow>> {
        conn.query_row(&format!("{SELECT} WHERE feed_id = ?1"), [feed_id], row)
            .optional()
    }

    pub fn list(conn: &Connection) -> rusqlite::Result<Vec<FeedHealthRow>> {
        let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY feed_id"))?;
        let rows = stmt.query_map([], row)?;
        rows.collect()
    }
}
