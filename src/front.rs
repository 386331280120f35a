//! The front: from a request (size, alignment) to the layer that serves it.
//!
//! A request that a size class can serve goes to this thread's cache; anything larger or
//! more strictly aligned gets a mapping of its own (`large.rs`). Rust's `dealloc` and
//! `realloc` pass the layout, so the class of a block is recomputed from it rather than
//! looked up: `SizeClass::for_layout` is a pure function of the layout.
//!
//! Every null result means memory is exhausted (or the request beyond any), and comes with
//! `ENOMEM` in `errno` (`os::set_errno_out_of_memory`), as C wants: the C front returns it
//! as it is.
//!
//! C's `free` carries no size: [`owner_of`] finds what a pointer is from the chunk map and
//! the header of its chunk, in O(1), and rejects pointers that are not blocks of ours. For
//! a small block that is one byte of the chunk map (an arena), one bit of the arena's
//! out-block bitmap (a block starts here and is out of its pool) and the page's class.

use crate::chunk_map::{self, ChunkKind};
use crate::fatal::fatal;
use crate::large::{self, LargeState};
use crate::size_class::SizeClass;
use crate::{layout, lifecycle, os, profiling, thread_cache, trim};
use core::ptr;

/// A block of at least `size` bytes aligned to `align` (a power of two), or null.
#[inline(always)]
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    match SizeClass::for_layout(size, align) {
        Some(class) => alloc_small(class, size),
        None => alloc_large(size, align, false),
    }
}

/// A block of `class` for a request of `size` bytes: the thread cache's, or a sampled one
/// when the heap profiler's countdown runs out (`thread_cache::alloc_counted`).
#[inline(always)]
fn alloc_small(class: SizeClass, size: usize) -> *mut u8 {
    thread_cache::alloc_counted(class, size, lifecycle::register_thread, sample_small)
}

/// The heap profiler's block of `class` for a request of `size` bytes, or null when it
/// declines (the sampling path of [`alloc_small`] and [`alloc_for_malloc`]).
fn sample_small(class: SizeClass, size: usize) -> *mut u8 {
    profiling::alloc_small(size, class.size())
}

/// A block for `malloc(size)`: `size` bytes (at least 1) at C's fundamental alignment (8
/// for up to 8 bytes, 16 above), or null (memory exhausted, or `size` above
/// `isize::MAX`). Sizes of the class table take one table load (`SizeClass::for_malloc`)
/// rather than [`alloc`]'s rounding to the alignment.
#[inline(always)]
pub(crate) fn alloc_for_malloc(size: usize) -> *mut u8 {
    if !SizeClass::in_malloc_table(size) {
        return alloc_for_malloc_beyond_table(size);
    }
    // The countdown before the class is looked up: the size is then dead when the class
    // goes into the register of the slow path's first argument, which held the size (1
    // instruction of the C pair).
    if thread_cache::count_down(size) {
        return alloc_for_malloc_sampling(size);
    }
    thread_cache::alloc(
        SizeClass::for_malloc_unchecked(size),
        lifecycle::register_thread,
    )
}

/// [`alloc_for_malloc`] of a size of the table whose countdown ran out.
#[cold]
#[inline(never)]
fn alloc_for_malloc_sampling(size: usize) -> *mut u8 {
    thread_cache::alloc_sampling(
        SizeClass::for_malloc_unchecked(size),
        size,
        lifecycle::register_thread,
        sample_small,
    )
}

#[inline(never)]
fn alloc_for_malloc_beyond_table(size: usize) -> *mut u8 {
    // Rust's limit for a `Layout`: larger requests fail before any size arithmetic could
    // wrap.
    if size > isize::MAX as usize {
        os::set_errno_out_of_memory();
        return ptr::null_mut();
    }
    alloc(size, 16)
}

/// A large block (see [`alloc`]); the trimmer hears of it (`trim::tick_large`).
#[inline(never)]
fn alloc_large(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let block = if thread_cache::count_down(size) {
        profiling::alloc_large(size, align, zeroed)
    } else {
        large::alloc(size, align, zeroed)
    };
    if block.is_null() {
        os::set_errno_out_of_memory();
    }
    trim::tick_large(thread_cache::reclaim_idle_caches);
    block
}

/// Like [`alloc`], with the first `size` bytes zeroed. Memory fresh from the OS is not
/// written again.
#[inline]
pub(crate) fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    match SizeClass::for_layout(size, align) {
        Some(class) => {
            let block = alloc_small(class, size);
            if !block.is_null() {
                // SAFETY: the block holds at least `size` bytes.
                unsafe { ptr::write_bytes(block, 0, size) };
            }
            block
        }
        None => alloc_large(size, align, true),
    }
}

