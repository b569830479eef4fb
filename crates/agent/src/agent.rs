//! Starting and stopping the agent: [`Agent`], its builder and its guard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightline_protocol::{AgentInfo, Dsn, EvalContext, MAX_LABEL_LEN};
use tokio::sync::{mpsc, oneshot};

use crate::aggregate::{DEFAULT_MAX_KEYS, Recorder};
use crate::ship::{Control, Counters, Shared, Shipper, Transport};
use crate::switches::{SwitchSync, Switches};
use crate::{AgentError, RequestLayer};

/// The `sdk` the agent reports as, and the client in its auth header.
const SDK: &str = concat!("sightline-agent/", env!("CARGO_PKG_VERSION"));

/// Default window length.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// Default queue capacity, in batches (one batch per closed window).
const DEFAULT_QUEUE_CAPACITY: usize = 64;

/// Connecting to the collector gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One upload (connect, send, response) gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the agent thread keeps trying to flush after the guard is dropped
/// without [`AgentGuard::shutdown`].
const DROP_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters describing what the agent has done since it started.
///
/// Every window the agent produced is in exactly one of `windows_sent`,
/// `windows_dropped` and `windows_queued`. A "window" here is one
/// route × method × status class × time window, i.e. one `RouteWindow`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Requests recorded.
    pub requests: u64,
    /// Windows the collector accepted.
    pub windows_sent: u64,
    /// Windows lost: the queue overflowed, the collector refused them (4xx), or they
    /// were still unsent when the agent stopped.
    pub windows_dropped: u64,
    /// Windows closed and waiting to be sent (including the batch in flight).
    pub windows_queued: u64,
    /// Batches the collector accepted.
    pub batches_sent: u64,
    /// Upload attempts that did not succeed (network errors, timeouts, non-2xx).
    pub send_failures: u64,
    /// Error events (panics, `capture_error`, `capture_message`) the collector
    /// accepted.
    pub events_sent: u64,
    /// Error events lost: the event queue was full, the collector refused them
    /// (4xx), or they were still unsent when the agent stopped. Events captured and
    /// neither sent nor dropped are waiting in the queue.
    pub events_dropped: u64,
}

/// A handle to a running agent: hands out the request layer and reads the stats.
/// Cloning it is cheap.
#[derive(Clone)]
pub struct Agent {
    pub(crate) shared: Arc<Shared>,
}

impl Agent {
    /// Starts configuring an agent that reports to `dsn`
    /// (`http://<public_key>@<host>:<port>/<project_id>`).
    pub fn builder(dsn: &str) -> Result<AgentBuilder, AgentError> {
        Ok(AgentBuilder {
            dsn: dsn.parse()?,
            service: "app".to_owned(),
            environment: None,
            release: None,
            window: DEFAULT_WINDOW,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_keys: DEFAULT_MAX_KEYS,
            switch_defaults: HashMap::new(),
            insight: Default::default(),
            errors: Default::default(),
            syslog: None,
        })
    }

    /// The tower layer that measures requests; add it with `Router::layer`.
    pub fn layer(&self) -> RequestLayer {
        RequestLayer::new(self.shared.recorder.clone())
            .with_insight(self.shared.insight.clone())
            .with_errors(self.shared.errors.clone())
    }

    /// The agent's counters right now.
    pub fn stats(&self) -> AgentStats {
        self.shared.stats()
    }

    /// The app's feature switches, evaluated locally and kept current by the agent thread.
    pub fn switches(&self) -> Switches {
        self.shared.switches.clone()
    }
}

/// Configures and starts an [`Agent`].
pub struct AgentBuilder {
    dsn: Dsn,
    service: String,
    environment: Option<String>,
    release: Option<String>,
    window: Duration,
    queue_capacity: usize,
    max_keys: usize,
    /// Feature-switch values before the first sync.
    switch_defaults: HashMap<String, bool>,
    /// Performance-insight settings (setters in `insight::config`).
    pub(crate) insight: crate::insight::InsightConfig,
    /// Error-event settings (setters in `errors`).
    pub(crate) errors: crate::errors::ErrorsConfig,
    /// Ship over syslog instead of HTTP (setters in `syslog`).
    pub(crate) syslog: Option<crate::syslog::SyslogSettings>,
}

impl AgentBuilder {
    /// The service name the collector shows (default `app`).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }

    /// The deployment environment, e.g. `production`.
    pub fn environment(mut self, env: impl Into<String>) -> Self {
        self.environment = Some(env.into());
        self
    }

    /// The app's release or version.
    pub fn release(mut self, r: impl Into<String>) -> Self {
        self.release = Some(r.into());
        self
    }

