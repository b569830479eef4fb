//! Counters of the syslog listeners, rendered into `/metrics` with the collector's own.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Which listener a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp = 0,
    Tcp = 1,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Parsed (RFC 5424 or 3164) and queued as a log line.
    Log = 0,
    /// Not parseable: queued as a raw log line.
    Raw = 1,
    /// A Sightline payload, queued into the metrics pipeline.
    Payload = 2,
    /// A Sightline payload that was refused (key, project, JSON): queued as a log line.
    Rejected = 3,
    /// Lost: the ingest queue stayed full (UDP only; TCP waits instead).
    Dropped = 4,
    /// A part of an error event, held until the event's other parts arrive.
    Part = 5,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Log,
        Outcome::Raw,
        Outcome::Payload,
        Outcome::Rejected,
        Outcome::Dropped,
        Outcome::Part,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Log => "log",
            Outcome::Raw => "raw",
            Outcome::Payload => "payload",
            Outcome::Rejected => "rejected",
            Outcome::Dropped => "dropped",
            Outcome::Part => "part",
        }
    }
}

/// Every syslog counter; lock-free.
#[derive(Debug, Default)]
pub(crate) struct SyslogMetrics {
    messages: [[AtomicU64; Outcome::ALL.len()]; Transport::ALL.len()],
    truncated: [AtomicU64; Transport::ALL.len()],
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_idle_closed: AtomicU64,
    connections_open: AtomicU64,
    lines_committed: AtomicU64,
    lines_pruned: AtomicU64,
    events_incomplete: AtomicU64,
}

impl SyslogMetrics {
    pub(crate) fn message(&self, transport: Transport, outcome: Outcome, n: u64) {
        self.messages[transport as usize][outcome as usize].fetch_add(n, Relaxed);
    }

    pub(crate) fn count(&self, transport: Transport, outcome: Outcome) -> u64 {
        self.messages[transport as usize][outcome as usize].load(Relaxed)
    }

    pub(crate) fn truncated(&self, transport: Transport) {
        self.truncated[transport as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_idle(&self) {
        self.connections_idle_closed.fetch_add(1, Relaxed);
    }

    /// Log lines a group commit stored.
    pub(crate) fn committed(&self, lines: u64) {
        self.lines_committed.fetch_add(lines, Relaxed);
    }

    pub(crate) fn pruned(&self, lines: u64) {
        self.lines_pruned.fetch_add(lines, Relaxed);
    }

    /// Events sent in parts that were given up before all their parts arrived.
    pub(crate) fn events_incomplete(&self, events: u64) {
        self.events_incomplete.fetch_add(events, Relaxed);
    }

    /// Appends the Prometheus text of every counter.
    pub(crate) fn write_to(&self, out: &mut String) -> std::fmt::Result {
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} {kind}")
        };
        let name = "sightline_syslog_messages_total";
        header(
            out,
            name,
            "counter",
            "Syslog messages received, by transport and what became of them.",
        )?;
        for transport in Transport::ALL {
            for outcome in Outcome::ALL {
                writeln!(
                    out,
                    "{name}{{transport=\"{}\",outcome=\"{}\"}} {}",
                    transport.label(),
                    outcome.label(),
                    self.count(transport, outcome)
                )?;
            }
        }
        let name = "sightline_syslog_truncated_total";
        header(
            out,
            name,
            "counter",
            "Syslog messages longer than the limit, kept cut.",
        )?;
        for transport in Transport::ALL {
            writeln!(
                out,
                "{name}{{transport=\"{}\"}} {}",
                transport.label(),
                self.truncated[transport as usize].load(Relaxed)
            )?;
        }
        let name = "sightline_syslog_connections_total";
        header(
            out,
            name,
            "counter",
            "Syslog TCP connections accepted, refused at the limit, closed when idle.",
        )?;
        for (result, counter) in [
            ("accepted", &self.connections_accepted),
            ("refused", &self.connections_refused),
            ("idle_closed", &self.connections_idle_closed),
        ] {
            writeln!(
                out,
                "{name}{{result=\"{result}\"}} {}",
                counter.load(Relaxed)
            )?;
        }
        for (name, kind, help, counter) in [
            (
                "sightline_syslog_connections_open",
                "gauge",
                "Syslog TCP connections open now.",
                &self.connections_open,
            ),
            (
                "sightline_syslog_lines_committed_total",
                "counter",
                "Log lines committed to the store.",
                &self.lines_committed,
            ),
            (
                "sightline_syslog_lines_pruned_total",
                "counter",
                "Log lines deleted by retention.",
                &self.lines_pruned,
            ),
            (
                "sightline_syslog_events_incomplete_total",
                "counter",
                "Error events sent in parts whose parts did not all arrive in time.",
                &self.events_incomplete,
            ),
        ] {
            header(out, name, kind, help)?;
            writeln!(out, "{name} {}", counter.load(Relaxed))?;
        }
        Ok(())
    }
}
