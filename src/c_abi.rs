//! The C allocation functions with the semantics glibc documents, as Rust functions. The
//! `capi/` crate exports them under their C names in `libebbmalloc.so` as one-liners; the
//! POSIX details live here, where Rust tests and fuzzers can call them too:
//!
//! - failures return null and set `errno` to `ENOMEM` (`front` does so for every null it
//!   returns; `posix_memalign` returns the error code instead, as POSIX says, and leaves
//!   `errno` alone);
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
use core::ffi::{c_char, c_int, c_void};
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
    // Sizes above `MAX_REQUEST` fail in `front` (out of the table's way); a null from
    // `front` comes with `ENOMEM` in `errno`.
    front::alloc_for_malloc(size) as *mut c_void
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
    front::alloc_zeroed(total, default_align(total)) as *mut c_void
}

/// `free(ptr)`.
///
/// # Safety
/// `ptr` is null or a live block from these functions (anything else is detected where
/// possible and aborts).
#[inline]
pub unsafe fn free(ptr: *mut c_void) {
    // Null is told apart after the test for a small block (see `front::free_unsized`).
    // SAFETY: the caller's promise.
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
    unsafe { front::realloc_unsized(ptr as *mut u8, size, default_align(size)) as *mut c_void }
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
    front::alloc(size, alignment.max(default_align(size))) as *mut c_void
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
        Some(owner @ (Owner::Class(_) | Owner::Large | Owner::Sampled)) => unsafe {
            front::usable_size(block, owner)
        },
        _ => fatal("malloc_usable_size(): invalid pointer", block as usize),
    }
}

/// `ebbmalloc_prof_dump(path)`: writes the heap profile to the file `path` in the text
/// format `pprof` reads (`ebbmalloc::profiling::write_heap_v2`). 0 on success, -1 with
/// `errno` set otherwise. Allocates through this allocator, as any C caller would.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
pub unsafe fn prof_dump(path: *const c_char) -> c_int {
    use std::os::unix::ffi::OsStrExt;
    if path.is_null() {
        crate::os::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller's promise.
    let path = std::ffi::OsStr::from_bytes(unsafe { core::ffi::CStr::from_ptr(path) }.to_bytes());
    let written = std::fs::File::create(path).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        crate::profiling::write_heap_v2(&mut out)?;
        std::io::Write::flush(&mut out)
    });
    match written {
        Ok(()) => 0,
        Err(error) => {
            crate::os::set_errno(error.raw_os_error().unwrap_or(libc::EIO));
            -1
        }
    }
}

/// `ebbmalloc_prof_set_active(active)`: switches heap profiling on (non-zero) or off
/// (`ebbmalloc::profiling::set_active`).
pub fn prof_set_active(active: c_int) {
    crate::profiling::set_active(active != 0);
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

/// C++'s sized `operator delete(void *, std::size_t)` (and `delete[]`): the size is the one
/// given to `operator new`, which took the block from `malloc(size)`, so the block's class
/// follows from it as in Rust's `dealloc`, without the lookup of an unsized `free`. A wrong
/// size is the program's bug, as in Rust: the default build trusts it (the block joins the
/// class of that size), the hardened build checks it and aborts with `invalid free`.
///
/// # Safety
/// `ptr` is null or a live block from `malloc(size)` (or `operator new(size)`).
#[inline]
pub unsafe fn delete_sized(ptr: *mut c_void, size: usize) {
    if ptr.is_null() {
        return;
    }
    let size = size.max(1);
    // SAFETY: the caller's promise: the block came from `malloc(size)`, which asked the
    // front for this size and alignment.
    unsafe { front::dealloc(ptr as *mut u8, size, default_align(size)) }
}

/// glibc's `struct mallinfo2`: the heap's figures in glibc's terms, from [`crate::stats`].
/// What each field holds here:
///
/// | field | ebbmalloc |
/// |---|---|
/// | `arena` | bytes of address space mapped for small blocks (arenas, reserved ones included) |
/// | `ordblks` | free small blocks held in caches (thread and transfer caches) |
/// | `smblks`, `fsmblks`, `usmblks` | 0 (no fastbins; glibc keeps `usmblks` 0 too) |
/// | `hblks` | 0 (large blocks are not counted one by one) |
/// | `hblkhd` | bytes in live large blocks (mappings of their own) |
/// | `uordblks` | bytes in live small blocks (block sizes) |
/// | `fordblks` | bytes in the free small blocks of `ordblks` |
/// | `keepcost` | resident bytes not in use that `malloc_trim` can give back |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallInfo2 {
    /// See the table above.
    pub arena: usize,
    /// See the table above.
    pub ordblks: usize,
    /// See the table above.
    pub smblks: usize,
    /// See the table above.
    pub hblks: usize,
    /// See the table above.
    pub hblkhd: usize,
    /// See the table above.
    pub usmblks: usize,
    /// See the table above.
    pub fsmblks: usize,
    /// See the table above.
    pub uordblks: usize,
    /// See the table above.
    pub fordblks: usize,
    /// See the table above.
    pub keepcost: usize,
}

