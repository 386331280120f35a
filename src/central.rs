//! Central lists: per size class, where thread caches refill and flush, behind one lock.
//!
//! Each class has
//!
//! - a **transfer cache**: whole batches, up to the class's `transfer_batches` (about
//!   64 KiB of blocks; at least 32 batches). A flush from one thread
//!   parks its batch here and a refill of another thread takes it back as it is: the
//!   producer/consumer hand-off is O(1) under a lock held for a few instructions, with no
//!   walk over the blocks;
//! - the class's **partial pools** in [`FULLNESS_BINS`] bins by how many of their blocks
//!   are out. Refills take from the fullest bin first, so that nearly empty pools drain,
//!   empty, and give their pages back to the arena.
//!
//! - a **remote stack**, outside the lock: the blocks freed one at a time by threads
//!   without a cache (a thread that only frees, as the consumer of a producer/consumer
//!   pair; a thread torn down). [`free_one`] pushes a block with one compare-and-swap of the
//!   stack's head (its link is the block's first word, as in every list: the double-free
//!   mark in the second word stays). Nothing ever pops a single block: a holder of the
//!   class lock takes the whole stack with one swap to null, so the stack has no ABA
//!   problem, and the blocks of a taken stack are the lock holder's alone. A taker links
//!   them behind the **loose batch** (whose last block it remembers) and cuts that list in
//!   one walk over its links: a refill's share first, then whole batches, parked like
//!   flushed ones (returned to the pools when the transfer cache is full); the rest, fewer
//!   than a batch, stays as the loose batch. Taking the lock for every such free instead
//!   cost the consumer 146 instructions a free (`prodcons` under `LD_PRELOAD`), and
//!   returning each block to its pool 251; counting the taken blocks in a walk of their
//!   own before cutting them read every link twice.
//!
//! The stack is taken by a refill that finds no parked batch (which hands out at most
//! `want` of the freed blocks and files the rest), by every trimming pass and by
//! [`figures`]. Pushes and takes are ordered by the head: a push writes the block's link,
//! then publishes it with a release compare-and-swap; the taker's acquire swap reads the
//! last push, and through the release sequence of read-modify-writes on the head every
//! earlier one, so it sees every link it walks.
//!
//! Only when the transfer cache is full does a flush return blocks one by one to their
//! pools (finding each pool from its arena header). A pool with no room is in no bin; a
//! pool whose last block comes back is released to its arena at once.
//!
//! Conservation, per class, at any moment with the lock held (`transfer_blocks` counts the
//! parked batches and the loose batch; blocks on the remote stack are out of their pools
//! and counted by nothing until a lock holder takes them):
//! `blocks in thread caches + transfer_blocks + blocks on the remote stack + blocks live
//!  in the program == blocks_out == sum over the class's pools of used`.
//! The statistics stay exact: [`figures`] takes the stack first, so a block freed before
//! they are read counts as cached, not live.
//!
//! Trimming ([`trim`]) takes the remote stack, then returns to the pools the batches that
//! sat in the transfer cache through a whole trimming interval: `transfer_low_water` is the
//! fewest batches the cache held since the last pass, and the oldest that many were not
//! needed by anybody. The loose batch goes back when nobody added to it (the stack's
//! blocks count as added when taken) or took it through a whole interval. A push that
//! finds the stack empty tells the caller, which wakes the trimmer (`thread_cache.rs`): a
//! sleeping trimmer would not see the blocks otherwise.
//!
//! **Fork.** The fork handlers take every class lock, so no taker is inside its walk when
//! the process forks, but pushes take no lock. A push is one compare-and-swap: in the
//! child it either happened, and the block is on the stack with its link written before,
//! or it did not, and the block, which the pushing thread (absent from the child) was
//! handing back, stays out of its pool for good, like the blocks in the caches of the
//! parent's other threads. The stack is consistent in the child either way.

use crate::arena;
use crate::block::{Batch, Block};
use crate::list::List;
use crate::pool::{Pool, NOT_LISTED};
use crate::size_class::{SizeClass, MAX_TRANSFER_BATCHES, NUM_CLASSES};
use crate::sync::{model_static, AtomicPtr, Mutex, Ordering, RawMutex};
use core::ptr;

