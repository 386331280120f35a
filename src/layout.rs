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
//! size, and the hardened checks). A block's offset in its pool tells whether it starts a
//! block of the class: blocks are laid out from the pool's first page, `size` apart.

#[cfg(feature = "hardened")]
use crate::chunk_map;
use crate::consts::{ARENA_MASK, GRANULE, PAGES_PER_ARENA, PAGE_SHIFT, PAGE_SIZE};
use crate::size_class::SizeClass;
use crate::sync::{AtomicU16, Ordering};

/// Tells an arena header from anything else ("ebbarena").
const ARENA_MAGIC: u64 = 0x6562_6261_7265_6e61;

/// The start of an arena's header: what a block's address leads to without a lock.
#[repr(C)]
pub(crate) struct PageMap {
    magic: u64,
    /// Per page, 0 for a page in no pool; for a page in a pool, the pool's first page
    /// (low byte) and the index of its size class (high byte): one word, so one load
    /// answers both and the map costs as many atomics as pages.
    pages: [AtomicU16; PAGES_PER_ARENA],
}

/// Bits of a page entry that hold the pool's first page.
const START_MASK: u16 = 0xff;
const CLASS_SHIFT: u32 = 8;

impl PageMap {
    /// Marks a fresh arena's header (all pages in no pool: zero bytes).
    ///
    /// # Safety
    /// `map` is the zero-filled header of an arena nobody else sees yet.
    pub(crate) unsafe fn init(map: *mut PageMap) {
        // SAFETY: by the caller's promise.
        unsafe {
            core::ptr::addr_of_mut!((*map).magic).write(ARENA_MAGIC);
            // Loom's atomics are handles into the model's state, for which zero bytes are
            // no valid value: make them.
            #[cfg(loom)]
            for page in 0..PAGES_PER_ARENA {
                core::ptr::addr_of_mut!((*map).pages[page]).write(AtomicU16::new(0));
            }
        }
    }

    /// Records pages `start..start + pages` as a pool of `class`. The caller holds the
    /// arena lock.
    pub(crate) fn set_pool(&self, start: usize, pages: usize, class: SizeClass) {
        let entry = start as u16 | (class.index() as u16) << CLASS_SHIFT;
        for page in &self.pages[start..start + pages] {
            page.store(entry, Ordering::Relaxed);
        }
    }

    /// Records pages `start..start + pages` as in no pool. The caller holds the arena lock.
    pub(crate) fn clear_pool(&self, start: usize, pages: usize) {
        for page in &self.pages[start..start + pages] {
            page.store(0, Ordering::Relaxed);
        }
    }

    /// The first page of the pool that page `page` is in, or 0.
    #[inline]
    pub(crate) fn pool_start(&self, page: usize) -> usize {
        (self.pages[page].load(Ordering::Relaxed) & START_MASK) as usize
    }

    /// The first page and the class of the pool that page `page` is in, if any.
    #[inline]
    fn pool_of_page(&self, page: usize) -> Option<(usize, SizeClass)> {
        let entry = self.pages[page].load(Ordering::Relaxed);
        if entry == 0 {
            return None;
        }
        // SAFETY: `set_pool` wrote the index of a valid class into a non-zero entry.
        let class = unsafe { SizeClass::from_index_unchecked((entry >> CLASS_SHIFT) as usize) };
        Some(((entry & START_MASK) as usize, class))
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

/// Whether the chunk at `chunk` is an arena (rather than a large mapping's header slot).
///
/// # Safety
/// The chunk is in the chunk map, so its first page is mapped and ours.
#[cfg_attr(feature = "hardened", inline)] // on every hardened alloc and free
pub(crate) unsafe fn is_arena(chunk: usize) -> bool {
    // SAFETY: by the caller's promise.
    unsafe { (*(chunk as *const PageMap)).magic == ARENA_MAGIC }
}

/// The class of `block` if it is the start of a block in a live pool of an arena, read
/// without a lock (see the page map above).
///
/// # Safety
/// `arena_of(block)` is a live arena (its chunk is in the chunk map and it is an arena).
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

/// Whether `ptr` is the start of a block of `class` in a live pool of one of our arenas.
/// Any address may be asked: nothing is read before the chunk map vouches for the arena.
#[cfg(feature = "hardened")]
#[inline]
pub(crate) fn is_block_of_class(ptr: *mut u8, class: SizeClass) -> bool {
    let chunk = ptr as usize & ARENA_MASK;
    // SAFETY: the chunk is in the chunk map, so its header is ours and mapped, and it is
    // an arena by its magic.
    chunk_map::contains(chunk) && unsafe { is_arena(chunk) && class_of_block(ptr) == Some(class) }
}

/// The bit of a block start in its arena's out-block bitmap (page 1 of the arena). Every
/// bitmap word covers part of one page, so of at most one pool: it is guarded by that
/// pool's class lock, or (hardened builds) only ever accessed atomically.
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
        // SAFETY: the word is in the arena's bitmap page, guarded by the held class lock.
        unsafe { *self.word |= self.bit };
    }

    /// Clears the bit; returns whether it was set.
    ///
    /// # Safety
    /// As [`OutBit::set`].
    #[cfg(not(feature = "hardened"))]
    #[inline]
    pub(crate) unsafe fn clear(self) -> bool {
        // SAFETY: as in `set`.
        unsafe {
            let was = *self.word & self.bit != 0;
            *self.word &= !self.bit;
            was
        }
    }

    /// The word as an atomic (hardened builds, where the bits change without a lock).
    ///
    /// # Safety
    /// The block lies in a live pool of an arena.
    #[cfg(feature = "hardened")]
    #[inline(always)]
    unsafe fn atomic<'a>(self) -> &'a crate::sync::AtomicU64 {
        // SAFETY: the word is in the live arena's bitmap page and 8-aligned.
        unsafe { &*(self.word as *const crate::sync::AtomicU64) }
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

    /// Whether the bit is set (atomic read).
    ///
    /// # Safety
    /// As [`OutBit::set_atomic`].
    #[cfg(feature = "hardened")]
    #[inline]
    pub(crate) unsafe fn is_set_atomic(self) -> bool {
        // SAFETY: the caller's promise.
        unsafe { self.atomic() }.load(Ordering::Relaxed) & self.bit != 0
    }
}
