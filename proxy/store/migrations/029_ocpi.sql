-- OCPI 2.2.1: partners' platforms (a CPO's back office) that push us CDRs and live sessions.

-- One platform connection of a partner. The operator makes it with a credentials token A
-- (`ere-proxy partners ocpi create`); the platform registers with it and gets token C, which
-- replaces token A. Only the SHA-256 of the token the platform calls with is kept. Token B, the
-- one we would call the platform with, is kept sealed with the registry's key when one is set.
-- A connection is revoked, never deleted, so the CDRs it brought keep naming it.
CREATE TABLE ocpi_platforms (
    platform_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id     text NOT NULL REFERENCES partners,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'registered', 'unregistered', 'revoked')),
    token_sha256   text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    token_b        text,
    token_b_sealed bytea,
    sealed_with    text,
    versions_url   text,
    version        text,
    endpoints      jsonb,
    roles          jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL DEFAULT current_user,
    registered_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_by     text,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE UNIQUE INDEX ocpi_platforms_one_per_partner ON ocpi_platforms (partner_id)
    WHERE status <> 'revoked';

CREATE TRIGGER ocpi_platforms_never_deleted BEFORE DELETE ON ocpi_platforms
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('an OCPI platform is revoked, never deleted');

-- Every CDR a platform pushed, exactly as received (the evidence), unique per partner by its
-- owner's country code and party id and its id (CiStrings: case-insensitive), with the session
-- it became: `outcome` is what `record_sessions` made of it (`proxy.ingest.store`), or
-- 'unmapped' (a credit CDR, a reservation without charging), `note` says why when it became no
-- session that counts. CDRs are immutable: a replay changes nothing, and no row is updated or
-- deleted but for the session link (the purge of sessions past retention clears it).
CREATE TABLE ocpi_cdrs (
    cdr_ref       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id    text NOT NULL REFERENCES partners,
    platform_id   bigint NOT NULL REFERENCES ocpi_platforms,
    country_code  text NOT NULL,
    party_id      text NOT NULL,
    cdr_id        text NOT NULL,
    body          text NOT NULL,
    body_sha256   text NOT NULL CHECK (body_sha256 ~ '^[0-9a-f]{64}$'),
    last_updated  timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    credit_of     bigint REFERENCES ocpi_cdrs,
    session_id    bigint REFERENCES sessions ON DELETE SET NULL,
    outcome       text NOT NULL
                  CHECK (outcome IN ('inserted', 'duplicate', 'unchanged', 'conflict', 'refused',
                                     'invalid', 'unmapped')),
    note          text
);
CREATE UNIQUE INDEX ocpi_cdrs_by_id ON ocpi_cdrs (partner_id, upper(country_code), upper(party_id), upper(cdr_id));
CREATE INDEX ocpi_cdrs_by_platform ON ocpi_cdrs (platform_id, cdr_ref);

CREATE FUNCTION ocpi_cdrs_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'an OCPI CDR is kept as received, never deleted';
    END IF;
    IF (NEW.cdr_ref, NEW.partner_id, NEW.platform_id, NEW.country_code, NEW.party_id, NEW.cdr_id,
        NEW.body, NEW.body_sha256, NEW.last_updated, NEW.received_at, NEW.credit_of,
        NEW.outcome, NEW.note)
       IS DISTINCT FROM
       (OLD.cdr_ref, OLD.partner_id, OLD.platform_id, OLD.country_code, OLD.party_id, OLD.cdr_id,
        OLD.body, OLD.body_sha256, OLD.last_updated, OLD.received_at, OLD.credit_of,
        OLD.outcome, OLD.note)
       OR NEW.session_id IS NOT NULL AND NEW.session_id IS DISTINCT FROM OLD.session_id THEN
        RAISE EXCEPTION 'an OCPI CDR is kept as received: only its session link may be cleared';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER ocpi_cdrs_kept BEFORE UPDATE OR DELETE ON ocpi_cdrs
    FOR EACH ROW EXECUTE FUNCTION ocpi_cdrs_immutable();

-- Live sessions a platform pushes (the Sessions module), kept as last received: they have no
-- effect on ERE (the CDR is what counts), they show what is under way. `body` is the Session
-- object as PUT, with the PATCHes since applied (JSON text).
CREATE TABLE ocpi_live_sessions (
    partner_id    text NOT NULL REFERENCES partners,
    platform_id   bigint NOT NULL REFERENCES ocpi_platforms,
    country_code  text NOT NULL,
    party_id      text NOT NULL,
    session_id    text NOT NULL,
    body          text NOT NULL,
    status        text NOT NULL,
    last_updated  timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX ocpi_live_sessions_by_id
    ON ocpi_live_sessions (partner_id, upper(country_code), upper(party_id), upper(session_id));
