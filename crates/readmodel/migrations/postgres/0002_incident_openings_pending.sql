-- Alerts promoted into an incident whose opening commit is not (yet) in the log: normally
-- for the instant between the two commits of one ingestion; longer only when the call that
-- promoted the alert stopped half way. semsd's repair sweep opens those incidents.
CREATE TABLE incident_openings_pending (
    incident_id  UUID PRIMARY KEY,
    alert_id     UUID NOT NULL,
    promoted_at  TIMESTAMPTZ NOT NULL
);
