-- The capture events of a CALL the proxy answered offline, kept with its outbox entry (msgpack, a
-- list of events; NULL: none, or queued before this column). The entry and its events are stored
-- in one transaction before the answer goes out, so a worker killed before its journal wrote them
-- loses nothing: whichever link replays the entry submits them again (the capture store keeps
-- each event id once).
ALTER TABLE outbox_entries ADD COLUMN captured bytea;