    /// Length of an aggregation window: whole seconds from 1 s to one day
    /// (default 10 s). Windows are aligned to multiples of it since the unix epoch.
    pub fn window(mut self, d: Duration) -> Self {
        self.window = d;
        self
    }

    /// Declares the value of feature switch `key` for the time before the agent first
    /// synced with the collector, and for a key the collector does not know (default
    /// off).
    pub fn switch_default(mut self, key: impl Into<String>, on: bool) -> Self {
        self.switch_defaults.insert(key.into(), on);
        self
    }

    /// How many closed batches may wait while the collector is unreachable
    /// (default 64; one batch per window). Past it the oldest is dropped and counted.
    pub fn queue_capacity(mut self, batches: usize) -> Self {
        self.queue_capacity = batches;
        self
    }

    /// Starts the agent thread. Keep the returned [`AgentGuard`] alive for as long as
    /// the app runs (not `let _ = …`, which drops it and stops the agent at once).
    pub fn start(self) -> Result<(Agent, AgentGuard), AgentError> {
        if self.window.subsec_nanos() != 0
            || self.window.is_zero()
            || self.window > Duration::from_secs(86_400)
        {
            return Err(AgentError::Config(
                "window must be whole seconds from 1 to 86400",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(AgentError::Config("queue capacity must be at least 1"));
        }
        if self.service.trim().is_empty() {
            return Err(AgentError::Config("service name must not be empty"));
        }
        if self.errors.queue_capacity == 0 {
            return Err(AgentError::Config(
                "event queue capacity must be at least 1",
            ));
        }
        let window_secs = u32::try_from(self.window.as_secs()).unwrap_or(86_400);
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect means a wrong DSN; following it would turn the POST into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(SDK)
            .build()
            .map_err(|e| AgentError::Client(Box::new(e)))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // The blocking pool only runs DNS lookups for the uploads.
            .max_blocking_threads(1)
            .thread_name("sightline-agent-dns")
            .build()
            .map_err(AgentError::Runtime)?;
        let switches = Switches::new(
            self.switch_defaults,
            EvalContext {
                host: Some(hostname()),
                environment: self.environment.clone(),
                ..EvalContext::default()
            },
        );
        let switch_sync = SwitchSync {
            switches: switches.clone(),
            // No overall timeout: the switch stream stays open for hours.
            client: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(SDK)
                .build()
                .map_err(|e| AgentError::Client(Box::new(e)))?,
            stream_url: format!("{}/api/0/switches/stream", self.dsn.base_url()),
            snapshot_url: format!("{}/api/0/switches/snapshot", self.dsn.base_url()),
            auth: self.dsn.auth_header(SDK),
        };
        let agent_info = AgentInfo {
            service: clip(self.service),
            instance: clip(instance_id()),
            sdk: SDK.to_owned(),
            environment: self.environment.map(clip),
            release: self.release.map(clip),
        };
        let (errors, events) =
            crate::errors::prepare(&self.errors, &self.dsn, client.clone(), &agent_info, SDK);
        let transport = Transport {
            syslog: self.syslog.map(|settings| {
                crate::syslog::SyslogSender::new(
                    settings,
                    &self.dsn,
                    &agent_info.service,
                    &hostname(),
                )
            }),
            client,
            url: self.dsn.metrics_url(),
            auth: self.dsn.auth_header(SDK),
        };
        let events = events.with_syslog(transport.syslog.clone());
        let recorder = Arc::new(Recorder::new(window_secs, self.max_keys));
        let shared = Arc::new(Shared {
            insight: Arc::new(crate::insight::Hub::new(recorder.clone(), self.insight)),
            recorder,
            counters: Counters::default(),
            errors,
            switches,
        });
        let shipper = Shipper::new(shared.clone(), transport, agent_info, self.queue_capacity);
        let (control, control_rx) = mpsc::unbounded_channel();
        // The runtime travels through a slot so that, should the spawn fail, it is not
        // dropped with the closure here: dropping a runtime inside the app's async
        // context (`start` is often called from `#[tokio::main]`) panics.
        let slot = Arc::new(Mutex::new(Some(runtime)));
        let thread_slot = slot.clone();
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("sightline-agent".to_owned())
            .spawn(move || {
                let runtime = thread_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(runtime) = runtime {
                    // A second task on the same thread; it ends when the runtime drops.
                    runtime.spawn(switch_sync.run());
                    runtime.block_on(crate::errors::transport::run_agent_thread(
                        shipper,
                        events,
                        control_rx,
                        thread_shared,
                    ));
                }
            });
        if let Err(error) = spawned {
            if let Some(runtime) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                runtime.shutdown_background();
            }
            return Err(AgentError::Spawn(error));
        }
        crate::errors::activate(&shared.errors);
        tracing::debug!(url = %self.dsn.metrics_url(), window_secs, "sightline agent started");
        Ok((
            Agent {
                shared: shared.clone(),
            },
            AgentGuard {
                control: Some(control),
                shared,
            },
        ))
    }

    #[cfg(test)]
    pub(crate) fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }
}

