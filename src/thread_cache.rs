//! Thread caches: per thread and size class, a LIFO list of free blocks.
//!
//! The fast paths ([`alloc`], [`free`]) are a thread-local load, a pop or a push, and a
//! count update: no atomic operation, no lock, no call. Everything else is in `#[cold]`
//! functions, besides the double-free mark: `free` checks and writes a block's second word,
//! `alloc` clears it (see `block.rs`). (With the `hardened` feature the fast paths check and
//! flip the block's live bit instead, and links are encoded; see `hardened.rs`.) The slow
//! paths:
//!
//! - a **miss** (empty list) refills a batch from the central list of the class, and raises
//!   the class's limit by a batch (up to `max_cached` and the thread's byte budget), so a
//!   class in heavy use keeps more blocks;
//! - an **overflow** (count at the limit) flushes a batch to the central list;
//! - at **thread exit** a pthread key destructor (see `lifecycle.rs`) flushes everything.
//!
//! The state of a cache is a small machine, kept off the fast path by the limits:
//!
//! | state        | limits          | what the slow path does                          |
//! |--------------|-----------------|--------------------------------------------------|
//! | `Unset`      | all 0           | an allocation sets the thread up (`Active`); a free goes to central's remote stack |
//! | `SettingUp`  | all 0           | (re-entered from set-up) goes straight to central |
//! | `Active`     | batch..max      | refills and flushes                              |
//! | `TornDown`   | all 0           | goes straight to central (later TLS destructors, glibc's own exit) |
//!
//! With limits at 0 and lists empty, every operation of a non-active cache misses the
//! fast path, so the fast path never looks at the state.
//!
//! Invariants: `room == limit - |list| >= 0` between operations; `limit_bytes ==
//! sum over classes of limit * size <= byte budget` (the budget bounds what a thread can
//! hold, the count bounds are checked on the slow path only).
//!
//! **Giving back idle blocks.** Active caches are linked into a registry (for statistics
//! and trimming). Each trimming pass advances `trim::epoch()`; a cache notices on its next slow
//! path and, for every class that did not run dry since the last time (its low-water mark
//! stayed above zero, so the blocks below it were not needed), flushes half of its blocks
//! and halves its limit (not below a batch). A class in use keeps its blocks; an idle one
//! shrinks geometrically. A thread that is parked never reaches a slow path, so what it
//! keeps is bounded by its byte budget.

use crate::block::{next_of, set_next, Batch, Block};
use crate::central;
use crate::config::{self, Setting};
use crate::list::{Linked, Links, List};
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::sync::{model_static, AtomicI32, AtomicU32, Mutex, Ordering, RawMutex, MEMORY_FREED};
use crate::{sanitizer, tls, trim};
use core::ptr;

model_static! {
    /// The registry of active caches, for statistics and the fork handlers. A thread
    /// unregisters before its cache goes away, so under the lock every listed cache lives.
    static REGISTRY: Mutex<List<ThreadCache>> = Mutex::new(List::new());
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Zero: the state of a fresh TLS block.
    Unset = 0,
    SettingUp,
    Active,
    TornDown,
}

/// One class of a thread cache.
///
/// The bin keeps `room == limit - |list|` rather than the list's length: a free then
/// decrements one word and branches on its sign, with no compare against the limit (three
/// instructions fewer on every free, which pays for the double-free mark). Both counters
/// are written only by the owner (plain loads and stores) and read by statistics.
#[repr(C)]
struct Bin {
    head: *mut Block,
    /// Blocks the list may still take; `>= 0` between operations (a free that finds it at
    /// 0 leaves it at -1 for the slow path, which puts it back first).
    room: AtomicI32,
    limit: AtomicU32,
    /// The list ran dry since the last idle-block check.
    went_empty: bool,
}

impl Bin {
    /// Blocks in the list. Exact for the owner; for another thread (statistics) a racy
    /// estimate, kept within `0..=limit` (between the owner's two stores of a limit change
    /// the difference can be anything).
    fn count(&self) -> u32 {
        let limit = self.limit();
        (limit as i32 - self.room.load(Ordering::Relaxed)).clamp(0, limit as i32) as u32
    }

    fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Makes `list` the bin's list (its count at most the limit).
    fn set_list(&mut self, list: Batch) {
        self.head = list.head;
        self.room
            .store(self.limit() as i32 - list.count as i32, Ordering::Relaxed);
    }

