-- Webhooks of the partner API: the endpoints partners register, the events of their objects
-- (each recorded once), the delivery of each event to each endpoint, and every attempt made.
-- Events and attempts are append-only; an endpoint is disabled, never deleted, so the log can
-- always name it. A delivery row changes only as its attempts happen (state, count, next due).

-- An endpoint: where a partner wants which events. The signing secret is shown once, at
-- creation; it is kept sealed with the registry's key (`[registry] secret_key_env`, bound to
-- the endpoint's id) when one is configured, else as is, because the proxy must sign with it.
CREATE TABLE webhook_endpoints (
    webhook_id    text PRIMARY KEY CHECK (webhook_id ~ '^whk_[0-9a-f]{32}$'),
    partner_id    text NOT NULL REFERENCES partners,
    url           text NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    events        text[] NOT NULL CHECK (cardinality(events) > 0),
    description   text NOT NULL DEFAULT '' CHECK (length(description) <= 200),
    secret        text,
    secret_sealed bytea,
    sealed_with   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL REFERENCES partner_api_keys,
    disabled_at   timestamptz,
    disabled_by   text REFERENCES partner_api_keys,
    UNIQUE (webhook_id, partner_id),
    CHECK ((secret IS NULL) <> (secret_sealed IS NULL)),
    CHECK ((secret_sealed IS NULL) = (sealed_with IS NULL)),
    CHECK ((disabled_at IS NULL) = (disabled_by IS NULL))
);
CREATE INDEX webhook_endpoints_partner ON webhook_endpoints (partner_id, created_at, webhook_id);

-- An endpoint is disabled once and never deleted; only its secret may be sealed anew.
CREATE FUNCTION webhook_endpoints_disable_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.disabled_at IS NOT NULL AND NEW.disabled_at IS DISTINCT FROM OLD.disabled_at)
       OR (to_jsonb(NEW) - ARRAY['disabled_at', 'disabled_by', 'secret', 'secret_sealed', 'sealed_with'])
          IS DISTINCT FROM (to_jsonb(OLD) - ARRAY['disabled_at', 'disabled_by', 'secret', 'secret_sealed', 'sealed_with']) THEN
        RAISE EXCEPTION 'webhook_endpoints: UPDATE refused; an endpoint is only disabled, once'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER webhook_endpoints_disable_only BEFORE UPDATE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION webhook_endpoints_disable_only();
CREATE TRIGGER webhook_endpoints_never_deleted BEFORE DELETE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('an endpoint is disabled, never deleted');

-- An event of a partner's object, once per (partner, type, object): `body` is the exact JSON
-- every delivery of it sends. Objects are named by id only (sessions may be merged or purged;
-- the event stays as it was sent).
CREATE TABLE webhook_events (
    event_id   text PRIMARY KEY CHECK (event_id ~ '^evt_[0-9a-f]{32}$'),
    partner_id text NOT NULL REFERENCES partners,
    type       text NOT NULL CHECK (type IN ('customer.enrolled', 'session.completed',
                   'statement.issued', 'payout.sent', 'mandate.expiring', 'webhook.ping')),
    object_id  text NOT NULL CHECK (object_id <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    body       text NOT NULL,
    UNIQUE (partner_id, type, object_id),
    UNIQUE (event_id, partner_id)
);

CREATE TRIGGER webhook_events_never_changed BEFORE UPDATE OR DELETE ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('an event is kept as it was sent');
CREATE TRIGGER webhook_events_never_truncated BEFORE TRUNCATE ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION ere_refuse_change('an event is kept as it was sent');

-- One event for one endpoint: 'pending' while attempts are due (`next_attempt_at`: when the
-- next is due, or until when the attempt under way holds it), 'delivered' at the first 2xx,
-- 'failed' when the back-off gave up, 'cancelled' when its endpoint was disabled first. A replay
-- is a new delivery of the same event (`replay_of` names the one replayed). The composite keys
-- make the database refuse a delivery of one partner's event to another partner's endpoint.
CREATE TABLE webhook_deliveries (
    delivery_id     text PRIMARY KEY CHECK (delivery_id ~ '^dlv_[0-9a-f]{32}$'),
    partner_id      text NOT NULL,
    webhook_id      text NOT NULL,
    event_id        text NOT NULL,
    replay_of       text REFERENCES webhook_deliveries,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (webhook_id, partner_id) REFERENCES webhook_endpoints (webhook_id, partner_id),
    FOREIGN KEY (event_id, partner_id) REFERENCES webhook_events (event_id, partner_id),
    CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (event_id, webhook_id)
    WHERE replay_of IS NULL;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, created_at, delivery_id);

-- A delivery only moves forward: its event, endpoint and origin never change, and a delivery
-- that is done (delivered, failed, cancelled) stays as it is.
CREATE FUNCTION webhook_deliveries_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'pending'
       OR (NEW.delivery_id, NEW.partner_id, NEW.webhook_id, NEW.event_id, NEW.replay_of, NEW.created_at)
          IS DISTINCT FROM (OLD.delivery_id, OLD.partner_id, OLD.webhook_id, OLD.event_id, OLD.replay_of, OLD.created_at)
       OR NEW.attempts < OLD.attempts THEN
        RAISE EXCEPTION 'webhook_deliveries: UPDATE refused; a delivery only moves forward'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER webhook_deliveries_forward_only BEFORE UPDATE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION webhook_deliveries_forward_only();
CREATE TRIGGER webhook_deliveries_never_deleted BEFORE DELETE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('the delivery log is kept');

-- Every attempt of a delivery: when, the HTTP status (NULL: no answer), why it failed, the
-- first bytes of the answer, how long it took. The endpoint's health is read from these.
CREATE TABLE webhook_attempts (
    delivery_id  text    NOT NULL REFERENCES webhook_deliveries,
    attempt      integer NOT NULL CHECK (attempt > 0),
    webhook_id   text    NOT NULL REFERENCES webhook_endpoints,
    attempted_at timestamptz NOT NULL,
    ok           boolean NOT NULL,
    status       integer CHECK (status BETWEEN 100 AND 599),
    error        text CHECK (length(error) <= 300),
    response     text CHECK (length(response) <= 300),
    duration_ms  integer NOT NULL CHECK (duration_ms >= 0),
    PRIMARY KEY (delivery_id, attempt),
    CHECK (ok = (error IS NULL))
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (webhook_id, attempted_at);
CREATE INDEX webhook_attempts_endpoint_ok ON webhook_attempts (webhook_id, attempted_at) WHERE ok;

CREATE TRIGGER webhook_attempts_never_changed BEFORE UPDATE OR DELETE ON webhook_attempts
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('the delivery log is append-only');
CREATE TRIGGER webhook_attempts_never_truncated BEFORE TRUNCATE ON webhook_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION ere_refuse_change('the delivery log is append-only');

-- How far the periodic scans for events other roles cause have read each source (by the time
-- its rows were written); each scan rereads a margin before it for writes that committed late.
CREATE TABLE webhook_scan_marks (
    source     text PRIMARY KEY,
    scanned_to timestamptz NOT NULL
);

-- The scans' reads: completed sessions by when they were last written, statements by delivery.
CREATE INDEX sessions_completed_updated ON sessions (updated_at) WHERE status = 'completed';
CREATE INDEX payout_statements_delivered ON payout_statements (delivered_at);
