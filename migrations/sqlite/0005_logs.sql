-- Sightline SQLite schema, version 5: log lines received by the syslog listeners.
-- Written in group commits by the ingest writer, searched by
-- GET /api/0/projects/<id>/logs/, pruned by the retention task (oldest id first: ids
-- grow with arrival).

CREATE TABLE log_lines (
    id               INTEGER PRIMARY KEY,
    project_id       INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    ts_ms            INTEGER NOT NULL,      -- the sender's time, else arrival; unix ms
    received_ms      INTEGER NOT NULL,      -- arrival at the collector, unix ms
    timestamp_ms     INTEGER,               -- the sender's time as it said, unix ms
    facility         INTEGER CHECK (facility BETWEEN 0 AND 23),
    severity         INTEGER CHECK (severity BETWEEN 0 AND 7),
    host             TEXT,
    app              TEXT,
    procid           TEXT,
    msgid            TEXT,
    message          TEXT    NOT NULL,
    structured_data  TEXT,                  -- JSON {sd_id: {param: value}}
    format           TEXT    NOT NULL,      -- rfc5424 | rfc3164 | raw
    transport        TEXT    NOT NULL,      -- udp | tcp
    truncated        INTEGER NOT NULL DEFAULT 0
);

-- Searches are per project over a time range, newest first.
CREATE INDEX log_lines_by_time ON log_lines (project_id, ts_ms);
