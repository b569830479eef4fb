//! The agent thread: closes windows, queues batches, uploads them.
//!
//! One OS thread runs a current-thread tokio runtime of its own, so shipping needs
//! nothing from the app's runtime and never competes with it. Like tracing-appender's
//! non-blocking writer and sentry's transport, it is lossy by design: the queue holds
//! at most `capacity` batches, and when the collector is away the oldest batch is
//! dropped and counted rather than letting memory grow or the app wait.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sightline_protocol::{AgentInfo, MAX_WINDOWS_PER_BATCH, MetricBatch, RouteWindow};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::AgentStats;
use crate::aggregate::{Recorder, unix_now_ms};

/// How long after a window ends it is closed, so that requests that read the clock
/// just before the boundary have recorded into it.
const CLOSE_GRACE_MS: i64 = 250;

/// First retry delay; doubled per failure up to [`MAX_BACKOFF`], with jitter.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Longest `Retry-After` honoured: a collector asking for more is probably confused.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How often the live heap is sampled (when the counting allocator is installed).
const HEAP_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Counters shared between the agent thread and [`Agent::stats`](crate::Agent::stats).
#[derive(Default)]
pub(crate) struct Counters {
    windows_sent: AtomicU64,
    windows_dropped: AtomicU64,
    windows_queued: AtomicU64,
    batches_sent: AtomicU64,
    send_failures: AtomicU64,
}

/// What the app-side handles and the agent thread share.
pub(crate) struct Shared {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) counters: Counters,
    /// Performance insight: per-request queries, spans and allocations.
    pub(crate) insight: Arc<crate::insight::Hub>,
    /// The error events' queue and counters.
    pub(crate) errors: Arc<crate::errors::Sink>,
    /// Feature switches: their check counts ship with the batches.
    pub(crate) switches: crate::switches::Switches,
}

impl Shared {
    pub(crate) fn stats(&self) -> AgentStats {
        let c = &self.counters;
        AgentStats {
            requests: self.recorder.requests(),
            windows_sent: c.windows_sent.load(Ordering::Relaxed),
            windows_dropped: c.windows_dropped.load(Ordering::Relaxed),
            windows_queued: c.windows_queued.load(Ordering::Relaxed),
            batches_sent: c.batches_sent.load(Ordering::Relaxed),
            send_failures: c.send_failures.load(Ordering::Relaxed),
            events_sent: self.errors.events_sent(),
            events_dropped: self.errors.events_dropped(),
        }
    }
}

/// Messages from the guard to the agent thread.
pub(crate) enum Control {
    /// Close every window, send what can be sent until `deadline`, then exit,
    /// answering with the final stats if asked to.
    Shutdown {
        deadline: std::time::Instant,
        reply: Option<oneshot::Sender<AgentStats>>,
    },
}

/// Where and how batches are uploaded.
pub(crate) struct Transport {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    pub(crate) auth: String,
    /// When set, batches go out as syslog messages instead of HTTP POSTs.
    pub(crate) syslog: Option<crate::syslog::SyslogSender>,
}

/// How one upload attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 2xx: the collector kept the batch.
    Sent,
    /// Worth retrying: 408/429/5xx, a network error or a timeout.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other status: sending the batch again would fail again.
    Rejected(reqwest::StatusCode),
}

pub(crate) type Upload = Pin<Box<dyn Future<Output = Outcome>>>;

/// The batch being uploaded and the upload.
struct InFlight {
    batch: MetricBatch,
    upload: Upload,
}

/// Exponential backoff with jitter: each delay is drawn from the upper half of
/// `INITIAL_BACKOFF × 2^failures` (capped), so agents restarted together spread out.
#[derive(Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let ceiling = INITIAL_BACKOFF
            .saturating_mul(1 << self.failures.min(16))
            .min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The agent thread's state.
pub(crate) struct Shipper {
    shared: Arc<Shared>,
    transport: Transport,
    agent: AgentInfo,
    capacity: usize,
    /// Batches waiting, oldest first (the one in flight is not in here).
    queue: VecDeque<MetricBatch>,
    backoff: Backoff,
    /// No upload starts before this.
    retry_at: Instant,
    /// The collector failed the last attempt: log again only when that changes.
    failing: bool,
    /// Last refused status, so a misconfigured DSN warns once, not every window.
    last_rejected: Option<reqwest::StatusCode>,
    /// Overflowed requests already reported in the log.
    overflow_logged: u64,
    /// Windows in the batch being uploaded (it is not in `queue`).
    in_flight_windows: usize,
    /// When the live heap is sampled next.
    next_heap_sample: Instant,
}

impl Shipper {
    pub(crate) fn new(
        shared: Arc<Shared>,
        transport: Transport,
        agent: AgentInfo,
        capacity: usize,
    ) -> Shipper {
        Shipper {
            shared,
            transport,
            agent,
            capacity: capacity.max(1),
            queue: VecDeque::new(),
            backoff: Backoff::default(),
            retry_at: Instant::now(),
            failing: false,
            last_rejected: None,
            overflow_logged: 0,
            in_flight_windows: 0,
            next_heap_sample: Instant::now(),
        }
    }

