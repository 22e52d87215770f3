-- The partner API: keys partners call it with, the answers it keeps for repeated requests, and
-- the audit log of every write made through it.

-- A partner's API key: the key itself is shown once, when made; only a salted SHA-256 of its
-- secret part is kept. `key_id` is the visible part (it is in the key, in lists and in the
-- audit log). A key is revoked once and never deleted, so the audit log can always name it.
CREATE TABLE partner_api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[a-z0-9]{12}$'),
    partner_id   text NOT NULL REFERENCES partners,
    secret_hash  text NOT NULL,
    scopes       text[] NOT NULL CHECK (cardinality(scopes) > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL DEFAULT current_user,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX partner_api_keys_partner ON partner_api_keys (partner_id, created_at);

CREATE TRIGGER partner_api_keys_never_deleted BEFORE DELETE ON partner_api_keys
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('a key is revoked, never deleted');

-- The stored answer to a POST with an `Idempotency-Key`: the same key with the same request
-- gets this answer again; with another request, a conflict. Kept per partner.
CREATE TABLE api_idempotency (
    partner_id     text NOT NULL REFERENCES partners,
    idem_key       text NOT NULL CHECK (length(idem_key) BETWEEN 1 AND 255),
    request_sha256 text NOT NULL,
    status         integer NOT NULL,
    headers        jsonb NOT NULL DEFAULT '{}',
    body           jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, idem_key)
);

-- Every write through the API: who (the key), when, what, and the object before and after.
CREATE TABLE api_audit_log (
    audit_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    partner_id  text NOT NULL REFERENCES partners,
    key_id      text NOT NULL REFERENCES partner_api_keys,
    action      text NOT NULL CHECK (action <> ''),
    object_type text NOT NULL,
    object_id   text NOT NULL,
    before      jsonb,
    after       jsonb
);
CREATE INDEX api_audit_log_object ON api_audit_log (object_type, object_id, at);
CREATE INDEX api_audit_log_partner ON api_audit_log (partner_id, at);

CREATE TRIGGER api_audit_log_never_changed BEFORE UPDATE OR DELETE ON api_audit_log
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('the audit log is append-only');
CREATE TRIGGER api_audit_log_never_truncated BEFORE TRUNCATE ON api_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ere_refuse_change('the audit log is append-only');

-- A customer list in creation order, per partner (the API pages through it by this key).
CREATE INDEX customers_partner_created ON customers (partner_id, created_at, customer_id);