    /// Changes the limit, keeping the list.
    fn set_limit(&mut self, limit: u32) {
        let count = self.count();
        self.limit.store(limit, Ordering::Relaxed);
        self.room
            .store(limit as i32 - count as i32, Ordering::Relaxed);
    }
}

/// A thread's cache.
pub(crate) struct ThreadCache {
    bins: [Bin; NUM_CLASSES],
    state: State,
    limit_bytes: usize,
    byte_budget: usize,
    /// A copy of the double-free mark (`block.rs`), set when the cache becomes active: the
    /// fast path reads it beside the bins rather than through the GOT.
    #[cfg(not(feature = "hardened"))]
    free_mark: usize,
    seen_epoch: u32,
    /// Its place in the registry (while active).
    links: Links<ThreadCache>,
}

// SAFETY: `links` is a field of the node itself.
unsafe impl Linked for ThreadCache {
    fn links(node: *mut ThreadCache) -> *mut Links<ThreadCache> {
        // SAFETY: a field address of the node, computed without reading it.
        unsafe { ptr::addr_of_mut!((*node).links) }
    }
}

// The cache lives in this thread's TLS block (see `tls.rs`), which starts zeroed: every
// field above is valid as zero bytes (null lists, zero counts and limits, `State::Unset`).
const _: () = assert!(core::mem::size_of::<ThreadCache>() <= tls::BLOCK_BYTES);
const _: () = assert!(core::mem::align_of::<ThreadCache>() <= 64);

/// This thread's cache. Callers touch it through the raw pointer only and never keep a
/// reference across a call that could re-enter the allocator.
#[cfg(not(loom))]
#[inline(always)]
fn this_thread() -> *mut ThreadCache {
    tls::this_thread_block() as *mut ThreadCache
}

/// This loom thread's cache: a loom thread-local (loom's threads share one OS thread, and
/// so the TLS block), built as the TLS block would be but with loom's atomics made.
#[cfg(loom)]
fn this_thread() -> *mut ThreadCache {
    crate::sync::thread_local! {
        static CACHE: core::cell::UnsafeCell<ThreadCache> = core::cell::UnsafeCell::new(ThreadCache {
            bins: core::array::from_fn(|_| Bin {
                head: ptr::null_mut(),
                room: AtomicI32::new(0),
                limit: AtomicU32::new(0),
                went_empty: false,
            }),
            state: State::Unset,
            limit_bytes: 0,
            byte_budget: 0,
            #[cfg(not(feature = "hardened"))]
            free_mark: 0,
            seen_epoch: 0,
            links: Links::new(),
        });
    }
    CACHE.with(|cache| cache.get())
}

/// The bin of `class` in `cache`.
///
/// # Safety
/// `cache` is this thread's cache.
#[inline(always)]
unsafe fn bin(cache: *mut ThreadCache, class: SizeClass) -> *mut Bin {
    // SAFETY: the class index is below NUM_CLASSES, the length of `bins`.
    unsafe {
        ptr::addr_of_mut!((*cache).bins)
            .cast::<Bin>()
            .add(class.index())
    }
}

/// A block of `class`, or null when memory is exhausted.
///
/// `register_thread` is called once per thread, when its cache is first set up: it
/// arranges for [`tear_down_this_thread`] to run at the thread's exit and sets the
/// process up, and returns false when it cannot yet (set-up under way). It is
/// `lifecycle::register_thread`, passed down by the front so that this layer never calls
/// the lifecycle layer above it (and the loom models can pass their own).
#[cfg(not(feature = "hardened"))]
#[inline(always)]
pub(crate) fn alloc(class: SizeClass, register_thread: impl FnOnce() -> bool) -> *mut u8 {
    alloc_unchecked(class, register_thread)
}

/// A block of `class`, or null when memory is exhausted; marked live (see `hardened.rs`).
/// `register_thread` as in the default build's `alloc`.
#[cfg(feature = "hardened")]
#[inline(always)]
pub(crate) fn alloc(class: SizeClass, register_thread: impl FnOnce() -> bool) -> *mut u8 {
    let block = alloc_unchecked(class, register_thread);
    if !block.is_null() {
        // SAFETY: the block was just taken off a free list of the class.
        unsafe { crate::hardened::on_alloc(block, class) };
    }
    block
}

