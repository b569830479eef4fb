-- Sightline SQLite schema, version 10: the deployment environment in every aggregate.
--
-- Agents report the environment they run in (AgentInfo.environment, e.g. `production`);
-- the dashboard's environment selector and the API's `environment` parameter show one
-- environment's figures. So every window table gets an `environment` key column, the
-- last of its primary key (reads are time ranges first; an environment filter is a
-- check on rows the range already visits). An agent without one is stored as ''.
-- Windows stored before this version did not keep theirs: they become '' and count under
-- "all environments" only.
--
-- SQLite cannot change a primary key in place: each table is rebuilt and renamed.
CREATE TABLE route_windows_v10 (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    environment   TEXT    NOT NULL DEFAULT '',
    window_start  INTEGER NOT NULL,         -- unix seconds
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, route, method, status_class, environment)
) WITHOUT ROWID;
INSERT INTO route_windows_v10 (project_id, route, method, status_class, window_start, window_secs, count, sum_us, min_us, max_us, hist)
SELECT project_id, route, method, status_class, window_start, window_secs, count, sum_us, min_us, max_us, hist FROM route_windows;
DROP TABLE route_windows;
ALTER TABLE route_windows_v10 RENAME TO route_windows;

CREATE TABLE route_windows_1m_v10 (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    environment   TEXT    NOT NULL DEFAULT '',
    window_start  INTEGER NOT NULL,         -- unix seconds
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, route, method, status_class, environment)
) WITHOUT ROWID;
INSERT INTO route_windows_1m_v10 (project_id, route, method, status_class, window_start, window_secs, count, sum_us, min_us, max_us, hist)
SELECT project_id, route, method, status_class, window_start, window_secs, count, sum_us, min_us, max_us, hist FROM route_windows_1m;
DROP TABLE route_windows_1m;
ALTER TABLE route_windows_1m_v10 RENAME TO route_windows_1m;

CREATE TABLE route_windows_1h_v10 (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    environment   TEXT    NOT NULL DEFAULT '',
    window_start  INTEGER NOT NULL,         -- unix seconds
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, route, method, status_class, environment)
) WITHOUT ROWID;
INSERT INTO route_windows_1h_v10 (project_id, route, method, status_class, window_start, window_secs, count, sum_us, min_us, max_us, hist)
SELECT project_id, route, method, status_class, window_start, window_secs, count, sum_us, min_us, max_us, hist FROM route_windows_1h;
DROP TABLE route_windows_1h;
ALTER TABLE route_windows_1h_v10 RENAME TO route_windows_1h;

CREATE TABLE route_windows_1d_v10 (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    environment   TEXT    NOT NULL DEFAULT '',
    window_start  INTEGER NOT NULL,         -- unix seconds
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,         -- requests
    sum_us        INTEGER NOT NULL,         -- latency sum, microseconds
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL,         -- latency buckets
    PRIMARY KEY (project_id, window_start, route, method, status_class, environment)
) WITHOUT ROWID;
INSERT INTO route_windows_1d_v10 (project_id, route, method, status_class, window_start, window_secs, count, sum_us, min_us, max_us, hist)
SELECT project_id, route, method, status_class, window_start, window_secs, count, sum_us, min_us, max_us, hist FROM route_windows_1d;
DROP TABLE route_windows_1d;
ALTER TABLE route_windows_1d_v10 RENAME TO route_windows_1d;

