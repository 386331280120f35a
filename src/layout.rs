//! Where things are in an arena, and the address arithmetic that finds them. This is the
//! bottom of the small-block layers: `hardened`, `block`, `pool`, `arena`, `central` and
//! the front build on it, and it knows nothing of them.
//!
//! An arena is `ARENA_SIZE` bytes aligned to its size, so `block & ARENA_MASK` is the
//! arena of any block in it ([`arena_of`]). Its pages:
//!
//! - page 0, the header, starts with the [`PageMap`] (`arena.rs` embeds it as the first
//!   field of its `Arena` header and owns the rest: lists, free-page bitmaps, pool
//!   descriptors);
//! - page 1 is the **out-block bitmap**, one bit per `GRANULE` bytes of the arena ([`OutBit`]:
//!   set while the block that starts there is out of its pool, or, in hardened builds, live;
//!   see `pool.rs` and `hardened.rs`);
//! - pages `HEADER_PAGES..` are pools.
//!
//! **The page map** says, for every page, the first page and the size class of the pool it
//! belongs to (0: in no pool). `arena.rs` writes it
//! under the arena lock when it carves a pool and clears the
//! pages when the pool goes back; the entries of a pool do not change while any block of it
//! is out, so whoever holds a block reads them without a lock (C `free`, which carries no
//! size, and the hardened checks). Whether an address starts a block is told two ways: by
//! its out bit, set only at block starts, which is what C's `free` reads
//! ([`class_of_out_block`]: a block being freed is out), or by its offset in its pool,
//! for blocks are laid out from the pool's first page, `size` apart ([`class_of_block`],
//! which also finds blocks that are back in their pool).

#[cfg(feature = "hardened")]
use crate::chunk_map;
use crate::consts::{ARENA_MASK, GRANULE, PAGES_PER_ARENA, PAGE_SHIFT, PAGE_SIZE};
use crate::size_class::SizeClass;
// The map and the bitmap are `core`'s atomics even in the loom models, which cannot build
// theirs in memory mapped from the OS (zero bytes are an empty map, as a fresh arena's
// header page has them) and so do not model these words: their protocol is the arena
// lock for writes and, for lock-free reads, a block of the pool in the reader's hands.
use crate::sync::unmodelled::{AtomicU64, AtomicU8};
use crate::sync::Ordering;

/// The start of an arena's header: what a block's address leads to without a lock.
#[repr(C)]
pub(crate) struct PageMap {
    /// Per page, 0 for a page in no pool, else the pool's first page (at least
    /// `HEADER_PAGES`).
    starts: [AtomicU8; PAGES_PER_ARENA],
    /// Per page in a pool, the index of the pool's size class: one byte load for C's
    /// `free` ([`class_of_out_block`]).
    classes: [AtomicU8; PAGES_PER_ARENA],
}

impl PageMap {
    /// Records pages `start..start + pages` as a pool of `class`. The caller holds the
    /// arena lock.
    pub(crate) fn set_pool(&self, start: usize, pages: usize, class: SizeClass) {
        for page in start..start + pages {
            self.classes[page].store(class.index() as u8, Ordering::Relaxed);
            self.starts[page].store(start as u8, Ordering::Relaxed);
        }
    }

    /// Records pages `start..start + pages` as in no pool. The caller holds the arena lock.
    pub(crate) fn clear_pool(&self, start: usize, pages: usize) {
        for page in start..start + pages {
            self.starts[page].store(0, Ordering::Relaxed);
        }
    }

    /// The first page of the pool that page `page` is in, or 0.
    #[inline]
    pub(crate) fn pool_start(&self, page: usize) -> usize {
        self.starts[page].load(Ordering::Relaxed) as usize
    }

    /// The class of the pool that page `page` is in; meaningful only for a page in a pool.
    #[inline(always)]
    fn class_of_page(&self, page: usize) -> SizeClass {
        let index = self.classes[page].load(Ordering::Relaxed) as usize;
        // SAFETY: entries hold 0 or what `set_pool` wrote, the index of a valid class.
        unsafe { SizeClass::from_index_unchecked(index) }
    }

