-- Lookups the partner API's session lists make for every row of a page.

-- The statement lines that counted a session, found by the session: a page asks for up to 100
-- session ids at once, and the primary key of statement_sessions leads with the quarter, so
-- without this index each page read all of the table.
CREATE INDEX statement_sessions_session ON statement_sessions (session_id);

-- A session's link period, found by its charger: the planner prefers the exclusion
-- constraint's GiST index (charger_links_no_overlap) for `identity = ...`, where one probe
-- costs about ten times what it costs here (a page of a list probes once per session it
-- passes, hundreds of times).
CREATE INDEX charger_links_identity_hash ON charger_links USING hash (identity);