/// Frees a block.
///
/// # Safety
/// `block` came from this allocator with this `size` and `align` and is not used again.
#[inline(always)]
pub(crate) unsafe fn dealloc(block: *mut u8, size: usize, align: usize) {
    // SAFETY: the caller's promise (a label block does not inherit `unsafe`).
    unsafe {
        profiling::below_sampled_limit_or!(
            block,
            // SAFETY: the caller's promise.
            return unsafe { dealloc_low(block, size, align) }
        );
        dealloc_sized(block, size, align)
    }
}

/// [`dealloc`] of a block below the sampled-block limit (`profiling.rs`): a sampled small block, or
/// (which never happens while the address space has room above) an ordinary one.
///
/// # Safety
/// As [`dealloc`].
#[cold]
#[inline(never)]
unsafe fn dealloc_low(block: *mut u8, size: usize, align: usize) {
    // SAFETY: the caller's promise.
    unsafe {
        if !profiling::free_small(block) {
            dealloc_sized(block, size, align);
        }
    }
}

/// [`dealloc`] of a block that is not a sampled small one.
///
/// # Safety
/// As [`dealloc`].
#[inline(always)]
unsafe fn dealloc_sized(block: *mut u8, size: usize, align: usize) {
    let class = SizeClass::for_layout(size, align);
    #[cfg(feature = "hardened")]
    check_owner(block, class);
    // SAFETY: the caller's promise, and the class is the one the block came from.
    unsafe { release(block, class) }
}

/// Frees a pointer of unknown size (C's `free`): nothing for null; otherwise finds what it
/// is ([`owner_of`]) and aborts, naming `free()`, when it is not a live block of ours.
///
/// Null takes no test of its own before a small block's: its chunk, the first, is never an
/// arena (an arena is a mapping of its own at a multiple of 256 KiB, and none is at 0), so
/// it falls through to [`free_unsized_other`], which returns (2 instructions of every C
/// `free`).
///
/// # Safety
/// `block` is null or, if it is a live block of ours, not used again.
#[inline(always)]
pub(crate) unsafe fn free_unsized(block: *mut u8) {
    if chunk_map::is_aligned_in_arena(block as usize) {
        // SAFETY: the chunk map says the chunk is a live arena; the block is aligned to
        // the granule.
        if let Some(class) = unsafe { layout::class_of_out_granule(block) } {
            // SAFETY: a block of this class that is out of its pool, which the caller
            // hands back (a second free of a block still cached is caught there).
            return unsafe { thread_cache::free(block, class) };
        }
    }
    // SAFETY: the caller's promise.
    unsafe { free_unsized_other(block) }
}

/// The rest of [`free_unsized`]: null, a large block, or a pointer to reject.
///
/// # Safety
/// As [`free_unsized`].
#[inline(never)]
unsafe fn free_unsized_other(block: *mut u8) {
    if block.is_null() {
        return;
    }
    match owner_of(block) {
        // SAFETY: `owner_of` found a live large block, which the caller hands back.
        Some(Owner::Large) => unsafe { free_large(block) },
        // SAFETY: `owner_of` found a live sampled block, which the caller hands back.
        Some(Owner::Sampled) => unsafe {
            profiling::free_small(block);
        },
        // A block of a class that `free_unsized` did not take: not out of its pool.
        Some(Owner::Class(_)) | Some(Owner::Freed) => {
            fatal("free(): double free of", block as usize)
        }
        None => fatal("free(): invalid pointer", block as usize),
    }
}

/// Returns a checked block to its thread cache (`class`) or its mapping (`None`: large).
///
/// # Safety
/// `block` is a live block of `class` (or a live large block) that is not used again.
#[inline(always)]
unsafe fn release(block: *mut u8, class: Option<SizeClass>) {
    match class {
        // SAFETY: the caller's promise.
        Some(class) => unsafe { thread_cache::free(block, class) },
        // SAFETY: the caller's promise.
        None => unsafe { free_large(block) },
    }
}

/// Frees a live large block, ending its profiler record if it was sampled.
///
/// # Safety
/// `block` is a live large block that is not used again.
unsafe fn free_large(block: *mut u8) {
    // SAFETY: the caller's promise.
    unsafe {
        profiling::forget_large(block);
        large::free(block);
    }
}

