//! Arenas: 256 KiB, 256 KiB-aligned pieces of address space that pools are carved from.
//!
//! Layout of an arena (`layout.rs`): page 0 is the header ([`Arena`], which starts with the
//! page map), page 1 the out-block bitmap, pages `2..64` are handed out as page runs, one
//! run per pool. Because arenas are aligned to their size, the arena of any block is
//! `block & ARENA_MASK`, and from the header the block's page leads to its pool in two
//! loads (the page map's `pool_start`, then `pools`): no global table, no lock.
//!
//! Header fields and who guards them:
//!
//! | field                  | guard                                                  |
//! |------------------------|--------------------------------------------------------|
//! | `free_pages`, `list`, `links` | the arena lock                                    |
//! | `map` (page -> pool)   | atomic; written under the arena lock when a page joins or leaves a pool; read anywhere |
//! | `pools[s]`             | the central lock of the pool's class (see `pool.rs`)   |
//!
//! A page of an arena is in one of three states:
//!
//! - **in a pool**;
//! - **free and dirty**: in no pool but resident; `freed_at_ms[p]` says since when;
//! - **free and released**: in no pool and given back to the OS (`released_pages`). Fresh
//!   arenas start with every page released: they were never touched.
//!
//! **The occupancy count is the bitmap.** An arena's occupancy (pages in pools) is
//! `USABLE_PAGES - popcount(free_pages)`: one instruction, always exact, under the lock that
//! every reader of arena order holds anyway. So there is no separate occupancy counter (an
//! earlier one was written on every carve and release and read only by tests); arena order
//! is the list an arena sits in (`by_free_pages[popcount(free_pages)]`), and "this arena
//! just became empty" is `free_pages == all usable pages`, seen by `release_pool` and the
//! trimmer under the lock. Readers without the lock (statistics, the background thread's
//! "anything to do?") use the global counters below, which are sums over arenas.
//!
//! Invariants (under the arena lock): `released_pages ⊆ free_pages`; the header pages' bits of either are never set; an arena is in exactly the
//! occupancy list `popcount(free_pages)` (a full arena, with no free page, is in none); the
//! global counters are the sums of the per-arena figures over mapped arenas.
//!
//! **Occupancy ordering** (Evan Jones' fix to CPython's obmalloc): new pools are carved from
//! the arena with the fewest free pages that has a fitting run. The most used arenas fill
//! up; the least used drain and become empty. **Trimming** ([`trim`]) then releases dirty
//! pages that stayed free longer than the decay time and unmaps empty arenas beyond a small
//! retained reserve; it runs from `trim.rs`, never from the allocation paths.

use crate::chunk_map::{self, ChunkKind};
use crate::consts::{
    ARENAS_PER_RESERVATION, ARENA_SIZE, HEADER_PAGES, PAGES_PER_ARENA, PAGE_SIZE, USABLE_PAGES,
};
use crate::fatal::fatal;
use crate::layout::{self, PageMap};
use crate::list::{Linked, Links, List};
use crate::os;
use crate::pool::Pool;
use crate::size_class::SizeClass;
use crate::sync::{model_static, AtomicUsize, Mutex, Ordering, RawMutex, MEMORY_FREED};
use core::ptr;

/// `list` of an arena that is in no occupancy list (full).
const NOT_LISTED: u8 = u8::MAX;

/// The header page of an arena.
#[repr(C)]
pub(crate) struct Arena {
    /// Page -> pool and class (`layout.rs`): what a block's address leads to.
    map: PageMap,
    list: u8,
    /// Bit `p` set: page `p` is in no pool.
    free_pages: u64,
    /// Bit `p` set: page `p` is free and its memory was given back to the OS.
    released_pages: u64,
    /// For a free dirty page: when it became free (`os::now_ms`).
    freed_at_ms: [u32; PAGES_PER_ARENA],
    /// Its place in the list of its free page count.
    links: Links<Arena>,
    /// Pool descriptors, indexed by the pool's first page.
    pools: [Pool; PAGES_PER_ARENA],
}

