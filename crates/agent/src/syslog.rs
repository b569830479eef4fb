//! Shipping over syslog instead of HTTP: each batch becomes RFC 5424 messages whose
//! structured data carries the project and key and whose message is the batch's JSON,
//! sent to `/dev/log`, or over UDP or TCP to a relay (rsyslog, syslog-ng) or straight to
//! the collector's syslog listener. Error events travel the same way, as the bare Sentry
//! event JSON (what `/store/` takes), in one message or in numbered parts.
//!
//! ```text
//! <134>1 - web1 comments 4242 metrics [sightline@32473 project="1" key="…" kind="metrics"] BOM{"agent":…,"windows":[…]}
//! <131>1 - web1 comments 4242 event [sightline@32473 project="1" key="…" kind="event" id="…" part="1/3"] BOM{"event_id":…
//! ```
//!
//! Why our own formatter rather than the `syslog` crate: that crate writes through
//! blocking std sockets (the agent thread must stay responsive to shutdown and
//! deadlines), frames TCP by newline only (a relay then needs no octet counting, but a
//! message can never carry a newline), and builds structured data from a `HashMap`
//! without escaping parameter values. What we need — one header, one SD element, BOM and
//! octet counting — is a few lines over tokio's sockets on the agent's own runtime.
//!
//! A batch whose message would exceed the size bound (8 KiB by default: a UDP datagram
//! every relay accepts, and rsyslog's default `maxMessageSize`) is split by windows into
//! several self-contained batches; the collector merges them as it merges any batches.
//! An event cannot be split that way, so a large one is cut (at character boundaries)
//! into parts that carry its id and `part="i/n"`; the collector joins them, and drops
//! and counts an event whose parts did not all arrive. The JSON never holds a raw
//! newline, so relays that escape control characters leave it intact.
//! Syslog has no acknowledgement: a batch counts as sent once the socket took it, and
//! TCP retries after a broken connection may deliver part of a batch twice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sightline_protocol::{Dsn, MetricBatch};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::AgentBuilder;
use crate::ship::{Outcome, Upload};

/// The SD-ID of a Sightline payload (PEN 32473: RFC 5612's documentation number).
pub const PAYLOAD_SD_ID: &str = "sightline@32473";

/// Default largest message, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 8 * 1024;

/// Facility local0, severity info.
const PRI: u8 = 16 * 8 + 6;

/// Facility local0, severity error: events.
const EVENT_PRI: u8 = 16 * 8 + 3;

/// Most parts one event is cut into; the collector accepts no more.
pub const MAX_EVENT_PARTS: usize = 256;

/// One send (connect included) gives up after this long.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where syslog messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTarget {
    /// The local syslog daemon's datagram socket, `/dev/log`.
    Local,
    /// A Unix datagram socket at this path (a relay's `imuxsock` socket, say).
    Unix(PathBuf),
    /// UDP (RFC 5426): one message per datagram.
    Udp(SocketAddr),
    /// TCP (RFC 6587) with octet-counted framing, on one kept-open connection.
    Tcp(SocketAddr),
}

/// Syslog settings of the builder.
#[derive(Clone, Debug)]
pub(crate) struct SyslogSettings {
    pub(crate) target: SyslogTarget,
    pub(crate) max_message: usize,
}

impl AgentBuilder {
    /// Ships batches as RFC 5424 syslog messages to `target` instead of HTTP POSTs. The
    /// DSN still names the project and its key, which travel in the structured data.
    pub fn transport_syslog(mut self, target: SyslogTarget) -> Self {
        let max_message = self
            .syslog
            .as_ref()
            .map_or(DEFAULT_MAX_MESSAGE, |s| s.max_message);
        self.syslog = Some(SyslogSettings {
            target,
            max_message,
        });
        self
    }

