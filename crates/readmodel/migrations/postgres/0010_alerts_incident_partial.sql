-- Most alerts never belong to an incident (below the opening threshold, never attached), and
-- every read of alerts by incident names one (`incident_id = …`, which implies NOT NULL), so
-- the index need not hold the others: each new unattached alert then updates two indexes
-- instead of three. An alert later attached to an incident enters the index then.
DROP INDEX IF EXISTS alerts_incident;
CREATE INDEX alerts_incident ON alerts (incident_id, received_at DESC, alert_id DESC)
    WHERE incident_id IS NOT NULL;
