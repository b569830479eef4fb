-- Sightline SQLite schema, version 7: one histogram blob per window row.
--
-- Until now a histogram was stored one row per non-empty bucket (route_buckets*,
-- insight_route_buckets, query_buckets), so a day's routes table read a million rows and
-- grouped them in SQL. Now every window row carries its histograms as blobs that
-- sightline_protocol::decode_buckets reads: a format byte, then the non-empty buckets in
-- ascending order. The writer merges an incoming window by read-modify-write inside its
-- transaction (there is one writer) and writes format 2 (varints, ~3 bytes a bucket);
-- readers add up the blobs of a range in Rust.
--
-- The bucket rows already stored are converted here into format 1, which plain SQL can
-- build: the byte 0x01, then per bucket a big-endian u16 code (0 = the zero bucket,
-- otherwise index + 2) and a big-endian u64 count (`unhex` and `ORDER BY` inside an
-- aggregate need SQLite 3.44; sqlx bundles a newer one). Then their tables are dropped.
-- Buckets outside the scheme's range (-1..=2300 = sightline_protocol::MAX_BUCKET, or the
-- zero bucket) and empty ones were never written and are skipped.

ALTER TABLE route_windows ADD COLUMN hist BLOB NOT NULL DEFAULT x'01';
ALTER TABLE route_windows_1m ADD COLUMN hist BLOB NOT NULL DEFAULT x'01';
ALTER TABLE route_windows_1h ADD COLUMN hist BLOB NOT NULL DEFAULT x'01';

UPDATE route_windows AS w SET hist = b.hist
FROM (
    SELECT project_id, route, method, status_class, window_start,
           unhex('01' || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket)) AS hist
    FROM route_buckets
    WHERE count > 0 AND (bucket = -2147483648 OR bucket BETWEEN -1 AND 2300)
    GROUP BY project_id, route, method, status_class, window_start
) AS b
WHERE w.project_id = b.project_id AND w.route = b.route AND w.method = b.method
  AND w.status_class = b.status_class AND w.window_start = b.window_start;

UPDATE route_windows_1m AS w SET hist = b.hist
FROM (
    SELECT project_id, route, method, status_class, window_start,
           unhex('01' || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket)) AS hist
    FROM route_buckets_1m
    WHERE count > 0 AND (bucket = -2147483648 OR bucket BETWEEN -1 AND 2300)
    GROUP BY project_id, route, method, status_class, window_start
) AS b
WHERE w.project_id = b.project_id AND w.route = b.route AND w.method = b.method
  AND w.status_class = b.status_class AND w.window_start = b.window_start;

UPDATE route_windows_1h AS w SET hist = b.hist
FROM (
    SELECT project_id, route, method, status_class, window_start,
           unhex('01' || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket)) AS hist
    FROM route_buckets_1h
    WHERE count > 0 AND (bucket = -2147483648 OR bucket BETWEEN -1 AND 2300)
    GROUP BY project_id, route, method, status_class, window_start
) AS b
WHERE w.project_id = b.project_id AND w.route = b.route AND w.method = b.method
  AND w.status_class = b.status_class AND w.window_start = b.window_start;

-- Per-request histograms of insight_routes, one column per metric (the old `metric`
-- values 0-3).
ALTER TABLE insight_routes ADD COLUMN queries_hist BLOB NOT NULL DEFAULT x'01';
ALTER TABLE insight_routes ADD COLUMN query_us_hist BLOB NOT NULL DEFAULT x'01';
ALTER TABLE insight_routes ADD COLUMN allocs_hist BLOB NOT NULL DEFAULT x'01';
ALTER TABLE insight_routes ADD COLUMN alloc_bytes_hist BLOB NOT NULL DEFAULT x'01';

UPDATE insight_routes AS r SET
    queries_hist = COALESCE(b.h0, x'01'),
    query_us_hist = COALESCE(b.h1, x'01'),
    allocs_hist = COALESCE(b.h2, x'01'),
    alloc_bytes_hist = COALESCE(b.h3, x'01')
FROM (
    SELECT project_id, tier, window_start, route, method,
           unhex('01' || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket) FILTER (WHERE metric = 0)) AS h0,
           unhex('01' || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket) FILTER (WHERE metric = 1)) AS h1,
           unhex('01' || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket) FILTER (WHERE metric = 2)) AS h2,
           unhex('01' || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket) FILTER (WHERE metric = 3)) AS h3
    FROM insight_route_buckets
    WHERE count > 0 AND (bucket = -2147483648 OR bucket BETWEEN -1 AND 2300)
    GROUP BY project_id, tier, window_start, route, method
) AS b
WHERE r.project_id = b.project_id AND r.tier = b.tier AND r.window_start = b.window_start
  AND r.route = b.route AND r.method = b.method;

ALTER TABLE query_windows ADD COLUMN hist BLOB NOT NULL DEFAULT x'01';

UPDATE query_windows AS w SET hist = b.hist
FROM (
    SELECT project_id, tier, window_start, fingerprint,
           unhex('01' || group_concat(
               printf('%04X%016X', CASE bucket WHEN -2147483648 THEN 0 ELSE bucket + 2 END, count),
               '' ORDER BY bucket)) AS hist
    FROM query_buckets
    WHERE count > 0 AND (bucket = -2147483648 OR bucket BETWEEN -1 AND 2300)
    GROUP BY project_id, tier, window_start, fingerprint
) AS b
WHERE w.project_id = b.project_id AND w.tier = b.tier AND w.window_start = b.window_start
  AND w.fingerprint = b.fingerprint;

DROP TABLE route_buckets;
DROP TABLE route_buckets_1m;
DROP TABLE route_buckets_1h;
DROP TABLE insight_route_buckets;
DROP TABLE query_buckets;
