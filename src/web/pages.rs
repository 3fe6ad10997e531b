//! The stance pages: `/` (watch topics, the current stance per issue and actor with
//! its evidence, a timeline per pair drawn as inline SVG on the server, the recent
//! relevant stories each once) and `/stances/{issue}/{actor}` (one stance's history,
//! each change with its evidence). Views are built from projections only; templates
//! escape every field, and only http(s) links from feeds are kept.

// A page read returns the error page to answer; see forms.rs.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use super::{Notice, Web};
use crate::config::Config;
use crate::digest::{safe_url, StoryView};
use crate::events::Evidence;
use crate::projections::{CurrentStance, Detections, StanceChange, Stances, TimelinePoint};
use crate::story::{self, StoryInput};

/// Relevant articles read for the front page's story list, and stories shown.
const RECENT_ARTICLES: usize = 300;
const RECENT_STORIES: usize = 30;
/// Evidence sentences shown per current stance on the front page.
const FRONT_EVIDENCE: usize = 3;
const TIMELINE_WIDTH: f64 = 640.0;

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

#[derive(Debug, Serialize)]
pub struct StanceRow {
    pub issue: String,
    pub issue_label: String,
    pub actor: String,
    pub actor_label: String,
    pub page: String,
    pub stance: Option<String>,
    pub phrase: Option<&'static str>,
    pub since: Option<String>,
    pub confidence: Option<String>,
    pub evidence: Vec<EvidenceRow>,
    pub timeline: Option<Timeline>,
}

#[derive(Debug, Serialize)]
pub struct EvidenceRow {
    pub sentence: String,
    pub title: String,
    pub outlet: Option<String>,
    pub published: Option<String>,
    pub url: Option<String>,
}

/// A stance's history as bars along a time axis, in SVG user units.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub label: String,
    pub width: f64,
    pub height: f64,
    pub segments: Vec<Segment>,
    /// x of each change after the first.
    pub marks: Vec<f64>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Serialize)]
pub struct Segment {
    pub stance: String,
    pub x: f64,
    pub width: f64,
    pub title: String,
}

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
    pub from: Option<String>,
    pub from_phrase: Option<&'static str>,
    pub to: String,
    pub to_phrase: &'static str,
    pub evidence: Vec<EvidenceRow>,
}

fn phrase(stance: &str) -> &'static str {
    match stance {
        "support" => "supports",
        "oppose" => "opposes",
        _ => "neutral",
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// "2026-11-27 14:05 UTC" from a stored RFC 3339 time (left as it is if unreadable).
fn when(s: &str) -> String {
    parse_time(s)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| s.to_string())
}

fn evidence_rows(evidence: &[Evidence], limit: usize) -> Vec<EvidenceRow> {
    evidence
        .iter()
        .take(limit)
        .map(|e| EvidenceRow {
            sentence: e.sentence.clone(),
            title: e.title.clone(),
            outlet: e.outlet.clone(),
            published: e.published.as_deref().map(when),
            url: safe_url(e.url.as_deref()),
        })
        .collect()
}

fn confidence(evidence: &[Evidence]) -> Option<String> {
    if evidence.is_empty() {
        return None;
    }
    let mean = evidence.iter().map(|e| e.confidence).sum::<f64>() / evidence.len() as f64;
    Some(format!(
        "{:.0}% ({} {})",
        mean * 100.0,
        evidence.len(),
        if evidence.len() == 1 {
            "story"
        } else {
            "stories"
        }
    ))
}

/// Draws the changes of one pair (oldest first) on an axis from `axis_start` (or its
/// first change) up to `now`; pairs of one topic share an axis, so they line up.
fn timeline(
    label: String,
    points: &[&TimelinePoint],
    axis_start: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Timeline> {
    let times: Vec<DateTime<Utc>> = points
        .iter()
        .map(|p| parse_time(&p.at).unwrap_or(now))
        .collect();
    let first = *times.first()?;
    let start = axis_start.map_or(first, |s| s.min(first));
    let end = now.max(*times.last()?);
    let span = (end - start).num_milliseconds().max(1) as f64;
    let x_of = |t: DateTime<Utc>| {
        ((t - start).num_milliseconds() as f64 / span * TIMELINE_WIDTH).clamp(0.0, TIMELINE_WIDTH)
    };
    let mut segments = Vec::with_capacity(points.len());
    let mut marks = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let from = times[i];
        let to = times.get(i + 1).copied().unwrap_or(end);
        let x = x_of(from);
        if i > 0 {
            marks.push(round(x));
        }
        // A stance that has held only briefly still gets a visible sliver.
        let width = (x_of(to) - x).max(2.0);
        segments.push(Segment {
            stance: point.to.clone(),
            x: round(x.min(TIMELINE_WIDTH - width)),
            width: round(width),
            title: format!(
                "{} from {}{}",
                phrase(&point.to),
                when(&point.at),
                times
                    .get(i + 1)
                    .map(|t| format!(" to {}", t.format("%Y-%m-%d %H:%M UTC")))
                    .unwrap_or_default()
            ),
        });
    }
    Some(Timeline {
        label,
        width: TIMELINE_WIDTH,
        height: 40.0,
        segments,
        marks,
        start: start.format("%Y-%m-%d").to_string(),
        end: end.format("%Y-%m-%d").to_string(),
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn stance_row(
    topic: &crate::config::TopicConfig,
    issue: &str,
    actor: &str,
    current: Option<&CurrentStance>,
    evidence_limit: usize,
) -> StanceRow {
    StanceRow {
        issue: issue.to_string(),
        issue_label: topic.issue_label(issue),
        actor: actor.to_string(),
        actor_label: topic.actor_label(actor),
        page: format!("/stances/{issue}/{actor}"),
        stance: current.map(|c| c.stance.clone()),
        phrase: current.map(|c| phrase(&c.stance)),
        since: current.map(|c| when(&c.since)),
        confidence: current.and_then(|c| confidence(&c.evidence)),
        evidence: current
            .map(|c| evidence_rows(&c.evidence, evidence_limit))
            .unwrap_or_default(),
        timeline: None,
    }
}

/// The pairs a topic can hold: every issue with every actor, then any recorded pair
/// the config no longer names (history stays visible after a config change).
fn pairs(topic: &crate::config::TopicConfig, current: &[CurrentStance]) -> Vec<(String, String)> {
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
    let mut seen = std::collections::HashSet::new();
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
                title: a.title.clone(),
                outlet: a.outlet.clone(),
                published: a.published.as_deref().map(when),
                url: safe_url(a.url.as_deref()),
                copies,
            }
        })
        .collect();
    out.truncate(RECENT_STORIES);
    Ok(out)
}