CREATE TABLE insight_routes_v10 (
    project_id        INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    tier              INTEGER NOT NULL,
    window_start      INTEGER NOT NULL,
    route             TEXT    NOT NULL,
    method            TEXT    NOT NULL,
    environment       TEXT    NOT NULL DEFAULT '',
    window_secs       INTEGER NOT NULL,
    requests          INTEGER NOT NULL,
    queries           INTEGER NOT NULL,
    query_us          INTEGER NOT NULL,
    alloc_requests    INTEGER NOT NULL,
    allocs            INTEGER NOT NULL,
    alloc_bytes       INTEGER NOT NULL,
    n_plus_one        INTEGER NOT NULL,
    queries_hist      BLOB    NOT NULL DEFAULT x'010000',
    query_us_hist     BLOB    NOT NULL DEFAULT x'010000',
    allocs_hist       BLOB    NOT NULL DEFAULT x'010000',
    alloc_bytes_hist  BLOB    NOT NULL DEFAULT x'010000',
    PRIMARY KEY (project_id, tier, window_start, route, method, environment)
) WITHOUT ROWID;
INSERT INTO insight_routes_v10 (project_id, tier, window_start, route, method, window_secs, requests, queries, query_us, alloc_requests, allocs, alloc_bytes, n_plus_one, queries_hist, query_us_hist, allocs_hist, alloc_bytes_hist)
SELECT project_id, tier, window_start, route, method, window_secs, requests, queries, query_us, alloc_requests, allocs, alloc_bytes, n_plus_one, queries_hist, query_us_hist, allocs_hist, alloc_bytes_hist FROM insight_routes;
DROP TABLE insight_routes;
ALTER TABLE insight_routes_v10 RENAME TO insight_routes;

CREATE TABLE query_windows_v10 (
    project_id    INTEGER NOT NULL,
    tier          INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    fingerprint   INTEGER NOT NULL,
    environment   TEXT    NOT NULL DEFAULT '',
    window_secs   INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    sum_us        INTEGER NOT NULL,
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    hist          BLOB    NOT NULL DEFAULT x'010000',
    PRIMARY KEY (project_id, tier, window_start, fingerprint, environment)
) WITHOUT ROWID;
INSERT INTO query_windows_v10 (project_id, tier, window_start, fingerprint, window_secs, count, sum_us, min_us, max_us, hist)
SELECT project_id, tier, window_start, fingerprint, window_secs, count, sum_us, min_us, max_us, hist FROM query_windows;
DROP TABLE query_windows;
ALTER TABLE query_windows_v10 RENAME TO query_windows;

CREATE TABLE query_routes_v10 (
    project_id    INTEGER NOT NULL,
    tier          INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    fingerprint   INTEGER NOT NULL,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    environment   TEXT    NOT NULL DEFAULT '',
    count         INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, window_start, fingerprint, route, method, environment)
) WITHOUT ROWID;
INSERT INTO query_routes_v10 (project_id, tier, window_start, fingerprint, route, method, count)
SELECT project_id, tier, window_start, fingerprint, route, method, count FROM query_routes;
DROP TABLE query_routes;
ALTER TABLE query_routes_v10 RENAME TO query_routes;

CREATE TABLE n_plus_one_v10 (
    project_id     INTEGER NOT NULL,
    tier           INTEGER NOT NULL,
    window_start   INTEGER NOT NULL,
    route          TEXT    NOT NULL,
    method         TEXT    NOT NULL,
    fingerprint    INTEGER NOT NULL,
    environment    TEXT    NOT NULL DEFAULT '',
    requests       INTEGER NOT NULL,
    total_repeats  INTEGER NOT NULL,
    max_repeats    INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, window_start, route, method, fingerprint, environment)
) WITHOUT ROWID;
INSERT INTO n_plus_one_v10 (project_id, tier, window_start, route, method, fingerprint, requests, total_repeats, max_repeats)
SELECT project_id, tier, window_start, route, method, fingerprint, requests, total_repeats, max_repeats FROM n_plus_one;
DROP TABLE n_plus_one;
ALTER TABLE n_plus_one_v10 RENAME TO n_plus_one;

-- Exemplars and heap samples name their instance; the environment it reported rides
-- along, so they filter like the windows.
ALTER TABLE exemplars ADD COLUMN environment TEXT NOT NULL DEFAULT '';
ALTER TABLE heap_samples ADD COLUMN environment TEXT NOT NULL DEFAULT '';