const _: () = assert!(core::mem::size_of::<Arena>() <= PAGE_SIZE);

// SAFETY: `links` is a field of the node itself.
unsafe impl Linked for Arena {
    fn links(node: *mut Arena) -> *mut Links<Arena> {
        // SAFETY: a field address of the node, computed without reading it.
        unsafe { ptr::addr_of_mut!((*node).links) }
    }
}

/// The arenas with free pages, by number of free pages, and where new arenas come from.
struct ArenaLists {
    /// `by_free_pages[n]`: arenas with exactly `n` free pages (`n == USABLE_PAGES`: empty).
    by_free_pages: [List<Arena>; PAGES_PER_ARENA],
    /// Bit `n` set: `by_free_pages[n]` is not empty.
    nonempty: u64,
    /// Unused arenas of the last reservation.
    reserve_next: *mut u8,
    reserve_left: usize,
}

/// The arena registry. The counters are written under the lock and read without it.
struct Arenas {
    lists: Mutex<ArenaLists>,
    /// Arenas mapped (reserved slots not yet used are not counted).
    mapped: AtomicUsize,
    /// Arenas in the empty list.
    empty: AtomicUsize,
    /// Pages in pools, over all arenas.
    pool_pages: AtomicUsize,
    /// Free pages still resident, over all arenas.
    dirty_pages: AtomicUsize,
    /// Free pages given back to the OS, over all mapped arenas.
    released_pages: AtomicUsize,
}

// SAFETY: the lists point to arena headers, memory of ours that any thread may touch
// under the arena lock; nothing in them belongs to a thread.
unsafe impl Send for ArenaLists {}

model_static! {
    static ARENAS: Arenas = Arenas {
        lists: Mutex::new(ArenaLists {
            by_free_pages: [const { List::new() }; PAGES_PER_ARENA],
            nonempty: 0,
            reserve_next: ptr::null_mut(),
            reserve_left: 0,
        }),
        mapped: AtomicUsize::new(0),
        empty: AtomicUsize::new(0),
        pool_pages: AtomicUsize::new(0),
        dirty_pages: AtomicUsize::new(0),
        released_pages: AtomicUsize::new(0),
    };
}

/// Pages of `arena` in pools (its occupancy), for tests.
///
/// # Safety
/// `arena` is a live arena; the caller holds a lock that keeps its pools as they are.
#[cfg(test)]
pub(crate) unsafe fn pages_in_pools(arena: *mut Arena) -> usize {
    // SAFETY: by the caller's promise.
    USABLE_PAGES - unsafe { (*arena).free_pages }.count_ones() as usize
}

/// The arena header of a block that lies in an arena (its page map is its first field).
#[inline(always)]
pub(crate) fn arena_of(block: *mut u8) -> *mut Arena {
    layout::arena_of(block).cast()
}

/// The pool that serves `block`, after checking that `block` lies in a page of an arena
/// that is in a pool of `class`, at a multiple of the granule. Aborts with `double free`
/// for a page in no pool (its blocks all came back already) and `invalid free` otherwise
/// (also for a pointer outside our arenas, which a Rust `dealloc` with a foreign pointer
/// brings here: the chunk map is asked before any header is read). Whether `block` starts
/// a carved block is left to [`Pool::put`]'s test of its out bit, which is set only at the
/// start of a carved block that is out (default builds; hardened builds, whose bits mean
/// *live*, check the block's offset here). That saves the offset's division by the block
/// size on every block a flush returns to its pool: a sixth of the instructions of
/// `return_to_pools`, the path of every block of a dropped `HashMap`.
///
/// # Safety
/// The caller holds the central lock of `class`.
#[inline]
pub(crate) unsafe fn pool_of(block: *mut u8, class: SizeClass) -> *mut Pool {
    let arena = arena_of(block);
    let page = layout::page_of(block);
    // SAFETY: the chunk map says the chunk is a live arena; `page < PAGES_PER_ARENA`. An
    // arena with a block out is not unmapped.
    unsafe {
        if !chunk_map::is_arena(arena as usize) || page < HEADER_PAGES {
            fatal("invalid free of", block as usize);
        }
        let start = (*arena).map.pool_start(page);
        if start == 0 {
            // A page of ours in no pool: its blocks all came back already.
            fatal("double free of", block as usize);
        }
        let pool = pool_at(arena, start);
        #[cfg(not(feature = "hardened"))]
        let starts_block = block as usize % crate::consts::GRANULE == 0;
        #[cfg(feature = "hardened")]
        let starts_block =
            (*pool).is_carved_block(block as usize, arena as usize + start * PAGE_SIZE);
        if (*pool).class() != class || !starts_block {
            fatal("invalid free of", block as usize);
        }
        pool
    }
}

