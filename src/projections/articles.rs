//! Articles: every article ever seen, with its revision number and a pointer to the
//! event that holds its current text (`body_seq`): the text itself is stored once, in
//! that event's payload, and read from there (SQLite's `json_extract`) by the few who
//! need the summary and content. Ingestion reads this to tell a new item from a
//! changed or unchanged one; detection reads it to reclassify history without
//! refetching.

use rusqlite::{Connection, OptionalExtension};

use super::sql::Tx;
use super::Projection;
use crate::events::{ArticleBody, Event};
use crate::store::{StoreError, StoredEvent};

pub struct Articles;

impl Projection for Articles {
    fn name(&self) -> &'static str {
        "articles"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["articles"]
    }

    fn handles(&self, kind: &str) -> bool {
        matches!(kind, "ArticleDiscovered" | "ArticleRevised")
    }

    fn apply(
        &self,
        tx: &mut dyn Tx,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), StoreError> {
        match event {
            Event::ArticleDiscovered(a) => {
                tx.execute(
                    "INSERT INTO articles (article_id, feed_id, guid, url, title, lang, published,
                         content_hash, revision, body_seq, discovered_at, outlet)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?10, ?11)
                     ON CONFLICT (article_id) DO NOTHING",
                    &[
                        &a.article_id,
                        &a.feed,
                        &a.guid,
                        &a.body.url,
                        &a.body.title,
                        &a.body.lang,
                        &a.body.published,
                        &a.content_hash,
                        &stored.seq,
                        &stored.recorded_at,
                        &a.body.outlet,
                    ],
                )?;
            }
            Event::ArticleRevised(a) => {
                tx.execute(
                    "UPDATE articles SET url = ?2, title = ?3, body_seq = ?4, lang = ?5,
                         published = ?6, content_hash = ?7, revision = ?8, revised_at = ?9
                     WHERE article_id = ?1",
                    &[
                        &a.article_id,
                        &a.body.url,
                        &a.body.title,
                        &stored.seq,
                        &a.body.lang,
                        &a.body.published,
                        &a.content_hash,
                        &a.revision,
                        &stored.recorded_at,
                    ],
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// An article's current state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ArticleRow {
    pub article_id: String,
    pub feed_id: String,
    pub body: ArticleBody,
    pub content_hash: String,
    pub revision: u32,
}

impl Articles {
    /// The stored hash and revision of an article, if it has been seen.
    pub fn fingerprint(
        conn: &Connection,
        article_id: &str,
    ) -> rusqlite::Result<Option<(String, u32)>> {
        conn.prepare_cached("SELECT content_hash, revision FROM articles WHERE article_id = ?1")?
            .query_row([article_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }

    /// One stored article.
    pub fn get(conn: &Connection, article_id: &str) -> rusqlite::Result<Option<ArticleRow>> {
        conn.prepare_cached(&format!("{SELECT_ROW} WHERE a.article_id = ?1"))?
            .query_row([article_id], row)
            .optional()
    }

    pub fn count(conn: &Connection) -> rusqlite::Result<u64> {
        conn.query_row("SELECT COUNT(*) FROM articles", [], |r| r.get(0))
    }

    /// Every stored article, in discovery order.
    pub fn all(conn: &Connection) -> rusqlite::Result<Vec<ArticleRow>> {
        let mut stmt = conn.prepare(&format!(
            "{SELECT_ROW} ORDER BY a.discovered_at, a.article_id"
        ))?;
        let rows = stmt.query_map([], row)?;
        rows.collect()
    }
}

/// A row with its text, read from the event that holds it.
const SELECT_ROW: &str = "SELECT a.article_id, a.feed_id, a.url, a.title,
        COALESCE(json_extract(e.payload, '$.summary'), ''),
        COALESCE(json_extract(e.payload, '$.content'), ''),
        a.lang, a.published, a.content_hash, a.revision, a.outlet
    FROM articles a JOIN events e ON e.seq = a.body_seq";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArticleRow> {
    Ok(ArticleRow {
        article_id: r.get(0)?,
        feed_id: r.get(1)?,
        body: ArticleBody {
            url: r.get(2)?,
            title: r.get(3)?,
            summary: r.get(4)?,
            content: r.get(5)?,
            lang: r.get(6)?,
            published: r.get(7)?,
            outlet: r.get(10)?,
        },
        content_hash: r.get(8)?,
        revision: r.get(9)?,
    })
}
