//! Stance tracking: turns stance observations into a current stance per (topic, issue,
//! actor), and records a `StanceChanged` when the evidence really moves.
//!
//! Evidence is counted by story (syndicated copies count once, `crate::story`) and by
//! outlet, within a time window. A change to stance T needs at least `min_sources`
//! stories for T from distinct outlets, seen since the current stance was established,
//! and more of them than fresh stories for the current stance (hysteresis: one
//! contrary article changes nothing). The first stance is established the same way.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use rusqlite::Connection;

use crate::config::TrackingConfig;
use crate::detect::Stance;
use crate::events::stream;
use crate::events::{Event, Evidence, StanceChanged};
use crate::projections::{CurrentStance, Stances};
use crate::store::{ExpectedVersion, NewEvent, SqliteStore, StoreError};
use crate::story::{self, StoryInput};

/// One observation with the article it came from.
#[derive(Debug, Clone)]
struct Observed {
    article_id: String,
    feed: String,
    topic: String,
    issue: String,
    actor: String,
    stance: Stance,
    confidence: f64,
    sentence: String,
    observed_at: DateTime<Utc>,
    /// When the news happened, as far as we know: published if earlier than seen.
    news_at: DateTime<Utc>,
    title: String,
    summary: String,
    url: Option<String>,
    outlet: Option<String>,
    published: Option<String>,
}

fn time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn observations(conn: &Connection, since: DateTime<Utc>) -> rusqlite::Result<Vec<Observed>> {
    // A generous SQL bound on when it was seen; the window on news time is applied below.
    let seen_after = (since - Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut stmt = conn.prepare(
        "SELECT o.article_id, o.feed_id, o.topic, o.issue, o.actor, o.stance, o.confidence, o.evidence, o.observed_at,
                o.published, a.title, COALESCE(json_extract(e.payload, '$.summary'), ''),
                a.url, COALESCE(a.outlet, o.outlet)
         FROM stance_observations o JOIN articles a ON a.article_id = o.article_id
             JOIN events e ON e.seq = a.body_seq
         WHERE o.observed_at >= ?1 ORDER BY a.discovered_at, o.seq",
    )?;
    let rows = stmt.query_map([seen_after], |r| {
        let observed: String = r.get(8)?;
        let published: Option<String> = r.get(9)?;
        let observed_at = time(&observed).unwrap_or_else(Utc::now);
        let news_at = published
            .as_deref()
            .and_then(time)
            .filter(|p| *p < observed_at)
            .unwrap_or(observed_at);
        Ok(Observed {
            article_id: r.get(0)?,
            feed: r.get(1)?,
            topic: r.get(2)?,
            issue: r.get(3)?,
            actor: r.get(4)?,
            stance: r.get(5)?,
            confidence: r.get(6)?,
            sentence: r.get(7)?,
            observed_at,
            news_at,
            title: r.get(10)?,
            summary: r.get(11)?,
            url: r.get(12)?,
            outlet: r.get(13)?,
            published,
        })
    })?;
    let mut out = Vec::new();
    for row in rows {
        let o = row?;
        if o.news_at >= since {
            out.push(o);
        }
    }
    Ok(out)
}

/// A story's vote on one pair: its most confident observation.
#[derive(Debug, Clone)]
struct Vote<'a> {
    story: String,
    first_seen: DateTime<Utc>,
    best: &'a Observed,
}

/// Decides the changes due now, without recording them.
pub fn decide(
    conn: &Connection,
    tracking: &TrackingConfig,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<StanceChanged>> {
    let window_start = now - Duration::hours(i64::from(tracking.window_hours));
    let observed = observations(conn, window_start)?;
    let current: HashMap<(String, String, String), CurrentStance> = Stances::current(conn)?
        .into_iter()
        .map(|c| ((c.topic.clone(), c.issue.clone(), c.actor.clone()), c))
        .collect();
    let stories = stories_of(&observed);
    let mut by_pair: BTreeMap<(String, String, String), Vec<&Observed>> = BTreeMap::new();
    for o in &observed {
        by_pair
            .entry((o.topic.clone(), o.issue.clone(), o.actor.clone()))
            .or_default()
            .push(o);
    }
    let mut changes = Vec::new();
    for (pair, obs) in by_pair {
        let holding = current.get(&pair);
        let since = holding.and_then(|c| time(&c.since));
        let votes = votes(&obs, &stories);
        // Fresh evidence: stories first seen after the current stance was established.
        let fresh: Vec<&Vote<'_>> = votes
            .values()
            .filter(|v| since.is_none_or(|s| v.first_seen > s))
            .collect();
        let Some((to, votes_for)) = winner(&fresh, holding.map(|c| c.stance), tracking) else {
            continue;
        };
        changes.push(StanceChanged {
            topic: pair.0,
            issue: pair.1,
            actor: pair.2,
            from: holding.map(|c| c.stance),
            to,
            from_since: holding.map(|c| c.since.clone()),
            evidence: evidence(&votes_for),
        });
    }
    Ok(changes)
}

/// Stories over every article involved (syndicated copies and near-duplicates are one
/// story), oldest first: article id → story id.
fn stories_of(observed: &[Observed]) -> HashMap<String, String> {
    let mut seen = HashSet::new();
    let inputs: Vec<StoryInput<'_>> = observed
        .iter()
        .filter(|o| seen.insert(o.article_id.as_str()))
        .map(|o| StoryInput {
            id: &o.article_id,
            url: o.url.as_deref(),
            title: &o.title,
            summary: &o.summary,
        })
        .collect();
    story::cluster(&inputs)
}

/// One vote per story: its most confident reading of the pair, first seen when the
/// story's first article was.
fn votes<'a>(
    observed: &[&'a Observed],
    stories: &HashMap<String, String>,
) -> BTreeMap<String, Vote<'a>> {
    let mut votes: BTreeMap<String, Vote<'a>> = BTreeMap::new();
    for o in observed {
        let story = stories
            .get(&o.article_id)
            .cloned()
            .unwrap_or_else(|| o.article_id.clone());
        let vote = votes.entry(story.clone()).or_insert(Vote {
            story,
            first_seen: o.observed_at,
            best: o,
        });
        vote.first_seen = vote.first_seen.min(o.observed_at);
        if o.confidence > vote.best.confidence {
            vote.best = o;
        }
    }
    votes
}

