//! Trimming: the pass that gives idle memory back to the OS, and what runs it.
//!
//! One pass ([`run_pass`]):
//!
//! 1. advances the epoch ([`epoch`]), so each active thread cache gives back the blocks of
//!    the classes it did not need since the last pass (on its next slow path), and takes
//!    the blocks of the caches whose owners reached no slow path through the last interval
//!    (threads that sleep; [`ReclaimCaches`]);
//! 2. returns batches that sat unused in the central transfer caches to their pools, so
//!    pools that empty give their pages back to their arenas;
//! 3. releases arena pages that stayed free longer than the decay time (`madvise`) and
//!    unmaps empty arenas beyond the retained reserve;
//! 4. unmaps cached large mappings older than the decay time;
//! 5. runs the release step a layer above registered ([`register_upper_release`]): the heap
//!    profiler gives back the pages its freed sampled blocks keep.
//!
//! **Who runs it.** By default a background thread, started lazily from an allocation slow
//! path (never while an allocator lock is held) with `pthread_create`, so no allocation of
//! ours is involved. It runs a pass every trim interval while there is resident free memory,
//! and otherwise sleeps until memory is freed (the `MEMORY_FREED` event), or for a long
//! while. When the background thread is disabled, or cannot be started, the slow paths run
//! the pass themselves, rate-limited by a tick counter and the clock (the "ticker" of
//! snmalloc), so memory still comes back. [`trim_now`] runs a full pass (decay ignored) at
//! once, for `ebbmalloc::trim()`.
//!
//! Only one pass runs at a time (`PASS_LOCK`); a ticker that finds it taken skips.
//!
//! The thread caches sit above this layer: the functions that can start a pass take the
//! caches' reclaimer as a parameter (the background thread gets it as its argument).

use crate::config::{self, Setting};
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::sync::{
    model_static, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Mutex, Ordering, RawMutex,
    MEMORY_FREED,
};
use crate::{arena, central, large, os};
use core::cell::Cell;

/// Background thread states.
const NOT_STARTED: u32 = 0;
const STARTING: u32 = 1;
const RUNNING: u32 = 2;
/// It could not be started; the ticker takes over until the next fork.
const FAILED: u32 = 3;

model_static! {
    static BACKGROUND: AtomicU32 = AtomicU32::new(NOT_STARTED);
    /// Whether starting the background thread is safe. In the preloaded C library it is not
    /// until the library's constructor has run (the dynamic loader may still be at work).
    static BACKGROUND_ALLOWED: AtomicBool = AtomicBool::new(!cfg!(feature = "preload"));
    /// Held by the one pass that runs at a time.
    static PASS_LOCK: Mutex<()> = Mutex::new(());
    /// Advanced by every pass: each thread cache that sees it change gives back the blocks
    /// it did not need since (on its next slow path; see `thread_cache.rs`).
    static EPOCH: AtomicU32 = AtomicU32::new(0);
    static LAST_PASS_MS: AtomicU32 = AtomicU32::new(0);
    /// The [`UpperRelease`] registered, or null.
    static UPPER_RELEASE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
    static PASSES: AtomicU64 = AtomicU64::new(0);
    static RELEASED_BYTES: AtomicU64 = AtomicU64::new(0);
}

/// The thread caches' reclaimer (`thread_cache::reclaim_idle_caches`), passed down by the
/// layers above: given this pass's epoch and whether to take every cache, it takes the
/// blocks of idle threads' caches and returns whether some cache still holds blocks a later
/// pass may take.
pub(crate) type ReclaimCaches = fn(epoch: u32, everything: bool) -> bool;

/// Slow-path operations between two looks at the clock.
const TICKS_PER_CHECK: u32 = 64;
/// How long the background thread sleeps when there is nothing to release.
const IDLE_SLEEP_MS: u32 = 10_000;
/// Stack of the background thread: the pass needs little.
const BACKGROUND_STACK_BYTES: usize = 256 << 10;

#[cfg(not(loom))]
std::thread_local! {
    static TICKS: Cell<u32> = const { Cell::new(0) };
}
#[cfg(loom)]
crate::sync::thread_local! {
    static TICKS: Cell<u32> = Cell::new(0);
}