#[inline(always)]
fn alloc_unchecked(class: SizeClass, register_thread: impl FnOnce() -> bool) -> *mut u8 {
    let cache = this_thread();
    // SAFETY: the cache is this thread's; a non-null head is a free block of the class.
    unsafe {
        let bin = bin(cache, class);
        let block = (*bin).head;
        if !block.is_null() {
            (*bin).head = next_of(block, class);
            let room = (*bin).room.load(Ordering::Relaxed);
            (*bin).room.store(room + 1, Ordering::Relaxed);
            sanitizer::handed_out(block as *mut u8, class.size(), false);
            #[cfg(not(feature = "hardened"))]
            crate::block::clear_mark(block as *mut u8);
            return block as *mut u8;
        }
        alloc_slow(cache, class, register_thread)
    }
}

/// Takes back a block of `class`.
///
/// # Safety
/// `block` was allocated by this allocator as a block of `class` and is not used again.
#[inline(always)]
pub(crate) unsafe fn free(block: *mut u8, class: SizeClass) {
    #[cfg(feature = "hardened")]
    {
        // SAFETY: the caller's promise: a block of `class`, so in a live pool.
        unsafe { crate::hardened::on_free(block, class) };
    }
    let cache = this_thread();
    let block = block as *mut Block;
    // SAFETY: the cache is this thread's; the caller hands the block over.
    unsafe {
        let bin = bin(cache, class);
        // Decremented before the test (one `dec` on memory, then a branch on its sign); a
        // full bin's slow path puts the unit back.
        let room = (*bin).room.load(Ordering::Relaxed) - 1;
        (*bin).room.store(room, Ordering::Relaxed);
        if room >= 0 {
            // Room means an active cache, whose copy of the mark is set.
            // The mark is written while the block is still the program's, before the
            // sanitizers are told it is ours.
            #[cfg(not(feature = "hardened"))]
            crate::block::mark_freed(block as *mut u8, (*cache).free_mark);
            sanitizer::taken_back(block as *mut u8, class.size());
            set_next(block, (*bin).head);
            (*bin).head = block;
            return;
        }
        free_slow(cache, class, block);
    }
}

/// A miss: a block from the central list, handed out; null, with `ENOMEM` in `errno`, when
/// memory is exhausted.
///
/// # Safety
/// `cache` is this thread's cache.
#[cold]
#[inline(never)]
unsafe fn alloc_slow(
    cache: *mut ThreadCache,
    class: SizeClass,
    register_thread: impl FnOnce() -> bool,
) -> *mut u8 {
    // SAFETY: by the caller's promise.
    let block = unsafe { refill_and_take(cache, class, register_thread) };
    // SAFETY: a block of `class` (or null) that goes to the program.
    unsafe { sanitizer::handed_out(block, class.size(), false) };
    if block.is_null() {
        crate::os::set_errno_out_of_memory();
        return block;
    }
    #[cfg(not(feature = "hardened"))]
    // SAFETY: a block of `class` just handed out.
    unsafe {
        crate::block::clear_mark(block)
    };
    block
}

/// A block from the central list; the rest of the batch becomes the bin's list.
///
/// # Safety
/// `cache` is this thread's cache.
unsafe fn refill_and_take(
    cache: *mut ThreadCache,
    class: SizeClass,
    register_thread: impl FnOnce() -> bool,
) -> *mut u8 {
    // SAFETY: `cache` is this thread's cache (caller).
    if !unsafe { ensure_active(cache, register_thread) } {
        return alloc_without_cache(class);
    }
    // SAFETY: the cache is this thread's and active.
    unsafe { give_back_idle_blocks_if_asked(cache) };
    // SAFETY: the cache is this thread's.
    if unsafe { (*bin(cache, class)).limit() } == 0 {
        // The byte budget leaves this class no room: nothing of it is cached.
        let block = alloc_without_cache(class);
        trim::tick();
        return block;
    }
    let info = class.info();
    // A refill brings at most a batch (a parked batch is never longer, see
    // `central::flush`), and a nonzero limit is at least a batch: the rest fits the bin.
    let mut batch = central::refill(class, info.batch as u32);
    // SAFETY: a refilled batch is a valid list of free blocks of the class; the bin is
    // empty (this is a miss), so the rest of the batch becomes its list.
    let block = unsafe {
        let block = batch.pop(class);
        let bin = bin(cache, class);
        (*bin).set_list(batch);
        (*bin).went_empty = true;
        raise_limit(cache, class);
        block as *mut u8
    };
    trim::tick();
    block
}

