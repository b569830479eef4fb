//! [`CountingAllocator`]: a `#[global_allocator]` wrapper around [`System`] (or any other
//! allocator, with [`CountingAllocator::wrapping`]) that counts
//! allocations and bytes per thread, so the request layer can attribute them to the
//! request whose future is being polled and the agent thread can sample the live heap.
//!
//! Every thread claims one slot of a static table on its first allocation and is the only
//! writer of that slot: counting is a plain load and store of a few relaxed atomics on a
//! cache line nobody else writes — no lock-prefixed instruction, no shared counter on the
//! hot path. The live heap is the sum over all slots of bytes allocated minus bytes freed
//! (a block freed on another thread than the one that allocated it is still counted
//! exactly once on each side), summed only when sampled.
//!
//! Threads beyond [`SLOTS`] − 1 (slots are never reused: a finished thread's totals are
//! still part of the live-heap sum) share the last slot with atomic adds; their
//! allocations still count towards the heap but are not attributed to requests.

// `GlobalAlloc` is an unsafe trait: implementing it, and forwarding to another, needs
// `unsafe`. This module is the only place in the agent that uses it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Slots in the per-thread counter table; the last one is shared by every thread past it.
pub const SLOTS: usize = 4_096;

const SHARED: usize = SLOTS - 1;
const UNCLAIMED: usize = usize::MAX;

/// One thread's totals, on a cache line of its own.
#[repr(align(64))]
struct Slot {
    allocs: AtomicU64,
    alloc_bytes: AtomicU64,
    frees: AtomicU64,
    free_bytes: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            allocs: AtomicU64::new(0),
            alloc_bytes: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            free_bytes: AtomicU64::new(0),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// Slots handed out so far (may exceed [`SLOTS`]; those threads use the shared slot).
static CLAIMED: AtomicUsize = AtomicUsize::new(0);

/// Set once the counting allocator has served an allocation.
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    // `const` and destructor-free: reading it never allocates, never registers a
    // destructor and never fails, so the allocator may use it re-entrantly.
    static MY_SLOT: Cell<usize> = const { Cell::new(UNCLAIMED) };
}

/// This thread's slot index, claiming one on first use.
#[inline]
fn my_slot() -> usize {
    MY_SLOT
        .try_with(|cell| {
            let index = cell.get();
            if index != UNCLAIMED {
                return index;
            }
            let claimed = CLAIMED.fetch_add(1, Ordering::Relaxed).min(SHARED);
            INSTALLED.store(true, Ordering::Relaxed);
            cell.set(claimed);
            claimed
        })
        .unwrap_or(SHARED)
}