/// glibc's older `struct mallinfo`: [`MallInfo2`] in `int`s, each saturated at `INT_MAX`
/// (glibc's own wraps around above 2 GiB, the reason `mallinfo2` exists).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallInfo {
    /// See [`MallInfo2`].
    pub arena: c_int,
    /// See [`MallInfo2`].
    pub ordblks: c_int,
    /// See [`MallInfo2`].
    pub smblks: c_int,
    /// See [`MallInfo2`].
    pub hblks: c_int,
    /// See [`MallInfo2`].
    pub hblkhd: c_int,
    /// See [`MallInfo2`].
    pub usmblks: c_int,
    /// See [`MallInfo2`].
    pub fsmblks: c_int,
    /// See [`MallInfo2`].
    pub uordblks: c_int,
    /// See [`MallInfo2`].
    pub fordblks: c_int,
    /// See [`MallInfo2`].
    pub keepcost: c_int,
}

/// `mallinfo2()`.
pub fn mallinfo2() -> MallInfo2 {
    mallinfo2_of(&crate::stats())
}

/// [`MallInfo2`] of a statistics snapshot.
pub fn mallinfo2_of(stats: &crate::Stats) -> MallInfo2 {
    let sum = |f: fn(&crate::ClassStats) -> usize| stats.classes.iter().map(f).sum::<usize>();
    let small_live = sum(|c| c.live_blocks * c.block_size);
    let large_live = stats.allocated_bytes.saturating_sub(small_live);
    MallInfo2 {
        arena: stats
            .mapped_bytes
            .saturating_sub(large_live + stats.large_cached_bytes),
        ordblks: sum(|c| c.cached_blocks),
        hblkhd: large_live,
        uordblks: small_live,
        fordblks: sum(|c| c.cached_blocks * c.block_size),
        keepcost: stats.resident_bytes.saturating_sub(stats.active_bytes),
        ..MallInfo2::default()
    }
}

/// `mallinfo()`.
pub fn mallinfo() -> MallInfo {
    let info = mallinfo2();
    let int = |n: usize| n.min(c_int::MAX as usize) as c_int;
    MallInfo {
        arena: int(info.arena),
        ordblks: int(info.ordblks),
        smblks: int(info.smblks),
        hblks: int(info.hblks),
        hblkhd: int(info.hblkhd),
        usmblks: int(info.usmblks),
        fsmblks: int(info.fsmblks),
        uordblks: int(info.uordblks),
        fordblks: int(info.fordblks),
        keepcost: int(info.keepcost),
    }
}

/// `mallopt(param, value)`: accepted and ignored, returning 1 (success) for every
/// parameter. glibc's knobs tune glibc's heap: `M_MMAP_THRESHOLD` (ebbmalloc's threshold for
/// a mapping of its own is fixed, 128 KiB), `M_TRIM_THRESHOLD` and `M_TOP_PAD` (ebbmalloc
/// gives memory back by decay, `EBBMALLOC_DECAY_MS`), `M_ARENA_MAX` (ebbmalloc's arenas are
/// not per thread), `M_PERTURB`, `M_CHECK_ACTION` (misuse always aborts; see the
/// `hardened` feature). Refusing them would make programs that set them at start-up fail.
pub fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// `malloc_stats()`: ebbmalloc's statistics table on stderr (glibc prints its own
/// per-arena figures there).
pub fn malloc_stats() {
    crate::print_stats();
}

/// `malloc_info(options, stream)`: the figures as XML on `stream`, in glibc's shape
/// (`<malloc>`, a `<heap>` with the free blocks by size, totals, system and address-space
/// sizes), with ebbmalloc's figures. 0 on success; -1 with `EINVAL` for `options != 0`, as
/// glibc.
///
/// # Safety
/// `stream` is a valid C `FILE *`.
pub unsafe fn malloc_info(options: c_int, stream: *mut c_void) -> c_int {
    if options != 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    let stats = crate::stats();
    let info = mallinfo2_of(&stats);
    // SAFETY: the caller's promise.
    let line = |args: core::fmt::Arguments<'_>| unsafe {
        crate::fatal::write_line_with(args, |bytes| crate::os::write_to_stream(stream, bytes))
    };
    line(format_args!(
        "<malloc version=\"ebbmalloc-1\">\n<heap nr=\"0\">\n<sizes>\n"
    ));
    for class in stats.classes.iter().filter(|c| c.cached_blocks > 0) {
        line(format_args!(
            "  <size from=\"{0}\" to=\"{0}\" total=\"{1}\" count=\"{2}\"/>\n",
            class.block_size,
            class.block_size * class.cached_blocks,
            class.cached_blocks
        ));
    }
    line(format_args!("</sizes>\n"));
    // The free-block totals and the system sizes stand in the heap and again for the
    // whole allocator, as in glibc's output (one heap here).
    let free_totals = || {
        line(format_args!(
            "<total type=\"fast\" count=\"0\" size=\"0\"/>\n\
             <total type=\"rest\" count=\"{}\" size=\"{}\"/>\n",
            info.ordblks, info.fordblks
        ))
    };
    let system_sizes = |address_space: usize, closing_tag: &str| {
        line(format_args!(
            "<system type=\"current\" size=\"{0}\"/>\n<system type=\"max\" size=\"{0}\"/>\n\
             <aspace type=\"total\" size=\"{1}\"/>\n<aspace type=\"mprotect\" size=\"{1}\"/>\n\
             {2}\n",
            stats.resident_bytes, address_space, closing_tag
        ))
    };
    free_totals();
    system_sizes(info.arena, "</heap>");
    free_totals();
    line(format_args!(
        "<total type=\"mmap\" count=\"{}\" size=\"{}\"/>\n",
        info.hblks, info.hblkhd
    ));
    system_sizes(stats.mapped_bytes, "</malloc>");
    0
}

/// For the shared library's constructor: the dynamic loader is done, a background thread
/// may now be started.
pub fn library_loaded() {
    front::allow_background_thread();
}
