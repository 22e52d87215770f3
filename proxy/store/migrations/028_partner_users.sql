-- The partner dashboard: the people of a partner who log in to it, and their log-in sessions.

-- A partner user logs in with an e-mail address (unique among users not removed, stored in
-- lower case) and a password, kept only as a salted scrypt hash. `role` is `admin` (every
-- action the partner API allows) or `viewer` (reads only). Repeated failed log-ins lock the
-- user until `locked_until`. A user is removed, never deleted, so the audit log can name them.
CREATE TABLE partner_users (
    user_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id      text NOT NULL REFERENCES partners,
    email           text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    password_hash   text NOT NULL CHECK (password_hash LIKE 'scrypt$%'),
    role            text NOT NULL CHECK (role IN ('admin', 'viewer')),
    failed_attempts integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text NOT NULL DEFAULT current_user,
    removed_at      timestamptz
);
CREATE UNIQUE INDEX partner_users_email ON partner_users (email) WHERE removed_at IS NULL;
CREATE INDEX partner_users_partner ON partner_users (partner_id, email);

CREATE TRIGGER partner_users_never_deleted BEFORE DELETE ON partner_users
    FOR EACH ROW EXECUTE FUNCTION ere_refuse_change('a partner user is removed, never deleted');

-- A log-in session: the browser holds a random token, the database its SHA-256 only. Every
-- form the session posts carries `csrf_secret`. A session ends at `expires_at`, at log-out, or
-- when its user is removed.
CREATE TABLE dashboard_sessions (
    token_sha256 bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
    user_id      bigint NOT NULL REFERENCES partner_users,
    csrf_secret  text NOT NULL CHECK (length(csrf_secret) >= 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_user ON dashboard_sessions (user_id);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);

-- A write a dashboard user makes in the partner's name is audited under the user, not a key.
-- Every earlier row names a key, so the constraints need not scan the tables (NOT VALID).
ALTER TABLE api_audit_log
    ADD COLUMN user_id bigint REFERENCES partner_users,
    ALTER COLUMN key_id DROP NOT NULL,
    ADD CONSTRAINT api_audit_log_one_actor CHECK (num_nonnulls(key_id, user_id) = 1) NOT VALID;
ALTER TABLE mid_scans
    ADD COLUMN user_id bigint REFERENCES partner_users,
    ALTER COLUMN key_id DROP NOT NULL,
    ADD CONSTRAINT mid_scans_one_actor CHECK (num_nonnulls(key_id, user_id) = 1) NOT VALID;
