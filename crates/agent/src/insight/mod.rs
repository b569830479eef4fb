//! Performance insight: what each request did inside — queries, spans, allocations — and
//! what that adds up to per route and per statement shape.
//!
//! The request layer opens a [`RequestCtx`] per request and makes it *current* while the
//! request's future is polled (a thread-local, set and restored around every poll, so it
//! follows the request across `.await` points and worker threads) and enters a
//! `sightline_agent::request` tracing span, which database drivers such as sqlx carry to
//! their own threads. The tracing layer ([`crate::tracing_layer`]) and
//! [`record_query`](crate::record_query) add queries and spans to the current request; the
//! poll wrapper adds the allocations the [`CountingAllocator`](crate::CountingAllocator)
//! counted on this thread during the poll.
//!
//! When the request finishes, its route figures (query count and time, allocations) go
//! into the [`Recorder`]'s window beside its latency, under the same shard lock and route
//! lookup; the statements it ran and its N+1 flags go into the [`Hub`]'s mutex shards
//! (only for requests that ran queries), and — for slow, erroring, N+1 or sampled
//! requests — an exemplar with the whole waterfall into the hub's queue.

mod config;
mod exemplar;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use sightline_protocol::{
    EntryKind, Exemplar, HeapSample, Histogram, InsightBatch, NPlusOne, QueryWindow, RouteInsight,
};

use crate::aggregate::{
    MethodLabel, Recorder, TakenInsight, Tally, UNMATCHED, status_class, unix_now_ms, window_start,
};
use crate::{alloc, sql};

pub(crate) use config::InsightConfig;

/// Target of the span the request layer enters while polling a request.
pub(crate) const REQUEST_TARGET: &str = "sightline_agent::request";

/// Distinct fingerprints kept per window; the rest are not aggregated (still counted per
/// request).
const MAX_FINGERPRINTS: usize = 2_000;
/// Distinct route × method × fingerprint N+1 flags per window.
const MAX_ROUTES: usize = 2_000;
/// Distinct fingerprints tracked per request for N+1 detection.
const MAX_REQUEST_FINGERPRINTS: usize = 256;
/// Heap samples kept between uploads.
const MAX_HEAP_SAMPLES: usize = 10_000;
/// Normalised statements cached per thread.
const CACHE_ENTRIES: usize = 1_024;

/// Keys that are hashes already (fingerprints, statement hashes) need no SipHash.
#[derive(Default, Clone, Copy)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashedMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<PassThrough>>;

/// A normalised statement: its fingerprint and text.
#[derive(Clone, Debug)]
pub(crate) struct Normalized {
    pub(crate) fingerprint: u64,
    pub(crate) sql: Arc<str>,
}

thread_local! {
    /// The request whose future this thread is polling.
    static CURRENT: Cell<Option<InFlight>> = const { Cell::new(None) };
    /// Raw statement hash → normalised statement. Drivers send the same few statement
    /// strings over and over; normalising is done once per thread and statement.
    static CACHE: RefCell<HashedMap<Normalized>> = RefCell::new(HashedMap::default());
}

/// Takes the request being polled on this thread out of its slot, shared.
fn take_current() -> Option<Arc<RequestCtx>> {
    CURRENT
        .try_with(Cell::take)
        .ok()
        .flatten()
        .map(InFlight::into_shared)
}

/// The request being polled on this thread, if any.
pub(crate) fn current() -> Option<Arc<RequestCtx>> {
    let ctx = take_current()?;
    let copy = ctx.clone();
    let _ = CURRENT.try_with(|cell| cell.set(Some(InFlight::Shared(ctx))));
    Some(copy)
}

/// Runs `f` with the request being polled on this thread, without touching its reference
/// count (the per-event path of the tracing layer). While `f` runs, nothing is current.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&RequestCtx>) -> R) -> R {
    /// Puts the request back even if `f` unwinds.
    struct Restore(Option<Arc<RequestCtx>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(ctx) = self.0.take() {
                let _ = CURRENT.try_with(|cell| cell.set(Some(InFlight::Shared(ctx))));
            }
        }
    }
    let taken = Restore(take_current());
    f(taken.0.as_deref())
}

/// Makes `ctx` current until dropped, then restores what was current before.
struct Current {
    previous: Option<InFlight>,
}

impl Current {
    fn set(ctx: &Arc<RequestCtx>) -> Current {
        let previous = CURRENT
            .try_with(|cell| cell.replace(Some(InFlight::Shared(ctx.clone()))))
            .ok()
            .flatten();
        Current { previous }
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // During thread teardown the slot is gone; nothing to restore then.
        let _ = CURRENT.try_with(|cell| cell.set(previous));
    }
}