/// The descriptor of the pool starting at page `start` of `arena`.
///
/// # Safety
/// `arena` is a live arena header and `start < PAGES_PER_ARENA`.
unsafe fn pool_at(arena: *mut Arena, start: usize) -> *mut Pool {
    // SAFETY: in bounds of the header's `pools` array by the caller's promise.
    unsafe { ptr::addr_of_mut!((*arena).pools).cast::<Pool>().add(start) }
}

/// Carves a pool for `class` from the most occupied arena that has a fitting page run,
/// mapping a new arena if none has. Returns null when the OS refuses memory.
///
/// # Safety
/// The caller holds the central lock of `class` (the new descriptor is guarded by it).
pub(crate) unsafe fn carve_pool(class: SizeClass) -> *mut Pool {
    let info = class.info();
    let pages = info.pool_pages as usize;
    let align = info.pool_align_pages as usize;
    let mut lists = ARENAS.lists.lock();
    // Lists of arenas with at least `pages` free pages, fewest free pages first.
    let mut candidates = lists.nonempty & !((1u64 << pages) - 1);
    while candidates != 0 {
        let count = candidates.trailing_zeros() as usize;
        candidates &= candidates - 1;
        // SAFETY: arenas in the lists are live headers, guarded by the lock we hold.
        unsafe {
            let fitting = lists.by_free_pages[count]
                .iter()
                .find_map(|arena| Some((arena, find_free_run((*arena).free_pages, pages, align)?)));
            if let Some((arena, start)) = fitting {
                return lists.take_pages(arena, start, class);
            }
        }
    }
    let arena = lists.new_arena();
    if arena.is_null() {
        return ptr::null_mut();
    }
    let start = find_free_run(free_pages_of_new_arena(), pages, align);
    match start {
        // SAFETY: a new arena is a live header, not yet in any list.
        Some(start) => unsafe { lists.take_pages(arena, start, class) },
        None => fatal(
            "size class pool does not fit an arena, class size",
            class.size(),
        ),
    }
}

/// Gives the pages of an emptied pool back to its arena, as free dirty pages: they stay
/// resident until trimming releases them, so a pool carved again soon costs no page fault.
///
/// # Safety
/// The caller holds the central lock of the pool's class, the pool has no block out and
/// is in no fullness bin; the descriptor is dead after this call.
pub(crate) unsafe fn release_pool(pool: *mut Pool) {
    let arena = arena_of(pool as *mut u8);
    let now = os::now_ms();
    {
        let mut lists = ARENAS.lists.lock();
        // SAFETY: we hold the arena lock; the arena is live because the pool was.
        unsafe {
            let (start, pages) = (*pool).page_run();
            lists.unlink(arena);
            (*arena).free_pages |= run_mask(start, pages);
            (&mut (*arena).freed_at_ms)[start..start + pages].fill(now);
            (*arena).map.clear_pool(start, pages);
            ARENAS.pool_pages.fetch_sub(pages, Ordering::Relaxed);
            ARENAS.dirty_pages.fetch_add(pages, Ordering::Relaxed);
            lists.link(arena);
        }
    }
    MEMORY_FREED.notify();
}

