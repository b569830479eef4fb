//! Errors and panics of the app as Sentry events.
//!
//! What flows through here:
//!
//! 1. On the app's threads, capturing does a bounded amount of work and never waits:
//!    [`capture_error`](crate::Agent::capture_error) walks the error's `source()`
//!    chain and records the raw instruction pointers of the call stack
//!    ([`backtrace::Backtrace::new_unresolved`]); a panic inside a request is caught by
//!    the request layer, whose panic hook ([`panic`]) recorded the stack at panic time.
//!    The request's context (method, route, URL, headers, user, breadcrumbs) is copied
//!    along, and the whole [`Captured`] goes into a bounded channel with `try_send`:
//!    when it is full the event is dropped and counted.
//! 2. On the agent thread, [`transport`] resolves the stack into symbols, builds the
//!    Sentry event ([`event`]), scrubs it with [`sightline_protocol::scrub`] and POSTs
//!    it as an envelope to the collector, with the same retry and backoff rules as the
//!    metric batches.
//!
//! The request-scoped state ([`scope`]) lives in a thread-local for exactly as long
//! as the request layer polls the handler's future, so it is visible to code the
//! handler runs (`set_user`, `capture_error`, tracing events), not to tasks it spawns.

pub(crate) mod breadcrumbs;
pub(crate) mod event;
pub(crate) mod panic;
pub(crate) mod scope;
pub(crate) mod transport;

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::{Agent, AgentBuilder};
pub use breadcrumbs::BreadcrumbsLayer;
pub(crate) use event::{Captured, ExceptionValue, Mechanism};

/// Default bound on events waiting to be sent.
pub(crate) const DEFAULT_EVENT_QUEUE_CAPACITY: usize = 100;

/// Most errors of one `source()` chain reported; a longer chain is cut at its oldest.
const MAX_CHAIN: usize = 16;

/// Longest exception value or message kept, in bytes.
pub(crate) const MAX_TEXT: usize = 8 * 1024;

/// A Sentry event id: a random (version 4) UUID, shown as 32 lowercase hex characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventId(u128);

