//! Size classes: which class serves a request, and the shape of each class's pools.
//!
//! Classes are 16..=64 in 8-byte steps, 80..=128 in 16-byte steps, then four classes per
//! power of two (`2^p * 5/4, 6/4, 7/4, 8/4`) up to [`MAX_CLASS_SIZE`]. A request of more
//! than 24 bytes therefore wastes less than a quarter of its block (below that the 8-byte
//! granule dominates: 17 bytes take 24).
//!
//! There is no 8-byte class: a free block keeps its link in its first word and the
//! double-free mark in its second (see `block.rs`), so every block has two words. (glibc's
//! smallest chunk holds 24 bytes; a request of 1 to 8 bytes takes 16 here.)
//!
//! Alignment: a class of size `s` hands out blocks aligned to `1 << s.trailing_zeros()`
//! (pools of classes of at least a page start on a page multiple of that alignment, see
//! [`SizeClassInfo::pool_align_pages`]), so every power-of-two class is naturally aligned
//! and every class that is a multiple of 16 is 16-aligned. The 8-aligned classes 24, 40 and
//! 56 serve only requests aligned to 8 or less (Rust's common `Vec`/`String` headers and
//! boxes); a 16-aligned request is rounded up to a multiple of 16 first, which always
//! lands on a 16-aligned class. Larger alignments walk up to the first class whose natural
//! alignment suffices (at worst the next power of two).
//!
//! Lookup: sizes up to [`TABLE_MAX`] go through a byte table indexed by `(size + 7) / 8`;
//! larger ones through leading-zero arithmetic. Both are derived from one `const fn`, so
//! they cannot disagree; the unit tests check every size.

use crate::consts::{MAX_CLASS_SIZE, PAGE_SIZE, USABLE_PAGES};

/// Number of size classes.
pub(crate) const NUM_CLASSES: usize = 51;
/// Sizes up to this many bytes are mapped by table lookup.
const TABLE_MAX: usize = 1024;
const _: () = assert!(TABLE_MAX % 16 == 0 && TABLE_MAX >= 128);

/// A size class index, always `< NUM_CLASSES`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SizeClass(u8);

/// What every layer needs to know about a class, computed at compile time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SizeClassInfo {
    /// Block size in bytes.
    pub(crate) size: u32,
    /// Pages in one pool of this class.
    pub(crate) pool_pages: u8,
    /// A pool's first page index is a multiple of this (natural alignment of big blocks).
    pub(crate) pool_align_pages: u8,
    /// Blocks in one pool: `pool_pages * PAGE_SIZE / size`.
    pub(crate) blocks_per_pool: u16,
    /// Blocks moved per refill or flush between a thread cache and the central list.
    pub(crate) batch: u16,
    /// Upper bound on the blocks a thread cache keeps for this class.
    pub(crate) max_cached: u16,
    /// Whole batches the class's central transfer cache parks at most (see
    /// [`TRANSFER_TARGET_BYTES`]).
    pub(crate) transfer_batches: u16,
    /// `ceil(2^RECIPROCAL_SHIFT / size)`: `offset * reciprocal >> RECIPROCAL_SHIFT` is
    /// `offset / size` for every offset inside an arena, without a division.
    pub(crate) reciprocal: u64,
}

/// See [`SizeClassInfo::reciprocal`]. Exact for `offset < 2^18` and `size < 2^22`: the
/// error of the rounded-up reciprocal adds less than `2^18 / 2^40` to the quotient, less
/// than the `1 / size` gap to the next integer.
pub(crate) const RECIPROCAL_SHIFT: u32 = 40;

impl SizeClassInfo {
    /// Whether `offset` (from the start of a pool, inside its arena) starts a block.
    #[inline(always)]
    pub(crate) fn is_block_offset(&self, offset: usize) -> bool {
        let quotient = (offset as u64 * self.reciprocal) >> RECIPROCAL_SHIFT;
        quotient * self.size as u64 == offset as u64
    }
}

