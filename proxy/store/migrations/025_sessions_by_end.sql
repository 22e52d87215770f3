-- Sessions by their end (the stop time, or an orphan's last reading: the partner API's END),
-- then id: a period's sessions are read in that order from the index, newest first, instead of
-- walking every newer session by id. Sessions without an end (still active) are left out, so
-- the meter readings of a session under way never touch this index.
CREATE INDEX sessions_ended ON sessions (
    (coalesce(stopped_at, CASE WHEN status = 'orphaned' THEN last_reading_at END)), session_id
) WHERE coalesce(stopped_at, CASE WHEN status = 'orphaned' THEN last_reading_at END) IS NOT NULL;