    /// Runs until told to shut down (or until the guard is gone) and the queue is
    /// sent or the shutdown deadline has passed.
    pub(crate) async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut in_flight: Option<InFlight> = None;
        let mut stopping: Option<(Instant, Option<oneshot::Sender<AgentStats>>)> = None;
        loop {
            let now = Instant::now();
            if in_flight.is_none() && !self.queue.is_empty() && now >= self.retry_at {
                in_flight = self.start_upload();
            }
            if let Some((deadline, _)) = &stopping {
                let idle = in_flight.is_none();
                // Done, out of time, or the next retry would come too late anyway.
                if (idle && self.queue.is_empty())
                    || now >= *deadline
                    || (idle && self.retry_at >= *deadline)
                {
                    break;
                }
            }
            let next_close = self.next_close();
            let retry_at = self.retry_at;
            let waiting = in_flight.is_none() && !self.queue.is_empty();
            let deadline = stopping.as_ref().map(|(d, _)| *d);
            tokio::select! {
                biased;
                message = control.recv(), if stopping.is_none() => {
                    let (deadline, reply) = match message {
                        Some(Control::Shutdown { deadline, reply }) => {
                            (Instant::from_std(deadline), reply)
                        }
                        // The guard is gone without a word (it always sends one).
                        None => (now, None),
                    };
                    self.shared.recorder.close();
                    self.shared.insight.close();
                    self.close_windows(None);
                    // One immediate attempt, whatever the backoff said.
                    self.retry_at = now;
                    stopping = Some((deadline, reply));
                }
                outcome = upload_of(&mut in_flight) => {
                    if let Some(done) = in_flight.take() {
                        self.finish_upload(done.batch, outcome);
                    }
                }
                () = sleep_until(next_close), if stopping.is_none() => {
                    let until = (unix_now_ms() - CLOSE_GRACE_MS).div_euclid(1000);
                    self.close_windows(Some(until));
                }
                () = sleep_until(retry_at), if waiting => {}
                () = sleep_until(self.next_heap_sample), if stopping.is_none() => {
                    self.shared.insight.sample_heap();
                    self.next_heap_sample = Instant::now() + HEAP_SAMPLE_EVERY;
                }
                () = sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => {}
            }
        }
        // What could not be sent in time is lost: say so in the stats.
        if let Some(flight) = in_flight.take() {
            self.count_failure();
            self.in_flight_windows = 0;
            self.queue.push_front(flight.batch);
        }
        let lost: usize = self.queue.drain(..).map(|b| b.windows.len()).sum();
        if lost > 0 {
            tracing::warn!(
                windows = lost,
                "sightline agent stopped with unsent windows"
            );
            self.add(&self.shared.counters.windows_dropped, lost);
        }
        self.update_queued();
        if let Some((_, Some(reply))) = stopping {
            // Fails only if the `shutdown` future was dropped: nobody to tell.
            let _ = reply.send(self.shared.stats());
        }
    }

    /// When the currently open window should be closed.
    fn next_close(&self) -> Instant {
        let now_ms = unix_now_ms();
        let w_ms = i64::from(self.shared.recorder.window_secs()) * 1000;
        let close_ms = (now_ms - CLOSE_GRACE_MS).div_euclid(w_ms) * w_ms + w_ms + CLOSE_GRACE_MS;
        let wait = u64::try_from(close_ms - now_ms).unwrap_or(0);
        Instant::now() + Duration::from_millis(wait)
    }

    /// Moves windows ended by `until` (all of them if `None`) into the queue.
    fn close_windows(&mut self, until: Option<i64>) {
        self.shared.recorder.calibrate();
        let mut windows = self.shared.recorder.drain(until);
        let overflowed = self.shared.recorder.overflowed();
        if overflowed > self.overflow_logged {
            let new = overflowed - self.overflow_logged;
            // Warn the first time only: a route explosion persists, and so would the log.
            if self.overflow_logged == 0 {
                tracing::warn!(
                    requests = new,
                    "sightline agent hit its per-window key bound; recording the excess as <overflow>"
                );
            } else {
                tracing::debug!(
                    requests = new,
                    "sightline agent recorded requests as <overflow>"
                );
            }
            self.overflow_logged = overflowed;
        }
        // The insight of the same windows rides along in the first batch.
        let mut insight = self.shared.insight.drain(until);
        while !windows.is_empty() {
            let rest = windows.split_off(windows.len().min(MAX_WINDOWS_PER_BATCH));
            self.enqueue(windows, std::mem::take(&mut insight));
            windows = rest;
        }
        if !insight.is_empty() {
            self.enqueue(Vec::new(), insight);
        }
        // Switch check counts ship even when no request finished.
        let evaluations = self.shared.switches.take_evaluations();
        if !evaluations.is_empty() {
            self.enqueue(Vec::new(), Default::default());
            if let Some(batch) = self.queue.back_mut() {
                batch.switch_evaluations = evaluations;
            }
        }
    }

    fn enqueue(&mut self, windows: Vec<RouteWindow>, insight: sightline_protocol::InsightBatch) {
        self.queue.push_back(MetricBatch {
            agent: self.agent.clone(),
            sent_at_ms: 0,
            dropped_windows: 0,
            windows,
            switch_evaluations: self.shared.switches.take_evaluations(),
            insight,
        });
        self.enforce_capacity();
    }

    /// Drops the oldest batches past the capacity.
    fn enforce_capacity(&mut self) {
        while self.queue.len() > self.capacity {
            if let Some(oldest) = self.queue.pop_front() {
                tracing::debug!(
                    windows = oldest.windows.len(),
                    "sightline agent queue full, dropping the oldest batch"
                );
                self.add(&self.shared.counters.windows_dropped, oldest.windows.len());
            }
        }
        self.update_queued();
    }

    /// Publishes the windows waiting, the one batch in flight included.
    fn update_queued(&self) {
        let queued: usize =
            self.in_flight_windows + self.queue.iter().map(|b| b.windows.len()).sum::<usize>();
        self.shared
            .counters
            .windows_queued
            .store(queued as u64, Ordering::Relaxed);
    }

    fn add(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn count_failure(&self) {
        self.shared
            .counters
            .send_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the oldest batch and starts uploading it.
    fn start_upload(&mut self) -> Option<InFlight> {
        let mut batch = self.queue.pop_front()?;
        batch.sent_at_ms = unix_now_ms();
        batch.dropped_windows = self.shared.counters.windows_dropped.load(Ordering::Relaxed);
        let body = match serde_json::to_vec(&batch) {
            Ok(body) => body,
            Err(error) => {
                // Cannot happen for these types; never retry what cannot be encoded.
                tracing::error!(%error, "sightline agent could not encode a batch");
                self.add(&self.shared.counters.windows_dropped, batch.windows.len());
                self.update_queued();
                return None;
            }
        };
        if let Some(syslog) = &self.transport.syslog {
            let upload = syslog.upload(&batch);
            self.in_flight_windows = batch.windows.len();
            self.update_queued();
            return Some(InFlight { batch, upload });
        }
        let request = self
            .transport
            .client
            .post(&self.transport.url)
            .header("x-sentry-auth", &self.transport.auth)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.in_flight_windows = batch.windows.len();
        self.update_queued();
        Some(InFlight {
            batch,
            upload: Box::pin(async move { outcome(request.send().await).await }),
        })
    }

    fn finish_upload(&mut self, batch: MetricBatch, outcome: Outcome) {
        let windows = batch.windows.len();
        self.in_flight_windows = 0;
        let counters = &self.shared.counters;
        match outcome {
            Outcome::Sent => {
                self.add(&counters.windows_sent, windows);
                self.add(&counters.batches_sent, 1);
                if self.failing {
                    tracing::info!("sightline collector reachable again");
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
                self.count_failure();
                let delay = match retry_after {
                    Some(after) => {
                        self.backoff.next();
                        after.min(MAX_RETRY_AFTER)
                    }
                    None => self.backoff.next(),
                };
                if self.failing {
                    tracing::debug!(%reason, ?delay, "sightline upload failed, will retry");
                } else {
                    tracing::warn!(%reason, ?delay, "sightline upload failed, will retry");
                }
                self.failing = true;
                self.retry_at = Instant::now() + delay;
                // Back at the head of the queue: it is still the oldest.
                self.queue.push_front(batch);
                self.enforce_capacity();
            }
            Outcome::Rejected(status) => {
                self.count_failure();
                self.add(&counters.windows_dropped, windows);
                if self.last_rejected != Some(status) {
                    tracing::warn!(
                        status = status.as_u16(),
                        url = %self.transport.url,
                        "sightline collector refused a batch; dropping it (check the dsn)"
                    );
                }
                self.last_rejected = Some(status);
                self.retry_at = Instant::now();
            }
        }
        self.update_queued();
    }
}

/// Polls the upload in flight; never resolves when there is none.
async fn upload_of(in_flight: &mut Option<InFlight>) -> Outcome {
    match in_flight {
        Some(flight) => flight.upload.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Classifies an upload's response.
pub(crate) async fn outcome(result: Result<reqwest::Response, reqwest::Error>) -> Outcome {
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            return Outcome::Retry {
                reason: error.to_string(),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        // Read the (small) body so the connection can be reused.
        let _ = response.bytes().await;
        return Outcome::Sent;
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        return Outcome::Retry {
            reason: format!("collector answered {status}"),
            retry_after: retry_after(response.headers()),
        };
    }
    Outcome::Rejected(status)
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the collector).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        for (i, d) in delays.iter().enumerate() {
            let ceiling = INITIAL_BACKOFF.saturating_mul(1 << i).min(MAX_BACKOFF);
            assert!(*d >= ceiling / 2 && *d <= ceiling, "{i}: {d:?}");
        }
        b.reset();
        assert!(b.next() <= INITIAL_BACKOFF);
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("3"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
