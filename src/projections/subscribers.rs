//! Subscribers: who gets digests for which topics, and in what mode. Only confirmed
//! subscribers receive digests; the list is the projection of Subscriber* events.

use rusqlite::{Connection, Transaction};

use super::Projection;
use crate::events::Event;
use crate::store::StoredEvent;

pub struct Subscribers;

impl Projection for Subscribers {
    fn name(&self) -> &'static str {
        "subscribers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["subscribers"]
    }

    fn handles(&self, kind: &str) -> bool {
        matches!(
            kind,
            "SubscriberRequested" | "SubscriberConfirmed" | "SubscriberUnsubscribed"
        )
    }

    fn apply(
        &self,
        tx: &Transaction<'_>,
        stored: &StoredEvent,
        event: &Event,
    ) -> rusqlite::Result<()> {
        let via = |v| {
            serde_json::to_value(v)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        match event {
            Event::SubscriberRequested(r) => {
                // A pending request never downgrades a confirmed subscription.
                tx.prepare_cached(
                    "INSERT INTO subscribers (email, address, name, topics, digest, status, via, changed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)
                     ON CONFLICT (email) DO UPDATE SET address = excluded.address, name = excluded.name,
                         topics = excluded.topics, digest = excluded.digest, via = excluded.via,
                         changed_at = excluded.changed_at, status = CASE WHEN status = 'confirmed' THEN status ELSE 'pending' END",
                )?
                .execute(rusqlite::params![
                    r.email.to_lowercase(),
                    r.email,
                    r.name,
                    serde_json::to_string(&r.topics).unwrap_or_default(),
                    r.digest,
                    via(r.via),
                    stored.recorded_at
                ])?;
            }
            Event::SubscriberConfirmed(c) => {
                tx.prepare_cached(
                    "INSERT INTO subscribers (email, address, name, topics, digest, status, via, changed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'confirmed', ?6, ?7)
                     ON CONFLICT (email) DO UPDATE SET address = excluded.address, name = excluded.name,
                         topics = excluded.topics, digest = excluded.digest, status = 'confirmed', via = excluded.via,
                         changed_at = excluded.changed_at",
                )?
                .execute(rusqlite::params![
                    c.email.to_lowercase(),
                    c.email,
                    c.name,
                    serde_json::to_string(&c.topics).unwrap_or_default(),
                    c.digest,
                    via(c.via),
                    stored.recorded_at
                ])?;
            }
            Event::SubscriberUnsubscribed(u) => {
                tx.prepare_cached(
                    "UPDATE subscribers SET status = 'unsubscribed', via = ?2, changed_at = ?3 WHERE email = ?1",
                )?
                .execute(rusqlite::params![u.email.to_lowercase(), via(u.via), stored.recorded_at])?;
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
    pub status: String,
    pub via: String,
    pub changed_at: String,
}

impl Subscribers {
    pub fn all(conn: &Connection) -> rusqlite::Result<Vec<SubscriberRow>> {
        let mut stmt = conn.prepare(
            "SELECT email, address, name, topics, digest, status, via, changed_at FROM subscribers ORDER BY email",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SubscriberRow {
                email: r.get(0)?,
                address: r.get(1)?,
                name: r.get(2)?,
                topics: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                digest: r.get(4)?,
                status: r.get(5)?,
                via: r.get(6)?,
                changed_at: r.get(7)?,
            })
        })?;
        rows.collect()
    }

    pub fn confirmed(conn: &Connection) -> rusqlite::Result<Vec<SubscriberRow>> {
        Ok(Subscribers::all(conn)?
            .into_iter()
            .filter(|s| s.status == "confirmed")
            .collect())
    }
}
