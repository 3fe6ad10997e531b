//! `/`: the watch topics, the current stance per issue and actor with its evidence,
//! a timeline per pair (the pairs of one topic on one axis), and the recent relevant
//! stories, each once however many outlets carried it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use super::rows::{parse_time, stance_row, when, StanceRow};
use crate::config::{Config, TopicConfig};
use crate::digest::timeline::timeline;
use crate::digest::{safe_url, StoryView};
use crate::projections::{CurrentStance, Detections, Stances, TimelinePoint};
use crate::story::{self, StoryInput};

/// Relevant articles read for the front page's story list, and stories shown.
const RECENT_ARTICLES: usize = 300;
const RECENT_STORIES: usize = 30;
/// Evidence sentences shown per current stance on the front page.
const FRONT_EVIDENCE: usize = 3;

#[derive(Debug, Serialize)]
pub struct HomeView {
    pub topics: Vec<TopicView>,
    pub stories: Vec<StoryView>,
}

#[derive(Debug, Serialize)]
pub struct TopicView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub rows: Vec<StanceRow>,
    pub has_timeline: bool,
}

/// The pairs a topic can hold: every issue with every actor, then any recorded pair
/// the config no longer names (history stays visible after a config change).
fn pairs(topic: &TopicConfig, current: &[CurrentStance]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = topic
        .issues
        .iter()
        .flat_map(|i| topic.actors.iter().map(|a| (i.id.clone(), a.id.clone())))
        .collect();
    for c in current.iter().filter(|c| c.topic == topic.id) {
        if !out.iter().any(|(i, a)| *i == c.issue && *a == c.actor) {
            out.push((c.issue.clone(), c.actor.clone()));
        }
    }
    out
}

/// Everything `/` shows.
pub fn home_view(
    conn: &Connection,
    config: &Config,
    now: DateTime<Utc>,
) -> rusqlite::Result<HomeView> {
    let current = Stances::current(conn)?;
    let points = Stances::timeline(conn)?;
    let mut by_pair: HashMap<(&str, &str, &str), Vec<&TimelinePoint>> = HashMap::new();
    for p in &points {
        by_pair
            .entry((p.topic.as_str(), p.issue.as_str(), p.actor.as_str()))
            .or_default()
            .push(p);
    }
    let mut topics = Vec::new();
    for topic in &config.topics {
        let axis_start = points
            .iter()
            .find(|p| p.topic == topic.id)
            .and_then(|p| parse_time(&p.at));
        let mut rows = Vec::new();
        for (issue, actor) in pairs(topic, &current) {
            let now_holding = current
                .iter()
                .find(|c| c.topic == topic.id && c.issue == issue && c.actor == actor);
            let mut row = stance_row(topic, &issue, &actor, now_holding, FRONT_EVIDENCE);
            row.timeline = by_pair
                .get(&(topic.id.as_str(), issue.as_str(), actor.as_str()))
                .and_then(|p| {
                    timeline(
                        format!("{} on {}", row.actor_label, row.issue_label),
                        p,
                        axis_start,
                        now,
                    )
                });
            rows.push(row);
        }
        topics.push(TopicView {
            id: topic.id.clone(),
            name: topic.name.clone().unwrap_or_else(|| topic.id.clone()),
            description: topic.description.clone(),
            has_timeline: rows.iter().any(|r| r.timeline.is_some()),
            rows,
        });
    }
    Ok(HomeView {
        topics,
        stories: recent_stories(conn)?,
    })
}

/// The newest relevant stories, each once however many outlets carried it.
fn recent_stories(conn: &Connection) -> rusqlite::Result<Vec<StoryView>> {
    let mut articles = Detections::recent_relevant(conn, RECENT_ARTICLES)?;
    let mut seen = HashSet::new();
    articles.retain(|a| seen.insert(a.article_id.clone()));
    let inputs: Vec<StoryInput<'_>> = articles
        .iter()
        .map(|a| StoryInput {
            id: &a.article_id,
            url: a.url.as_deref(),
            title: &a.title,
            summary: &a.summary,
        })
        .collect();
    let mut out: Vec<StoryView> = story::once_each(&inputs, |_, _| false)
        .into_iter()
        .map(|(i, copies)| {
            let a = &articles[i];
            StoryView {
                issue: None,
                title: a.title.clone(),
                outlet: a.outlet.clone(),
                outlet_url: None,
                published: a.published.as_deref().map(when),
                url: safe_url(a.url.as_deref()),
                copies,
            }
        })
        .collect();
    out.truncate(RECENT_STORIES);
    Ok(out)
}