/// Called by the allocation slow paths, with no lock held: starts the background thread
/// when due, or runs a rate-limited pass when it is off.
#[inline]
pub(crate) fn tick(reclaim: ReclaimCaches) {
    let ticks = TICKS.with(|ticks| {
        let n = ticks.get().wrapping_add(1);
        ticks.set(n);
        n
    });
    if ticks % TICKS_PER_CHECK == 0 {
        on_check(reclaim);
    }
}

/// Called by the front after a large allocation, with no lock held. One is worth many small
/// ones (a system call or a cached mapping, megabytes), so it checks at once: a program
/// that allocates nothing but large blocks starts the background thread at its first one,
/// and the mappings it caches are given back one decay after it frees them. (Frees do not
/// tick: they may run inside the C library's thread exit.)
#[inline]
pub(crate) fn tick_large(reclaim: ReclaimCaches) {
    // With the background thread running (the usual case) there is nothing to check.
    if BACKGROUND.load(Ordering::Relaxed) != RUNNING {
        on_check(reclaim);
    }
}

#[cold]
#[inline(never)]
fn on_check(reclaim: ReclaimCaches) {
    if config::enabled(Setting::BackgroundThread) && BACKGROUND_ALLOWED.load(Ordering::Relaxed) {
        match BACKGROUND.load(Ordering::Relaxed) {
            RUNNING | STARTING => return,
            NOT_STARTED if start_background_thread(reclaim) => return,
            _ => {}
        }
    }
    let now = os::now_ms();
    let interval = config::get(Setting::TrimIntervalMs) as u32;
    if now.wrapping_sub(LAST_PASS_MS.load(Ordering::Relaxed)) >= interval {
        if let Some(_guard) = PASS_LOCK.try_lock() {
            run_pass(now, false, reclaim);
        }
    }
}

/// Lets the background thread start (see `BACKGROUND_ALLOWED`).
pub(crate) fn allow_background_thread() {
    BACKGROUND_ALLOWED.store(true, Ordering::Relaxed);
}

/// Runs a full pass now, decay ignored, flushing the transfer caches (the caller flushes
/// its own thread cache first: `front::trim_now`). Returns the bytes given back to the OS.
pub(crate) fn trim_now(reclaim: ReclaimCaches) -> usize {
    let _guard = PASS_LOCK.lock();
    run_pass(os::now_ms(), true, reclaim).released
}

/// The pass count that thread caches compare with what they saw last (wraps).
#[inline]
pub(crate) fn epoch() -> u32 {
    EPOCH.load(Ordering::Relaxed)
}

/// Passes so far and bytes they gave back.
pub(crate) fn totals() -> (u64, u64) {
    (
        PASSES.load(Ordering::Relaxed),
        RELEASED_BYTES.load(Ordering::Relaxed),
    )
}

/// One pass; the caller holds `PASS_LOCK`. `everything`: ignore decay and idleness.
fn run_pass(now: u32, everything: bool, reclaim: ReclaimCaches) -> Pass {
    LAST_PASS_MS.store(now, Ordering::Relaxed);
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    // First, so that what the caches give back is parked before the transfer caches are
    // looked at (and returned to the pools at the next pass, or now with `everything`).
    let caches_holding = reclaim(epoch, everything);
    let mut batches_parked = false;
    for index in 0..NUM_CLASSES {
        if let Some(class) = SizeClass::from_index(index) {
            batches_parked |= central::trim(class, everything);
        }
    }
    let decay = if everything {
        0
    } else {
        config::get(Setting::DecayMs) as u32
    };
    let retained = config::get(Setting::RetainedArenas) as usize;
    let (upper_released, upper_holding) = upper_release(now, decay);
    let released = arena::trim(now, decay, retained, config::purge())
        + large::trim(now, decay)
        + upper_released;
    PASSES.fetch_add(1, Ordering::Relaxed);
    RELEASED_BYTES.fetch_add(released as u64, Ordering::Relaxed);
    Pass {
        released,
        batches_parked,
        caches_holding,
        upper_holding,
    }
}

