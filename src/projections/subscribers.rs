//! Subscribers: who gets digests for which topics, and in what mode. Only confirmed
//! subscribers receive digests; the list is the projection of Subscriber* events.

use rusqlite::{Connection, OptionalExtension};

use super::sql::Tx;
use super::Projection;
use crate::events::{Event, Subscription, SubscriptionChannel};
use crate::store::{StoreError, StoredEvent};

pub struct Subscribers;

/// Where a subscriber stands (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberStatus {
    /// Asked on the web; waits for the confirmation link.
    Pending,
    /// Receives digests.
    Confirmed,
    Unsubscribed,
}

impl SubscriberStatus {
    /// Its name in the `status` column and in `vigia subscribers list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Unsubscribed => "unsubscribed",
        }
    }
}

impl Projection for Subscribers {
    fn name(&self) -> &'static str {
        "subscribers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["subscribers", "used_tokens"]
    }

    fn handles(&self, kind: &str) -> bool {
        matches!(
            kind,
            "SubscriberRequested" | "SubscriberConfirmed" | "SubscriberUnsubscribed"
        )
    }

    fn apply(
        &self,
        tx: &mut dyn Tx,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), StoreError> {
        let use_token = |tx: &mut dyn Tx, token: &Option<String>, purpose: &str, email: &str| {
            match token {
                Some(id) => tx
                    .execute(
                        "INSERT INTO used_tokens (token_id, purpose, email, used_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (token_id) DO NOTHING",
                        &[id, &purpose, &email.to_lowercase(), &stored.recorded_at],
                    )
                    .map(|_| ()),
                None => Ok(()),
            }
        };
        match event {
            Event::SubscriberRequested(r) => {
                // A request waits for its link: it never changes what a confirmed
                // subscriber receives, only what confirming will set.
                tx.execute(
                    "INSERT INTO subscribers (email, address, name, topics, digest, status, via, changed_at, requested_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?7)
                     ON CONFLICT (email) DO UPDATE SET
                         requested_at = excluded.requested_at,
                         pending = CASE WHEN subscribers.status = 'confirmed' THEN CAST(?8 AS TEXT) ELSE NULL END,
                         address = CASE WHEN subscribers.status = 'confirmed' THEN subscribers.address ELSE excluded.address END,
                         name = CASE WHEN subscribers.status = 'confirmed' THEN subscribers.name ELSE excluded.name END,
                         topics = CASE WHEN subscribers.status = 'confirmed' THEN subscribers.topics ELSE excluded.topics END,
                         digest = CASE WHEN subscribers.status = 'confirmed' THEN subscribers.digest ELSE excluded.digest END,
                         via = CASE WHEN subscribers.status = 'confirmed' THEN subscribers.via ELSE excluded.via END,
                         changed_at = CASE WHEN subscribers.status = 'confirmed' THEN subscribers.changed_at ELSE excluded.changed_at END,
                         status = CASE WHEN subscribers.status = 'confirmed' THEN subscribers.status ELSE 'pending' END",
                    &[
                        &r.email.to_lowercase(),
                        &r.email,
                        &r.name,
                        &serde_json::to_string(&r.topics).unwrap_or_default(),
                        &r.digest,
                        &r.via,
                        &stored.recorded_at,
                        &serde_json::to_string(r).unwrap_or_default(),
                    ],
                )?;
            }
            Event::SubscriberConfirmed(c) => {
                tx.execute(
                    "INSERT INTO subscribers (email, address, name, topics, digest, status, via, changed_at, subscribed_since)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'confirmed', ?6, ?7, ?7)
                     ON CONFLICT (email) DO UPDATE SET address = excluded.address, name = excluded.name,
                         topics = excluded.topics, digest = excluded.digest, via = excluded.via,
                         changed_at = excluded.changed_at, pending = NULL,
                         subscribed_since = CASE WHEN subscribers.status = 'confirmed' THEN subscribers.subscribed_since
                                                 ELSE excluded.changed_at END,
                         status = 'confirmed'",
                    &[
                        &c.email.to_lowercase(),
                        &c.email,
                        &c.name,
                        &serde_json::to_string(&c.topics).unwrap_or_default(),
                        &c.digest,
                        &c.via,
                        &stored.recorded_at,
                    ],
                )?;
                use_token(tx, &c.token, "confirm", &c.email)?;
            }
            Event::SubscriberUnsubscribed(u) => {
                tx.execute(
                    "UPDATE subscribers SET status = 'unsubscribed', via = ?2, changed_at = ?3, pending = NULL
                     WHERE email = ?1",
                    &[&u.email.to_lowercase(), &u.via, &stored.recorded_at],
                )?;
                use_token(tx, &u.token, "unsubscribe", &u.email)?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SubscriberRow {
    pub email: String,
    pub address: String,
    pub name: Option<String>,
    pub topics: Vec<String>,
    pub digest: String,
    pub status: SubscriberStatus,
    pub via: SubscriptionChannel,
    pub changed_at: String,
    /// A request awaiting confirmation that would change a confirmed subscription.
    pub pending: Option<Subscription>,
    pub requested_at: Option<String>,
    /// When the current confirmed subscription began.
    pub subscribed_since: Option<String>,
}

impl SubscriberRow {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubscriberRow> {
        Ok(SubscriberRow {
            email: r.get(0)?,
            address: r.get(1)?,
            name: r.get(2)?,
            topics: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
            digest: r.get(4)?,
            status: r.get(5)?,
            via: r.get(6)?,
            changed_at: r.get(7)?,
            pending: r
                .get::<_, Option<String>>(8)?
                .and_then(|p| serde_json::from_str(&p).ok()),
            requested_at: r.get(9)?,
            subscribed_since: r.get(10)?,
        })
    }
}

impl Subscribers {
    pub fn all(conn: &Connection) -> rusqlite::Result<Vec<SubscriberRow>> {
        let mut stmt = conn.prepare(
            "SELECT email, address, name, topics, digest, status, via, changed_at, pending, requested_at,
                    subscribed_since FROM subscribers ORDER BY email",
        )?;
        let rows = stmt.query_map([], SubscriberRow::from_row)?;
        rows.collect()
    }

    /// One subscriber by address (any case).
    pub fn get(conn: &Connection, email: &str) -> rusqlite::Result<Option<SubscriberRow>> {
        conn.query_row(
            "SELECT email, address, name, topics, digest, status, via, changed_at, pending, requested_at,
                    subscribed_since FROM subscribers WHERE email = ?1",
            [email.to_lowercase()],
            SubscriberRow::from_row,
        )
        .optional()
    }

    /// Whether a signed link with this id has already been followed.
    pub fn token_used(conn: &Connection, token_id: &str) -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM used_tokens WHERE token_id = ?1)",
            [token_id],
            |r| r.get(0),
        )
    }

    pub fn confirmed(conn: &Connection) -> rusqlite::Result<Vec<SubscriberRow>> {
        Ok(Subscribers::all(conn)?
            .into_iter()
            .filter(|s| s.status == SubscriberStatus::Confirmed)
            .collect())
    }
}
