//! Thread caches: per thread and size class, a LIFO list of free blocks.
//!
//! The fast paths ([`alloc`], [`free`]) are a thread-local load, a pop or a push, and a
//! count update: no atomic operation, no lock, no call. Everything else is in `#[cold]`
//! functions:
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
//! | `Unset`      | all 0           | sets the thread up, becomes `Active`             |
//! | `SettingUp`  | all 0           | (re-entered from set-up) goes straight to central |
//! | `Active`     | batch..max      | refills and flushes                              |
//! | `TornDown`   | all 0           | goes straight to central (frees from later TLS destructors) |
//!
//! With limits at 0 and lists empty, every operation of a non-active cache misses the
//! fast path, so the fast path never looks at the state.
//!
//! Invariants: `count == |list|`; `count <= limit` after every free; `limit_bytes ==
//! sum over classes of limit * size <= byte budget` (the budget bounds what a thread can
//! hold, the count bounds are checked on the slow path only).
//!
//! **Giving back idle blocks.** Active caches are linked into a registry (for statistics
//! and trimming). Each trimming pass advances [`GC_EPOCH`]; a cache notices on its next slow
//! path and, for every class that did not run dry since the last time (its low-water mark
//! stayed above zero, so the blocks below it were not needed), flushes half of its blocks
//! and halves its limit (not below a batch). A class in use keeps its blocks; an idle one
//! shrinks geometrically. A thread that is parked never reaches a slow path, so what it
//! keeps is bounded by its byte budget.

use crate::block::{Batch, Block};
use crate::central;
use crate::config::{self, Setting};
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::sync::{model_static, AtomicU32, Mutex, Ordering, MEMORY_FREED};
use crate::{lifecycle, tls};
use core::cell::UnsafeCell;
use core::ptr;

model_static! {
    /// Advanced by every trimming pass; caches that see it change give back idle blocks.
    static GC_EPOCH: AtomicU32 = AtomicU32::new(0);
}

/// The registry of active caches: a doubly linked list through `ThreadCache::prev/next`.
struct Registry {
    lock: Mutex,
    head: UnsafeCell<*mut ThreadCache>,
}

// SAFETY: `head` and the links of registered caches are only touched with `lock` held.
unsafe impl Sync for Registry {}

