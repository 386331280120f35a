//! Pools: a run of whole pages inside one arena that serves blocks of one size class.
//!
//! A pool's carved blocks lie from its first block up to `bump`; `sweep` is a cursor in
//! that range (`first block <= sweep <= bump <= end`). A block of the pool is in one of
//! four places:
//!
//! - *out*: handed to a thread cache, a transfer batch or the program (`used` counts
//!   them; its out bit is set);
//! - *listed*: free, below `sweep`, on the pool's LIFO free list (`free`, `listed` long);
//! - *swept*: free, in `sweep..bump`, on no list: its clear out bit is all that says so;
//! - *uncarved*: never handed out yet, from `bump` to the end of the last whole block
//!   (`end`, computed from the class); carving them lazily keeps a
//!   fresh pool's untouched pages out of the process's resident set.
//!
//! Invariant: `used + listed + |free blocks in sweep..bump| + (end - bump) / size ==
//! blocks_per_pool` of the class, so the pool has room exactly while `used <
//! blocks_per_pool`. When `used` drops to 0 the pool gives its pages back to its arena.
//!
//! **Address order.** Blocks come back in whatever order the program freed them (a
//! dropped hash map frees in hash order). Handed out again in that order, consecutive
//! allocations would land on scattered cache lines, one miss each, where blocks handed out
//! in address order share lines (four 16-byte blocks to a line) and walk pages forwards.
//! So [`Pool::take`] gives out, in this order: the swept blocks, found by walking the out
//! bits upwards from `sweep` (address order); then the free list (LIFO); then fresh blocks
//! carved upwards from `bump` (address order). A block coming back ([`Pool::put`]) at or
//! above `sweep` only clears its bit and is not touched; below `sweep` it goes on the free
//! list. When the free list is long enough that walking the bits again from the pool's
//! first block costs at most [`REWIND_COST`] looks per listed block, `take` *rewinds*:
//! it drops the list (O(1): its blocks have clear bits) and restarts the sweep at the
//! first block, so a pool that has had many blocks back hands them out in address order.
//! All this is under the class lock on the batch paths; the thread cache's fast paths do
//! not change.
//!
//! **Out bits.** The arena's out-block bitmap has a bit per block start, set exactly while
//! the block is out: [`Pool::take`] sets it, [`Pool::put`] checks and clears it. A block
//! coming back whose bit is clear was never handed out or came back already: a double
//! free, reported and fatal. This costs a bit operation per block on the batch paths and
//! nothing on the thread-cache fast path.
//!
//! With the `hardened` feature the bits mean *live* instead (set while the program holds
//! the block) and are set and cleared atomically by every `alloc` and `free`, which checks
//! them (see `hardened.rs`); [`Pool::take`] then leaves them alone, [`Pool::put`] checks a
//! returning block is not live, links read from the pool's free list must stay inside the
//! pool, and fresh blocks are carved in random order. A clear bit then does not mean a
//! block is in its pool (it may be in a cache), so there is no sweep: `sweep` stays at
//! `bump` and every block coming back is listed.
//!
//! The descriptor lives in the arena header (`Arena::pools[start_page]`) and is guarded
//! by the central lock of its class; its `links` and `bin` file it in that class's
//! fullness bins (see `central.rs`).

use crate::block::{next_of, set_next, Batch, Block};
use crate::consts::{ARENA_MASK, PAGE_SIZE};
use crate::fatal::fatal;
use crate::layout::OutBit;
use crate::list::{Linked, Links};
use crate::sanitizer;
use crate::size_class::SizeClass;
use core::ptr;

/// The sweep restarts from a pool's first block when that costs at most this many looks at
/// a block per block it recovers from the free list (see [`Pool::take`]).
#[cfg(not(feature = "hardened"))]
const REWIND_COST: usize = 4;

/// `bin` of a pool that is in no fullness bin (exhausted, or being worked on).
pub(crate) const NOT_LISTED: u8 = u8::MAX;

