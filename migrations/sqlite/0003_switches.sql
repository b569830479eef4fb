-- Feature switches: the current definition of each switch, every change to it (the audit
-- log, which is also the history a switch can be reverted to), and how often agents
-- checked it per day (for stale-switch hints). Switches are global, not per project.

-- The current definition. `definition` is the JSON of sightline_protocol::Switch; the
-- state is kept beside it so stale-switch queries need not parse JSON.
CREATE TABLE switches (
    key          TEXT    PRIMARY KEY,
    version      INTEGER NOT NULL CHECK (version >= 1),  -- the switch's own version
    state        TEXT    NOT NULL CHECK (state IN ('off', 'on', 'selective', 'inherit')),
    definition   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,                        -- unix seconds
    updated_at   INTEGER NOT NULL,                        -- unix seconds
    state_since  INTEGER NOT NULL                         -- when `state` last changed
) WITHOUT ROWID;

-- One row per change, never updated or deleted. `id` orders every change of every
-- switch: the largest id is the version of the whole switch set (the snapshot ETag).
CREATE TABLE switch_changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    key      TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    action   TEXT    NOT NULL CHECK (action IN ('create', 'update', 'revert')),
    actor    TEXT    NOT NULL,
    reason   TEXT    NOT NULL CHECK (reason <> ''),
    at       INTEGER NOT NULL,                            -- unix seconds
    old      TEXT,                                        -- definition before; NULL on create
    new      TEXT    NOT NULL,                            -- definition after
    UNIQUE (key, version)
);

-- Checks reported by agents, added up per switch and UTC day.
CREATE TABLE switch_evaluations (
    key    TEXT    NOT NULL REFERENCES switches (key) ON DELETE CASCADE,
    day    INTEGER NOT NULL,                              -- unix seconds / 86400
    count  INTEGER NOT NULL,
    PRIMARY KEY (key, day)
) WITHOUT ROWID;
