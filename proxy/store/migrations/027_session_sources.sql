-- Sessions from every source: besides the ones captured from a charger's OCPP traffic, sessions
-- a partner supplies (OCPI CDRs, pushed through the partner API, imported from a CSV file) go to
-- the same table, with where they came from and the evidence they came with.
--
-- * `source`: 'ocpp' (captured; every row before this migration), 'ocpi', 'api' or 'csv';
-- * `source_ref`: the source's own id of the session (a CDR id, the partner's session id, a
--   file's row), unique per partner and source, so supplying a session again changes nothing;
-- * `source_partner_id`: the partner that supplied it (NULL for 'ocpp');
-- * `duplicate_of`: another session of the same charging event that counts instead of this one
--   (the rule: `proxy.ingest.dedup`); the duplicate stays as evidence and is never counted. No
--   foreign key: the purge may delete the kept session before its duplicate, and the duplicate
--   must stay one;
-- * `reported_energy_wh`: the energy the source reported. `energy_wh` keeps taking the best
--   figure: signed readings, then what the source reported, then the meter readings, so an OCPP
--   session's energy is what it was.
-- A supplied session has no OCPP transaction (`transaction_id` NULL), so capture, which finds
-- sessions by charger and transaction id, never touches one.
--
-- Redefining `energy_wh` rewrites the table (as 004 did): run it in a maintenance window on a
-- large database.

ALTER TABLE sessions
    ADD COLUMN source text NOT NULL DEFAULT 'ocpp'
        CONSTRAINT sessions_source_known CHECK (source IN ('ocpp', 'ocpi', 'api', 'csv')),
    ADD COLUMN source_ref text,
    ADD COLUMN source_partner_id text REFERENCES partners (partner_id),
    ADD COLUMN duplicate_of bigint,
    ADD COLUMN reported_energy_wh numeric,
    ALTER COLUMN transaction_id DROP NOT NULL,
    DROP COLUMN energy_source,
    DROP COLUMN energy_wh;

ALTER TABLE sessions
    ADD COLUMN energy_wh numeric GENERATED ALWAYS AS (
        CASE WHEN signed_stop_wh IS NOT NULL AND signed_start_wh IS NOT NULL THEN signed_stop_wh - signed_start_wh
             WHEN reported_energy_wh IS NOT NULL THEN reported_energy_wh
             WHEN meter_stop_wh IS NOT NULL THEN meter_stop_wh - meter_start_wh
             ELSE last_reading_wh - meter_start_wh END
    ) STORED,
    ADD COLUMN energy_source text GENERATED ALWAYS AS (
        CASE WHEN signed_stop_wh IS NOT NULL AND signed_start_wh IS NOT NULL THEN 'signed'
             WHEN reported_energy_wh IS NOT NULL THEN 'reported'
             WHEN meter_stop_wh IS NOT NULL AND meter_start_wh IS NOT NULL THEN 'stop_minus_start'
             WHEN last_reading_wh IS NOT NULL AND meter_start_wh IS NOT NULL THEN 'last_sample'
        END
    ) STORED,
    ADD CONSTRAINT sessions_captured_or_supplied CHECK (
        CASE WHEN source = 'ocpp'
             THEN transaction_id IS NOT NULL AND source_ref IS NULL AND source_partner_id IS NULL
                  AND reported_energy_wh IS NULL
             ELSE transaction_id IS NULL AND source_ref IS NOT NULL AND source_ref <> ''
                  AND source_partner_id IS NOT NULL
                  AND reported_energy_wh IS NOT NULL
        END),
    ADD CONSTRAINT sessions_not_its_own_duplicate CHECK (duplicate_of <> session_id);

CREATE UNIQUE INDEX sessions_source_ref ON sessions (source_partner_id, source, source_ref)
    WHERE source <> 'ocpp';
CREATE INDEX sessions_duplicate_of ON sessions (duplicate_of) WHERE duplicate_of IS NOT NULL;

-- What a source supplied with a session, as it supplied it: its own transaction id, the signed
-- meter data (OCMF) and why that gave the session its meter class, and a fingerprint of the
-- whole record (the same `source_ref` again with another fingerprint is refused, never applied).
-- Kept with the session for the retention period; only the purge deletes it.
CREATE TABLE session_source_records (
    session_id     bigint PRIMARY KEY REFERENCES sessions ON DELETE CASCADE,
    transaction_id text,
    signed_data    text,
    evidence       text NOT NULL,
    fingerprint    text NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER session_source_records_retained BEFORE UPDATE OR DELETE ON session_source_records
    FOR EACH ROW EXECUTE FUNCTION refuse_unless_purged();
