-- Sightline SQLite schema, version 4: performance insight and rollup tiers.
--
-- Every insight table has a `tier` column: 0 = the agents' raw windows (kept 24 h by
-- default), 1 = 1-minute rollups (7 days), 2 = 1-hour rollups (90 days). The writer merges
-- each incoming window into all three tiers in the same transaction, so a rollup is always
-- complete and merging stays bucket-wise addition. The primary keys start with
-- (project_id, tier, window_start) so range queries and retention deletes are index scans.

-- Route-window rollups of the version-1 tables (raw stays in route_windows/route_buckets).
-- Version 7 (0007_histogram_blobs.sql) folds every *_buckets table below into a histogram
-- blob on its window row.
CREATE TABLE route_windows_1m (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    window_start  INTEGER NOT NULL,
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,
    sum_us        INTEGER NOT NULL,
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    PRIMARY KEY (project_id, route, method, status_class, window_start)
) WITHOUT ROWID;
CREATE INDEX route_windows_1m_by_time ON route_windows_1m (project_id, window_start);

CREATE TABLE route_buckets_1m (
    project_id    INTEGER NOT NULL,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    bucket        INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (project_id, route, method, status_class, window_start, bucket)
) WITHOUT ROWID;
CREATE INDEX route_buckets_1m_by_time ON route_buckets_1m (project_id, window_start);

CREATE TABLE route_windows_1h (
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL CHECK (status_class BETWEEN 1 AND 5),
    window_start  INTEGER NOT NULL,
    window_secs   INTEGER NOT NULL CHECK (window_secs > 0),
    count         INTEGER NOT NULL,
    sum_us        INTEGER NOT NULL,
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    PRIMARY KEY (project_id, route, method, status_class, window_start)
) WITHOUT ROWID;
CREATE INDEX route_windows_1h_by_time ON route_windows_1h (project_id, window_start);

CREATE TABLE route_buckets_1h (
    project_id    INTEGER NOT NULL,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    bucket        INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (project_id, route, method, status_class, window_start, bucket)
) WITHOUT ROWID;
CREATE INDEX route_buckets_1h_by_time ON route_buckets_1h (project_id, window_start);

-- Per route × method × window: sums over requests of queries, query time and
-- allocations (alloc_requests counts the requests measured by a counting allocator).
CREATE TABLE insight_routes (
    project_id      INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    tier            INTEGER NOT NULL,
    window_start    INTEGER NOT NULL,
    route           TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    window_secs     INTEGER NOT NULL,
    requests        INTEGER NOT NULL,
    queries         INTEGER NOT NULL,
    query_us        INTEGER NOT NULL,
    alloc_requests  INTEGER NOT NULL,
    allocs          INTEGER NOT NULL,
    alloc_bytes     INTEGER NOT NULL,
    n_plus_one      INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, window_start, route, method)
) WITHOUT ROWID;

-- Their per-request histograms: metric 0 = queries, 1 = query µs, 2 = allocations,
-- 3 = bytes allocated.
CREATE TABLE insight_route_buckets (
    project_id    INTEGER NOT NULL,
    tier          INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    metric        INTEGER NOT NULL,
    bucket        INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, window_start, route, method, metric, bucket)
) WITHOUT ROWID;

-- The text of every statement shape seen (FNV-1a 64 fingerprint, stored as the signed
-- 64-bit integer with the same bits).
CREATE TABLE query_fingerprints (
    project_id   INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    fingerprint  INTEGER NOT NULL,
    sql          TEXT    NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    PRIMARY KEY (project_id, fingerprint)
);

CREATE TABLE query_windows (
    project_id    INTEGER NOT NULL,
    tier          INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    fingerprint   INTEGER NOT NULL,
    window_secs   INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    sum_us        INTEGER NOT NULL,
    min_us        INTEGER NOT NULL,
    max_us        INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, window_start, fingerprint)
) WITHOUT ROWID;

CREATE TABLE query_buckets (
    project_id    INTEGER NOT NULL,
    tier          INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    fingerprint   INTEGER NOT NULL,
    bucket        INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, window_start, fingerprint, bucket)
) WITHOUT ROWID;

-- Executions per statement shape per calling route.
CREATE TABLE query_routes (
    project_id    INTEGER NOT NULL,
    tier          INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    fingerprint   INTEGER NOT NULL,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, window_start, fingerprint, route, method)
) WITHOUT ROWID;

-- Requests flagged as N+1, per route × method × fingerprint.
CREATE TABLE n_plus_one (
    project_id     INTEGER NOT NULL,
    tier           INTEGER NOT NULL,
    window_start   INTEGER NOT NULL,
    route          TEXT    NOT NULL,
    method         TEXT    NOT NULL,
    fingerprint    INTEGER NOT NULL,
    requests       INTEGER NOT NULL,
    total_repeats  INTEGER NOT NULL,
    max_repeats    INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, window_start, route, method, fingerprint)
) WITHOUT ROWID;

-- Whole requests with their waterfall (`entries`: JSON array of protocol `Entry`).
CREATE TABLE exemplars (
    id               INTEGER PRIMARY KEY,
    project_id       INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    service          TEXT    NOT NULL,
    instance         TEXT    NOT NULL,
    route            TEXT    NOT NULL,
    method           TEXT    NOT NULL,
    status           INTEGER NOT NULL,
    start_ms         INTEGER NOT NULL,
    duration_us      INTEGER NOT NULL,
    reasons          INTEGER NOT NULL,
    queries          INTEGER NOT NULL,
    query_us         INTEGER NOT NULL,
    allocs           INTEGER NOT NULL,
    alloc_bytes      INTEGER NOT NULL,
    dropped_entries  INTEGER NOT NULL,
    entries          TEXT    NOT NULL
);
CREATE INDEX exemplars_by_time ON exemplars (project_id, start_ms);
CREATE INDEX exemplars_by_route ON exemplars (project_id, route, method, start_ms);

-- Live heap per instance: tier 0 one row per sample second, tiers 1 and 2 the maximum
-- per minute / hour.
CREATE TABLE heap_samples (
    project_id   INTEGER NOT NULL,
    tier         INTEGER NOT NULL,
    ts           INTEGER NOT NULL,      -- unix seconds, aligned to the tier
    service      TEXT    NOT NULL,
    instance     TEXT    NOT NULL,
    live_bytes   INTEGER NOT NULL,      -- largest live heap sampled in the slot
    peak_bytes   INTEGER NOT NULL,
    PRIMARY KEY (project_id, tier, ts, service, instance)
) WITHOUT ROWID;
