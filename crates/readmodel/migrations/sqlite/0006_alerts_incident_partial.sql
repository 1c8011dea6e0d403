-- As PostgreSQL's 0010: most alerts never belong to an incident, and every read of alerts by
-- incident names one (`incident_id = …`, which SQLite takes as implying NOT NULL), so the
-- index need not hold the others.
DROP INDEX IF EXISTS alerts_incident;
CREATE INDEX alerts_incident ON alerts (incident_id, received_at DESC, alert_id DESC)
    WHERE incident_id IS NOT NULL;
