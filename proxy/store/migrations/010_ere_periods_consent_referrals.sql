-- ERE records an auditor can stand behind: charger links become periods (a move never rewrites
-- the past), mandates carry their consent evidence and can be revoked, and every customer and
-- partner has a referral code. Links and mandates are never deleted; what was recorded is never
-- rewritten (only an open link may be ended, only an unrevoked mandate revoked).

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Refuses the statement; the trigger's argument says what the table allows instead.
CREATE FUNCTION ere_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%: % refused; %', TG_TABLE_NAME, TG_OP, TG_ARGV[0]
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

-- Charger links: one row per period a charger charged on a customer's connection, half-open
-- [valid_from, valid_until) with NULL for "still linked". A session belongs to the link whose
-- period contains the session's end. Periods of one charger never overlap.
ALTER TABLE charger_links DROP CONSTRAINT charger_links_pkey;
ALTER TABLE charger_links
    ADD COLUMN link_id     bigint GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN valid_from  timestamptz,
    ADD COLUMN valid_until timestamptz,
    ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN recorded_by text,
    ADD COLUMN ended_at    timestamptz,
    ADD COLUMN ended_by    text,
    ADD COLUMN end_reason  text;
UPDATE charger_links SET valid_from = linked_at, recorded_at = linked_at, recorded_by = 'migration 010';
ALTER TABLE charger_links DROP COLUMN linked_at;
ALTER TABLE charger_links
    ALTER COLUMN valid_from SET NOT NULL,
    ALTER COLUMN valid_from SET DEFAULT now(),
    ALTER COLUMN recorded_by SET NOT NULL,
    ALTER COLUMN recorded_by SET DEFAULT current_user,
    ADD PRIMARY KEY (link_id),
    ADD CONSTRAINT charger_links_period CHECK (valid_until IS NULL OR valid_until > valid_from),
    ADD CONSTRAINT charger_links_end_recorded CHECK (
        (valid_until IS NULL AND ended_at IS NULL AND ended_by IS NULL AND end_reason IS NULL)
        OR (valid_until IS NOT NULL AND ended_at IS NOT NULL AND ended_by IS NOT NULL AND end_reason IS NOT NULL)),
    ADD CONSTRAINT charger_links_no_overlap
        EXCLUDE USING gist (identity WITH =, tstzrange(valid_from, valid_until, '[)') WITH &&);
CREATE INDEX charger_links_identity ON charger_links (identity, valid_from);

-- A link may only be ended (valid_until and its who/when/why set once); nothing else changes.
CREATE FUNCTION charger_links_end_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.valid_until IS NOT NULL
       OR (to_jsonb(NEW) - ARRAY['valid_until', 'ended_at', 'ended_by', 'end_reason'])
          IS DISTINCT FROM (to_jsonb(OLD) - ARRAY['valid_until', 'ended_at', 'ended_by', 'end_reason']) THEN
        RAISE EXCEPTION 'charger_links: UPDATE refused; a link period is only ended, once'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER charger_links_end_only BEFORE UPDATE ON charger_links
    FOR EACH ROW EXECUTE FUNCTION charger_links_end_only();
CREATE TRIGGER charger_links_never_deleted BEFORE DELETE ON charger_links
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('a link period is ended, never deleted');
CREATE TRIGGER charger_links_never_truncated BEFORE TRUNCATE ON charger_links
    FOR EACH STATEMENT EXECUTE FUNCTION ere_refuse_change('a link period is ended, never deleted');

