-- The outbox: chargers' CALLs answered by the proxy while their upstream was unreachable, kept
-- until they are replayed (see proxy/outbox.py). In the database, not on a worker's disk, so
-- whichever worker or node the charger reconnects to can replay it.

-- One row per charger that ever had an outbox. `epoch` is bumped by every link that takes the
-- outbox over; writes carry the epoch they read, so a stale link (on another worker) is fenced off.
CREATE TABLE outbox_chargers (
    identity   text PRIMARY KEY,
    epoch      bigint      NOT NULL DEFAULT 0,
    next_seq   bigint      NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Queued CALLs in the charger's order (seq). A dead letter is parked with its reason and skipped.
CREATE TABLE outbox_entries (
    identity    text        NOT NULL,
    seq         bigint      NOT NULL,
    action      text        NOT NULL,
    payload     bytea       NOT NULL,
    received_at timestamptz NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    dead_reason text,
    dead_at     timestamptz,
    PRIMARY KEY (identity, seq)
);
CREATE INDEX outbox_entries_dead ON outbox_entries (dead_at) WHERE dead_reason IS NOT NULL;

-- OCPP 1.6 transactions started offline: the provisional id the charger got, the real one once
-- the upstream answered the replayed StartTransaction, and whether its StopTransaction passed.
CREATE TABLE outbox_transactions (
    identity    text        NOT NULL,
    provisional bigint      NOT NULL,
    start_key   text        NOT NULL,
    real_id     bigint,
    ended       boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity, provisional)
);
CREATE INDEX outbox_transactions_open ON outbox_transactions (identity) WHERE NOT ended;

-- StartTransactions the upstream answered, by content: a charger re-sending one is never started twice.
CREATE TABLE outbox_starts (
    identity       text        NOT NULL,
    start_key      text        NOT NULL,
    transaction_id bigint      NOT NULL,
    seen_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity, start_key)
);

-- The upstream's last answer per idTag and charger: offline Authorize is answered from it.
CREATE TABLE outbox_authorizations (
    identity   text        NOT NULL,
    id_tag     text        NOT NULL,
    info       jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity, id_tag)
);