/// Figures about the arenas, for the statistics.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct ArenaFigures {
    pub(crate) mapped: usize,
    pub(crate) full: usize,
    pub(crate) partial: usize,
    /// Empty arenas with some resident free page.
    pub(crate) empty: usize,
    /// Empty arenas whose pages are all released.
    pub(crate) released: usize,
    pub(crate) pool_pages: usize,
    pub(crate) released_pages: usize,
    /// Arena slots reserved from the OS but not used yet.
    pub(crate) reserved_unused: usize,
}

/// Counts arenas by state (walks the lists under the arena lock).
pub(crate) fn figures() -> ArenaFigures {
    let lists = ARENAS.lists.lock();
    let mut figures = ArenaFigures {
        mapped: ARENAS.mapped.load(Ordering::Relaxed),
        pool_pages: ARENAS.pool_pages.load(Ordering::Relaxed),
        released_pages: ARENAS.released_pages.load(Ordering::Relaxed),
        reserved_unused: lists.reserve_left,
        ..ArenaFigures::default()
    };
    let mut listed = 0;
    for free in 1..PAGES_PER_ARENA {
        // SAFETY: listed arenas are live; we hold the lock.
        for arena in unsafe { lists.by_free_pages[free].iter() } {
            listed += 1;
            if free < USABLE_PAGES {
                figures.partial += 1;
            // SAFETY: as above.
            } else if unsafe { (*arena).released_pages == (*arena).free_pages } {
                figures.released += 1;
            } else {
                figures.empty += 1;
            }
        }
    }
    figures.full = figures.mapped - listed;
    figures
}

/// Bytes resident in arenas by our accounting: header pages, pool pages and dirty pages.
pub(crate) fn resident_bytes() -> usize {
    (ARENAS.mapped.load(Ordering::Relaxed) * HEADER_PAGES
        + ARENAS.pool_pages.load(Ordering::Relaxed)
        + ARENAS.dirty_pages.load(Ordering::Relaxed))
        * PAGE_SIZE
}

/// Whether any free page is still resident (there is trimming to do).
pub(crate) fn has_dirty_pages() -> bool {
    ARENAS.dirty_pages.load(Ordering::Relaxed) > 0
}

/// Arenas unmapped by one lock hold of [`trim`] before the lock is dropped to unmap them.
const UNMAP_BATCH: usize = 32;
/// Pages released by one lock hold of [`trim`] before the lock is dropped for others.
const RELEASE_PAGES_PER_HOLD: usize = 4096;

