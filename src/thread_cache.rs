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
//! shrinks geometrically.
//!
//! **Reclaiming a sleeping thread's cache.** A parked thread never reaches a slow path, so
//! the trimmer takes its blocks itself ([`reclaim_idle_caches`]): a cache whose owner
//! reached no slow path through a whole trimming interval is idle, and its lists go back
//! to the central lists (its limits back to one batch). The trimmer and the owner agree
//! through an asymmetric handshake (`sync::light_fence`/`sync::heavy_fence`, the
//! `membarrier` system call), with no atomic read-modify-write and no fence on the fast
//! path:
//!
//! - the owner sets `in_operation` (a plain store) before it touches its bins and clears
//!   it after (a release store); in between, the fast path compares the list head (alloc)
//!   or the room left (free) with a *floor* the trimmer sets, instead of with zero, so the
//!   trimmer's request costs the fast path no instruction of its own (a memory operand in
//!   the compare it makes anyway, and one compare in `free` where a sign test did);
//! - the trimmer, holding the registry lock, raises the floors of the caches it wants
//!   (every fast path then misses), runs one `membarrier` for all of them, and then reads
//!   `in_operation`: an owner that is inside is left alone (floors lowered again), an owner
//!   that is outside has its lists taken, and any operation it starts now sees the raised
//!   floor and goes to its slow path, which waits on the registry lock until the trimmer
//!   is done, and then lowers the floors itself. The trimmer must not lower them after
//!   taking the lists: an owner may have read its list head before the trimmer took it and
//!   be about to read the floor (loom model 6 found that block handed out twice);
//! - `membarrier` is what makes "the owner stored `in_operation`, then loaded the floor"
//!   and "the trimmer stored the floor, then loaded `in_operation`" see at least one of
//!   the two stores, without a fence on the owner's side (see `sync.rs`).
//!
//! Why this design and not per-CPU caches with `rseq` (tcmalloc's): it keeps the thread
//! caches, their adaptive limits and their double-free mark as they are, costs the 64-byte
//! pair five instructions, and falls back to owner-only trimming where the kernel has no
//! `membarrier` (then parked threads keep their caches, bounded by the byte budget, as
//! before). Per-CPU caches would have needed every fast path rewritten as an `rseq`
//! critical section in assembly.

use crate::block::{next_of, set_next, Batch, Block};
use crate::central;
use crate::config::{self, Setting};
use crate::list::{Linked, Links, List};
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::sync::{
    heavy_fence, light_fence, model_static, AtomicBool, AtomicI32, AtomicU32, AtomicU64,
    AtomicUsize, Mutex, Ordering, RawMutex, MEMORY_FREED,
};
use crate::{sanitizer, tls, trim};
use core::ptr;

