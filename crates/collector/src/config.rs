//! Collector configuration.

use std::path::PathBuf;

use serde::Deserialize;

use crate::Error;
use crate::syslog::SyslogConfig;

/// Collector configuration; every field has a documented default and unknown keys are an
/// error, so a typo in a config file does not go unnoticed.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding the SQLite file `sightline.db` (scale-out mode: the local spool,
    /// `spool/`); default `./sightline-data`.
    pub data_dir: PathBuf,
    /// When set, every `/api/0/` route requires `Authorization: Bearer <token>`;
    /// default none (open query API).
    pub admin_token: Option<String>,
    /// Capacity of the bounded ingest queue, in batches; default 1024. When it is full the
    /// ingest endpoint answers 429 with `Retry-After`.
    pub queue_capacity: usize,
    /// How long a group commit waits for more requests in a busy spell (more than one
    /// queued when the writer looks), in milliseconds; default 2, at most 10,000, 0 never
    /// waits. Fewer, larger commits cost far less per event; a lone request never waits.
    pub commit_wait_ms: u64,
    /// Requests in hand that end a commit's wait at once; default 256.
    pub commit_wait_batches: usize,
    /// Largest accepted metrics request body, in bytes; default 1 MiB. Larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest accepted Sentry envelope or `store` request body as sent (compressed or
    /// not), in bytes; default 20 MiB, as Sentry's. Larger bodies get 413.
    pub max_envelope_bytes: usize,
    /// Largest envelope or `store` body after decompression, in bytes; default 20 MiB.
    /// Decompression stops as soon as it is passed (413), so a bomb costs no more.
    pub max_decompressed_bytes: usize,
    /// Syslog listeners (off by default) and log-line retention.
    pub syslog: SyslogConfig,
    /// Retention of the rollup tiers (raw 24 h, 1-minute 7 days, 1-hour 90 days).
    pub retention: crate::insight::RetentionConfig,
    /// Scale-out mode: ClickHouse URL for events and metric windows
    /// (`clickhouse://host:8123/database` or `http://…`); default none (embedded SQLite).
    /// Goes with `meta`.
    pub events: Option<String>,
    /// Scale-out mode: PostgreSQL URL for projects, issues and switches
    /// (`postgres://user:password@host:5432/database`); default none. Goes with `events`.
    pub meta: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./sightline-data"),
            admin_token: None,
            queue_capacity: 1024,
            commit_wait_ms: 2,
            commit_wait_batches: 256,
            max_body_bytes: 1024 * 1024,
            max_envelope_bytes: 20 * 1024 * 1024,
            max_decompressed_bytes: 20 * 1024 * 1024,
            syslog: SyslogConfig::default(),
            retention: crate::insight::RetentionConfig::default(),
            events: None,
            meta: None,
        }
    }
}

impl Config {
    /// Refuses settings that cannot work (a zero-sized queue would panic in tokio).
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.queue_capacity == 0 {
            return Err(Error::Config("queue_capacity must be at least 1"));
        }
        if self.commit_wait_ms > 10_000 {
            return Err(Error::Config("commit_wait_ms must be at most 10000"));
        }
        if self.max_body_bytes == 0 {
            return Err(Error::Config("max_body_bytes must be at least 1"));
        }
        if self.max_envelope_bytes == 0 || self.max_decompressed_bytes == 0 {
            return Err(Error::Config(
                "max_envelope_bytes and max_decompressed_bytes must be at least 1",
            ));
        }
        self.syslog.check()?;
        self.retention.check()?;
        if self.admin_token.as_deref() == Some("") {
            return Err(Error::Config("admin_token must not be empty"));
        }
        match (&self.events, &self.meta) {
            (None, None) | (Some(_), Some(_)) => {}
            _ => {
                return Err(Error::Config(
                    "events (ClickHouse) and meta (PostgreSQL) are given together or not at all",
                ));
            }
        }
        Ok(())
    }

    /// Path of the SQLite database file.
    pub(crate) fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("sightline.db")
    }

    /// How the ingest writer's busy-spell commits wait for more requests.
    pub(crate) fn linger(&self) -> crate::writer::Linger {
        crate::writer::Linger {
            wait: std::time::Duration::from_millis(self.commit_wait_ms),
            batches: self.commit_wait_batches,
        }
    }

    /// Directory of the scale-out mode's local spool.
    pub(crate) fn spool_path(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
}

