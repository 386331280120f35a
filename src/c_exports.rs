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
use core::ffi::{c_char, c_int, c_void};

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

/// `ebbmalloc_prof_dump`: writes the heap profile to `path` (see `c_abi::prof_dump`).
///
/// # Safety
/// `path` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ebbmalloc_prof_dump(path: *const c_char) -> c_int {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::prof_dump(path) }
}

/// `ebbmalloc_prof_set_active`: switches heap profiling on or off.
#[no_mangle]
pub extern "C" fn ebbmalloc_prof_set_active(active: c_int) {
    c_abi::prof_set_active(active);
}

/// glibc's `mallinfo2`: ebbmalloc's figures in glibc's fields (see `c_abi::MallInfo2`).
#[no_mangle]
pub extern "C" fn mallinfo2() -> c_abi::MallInfo2 {
    c_abi::mallinfo2()
}

/// glibc's `mallinfo` (`int` fields, saturated).
#[no_mangle]
pub extern "C" fn mallinfo() -> c_abi::MallInfo {
    c_abi::mallinfo()
}

/// glibc's `mallopt`: accepted and ignored (see `c_abi::mallopt`).
#[no_mangle]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    c_abi::mallopt(param, value)
}

/// glibc's `malloc_stats`: ebbmalloc's statistics table on stderr.
#[no_mangle]
pub extern "C" fn malloc_stats() {
    c_abi::malloc_stats();
}

/// glibc's `malloc_info`: XML on `stream`.
///
/// # Safety
/// `stream` is a valid `FILE *`.
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, stream: *mut c_void) -> c_int {
    // SAFETY: the C caller's contract.
    unsafe { c_abi::malloc_info(options, stream) }
}

/// Exports each `alias` as another name of a function above, as glibc's own `__libc_*`
/// names are (programs and libraries that call them directly, to reach "the real malloc",
/// must reach ours: a block from glibc's heap given to our `free` would abort).
macro_rules! aliases {
    ($($(#[$doc:meta])* [$($unsafe:ident)?] fn $alias:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $target:ident;)*) => {$(
        $(#[$doc])*
        #[no_mangle]
        pub $($unsafe)? extern "C" fn $alias($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: the contract of the function it names, which is the caller's.
            #[allow(unused_unsafe)]
            unsafe { $target($($arg),*) }
        }
    )*};
}

aliases! {
    /// glibc's `__libc_malloc`: [`malloc`].
    [] fn __libc_malloc(size: usize) -> *mut c_void = malloc;
    /// glibc's `__libc_calloc`: [`calloc`].
    [] fn __libc_calloc(count: usize, size: usize) -> *mut c_void = calloc;
    /// glibc's `__libc_realloc`: [`realloc`].
    ///
    /// # Safety
    /// As `realloc`.
    [unsafe] fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void = realloc;
    /// glibc's `__libc_free`: [`free`].
    ///
    /// # Safety
    /// As `free`.
    [unsafe] fn __libc_free(ptr: *mut c_void) = free;
    /// glibc's `__libc_memalign`: [`memalign`].
    [] fn __libc_memalign(alignment: usize, size: usize) -> *mut c_void = memalign;
    /// glibc's `__libc_valloc`: [`valloc`].
    [] fn __libc_valloc(size: usize) -> *mut c_void = valloc;
    /// glibc's `__libc_pvalloc`: [`pvalloc`].
    [] fn __libc_pvalloc(size: usize) -> *mut c_void = pvalloc;
    /// glibc's `__posix_memalign`: [`posix_memalign`].
    ///
    /// # Safety
    /// As `posix_memalign`.
    [unsafe] fn __posix_memalign(out: *mut *mut c_void, alignment: usize, size: usize) -> c_int = posix_memalign;
}

/// C++ `operator delete(void *, std::size_t)`: sized, so the block's class comes from the
/// size, as in Rust (`c_abi::delete_sized`). The unsized and aligned variants are left to
/// the C++ runtime, which calls `free`.
///
/// # Safety
/// `ptr` is null or a live block from `operator new(size)`.
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvm(ptr: *mut c_void, size: usize) {
    // SAFETY: the C++ caller's contract.
    unsafe { c_abi::delete_sized(ptr, size) }
}

/// C++ `operator delete[](void *, std::size_t)`: as [`_ZdlPvm`].
///
/// # Safety
/// `ptr` is null or a live block from `operator new[](size)`.
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvm(ptr: *mut c_void, size: usize) {
    // SAFETY: the C++ caller's contract.
    unsafe { c_abi::delete_sized(ptr, size) }
}
