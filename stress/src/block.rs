//! Blocks under test and their stamps.
//!
//! Every live block holds a pattern that only its owner writes: word 0 is [`TAG`] with the
//! block's id, word `w > 0` is `key ^ w * GOLDEN` (little-endian, cut short at the block's
//! end), where `key` mixes the block's address, id and sequence number (bumped on every
//! re-stamp). A block up to [`FULL_STAMP_MAX`] is stamped whole; a bigger one in its first
//! and last [`EDGE`] bytes and a [`WINDOW`] every [`STRIDE`] between them (every
//! `size / MAX_WINDOWS` in a block so big that more windows would cost more page faults
//! than the allocator calls they check).
//!
//! So a block handed out twice is caught when its first owner checks it (the other owner's
//! id or key is there); bytes that `realloc` failed to carry over, or carried from the wrong
//! place, are caught because the key includes the old address; and so is any stray write.
//!
//! A check also asks the allocator whether it still knows the block as its own (see
//! [`Block::check_owned`]), and every allocator call here is bracketed by the `errno` check.

use crate::errno;
use crate::fail::violation;
use crate::rng::{mix, GOLDEN};
use std::alloc::{self, Layout};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

/// High bits of word 0 of every stamped block; the low 48 bits are its id.
pub const TAG: u64 = 0xebb5 << 48;
const ID_MASK: u64 = (1 << 48) - 1;
/// Blocks up to this size are stamped and checked whole.
pub const FULL_STAMP_MAX: usize = 128 << 10;
/// Bytes stamped at each end of a bigger block.
pub const EDGE: usize = 4 << 10;
/// Distance between the windows stamped in the middle of a bigger block, at least.
const STRIDE: usize = 16 << 10;
/// Windows in the middle of a block, at most. Each touches a page of its own; a block
/// moved by `mremap` would fault all of them in again, which made the threads that move
/// 24 MiB blocks (`large.rs`) spend most of their time in page faults.
const MAX_WINDOWS: usize = 128;
/// Bytes in each window.
const WINDOW: usize = 64;

/// The next block id not handed out yet; ids are unique process-wide.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Reserves `count` block ids for one thread; returns the first.
pub fn reserve_ids(count: u64) -> u64 {
    NEXT_ID.fetch_add(count, Ordering::Relaxed)
}

/// A live block and what it must hold. Owned by exactly one thread's table or exchange
/// queue at a time.
pub struct Block {
    pub ptr: *mut u8,
    pub size: usize,
    pub align: usize,
    pub id: u64,
    /// Bumped each time the block is stamped anew.
    pub seq: u64,
    /// Serial number of the thread that allocated it.
    pub owner: u64,
}

// SAFETY: a `Block` is the only handle to its memory, and whoever holds the value owns the
// block; moving it to another thread moves that ownership, which the allocator allows.
unsafe impl Send for Block {}

impl Block {
    pub fn layout(&self) -> Layout {
        layout(self.size, self.align)
    }

    /// The key of the block's current stamp.
    fn key(&self) -> u64 {
        key(self.ptr, self.id, self.seq)
    }

    /// Writes the block's stamp (after bumping its sequence number).
    pub fn stamp(&mut self) {
        self.seq += 1;
        let key = self.key();
        let Ok(()) = for_each_region(self.size, |start, end| {
            // SAFETY: regions lie inside the block, which we own.
            unsafe { write_pattern(self.ptr, start, end, self.id, key) };
            Ok::<(), Infallible>(())
        });
    }

    /// Checks the whole stamp and the block's owner; a mismatch is a violation, reported
    /// with `context`.
    pub fn check(&self, context: &str) {
        self.check_moved(self.ptr, self.size, context);
        self.check_owned(context);
    }

    /// Checks that the allocator still finds the block to be one of its own, with room for
    /// its size. `malloc_usable_size` of the C ABI looks a pointer up as C's `free` does:
    /// in the chunk map first, then in the header it leads to. A block whose chunk was
    /// dropped from the map (say by another thread's moving `realloc`) is what a later
    /// C `free` would call foreign; ebbmalloc then aborts with `malloc_usable_size():
    /// invalid pointer 0x...`.
    pub fn check_owned(&self, context: &str) {
        // SAFETY: the block is live and ours; the call only reads the allocator's metadata.
        let usable = unsafe { ebbmalloc::c_abi::malloc_usable_size(self.ptr.cast()) };
        if usable < self.size {
            violation(
                "block not known to the allocator",
                format_args!(
                    "{context}: malloc_usable_size of block id {} at {:#x} (size {}, align {}) \
                     is {usable}",
                    self.id, self.ptr as usize, self.size, self.align
                ),
            );
        }
    }