impl SizeClass {
    /// The class of index `index`.
    ///
    /// # Safety
    /// `index < NUM_CLASSES`.
    #[inline(always)]
    pub(crate) const unsafe fn from_index_unchecked(index: usize) -> SizeClass {
        debug_assert!(index < NUM_CLASSES);
        SizeClass(index as u8)
    }

    /// The class of index `index`, if there is one.
    #[inline]
    pub(crate) const fn from_index(index: usize) -> Option<SizeClass> {
        if index < NUM_CLASSES {
            Some(SizeClass(index as u8))
        } else {
            None
        }
    }

    /// The index of this class, always `< NUM_CLASSES`.
    #[inline(always)]
    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }

    /// The facts about this class.
    #[inline(always)]
    pub(crate) fn info(self) -> &'static SizeClassInfo {
        // SAFETY: a `SizeClass` is only ever built with an index below `NUM_CLASSES`.
        unsafe { CLASS_INFO.get_unchecked(self.index()) }
    }

    /// Block size of this class in bytes.
    #[inline(always)]
    pub(crate) fn size(self) -> usize {
        self.info().size as usize
    }

    /// The smallest class whose blocks hold `size` bytes aligned to `align`, or `None` when
    /// the request is beyond the classes (it then goes to a mapping of its own).
    #[inline(always)]
    pub(crate) fn for_layout(size: usize, align: usize) -> Option<SizeClass> {
        if align <= 16 {
            // Every class is 8-aligned and every multiple of 16 is a 16-aligned class, so a
            // size rounded up to the alignment finds an aligned class.
            let padded = size + align - 1;
            let size = padded & !(align - 1);
            // `size <= TABLE_MAX`, tested on `padded` (`TABLE_MAX` is a multiple of
            // `align`): the rounding then costs the common case nothing but the index
            // (2 instructions of every Rust `alloc` and `dealloc` of a constant alignment).
            if padded < TABLE_MAX + align {
                // SAFETY: `(size + 7) / 8 <= TABLE_MAX / 8` and the table has one more entry.
                return Some(SizeClass(unsafe {
                    *CLASS_TABLE.get_unchecked((size + 7) >> 3)
                }));
            }
            // Out of line: the table's sizes are the common case, and laying them out
            // straight saves their path a jump (seen under callgrind).
            unlikely();
            if size <= MAX_CLASS_SIZE {
                // `size > TABLE_MAX >= 128`.
                return Some(SizeClass(class_index_above_128(size)));
            }
            return None;
        }
        Self::for_aligned_layout(size, align)
    }

    /// The class `malloc(size)` takes when `size` is at most [`TABLE_MAX`] bytes: that of
    /// `size` (at least 1) at C's fundamental alignment, 8 for up to 8 bytes and 16 above,
    /// in one table load indexed by the size itself. `None` for larger sizes (see
    /// `front::alloc_for_malloc`, which takes the two steps, [`SizeClass::in_malloc_table`]
    /// and [`SizeClass::for_malloc_unchecked`], apart).
    #[cfg(test)]
    pub(crate) fn for_malloc(size: usize) -> Option<SizeClass> {
        Self::in_malloc_table(size).then(|| Self::for_malloc_unchecked(size))
    }

    /// Whether `size` is in the table of [`SizeClass::for_malloc`].
    #[inline(always)]
    pub(crate) fn in_malloc_table(size: usize) -> bool {
        size <= TABLE_MAX
    }

    /// [`SizeClass::for_malloc`] of a size that [`SizeClass::in_malloc_table`] accepts.
    #[inline(always)]
    pub(crate) fn for_malloc_unchecked(size: usize) -> SizeClass {
        debug_assert!(Self::in_malloc_table(size));
        // SAFETY: `size <= TABLE_MAX` (the caller's check) and the table has `TABLE_MAX +
        // 1` entries.
        SizeClass(unsafe { *MALLOC_CLASS_TABLE.get_unchecked(size.min(TABLE_MAX)) })
    }

    /// The alignment > 16 case of [`SizeClass::for_layout`]: walk up from the class of the
    /// size to the first naturally aligned enough. Ends at the power of two `>= max(size,
    /// align)` at the latest.
    #[cold]
    fn for_aligned_layout(size: usize, align: usize) -> Option<SizeClass> {
        let size = size.max(align);
        if size > MAX_CLASS_SIZE {
            return None;
        }
        let mut index = class_index_by_arithmetic(size) as usize;
        while index < NUM_CLASSES {
            if CLASS_INFO[index].size as usize & (align - 1) == 0 {
                return Some(SizeClass(index as u8));
            }
            index += 1;
        }
        None
    }
}

