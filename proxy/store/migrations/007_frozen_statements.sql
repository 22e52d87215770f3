-- A closed statement is never rewritten: its lines, and the sessions each line counted, can be
-- inserted but never changed or deleted (corrections are adjustment lines of a later close).
CREATE FUNCTION refuse_statement_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'statement lines are never changed or deleted (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER statement_lines_frozen BEFORE UPDATE OR DELETE ON statement_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_statement_change();
CREATE TRIGGER statement_sessions_frozen BEFORE UPDATE OR DELETE ON statement_sessions
    FOR EACH ROW EXECUTE FUNCTION refuse_statement_change();