/// A fast non-cryptographic hash of the raw statement, 16 bytes at a time in two
/// independent lanes: only a cache key, never shipped.
fn quick_hash(text: &str) -> u64 {
    const M: u64 = 0x0100_0000_01b3_0001;
    let word = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        u64::from_le_bytes(word)
    };
    let bytes = text.as_bytes();
    let (mut a, mut b) = (
        0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64,
        0x2545_f491_4f6c_dd1d,
    );
    let mut pairs = bytes.chunks_exact(16);
    for pair in &mut pairs {
        a = (a ^ word(&pair[..8])).wrapping_mul(M).rotate_left(29);
        b = (b ^ word(&pair[8..])).wrapping_mul(M).rotate_left(31);
    }
    let mut rest = pairs.remainder().chunks_exact(8);
    for chunk in &mut rest {
        a = (a ^ word(chunk)).wrapping_mul(M).rotate_left(29);
    }
    for &byte in rest.remainder() {
        b = (b ^ u64::from(byte)).wrapping_mul(M);
    }
    let h = a ^ b.rotate_left(17).wrapping_mul(M);
    h ^ (h >> 31)
}

/// Normalises `raw` and remembers it under `key` in this thread's cache.
fn normalize_into_cache(raw: &str, key: u64) -> Normalized {
    let text = sql::normalize(raw);
    let entry = Normalized {
        fingerprint: sql::fnv1a(text.as_bytes()),
        sql: Arc::from(text),
    };
    let _ = CACHE.try_with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(key, entry.clone());
        }
    });
    entry
}

/// Normalises `raw`, from this thread's cache when it has been seen before.
pub(crate) fn normalized(raw: &str) -> Normalized {
    let key = quick_hash(raw);
    let cached = CACHE
        .try_with(|cache| cache.try_borrow().ok()?.get(&key).cloned())
        .ok()
        .flatten();
    match cached {
        Some(hit) => hit,
        None => normalize_into_cache(raw, key),
    }
}

/// Records a query that the current request ran (for drivers that do not emit sqlx's
/// tracing events). `sql` is normalised; `duration` is how long it took, ending now.
/// Outside a request (no instrumented request is being polled on this thread) it does
/// nothing.
pub fn record_query(sql: &str, duration: Duration) {
    with_current(|ctx| {
        if let Some(ctx) = ctx {
            ctx.record_query(&normalized(sql), Instant::now(), duration);
        }
    });
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Name of an exemplar entry.
#[derive(Clone, Debug)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
    /// The statement of `Trace::by_fingerprint[i]` (no reference count per query).
    Statement(u32),
}

#[derive(Clone, Debug)]
struct RawEntry {
    kind: EntryKind,
    name: Name,
    fingerprint: Option<u64>,
    /// When it started; the offset from the request's start is worked out only if the
    /// request becomes an exemplar.
    start: Instant,
    duration_us: u64,
}

/// One statement shape within a request: how often it ran and how long each run took.
/// Folded into the hub's per-fingerprint statistics once, when the request ends, so a
/// query event costs no shard lock and no `BTreeMap` insert.
#[derive(Debug)]
struct FpStats {
    fingerprint: u64,
    sql: Arc<str>,
    latency: Tally,
}

impl FpStats {
    fn new(q: &Normalized) -> FpStats {
        FpStats {
            fingerprint: q.fingerprint,
            sql: q.sql.clone(),
            latency: Tally::default(),
        }
    }

    /// How many times the statement ran.
    fn count(&self) -> u64 {
        self.latency.count
    }
}

/// What one request did so far.
#[derive(Default, Debug)]
struct Trace {
    finished: bool,
    queries: u64,
    query_us: u64,
    by_fingerprint: Vec<FpStats>,
    /// Index in `by_fingerprint` of the last statement run: N+1 loops repeat it.
    last_fingerprint: usize,
    entries: Vec<RawEntry>,
    dropped: u64,
}

/// One request in flight.
pub(crate) struct RequestCtx {
    head: Head,
    allocs: AtomicU64,
    alloc_bytes: AtomicU64,
    trace: Mutex<Trace>,
}

/// What a request is, fixed when it starts.
struct Head {
    hub: Arc<Hub>,
    start: Instant,
    route: Option<MatchedPath>,
    method: MethodLabel,
    sampled: bool,
}

/// A request in flight, as the thread polling it holds it.
enum InFlight {
    /// Nothing has asked for the request from elsewhere yet (no query, no span): it
    /// stays inline in the response future, with no allocation and no atomics.
    Own {
        head: Head,
        allocs: u64,
        alloc_bytes: u64,
    },
    /// Shared with spans, other threads and the tracing layer.
    Shared(Arc<RequestCtx>),
}

