//! The chunk map: what each 256 KiB chunk of the address space is to us. It lets a pointer
//! of unknown origin — C's `free(p)` carries no size and may carry anything — be sorted
//! with one byte load before any header is read: a pointer in a chunk the map does not
//! know is not ours.
//!
//! One byte per chunk of the 47-bit user address space ([`ChunkKind`]: nothing, an arena,
//! or the chunk where a large block starts, and where in it): 2^29 bytes (512 MiB) of
//! address space mapped with `MAP_NORESERVE` on first use. Only the pages covering chunks
//! we have used are ever touched (a 4 KiB page of the map covers 1 GiB of address space).
//! A byte rather than a bit saves `free` the bit arithmetic and the header magic that told
//! an arena from a large mapping: 9 instructions of the C pair. Entries are written with atomic byte
//! stores (each chunk has one owner, who records and forgets it), so no lock is needed;
//! lookups are one load.
//!
//! A chunk is recorded by the chunk's start address. An arena is recorded as its own
//! chunk; a large mapping as the chunk its block starts in (`ptr & ARENA_MASK`), so that
//! every lookup, for any pointer, reads the entry of the pointer's own chunk.

use crate::consts::{ARENA_SHIFT, GRANULE};
use crate::sync::unmodelled::{AtomicU8, AtomicUsize};
use crate::sync::Ordering;
use core::ptr;

/// Addresses at or above this are never ours (x86_64 user space with 4-level paging).
const ADDRESS_LIMIT: usize = 1 << 47;
const CHUNKS: usize = ADDRESS_LIMIT >> ARENA_SHIFT;

/// What a chunk is to us.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum ChunkKind {
    /// Not ours (or not any more).
    Foreign = 0,
    /// An arena: its header is at the chunk's start.
    Arena = 1,
    /// The chunk where a large block starts, past the chunk's start; its header is at the
    /// chunk's start.
    Large = 2,
    /// The chunk where a large block starts, at the chunk's start (a block aligned to a
    /// chunk or more); its header is in the chunk below, of the same mapping.
    LargeAtChunkStart = 3,
}

/// The map's bytes, or 0 before first use.
static MAP: AtomicUsize = AtomicUsize::new(0);

/// The chunks the map covers: 0 until it is mapped, then [`CHUNKS`]. Stored (release) after
/// `MAP` is, so a lookup that finds its chunk below this bound (acquire) finds the map too:
/// one comparison tests both that the address is below [`ADDRESS_LIMIT`] and that the map
/// exists (3 instructions of every C `free`).
static MAPPED_CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// The map, mapping it on first use; null if the OS refuses.
fn entries() -> *const AtomicU8 {
    let map = MAP.load(Ordering::Acquire);
    if map != 0 {
        return map as *const AtomicU8;
    }
    map_entries()
}

#[cold]
fn map_entries() -> *const AtomicU8 {
    let fresh = crate::os::reserve_sparse(CHUNKS);
    if fresh.is_null() {
        return ptr::null();
    }
    let map = match MAP.compare_exchange(0, fresh as usize, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh as *const AtomicU8,
        Err(winner) => {
            // SAFETY: our mapping lost the race and was never published.
            unsafe { crate::os::unmap(fresh, CHUNKS) };
            winner as *const AtomicU8
        }
    };
    // After `MAP` (see `MAPPED_CHUNKS`); the winner of the race and the losers store the
    // same value.
    MAPPED_CHUNKS.store(CHUNKS, Ordering::Release);
    map
}

/// The entry of chunk index `chunk`, or `None` when it is not below the mapped bound.
#[inline(always)]
fn entry(chunk: usize) -> Option<u8> {
    if chunk >= MAPPED_CHUNKS.load(Ordering::Acquire) {
        return None;
    }
    // A bound above 0 was stored after the map (see `MAPPED_CHUNKS`).
    let map = MAP.load(Ordering::Relaxed);
    // SAFETY: `chunk < CHUNKS`, inside the mapped map.
    Some(unsafe { (*(map as *const AtomicU8).add(chunk)).load(Ordering::Acquire) })
}

/// Records that the chunk at `chunk_start` (256 KiB-aligned) is of `kind`.
/// Returns false when the map cannot be had (the chunk then cannot be recognised by the C
/// ABI, so the caller should not hand it out).
pub(crate) fn insert(chunk_start: usize, kind: ChunkKind) -> bool {
    if chunk_start >= ADDRESS_LIMIT {
        return false;
    }
    let entries = entries();
    if entries.is_null() {
        return false;
    }
    // SAFETY: `chunk_start >> ARENA_SHIFT < CHUNKS`, inside the mapped map.
    unsafe { (*entries.add(chunk_start >> ARENA_SHIFT)).store(kind as u8, Ordering::Release) };
    true
}

