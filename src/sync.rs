//! Synchronisation primitives, the only module that names atomics.
//!
//! Under `cfg(loom)` the atomics are loom's, so the concurrency models (`loom_models.rs`)
//! explore the interleavings of the real code that uses them; otherwise they are `core`'s.
//! What else changes under loom, all of it here or declared through this module:
//!
//! - statics holding atomics or locks are declared with [`model_static!`], which makes them
//!   `loom::lazy_static!`s, built afresh for every execution loom explores;
//! - thread-locals are loom's (`sync::thread_local!`): loom's threads share one OS thread,
//!   so a real thread-local would be shared by all of them;
//! - the [`RawMutex`] spins once instead of a hundred times before it sleeps, and a
//!   [`Futex`] word sleeps on a loom condition variable (checking the word under its
//!   mutex, as the kernel checks it atomically with going to sleep), so a lost wake-up
//!   shows as a deadlock; each lock guard holds a tracked access to a loom cell that
//!   stands for the guarded data, so loom checks that every critical section
//!   happens-after the previous one (mutual exclusion *and* the acquire/release orderings);
//! - atomics in memory the allocator maps for itself once per process and never models
//!   (the chunk map) stay `core`'s: [`unmodelled`].
//!
//! [`Mutex<T>`] holds its data and gives access to it only through its guard. Its lock,
//! [`RawMutex`], is a three-state futex lock (the design of Drepper's "Futexes Are Tricky",
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
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use core::cell::UnsafeCell;

/// Loom's thread-locals, one per loom thread.
#[cfg(loom)]
pub(crate) use loom::thread_local;

/// Atomics that stay `core`'s under loom: they live in memory mapped from the OS (the chunk
/// map, an arena's page map and out-block bitmap), which loom's atomics, handles into the
/// model's state, cannot live in, and no model is about them.
pub(crate) mod unmodelled {
    pub(crate) use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize};
}

/// Declares a `static` that the loom models can use: a plain `static` normally and, under
/// `cfg(loom)`, a `loom::lazy_static!` made afresh for every execution (loom's atomics
/// cannot be built in a constant). `, loom = EXPR` gives the value under loom when the
/// plain initialiser needs a `const` constructor. Several statics without `loom =` may be
/// declared in one invocation.
macro_rules! model_static {
    (
        $(#[$attr:meta])* $(pub($vis:ident))? static $name:ident: $ty:ty = $init:expr,
        loom = $loom:expr;
    ) => {
        #[cfg(not(loom))]
        $(#[$attr])*
        $(pub($vis))? static $name: $ty = $init;
        #[cfg(loom)]
        loom::lazy_static! {
            $(#[$attr])*
            $(pub($vis))? static ref $name: $ty = $loom;
        }
    };
    ($($(#[$attr:meta])* $(pub($vis:ident))? static $name:ident: $ty:ty = $init:expr;)+) => {
        $(
            $crate::sync::model_static!(
                $(#[$attr])* $(pub($vis))? static $name: $ty = $init, loom = $init;
            );
        )+
    };
}
pub(crate) use model_static;

/// A lock and the data it guards: the data is reached only through the guard that
/// [`Mutex::lock`] returns, so "we hold the lock" is a fact the compiler checks rather than
/// a comment. The lock itself is a [`RawMutex`].
pub(crate) struct Mutex<T> {
    raw: RawMutex,
    data: UnsafeCell<T>,
    /// Stands for the data the lock guards: every guard holds a tracked mutable access.
    #[cfg(loom)]
    guarded: loom::cell::UnsafeCell<()>,
}

// SAFETY: the data is only reached through a guard, and one guard exists at a time (the
// lock's mutual exclusion, with acquire/release ordering between holders), so sharing the
// `Mutex` shares `T` between threads one at a time: `T: Send` is all it needs.
unsafe impl<T: Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    #[cfg(not(loom))]
    pub(crate) const fn new(data: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            data: UnsafeCell::new(data),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new(data: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            data: UnsafeCell::new(data),
            guarded: loom::cell::UnsafeCell::new(()),
        }
    }

    /// Takes the lock; the guard gives access to the data and releases the lock.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        self.guard()
    }

    /// Takes the lock if it is free.
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.raw.try_lock().then(|| self.guard())
    }

    /// The guard of a lock just taken.
    #[inline]
    fn guard(&self) -> MutexGuard<'_, T> {
        MutexGuard {
            mutex: self,
            #[cfg(loom)]
            access: Some(self.guarded.get_mut()),
        }
    }

    /// The lock alone, for the fork handlers (`lifecycle.rs`), which take it in one
    /// function and release it in another, without touching the data.
    pub(crate) fn raw(&self) -> &RawMutex {
        &self.raw
    }
}

/// Holds a [`Mutex`] until dropped, and gives access to its data meanwhile.
pub(crate) struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    /// The tracked access to the guarded data, ended just before the lock is released.
    #[cfg(loom)]
    access: Option<loom::cell::MutPtr<()>>,
}

impl<T> core::ops::Deref for MutexGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no other reference to the data exists.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> core::ops::DerefMut for MutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and the guard is borrowed mutably.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        #[cfg(loom)]
        drop(self.access.take());
        self.mutex.raw.unlock();
    }
}