model_static! {
    static REGISTRY: Registry = Registry {
        lock: Mutex::new(),
        head: UnsafeCell::new(ptr::null_mut()),
    };
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
#[repr(C)]
struct Bin {
    head: *mut Block,
    /// Written only by the owner (plain loads and stores), read by statistics.
    count: AtomicU32,
    limit: u32,
    /// The list ran dry since the last idle-block check.
    went_empty: bool,
}

/// A thread's cache.
pub(crate) struct ThreadCache {
    bins: [Bin; NUM_CLASSES],
    state: State,
    limit_bytes: usize,
    byte_budget: usize,
    seen_epoch: u32,
    prev: *mut ThreadCache,
    next: *mut ThreadCache,
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
        static CACHE: UnsafeCell<ThreadCache> = UnsafeCell::new(ThreadCache {
            bins: core::array::from_fn(|_| Bin {
                head: ptr::null_mut(),
                count: AtomicU32::new(0),
                limit: 0,
                went_empty: false,
            }),
            state: State::Unset,
            limit_bytes: 0,
            byte_budget: 0,
            seen_epoch: 0,
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
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
#[inline(always)]
pub(crate) fn alloc(class: SizeClass) -> *mut u8 {
    let cache = this_thread();
    // SAFETY: the cache is this thread's; a non-null head is a free block of the class.
    unsafe {
        let bin = bin(cache, class);
        let block = (*bin).head;
        if !block.is_null() {
            (*bin).head = (*block).next;
            let count = (*bin).count.load(Ordering::Relaxed);
            (*bin).count.store(count - 1, Ordering::Relaxed);
            return block as *mut u8;
        }
        alloc_slow(cache, class)
    }
}

/// Takes back a block of `class`.
///
/// # Safety
/// `block` was allocated by this allocator as a block of `class` and is not used again.
#[inline(always)]
pub(crate) unsafe fn free(block: *mut u8, class: SizeClass) {
    let cache = this_thread();
    let block = block as *mut Block;
    // SAFETY: the cache is this thread's; the caller hands the block over.
    unsafe {
        let bin = bin(cache, class);
        let count = (*bin).count.load(Ordering::Relaxed);
        if count < (*bin).limit {
            (*block).next = (*bin).head;
            (*bin).head = block;
            (*bin).count.store(count + 1, Ordering::Relaxed);
            return;
        }
        free_slow(cache, class, block);
    }
}

#[cold]
#[inline(never)]
unsafe fn alloc_slow(cache: *mut ThreadCache, class: SizeClass) -> *mut u8 {
    // SAFETY: `cache` is this thread's cache (caller).
    if !unsafe { ensure_active(cache) } {
        return alloc_without_cache(class);
    }
    // SAFETY: the cache is this thread's and active.
    unsafe { give_back_idle_blocks_if_asked(cache) };
    let info = class.info();
    let mut batch = central::refill(class, info.batch as u32);
    // SAFETY: a refilled batch is a valid list of free blocks of the class; the bin is
    // empty (this is a miss), so the rest of the batch becomes its list.
    let block = unsafe {
        let block = batch.pop();
        let bin = bin(cache, class);
        (*bin).head = batch.head;
        (*bin).count.store(batch.count, Ordering::Relaxed);
        (*bin).went_empty = true;
        raise_limit(cache, class);
        block as *mut u8
    };
    crate::trim::tick();
    block
}

#[cold]
#[inline(never)]
unsafe fn free_slow(cache: *mut ThreadCache, class: SizeClass, block: *mut Block) {
    // SAFETY: `cache` is this thread's cache (caller).
    if !unsafe { ensure_active(cache) } {
        // SAFETY: the caller hands the block over.
        unsafe { free_without_cache(class, block) };
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
        if list.count > (*bin).limit {
            let flushed = list.split_front(class.info().batch as u32);
            central::flush(class, flushed);
        }
        (*bin).head = list.head;
        (*bin).count.store(list.count, Ordering::Relaxed);
    }
    crate::trim::tick();
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
            count: (*bin).count.load(Ordering::Relaxed),
        };
        (*bin).head = ptr::null_mut();
        (*bin).count.store(0, Ordering::Relaxed);
        list
    }
}

/// Flushes half of every class that did not run dry since the last check, if a trimming
/// pass happened since then.
///
/// # Safety
/// `cache` is this thread's active cache.
unsafe fn give_back_idle_blocks_if_asked(cache: *mut ThreadCache) {
    let epoch = GC_EPOCH.load(Ordering::Relaxed);
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
            let lowered = ((*bin).limit / 2).max(info.batch as u32).min((*bin).limit);
            (*cache).limit_bytes -= ((*bin).limit - lowered) as usize * info.size as usize;
            (*bin).limit = lowered;
            let mut list = take_list(bin);
            let flushed = list.split_front(list.count.div_ceil(2));
            central::flush(class, flushed);
            (*bin).head = list.head;
            (*bin).count.store(list.count, Ordering::Relaxed);
        }
    }
}

/// Asks every thread cache to give back its idle blocks on its next slow path.
pub(crate) fn ask_for_idle_blocks() {
    GC_EPOCH.fetch_add(1, Ordering::Relaxed);
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
    let _guard = REGISTRY.lock.lock();
    let mut total = 0;
    // SAFETY: we hold the registry lock, so every listed cache is alive (a thread
    // unregisters before its cache goes away); counts are atomics.
    unsafe {
        let mut cache = *REGISTRY.head.get();
        while !cache.is_null() {
            total += (*bin(cache, class)).count.load(Ordering::Relaxed) as usize;
            cache = (*cache).next;
        }
    }
    total
}