/// Forgets the chunk at `chunk_start`, before it is unmapped.
pub(crate) fn remove(chunk_start: usize) {
    let map = MAP.load(Ordering::Acquire);
    if map == 0 || chunk_start >= ADDRESS_LIMIT {
        return;
    }
    let entries = map as *const AtomicU8;
    // SAFETY: `chunk_start >> ARENA_SHIFT < CHUNKS`, inside the mapped map.
    unsafe {
        (*entries.add(chunk_start >> ARENA_SHIFT))
            .store(ChunkKind::Foreign as u8, Ordering::Release)
    };
}

/// What the chunk that `address` lies in is. Any address may be asked.
#[inline(always)]
pub(crate) fn kind_of(address: usize) -> ChunkKind {
    match entry(address >> ARENA_SHIFT).unwrap_or(0) {
        1 => ChunkKind::Arena,
        2 => ChunkKind::Large,
        3 => ChunkKind::LargeAtChunkStart,
        _ => ChunkKind::Foreign,
    }
}

/// Whether `address` lies in an arena of ours and is a multiple of [`GRANULE`] (where a
/// block may start): [`kind_of`] and C's `free`'s alignment test with one bound check.
/// Rotated right by the granule's bits, an address's low bits become its top bits, so that
/// `rotated >> (ARENA_SHIFT - granule bits)` is the chunk index of an aligned address and
/// at least `2^46 > CHUNKS` for any other (2 instructions of every C `free`).
#[inline(always)]
pub(crate) fn is_aligned_in_arena(address: usize) -> bool {
    const GRANULE_SHIFT: u32 = GRANULE.trailing_zeros();
    let chunk = address.rotate_right(GRANULE_SHIFT) >> (ARENA_SHIFT as u32 - GRANULE_SHIFT);
    entry(chunk) == Some(ChunkKind::Arena as u8)
}

/// Whether the chunk at `chunk_start` is an arena of ours.
#[inline]
pub(crate) fn is_arena(chunk_start: usize) -> bool {
    kind_of(chunk_start) == ChunkKind::Arena
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_are_remembered_and_forgotten() {
        use super::{insert, kind_of, remove, ChunkKind};
        let chunk = 0x1000_0000_0000; // 16 TiB: far from where mmap places memory
        assert_eq!(kind_of(chunk), ChunkKind::Foreign);
        assert!(insert(chunk, ChunkKind::Arena));
        assert_eq!(kind_of(chunk), ChunkKind::Arena);
        assert_eq!(kind_of(chunk + (1 << 18) - 1), ChunkKind::Arena);
        assert_eq!(kind_of(chunk + (1 << 18)), ChunkKind::Foreign);
        assert!(insert(chunk + (1 << 18), ChunkKind::Large));
        assert_eq!(kind_of(chunk + (1 << 18) + 4096), ChunkKind::Large);
        remove(chunk + (1 << 18));
        remove(chunk);
        assert_eq!(kind_of(chunk), ChunkKind::Foreign);
        assert!(!insert(1 << 47, ChunkKind::Arena));
        assert_eq!(kind_of(usize::MAX), ChunkKind::Foreign);
        assert!(!super::is_aligned_in_arena(chunk));
    }

    #[test]
    fn aligned_addresses_in_arenas_are_told_from_the_rest() {
        use super::{insert, is_aligned_in_arena, kind_of, remove, ChunkKind, ADDRESS_LIMIT};
        let chunk = 0x1100_0000_0000; // apart from the test above's chunks
        assert!(insert(chunk, ChunkKind::Arena));
        assert!(insert(chunk + (1 << 18), ChunkKind::Large));
        for offset in [0, 8, 16, 4096, (1 << 18) - 8] {
            assert!(is_aligned_in_arena(chunk + offset), "{offset}");
        }
        for offset in 1..8 {
            assert!(!is_aligned_in_arena(chunk + offset), "{offset}");
            assert!(
                !is_aligned_in_arena(chunk + (1 << 18) - 8 + offset),
                "{offset}"
            );
        }
        for address in [
            chunk + (1 << 18),
            chunk - 8,
            0,
            ADDRESS_LIMIT + chunk,
            usize::MAX - 7,
        ] {
            assert!(!is_aligned_in_arena(address), "{address:#x}");
        }
        // Every aligned address agrees with `kind_of`.
        for address in [chunk, chunk + (1 << 18), chunk + (2 << 18)] {
            assert_eq!(
                is_aligned_in_arena(address),
                kind_of(address) == ChunkKind::Arena
            );
        }
        remove(chunk + (1 << 18));
        remove(chunk);
        assert!(!is_aligned_in_arena(chunk));
    }
}