impl InFlight {
    fn into_shared(self) -> Arc<RequestCtx> {
        match self {
            InFlight::Own {
                head,
                allocs,
                alloc_bytes,
            } => Arc::new(RequestCtx {
                head,
                allocs: AtomicU64::new(allocs),
                alloc_bytes: AtomicU64::new(alloc_bytes),
                trace: Mutex::new(Trace::default()),
            }),
            InFlight::Shared(ctx) => ctx,
        }
    }
}

impl Head {
    fn route(&self) -> &str {
        self.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str)
    }
}

impl RequestCtx {
    fn push(&self, trace: &mut Trace, entry: RawEntry) {
        if trace.entries.len() < self.head.hub.config.max_entries {
            trace.entries.push(entry);
        } else {
            trace.dropped += 1;
        }
    }

    /// A query that ended at `end` after running for `duration`.
    pub(crate) fn record_query(&self, q: &Normalized, end: Instant, duration: Duration) {
        let duration_us = micros(duration);
        let mut trace = lock(&self.trace);
        if trace.finished {
            return;
        }
        trace.queries += 1;
        trace.query_us = trace.query_us.saturating_add(duration_us);
        let last = trace.last_fingerprint;
        let slot = if trace
            .by_fingerprint
            .get(last)
            .is_some_and(|f| f.fingerprint == q.fingerprint)
        {
            Some(last)
        } else if let Some(i) = trace
            .by_fingerprint
            .iter()
            .position(|f| f.fingerprint == q.fingerprint)
        {
            Some(i)
        } else if trace.by_fingerprint.len() < MAX_REQUEST_FINGERPRINTS {
            trace.by_fingerprint.push(FpStats::new(q));
            Some(trace.by_fingerprint.len() - 1)
        } else {
            None
        };
        let name = match slot {
            Some(i) => {
                trace.last_fingerprint = i;
                trace.by_fingerprint[i].latency.record(duration_us);
                Name::Statement(u32::try_from(i).unwrap_or(u32::MAX))
            }
            None => Name::Shared(q.sql.clone()),
        };
        let start = end.checked_sub(duration).unwrap_or(self.head.start);
        let entry = RawEntry {
            kind: EntryKind::Query,
            name,
            fingerprint: Some(q.fingerprint),
            start,
            duration_us,
        };
        self.push(&mut trace, entry);
        drop(trace);
        if slot.is_none() {
            // Past the per-request bound of statement shapes: straight into the hub.
            let head = &self.head;
            head.hub
                .record_query(head.route(), head.method, q, duration_us, end);
        }
    }

    /// A span the app opened at `start` and closed at `end`.
    pub(crate) fn record_span(&self, name: &'static str, start: Instant, end: Instant) {
        let mut trace = lock(&self.trace);
        if trace.finished {
            return;
        }
        let entry = RawEntry {
            kind: EntryKind::Span,
            name: Name::Static(name),
            fingerprint: None,
            start,
            duration_us: micros(end.saturating_duration_since(start)),
        };
        self.push(&mut trace, entry);
    }

