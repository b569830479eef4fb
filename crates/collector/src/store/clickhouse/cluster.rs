//! Cluster mode: the single-server schema of `migrations/clickhouse`, rewritten for a
//! ClickHouse cluster. Each table `t` becomes `t_local` on every node (`ON CLUSTER`), a
//! `Replicated…MergeTree` with the replica path `/clickhouse/tables/{shard}/<db>/t` and
//! the `{replica}` macro, plus a `Distributed` table under the name `t` that collectors
//! read and insert through unchanged. Tables of other engines (the `Null` entry table of
//! the metric windows) stay what they are, locally on each node, behind their own
//! `Distributed` table; materialized views run on each node between `_local` tables, so
//! a row inserted through `Distributed` is rolled up on the shard that keeps it.
//!
//! Rows that must meet on one shard to collapse (an event and its retried copy) share a
//! sharding key: the `id` column where a table has one; everything else is spread at
//! random, since every read merges across shards anyway.
//!
//! Only the statement forms the migrations use are understood; anything else is an
//! error, so a new migration cannot slip through half-translated (a test runs every
//! migration through this).

/// Why a statement could not be rewritten.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ClusterError {
    /// The statement is of a form this rewrite does not know.
    #[error("cluster schema: statement not understood: {0}")]
    Unknown(String),
    /// `CREATE TABLE … AS t` names a table not created before it.
    #[error("cluster schema: {0} copies an unknown table")]
    UnknownSource(String),
    /// A name that is not a plain identifier (cluster or database).
    #[error("cluster schema: {0:?} is not a plain identifier")]
    BadName(String),
}

fn identifier(name: &str) -> Result<&str, ClusterError> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(name)
    } else {
        Err(ClusterError::BadName(name.to_owned()))
    }
}

/// `word rest` → (`word`, `rest`), splitting at the first whitespace or `(`.
fn next_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    let end = text
        .find(|c: char| c.is_whitespace() || c == '(')
        .unwrap_or(text.len());
    (&text[..end], text[end..].trim_start())
}

/// Index just past the parenthesis closing the one `text` starts with.
fn closing(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// A table's engine clause as the migrations wrote it: `Name(args) tail`.
#[derive(Clone)]
struct Engine {
    name: String,
    args: String,
    /// `PARTITION BY … ORDER BY …`
    tail: String,
}

impl Engine {
    fn parse(clause: &str) -> Option<Engine> {
        let (name, rest) = next_word(clause);
        let (args, tail) = if rest.starts_with('(') {
            let end = closing(rest)?;
            (
                rest[1..end - 1].trim().to_owned(),
                rest[end..].trim().to_owned(),
            )
        } else {
            (String::new(), rest.trim().to_owned())
        };
        Some(Engine {
            name: name.to_owned(),
            args,
            tail,
        })
    }

    /// The engine of `table`'s `_local` copy.
    fn local(&self, database: &str, table: &str) -> String {
        if self.name.ends_with("MergeTree") {
            let path = format!("'/clickhouse/tables/{{shard}}/{database}/{table}', '{{replica}}'");
            let args = if self.args.is_empty() {
                path
            } else {
                format!("{path}, {}", self.args)
            };
            format!("Replicated{}({args}) {}", self.name, self.tail)
                .trim_end()
                .to_owned()
        } else {
            format!("{}({}) {}", self.name, self.args, self.tail)
                .trim_end()
                .to_owned()
        }
    }
}

/// Rewrites the statements of `migrations` (oldest first) for `cluster`, with every
/// table in `database`: one list of statements per migration.
pub(crate) fn cluster_migrations<'a>(
    migrations: impl IntoIterator<Item = &'a str>,
    cluster: &str,
    database: &str,
) -> Result<Vec<Vec<String>>, ClusterError> {
    let cluster = identifier(cluster)?;
    let database = identifier(database)?;
    // A later migration may copy a table an earlier one created.
    let mut engines: std::collections::HashMap<String, (Engine, bool)> = Default::default();
    let mut out = Vec::new();
    for sql in migrations {
        let mut rewritten = Vec::new();
        for statement in super::statements(sql) {
            rewritten.extend(rewrite(&statement, cluster, database, &mut engines)?);
        }
        out.push(rewritten);
    }
    Ok(out)
}

