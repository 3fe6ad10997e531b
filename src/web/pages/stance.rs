//! `/stances/{issue}/{actor}`: one stance's history in every topic that names the pair
//! (or once recorded it), each change with all of its evidence, newest first.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use super::rows::{evidence_rows, phrase, stance_row, when, EvidenceRow, StanceRow};
use crate::config::Config;
use crate::detect::Stance;
use crate::digest::timeline::{timeline, Timeline};
use crate::projections::{StanceChange, Stances, TimelinePoint};

#[derive(Debug, Serialize)]
pub struct StanceView {
    pub issue: String,
    pub actor: String,
    pub issue_label: String,
    pub actor_label: String,
    pub topics: Vec<StanceTopicView>,
}

#[derive(Debug, Serialize)]
pub struct StanceTopicView {
    pub name: String,
    pub current: Option<StanceRow>,
    pub timeline: Option<Timeline>,
    /// Newest first.
    pub changes: Vec<ChangeRow>,
}

#[derive(Debug, Serialize)]
pub struct ChangeRow {
    pub seq: u64,
    pub at: String,
    pub from: Option<Stance>,
    pub from_phrase: Option<&'static str>,
    pub to: Stance,
    pub to_phrase: &'static str,
    pub evidence: Vec<EvidenceRow>,
}

fn change_row(c: &StanceChange) -> ChangeRow {
    ChangeRow {
        seq: c.seq,
        at: when(&c.at),
        from: c.from,
        from_phrase: c.from.map(phrase),
        to: c.to,
        to_phrase: phrase(c.to),
        evidence: evidence_rows(&c.evidence, usize::MAX),
    }
}

/// Everything `/stances/{issue}/{actor}` shows, or None when no topic knows the pair.
pub fn stance_view(
    conn: &Connection,
    config: &Config,
    issue: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<StanceView>> {
    let history = Stances::history(conn, issue, actor)?;
    let current = Stances::current(conn)?;
    let mut topics = Vec::new();
    let mut labels = None;
    for topic in &config.topics {
        let named = topic.issues.iter().any(|i| i.id == issue)
            && topic.actors.iter().any(|a| a.id == actor);
        let changes: Vec<&StanceChange> = history.iter().filter(|c| c.topic == topic.id).collect();
        if !named && changes.is_empty() {
            continue;
        }
        let holding = current
            .iter()
            .find(|c| c.topic == topic.id && c.issue == issue && c.actor == actor);
        let row = stance_row(topic, issue, actor, holding, usize::MAX);
        labels.get_or_insert((row.issue_label.clone(), row.actor_label.clone()));
        let points: Vec<TimelinePoint> = changes.iter().map(|c| TimelinePoint::from(*c)).collect();
        let refs: Vec<&TimelinePoint> = points.iter().collect();
        topics.push(StanceTopicView {
            name: topic.name.clone().unwrap_or_else(|| topic.id.clone()),
            timeline: timeline(
                format!("{} on {}", row.actor_label, row.issue_label),
                &refs,
                None,
                now,
            ),
            current: holding.map(|_| row),
            changes: changes.iter().rev().map(|c| change_row(c)).collect(),
        });
    }
    let Some((issue_label, actor_label)) = labels else {
        return Ok(None);
    };
    Ok(Some(StanceView {
        issue: issue.to_string(),
        actor: actor.to_string(),
        issue_label,
        actor_label,
        topics,
    }))
}
