-- The aggregate index, written behind the log (crates/eventlog/src/aggindex.rs): a table of
-- its own that the writer fills in sweeps over the key space, instead of an index SQLite
-- maintains on every append at a random place (alert ids are UUIDv5 of the dedup key).
-- Derived from `commits`: every row is (aggregate_id, position) of a commit there.

CREATE TABLE aggregate_index (
    aggregate_id  TEXT NOT NULL,
    position      INTEGER NOT NULL,
    PRIMARY KEY (aggregate_id, position)
) STRICT, WITHOUT ROWID;

-- One row per range of the key space (an id's first 12 bits, its first three hex digits):
-- every commit of an aggregate in that range up to `through` is in `aggregate_index`. The
-- writer holds commits above it in memory, and readers find them in the log.
CREATE TABLE aggregate_index_sweep (
    prefix   INTEGER PRIMARY KEY CHECK (prefix BETWEEN 0 AND 4095),
    through  INTEGER NOT NULL
) STRICT;

INSERT INTO aggregate_index (aggregate_id, position)
    SELECT aggregate_id, position FROM commits ORDER BY aggregate_id, position;

WITH RECURSIVE p(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM p WHERE n < 4095)
INSERT INTO aggregate_index_sweep (prefix, through)
    SELECT n, (SELECT COALESCE(MAX(position), 0) FROM commits) FROM p;

DROP INDEX commits_aggregate;

-- No triggers: both tables are derived from `commits` and rebuilt from it; when the log
-- has lost commits behind the writer's back (an older copy of the file put in place), the
-- writer removes the entries and lowers the watermarks above the log's last position.