/// For the loom models: the number of registered caches, after checking that the registry's
/// links agree in both directions.
#[cfg(all(test, loom))]
pub(crate) fn registered_caches() -> usize {
    let _guard = REGISTRY.lock.lock();
    let mut count = 0;
    let mut prev: *mut ThreadCache = ptr::null_mut();
    // SAFETY: we hold the registry lock, so every listed cache is alive.
    unsafe {
        let mut cache = *REGISTRY.head.get();
        while !cache.is_null() {
            assert_eq!((*cache).prev, prev, "registry links of {cache:p}");
            count += 1;
            prev = cache;
            cache = (*cache).next;
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
        let raised = ((*bin).limit + info.batch as u32).min(info.max_cached as u32);
        let extra_bytes = (raised - (*bin).limit) as usize * info.size as usize;
        if (*cache).limit_bytes + extra_bytes <= (*cache).byte_budget {
            (*cache).limit_bytes += extra_bytes;
            (*bin).limit = raised;
        }
    }
}

/// Makes the cache usable if it can be; false means "go to central directly".
///
/// # Safety
/// `cache` is this thread's cache.
unsafe fn ensure_active(cache: *mut ThreadCache) -> bool {
    // SAFETY: by the caller's promise; no reference is held across the set-up calls,
    // which may re-enter the allocator (and then see `SettingUp`).
    unsafe {
        match (*cache).state {
            State::Active => return true,
            State::SettingUp | State::TornDown => return false,
            State::Unset => {}
        }
        (*cache).state = State::SettingUp;
        if !lifecycle::register_thread() {
            (*cache).state = State::Unset;
            return false;
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
                (*bin(cache, class)).limit = info.batch as u32;
                limit_bytes += bytes;
            }
        }
        (*cache).limit_bytes = limit_bytes;
        (*cache).byte_budget = budget;
        (*cache).seen_epoch = GC_EPOCH.load(Ordering::Relaxed);
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
    let _guard = REGISTRY.lock.lock();
    // SAFETY: we hold the registry lock; the head, if any, is a live registered cache.
    unsafe {
        let head = *REGISTRY.head.get();
        (*cache).prev = ptr::null_mut();
        (*cache).next = head;
        if !head.is_null() {
            (*head).prev = cache;
        }
        *REGISTRY.head.get() = cache;
    }
}

/// Unlinks `cache` from the registry.
///
/// # Safety
/// `cache` is this thread's registered cache.
unsafe fn unregister(cache: *mut ThreadCache) {
    let _guard = REGISTRY.lock.lock();
    // SAFETY: we hold the registry lock; neighbours are live registered caches.
    unsafe {
        let (prev, next) = ((*cache).prev, (*cache).next);
        if prev.is_null() {
            *REGISTRY.head.get() = next;
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
    }
}

/// Fork support: take the registry lock before `fork`.
pub(crate) fn lock_before_fork() {
    REGISTRY.lock.raw_lock();
}

/// Fork support: release the registry lock in the parent.
pub(crate) fn unlock_after_fork_in_parent() {
    REGISTRY.lock.raw_unlock();
}

/// Fork support: in the child only the forking thread exists; its cache (if active) is
/// the whole registry. The other threads' cached blocks are lost to the child.
pub(crate) fn reset_after_fork_in_child() {
    REGISTRY.lock.reset_in_child();
    let cache = this_thread();
    // SAFETY: single-threaded child; the cache is this thread's.
    unsafe {
        let head = if (*cache).state == State::Active {
            (*cache).prev = ptr::null_mut();
            (*cache).next = ptr::null_mut();
            cache
        } else {
            ptr::null_mut()
        };
        *REGISTRY.head.get() = head;
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
            (*bin).limit = 0;
            let list = take_list(bin);
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
        let block = batch.pop();
        central::flush(class, batch);
        block as *mut u8
    }
}

/// # Safety
/// `block` is an out block of `class` handed over by the caller.
unsafe fn free_without_cache(class: SizeClass, block: *mut Block) {
    let mut batch = Batch::EMPTY;
    // SAFETY: the caller hands the block over.
    unsafe {
        batch.push(block);
        central::flush(class, batch);
    }
}
