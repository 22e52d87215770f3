-- Chargers a partner registered through the partner API: which partner, with which key, when.
-- The registry row itself is `chargers` (003); removing it from the registry removes this too.
CREATE TABLE api_chargers (
    identity      text PRIMARY KEY REFERENCES chargers ON DELETE CASCADE,
    partner_id    text NOT NULL REFERENCES partners,
    key_id        text NOT NULL REFERENCES partner_api_keys,
    registered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_chargers_partner ON api_chargers (partner_id, identity);

-- The latest event of a charger, for its `last_seen` (charger_events_identity_received serves
-- it); the sessions of a charger by end, for the API's session lists.
CREATE INDEX sessions_identity_stopped ON sessions (identity, stopped_at);
