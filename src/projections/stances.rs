//! Tracked stances: the current stance per (topic, issue, actor) with its evidence
//! (`stances`), and every change (`stance_history`). Read by `vigia stances`, the
//! tracker (what holds now) and digests.

use rusqlite::Connection;

use super::sql::Tx;
use super::Projection;
use crate::detect::Stance;
use crate::events::{Event, Evidence};
use crate::store::{StoreError, StoredEvent};

pub struct Stances;

impl Projection for Stances {
    fn name(&self) -> &'static str {
        "stances"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["stances", "stance_history"]
    }

    fn handles(&self, kind: &str) -> bool {
        kind == "StanceChanged"
    }

    fn apply(
        &self,
        tx: &mut dyn Tx,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), StoreError> {
        let Event::StanceChanged(c) = event else {
            return Ok(());
        };
        let evidence = serde_json::to_string(&c.evidence).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO stances (topic, issue, actor, stance, since, since_seq, evidence) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (topic, issue, actor) DO UPDATE SET stance = excluded.stance, since = excluded.since,
                 since_seq = excluded.since_seq, evidence = excluded.evidence",
            &[&c.topic, &c.issue, &c.actor, &c.to, &stored.recorded_at, &stored.seq, &evidence],
        )?;
        tx.execute(
            "INSERT INTO stance_history (seq, topic, issue, actor, from_stance, to_stance, at, evidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[&stored.seq, &c.topic, &c.issue, &c.actor, &c.from, &c.to, &stored.recorded_at, &evidence],
        )?;
        Ok(())
    }
}

/// A stance as it holds now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CurrentStance {
    pub topic: String,
    pub issue: String,
    pub actor: String,
    pub stance: Stance,
    pub since: String,
    pub since_seq: u64,
    pub evidence: Vec<Evidence>,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StanceChange {
    pub seq: u64,
    pub topic: String,
    pub issue: String,
    pub actor: String,
    pub from: Option<Stance>,
    pub to: Stance,
    pub at: String,
    pub evidence: Vec<Evidence>,
}

impl StanceChange {
    /// From the columns seq, topic, issue, actor, from_stance, to_stance, at, evidence.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StanceChange> {
        Ok(StanceChange {
            seq: r.get(0)?,
            topic: r.get(1)?,
            issue: r.get(2)?,
            actor: r.get(3)?,
            from: r.get(4)?,
            to: r.get(5)?,
            at: r.get(6)?,
            evidence: evidence(r.get(7)?),
        })
    }
}

fn evidence(text: String) -> Vec<Evidence> {
    serde_json::from_str(&text).unwrap_or_default()
}

impl Stances {
    pub fn current(conn: &Connection) -> rusqlite::Result<Vec<CurrentStance>> {
        let mut stmt = conn.prepare(
            "SELECT topic, issue, actor, stance, since, since_seq, evidence FROM stances ORDER BY topic, issue, actor",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CurrentStance {
                topic: r.get(0)?,
                issue: r.get(1)?,
                actor: r.get(2)?,
                stance: r.get(3)?,
                since: r.get(4)?,
                since_seq: r.get(5)?,
                evidence: evidence(r.get(6)?),
            })
        })?;
        rows.collect()
    }

    /// Changes after `after_seq`, oldest first.
    pub fn changes_since(conn: &Connection, after_seq: u64) -> rusqlite::Result<Vec<StanceChange>> {
        let mut stmt = conn.prepare(
            "SELECT seq, topic, issue, actor, from_stance, to_stance, at, evidence FROM stance_history
             WHERE seq > ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([after_seq], StanceChange::from_row)?;
        rows.collect()
    }

    /// Every change without its evidence, oldest first: what timelines are drawn from.
    pub fn timeline(conn: &Connection) -> rusqlite::Result<Vec<TimelinePoint>> {
        let mut stmt = conn.prepare_cached(
            "SELECT topic, issue, actor, to_stance, at FROM stance_history ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TimelinePoint {
                topic: r.get(0)?,
                issue: r.get(1)?,
                actor: r.get(2)?,
                to: r.get(3)?,
                at: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// Every change of one issue and actor (in any topic), with its evidence, oldest first.
    pub fn history(
        conn: &Connection,
        issue: &str,
        actor: &str,
    ) -> rusqlite::Result<Vec<StanceChange>> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, topic, issue, actor, from_stance, to_stance, at, evidence FROM stance_history
             WHERE issue = ?1 AND actor = ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map([issue, actor], StanceChange::from_row)?;
        rows.collect()
    }
}

/// A change as a timeline needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimelinePoint {
    pub topic: String,
    pub issue: String,
    pub actor: String,
    pub to: Stance,
    pub at: String,
}

impl From<&StanceChange> for TimelinePoint {
    fn from(c: &StanceChange) -> TimelinePoint {
        TimelinePoint {
            topic: c.topic.clone(),
            issue: c.issue.clone(),
            actor: c.actor.clone(),
            to: c.to,
            at: c.at.clone(),
        }
    }
}