/// Releases free pages that have been dirty for at least `decay_ms` (all of them when
/// `decay_ms == 0`), and unmaps empty arenas, beyond the first `retained` of them, whose
/// pages have all expired. Returns the bytes given back to the OS.
///
/// The arena lock is dropped every [`RELEASE_PAGES_PER_HOLD`] pages and to unmap, so
/// allocating threads wait at most for a bounded piece of work.
pub(crate) fn trim(now_ms: u32, decay_ms: u32, retained: usize, how: os::Purge) -> usize {
    let mut released_bytes = 0;
    loop {
        let mut to_unmap = [ptr::null_mut::<Arena>(); UNMAP_BATCH];
        let mut unmap_count = 0;
        let mut pages_left = RELEASE_PAGES_PER_HOLD;
        let mut finished = true;
        {
            let mut lists = ARENAS.lists.lock();
            // Listed arenas are live.
            let mut nonempty = lists.nonempty;
            'lists: while nonempty != 0 {
                let free = nonempty.trailing_zeros() as usize;
                nonempty &= nonempty - 1;
                let mut arena = lists.by_free_pages[free].first();
                while !arena.is_null() {
                    // SAFETY: as above. Read before `arena` may leave the list.
                    let next = unsafe { List::next(arena) };
                    // SAFETY: as above.
                    let expired = unsafe { expired_pages(arena, now_ms, decay_ms) };
                    // SAFETY: as above.
                    let dirty = unsafe { (*arena).free_pages & !(*arena).released_pages };
                    let is_empty = free == USABLE_PAGES;
                    if is_empty
                        && expired == dirty
                        && ARENAS.empty.load(Ordering::Relaxed) > retained
                    {
                        // SAFETY: as above; the arena leaves every list and its pages are
                        // uncounted before it is unmapped outside the lock.
                        unsafe {
                            lists.unlink(arena);
                            forget_arena(arena);
                        }
                        released_bytes += (dirty.count_ones() as usize + HEADER_PAGES) * PAGE_SIZE;
                        to_unmap[unmap_count] = arena;
                        unmap_count += 1;
                    } else if expired != 0 {
                        // SAFETY: as above; expired pages are free and unused.
                        let pages = unsafe { release_free_pages(arena, expired, how) };
                        released_bytes += pages * PAGE_SIZE;
                        pages_left = pages_left.saturating_sub(pages);
                    }
                    if unmap_count == UNMAP_BATCH || pages_left == 0 {
                        finished = false;
                        break 'lists;
                    }
                    arena = next;
                }
            }
        }
        for &arena in &to_unmap[..unmap_count] {
            // SAFETY: the arena left the registry under the lock; nothing refers to it.
            unsafe { os::unmap(arena as *mut u8, ARENA_SIZE) };
        }
        if finished {
            return released_bytes;
        }
    }
}

/// Free dirty pages of `arena` that became free at least `decay_ms` before `now_ms`.
///
/// # Safety
/// The arena lock is held and `arena` is live.
unsafe fn expired_pages(arena: *mut Arena, now_ms: u32, decay_ms: u32) -> u64 {
    // SAFETY: by the caller's promises.
    let (mut dirty, freed_at) = unsafe {
        (
            (*arena).free_pages & !(*arena).released_pages,
            &(*arena).freed_at_ms,
        )
    };
    if decay_ms == 0 {
        return dirty;
    }
    let mut expired = 0;
    while dirty != 0 {
        let page = dirty.trailing_zeros() as usize;
        dirty &= dirty - 1;
        if has_decayed(now_ms, freed_at[page], decay_ms) {
            expired |= 1 << page;
        }
    }
    expired
}

/// Whether a page freed at `freed_at_ms` has stayed free for `decay_ms` at `now_ms`.
///
/// A pass reads the clock once, before it starts, and a pool released since then stamps
/// its pages later than `now_ms`: such a page has a negative age (the wrapping difference
/// read signed), not one of 49 days.
fn has_decayed(now_ms: u32, freed_at_ms: u32, decay_ms: u32) -> bool {
    let age_ms = now_ms.wrapping_sub(freed_at_ms) as i32;
    age_ms >= 0 && age_ms as u32 >= decay_ms
}

/// Gives the pages in `pages` (free and dirty) back to the OS, run by run; returns how many.
///
/// # Safety
/// The arena lock is held, `arena` is live and `pages` are free dirty pages of it.
unsafe fn release_free_pages(arena: *mut Arena, pages: u64, how: os::Purge) -> usize {
    let mut left = pages;
    while left != 0 {
        let start = left.trailing_zeros() as usize;
        let len = (!(left >> start)).trailing_zeros() as usize;
        // SAFETY: the run lies inside the arena and its pages are free (caller).
        unsafe {
            os::release_pages(
                (arena as *mut u8).add(start * PAGE_SIZE),
                len * PAGE_SIZE,
                how,
            )
        };
        left &= !run_mask(start, len);
    }
    let count = pages.count_ones() as usize;
    // SAFETY: by the caller's promises.
    unsafe { (*arena).released_pages |= pages };
    ARENAS.dirty_pages.fetch_sub(count, Ordering::Relaxed);
    ARENAS.released_pages.fetch_add(count, Ordering::Relaxed);
    count
}

