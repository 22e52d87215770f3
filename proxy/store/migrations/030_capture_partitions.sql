-- Capture at bulk rates: `charger_events` and `meter_samples` partitioned by month of the time
-- the proxy received the event (UTC months), so the purge drops a whole month past retention
-- instead of deleting row by row, and an event row no longer keeps its meter samples a second time.
--
-- * `charger_events.body` is compact: the event's JSON without what its columns hold (event_id,
--   identity, kind) and, for an event whose samples are rows of `meter_samples` (`ordinal` set),
--   without `samples`. `capture_event_body` gives the whole body back (as jsonb, so `::text` reads
--   as before); rows written before this migration keep their samples in the body.
-- * `meter_samples` gains `received_at` (the partition key, its event's receive time),
--   `ordinal` (its place among its event's samples; NULL for rows written before this migration,
--   whose event body holds them) and `detail` (what the columns cannot give back of the sample, NULL
--   in the common case). `capture_sample_body` gives the sample back as its event held it; the
--   rules are those of `proxy.capture.stored_shape`.
-- * Event ids are unique per partition (the key is (event_id, received_at)); the store looks
--   for an event already kept in the recent months before inserting (`proxy.capture.sessions`).
-- * `capture_month_partitions(months)` creates the partitions of both tables for the given
--   months when missing (under a transaction advisory lock, so store processes creating the same
--   month together do not fail); the store process calls it ahead of time and before each batch.
--   A row of a month without a partition still goes in: into the default partition, from which
--   making that month's partition later moves it.
--
-- Existing rows are moved over whole (every row kept; the counts are checked before the old
-- tables go). This rewrites both tables: run it in a maintenance window on a large database.

CREATE FUNCTION capture_month_partitions(months date[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month   date;
    parent  text;
    child   text;
    suffix  text;
    low     timestamptz;
    high    timestamptz;
    stray   boolean;
    purging text;
    made    integer := 0;
    idx     record;
BEGIN
    FOREACH month IN ARRAY months LOOP
        month := date_trunc('month', month)::date;
        suffix := to_char(month, '"y"YYYY"m"MM');
        low := make_timestamptz(extract(year FROM month)::int, extract(month FROM month)::int, 1, 0, 0, 0, 'UTC');
        high := low + interval '1 month';
        FOREACH parent IN ARRAY ARRAY['charger_events', 'meter_samples'] LOOP
            child := parent || '_' || suffix;
            CONTINUE WHEN to_regclass(quote_ident(child)) IS NOT NULL;
            -- One creator at a time; another that got here first may have created it meanwhile.
            PERFORM pg_advisory_xact_lock(hashtextextended('capture_month_partitions', 0));
            CONTINUE WHEN to_regclass(quote_ident(child)) IS NOT NULL;
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE received_at >= $1 AND received_at < $2)',
                           parent || '_default')
                INTO STRICT stray USING low, high;
            IF stray THEN
                -- Rows of this month went to the default partition (written by something that did not
                -- make the month first): they move into the new partition, which is then attached.
                EXECUTE format('CREATE TABLE %I (LIKE %I)', child, parent);
                purging := current_setting('ere.purge', true);
                PERFORM set_config('ere.purge', 'on', true);
                EXECUTE format('WITH moved AS (DELETE FROM %I WHERE received_at >= $1 AND received_at < $2 RETURNING *)'
                               ' INSERT INTO %I SELECT * FROM moved', parent || '_default', child)
                    USING low, high;
                PERFORM set_config('ere.purge', coalesce(purging, ''), true);
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               parent, child, low, high);
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               child, parent, low, high);
            END IF;
            -- Name the partition's indexes after the parent's (charger_events_transaction_y2026m01).
            FOR idx IN
                SELECT c.oid::regclass AS child_index, p.relname AS parent_index
                FROM pg_index x
                JOIN pg_class c ON c.oid = x.indexrelid
                JOIN pg_inherits i ON i.inhrelid = c.oid
                JOIN pg_class p ON p.oid = i.inhparent
                WHERE x.indrelid = to_regclass(quote_ident(child))
            LOOP
                EXECUTE format('ALTER INDEX %s RENAME TO %I', idx.child_index,
                               left(idx.parent_index, 54) || '_' || suffix);
            END LOOP;
            made := made + 1;
        END LOOP;
    END LOOP;
    RETURN made;
