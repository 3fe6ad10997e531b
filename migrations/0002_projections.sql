-- Projections of the core: feed health and the current state of each article.
-- Their rows are rebuilt by `vigia replay`; nothing here is the source of truth.
CREATE TABLE feed_health (
    feed_id          TEXT PRIMARY KEY,
    url              TEXT NOT NULL,           -- the URL requested at the last poll
    moved_from       TEXT,                    -- the configured URL that a permanent redirect moved ...
    moved_to         TEXT,                    -- ... to here; polled instead while the config still names moved_from
    last_poll_at     TEXT,
    last_success_at  TEXT,
    last_status      INTEGER,
    last_error_kind  TEXT,
    last_error       TEXT,
    error_streak     INTEGER NOT NULL DEFAULT 0,
    retry_not_before TEXT,
    etag             TEXT,
    last_modified    TEXT,
    min_interval_s   INTEGER,
    gone             INTEGER NOT NULL DEFAULT 0,
    polls            INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    articles         INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE articles (
    article_id    TEXT PRIMARY KEY,
    feed_id       TEXT NOT NULL,
    guid          TEXT,
    url           TEXT,
    title         TEXT NOT NULL,
    summary       TEXT NOT NULL,
    content       TEXT NOT NULL,
    lang          TEXT,
    published     TEXT,
    outlet        TEXT,
    content_hash  TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    discovered_at TEXT NOT NULL,
    revised_at    TEXT
);
CREATE INDEX articles_feed ON articles (feed_id);
