-- Self-service subscriptions and the web pages.
-- A confirmed subscriber may ask for new settings: the request waits in `pending`
-- until its link is followed, so an unconfirmed request never changes what a
-- subscriber receives. `subscribed_since` is when the current subscription began
-- (links issued before it belong to an earlier one). `used_tokens` holds the ids of
-- signed links already followed, so each works once.
ALTER TABLE subscribers ADD COLUMN pending TEXT;           -- JSON Subscription awaiting confirmation
ALTER TABLE subscribers ADD COLUMN requested_at TEXT;      -- the last request's time
ALTER TABLE subscribers ADD COLUMN subscribed_since TEXT;  -- when the current confirmed subscription began

CREATE TABLE used_tokens (
    token_id  TEXT PRIMARY KEY,
    purpose   TEXT NOT NULL,                 -- confirm | unsubscribe
    email     TEXT NOT NULL,
    used_at   TEXT NOT NULL
);

-- The subscribers projection gained columns: rebuild it from the log.
DELETE FROM subscribers;
DELETE FROM projection_checkpoints WHERE projection = 'subscribers';
