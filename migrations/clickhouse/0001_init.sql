-- ClickHouse events and metrics schema (scale-out mode).
--
-- Runs on ClickHouse 18.16 and on current releases: no DateTime64, Map, JSON, TTL or
-- SimpleAggregateFunction, and the `ENGINE = X() PARTITION BY … ORDER BY …` syntax (the
-- old `MergeTree(date, key, 8192)` form is gone from current releases).
-- Every statement is idempotent (IF NOT EXISTS): ClickHouse has no transactions, so a
-- collector that dies halfway through re-runs the whole file, and two collectors starting
-- at once may both run it. One statement per `;`-terminated line group.

-- Error events, one row per stored event. A retried insert writes the same event again:
-- rows of one event share the sorting key, so merges keep one (the highest `version`,
-- which is the earliest received, as SQLite keeps the first), and reads take one row per
-- `id` so they are exact before merges too. Sorted by issue then time: the events list
-- of an issue reads one key range, newest first. `id` is a 63-bit hash of
-- (project_id, event_id): stable across collectors and retries, the list's tie-breaker.
-- `payload` holds the compressed bytes of `StoredPayload`.
CREATE TABLE IF NOT EXISTS events (
    project_id  UInt64,
    issue_id    UInt64,
    id          UInt64,
    event_id    String,
    timestamp   Float64,
    received    Float64,
    level       String,
    title       String,
    culprit     String,
    platform    String,
    environment Nullable(String),
    release     Nullable(String),
    user        Nullable(String),
    hash        String,
    grouped_by  String,
    tags        String,
    payload     String,
    version     UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(toDateTime(toUInt32(received), 'UTC'))
ORDER BY (issue_id, timestamp, id);

-- Where each event lives, by (project, id): a lookup by event id finds its issue here and
-- then reads one issue's key range of `events` instead of scanning every issue.
CREATE TABLE IF NOT EXISTS event_ids (
    project_id UInt64,
    id         UInt64,
    issue_id   UInt64,
    received   Float64,
    version    UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(toDateTime(toUInt32(received), 'UTC'))
ORDER BY (project_id, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_mv TO event_ids AS
SELECT project_id, id, issue_id, received, version FROM events;

-- Metric windows enter here, one row per agent window (empty ones are never written).
-- The Null engine keeps nothing: the materialized views below fold each insert into the
-- four tiers of the route tables and of the per-project rollup. The input columns are
-- named apart from the tier columns because an alias equal to a source column's name
-- breaks the views' aggregates on 18.16.
CREATE TABLE IF NOT EXISTS windows_in (
    project_id   UInt64,
    environment  String,
    route        String,
    method       String,
    status_class UInt8,
    start        Int64,
    secs         UInt32,
    requests     UInt64,
    total_us     UInt64,
    fastest_us   UInt64,
    slowest_us   UInt64,
    buckets      Array(Int32),
    counts       Array(UInt64)
) ENGINE = Null;

-- Tier tables: aggregate states merged by the engine, so windows from any number of
-- inserts, instances and collectors add up (histograms by bucket sums, never averaged).
-- min/max are AggregateFunction states because SimpleAggregateFunction is missing on
-- 18.16. Partitioned by UTC day number (`intDiv(window_start, 86400)`) so retention drops
-- whole days without TTL. Sorted by project then time: every read is one project's range.
CREATE TABLE IF NOT EXISTS route_windows (
    project_id   UInt64,
    environment  String,
    route        String,
    method       String,
    status_class UInt8,
    window_start Int64,
    window_secs  AggregateFunction(max, UInt32),
    count        AggregateFunction(sum, UInt64),
    sum_us       AggregateFunction(sum, UInt64),
    min_us       AggregateFunction(min, UInt64),
    max_us       AggregateFunction(max, UInt64),
    hist         AggregateFunction(sumMap, Array(Int32), Array(UInt64))
) ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(window_start, 86400)
ORDER BY (project_id, window_start, route, method, status_class, environment);

CREATE TABLE IF NOT EXISTS route_windows_1m AS route_windows;

CREATE TABLE IF NOT EXISTS route_windows_1h AS route_windows;

CREATE TABLE IF NOT EXISTS route_windows_1d AS route_windows;

CREATE TABLE IF NOT EXISTS project_windows (
    project_id   UInt64,
    environment  String,
    status_class UInt8,
    window_start Int64,
    window_secs  AggregateFunction(max, UInt32),
    count        AggregateFunction(sum, UInt64),
    sum_us       AggregateFunction(sum, UInt64),
    min_us       AggregateFunction(min, UInt64),
    max_us       AggregateFunction(max, UInt64),
    hist         AggregateFunction(sumMap, Array(Int32), Array(UInt64))
) ENGINE = AggregatingMergeTree()
PARTITION BY intDiv(window_start, 86400)
ORDER BY (project_id, window_start, status_class, environment);

CREATE TABLE IF NOT EXISTS project_windows_1m AS project_windows;

CREATE TABLE IF NOT EXISTS project_windows_1h AS project_windows;

CREATE TABLE IF NOT EXISTS project_windows_1d AS project_windows;

-- A window lands in the slot holding its start, as `insight::slot` computes it for
-- SQLite: a slot of the tier's length, or of the window's own when that is longer.
CREATE MATERIALIZED VIEW IF NOT EXISTS route_windows_mv TO route_windows AS
SELECT project_id, environment, route, method, status_class,
       start AS window_start,
       maxState(secs) AS window_secs, sumState(requests) AS count,
       sumState(total_us) AS sum_us, minState(fastest_us) AS min_us,
       maxState(slowest_us) AS max_us, sumMapState(buckets, counts) AS hist
FROM windows_in
GROUP BY project_id, environment, route, method, status_class, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS route_windows_1m_mv TO route_windows_1m AS
SELECT project_id, environment, route, method, status_class,
       intDiv(start, greatest(60, secs)) * greatest(60, secs) AS window_start,
       maxState(toUInt32(greatest(60, secs))) AS window_secs, sumState(requests) AS count,
       sumState(total_us) AS sum_us, minState(fastest_us) AS min_us,
       maxState(slowest_us) AS max_us, sumMapState(buckets, counts) AS hist
FROM windows_in
GROUP BY project_id, environment, route, method, status_class, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS route_windows_1h_mv TO route_windows_1h AS
SELECT project_id, environment, route, method, status_class,
       intDiv(start, greatest(3600, secs)) * greatest(3600, secs) AS window_start,
       maxState(toUInt32(greatest(3600, secs))) AS window_secs, sumState(requests) AS count,
       sumState(total_us) AS sum_us, minState(fastest_us) AS min_us,
       maxState(slowest_us) AS max_us, sumMapState(buckets, counts) AS hist
FROM windows_in
GROUP BY project_id, environment, route, method, status_class, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS route_windows_1d_mv TO route_windows_1d AS
SELECT project_id, environment, route, method, status_class,
       intDiv(start, greatest(86400, secs)) * greatest(86400, secs) AS window_start,
       maxState(toUInt32(greatest(86400, secs))) AS window_secs, sumState(requests) AS count,
       sumState(total_us) AS sum_us, minState(fastest_us) AS min_us,
       maxState(slowest_us) AS max_us, sumMapState(buckets, counts) AS hist
FROM windows_in
GROUP BY project_id, environment, route, method, status_class, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS project_windows_mv TO project_windows AS
SELECT project_id, environment, status_class,
       start AS window_start,
       maxState(secs) AS window_secs, sumState(requests) AS count,
       sumState(total_us) AS sum_us, minState(fastest_us) AS min_us,
       maxState(slowest_us) AS max_us, sumMapState(buckets, counts) AS hist
FROM windows_in
GROUP BY project_id, environment, status_class, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS project_windows_1m_mv TO project_windows_1m AS
SELECT project_id, environment, status_class,
       intDiv(start, greatest(60, secs)) * greatest(60, secs) AS window_start,
       maxState(toUInt32(greatest(60, secs))) AS window_secs, sumState(requests) AS count,
       sumState(total_us) AS sum_us, minState(fastest_us) AS min_us,
       maxState(slowest_us) AS max_us, sumMapState(buckets, counts) AS hist
FROM windows_in
GROUP BY project_id, environment, status_class, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS project_windows_1h_mv TO project_windows_1h AS
SELECT project_id, environment, status_class,
       intDiv(start, greatest(3600, secs)) * greatest(3600, secs) AS window_start,
       maxState(toUInt32(greatest(3600, secs))) AS window_secs, sumState(requests) AS count,
       sumState(total_us) AS sum_us, minState(fastest_us) AS min_us,
       maxState(slowest_us) AS max_us, sumMapState(buckets, counts) AS hist
FROM windows_in
GROUP BY project_id, environment, status_class, window_start;

CREATE MATERIALIZED VIEW IF NOT EXISTS project_windows_1d_mv TO project_windows_1d AS
SELECT project_id, environment, status_class,
       intDiv(start, greatest(86400, secs)) * greatest(86400, secs) AS window_start,
       maxState(toUInt32(greatest(86400, secs))) AS window_secs, sumState(requests) AS count,
       sumState(total_us) AS sum_us, minState(fastest_us) AS min_us,
       maxState(slowest_us) AS max_us, sumMapState(buckets, counts) AS hist
FROM windows_in
GROUP BY project_id, environment, status_class, window_start;
