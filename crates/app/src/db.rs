//! The app's SQLite file: schema, connection settings and the deterministic seed.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// Users (each with a profile) in the seed; ids `1..=SEED_USERS`.
pub const SEED_USERS: i64 = 50;
/// Threads in the seed; ids `1..=SEED_THREADS`.
pub const SEED_THREADS: i64 = 20;
/// Comments in the seed; ids `1..=SEED_COMMENTS`.
pub const SEED_COMMENTS: i64 = 1_000;
/// Games in the seed; ids `1..=SEED_GAMES`.
pub const SEED_GAMES: i64 = 4;

/// Scores in the seed, spread over all games.
const SEED_SCORES: usize = 400;
/// The seed's RNG seed: the same data set on every machine and every run.
const SEED_RNG: u64 = 0x5167_4711_2010;
/// "Now" for the seed's timestamps, so that they are deterministic too.
const SEED_EPOCH: i64 = 1_700_000_000;
/// Pool size: enough for the load generator's default concurrency of 8.
const MAX_CONNECTIONS: u32 = 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS profiles (
    user_id INTEGER PRIMARY KEY REFERENCES users(id),
    display_name TEXT NOT NULL,
    bio TEXT NOT NULL,
    location TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS threads (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    url TEXT NOT NULL,
    author_id INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY,
    thread_id INTEGER NOT NULL REFERENCES threads(id),
    author_id INTEGER NOT NULL REFERENCES users(id),
    parent_id INTEGER REFERENCES comments(id),
    body TEXT NOT NULL,
    score INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_by_thread ON comments(thread_id, created_at);
CREATE INDEX IF NOT EXISTS comments_by_author ON comments(author_id);
CREATE TABLE IF NOT EXISTS votes (
    comment_id INTEGER NOT NULL REFERENCES comments(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    value INTEGER NOT NULL CHECK (value IN (-1, 1)),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (comment_id, user_id)
);
CREATE INDEX IF NOT EXISTS votes_by_user ON votes(user_id);
CREATE TABLE IF NOT EXISTS games (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS scores (
    id INTEGER PRIMARY KEY,
    game_id INTEGER NOT NULL REFERENCES games(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    score INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS scores_by_score ON scores(score DESC);
CREATE INDEX IF NOT EXISTS scores_by_game ON scores(game_id, score DESC);
CREATE INDEX IF NOT EXISTS scores_by_user ON scores(user_id);
";

/// Opens (creating if needed) the app's SQLite file at `path`, applies the
/// schema and seeds the demo data set if the database is empty.
pub async fn open_db(path: &Path) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        // WAL: readers never wait for the writer, so the read-heavy load keeps
        // flowing while comments, votes and scores are written.
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is crash-safe in WAL mode and skips an fsync per commit; a
        // power cut may lose the last commits, which demo data can afford.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // Concurrent writers queue on SQLite's lock instead of failing at once.
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await
        .with_context(|| format!("open sqlite database {}", path.display()))?;
    sqlx::raw_sql(SCHEMA)
        .execute(&pool)
        .await
        .context("create schema")?;
    // IMMEDIATE takes the write lock up front, so two processes opening the
    // same empty file cannot both decide to seed it.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .context("begin seed")?;
    let users: i64 = sqlx::query_scalar("SELECT COUNT(id) FROM users")
        .fetch_one(&mut *tx)
        .await
        .context("count users")?;
    if users == 0 {
        seed(&mut tx).await.context("seed demo data")?;
    }
    tx.commit().await.context("commit seed")?;
    Ok(pool)
}

const FIRST_NAMES: [&str; 10] = [
    "Ada", "Grace", "Alan", "Barbara", "Dennis", "Edsger", "Frances", "Ken", "Margaret", "Niklaus",
];
const LAST_NAMES: [&str; 5] = ["Hopper", "Liskov", "Ritchie", "Hamilton", "Wirth"];
const LOCATIONS: [&str; 8] = [
    "San Francisco",
    "Berlin",
    "Lagos",
    "São Paulo",
    "Bangalore",
    "Toronto",
    "Melbourne",
    "Tokyo",
];
const THREAD_TITLES: [&str; SEED_THREADS as usize] = [
    "Scaling Django to 25,000 requests per second",
    "Why we moved our queue from RabbitMQ to Redis",
    "Postgres connection pooling with pgbouncer",
    "The case against ORMs in hot paths",
    "Memcached key design at scale",
    "Feature switches: deploy dark, launch bright",
    "Counting queries per request",
    "What an N+1 query costs you",
    "Profiling memory in long-running workers",
    "Sharding comments by forum id",
    "Zero-downtime schema migrations",
    "Rate limiting voting rings",
    "Real-time leaderboards with sorted sets",
    "Election night: surviving a traffic spike",
    "Logging without drowning",
    "Graceful degradation when the cache is down",
    "Measuring p99 latency honestly",
    "Spam filtering for a comment network",
    "Lessons from 50 million players",
    "Rust for the parts that have to be fast",
];
/// Sentences comment bodies are built from (the seed and the load generator).
pub(crate) const SENTENCES: [&str; 20] = [
    "We hit the same wall when our traffic doubled overnight.",
    "Did you measure the latency before and after the change?",
    "The cache hit rate is the number that actually matters here.",
    "Our postgres replicas fell behind during the deploy.",
    "This is exactly why every request should count its queries.",
    "A feature switch would have let you turn it off at peak.",
    "Memory kept growing until the workers were recycled.",
    "We sharded by forum id and never looked back.",
    "The queue backed up and the votes arrived minutes late.",
    "Great write-up, thanks for sharing the numbers.",
    "I would love to see the p99 graph, not just the average.",
    "The ORM was issuing one query per comment for the author.",
    "Batching the writes cut our database load in half.",
    "Has anyone tried this with memcached instead of redis?",
    "Our leaderboard is rebuilt every minute from the scores table.",
    "Rolling back took longer than the outage itself.",
    "Index the foreign key, then measure again.",
    "We saw the same error rate spike on election night.",
    "Logs alone would never have shown us this pattern.",
    "The slow path was a LIKE scan nobody remembered writing.",
];
/// Words that occur in [`SENTENCES`], for searches that find something.
pub(crate) const SEARCH_TERMS: [&str; 12] = [
    "latency",
    "cache",
    "postgres",
    "queue",
    "memory",
    "votes",
    "deploy",
    "index",
    "leaderboard",
    "election",
    "p99",
    "redis",
];
const GAMES: [&str; SEED_GAMES as usize] = ["Asteroids", "Tetris", "Snake", "Breakout"];

/// Fills an empty database with the demo data set, identical on every run.
async fn seed(tx: &mut Transaction<'static, Sqlite>) -> Result<(), sqlx::Error> {
    let mut rng = fastrand::Rng::with_seed(SEED_RNG);
    for (index, id) in (1..=SEED_USERS).enumerate() {
        let first = FIRST_NAMES[index % FIRST_NAMES.len()];
        let last = LAST_NAMES[index / FIRST_NAMES.len() % LAST_NAMES.len()];
        let created_at = SEED_EPOCH - rng.i64(30..730) * 86_400;
        sqlx::query("INSERT INTO users (id, username, created_at) VALUES (?, ?, ?)")
            .bind(id)
            .bind(format!("{}.{}", first.to_lowercase(), last.to_lowercase()))
            .bind(created_at)
            .execute(&mut **tx)
            .await?;
        let location = LOCATIONS[rng.usize(..LOCATIONS.len())];
        sqlx::query(
            "INSERT INTO profiles (user_id, display_name, bio, location) VALUES (?, ?, ?, ?)",
        )
        .bind(id)
        .bind(format!("{first} {last}"))
        .bind(format!("Builds web things in {location}."))
        .bind(location)
        .execute(&mut **tx)
        .await?;
    }

    let mut thread_created = Vec::with_capacity(THREAD_TITLES.len());
    for (id, title) in (1_i64..).zip(THREAD_TITLES) {
        let created_at = SEED_EPOCH - 86_400 * 40 + id * 43_200;
        let slug: String = title
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        sqlx::query(
            "INSERT INTO threads (id, title, url, author_id, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(title)
        .bind(format!("https://blog.example.com/posts/{slug}"))
        .bind(rng.i64(1..=SEED_USERS))
        .bind(created_at)
        .execute(&mut **tx)
        .await?;
        thread_created.push((id, created_at));
    }

    // Comments per thread, so replies can point at an earlier comment of the same thread.
    let mut by_thread: Vec<Vec<i64>> = vec![Vec::new(); thread_created.len()];
    for id in 1..=SEED_COMMENTS {
        let thread = rng.usize(..thread_created.len());
        let (thread_id, thread_at) = thread_created[thread];
        let siblings = &by_thread[thread];
        let parent = (!siblings.is_empty() && rng.u8(..10) < 3)
            .then(|| siblings[rng.usize(..siblings.len())]);
        let sentences = rng.usize(1..=4);
        let body = (0..sentences)
            .map(|_| SENTENCES[rng.usize(..SENTENCES.len())])
            .collect::<Vec<_>>()
            .join(" ");
        sqlx::query(
            "INSERT INTO comments (id, thread_id, author_id, parent_id, body, score, created_at) \
             VALUES (?, ?, ?, ?, ?, 0, ?)",
        )
        .bind(id)
        .bind(thread_id)
        .bind(rng.i64(1..=SEED_USERS))
        .bind(parent)
        .bind(body)
        .bind(thread_at + id * 60)
        .execute(&mut **tx)
        .await?;
        by_thread[thread].push(id);
    }

    for comment in 1..=SEED_COMMENTS {
        for _ in 0..rng.usize(0..6) {
            let value = if rng.u8(..4) == 0 { -1 } else { 1 };
            sqlx::query(
                "INSERT OR IGNORE INTO votes (comment_id, user_id, value, created_at) \
                 VALUES (?, ?, ?, ?)",
            )
            .bind(comment)
            .bind(rng.i64(1..=SEED_USERS))
            .bind(value)
            .bind(SEED_EPOCH)
            .execute(&mut **tx)
            .await?;
        }
    }
    sqlx::query(
        "UPDATE comments SET score = \
         (SELECT COALESCE(SUM(value), 0) FROM votes WHERE votes.comment_id = comments.id)",
    )
    .execute(&mut **tx)
    .await?;

    for (id, name) in (1_i64..).zip(GAMES) {
        sqlx::query("INSERT INTO games (id, name) VALUES (?, ?)")
            .bind(id)
            .bind(name)
            .execute(&mut **tx)
            .await?;
    }
    for _ in 0..SEED_SCORES {
        sqlx::query("INSERT INTO scores (game_id, user_id, score, created_at) VALUES (?, ?, ?, ?)")
            .bind(rng.i64(1..=SEED_GAMES))
            .bind(rng.i64(1..=SEED_USERS))
            .bind(rng.i64(100..100_000))
            .bind(SEED_EPOCH - rng.i64(0..30 * 86_400))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
