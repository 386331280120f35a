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
//!   one that forked, marks them free and restarts the background trimmer lazily.

use crate::config::{self, Setting};
use crate::sync::{model_static, AtomicU32, Ordering};
use crate::{arena, central, large, thread_cache, trim};

const NOT_SET_UP: u32 = 0;
const SETTING_UP: u32 = 1;
const SET_UP: u32 = 2;

model_static! {
    static SETUP: AtomicU32 = AtomicU32::new(NOT_SET_UP);
}
model_static! {
    /// The pthread key whose destructor runs at thread exit; valid once `SETUP == SET_UP`.
    static THREAD_KEY: AtomicU32 = AtomicU32::new(0);
}

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
    // SAFETY: `key` was created by `set_up_process`; any non-null value makes glibc call
    // the destructor at thread exit.
    unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, 1 as *const libc::c_void) == 0 }
}

/// Loom's threads are not OS threads and no key destructor runs when they end: the models
/// call [`thread_cache::tear_down_this_thread`] themselves, as the destructor does.
#[cfg(loom)]
fn call_at_thread_exit(_key: u32) -> bool {
    true
}

#[cold]
fn set_up_process() -> bool {
    if SETUP
        .compare_exchange(NOT_SET_UP, SETTING_UP, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        return SETUP.load(Ordering::Acquire) == SET_UP;
    }
    config::read_environment();
    let key = install_process_hooks();
    if config::enabled(Setting::Verbose) {
        config::print_settings();
    }
    THREAD_KEY.store(key, Ordering::Relaxed);
    SETUP.store(SET_UP, Ordering::Release);
    true
}

/// Creates the thread-exit key and installs the fork and exit handlers; returns the key.
#[cfg(not(loom))]
fn install_process_hooks() -> u32 {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: plain libc calls with valid arguments; the handlers are `extern "C"`
    // functions that live for the whole process.
    unsafe {
        if libc::pthread_key_create(&mut key, Some(on_thread_exit)) != 0 {
            crate::fatal::fatal("pthread_key_create failed, error", 0);
        }
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        );
    }
    if config::enabled(Setting::StatsAtExit) {
        // SAFETY: registering an `extern "C"` function that lives for the whole process.
        unsafe { libc::atexit(crate::stats::print_stats_at_exit) };
    }
    key as u32
}

/// Under loom no process hook is installed: every execution sets the process up afresh,
/// and the models neither fork nor exit.
#[cfg(loom)]
fn install_process_hooks() -> u32 {
    0
}

extern "C" fn on_thread_exit(_value: *mut libc::c_void) {
    thread_cache::tear_down_this_thread();
}

extern "C" fn before_fork() {
    trim::lock_before_fork();
    thread_cache::lock_before_fork();
    central::lock_before_fork();
    arena::lock_before_fork();
    large::lock_before_fork();
}

extern "C" fn after_fork_in_parent() {
    large::unlock_after_fork_in_parent();
    arena::unlock_after_fork_in_parent();
    central::unlock_after_fork_in_parent();
    thread_cache::unlock_after_fork_in_parent();
    trim::unlock_after_fork_in_parent();
}

extern "C" fn after_fork_in_child() {
    large::reset_after_fork_in_child();
    arena::reset_after_fork_in_child();
    central::reset_after_fork_in_child();
    thread_cache::reset_after_fork_in_child();
    trim::reset_after_fork_in_child();
}
