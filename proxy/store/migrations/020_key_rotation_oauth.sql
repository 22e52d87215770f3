-- Partner API keys rotated with a grace period, and OAuth2 access tokens issued for a key.

-- A rotated key keeps working until `expires_at` (its grace period), then never again;
-- `replaces` names the key a key was made to replace. A key is replaced at most once (UNIQUE):
-- its successor is rotated in turn, so rotations form a chain, never a tree.
ALTER TABLE partner_api_keys
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN replaces   text UNIQUE REFERENCES partner_api_keys;

-- An access token (OAuth2 client credentials) for a key, with the key's scopes or fewer: only
-- its SHA-256 is kept (a random 256-bit token needs no salt to look up). It works until
-- `expires_at` and only while its key does (not revoked, not expired): a key's end is its
-- tokens' end. Expired tokens are deleted when their key is issued a new one.
CREATE TABLE api_access_tokens (
    token_sha256 text PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    key_id       text NOT NULL REFERENCES partner_api_keys,
    scopes       text[] NOT NULL CHECK (cardinality(scopes) > 0),
    issued_at    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX api_access_tokens_key ON api_access_tokens (key_id, expires_at);
