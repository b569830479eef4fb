//! Feature switches inside the app: [`Switches`] evaluates locally from an in-memory
//! snapshot; the agent thread keeps that snapshot current.
//!
//! The hot path ([`Switches::is_active`]) loads an `Arc<SwitchSet>` through `arc-swap`
//! (no lock, no contention with the updater), looks the key up and evaluates; the check
//! is counted in a per-switch relaxed atomic and the counts ride along in the next
//! metric batch.
//!
//! The agent thread holds `GET /api/0/switches/stream` open (server-sent events: a
//! snapshot, then changes), and when that fails polls `GET /api/0/switches/snapshot`
//! with `If-None-Match` while it reconnects with backoff. Until the first snapshot
//! arrives every switch has the default the app declared (off unless declared
//! otherwise); when the collector goes away the last snapshot stays in force.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde_json::{Value, json};
use sightline_protocol::{EvalContext, Snapshot, Switch, SwitchSet};
use tokio::time::{Instant, sleep, timeout};

/// First reconnect delay; doubled per failed attempt up to [`MAX_BACKOFF`], with jitter.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The collector sends a keep-alive comment every 15 s; silence for this long means the
/// connection is dead even if TCP has not noticed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// One snapshot poll gives up after this long.
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest SSE event accepted: a snapshot of many large switches, bounded.
const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// Sentry shows at most this many flags on an event.
const MAX_FLAGS: usize = 100;

struct Inner {
    /// `None` until the first snapshot arrives.
    current: ArcSwapOption<SwitchSet>,
    /// What the app declared for the time before the first sync (and for keys the
    /// collector does not know).
    defaults: HashMap<String, bool>,
    /// Checks counted in snapshots that have been replaced, not yet shipped.
    retired: Mutex<BTreeMap<String, u64>>,
    /// The stream is open right now.
    connected: AtomicBool,
    /// Host and environment every [`Switches::context`] starts with.
    base: EvalContext,
}

