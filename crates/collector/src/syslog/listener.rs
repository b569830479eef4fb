//! The UDP and TCP listeners.
//!
//! Both gather the messages of one read into one ingest op (many log lines), so the
//! writer commits thousands of lines per transaction. When the ingest queue is full, a
//! TCP connection stops reading until there is room — the sender's kernel buffers fill
//! and it slows down (backpressure) — while UDP, which cannot push back, keeps a bounded
//! backlog and past it drops and counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::framing::Framer;
use super::metrics::{Outcome, Transport};
use super::receive::{Gathered, Receiver, count_lines};
use crate::store::Ingest;
use crate::writer::IngestQueue;

/// Bytes one TCP read takes; the framer holds at most this plus one message.
const READ_CHUNK: usize = 64 * 1024;

/// Most log lines in one ingest op.
const MAX_LINES_PER_OP: usize = 2_048;

/// Most UDP lines held while the queue is full; past it they are dropped and counted.
const UDP_BACKLOG: usize = 16_384;

/// How often a UDP listener with a backlog retries the queue when no datagram comes.
const UDP_RETRY: Duration = Duration::from_millis(5);

/// Largest UDP datagram (IPv4 payload bound).
const MAX_DATAGRAM: usize = 65_535;

/// Pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Shared by the listeners of one collector.
pub(crate) struct Listening {
    pub receiver: Receiver,
    pub queue: IngestQueue,
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

/// Waits until `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Hands gathered ops to the writer, waiting for room (TCP, and UDP at shutdown).
async fn send_all(shared: &Listening, transport: Transport, gathered: &mut Gathered) {
    let metrics = &shared.receiver.metrics;
    for ingest in gathered.payloads.drain(..) {
        let outcome = match shared.queue.send(ingest).await {
            Ok(()) => Outcome::Payload,
            Err(error) => {
                tracing::debug!(%error, "syslog payload not queued");
                Outcome::Dropped
            }
        };
        metrics.message(transport, outcome, 1);
    }
    if !gathered.lines.is_empty() {
        let (lines, outcomes) = gathered.take_lines();
        let n = lines.len() as u64;
        match shared.queue.send(Ingest::Logs(lines)).await {
            Ok(()) => count_lines(metrics, transport, outcomes),
            Err(error) => {
                tracing::debug!(%error, "syslog lines not queued");
                metrics.message(transport, Outcome::Dropped, n);
            }
        }
    }
}

pub(crate) async fn run_tcp(
    listener: TcpListener,
    shared: Arc<Listening>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(shared.max_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        shared.receiver.metrics.connection_accepted();
                        connections.spawn(connection(
                            stream,
                            peer,
                            shared.clone(),
                            shutdown.clone(),
                            permit,
                        ));
                    }
                    Err(_) => {
                        shared.receiver.metrics.connection_refused();
                        tracing::debug!(%peer, "syslog connection limit reached; closing");
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "syslog accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    // Each connection sees the same shutdown, queues what it has read, and ends.
    while connections.join_next().await.is_some() {}
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Listening>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let receiver = &shared.receiver;
    let mut framer = Framer::new(receiver.max_message);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut gathered = Gathered::default();
    loop {
        let read = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            read = tokio::time::timeout(shared.idle_timeout, stream.read(&mut buf)) => read,
        };
        let n = match read {
            Err(_idle) => {
                receiver.metrics.connection_idle();
                tracing::debug!(%peer, "closing idle syslog connection");
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "syslog connection failed");
                break;
            }
        };
        framer.push(&buf[..n]);
        while let Some(frame) = framer.next_frame() {
            receiver
                .receive(&frame.data, frame.truncated, Transport::Tcp, &mut gathered)
                .await;
            if gathered.lines.len() >= MAX_LINES_PER_OP {
                send_all(&shared, Transport::Tcp, &mut gathered).await;
            }
        }
        send_all(&shared, Transport::Tcp, &mut gathered).await;
    }
    if let Some(frame) = framer.finish() {
        receiver
            .receive(&frame.data, frame.truncated, Transport::Tcp, &mut gathered)
            .await;
    }
    send_all(&shared, Transport::Tcp, &mut gathered).await;
    receiver.metrics.connection_closed();
}

pub(crate) async fn run_udp(
    socket: UdpSocket,
    shared: Arc<Listening>,
    mut shutdown: watch::Receiver<bool>,
) {
    let receiver = &shared.receiver;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut gathered = Gathered::default();
    loop {
        let backlog = !gathered.is_empty();
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, _)) = received {
                    datagram(receiver, &buf[..n], &mut gathered).await;
                }
                // Take whatever else is waiting before queueing: one op for many datagrams.
                while gathered.lines.len() < MAX_LINES_PER_OP {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, _)) => datagram(receiver, &buf[..n], &mut gathered).await,
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep(UDP_RETRY), if backlog => {}
        }
        offer(&shared, &mut gathered);
    }
    send_all(&shared, Transport::Tcp, &mut gathered).await;
}

async fn datagram(receiver: &Receiver, data: &[u8], gathered: &mut Gathered) {
    // RFC 5426: one message per datagram; a trailing line end is tolerated.
    let truncated = data.len() > receiver.max_message;
    let data = &data[..data.len().min(receiver.max_message)];
    receiver
        .receive(data, truncated, Transport::Udp, gathered)
        .await;
}

/// Queues what UDP gathered without waiting; keeps it while the queue is full, up to
/// [`UDP_BACKLOG`] lines, then drops it and counts.
fn offer(shared: &Listening, gathered: &mut Gathered) {
    let metrics = &shared.receiver.metrics;
    let mut payloads = std::mem::take(&mut gathered.payloads).into_iter();
    for ingest in payloads.by_ref() {
        match shared.queue.offer(ingest) {
            Ok(()) => metrics.message(Transport::Udp, Outcome::Payload, 1),
            Err(ingest) => {
                gathered.payloads.push(*ingest);
                break;
            }
        }
    }
    gathered.payloads.extend(payloads);
    if !gathered.lines.is_empty() {
        let (lines, outcomes) = gathered.take_lines();
        match shared.queue.offer(Ingest::Logs(lines)) {
            Ok(()) => count_lines(metrics, Transport::Udp, outcomes),
            Err(ingest) => {
                if let Ingest::Logs(lines) = *ingest {
                    gathered.restore_lines(lines, outcomes);
                }
            }
        }
    }
    if gathered.len() > UDP_BACKLOG {
        metrics.message(Transport::Udp, Outcome::Dropped, gathered.len() as u64);
        tracing::debug!(
            lines = gathered.len(),
            "ingest queue full; dropping syslog udp messages"
        );
        *gathered = Gathered::default();
    }
}
