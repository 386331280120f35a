//! Synchronisation primitives, the only module that names atomics.
//!
//! Under `cfg(loom)` the atomics are loom's, so the concurrency models in `tests/loom*`
//! explore every interleaving of the code that uses them; otherwise they are `core`'s.
//!
//! [`Mutex`] is a three-state futex lock (the design of Drepper's "Futexes Are Tricky",
//! also used by Rust's std on Linux). It never allocates, can be a `static`, and can be
//! reset in a forked child. State table of its word:
//!
//! | value | meaning                                  |
//! |-------|------------------------------------------|
//! | 0     | unlocked                                 |
//! | 1     | locked, no thread is (known to be) asleep |
//! | 2     | locked, some thread may sleep in `futex`  |
//!
//! A locker that finds the lock taken spins briefly (critical sections here are a few
//! dozen instructions), then marks it 2 and sleeps; an unlocker that swaps out a 2 wakes one
//! sleeper. Sleeping rather than spinning matters with more threads than cores.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

/// A futex-based mutual exclusion lock with no data of its own (the data it guards lives
/// beside it in an `UnsafeCell`, see each user).
pub(crate) struct Mutex {
    state: AtomicU32,
}

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;
/// Attempts to take a busy lock by spinning before going to sleep.
const SPIN_LIMIT: u32 = 100;

impl Mutex {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Mutex {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Mutex {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
        }
    }

    /// Takes the lock; the guard releases it.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_> {
        self.raw_lock();
        MutexGuard { mutex: self }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(MutexGuard { mutex: self })
    }

    /// Takes the lock without a guard; pair with [`Mutex::raw_unlock`]. Used by the fork
    /// handlers, which lock in one function and unlock in another.
    #[inline]
    pub(crate) fn raw_lock(&self) {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0;
        while spins < SPIN_LIMIT {
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            core::hint::spin_loop();
            spins += 1;
        }
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED);
        }
    }

    /// Releases a lock taken with [`Mutex::raw_lock`].
    #[inline]
    pub(crate) fn raw_unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake_one(&self.state);
        }
    }

    /// Makes the lock free again without waking anybody: only for a forked child, where
    /// the threads that could hold or wait on it no longer exist.
    pub(crate) fn reset_in_child(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }
}

/// Holds a [`Mutex`] until dropped.
pub(crate) struct MutexGuard<'a> {
    mutex: &'a Mutex,
}

impl Drop for MutexGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.mutex.raw_unlock();
    }
}

/// A one-way signal from many notifiers to one sleeper (the background trimmer): the
/// sleeper waits with a time-out and is woken early by [`Event::notify`]. Notifying costs
/// one atomic swap, plus a system call only when the sleeper is asleep.
///
/// | value | meaning                                   |
/// |-------|-------------------------------------------|
/// | 0     | nothing to report, sleeper awake          |
/// | 1     | notified since the sleeper last looked    |
/// | 2     | sleeper asleep in `futex`, not notified   |
pub(crate) struct Event {
    word: AtomicU32,
}

/// Notified when memory becomes free and idle (a pool's pages go back to their arena, a
/// large mapping goes into the cache); the background trimmer sleeps on it.
#[cfg(not(loom))]
pub(crate) static MEMORY_FREED: Event = Event::new();

const EVENT_IDLE: u32 = 0;
const EVENT_NOTIFIED: u32 = 1;
const EVENT_SLEEPING: u32 = 2;

impl Event {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Event {
        Event {
            word: AtomicU32::new(EVENT_IDLE),
        }
    }

    /// Reports something to the sleeper, waking it if it sleeps.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.word.load(Ordering::Relaxed) == EVENT_NOTIFIED {
            return;
        }
        if self.word.swap(EVENT_NOTIFIED, Ordering::Release) == EVENT_SLEEPING {
            futex_wake_one(&self.word);
        }
    }

    /// Sleeps up to `ms` milliseconds unless notified since the last call; returns whether
    /// a notification came.
    pub(crate) fn wait_ms(&self, ms: u32) -> bool {
        if self
            .word
            .compare_exchange(
                EVENT_IDLE,
                EVENT_SLEEPING,
                Ordering::Acquire,
                Ordering::Acquire,
            )
            .is_ok()
        {
            futex_wait_ms(&self.word, EVENT_SLEEPING, Some(ms));
        }
        self.word.swap(EVENT_IDLE, Ordering::Acquire) == EVENT_NOTIFIED
    }
}

#[cfg(not(loom))]
fn futex_wait(word: &AtomicU32, expected: u32) {
    futex_wait_ms(word, expected, None);
}

/// Sleeps while `*word == expected`, for at most `timeout_ms` when given.
#[cfg(not(loom))]
fn futex_wait_ms(word: &AtomicU32, expected: u32, timeout_ms: Option<u32>) {
    let timeout = timeout_ms.map(|ms| libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    });
    let timeout_ptr = match &timeout {
        Some(t) => t as *const libc::timespec,
        None => core::ptr::null(),
    };
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which lives as long as the
    // call, and the relative timeout we own; a spurious or interrupted return is fine, the
    // caller re-checks the state.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            timeout_ptr,
        );
    }
}

#[cfg(not(loom))]
fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address of `word` as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

#[cfg(loom)]
fn futex_wait(_word: &AtomicU32, _expected: u32) {
    loom::thread::yield_now();
}

#[cfg(loom)]
fn futex_wait_ms(_word: &AtomicU32, _expected: u32, _timeout_ms: Option<u32>) {
    loom::thread::yield_now();
}

#[cfg(loom)]
fn futex_wake_one(_word: &AtomicU32) {}
