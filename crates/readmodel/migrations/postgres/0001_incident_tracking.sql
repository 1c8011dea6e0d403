-- Incident tracking read model. Every table here can be dropped and rebuilt from the
-- event stream; the stream is the only source of truth.

CREATE TABLE projection_checkpoints (
    name        TEXT PRIMARY KEY,
    position    BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE incidents (
    incident_id                 UUID PRIMARY KEY,
    title                       TEXT NOT NULL,
    description                 TEXT NOT NULL,
    status                      TEXT NOT NULL,
    level                       TEXT NOT NULL,
    phase                       TEXT,
    severity                    SMALLINT NOT NULL,
    priority                    SMALLINT NOT NULL,
    crisis_escalation_requested BOOLEAN NOT NULL,
    roles                       JSONB NOT NULL,
    resolution                  TEXT,
    just_culture                JSONB,
    opened_by                   TEXT NOT NULL,
    opened_at                   TIMESTAMPTZ NOT NULL,
    acknowledged_at             TIMESTAMPTZ,
    tactical_at                 TIMESTAMPTZ,
    escalation_requested_at     TIMESTAMPTZ,
    resolved_at                 TIMESTAMPTZ,
    closed_at                   TIMESTAMPTZ,
    updated_at                  TIMESTAMPTZ NOT NULL,
    version                     BIGINT NOT NULL,
    position                    BIGINT NOT NULL
);

CREATE INDEX incidents_opened ON incidents (opened_at DESC, incident_id DESC);
CREATE INDEX incidents_updated ON incidents (updated_at DESC, incident_id DESC);
CREATE INDEX incidents_severity ON incidents (severity DESC, opened_at DESC, incident_id DESC);
CREATE INDEX incidents_priority ON incidents (priority, opened_at, incident_id);
CREATE INDEX incidents_status ON incidents (status);

CREATE TABLE alerts (
    alert_id            UUID PRIMARY KEY,
    source              TEXT NOT NULL,
    source_ref          TEXT NOT NULL,
    title               TEXT NOT NULL,
    description         TEXT NOT NULL,
    severity            SMALLINT NOT NULL,
    status              TEXT NOT NULL,
    incident_id         UUID,
    repeat_count        BIGINT NOT NULL,
    first_seen_at       TIMESTAMPTZ NOT NULL,
    last_seen_at        TIMESTAMPTZ NOT NULL,
    received_at         TIMESTAMPTZ NOT NULL,
    observables         JSONB NOT NULL,
    labels              JSONB NOT NULL,
    raw                 JSONB,
    dismissal_rationale TEXT,
    version             BIGINT NOT NULL,
    position            BIGINT NOT NULL
);

CREATE INDEX alerts_incident ON alerts (incident_id, received_at DESC, alert_id DESC);
CREATE INDEX alerts_received ON alerts (received_at DESC, alert_id DESC);

CREATE TABLE incident_notes (
    incident_id  UUID NOT NULL,
    position     BIGINT NOT NULL,
    seq          INTEGER NOT NULL,
    text         TEXT NOT NULL,
    author       TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL,
    late_reason  TEXT,
    PRIMARY KEY (position, seq)
);

CREATE INDEX incident_notes_incident ON incident_notes (incident_id, position, seq);
