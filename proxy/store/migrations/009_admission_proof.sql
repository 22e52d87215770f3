-- Offline admission needs local proof of identity (see proxy/admission.py and proxy/outbox.py).

-- `passthrough` chargers: a keyed digest of the Authorization header the back-office last
-- accepted for the identity (never the header itself). A charger may be admitted while its
-- back-office is unreachable only with the header whose digest this is. `key_id` names the key.
CREATE TABLE charger_verifiers (
    identity   text        PRIMARY KEY,
    digest     bytea       NOT NULL,
    key_id     text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- How the link that queued an entry proved the charger's identity: `upstream` (the back-office
-- accepted the connection), `password` (a managed route's password), `verifier` (the header the
-- back-office last accepted), `operator` (requeued by hand). Entries queued before this column
-- existed cannot say: `unknown`, never replayed without an operator's requeue.
ALTER TABLE outbox_entries ADD COLUMN proof text NOT NULL DEFAULT 'unknown';
ALTER TABLE outbox_entries ALTER COLUMN proof DROP DEFAULT;

-- A replayed StartTransaction (OCPP 1.6, which the back-office cannot deduplicate) is marked
-- before it is sent and settled with its answer; a mark found later means its answer was never
-- recorded: it is parked in doubt instead of being sent again, and its transaction with it.
ALTER TABLE outbox_entries ADD COLUMN sent_at timestamptz;
ALTER TABLE outbox_transactions ADD COLUMN in_doubt boolean NOT NULL DEFAULT false;
