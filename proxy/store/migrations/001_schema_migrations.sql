-- The migration runner's own record: one row per migration applied to this database.
-- The runner writes the row for this file too, in the same transaction that creates the table.
CREATE TABLE schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,  -- sha256 of the file as applied
    applied_at timestamptz NOT NULL DEFAULT now()
);
