//! The C allocation functions with the semantics glibc documents, as Rust functions. The
//! `capi/` crate exports them under their C names in `libebbmalloc.so` as one-liners; the
//! POSIX details live here, where Rust tests and fuzzers can call them too:
//!
//! - failures return null and set `errno` to `ENOMEM` (`posix_memalign` returns the
//!   error code instead, as POSIX says, and leaves `errno` alone);
//! - `calloc` and `reallocarray` check `n * size` for overflow;
//! - `malloc(0)` returns a unique pointer (as glibc does), `free(NULL)` does nothing,
//!   `realloc(NULL, n)` is `malloc(n)`, and `realloc(p, 0)` frees `p` and returns null
//!   (glibc's behaviour, which C23 leaves to the implementation);
//! - `malloc` returns 16-byte alignment for requests above 8 bytes (`max_align_t`) and 8
//!   for smaller ones, which cannot hold a 16-aligned object;
//! - `posix_memalign` wants a power of two that is a multiple of `sizeof(void *)`,
//!   `aligned_alloc` a power of two (`EINVAL` otherwise); `memalign` rounds a bad alignment
//!   up to a power of two, like glibc;
//! - `free` and `realloc` check that the pointer is a block of ours (see
//!   `front::owner_of`) and abort with `ebbmalloc: free(): invalid pointer 0x...` if not.

use crate::fatal::fatal;
use crate::front::{self, Owner};
use core::ffi::{c_int, c_void};
use core::ptr;

/// The statistics as C sees them (`struct ebbmalloc_stats` in `capi/include/ebbmalloc.h`):
/// [`crate::Stats`] itself, which is `#[repr(C)]`, so no field can be left out of the C
/// ABI (`tests/c_stats_header.rs` checks the header against it).
pub type CStats = crate::Stats;

/// The figures of one size class as C sees them (`struct ebbmalloc_class_stats`).
pub type CClassStats = crate::ClassStats;

const PAGE_SIZE: usize = crate::consts::PAGE_SIZE;

/// The alignment `malloc` gives a request of `size` bytes.
#[inline]
fn default_align(size: usize) -> usize {
    if size <= 8 {
        8
    } else {
        16
    }
}

/// The largest request we try to serve: Rust's limit for a `Layout`. Larger ones fail
/// with `ENOMEM` before any size arithmetic could wrap.
const MAX_REQUEST: usize = isize::MAX as usize;

/// `block` for C, or null with `ENOMEM` when memory is exhausted.
#[inline(always)]
fn or_enomem(block: *mut u8) -> *mut c_void {
    if block.is_null() {
        return fail_enomem();
    }
    block as *mut c_void
}

#[cold]
fn fail_enomem() -> *mut c_void {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

fn set_errno(code: c_int) {
    crate::os::set_errno(code);
}

/// `malloc(size)`.
#[inline]
pub fn malloc(size: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return fail_enomem();
    }
    let size = size.max(1);
    or_enomem(front::alloc(size, default_align(size)))
}

/// `calloc(count, size)`.
pub fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(total) = count
        .checked_mul(size)
        .filter(|&total| total <= MAX_REQUEST)
    else {
        return fail_enomem();
    };
    let total = total.max(1);
    or_enomem(front::alloc_zeroed(total, default_align(total)))
}

/// `free(ptr)`.
///
/// # Safety
/// `ptr` is null or a live block from these functions (anything else is detected where
/// possible and aborts).
#[inline]
pub unsafe fn free(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the caller's promise; the pointer is not null.
    unsafe { front::free_unsized(ptr as *mut u8) }
}

/// `free_sized(ptr, size)` (C23): the size is a hint we do not need.
///
/// # Safety
/// As [`free`].
pub unsafe fn free_sized(ptr: *mut c_void, _size: usize) {
    // SAFETY: the caller's promise.
    unsafe { free(ptr) }
}

