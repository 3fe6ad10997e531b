-- The event log, as in SQLite's 0001: one table, append-only, enforced by the
-- database itself. Positions come from an identity column; appends are serialised
-- by a transaction-level advisory lock (see store/postgres.rs), so a position is
-- never committed after a higher one.
CREATE TABLE events (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream          TEXT NOT NULL,
    version         BIGINT NOT NULL CHECK (version >= 1),
    kind            TEXT NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         JSONB NOT NULL,
    recorded_at     TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    UNIQUE (stream, version)
);
CREATE INDEX events_kind ON events (kind, seq);

CREATE FUNCTION vigia_events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION vigia_events_are_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION vigia_events_are_append_only();
