-- Sightline SQLite schema, version 1: projects, merged route windows with their latency
-- buckets, and the agents that report them. Applied by the collector at start.
-- Integers are signed 64-bit; the collector saturates larger counts on write.

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    public_key  TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL            -- unix seconds
);

-- One row per project × route × method × status class × window start, merged over every
-- app instance that reported it. Instances with different window lengths that start at
-- the same second merge into one row carrying the longer length.
CREATE TABLE route_windows (
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
    PRIMARY KEY (project_id, route, method, status_class, window_start)
) WITHOUT ROWID;

-- Range queries over all routes of a project.
CREATE INDEX route_windows_by_time ON route_windows (project_id, window_start);

-- The latency histogram of each route window, one row per non-empty log bucket
-- (sightline_protocol::bucket_index). Merging is bucket-wise addition:
-- INSERT … ON CONFLICT DO UPDATE SET count = count + excluded.count.
-- Version 7 (0007_histogram_blobs.sql) replaces these rows with one blob per window.
CREATE TABLE route_buckets (
    project_id    INTEGER NOT NULL,
    route         TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    status_class  INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    bucket        INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (project_id, route, method, status_class, window_start, bucket),
    FOREIGN KEY (project_id, route, method, status_class, window_start)
        REFERENCES route_windows (project_id, route, method, status_class, window_start)
        ON DELETE CASCADE
) WITHOUT ROWID;

CREATE INDEX route_buckets_by_time ON route_buckets (project_id, window_start);

-- Every reporting process: identity, when it was last heard from, and the running total
-- of windows it says it dropped (queue overflow, refused uploads).
CREATE TABLE agents (
    project_id       INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    service          TEXT    NOT NULL,
    instance         TEXT    NOT NULL,
    sdk              TEXT    NOT NULL,
    environment      TEXT,
    release          TEXT,
    first_seen       INTEGER NOT NULL,      -- unix seconds
    last_seen        INTEGER NOT NULL,      -- unix seconds
    dropped_windows  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, service, instance)
);

CREATE INDEX agents_by_last_seen ON agents (project_id, last_seen);
