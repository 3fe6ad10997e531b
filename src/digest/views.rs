//! What a digest shows, built from projections: each change (the stance phrased, its
//! evidence, one story in full once), the other relevant stories since the last
//! digest, and the small text helpers the pages share (safe links, header-safe
//! subjects, topic names).

use std::collections::HashSet;

use rusqlite::Connection;
use serde::Serialize;

use crate::config::Config;
use crate::detect::Stance;
use crate::projections::StanceChange;
use crate::story::{self, StoryInput};

/// Most "other stories" listed in one digest.
const MAX_STORIES: usize = 40;

/// A change as a digest shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    pub seq: u64,
    pub subject: String,
    pub summary: String,
    pub evidence: Vec<EvidenceView>,
    pub page: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    /// Already shown as evidence for an earlier change in this digest: named briefly.
    pub repeat: bool,
    #[serde(skip)]
    pub story: String,
    pub title: String,
    pub outlet: Option<String>,
    pub published: Option<String>,
    pub url: Option<String>,
    pub sentence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoryView {
    pub title: String,
    pub outlet: Option<String>,
    pub published: Option<String>,
    pub url: Option<String>,
    pub copies: usize,
}

/// The topics' names (their ids where they have none), as one line.
pub fn topic_names(config: &Config, topics: &[String]) -> String {
    topics
        .iter()
        .map(|t| {
            config
                .topics
                .iter()
                .find(|c| &c.id == t)
                .and_then(|c| c.name.clone())
                .unwrap_or_else(|| t.clone())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Only http(s) links reach a message or a page; anything else from a feed is dropped.
pub fn safe_url(url: Option<&str>) -> Option<String> {
    url.filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .filter(|u| !u.chars().any(|c| c.is_control() || c.is_whitespace()))
        .map(str::to_string)
}

/// Any text headed for a header: control characters (CR, LF) become spaces, and bidi
/// and zero-width characters (stripped from feeds at ingestion, but perhaps recorded
/// by an older version) are dropped.
pub fn header_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !crate::feed::is_invisible_format(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

fn phrase(stance: Stance) -> &'static str {
    match stance {
        Stance::Support => "supports",
        Stance::Oppose => "opposes",
        Stance::Neutral => "neutral on",
    }
}

pub(super) fn change_view(config: &Config, c: &StanceChange) -> ChangeView {
    let rules = config.topics.iter().find(|t| t.id == c.topic);
    let actor = rules
        .map(|r| r.actor_label(&c.actor))
        .unwrap_or_else(|| c.actor.clone());
    let issue = rules
        .map(|r| r.issue_label(&c.issue))
        .unwrap_or_else(|| c.issue.clone());
    let stories = format!(
        "{} {}",
        c.evidence.len(),
        if c.evidence.len() == 1 {
            "story"
        } else {
            "stories"
        }
    );
    let (subject, summary) = match &c.from {
        Some(from) => (
            format!("{actor}: now {} {issue}", phrase(c.to)),
            format!(
                "{actor}: {} {issue} since {}, no longer {} it. Evidence: {stories} from distinct outlets.",
                phrase(c.to),
                c.at,
                phrase(*from).trim_end_matches(" on")
            ),
        ),
        None => (
            format!("{actor}: {} {issue}", phrase(c.to)),
            format!("{actor}: {} {issue}, first established {}. Evidence: {stories} from distinct outlets.", phrase(c.to), c.at),
        ),
    };
    let page = config.web.as_ref().map(|w| {
        format!(
            "{}/stances/{}/{}",
            w.public_url.as_str().trim_end_matches('/'),
            c.issue,
            c.actor
        )
    });
    ChangeView {
        seq: c.seq,
        subject: header_safe(&subject),
        summary,
        evidence: c
            .evidence
            .iter()
            .map(|e| EvidenceView {
                repeat: false,
                story: e.story.clone(),
                title: e.title.clone(),
                outlet: e.outlet.clone(),
                published: e.published.clone(),
                url: safe_url(e.url.as_deref()),
                sentence: e.sentence.clone(),
            })
            .collect(),
        page,
    }
}

/// The other relevant stories of these topics first seen after `after`, each once,
/// leaving out the articles already shown as evidence.
pub(super) fn stories(
    conn: &Connection,
    topics: &[String],
    after: &str,
    shown: &HashSet<String>,
) -> rusqlite::Result<Vec<StoryView>> {
    let mut stmt = conn.prepare(
        "SELECT a.article_id, a.title, COALESCE(json_extract(e.payload, '$.summary'), ''),
                a.url, a.outlet, a.published
         FROM article_topics t JOIN articles a ON a.article_id = t.article_id
             JOIN events e ON e.seq = a.body_seq
         WHERE t.topic = ?1 AND a.discovered_at > ?2 ORDER BY a.discovered_at, a.article_id LIMIT 2000",
    )?;
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut seen = HashSet::new();
    for topic in topics {
        for row in stmt.query_map(rusqlite::params![topic, after], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })? {
            let row: Row = row?;
            if seen.insert(row.0.clone()) {
                rows.push(row);
            }
        }
    }
    let inputs: Vec<StoryInput<'_>> = rows
        .iter()
        .map(|r| StoryInput {
            id: &r.0,
            url: r.3.as_deref(),
            title: &r.1,
            summary: &r.2,
        })
        .collect();
    let clusters = story::cluster(&inputs);
    let shown_stories: HashSet<&str> = shown
        .iter()
        .filter_map(|id| clusters.get(id).map(String::as_str))
        .collect();
    let mut out: Vec<StoryView> = story::once_each(&inputs, |i, story| {
        shown.contains(&rows[i].0) || shown_stories.contains(story)
    })
    .into_iter()
    .map(|(i, copies)| {
        let r = &rows[i];
        StoryView {
            title: r.1.clone(),
            outlet: r.4.clone(),
            published: r.5.clone(),
            url: safe_url(r.3.as_deref()),
            copies,
        }
    })
    .collect();
    out.truncate(MAX_STORIES);
    Ok(out)
}