    /// Largest syslog message (default 8 KiB, from 1 KiB to 1 MiB); larger batches are
    /// split by windows. Raise it only when every relay on the way accepts more.
    pub fn syslog_max_message(mut self, bytes: usize) -> Self {
        let bytes = bytes.clamp(1024, 1024 * 1024);
        match &mut self.syslog {
            Some(settings) => settings.max_message = bytes,
            None => {
                self.syslog = Some(SyslogSettings {
                    target: SyslogTarget::Local,
                    max_message: bytes,
                });
            }
        }
        self
    }
}

/// Sends batches as syslog messages; shared by the uploads of the agent thread.
#[derive(Clone)]
pub(crate) struct SyslogSender {
    inner: Arc<Inner>,
}

struct Inner {
    target: SyslogTarget,
    max_message: usize,
    /// Everything before the message: `<PRI>1 - HOST APP PROCID MSGID [SD] `.
    header: String,
    /// An event's header up to its SD element's own parameters (`id`, `part`).
    event_header: String,
    connection: Mutex<Option<Connection>>,
}

enum Connection {
    Tcp(tokio::net::TcpStream),
    Udp(tokio::net::UdpSocket),
    #[cfg(unix)]
    Unix(tokio::net::UnixDatagram),
}

impl SyslogSender {
    pub(crate) fn new(settings: SyslogSettings, dsn: &Dsn, app: &str, host: &str) -> SyslogSender {
        let header = |pri: u8, msgid: &str| {
            format!(
                "<{pri}>1 - {} {} {} {msgid} [{PAYLOAD_SD_ID} project=\"{}\" key=\"{}\" kind=\"{msgid}\"",
                header_field(host, 255),
                header_field(app, 48),
                std::process::id(),
                escape_param_value(&dsn.project_id.to_string()),
                escape_param_value(&dsn.public_key),
            )
        };
        SyslogSender {
            inner: Arc::new(Inner {
                target: settings.target,
                max_message: settings.max_message,
                header: header(PRI, "metrics") + "] ",
                event_header: header(EVENT_PRI, "event"),
                connection: Mutex::new(None),
            }),
        }
    }

    /// Encodes `batch` (split as needed) and sends it.
    pub(crate) fn upload(&self, batch: &MetricBatch) -> Upload {
        self.send(self.encode(batch))
    }

    /// Sends one event (its scrubbed JSON), in parts if it is larger than a message.
    pub(crate) fn upload_event(&self, event_id: &str, payload: &[u8]) -> Upload {
        match self.encode_event(event_id, payload) {
            Some(messages) => self.send(messages),
            None => {
                tracing::warn!(
                    bytes = payload.len(),
                    "sightline agent dropped an event too large for syslog (raise syslog_max_message)"
                );
                Box::pin(async { Outcome::Rejected(http::StatusCode::PAYLOAD_TOO_LARGE) })
            }
        }
    }

    /// The event as messages of at most `max_message` bytes; `None` when it would take
    /// more than [`MAX_EVENT_PARTS`] or is not UTF-8 (JSON always is).
    pub(crate) fn encode_event(&self, event_id: &str, payload: &[u8]) -> Option<Vec<Vec<u8>>> {
        let json = std::str::from_utf8(payload).ok()?;
        let id = header_field(event_id, 64);
        // The longest header any part can have: `part="256/256"`.
        let longest = format!(
            "{} id=\"{id}\" part=\"{MAX_EVENT_PARTS}/{MAX_EVENT_PARTS}\"] ",
            self.inner.event_header
        );
        let room = self
            .inner
            .max_message
            .checked_sub(longest.len() + BOM.len())
            .filter(|&room| room >= 64)?;
        let mut chunks = Vec::new();
        let mut rest = json;
        while !rest.is_empty() {
            let mut cut = rest.len().min(room);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (chunk, tail) = rest.split_at(cut);
            chunks.push(chunk);
            rest = tail;
        }
        if chunks.is_empty() || chunks.len() > MAX_EVENT_PARTS {
            return None;
        }
        let parts = chunks.len();
        Some(
            chunks
                .iter()
                .enumerate()
                .map(|(i, chunk)| {
                    let header = if parts == 1 {
                        format!("{} id=\"{id}\"] ", self.inner.event_header)
                    } else {
                        format!(
                            "{} id=\"{id}\" part=\"{}/{parts}\"] ",
                            self.inner.event_header,
                            i + 1
                        )
                    };
                    let mut message = Vec::with_capacity(header.len() + BOM.len() + chunk.len());
                    message.extend_from_slice(header.as_bytes());
                    message.extend_from_slice(BOM);
                    message.extend_from_slice(chunk.as_bytes());
                    message
                })
                .collect(),
        )
    }