/// An overflow, or a free by a thread without an active cache.
///
/// A free never sets a cache up. glibc frees on a thread after its pthread-key destructors
/// ran (a detached thread's exit frees cached stacks' TLS through `_dl_deallocate_tls`); a
/// cache set up then would never be torn down, and the registry would keep a pointer into
/// the dead thread's TLS. So a thread that has not allocated yet, or that is torn down,
/// gives its frees one by one to the central list (the class's remote stack, shared by all
/// such threads, so nothing stays with the thread); its first allocation sets the cache up.
/// Only an active thread runs the trimmer's ticker: a thread without a cache may be inside
/// glibc's thread exit, holding its locks.
///
/// # Safety
/// `cache` is this thread's cache; the caller hands over `block`, a block of `class`.
#[cold]
#[inline(never)]
unsafe fn free_slow(cache: *mut ThreadCache, class: SizeClass, block: *mut Block) {
    // A thread without a cache frees blocks that other threads allocated: their lines are
    // in another core's cache, written (see `prefetch_for_write`).
    crate::block::prefetch_for_write(block as *mut u8);
    // SAFETY: the caller hands over a block of ours that the program held; it is the
    // program's until the sanitizers are told otherwise, after the mark.
    unsafe {
        #[cfg(not(feature = "hardened"))]
        crate::block::mark_freed(block as *mut u8, crate::block::drawn_free_mark());
        sanitizer::taken_back(block as *mut u8, class.size());
    }
    // SAFETY: `cache` is this thread's cache (caller). The fast path took a unit of room
    // that the bin did not have: put it back.
    let active = unsafe {
        let bin = bin(cache, class);
        let room = (*bin).room.load(Ordering::Relaxed);
        (*bin).room.store(room + 1, Ordering::Relaxed);
        (*cache).state == State::Active
    };
    if active {
        // SAFETY: as promised to us.
        return unsafe { free_overflow(cache, class, block) };
    }
    // SAFETY: the caller hands the block over.
    unsafe { free_without_cache(class, block) };
}

/// A free of an active thread that found no room in its bin. Out of [`free_slow`], so that
/// a thread without a cache, which frees every block through `free_slow`, pays neither for
/// a stack frame nor for register saves (10 of the 48 instructions of such a free in
/// `prodcons` under `LD_PRELOAD`).
///
/// # Safety
/// `cache` is this thread's active cache, the room of the bin of `class` is back to what it
/// was before the free (0, full); the caller hands over `block`, a marked block of `class`.
#[inline(never)]
unsafe fn free_overflow(cache: *mut ThreadCache, class: SizeClass, block: *mut Block) {
    // SAFETY: the cache is this thread's (caller).
    if unsafe { (*bin(cache, class)).limit() } == 0 {
        // The byte budget leaves this class no room: nothing of it is cached.
        // SAFETY: the caller hands the block over.
        unsafe { free_without_cache(class, block) };
        trim::tick();
        return;
    }
    // SAFETY: the cache is this thread's and active.
    unsafe { give_back_idle_blocks_if_asked(cache) };
    // SAFETY: the cache is active; the list and count agree, so splitting is sound and the
    // flushed blocks are free blocks of the class.
    unsafe {
        let bin = bin(cache, class);
        let mut list = take_list(bin);
        list.push(block);
        if list.count > (*bin).limit() {
            let flushed = list.split_front(class.info().batch as u32, class);
            central::flush(class, flushed);
        }
        (*bin).set_list(list);
    }
    trim::tick();
}

/// Empties a bin's list and returns it.
///
/// # Safety
/// `bin` is a bin of this thread's cache.
unsafe fn take_list(bin: *mut Bin) -> Batch {
    // SAFETY: by the caller's promise.
    unsafe {
        let list = Batch {
            head: (*bin).head,
            count: (*bin).count(),
        };
        (*bin).set_list(Batch::EMPTY);
        list
    }
}

/// Flushes half of every class that did not run dry since the last check, if a trimming
/// pass happened since then.
///
/// # Safety
/// `cache` is this thread's active cache.
unsafe fn give_back_idle_blocks_if_asked(cache: *mut ThreadCache) {
    let epoch = trim::epoch();
    // SAFETY: by the caller's promise.
    unsafe {
        if (*cache).seen_epoch == epoch {
            return;
        }
        (*cache).seen_epoch = epoch;
        for index in 0..NUM_CLASSES {
            let class = SizeClass::from_index_unchecked(index);
            let info = class.info();
            let bin = bin(cache, class);
            if core::mem::take(&mut (*bin).went_empty) {
                continue;
            }
            let limit = (*bin).limit();
            let lowered = (limit / 2).max(info.batch as u32).min(limit);
            (*cache).limit_bytes -= (limit - lowered) as usize * info.size as usize;
            let mut list = take_list(bin);
            let flushed = list.split_front(list.count.div_ceil(2), class);
            central::flush(class, flushed);
            (*bin).set_limit(lowered);
            (*bin).set_list(list);
        }
    }
}

