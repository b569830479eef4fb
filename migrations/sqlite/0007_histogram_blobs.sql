-- Sightline SQLite schema, version 7: one histogram blob per window row.
--
-- Until now a histogram was stored one row per non-empty bucket (route_buckets*,
-- insight_route_buckets, query_buckets), so a day's routes table read a million rows and
-- grouped them in SQL. Now every window row carries its histograms as blobs that
-- sightline_protocol::decode_buckets reads: a format byte, the number of buckets, then
-- the non-empty buckets in ascending order. A blob says where it ends, so a read returns
-- `group_concat(hist, '')` per key and Rust adds the concatenated blobs up. The writer
-- merges an incoming window by read-modify-write inside its transaction (there is one
-- writer) and writes format 2 (varints, ~3 bytes a bucket).
--
-- The bucket rows already stored are converted here into format 1, which plain SQL can
-- build: the byte 0x01, the number of buckets as a big-endian u16, then per bucket a
-- big-endian u16 code (0 = the zero bucket, otherwise index + 2) and a big-endian u64
-- count (`unhex` and `ORDER BY` inside an aggregate need SQLite 3.44; sqlx bundles a
-- newer one). Then the bucket tables are dropped. Buckets outside the scheme's range
-- (-1..=2300 = sightline_protocol::MAX_BUCKET, or the zero bucket) and empty ones were
-- never written and are skipped.

-- Route windows of every tier are rebuilt with the time first in their primary key:
-- every read is a time range, and with (route, …, window_start) first it went through
-- the by-time index and one primary-key lookup per row, several times slower than a
-- range scan of the table itself. The by-time indexes go with the old tables.
CREATE TABLE route_windows_v7 (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    window_start  INTEGER NOT NULL,         -- unix seconds
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, route, method, status_class)
) WITHOUT ROWID;
INSERT INTO route_windows_v7
SELECT w.project_id, w.route, w.method, w.status_class, w.window_start, w.window_secs,
       w.count, w.sum_us, w.min_us, w.max_us,
       COALESCE((
           SELECT unhex('01' || printf('%04X', COUNT(*)) || group_concat(
               printf('%04X%016X', CASE b.bucket WHEN -2147483648 THEN 0 ELSE b.bucket + 2 END,
                      b.count),
               '' ORDER BY b.bucket))
           FROM route_buckets b
           WHERE b.project_id = w.project_id AND b.route = w.route AND b.method = w.method
             AND b.status_class = w.status_class AND b.window_start = w.window_start
             AND b.count > 0 AND (b.bucket = -2147483648 OR b.bucket BETWEEN -1 AND 2300)
       ), x'010000')
FROM route_windows w;
DROP TABLE route_buckets;
DROP TABLE route_windows;
ALTER TABLE route_windows_v7 RENAME TO route_windows;

CREATE TABLE route_windows_1m_v7 (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    window_start  INTEGER NOT NULL,         -- unix seconds
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, route, method, status_class)
) WITHOUT ROWID;
INSERT INTO route_windows_1m_v7
SELECT w.project_id, w.route, w.method, w.status_class, w.window_start, w.window_secs,
       w.count, w.sum_us, w.min_us, w.max_us,
       COALESCE((
           SELECT unhex('01' || printf('%04X', COUNT(*)) || group_concat(
               printf('%04X%016X', CASE b.bucket WHEN -2147483648 THEN 0 ELSE b.bucket + 2 END,
                      b.count),
               '' ORDER BY b.bucket))
           FROM route_buckets_1m b
           WHERE b.project_id = w.project_id AND b.route = w.route AND b.method = w.method
             AND b.status_class = w.status_class AND b.window_start = w.window_start
             AND b.count > 0 AND (b.bucket = -2147483648 OR b.bucket BETWEEN -1 AND 2300)
       ), x'010000')
FROM route_windows_1m w;
DROP TABLE route_buckets_1m;
DROP TABLE route_windows_1m;
ALTER TABLE route_windows_1m_v7 RENAME TO route_windows_1m;

