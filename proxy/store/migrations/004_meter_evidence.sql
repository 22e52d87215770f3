-- Meter evidence: each charger's meter class, its pinned signing key, signed session readings.

ALTER TABLE charger_boots ADD COLUMN meter_class text NOT NULL DEFAULT 'unknown';

-- The public key a charger's meter first signed with ("pinned on first sight"); later signed
-- readings verify against it, so a changed key shows up as signed-unverified.
CREATE TABLE meter_keys (
    identity   text PRIMARY KEY,
    public_key text        NOT NULL,
    pinned_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE sessions
    ADD COLUMN meter_class     text NOT NULL DEFAULT 'unknown'
        CHECK (meter_class IN ('signed-verified', 'signed-unverified', 'declared', 'unknown')),
    ADD COLUMN signed_start_wh numeric,
    ADD COLUMN signed_stop_wh  numeric,
    DROP COLUMN energy_source,
    DROP COLUMN energy_wh;

-- Energy from the best source: signed readings, then stop - start, then the last sample.
ALTER TABLE sessions
    ADD COLUMN energy_wh numeric GENERATED ALWAYS AS (
        CASE WHEN signed_stop_wh IS NOT NULL AND signed_start_wh IS NOT NULL THEN signed_stop_wh - signed_start_wh
             WHEN meter_stop_wh IS NOT NULL THEN meter_stop_wh - meter_start_wh
             ELSE last_reading_wh - meter_start_wh END
    ) STORED,
    ADD COLUMN energy_source text GENERATED ALWAYS AS (
        CASE WHEN signed_stop_wh IS NOT NULL AND signed_start_wh IS NOT NULL THEN 'signed'
             WHEN meter_stop_wh IS NOT NULL AND meter_start_wh IS NOT NULL THEN 'stop_minus_start'
             WHEN last_reading_wh IS NOT NULL AND meter_start_wh IS NOT NULL THEN 'last_sample'
        END
    ) STORED;
