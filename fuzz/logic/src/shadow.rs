//! The shadow model's shared part: the live ranges (to catch two live blocks that
//! overlap), the tags that seed each block's contents, a budget of live bytes, and what
//! ebbmalloc itself says of a live block ([`owned_bytes`]).
//!
//! A block's range is removed *before* it is handed back to ebbmalloc and inserted *after*
//! ebbmalloc hands it out, so with several threads an overlap is always a real one.

use ebbmalloc::c_abi;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most bytes live at once in one run; an allocation past it is skipped. Bounds the
/// memory of a run (32 slots of up to 4 MiB per thread could be 256 MiB) so that
/// campaigns stay within libFuzzer's RSS limit.
const LIVE_BYTES_BUDGET: usize = 64 << 20;

/// A live range: its end and the tag of its block.
#[derive(Clone, Copy)]
struct Live {
    end: usize,
    tag: u32,
}

/// Two live blocks that overlap.
#[derive(Debug)]
pub(crate) struct Overlap {
    new: (usize, usize, u32),
    old: (usize, usize, u32),
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ((start, end, tag), (old_start, old_end, old_tag)) = (self.new, self.old);
        write!(
            f,
            "the block [{start:#x}, {end:#x}) (tag {tag}) overlaps the live block \
             [{old_start:#x}, {old_end:#x}) (tag {old_tag})"
        )
    }
}

pub(crate) struct Shadow {
    live: Mutex<BTreeMap<usize, Live>>,
    next_tag: AtomicU32,
    live_bytes: AtomicUsize,
}

impl Shadow {
    pub(crate) fn new() -> Self {
        Shadow {
            live: Mutex::new(BTreeMap::new()),
            next_tag: AtomicU32::new(0),
            live_bytes: AtomicUsize::new(0),
        }
    }

    /// A tag no other block of this run has had.
    pub(crate) fn new_tag(&self) -> u32 {
        self.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts `bytes` more as live, unless that would pass the budget.
    pub(crate) fn reserve(&self, bytes: usize) -> bool {
        self.live_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                live.checked_add(bytes)
                    .filter(|&total| total <= LIVE_BYTES_BUDGET)
            })
            .is_ok()
    }

    /// Counts `bytes` fewer as live.
    pub(crate) fn release(&self, bytes: usize) {
        self.live_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Records `[start, start + len)` as live, or says which live block it overlaps.
    pub(crate) fn insert(&self, start: usize, len: usize, tag: u32) -> Result<(), Overlap> {
        let end = start + len;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let before = live.range(..=start).next_back();
        let after = live.range(start..).next();
        for (&old_start, old) in before.into_iter().chain(after) {
            if old_start < end && start < old.end {
                return Err(Overlap {
                    new: (start, end, tag),
                    old: (old_start, old.end, old.tag),
                });
            }
        }
        live.insert(start, Live { end, tag });
        Ok(())
    }

    /// Forgets the live range starting at `start`, before its block is freed.
    pub(crate) fn remove(&self, start: usize) {
        let removed = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&start);
        assert!(
            removed.is_some(),
            "fuzz harness bug: no live range starts at {start:#x}"
        );
    }
}

/// The bytes ebbmalloc says the live block at `ptr` has, asked through the C ABI, which
/// looks the pointer up in the chunk map before it reads a header: a live block whose
/// chunk is no longer in the map (as when a moved mapping's late removal erased a newer
/// mapping's or arena's entry) ends the process there with `malloc_usable_size():
/// invalid pointer`, as its `free` would later. Blocks of the Rust API are asked too.
///
/// # Safety
/// `ptr` is a live block of ebbmalloc's.
pub(crate) unsafe fn owned_bytes(ptr: *mut u8) -> usize {
    // SAFETY: the caller's promise.
    unsafe { c_abi::malloc_usable_size(ptr.cast()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_on_either_side_are_caught_and_neighbours_are_not() {
        let shadow = Shadow::new();
        shadow.insert(100, 50, 1).unwrap();
        assert!(shadow.insert(90, 11, 2).is_err(), "overlap from below");
        assert!(shadow.insert(149, 10, 3).is_err(), "overlap from above");
        assert!(shadow.insert(110, 5, 4).is_err(), "inside");
        assert!(shadow.insert(50, 200, 5).is_err(), "around");
        shadow.insert(90, 10, 6).unwrap();
        shadow.insert(150, 10, 7).unwrap();
        shadow.remove(100);
        shadow.insert(110, 5, 8).unwrap();
    }

    #[test]
    fn the_budget_bounds_live_bytes() {
        let shadow = Shadow::new();
        assert!(shadow.reserve(LIVE_BYTES_BUDGET));
        assert!(!shadow.reserve(1));
        shadow.release(10);
        assert!(shadow.reserve(10));
    }
}