fn change_row(c: &StanceChange) -> ChangeRow {
    ChangeRow {
        seq: c.seq,
        at: when(&c.at),
        from: c.from.clone(),
        from_phrase: c.from.as_deref().map(phrase),
        to: c.to.clone(),
        to_phrase: phrase(&c.to),
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
        let points: Vec<TimelinePoint> = changes
            .iter()
            .map(|c| TimelinePoint {
                topic: c.topic.clone(),
                issue: c.issue.clone(),
                actor: c.actor.clone(),
                to: c.to.clone(),
                at: c.at.clone(),
            })
            .collect();
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

/// Reads a view off the async workers (SQLite is blocking).
async fn read_view<T: Send + 'static>(
    web: &Arc<Web>,
    f: impl FnOnce(&Connection, &Config) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let (store, config) = (web.store.clone(), web.config());
    let joined = tokio::task::spawn_blocking(move || store.read(|conn| f(conn, &config))).await;
    match joined {
        Ok(Ok(view)) => Ok(view),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a page could not read the database");
            Err(web.notice(
                StatusCode::SERVICE_UNAVAILABLE,
                Notice::new(
                    "bad",
                    "Try again shortly",
                    &["The database did not answer."],
                ),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "a page's reader panicked");
            Err(web.notice(
                StatusCode::INTERNAL_SERVER_ERROR,
                Notice::new(
                    "bad",
                    "Something went wrong",
                    &["The daemon's log says what."],
                ),
            ))
        }
    }
}

pub(super) async fn home(State(web): State<Arc<Web>>) -> Response {
    match read_view(&web, |conn, config| home_view(conn, config, Utc::now())).await {
        Ok(view) => web.page(StatusCode::OK, "home.html", view),
        Err(page) => page,
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

pub(super) async fn stance(
    State(web): State<Arc<Web>>,
    Path((issue, actor)): Path<(String, String)>,
) -> Response {
    let unknown = || {
        web.notice(
            StatusCode::NOT_FOUND,
            Notice::new(
                "bad",
                "No such stance",
                &["No watch topic has this issue and actor."],
            ),
        )
    };
    if !is_id(&issue) || !is_id(&actor) {
        return unknown();
    }
    match read_view(&web, move |conn, config| {
        stance_view(conn, config, &issue, &actor, Utc::now())
    })
    .await
    {
        Ok(Some(view)) => web.page(StatusCode::OK, "stance.html", view),
        Ok(None) => unknown(),
        Err(page) => page,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(to: &str, at: &str) -> TimelinePoint {
        TimelinePoint {
            topic: "t".into(),
            issue: "i".into(),
            actor: "a".into(),
            to: to.into(),
            at: at.into(),
        }
    }

    #[test]
    fn a_timeline_spans_from_the_first_change_to_now() {
        let points = [
            point("oppose", "2026-11-01T00:00:00Z"),
            point("support", "2026-11-11T00:00:00Z"),
        ];
        let refs: Vec<&TimelinePoint> = points.iter().collect();
        let now = parse_time("2026-11-21T00:00:00Z").unwrap();
        let t = timeline("x".into(), &refs, None, now).unwrap();
        assert_eq!(t.segments.len(), 2);
        assert_eq!(t.segments[0].x, 0.0);
        assert_eq!(t.segments[0].width, TIMELINE_WIDTH / 2.0);
        assert_eq!(t.segments[1].x, TIMELINE_WIDTH / 2.0);
        assert_eq!(t.segments[1].stance, "support");
        assert_eq!(t.marks, vec![TIMELINE_WIDTH / 2.0]);
        assert!(timeline("x".into(), &[], None, now).is_none());
        // On a topic's shared axis a later pair starts where its first change falls.
        let axis = parse_time("2026-11-01T00:00:00Z");
        let shared = timeline("y".into(), &refs[1..], axis, now).unwrap();
        assert_eq!(shared.segments[0].x, TIMELINE_WIDTH / 2.0);
    }

    #[test]
    fn links_other_than_http_are_dropped() {
        assert_eq!(safe_url(Some("javascript:alert(1)")), None);
        assert_eq!(safe_url(Some("https://a.example/x y")), None);
        assert_eq!(
            safe_url(Some("https://a.example/x")).as_deref(),
            Some("https://a.example/x")
        );
    }
}
