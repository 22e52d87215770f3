-- Chargers the operator gives a partner: chargers that already connect through the proxy (routed
-- by the configuration file or the default route) and that the partner may then read and link to
-- its customers through the partner API. One partner per charger at a time; a grant is revoked,
-- never deleted, so who held a charger when stays known.
CREATE TABLE partner_charger_grants (
    grant_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identity    text NOT NULL CHECK (identity <> ''),
    partner_id  text NOT NULL REFERENCES partners,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    granted_by  text NOT NULL DEFAULT current_user,
    revoked_at  timestamptz,
    revoked_by  text
);
CREATE UNIQUE INDEX partner_charger_grants_current ON partner_charger_grants (identity)
    WHERE revoked_at IS NULL;
CREATE INDEX partner_charger_grants_partner ON partner_charger_grants (partner_id, identity)
    WHERE revoked_at IS NULL;

CREATE TRIGGER partner_charger_grants_never_deleted BEFORE DELETE ON partner_charger_grants
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('a charger grant is revoked, never deleted');
CREATE TRIGGER partner_charger_grants_never_truncated BEFORE TRUNCATE ON partner_charger_grants
    FOR EACH STATEMENT EXECUTE FUNCTION ere_refuse_change('a charger grant is revoked, never deleted');
