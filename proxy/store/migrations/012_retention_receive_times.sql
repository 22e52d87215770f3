-- Year end and retention: when start and stop frames arrived, the raw frames of a transaction
-- found by index, a record of every REV export, and evidence the database itself keeps for the
-- retention period ([ere] retention_years): only `ere-proxy db purge` deletes it, inside a
-- transaction that has run `SET LOCAL ere.purge = 'on'`.

-- When the frames that carried the charger's start and stop timestamps reached the proxy (the
-- event's received_at; the first arrival: a replayed event does not move them). NULL for
-- sessions captured before these columns existed. Compared with started_at/stopped_at, they
-- show a charger clock that is off.
ALTER TABLE sessions
    ADD COLUMN start_received_at timestamptz,
    ADD COLUMN stop_received_at  timestamptz;

-- The events of one transaction of a charger (audit packs), and the provisional ids of 1.6
-- transactions started offline that later got their real id.
CREATE INDEX charger_events_transaction
    ON charger_events (identity, (body->>'transaction_id'), received_at)
    WHERE body->>'transaction_id' IS NOT NULL;
CREATE INDEX charger_events_assigned_ids
    ON charger_events (identity, (body->>'real_id'))
    WHERE kind = 'transaction_id_assigned';

-- Every REV export written: `final` false for a draft; `files` lists [{"name", "sha256"}].
CREATE TABLE rev_exports (
    export_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    year        integer     NOT NULL CHECK (year BETWEEN 2000 AND 2100),
    final       boolean     NOT NULL,
    exported_at timestamptz NOT NULL DEFAULT now(),
    files       jsonb       NOT NULL
);
CREATE INDEX rev_exports_final ON rev_exports (year) WHERE final;

-- Whether this transaction is the purge (`SET LOCAL ere.purge = 'on'`).
CREATE FUNCTION ere_purging() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('ere.purge', true), '') = 'on'
$$;

-- Kept for the retention period: a DELETE only by the purge, an UPDATE never.
CREATE FUNCTION refuse_unless_purged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND ere_purging() THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% rows are kept for the retention period: % is refused (only ere-proxy db purge deletes)',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER charger_events_retained BEFORE UPDATE OR DELETE ON charger_events
    FOR EACH ROW EXECUTE FUNCTION refuse_unless_purged();
CREATE TRIGGER meter_samples_retained BEFORE DELETE ON meter_samples
    FOR EACH ROW EXECUTE FUNCTION refuse_unless_purged();
CREATE TRIGGER rev_exports_frozen BEFORE UPDATE OR DELETE ON rev_exports
    FOR EACH ROW EXECUTE FUNCTION refuse_statement_change();

-- A meter sample only moves to another session (a provisional 1.6 session merged into its real one).
CREATE FUNCTION meter_sample_moves_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.sampled_at, NEW.measurand, NEW.phase, NEW.location, NEW.context, NEW.value, NEW.signed_data, NEW.event_id)
       IS DISTINCT FROM
       (OLD.sampled_at, OLD.measurand, OLD.phase, OLD.location, OLD.context, OLD.value, OLD.signed_data, OLD.event_id)
    THEN
        RAISE EXCEPTION 'meter samples are never changed; only their session may change (a merge)'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER meter_samples_unchanged BEFORE UPDATE ON meter_samples
    FOR EACH ROW EXECUTE FUNCTION meter_sample_moves_only();

-- Sessions are updated by capture (a late stop becomes an adjustment), never deleted, except
-- the purge and a provisional 1.6 session merged into its real one: an assignment event names
-- it, its samples have moved and no statement counted it.
CREATE FUNCTION session_deleted_only_merged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF ere_purging() OR (
        EXISTS (SELECT 1 FROM charger_events e
                WHERE e.identity = OLD.identity AND e.kind = 'transaction_id_assigned'
                  AND e.body->>'provisional_id' = OLD.transaction_id)
        AND NOT EXISTS (SELECT 1 FROM meter_samples m WHERE m.session_id = OLD.session_id)
        AND NOT EXISTS (SELECT 1 FROM statement_sessions s WHERE s.session_id = OLD.session_id))
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'sessions are kept for the retention period: DELETE is refused (only ere-proxy db purge deletes)'
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER sessions_retained BEFORE DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION session_deleted_only_merged();

-- A written payout run is what the bank got: its row, transfers and statements never change,
-- and a carry-over only gets settled (settled_by from NULL to the run that paid it). Columns
-- added later are not covered here.
CREATE FUNCTION payout_run_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state <> 'written'
       OR TG_OP = 'UPDATE'
          AND (NEW.run_id, NEW.quarter, NEW.revision, NEW.state, NEW.file_name, NEW.message_id,
               NEW.control_sum, NEW.created_at)
              IS NOT DISTINCT FROM
              (OLD.run_id, OLD.quarter, OLD.revision, OLD.state, OLD.file_name, OLD.message_id,
               OLD.control_sum, OLD.created_at)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'a written payout run is never changed or deleted (% on payout_runs)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER payout_runs_written BEFORE UPDATE OR DELETE ON payout_runs
    FOR EACH ROW EXECUTE FUNCTION payout_run_written();

CREATE FUNCTION payout_part_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM payout_runs r WHERE r.run_id = OLD.run_id AND r.state = 'written') THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION '% of a written payout run are never changed or deleted (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER payout_transfers_written BEFORE UPDATE OR DELETE ON payout_transfers
    FOR EACH ROW EXECUTE FUNCTION payout_part_written();
CREATE TRIGGER payout_statements_written BEFORE UPDATE OR DELETE ON payout_statements
    FOR EACH ROW EXECUTE FUNCTION payout_part_written();

CREATE FUNCTION carry_over_only_settled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.settled_by IS NULL AND NEW.settled_by IS NOT NULL
       AND (NEW.run_id, NEW.customer_id, NEW.amount, NEW.reason)
           IS NOT DISTINCT FROM (OLD.run_id, OLD.customer_id, OLD.amount, OLD.reason)
       OR NOT EXISTS (SELECT 1 FROM payout_runs r WHERE r.run_id = OLD.run_id AND r.state = 'written')
    THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'a carry-over of a written payout run is only ever settled (% refused)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER payout_carry_overs_written BEFORE UPDATE OR DELETE ON payout_carry_overs
    FOR EACH ROW EXECUTE FUNCTION carry_over_only_settled();
