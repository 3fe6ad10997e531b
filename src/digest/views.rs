//! What a digest shows, built from projections: each change (the stance phrased, its
//! evidence, one story in full once), the other relevant stories since the last
//! digest, and the small text helpers the pages share (safe links, header-safe
//! subjects, topic names).

use std::collections::HashSet;

use rusqlite::Connection;
use serde::Serialize;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::timeline::timeline;
use super::words::{ago, full_time_of, parse_time, short_date, span};
use crate::config::Config;
use crate::detect::Stance;
use crate::projections::{StanceChange, Stances, TimelinePoint};
use crate::story::{self, StoryInput};

/// Most "other stories" listed in one digest.
const MAX_STORIES: usize = 40;

/// A change as a digest shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    pub seq: u64,
    /// Short, for a phone's list of mails: "Mexico's government: now opposes US
    /// military action".
    pub subject: String,
    /// What happened, in a sentence: "Mexico's government now opposes US military
    /// action (it supported it from 12 Nov, 3 weeks)", or "First reading: ...".
    pub lead: String,
    /// An establishment (no stance was held before), not a change.
    pub first_reading: bool,
    /// When it was recorded, as people read dates, in the subscriber's zone.
    pub at: String,
    /// The outlets whose stories carry it: "Outlet A and Outlet B".
    pub outlets: String,
    pub evidence: Vec<EvidenceView>,
    /// The stance page, when the pages have a public address.
    pub page: Option<String>,
    /// The timeline picture (an inline image) and its words.
    pub chart: Option<ChartView>,
}

/// The timeline of a change's issue and actor: the image's Content-ID, its alt
/// text, and the one line the plain part shows instead.
#[derive(Debug, Clone, Serialize)]
pub struct ChartView {
    pub cid: String,
    pub alt: String,
    pub line: String,
    #[serde(skip)]
    pub png: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    /// Already shown as evidence for an earlier change in this digest: named briefly.
    pub repeat: bool,
    #[serde(skip)]
    pub story: String,
    pub title: String,
    pub outlet: Option<String>,
    /// The outlet's home (scheme and host of the story's link), to link its name.
    pub outlet_url: Option<String>,
    pub published: Option<String>,
    /// "2 days ago", next to the date.
    pub ago: Option<String>,
    pub url: Option<String>,
    pub sentence: String,
    /// Whether the sentence says more than the headline (it often is the headline).
    pub show_sentence: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoryView {
    /// The issue the story touches (its label), where a stance on one was read in it.
    #[serde(skip)]
    pub issue: Option<String>,
    pub title: String,
    pub outlet: Option<String>,
    pub outlet_url: Option<String>,
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
        Stance::Neutral => "is neutral on",
    }
}

/// A stance reached just now: "now supports", "is now neutral on".
fn now_phrase(stance: Stance) -> &'static str {
    match stance {
        Stance::Support => "now supports",
        Stance::Oppose => "now opposes",
        Stance::Neutral => "is now neutral on",
    }
}

/// The past tense, for what the stance was: "it supported it".
fn held(stance: Stance) -> &'static str {
    match stance {
        Stance::Support => "it supported it",
        Stance::Oppose => "it opposed it",
        Stance::Neutral => "it was neutral",
    }
}

/// Longest a headline, a sentence or an outlet's name runs in a digest: text from a
/// feed is already clipped at ingestion, but a digest is read on a phone.
const MAX_TITLE_CHARS: usize = 300;
const MAX_SENTENCE_CHARS: usize = 600;
const MAX_OUTLET_CHARS: usize = 80;
/// Most stances a timeline's line of text names (the latest ones).
const MAX_TIMELINE_STEPS: usize = 4;

/// Feed text as a digest shows it: invisible format characters (bidi overrides,
/// zero-width) dropped, and cut at `max` characters with an ellipsis.
pub fn bounded(text: &str, max: usize) -> String {
    let visible: String = text
        .chars()
        .filter(|c| !crate::feed::is_invisible_format(*c))
        .collect();
    match visible.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", visible[..cut].trim_end()),
        None => visible,
    }
}

/// The home of a story's outlet: its link's scheme and host.
fn outlet_home(url: Option<&str>) -> Option<String> {
    let url = url::Url::parse(safe_url(url)?.as_str()).ok()?;
    Some(format!("{}://{}/", url.scheme(), url.host_str()?))
}

/// Whether a sentence adds to a headline: not when it is the headline, or a part of
/// it, give or take case and closing punctuation.
fn adds_to(sentence: &str, title: &str) -> bool {
    let plain = |s: &str| {
        s.trim()
            .trim_end_matches(['.', '!', '?', '…'])
            .to_lowercase()
    };
    let (sentence, title) = (plain(sentence), plain(title));
    !sentence.is_empty() && !title.contains(&sentence)
}