/// The stance the fresh evidence moves to, with its votes (one per outlet): another
/// stance than the one held, backed by at least `min_sources` outlets and by more
/// than fresh evidence for the held one, and clearly ahead of any other new stance
/// (evidence split between two new stances waits).
fn winner<'v, 'a>(
    fresh: &[&'v Vote<'a>],
    holding: Option<Stance>,
    tracking: &TrackingConfig,
) -> Option<(Stance, Vec<&'v Vote<'a>>)> {
    let outlets_for = |stance: Stance| -> Vec<&'v Vote<'a>> {
        let mut outlets = HashSet::new();
        fresh
            .iter()
            .copied()
            .filter(|v| v.best.stance == stance)
            .filter(|v| {
                outlets.insert(v.best.outlet.clone().unwrap_or_else(|| v.best.feed.clone()))
            })
            .collect()
    };
    let holding_fresh = holding.map(|s| outlets_for(s).len()).unwrap_or(0);
    let mut candidates: Vec<(Stance, Vec<&'v Vote<'a>>)> =
        [Stance::Support, Stance::Oppose, Stance::Neutral]
            .into_iter()
            .filter(|s| Some(*s) != holding)
            .map(|s| (s, outlets_for(s)))
            .filter(|(_, v)| v.len() >= tracking.min_sources as usize && v.len() > holding_fresh)
            .collect();
    candidates.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    match candidates.len() {
        0 => None,
        1 => candidates.pop(),
        _ if candidates[0].1.len() > candidates[1].1.len() => Some(candidates.swap_remove(0)),
        _ => None,
    }
}

/// The change's evidence, one per story, in publication order.
fn evidence(votes: &[&Vote<'_>]) -> Vec<Evidence> {
    let mut evidence: Vec<Evidence> = votes
        .iter()
        .map(|v| Evidence {
            article_id: v.best.article_id.clone(),
            story: v.story.clone(),
            title: v.best.title.clone(),
            outlet: v.best.outlet.clone(),
            url: v.best.url.clone(),
            published: v.best.published.clone(),
            sentence: v.best.sentence.clone(),
            stance: v.best.stance,
            confidence: v.best.confidence,
        })
        .collect();
    evidence.sort_by(|a, b| {
        a.published
            .cmp(&b.published)
            .then(a.article_id.cmp(&b.article_id))
    });
    evidence
}

/// Decides and records the changes due now. Each is appended at the stream version it
/// was decided against, so two trackers cannot record the same change twice.
pub fn track(
    store: &SqliteStore,
    tracking: &TrackingConfig,
    now: DateTime<Utc>,
) -> Result<Vec<StanceChanged>, StoreError> {
    let changes = store.read(|conn| decide(conn, tracking, now))?;
    let mut recorded = Vec::new();
    for change in changes {
        let stream = stream::stance(&change.topic, &change.issue, &change.actor);
        let version = store.read_stream(&stream)?.len() as u64;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exactly(version)
        };
        let key = stream::key::stance_changed(&stream, version + 1);
        match store.append_one(
            NewEvent::new(stream, Event::StanceChanged(change.clone()))
                .expecting(expected)
                .idempotent(key),
        ) {
            Ok(a) if a.is_new() => recorded.push(change),
            Ok(_) | Err(StoreError::Conflict { .. }) => {} // another tracker got there first
            Err(e) => return Err(e),
        }
    }
    Ok(recorded)
}
