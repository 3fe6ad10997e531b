//! Detections: each article's latest classification (`classifications`,
//! `article_topics`) and the stance observations read under those rules
//! (`stance_observations`). Stance tracking and digests read these.

use rusqlite::Connection;

use super::sql::Tx;
use super::Projection;
use crate::events::Event;
use crate::store::{StoreError, StoredEvent};

pub struct Detections;

impl Projection for Detections {
    fn name(&self) -> &'static str {
        "detections"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["classifications", "article_topics", "stance_observations"]
    }

    fn handles(&self, kind: &str) -> bool {
        matches!(kind, "ArticleClassified" | "StanceObserved")
    }

    fn apply(
        &self,
        tx: &mut dyn Tx,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), StoreError> {
        match event {
            Event::ArticleClassified(c) => {
                // A new reading replaces the article's earlier one (older rules or text).
                tx.execute(
                    "DELETE FROM article_topics WHERE article_id = ?1",
                    &[&c.article_id],
                )?;
                tx.execute(
                    "DELETE FROM stance_observations WHERE article_id = ?1",
                    &[&c.article_id],
                )?;
                let topics = serde_json::to_string(&c.topics).unwrap_or_else(|_| "[]".into());
                tx.execute(
                    "INSERT INTO classifications (article_id, feed_id, rules_hash, content_hash, topics, classified_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (article_id) DO UPDATE SET feed_id = excluded.feed_id, rules_hash = excluded.rules_hash,
                         content_hash = excluded.content_hash, topics = excluded.topics, classified_at = excluded.classified_at",
                    &[&c.article_id, &c.feed, &c.rules_hash, &c.content_hash, &topics, &stored.recorded_at],
                )?;
                for t in &c.topics {
                    tx.execute(
                        "INSERT INTO article_topics (article_id, topic, score) VALUES (?1, ?2, ?3)
                         ON CONFLICT (article_id, topic) DO UPDATE SET score = excluded.score",
                        &[&c.article_id, &t.id, &t.score],
                    )?;
                }
            }
            Event::StanceObserved(o) => {
                tx.execute(
                    "INSERT INTO stance_observations (seq, article_id, feed_id, topic, issue, actor, stance, confidence,
                         evidence, rules_hash, url, outlet, published, observed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    &[
                        &stored.seq,
                        &o.article_id,
                        &o.feed,
                        &o.topic,
                        &o.issue,
                        &o.actor,
                        &o.stance,
                        &o.confidence,
                        &o.evidence,
                        &o.rules_hash,
                        &o.url,
                        &o.outlet,
                        &o.published,
                        &stored.recorded_at,
                    ],
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A relevant article as the front page lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RelevantArticle {
    pub article_id: String,
    pub topic: String,
    pub title: String,
    pub summary: String,
    pub url: Option<String>,
    pub outlet: Option<String>,
    pub published: Option<String>,
    pub discovered_at: String,
}

impl Detections {
    /// The articles whose latest reading found them relevant to some topic.
    pub fn relevant_articles(
        conn: &Connection,
    ) -> rusqlite::Result<std::collections::HashSet<String>> {
        let mut stmt = conn.prepare("SELECT DISTINCT article_id FROM article_topics")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    }

    /// The newest relevant articles (of any topic), newest first, at most `limit`.
    /// Articles are inserted once, in discovery order, so walking the table backwards
    /// by rowid and probing their topics reads about `limit` rows however large the
    /// log grows, with no index to keep up on every insert.
    pub fn recent_relevant(
        conn: &Connection,
        limit: usize,
    ) -> rusqlite::Result<Vec<RelevantArticle>> {
        let mut stmt = conn.prepare_cached(
            "SELECT a.article_id, t.topic, a.title,
                    COALESCE(json_extract(e.payload, '$.summary'), ''),
                    a.url, a.outlet, a.published, a.discovered_at
             FROM articles a JOIN article_topics t ON t.article_id = a.article_id
                 JOIN events e ON e.seq = a.body_seq
             ORDER BY a.rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(RelevantArticle {
                article_id: r.get(0)?,
                topic: r.get(1)?,
                title: r.get(2)?,
                summary: r.get(3)?,
                url: r.get(4)?,
                outlet: r.get(5)?,
                published: r.get(6)?,
                discovered_at: r.get(7)?,
            })
        })?;
        rows.collect()
    }
}
