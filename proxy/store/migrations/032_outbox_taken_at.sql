-- When a link last took the charger over (its epoch bumped). Every worker asks each second which
-- of the chargers it serves were taken over by a link elsewhere; with this column (and its index)
-- it reads only the takeovers since its last look, instead of sending every identity it holds.
ALTER TABLE outbox_chargers ADD COLUMN taken_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX outbox_chargers_taken_at ON outbox_chargers (taken_at);
