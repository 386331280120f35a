//! The chunk map: which 256 KiB chunks of the address space hold a header of ours (an
//! arena, or the header slot of a large mapping). It lets a pointer of unknown origin —
//! C's `free(p)` carries no size and may carry anything — be checked before any header is
//! read: a pointer whose chunk is not in the map is not ours.
//!
//! One bit per chunk of the 47-bit user address space: 2^29 bits, 64 MiB of address space
//! mapped with `MAP_NORESERVE` on first use. Only the pages covering chunks we have used
//! are ever touched (a 4 KiB page of the map covers 8 GiB of address space). Bits are set
//! and cleared with atomic read-modify-write operations, so no lock is needed; lookups are
//! one load.

use crate::consts::ARENA_SHIFT;
use crate::sync::unmodelled::{AtomicU64, AtomicUsize};
use crate::sync::Ordering;
use core::ptr;

/// Addresses at or above this are never ours (x86_64 user space with 4-level paging).
const ADDRESS_LIMIT: usize = 1 << 47;
const CHUNKS: usize = ADDRESS_LIMIT >> ARENA_SHIFT;
const MAP_BYTES: usize = CHUNKS / 8;

/// The map's words, or 0 before first use.
static MAP: AtomicUsize = AtomicUsize::new(0);

/// The bitmap, mapping it on first use; null if the OS refuses.
fn words() -> *const AtomicU64 {
    let map = MAP.load(Ordering::Acquire);
    if map != 0 {
        return map as *const AtomicU64;
    }
    map_words()
}

#[cold]
fn map_words() -> *const AtomicU64 {
    let fresh = crate::os::reserve_sparse(MAP_BYTES);
    if fresh.is_null() {
        return ptr::null();
    }
    match MAP.compare_exchange(0, fresh as usize, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh as *const AtomicU64,
        Err(winner) => {
            // SAFETY: our mapping lost the race and was never published.
            unsafe { crate::os::unmap(fresh, MAP_BYTES) };
            winner as *const AtomicU64
        }
    }
}

/// Word and bit of the chunk at `chunk_start`.
fn position(chunk_start: usize) -> (usize, u64) {
    let chunk = chunk_start >> ARENA_SHIFT;
    (chunk / 64, 1 << (chunk % 64))
}

/// Records that the chunk at `chunk_start` (256 KiB-aligned) holds a header of ours.
/// Returns false when the map cannot be had (the chunk then cannot be recognised by the C
/// ABI, so the caller should not hand it out).
pub(crate) fn insert(chunk_start: usize) -> bool {
    if chunk_start >= ADDRESS_LIMIT {
        return false;
    }
    let words = words();
    if words.is_null() {
        return false;
    }
    let (word, bit) = position(chunk_start);
    // SAFETY: `word < CHUNKS / 64`, inside the mapped bitmap.
    unsafe { (*words.add(word)).fetch_or(bit, Ordering::Release) };
    true
}

/// Forgets the chunk at `chunk_start`, before it is unmapped.
pub(crate) fn remove(chunk_start: usize) {
    let map = MAP.load(Ordering::Acquire);
    if map == 0 || chunk_start >= ADDRESS_LIMIT {
        return;
    }
    let (word, bit) = position(chunk_start);
    // SAFETY: `word < CHUNKS / 64`, inside the mapped bitmap.
    unsafe { (*(map as *const AtomicU64).add(word)).fetch_and(!bit, Ordering::Release) };
}

/// Whether the chunk at `chunk_start` holds a header of ours.
#[inline]
pub(crate) fn contains(chunk_start: usize) -> bool {
    let map = MAP.load(Ordering::Acquire);
    if map == 0 || chunk_start >= ADDRESS_LIMIT {
        return false;
    }
    let (word, bit) = position(chunk_start);
    // SAFETY: `word < CHUNKS / 64`, inside the mapped bitmap.
    unsafe { (*(map as *const AtomicU64).add(word)).load(Ordering::Acquire) & bit != 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_are_remembered_and_forgotten() {
        let chunk = 0x1000_0000_0000; // 16 TiB: far from where mmap places memory
        assert!(!super::contains(chunk));
        assert!(super::insert(chunk));
        assert!(super::contains(chunk));
        assert!(!super::contains(chunk + (1 << 18)));
        super::remove(chunk);
        assert!(!super::contains(chunk));
        assert!(!super::insert(1 << 47));
    }
}