model_static! {
    /// The registry of active caches, for statistics and the fork handlers. A thread
    /// unregisters before its cache goes away, so under the lock every listed cache lives.
    static REGISTRY: Mutex<List<ThreadCache>> = Mutex::new(List::new());
    /// Caches whose lists the trimmer took (for the statistics).
    static RECLAIMED: AtomicU64 = AtomicU64::new(0);
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
/// compares one word less one with the floor (0 unless the trimmer asks), with no load of
/// the limit. Both counters are written only by the owner (plain loads and stores; by the
/// trimmer when the owner is outside, see the top comment) and read by statistics.
#[repr(C)]
struct Bin {
    head: *mut Block,
    /// Blocks the list may still take; `>= 0` (a free that finds it at 0 goes to the slow
    /// path without writing it).
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

/// A thread's cache. `repr(C)`, bins first: a bin's address is then the cache's plus the
/// scaled index, with no further offset on the fast paths.
#[repr(C)]
pub(crate) struct ThreadCache {
    bins: [Bin; NUM_CLASSES],
    /// The owner is operating on its bins (see "Reclaiming a sleeping thread's cache").
    in_operation: AtomicBool,
    /// The allocation fast path takes the head only if it is above this: 0, or
    /// `usize::MAX` while the trimmer wants the cache.
    alloc_floor: AtomicUsize,
    /// The free fast path pushes only if the room left is at least this: 0, or `i32::MAX`
    /// while the trimmer wants the cache.
    free_floor: AtomicI32,
    /// The trimmer asked for this cache in the pass under way (under the registry lock).
    asked: bool,
    state: State,
    limit_bytes: usize,
    byte_budget: usize,
    /// A copy of the double-free mark (`block.rs`), set when the cache becomes active: the
    /// fast path reads it beside the bins rather than through the GOT.
    #[cfg(not(feature = "hardened"))]
    free_mark: usize,
    /// The trimming epoch at the owner's latest slow path (read by the trimmer to tell an
    /// idle cache).
    seen_epoch: AtomicU32,
    /// Its place in the registry (while active).
    links: Links<ThreadCache>,
    /// The heap profiler's countdown and generator (`profiling.rs`).
    sampler: Sampler,
}

/// The heap profiler's state of one thread. Only the owner reads or writes it (the trimmer
/// and the statistics never do), so the owner may touch it outside an operation.
#[repr(C)]
pub(crate) struct Sampler {
    /// Bytes this thread may still allocate before its next sample: an allocation larger
    /// than what is left takes the sampling path ([`count_down`]). 0 in a fresh thread, so
    /// its first allocation sets it.
    pub(crate) countdown: usize,
    /// The thread's random number generator (0 until seeded).
    pub(crate) random: u64,
    /// The thread is capturing a stack for a sample: its allocations meanwhile are not
    /// sampled.
    pub(crate) busy: bool,
    /// The end of the thread's stack, which bounds the profiler's stack walks (0 until the
    /// first sample asks; 1 when the C library could not say).
    pub(crate) stack_end: usize,
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
            in_operation: AtomicBool::new(false),
            alloc_floor: AtomicUsize::new(0),
            free_floor: AtomicI32::new(0),
            asked: false,
            state: State::Unset,
            limit_bytes: 0,
            byte_budget: 0,
            #[cfg(not(feature = "hardened"))]
            free_mark: 0,
            seen_epoch: AtomicU32::new(0),
            links: Links::new(),
            sampler: Sampler {
                countdown: 0,
                random: 0,
                busy: false,
                stack_end: 0,
            },
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

/// A block of `class` for a request of `size` bytes, as [`alloc`] gives, unless `size`
/// takes this thread's sampling countdown below zero: then `sample(class, size)` (the heap
/// profiler's sampling path, `profiling.rs`, which sets the next countdown) gives the
/// block, or declines with null and [`alloc`] does. (`sample` takes its arguments rather
/// than capturing them: a capture would put them on the fast path's stack.)
///
/// The countdown is owner-only state (see [`Sampler`]), counted outside an operation: one
/// subtraction from memory and a branch.
#[inline(always)]
pub(crate) fn alloc_counted(
    class: SizeClass,
    size: usize,
    register_thread: impl FnOnce() -> bool,
    sample: impl FnOnce(SizeClass, usize) -> *mut u8,
) -> *mut u8 {
    let cache = this_thread();
    // SAFETY: the cache is this thread's.
    if unsafe { count_down_in(cache, size) } {
        return alloc_sampling(class, size, register_thread, sample);
    }
    alloc_in(cache, class, register_thread)
}

/// [`alloc_counted`] when the countdown ran out (and C `malloc`'s, `front.rs`).
#[cold]
#[inline(never)]
pub(crate) fn alloc_sampling(
    class: SizeClass,
    size: usize,
    register_thread: impl FnOnce() -> bool,
    sample: impl FnOnce(SizeClass, usize) -> *mut u8,
) -> *mut u8 {
    let block = sample(class, size);
    if !block.is_null() {
        return block;
    }
    alloc(class, register_thread)
}

/// Counts `size` bytes down from this thread's sampling countdown (see [`alloc_counted`]);
/// true when they take it below zero.
#[inline(always)]
pub(crate) fn count_down(size: usize) -> bool {
    // SAFETY: the cache is this thread's.
    unsafe { count_down_in(this_thread(), size) }
}

/// [`count_down`] in `cache`.
///
/// # Safety
/// `cache` is this thread's cache.
#[inline(always)]
unsafe fn count_down_in(cache: *mut ThreadCache, size: usize) -> bool {
    // SAFETY: by the caller's promise; the sampler is touched by its owner only.
    unsafe {
        let countdown = ptr::addr_of_mut!((*cache).sampler.countdown);
        let (left, expired) = (*countdown).overflowing_sub(size);
        *countdown = left;
        expired
    }
}

/// This thread's sampler, for the heap profiler. Only this thread may touch it.
pub(crate) fn sampler() -> *mut Sampler {
    let cache = this_thread();
    // SAFETY: a field address of this thread's cache, computed without reading it.
    unsafe { ptr::addr_of_mut!((*cache).sampler) }
}

/// A block of `class`, or null when memory is exhausted.
///
/// `register_thread` is called once per thread, when its cache is first set up: it
/// arranges for [`tear_down_this_thread`] to run at the thread's exit and sets the
/// process up, and returns false when it cannot yet (set-up under way). It is
/// `lifecycle::register_thread`, passed down by the front so that this layer never calls
/// the lifecycle layer above it (and the loom models can pass their own).
#[inline(always)]
pub(crate) fn alloc(class: SizeClass, register_thread: impl FnOnce() -> bool) -> *mut u8 {
    alloc_in(this_thread(), class, register_thread)
}

/// [`alloc`] from `cache`, this thread's cache.
#[cfg(not(feature = "hardened"))]
#[inline(always)]
fn alloc_in(
    cache: *mut ThreadCache,
    class: SizeClass,
    register_thread: impl FnOnce() -> bool,
) -> *mut u8 {
    alloc_unchecked(cache, class, register_thread)
}

/// A block of `class`, or null when memory is exhausted; marked live (see `hardened.rs`).
/// `register_thread` as in the default build's `alloc`.
#[cfg(feature = "hardened")]
#[inline(always)]
fn alloc_in(
    cache: *mut ThreadCache,
    class: SizeClass,
    register_thread: impl FnOnce() -> bool,
) -> *mut u8 {
    let block = alloc_unchecked(cache, class, register_thread);
    if !block.is_null() {
        // SAFETY: the block was just taken off a free list of the class.
        unsafe { crate::hardened::on_alloc(block, class) };
    }
    block
}

/// Goes on if the trimmer's floor of `$cache` lets `$value` pass (`alloc:` a list head
/// above `alloc_floor`; `free:` room left at least `free_floor`), else evaluates `$slow`,
/// which leaves the function. The floor is read with acquire ordering (a floor the trimmer
/// lowered again brings the lists it left).
///
/// On x86_64 the compare reads the floor itself, as a memory operand: LLVM never folds an
/// atomic load into an operand, and the separate load cost the 64-byte pair three
/// instructions. An aligned read by an x86 instruction is an acquire load; the assembly
/// block counts as a call to a function that makes one, and reads nothing else.
macro_rules! pass_floor_or {
    (alloc: $value:expr, $cache:expr, $slow:expr) => {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        core::arch::asm!(
            "cmp {value}, qword ptr [{cache} + {offset}]",
            "jbe {slow}",
            value = in(reg) $value as usize,
            cache = in(reg) $cache,
            offset = const core::mem::offset_of!(ThreadCache, alloc_floor),
            slow = label { $slow },
            options(nostack, readonly),
        );
        // (`$slow` carries its own `unsafe`, needed in the label block only.)
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        #[allow(unused_unsafe)]
        if $value as usize <= (*$cache).alloc_floor.load(Ordering::Acquire) {
            $slow
        }
    };
    (free: $value:expr, $cache:expr, $slow:expr) => {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        core::arch::asm!(
            "cmp {value:e}, dword ptr [{cache} + {offset}]",
            "jl {slow}",
            value = in(reg) $value,
            cache = in(reg) $cache,
            offset = const core::mem::offset_of!(ThreadCache, free_floor),
            slow = label { $slow },
            options(nostack, readonly),
        );
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        #[allow(unused_unsafe)]
        if $value < (*$cache).free_floor.load(Ordering::Acquire) {
            $slow
        }
    };
}

#[inline(always)]
fn alloc_unchecked(
    cache: *mut ThreadCache,
    class: SizeClass,
    register_thread: impl FnOnce() -> bool,
) -> *mut u8 {
    // SAFETY: the cache is this thread's; a non-null head is a free block of the class.
    unsafe {
        enter(cache);
        let bin = bin(cache, class);
        let block = (*bin).head;
        pass_floor_or!(
            alloc: block,
            cache,
            // SAFETY: the cache is ours (a label block does not inherit `unsafe`).
            return unsafe { alloc_slow(class, cache, register_thread) }
        );
        unlink_head(bin, block, class);
        leave(cache);
        sanitizer::handed_out(block as *mut u8, class.size(), false);
        #[cfg(not(feature = "hardened"))]
        crate::block::clear_mark(block as *mut u8);
        block as *mut u8
    }
}

/// Takes `block`, the head of the bin's list, off it: the pop of both allocation paths.
///
/// # Safety
/// `bin` is a bin of this thread's cache, inside an operation, and `block` its list's
/// head, a free block of `class`.
#[inline(always)]
unsafe fn unlink_head(bin: *mut Bin, block: *mut Block, class: SizeClass) {
    // SAFETY: by the caller's promise.
    unsafe {
        (*bin).head = next_of(block, class);
        let room = (*bin).room.load(Ordering::Relaxed);
        (*bin).room.store(room + 1, Ordering::Relaxed);
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
        enter(cache);
        let bin = bin(cache, class);
        // Nothing of the bin is written before the floor is passed: until then the trimmer
        // may be taking the lists (loom model 6 found a count taken one short).
        let room = (*bin).room.load(Ordering::Relaxed) - 1;
        pass_floor_or!(
            free: room,
            cache,
            // SAFETY: the cache is ours, the block is handed over (a label block does not
            // inherit `unsafe`).
            return unsafe { free_slow(cache, class, block) }
        );
        // Room means an active cache, whose copy of the mark is set.
        // The mark is written while the block is still the program's, before the
        // sanitizers are told it is ours; a block marked already is a double free, which
        // the slow path reports.
        #[cfg(not(feature = "hardened"))]
        if !crate::block::try_mark_freed(block as *mut u8, (*cache).free_mark) {
            return free_slow(cache, class, block);
        }
        (*bin).room.store(room, Ordering::Relaxed);
        sanitizer::taken_back(block as *mut u8, class.size());
        set_next(block, (*bin).head);
        (*bin).head = block;
        leave(cache);
    }
}

/// A miss: a block from the central list, handed out; null, with `ENOMEM` in `errno`, when
/// memory is exhausted. (Or the trimmer's floor, see the top comment: then the list may
/// still hold blocks.) Entered inside an operation, which it ends.
///
/// The class comes first: the C `malloc` fast path then loads it into the register of the
/// first argument once the size that register held is dead (see
/// `front::alloc_for_malloc`), with no move.
///
/// # Safety
/// `cache` is this thread's cache.
#[cold]
#[inline(never)]
unsafe fn alloc_slow(
    class: SizeClass,
    cache: *mut ThreadCache,
    register_thread: impl FnOnce() -> bool,
) -> *mut u8 {
    // SAFETY: by the caller's promise; a non-null head is a free block of the class.
    let (block, active) = unsafe {
        wait_while_reclaimed(cache);
        let bin = bin(cache, class);
        let block = if (*bin).head.is_null() {
            refill_and_take(cache, class, register_thread)
        } else {
            // Sent here by a floor the trimmer has lowered again (it found us busy).
            let block = (*bin).head;
            unlink_head(bin, block, class);
            block as *mut u8
        };
        let active = (*cache).state == State::Active;
        leave(cache);
        (block, active)
    };
    // Only an active thread runs the trimmer's ticker (see `free_slow`).
    if active {
        trim::tick(reclaim_idle_caches);
    }
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

/// A block from the central list; the rest of the batch becomes the bin's list, which is
/// empty.
///
/// # Safety
/// `cache` is this thread's cache, inside an operation.
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
        return alloc_without_cache(class);
    }
    let info = class.info();
    // A refill brings at most a batch (a parked batch is never longer, see
    // `central::flush`), and a nonzero limit is at least a batch: the rest fits the bin.
    let mut batch = central::refill(class, info.batch as u32);
    // SAFETY: a refilled batch is a valid list of free blocks of the class; the bin is
    // empty (this is a miss), so the rest of the batch becomes its list.
    unsafe {
        let block = batch.pop(class);
        let bin = bin(cache, class);
        (*bin).set_list(batch);
        (*bin).went_empty = true;
        raise_limit(cache, class);
        block as *mut u8
    }
}

/// An overflow, a free by a thread without an active cache, the trimmer's floor, or a
/// double free (reported by the mark below).
/// Entered inside an operation, which it ends.
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
    // SAFETY: `cache` is this thread's cache (caller).
    if unsafe { (*cache).state == State::Active } {
        // SAFETY: as promised to us.
        return unsafe { free_overflow(cache, class, block) };
    }
    // A thread without an active cache is in no registry: no trimmer looks at its bins
    // (empty, at limit 0), and its operation ends before the push.
    // SAFETY: the cache is this thread's; the caller hands the block over.
    unsafe {
        leave(cache);
        free_without_cache(class, block)
    };
}

/// A free of an active thread that found no room in its bin, or a floor the trimmer
/// raised. Out of [`free_slow`], so that a thread without a cache, which frees every block
/// through `free_slow`, pays neither for a stack frame nor for register saves (10 of the
/// 48 instructions of such a free in `prodcons` under `LD_PRELOAD`). Ends the operation.
///
/// # Safety
/// `cache` is this thread's active cache, inside an operation; the caller hands over
/// `block`, a marked block of `class`.
#[inline(never)]
unsafe fn free_overflow(cache: *mut ThreadCache, class: SizeClass, block: *mut Block) {
    // SAFETY: the cache is this thread's (caller); its bins are looked at once the trimmer
    // is done with them.
    if unsafe {
        wait_while_reclaimed(cache);
        (*bin(cache, class)).limit()
    } == 0
    {
        // The byte budget leaves this class no room: nothing of it is cached.
        // SAFETY: the caller hands the block over; then the bins are left alone.
        unsafe {
            free_without_cache(class, block);
            leave(cache);
        }
        trim::tick(reclaim_idle_caches);
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
        leave(cache);
    }
    trim::tick(reclaim_idle_caches);
}

/// Starts an operation of the owner on its bins (see "Reclaiming a sleeping thread's
/// cache"): from here until [`leave`] the trimmer does not take them, and a request it made
/// before shows in the floors read after this.
///
/// # Safety
/// `cache` is this thread's cache.
#[inline(always)]
unsafe fn enter(cache: *mut ThreadCache) {
    // SAFETY: by the caller's promise.
    unsafe { (*cache).in_operation.store(true, Ordering::Relaxed) };
    light_fence();
}

/// Ends an operation on the bins: release, so a trimmer that then finds the owner outside
/// sees the lists it left.
///
/// # Safety
/// `cache` is this thread's cache.
#[inline(always)]
unsafe fn leave(cache: *mut ThreadCache) {
    // SAFETY: by the caller's promise.
    unsafe { (*cache).in_operation.store(false, Ordering::Release) };
}

/// Inside an operation: if the trimmer has raised this cache's floors, waits until it is
/// done with the bins (it holds the registry lock from before it raises them until it has
/// either taken the lists or lowered the floors again), and lowers floors it left raised.
///
/// # Safety
/// `cache` is this thread's cache, inside an operation.
#[inline]
unsafe fn wait_while_reclaimed(cache: *mut ThreadCache) {
    // SAFETY: by the caller's promise. Acquire: as the fast paths' loads of the floors.
    if unsafe { (*cache).alloc_floor.load(Ordering::Acquire) } != 0 {
        let _registry = REGISTRY.lock();
        // Floors still raised under the lock: the trimmer took the lists, and left the
        // floors for us (see the top comment).
        // SAFETY: by the caller's promise.
        unsafe { lower_floors(cache) };
    }
}

/// Lets the fast paths of `cache` pass again.
///
/// # Safety
/// `cache` is alive, and the caller holds the registry lock or owns the cache.
unsafe fn lower_floors(cache: *mut ThreadCache) {
    // SAFETY: by the caller's promise. Release: an owner whose next operation reads them
    // sees the lists as the lowerer left them.
    unsafe {
        (*cache).alloc_floor.store(0, Ordering::Release);
        (*cache).free_floor.store(0, Ordering::Release);
    }
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
        if (*cache).seen_epoch.load(Ordering::Relaxed) == epoch {
            return;
        }
        (*cache).seen_epoch.store(epoch, Ordering::Relaxed);
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
    // SAFETY: the cache is this thread's; no reference is held across the flushes, which
    // run inside an operation (the trimmer leaves the bins alone meanwhile).
    unsafe {
        if (*cache).state != State::Active {
            return;
        }
        enter(cache);
        wait_while_reclaimed(cache);
        for index in 0..NUM_CLASSES {
            let class = SizeClass::from_index_unchecked(index);
            let list = take_list(bin(cache, class));
            central::flush(class, list);
        }
        leave(cache);
    }
}

/// The trimmer's side of the handshake (see "Reclaiming a sleeping thread's cache"): takes
/// the cached blocks of every registered thread whose owner reached no slow path since the
/// pass before this one (`epoch` is this pass's), or of every thread when `everything`
/// (`trim()`), and flushes them to the central lists; their limits go back to a batch.
/// Returns whether some cache still holds blocks that a later pass may take (an owner
/// active in the last interval, or inside an operation now).
///
/// A cache whose owner is inside an operation is skipped. Where the kernel has no
/// `membarrier`, nothing is taken: the owners give back on their own slow paths.
pub(crate) fn reclaim_idle_caches(epoch: u32, everything: bool) -> bool {
    let registry = REGISTRY.lock();
    let mut pending = false;
    let mut asked = 0;
    // SAFETY: we hold the registry lock, so every listed cache is alive; what the trimmer
    // reads of another thread's cache without the handshake (counts, epochs) is atomic.
    unsafe {
        for cache in registry.iter() {
            if !holds_blocks(cache) {
                continue;
            }
            let seen = (*cache).seen_epoch.load(Ordering::Relaxed);
            if !everything && epoch.wrapping_sub(seen) < 2 {
                pending = true;
                continue;
            }
            (*cache).alloc_floor.store(usize::MAX, Ordering::Relaxed);
            (*cache).free_floor.store(i32::MAX, Ordering::Relaxed);
            (*cache).asked = true;
            asked += 1;
        }
    }
    if asked == 0 {
        return pending;
    }
    // One barrier for all the caches asked: after it, an owner that is not inside an
    // operation will see its raised floors in its next one.
    let fenced = heavy_fence();
    // SAFETY: as above. The owner of an asked cache, if outside, stays out of its bins from
    // now on: its next operation sees the raised floors, and its slow path waits for the
    // registry lock and lowers them.
    unsafe {
        for cache in registry.iter() {
            if !core::mem::take(&mut (*cache).asked) {
                continue;
            }
            // Acquire: the lists as the owner left them at the end of its last operation.
            if fenced && !(*cache).in_operation.load(Ordering::Acquire) {
                take_all_lists(cache);
                RECLAIMED.fetch_add(1, Ordering::Relaxed);
            } else {
                pending = true;
                lower_floors(cache);
            }
        }
    }
    pending
}

/// Caches the trimmer took from idle threads since the start.
pub(crate) fn caches_reclaimed() -> u64 {
    RECLAIMED.load(Ordering::Relaxed)
}

/// Whether a cache holds any block (a racy look, from another thread).
///
/// # Safety
/// `cache` is alive (the registry lock is held).
unsafe fn holds_blocks(cache: *mut ThreadCache) -> bool {
    // SAFETY: by the caller's promise; counts are atomics.
    (0..NUM_CLASSES)
        .any(|index| unsafe { (*bin(cache, SizeClass::from_index_unchecked(index))).count() } > 0)
}

/// Flushes every list of another thread's cache to the central lists and lowers its limits
/// to a batch (as a new cache's, within its budget).
///
/// # Safety
/// The registry lock is held, `cache` is registered, and its owner is outside any operation
/// and cannot start one (its floors are raised, and it saw them: see the caller).
unsafe fn take_all_lists(cache: *mut ThreadCache) {
    // SAFETY: by the caller's promise the bins are ours until the floors come down.
    unsafe {
        let mut limit_bytes = 0;
        for index in 0..NUM_CLASSES {
            let class = SizeClass::from_index_unchecked(index);
            let info = class.info();
            let bin = bin(cache, class);
            let list = take_list(bin);
            let lowered = (*bin).limit().min(info.batch as u32);
            (*bin).set_limit(lowered);
            (*bin).went_empty = false;
            limit_bytes += lowered as usize * info.size as usize;
            central::flush(class, list);
        }
        (*cache).limit_bytes = limit_bytes;
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
        // The set-up may have allocated (going around the cache), and that operation's
        // end cleared the mark of the one under way: set it again before the cache
        // becomes visible to the trimmer (in the registry, under its lock).
        enter(cache);
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

        (*cache).seen_epoch.store(trim::epoch(), Ordering::Relaxed);
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
        // The trimmer may have taken the lists last and left the floors raised; nobody
        // takes them from now on.
        lower_floors(cache);
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