/// Resizes a block, in place when the new size has the same class or both sizes are
/// large; otherwise moves it, keeping `min(old_size, new_size)` bytes. Null (the block
/// untouched) when memory is exhausted.
///
/// # Safety
/// `block` is live, from this allocator with `old_size` and `align`.
pub(crate) unsafe fn realloc(
    block: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: the compare reads the limit's word (a label block does not inherit
    // `unsafe`). (Without the assembly, under loom, nothing here is unsafe.)
    #[allow(unused_unsafe)]
    unsafe {
        profiling::below_sampled_limit_or!(
            block,
            // SAFETY: the caller's promise.
            return unsafe { realloc_low(block, old_size, align, new_size) }
        );
    }
    // SAFETY: the caller's promise.
    unsafe { realloc_sized(block, old_size, align, new_size) }
}

/// [`realloc`] of a block below the sampled-block limit (see [`dealloc_low`]).
///
/// # Safety
/// As [`realloc`].
#[cold]
#[inline(never)]
unsafe fn realloc_low(block: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    if profiling::small_block_state(block).is_some() {
        // SAFETY: a sampled block of ours, `old_size` bytes long (the caller's promise).
        return unsafe { move_sampled(block, old_size, align, new_size) };
    }
    // SAFETY: the caller's promise.
    unsafe { realloc_sized(block, old_size, align, new_size) }
}

/// [`realloc`] of a block that is not a sampled small one.
///
/// # Safety
/// As [`realloc`].
#[inline(always)]
unsafe fn realloc_sized(block: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    let old_class = SizeClass::for_layout(old_size, align);
    #[cfg(feature = "hardened")]
    check_owner(block, old_class);
    // SAFETY: the caller's promise (checked by `check_owner` when hardened).
    unsafe { resize(block, old_class, old_size, align, new_size) }
}

/// Moves a sampled small block to a new one of `new_size` bytes aligned to `align`,
/// keeping `min(keep, new_size)` bytes, and frees it. Null (the block untouched) when
/// memory is exhausted.
///
/// # Safety
/// `block` is a live sampled small block holding at least `keep` bytes.
unsafe fn move_sampled(block: *mut u8, keep: usize, align: usize, new_size: usize) -> *mut u8 {
    let moved = alloc(new_size, align);
    if !moved.is_null() {
        // SAFETY: both blocks hold at least the bytes copied and are distinct; the old one
        // is a live sampled block, which we give up.
        unsafe {
            ptr::copy_nonoverlapping(block, moved, keep.min(new_size));
            profiling::free_small(block);
        }
    }
    moved
}

/// Resizes a pointer of unknown size (C's `realloc`) to `new_size` bytes aligned to
/// `align`, as [`realloc`] does; aborts, naming `realloc()`, when it is not a live block of
/// ours. Null (the block untouched) when memory is exhausted.
///
/// # Safety
/// `block` is not null; if it is a live block of ours, the caller gives it up when the
/// result is not null.
pub(crate) unsafe fn realloc_unsized(block: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    let owner = match owner_of(block) {
        Some(Owner::Freed) => fatal("realloc(): double free of", block as usize),
        None => fatal("realloc(): invalid pointer", block as usize),
        Some(Owner::Sampled) => {
            // SAFETY: `owner_of` found a live sampled block of ours, `usable` bytes long.
            return unsafe {
                let usable = usable_size(block, Owner::Sampled);
                move_sampled(block, usable, align, new_size)
            };
        }
        Some(owner) => owner,
    };
    let old_class = match owner {
        Owner::Class(class) => Some(class),
        _ => None,
    };
    // SAFETY: `owner_of` found a live block of ours, `usable` bytes long.
    unsafe {
        let usable = usable_size(block, owner);
        resize(block, old_class, usable, align, new_size)
    }
}

/// The one resize of both fronts: in place when the class stays or both sizes are large,
/// otherwise a new block with the first `min(keep, new_size)` bytes copied and the old one
/// freed.
///
/// # Safety
/// `block` is a live block of `old_class` (`None`: large) holding at least `keep` bytes.
unsafe fn resize(
    block: *mut u8,
    old_class: Option<SizeClass>,
    keep: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    if old_class.is_some() {
        // SAFETY: the caller's promise: a block of a size class in a live pool.
        unsafe { check_not_freed(block) };
    }
    match (old_class, SizeClass::for_layout(new_size, align)) {
        (Some(old), Some(new)) if old == new => return block,
        // SAFETY: the caller's promise: a live large block.
        (None, None) => unsafe {
            // A sampled block's record (of its old size) ends first: the hardened build's
            // `large::realloc` frees the old block itself. (Should the resize fail, the
            // block stays, unsampled.)
            profiling::forget_large(block);
            let moved = large::realloc(block, new_size);
            if moved.is_null() {
                os::set_errno_out_of_memory();
            } else {
                // An allocation of the new size for the sampler.
                profiling::count_resized_large(moved, new_size);
            }
            trim::tick_large(thread_cache::reclaim_idle_caches);
            return moved;
        },
        _ => {}
    }
    let moved = alloc(new_size, align);
    if !moved.is_null() {
        // SAFETY: both blocks hold at least the bytes copied, and are distinct; the old
        // one is live and of `old_class`.
        unsafe {
            ptr::copy_nonoverlapping(block, moved, keep.min(new_size));
            release(block, old_class);
        }
    }
    moved
}

