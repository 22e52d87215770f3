-- What each close decided, frozen: the assessment of every session a close counted or excluded
-- (one row per session, quarter and revision; later closes add rows, never overwrite), the
-- referrals that lowered a customer's fee in that close, and the rules the close applied.

-- Assessments become a history. Rows of closes before this migration keep the revision their
-- quarter has now (they were overwritten in place until now; what is left is the last one).
ALTER TABLE session_assessments DROP CONSTRAINT session_assessments_pkey;
ALTER TABLE session_assessments ADD COLUMN revision integer;
UPDATE session_assessments a
    SET revision = coalesce((SELECT max(c.revision) FROM quarter_closes c WHERE c.quarter = a.quarter), 1);
ALTER TABLE session_assessments ALTER COLUMN revision SET NOT NULL;
-- What the verdict was based on (meter class, energy, link period, mandate, limits).
ALTER TABLE session_assessments ADD COLUMN inputs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE session_assessments ADD PRIMARY KEY (session_id, quarter, revision);

-- The assessment a session has now: the one of the latest close that looked at it.
CREATE VIEW current_session_assessments AS
SELECT DISTINCT ON (session_id) *
FROM session_assessments
ORDER BY session_id, quarter DESC, revision DESC;

-- Frozen like the statement lines; only a purge of data past retention may delete them (the
-- purge sets `ere.purge` for its own transaction).
CREATE FUNCTION refuse_assessment_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('ere.purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'assessments of a close are never changed or deleted (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER session_assessments_frozen BEFORE UPDATE OR DELETE ON session_assessments
    FOR EACH ROW EXECUTE FUNCTION refuse_assessment_change();

-- The rules a close applied (fee step per referral, clock tolerances, power margin, grace),
-- and when it was requested, so its figures can be recomputed years later.
ALTER TABLE quarter_closes ADD COLUMN rules jsonb NOT NULL DEFAULT '{}';

-- Which referred customers were active (an eligible session delivered in the quarter) in a
-- close, lowering their referrer's fee.
CREATE TABLE close_referrals (
    quarter     text    NOT NULL,
    revision    integer NOT NULL,
    referrer_id text    NOT NULL REFERENCES customers,
    referred_id text    NOT NULL REFERENCES customers,
    PRIMARY KEY (quarter, revision, referrer_id, referred_id),
    FOREIGN KEY (quarter, revision) REFERENCES quarter_closes
);
CREATE TRIGGER close_referrals_frozen BEFORE UPDATE OR DELETE ON close_referrals
    FOR EACH ROW EXECUTE FUNCTION refuse_assessment_change();

-- The number of active referrals behind a line's fee rate.
ALTER TABLE statement_lines ADD COLUMN active_referrals integer NOT NULL DEFAULT 0
    CHECK (active_referrals >= 0);

-- A fixed discount settable only by SQL gives way to referrals (referral_codes, 010).
ALTER TABLE customers DROP COLUMN referral_discount;
