-- Session capture: every event as received, the chargers' boot facts, sessions and meter samples.

-- Every event the tracker emitted, once (event ids are deterministic: a replay inserts nothing).
CREATE TABLE charger_events (
    event_id    uuid PRIMARY KEY,
    identity    text        NOT NULL,
    kind        text        NOT NULL,
    received_at timestamptz NOT NULL,
    body        jsonb       NOT NULL
);
CREATE INDEX charger_events_identity_received ON charger_events (identity, received_at);

-- What each charger said about itself at its last boot (the meter facts are MID evidence).
CREATE TABLE charger_boots (
    identity      text PRIMARY KEY,
    vendor        text NOT NULL,
    model         text NOT NULL,
    serial        text,
    firmware      text,
    meter_type    text,
    meter_serial  text,
    booted_at     timestamptz NOT NULL
);

-- One row per transaction of a charger, kept current from the events.
CREATE TABLE sessions (
    session_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identity         text        NOT NULL,
    transaction_id   text        NOT NULL,
    connector_id     integer,
    evse_id          integer,
    id_tag           text,
    started_at       timestamptz,
    stopped_at       timestamptz,
    meter_start_wh   numeric,
    meter_stop_wh    numeric,
    first_reading_at timestamptz,
    last_reading_at  timestamptz,
    last_reading_wh  numeric,
    energy_wh        numeric GENERATED ALWAYS AS (
        CASE WHEN meter_stop_wh IS NOT NULL THEN meter_stop_wh - meter_start_wh
             ELSE last_reading_wh - meter_start_wh END
    ) STORED,
    energy_source    text GENERATED ALWAYS AS (
        CASE WHEN meter_stop_wh IS NOT NULL AND meter_start_wh IS NOT NULL THEN 'stop_minus_start'
             WHEN last_reading_wh IS NOT NULL AND meter_start_wh IS NOT NULL THEN 'last_sample'
        END
    ) STORED,
    status           text        NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'completed', 'orphaned', 'rejected')),
    stop_reason      text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (identity, transaction_id)
);
CREATE INDEX sessions_active ON sessions (updated_at) WHERE status = 'active';

-- Meter samples of sessions, narrow rows: codes instead of repeated strings.
CREATE TABLE measurands (
    code integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE
);

CREATE TABLE meter_samples (
    session_id  bigint      NOT NULL REFERENCES sessions ON DELETE CASCADE,
    sampled_at  timestamptz NOT NULL,
    measurand   integer     NOT NULL REFERENCES measurands,
    phase       text,
    location    text,
    context     text,
    value       numeric,
    signed_data text,
    event_id    uuid        NOT NULL
);
CREATE INDEX meter_samples_session ON meter_samples (session_id, sampled_at);
