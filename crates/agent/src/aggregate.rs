//! Folding requests into per-window histograms on the request path.
//!
//! Every request lands in one of a few mutex-protected shards; a thread always uses
//! the same shard, so app threads do not contend with each other and meet the agent
//! thread only when it drains closed windows (about once per window). A shard keeps,
//! per open window, `route → [(method, status class, histogram)]`: looking up a known
//! route borrows the `&str`, so a request allocates nothing once its route has been
//! seen in the window (the histogram's bucket map allocates only for a new bucket).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sightline_protocol::{Histogram, MAX_LABEL_LEN, RouteWindow, StatusClass};

use crate::insight::RouteAgg;

/// Route label of requests no route matched (axum's fallback, or a layer applied
/// outside the router where `MatchedPath` is not set yet).
/// The route label of requests that matched no route (axum's fallback, or a layer
/// wrapped around the whole router): never the raw path, whose ids would make every
/// request its own route.
pub const UNMATCHED_ROUTE: &str = "<unmatched>";
pub(crate) const UNMATCHED: &str = UNMATCHED_ROUTE;

/// Route label of requests recorded after a window reached its key bound.
pub(crate) const OVERFLOW: &str = "<overflow>";

/// Default bound on distinct route × method × status class keys per window.
pub(crate) const DEFAULT_MAX_KEYS: usize = 2_000;

/// Methods are folded into this fixed set so that clients inventing methods cannot
/// create keys; anything else is `OTHER`.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "OTHER",
];

/// An index into [`METHODS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MethodLabel(u8);

impl MethodLabel {
    pub(crate) fn of(method: &http::Method) -> MethodLabel {
        let name = method.as_str();
        let index = METHODS[..METHODS.len() - 1]
            .iter()
            .position(|m| *m == name)
            .unwrap_or(METHODS.len() - 1);
        // METHODS has 10 entries, so the index fits a u8.
        MethodLabel(index as u8)
    }

    pub(crate) fn as_str(self) -> &'static str {
        METHODS.get(usize::from(self.0)).copied().unwrap_or("OTHER")
    }
}

/// `1xx` → 1 … `5xx` → 5; the codes 600–999 that `http` also accepts count as 5.
pub(crate) fn status_class(code: u16) -> StatusClass {
    (code / 100).clamp(1, 5) as StatusClass
}

/// Start of the window holding `unix_secs`: windows are aligned to multiples of their
/// length since the epoch, so windows from many instances line up and merge.
pub(crate) fn window_start(unix_secs: i64, window_secs: u32) -> i64 {
    let w = i64::from(window_secs.max(1));
    unix_secs.div_euclid(w) * w
}

/// Wall-clock time since the epoch in milliseconds (0 if the clock is before 1970).
pub(crate) fn unix_now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Hashes route templates (short, chosen by the app, never by the client: unmatched
/// requests are all `<unmatched>`) without SipHash's cost, 8 bytes at a time.
#[derive(Default, Clone, Copy)]
struct RouteHasher(u64);

impl std::hash::Hasher for RouteHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0x9e37_79b9_7f4a_7c15;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word))
                .wrapping_mul(0x0100_0000_01b3_0001)
                .rotate_left(29);
        }
        for &b in chunks.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3_0001);
        }
        self.0 = h;
    }
}

type RouteMap<V> = HashMap<Box<str>, V, std::hash::BuildHasherDefault<RouteHasher>>;

/// A histogram being filled on the request path: the figures of a [`Histogram`], with
/// the buckets in a dense `Vec` (indexed from the lowest bucket seen) instead of a tree,
/// and the range of values last seen to fall in one bucket remembered, so that a value
/// in that range costs no logarithm. A route's latency, query count or allocation
/// figures mostly land there. Turned into a `Histogram` when drained.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub(crate) count: u64,
    sum: u64,
    min: u64,
    max: u64,
    zeros: u64,
    /// Bucket of `counts[0]`.
    base: i32,
    counts: Vec<u64>,
    /// Values `lo..=hi` (never 0) are known to fall in bucket `counts[at]`: bucket
    /// indexes only grow with the value, so any value between two seen in one bucket
    /// is in it too.
    lo: u64,
    hi: u64,
    at: usize,
}