/// Room for the largest class transfer cache; each class uses its `transfer_batches`.
const TRANSFER_SLOTS: usize = MAX_TRANSFER_BATCHES;
/// Fullness bins of partial pools: bin `b` holds pools with `used / blocks` in
/// `[b / FULLNESS_BINS, (b + 1) / FULLNESS_BINS)`.
pub(crate) const FULLNESS_BINS: usize = 4;

struct CentralLists {
    /// Parked batches, oldest first.
    transfer: [Batch; TRANSFER_SLOTS],
    transfer_len: usize,
    /// Fewest parked batches since the last trimming pass.
    transfer_low_water: usize,
    /// Blocks in the parked batches and the loose batch.
    transfer_blocks: usize,
    /// Blocks freed one by one by threads without a cache, taken from the remote stack:
    /// fewer than a batch.
    loose: Batch,
    /// The last block of `loose` (meaningless while it is empty): the next take links the
    /// remote stack behind it without a walk.
    loose_tail: *mut Block,
    /// Nobody added to `loose` (from the remote stack) or took it since the last trimming
    /// pass.
    loose_idle: bool,
    bins: [List<Pool>; FULLNESS_BINS],
    /// Blocks out of the class's pools.
    blocks_out: usize,
    /// Pools of the class.
    pools: usize,
}

// SAFETY: the batches and pools the lists point to are memory of ours that any thread may
// touch under the class lock (which also guards the pool descriptors of the class).
unsafe impl Send for CentralLists {}

const EMPTY_LISTS: CentralLists = CentralLists {
    transfer: [Batch::EMPTY; TRANSFER_SLOTS],
    transfer_len: 0,
    transfer_low_water: 0,
    transfer_blocks: 0,
    loose: Batch::EMPTY,
    loose_tail: ptr::null_mut(),
    loose_idle: false,
    bins: [const { List::new() }; FULLNESS_BINS],
    blocks_out: 0,
    pools: 0,
};

#[cfg(not(loom))]
#[allow(clippy::declare_interior_mutable_const)] // used once, to fill the array below
const NEW_CENTRAL: Mutex<CentralLists> = Mutex::new(EMPTY_LISTS);

model_static! {
    /// Per class, the central lists behind the class lock.
    static CENTRAL: [Mutex<CentralLists>; NUM_CLASSES] = [NEW_CENTRAL; NUM_CLASSES],
    loom = core::array::from_fn(|_| Mutex::new(EMPTY_LISTS));
}

/// The head of a class's remote stack (see the top comment), on a cache line of its own so
/// that the frees of one class do not contend with those of its neighbours.
#[repr(align(64))]
struct RemoteStack(AtomicPtr<Block>);

model_static! {
    /// Per class, the remote stack of blocks freed by threads without a cache.
    static REMOTE: [RemoteStack; NUM_CLASSES] =
        [const { RemoteStack(AtomicPtr::new(ptr::null_mut())) }; NUM_CLASSES],
    loom = core::array::from_fn(|_| RemoteStack(AtomicPtr::new(ptr::null_mut())));
}

#[inline]
fn remote(class: SizeClass) -> &'static AtomicPtr<Block> {
    // SAFETY: a `SizeClass` index is below NUM_CLASSES.
    unsafe { &REMOTE.get_unchecked(class.index()).0 }
}

#[inline]
fn central(class: SizeClass) -> &'static Mutex<CentralLists> {
    // SAFETY: a `SizeClass` index is below NUM_CLASSES.
    unsafe { CENTRAL.get_unchecked(class.index()) }
}