/// A futex-based mutual exclusion lock with no data (see the state table at the top). Only
/// [`Mutex`] and the fork handlers use it directly.
pub(crate) struct RawMutex {
    state: Futex,
}

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;
/// Attempts to take a busy lock by spinning before going to sleep (one under loom, where
/// every attempt multiplies the interleavings to explore).
const SPIN_LIMIT: u32 = if cfg!(loom) { 1 } else { 100 };

impl RawMutex {
    #[cfg(not(loom))]
    const fn new() -> RawMutex {
        RawMutex {
            state: Futex::new(UNLOCKED),
        }
    }

    #[cfg(loom)]
    fn new() -> RawMutex {
        RawMutex {
            state: Futex::new(UNLOCKED),
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    fn try_lock(&self) -> bool {
        self.state
            .word
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock; pair with [`RawMutex::unlock`].
    #[inline]
    pub(crate) fn lock(&self) {
        if !self.try_lock() {
            self.lock_contended();
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let word = &self.state.word;
        let mut spins = 0;
        while spins < SPIN_LIMIT {
            if word.load(Ordering::Relaxed) == UNLOCKED && self.try_lock() {
                return;
            }
            core::hint::spin_loop();
            spins += 1;
        }
        while word.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            self.state.wait(CONTENDED, None);
        }
    }

    /// Releases the lock.
    #[inline]
    pub(crate) fn unlock(&self) {
        if self.state.word.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            self.state.wake_one();
        }
    }

    /// Makes the lock free again without waking anybody: only for a forked child, where
    /// the threads that could hold or wait on it no longer exist.
    pub(crate) fn reset_in_child(&self) {
        self.state.word.store(UNLOCKED, Ordering::Relaxed);
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
    word: Futex,
}

model_static! {
    /// Notified when memory becomes free and idle (a pool's pages go back to their arena, a
    /// large mapping goes into the cache); the background trimmer sleeps on it.
    pub(crate) static MEMORY_FREED: Event = Event::new();
}

const EVENT_IDLE: u32 = 0;
const EVENT_NOTIFIED: u32 = 1;
const EVENT_SLEEPING: u32 = 2;

impl Event {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Event {
        Event {
            word: Futex::new(EVENT_IDLE),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Event {
        Event {
            word: Futex::new(EVENT_IDLE),
        }
    }

    /// Reports something to the sleeper, waking it if it sleeps.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.word.word.load(Ordering::Relaxed) == EVENT_NOTIFIED {
            return;
        }
        if self.word.word.swap(EVENT_NOTIFIED, Ordering::Release) == EVENT_SLEEPING {
            self.word.wake_one();
        }
    }

    /// Sleeps up to `ms` milliseconds unless notified since the last call; returns whether
    /// a notification came.
    pub(crate) fn wait_ms(&self, ms: u32) -> bool {
        if self
            .word
            .word
            .compare_exchange(
                EVENT_IDLE,
                EVENT_SLEEPING,
                Ordering::Acquire,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.word.wait(EVENT_SLEEPING, Some(ms));
        }
        self.word.word.swap(EVENT_IDLE, Ordering::Acquire) == EVENT_NOTIFIED
    }
}

/// A 32-bit atomic word threads can sleep on until it changes: Linux's futex. Under loom
/// the sleepers wait on a loom condition variable instead of in the kernel.
struct Futex {
    word: AtomicU32,
    /// Under loom: held while checking the word before sleeping and while waking, as the
    /// kernel's futex bucket lock is.
    #[cfg(loom)]
    sleepers: loom::sync::Mutex<()>,
    #[cfg(loom)]
    wake_up: loom::sync::Condvar,
}

impl Futex {
    #[cfg(not(loom))]
    const fn new(value: u32) -> Futex {
        Futex {
            word: AtomicU32::new(value),
        }
    }

    #[cfg(loom)]
    fn new(value: u32) -> Futex {
        Futex {
            word: AtomicU32::new(value),
            sleepers: loom::sync::Mutex::new(()),
            wake_up: loom::sync::Condvar::new(),
        }
    }

    /// Sleeps while the word is `expected`, for at most `timeout_ms` when given. May return
    /// early (interrupted, spuriously woken): callers re-check the word.
    #[cfg(not(loom))]
    fn wait(&self, expected: u32, timeout_ms: Option<u32>) {
        crate::os::futex_wait(&self.word, expected, timeout_ms);
    }

    /// Under loom: sleeps until woken if the word is `expected`. A time-out is not
    /// modelled: a sleeper nobody wakes is a deadlock loom reports.
    #[cfg(loom)]
    fn wait(&self, expected: u32, _timeout_ms: Option<u32>) {
        let sleepers = self.sleepers.lock().unwrap();
        if self.word.load(Ordering::Relaxed) == expected {
            drop(self.wake_up.wait(sleepers).unwrap());
        }
    }

    /// Wakes one thread sleeping on the word, if any.
    #[cfg(not(loom))]
    fn wake_one(&self) {
        crate::os::futex_wake_one(&self.word);
    }

    #[cfg(loom)]
    fn wake_one(&self) {
        let _sleepers = self.sleepers.lock().unwrap();
        self.wake_up.notify_one();
    }
}

/// An asymmetric fence pair, for a handshake between a thread that runs often and must stay
/// cheap and one that runs rarely (the thread caches' owners and the trimmer, see
/// `thread_cache.rs`), as in user-space RCU and folly's `asymmetric_thread_fence_*`: the
/// frequent side's [`light_fence`] costs nothing at run time (it only stops the compiler
/// from moving memory accesses across it); the rare side's [`heavy_fence`] makes every
/// running thread of the process execute a full barrier (`membarrier(2)`,
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`). Between the two, any pair "store A; light fence;
/// load B" and "store B; heavy fence; load A" sees at least one of the stores, as with two
/// full fences: the light side's load either ran before the barrier forced on its CPU, and
/// then its store was visible before `heavy_fence` returned, or after it, and then it sees
/// the heavy side's store.
///
/// Under loom both sides are a read-modify-write of one shared word: the two are ordered in
/// its modification order, and the later one acquires what the earlier one released,
/// which is exactly the guarantee above.
#[inline(always)]
pub(crate) fn light_fence() {
    #[cfg(not(loom))]
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(loom)]
    ASYMMETRIC_FENCE.fetch_add(0, Ordering::AcqRel);
}

/// The heavy side of the asymmetric fence (see [`light_fence`]): false when the kernel has
/// no `membarrier` for us (then nothing was ordered, and the caller must not rely on it).
/// The process registers at the first call, again after a fork.
pub(crate) fn heavy_fence() -> bool {
    #[cfg(not(loom))]
    {
        match MEMBARRIER.load(Ordering::Relaxed) {
            MEMBARRIER_REFUSED => return false,
            MEMBARRIER_REGISTERED => {}
            _ => {
                let registered = crate::os::register_membarrier();
                MEMBARRIER.store(
                    if registered {
                        MEMBARRIER_REGISTERED
                    } else {
                        MEMBARRIER_REFUSED
                    },
                    Ordering::Relaxed,
                );
                if !registered {
                    return false;
                }
            }
        }
        crate::os::membarrier_private_expedited()
    }
    #[cfg(loom)]
    {
        ASYMMETRIC_FENCE.fetch_add(0, Ordering::AcqRel);
        true
    }
}

/// Fork support, in the child: the `membarrier` registration belonged to the parent's
/// address space.
pub(crate) fn forget_membarrier_after_fork() {
    #[cfg(not(loom))]
    MEMBARRIER.store(MEMBARRIER_UNKNOWN, Ordering::Relaxed);
}

#[cfg(not(loom))]
const MEMBARRIER_UNKNOWN: u32 = 0;
#[cfg(not(loom))]
const MEMBARRIER_REGISTERED: u32 = 1;
#[cfg(not(loom))]
const MEMBARRIER_REFUSED: u32 = 2;

/// Whether this process is registered for `membarrier` (see [`heavy_fence`]).
#[cfg(not(loom))]
static MEMBARRIER: AtomicU32 = AtomicU32::new(MEMBARRIER_UNKNOWN);

#[cfg(loom)]
loom::lazy_static! {
    /// The word both sides of the asymmetric fence update under loom.
    static ref ASYMMETRIC_FENCE: AtomicU32 = AtomicU32::new(0);
}
