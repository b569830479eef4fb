//! The `syslog` section of the collector configuration.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::Error;

/// Syslog listeners and log-line storage. Both listeners are off unless an address is
/// given; every limit has a documented default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogConfig {
    /// UDP listener address (RFC 5426, one message per datagram); default off.
    pub udp: Option<SocketAddr>,
    /// TCP listener address (RFC 6587, octet counting or newline framing); default off.
    pub tcp: Option<SocketAddr>,
    /// Project that plain log lines are stored under; default the first project
    /// (`default`). Sightline payloads name their own project.
    pub project_id: Option<u64>,
    /// Longest message kept, in bytes; longer ones are cut and counted. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Most TCP connections at once; more are closed at accept and counted. Default 256.
    pub max_connections: usize,
    /// A TCP connection silent this long is closed, in seconds. Default 300.
    pub idle_timeout_secs: u64,
    /// Log lines older than this (by arrival) are deleted, in days. Default 7.
    pub retention_days: u64,
    /// At most this many log lines are kept, the oldest deleted first. Default 1,000,000.
    pub max_log_lines: u64,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            udp: None,
            tcp: None,
            project_id: None,
            max_message_bytes: 64 * 1024,
            max_connections: 256,
            idle_timeout_secs: 300,
            retention_days: 7,
            max_log_lines: 1_000_000,
        }
    }
}

impl SyslogConfig {
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.max_message_bytes < 480 {
            // RFC 5424 §6.1: receivers must accept 480 octets.
            return Err(Error::Config(
                "syslog.max_message_bytes must be at least 480",
            ));
        }
        if self.max_message_bytes > 1024 * 1024 {
            return Err(Error::Config(
                "syslog.max_message_bytes must be at most 1 MiB",
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::Config("syslog.max_connections must be at least 1"));
        }
        if self.idle_timeout_secs == 0 {
            return Err(Error::Config("syslog.idle_timeout_secs must be at least 1"));
        }
        if self.retention_days == 0 || self.max_log_lines == 0 {
            return Err(Error::Config(
                "syslog.retention_days and syslog.max_log_lines must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_strict_about_keys() {
        let config: SyslogConfig = serde_json::from_str(r#"{"tcp": "127.0.0.1:6514"}"#).unwrap();
        assert_eq!(config.udp, None);
        assert_eq!(config.tcp, Some("127.0.0.1:6514".parse().unwrap()));
        assert_eq!(config.max_message_bytes, 64 * 1024);
        assert!(config.check().is_ok());
        assert!(serde_json::from_str::<SyslogConfig>(r#"{"tpc": "127.0.0.1:1"}"#).is_err());
        let tiny = SyslogConfig {
            max_message_bytes: 100,
            ..SyslogConfig::default()
        };
        assert!(tiny.check().is_err());
    }
}
