-- What the source tool says of each alert (AlertAcknowledgedAtSource, AlertResolvedAtSource):
-- firing, acknowledged or resolved, and when it resolved. Independent of triage (status).
ALTER TABLE alerts
    ADD COLUMN source_state TEXT NOT NULL DEFAULT 'firing',
    ADD COLUMN source_resolved_at TIMESTAMPTZ;
