-- Leases on feeds, for several daemons on one database: a feed is polled by the
-- daemon that holds its lease until it expires (store/postgres/leases.rs). A feed
-- without a row is free; a row whose expires_at has passed is free to take; a
-- release deletes the row. Times are the server's (now()), so the daemons' clocks
-- need not agree.
CREATE TABLE feed_leases (
    feed       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX feed_leases_holder ON feed_leases (holder);
