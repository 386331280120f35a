//! Process and thread lifecycle: one-time set-up, thread exit, and `fork`.
//!
//! - **Set-up** happens on the first slow-path operation of the first thread: a pthread key
//!   whose destructor flushes a thread's cache at exit, and `pthread_atfork` handlers. It
//!   needs no allocation of ours, but the C library may allocate inside these calls (and,
//!   under `LD_PRELOAD`, that comes back to us), so set-up is a three-state word rather
//!   than a `Once`: a thread that finds set-up in progress (another thread's, or its own
//!   further up the stack) just works without a cache for that call.
//! - **Thread exit**: each thread that activates its cache stores a non-null value under
//!   the key; glibc then calls the destructor after the thread's C++/Rust TLS destructors,
//!   and the destructor flushes the cache (see `thread_cache.rs`).
//! - **`fork`**: before it, every allocator lock is taken in the order they nest everywhere
//!   else (trimming pass, thread registry, class locks in class order, arenas, large
//!   mappings); after it the parent releases them and the child, whose only thread is the
//!   one that forked, marks them free and restarts the background trimmer lazily. A fork
//!   that falls in the middle of another thread's set-up leaves the child to finish it
//!   (`set_up_process`).

use crate::config::{self, Setting};
#[cfg(not(loom))]
use crate::os;
use crate::sync::{model_static, AtomicU32, AtomicU64, Ordering, RawMutex};
use crate::{arena, central, large, profiling, thread_cache, trim};

/// States of [`SETUP`], in its low bits; while setting up, the bits above hold the id of
/// the process whose thread does it (see [`set_up_process`]).
const NOT_SET_UP: u64 = 0;
const SETTING_UP: u64 = 1;
const SET_UP: u64 = 2;
const STATE_BITS: u32 = 2;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

model_static! {
    static SETUP: AtomicU64 = AtomicU64::new(NOT_SET_UP);
    /// The pthread key whose destructor runs at thread exit; valid once `SETUP == SET_UP`.
    static THREAD_KEY: AtomicU32 = AtomicU32::new(0);
    /// Which process hooks are installed ([`HOOK_FORK`], [`HOOK_KEY`], [`HOOK_EXIT`]): a set-up
    /// taken over in a forked child (see [`set_up_process`]) installs only what is missing.
    static HOOKS: AtomicU32 = AtomicU32::new(0);
}
const HOOK_FORK: u32 = 1;
const HOOK_KEY: u32 = 2;
const HOOK_EXIT: u32 = 4;

/// Arranges for this thread's cache to be flushed at its exit, setting up the process on
/// the first call. False when set-up is under way (the caller then goes without a cache).
pub(crate) fn register_thread() -> bool {
    if SETUP.load(Ordering::Acquire) != SET_UP && !set_up_process() {
        return false;
    }
    call_at_thread_exit(THREAD_KEY.load(Ordering::Relaxed))
}

/// Makes glibc call the destructor of `key` when this thread exits.
#[cfg(not(loom))]
fn call_at_thread_exit(key: u32) -> bool {
    os::call_at_thread_exit(key)
}

/// Loom's threads are not OS threads and no key destructor runs when they end: the models
/// call [`thread_cache::tear_down_this_thread`] themselves, as the destructor does.
#[cfg(loom)]
fn call_at_thread_exit(_key: u32) -> bool {
    true
}

/// Sets the process up once; true when it is set up, false while another thread (or this
/// one, further up the stack) is at it.
///
/// `SETUP` holds the state and, while setting up, the id of the process doing it. A
/// `fork` by another thread in the middle leaves the child with `SETTING_UP` and nobody to
/// finish: the child's first thread that sees another process's id there takes the set-up
/// over (one wins the exchange). Steps already done are not repeated ([`HOOKS`]).
#[cold]
fn set_up_process() -> bool {
    let mut seen = NOT_SET_UP;
    let mine = (u64::from(process_id()) << STATE_BITS) | SETTING_UP;
    loop {
        match SETUP.compare_exchange(seen, mine, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => break,
            Err(SET_UP) => return true,
            Err(now) if now & STATE_MASK == SETTING_UP && now != mine => seen = now,
            // Set-up under way in this process.
            Err(_) => return false,
        }
    }
    config::read_environment();
    // The C library calls below may fail inside and set errno on their way.
    let key = install_process_hooks();
    if config::enabled(Setting::Verbose) {
        config::print_settings();
    }
    THREAD_KEY.store(key, Ordering::Relaxed);
    SETUP.store(SET_UP, Ordering::Release);
    true
}

