//! Free blocks and lists of them.
//!
//! A free block's first word is the link to the next free block: the lists of the thread
//! caches, of the central transfer caches and of the pools are all intrusive and cost no
//! memory of their own. A [`Batch`] is such a list with its length, the unit in which
//! blocks travel between a thread cache and the central lists.
//!
//! Links are read and written only through [`next_of`] and [`set_next`]. In the default
//! build they are plain pointers; with the `hardened` feature they are stored encoded and
//! checked when read (see `hardened.rs`). Both tell the sanitizers (`sanitizer.rs`) that
//! the allocator, not the program, touches the link of a free block.
//!
//! **The double-free mark** (default build). A free block's second word holds
//! [`FREE_MARK`], a random per-process word, from the moment it is freed until it is handed
//! out again, wherever it sits: a thread cache, a transfer batch or its pool. `free`
//! checks the word before writing it ([`mark_freed`]): finding the mark means the block is
//! free already, a double free, fatal. Every allocation clears the word ([`clear_mark`]),
//! so a live block holds the mark only if the program wrote that very random word there
//! itself (chance 2^-64 per free). This catches `free(p); free(p)` in one thread, across
//! threads and after the block moved on to central or its pool, for 3 instructions per
//! free and 1 per allocation; the out bits (`pool.rs`) stay as the check of blocks coming
//! back to their pool. Every class has two words for it (the smallest is 16 bytes). The
//! hardened build checks every free against its live bits instead (`hardened.rs`) and
//! fills freed blocks, so it keeps no mark.

use crate::sanitizer;
use crate::size_class::SizeClass;
#[cfg(not(feature = "hardened"))]
use crate::sync::{unmodelled::AtomicUsize, Ordering};
use core::ptr;

#[cfg(feature = "hardened")]
use crate::hardened;

/// The first word of a free block: its link, as [`set_next`] stored it.
#[repr(C)]
pub(crate) struct Block {
    link: *mut Block,
}

/// Stored links are the pointers themselves (see `hardened.rs` for the other encoding).
#[cfg(not(feature = "hardened"))]
#[inline(always)]
fn encode_link(_block: *mut Block, next: *mut Block) -> *mut Block {
    next
}

#[cfg(not(feature = "hardened"))]
#[inline(always)]
fn decode_link(_block: *mut Block, stored: *mut Block, _class: SizeClass) -> *mut Block {
    stored
}

/// Stored links are encoded and checked (`hardened.rs`).
#[cfg(feature = "hardened")]
#[inline(always)]
fn encode_link(block: *mut Block, next: *mut Block) -> *mut Block {
    hardened::encode_link(block as usize, next as usize) as *mut Block
}

#[cfg(feature = "hardened")]
#[inline(always)]
fn decode_link(block: *mut Block, stored: *mut Block, class: SizeClass) -> *mut Block {
    hardened::decode_link(block as usize, stored as usize, class) as *mut Block
}

/// The block after `block` in its list (null at the end). `class` is the class of the
/// list, against which the hardened build checks the link.
///
/// # Safety
/// `block` is a free block of `class` whose link was written by [`set_next`].
#[inline(always)]
pub(crate) unsafe fn next_of(block: *mut Block, class: SizeClass) -> *mut Block {
    // SAFETY: a free block's first word is its link (caller), which we may open to read.
    let stored = unsafe {
        sanitizer::open_link(block as *mut u8);
        let stored = (*block).link;
        sanitizer::close_link(block as *mut u8);
        stored
    };
    decode_link(block, stored, class)
}

/// Links `block` to `next`.
///
/// # Safety
/// `block` is a free block whose first word is ours to write.
#[inline(always)]
pub(crate) unsafe fn set_next(block: *mut Block, next: *mut Block) {
    // SAFETY: by the caller's promise.
    unsafe {
        sanitizer::open_link_for_write(block as *mut u8);
        (*block).link = encode_link(block, next);
        sanitizer::close_link(block as *mut u8);
    }
}

/// The double-free mark: random, odd (so never 0, the value of a block just handed out),
/// and drawn before the first arena exists (`arena.rs` calls [`free_mark`]), so every block
/// ever freed was marked with this one value. 0 until drawn.
#[cfg(not(feature = "hardened"))]
static FREE_MARK: AtomicUsize = AtomicUsize::new(0);

/// The double-free mark, drawn on first use (before the first arena is made, and by every
/// thread cache that keeps a copy of it). Threads that race to draw it agree on the winner.
#[cfg(not(feature = "hardened"))]
pub(crate) fn free_mark() -> usize {
    let mark = FREE_MARK.load(Ordering::Relaxed);
    if mark != 0 {
        return mark;
    }
    draw_free_mark()
}