/// Up to `want` free blocks of `class` (at least one unless the OS is out of memory): a
/// parked batch if there is one (whatever its length), else at most `want` of the blocks
/// freed by threads without a cache (the loose batch and the remote stack; the rest are
/// filed, see [`CentralLists::take_freed`]), else blocks from the fullest pools, carving a
/// new pool when none has room.
pub(crate) fn refill(class: SizeClass, want: u32) -> Batch {
    let mut guard = central(class).lock();
    let lists = &mut *guard;
    if lists.transfer_len > 0 {
        lists.transfer_len -= 1;
        lists.transfer_low_water = lists.transfer_low_water.min(lists.transfer_len);
        let batch = lists.transfer[lists.transfer_len];
        lists.transfer_blocks -= batch.count as usize;
        return batch;
    }
    // SAFETY: we hold the class lock.
    let out = unsafe { lists.take_freed(class, want) };
    if out.count > 0 {
        return out;
    }
    let mut out = Batch::EMPTY;
    while out.count < want {
        // SAFETY: we hold the class lock, which guards its pools.
        unsafe {
            let pool = match lists.fullest_pool() {
                Some(pool) => pool,
                None => {
                    let pool = arena::carve_pool(class);
                    if pool.is_null() {
                        break;
                    }
                    lists.pools += 1;
                    pool
                }
            };
            lists.blocks_out += (*pool).take(want - out.count, &mut out) as usize;
            lists.file(pool);
        }
    }
    out
}

/// Hands a list of free blocks of `class` back: parked in the transfer cache in batches of
/// at most the class's batch while it has room, the rest returned block by block to the
/// pools. (A thread cache's whole bin, flushed at exit or when idle, can be several
/// batches long; parking it as one would carry the transfer cache past its bound, and hand
/// a refill more than a bin may hold.)
///
/// # Safety
/// Every block of `batch` is a block of `class` that is out of its pool and unused.
pub(crate) unsafe fn flush(class: SizeClass, mut batch: Batch) {
    if batch.count == 0 {
        return;
    }
    let batch_len = class.info().batch as u32;
    let mut guard = central(class).lock();
    let lists = &mut *guard;
    while batch.count > 0 && lists.transfer_len < class.info().transfer_batches as usize {
        // SAFETY: the list's count is its length and its blocks are of `class` (caller).
        let front = unsafe { batch.split_front(batch_len, class) };
        lists.transfer[lists.transfer_len] = front;
        lists.transfer_len += 1;
        lists.transfer_blocks += front.count as usize;
    }
    // SAFETY: we hold the class lock; the caller vouches for the blocks.
    unsafe { lists.return_to_pools(class, batch) };
}

/// Returns a list of free blocks of `class` straight to their pools, bypassing the transfer
/// cache and the loose batch (for frees with caching turned off: a thread-cache budget of 0).
///
/// # Safety
/// As [`flush`].
pub(crate) unsafe fn return_to_pools(class: SizeClass, batch: Batch) {
    let mut guard = central(class).lock();
    let lists = &mut *guard;
    // SAFETY: we hold the class lock; the caller vouches for the blocks.
    unsafe { lists.return_to_pools(class, batch) };
}

/// Takes back one block of `class` freed by a thread without a cache: pushed on the class's
/// remote stack, without a lock. Returns whether the stack was empty (then only the next
/// trimming pass would see it: the caller tells the trimmer).
///
/// # Safety
/// `block` is a block of `class` that is out of its pool and unused.
#[inline]
pub(crate) unsafe fn free_one(class: SizeClass, block: *mut Block) -> bool {
    let head = remote(class);
    let mut top = head.load(Ordering::Relaxed);
    loop {
        // SAFETY: the caller hands over the block, whose first word is ours; it is not on
        // the stack until the exchange below succeeds.
        unsafe { crate::block::set_next(block, top) };
        // Release: a taker's acquire swap sees the link written above.
        match head.compare_exchange(top, block, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return top.is_null(),
            Err(now) => top = now,
        }
    }
}

