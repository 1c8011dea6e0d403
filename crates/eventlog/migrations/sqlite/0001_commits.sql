-- The embedded event log: one row per commit, in position order, exactly as the JetStream
-- stream holds one message per commit. `bytes` are the envelope bytes the hash chain covers;
-- the other columns are what JetStream keeps as subject and headers.

CREATE TABLE commits (
    position        INTEGER PRIMARY KEY,          -- the stream sequence: 1, 2, 3, … no gaps
    commit_id       TEXT NOT NULL UNIQUE,         -- Nats-Msg-Id: idempotency key
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    event_types     TEXT NOT NULL,                -- Sems-Event-Type header
    correlation_id  TEXT NOT NULL,                -- Sems-Correlation-Id header
    traceparent     TEXT,
    tracestate      TEXT,
    bytes           BLOB NOT NULL
) STRICT;

-- An aggregate's commits in order; also how the writer finds an aggregate's last position
-- (one index seek) for the optimistic-concurrency check.
CREATE INDEX commits_aggregate ON commits (aggregate_id, position);

-- Append-only, as the stream's deny_delete / deny_purge: no commit is ever changed or removed.
CREATE TRIGGER commits_no_update BEFORE UPDATE ON commits
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: commits cannot be changed');
END;

CREATE TRIGGER commits_no_delete BEFORE DELETE ON commits
BEGIN
    SELECT RAISE(ABORT, 'the event log is append-only: commits cannot be deleted');
END;
