-- The projections, beside the log as on SQLite: the same tables and columns, in the
-- same order, as SQLite's migrations 0001-0006 leave them, written by the same
-- `apply` code (src/projections/). Nothing here is the source of truth: `vigia
-- replay` (projections::rebuild) clears and refills them from `events`.
--
-- Types: BIGINT for every integer (positions, counts, statuses), DOUBLE PRECISION for
-- scores, BOOLEAN where SQLite keeps 0/1. Times stay the RFC 3339 UTC text the log
-- records (`recorded_at`) and the payloads carry, so rows compare equal across the two
-- engines and text order is time order, as on SQLite. JSON columns (topics,
-- evidence, changes, pending) hold the same serialised text as SQLite's; an article's
-- text stays in its event (`body_seq`): on PostgreSQL a reader takes it with
-- `payload->>'summary'` where SQLite uses json_extract.

-- Where each projection has got to in the log; written in the same transaction as its rows.
CREATE TABLE projection_checkpoints (
    projection TEXT PRIMARY KEY,
    seq        BIGINT NOT NULL
);

CREATE TABLE feed_health (
    feed_id          TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    moved_from       TEXT,
    moved_to         TEXT,
    last_poll_at     TEXT,
    last_success_at  TEXT,
    last_status      BIGINT,
    last_error_kind  TEXT,
    last_error       TEXT,
    error_streak     BIGINT NOT NULL DEFAULT 0,
    retry_not_before TEXT,
    etag             TEXT,
    last_modified    TEXT,
    min_interval_s   BIGINT,
    gone             BOOLEAN NOT NULL DEFAULT FALSE,
    polls            BIGINT NOT NULL DEFAULT 0,
    failures         BIGINT NOT NULL DEFAULT 0,
    articles         BIGINT NOT NULL DEFAULT 0
);

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
    revision      BIGINT NOT NULL,
    body_seq      BIGINT NOT NULL,           -- the event whose payload holds the current text
    discovered_at TEXT NOT NULL,
    revised_at    TEXT
);
CREATE INDEX articles_feed ON articles (feed_id);

CREATE TABLE classifications (
    article_id    TEXT PRIMARY KEY,
    feed_id       TEXT NOT NULL,
    rules_hash    TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    topics        TEXT NOT NULL,            -- JSON array of {id, score, matched}
    classified_at TEXT NOT NULL
);

CREATE TABLE article_topics (
    article_id TEXT NOT NULL,
    topic      TEXT NOT NULL,
    score      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (article_id, topic)
);
CREATE INDEX article_topics_topic ON article_topics (topic);

CREATE TABLE stance_observations (
    seq         BIGINT PRIMARY KEY,         -- the StanceObserved event's seq
    article_id  TEXT NOT NULL,
    feed_id     TEXT NOT NULL,
    topic       TEXT NOT NULL,
    issue       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    stance      TEXT NOT NULL,
    confidence  DOUBLE PRECISION NOT NULL,
    evidence    TEXT NOT NULL,
    rules_hash  TEXT NOT NULL,
    url         TEXT,
    outlet      TEXT,
    published   TEXT,
    observed_at TEXT NOT NULL
);
CREATE INDEX stance_observations_pair ON stance_observations (issue, actor, observed_at);
CREATE INDEX stance_observations_article ON stance_observations (article_id);

CREATE TABLE stances (
    topic       TEXT NOT NULL,
    issue       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    stance      TEXT NOT NULL,
    since       TEXT NOT NULL,
    since_seq   BIGINT NOT NULL,
    evidence    TEXT NOT NULL,              -- JSON array of Evidence
    PRIMARY KEY (topic, issue, actor)
);

CREATE TABLE stance_history (
    seq         BIGINT PRIMARY KEY,         -- the StanceChanged event
    topic       TEXT NOT NULL,
    issue       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    from_stance TEXT,
    to_stance   TEXT NOT NULL,
    at          TEXT NOT NULL,
    evidence    TEXT NOT NULL
);
CREATE INDEX stance_history_pair ON stance_history (topic, issue, actor, seq);

CREATE TABLE subscribers (
    email            TEXT PRIMARY KEY,      -- lower-cased
    address          TEXT NOT NULL,         -- as given
    name             TEXT,
    topics           TEXT NOT NULL,         -- JSON array of topic ids
    digest           TEXT NOT NULL,         -- "on-change" or a cron schedule
    status           TEXT NOT NULL,         -- pending | confirmed | unsubscribed
    via              TEXT NOT NULL,
    changed_at       TEXT NOT NULL,
    pending          TEXT,                  -- JSON Subscription awaiting confirmation
    requested_at     TEXT,
    subscribed_since TEXT
);

CREATE TABLE used_tokens (
    token_id  TEXT PRIMARY KEY,
    purpose   TEXT NOT NULL,                -- confirm | unsubscribe
    email     TEXT NOT NULL,
    used_at   TEXT NOT NULL
);

CREATE TABLE outbox (
    digest_id        TEXT PRIMARY KEY,
    recipient        TEXT NOT NULL,
    reason           TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    queued_seq       BIGINT NOT NULL,       -- the DigestQueued event, which holds the message
    queued_at        TEXT NOT NULL,
    status           TEXT NOT NULL,         -- queued | sent | failed (permanent)
    attempts         BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    retry_not_before TEXT,
    sent_at          TEXT,
    changes          TEXT NOT NULL          -- JSON array of StanceChanged seqs
);
CREATE INDEX outbox_status ON outbox (status, retry_not_before);
CREATE INDEX outbox_recipient ON outbox (recipient, queued_seq);
