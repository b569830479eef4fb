//! Schema migrations: an ordered list of `(version, sql)` per backend, and the
//! backend-independent decision of which ones still need applying. Each backend applies
//! the pending ones with its own driver and records them in `schema_migrations(version)`.

use crate::Error;

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Strictly increasing across the list.
    pub version: i64,
    /// Statements to run, in one transaction where the backend allows it.
    pub sql: &'static str,
}

/// The SQLite schema, oldest first.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../../../../migrations/sqlite/0002_errors.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../../../../migrations/sqlite/0003_switches.sql"),
    },
    Migration {
        version: 4,
        sql: include_str!("../../../../migrations/sqlite/0004_insight.sql"),
    },
    Migration {
        version: 5,
        sql: include_str!("../../../../migrations/sqlite/0005_logs.sql"),
    },
    Migration {
        version: 6,
        sql: include_str!("../../../../migrations/sqlite/0006_issue_counts_per_commit.sql"),
    },
    Migration {
        version: 7,
        sql: include_str!("../../../../migrations/sqlite/0007_histogram_blobs.sql"),
    },
    Migration {
        version: 8,
        sql: include_str!("../../../../migrations/sqlite/0008_day_tier.sql"),
    },
    Migration {
        version: 9,
        sql: include_str!("../../../../migrations/sqlite/0009_compressed_event_payloads.sql"),
    },
    Migration {
        version: 10,
        sql: include_str!("../../../../migrations/sqlite/0010_environments.sql"),
    },
    Migration {
        version: 11,
        sql: include_str!("../../../../migrations/sqlite/0011_project_windows.sql"),
    },
    Migration {
        version: 12,
        sql: include_str!("../../../../migrations/sqlite/0012_tag_summary_watermark.sql"),
    },
];

/// The PostgreSQL metadata schema (scale-out mode), oldest first.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../../../../migrations/postgres/0002_issues.sql"),
    },
];

/// The ClickHouse event and metric schema (scale-out mode), oldest first. ClickHouse has
/// no transactions: each migration is a list of statements separated by `;` lines, each
/// idempotent (`IF NOT EXISTS`), and the version is recorded after the last one.
pub(crate) const CLICKHOUSE: &[Migration] = &[
    Migration {
        version: 1,
        sql: include_str!("../../../../migrations/clickhouse/0001_init.sql"),
    },
    Migration {
        version: 2,
        sql: include_str!("../../../../migrations/clickhouse/0002_insight.sql"),
    },
    Migration {
        version: 3,
        sql: include_str!("../../../../migrations/clickhouse/0003_logs.sql"),
    },
];

/// Migrations of `all` not yet in `applied`, in order. Refuses a store that has a version
/// this build does not know: it was migrated by a newer build, and writing to it could
/// corrupt it.
pub(crate) fn pending<'a>(
    all: &'a [Migration],
    applied: &[i64],
) -> Result<Vec<&'a Migration>, Error> {
    if let Some(&unknown) = applied
        .iter()
        .find(|v| !all.iter().any(|m| m.version == **v))
    {
        return Err(Error::SchemaTooNew(unknown));
    }
    Ok(all
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &[Migration] = &[
        Migration {
            version: 1,
            sql: "a",
        },
        Migration {
            version: 2,
            sql: "b",
        },
        Migration {
            version: 3,
            sql: "c",
        },
    ];

    #[test]
    fn versions_are_strictly_increasing() {
        for list in [SQLITE, POSTGRES, CLICKHOUSE, LIST] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version));
        }
    }

    #[test]
    fn applies_only_what_is_missing_in_order() {
        let versions = |v: Vec<&Migration>| v.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(versions(pending(LIST, &[]).unwrap()), [1, 2, 3]);
        assert_eq!(versions(pending(LIST, &[1]).unwrap()), [2, 3]);
        assert_eq!(
            versions(pending(LIST, &[1, 2, 3]).unwrap()),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn refuses_a_schema_from_a_newer_build() {
        assert!(matches!(
            pending(LIST, &[1, 2, 3, 4]),
            Err(Error::SchemaTooNew(4))
        ));
    }
}