/// The id of this process (a system call, made only while setting up).
#[cfg(not(loom))]
fn process_id() -> u32 {
    os::process_id()
}

/// Loom's executions are all one process.
#[cfg(loom)]
fn process_id() -> u32 {
    1
}

/// Creates the thread-exit key and installs the fork and exit handlers, those not installed
/// yet; returns the key.
#[cfg(not(loom))]
fn install_process_hooks() -> u32 {
    let installed = HOOKS.load(Ordering::Relaxed);
    if installed & HOOK_FORK == 0 {
        os::hook_fork(before_fork, after_fork_in_parent, after_fork_in_child);
        HOOKS.fetch_or(HOOK_FORK, Ordering::Relaxed);
    }
    if installed & HOOK_KEY == 0 {
        let Some(key) = os::thread_exit_key(on_thread_exit) else {
            crate::fatal::fatal("pthread_key_create failed, error", 0);
        };
        THREAD_KEY.store(key, Ordering::Relaxed);
        HOOKS.fetch_or(HOOK_KEY, Ordering::Relaxed);
    }
    if installed & HOOK_EXIT == 0 && config::enabled(Setting::StatsAtExit) {
        os::hook_process_exit(crate::stats::print_stats_at_exit);
        HOOKS.fetch_or(HOOK_EXIT, Ordering::Relaxed);
    }
    THREAD_KEY.load(Ordering::Relaxed)
}

/// Under loom no process hook is installed: every execution sets the process up afresh,
/// and the models neither fork nor exit.
#[cfg(loom)]
fn install_process_hooks() -> u32 {
    0
}

extern "C" fn on_thread_exit(_value: *mut core::ffi::c_void) {
    thread_cache::tear_down_this_thread();
}

/// Every allocator lock, in the one order they are taken before `fork`: the order in
/// which they nest everywhere else (a thread holding one may take a later one, never an
/// earlier one), so the forking thread cannot deadlock against another thread that holds
/// some:
///
/// 1. the trimming pass (a pass takes class locks, then the arena and mapping-cache locks);
/// 2. the thread-cache registry (a pass holds it while it flushes idle threads' caches to
///    the class locks, see `thread_cache.rs`);
/// 3. the class locks, in class order (a refill holds its class lock while it carves a
///    pool from the arenas);
/// 4. the arena lock;
/// 5. the large-mapping cache lock (held alone);
/// 6. the heap profiler's lock (held alone, taken with nothing else held).
///
/// This is the only list of the allocator's locks; a new lock is added here, in its place.
fn each_lock(mut f: impl FnMut(&RawMutex)) {
    f(trim::lock_for_fork());
    f(thread_cache::lock_for_fork());
    central::locks_for_fork().for_each(&mut f);
    f(arena::lock_for_fork());
    f(large::lock_for_fork());
    f(profiling::lock_for_fork());
}

/// Takes every lock, so that the child is copied with none held halfway through a change.
extern "C" fn before_fork() {
    each_lock(RawMutex::lock);
}

extern "C" fn after_fork_in_parent() {
    each_lock(RawMutex::unlock);
}

extern "C" fn after_fork_in_child() {
    // The handlers ran, so they are registered: a set-up that the fork interrupted between
    // `pthread_atfork` and its record in `HOOKS`, and that this child takes over, must not
    // register them a second time (each lock would be taken twice at the next fork).
    HOOKS.fetch_or(HOOK_FORK, Ordering::Relaxed);
    // The child's only thread holds every lock (its parent's `before_fork`): free them,
    // with no thread to wake.
    each_lock(RawMutex::reset_in_child);
    thread_cache::forget_other_threads_after_fork();
    trim::forget_background_thread_after_fork();
    crate::sync::forget_membarrier_after_fork();
}