/// Aborts if `block`, a block of a size class given to `realloc`, was freed already.
///
/// # Safety
/// `block` is a block of a size class in a live pool.
#[inline]
pub(crate) unsafe fn check_not_freed(block: *mut u8) {
    const MESSAGE: &str = "realloc(): double free of";
    // SAFETY: by the caller's promise.
    unsafe {
        #[cfg(feature = "hardened")]
        crate::hardened::check_live(block, MESSAGE);
        #[cfg(not(feature = "hardened"))]
        crate::block::check_not_freed(block, MESSAGE);
    }
}

/// Hardened builds: aborts unless `block` is what a Rust `dealloc` or `realloc` says it
/// is, a block of `class`, or a live large block when `class` is `None`.
#[cfg(feature = "hardened")]
#[inline(always)]
fn check_owner(block: *mut u8, class: Option<SizeClass>) {
    let owned = match class {
        Some(class) => layout::is_block_of_class(block, class),
        None => match owner_of(block) {
            Some(Owner::Large) => true,
            Some(Owner::Freed) => crate::fatal::fatal("double free of", block as usize),
            _ => false,
        },
    };
    if !owned {
        crate::fatal::fatal("invalid free of", block as usize);
    }
}

/// What a pointer of unknown origin is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Owner {
    /// A block of a size class that is out of its pool.
    Class(SizeClass),
    /// A live large block.
    Large,
    /// A live sampled small block (`profiling.rs`).
    Sampled,
    /// A block that was freed already: a large one, or the start of a block of a live
    /// pool that is back in its pool.
    Freed,
}

/// What `ptr` is, or `None` when it is not the start of a block of ours (a foreign,
/// interior or wild pointer). Reads no memory that is not ours.
pub(crate) fn owner_of(ptr: *mut u8) -> Option<Owner> {
    match chunk_map::kind_of(ptr as usize) {
        // SAFETY: the chunk map says the chunk is a live arena.
        ChunkKind::Arena => unsafe {
            if let Some(class) = layout::class_of_out_block(ptr) {
                Some(Owner::Class(class))
            } else if layout::class_of_block(ptr).is_some() {
                Some(Owner::Freed)
            } else {
                None
            }
        },
        kind @ (ChunkKind::Large | ChunkKind::LargeAtChunkStart) => {
            // SAFETY: the chunk map says a large block starts in this chunk, as `kind`
            // says.
            match unsafe { large::state_of(ptr, kind) } {
                LargeState::Live => Some(Owner::Large),
                LargeState::Freed => Some(Owner::Freed),
                LargeState::NotABlock => None,
            }
        }
        ChunkKind::Foreign => match profiling::small_block_state(ptr) {
            Some(0) => Some(Owner::Freed),
            Some(_) => Some(Owner::Sampled),
            None => None,
        },
    }
}

/// Bytes usable in a live block whose owner is known.
///
/// # Safety
/// `ptr` is a live block of ours and `owner` is what [`owner_of`] said of it.
pub(crate) unsafe fn usable_size(ptr: *mut u8, owner: Owner) -> usize {
    match owner {
        Owner::Class(class) => class.size(),
        // SAFETY: the caller's promise.
        Owner::Large => unsafe { large::usable_size(ptr) },
        Owner::Sampled => profiling::small_block_state(ptr).unwrap_or(0),
        Owner::Freed => 0,
    }
}

/// Lets the background trimmer start (for the shared library's constructor: the dynamic
/// loader is done).
pub(crate) fn allow_background_thread() {
    trim::allow_background_thread();
}

/// Gives idle memory back to the OS now (`ebbmalloc::trim`, `malloc_trim`): this thread's
/// cached blocks go back first, then a full trimming pass runs. Returns the bytes released.
pub(crate) fn trim_now() -> usize {
    thread_cache::flush_this_thread();
    trim::trim_now(thread_cache::reclaim_idle_caches)
}