/// "A", "A and B", "A, B and C" (each once, in order of first mention).
fn named_list(names: impl IntoIterator<Item = String>) -> String {
    let mut seen = HashSet::new();
    let names: Vec<String> = names
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// How a digest reads times: in the subscriber's zone, as of the digest's `now`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub now: DateTime<Utc>,
    pub tz: Option<Tz>,
}

pub(super) fn change_view(
    conn: &Connection,
    config: &Config,
    c: &StanceChange,
    clock: Clock,
) -> rusqlite::Result<ChangeView> {
    let rules = config.topics.iter().find(|t| t.id == c.topic);
    let actor = rules
        .map(|r| r.actor_label(&c.actor))
        .unwrap_or_else(|| c.actor.clone());
    let issue = rules
        .map(|r| r.issue_label(&c.issue))
        .unwrap_or_else(|| c.issue.clone());
    let history: Vec<StanceChange> = Stances::history(conn, &c.issue, &c.actor)?
        .into_iter()
        .filter(|h| h.topic == c.topic && h.seq <= c.seq)
        .collect();
    let at = parse_time(&c.at);
    let before = history.iter().rev().find(|h| h.seq < c.seq);
    let (actor, issue) = (
        bounded(&actor, MAX_OUTLET_CHARS),
        bounded(&issue, MAX_OUTLET_CHARS),
    );
    let (subject, lead) = match (&c.from, before) {
        (Some(from), before) => {
            let was = match before.and_then(|b| parse_time(&b.at)) {
                Some(since) => format!(
                    " ({} from {}, {})",
                    held(*from),
                    short_date(since, clock.now, clock.tz),
                    span(at.unwrap_or(clock.now) - since)
                ),
                None => format!(" ({})", held(*from)),
            };
            (
                format!("{actor}: {} {issue}", now_phrase(c.to)),
                format!("{actor} {} {issue}{was}.", now_phrase(c.to)),
            )
        }
        (None, _) => (
            format!("{actor}: {} {issue} (first reading)", phrase(c.to)),
            format!("First reading: {actor} {} {issue}.", phrase(c.to)),
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
    let points: Vec<TimelinePoint> = history.iter().map(TimelinePoint::from).collect();
    let chart = chart_view(c.seq, &actor, &issue, &points, clock);
    Ok(ChangeView {
        seq: c.seq,
        subject: header_safe(&subject),
        lead,
        first_reading: c.from.is_none(),
        at: full_time_of(&c.at, clock.tz),
        outlets: named_list(c.evidence.iter().map(|e| {
            e.outlet.as_deref().map_or_else(
                || "an unnamed outlet".to_string(),
                |o| bounded(o, MAX_OUTLET_CHARS),
            )
        })),
        evidence: c
            .evidence
            .iter()
            .map(|e| EvidenceView {
                repeat: false,
                story: e.story.clone(),
                title: bounded(&e.title, MAX_TITLE_CHARS),
                outlet: e.outlet.as_deref().map(|o| bounded(o, MAX_OUTLET_CHARS)),
                outlet_url: outlet_home(e.url.as_deref()),
                published: e.published.as_deref().map(|p| full_time_of(p, clock.tz)),
                ago: e
                    .published
                    .as_deref()
                    .and_then(parse_time)
                    .map(|t| ago(t, clock.now)),
                url: safe_url(e.url.as_deref()),
                show_sentence: adds_to(&e.sentence, &e.title),
                sentence: bounded(&e.sentence, MAX_SENTENCE_CHARS),
            })
            .collect(),
        page,
        chart,
    })
}

/// The pair's timeline as an image with its words, or none when it cannot be drawn
/// (then the digest simply goes without it).
fn chart_view(
    seq: u64,
    actor: &str,
    issue: &str,
    points: &[TimelinePoint],
    clock: Clock,
) -> Option<ChartView> {
    let refs: Vec<&TimelinePoint> = points.iter().collect();
    let layout = timeline(format!("{actor} on {issue}"), &refs, None, clock.now)?;
    let png = super::chart::png(&layout)
        .map_err(|e| tracing::warn!(error = %e, "a digest goes without its timeline"))
        .ok()?;
    // The line names the last few stances; the picture shows them all.
    let recent = points.len().saturating_sub(MAX_TIMELINE_STEPS);
    let mut steps: Vec<String> = points[recent..]
        .iter()
        .map(|p| {
            let when = parse_time(&p.at)
                .map(|t| short_date(t, clock.now, clock.tz))
                .unwrap_or_else(|| p.at.clone());
            let held = match p.to {
                Stance::Support => "supports",
                Stance::Oppose => "opposes",
                Stance::Neutral => "neutral",
            };
            format!("{held} from {when}")
        })
        .collect();
    if recent > 0 {
        steps.insert(0, "…".to_string());
    }
    let line = steps.join(" → ");
    Some(ChartView {
        cid: format!("timeline-{seq}@vigia"),
        alt: format!("Timeline of {actor} on {issue}: {line}"),
        line,
        png,
    })
}

/// The other relevant stories of these topics first seen after `after`, each once,
/// leaving out the articles already shown as evidence.
/// The label of the first issue (in the topic's order) on which a stance was read in
/// this article, if any.
fn issue_of(
    conn: &Connection,
    config: &Config,
    article_id: &str,
) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT topic, issue FROM stance_observations WHERE article_id = ?1",
    )?;
    let found: Vec<(String, String)> = stmt
        .query_map([article_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let first = found
        .iter()
        .filter_map(|(topic, issue)| {
            let rules = config.topics.iter().find(|t| &t.id == topic)?;
            let rank = rules
                .issues
                .iter()
                .position(|i| &i.id == issue)
                .unwrap_or(usize::MAX);
            Some((rank, rules.issue_label(issue)))
        })
        .min();
    Ok(first.map(|(_, label)| label))
}

/// Stories grouped under the issue they touch, issues in the order they first come,
/// stories touching none last.
#[derive(Debug, Clone, Serialize)]
pub struct StoryGroup {
    pub heading: String,
    pub stories: Vec<StoryView>,
}

pub(super) fn grouped(stories: &[StoryView]) -> Vec<StoryGroup> {
    let mut groups: Vec<StoryGroup> = Vec::new();
    let mut other = Vec::new();
    for story in stories {
        match &story.issue {
            Some(issue) => match groups.iter_mut().find(|g| &g.heading == issue) {
                Some(group) => group.stories.push(story.clone()),
                None => groups.push(StoryGroup {
                    heading: issue.clone(),
                    stories: vec![story.clone()],
                }),
            },
            None => other.push(story.clone()),
        }
    }
    if !other.is_empty() {
        let heading = if groups.is_empty() {
            "Stories"
        } else {
            "Other stories"
        };
        groups.push(StoryGroup {
            heading: heading.to_string(),
            stories: other,
        });
    }
    groups
}

pub(super) fn stories(
    conn: &Connection,
    config: &Config,
    topics: &[String],
    after: &str,
    shown: &HashSet<String>,
    clock: Clock,
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
            issue: issue_of(conn, config, &r.0).ok().flatten(),
            title: bounded(&r.1, MAX_TITLE_CHARS),
            outlet: r.4.as_deref().map(|o| bounded(o, MAX_OUTLET_CHARS)),
            outlet_url: outlet_home(r.3.as_deref()),
            published: r.5.as_deref().map(|p| full_time_of(p, clock.tz)),
            url: safe_url(r.3.as_deref()),
            copies,
        }
    })
    .collect();
    out.truncate(MAX_STORIES);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_text_in_a_digest_is_visible_and_bounded() {
        let long = "x".repeat(10_000);
        let cut = bounded(&long, MAX_TITLE_CHARS);
        assert_eq!(cut.chars().count(), MAX_TITLE_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(
            bounded("M\u{e9}xico\u{202E}\u{200B} rechaza", 50),
            "M\u{e9}xico rechaza"
        );
        assert_eq!(bounded("ñandú", 3), "ñan…");
    }

    fn story(issue: Option<&str>, title: &str) -> StoryView {
        StoryView {
            issue: issue.map(str::to_string),
            title: title.into(),
            outlet: None,
            outlet_url: None,
            published: None,
            url: None,
            copies: 1,
        }
    }

    #[test]
    fn stories_are_grouped_under_their_issue_and_the_rest_last() {
        let groups = grouped(&[
            story(Some("Troops"), "a"),
            story(None, "b"),
            story(Some("Cooperation"), "c"),
            story(Some("Troops"), "d"),
        ]);
        let shape: Vec<(&str, Vec<&str>)> = groups
            .iter()
            .map(|g| {
                (
                    g.heading.as_str(),
                    g.stories.iter().map(|s| s.title.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("Troops", vec!["a", "d"]),
                ("Cooperation", vec!["c"]),
                ("Other stories", vec!["b"])
            ]
        );
        assert_eq!(grouped(&[story(None, "b")])[0].heading, "Stories");
    }

    #[test]
    fn a_sentence_adds_to_a_headline_only_when_it_says_more() {
        assert!(!adds_to("Mexico rejects raids.", "Mexico rejects raids"));
        assert!(!adds_to(
            "mexico rejects raids",
            "Mexico rejects raids, minister says"
        ));
        assert!(adds_to(
            "The minister said Mexico would not allow it.",
            "Mexico rejects raids"
        ));
        assert_eq!(
            named_list(["A".to_string(), "B".into(), "A".into(), "C".into()]),
            "A, B and C"
        );
        assert_eq!(
            outlet_home(Some("https://news.example.org/a/b?c=d")).as_deref(),
            Some("https://news.example.org/")
        );
        assert_eq!(outlet_home(Some("javascript:alert(1)")), None);
    }
}
