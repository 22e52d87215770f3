-- A customer's details (name, e-mail, address, IBAN) change in place; every change is kept here:
-- the fields changed, from what to what, who made it, through which channel, when. Payouts pay
-- the IBAN current when a run is made (a written pain.001 names the account it paid), so this is
-- the history that says which account was on file when. The grid connection (EAN) and the
-- partner never change: a new connection is a new enrolment.
CREATE TABLE customer_changes (
    change_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id text NOT NULL REFERENCES customers,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    channel     text NOT NULL CHECK (channel IN ('cli', 'api', 'import')),
    actor       text NOT NULL CHECK (actor <> ''),
    before      jsonb NOT NULL,
    after       jsonb NOT NULL
);
CREATE INDEX customer_changes_customer ON customer_changes (customer_id, changed_at);

CREATE TRIGGER customer_changes_never_changed BEFORE UPDATE OR DELETE ON customer_changes
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('the history of customer changes is append-only');
CREATE TRIGGER customer_changes_never_truncated BEFORE TRUNCATE ON customer_changes
    FOR EACH STATEMENT EXECUTE FUNCTION ere_refuse_change('the history of customer changes is append-only');

CREATE FUNCTION customers_connection_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ean IS DISTINCT FROM OLD.ean OR NEW.partner_id IS DISTINCT FROM OLD.partner_id THEN
        RAISE EXCEPTION 'customers: UPDATE refused; a customer''s EAN and partner never change (a new connection is a new enrolment)'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER customers_connection_fixed BEFORE UPDATE OF ean, partner_id ON customers
    FOR EACH ROW EXECUTE FUNCTION customers_connection_fixed();
