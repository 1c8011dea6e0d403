-- Alerts promoted into an incident whose opening commit is not (yet) in the log: normally
-- for the instant between the two commits of one ingestion; longer only when the call that
-- promoted the alert stopped half way. semsd's repair sweep opens those incidents.
CREATE TABLE incident_openings_pending (
    incident_id  UUID PRIMARY KEY,
    alert_id     UUID NOT NULL,
    promoted_at  TIMESTAMPTZ NOT NULL
);

-- Promotions already projected whose incident is missing.
INSERT INTO incident_openings_pending (incident_id, alert_id, promoted_at)
SELECT DISTINCT ON (a.incident_id) a.incident_id, a.alert_id, a.received_at
FROM alerts a
WHERE a.status = 'promoted'
  AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.incident_id = a.incident_id)
ORDER BY a.incident_id, a.received_at;