/// The app's handle on its feature switches. Cheap to clone; every clone sees the same
/// snapshot.
#[derive(Clone)]
pub struct Switches {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Switches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switches")
            .field("version", &self.version())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Switches {
    pub(crate) fn new(defaults: HashMap<String, bool>, base: EvalContext) -> Switches {
        Switches {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                defaults,
                retired: Mutex::new(BTreeMap::new()),
                connected: AtomicBool::new(false),
                base,
            }),
        }
    }

    /// A fixed set that never syncs: for the app's own tests, benchmarks and tools.
    pub fn fixed(snapshot: Snapshot) -> Switches {
        let switches = Switches::new(HashMap::new(), EvalContext::default());
        switches.install(snapshot);
        switches
    }

    /// A context with the agent's host and environment filled in; add the user, the
    /// client address and attributes per request.
    pub fn context(&self) -> EvalContext {
        self.inner.base.clone()
    }

    /// Whether switch `key` is on for `ctx`. Before the first sync, or for a key the
    /// collector does not know, the default declared with
    /// [`AgentBuilder::switch_default`](crate::AgentBuilder::switch_default) (off if none).
    pub fn is_active(&self, key: &str, ctx: &EvalContext) -> bool {
        match self.evaluate(key, ctx) {
            Some(active) => active,
            None => self.inner.defaults.get(key).copied().unwrap_or(false),
        }
    }

    /// Like [`is_active`](Switches::is_active), with `default` for an unsynced agent or
    /// an unknown key.
    pub fn is_active_or(&self, key: &str, ctx: &EvalContext, default: bool) -> bool {
        self.evaluate(key, ctx).unwrap_or(default)
    }

    fn evaluate(&self, key: &str, ctx: &EvalContext) -> Option<bool> {
        self.inner.current.load().as_deref()?.is_active(key, ctx)
    }

    /// The switches on for `ctx`, in Sentry's `contexts.flags` shape
    /// (`{"values": [{"flag": "a:b", "result": true}, …]}`), for error events. Does not
    /// count as checks.
    pub fn flags_context(&self, ctx: &EvalContext) -> Value {
        let values: Vec<Value> = match self.inner.current.load().as_deref() {
            Some(set) => set
                .active_keys(ctx)
                .take(MAX_FLAGS)
                .map(|key| json!({"flag": key, "result": true}))
                .collect(),
            None => {
                let mut on: Vec<&String> = self
                    .inner
                    .defaults
                    .iter()
                    .filter(|(_, on)| **on)
                    .map(|(key, _)| key)
                    .collect();
                on.sort();
                on.into_iter()
                    .take(MAX_FLAGS)
                    .map(|key| json!({"flag": key, "result": true}))
                    .collect()
            }
        };
        json!({ "values": values })
    }

    /// The collector's version of the snapshot in force; `None` before the first sync.
    pub fn version(&self) -> Option<u64> {
        self.inner.current.load().as_deref().map(SwitchSet::version)
    }

    /// Whether the live stream to the collector is open.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// The definition of one switch in the snapshot in force.
    pub fn get(&self, key: &str) -> Option<Switch> {
        self.inner.current.load().as_deref()?.get(key).cloned()
    }

    /// Replaces the snapshot; the replaced one's check counts are kept for shipping.
    pub(crate) fn install(&self, snapshot: Snapshot) {
        let old = self
            .inner
            .current
            .swap(Some(Arc::new(SwitchSet::new(snapshot))));
        if let Some(old) = old {
            let counts = old.take_evaluations();
            if !counts.is_empty() {
                let mut retired = self.retired();
                for (key, n) in counts {
                    let total = retired.entry(key).or_insert(0);
                    *total = total.saturating_add(n);
                }
            }
        }
    }

    fn retired(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.inner
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the check counts since the last call, for the next metric batch.
    pub(crate) fn take_evaluations(&self) -> BTreeMap<String, u64> {
        let mut counts = std::mem::take(&mut *self.retired());
        if let Some(set) = self.inner.current.load().as_deref() {
            for (key, n) in set.take_evaluations() {
                let total = counts.entry(key).or_insert(0);
                *total = total.saturating_add(n);
            }
        }
        counts
    }

    fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Relaxed);
    }

    /// Applies a `change` event; `false` when it does not follow the snapshot in force
    /// (a gap: the caller resynchronises).
    fn apply_change(&self, change: ChangeEvent) -> bool {
        let Some(current) = self.inner.current.load_full() else {
            return false;
        };
        if current.version() != change.previous {
            return current.version() >= change.version;
        }
        let mut snapshot = current.snapshot();
        snapshot.switches.retain(|s| s.key != change.switch.key);
        snapshot.switches.push(change.switch);
        snapshot.switches.sort_by(|a, b| a.key.cmp(&b.key));
        snapshot.version = change.version;
        self.install(snapshot);
        true
    }
}

/// `event: change` data.
#[derive(serde::Deserialize)]
struct ChangeEvent {
    version: u64,
    previous: u64,
    switch: Switch,
}

/// Where and how the agent thread fetches switches.
pub(crate) struct SwitchSync {
    pub(crate) switches: Switches,
    /// No overall timeout: the stream stays open for hours.
    pub(crate) client: reqwest::Client,
    pub(crate) stream_url: String,
    pub(crate) snapshot_url: String,
    pub(crate) auth: String,
}

/// Why a stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// Connecting or reading failed.
    Failed(String),
    /// The server closed it (restart, shutdown).
    Closed,
    /// A change did not follow our snapshot: reconnect for a fresh one.
    Gap,
}

impl SwitchSync {
    /// Runs until the agent's runtime is dropped.
    pub(crate) async fn run(self) {
        let mut failures = 0u32;
        loop {
            let (end, received) = self.stream().await;
            self.switches.set_connected(false);
            if received {
                failures = 0;
            }
            match &end {
                StreamEnd::Gap => continue,
                StreamEnd::Closed => tracing::debug!("sightline switch stream closed"),
                StreamEnd::Failed(reason) if failures == 0 => {
                    tracing::debug!(%reason, "sightline switch stream failed");
                }
                StreamEnd::Failed(_) => {}
            }
            // The stream is down: poll once so a change made meanwhile still arrives,
            // then wait before reconnecting.
            self.poll().await;
            let ceiling = INITIAL_BACKOFF
                .saturating_mul(1 << failures.min(8))
                .min(MAX_BACKOFF);
            failures = failures.saturating_add(1);
            sleep(ceiling / 2 + (ceiling / 2).mul_f64(fastrand::f64())).await;
        }
    }

