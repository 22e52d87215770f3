-- The charger registry: where each charger's link goes and how it authenticates (see registry.py).
-- Charger passwords are stored as scrypt hashes; upstream secrets are encrypted by the application
-- (AES-256-GCM, the identity as associated data) with a key that never enters the database.
CREATE TABLE chargers (
    identity          text        PRIMARY KEY
                      CHECK (length(identity) BETWEEN 1 AND 48 AND position(':' IN identity) = 0),
    upstream          text        NOT NULL CHECK (upstream ~ '^wss?://'),
    auth              text        NOT NULL DEFAULT 'passthrough' CHECK (auth IN ('passthrough', 'managed')),
    password_hash     text,
    upstream_username text,
    upstream_secret   bytea,       -- 12-byte nonce || ciphertext and tag
    secret_key_id     text,        -- which key sealed upstream_secret
    ca_bundle         text,
    enabled           boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (auth = 'passthrough' OR password_hash IS NOT NULL),
    CHECK ((upstream_secret IS NULL) = (secret_key_id IS NULL))
);
CREATE INDEX chargers_updated_at ON chargers (updated_at);

-- Routers fetch rows changed since their last look, so every update moves updated_at, whoever
-- makes it.
CREATE FUNCTION chargers_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;
CREATE TRIGGER chargers_touch BEFORE UPDATE ON chargers FOR EACH ROW EXECUTE FUNCTION chargers_touch();