impl EventId {
    pub(crate) fn new() -> EventId {
        let mut bytes = fastrand::u128(..).to_be_bytes();
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        EventId(u128::from_be_bytes(bytes))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// How severe an event is, as Sentry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
}

impl Level {
    /// `debug`, `info`, `warning`, `error` or `fatal`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }
}

/// Error-reporting settings of the builder.
#[derive(Clone)]
pub(crate) struct ErrorsConfig {
    pub(crate) capture_panics: bool,
    /// Crates whose frames are the app's own; empty means "guess" (see [`event`]).
    pub(crate) in_app_crates: Vec<String>,
    pub(crate) queue_capacity: usize,
}

impl Default for ErrorsConfig {
    fn default() -> Self {
        ErrorsConfig {
            capture_panics: true,
            in_app_crates: Vec::new(),
            queue_capacity: DEFAULT_EVENT_QUEUE_CAPACITY,
        }
    }
}

/// The app-side end of the event queue, shared by the agent's handles, the request
/// layer and the panic hook.
pub(crate) struct Sink {
    tx: mpsc::Sender<Captured>,
    /// The request layer turns panics into 500s and the hook reports panics.
    pub(crate) capture_panics: bool,
    pub(crate) sent: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl Sink {
    pub(crate) fn new(
        capture_panics: bool,
        capacity: usize,
    ) -> (Arc<Sink>, mpsc::Receiver<Captured>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sink = Arc::new(Sink {
            tx,
            capture_panics,
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        (sink, rx)
    }

    /// Queues an event for the agent thread without waiting; a full queue or a
    /// stopped agent drops it and counts it.
    pub(crate) fn submit(&self, captured: Captured) {
        if self.tx.try_send(captured).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn events_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(crate) fn events_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Builds an agent's event queue: the app-side [`Sink`] and the agent thread's
/// [`transport::EventShipper`].
pub(crate) fn prepare(
    config: &ErrorsConfig,
    dsn: &sightline_protocol::Dsn,
    client: reqwest::Client,
    agent: &sightline_protocol::AgentInfo,
    sdk: &str,
) -> (Arc<Sink>, transport::EventShipper) {
    let (sink, rx) = Sink::new(config.capture_panics, config.queue_capacity);
    let target = transport::EnvelopeTarget {
        client,
        url: dsn.envelope_url(),
        auth: dsn.auth_header(sdk),
        dsn: dsn.to_string(),
    };
    let defaults = event::EventDefaults {
        release: agent.release.clone(),
        environment: agent.environment.clone(),
        server_name: crate::agent::hostname(),
        service: agent.service.clone(),
        in_app_crates: config.in_app_crates.clone(),
    };
    let shipper =
        transport::EventShipper::new(sink.clone(), rx, target, defaults, config.queue_capacity);
    (sink, shipper)
}

/// Called once the agent thread runs: from now on the agent catches panics (if
/// asked to) and serves captures made outside its requests.
pub(crate) fn activate(sink: &Arc<Sink>) {
    if sink.capture_panics {
        panic::install();
    }
    register(sink);
}

/// Agents started in this process, for captures outside any request (the free
/// functions, and panics on threads the request layer does not cover).
static SINKS: Mutex<Vec<Weak<Sink>>> = Mutex::new(Vec::new());

fn sinks() -> std::sync::MutexGuard<'static, Vec<Weak<Sink>>> {
    SINKS.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn register(sink: &Arc<Sink>) {
    let mut sinks = sinks();
    sinks.retain(|s| s.strong_count() > 0);
    sinks.push(Arc::downgrade(sink));
}

/// The most recently started agent that is still alive (and, if `panics`, that
/// captures panics).
pub(crate) fn latest_sink(panics: bool) -> Option<Arc<Sink>> {
    sinks()
        .iter()
        .rev()
        .filter_map(Weak::upgrade)
        .find(|s| !panics || s.capture_panics)
}

/// The sink of the current request, else the latest agent's.
fn current_sink() -> Option<Arc<Sink>> {
    scope::sink().or_else(|| latest_sink(false))
}

/// The `source()` chain of `error`, oldest (root cause) first, as Sentry orders
/// exception values.
pub(crate) fn exception_chain<E: Error + ?Sized>(error: &E) -> Vec<ExceptionValue> {
    let mut chain = vec![ExceptionValue {
        ty: type_from_debug(error),
        value: clip(error.to_string(), MAX_TEXT),
    }];
    let mut next = error.source();
    while let Some(err) = next {
        if chain.len() == MAX_CHAIN {
            break;
        }
        chain.push(ExceptionValue {
            ty: type_from_debug(err),
            value: clip(err.to_string(), MAX_TEXT),
        });
        next = err.source();
    }
    chain.reverse();
    chain
}

/// A type name for an error known only by its traits: the first word of its `Debug`
/// output, which derived `Debug` makes the type or variant name
/// (`ParseIntError { kind: InvalidDigit }` → `ParseIntError`), as sentry-rust does.
fn type_from_debug<E: fmt::Debug + ?Sized>(err: &E) -> String {
    /// Keeps the first bytes written and then refuses more, so that a huge `Debug`
    /// output costs no more than its start.
    struct Head(String);
    impl fmt::Write for Head {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = 128usize.saturating_sub(self.0.len());
            let mut end = s.len().min(room);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.0.push_str(&s[..end]);
            if end < s.len() {
                Err(fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut head = Head(String::new());
    // An error only means the output was longer than what is kept.
    let _ = fmt::Write::write_fmt(&mut head, format_args!("{err:?}"));
    let word: String = head
        .0
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    match word.rsplit("::").next() {
        Some(w) if !w.is_empty() => w.to_owned(),
        _ => "Error".to_owned(),
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary, marking the cut.
pub(crate) fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Builds the event for an error on the calling thread (within bounded work: the
/// stack is walked but not symbolicated) and queues it.
fn capture_error_into<E: Error + ?Sized>(sink: &Sink, error: &E) -> EventId {
    let exceptions = exception_chain(error);
    let captured = Captured::new(Level::Error)
        .exceptions(exceptions, Mechanism::generic())
        .backtrace(backtrace::Backtrace::new_unresolved())
        .with_context();
    let id = captured.event_id;
    sink.submit(captured);
    id
}

fn capture_message_into(sink: &Sink, message: &str, level: Level) -> EventId {
    let mut captured = Captured::new(level).with_context();
    captured.message = Some(clip(message.to_owned(), MAX_TEXT));
    let id = captured.event_id;
    sink.submit(captured);
    id
}

/// Reports a panic the request layer caught in its handler and builds the `500` it
/// answers with.
pub(crate) fn panicked<R: Default>(
    scope: Option<Box<scope::RequestScope>>,
    payload: Box<dyn Any + Send>,
) -> http::Response<R> {
    let message = clip(panic::message_of(&*payload), MAX_TEXT);
    if let Some(scope) = scope {
        // The stack at panic time, recorded by the hook; without the hook (another
        // hook replaced it) the event has no stack trace.
        let backtrace = panic::take_capture(&message);
        let mut captured = Captured::new(Level::Error)
            .exceptions(vec![panic::panic_exception(message)], Mechanism::panic())
            .with_scope(&scope);
        captured.backtrace = backtrace;
        scope.sink.submit(captured);
    }
    // Dropping a payload can itself panic (its `Drop` may); that one is forgotten.
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
    let mut response = http::Response::new(R::default());
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

impl Agent {
    /// Reports `error` to the collector as a Sentry event and returns its id.
    ///
    /// The event holds the whole `source()` chain (root cause first, as Sentry
    /// orders it), the stack of the call site, and — when called while a request
    /// passes through this agent's layer — the request, its route, the user set with
    /// [`set_user`](crate::set_user) and the request's breadcrumbs.
    ///
    /// It never blocks and never fails: the stack is symbolicated later on the agent
    /// thread; when the event queue is full the event is dropped and counted in
    /// [`AgentStats::events_dropped`](crate::AgentStats::events_dropped).
    pub fn capture_error<E: Error + ?Sized>(&self, error: &E) -> EventId {
        capture_error_into(&self.shared.errors, error)
    }

    /// Reports a message at `level`, with the current request's context.
    pub fn capture_message(&self, message: &str, level: Level) -> EventId {
        capture_message_into(&self.shared.errors, message, level)
    }

    /// A [`tracing_subscriber::Layer`] that keeps the last
    /// [`BREADCRUMBS`](crate::BREADCRUMBS) tracing events (info and above by
    /// default) per request — or per thread outside requests — and attaches them to
    /// events as breadcrumbs.
    ///
    /// ```no_run
    /// # fn f(agent: &sightline_agent::Agent) {
    /// use tracing_subscriber::layer::SubscriberExt;
    /// let subscriber = tracing_subscriber::registry().with(agent.breadcrumbs_layer());
    /// # }
    /// ```
    pub fn breadcrumbs_layer(&self) -> BreadcrumbsLayer {
        BreadcrumbsLayer::new()
    }
}

/// Reports `error` through the agent of the current request (or, outside one, the
/// most recently started agent); `None` when no agent is running.
///
/// Handlers use it without holding an [`Agent`]: `sightline_agent::capture_error(&e)`.
/// See [`Agent::capture_error`].
pub fn capture_error<E: Error + ?Sized>(error: &E) -> Option<EventId> {
    current_sink().map(|sink| capture_error_into(&sink, error))
}

/// The breadcrumbs layer, for a subscriber set up before the agent starts; the
/// same as [`Agent::breadcrumbs_layer`].
pub fn breadcrumbs_layer() -> BreadcrumbsLayer {
    BreadcrumbsLayer::new()
}

/// Reports a message through the agent of the current request (or the most recently
/// started agent); `None` when no agent is running.
pub fn capture_message(message: &str, level: Level) -> Option<EventId> {
    current_sink().map(|sink| capture_message_into(&sink, message, level))
}

/// Sets the id of the user the current request acts for; events captured later in
/// the same request carry it as `user.id`. Outside a request (or in a task the
/// handler spawned) it does nothing and returns `false`.
pub fn set_user(id: impl Into<String>) -> bool {
    scope::set_user(id.into())
}

impl AgentBuilder {
    /// Whether the agent catches panics (default `true`).
    ///
    /// When on, [`start`](AgentBuilder::start) installs a process-wide panic hook
    /// once (it calls the hook that was installed before it, so the default message
    /// still prints), the request layer turns a panicking handler into a `500` and a
    /// Sentry event with the stack at panic time, and panics outside requests are
    /// reported too. A hook the app installs later replaces it: install yours first.
    /// With `panic = "abort"` nothing can be caught or sent.
    pub fn capture_panics(mut self, on: bool) -> Self {
        self.errors.capture_panics = on;
        self
    }

    /// The crates whose stack frames are the app's own (`in_app` in Sentry), e.g.
    /// `["my_app"]`. Without it, frames outside the standard library and the common
    /// runtime, web and agent crates count as the app's.
    pub fn in_app_crates<I, S>(mut self, crates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.errors.in_app_crates = crates
            .into_iter()
            .map(|c| c.into().replace('-', "_"))
            .collect();
        self
    }

    /// How many events may wait for the collector (default 100); past it the oldest
    /// is dropped and counted.
    pub fn event_queue_capacity(mut self, events: usize) -> Self {
        self.errors.queue_capacity = events;
        self
    }
}

/// `SystemTime` as RFC 3339 in UTC with milliseconds: `2024-05-01T12:34:56.789Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn event_ids_are_v4_uuids() {
        let a = EventId::new().to_string();
        assert_eq!(a.len(), 32);
        assert_eq!(&a[12..13], "4");
        assert!(matches!(&a[16..17], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, EventId::new().to_string());
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |s: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loading the thread failed")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_chain_is_oldest_first_with_types() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "x.db missing");
        let err = Outer(inner);
        let chain = exception_chain(&err);
        let got: Vec<(&str, &str)> = chain
            .iter()
            .map(|e| (e.ty.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Custom", "x.db missing"),
                ("Outer", "loading the thread failed")
            ]
        );
        // Known only as `dyn Error`, the same.
        let dynamic: &dyn Error = &err;
        assert_eq!(exception_chain(dynamic), chain);
        let long = std::io::Error::other("x".repeat(10_000));
        assert_eq!(exception_chain(&long)[0].ty, "Custom");
    }

    #[test]
    fn text_is_clipped_at_a_char_boundary() {
        assert_eq!(clip("éé".to_owned(), 3), "é…");
        assert_eq!(clip("ok".to_owned(), 3), "ok");
    }
}
