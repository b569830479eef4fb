//! A bounded syslog load generator for the throughput benchmark (loopback only).
//!
//! ```text
//! cargo run --release --example load_syslog -- \
//!     --tcp 127.0.0.1:6514 --server http://127.0.0.1:7070 \
//!     --messages 1000000 --rate 0 --connections 4
//! cargo run --release --example load_syslog -- \
//!     --udp 127.0.0.1:6514 --server http://127.0.0.1:7070 --messages 500000 --rate 50000
//! ```
//!
//! It sends `--messages` RFC 5424 messages (~150 bytes, octet-counted over TCP, one per
//! datagram over UDP) at `--rate` per second (0: as fast as the socket takes them), then
//! watches the server's `/metrics` until every message is committed (TCP) or the count
//! stops growing (UDP), and prints what arrived, how fast, and what was lost.

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Send over TCP to this syslog listener.
    #[arg(long, conflicts_with = "udp")]
    tcp: Option<SocketAddr>,
    /// Send over UDP to this syslog listener.
    #[arg(long)]
    udp: Option<SocketAddr>,
    /// The server's HTTP base URL, for `/metrics` (http://127.0.0.1:PORT).
    #[arg(long)]
    server: String,
    /// Messages to send in all (the bound).
    #[arg(long, default_value_t = 500_000)]
    messages: u64,
    /// Messages per second over all connections; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// TCP connections (threads) sending in parallel.
    #[arg(long, default_value_t = 2)]
    connections: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (target, udp) = match (args.tcp, args.udp) {
        (Some(addr), None) => (addr, false),
        (None, Some(addr)) => (addr, true),
        _ => bail!("give --tcp or --udp"),
    };
    let server: SocketAddr = args
        .server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--server must be http://IP:PORT")?;
    if !target.ip().is_loopback() || !server.ip().is_loopback() {
        bail!("load goes to loopback addresses only");
    }
    if args.messages == 0 || args.connections == 0 || args.messages > 100_000_000 {
        bail!("--messages must be 1..=100000000 and --connections at least 1");
    }
    let before = committed(server)?;
    let dropped_before = udp_dropped(server)?;
    let connections = if udp { 1 } else { args.connections };
    let started = Instant::now();
    let senders: Vec<_> = (0..connections)
        .map(|c| {
            let share = args.messages / connections + u64::from(c < args.messages % connections);
            let rate = args.rate / connections;
            std::thread::spawn(move || send(target, udp, c, share, rate))
        })
        .collect();
    let mut sent = 0;
    for sender in senders {
        sent += sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    }
    let send_secs = started.elapsed().as_secs_f64();
    // Wait for the writer: every message (TCP), or until the count stops growing (UDP).
    let mut last = committed(server)? - before;
    let mut last_change = Instant::now();
    let mut done_at = started.elapsed();
    loop {
        let now = committed(server)? - before;
        if now != last {
            last = now;
            last_change = Instant::now();
            done_at = started.elapsed();
        }
        if now >= sent || last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped = udp_dropped(server)? - dropped_before;
    let total_secs = done_at.as_secs_f64().max(send_secs);
    println!("transport: {}", if udp { "udp" } else { "tcp" });
    println!(
        "sent: {sent} in {send_secs:.2} s ({:.0}/s)",
        sent as f64 / send_secs
    );
    println!(
        "committed: {last} in {total_secs:.2} s ({:.0}/s into storage)",
        last as f64 / total_secs
    );
    println!(
        "lost: {} ({:.3} %); counted dropped by the collector: {dropped}",
        sent.saturating_sub(last),
        100.0 * sent.saturating_sub(last) as f64 / sent as f64
    );
    Ok(())
}

/// Sends `n` messages, paced in 1 ms steps when `rate` > 0.
fn send(target: SocketAddr, udp: bool, connection: u64, n: u64, rate: u64) -> anyhow::Result<u64> {
    let host = format!("load{connection}");
    let message = |seq: u64| {
        format!(
            "<134>1 2024-05-01T12:00:00.000Z {host} loadgen 4242 - [load@32473 seq=\"{seq}\"] \
             GET /threads/{} 200 in {} us — a typical access log line",
            seq % 977,
            seq % 5_003
        )
    };
    let started = Instant::now();
    let per_ms = (rate as f64 / 1_000.0).max(0.0);
    let paced = |i: u64| {
        if rate > 0 {
            let due = Duration::from_secs_f64(i as f64 / per_ms / 1_000.0);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    };
    if udp {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(target)?;
        for i in 0..n {
            if i % 64 == 0 {
                paced(i);
            }
            socket.send(message(i).as_bytes())?;
        }
    } else {
        let mut stream = BufWriter::with_capacity(64 * 1024, TcpStream::connect(target)?);
        for i in 0..n {
            if i % 64 == 0 {
                paced(i);
            }
            let m = message(i);
            write!(stream, "{} {m}", m.len())?;
        }
        stream.flush()?;
    }
    Ok(n)
}

fn metrics(server: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(server)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {server}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn committed(server: SocketAddr) -> anyhow::Result<u64> {
    Ok(metric(
        &metrics(server)?,
        "sightline_syslog_lines_committed_total",
    ))
}

fn udp_dropped(server: SocketAddr) -> anyhow::Result<u64> {
    Ok(metric(
        &metrics(server)?,
        "sightline_syslog_messages_total{transport=\"udp\",outcome=\"dropped\"}",
    ))
}