/// What a block coming back to its pool with the wrong out bit is: in the default build
/// a block that was not out (freed twice); in the hardened build, where every free checks
/// for that, a live block, which only a corrupted free list can bring back.
#[cfg(not(feature = "hardened"))]
const PUT_MISUSE: &str = "double free of";
#[cfg(feature = "hardened")]
const PUT_MISUSE: &str = "corrupted free list at";

/// A pool descriptor. Its fields are this module's; the layers above use the methods.
/// 48 bytes: the arena header holds one per page (`arena.rs`).
#[repr(C)]
pub(crate) struct Pool {
    /// Free blocks below `sweep`, returned to this pool (LIFO).
    free: *mut Block,
    /// Next carved block the sweep looks at; `sweep <= bump`.
    sweep: *mut u8,
    /// Next uncarved block (the carved high-water mark).
    bump: *mut u8,
    /// Its place in the class's fullness bin.
    links: Links<Pool>,
    /// Blocks out of the pool.
    used: u16,
    /// Blocks on `free`.
    listed: u16,
    /// Size class index.
    class: u8,
    /// Fullness bin, or [`NOT_LISTED`].
    bin: u8,
    /// Index of the pool's first page in its arena.
    start_page: u8,
    /// Number of pages.
    pages: u8,
}

const _: () = assert!(core::mem::size_of::<Pool>() <= 48);

// SAFETY: `links` is a field of the node itself.
unsafe impl Linked for Pool {
    fn links(node: *mut Pool) -> *mut Links<Pool> {
        // SAFETY: a field address of the node, computed without reading it.
        unsafe { ptr::addr_of_mut!((*node).links) }
    }
}

impl Pool {
    /// Sets up a fresh pool over `pages` pages at `start`.
    pub(crate) fn init(&mut self, class: SizeClass, start: *mut u8, start_page: u8) {
        let info = class.info();
        self.free = ptr::null_mut();
        self.sweep = start;
        self.bump = start;
        self.links = Links::new();
        self.used = 0;
        self.listed = 0;
        self.class = class.index() as u8;
        self.bin = NOT_LISTED;
        self.start_page = start_page;
        self.pages = info.pool_pages;
        // SAFETY: the pool's pages were just taken for it from its arena: ours, mapped, and
        // with no live block in them.
        unsafe { sanitizer::fence_off(start, info.blocks_per_pool as usize * info.size as usize) };
    }

    /// Blocks out of the pool (0: it can go back to its arena).
    #[inline]
    pub(crate) fn used(&self) -> u32 {
        self.used as u32
    }

    /// The fullness bin the pool is filed in, or [`NOT_LISTED`] (kept by `central.rs`).
    #[inline]
    pub(crate) fn bin(&self) -> u8 {
        self.bin
    }

    /// Records the fullness bin the pool is filed in (`central.rs`, under the class lock).
    #[inline]
    pub(crate) fn set_bin(&mut self, bin: u8) {
        self.bin = bin;
    }

    /// The pages of its arena the pool occupies: first page and count.
    pub(crate) fn page_run(&self) -> (usize, usize) {
        (self.start_page as usize, self.pages as usize)
    }

    /// The class this pool serves.
    pub(crate) fn class(&self) -> SizeClass {
        // SAFETY: `class` was written by `init` from a valid `SizeClass`.
        unsafe { SizeClass::from_index_unchecked(self.class as usize) }
    }