    /// Sends `messages` in order on the kept connection.
    fn send(&self, messages: Vec<Vec<u8>>) -> Upload {
        let inner = self.inner.clone();
        Box::pin(async move {
            match tokio::time::timeout(SEND_TIMEOUT, inner.send_all(&messages)).await {
                Ok(Ok(())) => Outcome::Sent,
                Ok(Err(error)) => {
                    // Reconnect on the next attempt.
                    *inner.connection.lock().await = None;
                    Outcome::Retry {
                        reason: format!("syslog send failed: {error}"),
                        retry_after: None,
                    }
                }
                Err(_) => {
                    *inner.connection.lock().await = None;
                    Outcome::Retry {
                        reason: "syslog send timed out".to_owned(),
                        retry_after: None,
                    }
                }
            }
        })
    }

    /// The batch as messages of at most `max_message` bytes.
    pub(crate) fn encode(&self, batch: &MetricBatch) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        self.encode_into(batch.clone(), &mut messages);
        messages
    }

    fn message(&self, batch: &MetricBatch) -> Option<Vec<u8>> {
        let json = serde_json::to_vec(batch).ok()?;
        let mut message = Vec::with_capacity(self.inner.header.len() + BOM.len() + json.len());
        message.extend_from_slice(self.inner.header.as_bytes());
        message.extend_from_slice(BOM);
        message.extend_from_slice(&json);
        Some(message)
    }

    fn encode_into(&self, batch: MetricBatch, out: &mut Vec<Vec<u8>>) {
        let Some(message) = self.message(&batch) else {
            tracing::error!("sightline agent could not encode a batch");
            return;
        };
        if message.len() <= self.inner.max_message {
            out.push(message);
            return;
        }
        if batch.windows.len() > 1 {
            // Halves, each a batch of its own; everything but the windows rides with the
            // first half only, so nothing is counted twice.
            let mut first = batch;
            let second_windows = first.windows.split_off(first.windows.len() / 2);
            let second = MetricBatch {
                windows: second_windows,
                ..empty_like(&first)
            };
            self.encode_into(first, out);
            self.encode_into(second, out);
            return;
        }
        // One window, or none, with extras (insight, switch counts): send them apart.
        let extras = MetricBatch {
            windows: Vec::new(),
            ..batch.clone()
        };
        let windows_only = MetricBatch {
            windows: batch.windows,
            ..empty_like(&extras)
        };
        let windows_fit = windows_only.windows.is_empty()
            || self
                .message(&windows_only)
                .is_some_and(|m| m.len() <= self.inner.max_message);
        let extras_differ = extras != empty_like(&extras);
        if windows_fit && extras_differ && !windows_only.windows.is_empty() {
            self.encode_into(windows_only, out);
            self.encode_into(extras, out);
            return;
        }
        tracing::warn!(
            bytes = message.len(),
            max = self.inner.max_message,
            "sightline agent dropped a syslog message larger than the bound (raise syslog_max_message)"
        );
    }
}