/// `free_aligned_sized(ptr, alignment, size)` (C23).
///
/// # Safety
/// As [`free`].
pub unsafe fn free_aligned_sized(ptr: *mut c_void, _alignment: usize, _size: usize) {
    // SAFETY: the caller's promise.
    unsafe { free(ptr) }
}

/// `realloc(ptr, size)`.
///
/// # Safety
/// As [`free`].
pub unsafe fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: the caller's promise.
        unsafe { free(ptr) };
        return ptr::null_mut();
    }
    if size > MAX_REQUEST {
        return fail_enomem();
    }
    // SAFETY: the caller's promise; the pointer is not null.
    or_enomem(unsafe { front::realloc_unsized(ptr as *mut u8, size, default_align(size)) })
}

/// `reallocarray(ptr, count, size)`.
///
/// # Safety
/// As [`free`].
pub unsafe fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: the caller's promise.
        Some(total) => unsafe { realloc(ptr, total) },
        None => fail_enomem(),
    }
}

/// A block aligned to `alignment` (a power of two), or null with `ENOMEM`.
fn aligned(alignment: usize, size: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return fail_enomem();
    }
    let size = size.max(1);
    or_enomem(front::alloc(size, alignment.max(default_align(size))))
}

/// `posix_memalign(out, alignment, size)`: 0, `EINVAL` or `ENOMEM`.
///
/// # Safety
/// `out` is valid for a pointer write.
pub unsafe fn posix_memalign(out: *mut *mut c_void, alignment: usize, size: usize) -> c_int {
    if !alignment.is_power_of_two() || alignment % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let saved = errno();
    let block = aligned(alignment, size);
    if block.is_null() {
        set_errno(saved);
        return libc::ENOMEM;
    }
    // SAFETY: the caller's promise.
    unsafe { *out = block };
    0
}

fn errno() -> c_int {
    crate::os::errno()
}

/// `aligned_alloc(alignment, size)`.
pub fn aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
    if !alignment.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(alignment, size)
}

/// `memalign(alignment, size)` (obsolete; a bad alignment is rounded up, as glibc does).
pub fn memalign(alignment: usize, size: usize) -> *mut c_void {
    let Some(alignment) = alignment.checked_next_power_of_two() else {
        return fail_enomem();
    };
    aligned(alignment, size)
}

/// `valloc(size)`: page-aligned.
pub fn valloc(size: usize) -> *mut c_void {
    aligned(PAGE_SIZE, size)
}

/// `pvalloc(size)`: page-aligned, size rounded up to whole pages.
pub fn pvalloc(size: usize) -> *mut c_void {
    let Some(rounded) = size.max(1).checked_next_multiple_of(PAGE_SIZE) else {
        return fail_enomem();
    };
    aligned(PAGE_SIZE, rounded)
}

/// `malloc_usable_size(ptr)`: the bytes the block really has (0 for null).
///
/// # Safety
/// As [`free`].
pub unsafe fn malloc_usable_size(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    let block = ptr as *mut u8;
    match front::owner_of(block) {
        // SAFETY: a live block of ours.
        Some(owner @ (Owner::Class(_) | Owner::Large)) => unsafe {
            front::usable_size(block, owner)
        },
        _ => fatal("malloc_usable_size(): invalid pointer", block as usize),
    }
}

/// `malloc_trim(pad)`: runs a full trimming pass; 1 if memory was released.
pub fn malloc_trim(_pad: usize) -> c_int {
    (crate::trim() > 0) as c_int
}

/// Fills `out` with the statistics.
///
/// # Safety
/// `out` is valid for a write of a [`CStats`].
pub unsafe fn stats(out: *mut CStats) {
    if out.is_null() {
        return;
    }
    // SAFETY: the caller's promise.
    unsafe { out.write(crate::stats()) };
}

/// For the shared library's constructor: the dynamic loader is done, a background thread
/// may now be started.
pub fn library_loaded() {
    front::allow_background_thread();
}
