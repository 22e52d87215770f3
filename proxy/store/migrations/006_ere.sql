-- ERE accounting: who is paid for which connection, the jobs that close quarters and pay out,
-- and what they produced. Money and energy are numeric (exact); a closed quarter is never
-- rewritten (statement lines are only inserted; corrections are adjustment lines of a later one).

-- Partners enrol customers: CPOs, installers, energy suppliers. `partner-account` partners get
-- one transfer for all their customers; `direct` partners' customers are paid one by one.
CREATE TABLE partners (
    partner_id   text PRIMARY KEY CHECK (partner_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name         text NOT NULL CHECK (name <> ''),
    kind         text NOT NULL CHECK (kind IN ('cpo', 'installer', 'energy-supplier')),
    payout_model text NOT NULL CHECK (payout_model IN ('direct', 'partner-account')),
    iban         text,
    account_name text,
    branding     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (payout_model = 'direct' OR iban IS NOT NULL)
);

-- The connection holder of one EAN (18 digits, GS1 check digit validated before insert).
CREATE TABLE customers (
    customer_id       text PRIMARY KEY CHECK (customer_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    partner_id        text NOT NULL REFERENCES partners,
    name              text NOT NULL CHECK (name <> ''),
    address           text NOT NULL,
    postcode          text NOT NULL,
    city              text NOT NULL,
    ean               text NOT NULL UNIQUE CHECK (ean ~ '^[0-9]{18}$'),
    grid_operator     text NOT NULL,
    iban              text,
    email             text,
    -- Referral discount on the fee, as a fraction of gross (0.05: 5 points; never below the floor).
    referral_discount numeric NOT NULL DEFAULT 0 CHECK (referral_discount >= 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_partner ON customers (partner_id);

-- A mandate (machtiging) per EAN per calendar year: one provider per EAN per year, so at most
-- one row per (ean, year). The consent record says who agreed, when and how.
CREATE TABLE mandates (
    ean         text    NOT NULL,
    year        integer NOT NULL CHECK (year BETWEEN 2000 AND 2100),
    customer_id text    NOT NULL REFERENCES customers,
    issued_on   date    NOT NULL,
    valid_from  date    NOT NULL,
    valid_until date    NOT NULL,
    consent     jsonb   NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ean, year),
    CHECK (valid_from <= valid_until),
    CHECK (extract(year FROM valid_from) = year AND extract(year FROM valid_until) = year)
);

-- Which customer's connection a charger charges on, and its maximum power (for plausibility).
CREATE TABLE charger_links (
    identity    text PRIMARY KEY,
    customer_id text    NOT NULL REFERENCES customers,
    max_power_w numeric NOT NULL CHECK (max_power_w > 0),
    linked_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charger_links_customer ON charger_links (customer_id);

-- Jobs for the worker processes: claimed with FOR UPDATE SKIP LOCKED inside the transaction that
-- does the work, so a killed worker's job is free again the moment its connection drops, and
-- nothing it did half-way is left. `job_key` makes enqueueing idempotent.
CREATE TABLE ere_jobs (
    job_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text    NOT NULL,
    job_key     text    NOT NULL,
    args        jsonb   NOT NULL DEFAULT '{}',
    state       text    NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'done', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    run_after   timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (kind, job_key)
);
CREATE INDEX ere_jobs_due ON ere_jobs (run_after, job_id) WHERE state = 'queued';

-- A quarter's close: 'closing' while its shards run, 'closed' once every statement line is in.
-- `revision` counts reopenings: a reopened quarter closes again as a new revision.
CREATE TABLE quarter_closes (
    quarter    text    NOT NULL CHECK (quarter ~ '^[0-9]{4}Q[1-4]$'),
    revision   integer NOT NULL DEFAULT 1,
    state      text    NOT NULL CHECK (state IN ('closing', 'closed', 'reopened')),
    shards     integer NOT NULL CHECK (shards > 0),
    started_at timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz,
    PRIMARY KEY (quarter, revision)
);
CREATE UNIQUE INDEX quarter_closes_current ON quarter_closes (quarter) WHERE state <> 'reopened';

-- The statement lines of a close, one per customer, EAN, delivery quarter and kind. The primary
-- key is what makes two workers unable to state one thing twice.
CREATE TABLE statement_lines (
    quarter          text    NOT NULL,
    revision         integer NOT NULL,
    customer_id      text    NOT NULL REFERENCES customers,
    ean              text    NOT NULL,
    delivery_quarter text    NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('regular', 'adjustment')),
    kwh              numeric NOT NULL,
    ere              numeric NOT NULL,
    eur_per_ere      numeric NOT NULL,
    gross            numeric NOT NULL,
    fee_rate         numeric NOT NULL,
    fee              numeric NOT NULL,
    fee_vat          numeric NOT NULL,
    net              numeric NOT NULL,
    sessions         integer NOT NULL,
    PRIMARY KEY (quarter, revision, customer_id, ean, delivery_quarter, kind),
    FOREIGN KEY (quarter, revision) REFERENCES quarter_closes,
    CHECK (gross = fee + net)
);
CREATE INDEX statement_lines_customer ON statement_lines (customer_id, delivery_quarter);

-- Which sessions a line counted, with the kWh it counted for each (the evidence of a line).
CREATE TABLE statement_sessions (
    quarter          text    NOT NULL,
    revision         integer NOT NULL,
    customer_id      text    NOT NULL,
    ean              text    NOT NULL,
    delivery_quarter text    NOT NULL,
    kind             text    NOT NULL,
    session_id       bigint  NOT NULL,
    kwh              numeric NOT NULL,
    PRIMARY KEY (quarter, revision, customer_id, ean, delivery_quarter, kind, session_id),
    FOREIGN KEY (quarter, revision, customer_id, ean, delivery_quarter, kind) REFERENCES statement_lines
);

-- Each session's eligibility at the last close that looked at it (status, reason, kWh counted).
CREATE TABLE session_assessments (
    session_id  bigint PRIMARY KEY REFERENCES sessions ON DELETE CASCADE,
    quarter     text    NOT NULL,
    eligibility text    NOT NULL CHECK (eligibility IN ('eligible', 'ineligible')),
    reason      text    NOT NULL,
    detail      text    NOT NULL,
    kwh         numeric NOT NULL,
    customer_id text,
    ean         text,
    assessed_at timestamptz NOT NULL DEFAULT now()
);

-- A payout run of a closed quarter: one pain.001 file, one transfer per payee.
CREATE TABLE payout_runs (
    run_id      text PRIMARY KEY,
    quarter     text NOT NULL,
    revision    integer NOT NULL,
    state       text NOT NULL CHECK (state IN ('planned', 'written')),
    file_name   text,
    message_id  text,
    control_sum numeric,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (quarter, revision) REFERENCES quarter_closes
);

CREATE TABLE payout_transfers (
    run_id      text    NOT NULL REFERENCES payout_runs,
    payee_kind  text    NOT NULL CHECK (payee_kind IN ('customer', 'partner')),
    payee_id    text    NOT NULL,
    amount      numeric NOT NULL CHECK (amount > 0),
    end_to_end  text    NOT NULL UNIQUE,
    PRIMARY KEY (run_id, payee_kind, payee_id)
);

-- Amounts not paid in a run (below the minimum, not positive, no account): they are paid with
-- the customer's next payout. `settled_by` is the run that paid them (NULL: still owed).
CREATE TABLE payout_carry_overs (
    run_id      text    NOT NULL REFERENCES payout_runs,
    customer_id text    NOT NULL REFERENCES customers,
    amount      numeric NOT NULL,
    reason      text    NOT NULL,
    settled_by  text REFERENCES payout_runs,
    PRIMARY KEY (run_id, customer_id)
);

-- Statements delivered for a payout run (sent over SMTP, or written as .eml files).
CREATE TABLE payout_statements (
    run_id       text NOT NULL REFERENCES payout_runs,
    customer_id  text NOT NULL REFERENCES customers,
    message_id   text NOT NULL,
    path         text,
    delivered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, customer_id)
);

-- Explicit operations on closed data (reopening a quarter), who did them and why.
CREATE TABLE ere_audit_log (
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    subject text NOT NULL,
    reason  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