END
$$;

-- The old tables step aside (their triggers and indexes go with them).
ALTER TABLE charger_events RENAME TO charger_events_before_030;
ALTER TABLE meter_samples RENAME TO meter_samples_before_030;
ALTER INDEX charger_events_pkey RENAME TO charger_events_before_030_pkey;
ALTER INDEX charger_events_identity_received RENAME TO charger_events_before_030_identity_received;
ALTER INDEX charger_events_transaction RENAME TO charger_events_before_030_transaction;
ALTER INDEX charger_events_assigned_ids RENAME TO charger_events_before_030_assigned_ids;
ALTER INDEX meter_samples_session RENAME TO meter_samples_before_030_session;

CREATE TABLE charger_events (
    event_id    uuid        NOT NULL,
    identity    text        NOT NULL,
    kind        text        NOT NULL,
    received_at timestamptz NOT NULL,
    body        jsonb       NOT NULL,
    original    bytea,
    CONSTRAINT charger_events_pkey PRIMARY KEY (event_id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX charger_events_identity_received ON charger_events (identity, received_at);
CREATE INDEX charger_events_transaction
    ON charger_events (identity, (body->>'transaction_id'), received_at)
    WHERE body->>'transaction_id' IS NOT NULL;
CREATE INDEX charger_events_assigned_ids
    ON charger_events (identity, (body->>'real_id'))
    WHERE kind = 'transaction_id_assigned';

-- Columns in an order that wastes no alignment padding: 8-byte ones, the uuid, 4-byte ones, text.
CREATE TABLE meter_samples (
    session_id  bigint      NOT NULL REFERENCES sessions ON DELETE CASCADE,
    received_at timestamptz NOT NULL,
    sampled_at  timestamptz NOT NULL,
    event_id    uuid        NOT NULL,
    measurand   integer     NOT NULL REFERENCES measurands,
    ordinal     integer,
    value       numeric,
    phase       text,
    location    text,
    context     text,
    signed_data text,
    detail      jsonb
) PARTITION BY RANGE (received_at);
CREATE INDEX meter_samples_session ON meter_samples (session_id, sampled_at);

-- Rows of a month without its partition land here rather than fail; making the month's partition
-- moves them into it (`capture_month_partitions`).
CREATE TABLE charger_events_default PARTITION OF charger_events DEFAULT;
CREATE TABLE meter_samples_default PARTITION OF meter_samples DEFAULT;

CREATE TRIGGER charger_events_retained BEFORE UPDATE OR DELETE ON charger_events
    FOR EACH ROW EXECUTE FUNCTION refuse_unless_purged();
CREATE TRIGGER meter_samples_retained BEFORE DELETE ON meter_samples
    FOR EACH ROW EXECUTE FUNCTION refuse_unless_purged();

-- A meter sample only moves to another session (a provisional 1.6 session merged into its real one).
CREATE OR REPLACE FUNCTION meter_sample_moves_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.sampled_at, NEW.measurand, NEW.phase, NEW.location, NEW.context, NEW.value, NEW.signed_data,
        NEW.event_id, NEW.received_at, NEW.ordinal, NEW.detail)
       IS DISTINCT FROM
       (OLD.sampled_at, OLD.measurand, OLD.phase, OLD.location, OLD.context, OLD.value, OLD.signed_data,
        OLD.event_id, OLD.received_at, OLD.ordinal, OLD.detail)
    THEN
        RAISE EXCEPTION 'meter samples are never changed; only their session may change (a merge)'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER meter_samples_unchanged BEFORE UPDATE ON meter_samples
    FOR EACH ROW EXECUTE FUNCTION meter_sample_moves_only();

-- The partitions the existing rows need, and this month's and the next.
SELECT capture_month_partitions(array(
    SELECT DISTINCT date_trunc('month', received_at AT TIME ZONE 'UTC')::date FROM charger_events_before_030
    UNION
    SELECT DISTINCT date_trunc('month', m.sampled_at AT TIME ZONE 'UTC')::date
    FROM meter_samples_before_030 m
    WHERE NOT EXISTS (SELECT 1 FROM charger_events_before_030 e WHERE e.event_id = m.event_id)
    UNION
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date
    UNION
    SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date));

-- Event rows: the envelope leaves the body where the columns hold the same; samples stay in it.
INSERT INTO charger_events (event_id, identity, kind, received_at, body, original)
SELECT event_id, identity, kind, received_at,
       CASE WHEN body->>'event_id' = event_id::text AND body->>'identity' = identity AND body->>'kind' = kind
            THEN body - 'event_id' - 'identity' - 'kind' ELSE body END,
       original
FROM charger_events_before_030;

-- Sample rows, received when their event was (a sample whose event is gone: when it was sampled).
INSERT INTO meter_samples (session_id, received_at, sampled_at, event_id, measurand, ordinal, value, phase,
                           location, context, signed_data, detail)
SELECT m.session_id, coalesce(e.received_at, m.sampled_at), m.sampled_at, m.event_id, m.measurand, NULL,
       m.value, m.phase, m.location, m.context, m.signed_data, NULL
FROM meter_samples_before_030 m LEFT JOIN charger_events_before_030 e USING (event_id);

DO $$
BEGIN
    IF (SELECT count(*) FROM charger_events) <> (SELECT count(*) FROM charger_events_before_030)
       OR (SELECT count(*) FROM meter_samples) <> (SELECT count(*) FROM meter_samples_before_030) THEN
        RAISE EXCEPTION 'migration 030 would lose capture rows';
    END IF;
END
$$;

DROP TABLE charger_events_before_030;
DROP TABLE meter_samples_before_030;

-- The unit a sample of `measurand` has unless its `detail` says otherwise.
CREATE FUNCTION capture_default_unit(measurand text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN measurand LIKE 'Energy.%' THEN
            CASE WHEN position('.Reactive.' IN measurand) > 0 THEN 'varh'
                 WHEN position('.Apparent.' IN measurand) > 0 THEN 'VAh' ELSE 'Wh' END
        WHEN measurand LIKE 'Power.%' AND measurand <> 'Power.Factor' THEN
            CASE WHEN position('.Reactive.' IN measurand) > 0 THEN 'var' ELSE 'W' END
        WHEN measurand LIKE 'Current.%' THEN 'A'
        WHEN measurand = 'Voltage' THEN 'V'
    END
$$;

-- A meter sample as its event held it: the columns, with what `detail` holds taking precedence.
-- The defaults: timestamp as YYYY-MM-DDTHH:MM:SSZ of sampled_at, value and raw_value the value as
-- text, unit by measurand (`capture_default_unit`), raw_unit the unit, multiplier 0, signed from
-- signed_data alone, no error.
CREATE FUNCTION capture_sample_body(
    sampled_at timestamptz, measurand text, value numeric, phase text, location text, context text,
    signed_data text, detail jsonb
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'timestamp', coalesce(detail->'timestamp',
                              to_jsonb(to_char(sampled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))),
        'measurand', measurand,
        'value', coalesce(detail->'value', to_jsonb(value::text)),
        'unit', unit,
        'raw_value', coalesce(detail->'raw_value', to_jsonb(value::text)),
        'raw_unit', CASE WHEN detail ? 'raw_unit' THEN detail->'raw_unit' ELSE unit END,
        'multiplier', coalesce(detail->'multiplier', '0'::jsonb),
        'phase', phase,
        'location', location,
        'context', context,
        'signed', CASE WHEN detail ? 'signed' THEN detail->'signed'
                       WHEN signed_data IS NULL THEN 'null'::jsonb
                       ELSE jsonb_build_object('signed_meter_data', signed_data, 'signing_method', NULL,
                                               'encoding_method', NULL, 'public_key', NULL) END,
        'error', coalesce(detail->'error', 'null'::jsonb))
    FROM (SELECT CASE WHEN detail ? 'unit' THEN detail->'unit'
                      ELSE to_jsonb(capture_default_unit(measurand)) END) AS u(unit)
$$;

-- An event's whole body: the envelope from its columns, then the stored body, then (for a kind
-- with samples whose body does not hold them) `samples`, the rows of its samples in order.
CREATE FUNCTION capture_event_body(
    body jsonb, event_id uuid, identity text, kind text, samples jsonb
) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('event_id', event_id, 'identity', identity, 'kind', kind) || body
           || CASE WHEN kind IN ('meter_values', 'transaction_stopped', 'transaction_event')
                        AND NOT body ? 'samples'
                   THEN jsonb_build_object('samples', coalesce(samples, '[]'::jsonb))
                   ELSE '{}'::jsonb END
$$;