impl Tally {
    #[inline]
    pub(crate) fn record(&mut self, value: u64) {
        if value == 0 {
            self.zeros += 1;
        } else if self.lo <= value && value <= self.hi {
            if let Some(n) = self.counts.get_mut(self.at) {
                *n += 1;
            }
        } else {
            self.record_in_new_range(value);
        }
        if self.count == 0 {
            (self.min, self.max) = (value, value);
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum = self.sum.saturating_add(value);
    }

    /// Counts a non-zero value outside the remembered range, and remembers its bucket.
    #[cold]
    fn record_in_new_range(&mut self, value: u64) {
        let bucket = sightline_protocol::bucket_index(value);
        if self.counts.is_empty() {
            self.base = bucket;
        } else if bucket < self.base {
            // Rare once a tally has seen its low values: shift up to the new base.
            let grow = usize::try_from(i64::from(self.base) - i64::from(bucket)).unwrap_or(0);
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.base = bucket;
            self.at += grow;
        }
        let Ok(at) = usize::try_from(i64::from(bucket) - i64::from(self.base)) else {
            return;
        };
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += 1;
        if self.hi != 0 && at == self.at {
            (self.lo, self.hi) = (self.lo.min(value), self.hi.max(value));
        } else {
            (self.lo, self.hi, self.at) = (value, value, at);
        }
    }

    /// Adds these values to `h`, as [`Histogram::merge`] would.
    pub(crate) fn fold_into(&self, h: &mut Histogram) {
        if self.count == 0 {
            return;
        }
        if h.count == 0 {
            (h.min, h.max) = (self.min, self.max);
        } else {
            h.min = h.min.min(self.min);
            h.max = h.max.max(self.max);
        }
        h.count = h.count.saturating_add(self.count);
        h.sum = h.sum.saturating_add(self.sum);
        let zeros = (sightline_protocol::ZERO_BUCKET, self.zeros);
        let buckets = (self.base..).zip(self.counts.iter().copied());
        for (bucket, n) in std::iter::once(zeros).chain(buckets) {
            if n > 0 {
                let slot = h.buckets.entry(bucket).or_insert(0);
                *slot = slot.saturating_add(n);
            }
        }
    }

    pub(crate) fn to_histogram(&self) -> Histogram {
        let mut h = Histogram::new();
        self.fold_into(&mut h);
        h
    }
}

/// Histogram of one method × status class within a route.
struct Slot {
    method: MethodLabel,
    class: StatusClass,
    latency: Tally,
}

enum Recorded {
    /// Into an existing slot.
    Existing,
    /// Into a slot it just added (a new key).
    Added,
    /// No slot and no room for one.
    NoRoom,
}

/// Records into the slot for `method` × `class`, adding one if `may_add`.
fn record_in(
    slots: &mut Vec<Slot>,
    method: MethodLabel,
    class: StatusClass,
    micros: u64,
    may_add: bool,
) -> Recorded {
    if let Some(slot) = slots
        .iter_mut()
        .find(|s| s.method == method && s.class == class)
    {
        slot.latency.record(micros);
        return Recorded::Existing;
    }
    if !may_add {
        return Recorded::NoRoom;
    }
    let mut latency = Tally::default();
    latency.record(micros);
    slots.push(Slot {
        method,
        class,
        latency,
    });
    Recorded::Added
}

/// Everything one window keeps about one route: latency per method × status class,
/// and the performance-insight figures per method. Both are recorded under the same
/// lock and route lookup.
#[derive(Default)]
struct RouteEntry {
    slots: Vec<Slot>,
    insight: Vec<(MethodLabel, RouteAgg)>,
}

impl RouteEntry {
    fn record(
        &mut self,
        method: MethodLabel,
        class: StatusClass,
        micros: u64,
        may_add: bool,
        insight: Option<impl FnOnce(&mut RouteAgg)>,
    ) -> Recorded {
        let recorded = record_in(&mut self.slots, method, class, micros, may_add);
        if !matches!(recorded, Recorded::NoRoom)
            && let Some(f) = insight
        {
            f(self.insight(method));
        }
        recorded
    }

