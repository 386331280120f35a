//! The C allocation functions exported under their C names (feature `preload`), for
//! `libebbmalloc.so` (`capi/`, which builds this crate's sources as a `cdylib` with the
//! feature on). Each is a one-liner over [`crate::c_abi`], which holds the POSIX details
//! (errno, overflow checks, `realloc(p, 0)`, alignment rules) and checks foreign pointers.
//!
//! Build: `cargo build --release -p ebbmalloc-capi`; use:
//! `LD_PRELOAD=target/release/libebbmalloc.so program`. The header is
//! `capi/include/ebbmalloc.h`.
//!
//! Preloaded, these take the place of glibc's functions for the whole process from its
//! first allocation on. The dynamic loader may call `malloc` before the library's
//! constructor runs; nothing here needs one, except that the background trimmer is held
//! back until then (see `trim.rs`).

use crate::c_abi;
use core::ffi::{c_int, c_void};

/// Runs when the dynamic loader has loaded and relocated the library.
extern "C" fn on_load() {
    c_abi::library_loaded();
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

/// C `malloc`.
#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    c_abi::malloc(size)
}

/// C `calloc`.
#[no_mangle]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    c_abi::calloc(count, size)
}

/// C `realloc`.
///
/// # Safety
/// C's contract: `ptr` is null or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::realloc(ptr, size) }
}

/// C `reallocarray`.
///
/// # Safety
/// As `realloc`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::reallocarray(ptr, count, size) }
}

/// C `free`.
///
/// # Safety
/// C's contract: `ptr` is null or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    // SAFETY: the C caller's contract; foreign pointers are detected and abort.
    unsafe { c_abi::free(ptr) }
}

/// C23 `free_sized`.
///
/// # Safety
/// As `free`.
#[no_mangle]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, size: usize) {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::free_sized(ptr, size) }
}

/// C23 `free_aligned_sized`.
///
/// # Safety
/// As `free`.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, alignment: usize, size: usize) {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::free_aligned_sized(ptr, alignment, size) }
}

/// POSIX `posix_memalign`.
///
/// # Safety
/// `out` is valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    alignment: usize,
    size: usize,
) -> c_int {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::posix_memalign(out, alignment, size) }
}

/// C11 `aligned_alloc`.
#[no_mangle]
pub extern "C" fn aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
    c_abi::aligned_alloc(alignment, size)
}

/// Obsolete `memalign`.
#[no_mangle]
pub extern "C" fn memalign(alignment: usize, size: usize) -> *mut c_void {
    c_abi::memalign(alignment, size)
}

/// Obsolete `valloc`.
#[no_mangle]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    c_abi::valloc(size)
}

/// Obsolete `pvalloc`.
#[no_mangle]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    c_abi::pvalloc(size)
}

/// GNU `malloc_usable_size`.
///
/// # Safety
/// `ptr` is null or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::malloc_usable_size(ptr) }
}

/// GNU `malloc_trim`: runs ebbmalloc's full trimming pass.
#[no_mangle]
pub extern "C" fn malloc_trim(pad: usize) -> c_int {
    c_abi::malloc_trim(pad)
}

/// `ebbmalloc_trim`: a full trimming pass; returns the bytes given back to the OS.
#[no_mangle]
pub extern "C" fn ebbmalloc_trim() -> usize {
    crate::trim()
}

/// `ebbmalloc_stats`: fills `*out`.
///
/// # Safety
/// `out` is null or valid for a write of `struct ebbmalloc_stats`.
#[no_mangle]
pub unsafe extern "C" fn ebbmalloc_stats(out: *mut c_abi::CStats) {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::stats(out) }
}

/// `ebbmalloc_stats_print`: the statistics table on stderr.
#[no_mangle]
pub extern "C" fn ebbmalloc_stats_print() {
    crate::print_stats();
}