/// Asks the CPU for the cache line of `block` in a state it may write, ahead of the read
/// of the mark and the writes of the mark and the link that follow. A block freed by
/// another thread than the one that last wrote it (a consumer freeing a producer's blocks)
/// is then fetched once, exclusive, instead of read shared and upgraded by a second
/// round trip between the cores. A hint: `prefetchw`, which neither faults nor changes
/// memory (a no-op on processors without it); nothing elsewhere.
#[inline(always)]
pub(crate) fn prefetch_for_write(block: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads no memory architecturally and cannot fault, whatever the
    // address.
    unsafe {
        core::arch::asm!(
            "prefetchw byte ptr [{block}]",
            block = in(reg) block,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = block;
}

/// The double-free mark when it is drawn already, as it is wherever a block is freed (it
/// is drawn before the first arena exists): one load, no call.
#[cfg(not(feature = "hardened"))]
#[inline(always)]
pub(crate) fn drawn_free_mark() -> usize {
    let mark = FREE_MARK.load(Ordering::Relaxed);
    debug_assert_ne!(mark, 0, "a block freed before the first arena");
    mark
}

/// Draws the double-free mark ([`free_mark`] before the first arena): out of line, so that
/// the frees that read the mark carry no call to the random source.
#[cfg(not(feature = "hardened"))]
#[cold]
#[inline(never)]
fn draw_free_mark() -> usize {
    let [word, _] = crate::os::random_words();
    match FREE_MARK.compare_exchange(0, word as usize | 1, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => word as usize | 1,
        Err(winner) => winner,
    }
}

/// The word of a block that holds the double-free mark.
#[cfg(not(feature = "hardened"))]
#[inline(always)]
fn mark_word(block: *mut u8) -> *mut usize {
    (block as *mut usize).wrapping_add(1)
}

/// Marks a block that the program frees with `mark` (what [`free_mark`] returns; the
/// thread cache's fast path passes its own copy), aborting if it is free already.
///
/// # Safety
/// `block` is a block of ours of at least 16 bytes that the program still holds (so its
/// words are readable and writable).
#[cfg(not(feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn mark_freed(block: *mut u8, mark: usize) {
    // SAFETY: by the caller's promise.
    if !unsafe { try_mark_freed(block, mark) } {
        double_free(block);
    }
}

/// Marks a block that the program frees with `mark`, as [`mark_freed`] does, unless it holds
/// the mark already: then returns false and leaves the report to the caller (the thread
/// cache's fast path sends it to its slow path, whose [`mark_freed`] makes it, so the fast
/// path has one way out, a jump).
///
/// # Safety
/// As [`mark_freed`].
#[cfg(not(feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn try_mark_freed(block: *mut u8, mark: usize) -> bool {
    let word = mark_word(block);
    // SAFETY: by the caller's promise.
    unsafe {
        if *word == mark {
            return false;
        }
        *word = mark;
    }
    true
}

/// Aborts with `message` if `block` holds the double-free mark: a block given to `realloc`
/// that was freed already.
///
/// # Safety
/// As [`mark_freed`].
#[cfg(not(feature = "hardened"))]
#[inline]
pub(crate) unsafe fn check_not_freed(block: *mut u8, message: &str) {
    // SAFETY: by the caller's promise.
    if unsafe { *mark_word(block) } == free_mark() {
        crate::fatal::fatal(message, block as usize);
    }
}

#[cfg(not(feature = "hardened"))]
#[cold]
#[inline(never)]
fn double_free(block: *mut u8) -> ! {
    crate::fatal::fatal("double free of", block as usize)
}

/// Clears the mark of a block handed to the program.
///
/// # Safety
/// `block` is a block of ours of at least 16 bytes just handed out (and made accessible to
/// the sanitizers).
#[cfg(not(feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn clear_mark(block: *mut u8) {
    // SAFETY: by the caller's promise.
    unsafe { *mark_word(block) = 0 };
}

/// A null-terminated list of free blocks of one size class and its length.
#[derive(Clone, Copy)]
pub(crate) struct Batch {
    pub(crate) head: *mut Block,
    pub(crate) count: u32,
}

impl Batch {
    pub(crate) const EMPTY: Batch = Batch {
        head: ptr::null_mut(),
        count: 0,
    };

    /// Adds `block` at the front.
    ///
    /// # Safety
    /// `block` is a free block of the batch's class that nothing else links to.
    #[inline]
    pub(crate) unsafe fn push(&mut self, block: *mut Block) {
        // SAFETY: the caller hands us the block; its first word is ours to write.
        unsafe { set_next(block, self.head) };
        self.head = block;
        self.count += 1;
    }

    /// Removes and returns the front block, or null.
    ///
    /// # Safety
    /// The batch's blocks are valid free blocks of `class` (its invariant).
    #[inline]
    pub(crate) unsafe fn pop(&mut self, class: SizeClass) -> *mut Block {
        let block = self.head;
        if !block.is_null() {
            // SAFETY: a non-null head is a free block whose first word is the link.
            self.head = unsafe { next_of(block, class) };
            self.count -= 1;
        }
        block
    }

    /// Splits off the first `n` blocks (all of them if there are fewer) as a batch of their own.
    ///
    /// # Safety
    /// `count` is the true length of the list, whose blocks are free blocks of `class`.
    pub(crate) unsafe fn split_front(&mut self, n: u32, class: SizeClass) -> Batch {
        if n >= self.count {
            return core::mem::replace(self, Batch::EMPTY);
        }
        if n == 0 {
            return Batch::EMPTY;
        }
        let front = self.head;
        let mut last = front;
        for _ in 1..n {
            // SAFETY: fewer than `count` links are followed, so each is a block.
            last = unsafe { next_of(last, class) };
        }
        // SAFETY: `last` is the n-th block; cutting after it leaves two valid lists.
        unsafe {
            self.head = next_of(last, class);
            set_next(last, ptr::null_mut());
        }
        self.count -= n;
        Batch {
            head: front,
            count: n,
        }
    }
}
