-- The CMC read models follow handover commits that earlier versions already wrote but did
-- not project: a read model from before them would meet handovers it has never seen. Start
-- the projection again from the first commit (the projector replays the log; nothing in
-- these tables is anything but the log's projection). On a new file this does nothing.
DELETE FROM incidents;
DELETE FROM alerts;
DELETE FROM incident_notes;
DELETE FROM incident_openings_pending;
DELETE FROM cmc_records;
DELETE FROM timeline_entries;
UPDATE projection_checkpoints SET position = 0, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now');