/// [`cluster_migrations`], every migration's statements in one list.
pub(crate) fn cluster_schema<'a>(
    migrations: impl IntoIterator<Item = &'a str>,
    cluster: &str,
    database: &str,
) -> Result<Vec<String>, ClusterError> {
    Ok(cluster_migrations(migrations, cluster, database)?
        .into_iter()
        .flatten()
        .collect())
}

fn rewrite(
    statement: &str,
    cluster: &str,
    database: &str,
    engines: &mut std::collections::HashMap<String, (Engine, bool)>,
) -> Result<Vec<String>, ClusterError> {
    let unknown = || ClusterError::Unknown(statement.chars().take(120).collect());
    if let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
        let (table, rest) = next_word(rest);
        let table = identifier(table).map_err(|_| unknown())?;
        let (engine, has_id, local) = if let Some(source) = rest.strip_prefix("AS ") {
            // `CREATE TABLE t AS s`: the columns of `s`, an engine of its own (a copied
            // replicated engine would share `s`'s replica path).
            let source = identifier(source.trim()).map_err(|_| unknown())?;
            let (engine, has_id) = engines
                .get(source)
                .cloned()
                .ok_or_else(|| ClusterError::UnknownSource(table.to_owned()))?;
            let local = format!(
                "CREATE TABLE IF NOT EXISTS {database}.{table}_local ON CLUSTER {cluster} \
                 AS {database}.{source}_local ENGINE = {}",
                engine.local(database, table)
            );
            (engine, has_id, local)
        } else if rest.starts_with('(') {
            let end = closing(rest).ok_or_else(unknown)?;
            let columns = &rest[..end];
            let clause = rest[end..]
                .trim_start()
                .strip_prefix("ENGINE")
                .map(|c| c.trim_start().trim_start_matches('=').trim_start())
                .ok_or_else(unknown)?;
            let engine = Engine::parse(clause).ok_or_else(unknown)?;
            let has_id = columns.lines().any(|line| {
                line.trim_start()
                    .trim_start_matches('(')
                    .trim_start()
                    .starts_with("id ")
            });
            let local = format!(
                "CREATE TABLE IF NOT EXISTS {database}.{table}_local ON CLUSTER {cluster} \
                 {columns} ENGINE = {}",
                engine.local(database, table)
            );
            (engine, has_id, local)
        } else {
            return Err(unknown());
        };
        let key = if has_id { "id" } else { "rand()" };
        let distributed = format!(
            "CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster} \
             AS {database}.{table}_local \
             ENGINE = Distributed({cluster}, {database}, {table}_local, {key})"
        );
        engines.insert(table.to_owned(), (engine, has_id));
        return Ok(vec![local, distributed]);
    }
    if let Some(rest) = statement.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
        let (view, rest) = next_word(rest);
        let view = identifier(view).map_err(|_| unknown())?;
        let rest = rest.strip_prefix("TO ").ok_or_else(unknown)?;
        let (target, rest) = next_word(rest);
        let target = identifier(target).map_err(|_| unknown())?;
        let select = rest.strip_prefix("AS").ok_or_else(unknown)?.trim_start();
        // The one `FROM <table>` of the view's query reads the local table.
        let at = select.find("FROM ").ok_or_else(unknown)?;
        let (source, tail) = next_word(&select[at + 5..]);
        let source = identifier(source).map_err(|_| unknown())?;
        if tail.contains("FROM ") || tail.contains("JOIN ") {
            return Err(unknown());
        }
        return Ok(vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{view} ON CLUSTER {cluster} \
             TO {database}.{target}_local AS {} FROM {database}.{source}_local {tail}",
            &select[..at].trim_end()
        )]);
    }
    Err(unknown())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrate::CLICKHOUSE;

    #[test]
    fn every_migration_translates() {
        let out = cluster_schema(CLICKHOUSE.iter().map(|m| m.sql), "prod", "sightline")
            .expect("every statement understood");
        assert!(!out.is_empty());
        for statement in &out {
            assert!(statement.contains(" ON CLUSTER prod "), "{statement}");
            assert!(!statement.contains("--"), "{statement}");
        }
        // Every MergeTree is replicated, on a path of its own.
        let paths: Vec<&String> = out.iter().filter(|s| s.contains("Replicated")).collect();
        let mut unique: Vec<String> = paths
            .iter()
            .map(|s| {
                s.split("'/clickhouse/tables/")
                    .nth(1)
                    .unwrap_or("")
                    .split('\'')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        let all = unique.len();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all, "replica paths are unique");
        assert!(out.iter().all(|s| !s.contains("ENGINE = MergeTree")
            && !s.contains("ENGINE = ReplacingMergeTree")
            && !s.contains("ENGINE = AggregatingMergeTree")));
    }

    #[test]
    fn tables_views_and_copies_are_rewritten() {
        let sql = "-- a comment\n\
            CREATE TABLE IF NOT EXISTS events (\n    id UInt64,\n    v UInt64\n) ENGINE = ReplacingMergeTree(v)\nPARTITION BY x ORDER BY (id);\n\
            CREATE TABLE IF NOT EXISTS w (a UInt8) ENGINE = AggregatingMergeTree() ORDER BY a;\n\
            CREATE TABLE IF NOT EXISTS w_1m AS w;\n\
            CREATE TABLE IF NOT EXISTS input (a UInt8) ENGINE = Null;\n\
            CREATE MATERIALIZED VIEW IF NOT EXISTS w_mv TO w AS\nSELECT a FROM input\nGROUP BY a;";
        let out = cluster_schema([sql], "c1", "db").expect("rewrite");
        assert_eq!(
            out,
            [
                "CREATE TABLE IF NOT EXISTS db.events_local ON CLUSTER c1 (\n    id UInt64,\n    v UInt64\n) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/events', '{replica}', v) PARTITION BY x ORDER BY (id)",
                "CREATE TABLE IF NOT EXISTS db.events ON CLUSTER c1 AS db.events_local ENGINE = Distributed(c1, db, events_local, id)",
                "CREATE TABLE IF NOT EXISTS db.w_local ON CLUSTER c1 (a UInt8) ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/w', '{replica}') ORDER BY a",
                "CREATE TABLE IF NOT EXISTS db.w ON CLUSTER c1 AS db.w_local ENGINE = Distributed(c1, db, w_local, rand())",
                "CREATE TABLE IF NOT EXISTS db.w_1m_local ON CLUSTER c1 AS db.w_local ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/w_1m', '{replica}') ORDER BY a",
                "CREATE TABLE IF NOT EXISTS db.w_1m ON CLUSTER c1 AS db.w_1m_local ENGINE = Distributed(c1, db, w_1m_local, rand())",
                "CREATE TABLE IF NOT EXISTS db.input_local ON CLUSTER c1 (a UInt8) ENGINE = Null()",
                "CREATE TABLE IF NOT EXISTS db.input ON CLUSTER c1 AS db.input_local ENGINE = Distributed(c1, db, input_local, rand())",
                "CREATE MATERIALIZED VIEW IF NOT EXISTS db.w_mv ON CLUSTER c1 TO db.w_local AS SELECT a FROM db.input_local GROUP BY a",
            ]
        );
    }

    #[test]
    fn unknown_forms_and_names_are_refused() {
        assert!(matches!(
            cluster_schema(["DROP TABLE x"], "c", "db"),
            Err(ClusterError::Unknown(_))
        ));
        assert!(matches!(
            cluster_schema(["CREATE TABLE IF NOT EXISTS a AS nowhere"], "c", "db"),
            Err(ClusterError::UnknownSource(_))
        ));
        assert!(matches!(
            cluster_schema(
                ["CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS SELECT a FROM x JOIN y"],
                "c",
                "db"
            ),
            Err(ClusterError::Unknown(_))
        ));
        for bad in ["c; DROP", "", "1c", "a-b"] {
            assert_eq!(
                cluster_schema(
                    ["CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = Null"],
                    bad,
                    "db"
                ),
                Err(ClusterError::BadName(bad.to_owned()))
            );
        }
    }
}