    fn add_allocs(&self, allocs: u64, bytes: u64) {
        self.allocs.fetch_add(allocs, Ordering::Relaxed);
        self.alloc_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The request is done (answered `status` at `end`): its latency goes into the
    /// recorder, its figures into the hub.
    fn finish(&self, status: u16, end: Instant) {
        let trace = {
            let mut trace = lock(&self.trace);
            if trace.finished {
                return;
            }
            trace.finished = true;
            std::mem::take(&mut *trace)
        };
        let allocs = self.allocs.load(Ordering::Relaxed);
        let alloc_bytes = self.alloc_bytes.load(Ordering::Relaxed);
        self.head.finish(trace, (allocs, alloc_bytes), status, end);
    }
}

impl Head {
    /// The request that did `trace` and allocated `(allocs, alloc_bytes)` is done
    /// (answered `status` at `end`): its latency goes into the recorder, its figures
    /// into the hub.
    fn finish(&self, trace: Trace, (allocs, alloc_bytes): (u64, u64), status: u16, end: Instant) {
        let hub = &self.hub;
        let recorder = &hub.recorder;
        let duration = end.saturating_duration_since(self.start);
        let duration_us = micros(duration);
        let threshold = hub.config.n_plus_one_threshold;
        // No per-request `Vec`: the flagged fingerprints are filtered where used.
        let n_plus_one = trace.by_fingerprint.iter().any(|f| f.count() >= threshold);
        let counted = alloc::installed();
        let now_ms = recorder.unix_ms_at(end);
        // Latency and route figures under one shard lock and route lookup.
        recorder.record_with(
            self.route(),
            self.method,
            status_class(status),
            duration_us,
            now_ms,
            Some(|agg: &mut RouteAgg| {
                agg.queries.record(trace.queries);
                agg.query_us.record(trace.query_us);
                if counted {
                    agg.allocs.record(allocs);
                    agg.alloc_bytes.record(alloc_bytes);
                }
                if n_plus_one {
                    agg.n_plus_one += 1;
                }
            }),
        );
        let start = window_start(now_ms.div_euclid(1000), recorder.window_secs());
        if !trace.by_fingerprint.is_empty() {
            hub.record_statements(
                start,
                self.route(),
                self.method,
                &trace,
                n_plus_one.then_some(threshold),
            );
        }
        let mut reasons = 0;
        if duration >= hub.config.slow {
            reasons |= sightline_protocol::reason::SLOW;
        }
        if status >= 500 {
            reasons |= sightline_protocol::reason::ERROR;
        }
        if n_plus_one {
            reasons |= sightline_protocol::reason::N_PLUS_ONE;
        }
        if self.sampled {
            reasons |= sightline_protocol::reason::SAMPLED;
        }
        if reasons != 0 && hub.exemplar_slot(start) {
            let exemplar = exemplar::build(
                exemplar::Request {
                    route: self.route(),
                    method: self.method.as_str(),
                    status,
                    start: self.start,
                    start_ms: hub.recorder.unix_ms_at(self.start),
                    duration_us,
                    reasons,
                    allocs,
                    alloc_bytes,
                },
                trace,
            );
            hub.push_exemplar(exemplar);
        }
    }
}

impl Drop for RequestCtx {
    /// A request dropped before it finished (the client went away) counts for no route,
    /// but the statements it ran still count for their fingerprints.
    fn drop(&mut self) {
        let trace = self.trace.get_mut().unwrap_or_else(|e| e.into_inner());
        if trace.finished || trace.by_fingerprint.is_empty() {
            return;
        }
        let head = &self.head;
        let hub = &head.hub;
        let now_ms = hub.recorder.unix_ms_at(Instant::now());
        let start = window_start(now_ms.div_euclid(1000), hub.recorder.window_secs());
        hub.with_window(start, |w| {
            w.fold_statements(head.route(), head.method, trace);
        });
    }
}

/// The per-request handle the request layer keeps in its response future.
pub(crate) struct Active {
    /// Moved into the thread's slot while the request is polled, and back afterwards;
    /// `None` only if the slot was gone (thread teardown).
    request: Option<InFlight>,
    span: tracing::Span,
}

/// Moves the request back out of the thread's slot into its [`Active`] when dropped,
/// even while unwinding, and restores what was current before.
struct Polling<'a> {
    owner: &'a mut Option<InFlight>,
    previous: Option<InFlight>,
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // During thread teardown the slot is gone, and the request with it: it then
        // finishes without its figures.
        let _ = CURRENT.try_with(|cell| *self.owner = cell.replace(previous));
    }
}

impl Active {
    /// Runs `f` (a poll of the request's future, or the inner `call`) with the request
    /// current, its span entered, and the allocations made meanwhile on this thread
    /// added to the request.
    pub(crate) fn scope<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let before = self.request.as_ref().and_then(|_| alloc::thread_totals());
        let out = {
            let request = self.request.take();
            // No slot (thread teardown): the request is lost, `f` still runs.
            let previous = CURRENT
                .try_with(|cell| cell.replace(request))
                .unwrap_or_default();
            let _polling = Polling {
                owner: &mut self.request,
                previous,
            };
            let _entered = self.span.enter();
            f()
        };
        if let Some(before) = before
            && let Some(after) = alloc::thread_totals()
        {
            let (n, bytes) = (
                after.0.wrapping_sub(before.0),
                after.1.wrapping_sub(before.1),
            );
            match &mut self.request {
                Some(InFlight::Own {
                    allocs,
                    alloc_bytes,
                    ..
                }) => {
                    *allocs = allocs.wrapping_add(n);
                    *alloc_bytes = alloc_bytes.wrapping_add(bytes);
                }
                Some(InFlight::Shared(ctx)) => ctx.add_allocs(n, bytes),
                None => {}
            }
        }
        out
    }

    /// The request finished with `status` at `end`.
    pub(crate) fn finish(self, status: u16, end: Instant) {
        match self.request {
            Some(InFlight::Own {
                head,
                allocs,
                alloc_bytes,
            }) => head.finish(Trace::default(), (allocs, alloc_bytes), status, end),
            Some(InFlight::Shared(ctx)) => ctx.finish(status, end),
            None => {}
        }
    }
}