/// What one pass did and left.
struct Pass {
    /// Bytes given back to the OS.
    released: usize,
    /// Whether transfer caches still hold batches, which a later pass may return to
    /// their pools (and so free their pages).
    batches_parked: bool,
    /// Whether thread caches still hold blocks that a later pass may take back.
    caches_holding: bool,
    /// Whether the upper release step still keeps pages that a later pass may release.
    upper_holding: bool,
}

/// The release step of a layer above this one: given the pass's time and decay, it gives
/// back what it keeps and returns the bytes released and whether it still keeps pages.
/// The heap profiler registers one for its freed sampled blocks, whose table is above us.
pub(crate) type UpperRelease = fn(now_ms: u32, decay_ms: u32) -> (usize, bool);

/// Has every later pass run `release` (the last registered).
pub(crate) fn register_upper_release(release: UpperRelease) {
    UPPER_RELEASE.store(release as *mut (), Ordering::Release);
}

/// Runs the registered [`UpperRelease`], if any.
fn upper_release(now: u32, decay: u32) -> (usize, bool) {
    let release = UPPER_RELEASE.load(Ordering::Acquire);
    if release.is_null() {
        return (0, false);
    }
    // SAFETY: only `register_upper_release` stores here, an `UpperRelease`.
    let release = unsafe { core::mem::transmute::<*mut (), UpperRelease>(release) };
    release(now, decay)
}

/// Starts the background thread; false if it could not be started (the ticker then runs
/// the passes).
fn start_background_thread(reclaim: ReclaimCaches) -> bool {
    if BACKGROUND
        .compare_exchange(NOT_STARTED, STARTING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return true;
    }
    // Created with every signal blocked: it must never take a signal meant for the
    // program (see `os::start_background_thread`).
    let started = os::start_background_thread(
        background_main,
        reclaim as *mut core::ffi::c_void,
        BACKGROUND_STACK_BYTES,
    );
    BACKGROUND.store(if started { RUNNING } else { FAILED }, Ordering::Release);
    started
}

/// The background thread; its argument is the caches' reclaimer.
extern "C" fn background_main(reclaim: *mut core::ffi::c_void) -> *mut core::ffi::c_void {
    // SAFETY: `start_background_thread` passes a `ReclaimCaches` as the argument.
    let reclaim = unsafe { core::mem::transmute::<*mut core::ffi::c_void, ReclaimCaches>(reclaim) };
    os::name_this_thread(c"ebbmalloc-trim");
    while config::enabled(Setting::BackgroundThread) {
        let pass = {
            let _guard = PASS_LOCK.lock();
            run_pass(os::now_ms(), false, reclaim)
        };
        if pass.released > 0 && config::enabled(Setting::Verbose) {
            crate::fatal::print_line(format_args!(
                "ebbmalloc: background pass released {} KiB\n",
                pass.released >> 10
            ));
        }
        // With resident free memory, or batches parked or blocks cached that may turn into
        // it, come back after an interval (frees in the meantime do not wake us: their
        // pages are younger than the decay anyway); otherwise sleep until memory is freed.
        if pass.batches_parked
            || pass.caches_holding
            || arena::has_dirty_pages()
            || large::mapped_bytes().1 > 0
            || pass.upper_holding
        {
            os::sleep_ms(config::get(Setting::TrimIntervalMs) as u32);
        } else {
            MEMORY_FREED.wait_ms(IDLE_SLEEP_MS);
        }
    }
    BACKGROUND.store(NOT_STARTED, Ordering::Release);
    core::ptr::null_mut()
}

/// The pass lock, for the fork handlers (`lifecycle.rs`).
pub(crate) fn lock_for_fork() -> &'static RawMutex {
    PASS_LOCK.raw()
}

/// Fork support, in the child: the background thread did not survive the fork; it starts
/// again lazily.
pub(crate) fn forget_background_thread_after_fork() {
    BACKGROUND.store(NOT_STARTED, Ordering::Relaxed);
}