/// Flushes all of this thread's cached blocks to the central lists (for `trim()`); the
/// cache stays active.
pub(crate) fn flush_this_thread() {
    let cache = this_thread();
    // SAFETY: the cache is this thread's; no reference is held across the flushes.
    unsafe {
        if (*cache).state != State::Active {
            return;
        }
        for index in 0..NUM_CLASSES {
            let class = SizeClass::from_index_unchecked(index);
            let list = take_list(bin(cache, class));
            central::flush(class, list);
        }
    }
}

/// Blocks of `class` cached by all registered threads (a racy sum, for statistics).
pub(crate) fn cached_blocks(class: SizeClass) -> usize {
    let registry = REGISTRY.lock();
    // SAFETY: we hold the registry lock, so every listed cache is alive; counts are
    // atomics.
    unsafe {
        registry
            .iter()
            .map(|cache| (*bin(cache, class)).count() as usize)
            .sum()
    }
}

/// For the loom models: the number of registered caches, after checking that the registry's
/// links agree in both directions.
#[cfg(all(test, loom))]
pub(crate) fn registered_caches() -> usize {
    let registry = REGISTRY.lock();
    let mut count = 0;
    let mut prev: *mut ThreadCache = ptr::null_mut();
    // SAFETY: we hold the registry lock, so every listed cache is alive.
    unsafe {
        for cache in registry.iter() {
            assert_eq!(List::prev(cache), prev, "registry links of {cache:p}");
            count += 1;
            prev = cache;
        }
    }
    count
}

/// Grows the limit of `class` by a batch after a miss, within `max_cached` and the budget.
///
/// # Safety
/// `cache` is this thread's active cache.
unsafe fn raise_limit(cache: *mut ThreadCache, class: SizeClass) {
    let info = class.info();
    // SAFETY: by the caller's promise.
    unsafe {
        let bin = bin(cache, class);
        let limit = (*bin).limit();
        let raised = (limit + info.batch as u32).min(info.max_cached as u32);
        let extra_bytes = (raised - limit) as usize * info.size as usize;
        if (*cache).limit_bytes + extra_bytes <= (*cache).byte_budget {
            (*cache).limit_bytes += extra_bytes;
            (*bin).set_limit(raised);
        }
    }
}

/// Makes the cache usable if it can be; false means "go to central directly".
/// `register_thread` as in [`alloc`].
///
/// # Safety
/// `cache` is this thread's cache.
unsafe fn ensure_active(cache: *mut ThreadCache, register_thread: impl FnOnce() -> bool) -> bool {
    // SAFETY: by the caller's promise; no reference is held across the set-up calls,
    // which may re-enter the allocator (and then see `SettingUp`).
    unsafe {
        match (*cache).state {
            State::Active => return true,
            State::SettingUp | State::TornDown => return false,
            State::Unset => {}
        }
        (*cache).state = State::SettingUp;
        if !register_thread() {
            (*cache).state = State::Unset;
            return false;
        }
        // Before any bin has room: the fast path then uses this copy.
        #[cfg(not(feature = "hardened"))]
        {
            (*cache).free_mark = crate::block::free_mark();
        }
        // Every class starts with a limit of one batch, as far as the budget allows (a
        // budget of 0 turns caching off: every operation goes to the central lists).
        let budget = config::get(Setting::ThreadCacheBytes) as usize;
        let mut limit_bytes = 0;
        for index in 0..NUM_CLASSES {
            let class = SizeClass::from_index_unchecked(index);
            let info = class.info();
            let bytes = info.batch as usize * info.size as usize;
            if limit_bytes + bytes <= budget {
                (*bin(cache, class)).set_limit(info.batch as u32);
                limit_bytes += bytes;
            }
        }
        (*cache).limit_bytes = limit_bytes;
        (*cache).byte_budget = budget;

        (*cache).seen_epoch = trim::epoch();
        register(cache);
        (*cache).state = State::Active;
        true
    }
}

/// Links `cache` into the registry.
///
/// # Safety
/// `cache` is this thread's cache and not registered.
unsafe fn register(cache: *mut ThreadCache) {
    // SAFETY: we hold the registry lock; listed caches are alive.
    unsafe { REGISTRY.lock().push_front(cache) };
}

