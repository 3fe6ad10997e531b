-- Article text is stored once: in the ArticleDiscovered / ArticleRevised event that
-- carries it. The articles projection keeps what lists and lookups need (title, url,
-- outlet, hashes) and points at that event (body_seq) for the summary and content,
-- instead of holding a second copy of every article's text.
--
-- Projections are rebuilt from the log: the old table goes, and its checkpoint with it,
-- so the next catch-up fills the new one from the events.
DROP TABLE articles;
CREATE TABLE articles (
    article_id    TEXT PRIMARY KEY,
    feed_id       TEXT NOT NULL,
    guid          TEXT,
    url           TEXT,
    title         TEXT NOT NULL,
    lang          TEXT,
    published     TEXT,
    outlet        TEXT,
    content_hash  TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    -- The event whose payload holds the current text (its `body`).
    body_seq      INTEGER NOT NULL,
    discovered_at TEXT NOT NULL,
    revised_at    TEXT
);
CREATE INDEX articles_feed ON articles (feed_id);
DELETE FROM projection_checkpoints WHERE projection = 'articles';
