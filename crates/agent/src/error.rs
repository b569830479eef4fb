//! The one way the agent can fail: at start-up. Nothing on the request path fails.

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The DSN could not be parsed.
    #[error("invalid dsn: {0}")]
    Dsn(#[from] sightline_protocol::DsnError),
    /// A builder setting is out of range.
    #[error("invalid setting: {0}")]
    Config(&'static str),
    /// The HTTP client for uploads could not be built.
    #[error("building the http client")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The agent thread's runtime could not be built.
    #[error("building the agent runtime")]
    Runtime(#[source] std::io::Error),
    /// The agent thread could not be spawned.
    #[error("spawning the agent thread")]
    Spawn(#[source] std::io::Error),
}