/// Takes the remote stack of `class`, then returns to their pools the parked batches that
/// nobody took since the last pass (all of them when `everything`), and the loose batch if
/// it was idle too, so that emptied pools give their pages back.
/// Returns whether batches are still parked (a later pass may return them).
pub(crate) fn trim(class: SizeClass, everything: bool) -> bool {
    let mut guard = central(class).lock();
    let lists = &mut *guard;
    // SAFETY: we hold the class lock.
    unsafe { lists.take_freed(class, 0) };
    let idle = if everything {
        lists.transfer_len
    } else {
        lists.transfer_low_water
    };
    for i in 0..idle {
        let batch = lists.transfer[i];
        lists.transfer_blocks -= batch.count as usize;
        // SAFETY: we hold the class lock; parked blocks are out blocks of the class.
        unsafe { lists.return_to_pools(class, batch) };
    }
    lists.transfer.copy_within(idle..lists.transfer_len, 0);
    lists.transfer_len -= idle;
    lists.transfer_low_water = lists.transfer_len;
    if lists.loose.count > 0 && (everything || lists.loose_idle) {
        let batch = core::mem::replace(&mut lists.loose, Batch::EMPTY);
        lists.transfer_blocks -= batch.count as usize;
        // SAFETY: we hold the class lock; loose blocks are out blocks of the class.
        unsafe { lists.return_to_pools(class, batch) };
    }
    lists.loose_idle = true;
    lists.transfer_len > 0 || lists.loose.count > 0
}

/// Figures of one class for the statistics.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct ClassFigures {
    /// Blocks out of the class's pools (live, or in caches).
    pub(crate) blocks_out: usize,
    /// Blocks parked in the transfer cache (whole batches and the loose batch).
    pub(crate) transfer_blocks: usize,
    /// Pools of the class.
    pub(crate) pools: usize,
}

/// The figures of `class`, read under its lock once the remote stack is taken (so that its
/// blocks count as parked, not live).
pub(crate) fn figures(class: SizeClass) -> ClassFigures {
    let mut lists = central(class).lock();
    // SAFETY: we hold the class lock.
    unsafe { lists.take_freed(class, 0) };
    ClassFigures {
        blocks_out: lists.blocks_out,
        transfer_blocks: lists.transfer_blocks,
        pools: lists.pools,
    }
}

/// The class locks in class order, for the fork handlers (`lifecycle.rs`).
pub(crate) fn locks_for_fork() -> impl Iterator<Item = &'static RawMutex> {
    CENTRAL.iter().map(Mutex::raw)
}

impl CentralLists {
    /// Takes the blocks freed by threads without a cache, the loose batch followed by the
    /// remote stack (taken whole), in one pass over their links: the first `want` of them
    /// are returned, whole batches of the rest are parked (returned to their pools when the
    /// transfer cache is full), and what is left, shorter than a batch, becomes the loose
    /// batch. The loose batch is then no longer idle if the stack held any block or some
    /// were returned.
    ///
    /// # Safety
    /// The class lock is held.
    unsafe fn take_freed(&mut self, class: SizeClass, want: u32) -> Batch {
        // Acquire: sees the links of every push before the swap (see the top comment).
        let stack = remote(class).swap(ptr::null_mut(), Ordering::Acquire);
        if stack.is_null() && (want == 0 || self.loose.count == 0) {
            return Batch::EMPTY;
        }
        let loose = core::mem::replace(&mut self.loose, Batch::EMPTY);
        self.transfer_blocks -= loose.count as usize;
        // SAFETY: the loose batch and the taken stack are null-terminated lists of out
        // blocks of the class, both ours alone under the lock (the stack's links written
        // by `free_one` before it published them); linking the stack behind the loose
        // batch's last block makes them one list, which the cuts below share out.
        unsafe {
            let mut rest = if loose.count > 0 {
                crate::block::set_next(self.loose_tail, stack);
                loose.head
            } else {
                stack
            };
            let (out, _, after) = cut(rest, want, class);
            rest = after;
            if out.count > 0 || !stack.is_null() {
                self.loose_idle = false;
            }
            let batch_len = class.info().batch as u32;
            while !rest.is_null() {
                let (front, tail, after) = cut(rest, batch_len, class);
                rest = after;
                if front.count < batch_len {
                    // The end of the list: less than a batch.
                    self.transfer_blocks += front.count as usize;
                    self.loose = front;
                    self.loose_tail = tail;
                } else if self.transfer_len < class.info().transfer_batches as usize {
                    self.transfer[self.transfer_len] = front;
                    self.transfer_len += 1;
                    self.transfer_blocks += front.count as usize;
                } else {
                    self.return_to_pools(class, front);
                }
            }
            out
        }
    }

