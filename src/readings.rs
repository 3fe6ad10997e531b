//! Stored readings and the operators' corrections of them.
//!
//! `vigia readings` lists what detection read in stored articles (the least confident
//! first with `--uncertain`); `vigia correct` records an operator's label for one
//! article as a `ReadingCorrected` event on the article's stream; and training takes
//! every corrected article as an example: its stored reading, with the corrections laid
//! over it (the latest correction of a pair wins).

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::config::Config;
use crate::detect::examples::Example;
use crate::detect::Stance;
use crate::events::stream;
use crate::events::{CorrectedStance, Event, ReadingCorrected};
use crate::projections::Articles;
use crate::store::{NewEvent, SqliteStore, StoreError};

/// One stored reading of one article for one topic.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredReading {
    pub article_id: String,
    pub title: String,
    pub topic: String,
    /// The topic's relevance score.
    pub score: f64,
    /// (issue, actor, stance, confidence, evidence), most confident per pair.
    pub stances: Vec<(String, String, String, f64, String)>,
    /// The least of the relevance score and the stances' confidences.
    pub confidence: f64,
}

/// The latest reading of every article that matched a topic; `uncertain` puts the
/// least confident first, else the newest come first.
pub fn list(
    conn: &Connection,
    uncertain: bool,
    limit: usize,
) -> rusqlite::Result<Vec<StoredReading>> {
    let mut stmt = conn.prepare(
        "SELECT t.article_id, a.title, t.topic, t.score FROM article_topics t
         JOIN articles a ON a.article_id = t.article_id
         ORDER BY a.rowid DESC",
    )?;
    let rows: Vec<(String, String, String, f64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stances_of = conn.prepare(
        "SELECT issue, actor, stance, confidence, evidence FROM stance_observations
         WHERE article_id = ?1 AND topic = ?2 ORDER BY confidence DESC, seq",
    )?;
    let mut out = Vec::new();
    for (article_id, title, topic, score) in rows {
        let mut stances: Vec<(String, String, String, f64, String)> = Vec::new();
        for s in stances_of.query_map([&article_id, &topic], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })? {
            let s: (String, String, String, f64, String) = s?;
            if !stances.iter().any(|o| o.0 == s.0 && o.1 == s.1) {
                stances.push(s);
            }
        }
        let confidence = stances.iter().map(|s| s.3).fold(score, f64::min);
        out.push(StoredReading {
            article_id,
            title,
            topic,
            score,
            stances,
            confidence,
        });
    }
    if uncertain {
        out.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
    }
    out.truncate(limit);
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum CorrectionError {
    #[error("no stored article `{0}` (see `vigia readings` for ids)")]
    UnknownArticle(String),
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{topic}` has no {what} `{id}`; it has: {known}")]
    Unknown {
        topic: String,
        what: &'static str,
        id: String,
        known: String,
    },
    #[error("a stance correction needs --issue, --actor and --stance together")]
    IncompletePair,
    #[error("nothing to correct: give --issue/--actor/--stance, --relevant, or both")]
    Nothing,
    #[error("an article that is not relevant cannot carry a stance")]
    Contradiction,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a correction against the config and the stored articles, then records it.
pub fn correct(
    config: &Config,
    store: &SqliteStore,
    correction: ReadingCorrected,
) -> Result<u64, CorrectionError> {
    let Some(rules) = config.topics.iter().find(|t| t.id == correction.topic) else {
        return Err(CorrectionError::UnknownTopic(correction.topic));
    };
    match (&correction.issue, &correction.actor, &correction.stance) {
        (None, None, None) if correction.relevant.is_none() => {
            return Err(CorrectionError::Nothing)
        }
        (None, None, None) => {}
        (Some(issue), Some(actor), Some(stance)) => {
            if !rules.issues.iter().any(|i| &i.id == issue) {
                return Err(unknown(rules, "issue", issue));
            }
            if !rules.actors.iter().any(|a| &a.id == actor) {
                return Err(unknown(rules, "actor", actor));
            }
            if correction.relevant == Some(false) && *stance != CorrectedStance::None {
                return Err(CorrectionError::Contradiction);
            }
        }
        _ => return Err(CorrectionError::IncompletePair),
    }
    let id = correction.article_id.clone();
    if store.read(|c| Articles::get(c, &id))?.is_none() {
        return Err(CorrectionError::UnknownArticle(id));
    }
    let appended = store.append_one(NewEvent::new(
        stream::article(&correction.article_id),
        Event::ReadingCorrected(correction),
    ))?;
    Ok(appended.event().seq)
}

fn unknown(rules: &crate::config::TopicConfig, what: &'static str, id: &str) -> CorrectionError {
    let known: Vec<&str> = if what == "issue" {
        rules.issues.iter().map(|i| i.id.as_str()).collect()
    } else {
        rules.actors.iter().map(|a| a.id.as_str()).collect()
    };
    CorrectionError::Unknown {
        topic: rules.id.clone(),
        what,
        id: id.to_string(),
        known: known.join(", "),
    }
}

/// Every corrected article as a training example, by topic: the stored reading with
/// the corrections laid over it, in the order they were recorded.
pub fn corrected_examples(
    store: &SqliteStore,
) -> Result<BTreeMap<String, Vec<Example>>, StoreError> {
    let mut corrections: Vec<ReadingCorrected> = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_from(after, 10_000, Some("ReadingCorrected"))?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for event in &page {
            if let Ok(Event::ReadingCorrected(c)) = event.decode() {
                corrections.push(c);
            }
        }
    }
    let mut by_article: BTreeMap<(String, String), Vec<ReadingCorrected>> = BTreeMap::new();
    for c in corrections {
        by_article
            .entry((c.topic.clone(), c.article_id.clone()))
            .or_default()
            .push(c);
    }
    let mut out: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    for ((topic, article_id), list) in by_article {
        let Some(article) = store.read(|c| Articles::get(c, &article_id))? else {
            continue;
        };
        let stored = store.read(|c| stored_labels(c, &article_id, &topic))?;
        let mut example = Example {
            id: format!("correction:{article_id}"),
            lang: article.body.lang.clone(),
            title: article.body.title.clone(),
            summary: article.body.summary.clone(),
            url: article.body.url.clone(),
            story: Some(format!("correction:{article_id}")),
            relevant: stored.0,
            issues: stored.1,
            note: Some("operator correction".into()),
        };
        for c in list {
            if let (Some(issue), Some(actor), Some(stance)) = (&c.issue, &c.actor, c.stance) {
                let stance = match stance {
                    CorrectedStance::Support => Some(Stance::Support),
                    CorrectedStance::Oppose => Some(Stance::Oppose),
                    CorrectedStance::Neutral => Some(Stance::Neutral),
                    CorrectedStance::None => None,
                };
                if stance.is_some() {
                    example.relevant = true;
                }
                example
                    .issues
                    .entry(issue.clone())
                    .or_default()
                    .insert(actor.clone(), stance);
            }
            if let Some(relevant) = c.relevant {
                example.relevant = relevant;
            }
        }
        if !example.relevant {
            example.issues.clear();
        }
        out.entry(topic).or_default().push(example);
    }
    Ok(out)
}

type Labels = BTreeMap<String, BTreeMap<String, Option<Stance>>>;

/// What the stored reading says of an article: relevant?, and its most confident
/// stance per pair.
fn stored_labels(
    conn: &Connection,
    article_id: &str,
    topic: &str,
) -> rusqlite::Result<(bool, Labels)> {
    use rusqlite::OptionalExtension;
    let relevant = conn
        .query_row(
            "SELECT 1 FROM article_topics WHERE article_id = ?1 AND topic = ?2",
            [article_id, topic],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    let mut labels: Labels = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT issue, actor, stance FROM stance_observations
         WHERE article_id = ?1 AND topic = ?2 ORDER BY confidence DESC, seq",
    )?;
    for row in stmt.query_map([article_id, topic], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Stance>(2)?,
        ))
    })? {
        let (issue, actor, stance) = row?;
        labels
            .entry(issue)
            .or_default()
            .entry(actor)
            .or_insert(Some(stance));
    }
    Ok((relevant, labels))
}
