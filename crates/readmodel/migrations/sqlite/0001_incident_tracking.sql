-- Incident tracking read model, embedded. Every row keeps its whole record as JSON in `doc`
-- (the same record the PostgreSQL columns hold) and copies out the columns queries filter
-- and sort on. Times used as keys are microseconds since the epoch (UTC), so that they sort
-- and compare exactly as PostgreSQL's timestamptz does. Every table can be dropped and
-- rebuilt from the event log.

CREATE TABLE projection_checkpoints (
    name        TEXT PRIMARY KEY,
    position    INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
) STRICT;

CREATE TABLE incidents (
    incident_id  TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    level        TEXT NOT NULL,
    severity     INTEGER NOT NULL,
    priority     INTEGER NOT NULL,
    opened_at    INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    title        TEXT NOT NULL,
    description  TEXT NOT NULL,
    doc          TEXT NOT NULL
) STRICT;

CREATE INDEX incidents_opened ON incidents (opened_at DESC, incident_id DESC);
CREATE INDEX incidents_updated ON incidents (updated_at DESC, incident_id DESC);
CREATE INDEX incidents_severity ON incidents (severity DESC, opened_at DESC, incident_id DESC);
CREATE INDEX incidents_priority ON incidents (priority, opened_at, incident_id);

CREATE TABLE alerts (
    alert_id     TEXT PRIMARY KEY,
    incident_id  TEXT,
    status       TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    doc          TEXT NOT NULL
) STRICT;

CREATE INDEX alerts_incident ON alerts (incident_id, received_at DESC, alert_id DESC);
CREATE INDEX alerts_received ON alerts (received_at DESC, alert_id DESC);

CREATE TABLE incident_notes (
    position     INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    incident_id  TEXT NOT NULL,
    doc          TEXT NOT NULL,
    PRIMARY KEY (position, seq)
) STRICT;

CREATE INDEX incident_notes_incident ON incident_notes (incident_id, position, seq);

CREATE TABLE incident_openings_pending (
    incident_id  TEXT PRIMARY KEY,
    alert_id     TEXT NOT NULL,
    promoted_at  INTEGER NOT NULL
) STRICT;
