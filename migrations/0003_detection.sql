-- Detection's projections: each article's latest classification, and the stance
-- observations read from it under those rules. Reclassifying under new rules replaces
-- an article's rows here; the log keeps every classification.
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
    score      REAL NOT NULL,
    PRIMARY KEY (article_id, topic)
);
CREATE INDEX article_topics_topic ON article_topics (topic);

CREATE TABLE stance_observations (
    seq         INTEGER PRIMARY KEY,        -- the StanceObserved event's seq
    article_id  TEXT NOT NULL,
    feed_id     TEXT NOT NULL,
    topic       TEXT NOT NULL,
    issue       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    stance      TEXT NOT NULL,
    confidence  REAL NOT NULL,
    evidence    TEXT NOT NULL,
    rules_hash  TEXT NOT NULL,
    url         TEXT,
    outlet      TEXT,
    published   TEXT,
    observed_at TEXT NOT NULL
);
CREATE INDEX stance_observations_pair ON stance_observations (issue, actor, observed_at);
CREATE INDEX stance_observations_article ON stance_observations (article_id);
