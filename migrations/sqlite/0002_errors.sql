-- Sightline SQLite schema, version 2: error events grouped into issues, the tag and user
-- summaries of each issue, and per-day counts of every envelope item type received.
-- Timestamps of events and issues are unix seconds as REAL (SDKs send sub-second times).

-- One row per group of events: (project, grouping hash) is the identity of an issue.
-- times_seen, first_seen, last_seen, user_count and the regression of a resolved issue
-- are maintained by the triggers below, so an event counts exactly when its row is
-- inserted, and a duplicate event_id (ON CONFLICT DO NOTHING) never counts twice.
CREATE TABLE issues (
    id                INTEGER PRIMARY KEY,
    project_id        INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    hash              TEXT    NOT NULL,           -- 32 hex characters
    title             TEXT    NOT NULL,
    culprit           TEXT    NOT NULL,
    level             TEXT    NOT NULL,
    platform          TEXT    NOT NULL,
    status            TEXT    NOT NULL DEFAULT 'unresolved'
                      CHECK (status IN ('unresolved', 'resolved', 'ignored')),
    -- unresolved: new | ongoing | regressed; ignored: archived_forever; resolved: NULL
    substatus         TEXT    CHECK (substatus IN ('new', 'ongoing', 'regressed', 'archived_forever')),
    first_seen        REAL    NOT NULL,
    last_seen         REAL    NOT NULL,
    times_seen        INTEGER NOT NULL DEFAULT 0,
    user_count        INTEGER NOT NULL DEFAULT 0,
    grouped_by        TEXT    NOT NULL,           -- fingerprint | stacktrace | exception | message | fallback
    grouping_values   TEXT    NOT NULL,           -- JSON array: what went into the hash ("why grouped")
    last_release      TEXT,
    last_environment  TEXT,
    resolved_at       REAL,
    UNIQUE (project_id, hash)
);

CREATE INDEX issues_by_last_seen ON issues (project_id, last_seen);
CREATE INDEX issues_by_first_seen ON issues (project_id, first_seen);
CREATE INDEX issues_by_times_seen ON issues (project_id, times_seen);

-- Every stored event. payload is the scrubbed event as plain JSON text (not compressed:
-- json_extract works on it, and compressing at ingest rates would cost more CPU than the
-- disk it saves on a single-file store).
CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    event_id      TEXT    NOT NULL,               -- 32 lowercase hex characters
    issue_id      INTEGER NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    timestamp     REAL    NOT NULL,               -- when it happened (the SDK's clock, clamped)
    received      REAL    NOT NULL,               -- when the collector accepted it
    level         TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    culprit       TEXT    NOT NULL,
    platform      TEXT    NOT NULL,
    environment   TEXT,
    release       TEXT,
    user          TEXT,                           -- id:… | email:… | username:… | ip:…
    hash          TEXT    NOT NULL,               -- the grouping hash of this event
    grouped_by    TEXT    NOT NULL,
    tags          TEXT    NOT NULL,               -- JSON array of [key, value]
    payload       TEXT    NOT NULL,               -- JSON
    UNIQUE (project_id, event_id)
);

CREATE INDEX events_by_issue ON events (issue_id, timestamp, id);

-- A new event counts for its issue: times seen, first/last seen, the latest release and
-- environment, and a resolved issue that recurs becomes unresolved/regressed.
CREATE TRIGGER events_count_for_issue AFTER INSERT ON events
BEGIN
    UPDATE issues SET
        times_seen       = times_seen + 1,
        first_seen       = MIN(first_seen, NEW.timestamp),
        last_seen        = MAX(last_seen, NEW.timestamp),
        last_release     = COALESCE(NEW.release, last_release),
        last_environment = COALESCE(NEW.environment, last_environment),
        substatus        = CASE WHEN status = 'resolved' THEN 'regressed' ELSE substatus END,
        resolved_at      = CASE WHEN status = 'resolved' THEN NULL ELSE resolved_at END,
        status           = CASE WHEN status = 'resolved' THEN 'unresolved' ELSE status END
    WHERE id = NEW.issue_id;
END;

-- Tag summary per issue: how often each value of each key was seen.
-- `environment` and `release` are tags too: an issue's environments and releases.
CREATE TABLE issue_tags (
    issue_id    INTEGER NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    first_seen  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    PRIMARY KEY (issue_id, key, value)
) WITHOUT ROWID;

-- Filters by environment/release look for issues having a tag value.
CREATE INDEX issue_tags_by_value ON issue_tags (key, value, issue_id);

-- Distinct users per issue; user_count on the issue follows inserts here.
CREATE TABLE issue_users (
    issue_id  INTEGER NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    user      TEXT    NOT NULL,
    PRIMARY KEY (issue_id, user)
) WITHOUT ROWID;

CREATE TRIGGER issue_users_count AFTER INSERT ON issue_users
BEGIN
    UPDATE issues SET user_count = user_count + 1 WHERE id = NEW.issue_id;
END;

-- Envelope items received per project, UTC day and item type (`event`, `transaction`,
-- `session`, …, `unknown` for types this build does not name).
CREATE TABLE item_counts (
    project_id  INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    day         TEXT    NOT NULL,                 -- YYYY-MM-DD, UTC
    item_type   TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (project_id, day, item_type)
) WITHOUT ROWID;