    /// The first page and the class of the pool that page `page` is in, if any.
    #[inline]
    fn pool_of_page(&self, page: usize) -> Option<(usize, SizeClass)> {
        let start = self.pool_start(page);
        (start != 0).then(|| (start, self.class_of_page(page)))
    }
}

/// The header (page map) of the arena that `block` lies in, if it lies in an arena.
#[inline(always)]
pub(crate) fn arena_of(block: *mut u8) -> *mut PageMap {
    (block as usize & ARENA_MASK) as *mut PageMap
}

/// The page of its arena that `address` lies in.
#[inline(always)]
pub(crate) fn page_of(address: *mut u8) -> usize {
    (address as usize & !ARENA_MASK) >> PAGE_SHIFT
}

/// The class of `block` if it is the start of a block in a live pool of an arena, read
/// without a lock (see the page map above).
///
/// # Safety
/// `arena_of(block)` is a live arena (the chunk map says its chunk is one).
#[cfg_attr(feature = "hardened", inline)] // on every hardened alloc and free
pub(crate) unsafe fn class_of_block(block: *mut u8) -> Option<SizeClass> {
    let page = page_of(block);
    // SAFETY: the header is live by the caller's promise; `page < PAGES_PER_ARENA`.
    let map = unsafe { &*arena_of(block) };
    let (start, class) = map.pool_of_page(page)?;
    let info = class.info();
    let offset = (block as usize & !ARENA_MASK) - start * PAGE_SIZE;
    let blocks_end = info.blocks_per_pool as usize * info.size as usize;
    (offset < blocks_end && info.is_block_offset(offset)).then_some(class)
}

/// The class of `block` if its bit in the out-block bitmap is set: it then starts a block
/// of a live pool that is out of it (default builds: in a thread cache, a batch or the
/// program's hands; hardened builds: live), for bits are set at block starts only. This is
/// the lookup of C's `free`: a load of the bitmap word and one of the page's entry, where
/// [`class_of_block`] needs the class's geometry and a division; it reads no entry that
/// can change, for a pool's entries stay while any of its blocks is out.
///
/// # Safety
/// `arena_of(block)` is a live arena (the chunk map says its chunk is one).
#[inline(always)]
pub(crate) unsafe fn class_of_out_block(block: *mut u8) -> Option<SizeClass> {
    if block as usize % GRANULE != 0 {
        return None;
    }
    // SAFETY: the caller's promise; the block is a multiple of the granule.
    unsafe { class_of_out_granule(block) }
}

/// [`class_of_out_block`] of an address known to be a multiple of [`GRANULE`] (C's `free`
/// tests that with the chunk map's bound, see `chunk_map::is_aligned_in_arena`).
///
/// # Safety
/// `arena_of(block)` is a live arena and `block` is a multiple of [`GRANULE`].
#[inline(always)]
pub(crate) unsafe fn class_of_out_granule(block: *mut u8) -> Option<SizeClass> {
    // SAFETY: the bitmap page of a live arena.
    if !unsafe { OutBit::of(block).is_set() } {
        return None;
    }
    // The page from the bitmap word's index (8 words a page), which `OutBit::of` computed:
    // one instruction fewer than from the address.
    let word = (block as usize & !ARENA_MASK) / GRANULE / 64;
    let page = word / (PAGE_SIZE / GRANULE / 64);
    debug_assert_eq!(page, page_of(block));
    // SAFETY: the header is live by the caller's promise; `page < PAGES_PER_ARENA`, and a
    // set out bit lies in a pool.
    Some(unsafe { (*arena_of(block)).class_of_page(page) })
}