    /// Returns every block of `batch` to its pool, releasing pools that empty.
    ///
    /// # Safety
    /// The class lock is held and the blocks are out blocks of `class`.
    unsafe fn return_to_pools(&mut self, class: SizeClass, mut batch: Batch) {
        let blocks = class.info().blocks_per_pool as usize;
        loop {
            // SAFETY: the batch is a valid list (caller).
            let block = unsafe { batch.pop(class) };
            if block.is_null() {
                break;
            }
            // SAFETY: the class lock guards the pool; `pool_of` checks the block lies in a
            // pool of this class at a multiple of the granule, and `put` that it starts an
            // out block of it, and abort otherwise.
            unsafe {
                let pool = arena::pool_of(block as *mut u8, class);
                (*pool).put(block);
                self.blocks_out -= 1;
                let used = (*pool).used() as usize;
                let bin = (*pool).bin();
                if used == 0 {
                    self.unfile(pool);
                    self.pools -= 1;
                    arena::release_pool(pool);
                } else if bin == NOT_LISTED || used * FULLNESS_BINS < bin as usize * blocks {
                    // It was exhausted, or fell below its bin (`used` only went down).
                    self.unfile(pool);
                    self.file(pool);
                }
            }
        }
    }

    /// The pool with room whose bin is fullest, taken out of its bin.
    ///
    /// # Safety
    /// The class lock is held.
    unsafe fn fullest_pool(&mut self) -> Option<*mut Pool> {
        for bin in (0..FULLNESS_BINS).rev() {
            let pool = self.bins[bin].first();
            if !pool.is_null() {
                // SAFETY: pools in the bins are live and guarded by the lock we hold.
                unsafe { self.unfile(pool) };
                return Some(pool);
            }
        }
        None
    }

    /// Puts `pool` into the bin of its fullness, or in none when it has no room.
    ///
    /// # Safety
    /// The class lock is held and `pool` is live and in no bin.
    unsafe fn file(&mut self, pool: *mut Pool) {
        // SAFETY: by the caller's promises.
        unsafe {
            if !(*pool).has_room() {
                return;
            }
            let bin = bin_for(pool);
            self.bins[bin as usize].push_front(pool);
            (*pool).set_bin(bin);
        }
    }

    /// Takes `pool` out of its bin, if it is in one.
    ///
    /// # Safety
    /// The class lock is held and `pool` is live.
    unsafe fn unfile(&mut self, pool: *mut Pool) {
        // SAFETY: by the caller's promises; bin neighbours are live pools of the class.
        unsafe {
            let bin = (*pool).bin();
            if bin == NOT_LISTED {
                return;
            }
            self.bins[bin as usize].remove(pool);
            (*pool).set_bin(NOT_LISTED);
        }
    }
}

/// Cuts the first `n` blocks (all of them if there are fewer) off the null-terminated list
/// that starts at `head`, reading each of their links once: returns them as a batch, its
/// last block (null if it is empty) and the rest of the list.
///
/// # Safety
/// `head` is null or a null-terminated list of free blocks of `class`, ours to relink.
unsafe fn cut(head: *mut Block, n: u32, class: SizeClass) -> (Batch, *mut Block, *mut Block) {
    if n == 0 || head.is_null() {
        return (Batch::EMPTY, ptr::null_mut(), head);
    }
    let mut tail = head;
    // SAFETY: every block reached is a free block of the list (caller); the cut leaves two
    // null-terminated lists.
    unsafe {
        for count in 1..n {
            let next = crate::block::next_of(tail, class);
            if next.is_null() {
                return (Batch { head, count }, tail, next);
            }
            tail = next;
        }
        let next = crate::block::next_of(tail, class);
        if !next.is_null() {
            crate::block::set_next(tail, ptr::null_mut());
        }
        (Batch { head, count: n }, tail, next)
    }
}

