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

use crate::block::{Batch, Block};
use crate::central;
use crate::lifecycle;
use crate::size_class::{SizeClass, NUM_CLASSES};
use core::cell::UnsafeCell;
use core::ptr;

/// Bytes a thread cache may hold at most, summed over its classes' limits.
const BYTE_BUDGET: usize = 4 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Unset,
    SettingUp,
    Active,
    TornDown,
}

/// One class of a thread cache.
#[repr(C)]
struct Bin {
    head: *mut Block,
    count: u32,
    limit: u32,
}

/// A thread's cache.
pub(crate) struct ThreadCache {
    bins: [Bin; NUM_CLASSES],
    state: State,
    limit_bytes: usize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_BIN: Bin = Bin {
    head: ptr::null_mut(),
    count: 0,
    limit: 0,
};

thread_local! {
    // `const` initialisation and no `Drop`: access compiles to a plain TLS address, with
    // no lazy-init check and no destructor registration.
    static CACHE: UnsafeCell<ThreadCache> = const {
        UnsafeCell::new(ThreadCache {
            bins: [EMPTY_BIN; NUM_CLASSES],
            state: State::Unset,
            limit_bytes: 0,
        })
    };
}

/// This thread's cache. Callers touch it through the raw pointer only and never keep a
/// reference across a call that could re-enter the allocator.
#[inline(always)]
fn this_thread() -> *mut ThreadCache {
    CACHE.with(|cache| cache.get())
}

/// The bin of `class` in `cache`.
///
/// # Safety
/// `cache` is this thread's cache.
#[inline(always)]
unsafe fn bin(cache: *mut ThreadCache, class: SizeClass) -> *mut Bin {
    // SAFETY: the class index is below NUM_CLASSES, the length of `bins`.
    unsafe { ptr::addr_of_mut!((*cache).bins).cast::<Bin>().add(class.index()) }
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
            (*bin).count -= 1;
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
        if (*bin).count < (*bin).limit {
            (*block).next = (*bin).head;
            (*bin).head = block;
            (*bin).count += 1;
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
    let info = class.info();
    let mut batch = central::refill(class, info.batch as u32);
    // SAFETY: a refilled batch is a valid list of free blocks of the class; the bin is
    // empty (this is a miss), so the rest of the batch becomes its list.
    unsafe {
        let block = batch.pop();
        let bin = bin(cache, class);
        (*bin).head = batch.head;
        (*bin).count = batch.count;
        raise_limit(cache, class);
        block as *mut u8
    }
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
    // SAFETY: the cache is active; the list and count agree, so splitting is sound and the
    // flushed blocks are free blocks of the class.
    unsafe {
        let bin = bin(cache, class);
        let mut list = Batch {
            head: (*bin).head,
            count: (*bin).count,
        };
        list.push(block);
        if list.count > (*bin).limit {
            let flushed = list.split_front(class.info().batch as u32);
            central::flush(class, flushed);
        }
        (*bin).head = list.head;
        (*bin).count = list.count;
    }
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
        if (*cache).limit_bytes + extra_bytes <= BYTE_BUDGET {
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
        let mut limit_bytes = 0;
        for index in 0..NUM_CLASSES {
            let class = SizeClass::from_index_unchecked(index);
            let info = class.info();
            (*bin(cache, class)).limit = info.batch as u32;
            limit_bytes += info.batch as usize * info.size as usize;
        }
        (*cache).limit_bytes = limit_bytes;
        (*cache).state = State::Active;
        true
    }
}

/// Flushes this thread's cache for good; later operations of the thread go to central.
/// Called from the pthread key destructor at thread exit.
pub(crate) fn tear_down_this_thread() {
    let cache = this_thread();
    // SAFETY: the cache is this thread's. The state changes first, so a free that the
    // flush might trigger bypasses the cache.
    unsafe {
        (*cache).state = State::TornDown;
        (*cache).limit_bytes = 0;
        for index in 0..NUM_CLASSES {
            let class = SizeClass::from_index_unchecked(index);
            let bin = bin(cache, class);
            let list = Batch {
                head: (*bin).head,
                count: (*bin).count,
            };
            (*bin).head = ptr::null_mut();
            (*bin).count = 0;
            (*bin).limit = 0;
            central::flush(class, list);
        }
    }
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
