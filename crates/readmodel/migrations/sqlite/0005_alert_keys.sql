-- The alerts' key written behind the projector (crates/readmodel/src/alertkeys.rs): alert
-- ids are UUIDv5 of the dedup key, so a unique index on `alerts.alert_id` put every new
-- alert at a random place and dirtied a leaf page of its own. Rows are now numbered in the
-- order the projector creates them (`seq`), and `alert_keys` (alert id → seq) is filled in
-- sweeps over the key space, one range of ids at a time, with a watermark per range in
-- `alert_keys_sweep`: every row of an alert in that range up to the watermark has its key
-- in `alert_keys`; the projector holds the keys of later rows in memory.

CREATE TABLE alerts_by_seq (
    seq          INTEGER PRIMARY KEY,
    alert_id     TEXT NOT NULL,
    incident_id  TEXT,
    status       TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    doc          TEXT NOT NULL
) STRICT;

INSERT INTO alerts_by_seq (alert_id, incident_id, status, received_at, doc)
    SELECT alert_id, incident_id, status, received_at, doc FROM alerts ORDER BY rowid;

DROP TABLE alerts;
ALTER TABLE alerts_by_seq RENAME TO alerts;

CREATE INDEX alerts_incident ON alerts (incident_id, received_at DESC, alert_id DESC);
CREATE INDEX alerts_received ON alerts (received_at DESC, alert_id DESC);

CREATE TABLE alert_keys (
    alert_id  TEXT NOT NULL PRIMARY KEY,
    seq       INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO alert_keys (alert_id, seq) SELECT alert_id, seq FROM alerts ORDER BY alert_id;

CREATE TABLE alert_keys_sweep (
    prefix   INTEGER PRIMARY KEY CHECK (prefix BETWEEN 0 AND 4095),
    through  INTEGER NOT NULL
) STRICT;

WITH RECURSIVE p(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM p WHERE n < 4095)
INSERT INTO alert_keys_sweep (prefix, through)
    SELECT n, (SELECT COALESCE(MAX(seq), 0) FROM alerts) FROM p;