    /// Holds one stream open until it ends; says whether any event arrived.
    async fn stream(&self) -> (StreamEnd, bool) {
        let request = self
            .client
            .get(&self.stream_url)
            .header("x-sentry-auth", &self.auth)
            .header(http::header::ACCEPT, "text/event-stream");
        let mut response = match timeout(IDLE_TIMEOUT, request.send()).await {
            Ok(Ok(response)) if response.status().is_success() => response,
            Ok(Ok(response)) => {
                return (
                    StreamEnd::Failed(format!("collector answered {}", response.status())),
                    false,
                );
            }
            Ok(Err(e)) => return (StreamEnd::Failed(e.to_string()), false),
            Err(_) => return (StreamEnd::Failed("connect timed out".to_owned()), false),
        };
        let mut parser = SseParser::default();
        let mut received = false;
        loop {
            let chunk = match timeout(IDLE_TIMEOUT, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => return (StreamEnd::Closed, received),
                Ok(Err(e)) => return (StreamEnd::Failed(e.to_string()), received),
                Err(_) => return (StreamEnd::Failed("stream idle".to_owned()), received),
            };
            for event in parser.feed(&chunk) {
                let event = match event {
                    Ok(event) => event,
                    Err(reason) => return (StreamEnd::Failed(reason), received),
                };
                match event.name.as_str() {
                    "snapshot" => match serde_json::from_str::<Snapshot>(&event.data) {
                        Ok(snapshot) => {
                            self.switches.install(snapshot);
                            self.switches.set_connected(true);
                            received = true;
                        }
                        Err(e) => return (StreamEnd::Failed(e.to_string()), received),
                    },
                    "change" => match serde_json::from_str::<ChangeEvent>(&event.data) {
                        Ok(change) => {
                            if !self.switches.apply_change(change) {
                                return (StreamEnd::Gap, received);
                            }
                        }
                        Err(e) => return (StreamEnd::Failed(e.to_string()), received),
                    },
                    // Unknown events are for newer agents.
                    _ => {}
                }
            }
        }
    }

    /// Fetches the snapshot unless it is the one in force.
    async fn poll(&self) {
        let mut request = self
            .client
            .get(&self.snapshot_url)
            .header("x-sentry-auth", &self.auth)
            .timeout(POLL_TIMEOUT);
        if let Some(version) = self.switches.version() {
            request = request.header(http::header::IF_NONE_MATCH, format!("\"{version}\""));
        }
        let started = Instant::now();
        match request.send().await {
            Ok(response) if response.status() == reqwest::StatusCode::NOT_MODIFIED => {}
            Ok(response) if response.status().is_success() => match response.bytes().await {
                Ok(body) => match serde_json::from_slice::<Snapshot>(&body) {
                    Ok(snapshot) => self.switches.install(snapshot),
                    Err(e) => tracing::debug!(error = %e, "sightline switch snapshot unreadable"),
                },
                Err(e) => tracing::debug!(error = %e, "sightline switch snapshot poll failed"),
            },
            Ok(response) => {
                tracing::debug!(status = %response.status(), "sightline switch snapshot refused");
            }
            Err(e) => tracing::debug!(
                error = %e,
                elapsed = ?started.elapsed(),
                "sightline switch snapshot poll failed"
            ),
        }
    }
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq, Eq)]
struct SseEvent {
    name: String,
    data: String,
}

