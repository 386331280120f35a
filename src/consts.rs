//! The few numbers every layer shares, derived from shifts and checked at compile time.
//!
//! An arena is `ARENA_SIZE` bytes aligned to `ARENA_SIZE`; it is cut into `PAGES_PER_ARENA`
//! pages of `PAGE_SIZE`, of which the first `HEADER_PAGES` are the arena header (page 0:
//! descriptors and maps; page 1: the out-block bitmap). Pools occupy pages
//! `HEADER_PAGES..PAGES_PER_ARENA`.

/// log2 of the OS page size we manage memory in (4 KiB on x86_64 Linux).
pub(crate) const PAGE_SHIFT: usize = 12;
/// The OS page size in bytes.
pub(crate) const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// log2 of the arena size: 256 KiB.
pub(crate) const ARENA_SHIFT: usize = 18;
/// Size and alignment of an arena in bytes.
pub(crate) const ARENA_SIZE: usize = 1 << ARENA_SHIFT;
/// Mask that rounds an address inside an arena down to the arena's start.
pub(crate) const ARENA_MASK: usize = !(ARENA_SIZE - 1);
/// Pages in an arena, header page included.
pub(crate) const PAGES_PER_ARENA: usize = ARENA_SIZE / PAGE_SIZE;
/// Pages of an arena's header.
pub(crate) const HEADER_PAGES: usize = 2;
/// Pages pools may use: all but the header.
pub(crate) const USABLE_PAGES: usize = PAGES_PER_ARENA - HEADER_PAGES;
/// Bytes per bit of the out-block bitmap: the smallest block size, so every block start
/// has its own bit.
pub(crate) const GRANULE: usize = 8;

// The out-block bitmap, one bit per granule of the arena, fills header page 1 exactly.
const _: () = assert!(ARENA_SIZE / GRANULE / 8 == PAGE_SIZE);

/// Arenas reserved from the OS in one `mmap` (4 MiB of address space).
pub(crate) const ARENAS_PER_RESERVATION: usize = 16;

/// The largest size served from size classes (thread-cached pools inside arenas).
/// Anything larger, or more strictly aligned, gets a mapping of its own.
pub(crate) const MAX_CLASS_SIZE: usize = 128 * 1024;

// The page map and free-page bitmap are `u64`s: one bit per page.
const _: () = assert!(PAGES_PER_ARENA == 64);
// The largest class must fit in one arena with room for its natural alignment.
const _: () = assert!(MAX_CLASS_SIZE <= ARENA_SIZE / 2);
const _: () = assert!(MAX_CLASS_SIZE.is_power_of_two());
const _: () = assert!(ARENA_SIZE.is_power_of_two() && PAGE_SIZE.is_power_of_two());
