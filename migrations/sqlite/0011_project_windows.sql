-- Sightline SQLite schema, version 11: a per-project rollup of the route windows.
--
-- The charts of all routes (the overview's throughput, error rate and latency, the Logs
-- and Memory request charts) add up every route of a step: over 24 hours in 15-minute
-- steps that was ~85 k one-minute rows (20 routes × 3 status classes × 1,440 minutes).
-- These tables hold the same windows without the route key, one row per status class
-- and environment per slot, in every tier (suffixes and slots as route_windows'); the
-- writer merges each batch into them, and all-routes reads take them instead.
--
-- Existing history is kept: the rows are built here from the route tables. Sums use TOTAL
-- capped at the largest integer, as the writer's saturating sums; a row's histogram holds
-- its routes' blobs side by side (readers add concatenated blobs up, and the writer
-- merges a row it touches back into one blob).

CREATE TABLE project_windows (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    window_start  INTEGER NOT NULL,         -- unix seconds, aligned to the tier
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    environment   TEXT    NOT NULL DEFAULT '',
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, status_class, environment)
) WITHOUT ROWID;
INSERT INTO project_windows (project_id, window_start, status_class, environment, window_secs, count,
    sum_us, min_us, max_us, hist)
SELECT project_id, window_start, status_class, environment, MAX(window_secs),
       CAST(MIN(TOTAL(count), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(sum_us), 9223372036854775807) AS INTEGER),
       MIN(min_us), MAX(max_us), CAST(group_concat(hist, '') AS BLOB)
FROM route_windows
GROUP BY project_id, window_start, status_class, environment;

CREATE TABLE project_windows_1m (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    window_start  INTEGER NOT NULL,         -- unix seconds, aligned to the tier
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    environment   TEXT    NOT NULL DEFAULT '',
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, status_class, environment)
) WITHOUT ROWID;
INSERT INTO project_windows_1m (project_id, window_start, status_class, environment, window_secs, count,
    sum_us, min_us, max_us, hist)
SELECT project_id, window_start, status_class, environment, MAX(window_secs),
       CAST(MIN(TOTAL(count), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(sum_us), 9223372036854775807) AS INTEGER),
       MIN(min_us), MAX(max_us), CAST(group_concat(hist, '') AS BLOB)
FROM route_windows_1m
GROUP BY project_id, window_start, status_class, environment;

CREATE TABLE project_windows_1h (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    window_start  INTEGER NOT NULL,         -- unix seconds, aligned to the tier
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    environment   TEXT    NOT NULL DEFAULT '',
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, status_class, environment)
) WITHOUT ROWID;
INSERT INTO project_windows_1h (project_id, window_start, status_class, environment, window_secs, count,
    sum_us, min_us, max_us, hist)
SELECT project_id, window_start, status_class, environment, MAX(window_secs),
       CAST(MIN(TOTAL(count), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(sum_us), 9223372036854775807) AS INTEGER),
       MIN(min_us), MAX(max_us), CAST(group_concat(hist, '') AS BLOB)
FROM route_windows_1h
GROUP BY project_id, window_start, status_class, environment;

CREATE TABLE project_windows_1d (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    window_start  INTEGER NOT NULL,         -- unix seconds, aligned to the tier
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    environment   TEXT    NOT NULL DEFAULT '',
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, status_class, environment)
) WITHOUT ROWID;
INSERT INTO project_windows_1d (project_id, window_start, status_class, environment, window_secs, count,
    sum_us, min_us, max_us, hist)
SELECT project_id, window_start, status_class, environment, MAX(window_secs),
       CAST(MIN(TOTAL(count), 9223372036854775807) AS INTEGER),
       CAST(MIN(TOTAL(sum_us), 9223372036854775807) AS INTEGER),
       MIN(min_us), MAX(max_us), CAST(group_concat(hist, '') AS BLOB)
FROM route_windows_1d
GROUP BY project_id, window_start, status_class, environment;
