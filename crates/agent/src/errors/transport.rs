//! Sending events: the agent thread's side of the event queue.
//!
//! [`EventShipper`] runs on the agent thread beside the metrics [`Shipper`], on the
//! same runtime: it takes captured events off the bounded channel, symbolicates and
//! scrubs them, and POSTs each as a Sentry envelope to the DSN's envelope endpoint.
//! Like the metric batches, it keeps at most `capacity` events waiting (dropping the
//! oldest and counting it), uploads one at a time, retries 408/429/5xx and network
//! errors with the same jittered exponential backoff (honouring `Retry-After`), and
//! drops what the collector refuses.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::event::EventDefaults;
use super::{Captured, EventId, Sink, rfc3339};
use crate::ship::{Backoff, Control, MAX_RETRY_AFTER, Outcome, Shared, Shipper, Upload, outcome};

/// Where and how envelopes are sent.
pub(crate) struct EnvelopeTarget {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    pub(crate) auth: String,
    /// The DSN, for the envelope header.
    pub(crate) dsn: String,
}

/// An event ready to send: scrubbed JSON.
struct Prepared {
    event_id: EventId,
    payload: Vec<u8>,
}

/// The event being uploaded (it is not in the queue) and the upload.
struct InFlight {
    event: Prepared,
    upload: Upload,
}

pub(crate) struct EventShipper {
    sink: Arc<Sink>,
    rx: mpsc::Receiver<Captured>,
    target: EnvelopeTarget,
    defaults: EventDefaults,
    capacity: usize,
    queue: VecDeque<Prepared>,
    backoff: Backoff,
    retry_at: Instant,
    failing: bool,
    last_rejected: Option<reqwest::StatusCode>,
    /// For Sentry's `contexts.flags`: the feature switches on for the event.
    switches: Option<crate::switches::Switches>,
    /// When set, events go out as syslog messages instead of envelopes over HTTP.
    syslog: Option<crate::syslog::SyslogSender>,
}

impl EventShipper {
    pub(crate) fn new(
        sink: Arc<Sink>,
        rx: mpsc::Receiver<Captured>,
        target: EnvelopeTarget,
        defaults: EventDefaults,
        capacity: usize,
    ) -> EventShipper {
        EventShipper {
            sink,
            rx,
            target,
            defaults,
            capacity: capacity.max(1),
            queue: VecDeque::new(),
            backoff: Backoff::default(),
            retry_at: Instant::now(),
            failing: false,
            last_rejected: None,
            switches: None,
            syslog: None,
        }
    }

    pub(crate) fn with_syslog(
        mut self,
        syslog: Option<crate::syslog::SyslogSender>,
    ) -> EventShipper {
        self.syslog = syslog;
        self
    }

    pub(crate) fn with_switches(mut self, switches: crate::switches::Switches) -> EventShipper {
        self.switches = Some(switches);
        self
    }

    /// Runs until `stop` brings a deadline (or is dropped), then sends what it can
    /// until then; what is left counts as dropped.
    pub(crate) async fn run(mut self, mut stop: oneshot::Receiver<std::time::Instant>) {
        warm_up_symbols();
        let mut in_flight: Option<InFlight> = None;
        let mut deadline: Option<Instant> = None;
        let mut open = true;
        loop {
            let now = Instant::now();
            if in_flight.is_none() && !self.queue.is_empty() && now >= self.retry_at {
                in_flight = self.start_upload();
            }
            if let Some(deadline) = deadline {
                let idle = in_flight.is_none();
                if (idle && self.queue.is_empty())
                    || now >= deadline
                    || (idle && self.retry_at >= deadline)
                {
                    break;
                }
            }
            let waiting = in_flight.is_none() && !self.queue.is_empty();
            let retry_at = self.retry_at;
            tokio::select! {
                biased;
                stop_at = &mut stop, if deadline.is_none() => {
                    deadline = Some(stop_at.map_or(now, Instant::from_std));
                    // Later captures fail their `try_send` and count as dropped.
                    self.rx.close();
                    while let Ok(captured) = self.rx.try_recv() {
                        self.prepare(captured);
                    }
                    self.retry_at = now;
                }
                captured = self.rx.recv(), if open && deadline.is_none() => match captured {
                    Some(captured) => self.prepare(captured),
                    None => open = false,
                },
                outcome = upload_of(&mut in_flight) => {
                    if let Some(done) = in_flight.take() {
                        self.finish_upload(done.event, outcome);
                    }
                }
                () = sleep_until(retry_at), if waiting => {}
                () = sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => {}
            }
        }
        let lost = self.queue.len() + usize::from(in_flight.is_some());
        if lost > 0 {
            tracing::warn!(events = lost, "sightline agent stopped with unsent events");
            self.sink.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            self.queue.clear();
        }
    }