/// Adds `n` to a counter: owner-only slots need no atomic read-modify-write.
#[inline]
fn bump(counter: &AtomicU64, n: u64, owned: bool) {
    if owned {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[inline]
fn count_alloc(bytes: usize) {
    let index = my_slot();
    let slot = &TABLE[index.min(SHARED)];
    let owned = index != SHARED;
    bump(&slot.allocs, 1, owned);
    bump(&slot.alloc_bytes, bytes as u64, owned);
}

#[inline]
fn count_free(bytes: usize) {
    let index = my_slot();
    let slot = &TABLE[index.min(SHARED)];
    let owned = index != SHARED;
    bump(&slot.frees, 1, owned);
    bump(&slot.free_bytes, bytes as u64, owned);
}

/// A `#[global_allocator]` that forwards to [`System`] (or the allocator it wraps) and
/// counts.
///
/// ```
/// #[global_allocator]
/// static ALLOC: sightline_agent::CountingAllocator = sightline_agent::CountingAllocator::new();
/// ```
///
/// It never allocates, never panics and never blocks; counting adds a thread-local read
/// and two uncontended stores per allocation.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAllocator<A = System> {
    inner: A,
}

impl CountingAllocator {
    /// The allocator over [`System`]; `const` so it can initialise a `static`.
    pub const fn new() -> CountingAllocator {
        CountingAllocator { inner: System }
    }
}

impl<A> CountingAllocator<A> {
    /// Counts the allocations of `inner` (a faster allocator than the system's, say).
    pub const fn wrapping(inner: A) -> CountingAllocator<A> {
        CountingAllocator { inner }
    }
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments
// unchanged, so the `GlobalAlloc` contract is the inner one's; the counting around it
// touches only static atomics and a const thread-local, never allocates (no re-entrancy)
// and cannot panic (`my_slot` never returns more than `SHARED`, and `min` keeps indexes
// in range).
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            count_alloc(layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count_alloc(layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `inner` through this wrapper with `layout`.
        unsafe { self.inner.dealloc(ptr, layout) };
        count_free(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; `ptr` came from `inner` through this wrapper.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // A move to a new block: the old one is freed, a new one allocated.
            count_free(layout.size());
            count_alloc(new_size);
        }
        new
    }
}

/// True once a [`CountingAllocator`] has served an allocation in this process.
pub(crate) fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// This thread's running totals `(allocations, bytes allocated)`; `None` when the
/// counting allocator is not installed or the thread shares the overflow slot (its
/// counters move with other threads' allocations too).
#[inline]
pub(crate) fn thread_totals() -> Option<(u64, u64)> {
    let index = MY_SLOT.try_with(Cell::get).ok()?;
    if index >= SHARED {
        return None;
    }
    let slot = TABLE.get(index)?;
    Some((
        slot.allocs.load(Ordering::Relaxed),
        slot.alloc_bytes.load(Ordering::Relaxed),
    ))
}

/// Process-wide totals, summed over every slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Allocations so far.
    pub allocs: u64,
    /// Frees so far.
    pub frees: u64,
    /// Bytes allocated and not freed yet.
    pub live_bytes: u64,
}

/// Sums every thread's counters: the live heap right now (zero when the counting
/// allocator is not installed).
pub fn heap_stats() -> HeapStats {
    let used = CLAIMED.load(Ordering::Relaxed).min(SLOTS);
    // The shared slot is counted even when no thread overflowed into it (it is zero).
    let mut stats = HeapStats::default();
    let (mut allocated, mut freed) = (0u64, 0u64);
    for slot in TABLE
        .iter()
        .take(used)
        .chain(std::iter::once(&TABLE[SHARED]))
    {
        stats.allocs = stats
            .allocs
            .wrapping_add(slot.allocs.load(Ordering::Relaxed));
        stats.frees = stats.frees.wrapping_add(slot.frees.load(Ordering::Relaxed));
        allocated = allocated.wrapping_add(slot.alloc_bytes.load(Ordering::Relaxed));
        freed = freed.wrapping_add(slot.free_bytes.load(Ordering::Relaxed));
    }
    if used == SLOTS {
        // The shared slot was already in `take(used)`: it was added twice.
        let shared = &TABLE[SHARED];
        stats.allocs = stats
            .allocs
            .wrapping_sub(shared.allocs.load(Ordering::Relaxed));
        stats.frees = stats
            .frees
            .wrapping_sub(shared.frees.load(Ordering::Relaxed));
        allocated = allocated.wrapping_sub(shared.alloc_bytes.load(Ordering::Relaxed));
        freed = freed.wrapping_sub(shared.free_bytes.load(Ordering::Relaxed));
    }
    // Slots are read one after another while threads run: a block freed on one thread
    // may be seen before its allocation on another. Never report a negative heap.
    stats.live_bytes = allocated.saturating_sub(freed);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_through_the_wrapper() {
        // The test binary does not install it globally: drive it by hand.
        let a = CountingAllocator::new();
        let layout = Layout::from_size_align(100, 8).expect("layout");
        let before = thread_totals().unwrap_or((0, 0));
        let heap_before = heap_stats().live_bytes;
        // SAFETY: a valid non-zero layout; the block is freed below with the same layout.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` came from `a.alloc(layout)`; growing keeps the alignment.
        let p = unsafe { a.realloc(p, layout, 300) };
        assert!(!p.is_null());
        let after = thread_totals().expect("slot claimed");
        assert_eq!(after.0 - before.0, 2);
        assert_eq!(after.1 - before.1, 400);
        assert!(installed());
        assert!(heap_stats().live_bytes >= heap_before + 300 - 100);
        let new_layout = Layout::from_size_align(300, 8).expect("layout");
        // SAFETY: `p` is the live block of `new_layout` returned by realloc.
        unsafe { a.dealloc(p, new_layout) };
        let stats = heap_stats();
        assert!(stats.frees >= 2);
    }

    #[test]
    fn threads_get_their_own_slots() {
        let a = CountingAllocator::new();
        let layout = Layout::from_size_align(64, 8).expect("layout");
        let slots: Vec<usize> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    // SAFETY: valid layout, freed right away with the same layout.
                    unsafe { a.dealloc(a.alloc(layout), layout) };
                    MY_SLOT.with(Cell::get)
                })
                .join()
                .expect("thread")
            })
            .collect();
        let mut unique = slots.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), slots.len());
        assert!(slots.iter().all(|&s| s < SHARED));
    }
}
