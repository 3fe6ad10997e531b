-- Stance tracking, subscribers and the outbox: projections of StanceChanged,
-- Subscriber* and Digest* events.
CREATE TABLE stances (
    topic       TEXT NOT NULL,
    issue       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    stance      TEXT NOT NULL,
    since       TEXT NOT NULL,              -- when the change was recorded
    since_seq   INTEGER NOT NULL,           -- the StanceChanged event
    evidence    TEXT NOT NULL,              -- JSON array of Evidence
    PRIMARY KEY (topic, issue, actor)
);

CREATE TABLE stance_history (
    seq         INTEGER PRIMARY KEY,        -- the StanceChanged event
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
    email       TEXT PRIMARY KEY,           -- lower-cased
    address     TEXT NOT NULL,              -- as given
    name        TEXT,
    topics      TEXT NOT NULL,              -- JSON array of topic ids
    digest      TEXT NOT NULL,              -- "on-change" or a cron schedule
    status      TEXT NOT NULL,              -- pending | confirmed | unsubscribed
    via         TEXT NOT NULL,
    changed_at  TEXT NOT NULL
);

CREATE TABLE outbox (
    digest_id        TEXT PRIMARY KEY,
    recipient        TEXT NOT NULL,
    reason           TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    queued_seq       INTEGER NOT NULL,      -- the DigestQueued event, which holds the message
    queued_at        TEXT NOT NULL,
    status           TEXT NOT NULL,         -- queued | sent | failed (permanent)
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    retry_not_before TEXT,
    sent_at          TEXT,
    changes          TEXT NOT NULL          -- JSON array of StanceChanged seqs
);
CREATE INDEX outbox_status ON outbox (status, retry_not_before);
CREATE INDEX outbox_recipient ON outbox (recipient, queued_seq);
