-- ClickHouse schema, version 3: log lines received by the syslog listeners (scale-out
-- mode), as `log_lines` of SQLite's migration 0005 keeps them.
--
-- Partitioned by UTC day of arrival (`intDiv(received_ms, 86400000)`, the day number), so
-- retention drops whole days. Sorted by project then time: a search reads one project's
-- range, newest first. `id` increases with arrival (milliseconds of arrival × 10^6 plus
-- the line's place among the lines of its millisecond, see `clickhouse/logs.rs`) and is
-- computed from the lines themselves, so a retried insert writes the same rows again:
-- (`batch`, `seq`) — a hash of the listener's batch and the line's index in it — tells
-- lines apart, copies collapse in merges and reads take one row per line before that.
CREATE TABLE IF NOT EXISTS log_lines (
    project_id      UInt64,
    ts_ms           Int64,
    id              UInt64,
    batch           UInt64,
    seq             UInt32,
    received_ms     Int64,
    timestamp_ms    Nullable(Int64),
    facility        Nullable(UInt8),
    severity        Nullable(UInt8),
    host            Nullable(String),
    app             Nullable(String),
    procid          Nullable(String),
    msgid           Nullable(String),
    message         String,
    structured_data Nullable(String),
    format          String,
    transport       String,
    truncated       UInt8
) ENGINE = ReplacingMergeTree()
PARTITION BY intDiv(received_ms, 86400000)
ORDER BY (project_id, ts_ms, id, batch, seq);