/// Aggregates of one route × method in one window. They live beside the route's
/// latency histograms in the [`Recorder`]'s windows, so that a request takes one shard
/// lock and one route lookup for both.
#[derive(Default, Debug)]
pub(crate) struct RouteAgg {
    queries: Tally,
    query_us: Tally,
    allocs: Tally,
    alloc_bytes: Tally,
    n_plus_one: u64,
}

/// [`RouteAgg`]s merged across shards, as shipped.
#[derive(Default)]
struct RouteFigures {
    queries: Histogram,
    query_us: Histogram,
    allocs: Histogram,
    alloc_bytes: Histogram,
    n_plus_one: u64,
}

impl RouteFigures {
    fn add(&mut self, agg: &RouteAgg) {
        agg.queries.fold_into(&mut self.queries);
        agg.query_us.fold_into(&mut self.query_us);
        agg.allocs.fold_into(&mut self.allocs);
        agg.alloc_bytes.fold_into(&mut self.alloc_bytes);
        self.n_plus_one += agg.n_plus_one;
    }
}

#[derive(Debug)]
struct QueryAgg {
    sql: Arc<str>,
    latency: Histogram,
    routes: Vec<(Box<str>, MethodLabel, u64)>,
}

#[derive(Default, Debug, Clone, Copy)]
struct NAgg {
    requests: u64,
    total: u64,
    max: u64,
}

impl NAgg {
    fn merge(&mut self, other: NAgg) {
        self.requests += other.requests;
        self.total = self.total.saturating_add(other.total);
        self.max = self.max.max(other.max);
    }
}

/// One window of one shard.
#[derive(Debug)]
struct HubWindow {
    start: i64,
    queries: HashedMap<QueryAgg>,
    n_plus_one: Vec<(Box<str>, MethodLabel, u64, NAgg)>,
}

impl HubWindow {
    /// Adds the statements a request ran to the per-fingerprint statistics.
    fn fold_statements(&mut self, route: &str, method: MethodLabel, trace: &Trace) {
        for f in &trace.by_fingerprint {
            if !self.queries.contains_key(&f.fingerprint) && self.queries.len() >= MAX_FINGERPRINTS
            {
                continue;
            }
            let agg = self
                .queries
                .entry(f.fingerprint)
                .or_insert_with(|| QueryAgg {
                    sql: f.sql.clone(),
                    latency: Histogram::new(),
                    routes: Vec::new(),
                });
            f.latency.fold_into(&mut agg.latency);
            let known = agg.routes.len();
            match agg
                .routes
                .iter_mut()
                .find(|(r, m, _)| &**r == route && *m == method)
            {
                Some((_, _, n)) => *n += f.count(),
                None if known < sightline_protocol::MAX_QUERY_ROUTES => {
                    agg.routes.push((route.into(), method, f.count()));
                }
                None => {}
            }
        }
    }

    fn new(start: i64) -> HubWindow {
        HubWindow {
            start,
            queries: HashedMap::default(),
            n_plus_one: Vec::new(),
        }
    }
}

#[derive(Default, Debug)]
struct ExemplarQueue {
    items: Vec<Exemplar>,
    per_window: Vec<(i64, usize)>,
}

#[derive(Default, Debug)]
struct HeapState {
    samples: Vec<HeapSample>,
    peak: u64,
}

/// Where finished requests go until the agent thread drains them.
pub(crate) struct Hub {
    recorder: Arc<Recorder>,
    config: InsightConfig,
    shards: Box<[Mutex<Vec<HubWindow>>]>,
    exemplars: Mutex<ExemplarQueue>,
    heap: Mutex<HeapState>,
    closed: AtomicBool,
}

/// Hands out shard numbers to threads.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn this_thread_shard() -> usize {
    SHARD
        .try_with(|cell| {
            let mut index = cell.get();
            if index == usize::MAX {
                index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
                cell.set(index);
            }
            index
        })
        .unwrap_or(0)
}

impl Hub {
    pub(crate) fn new(recorder: Arc<Recorder>, config: InsightConfig) -> Hub {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (cores * 2).next_power_of_two().clamp(4, 64);
        Hub {
            recorder,
            config,
            shards: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            exemplars: Mutex::new(ExemplarQueue::default()),
            heap: Mutex::new(HeapState::default()),
            closed: AtomicBool::new(false),
        }
    }