-- Mandates: how the consent reached us (channel), who recorded it (actor), the consent text the
-- customer agreed to, the signed document's SHA-256, and when the system recorded it (never an
-- input). `backdated`: validity starts before the Dutch date it was recorded. A revocation ends
-- coverage after `revoked_effective` (the last day still covered); the effective end of a
-- mandate is least(valid_until, revoked_effective).
ALTER TABLE mandates
    ADD COLUMN channel              text NOT NULL DEFAULT 'cli' CHECK (channel IN ('cli', 'api', 'import')),
    ADD COLUMN actor                text,
    ADD COLUMN consent_text_version text NOT NULL DEFAULT 'unknown' CHECK (consent_text_version <> ''),
    ADD COLUMN document_sha256      text CHECK (document_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN recorded_at          timestamptz,
    ADD COLUMN backdated            boolean,
    ADD COLUMN revoked_at           timestamptz,
    ADD COLUMN revoked_effective    date,
    ADD COLUMN revocation           jsonb;
UPDATE mandates SET actor = 'migration 010', recorded_at = created_at,
                    backdated = valid_from < (created_at AT TIME ZONE 'Europe/Amsterdam')::date;
ALTER TABLE mandates
    ALTER COLUMN channel SET DEFAULT 'import',
    ALTER COLUMN actor SET NOT NULL,
    ALTER COLUMN actor SET DEFAULT current_user,
    ALTER COLUMN recorded_at SET NOT NULL,
    ALTER COLUMN recorded_at SET DEFAULT now(),
    ALTER COLUMN backdated SET NOT NULL,
    ADD CONSTRAINT mandates_actor CHECK (actor <> ''),
    ADD CONSTRAINT mandates_revocation_complete CHECK (
        (revoked_at IS NULL AND revoked_effective IS NULL AND revocation IS NULL)
        OR (revoked_at IS NOT NULL AND revoked_effective IS NOT NULL AND revocation IS NOT NULL)),
    ADD CONSTRAINT mandates_revoked_within_validity CHECK (
        revoked_effective BETWEEN valid_from - 1 AND valid_until);

-- The system's clock, not the writer, says when a mandate was recorded and revoked.
CREATE FUNCTION mandates_recorded_now() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.recorded_at := now();
    NEW.backdated := NEW.valid_from < (now() AT TIME ZONE 'Europe/Amsterdam')::date;
    IF NEW.revoked_at IS NOT NULL OR NEW.revoked_effective IS NOT NULL OR NEW.revocation IS NOT NULL THEN
        RAISE EXCEPTION 'mandates: INSERT refused; a mandate is recorded unrevoked and revoked later'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER mandates_recorded_now BEFORE INSERT ON mandates
    FOR EACH ROW EXECUTE FUNCTION mandates_recorded_now();

CREATE FUNCTION mandates_revoke_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'mandates: UPDATE refused; the mandate is revoked already'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (to_jsonb(NEW) - ARRAY['revoked_at', 'revoked_effective', 'revocation'])
       IS DISTINCT FROM (to_jsonb(OLD) - ARRAY['revoked_at', 'revoked_effective', 'revocation']) THEN
        RAISE EXCEPTION 'mandates: UPDATE refused; a recorded mandate only changes by its revocation'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    NEW.revoked_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER mandates_revoke_only BEFORE UPDATE ON mandates
    FOR EACH ROW EXECUTE FUNCTION mandates_revoke_only();
CREATE TRIGGER mandates_never_deleted BEFORE DELETE ON mandates
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('a mandate is revoked, never deleted');
CREATE TRIGGER mandates_never_truncated BEFORE TRUNCATE ON mandates
    FOR EACH STATEMENT EXECUTE FUNCTION ere_refuse_change('a mandate is revoked, never deleted');

-- Referral codes: one per customer and one per partner, 8 characters of Crockford's base32.
-- A customer referred by another customer's code lowers that customer's fee (computed by the
-- quarterly close); a partner's code only records which partner brought the customer in.
CREATE TABLE referral_codes (
    code        text PRIMARY KEY CHECK (code ~ '^[0-9A-HJKMNP-TV-Z]{8}$'),
    customer_id text UNIQUE REFERENCES customers,
    partner_id  text UNIQUE REFERENCES partners,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(customer_id, partner_id) = 1)
);

DO $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    owner record;
    random_bytes bytea;
    candidate text;
    position integer;
BEGIN
    FOR owner IN
        SELECT customer_id, NULL::text AS partner_id FROM customers
        UNION ALL SELECT NULL, partner_id FROM partners
    LOOP
        LOOP
            -- bytes of a version-4 UUID that carry no version or variant bits
            random_bytes := uuid_send(gen_random_uuid());
            candidate := '';
            FOREACH position IN ARRAY ARRAY[0, 1, 2, 3, 4, 5, 10, 11] LOOP
                candidate := candidate || substr(alphabet, get_byte(random_bytes, position) % 32 + 1, 1);
            END LOOP;
            EXIT WHEN NOT EXISTS (SELECT 1 FROM referral_codes WHERE code = candidate);
        END LOOP;
        INSERT INTO referral_codes (code, customer_id, partner_id)
        VALUES (candidate, owner.customer_id, owner.partner_id);
    END LOOP;
END $$;

ALTER TABLE customers ADD COLUMN referred_by text REFERENCES referral_codes (code);
CREATE INDEX customers_referred_by ON customers (referred_by);

-- A customer is referred once, never by their own code.
CREATE FUNCTION customers_referred_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.referred_by IS NOT NULL AND NEW.referred_by IS DISTINCT FROM OLD.referred_by THEN
        RAISE EXCEPTION 'customers: UPDATE refused; a customer is referred once'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.referred_by IS NOT NULL
       AND EXISTS (SELECT 1 FROM referral_codes WHERE code = NEW.referred_by AND customer_id = NEW.customer_id) THEN
        RAISE EXCEPTION 'customers: a customer cannot be referred by their own code'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER customers_referred_once BEFORE INSERT OR UPDATE OF referred_by ON customers
    FOR EACH ROW EXECUTE FUNCTION customers_referred_once();
