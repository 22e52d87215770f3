-- An assessment is history: it stays when its session row goes, as statement_sessions do. A
-- session started offline under a provisional id is merged into its real one when the id
-- arrives (capture deletes the provisional row); a close may have assessed it before that, and
-- that assessment is part of the close's record. The purge deletes assessments itself.
ALTER TABLE session_assessments DROP CONSTRAINT session_assessments_session_id_fkey;
CREATE INDEX session_assessments_quarter ON session_assessments (quarter, revision);