CREATE TABLE route_windows_1h_v7 (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    window_start  INTEGER NOT NULL,         -- unix seconds
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, route, method, status_class)
) WITHOUT ROWID;
INSERT INTO route_windows_1h_v7
SELECT w.project_id, w.route, w.method, w.status_class, w.window_start, w.window_secs,
       w.count, w.sum_us, w.min_us, w.max_us,
       COALESCE((
           SELECT unhex('01' || printf('%04X', COUNT(*)) || group_concat(
               printf('%04X%016X', CASE b.bucket WHEN -2147483648 THEN 0 ELSE b.bucket + 2 END,
                      b.count),
               '' ORDER BY b.bucket))
           FROM route_buckets_1h b
           WHERE b.project_id = w.project_id AND b.route = w.route AND b.method = w.method
             AND b.status_class = w.status_class AND b.window_start = w.window_start
             AND b.count > 0 AND (b.bucket = -2147483648 OR b.bucket BETWEEN -1 AND 2300)
       ), x'010000')
FROM route_windows_1h w;
DROP TABLE route_buckets_1h;
DROP TABLE route_windows_1h;
ALTER TABLE route_windows_1h_v7 RENAME TO route_windows_1h;

-- Per-request histograms of insight_routes, one column per metric (the old `metric`
-- values 0-3).
ALTER TABLE insight_routes ADD COLUMN queries_hist BLOB NOT NULL DEFAULT x'010000';
ALTER TABLE insight_routes ADD COLUMN query_us_hist BLOB NOT NULL DEFAULT x'010000';
ALTER TABLE insight_routes ADD COLUMN allocs_hist BLOB NOT NULL DEFAULT x'010000';
ALTER TABLE insight_routes ADD COLUMN alloc_bytes_hist BLOB NOT NULL DEFAULT x'010000';

UPDATE insight_routes AS r SET
    queries_hist = COALESCE(b.h0, x'010000'),
    query_us_hist = COALESCE(b.h1, x'010000'),
    allocs_hist = COALESCE(b.h2, x'010000'),
    alloc_bytes_hist = COALESCE(b.h3, x'010000')
FROM (
    SELECT project_id, tier, window_start, route, method,
           unhex('01' || printf('%04X', COUNT(*) FILTER (WHERE metric = 0)) || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket) FILTER (WHERE metric = 0)) AS h0,
           unhex('01' || printf('%04X', COUNT(*) FILTER (WHERE metric = 1)) || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket) FILTER (WHERE metric = 1)) AS h1,
           unhex('01' || printf('%04X', COUNT(*) FILTER (WHERE metric = 2)) || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket) FILTER (WHERE metric = 2)) AS h2,
           unhex('01' || printf('%04X', COUNT(*) FILTER (WHERE metric = 3)) || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket) FILTER (WHERE metric = 3)) AS h3
    FROM insight_route_buckets
    WHERE count > 0 AND (bucket = -2147483648 OR bucket BETWEEN -1 AND 2300)
    GROUP BY project_id, tier, window_start, route, method
) AS b
WHERE r.project_id = b.project_id AND r.tier = b.tier AND r.window_start = b.window_start
  AND r.route = b.route AND r.method = b.method;

ALTER TABLE query_windows ADD COLUMN hist BLOB NOT NULL DEFAULT x'010000';

UPDATE query_windows AS w SET hist = b.hist
FROM (
    SELECT project_id, tier, window_start, fingerprint,
           unhex('01' || printf('%04X', COUNT(*)) || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket)) AS hist
    FROM query_buckets
    WHERE count > 0 AND (bucket = -2147483648 OR bucket BETWEEN -1 AND 2300)
    GROUP BY project_id, tier, window_start, fingerprint
) AS b
WHERE w.project_id = b.project_id AND w.tier = b.tier AND w.window_start = b.window_start
  AND w.fingerprint = b.fingerprint;

DROP TABLE insight_route_buckets;
DROP TABLE query_buckets;