/// A batch with the same agent and counters but nothing to merge.
fn empty_like(batch: &MetricBatch) -> MetricBatch {
    let mut empty: MetricBatch = match serde_json::from_value(serde_json::json!({
        "agent": batch.agent,
        "sent_at_ms": batch.sent_at_ms,
        "windows": [],
    })) {
        Ok(empty) => empty,
        Err(_) => batch.clone(),
    };
    empty.dropped_windows = batch.dropped_windows;
    empty.windows.clear();
    empty
}

impl Inner {
    async fn send_all(&self, messages: &[Vec<u8>]) -> std::io::Result<()> {
        let mut connection = self.connection.lock().await;
        if connection.is_none() {
            *connection = Some(self.connect().await?);
        }
        let Some(connection) = connection.as_mut() else {
            return Err(std::io::Error::other("not connected"));
        };
        for message in messages {
            match connection {
                Connection::Tcp(stream) => {
                    // RFC 6587 octet counting: the message may carry any byte.
                    let mut framed = format!("{} ", message.len()).into_bytes();
                    framed.extend_from_slice(message);
                    stream.write_all(&framed).await?;
                }
                Connection::Udp(socket) => {
                    socket.send(message).await?;
                }
                #[cfg(unix)]
                Connection::Unix(socket) => {
                    socket.send(message).await?;
                }
            }
        }
        if let Connection::Tcp(stream) = connection {
            stream.flush().await?;
        }
        Ok(())
    }

    async fn connect(&self) -> std::io::Result<Connection> {
        match &self.target {
            SyslogTarget::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Connection::Tcp(stream))
            }
            SyslogTarget::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = tokio::net::UdpSocket::bind(local).await?;
                socket.connect(addr).await?;
                Ok(Connection::Udp(socket))
            }
            #[cfg(unix)]
            SyslogTarget::Local | SyslogTarget::Unix(_) => {
                let path = match &self.target {
                    SyslogTarget::Unix(path) => path.clone(),
                    _ => PathBuf::from("/dev/log"),
                };
                let socket = tokio::net::UnixDatagram::unbound()?;
                socket.connect(path)?;
                Ok(Connection::Unix(socket))
            }
            #[cfg(not(unix))]
            SyslogTarget::Local | SyslogTarget::Unix(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "unix sockets need a unix system",
            )),
        }
    }
}

/// A header field: printable US-ASCII without spaces, at most `max` bytes, `-` if empty.
fn header_field(value: &str, max: usize) -> String {
    let mut field: String = value
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if field.is_empty() || field == "-" {
        field = "_".to_owned();
    }
    field
}

