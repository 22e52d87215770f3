-- Capture dead letters: session events the database refused on their own, or that could not
-- even be encoded or read back, kept whole with the reason (see proxy/dead_letters.py). Nothing a
-- charger sent is ever deleted silently; an operator reads these, fixes the cause and replays.

CREATE TABLE capture_dead_letters (
    -- The event's id; for a record that could not be read back, 'sha256:' and its digest.
    event_id    text        PRIMARY KEY CHECK (length(event_id) <= 100),
    identity    text        NOT NULL,
    kind        text        NOT NULL,  -- the event's kind, or 'unknown'
    received_at timestamptz NOT NULL,
    stage       text        NOT NULL CHECK (stage IN ('encode', 'decode', 'store')),
    error       text        NOT NULL,
    -- How `payload` holds the event: its JSON (as msgspec encodes it), its Python repr when even
    -- that failed, or the msgpack record as spilled when it could not be read back.
    format      text        NOT NULL CHECK (format IN ('json', 'repr', 'msgpack')),
    payload     bytea       NOT NULL,
    dead_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX capture_dead_letters_identity ON capture_dead_letters (identity, received_at);

-- PostgreSQL text and jsonb cannot hold NUL: an event with one is stored with each NUL replaced by
-- U+FFFD, and its exact JSON is kept here. NULL for every other event.
ALTER TABLE charger_events ADD COLUMN original bytea;