/// Unlinks `cache` from the registry.
///
/// # Safety
/// `cache` is this thread's registered cache.
unsafe fn unregister(cache: *mut ThreadCache) {
    // SAFETY: we hold the registry lock; listed caches are alive.
    unsafe { REGISTRY.lock().remove(cache) };
}

/// The registry lock, for the fork handlers (`lifecycle.rs`).
pub(crate) fn lock_for_fork() -> &'static RawMutex {
    REGISTRY.raw()
}

/// Fork support, in the child after the locks are reset: only the forking thread exists;
/// its cache (if active) is the whole registry. The other threads' cached blocks are lost
/// to the child.
pub(crate) fn forget_other_threads_after_fork() {
    let cache = this_thread();
    // SAFETY: single-threaded child; the cache is this thread's and alive.
    unsafe {
        let active = (*cache).state == State::Active;
        REGISTRY
            .lock()
            .reset_to(if active { cache } else { ptr::null_mut() });
    }
}

/// Flushes this thread's cache for good; later operations of the thread go to central.
/// Called from the pthread key destructor at thread exit.
pub(crate) fn tear_down_this_thread() {
    let cache = this_thread();
    // SAFETY: the cache is this thread's. The state changes first, so a free that the
    // flush might trigger bypasses the cache.
    unsafe {
        if (*cache).state == State::Active {
            unregister(cache);
        }
        (*cache).state = State::TornDown;
        (*cache).limit_bytes = 0;
        for index in 0..NUM_CLASSES {
            let class = SizeClass::from_index_unchecked(index);
            let bin = bin(cache, class);
            let list = take_list(bin);
            (*bin).set_limit(0);
            central::flush(class, list);
        }
    }
    // The flushed batches sit in the transfer caches, where a sleeping trimmer would not
    // see them: wake it, so what an exited thread held goes back to the OS.
    MEMORY_FREED.notify();
}

/// One block of `class` straight from the central list.
fn alloc_without_cache(class: SizeClass) -> *mut u8 {
    let mut batch = central::refill(class, 1);
    // SAFETY: a refilled batch is a valid list of free blocks; what we do not use goes
    // straight back.
    unsafe {
        let block = batch.pop(class);
        central::flush(class, batch);
        block as *mut u8
    }
}

/// Pushes one block on the class's remote stack, without a lock (see `central.rs`): the
/// central list makes whole batches of such blocks for the refills of other threads; with
/// caching turned off (a budget of 0), straight to its pool.
///
/// # Safety
/// `block` is an out block of `class` handed over by the caller.
///
/// Inlined in [`free_slow`], where it is the whole work of a thread that only frees: the
/// rare cases are calls out of line (tail calls), so that the push needs no stack frame.
#[inline(always)]
unsafe fn free_without_cache(class: SizeClass, block: *mut Block) {
    match config::get_if_known(Setting::ThreadCacheBytes) {
        // SAFETY: the caller hands the block over.
        Some(budget) if budget != 0 => unsafe { push_remote(class, block) },
        // SAFETY: the caller hands the block over.
        _ => unsafe { free_without_cache_rarely(class, block) },
    }
}

/// [`free_without_cache`] before the settings are read, or with caching turned off.
///
/// # Safety
/// As [`free_without_cache`].
#[cold]
#[inline(never)]
unsafe fn free_without_cache_rarely(class: SizeClass, block: *mut Block) {
    if config::get(Setting::ThreadCacheBytes) != 0 {
        // SAFETY: the caller hands the block over.
        return unsafe { push_remote(class, block) };
    }
    let mut batch = Batch::EMPTY;
    // SAFETY: the caller hands the block over.
    unsafe {
        batch.push(block);
        central::return_to_pools(class, batch);
    }
}

/// Pushes a block on the class's remote stack.
///
/// # Safety
/// As [`free_without_cache`].
#[inline(always)]
unsafe fn push_remote(class: SizeClass, block: *mut Block) {
    // SAFETY: the caller hands the block over.
    if unsafe { central::free_one(class, block) } {
        // The trimmer may sleep with nothing to do: these blocks are for it to return to
        // their pools if nobody takes them (one atomic load when it was told already).
        tell_trimmer();
    }
}

/// Tells the trimmer that memory was freed (see [`free_without_cache`]).
#[inline(never)]
fn tell_trimmer() {
    MEMORY_FREED.notify();
}