    /// Checks that `[0, limit)` of the block now at `ptr` still holds the stamp this block
    /// had (at its old address and size): what `realloc` must carry over.
    pub fn check_moved(&self, ptr: *mut u8, limit: usize, context: &str) {
        let key = self.key();
        let result = for_each_region(self.size, |start, end| {
            let end = end.min(limit);
            if start >= end {
                return Ok(());
            }
            // SAFETY: `[start, end)` lies in the first `limit` bytes at `ptr`, which the
            // caller owns.
            unsafe { compare_pattern(ptr, start, end, self.id, key) }
        });
        if let Err(offset) = result {
            self.report_mismatch(ptr, offset, limit, key, context);
        }
    }

    #[cold]
    fn report_mismatch(
        &self,
        ptr: *mut u8,
        offset: usize,
        limit: usize,
        key: u64,
        context: &str,
    ) -> ! {
        let word_start = offset & !7;
        let word_end = (word_start + 8).min(limit);
        let expected = pattern_word(word_start / 8, self.id, key).to_le_bytes();
        let mut found = [0u8; 8];
        for (i, byte) in found[..word_end - word_start].iter_mut().enumerate() {
            // SAFETY: inside the block, which we own.
            *byte = unsafe { ptr.add(word_start + i).read() };
        }
        let n = word_end - word_start;
        let mut note = String::new();
        if limit >= 8 {
            // SAFETY: the first `limit` bytes at `ptr` are ours.
            let word0 = unsafe { ptr.cast::<u64>().read_unaligned() };
            let other = word0 & ID_MASK;
            let issued = NEXT_ID.load(Ordering::Relaxed);
            if word0 & !ID_MASK == TAG && other != self.id && other < issued {
                note = format!("; word 0 holds block id {other}: another block overlaps this one");
            }
        }
        violation(
            "stamp mismatch",
            format_args!(
                "{context}: block id {} at {:#x} (size {}, align {}, seq {}, allocated by \
                 thread #{}) differs at offset {offset}: bytes {word_start}..{word_end} \
                 expected {:02x?} found {:02x?}{note}",
                self.id,
                ptr as usize,
                self.size,
                self.align,
                self.seq,
                self.owner,
                &expected[..n],
                &found[..n],
            ),
        )
    }

    /// Overwrites one stamped byte (the `--self-test-corrupt` fault); returns its offset.
    pub fn corrupt(&mut self, pick: u64) -> usize {
        let offset = (pick % self.size.min(EDGE) as u64) as usize;
        // SAFETY: inside the block, which we own.
        unsafe {
            let byte = self.ptr.add(offset);
            byte.write(byte.read() ^ 0x5a);
        }
        offset
    }
}

/// The layout of a block; sizes and alignments are chosen valid.
pub fn layout(size: usize, align: usize) -> Layout {
    match Layout::from_size_align(size, align) {
        Ok(layout) => layout,
        Err(_) => violation("bad layout", format_args!("size {size}, align {align}")),
    }
}

/// Checks what an allocation function returned for `size` and `align`.
pub fn check_returned(ptr: *mut u8, size: usize, align: usize, what: &str) {
    if ptr.is_null() {
        violation(
            "allocation failed",
            format_args!("{what} returned null for size {size}, align {align}"),
        );
    }
    if ptr as usize & (align - 1) != 0 {
        violation(
            "misaligned block",
            format_args!(
                "{what} returned {:#x} for size {size}, align {align}",
                ptr as usize
            ),
        );
    }
}

/// Checks that every byte of a fresh `alloc_zeroed` block is zero.
pub fn check_zeroed(ptr: *mut u8, size: usize) {
    let words = size / 8;
    for w in 0..words {
        // SAFETY: inside the block, which we own.
        if unsafe { ptr.add(w * 8).cast::<u64>().read_unaligned() } != 0 {
            report_not_zero(ptr, size, w * 8);
        }
    }
    for i in words * 8..size {
        // SAFETY: inside the block, which we own.
        if unsafe { ptr.add(i).read() } != 0 {
            report_not_zero(ptr, size, i);
        }
    }
}

#[cold]
fn report_not_zero(ptr: *mut u8, size: usize, start: usize) -> ! {
    let end = (start + 8).min(size);
    // SAFETY: `[start, end)` lies inside the block, which we own.
    let found: Vec<u8> = (start..end).map(|i| unsafe { ptr.add(i).read() }).collect();
    violation(
        "alloc_zeroed block not zero",
        format_args!(
            "block at {:#x} (size {size}): bytes {start}..{end} found {found:02x?}",
            ptr as usize
        ),
    )
}

