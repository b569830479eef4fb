//! Syslog in: UDP and TCP listeners, RFC 5424 and RFC 3164 parsers, RFC 6587 framing,
//! and log lines.
//!
//! What flows through it:
//!
//! 1. A listener reads datagrams (UDP) or a byte stream cut into messages by the
//!    [`framing::Framer`] (TCP), bounded in size, connections and idle time.
//! 2. [`parse`] reads each message as RFC 5424 (`<PRI>1 …`) or else RFC 3164; one that is
//!    neither is kept verbatim as a `raw` line — counted, never dropped.
//! 3. An RFC 5424 message carrying a `[sightline@32473 project=… key=… kind="metrics"]`
//!    element is a Sightline payload: its message is a JSON `MetricBatch`, authenticated
//!    by the project key like `POST /api/{id}/metrics`, and goes into the same queue and
//!    writer. With `kind="event"` the message is a Sentry event's JSON (as `/store/`
//!    takes it), whole or in parts joined by [`events::Parts`]; it enters the error
//!    pipeline. Everything else becomes a log line of the syslog project.
//! 4. Lines of one read travel as one ingest op; the writer commits them with the ops
//!    queued next to them. A retention task deletes the oldest lines past the bounds.

mod config;
mod events;
pub mod framing;
mod listener;
pub mod message;
mod metrics;
mod receive;
pub mod rfc3164;
pub mod rfc5424;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::SyslogConfig;
pub(crate) use metrics::SyslogMetrics;

use crate::store::Store;
use crate::writer::IngestQueue;
use crate::{Error, Query};
use listener::Listening;
use message::{SyslogMessage, parse_pri};
use receive::Receiver;

/// The SD-ID that marks a Sightline payload (32473 is the private enterprise number
/// RFC 5612 reserves for documentation and examples).
pub const PAYLOAD_SD_ID: &str = "sightline@32473";

/// Receive buffer asked for the UDP socket, in bytes.
const UDP_RECEIVE_BUFFER: usize = 8 * 1024 * 1024;

/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// How long shutdown waits for the listeners to queue what they have read.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses one message, whatever its format: RFC 5424 when the version `1` follows the
/// priority, else BSD syslog. What neither grammar reads is a raw line, keeping the
/// priority when there is one. Never fails, never panics.
pub fn parse(data: &[u8], now_ms: i64) -> SyslogMessage {
    let Some((facility, severity, rest)) = parse_pri(data) else {
        return SyslogMessage::raw(data);
    };
    let parsed = if rest.starts_with(b"1 ") {
        rfc5424::parse(data).ok()
    } else {
        rfc3164::parse(data, now_ms).ok()
    };
    parsed.unwrap_or_else(|| SyslogMessage {
        facility: Some(facility),
        severity: Some(severity),
        ..SyslogMessage::raw(data)
    })
}

/// Where the syslog listeners listen (port 0 in the config becomes the bound port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyslogAddrs {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
}

/// The running listeners and the retention task.
pub(crate) struct SyslogService {
    pub addrs: SyslogAddrs,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SyslogService {
    /// Binds the configured listeners and starts them; `None` when both are off.
    pub(crate) async fn start(
        config: &SyslogConfig,
        store: Arc<dyn Store>,
        query: Query,
        queue: IngestQueue,
        metrics: Arc<SyslogMetrics>,
    ) -> Result<Option<SyslogService>, Error> {
        if config.udp.is_none() && config.tcp.is_none() {
            return Ok(None);
        }
        let log_project = match config.project_id {
            Some(id) => {
                store
                    .project(id)
                    .await?
                    .ok_or(Error::Config("syslog.project_id names no project"))?
                    .id
            }
            None => {
                store
                    .projects()
                    .await?
                    .first()
                    .ok_or(Error::Config("the store has no project for syslog lines"))?
                    .id
            }
        };
        let shared = Arc::new(Listening {
            receiver: Receiver {
                query,
                metrics,
                log_project,
                max_message: config.max_message_bytes,
                parts: std::sync::Mutex::default(),
            },
            queue,
            max_connections: config.max_connections,
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        });
        let (stop, stopped) = watch::channel(false);
        let mut addrs = SyslogAddrs::default();
        let mut tasks = Vec::new();
        if let Some(addr) = config.udp {
            let socket = bind_udp(addr).map_err(Error::Listen)?;
            addrs.udp = Some(socket.local_addr().map_err(Error::Listen)?);
            tasks.push(tokio::spawn(listener::run_udp(
                socket,
                shared.clone(),
                stopped.clone(),
            )));
        }
        if let Some(addr) = config.tcp {
            let socket = TcpListener::bind(addr).await.map_err(Error::Listen)?;
            addrs.tcp = Some(socket.local_addr().map_err(Error::Listen)?);
            tasks.push(tokio::spawn(listener::run_tcp(
                socket,
                shared.clone(),
                stopped.clone(),
            )));
        }
        tasks.push(tokio::spawn(retention(
            store,
            shared.receiver.metrics.clone(),
            config.max_log_lines,
            config.retention_days,
            stopped,
        )));
        tracing::info!(udp = ?addrs.udp, tcp = ?addrs.tcp, "syslog listeners started");
        Ok(Some(SyslogService { addrs, stop, tasks }))
    }

    /// Stops accepting, lets every listener queue what it has read, and waits for them.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let all = futures_join(self.tasks);
        if tokio::time::timeout(STOP_TIMEOUT, all).await.is_err() {
            tracing::warn!("syslog listeners did not stop in time");
        }
    }
}

/// A UDP socket with a large receive buffer: datagrams that arrive while the listener is
/// busy wait in the kernel instead of being dropped there, where nobody can count them.
/// The kernel caps the size at `net.core.rmem_max`.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(%error, "cannot enlarge the syslog udp receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        if let Err(error) = task.await {
            tracing::error!(%error, "syslog task failed");
        }
    }
}

/// Deletes log lines past the count bound or older than the retention, every
/// [`PRUNE_EVERY`], a bounded number per pass.
async fn retention(
    store: Arc<dyn Store>,
    metrics: Arc<SyslogMetrics>,
    max_lines: u64,
    days: u64,
    mut stop: watch::Receiver<bool>,
) {
    let keep_ms = i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
        let cutoff = receive::unix_now_ms().saturating_sub(keep_ms);
        match store.prune_logs(max_lines, cutoff).await {
            Ok(0) => {}
            Ok(n) => {
                metrics.pruned(n);
                tracing::debug!(lines = n, "pruned syslog lines");
            }
            Err(error) => tracing::warn!(%error, "syslog retention failed"),
        }
    }
}

#[cfg(test)]
mod tests;

/// The parsers and the framer, public for the fuzz targets and for tools.
pub mod parsers {
    pub use super::framing::{Frame, Framer};
    pub use super::message::{Format, SdElement, SyslogMessage};
    pub use super::parse;
    pub use super::rfc5424::escape_param_value;
    pub use super::{rfc3164, rfc5424};
}

impl Query {
    /// Log lines of a project (from the syslog listeners) matching `filter`, newest first.
    pub async fn logs(
        &self,
        project_id: u64,
        filter: &crate::LogFilter,
    ) -> Result<Vec<crate::LogLine>, Error> {
        if self.project(project_id).await?.is_none() {
            return Err(Error::ProjectNotFound);
        }
        self.store().logs(project_id, filter).await
    }
}