/// Incremental `text/event-stream` parser: bytes in, complete events out.
#[derive(Default)]
struct SseParser {
    /// Bytes of the line being received.
    line: Vec<u8>,
    name: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<Result<SseEvent, String>> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                    events.push(Err("switch event too large".to_owned()));
                    return events;
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if self.has_data {
                    events.push(Ok(SseEvent {
                        name: std::mem::take(&mut self.name),
                        data: std::mem::take(&mut self.data),
                    }));
                }
                self.name.clear();
                self.has_data = false;
                continue;
            }
            let Ok(line) = std::str::from_utf8(&line) else {
                events.push(Err("switch stream is not UTF-8".to_owned()));
                return events;
            };
            // `: comment` lines are keep-alives.
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.name = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use sightline_protocol::{Condition, SwitchState};

    use super::*;

    fn switch(key: &str, state: SwitchState) -> Switch {
        Switch {
            key: key.into(),
            label: String::new(),
            description: String::new(),
            owner: String::new(),
            default: false,
            state,
            conditions: vec![],
            exclusions: vec![],
        }
    }

    #[test]
    fn parses_events_across_chunks_and_skips_comments() {
        let mut p = SseParser::default();
        let stream = b": keep-alive\n\nevent: snapshot\r\nid: 3\ndata: {\"a\":\ndata: 1}\n\nevent: change\ndata:x\n\n";
        let mut events = Vec::new();
        for chunk in stream.chunks(5) {
            events.extend(p.feed(chunk));
        }
        let events: Vec<SseEvent> = events.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            events,
            [
                SseEvent {
                    name: "snapshot".into(),
                    data: "{\"a\":\n1}".into()
                },
                SseEvent {
                    name: "change".into(),
                    data: "x".into()
                }
            ]
        );
    }

    #[test]
    fn defaults_hold_until_the_first_snapshot_and_counts_survive_swaps() {
        let switches = Switches::new(
            HashMap::from([("a".to_owned(), true)]),
            EvalContext::default().environment("prod"),
        );
        let ctx = switches.context();
        assert_eq!(ctx.environment.as_deref(), Some("prod"));
        assert!(switches.is_active("a", &ctx));
        assert!(!switches.is_active("b", &ctx));
        assert!(switches.is_active_or("b", &ctx, true));
        assert_eq!(switches.version(), None);
        assert_eq!(
            switches.flags_context(&ctx),
            json!({"values": [{"flag": "a", "result": true}]})
        );

        switches.install(Snapshot {
            version: 1,
            switches: vec![switch("a", SwitchState::Off), switch("b", SwitchState::On)],
        });
        assert!(!switches.is_active("a", &ctx));
        assert!(switches.is_active("b", &ctx));
        assert!(!switches.is_active("unknown", &ctx));
        assert_eq!(
            switches.flags_context(&ctx),
            json!({"values": [{"flag": "b", "result": true}]})
        );
        // A change that follows the snapshot applies; one after a gap does not.
        assert!(switches.apply_change(ChangeEvent {
            version: 2,
            previous: 1,
            switch: switch("a", SwitchState::On),
        }));
        assert!(switches.is_active("a", &ctx));
        assert!(!switches.apply_change(ChangeEvent {
            version: 9,
            previous: 7,
            switch: switch("c", SwitchState::On),
        }));
        assert_eq!(switches.version(), Some(2));
        let counts = switches.take_evaluations();
        assert_eq!(counts.get("a"), Some(&2), "{counts:?}");
        assert_eq!(counts.get("b"), Some(&1));
        assert!(switches.take_evaluations().is_empty());
    }

    #[test]
    fn a_fixed_set_evaluates_selective_switches() {
        let mut beta = switch("beta", SwitchState::Selective);
        beta.conditions.push(Condition::Users {
            ids: vec!["alice".into()],
        });
        let switches = Switches::fixed(Snapshot {
            version: 5,
            switches: vec![beta],
        });
        assert!(switches.is_active("beta", &EvalContext::new().user("alice")));
        assert!(!switches.is_active("beta", &EvalContext::new().user("bob")));
        assert_eq!(
            switches.get("beta").map(|s| s.state),
            Some(SwitchState::Selective)
        );
    }
}