/// RFC 5424 §6.3.3: `"`, `\` and `]` in a parameter value get a backslash.
fn escape_param_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use sightline_protocol::{Histogram, RouteWindow};

    use super::*;

    fn sender(max: usize) -> SyslogSender {
        let dsn: Dsn = "http://abc123@127.0.0.1:7070/7".parse().unwrap();
        SyslogSender::new(
            SyslogSettings {
                target: SyslogTarget::Udp("127.0.0.1:9".parse().unwrap()),
                max_message: max,
            },
            &dsn,
            "my app",
            "web1",
        )
    }

    fn batch(windows: usize) -> MetricBatch {
        let windows: Vec<RouteWindow> = (0..windows)
            .map(|i| {
                let mut latency = Histogram::new();
                for us in 0..50 {
                    latency.record(100 + us * 997 * (i as u64 + 1));
                }
                RouteWindow {
                    start: 1_700_000_000,
                    window_secs: 10,
                    route: format!("/route/{i}"),
                    method: "GET".into(),
                    status_class: 2,
                    latency,
                }
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "agent": {"service": "svc", "instance": "i", "sdk": "test"},
            "sent_at_ms": 5,
            "dropped_windows": 3,
            "windows": windows,
        }))
        .unwrap()
    }

    fn decode(message: &[u8]) -> MetricBatch {
        let text = std::str::from_utf8(message).unwrap();
        let json = text.split_once("\u{feff}").unwrap().1;
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_message_is_rfc5424_with_the_key_in_structured_data() {
        let messages = sender(DEFAULT_MAX_MESSAGE).encode(&batch(1));
        assert_eq!(messages.len(), 1);
        let text = String::from_utf8(messages[0].clone()).unwrap();
        assert!(text.starts_with("<134>1 - web1 my_app ",), "{text}");
        assert!(
            text.contains(
                " metrics [sightline@32473 project=\"7\" key=\"abc123\" kind=\"metrics\"] \u{feff}{"
            ),
            "{text}"
        );
        assert_eq!(decode(&messages[0]), batch(1));
    }

    #[test]
    fn large_batches_split_by_window_and_lose_nothing() {
        let whole = batch(40);
        let messages = sender(2_048).encode(&whole);
        assert!(messages.len() > 1);
        assert!(messages.iter().all(|m| m.len() <= 2_048));
        let windows: Vec<RouteWindow> = messages.iter().flat_map(|m| decode(m).windows).collect();
        assert_eq!(windows, whole.windows);
        assert!(
            messages
                .iter()
                .map(|m| decode(m))
                .all(|b| b.agent == whole.agent)
        );
    }

    /// `(id, part, body)` of an event message.
    fn event_part(message: &[u8]) -> (String, Option<String>, String) {
        let text = std::str::from_utf8(message).unwrap();
        let (header, body) = text.split_once("\u{feff}").unwrap();
        assert!(header.starts_with("<131>1 - web1 my_app "), "{header}");
        assert!(
            header.contains(
                " event [sightline@32473 project=\"7\" key=\"abc123\" kind=\"event\" id=\""
            )
        );
        let param = |name: &str| {
            header
                .split_once(&format!(" {name}=\""))
                .map(|(_, rest)| rest.split_once('"').unwrap().0.to_owned())
        };
        (param("id").unwrap(), param("part"), body.to_owned())
    }

    #[test]
    fn a_small_event_is_one_message_without_parts() {
        let payload = br#"{"event_id":"ab12","message":"boom"}"#;
        let messages = sender(DEFAULT_MAX_MESSAGE)
            .encode_event("ab12", payload)
            .unwrap();
        assert_eq!(messages.len(), 1);
        let (id, part, body) = event_part(&messages[0]);
        assert_eq!((id.as_str(), part), ("ab12", None));
        assert_eq!(body.as_bytes(), payload);
    }

    #[test]
    fn a_large_event_is_cut_into_numbered_parts_at_char_boundaries() {
        let text = "\u{e9}t\u{e9} \u{1f600} ".repeat(700);
        let payload = serde_json::to_vec(&serde_json::json!({ "message": text })).unwrap();
        let messages = sender(1_024).encode_event("cafe", &payload).unwrap();
        assert!(messages.len() > 5, "{}", messages.len());
        assert!(messages.iter().all(|m| m.len() <= 1_024));
        let parts: Vec<_> = messages.iter().map(|m| event_part(m)).collect();
        let n = parts.len();
        for (i, (id, part, _)) in parts.iter().enumerate() {
            assert_eq!(id, "cafe");
            assert_eq!(part.as_deref(), Some(format!("{}/{n}", i + 1).as_str()));
        }
        let joined: String = parts.into_iter().map(|(_, _, body)| body).collect();
        assert_eq!(joined.as_bytes(), payload);
    }

    #[test]
    fn an_event_needing_too_many_parts_is_refused() {
        let payload = vec![b'x'; 300 * 1_024];
        assert!(sender(1_024).encode_event("id", &payload).is_none());
        assert!(sender(64).encode_event("id", b"{}").is_none());
    }

    #[test]
    fn header_fields_are_printable_ascii() {
        assert_eq!(header_field("a b\u{e9}", 48), "a_b_");
        assert_eq!(header_field("", 48), "_");
        assert_eq!(header_field(&"x".repeat(100), 48).len(), 48);
        assert_eq!(escape_param_value("a\"]\\"), "a\\\"\\]\\\\");
    }
}
