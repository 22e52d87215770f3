-- Payout runs name the execution date their pain.001 requests, and every statement with a fee
-- carries that fee as an invoice (a negative fee: a credit note). Invoice numbers form one
-- gapless series per year, `<prefix>-<year>-<6-digit seq>`: the payout job takes the next
-- number inside its own transaction (so a run that fails takes none), and an invoice, once
-- issued, is never changed or deleted.

ALTER TABLE payout_runs ADD COLUMN execution_date date;

CREATE TABLE invoices (
    invoice_number text    PRIMARY KEY,
    year           integer NOT NULL CHECK (year BETWEEN 2000 AND 2100),
    seq            integer NOT NULL CHECK (seq BETWEEN 1 AND 999999),
    run_id         text    NOT NULL REFERENCES payout_runs,
    customer_id    text    NOT NULL REFERENCES customers,
    invoice_date   date    NOT NULL,
    credit_note    boolean NOT NULL,
    fee_excl_vat   numeric NOT NULL,
    vat            numeric NOT NULL,
    fee            numeric NOT NULL CHECK (fee <> 0),
    issued_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (year, seq),
    UNIQUE (run_id, customer_id),
    CHECK (fee = fee_excl_vat + vat),
    CHECK (credit_note = (fee < 0)),
    CHECK (extract(year FROM invoice_date) = year)
);

-- The series has no gaps: a number is the year's highest plus one.
CREATE FUNCTION invoice_next_in_series() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq <> coalesce((SELECT max(seq) FROM invoices WHERE year = NEW.year), 0) + 1 THEN
        RAISE EXCEPTION 'invoice % would leave a gap in the % series', NEW.invoice_number, NEW.year
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION refuse_invoice_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'invoices are never changed or deleted (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER invoices_gapless BEFORE INSERT ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoice_next_in_series();
CREATE TRIGGER invoices_frozen BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION refuse_invoice_change();
CREATE TRIGGER invoices_not_truncated BEFORE TRUNCATE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_invoice_change();
