//! Statistics: a snapshot assembled on demand from counters that the slow paths keep, and
//! the table printed at exit with `EBBMALLOC_STATS=1`.
//!
//! No counter is touched on the fast path. Live blocks of a class are derived:
//! `blocks out of pools - blocks in transfer caches - blocks in thread caches`, the last
//! summed over the registered threads (their counts are read racily, so a snapshot taken
//! while other threads run is approximate; with the program quiet it is exact).
//!
//! Printing never allocates: lines go through `fatal::print_line`, a fixed buffer on the
//! stack.

use crate::consts::{ARENA_SIZE, PAGE_SIZE};
use crate::fatal::print_line;
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::{arena, central, large, thread_cache, trim};

/// Number of size classes, the length of [`Stats::classes`].
pub const CLASS_COUNT: usize = NUM_CLASSES;

/// Figures of one size class. `#[repr(C)]`: it is also `struct ebbmalloc_class_stats` of
/// the C header (`tests/c_stats_header.rs` checks the two declarations agree).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size of the class in bytes.
    pub block_size: usize,
    /// Blocks held by the program.
    pub live_blocks: usize,
    /// Blocks in thread caches and central transfer caches.
    pub cached_blocks: usize,
    /// Pools serving the class.
    pub pools: usize,
}

/// A snapshot of the allocator's state. Byte figures are from our own accounting of page
/// states; the OS's view (`VmRSS`) also counts code, stacks and other allocators.
///
/// `#[repr(C)]`: the C library hands out this very struct as `struct ebbmalloc_stats`
/// (`capi/include/ebbmalloc.h`; `tests/c_stats_header.rs` checks the two declarations agree).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in blocks held by the program (block sizes, so including rounding; large
    /// blocks count their whole mapping after the header).
    pub allocated_bytes: usize,
    /// Bytes in pools' pages and large mappings in use.
    pub active_bytes: usize,
    /// Bytes that are resident by our accounting: arena headers, pool pages, free pages not
    /// yet released, large mappings (live and cached).
    pub resident_bytes: usize,
    /// Bytes of address space mapped: arenas, reserved arena slots, large mappings.
    pub mapped_bytes: usize,
    /// Mapped bytes given back to the OS (released pages, unused reserved arenas): they
    /// cost address space only.
    pub retained_bytes: usize,
    /// Arenas with every page in pools.
    pub arenas_full: usize,
    /// Arenas with some pages in pools and some free.
    pub arenas_partial: usize,
    /// Arenas with no pool and some free pages still resident.
    pub arenas_empty: usize,
    /// Arenas with no pool whose pages are all released (kept mapped for reuse).
    pub arenas_released: usize,
    /// Bytes in cached large mappings.
    pub large_cached_bytes: usize,
    /// Bytes given back to the OS by trimming since the start.
    pub trimmed_bytes: u64,
    /// Trimming passes since the start.
    pub trim_passes: u64,
    /// Thread caches the trimmer took back from idle (sleeping) threads since the start.
    pub caches_reclaimed: u64,
    /// Per size class, smallest first.
    pub classes: [ClassStats; CLASS_COUNT],
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            allocated_bytes: 0,
            active_bytes: 0,
            resident_bytes: 0,
            mapped_bytes: 0,
            retained_bytes: 0,
            arenas_full: 0,
            arenas_partial: 0,
            arenas_empty: 0,
            arenas_released: 0,
            large_cached_bytes: 0,
            trimmed_bytes: 0,
            trim_passes: 0,
            caches_reclaimed: 0,
            classes: [ClassStats::default(); CLASS_COUNT],
        }
    }
}

/// Takes a snapshot of the statistics. It takes each allocator lock briefly, one at a time.
pub fn stats() -> Stats {
    let mut stats = Stats::default();
    let mut pool_block_bytes = 0;
    for (index, class_stats) in stats.classes.iter_mut().enumerate() {
        let Some(class) = SizeClass::from_index(index) else {
            continue;
        };
        let figures = central::figures(class);
        let in_threads = thread_cache::cached_blocks(class);
        let cached = figures.transfer_blocks + in_threads;
        *class_stats = ClassStats {
            block_size: class.size(),
            live_blocks: figures.blocks_out.saturating_sub(cached),
            cached_blocks: cached,
            pools: figures.pools,
        };
        pool_block_bytes += class_stats.live_blocks * class.size();
    }
    let arenas = arena::figures();
    let (large_mapped, large_cached) = large::mapped_bytes();
    // Read at two moments: a trimming pass in between can make the difference negative.
    let large_live = large_mapped.saturating_sub(large_cached);
    let (passes, trimmed) = trim::totals();
    stats.allocated_bytes = pool_block_bytes + large_live;
    stats.active_bytes = arenas.pool_pages * PAGE_SIZE + large_live;
    stats.resident_bytes = arena::resident_bytes() + large_mapped;
    stats.mapped_bytes = (arenas.mapped + arenas.reserved_unused) * ARENA_SIZE + large_mapped;
    stats.retained_bytes = arenas.released_pages * PAGE_SIZE + arenas.reserved_unused * ARENA_SIZE;
    stats.arenas_full = arenas.full;
    stats.arenas_partial = arenas.partial;
    stats.arenas_empty = arenas.empty;
    stats.arenas_released = arenas.released;
    stats.large_cached_bytes = large_cached;
    stats.trimmed_bytes = trimmed;
    stats.trim_passes = passes;
    stats.caches_reclaimed = thread_cache::caches_reclaimed();
    stats
}

/// Prints the statistics as a table on stderr, without allocating.
pub fn print_stats() {
    let s = stats();
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    print_line(format_args!("ebbmalloc statistics\n"));
    print_line(format_args!(
        "  allocated  {:>12.2} MiB\n",
        mib(s.allocated_bytes)
    ));
    print_line(format_args!(
        "  active     {:>12.2} MiB\n",
        mib(s.active_bytes)
    ));
    print_line(format_args!(
        "  resident   {:>12.2} MiB\n",
        mib(s.resident_bytes)
    ));
    print_line(format_args!(
        "  mapped     {:>12.2} MiB\n",
        mib(s.mapped_bytes)
    ));
    print_line(format_args!(
        "  retained   {:>12.2} MiB\n",
        mib(s.retained_bytes)
    ));
    print_line(format_args!(
        "  arenas     {} full, {} partial, {} empty, {} released\n",
        s.arenas_full, s.arenas_partial, s.arenas_empty, s.arenas_released
    ));
    print_line(format_args!(
        "  large cache {:>11.2} MiB\n",
        mib(s.large_cached_bytes)
    ));
    print_line(format_args!(
        "  trimming   {} passes, {:.2} MiB released, {} idle caches reclaimed\n",
        s.trim_passes,
        s.trimmed_bytes as f64 / (1 << 20) as f64,
        s.caches_reclaimed
    ));
    print_line(format_args!(
        "  {:>8} {:>12} {:>12} {:>8}\n",
        "class", "live", "cached", "pools"
    ));
    for class in s
        .classes
        .iter()
        .filter(|c| c.live_blocks + c.cached_blocks + c.pools > 0)
    {
        print_line(format_args!(
            "  {:>8} {:>12} {:>12} {:>8}\n",
            class.block_size, class.live_blocks, class.cached_blocks, class.pools
        ));
    }
}

/// `atexit` handler for `EBBMALLOC_STATS=1`.
pub(crate) extern "C" fn print_stats_at_exit() {
    print_stats();
}