    fn insight(&mut self, method: MethodLabel) -> &mut RouteAgg {
        let i = match self.insight.iter().position(|(m, _)| *m == method) {
            Some(i) => i,
            None => {
                self.insight.push((method, RouteAgg::default()));
                self.insight.len() - 1
            }
        };
        &mut self.insight[i].1
    }
}

/// Insight figures of one route × method in one window, taken out of a shard.
pub(crate) type TakenInsight = ((i64, Box<str>, MethodLabel), RouteAgg);

/// One window that is (or was) open in one shard.
struct Window {
    start: i64,
    routes: RouteMap<RouteEntry>,
    /// Distinct keys in `routes`.
    keys: usize,
    /// Requests that came after `keys` reached the bound, per method × class.
    overflow: Vec<Slot>,
}

impl Window {
    fn new(start: i64) -> Window {
        Window {
            start,
            routes: RouteMap::default(),
            keys: 0,
            overflow: Vec::new(),
        }
    }

    /// Records one request, and hands its route × method insight figures to
    /// `insight`; false when it went to the overflow label (whose requests keep no
    /// insight figures).
    fn record(
        &mut self,
        route: &str,
        method: MethodLabel,
        class: StatusClass,
        micros: u64,
        max_keys: usize,
        insight: Option<impl FnOnce(&mut RouteAgg)>,
    ) -> bool {
        let room = self.keys < max_keys;
        // The borrowed lookup is the hot path; only a route new to this window
        // allocates its key.
        let recorded = match self.routes.get_mut(route) {
            Some(entry) => entry.record(method, class, micros, room, insight),
            None if room => {
                let mut entry = RouteEntry {
                    slots: Vec::with_capacity(2),
                    insight: Vec::new(),
                };
                let recorded = entry.record(method, class, micros, true, insight);
                self.routes.insert(route.into(), entry);
                recorded
            }
            None => Recorded::NoRoom,
        };
        match recorded {
            Recorded::Existing => true,
            Recorded::Added => {
                self.keys += 1;
                true
            }
            Recorded::NoRoom => {
                record_in(&mut self.overflow, method, class, micros, true);
                false
            }
        }
    }
}

/// A shard's lock and request counter on their own cache lines, so that shards
/// used by different threads do not share a line.
#[repr(align(128))]
struct Shard {
    windows: Mutex<Vec<Window>>,
    requests: AtomicU64,
}

thread_local! {
    /// This thread's shard number, assigned round-robin on first use.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Hands out shard numbers to threads.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

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
        // During thread teardown the thread-local is gone; any shard will do.
        .unwrap_or(0)
}

/// Locks a mutex, recovering it if a thread panicked while holding it: the data is
/// counters and histograms, usable even if one update was cut short.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request-path side of the agent: shards of open windows.
pub(crate) struct Recorder {
    shards: Box<[Shard]>,
    window_secs: u32,
    max_keys: usize,
    /// Set when the agent stops: later requests are not recorded (nobody would drain
    /// them). Read under the shard lock, so a drain after setting it sees every
    /// request that was recorded.
    closed: AtomicBool,
    /// Requests recorded under [`OVERFLOW`].
    overflowed: AtomicU64,
    /// Wall-clock time of requests is derived from the `Instant` the layer reads
    /// anyway (saving a third clock read): unix ms at `anchor`, re-calibrated by the
    /// agent thread every window so that wall-clock steps and drift are followed.
    anchor: Instant,
    anchor_unix_ms: AtomicI64,
    /// Insight figures of drained windows, until the hub's drain takes them.
    parked_insight: Mutex<Vec<TakenInsight>>,
}

impl Recorder {
    pub(crate) fn new(window_secs: u32, max_keys: usize) -> Recorder {
        // Twice the cores (rounded to a power of two) keeps the chance that two busy
        // threads share a shard low without scanning many shards when draining.
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (cores * 2).next_power_of_two().clamp(4, 128);
        Recorder {
            shards: (0..shards)
                .map(|_| Shard {
                    windows: Mutex::new(Vec::new()),
                    requests: AtomicU64::new(0),
                })
                .collect(),
            window_secs: window_secs.max(1),
            max_keys,
            closed: AtomicBool::new(false),
            overflowed: AtomicU64::new(0),
            anchor: Instant::now(),
            anchor_unix_ms: AtomicI64::new(unix_now_ms()),
            parked_insight: Mutex::new(Vec::new()),
        }
    }