/// Marks the path that calls it as unlikely, for block layout (the stable spelling of
/// `core::hint::cold_path`).
#[cold]
#[inline(always)]
fn unlikely() {}

/// The class index of `size` (`1..=MAX_CLASS_SIZE`; 0 is treated as 1) by arithmetic.
const fn class_index_by_arithmetic(size: usize) -> u8 {
    if size <= 16 {
        // 0..=16 is class 0.
        return 0;
    }
    if size <= 64 {
        // 24, 32, ..., 64 are classes 1..=6.
        return (size.div_ceil(8) - 2) as u8;
    }
    if size <= 128 {
        // 80, 96, 112, 128 are classes 7..=10.
        return (6 + (size - 64).div_ceil(16)) as u8;
    }
    class_index_above_128(size)
}

/// [`class_index_by_arithmetic`] of a size in `129..=MAX_CLASS_SIZE`. Always inlined: the
/// branch of [`SizeClass::for_layout`] beyond the table, out of line, would cost the Rust
/// fast path a saved register, and the tests for smaller sizes would cost that branch six
/// instructions.
#[inline(always)]
const fn class_index_above_128(size: usize) -> u8 {
    // 2^p < size <= 2^(p+1), p >= 7: classes 2^p + k * 2^(p-2), k = 1..=4.
    let p = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    let k = ((size - 1) >> (p - 2)) & 3;
    (11 + (p - 7) * 4 + k) as u8
}

const fn class_size_by_index(index: usize) -> usize {
    if index < 7 {
        return (index + 2) * 8;
    }
    if index < 11 {
        return 64 + (index - 6) * 16;
    }
    let group = (index - 11) / 4;
    let k = (index - 11) % 4;
    let p = 7 + group;
    (1 << p) + (k + 1) * (1 << (p - 2))
}

const fn build_table() -> [u8; TABLE_MAX / 8 + 1] {
    let mut table = [0u8; TABLE_MAX / 8 + 1];
    let mut i = 0;
    while i < table.len() {
        table[i] = class_index_by_arithmetic(if i == 0 { 1 } else { i * 8 });
        i += 1;
    }
    table
}

/// Tail waste we accept in a pool: at most an eighth of its bytes.
const MAX_POOL_WASTE_DIVISOR: usize = 8;
/// Pools are at least this large (blocks bigger than it get a pool of one block). Large
/// pools keep consecutive allocations of a class next to each other in memory: with 4 KiB
/// pools, CPython (`PYTHONMALLOC=malloc`) building a million-entry dict ran 40% slower,
/// from TLB and cache misses while its garbage collector walks the objects. Pages of a
/// pool are touched only when its blocks are first handed out, so a large pool costs
/// address space, not memory.
const POOL_TARGET_BYTES: usize = 64 * 1024;
/// A refill or flush moves about this many bytes (within `1..=MAX_BATCH` blocks).
const BATCH_TARGET_BYTES: usize = 16 * 1024;
const MAX_BATCH: usize = 64;
/// A class's central transfer cache holds whole batches up to about this many bytes (at
/// least [`MIN_TRANSFER_BATCHES`], at most [`MAX_TRANSFER_BATCHES`]): 64 batches of a
/// 16-byte class, 32 of every other. Enough to hand batches between threads; beyond it a
/// flush returns its blocks to their pools, which hand them out again in address order
/// (`pool.rs`). Parked batches keep the order in which the program freed their blocks: with
/// 1 MiB per class, a dropped 65,536-entry `HashMap` came back almost whole from parked
/// batches in hash order, and the next build touched a cold line with every allocation
/// (hashmap build+drop 0.84x mimalloc's speed). That size dates from when pools handed
/// their blocks out LIFO too. Parked batches that nobody takes go back to their pools at
/// the next trimming pass.
const TRANSFER_TARGET_BYTES: usize = 64 << 10;
const MIN_TRANSFER_BATCHES: usize = 32;
pub(crate) const MAX_TRANSFER_BATCHES: usize = 64;

