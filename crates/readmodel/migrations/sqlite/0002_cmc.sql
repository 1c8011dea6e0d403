-- The CMC read models: handovers, crises, decisions, actions and communications as records,
-- and every crisis's timeline. Both stores share this layout (ids as text, times as
-- microseconds since the epoch, each record's whole document as JSON text) so one set of
-- statements serves both. Every table can be dropped and rebuilt from the event log.

CREATE TABLE cmc_records (
    kind       TEXT   NOT NULL,  -- handover, crisis, decision, action, communication
    crisis_id  TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    status     TEXT   NOT NULL,
    at         INTEGER,           -- pending handover: waiting since; decision: review due;
                                 -- open action: due; crisis: activated
    position   INTEGER NOT NULL,
    doc        TEXT   NOT NULL,
    PRIMARY KEY (kind, crisis_id, id)
) STRICT;

CREATE INDEX cmc_records_by_crisis ON cmc_records (crisis_id, kind, position, id);
CREATE INDEX cmc_records_by_time ON cmc_records (kind, at, id) WHERE at IS NOT NULL;

CREATE TABLE timeline_entries (
    crisis_id    TEXT    NOT NULL,
    position     INTEGER  NOT NULL,
    seq          INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    level        TEXT    NOT NULL,
    occurred_at  INTEGER  NOT NULL,
    doc          TEXT    NOT NULL,
    PRIMARY KEY (crisis_id, position, seq)
) STRICT;

CREATE INDEX timeline_entries_by_kind ON timeline_entries (crisis_id, kind, position, seq);