    /// Whether the pool can hand out another block.
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        (self.used as u32) < self.class().info().blocks_per_pool as u32
    }

    /// Moves up to `want` blocks from the pool onto `out`; returns how many were moved.
    /// Recycled blocks come first: those the sweep finds (in address order), then the
    /// free list's; then fresh blocks, carved in address order.
    ///
    /// # Safety
    /// The caller holds the central lock of the pool's class.
    pub(crate) unsafe fn take(&mut self, want: u32, out: &mut Batch) -> u32 {
        let class = self.class();
        let size = class.size();
        #[cfg(not(feature = "hardened"))]
        // SAFETY: the class lock is held (caller).
        let mut taken = unsafe {
            self.rewind_if_cheap(size);
            self.sweep(want, size, out)
        };
        #[cfg(feature = "hardened")]
        let mut taken = 0;
        while taken < want && !self.free.is_null() {
            let block = self.free;
            // SAFETY: blocks on the pool's free list are free blocks of this pool, and the
            // class lock guards their out bits.
            unsafe {
                self.free = next_of(block, class);
                #[cfg(feature = "hardened")]
                self.check_link(block, self.free);
                #[cfg(not(feature = "hardened"))]
                OutBit::of(block as *mut u8).set();
                out.push(block);
            }
            self.listed -= 1;
            taken += 1;
        }
        let end = self.start() + class.info().blocks_per_pool as usize * size;
        let uncarved = (end - self.bump as usize) / size;
        let carve = (want - taken).min(uncarved as u32) as usize;
        if carve > 0 {
            // SAFETY: the `carve` blocks from `bump` are uncarved blocks of this pool.
            unsafe { self.carve(carve, size, out) };
            self.bump = self.bump.wrapping_add(carve * size);
            // The sweep found nothing more below the old `bump` (else `want` would have
            // been met), and the fresh blocks are all out.
            self.sweep = self.bump;
            taken += carve as u32;
        }
        self.used += taken as u16;
        taken
    }

    /// The address of the pool's first block (its first page).
    fn start(&self) -> usize {
        (self as *const Pool as usize & ARENA_MASK) + self.start_page as usize * PAGE_SIZE
    }

    /// Restarts the sweep at the pool's first block, dropping the free list (whose blocks
    /// the sweep then finds by their clear out bits, in address order), when that costs at
    /// most [`REWIND_COST`] looks at a block per listed block recovered: the blocks below
    /// `sweep` that are free are exactly the listed ones.
    #[cfg(not(feature = "hardened"))]
    fn rewind_if_cheap(&mut self, size: usize) {
        if self.listed == 0 {
            return;
        }
        let behind = (self.sweep as usize - self.start()) / size;
        if (self.listed as usize) * REWIND_COST < behind {
            return;
        }
        self.free = ptr::null_mut();
        self.listed = 0;
        self.sweep = self.start() as *mut u8;
    }

    /// Takes up to `want` free blocks from `sweep` upwards, in address order, onto the
    /// front of `out` (so they come off it in ascending order); returns how many.
    ///
    /// # Safety
    /// The class lock is held.
    #[cfg(not(feature = "hardened"))]
    unsafe fn sweep(&mut self, want: u32, size: usize, out: &mut Batch) -> u32 {
        let carved = (self.bump as usize - self.start()) / size;
        // Free blocks in `sweep..bump`: every carved block is out, listed, or there.
        let mut left = carved - self.used as usize - self.listed as usize;
        let mut at = self.sweep;
        let mut head: *mut Block = ptr::null_mut();
        let mut tail: *mut Block = ptr::null_mut();
        let mut found = 0;
        while found < want && left > 0 {
            // `left > 0` keeps `at` below `bump`: a carved block start of this pool.
            let bit = OutBit::of(at);
            // SAFETY: the block is a carved block of this pool; the class lock guards its
            // out bit, and a block whose bit was clear is free and in no list: its first
            // word is ours to write. An out block's bit is only read: C's `free` reads it
            // without the lock (`layout::class_of_out_block`), and must never see a live
            // block's bit clear, not even for an instant.
            unsafe {
                if !bit.is_set() {
                    bit.set();
                    let block = at as *mut Block;
                    if tail.is_null() {
                        head = block;
                    } else {
                        set_next(tail, block);
                    }
                    tail = block;
                    found += 1;
                    left -= 1;
                }
            }
            at = at.wrapping_add(size);
        }
        // Nothing free is left above: let the next look start where carving does.
        self.sweep = if left == 0 { self.bump } else { at };
        if found > 0 {
            // SAFETY: `tail` is the last block found, free and ours.
            unsafe { set_next(tail, out.head) };
            out.head = head;
            out.count += found;
        }
        found
    }

    /// Pushes the `count` blocks from `bump` onto `out`, from the top down, so that they
    /// come off the front of `out` in ascending address order: consecutive allocations then
    /// walk memory forwards, as hardware prefetchers and the TLB like.
    ///
    /// # Safety
    /// The blocks are uncarved blocks of this pool; the class lock is held.
    #[cfg(not(feature = "hardened"))]
    unsafe fn carve(&mut self, count: usize, size: usize, out: &mut Batch) {
        for i in (0..count).rev() {
            let block = self.bump.wrapping_add(i * size) as *mut Block;
            // SAFETY: an uncarved block lies inside the pool's pages and is unused.
            unsafe {
                OutBit::of(block as *mut u8).set();
                out.push(block);
            }
        }
    }

    /// Pushes the `count` blocks from `bump` onto `out` in a random order, so that blocks
    /// allocated one after the other are not neighbours (hardened builds). In debug builds
    /// they are filled with the free pattern, which allocation checks.
    ///
    /// # Safety
    /// As the default build's `carve`.
    #[cfg(feature = "hardened")]
    unsafe fn carve(&mut self, count: usize, size: usize, out: &mut Batch) {
        const CHUNK: usize = 64;
        let mut order = [0u8; CHUNK];
        let mut done = 0;
        while done < count {
            let n = (count - done).min(CHUNK);
            crate::hardened::shuffle(&mut order[..n]);
            for &i in &order[..n] {
                let block = self.bump.wrapping_add((done + i as usize) * size) as *mut Block;
                // SAFETY: an uncarved block lies inside the pool's pages and is unused.
                unsafe {
                    #[cfg(debug_assertions)]
                    crate::hardened::fill(block as *mut u8, size);
                    out.push(block);
                }
            }
            done += n;
        }
    }

    /// Aborts unless `next`, read from the link of `block` on this pool's free list, is null
    /// or a carved block of this pool.
    #[cfg(feature = "hardened")]
    fn check_link(&self, block: *mut Block, next: *mut Block) {
        if !next.is_null() && !self.is_carved_block(next as usize, self.start()) {
            fatal("corrupted free list at", block as usize);
        }
    }

    /// Takes one block back: it clears its out bit, and goes on the free list if it lies below
    /// `sweep` (at or above, the sweep finds it by its clear bit).
    ///
    /// Default builds: `block` may be any multiple of the granule in the pool's pages (see
    /// `arena::pool_of`); its bit is set only if it starts a carved block that is out, so a
    /// clear bit is a double free or, off a block start, an invalid free, told apart on the
    /// way to the abort.
    ///
    /// # Safety
    /// The caller holds the central lock of the pool's class, and `block` is an out block
    /// of this pool (hardened builds) or a multiple of the granule in its pages (default
    /// builds).
    #[inline]
    pub(crate) unsafe fn put(&mut self, block: *mut Block) {
        // SAFETY: the block lies in this pool's pages (caller) and the class lock guards its
        // out bit; once that shows it out (default) or not live (hardened), it is ours
        // again and its first word the link.
        unsafe {
            #[cfg(not(feature = "hardened"))]
            if !OutBit::of(block as *mut u8).clear() {
                self.not_out(block);
            }
            #[cfg(feature = "hardened")]
            if OutBit::of(block as *mut u8).is_set() {
                fatal(PUT_MISUSE, block as usize);
            }
        }
        self.used -= 1;
        // At or above `sweep`, the sweep finds the block by its clear bit.
        if (block as *mut u8) < self.sweep {
            // SAFETY: the block is free and ours again (above); its first word the link.
            unsafe { set_next(block, self.free) };
            self.free = block;
            self.listed += 1;
        }
    }

    /// Aborts for `block`, coming back with its out bit clear: a double free if it starts a
    /// carved block, an invalid free otherwise.
    #[cfg(not(feature = "hardened"))]
    #[cold]
    #[inline(never)]
    fn not_out(&self, block: *mut Block) -> ! {
        if self.is_carved_block(block as usize, self.start()) {
            fatal(PUT_MISUSE, block as usize);
        }
        fatal("invalid free of", block as usize);
    }

    /// Whether `address` is the start of a block of this pool that was carved (handed out
    /// at least once); it says nothing of whether the block is out now.
    pub(crate) fn is_carved_block(&self, address: usize, pool_start: usize) -> bool {
        let offset = address.wrapping_sub(pool_start);
        offset < self.bump as usize - pool_start && self.class().info().is_block_offset(offset)
    }
}
