//! `http://<public_key>@<host>:<port>/<project_id>`, as Sentry's DSN.

use std::fmt;
use std::str::FromStr;

/// Where an agent (or a Sentry SDK) reports to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// `http` or `https`.
    pub scheme: String,
    /// The project's public key.
    pub public_key: String,
    /// Host name or address (IPv6 in brackets).
    pub host: String,
    /// Port; the scheme's default when the DSN names none.
    pub port: u16,
    /// Path before the project id (empty, or `/prefix`), for collectors behind a proxy.
    pub path: String,
    /// Numeric project id.
    pub project_id: u64,
}

/// A DSN that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DsnError {
    /// Not `http://` or `https://`.
    Scheme,
    /// No `<key>@` part.
    MissingKey,
    /// Host or port unreadable.
    Host,
    /// The last path segment is not a number.
    ProjectId,
}

impl fmt::Display for DsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DsnError::Scheme => "dsn must start with http:// or https://",
            DsnError::MissingKey => "dsn has no public key (http://<key>@host/<project>)",
            DsnError::Host => "dsn host or port is invalid",
            DsnError::ProjectId => "dsn must end with a numeric project id",
        })
    }
}

impl std::error::Error for DsnError {}

impl Dsn {
    /// Base URL of the collector, `scheme://host:port[/prefix]`.
    pub fn base_url(&self) -> String {
        format!("{}://{}:{}{}", self.scheme, self.host, self.port, self.path)
    }

    /// URL of the agent metrics endpoint.
    pub fn metrics_url(&self) -> String {
        format!("{}/api/{}/metrics", self.base_url(), self.project_id)
    }

    /// URL of the Sentry envelope endpoint.
    pub fn envelope_url(&self) -> String {
        format!("{}/api/{}/envelope/", self.base_url(), self.project_id)
    }

    /// Value of the `X-Sentry-Auth` header for this DSN.
    pub fn auth_header(&self, client: &str) -> String {
        format!(
            "Sentry sentry_version=7, sentry_client={client}, sentry_key={}",
            self.public_key
        )
    }
}

impl FromStr for Dsn {
    type Err = DsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (scheme, rest) = s.split_once("://").ok_or(DsnError::Scheme)?;
        if scheme != "http" && scheme != "https" {
            return Err(DsnError::Scheme);
        }
        let (userinfo, rest) = rest.split_once('@').ok_or(DsnError::MissingKey)?;
        // `key:secret@` is accepted; the secret is never needed.
        let public_key = userinfo.split(':').next().unwrap_or_default();
        if public_key.is_empty()
            || !public_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DsnError::MissingKey);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(DsnError::ProjectId),
        };
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| DsnError::Host)?,
            None if scheme == "https" => 443,
            None => 80,
        };
        let path = path.trim_end_matches('/');
        let (prefix, id) = path.rsplit_once('/').ok_or(DsnError::ProjectId)?;
        let project_id = id.parse::<u64>().map_err(|_| DsnError::ProjectId)?;
        Ok(Dsn {
            scheme: scheme.to_owned(),
            public_key: public_key.to_owned(),
            host: host.to_owned(),
            port,
            path: prefix.to_owned(),
            project_id,
        })
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), DsnError> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or(DsnError::Host)?;
        let host = &authority[..=end];
        return match &authority[end + 1..] {
            "" => Ok((host, None)),
            p => p
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or(DsnError::Host),
        };
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(DsnError::Host);
    }
    Ok((host, port))
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}@{}:{}{}/{}",
            self.scheme, self.public_key, self.host, self.port, self.path, self.project_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sentry_style_dsns() {
        let d: Dsn = "http://abc123@127.0.0.1:7070/1".parse().expect("valid");
        assert_eq!(d.public_key, "abc123");
        assert_eq!(d.port, 7070);
        assert_eq!(d.project_id, 1);
        assert_eq!(d.metrics_url(), "http://127.0.0.1:7070/api/1/metrics");
        assert_eq!(d.to_string(), "http://abc123@127.0.0.1:7070/1");

        let d: Dsn = "https://k:secret@sightline.example/proxy/42"
            .parse()
            .expect("valid");
        assert_eq!((d.port, d.path.as_str(), d.project_id), (443, "/proxy", 42));
        let d: Dsn = "http://k@[::1]:9/3".parse().expect("valid");
        assert_eq!(d.host, "[::1]");
    }

    #[test]
    fn rejects_broken_dsns() {
        assert_eq!("ftp://k@h/1".parse::<Dsn>(), Err(DsnError::Scheme));
        assert_eq!("http://h:1/1".parse::<Dsn>(), Err(DsnError::MissingKey));
        assert_eq!("http://k@h:x/1".parse::<Dsn>(), Err(DsnError::Host));
        assert_eq!("http://k@h:1/abc".parse::<Dsn>(), Err(DsnError::ProjectId));
        assert_eq!("http://k@h:1".parse::<Dsn>(), Err(DsnError::ProjectId));
    }
}