/// The fullness bin `pool` belongs in by its count of blocks out.
///
/// # Safety
/// `pool` is live and its class lock is held.
unsafe fn bin_for(pool: *mut Pool) -> u8 {
    // SAFETY: by the caller's promises.
    let (used, blocks) = unsafe {
        (
            (*pool).used() as usize,
            (*pool).class().info().blocks_per_pool,
        )
    };
    (used * FULLNESS_BINS / blocks as usize).min(FULLNESS_BINS - 1) as u8
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::arena::{arena_of, carve_pool, pages_in_pools, release_pool};
    #[cfg(not(feature = "hardened"))]
    use crate::block::Block;
    use crate::consts::USABLE_PAGES;

    #[test]
    fn carving_prefers_the_most_occupied_arena_and_releasing_keeps_counts() {
        // Drive the arena functions directly on a class that no other unit test uses,
        // under its central lock as their contract asks.
        let class = SizeClass::from_index(NUM_CLASSES - 2).unwrap();
        let pages = class.info().pool_pages as usize;
        let _central = central(class).lock();
        // SAFETY: we hold the class's central lock; pools are released before return.
        unsafe {
            let a = carve_pool(class);
            assert!(!a.is_null());
            let arena_a = arena_of(a as *mut u8);
            let used_with_a = pages_in_pools(arena_a);
            assert!(used_with_a >= pages);
            let b = carve_pool(class);
            assert!(!b.is_null() && a != b);
            // With room left in a's arena, b comes from the same (most used) arena.
            if USABLE_PAGES - used_with_a >= pages {
                assert_eq!(arena_of(b as *mut u8), arena_a);
                assert_eq!(pages_in_pools(arena_a), used_with_a + pages);
            }
            release_pool(b);
            assert_eq!(pages_in_pools(arena_a), used_with_a);
            release_pool(a);
            assert_eq!(pages_in_pools(arena_a), used_with_a - pages);
        }
    }

    /// The blocks of a pool, taken as one batch, in the order a thread cache would hand
    /// them out.
    ///
    /// # Safety
    /// The class lock is held and `pool` is a live pool of `class`.
    #[cfg(not(feature = "hardened"))]
    unsafe fn take_all(pool: *mut Pool, class: SizeClass, want: u32) -> Vec<usize> {
        let mut batch = Batch::EMPTY;
        // SAFETY: by the caller's promises.
        unsafe {
            assert_eq!((*pool).take(want, &mut batch), want);
            let mut blocks = Vec::new();
            loop {
                let block = batch.pop(class);
                if block.is_null() {
                    return blocks;
                }
                blocks.push(block as usize);
            }
        }
    }

    #[test]
    #[cfg(not(feature = "hardened"))]
    fn a_pool_hands_scattered_blocks_back_in_address_order() {
        // 192-byte blocks (not a power of two), under the class's central lock as the
        // contract asks; the pool is carved for this test and filed in no bin.
        let class = SizeClass::from_index(12).unwrap();
        assert_eq!(class.size(), 192);
        let blocks = class.info().blocks_per_pool as u32;
        assert!(blocks >= 8);
        let _central = central(class).lock();
        // SAFETY: we hold the class's central lock; every block goes back before the pool
        // is released.
        unsafe {
            let pool = carve_pool(class);
            assert!(!pool.is_null());
            let fresh = take_all(pool, class, blocks);
            assert!(fresh.windows(2).all(|w| w[0] < w[1]), "carved upwards");
            assert!(!(*pool).has_room());
            // All but the first come back in a scrambled order (as a dropped hash map
            // frees them); the first stays out so the pool is not released.
            let n = fresh.len();
            let odd_down = (1..n).rev().filter(|j| j % 2 == 1);
            for j in odd_down.chain((2..n).step_by(2)) {
                (*pool).put(fresh[j] as *mut Block);
            }
            assert_eq!((*pool).used(), 1);
            let again = take_all(pool, class, blocks - 1);
            assert_eq!(again, fresh[1..], "handed out again in address order");
            // Scattered again, in part: a few blocks back, below the sweep.
            for &j in &[n - 1, 2, n / 2] {
                (*pool).put(fresh[j] as *mut Block);
            }
            let mut some = take_all(pool, class, 3);
            some.sort_unstable();
            assert_eq!(some, [fresh[2], fresh[n / 2], fresh[n - 1]]);
            for &block in &fresh {
                (*pool).put(block as *mut Block);
            }
            assert_eq!((*pool).used(), 0);
            release_pool(pool);
        }
    }
}
