-- Sightline SQLite schema, version 12: tag summaries may trail the events under load.
--
-- While requests queue up behind the group-commit writer, it no longer upserts the
-- `issue_tags` rows of every commit: it adds them up in memory and writes them at most a
-- second later, or as soon as the queue is empty (so a quiet store is always exact).
-- Upserting ~7 tag rows per event in every commit was a fifth of the writer's time; one
-- upsert per distinct issue × key × value a second is a few per cent of it.
--
-- `tag_fold.through_event` is the last `events.id` whose tags are counted in
-- `issue_tags`: it moves on in the transaction that writes the summaries. A collector
-- that stops before writing what it held in memory counts the tags of the events after
-- it again, from `events.tags`, when it next opens the store.
CREATE TABLE tag_fold (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    through_event  INTEGER NOT NULL
);
INSERT INTO tag_fold (id, through_event) VALUES (1, COALESCE((SELECT MAX(id) FROM events), 0));
