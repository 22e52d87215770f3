-- A referral says when and by whom it was recorded, and never closes a cycle.
--
-- `referred_at` is the database's clock when `referred_by` was set (a value the writer gives is
-- overwritten); `referred_recorded_by` is the actor the writer names, or the database role when
-- it names none. Neither changes afterwards. A quarter's close counts only referrals recorded
-- before the quarter ended, so one recorded during the grace period, or before the re-close of
-- a reopened quarter, lowers the referrer's fee from the next quarter on.
--
-- Customers referred before this migration get their customer's created_at as referred_at
-- (exact for a referral given at enrolment; for one recorded later it is the earliest moment
-- it can have been recorded, so closes of past quarters count what they counted before) and
-- 'migration 015' as referred_recorded_by.

ALTER TABLE customers
    ADD COLUMN referred_at          timestamptz,
    ADD COLUMN referred_recorded_by text;
UPDATE customers SET referred_at = created_at, referred_recorded_by = 'migration 015'
WHERE referred_by IS NOT NULL;
ALTER TABLE customers
    ADD CONSTRAINT customers_referral_recorded CHECK (
        (referred_by IS NULL AND referred_at IS NULL AND referred_recorded_by IS NULL)
        OR (referred_by IS NOT NULL AND referred_at IS NOT NULL AND referred_recorded_by <> ''));

-- A customer is referred once, never by their own code, never by a customer they referred
-- (directly or down a chain: A refers B, B refers C, C may not refer A). Setting referred_by
-- stamps when and by whom; nothing about a recorded referral changes. Referrals are recorded
-- one at a time (a transaction-scoped advisory lock, also taken by
-- `proxy.ere.admin.referrals.record_referral`), so two referrals recorded together cannot each
-- miss the other's half of a cycle.
CREATE OR REPLACE FUNCTION customers_referred_once() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cycle text[];
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.referred_by IS NOT NULL THEN
        IF NEW.referred_by IS DISTINCT FROM OLD.referred_by THEN
            RAISE EXCEPTION 'customers: UPDATE refused; a customer is referred once'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF (NEW.referred_at, NEW.referred_recorded_by) IS DISTINCT FROM (OLD.referred_at, OLD.referred_recorded_by) THEN
            RAISE EXCEPTION 'customers: UPDATE refused; when and by whom a referral was recorded never changes'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.referred_by IS NULL THEN
        IF NEW.referred_at IS NOT NULL OR NEW.referred_recorded_by IS NOT NULL THEN
            RAISE EXCEPTION 'customers: % refused; a customer not referred has no referral date or recorder', TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM referral_codes WHERE code = NEW.referred_by AND customer_id = NEW.customer_id) THEN
        RAISE EXCEPTION 'customers: a customer cannot be referred by their own code'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    PERFORM pg_advisory_xact_lock(4857012231600164963);
    -- Up the chain of referrers from the code's owner: reaching NEW's customer closes a cycle.
    WITH RECURSIVE chain (customer_id, path) AS (
        SELECT r.customer_id, ARRAY[NEW.customer_id, r.customer_id]
        FROM referral_codes r WHERE r.code = NEW.referred_by AND r.customer_id IS NOT NULL
        UNION ALL
        SELECT r.customer_id, chain.path || r.customer_id
        FROM chain
        JOIN customers c ON c.customer_id = chain.customer_id
        JOIN referral_codes r ON r.code = c.referred_by AND r.customer_id IS NOT NULL
        WHERE chain.customer_id <> NEW.customer_id AND NOT r.customer_id = ANY (chain.path[2:])
    )
    SELECT path INTO cycle FROM chain WHERE customer_id = NEW.customer_id LIMIT 1;
    IF cycle IS NOT NULL THEN
        RAISE EXCEPTION 'customers: referral refused; it would close a cycle: %',
            array_to_string(cycle, ' referred by ')
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    NEW.referred_at := now();
    NEW.referred_recorded_by := coalesce(nullif(NEW.referred_recorded_by, ''), current_user);
    RETURN NEW;
END $$;

DROP TRIGGER customers_referred_once ON customers;
CREATE TRIGGER customers_referred_once
    BEFORE INSERT OR UPDATE OF referred_by, referred_at, referred_recorded_by ON customers
    FOR EACH ROW EXECUTE FUNCTION customers_referred_once();
