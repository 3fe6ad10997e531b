//! Detection's results as events: an `ArticleClassified` for every reading that finds
//! an article relevant to a topic (or that replaces one that did), and a
//! `StanceObserved` for every stance found in it. An article that no topic finds
//! relevant, read for the first time, leaves no reading in the log: most of what
//! feeds carry is about something else, its discovery holds the text, and the reading
//! can be made again from that text at any time (`vigia replay --reclassify`). Used at ingestion and when history
//! is reclassified under new rules; idempotency keys name the article text and the
//! rules, so the same reading is never recorded twice, and a new rules version appends
//! new events while the old ones stay in the log.

use crate::detect::{ArticleText, Classification, Detector};
use crate::events::stream;
use crate::events::{ArticleBody, ArticleClassified, Event, StanceObserved, TopicScore};
use crate::projections::ArticleRow;
use crate::store::{NewEvent, SqliteStore, StoreError};

pub fn classify(detector: &Detector, body: &ArticleBody) -> Classification {
    detector.classify(&ArticleText {
        title: &body.title,
        summary: &body.summary,
        content: &body.content,
        lang: body.lang.as_deref(),
    })
}

/// The events that record one reading of one article: none when the reading finds
/// nothing relevant and there is no earlier relevant reading (`replaces_relevant`) to
/// undo.
pub fn events(
    detector: &Detector,
    classification: &Classification,
    article_id: &str,
    feed: &str,
    content_hash: &str,
    body: &ArticleBody,
    replaces_relevant: bool,
) -> Vec<NewEvent> {
    if classification.topics.is_empty() && classification.stances.is_empty() && !replaces_relevant {
        return Vec::new();
    }
    let rules = &detector.rules_hash;
    let stream = stream::article(article_id);
    let mut out = vec![NewEvent::new(
        stream.clone(),
        Event::ArticleClassified(ArticleClassified {
            article_id: article_id.to_string(),
            feed: feed.to_string(),
            content_hash: content_hash.to_string(),
            rules_hash: rules.clone(),
            topics: classification
                .topics
                .iter()
                .map(|t| TopicScore {
                    id: t.id.clone(),
                    score: t.score,
                    matched: t.matched.clone(),
                })
                .collect(),
        }),
    )
    .idempotent(stream::key::classified(article_id, content_hash, rules))];
    for s in &classification.stances {
        out.push(
            NewEvent::new(
                stream.clone(),
                Event::StanceObserved(StanceObserved {
                    article_id: article_id.to_string(),
                    feed: feed.to_string(),
                    topic: s.topic.clone(),
                    issue: s.issue.clone(),
                    actor: s.actor.clone(),
                    stance: s.stance,
                    confidence: s.confidence,
                    evidence: s.evidence.clone(),
                    cues: s.cues.clone(),
                    rules_hash: rules.clone(),
                    url: body.url.clone(),
                    outlet: body.outlet.clone(),
                    published: body.published.clone(),
                }),
            )
            .idempotent(stream::key::stance_observed(
                article_id,
                content_hash,
                rules,
                (&s.topic, &s.issue, &s.actor),
                s.stance.as_str(),
            )),
        );
    }
    out
}

/// Re-runs detection over every stored article under the current rules, without
/// refetching. Returns (articles read, articles whose reading was new).
pub fn reclassify(detector: &Detector, store: &SqliteStore) -> Result<(u64, u64), StoreError> {
    let articles: Vec<ArticleRow> = store.read(crate::projections::Articles::all)?;
    let relevant = store.read(crate::projections::Detections::relevant_articles)?;
    let mut changed = 0;
    for chunk in articles.chunks(500) {
        let mut batch = Vec::new();
        for a in chunk {
            let classification = classify(detector, &a.body);
            batch.extend(events(
                detector,
                &classification,
                &a.article_id,
                &a.feed_id,
                &a.content_hash,
                &a.body,
                relevant.contains(&a.article_id),
            ));
        }
        let appended = store.append(batch)?;
        changed += appended
            .iter()
            .filter(|e| e.is_new() && e.event().kind == "ArticleClassified")
            .count() as u64;
    }
    Ok((articles.len() as u64, changed))
}