/// Takes an empty arena that left the lists out of the global counters before unmapping.
///
/// # Safety
/// The arena lock is held; `arena` is live, empty and in no list.
unsafe fn forget_arena(arena: *mut Arena) {
    // SAFETY: by the caller's promises.
    let (free, released) = unsafe { ((*arena).free_pages, (*arena).released_pages) };
    let released_count = released.count_ones() as usize;
    ARENAS
        .released_pages
        .fetch_sub(released_count, Ordering::Relaxed);
    ARENAS.dirty_pages.fetch_sub(
        free.count_ones() as usize - released_count,
        Ordering::Relaxed,
    );
    ARENAS.mapped.fetch_sub(1, Ordering::Relaxed);
    chunk_map::remove(arena as usize);
}

/// The arena lock, for the fork handlers (`lifecycle.rs`).
pub(crate) fn lock_for_fork() -> &'static RawMutex {
    ARENAS.lists.raw()
}

impl ArenaLists {
    /// Marks `pages` pages at `start` as a pool of `class` and sets the pool up.
    ///
    /// # Safety
    /// The arena lock is held, `arena` is live and the run is free.
    unsafe fn take_pages(
        &mut self,
        arena: *mut Arena,
        start: usize,
        class: SizeClass,
    ) -> *mut Pool {
        let pages = class.info().pool_pages as usize;
        // SAFETY: by the caller's promises; page indices are below PAGES_PER_ARENA.
        unsafe {
            self.unlink(arena);
            let run = run_mask(start, pages);
            let released = ((*arena).released_pages & run).count_ones() as usize;
            (*arena).free_pages &= !run;
            (*arena).released_pages &= !run;
            ARENAS.pool_pages.fetch_add(pages, Ordering::Relaxed);
            ARENAS.released_pages.fetch_sub(released, Ordering::Relaxed);
            ARENAS
                .dirty_pages
                .fetch_sub(pages - released, Ordering::Relaxed);
            (*arena).map.set_pool(start, pages, class);
            self.link(arena);
            let pool = pool_at(arena, start);
            let pool_start = (arena as *mut u8).add(start * PAGE_SIZE);
            (*pool).init(class, pool_start, start as u8);
            pool
        }
    }

    /// Puts `arena` into the list of its free page count (none when full).
    ///
    /// # Safety
    /// The arena lock is held and `arena` is live and in no list.
    unsafe fn link(&mut self, arena: *mut Arena) {
        // SAFETY: by the caller's promises.
        unsafe {
            let free = (*arena).free_pages.count_ones() as usize;
            if free == 0 {
                (*arena).list = NOT_LISTED;
                return;
            }
            if free == USABLE_PAGES {
                ARENAS.empty.fetch_add(1, Ordering::Relaxed);
            }
            self.by_free_pages[free].push_front(arena);
            self.nonempty |= 1 << free;
            (*arena).list = free as u8;
        }
    }

    /// Takes `arena` out of its list, if it is in one.
    ///
    /// # Safety
    /// The arena lock is held and `arena` is live.
    unsafe fn unlink(&mut self, arena: *mut Arena) {
        // SAFETY: by the caller's promises; list neighbours are live arenas.
        unsafe {
            let list = (*arena).list;
            if list == NOT_LISTED {
                return;
            }
            let list = list as usize;
            if list == USABLE_PAGES {
                ARENAS.empty.fetch_sub(1, Ordering::Relaxed);
            }
            self.by_free_pages[list].remove(arena);
            if self.by_free_pages[list].is_empty() {
                self.nonempty &= !(1 << list);
            }
            (*arena).list = NOT_LISTED;
        }
    }

