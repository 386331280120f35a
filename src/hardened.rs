//! Hardened mode (cargo feature `hardened`): the checks that cost something on every
//! allocation and free, compiled in only with the feature. Without it this module does not
//! exist and the fast paths are exactly those of the default build.
//!
//! What the feature adds, and where:
//!
//! - **Encoded free-list links** ([`encode_link`], [`decode_link`], used by `block.rs` and
//!   so by every intrusive list: thread caches, batches, pool free lists). A free block's
//!   first word holds `next ^ KEY ^ (block >> 12)` ("safe linking"): `KEY` is a random
//!   per-process word, so an attacker who overwrites a link cannot aim it without knowing
//!   the key, and the address term makes equal links differ from block to block. Every
//!   decoded link is checked to be null or a block of the list's size class in one of our
//!   arenas (in the chunk map, in a pool of that class, at a block boundary); anything else
//!   aborts with `ebbmalloc: corrupted free list at 0x<block>`, naming the block whose link
//!   was overwritten.
//! - **A double-free check on every free** ([`on_free`], [`on_alloc`]). The out-block
//!   bitmap of each arena (`layout.rs`, `pool.rs`) changes meaning: a bit is set exactly while its block
//!   is *live*, held by the program. `alloc` sets it (it must have been clear: a block on a
//!   free list is never live), `free` clears it (it must have been set, or the block is
//!   already free: `ebbmalloc: double free of 0x...`). The bits are atomic words here,
//!   because frees clear them without a lock.
//! - **Freed memory filled** with [`FILL`] (0xDF) past the link word, so stale data does not
//!   outlive `free`; in debug builds (`debug_assertions`) fresh blocks are filled when their
//!   pool is carved and every allocation checks the pattern is intact (`ebbmalloc: write
//!   after free at 0x<byte>`).
//! - **Randomized carving** ([`shuffle`], used by `pool.rs`): the blocks of a fresh pool are
//!   handed out in random order, so neighbours in time are not neighbours in memory.
//! - **Guard pages** around large blocks (`large.rs`): a `PROT_NONE` page just before the
//!   block and one at the end of its mapping.
//!
//! The key and the shuffling generator are seeded once, from `os::random_words`, before
//! the first arena is made (`arena.rs` calls [`seed`]); no link exists before that. Nothing
//! here allocates.

use crate::consts::PAGE_SHIFT;
use crate::fatal::fatal;
use crate::layout::{is_block_of_class, OutBit};
use crate::size_class::SizeClass;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// The byte freed memory is filled with (past the link word).
pub(crate) const FILL: u8 = 0xDF;

/// Bytes at the start of a free block that hold its link and are not filled.
const LINK_BYTES: usize = core::mem::size_of::<usize>();

/// The link key; 0 until [`seed`] ran (it is never 0 afterwards).
static KEY: AtomicUsize = AtomicUsize::new(0);

/// State of the shuffling generator (a Weyl sequence, mixed by splitmix64).
static RNG: AtomicU64 = AtomicU64::new(0);

/// Seeds the link key and the generator, once. Called before the first arena is made, with
/// the arena lock held, so every link is written after it and with one key.
pub(crate) fn seed() {
    if KEY.load(Ordering::Relaxed) != 0 {
        return;
    }
    let [a, b] = crate::os::random_words();
    KEY.store((a as usize) | 1, Ordering::Relaxed);
    RNG.store(b, Ordering::Relaxed);
}

/// A random word (for shuffling; any thread, no lock).
fn random() -> u64 {
    use crate::os::WEYL_STEP;
    crate::os::mix(
        RNG.fetch_add(WEYL_STEP, Ordering::Relaxed)
            .wrapping_add(WEYL_STEP),
    )
}

/// The mask that encodes the link stored in the free block at `block`.
#[inline(always)]
fn link_mask(block: usize) -> usize {
    KEY.load(Ordering::Relaxed) ^ (block >> PAGE_SHIFT)
}

/// The word to store in the free block at `block` to link it to `next`.
#[inline(always)]
pub(crate) fn encode_link(block: usize, next: usize) -> usize {
    next ^ link_mask(block)
}

/// The address the free block at `block` links to, from the word stored in it; aborts
/// unless it is null or a block of `class`.
#[inline(always)]
pub(crate) fn decode_link(block: usize, stored: usize, class: SizeClass) -> usize {
    let next = stored ^ link_mask(block);
    if next != 0 && !is_block_of_class(next as *mut u8, class) {
        corrupted_free_list(block);
    }
    next
}

#[cold]
#[inline(never)]
fn corrupted_free_list(block: usize) -> ! {
    fatal("corrupted free list at", block)
}

/// Marks a block of `class` handed to the program live, after checking it was free (and,
/// in debug builds, that nobody wrote to it while it was).
///
/// # Safety
/// `block` is a block of `class` just taken off a free list.
#[inline(always)]
pub(crate) unsafe fn on_alloc(block: *mut u8, class: SizeClass) {
    // SAFETY: a block off a free list lies in a live pool of an arena (its link was checked).
    if unsafe { OutBit::of(block).set_atomic() } {
        corrupted_free_list(block as usize);
    }
    #[cfg(debug_assertions)]
    {
        // SAFETY: the block is ours, `class.size()` bytes.
        unsafe { check_fill(block, class.size()) };
    }
    #[cfg(not(debug_assertions))]
    let _ = class;
}

/// Marks a live block of `class` free, aborting if it was free already, and fills it.
///
/// # Safety
/// `block` is a block of `class` in a live pool (the C ABI looked it up; a Rust `dealloc`
/// was checked by `front::check_owner`).
#[inline(always)]
pub(crate) unsafe fn on_free(block: *mut u8, class: SizeClass) {
    // SAFETY: by the caller's promise the block's arena is live.
    if !unsafe { OutBit::of(block).clear_atomic() } {
        fatal("double free of", block as usize);
    }
    // SAFETY: the block is `class.size()` bytes and now ours again.
    unsafe { fill(block, class.size()) };
}

/// Aborts with `message` unless `block` (a block in a live pool) is live.
///
/// # Safety
/// As [`on_free`].
pub(crate) unsafe fn check_live(block: *mut u8, message: &str) {
    // SAFETY: by the caller's promise.
    if !unsafe { OutBit::of(block).is_set() } {
        fatal(message, block as usize);
    }
}

/// Fills the block past its link word with [`FILL`].
///
/// # Safety
/// `block` is `size` bytes of ours that nobody uses.
#[inline(always)]
pub(crate) unsafe fn fill(block: *mut u8, size: usize) {
    if size > LINK_BYTES {
        // SAFETY: by the caller's promise.
        unsafe { core::ptr::write_bytes(block.add(LINK_BYTES), FILL, size - LINK_BYTES) };
    }
}

/// Aborts if a byte of the block past its link word lost the fill pattern.
///
/// # Safety
/// As [`fill`].
#[cfg(debug_assertions)]
unsafe fn check_fill(block: *mut u8, size: usize) {
    if size <= LINK_BYTES {
        return;
    }
    // SAFETY: by the caller's promise.
    let bytes = unsafe { core::slice::from_raw_parts(block.add(LINK_BYTES), size - LINK_BYTES) };
    if let Some(i) = bytes.iter().position(|&b| b != FILL) {
        fatal("write after free at", block as usize + LINK_BYTES + i);
    }
}

/// The indices `0..order.len()` in a random order (Fisher-Yates).
pub(crate) fn shuffle(order: &mut [u8]) {
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i as u8;
    }
    for i in (1..order.len()).rev() {
        let j = (random() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}
