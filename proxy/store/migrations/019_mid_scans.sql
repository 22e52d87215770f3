-- MID scans run through the partner API: a partner's portfolio weighed charger by charger for ERE
-- (`proxy.ere.core.mid_scan`), kept as the report the partner got. A report is never updated: a
-- new scan is a new report.

CREATE TABLE mid_scans (
    scan_id                   text PRIMARY KEY CHECK (scan_id ~ '^scn_[a-z0-9]{20}$'),
    partner_id                text NOT NULL REFERENCES partners,
    key_id                    text NOT NULL REFERENCES partner_api_keys,
    created_at                timestamptz NOT NULL DEFAULT now(),
    price_per_kwh             numeric NOT NULL CHECK (price_per_kwh >= 0),
    -- Totals per verdict: chargers, yearly kWh and yearly euros at `price_per_kwh`.
    chargers                  integer NOT NULL CHECK (chargers > 0),
    qualifies                 integer NOT NULL CHECK (qualifies >= 0),
    needs_check               integer NOT NULL CHECK (needs_check >= 0),
    does_not_qualify          integer NOT NULL CHECK (does_not_qualify >= 0),
    qualifies_kwh             numeric NOT NULL CHECK (qualifies_kwh >= 0),
    needs_check_kwh           numeric NOT NULL CHECK (needs_check_kwh >= 0),
    does_not_qualify_kwh      numeric NOT NULL CHECK (does_not_qualify_kwh >= 0),
    qualifies_eur             numeric NOT NULL CHECK (qualifies_eur >= 0),
    needs_check_eur           numeric NOT NULL CHECK (needs_check_eur >= 0),
    does_not_qualify_eur      numeric NOT NULL CHECK (does_not_qualify_eur >= 0),
    CHECK (chargers = qualifies + needs_check + does_not_qualify)
);
-- A partner's reports in creation order (the API pages through them by this key).
CREATE INDEX mid_scans_partner_created ON mid_scans (partner_id, created_at, scan_id);

-- One charger of a scan: the input as the partner gave it, the verdict and why, and the
-- yearly estimate with the kWh it rests on.
CREATE TABLE mid_scan_items (
    scan_id       text    NOT NULL REFERENCES mid_scans,
    position      integer NOT NULL CHECK (position >= 0),
    input         jsonb   NOT NULL,
    seen          boolean NOT NULL,
    verdict       text    NOT NULL CHECK (verdict IN ('qualifies', 'needs_check', 'does_not_qualify')),
    reason_code   text    NOT NULL,
    reason        text    NOT NULL,
    kwh_basis     text    NOT NULL
                  CHECK (kwh_basis IN ('observed', 'observed-annualised', 'declared', 'none')),
    observed_kwh  numeric,
    observed_days integer CHECK (observed_days >= 0),
    kwh_per_year  numeric NOT NULL CHECK (kwh_per_year >= 0),
    eur_per_year  numeric NOT NULL CHECK (eur_per_year >= 0),
    PRIMARY KEY (scan_id, position)
);

CREATE TRIGGER mid_scans_never_updated BEFORE UPDATE ON mid_scans
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('a scan report is kept as it was given');
CREATE TRIGGER mid_scan_items_never_updated BEFORE UPDATE ON mid_scan_items
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('a scan report is kept as it was given');
