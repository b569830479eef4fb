-- Sightline SQLite schema, version 6: an issue's counters are maintained per commit by
-- the writer, not per row by triggers.
--
-- The triggers of 0002 updated the issue row (and so its times_seen and last_seen
-- indexes) once per inserted event and once per new user: hundreds of times per issue
-- in a busy commit. The writer now adds up the events a commit actually inserted (those
-- that were not duplicates: it reads them back through RETURNING) and updates each
-- touched issue once, with the same rules: times seen, first/last seen, the latest
-- release and environment in commit order, distinct users, and a resolved issue that
-- recurs becomes unresolved/regressed.
DROP TRIGGER events_count_for_issue;
DROP TRIGGER issue_users_count;