    /// A new empty arena, in no list, from the current reservation or a new one.
    fn new_arena(&mut self) -> *mut Arena {
        // The first link of a free list is written in a pool of the first arena.
        #[cfg(feature = "hardened")]
        crate::hardened::seed();
        // Every block is freed with the same mark: draw it before the first block exists.
        #[cfg(not(feature = "hardened"))]
        crate::block::free_mark();
        if self.reserve_left == 0 {
            let size = ARENAS_PER_RESERVATION * ARENA_SIZE;
            let start = os::reserve_aligned(size, ARENA_SIZE);
            if start.is_null() {
                return ptr::null_mut();
            }
            self.reserve_next = start;
            self.reserve_left = ARENAS_PER_RESERVATION;
        }
        let arena = self.reserve_next as *mut Arena;
        if !chunk_map::insert(arena as usize, ChunkKind::Arena) {
            return ptr::null_mut();
        }
        self.reserve_next = self.reserve_next.wrapping_add(ARENA_SIZE);
        self.reserve_left -= 1;
        ARENAS.mapped.fetch_add(1, Ordering::Relaxed);
        ARENAS
            .released_pages
            .fetch_add(USABLE_PAGES, Ordering::Relaxed);
        // SAFETY: the header page is fresh zeroed memory of ours; zero is a valid initial
        // state for every other field (an empty page map, null links, empty pools). Pages
        // never touched count as released: they cost no memory.
        unsafe {
            (*arena).free_pages = free_pages_of_new_arena();
            (*arena).released_pages = free_pages_of_new_arena();
            (*arena).list = NOT_LISTED;
        }
        arena
    }
}

/// The arenas handed out from the current reservation so far (mapped or unmapped since).
///
/// # Safety
/// The arena lock is held.
#[cfg(all(test, loom))]
unsafe fn arenas_of_reservation(lists: &ArenaLists) -> impl Iterator<Item = *mut Arena> {
    let used = ARENAS_PER_RESERVATION - lists.reserve_left;
    let start = (lists.reserve_next as usize).wrapping_sub(used * ARENA_SIZE);
    let used = if lists.reserve_next.is_null() {
        0
    } else {
        used
    };
    (0..used).map(move |i| (start + i * ARENA_SIZE) as *mut Arena)
}

/// For the loom models: checks under the arena lock the invariants of the module docs over
/// every mapped arena (the models stay within one reservation) and the global counters
/// against their sums; returns the figures.
#[cfg(all(test, loom))]
pub(crate) fn check_invariants() -> ArenaFigures {
    let lists = ARENAS.lists.lock();
    let (mut mapped, mut pool_pages, mut dirty, mut released, mut empty) = (0, 0, 0, 0, 0);
    // SAFETY: we hold the arena lock.
    for arena in unsafe { arenas_of_reservation(&lists) } {
        if !chunk_map::is_arena(arena as usize) {
            continue;
        }
        mapped += 1;
        // SAFETY: a mapped arena's header is live; we hold the lock that guards it.
        unsafe {
            let free = (*arena).free_pages;
            let gone = (*arena).released_pages;
            assert_eq!(
                free & !free_pages_of_new_arena(),
                0,
                "header pages are never free"
            );
            assert_eq!(gone & !free, 0, "released pages are free pages");
            let free_count = free.count_ones() as usize;
            for page in HEADER_PAGES..PAGES_PER_ARENA {
                let in_pool = (*arena).map.pool_start(page) != 0;
                assert_eq!(in_pool, free & (1 << page) == 0, "page {page} of {arena:p}");
            }
            if free_count == 0 {
                assert_eq!((*arena).list, NOT_LISTED);
            } else {
                assert_eq!((*arena).list as usize, free_count);
                assert!(
                    lists.by_free_pages[free_count]
                        .iter()
                        .any(|listed| listed == arena),
                    "{arena:p} is in the list of its free pages"
                );
            }
            pool_pages += USABLE_PAGES - free_count;
            dirty += (free & !gone).count_ones() as usize;
            released += gone.count_ones() as usize;
            empty += (free_count == USABLE_PAGES) as usize;
        }
    }
    for (counter, sum, what) in [
        (&ARENAS.mapped, mapped, "mapped arenas"),
        (&ARENAS.pool_pages, pool_pages, "pool pages"),
        (&ARENAS.dirty_pages, dirty, "dirty pages"),
        (&ARENAS.released_pages, released, "released pages"),
        (&ARENAS.empty, empty, "empty arenas"),
    ] {
        assert_eq!(counter.load(Ordering::Relaxed), sum, "{what}");
    }
    ArenaFigures {
        mapped,
        pool_pages,
        released_pages: released,
        empty,
        ..ArenaFigures::default()
    }
}