const fn build_info(index: usize) -> SizeClassInfo {
    let size = class_size_by_index(index);
    let natural_align = 1usize << size.trailing_zeros();
    let align_pages = if natural_align > PAGE_SIZE {
        natural_align / PAGE_SIZE
    } else {
        1
    };
    let wanted = if size > POOL_TARGET_BYTES {
        size
    } else {
        POOL_TARGET_BYTES
    };
    let mut pages = wanted.div_ceil(PAGE_SIZE);
    while pages < USABLE_PAGES {
        let bytes = pages * PAGE_SIZE;
        if (bytes % size) * MAX_POOL_WASTE_DIVISOR <= bytes {
            break;
        }
        pages += 1;
    }
    let blocks = pages * PAGE_SIZE / size;
    let mut batch = BATCH_TARGET_BYTES / size;
    if batch > MAX_BATCH {
        batch = MAX_BATCH;
    }
    if batch == 0 {
        batch = 1;
    }
    let max_cached = if batch * 4 > 2 { batch * 4 } else { 2 };
    let mut transfer_batches = TRANSFER_TARGET_BYTES / (batch * size);
    if transfer_batches < MIN_TRANSFER_BATCHES {
        transfer_batches = MIN_TRANSFER_BATCHES;
    }
    if transfer_batches > MAX_TRANSFER_BATCHES {
        transfer_batches = MAX_TRANSFER_BATCHES;
    }
    SizeClassInfo {
        size: size as u32,
        pool_pages: pages as u8,
        pool_align_pages: align_pages as u8,
        blocks_per_pool: blocks as u16,
        batch: batch as u16,
        max_cached: max_cached as u16,
        transfer_batches: transfer_batches as u16,
        reciprocal: (1u64 << RECIPROCAL_SHIFT).div_ceil(size as u64),
    }
}

const fn build_all_info() -> [SizeClassInfo; NUM_CLASSES] {
    let mut all = [build_info(0); NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        all[i] = build_info(i);
        i += 1;
    }
    all
}

/// [`CLASS_TABLE`] for `malloc`: entry `size` is the class of `size` bytes at C's
/// fundamental alignment (8 for requests of up to 8 bytes, 16 above; see
/// [`SizeClass::for_malloc`]). Entry 0 is `malloc(0)`'s, the smallest class. A byte per
/// size (1 KiB) rather than per 8 bytes: `malloc` then indexes it with the size as it
/// comes, without rounding it to 8-byte steps (2 instructions of every C `malloc`).
const fn build_malloc_table() -> [u8; TABLE_MAX + 1] {
    let mut table = [0u8; TABLE_MAX + 1];
    let mut size = 0;
    while size < table.len() {
        let aligned = if size <= 8 {
            8
        } else {
            size.next_multiple_of(16)
        };
        table[size] = class_index_by_arithmetic(aligned);
        size += 1;
    }
    table
}

static CLASS_TABLE: [u8; TABLE_MAX / 8 + 1] = build_table();
static MALLOC_CLASS_TABLE: [u8; TABLE_MAX + 1] = build_malloc_table();
static CLASS_INFO: [SizeClassInfo; NUM_CLASSES] = build_all_info();

