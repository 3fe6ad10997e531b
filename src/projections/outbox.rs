//! The outbox: every queued message and where it stands (queued, sent, failed for
//! good), with its attempts and when it may be tried again. The message itself stays
//! in its DigestQueued event, so a retry sends exactly what was queued.

use rusqlite::{Connection, OptionalExtension};

use super::sql::Tx;
use super::Projection;
use crate::events::{DigestReason, Event};
use crate::store::{StoreError, StoredEvent};

pub struct Outbox;

/// Where a queued message stands (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// Still to send (perhaps after a failed attempt).
    Queued,
    Sent,
    /// Refused for good: not tried again.
    Failed,
}

impl OutboxStatus {
    /// Its name in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }
}

impl Projection for Outbox {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["outbox"]
    }

    fn handles(&self, kind: &str) -> bool {
        matches!(kind, "DigestQueued" | "DigestSent" | "DigestFailed")
    }

    fn apply(
        &self,
        tx: &mut dyn Tx,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), StoreError> {
        match event {
            Event::DigestQueued(q) => {
                tx.execute(
                    "INSERT INTO outbox (digest_id, recipient, reason, message_id, queued_seq, queued_at, status, changes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7) ON CONFLICT (digest_id) DO NOTHING",
                    &[
                        &q.digest_id,
                        &q.to.to_lowercase(),
                        &q.reason,
                        &q.message_id,
                        &stored.seq,
                        &stored.recorded_at,
                        &serde_json::to_string(&q.changes).unwrap_or_else(|_| "[]".into()),
                    ],
                )?;
            }
            Event::DigestSent(s) => {
                tx.execute(
                    "UPDATE outbox SET status = 'sent', attempts = CASE WHEN attempts > ?2 THEN attempts ELSE ?2 END,
                         sent_at = ?3, last_error = NULL, retry_not_before = NULL WHERE digest_id = ?1",
                    &[&s.digest_id, &s.attempt, &stored.recorded_at],
                )?;
            }
            Event::DigestFailed(f) => {
                tx.execute(
                    "UPDATE outbox SET status = CASE WHEN status = 'sent' THEN 'sent' WHEN ?3 THEN 'failed' ELSE 'queued' END,
                         attempts = CASE WHEN attempts > ?2 THEN attempts ELSE ?2 END,
                         last_error = ?4, retry_not_before = ?5 WHERE digest_id = ?1",
                    &[&f.digest_id, &f.attempt, &f.permanent, &f.error, &f.retry_not_before],
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutboxRow {
    pub digest_id: String,
    pub recipient: String,
    pub reason: DigestReason,
    pub message_id: String,
    pub queued_seq: u64,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub retry_not_before: Option<String>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        digest_id: r.get(0)?,
        recipient: r.get(1)?,
        reason: r.get(2)?,
        message_id: r.get(3)?,
        queued_seq: r.get(4)?,
        status: r.get(5)?,
        attempts: r.get(6)?,
        last_error: r.get(7)?,
        retry_not_before: r.get(8)?,
    })
}

const SELECT: &str =
    "SELECT digest_id, recipient, reason, message_id, queued_seq, status, attempts, last_error, retry_not_before FROM outbox";

impl Outbox {
    /// Messages still to send whose backoff has passed.
    pub fn due(conn: &Connection, now: &str) -> rusqlite::Result<Vec<OutboxRow>> {
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE status = 'queued' AND (retry_not_before IS NULL OR retry_not_before <= ?1) ORDER BY queued_seq"
        ))?;
        let rows = stmt.query_map([now], row)?;
        rows.collect()
    }

    pub fn all(conn: &Connection) -> rusqlite::Result<Vec<OutboxRow>> {
        let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY queued_seq"))?;
        let rows = stmt.query_map([], row)?;
        rows.collect()
    }

    /// Messages not yet sent nor given up.
    pub fn depth(conn: &Connection) -> rusqlite::Result<u64> {
        conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE status = 'queued'",
            [],
            |r| r.get(0),
        )
    }

    /// The newest StanceChanged seq already reported to this recipient.
    pub fn last_change_reported(conn: &Connection, recipient: &str) -> rusqlite::Result<u64> {
        let latest: Option<String> = conn
            .query_row(
                "SELECT changes FROM outbox WHERE recipient = ?1 AND reason != 'confirmation'
                 ORDER BY queued_seq DESC LIMIT 1",
                [recipient.to_lowercase()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(latest
            .and_then(|c| serde_json::from_str::<Vec<u64>>(&c).ok())
            .and_then(|v| v.into_iter().max())
            .unwrap_or(0))
    }

    /// Confirmation mails queued after `since` (RFC 3339), to one recipient or to all.
    pub fn confirmations_since(
        conn: &Connection,
        recipient: Option<&str>,
        since: &str,
    ) -> rusqlite::Result<u64> {
        conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE reason = 'confirmation' AND queued_at > ?2
                 AND (?1 IS NULL OR recipient = ?1)",
            rusqlite::params![recipient.map(str::to_lowercase), since],
            |r| r.get(0),
        )
    }

    /// When this recipient's last digest was queued.
    pub fn last_digest_at(conn: &Connection, recipient: &str) -> rusqlite::Result<Option<String>> {
        conn.query_row(
            "SELECT MAX(queued_at) FROM outbox WHERE recipient = ?1 AND reason != 'confirmation'",
            [recipient.to_lowercase()],
            |r| r.get(0),
        )
    }
}