/// Whether `ptr` is the start of a block of `class` in a live pool of one of our arenas.
/// Any address may be asked: nothing is read before the chunk map vouches for the arena.
#[cfg(feature = "hardened")]
#[inline]
pub(crate) fn is_block_of_class(ptr: *mut u8, class: SizeClass) -> bool {
    // SAFETY: the chunk map says the chunk is an arena, so its header is ours and mapped.
    chunk_map::is_arena(ptr as usize) && unsafe { class_of_block(ptr) == Some(class) }
}

/// The bit of a block start in its arena's out-block bitmap (page 1 of the arena). Every
/// bitmap word covers part of one page, so of at most one pool: in default builds it is
/// written under that pool's class lock (atomic loads and stores, no read-modify-write,
/// for C's `free` reads it without the lock: [`class_of_out_block`]), in hardened builds
/// with atomic read-modify-writes.
#[derive(Clone, Copy)]
pub(crate) struct OutBit {
    word: *mut u64,
    bit: u64,
}

impl OutBit {
    /// The bit of `block`, which lies in an arena.
    #[inline]
    pub(crate) fn of(block: *mut u8) -> OutBit {
        let granule = (block as usize & !ARENA_MASK) / GRANULE;
        // The bitmap has one bit per granule of the arena: the word is in bounds.
        let bitmap = (block as usize & ARENA_MASK) + PAGE_SIZE;
        OutBit {
            word: (bitmap as *mut u64).wrapping_add(granule / 64),
            bit: 1 << (granule % 64),
        }
    }

    /// Sets the bit.
    ///
    /// # Safety
    /// The block lies in a live pool whose class lock the caller holds.
    #[cfg(not(feature = "hardened"))]
    #[inline]
    pub(crate) unsafe fn set(self) {
        // SAFETY: the word is in the arena's bitmap page; its writers hold the class lock.
        let word = unsafe { self.atomic() };
        word.store(word.load(Ordering::Relaxed) | self.bit, Ordering::Relaxed);
    }

    /// Clears the bit; returns whether it was set.
    ///
    /// # Safety
    /// As [`OutBit::set`].
    #[cfg(not(feature = "hardened"))]
    #[inline]
    pub(crate) unsafe fn clear(self) -> bool {
        // SAFETY: as in `set`.
        let word = unsafe { self.atomic() };
        let bits = word.load(Ordering::Relaxed);
        word.store(bits & !self.bit, Ordering::Relaxed);
        bits & self.bit != 0
    }

    /// Whether the bit is set (atomic read, without a lock).
    ///
    /// # Safety
    /// The block lies in a live arena.
    #[inline(always)]
    pub(crate) unsafe fn is_set(self) -> bool {
        // SAFETY: the caller's promise.
        unsafe { self.atomic() }.load(Ordering::Relaxed) & self.bit != 0
    }

    /// The word as an atomic.
    ///
    /// # Safety
    /// The block lies in a live arena.
    #[inline(always)]
    unsafe fn atomic<'a>(self) -> &'a AtomicU64 {
        // SAFETY: the word is in the live arena's bitmap page and 8-aligned.
        unsafe { &*(self.word as *const AtomicU64) }
    }

    /// Sets the bit atomically; returns whether it was set.
    ///
    /// # Safety
    /// The block lies in a live pool of an arena.
    #[cfg(feature = "hardened")]
    #[inline(always)]
    pub(crate) unsafe fn set_atomic(self) -> bool {
        // SAFETY: the caller's promise.
        unsafe { self.atomic() }.fetch_or(self.bit, Ordering::Relaxed) & self.bit != 0
    }

    /// Clears the bit atomically; returns whether it was set.
    ///
    /// # Safety
    /// As [`OutBit::set_atomic`].
    #[cfg(feature = "hardened")]
    #[inline(always)]
    pub(crate) unsafe fn clear_atomic(self) -> bool {
        // SAFETY: the caller's promise.
        unsafe { self.atomic() }.fetch_and(!self.bit, Ordering::Relaxed) & self.bit != 0
    }
}
