//! Pools: a run of whole pages inside one arena that serves blocks of one size class.
//!
//! A pool's blocks are in one of three places:
//!
//! - *out*: handed to a thread cache, a transfer batch or the program (`used` counts them);
//! - on the pool's own free list (`free`), returned by a central flush;
//! - *uncarved*: never handed out yet, from `bump` to `end`; carving them lazily keeps a
//!   fresh pool's untouched pages out of the process's resident set.
//!
//! Invariant: `used + |free| + (end - bump) / size == blocks_per_pool` of the class.
//! When `used` drops to 0 the pool gives its pages back to its arena.
//!
//! **Out bits.** The arena's out-block bitmap has a bit per block start, set exactly while
//! the block is out: [`Pool::take`] sets it, [`Pool::put`] checks and clears it. A block
//! coming back whose bit is clear was never handed out or came back already: a double
//! free, reported and fatal. This costs a bit operation per block on the batch paths and
//! nothing on the thread-cache fast path.
//!
//! The descriptor lives in the arena header (`Arena::pools[start_page]`) and is guarded
//! by the central lock of its class; `prev`/`next`/`bin` link it into that class's
//! fullness bins (see `central.rs`).

use crate::arena::out_bitmap_of;
use crate::block::{Batch, Block};
use crate::consts::{ARENA_MASK, GRANULE};
use crate::fatal::fatal;
use crate::sanitizer;
use crate::size_class::SizeClass;
use core::ptr;

/// `bin` of a pool that is in no fullness bin (exhausted, or being worked on).
pub(crate) const NOT_LISTED: u8 = u8::MAX;

/// A pool descriptor.
#[repr(C)]
pub(crate) struct Pool {
    /// Blocks returned to this pool.
    pub(crate) free: *mut Block,
    /// Next uncarved block.
    pub(crate) bump: *mut u8,
    /// End of the last whole block.
    pub(crate) end: *mut u8,
    /// Neighbours in the class's fullness bin.
    pub(crate) prev: *mut Pool,
    pub(crate) next: *mut Pool,
    /// Blocks out of the pool.
    pub(crate) used: u32,
    /// Size class index.
    pub(crate) class: u8,
    /// Fullness bin, or [`NOT_LISTED`].
    pub(crate) bin: u8,
    /// Index of the pool's first page in its arena.
    pub(crate) start_page: u8,
    /// Number of pages.
    pub(crate) pages: u8,
}

impl Pool {
    /// Sets up a fresh pool over `pages` pages at `start`.
    pub(crate) fn init(&mut self, class: SizeClass, start: *mut u8, start_page: u8) {
        let info = class.info();
        self.free = ptr::null_mut();
        self.bump = start;
        self.end = start.wrapping_add(info.blocks_per_pool as usize * info.size as usize);
        self.prev = ptr::null_mut();
        self.next = ptr::null_mut();
        self.used = 0;
        self.class = class.index() as u8;
        self.bin = NOT_LISTED;
        self.start_page = start_page;
        self.pages = info.pool_pages;
        // SAFETY: the pool's pages were just taken for it from its arena: ours, mapped, and
        // with no live block in them.
        unsafe { sanitizer::fence_off(start, self.end as usize - start as usize) };
    }

    /// The class this pool serves.
    pub(crate) fn class(&self) -> SizeClass {
        // SAFETY: `class` was written by `init` from a valid `SizeClass`.
        unsafe { SizeClass::from_index_unchecked(self.class as usize) }
    }

    /// Whether the pool can hand out another block.
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        !self.free.is_null() || self.bump < self.end
    }

    /// Moves up to `want` blocks from the pool onto `out`, recycled ones first; returns how
    /// many were moved.
    ///
    /// # Safety
    /// The caller holds the central lock of the pool's class.
    pub(crate) unsafe fn take(&mut self, want: u32, out: &mut Batch) -> u32 {
        let size = self.class().size();
        let mut taken = 0;
        while taken < want && !self.free.is_null() {
            let block = self.free;
            // SAFETY: blocks on the pool's free list are free blocks of this pool, and the
            // class lock guards their out bits.
            unsafe {
                self.free = Block::next(block);
                set_out(block as *mut u8);
                out.push(block);
            }
            taken += 1;
        }
        // Carve the fresh blocks last and from the top down, so that they come off the
        // front of `out` in ascending address order: consecutive allocations then walk
        // memory forwards, as hardware prefetchers and the TLB like.
        let uncarved = (self.end as usize - self.bump as usize) / size;
        let carve = (want - taken).min(uncarved as u32);
        for i in (0..carve as usize).rev() {
            let block = self.bump.wrapping_add(i * size) as *mut Block;
            // SAFETY: an uncarved block lies inside the pool's pages and is unused.
            unsafe {
                set_out(block as *mut u8);
                out.push(block);
            }
        }
        self.bump = self.bump.wrapping_add(carve as usize * size);
        taken += carve;
        self.used += taken;
        taken
    }

    /// Returns one block to the pool's free list.
    ///
    /// # Safety
    /// The caller holds the central lock of the pool's class and `block` is an out block
    /// of this pool.
    #[inline]
    pub(crate) unsafe fn put(&mut self, block: *mut Block) {
        // SAFETY: the block is a block of this pool (caller) and the class lock guards its
        // out bit; once that shows it out, it is ours again and its first word the link.
        unsafe {
            if !clear_out(block as *mut u8) {
                fatal("double free of", block as usize);
            }
            Block::set_next(block, self.free);
        }
        self.free = block;
        self.used -= 1;
    }

    /// Whether `address` is the start of a block of this pool that was carved (handed out
    /// at least once); it says nothing of whether the block is out now.
    pub(crate) fn is_carved_block(&self, address: usize, pool_start: usize) -> bool {
        let size = self.class().size();
        let offset = address.wrapping_sub(pool_start);
        offset < self.bump as usize - pool_start && offset % size == 0
    }
}

/// The word and bit of `block` in its arena's out-block bitmap.
#[inline]
fn out_bit(block: *mut u8) -> (*mut u64, u64) {
    let granule = (block as usize & !ARENA_MASK) / GRANULE;
    // The bitmap has one bit per granule of the arena: the word is in bounds.
    (
        out_bitmap_of(block).wrapping_add(granule / 64),
        1 << (granule % 64),
    )
}

/// Marks `block` out.
///
/// # Safety
/// `block` starts a block of a live pool whose class lock the caller holds.
#[inline]
unsafe fn set_out(block: *mut u8) {
    let (word, bit) = out_bit(block);
    // SAFETY: the word is in the arena's bitmap page and guarded by the held class lock.
    unsafe { *word |= bit };
}

/// Marks `block` back in; returns whether it was out.
///
/// # Safety
/// As [`set_out`].
#[inline]
unsafe fn clear_out(block: *mut u8) -> bool {
    let (word, bit) = out_bit(block);
    // SAFETY: as in `set_out`.
    unsafe {
        let was_out = *word & bit != 0;
        *word &= !bit;
        was_out
    }
}