    /// Opens the context of a request that started at `start`; `None` once the agent
    /// has stopped.
    pub(crate) fn begin(
        self: &Arc<Self>,
        route: Option<MatchedPath>,
        method: MethodLabel,
        start: Instant,
    ) -> Option<Active> {
        if self.closed.load(Ordering::Relaxed) {
            return None;
        }
        let sampled = self.config.sample_rate > 0.0 && fastrand::f64() < self.config.sample_rate;
        let request = InFlight::Own {
            head: Head {
                hub: self.clone(),
                start,
                route,
                method,
                sampled,
            },
            allocs: 0,
            alloc_bytes: 0,
        };
        // Created while the request is current, so the tracing layer ties the span (and
        // every span and event under it, on any thread) to this request, which is then
        // shared. No subscriber wants INFO spans (e.g. none is installed): the request
        // stays inline, and no disabled span is made.
        if tracing::level_filters::LevelFilter::current()
            >= tracing::level_filters::LevelFilter::INFO
        {
            let ctx = request.into_shared();
            let span = {
                let _current = Current::set(&ctx);
                tracing::info_span!(target: REQUEST_TARGET, "request")
            };
            return Some(Active {
                request: Some(InFlight::Shared(ctx)),
                span,
            });
        }
        Some(Active {
            request: Some(request),
            span: tracing::Span::none(),
        })
    }

