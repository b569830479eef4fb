-- PostgreSQL issues schema: error events grouped into issues, each issue's tag and user
-- summaries, per-day counts of every envelope item type, and the ids of stored events.
-- The events themselves (rows and payloads) live in ClickHouse; what the issue list and
-- the issue page read lives here. Mirrors migrations/sqlite/0002_errors.sql as amended
-- by 0006 (counts maintained by the writer once per issue and commit, no triggers).
--
-- Timestamps are unix seconds as DOUBLE PRECISION (SDKs send sub-second times).
-- Columns that lists sort or compare by (hashes, tag keys and values, users, days) use
-- the "C" collation: byte order, as SQLite sorts them, whatever the cluster's locale,
-- and cheaper comparisons in the indexes.
--
-- project_id has no foreign key to projects: that table belongs to 0001, and the issue
-- tables only ever need the id (projects are never deleted while they have issues).

-- One row per group of events: (project, grouping hash) is the identity of an issue.
-- Concurrent collectors create an issue through INSERT … ON CONFLICT (project_id, hash),
-- so the unique constraint is what keeps one issue per fingerprint.
CREATE TABLE issues (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id        BIGINT           NOT NULL,
    hash              TEXT COLLATE "C" NOT NULL,   -- 32 hex characters
    title             TEXT             NOT NULL,
    culprit           TEXT             NOT NULL,
    level             TEXT             NOT NULL,
    platform          TEXT             NOT NULL,
    status            TEXT             NOT NULL DEFAULT 'unresolved'
                      CHECK (status IN ('unresolved', 'resolved', 'ignored')),
    -- unresolved: new | ongoing | regressed; ignored: archived_forever; resolved: NULL
    substatus         TEXT CHECK (substatus IN ('new', 'ongoing', 'regressed', 'archived_forever')),
    first_seen        DOUBLE PRECISION NOT NULL,
    last_seen         DOUBLE PRECISION NOT NULL,
    times_seen        BIGINT           NOT NULL DEFAULT 0,
    user_count        BIGINT           NOT NULL DEFAULT 0,
    grouped_by        TEXT             NOT NULL,   -- fingerprint | stacktrace | exception | message | fallback
    grouping_values   TEXT             NOT NULL,   -- JSON array: what went into the hash
    last_release      TEXT,
    last_environment  TEXT,
    resolved_at       DOUBLE PRECISION,
    UNIQUE (project_id, hash)
);

-- One index per sort order of the issue list: `project_id = $1 AND (col, id) < ($c, $id)
-- ORDER BY col DESC, id DESC` is a backward range scan of one of these, however deep
-- the page.
CREATE INDEX issues_by_last_seen ON issues (project_id, last_seen, id);
CREATE INDEX issues_by_first_seen ON issues (project_id, first_seen, id);
CREATE INDEX issues_by_times_seen ON issues (project_id, times_seen, id);

-- Every event id stored, so that an event sent again (an SDK or collector retry, through
-- any collector) counts once. The hash names the issue it was stored under, through
-- issues (project_id, hash): the row can be written before that issue exists, which
-- lets a commit claim its event ids first and only then lock issue rows (one lock order
-- for every writer).
CREATE TABLE event_ids (
    project_id  BIGINT           NOT NULL,
    event_id    TEXT COLLATE "C" NOT NULL,        -- 32 lowercase hex characters
    hash        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, event_id)
);

-- Tag summary per issue: how often each value of each key was seen.
-- `environment` and `release` are tags too: an issue's environments and releases.
CREATE TABLE issue_tags (
    issue_id    BIGINT           NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    key         TEXT COLLATE "C" NOT NULL,
    value       TEXT COLLATE "C" NOT NULL,
    count       BIGINT           NOT NULL,
    first_seen  DOUBLE PRECISION NOT NULL,
    last_seen   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (issue_id, key, value)
);

-- The environments a project's events named are found value by value (a skip scan).
CREATE INDEX issue_tags_by_value ON issue_tags (key, value, issue_id);

-- Distinct users per issue; issues.user_count counts the rows each commit adds here.
CREATE TABLE issue_users (
    issue_id  BIGINT           NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
    user_key  TEXT COLLATE "C" NOT NULL,        -- id:… | email:… | username:… | ip:…
    PRIMARY KEY (issue_id, user_key)
);

-- Envelope items received per project, UTC day and item type (`event`, `transaction`,
-- `session`, …, `unknown` for types this build does not name).
CREATE TABLE item_counts (
    project_id  BIGINT           NOT NULL,
    day         TEXT COLLATE "C" NOT NULL,        -- YYYY-MM-DD, UTC
    item_type   TEXT COLLATE "C" NOT NULL,
    count       BIGINT           NOT NULL,
    PRIMARY KEY (project_id, day, item_type)
);