// Hand-written so the admin token never ends up in a log line.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("queue_capacity", &self.queue_capacity)
            .field("commit_wait_ms", &self.commit_wait_ms)
            .field("commit_wait_batches", &self.commit_wait_batches)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_envelope_bytes", &self.max_envelope_bytes)
            .field("max_decompressed_bytes", &self.max_decompressed_bytes)
            .field("syslog", &self.syslog)
            .field("retention", &self.retention)
            .field("events", &self.events.as_deref().map(redact_url))
            .field("meta", &self.meta.as_deref().map(redact_url))
            .finish()
    }
}

/// A database URL with its password replaced, for logs: `postgres://u:<redacted>@h/db`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redacted>".to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                ":<redacted>"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_stay_out_of_logs() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/meta?sslmode=require"),
            "postgres://app:<redacted>@db:5432/meta?sslmode=require"
        );
        assert_eq!(
            redact_url("clickhouse://127.0.0.1:8123/sightline"),
            "clickhouse://127.0.0.1:8123/sightline"
        );
        assert_eq!(
            redact_url("postgres://app@db/meta"),
            "postgres://app@db/meta"
        );
        assert_eq!(redact_url("not a url with p@ss"), "<redacted>");
        let config = Config {
            meta: Some("postgres://app:s3cret@db/meta".to_owned()),
            events: Some("http://u:hidden@ch:8123/db".to_owned()),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hidden"),
            "{shown}"
        );
    }

    #[test]
    fn scale_out_urls_go_together() {
        let one = Config {
            events: Some("clickhouse://ch:8123/db".to_owned()),
            ..Config::default()
        };
        assert!(matches!(one.check(), Err(Error::Config(_))));
        let both = Config {
            meta: Some("postgres://pg/db".to_owned()),
            ..one
        };
        assert!(both.check().is_ok());
    }

    #[test]
    fn defaults_fill_what_a_file_leaves_out() {
        let config: Config = serde_json::from_str(r#"{"queue_capacity": 8}"#).unwrap();
        assert_eq!(config.queue_capacity, 8);
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.max_envelope_bytes, 20 * 1024 * 1024);
        assert_eq!(config.max_decompressed_bytes, 20 * 1024 * 1024);
        assert_eq!(config.data_dir, PathBuf::from("./sightline-data"));
        assert_eq!(config.admin_token, None);
        assert_eq!(
            config.linger(),
            crate::writer::Linger {
                wait: std::time::Duration::from_millis(2),
                batches: 256
            }
        );
        assert!(config.check().is_ok());
    }

    #[test]
    fn typos_and_unusable_values_are_errors() {
        assert!(serde_json::from_str::<Config>(r#"{"queue_capacty": 8}"#).is_err());
        let zero = Config {
            queue_capacity: 0,
            ..Config::default()
        };
        assert!(matches!(zero.check(), Err(Error::Config(_))));
        let long_wait = Config {
            commit_wait_ms: 10_001,
            ..Config::default()
        };
        assert!(matches!(long_wait.check(), Err(Error::Config(_))));
        let empty_token = Config {
            admin_token: Some(String::new()),
            ..Config::default()
        };
        assert!(matches!(empty_token.check(), Err(Error::Config(_))));
    }

    #[test]
    fn debug_output_hides_the_admin_token() {
        let config = Config {
            admin_token: Some("hunter2".into()),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