    /// Stops taking requests (the agent is shutting down).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for shard in self.shards.iter() {
            drop(lock(shard));
        }
    }

    fn with_window<R>(&self, start: i64, f: impl FnOnce(&mut HubWindow) -> R) -> Option<R> {
        let shard = &self.shards[this_thread_shard() % self.shards.len()];
        let mut windows = lock(shard);
        if self.closed.load(Ordering::Relaxed) {
            return None;
        }
        let index = match windows.iter().rposition(|w| w.start == start) {
            Some(i) => i,
            None => {
                windows.push(HubWindow::new(start));
                windows.len() - 1
            }
        };
        windows.get_mut(index).map(f)
    }

    fn record_query(
        &self,
        route: &str,
        method: MethodLabel,
        q: &Normalized,
        duration_us: u64,
        end: Instant,
    ) {
        let now_ms = self.recorder.unix_ms_at(end);
        let start = window_start(now_ms.div_euclid(1000), self.recorder.window_secs());
        self.with_window(start, |w| {
            if !w.queries.contains_key(&q.fingerprint) && w.queries.len() >= MAX_FINGERPRINTS {
                return;
            }
            let agg = w.queries.entry(q.fingerprint).or_insert_with(|| QueryAgg {
                sql: q.sql.clone(),
                latency: Histogram::new(),
                routes: Vec::new(),
            });
            agg.latency.record(duration_us);
            let known = agg.routes.len();
            match agg
                .routes
                .iter_mut()
                .find(|(r, m, _)| &**r == route && *m == method)
            {
                Some((_, _, n)) => *n += 1,
                None if known < sightline_protocol::MAX_QUERY_ROUTES => {
                    agg.routes.push((route.into(), method, 1));
                }
                None => {}
            }
        });
    }

    /// Folds the statements a finished request ran into window `start`, with the N+1
    /// flags of those that repeated at least `n_plus_one` times.
    fn record_statements(
        &self,
        start: i64,
        route: &str,
        method: MethodLabel,
        trace: &Trace,
        n_plus_one: Option<u64>,
    ) {
        self.with_window(start, |w| {
            w.fold_statements(route, method, trace);
            let Some(threshold) = n_plus_one else {
                return;
            };
            for f in trace
                .by_fingerprint
                .iter()
                .filter(|f| f.count() >= threshold)
            {
                let one = NAgg {
                    requests: 1,
                    total: f.count(),
                    max: f.count(),
                };
                let known = w.n_plus_one.len();
                match w
                    .n_plus_one
                    .iter_mut()
                    .find(|(r, m, fp, _)| &**r == route && *m == method && *fp == f.fingerprint)
                {
                    Some((_, _, _, agg)) => agg.merge(one),
                    None if known < MAX_ROUTES => {
                        w.n_plus_one
                            .push((route.into(), method, f.fingerprint, one));
                    }
                    None => {}
                }
            }
        });
    }

    /// Reserves an exemplar slot in window `start`; false when it is full.
    fn exemplar_slot(&self, start: i64) -> bool {
        let mut queue = lock(&self.exemplars);
        let max = self.config.max_exemplars;
        match queue.per_window.iter_mut().find(|(s, _)| *s == start) {
            Some((_, n)) if *n < max => {
                *n += 1;
                true
            }
            Some(_) => false,
            None if max > 0 => {
                queue.per_window.push((start, 1));
                true
            }
            None => false,
        }
    }

    fn push_exemplar(&self, exemplar: Exemplar) {
        lock(&self.exemplars).items.push(exemplar);
    }

    /// Samples the live heap (when the counting allocator is installed).
    pub(crate) fn sample_heap(&self) {
        if !alloc::installed() {
            return;
        }
        let live = alloc::heap_stats().live_bytes;
        let mut heap = lock(&self.heap);
        heap.peak = heap.peak.max(live);
        let sample = HeapSample {
            ts_ms: unix_now_ms(),
            live_bytes: live,
            peak_bytes: heap.peak,
        };
        if heap.samples.len() >= MAX_HEAP_SAMPLES {
            heap.samples.remove(0);
        }
        heap.samples.push(sample);
    }

    /// Takes every window that ended by `until` (all if `None`), every exemplar and every
    /// heap sample, merged across shards.
    pub(crate) fn drain(&self, until: Option<i64>) -> InsightBatch {
        let w = i64::from(self.recorder.window_secs());
        let mut taken: Vec<HubWindow> = Vec::new();
        for shard in self.shards.iter() {
            let mut windows = lock(shard);
            let mut i = 0;
            while i < windows.len() {
                if until.is_none_or(|until| windows[i].start + w <= until) {
                    taken.push(windows.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        let mut batch = self.merge(taken, self.recorder.take_insight(until));
        {
            let mut queue = lock(&self.exemplars);
            batch.exemplars = std::mem::take(&mut queue.items);
            if let Some(until) = until {
                queue.per_window.retain(|(s, _)| s + w > until);
            } else {
                queue.per_window.clear();
            }
        }
        {
            let mut heap = lock(&self.heap);
            batch.heap = std::mem::take(&mut heap.samples);
            heap.peak = batch.heap.last().map_or(0, |s| s.live_bytes);
        }
        batch
    }

    fn merge(&self, taken: Vec<HubWindow>, route_figures: Vec<TakenInsight>) -> InsightBatch {
        let window_secs = self.recorder.window_secs();
        let mut routes: BTreeMap<(i64, Box<str>, MethodLabel), RouteFigures> = BTreeMap::new();
        let mut queries: BTreeMap<(i64, u64), QueryAgg> = BTreeMap::new();
        let mut flags: BTreeMap<(i64, Box<str>, MethodLabel, u64), NAgg> = BTreeMap::new();
        for (key, agg) in route_figures {
            routes.entry(key).or_default().add(&agg);
        }
        for window in taken {
            for (fp, agg) in window.queries {
                match queries.get_mut(&(window.start, fp)) {
                    Some(q) => {
                        q.latency.merge(&agg.latency);
                        for (route, method, n) in agg.routes {
                            let known = q.routes.len();
                            match q
                                .routes
                                .iter_mut()
                                .find(|(r, m, _)| *r == route && *m == method)
                            {
                                Some((_, _, total)) => *total += n,
                                None if known < sightline_protocol::MAX_QUERY_ROUTES => {
                                    q.routes.push((route, method, n));
                                }
                                None => {}
                            }
                        }
                    }
                    None => {
                        queries.insert((window.start, fp), agg);
                    }
                }
            }
            for (route, method, fp, agg) in window.n_plus_one {
                flags
                    .entry((window.start, route, method, fp))
                    .or_default()
                    .merge(agg);
            }
        }
        InsightBatch {
            routes: routes
                .into_iter()
                .map(|((start, route, method), agg)| RouteInsight {
                    start,
                    window_secs,
                    route: route.into(),
                    method: method.as_str().to_owned(),
                    queries: agg.queries,
                    query_us: agg.query_us,
                    allocs: agg.allocs,
                    alloc_bytes: agg.alloc_bytes,
                    n_plus_one: agg.n_plus_one,
                })
                .collect(),
            queries: queries
                .into_iter()
                .map(|((start, fingerprint), agg)| QueryWindow {
                    start,
                    window_secs,
                    fingerprint,
                    sql: agg.sql.to_string(),
                    latency: agg.latency,
                    routes: agg
                        .routes
                        .into_iter()
                        .map(|(r, m, n)| (r.into(), m.as_str().to_owned(), n))
                        .collect(),
                })
                .collect(),
            n_plus_one: flags
                .into_iter()
                .map(|((start, route, method, fingerprint), agg)| NPlusOne {
                    start,
                    window_secs,
                    route: route.into(),
                    method: method.as_str().to_owned(),
                    fingerprint,
                    requests: agg.requests,
                    total_repeats: agg.total,
                    max_repeats: agg.max,
                })
                .collect(),
            exemplars: Vec::new(),
            heap: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::DEFAULT_MAX_KEYS;

    fn hub(config: InsightConfig) -> Arc<Hub> {
        Arc::new(Hub::new(
            Arc::new(Recorder::new(10, DEFAULT_MAX_KEYS)),
            config,
        ))
    }

    fn get() -> MethodLabel {
        MethodLabel::of(&http::Method::GET)
    }

    #[test]
    fn n_plus_one_requests_are_flagged_with_their_fingerprint() {
        let hub = hub(InsightConfig {
            sample_rate: 0.0,
            ..InsightConfig::default()
        });
        let start = Instant::now();
        let mut active = hub.begin(None, get(), start).expect("open");
        active.scope(|| {
            record_query(
                "SELECT * FROM threads WHERE id = 1",
                Duration::from_micros(50),
            );
            for id in 0..7 {
                record_query(
                    &format!("SELECT name FROM users WHERE id = {id}"),
                    Duration::from_micros(10),
                );
            }
        });
        // Not current any more: ignored.
        record_query("SELECT 1", Duration::from_micros(1));
        active.finish(200, Instant::now());
        let batch = hub.drain(None);
        assert_eq!(batch.routes.len(), 1);
        assert_eq!(batch.routes[0].queries.sum, 8);
        assert_eq!(batch.routes[0].query_us.sum, 120);
        assert_eq!(batch.routes[0].n_plus_one, 1);
        let users = sql::fingerprint("select name from users where id = ?");
        assert_eq!(batch.n_plus_one.len(), 1);
        assert_eq!(batch.n_plus_one[0].fingerprint, users);
        assert_eq!(batch.n_plus_one[0].max_repeats, 7);
        assert_eq!(batch.queries.len(), 2);
        let q = batch
            .queries
            .iter()
            .find(|q| q.fingerprint == users)
            .expect("users query");
        assert_eq!(q.latency.count, 7);
        assert_eq!(q.routes, [("<unmatched>".to_owned(), "GET".to_owned(), 7)]);
        // The N+1 request is an exemplar with its queries in order.
        assert_eq!(batch.exemplars.len(), 1);
        let e = &batch.exemplars[0];
        assert_eq!(e.reasons, sightline_protocol::reason::N_PLUS_ONE);
        assert_eq!(e.entries.len(), 8);
        assert!(e.entries[0].name.starts_with("select * from threads"));
        assert!(hub.drain(None).is_empty());
    }

    #[test]
    fn exemplars_are_bounded_per_window_and_entries_per_exemplar() {
        let hub = hub(InsightConfig {
            sample_rate: 1.0,
            max_exemplars: 3,
            max_entries: 4,
            ..InsightConfig::default()
        });
        for _ in 0..10 {
            let mut active = hub.begin(None, get(), Instant::now()).expect("open");
            active.scope(|| {
                for i in 0..6 {
                    record_query(&format!("select {i}"), Duration::from_micros(1));
                }
            });
            active.finish(200, Instant::now());
        }
        let batch = hub.drain(None);
        assert_eq!(batch.exemplars.len(), 3);
        assert!(
            batch
                .exemplars
                .iter()
                .all(|e| e.entries.len() == 4 && e.dropped_entries == 2 && e.queries == 6)
        );
        assert_eq!(batch.routes[0].queries.count, 10);
    }

    #[test]
    fn statements_fold_into_the_hub_at_request_end_or_drop() {
        let hub = hub(InsightConfig::default());
        let runs = [5, 5, 700, 5, 0];
        let mut finished = hub.begin(None, get(), Instant::now()).expect("open");
        let mut dropped = hub.begin(None, get(), Instant::now()).expect("open");
        for active in [&mut finished, &mut dropped] {
            active.scope(|| {
                for us in runs {
                    record_query("SELECT 1", Duration::from_micros(us));
                }
            });
        }
        finished.finish(200, Instant::now());
        // The client went away: no route figures, but the statements still count.
        drop(dropped);
        let batch = hub.drain(None);
        assert_eq!(batch.routes[0].queries.count, 1);
        let mut expected = Histogram::new();
        for us in runs.iter().chain(&runs) {
            expected.record(*us);
        }
        assert_eq!(batch.queries.len(), 1);
        assert_eq!(batch.queries[0].latency, expected);
        assert_eq!(
            batch.queries[0].routes,
            [("<unmatched>".to_owned(), "GET".to_owned(), 10)]
        );
    }

    #[test]
    fn requests_are_current_only_while_polled() {
        let hub = hub(InsightConfig::default());
        let mut active = hub.begin(None, get(), Instant::now()).expect("open");
        assert!(current().is_none());
        active.scope(|| assert!(current().is_some()));
        assert!(current().is_none());
        hub.close();
        assert!(hub.begin(None, get(), Instant::now()).is_none());
    }
}