    /// Unix milliseconds at `at`, by the last calibration.
    pub(crate) fn unix_ms_at(&self, at: Instant) -> i64 {
        let since = i64::try_from(at.saturating_duration_since(self.anchor).as_millis())
            .unwrap_or(i64::MAX);
        self.anchor_unix_ms
            .load(Ordering::Relaxed)
            .saturating_add(since)
    }

    /// Re-reads the wall clock for [`Recorder::unix_ms_at`].
    pub(crate) fn calibrate(&self) {
        let since = i64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.anchor_unix_ms
            .store(unix_now_ms().saturating_sub(since), Ordering::Relaxed);
    }

    pub(crate) fn window_secs(&self) -> u32 {
        self.window_secs
    }

    /// Records one finished request that ended at `now_ms` (unix milliseconds).
    pub(crate) fn record(
        &self,
        route: &str,
        method: MethodLabel,
        class: StatusClass,
        micros: u64,
        now_ms: i64,
    ) {
        self.record_with(
            route,
            method,
            class,
            micros,
            now_ms,
            None::<fn(&mut RouteAgg)>,
        );
    }

    /// [`Recorder::record`], also handing the route × method's insight figures of the
    /// window to `insight` (under the same lock and route lookup).
    pub(crate) fn record_with(
        &self,
        route: &str,
        method: MethodLabel,
        class: StatusClass,
        micros: u64,
        now_ms: i64,
        insight: Option<impl FnOnce(&mut RouteAgg)>,
    ) {
        let start = window_start(now_ms.div_euclid(1000), self.window_secs);
        let shard = &self.shards[this_thread_shard() % self.shards.len()];
        let mut windows = lock(&shard.windows);
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        // Usually one open window, briefly two around a boundary: search from the end.
        let window = match windows.iter().rposition(|w| w.start == start) {
            Some(i) => &mut windows[i],
            None => {
                windows.push(Window::new(start));
                let last = windows.len() - 1;
                &mut windows[last]
            }
        };
        if !window.record(route, method, class, micros, self.max_keys, insight) {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
        shard.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests recorded so far.
    pub(crate) fn requests(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.requests.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests recorded under the overflow label so far.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Stops recording; requests finishing later are ignored.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // Take and release every lock so that a request already inside one finishes
        // before a following drain.
        for shard in self.shards.iter() {
            drop(lock(&shard.windows));
        }
    }

    /// Takes every window that ended at or before `until` (unix seconds), or every
    /// window if `until` is `None`, merged across shards into [`RouteWindow`]s sorted
    /// by start, route, method and status class.
    pub(crate) fn drain(&self, until: Option<i64>) -> Vec<RouteWindow> {
        let w = i64::from(self.window_secs);
        let mut taken: Vec<Window> = Vec::new();
        for shard in self.shards.iter() {
            let mut windows = lock(&shard.windows);
            let mut i = 0;
            while i < windows.len() {
                if until.is_none_or(|until| windows[i].start + w <= until) {
                    taken.push(windows.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        // The insight figures wait for the hub's drain, which follows.
        let mut parked = lock(&self.parked_insight);
        for window in &mut taken {
            take_insight(window, &mut parked);
        }
        drop(parked);
        self.merge(taken)
    }

    /// The insight figures of every window that ended by `until` (all if `None`):
    /// those a [`Recorder::drain`] took out, and those of windows still open in the
    /// shards.
    pub(crate) fn take_insight(&self, until: Option<i64>) -> Vec<TakenInsight> {
        let w = i64::from(self.window_secs);
        let mut out = std::mem::take(&mut *lock(&self.parked_insight));
        for shard in self.shards.iter() {
            let mut windows = lock(&shard.windows);
            for window in windows.iter_mut() {
                if until.is_none_or(|until| window.start + w <= until) {
                    take_insight(window, &mut out);
                }
            }
        }
        out
    }

    /// Merges shard windows, applying the key bound again across shards (each shard
    /// respected it alone, together they may exceed it).
    fn merge(&self, taken: Vec<Window>) -> Vec<RouteWindow> {
        type Key = (i64, String, MethodLabel, StatusClass);
        let mut merged: HashMap<Key, Histogram> = HashMap::new();
        let mut overflow: HashMap<(i64, MethodLabel, StatusClass), Histogram> = HashMap::new();
        let mut keys_per_window: HashMap<i64, usize> = HashMap::new();
        for window in taken {
            for (route, entry) in window.routes {
                let route = label(route.into());
                for slot in entry.slots {
                    let key = (window.start, route.clone(), slot.method, slot.class);
                    if let Some(h) = merged.get_mut(&key) {
                        slot.latency.fold_into(h);
                        continue;
                    }
                    let keys = keys_per_window.entry(window.start).or_insert(0);
                    if *keys < self.max_keys {
                        *keys += 1;
                        merged.insert(key, slot.latency.to_histogram());
                    } else {
                        self.overflowed
                            .fetch_add(slot.latency.count, Ordering::Relaxed);
                        let h = overflow
                            .entry((window.start, slot.method, slot.class))
                            .or_default();
                        slot.latency.fold_into(h);
                    }
                }
            }
            for slot in window.overflow {
                let h = overflow
                    .entry((window.start, slot.method, slot.class))
                    .or_default();
                slot.latency.fold_into(h);
            }
        }
        let overflow = overflow
            .into_iter()
            .map(|((start, method, class), h)| ((start, OVERFLOW.to_owned(), method, class), h));
        let mut out: Vec<RouteWindow> = merged
            .into_iter()
            .chain(overflow)
            .map(|((start, route, method, class), latency)| RouteWindow {
                start,
                window_secs: self.window_secs,
                route,
                method: method.as_str().to_owned(),
                status_class: class,
                latency,
            })
            .collect();
        out.sort_by(|a, b| {
            (a.start, &a.route, &a.method, a.status_class).cmp(&(
                b.start,
                &b.route,
                &b.method,
                b.status_class,
            ))
        });
        out
    }
}

/// Moves the insight figures out of `window` into `out`.
fn take_insight(window: &mut Window, out: &mut Vec<TakenInsight>) {
    for (route, entry) in window.routes.iter_mut() {
        for (method, agg) in entry.insight.drain(..) {
            out.push(((window.start, route.clone(), method), agg));
        }
    }
}

/// A route as the collector accepts it: non-empty and at most [`MAX_LABEL_LEN`]
/// bytes (cut at a character boundary).
fn label(mut route: String) -> String {
    if route.is_empty() {
        return UNMATCHED.to_owned();
    }
    if route.len() > MAX_LABEL_LEN {
        let mut end = MAX_LABEL_LEN;
        while !route.is_char_boundary(end) {
            end -= 1;
        }
        route.truncate(end);
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &http::Method = &http::Method::GET;

    fn get() -> MethodLabel {
        MethodLabel::of(GET)
    }

    #[test]
    fn windows_align_to_multiples_of_their_length() {
        assert_eq!(window_start(1_700_000_007, 10), 1_700_000_000);
        assert_eq!(window_start(1_700_000_010, 10), 1_700_000_010);
        assert_eq!(window_start(1_700_000_009, 10), 1_700_000_000);
        assert_eq!(window_start(61, 60), 60);
        assert_eq!(window_start(7, 1), 7);
        // Before 1970 (a broken clock) still aligns, downwards.
        assert_eq!(window_start(-1, 10), -10);
        // A zero length cannot divide by zero.
        assert_eq!(window_start(5, 0), 5);
    }

    #[test]
    fn wall_clock_follows_the_calibration() {
        let r = Recorder::new(10, DEFAULT_MAX_KEYS);
        let now = Instant::now();
        assert!((r.unix_ms_at(now) - unix_now_ms()).abs() < 1_000);
        // A wall clock that was an hour off is followed after calibrating.
        r.anchor_unix_ms.fetch_sub(3_600_000, Ordering::Relaxed);
        assert!(unix_now_ms() - r.unix_ms_at(Instant::now()) > 3_000_000);
        r.calibrate();
        assert!((r.unix_ms_at(Instant::now()) - unix_now_ms()).abs() < 1_000);
        // Instants before the anchor do not underflow.
        assert!(r.unix_ms_at(now) <= r.unix_ms_at(Instant::now()));
    }

    #[test]
    fn status_classes() {
        let class = |code| {
            status_class(
                http::StatusCode::from_u16(code)
                    .expect("valid code")
                    .as_u16(),
            )
        };
        assert_eq!(class(100), 1);
        assert_eq!(class(200), 2);
        assert_eq!(class(204), 2);
        assert_eq!(class(302), 3);
        assert_eq!(class(404), 4);
        assert_eq!(class(499), 4);
        assert_eq!(class(500), 5);
        assert_eq!(class(503), 5);
        assert_eq!(class(999), 5);
    }

    #[test]
    fn methods_fold_into_a_fixed_set() {
        assert_eq!(get().as_str(), "GET");
        assert_eq!(MethodLabel::of(&http::Method::DELETE).as_str(), "DELETE");
        let odd = http::Method::from_bytes(b"PURGE").expect("valid method");
        assert_eq!(MethodLabel::of(&odd).as_str(), "OTHER");
        let sneaky = http::Method::from_bytes(b"OTHER").expect("valid method");
        assert_eq!(MethodLabel::of(&sneaky).as_str(), "OTHER");
    }

    #[test]
    fn aggregates_per_window_route_method_and_class() {
        let r = Recorder::new(10, DEFAULT_MAX_KEYS);
        let t0 = 1_700_000_000_000; // ms, aligned
        let post = MethodLabel::of(&http::Method::POST);
        r.record("/users/{id}", get(), 2, 100, t0);
        r.record("/users/{id}", get(), 2, 300, t0 + 9_999);
        r.record("/users/{id}", get(), 5, 1_000, t0 + 1);
        r.record("/users/{id}", post, 2, 50, t0 + 2);
        r.record("/health", get(), 2, 7, t0 + 3);
        // Next window.
        r.record("/users/{id}", get(), 2, 200, t0 + 10_000);
        assert_eq!(r.requests(), 6);

        // Only the first window has ended at t0 + 10 s.
        let first = r.drain(Some(1_700_000_010));
        let summary: Vec<_> = first
            .iter()
            .map(|w| {
                (
                    w.start,
                    w.route.as_str(),
                    w.method.as_str(),
                    w.status_class,
                    w.latency.count,
                    w.latency.sum,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (1_700_000_000, "/health", "GET", 2, 1, 7),
                (1_700_000_000, "/users/{id}", "GET", 2, 2, 400),
                (1_700_000_000, "/users/{id}", "GET", 5, 1, 1_000),
                (1_700_000_000, "/users/{id}", "POST", 2, 1, 50),
            ]
        );
        assert!(first.iter().all(|w| w.window_secs == 10));
        // Drained windows are gone; the open one is still there.
        assert!(r.drain(Some(1_700_000_010)).is_empty());
        let rest = r.drain(None);
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].start, rest[0].latency.count), (1_700_000_010, 1));
        assert!(r.drain(None).is_empty());
    }

    #[test]
    fn merges_shards_of_many_threads() {
        let r = std::sync::Arc::new(Recorder::new(10, DEFAULT_MAX_KEYS));
        let t0 = 1_700_000_000_000;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        r.record("/a", get(), 2, i, t0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let windows = r.drain(None);
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].latency.count, 8_000);
        assert!(windows[0].latency.validate().is_ok());
        assert_eq!(r.requests(), 8_000);
    }

    #[test]
    fn distinct_keys_per_window_are_bounded() {
        let r = Recorder::new(10, 3);
        let t0 = 1_700_000_000_000;
        for i in 0..10 {
            r.record(&format!("/r{i}"), get(), 2, 10, t0);
        }
        // An existing key keeps recording after the bound is reached.
        r.record("/r0", get(), 2, 10, t0);
        // A new method × class on a known route is a new key too.
        r.record("/r1", get(), 5, 10, t0);
        assert_eq!(r.overflowed(), 8);
        let windows = r.drain(None);
        let keys: Vec<_> = windows
            .iter()
            .map(|w| (w.route.as_str(), w.status_class, w.latency.count))
            .collect();
        assert_eq!(
            keys,
            [
                ("/r0", 2, 2),
                ("/r1", 2, 1),
                ("/r2", 2, 1),
                ("<overflow>", 2, 7),
                ("<overflow>", 5, 1),
            ]
        );
        let total: u64 = windows.iter().map(|w| w.latency.count).sum();
        assert_eq!(total, 12);
    }

    #[test]
    fn key_bound_holds_across_shards() {
        // Each thread (shard) stays under the bound, together they exceed it.
        let r = std::sync::Arc::new(Recorder::new(10, 4));
        let t0 = 1_700_000_000_000;
        std::thread::scope(|s| {
            for t in 0..3 {
                let r = &r;
                s.spawn(move || {
                    for i in 0..3 {
                        r.record(&format!("/t{t}/r{i}"), get(), 2, 10, t0);
                    }
                });
            }
        });
        let windows = r.drain(None);
        let named = windows.iter().filter(|w| w.route != OVERFLOW).count();
        assert_eq!(named, 4);
        let total: u64 = windows.iter().map(|w| w.latency.count).sum();
        assert_eq!(total, 9);
        assert_eq!(r.overflowed(), 5);
    }

    #[test]
    fn long_routes_are_cut_to_what_the_collector_accepts() {
        let r = Recorder::new(10, DEFAULT_MAX_KEYS);
        let long = format!("/{}", "é".repeat(400));
        r.record(&long, get(), 2, 1, 0);
        r.record("", get(), 2, 1, 0);
        let windows = r.drain(None);
        assert!(windows.iter().all(|w| w.route.len() <= MAX_LABEL_LEN));
        assert!(windows.iter().any(|w| w.route == UNMATCHED));
    }

    #[test]
    fn nothing_is_recorded_after_close() {
        let r = Recorder::new(10, DEFAULT_MAX_KEYS);
        r.record("/a", get(), 2, 1, 0);
        r.close();
        r.record("/a", get(), 2, 1, 0);
        assert_eq!(r.requests(), 1);
        assert_eq!(r.drain(None)[0].latency.count, 1);
    }

    #[test]
    fn a_poisoned_shard_keeps_working() {
        let r = std::sync::Arc::new(Recorder::new(10, DEFAULT_MAX_KEYS));
        let mine = this_thread_shard() % r.shards.len();
        let r2 = r.clone();
        let _ = std::thread::spawn(move || {
            let _guard = r2.shards[mine].windows.lock();
            panic!("poison the shard");
        })
        .join();
        assert!(r.shards[mine].windows.is_poisoned());
        r.record("/a", get(), 2, 1, 0);
        r.record("/a", get(), 2, 1, 0);
        assert_eq!(r.drain(None)[0].latency.count, 2);
    }

    proptest::proptest! {
        /// Whatever the order and clustering of values, a tally drains into the same
        /// histogram as recording each value into a `Histogram`.
        #[test]
        fn a_tally_is_the_histogram_of_its_values(
            values in proptest::collection::vec(
                proptest::prop_oneof![0u64..4, 900u64..1_100, 0u64..u64::MAX],
                0..200,
            ),
            split in 0usize..200,
        ) {
            let mut expected = Histogram::new();
            let (mut a, mut b) = (Tally::default(), Tally::default());
            for (i, v) in values.iter().enumerate() {
                expected.record(*v);
                if i < split { a.record(*v) } else { b.record(*v) }
            }
            let mut h = a.to_histogram();
            b.fold_into(&mut h);
            proptest::prop_assert_eq!(h, expected);
        }
    }
}
