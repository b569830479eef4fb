-- Sightline SQLite schema, version 8: a 1-day rollup tier.
--
-- A 30-day read of the hour tier took 720 slots per key; whole days now come from the day
-- tier (31 slots), the partial days at the edges from the hour tier, so totals and
-- quantiles stay exactly those of the hour tier. The writer merges every window into the
-- day tier too (tier id 3, table suffix `_1d`, slots aligned to UTC midnight).
--
-- Existing history is kept: the day rows are built here from the hour rows. Sums use
-- TOTAL (a float, exact below 2^53) capped at the largest integer, as the writer's
-- saturating sums. Histograms: SQL cannot decode the writer's varint blobs, but a blob
-- says where it ends and readers add up concatenated blobs (sightline_protocol's
-- EncodedSum::add_concatenated), so a day row holds its hours' blobs side by side; the
-- writer turns a row it merges into back into one blob. Hour rows older than the hour
-- retention are already gone, so days before it start from whatever the hours held.

CREATE TABLE route_windows_1d (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    window_start  INTEGER NOT NULL,         -- unix seconds, a multiple of 86 400
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, route, method, status_class)
) WITHOUT ROWID;
INSERT INTO route_windows_1d
SELECT project_id, route, method, status_class, window_start / 86400 * 86400,
       MAX(86400, MAX(window_secs)),
       CAST(MIN(TOTAL(count), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(sum_us), 9223372036854775807) AS INTEGER),
       MIN(min_us), MAX(max_us), CAST(group_concat(hist, '') AS BLOB)
FROM route_windows_1h
GROUP BY project_id, window_start / 86400 * 86400, route, method, status_class;

INSERT INTO insight_routes (project_id, tier, window_start, route, method, window_secs,
    requests, queries, query_us, alloc_requests, allocs, alloc_bytes, n_plus_one,
    queries_hist, query_us_hist, allocs_hist, alloc_bytes_hist)
SELECT project_id, 3, window_start / 86400 * 86400, route, method,
       MAX(86400, MAX(window_secs)),
       CAST(MIN(TOTAL(requests), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(queries), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(query_us), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(alloc_requests), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(allocs), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(alloc_bytes), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(n_plus_one), 9223372036854775807) AS INTEGER),
       CAST(group_concat(queries_hist, '') AS BLOB),
       CAST(group_concat(query_us_hist, '') AS BLOB),
       CAST(group_concat(allocs_hist, '') AS BLOB),
       CAST(group_concat(alloc_bytes_hist, '') AS BLOB)
FROM insight_routes
WHERE tier = 2
GROUP BY project_id, window_start / 86400 * 86400, route, method;

INSERT INTO query_windows (project_id, tier, window_start, fingerprint, window_secs, count,
    sum_us, min_us, max_us, hist)
SELECT project_id, 3, window_start / 86400 * 86400, fingerprint,
       MAX(86400, MAX(window_secs)),
       CAST(MIN(TOTAL(count), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(sum_us), 9223372036854775807) AS INTEGER),
       MIN(min_us), MAX(max_us), CAST(group_concat(hist, '') AS BLOB)
FROM query_windows
WHERE tier = 2
GROUP BY project_id, window_start / 86400 * 86400, fingerprint;

INSERT INTO query_routes (project_id, tier, window_start, fingerprint, route, method, count)
SELECT project_id, 3, window_start / 86400 * 86400, fingerprint, route, method,
       CAST(MIN(TOTAL(count), 9223372036854775807) AS INTEGER)
FROM query_routes
WHERE tier = 2
GROUP BY project_id, window_start / 86400 * 86400, fingerprint, route, method;

INSERT INTO n_plus_one (project_id, tier, window_start, route, method, fingerprint, requests,
    total_repeats, max_repeats)
SELECT project_id, 3, window_start / 86400 * 86400, route, method, fingerprint,
       CAST(MIN(TOTAL(requests), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(total_repeats), 9223372036854775807) AS INTEGER),
       MAX(max_repeats)
FROM n_plus_one
WHERE tier = 2
GROUP BY project_id, window_start / 86400 * 86400, route, method, fingerprint;

INSERT INTO heap_samples (project_id, tier, ts, service, instance, live_bytes, peak_bytes)
SELECT project_id, 3, ts / 86400 * 86400, service, instance, MAX(live_bytes), MAX(peak_bytes)
FROM heap_samples
WHERE tier = 2
GROUP BY project_id, ts / 86400 * 86400, service, instance;