    /// Symbolicates, builds and scrubs an event and queues it.
    fn prepare(&mut self, mut captured: Captured) {
        let event_id = captured.event_id;
        if let (None, Some(switches)) = (&captured.flags, &self.switches) {
            // The switch state of a moment after the capture (milliseconds), for the
            // agent's context and the event's user: what the request most likely saw.
            let mut ctx = switches.context();
            if let Some(user) = &captured.user {
                ctx = ctx.user(user.clone());
            }
            let flags = switches.flags_context(&ctx);
            if flags["values"].as_array().is_some_and(|v| !v.is_empty()) {
                captured.flags = Some(flags);
            }
        }
        let mut event = captured.into_event(&self.defaults);
        sightline_protocol::scrub::scrub_event(&mut event);
        match serde_json::to_vec(&event) {
            Ok(payload) => {
                self.queue.push_back(Prepared { event_id, payload });
                self.enforce_capacity();
            }
            Err(error) => {
                // Cannot happen for a `Value`; never retry what cannot be encoded.
                tracing::error!(%error, "sightline agent could not encode an event");
                self.sink.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops the oldest events past the capacity.
    fn enforce_capacity(&mut self) {
        while self.queue.len() > self.capacity {
            self.queue.pop_front();
            tracing::debug!("sightline agent event queue full, dropping the oldest event");
            self.sink.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the oldest event and starts uploading it.
    fn start_upload(&mut self) -> Option<InFlight> {
        let event = self.queue.pop_front()?;
        if let Some(syslog) = &self.syslog {
            let upload = syslog.upload_event(&event.event_id.to_string(), &event.payload);
            return Some(InFlight { event, upload });
        }
        let body = envelope(&event.event_id, &event.payload, &self.target.dsn);
        let request = self
            .target
            .client
            .post(&self.target.url)
            .header("x-sentry-auth", &self.target.auth)
            .header(http::header::CONTENT_TYPE, "application/x-sentry-envelope")
            .body(body);
        Some(InFlight {
            event,
            upload: Box::pin(async move { outcome(request.send().await).await }),
        })
    }

    fn finish_upload(&mut self, event: Prepared, outcome: Outcome) {
        match outcome {
            Outcome::Sent => {
                self.sink.sent.fetch_add(1, Ordering::Relaxed);
                if self.failing {
                    tracing::info!("sightline collector takes events again");
                }
                self.failing = false;
                self.last_rejected = None;
                self.backoff.reset();
                self.retry_at = Instant::now();
            }
            Outcome::Retry {
                reason,
                retry_after,
            } => {
                let delay = match retry_after {
                    Some(after) => {
                        self.backoff.next();
                        after.min(MAX_RETRY_AFTER)
                    }
                    None => self.backoff.next(),
                };
                if self.failing {
                    tracing::debug!(%reason, ?delay, "sightline event upload failed, will retry");
                } else {
                    tracing::warn!(%reason, ?delay, "sightline event upload failed, will retry");
                }
                self.failing = true;
                self.retry_at = Instant::now() + delay;
                // Back at the head of the queue: it is still the oldest.
                self.queue.push_front(event);
                self.enforce_capacity();
            }
            Outcome::Rejected(status) => {
                self.sink.dropped.fetch_add(1, Ordering::Relaxed);
                if self.last_rejected != Some(status) {
                    tracing::warn!(
                        status = status.as_u16(),
                        url = %self.target.url,
                        "sightline collector refused an event; dropping it (check the dsn)"
                    );
                }
                self.last_rejected = Some(status);
                self.retry_at = Instant::now();
            }
        }
    }
}

/// Loads the program's debug info (line tables) now, on the agent thread.
///
/// The `backtrace` crate serialises stack walks and symbol lookups behind one
/// process-wide lock, and the first lookup in a binary parses its debug info while
/// holding it (a few hundred milliseconds for a large debug build). Done lazily at the
/// first event, that would stall every capture on the app's threads meanwhile —
/// exactly when errors come in bursts. Done at start, captures only ever wait for a
/// single frame's lookup. The cost is the memory of the parsed line tables.
fn warm_up_symbols() {
    let here = warm_up_symbols as fn() as usize;
    backtrace::resolve(here as *mut std::ffi::c_void, |_| {});
}

/// Polls the upload in flight; never resolves when there is none.
async fn upload_of(in_flight: &mut Option<InFlight>) -> Outcome {
    match in_flight {
        Some(flight) => flight.upload.as_mut().await,
        None => std::future::pending().await,
    }
}

/// A Sentry envelope holding one event.
pub(crate) fn envelope(event_id: &EventId, payload: &[u8], dsn: &str) -> Vec<u8> {
    let header = json!({
        "event_id": event_id.to_string(),
        "sent_at": rfc3339(std::time::SystemTime::now()),
        "dsn": dsn,
        "sdk": { "name": "sightline-agent", "version": env!("CARGO_PKG_VERSION") },
    });
    let item = json!({
        "type": "event",
        "length": payload.len(),
        "content_type": "application/json",
    });
    let mut body = Vec::with_capacity(payload.len() + 256);
    body.extend_from_slice(header.to_string().as_bytes());
    body.push(b'\n');
    body.extend_from_slice(item.to_string().as_bytes());
    body.push(b'\n');
    body.extend_from_slice(payload);
    body.push(b'\n');
    body
}

/// The agent thread's work: metric batches and events side by side. A shutdown from
/// the guard stops both with the same deadline; the guard hears back once both are
/// done, so the stats it gets account for every window and event.
pub(crate) async fn run_agent_thread(
    shipper: Shipper,
    events: EventShipper,
    mut control: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Shared>,
) {
    let (to_shipper, shipper_control) = mpsc::unbounded_channel();
    let (stop_events, events_stop) = oneshot::channel();
    let relay = async move {
        let (deadline, reply) = match control.recv().await {
            Some(Control::Shutdown { deadline, reply }) => (deadline, reply),
            // The guard is gone without a word (it always sends one).
            None => (std::time::Instant::now(), None),
        };
        let _ = stop_events.send(deadline);
        let _ = to_shipper.send(Control::Shutdown {
            deadline,
            reply: None,
        });
        reply
    };
    let events = events.with_switches(shared.switches.clone());
    let ((), (), reply) =
        tokio::join!(shipper.run(shipper_control), events.run(events_stop), relay);
    if let Some(reply) = reply {
        // Fails only if the `shutdown` future was dropped: nobody to tell.
        let _ = reply.send(shared.stats());
    }
}