/// Keeps the agent running. [`shutdown`](AgentGuard::shutdown) flushes and waits;
/// dropping the guard tells the agent thread to flush and exit without waiting for it.
#[must_use = "dropping the guard stops the agent"]
pub struct AgentGuard {
    control: Option<mpsc::UnboundedSender<Control>>,
    shared: Arc<Shared>,
}

impl AgentGuard {
    /// Stops recording, closes the open windows and tries to send everything queued,
    /// for at most `timeout`; returns the final stats, in which whatever could not be
    /// sent in time counts as dropped.
    ///
    /// It never blocks the calling thread: it awaits an answer from the agent thread,
    /// which enforces the deadline itself, so this works on any executor.
    pub async fn shutdown(mut self, timeout: Duration) -> AgentStats {
        let Some(control) = self.control.take() else {
            return self.shared.stats();
        };
        let (reply, answer) = oneshot::channel();
        let deadline = std::time::Instant::now() + timeout;
        if control
            .send(Control::Shutdown {
                deadline,
                reply: Some(reply),
            })
            .is_err()
        {
            // The agent thread is gone already.
            return self.shared.stats();
        }
        // The agent thread answers by the deadline, or drops `reply` if it dies.
        answer.await.unwrap_or_else(|_| self.shared.stats())
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        if let Some(control) = self.control.take() {
            // An unbounded send never blocks; if the thread is gone there is nothing
            // left to stop.
            let _ = control.send(Control::Shutdown {
                deadline: std::time::Instant::now() + DROP_FLUSH_TIMEOUT,
                reply: None,
            });
        }
    }
}

/// Cuts a label to what the collector accepts, at a character boundary.
fn clip(mut s: String) -> String {
    if s.len() > MAX_LABEL_LEN {
        let mut end = MAX_LABEL_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `host-pid-random`: unique per process, readable in the dashboard.
fn instance_id() -> String {
    format!(
        "{}-{}-{:08x}",
        hostname(),
        std::process::id(),
        fastrand::u32(..)
    )
}

/// This machine's name, as events report it in `server_name`.
pub(crate) fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_settings() {
        assert!(matches!(
            Agent::builder("not a dsn"),
            Err(AgentError::Dsn(_))
        ));
        let b = || Agent::builder("http://key@127.0.0.1:9/1").expect("valid dsn");
        for window in [
            Duration::ZERO,
            Duration::from_millis(1_500),
            Duration::from_secs(86_401),
        ] {
            assert!(matches!(
                b().window(window).start(),
                Err(AgentError::Config(_))
            ));
        }
        assert!(matches!(
            b().queue_capacity(0).start(),
            Err(AgentError::Config(_))
        ));
        assert!(matches!(
            b().service(" ").start(),
            Err(AgentError::Config(_))
        ));
    }

    #[test]
    fn labels_are_clipped_and_instances_unique() {
        assert_eq!(clip("é".repeat(300)).len(), MAX_LABEL_LEN);
        assert_ne!(instance_id(), instance_id());
        assert!(instance_id().contains(&std::process::id().to_string()));
    }

    #[test]
    fn the_agent_thread_is_named_and_stops_recording_after_drop() {
        let (agent, guard) = Agent::builder("http://key@127.0.0.1:9/1")
            .expect("valid dsn")
            .max_keys(10)
            .start()
            .expect("starts");
        // Linux shows thread names; a new thread names itself shortly after it starts.
        let thread_names = || -> Option<Vec<String>> {
            let tasks = std::fs::read_dir("/proc/self/task").ok()?;
            Some(
                tasks
                    .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                    .map(|n| n.trim().to_owned())
                    .collect(),
            )
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Some(names) = thread_names() {
            if names.iter().any(|n| n == "sightline-agent") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{names:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(guard);
        let recorder = &agent.shared.recorder;
        let get = crate::aggregate::MethodLabel::of(&http::Method::GET);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let before = recorder.requests();
            recorder.record("/a", get, 2, 1, 0);
            if recorder.requests() == before {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still recording");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
