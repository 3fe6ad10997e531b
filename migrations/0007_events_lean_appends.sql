-- The event log, rebuilt for cheaper appends, with the same rows, positions and
-- promises (issue 14):
--  * `seq` is a plain INTEGER PRIMARY KEY. AUTOINCREMENT only guards against reusing
--    the position of a deleted highest row, and the log refuses every DELETE, so it
--    bought nothing but a write to sqlite_sequence on every insert.
--  * No CHECK (json_valid(payload)): every payload reaches the log as a
--    serde_json RawValue (serialised by the store, or parsed and checked on import),
--    and re-parsing each one in SQL cost about 7% of an append.
-- Version and schema checks, the unique (stream, version), the indexes and the
-- append-only triggers are as before.
CREATE TABLE events_next (
    seq             INTEGER PRIMARY KEY,  -- global order; never reused, as deletes are refused
    stream          TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    kind            TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    payload         TEXT    NOT NULL,     -- JSON, valid by construction (see above)
    recorded_at     TEXT    NOT NULL,
    idempotency_key TEXT,
    UNIQUE (stream, version)
);
INSERT INTO events_next (seq, stream, version, kind, schema_version, payload, recorded_at, idempotency_key)
    SELECT seq, stream, version, kind, schema_version, payload, recorded_at, idempotency_key
    FROM events ORDER BY seq;
-- Dropping the table drops its triggers and indexes; it fires no DELETE trigger.
DROP TABLE events;
ALTER TABLE events_next RENAME TO events;
CREATE INDEX events_kind ON events (kind, seq);
CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;
CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE refused');
END;