/// For the loom models, at the end of an execution: gives the arenas still mapped and the
/// unused rest of the reservation back to the OS, so that the many executions of a model
/// do not pile up mappings. The registry is dead afterwards (loom makes a new one).
#[cfg(all(test, loom))]
pub(crate) fn unmap_reservation_after_model() {
    let mut lists = ARENAS.lists.lock();
    // SAFETY: we hold the arena lock.
    for arena in unsafe { arenas_of_reservation(&lists) } {
        if chunk_map::is_arena(arena as usize) {
            chunk_map::remove(arena as usize);
            // SAFETY: the execution is over: nothing uses its arenas any more.
            unsafe { os::unmap(arena as *mut u8, ARENA_SIZE) };
        }
    }
    if lists.reserve_left > 0 {
        // SAFETY: slots not handed out were never used.
        unsafe { os::unmap(lists.reserve_next, lists.reserve_left * ARENA_SIZE) };
    }
    lists.reserve_left = 0;
    lists.reserve_next = ptr::null_mut();
}

/// Every page free but the header.
const fn free_pages_of_new_arena() -> u64 {
    !((1 << HEADER_PAGES) - 1)
}

/// Bits `start..start + pages`.
fn run_mask(start: usize, pages: usize) -> u64 {
    let ones = if pages >= 64 { !0 } else { (1u64 << pages) - 1 };
    ones << start
}

/// The first start page (a multiple of `align`, never in the header) of `pages` free pages.
fn find_free_run(free_pages: u64, pages: usize, align: usize) -> Option<usize> {
    let mut start = HEADER_PAGES.next_multiple_of(align);
    while start + pages <= PAGES_PER_ARENA {
        let mask = run_mask(start, pages);
        if free_pages & mask == mask {
            return Some(start);
        }
        start += align;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_freed_after_the_pass_read_the_clock_are_not_expired() {
        // Regression: a page stamped 5 ms after the pass's `now` looked 49 days old.
        assert!(!super::has_decayed(1_000, 1_005, 200));
        assert!(!super::has_decayed(1_000, 900, 200));
        assert!(super::has_decayed(1_000, 800, 200));
        // Across the clock's wrap.
        assert!(super::has_decayed(100, u32::MAX - 199, 200));
        assert!(!super::has_decayed(u32::MAX - 5, 10, 200));
    }

    #[test]
    fn free_runs_respect_alignment_and_the_header() {
        let all = free_pages_of_new_arena();
        assert_eq!(find_free_run(all, 1, 1), Some(HEADER_PAGES));
        assert_eq!(find_free_run(all, USABLE_PAGES, 1), Some(HEADER_PAGES));
        assert_eq!(find_free_run(all, USABLE_PAGES + 1, 1), None);
        assert_eq!(find_free_run(all, 2, 2), Some(2));
        assert_eq!(find_free_run(all, 32, 32), Some(32));
        assert_eq!(find_free_run(all, 16, 16), Some(16));
        assert_eq!(find_free_run(all & !run_mask(16, 16), 16, 16), Some(32));
        assert_eq!(find_free_run(all & !run_mask(32, 1), 32, 32), None);
        // 4 pages free at 10..14, the rest taken.
        assert_eq!(find_free_run(run_mask(10, 4), 4, 1), Some(10));
        assert_eq!(find_free_run(run_mask(10, 4), 5, 1), None);
        assert_eq!(find_free_run(run_mask(10, 4), 2, 2), Some(10));
        assert_eq!(find_free_run(run_mask(9, 4), 4, 2), None);
    }
}