/// Allocates, checks and stamps a block.
pub fn allocate(size: usize, align: usize, zeroed: bool, id: u64, owner: u64) -> Block {
    let layout = layout(size, align);
    let what = if zeroed { "alloc_zeroed" } else { "alloc" };
    errno::arm();
    // SAFETY: sizes are never zero.
    let ptr = unsafe {
        if zeroed {
            alloc::alloc_zeroed(layout)
        } else {
            alloc::alloc(layout)
        }
    };
    check_returned(ptr, size, align, what);
    errno::check(format_args!("{what} of {size} bytes (align {align})"));
    if zeroed {
        check_zeroed(ptr, size);
    }
    let mut block = Block {
        ptr,
        size,
        align,
        id: id & ID_MASK,
        seq: 0,
        owner,
    };
    block.stamp();
    block.check_owned("after alloc");
    block
}

/// Resizes a block with `realloc`, checks what it carried over and stamps it anew.
pub fn reallocate(block: &mut Block, new_size: usize) {
    errno::arm();
    // SAFETY: the block is live with this layout, `new_size` is not zero and rounds to a
    // valid layout with the block's alignment.
    let ptr = unsafe { alloc::realloc(block.ptr, block.layout(), new_size) };
    check_returned(ptr, new_size, block.align, "realloc");
    errno::check(format_args!(
        "realloc from {} to {new_size} bytes (align {}, {:#x} -> {:#x})",
        block.size, block.align, block.ptr as usize, ptr as usize
    ));
    let kept = block.size.min(new_size);
    let context = format!(
        "after realloc from {} to {new_size} bytes (from {:#x})",
        block.size, block.ptr as usize
    );
    block.check_moved(ptr, kept, &context);
    block.ptr = ptr;
    block.size = new_size;
    block.stamp();
    block.check_owned("after realloc");
}

/// Checks a block and frees it.
pub fn free(block: Block, context: &str) {
    block.check(context);
    errno::arm();
    // SAFETY: the block is live with this layout and is not used again.
    unsafe { alloc::dealloc(block.ptr, block.layout()) };
    errno::check(format_args!(
        "dealloc of {} bytes (align {}) at {:#x}",
        block.size, block.align, block.ptr as usize
    ));
}

/// The key of a stamp.
fn key(ptr: *mut u8, id: u64, seq: u64) -> u64 {
    mix(ptr as u64 ^ id.rotate_left(20) ^ seq.wrapping_mul(GOLDEN))
}

/// Word `w` of the pattern of block `id` stamped with `key`.
fn pattern_word(w: usize, id: u64, key: u64) -> u64 {
    if w == 0 {
        TAG | id
    } else {
        key ^ (w as u64).wrapping_mul(GOLDEN)
    }
}

/// Calls `f(start, end)` for each stamped byte range of a block of `size` bytes, in order;
/// `start` is a multiple of 8. Stops at the first error.
fn for_each_region<E>(
    size: usize,
    mut f: impl FnMut(usize, usize) -> Result<(), E>,
) -> Result<(), E> {
    if size <= FULL_STAMP_MAX {
        return f(0, size);
    }
    f(0, EDGE)?;
    let tail = (size - EDGE) & !7;
    let stride = STRIDE.max((size / MAX_WINDOWS) & !7);
    let mut window = stride;
    while window + WINDOW <= tail {
        f(window, window + WINDOW)?;
        window += stride;
    }
    f(tail, size)
}

/// Writes the pattern over `[start, end)` of the block at `ptr`.
///
/// # Safety
/// The range lies inside a block the caller owns; `start` is a multiple of 8.
unsafe fn write_pattern(ptr: *mut u8, start: usize, end: usize, id: u64, key: u64) {
    let first = start / 8;
    let last = end / 8;
    for w in first..last {
        // SAFETY: word `w` ends at or before `end`.
        unsafe {
            ptr.add(w * 8)
                .cast::<u64>()
                .write_unaligned(pattern_word(w, id, key))
        };
    }
    let tail = pattern_word(last, id, key).to_le_bytes();
    for i in last * 8..end {
        // SAFETY: `i < end`.
        unsafe { ptr.add(i).write(tail[i % 8]) };
    }
}

/// Compares `[start, end)` of the block at `ptr` with the pattern; the offset of the first
/// byte that differs.
///
/// # Safety
/// The range lies inside a block the caller owns; `start` is a multiple of 8.
unsafe fn compare_pattern(
    ptr: *mut u8,
    start: usize,
    end: usize,
    id: u64,
    key: u64,
) -> Result<(), usize> {
    let first = start / 8;
    let last = end / 8;
    for w in first..last {
        // SAFETY: word `w` ends at or before `end`.
        let found = unsafe { ptr.add(w * 8).cast::<u64>().read_unaligned() };
        let expected = pattern_word(w, id, key);
        if found != expected {
            let differ = (found ^ expected).trailing_zeros() as usize / 8;
            return Err(w * 8 + differ);
        }
    }
    let tail = pattern_word(last, id, key).to_le_bytes();
    for i in last * 8..end {
        // SAFETY: `i < end`.
        if unsafe { ptr.add(i).read() } != tail[i % 8] {
            return Err(i);
        }
    }
    Ok(())
}
