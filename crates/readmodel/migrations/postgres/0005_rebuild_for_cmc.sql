-- The CMC read models follow handover commits that earlier versions already wrote but did
-- not project: a read model from before them would meet handovers it has never seen. Start
-- the projection again from the first commit (the projector replays the log; nothing in
-- these tables is anything but the log's projection). On a new database this does nothing.
TRUNCATE incidents, alerts, incident_notes, incident_openings_pending, cmc_records,
    timeline_entries;
UPDATE projection_checkpoints SET position = 0, updated_at = now();