const _: () = assert!(class_size_by_index(NUM_CLASSES - 1) == MAX_CLASS_SIZE);
const _: () = assert!(class_index_by_arithmetic(MAX_CLASS_SIZE) as usize == NUM_CLASSES - 1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_maps_to_the_smallest_class_that_fits() {
        for size in 1..=MAX_CLASS_SIZE {
            let class = SizeClass::for_layout(size, 1).unwrap();
            let class_size = class.size();
            assert!(class_size >= size, "size {size} -> class {class_size}");
            if class.index() > 0 {
                let below = SizeClass::from_index(class.index() - 1).unwrap().size();
                assert!(below < size, "size {size} could use class {below}");
            }
            assert_eq!(class.index(), class_index_by_arithmetic(size) as usize);
        }
        assert!(SizeClass::for_layout(MAX_CLASS_SIZE + 1, 1).is_none());
        // Every block has room for a link and a double-free mark.
        for size in 0..=16 {
            assert_eq!(SizeClass::for_layout(size, 1).unwrap().size(), 16, "{size}");
        }
    }

    #[test]
    fn malloc_sizes_map_to_the_class_of_their_c_alignment() {
        for size in 0..=TABLE_MAX {
            let wanted = size.max(1);
            let align = if wanted <= 8 { 8 } else { 16 };
            assert_eq!(
                SizeClass::for_malloc(size),
                SizeClass::for_layout(wanted, align),
                "malloc({size})"
            );
        }
        assert_eq!(SizeClass::for_malloc(TABLE_MAX + 1), None);
    }

    #[test]
    fn waste_stays_under_a_quarter() {
        for size in 25..=MAX_CLASS_SIZE {
            let class_size = SizeClass::for_layout(size, 1).unwrap().size();
            assert!(
                (class_size - size) * 4 < class_size,
                "size {size} -> {class_size}"
            );
        }
    }

    #[test]
    fn classes_are_increasing_and_sixteen_aligned_from_sixty_four() {
        for i in 1..NUM_CLASSES {
            let (a, b) = (CLASS_INFO[i - 1].size, CLASS_INFO[i].size);
            assert!(a < b && b % 8 == 0);
            assert!(b < 64 || b % 16 == 0, "class {b}");
        }
        // Requests aligned to 16 never get an 8-aligned class.
        for size in 1..=256 {
            assert_eq!(
                SizeClass::for_layout(size, 16).unwrap().size() % 16,
                0,
                "{size}"
            );
        }
    }

    #[test]
    fn alignment_requests_pick_an_aligned_class() {
        let mut align = 1;
        while align <= MAX_CLASS_SIZE {
            for info in CLASS_INFO.iter() {
                let s = info.size as usize;
                for size in [s - 1, s, s + 1] {
                    match SizeClass::for_layout(size, align) {
                        Some(class) => {
                            let class_size = class.size();
                            assert!(class_size >= size);
                            let natural = 1 << class_size.trailing_zeros();
                            assert!(natural >= align.max(8), "{size}/{align} -> {class_size}");
                        }
                        None => assert!(size.max(align) > MAX_CLASS_SIZE),
                    }
                }
            }
            align *= 2;
        }
    }

    #[test]
    fn reciprocal_block_checks_match_division() {
        for info in CLASS_INFO.iter() {
            for offset in 0..crate::consts::ARENA_SIZE {
                let exact = offset % info.size as usize == 0;
                assert_eq!(info.is_block_offset(offset), exact, "{offset} {info:?}");
            }
        }
    }

    #[test]
    fn pools_fit_in_an_arena_with_small_tail_waste() {
        for info in CLASS_INFO.iter() {
            let pages = info.pool_pages as usize;
            let align = info.pool_align_pages as usize;
            let bytes = pages * PAGE_SIZE;
            assert!((1..=USABLE_PAGES).contains(&pages), "{info:?}");
            // There is an aligned start page >= 1 where the pool ends inside the arena.
            assert!(
                align.max(1) + pages <= crate::consts::PAGES_PER_ARENA,
                "{info:?}"
            );
            assert_eq!(info.blocks_per_pool as usize, bytes / info.size as usize);
            assert!((bytes % info.size as usize) * 8 <= bytes, "{info:?}");
            let natural = 1usize << info.size.trailing_zeros();
            assert_eq!(align * PAGE_SIZE % natural.min(PAGE_SIZE * align), 0);
            assert!(info.batch >= 1 && info.max_cached >= info.batch);
            let transfer = info.transfer_batches as usize;
            assert!((MIN_TRANSFER_BATCHES..=MAX_TRANSFER_BATCHES).contains(&transfer));
        }
    }
}
