//! ebbmalloc: a thread-caching memory allocator whose footprint shrinks back when the
//! program frees memory.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 999 * 1000 / 2);
//! ```
//!
//! # Glossary
//!
//! - **OS page**: 4 KiB, the unit in which memory is mapped, released and accounted.
//! - **arena**: 256 KiB of address space aligned to 256 KiB; page 0 is its header, page 1
//!   its out-block bitmap, the other 62 pages are carved into pools (`layout.rs`).
//!   `block & ARENA_MASK` is the arena of any small block.
//! - **size class**: one of 51 block sizes from 16 B to 128 KiB (`size_class.rs`).
//! - **pool**: a run of whole pages in one arena that serves blocks of one size class.
//! - **block**: what `alloc` returns; a free block's first word links it into a list, its
//!   second holds the double-free mark (`block.rs`).
//! - **batch**: a list of free blocks of one class moved between a thread cache and the
//!   central list as one unit.
//! - **thread cache**: per thread and class, a LIFO of free blocks: the fast path.
//! - **central list**: per class, a transfer cache of batches and the class's partial pools.
//! - **large block**: above 128 KiB (or aligned beyond it): a mapping of its own.
//!
//! # Layers
//!
//! Each module uses only modules on rows below its own (`tests/layers.rs` reads every
//! `crate::` path in `src/` and fails on an edge that runs sideways or up this table; the
//! loom models, a test harness, may reach anywhere). Where a lower layer needs something
//! of a higher one, the higher one passes it down: the front hands the thread cache
//! `lifecycle::register_thread` as a parameter, the trimmer keeps the epoch the caches read.
//!
//! ```text
//! lib.rs, c_exports.rs  the Rust API (GlobalAlloc, trim, stats); the exported C symbols
//! c_abi.rs              C semantics over the front: errno, malloc's alignment, overflow checks
//! front.rs              size -> class; small -> thread cache, large -> large; free/realloc by lookup
//! lifecycle.rs          process set-up, thread exit, fork: the one place that knows every lock
//! stats.rs              statistics, assembled from every layer below
//! profiling.rs          the heap profiler: sampling path, stack table, sampled blocks
//! unwind.rs             the profiler's stack walker: cached unwind rules per return address
//! thread_cache.rs       per thread, per class LIFO; batches in and out
//! trim.rs               the trimming pass, the background thread, the slow-path ticker
//! central.rs            per class: transfer cache of batches, pools binned by fullness
//! arena.rs              256 KiB arenas, page runs, occupancy-ordered lists
//! pool.rs               a pool's blocks: free list, lazy carving, out bits
//! block.rs              free-block links, batches, the double-free mark
//! hardened.rs           (feature `hardened`) link encoding, live bits, fill, shuffling
//! layout.rs             where things are in an arena: page map, out-block bitmap
//! large.rs              mappings of their own, mapping cache, mremap
//! chunk_map.rs          which 256 KiB chunks of the address space hold a header of ours
//! config.rs             the EBBMALLOC_* settings, declared once
//! size_class.rs         the size classes and their lookup
//! list.rs               the one intrusive list (arenas, pools' fullness bins, thread caches)
//! sanitizer.rs, tls.rs  what ASan and memcheck are told; where each thread's cache lives
//! sync.rs               atomics, locks, the futex event
//! fatal.rs              stderr without allocating; abort on misuse
//! os.rs                 every system call, named by intent
//! consts.rs             the numbers every layer shares
//! ```
//!
//! # Rules of the house
//!
//! Nothing in this crate allocates through the global allocator, panics inside an
//! allocation function, or formats into a `String`: it *is* the global allocator. Misuse
//! that is detected (a pointer that is not a block of ours, a double free) ends the process
//! with a message on stderr (`ebbmalloc: invalid free of 0x...`, `ebbmalloc: double free of
//! 0x...`). The default build catches a double free at the second free by the block's
//! double-free mark (`block.rs`) and other misuse when blocks go back to their pools; the
//! `hardened` feature checks every free against a live bit (see `hardened.rs`).

#![warn(missing_docs)]
// Under loom the process hooks (thread exit, fork, the background thread) are not
// installed, so what only they reach is unused there.
#![cfg_attr(loom, allow(dead_code))]

// Linux only, said in one message ahead of whatever else then fails to resolve. Within
// Linux, x86_64 reaches the thread cache through an initial-exec TLS block written in
// assembly and other architectures through a `thread_local!` (`tls.rs`); building with
// `--cfg ebbmalloc_portable_tls` selects the `thread_local!` on x86_64 too, which is how CI
// tests it.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "ebbmalloc supports Linux only: it needs futex, mremap, madvise(MADV_FREE), pthread key \
     destructors, __errno_location and getauxval(AT_RANDOM), which other systems lack or \
     spell differently. All system calls live in src/os.rs: porting ebbmalloc means giving \
     os.rs another implementation."
);

mod arena;
mod block;
pub mod c_abi;
#[cfg(feature = "preload")]
mod c_exports;
mod central;
mod chunk_map;
mod config;
mod consts;
mod fatal;
mod front;
#[cfg(feature = "hardened")]
mod hardened;
mod large;
mod layout;
mod lifecycle;
mod list;
#[cfg(all(test, loom))]
mod loom_models;
mod os;
mod pool;
pub mod profiling;
mod sanitizer;
mod size_class;
mod stats;
mod sync;
mod thread_cache;
mod tls;
mod trim;
mod unwind;

pub use config::{Purge, SettingInfo, Settings, SETTINGS};

/// Whether this build is hardened (cargo feature `hardened`): free-list links encoded with
/// a per-process random key and checked, a double-free check on every free, freed memory
/// filled, fresh pools carved in random order, guard pages around large blocks. See the
/// docs/hardening.md.
pub const HARDENED: bool = cfg!(feature = "hardened");
pub use stats::{print_stats, stats, ClassStats, Stats, CLASS_COUNT};

use core::alloc::{GlobalAlloc, Layout};

/// Gives idle memory back to the OS now: flushes the calling thread's cache and the central
/// transfer caches, releases every free page (`madvise`), unmaps empty arenas beyond the
/// retained reserve and the cached large mappings. Returns the bytes given back.
///
/// Other threads' caches give back their idle blocks on their next slow path.
pub fn trim() -> usize {
    front::trim_now()
}

/// Puts `settings` in force; see [`SETTINGS`] for what each does. Settings changed this
/// way win over the `EBBMALLOC_*` environment variables, also when made before the first
/// allocation. `thread_cache_bytes` applies to threads whose cache is set up afterwards.
pub fn configure(settings: &Settings) {
    settings.apply();
}

/// The ebbmalloc allocator. It has no state of its own: every value is the same process-wide
/// allocator, so it can be the `#[global_allocator]` or be called directly.
#[derive(Clone, Copy, Debug, Default)]
pub struct EbbMalloc;

// SAFETY: blocks are at least `layout.size()` bytes, aligned to `layout.align()`, and stay
// valid until freed; the allocator never unwinds.
unsafe impl GlobalAlloc for EbbMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        front::alloc(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's `GlobalAlloc` contract.
        unsafe { front::dealloc(ptr, layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        front::alloc_zeroed(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's `GlobalAlloc` contract.
        unsafe { front::realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
