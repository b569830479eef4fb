-- ClickHouse schema, version 2: performance insight (the SQLite tables of versions 4, 7, 8
-- and 10), in the shape of version 1's metric windows.
--
-- Each family of windows enters through a `Null` table, one row per agent window, and
-- materialized views fold every insert into four tier tables (`t`, `t_1m`, `t_1h`,
-- `t_1d`: raw, minute, hour and day slots, as `insight::slot` computes them for SQLite)
-- of aggregate states that add up whatever any collector inserted. Input columns are
-- named apart from the tier columns (an alias equal to a source column's name breaks the
-- views' aggregates on 18.16). Every table is partitioned by UTC day number so retention
-- drops whole days (`ClickHouseEvents::prune`); every sort key starts with the project
-- and the time, as every read is one project's range.

-- Per route × method × window: request, query and allocation sums and four per-request
-- histograms (queries, query µs, allocations, bytes). Windows without requests are never
-- written, as SQLite skips them.
CREATE TABLE IF NOT EXISTS insight_routes_in (
    project_id      UInt64,
    environment     String,
    route           String,
    method          String,
    start           Int64,
    secs            UInt32,
    request_count   UInt64,
    query_count     UInt64,
    query_time_us   UInt64,
    measured        UInt64,
    alloc_count     UInt64,
    alloc_byte_sum  UInt64,
    flagged         UInt64,
    q_buckets       Array(Int32),
    q_counts        Array(UInt64),
    qt_buckets      Array(Int32),
    qt_counts       Array(UInt64),
    a_buckets       Array(Int32),
    a_counts        Array(UInt64),
    ab_buckets      Array(Int32),
    ab_counts       Array(UInt64)
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS insight_routes (
    project_id        UInt64,
    environment       String,
    route             String,
    method            String,
    window_start      Int64,
    requests          AggregateFunction(sum, UInt64),
    queries           AggregateFunction(sum, UInt64),
    query_us          AggregateFunction(sum, UInt64),
    alloc_requests    AggregateFunction(sum, UInt64),
    allocs            AggregateFunction(sum, UInt64),
    alloc_bytes       AggregateFunction(sum, UInt64),
    n_plus_one        AggregateFunction(sum, UInt64),
    queries_hist      AggregateFunction(sumMap, Array(Int32), Array(UInt64)),
    query_us_hist     AggregateFunction(sumMap, Array(Int32), Array(UInt64)),
    allocs_hist       AggregateFunction(sumMap, Array(Int32), Array(UInt64)),
    alloc_bytes_hist  AggregateFunction(sumMap, Array(Int32), Array(UInt64))
) ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(window_start, 86400)
ORDER BY (project_id, window_start, route, method, environment);

CREATE TABLE IF NOT EXISTS insight_routes_1m AS insight_routes;

CREATE TABLE IF NOT EXISTS insight_routes_1h AS insight_routes;

CREATE TABLE IF NOT EXISTS insight_routes_1d AS insight_routes;

CREATE MATERIALIZED VIEW IF NOT EXISTS insight_routes_mv TO insight_routes AS
SELECT project_id, environment, route, method,
       start AS window_start,
       sumState(request_count) AS requests, sumState(query_count) AS queries,
       sumState(query_time_us) AS query_us, sumState(measured) AS alloc_requests,
       sumState(alloc_count) AS allocs, sumState(alloc_byte_sum) AS alloc_bytes,
       sumState(flagged) AS n_plus_one,
       sumMapState(q_buckets, q_counts) AS queries_hist,
       sumMapState(qt_buckets, qt_counts) AS query_us_hist,
       sumMapState(a_buckets, a_counts) AS allocs_hist,
       sumMapState(ab_buckets, ab_counts) AS alloc_bytes_hist
FROM insight_routes_in
GROUP BY project_id, environment, route, method, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS insight_routes_1m_mv TO insight_routes_1m AS
SELECT project_id, environment, route, method,
       intDiv(start, greatest(60, secs)) * greatest(60, secs) AS window_start,
       sumState(request_count) AS requests, sumState(query_count) AS queries,
       sumState(query_time_us) AS query_us, sumState(measured) AS alloc_requests,
       sumState(alloc_count) AS allocs, sumState(alloc_byte_sum) AS alloc_bytes,
       sumState(flagged) AS n_plus_one,
       sumMapState(q_buckets, q_counts) AS queries_hist,
       sumMapState(qt_buckets, qt_counts) AS query_us_hist,
       sumMapState(a_buckets, a_counts) AS allocs_hist,
       sumMapState(ab_buckets, ab_counts) AS alloc_bytes_hist
FROM insight_routes_in
GROUP BY project_id, environment, route, method, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS insight_routes_1h_mv TO insight_routes_1h AS
SELECT project_id, environment, route, method,
       intDiv(start, greatest(3600, secs)) * greatest(3600, secs) AS window_start,
       sumState(request_count) AS requests, sumState(query_count) AS queries,
       sumState(query_time_us) AS query_us, sumState(measured) AS alloc_requests,
       sumState(alloc_count) AS allocs, sumState(alloc_byte_sum) AS alloc_bytes,
       sumState(flagged) AS n_plus_one,
       sumMapState(q_buckets, q_counts) AS queries_hist,
       sumMapState(qt_buckets, qt_counts) AS query_us_hist,
       sumMapState(a_buckets, a_counts) AS allocs_hist,
       sumMapState(ab_buckets, ab_counts) AS alloc_bytes_hist
FROM insight_routes_in
GROUP BY project_id, environment, route, method, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS insight_routes_1d_mv TO insight_routes_1d AS
SELECT project_id, environment, route, method,
       intDiv(start, greatest(86400, secs)) * greatest(86400, secs) AS window_start,
       sumState(request_count) AS requests, sumState(query_count) AS queries,
       sumState(query_time_us) AS query_us, sumState(measured) AS alloc_requests,
       sumState(alloc_count) AS allocs, sumState(alloc_byte_sum) AS alloc_bytes,
       sumState(flagged) AS n_plus_one,
       sumMapState(q_buckets, q_counts) AS queries_hist,
       sumMapState(qt_buckets, qt_counts) AS query_us_hist,
       sumMapState(a_buckets, a_counts) AS allocs_hist,
       sumMapState(ab_buckets, ab_counts) AS alloc_bytes_hist
FROM insight_routes_in
GROUP BY project_id, environment, route, method, window_start;

-- Per statement shape (FNV-1a 64 fingerprint) × window: executions, time and a latency
-- histogram. Windows without executions are never written.
CREATE TABLE IF NOT EXISTS query_windows_in (
    project_id   UInt64,
    environment  String,
    fingerprint  UInt64,
    start        Int64,
    secs         UInt32,
    executions   UInt64,
    total_us     UInt64,
    fastest_us   UInt64,
    slowest_us   UInt64,
    buckets      Array(Int32),
    counts       Array(UInt64)
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS query_windows (
    project_id    UInt64,
    environment   String,
    fingerprint   UInt64,
    window_start  Int64,
    count         AggregateFunction(sum, UInt64),
    sum_us        AggregateFunction(sum, UInt64),
    min_us        AggregateFunction(min, UInt64),
    max_us        AggregateFunction(max, UInt64),
    hist          AggregateFunction(sumMap, Array(Int32), Array(UInt64))
) ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(window_start, 86400)
ORDER BY (project_id, window_start, fingerprint, environment);

CREATE TABLE IF NOT EXISTS query_windows_1m AS query_windows;

CREATE TABLE IF NOT EXISTS query_windows_1h AS query_windows;

CREATE TABLE IF NOT EXISTS query_windows_1d AS query_windows;

CREATE MATERIALIZED VIEW IF NOT EXISTS query_windows_mv TO query_windows AS
SELECT project_id, environment, fingerprint,
       start AS window_start,
       sumState(executions) AS count, sumState(total_us) AS sum_us,
       minState(fastest_us) AS min_us, maxState(slowest_us) AS max_us,
       sumMapState(buckets, counts) AS hist
FROM query_windows_in
GROUP BY project_id, environment, fingerprint, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS query_windows_1m_mv TO query_windows_1m AS
SELECT project_id, environment, fingerprint,
       intDiv(start, greatest(60, secs)) * greatest(60, secs) AS window_start,
       sumState(executions) AS count, sumState(total_us) AS sum_us,
       minState(fastest_us) AS min_us, maxState(slowest_us) AS max_us,
       sumMapState(buckets, counts) AS hist
FROM query_windows_in
GROUP BY project_id, environment, fingerprint, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS query_windows_1h_mv TO query_windows_1h AS
SELECT project_id, environment, fingerprint,
       intDiv(start, greatest(3600, secs)) * greatest(3600, secs) AS window_start,
       sumState(executions) AS count, sumState(total_us) AS sum_us,
       minState(fastest_us) AS min_us, maxState(slowest_us) AS max_us,
       sumMapState(buckets, counts) AS hist
FROM query_windows_in
GROUP BY project_id, environment, fingerprint, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS query_windows_1d_mv TO query_windows_1d AS
SELECT project_id, environment, fingerprint,
       intDiv(start, greatest(86400, secs)) * greatest(86400, secs) AS window_start,
       sumState(executions) AS count, sumState(total_us) AS sum_us,
       minState(fastest_us) AS min_us, maxState(slowest_us) AS max_us,
       sumMapState(buckets, counts) AS hist
FROM query_windows_in
GROUP BY project_id, environment, fingerprint, window_start;

-- Executions per statement shape per calling route, for the windows above.
CREATE TABLE IF NOT EXISTS query_routes_in (
    project_id   UInt64,
    environment  String,
    fingerprint  UInt64,
    start        Int64,
    secs         UInt32,
    route        String,
    method       String,
    executions   UInt64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS query_routes (
    project_id    UInt64,
    environment   String,
    fingerprint   UInt64,
    route         String,
    method        String,
    window_start  Int64,
    count         AggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(window_start, 86400)
ORDER BY (project_id, window_start, fingerprint, route, method, environment);

CREATE TABLE IF NOT EXISTS query_routes_1m AS query_routes;

CREATE TABLE IF NOT EXISTS query_routes_1h AS query_routes;

CREATE TABLE IF NOT EXISTS query_routes_1d AS query_routes;

CREATE MATERIALIZED VIEW IF NOT EXISTS query_routes_mv TO query_routes AS
SELECT project_id, environment, fingerprint, route, method,
       start AS window_start,
       sumState(executions) AS count
FROM query_routes_in
GROUP BY project_id, environment, fingerprint, route, method, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS query_routes_1m_mv TO query_routes_1m AS
SELECT project_id, environment, fingerprint, route, method,
       intDiv(start, greatest(60, secs)) * greatest(60, secs) AS window_start,
       sumState(executions) AS count
FROM query_routes_in
GROUP BY project_id, environment, fingerprint, route, method, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS query_routes_1h_mv TO query_routes_1h AS
SELECT project_id, environment, fingerprint, route, method,
       intDiv(start, greatest(3600, secs)) * greatest(3600, secs) AS window_start,
       sumState(executions) AS count
FROM query_routes_in
GROUP BY project_id, environment, fingerprint, route, method, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS query_routes_1d_mv TO query_routes_1d AS
SELECT project_id, environment, fingerprint, route, method,
       intDiv(start, greatest(86400, secs)) * greatest(86400, secs) AS window_start,
       sumState(executions) AS count
FROM query_routes_in
GROUP BY project_id, environment, fingerprint, route, method, window_start;

-- Requests flagged as N+1, per route × method × fingerprint × window.
CREATE TABLE IF NOT EXISTS n_plus_one_in (
    project_id   UInt64,
    environment  String,
    route        String,
    method       String,
    fingerprint  UInt64,
    start        Int64,
    secs         UInt32,
    flagged      UInt64,
    repeats      UInt64,
    most         UInt64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS n_plus_one (
    project_id     UInt64,
    environment    String,
    route          String,
    method         String,
    fingerprint    UInt64,
    window_start   Int64,
    requests       AggregateFunction(sum, UInt64),
    total_repeats  AggregateFunction(sum, UInt64),
    max_repeats    AggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(window_start, 86400)
ORDER BY (project_id, window_start, route, method, fingerprint, environment);

CREATE TABLE IF NOT EXISTS n_plus_one_1m AS n_plus_one;

CREATE TABLE IF NOT EXISTS n_plus_one_1h AS n_plus_one;

CREATE TABLE IF NOT EXISTS n_plus_one_1d AS n_plus_one;

CREATE MATERIALIZED VIEW IF NOT EXISTS n_plus_one_mv TO n_plus_one AS
SELECT project_id, environment, route, method, fingerprint,
       start AS window_start,
       sumState(flagged) AS requests, sumState(repeats) AS total_repeats,
       maxState(most) AS max_repeats
FROM n_plus_one_in
GROUP BY project_id, environment, route, method, fingerprint, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS n_plus_one_1m_mv TO n_plus_one_1m AS
SELECT project_id, environment, route, method, fingerprint,
       intDiv(start, greatest(60, secs)) * greatest(60, secs) AS window_start,
       sumState(flagged) AS requests, sumState(repeats) AS total_repeats,
       maxState(most) AS max_repeats
FROM n_plus_one_in
GROUP BY project_id, environment, route, method, fingerprint, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS n_plus_one_1h_mv TO n_plus_one_1h AS
SELECT project_id, environment, route, method, fingerprint,
       intDiv(start, greatest(3600, secs)) * greatest(3600, secs) AS window_start,
       sumState(flagged) AS requests, sumState(repeats) AS total_repeats,
       maxState(most) AS max_repeats
FROM n_plus_one_in
GROUP BY project_id, environment, route, method, fingerprint, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS n_plus_one_1d_mv TO n_plus_one_1d AS
SELECT project_id, environment, route, method, fingerprint,
       intDiv(start, greatest(86400, secs)) * greatest(86400, secs) AS window_start,
       sumState(flagged) AS requests, sumState(repeats) AS total_repeats,
       maxState(most) AS max_repeats
FROM n_plus_one_in
GROUP BY project_id, environment, route, method, fingerprint, window_start;

-- Live heap per instance: the raw tier one row per sample second, the others the maximum
-- per minute, hour and day. The environment is part of the key (SQLite keeps the last
-- one an instance reported in a slot).
CREATE TABLE IF NOT EXISTS heap_in (
    project_id   UInt64,
    environment  String,
    service      String,
    instance     String,
    second       Int64,
    live         UInt64,
    peak         UInt64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS heap_samples (
    project_id   UInt64,
    environment  String,
    service      String,
    instance     String,
    ts           Int64,
    live_bytes   AggregateFunction(max, UInt64),
    peak_bytes   AggregateFunction(max, UInt64)
) ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(ts, 86400)
ORDER BY (project_id, ts, service, instance, environment);

CREATE TABLE IF NOT EXISTS heap_samples_1m AS heap_samples;

CREATE TABLE IF NOT EXISTS heap_samples_1h AS heap_samples;

CREATE TABLE IF NOT EXISTS heap_samples_1d AS heap_samples;

CREATE MATERIALIZED VIEW IF NOT EXISTS heap_samples_mv TO heap_samples AS
SELECT project_id, environment, service, instance,
       second AS ts,
       maxState(live) AS live_bytes, maxState(peak) AS peak_bytes
FROM heap_in
GROUP BY project_id, environment, service, instance, ts;

CREATE MATERIALIZED VIEW IF NOT EXISTS heap_samples_1m_mv TO heap_samples_1m AS
SELECT project_id, environment, service, instance,
       intDiv(second, 60) * 60 AS ts,
       maxState(live) AS live_bytes, maxState(peak) AS peak_bytes
FROM heap_in
GROUP BY project_id, environment, service, instance, ts;

CREATE MATERIALIZED VIEW IF NOT EXISTS heap_samples_1h_mv TO heap_samples_1h AS
SELECT project_id, environment, service, instance,
       intDiv(second, 3600) * 3600 AS ts,
       maxState(live) AS live_bytes, maxState(peak) AS peak_bytes
FROM heap_in
GROUP BY project_id, environment, service, instance, ts;

CREATE MATERIALIZED VIEW IF NOT EXISTS heap_samples_1d_mv TO heap_samples_1d AS
SELECT project_id, environment, service, instance,
       intDiv(second, 86400) * 86400 AS ts,
       maxState(live) AS live_bytes, maxState(peak) AS peak_bytes
FROM heap_in
GROUP BY project_id, environment, service, instance, ts;

-- Whole requests with their waterfall (`entries`: the JSON array of protocol entries, as
-- SQLite stores it). `id` is a 63-bit hash of the exemplar (`insight::exemplar_id`):
-- stable across collectors and retries, whose copies collapse here and are read once.
-- Kept as long as the raw tier, by day of `start_ms`.
CREATE TABLE IF NOT EXISTS exemplars (
    project_id       UInt64,
    id               UInt64,
    environment      String,
    service          String,
    instance         String,
    route            String,
    method           String,
    status           UInt16,
    start_ms         Int64,
    duration_us      UInt64,
    reasons          UInt8,
    queries          UInt64,
    query_us         UInt64,
    allocs           UInt64,
    alloc_bytes      UInt64,
    dropped_entries  UInt64,
    entries          String
) ENGINE = ReplacingMergeTree()
PARTITION BY intDiv(start_ms, 86400000)
ORDER BY (project_id, start_ms, id);

-- The text of every statement shape seen, one row per day it was seen in (by
-- `last_seen`, the collector's clock): dropping a day past the day tier's retention
-- forgets a text only when no later day saw it, as SQLite deletes by `last_seen`.
CREATE TABLE IF NOT EXISTS query_fingerprints (
    project_id   UInt64,
    fingerprint  UInt64,
    sql          String,
    first_seen   Int64,
    last_seen    Int64
) ENGINE = ReplacingMergeTree(last_seen)
PARTITION BY intDiv(last_seen, 86400)
ORDER BY (project_id, fingerprint);
