//! Large allocations: requests above the largest size class (or aligned beyond it) each get
//! a mapping of their own.
//!
//! Layout of a large mapping, with `offset = max(MIN_OFFSET, align)`:
//!
//! ```text
//! base (aligned to max(ARENA_SIZE, align))
//! | ... header page at (ptr - 1) & ARENA_MASK ... | ptr = base + offset ... | ... map_len
//! ```
//!
//! `MIN_OFFSET` is one page (the header). With the `hardened` feature it is two, and the
//! page just below the block and the last page of the mapping are guard pages
//! (`PROT_NONE`): running off either end of a large block faults at once. Such a mapping
//! is several kernel mappings, which `mremap` cannot resize, so hardened `realloc` copies
//! into a new block where the default one remaps.
//!
//! The header sits in the arena-sized slot just below the user pointer, so the same rule
//! as for arenas, `(ptr - 1) & ARENA_MASK`, finds it (a small block is never at the start of
//! its arena, so for it the rule gives its arena). Its magic tells the two apart.
//!
//! Mapping lengths are rounded up to four steps per power of two. Untouched pages cost
//! only address space, and the rounding makes a cached mapping fit the next request of a
//! similar size and lets `realloc` stay in place within a step. `realloc` otherwise grows
//! or shrinks the mapping with `mremap`, moving it (without copying) to a new aligned place
//! when it cannot grow where it is.
//!
//! The **mapping cache** keeps up to [`CACHE_ENTRIES`] recently freed page-aligned mappings
//! of any size (together at most as many bytes as the live large blocks, or
//! [`CACHE_FLOOR_BYTES`] if that is more: [`cache_limit`]) so that a loop allocating and
//! freeing 1 MiB or 20 MiB buffers neither makes system calls nor faults fresh pages in
//! each round: a request takes the smallest cached mapping that fits and is at
//! most twice its size. The oldest entries are unmapped when new ones come in, and
//! trimming ([`trim`]) unmaps entries older than the decay time. Growing a block prefers a
//! cached mapping (one copy, pages already resident) to `mremap`, which would fault in
//! fresh pages: a `Vec` pushed to 512 KiB over and over ran 3x slower with `mremap` alone.
//!
//! **The chunk map and the address space.** The chunk where a block starts is recorded in
//! the chunk map ([`chunk_kind`]: inside the chunk, or exactly at its start with the header
//! in the chunk below) exactly while the mapping is ours. So it enters the map after the
//! mapping is made and before its block is handed out, and leaves it *before* the range
//! goes back to the OS (`munmap`, or the `mremap` that moves the mapping away): from the instant the
//! kernel has the range, another thread may map a block or an arena there and record the
//! same chunk, and a late removal would erase that newcomer's entry (its valid `free` then
//! looks foreign). Cached and hot mappings stay in the map: they are still ours.

use crate::chunk_map::{self, ChunkKind};
use crate::consts::{ARENA_MASK, ARENA_SIZE, PAGE_SIZE};
use crate::fatal::fatal;
use crate::os;
use crate::sanitizer;
use crate::sync::{model_static, AtomicUsize, Mutex, Ordering, RawMutex, MEMORY_FREED};
use core::ptr;

/// Tells a large-mapping header from an arena header ("ebblarge").
const LARGE_MAGIC: u64 = 0x6562_626c_6172_6765;
/// The magic of a mapping that sits freed in the cache ("ebbfreed"): a second free of its
/// block is a double free.
const FREED_MAGIC: u64 = 0x6562_6266_7265_6564;

/// Bytes from a mapping's start to its block at least: the header page, and in hardened
/// builds a guard page between the header and the block.
const MIN_OFFSET: usize = if cfg!(feature = "hardened") {
    2 * PAGE_SIZE
} else {
    PAGE_SIZE
};
/// Bytes at the end of a mapping that its block may not use: in hardened builds a guard
/// page, which faults on an overflow past the block's usable size.
const TAIL_GUARD: usize = if cfg!(feature = "hardened") {
    PAGE_SIZE
} else {
    0
};

/// Freed mappings kept for reuse.
const CACHE_ENTRIES: usize = 32;
/// Bytes the cache may hold whatever the live large blocks (see [`cache_limit`]).
const CACHE_FLOOR_BYTES: usize = 64 << 20;

#[repr(C)]
struct LargeHeader {
    magic: u64,
    base: *mut u8,
    map_len: usize,
    /// The block this header describes, to tell it from interior pointers.
    block: *mut u8,
    /// The heap profiler's record of this block when it was sampled, 0 when not
    /// (`profiling.rs`; [`sample_record`]).
    sample: u32,
}

#[derive(Clone, Copy)]
struct CachedMapping {
    base: *mut u8,
    map_len: usize,
    /// When a trimming pass first saw the entry (valid once `seen`).
    seen_at_ms: u32,
    seen: bool,
}

const NO_MAPPING: CachedMapping = CachedMapping {
    base: ptr::null_mut(),
    map_len: 0,
    seen_at_ms: 0,
    seen: false,
};

/// The cached mappings, oldest first, and their total size.
struct CachedMappings {
    entries: [CachedMapping; CACHE_ENTRIES],
    len: usize,
    bytes: usize,
}

// SAFETY: the cached mappings are ours, unused, and any thread may take or unmap them
// under the cache lock.
unsafe impl Send for CachedMappings {}

model_static! {
    static CACHE: Mutex<CachedMappings> = Mutex::new(CachedMappings {
        entries: [NO_MAPPING; CACHE_ENTRIES],
        len: 0,
        bytes: 0,
    });
}

model_static! {
    /// Bytes in large mappings, live or cached (for the statistics); changed only when a
    /// mapping is made, resized or unmapped.
    static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
}

/// A large block of `size` bytes aligned to `align`, zero-filled if `zeroed`; null when the
/// OS refuses.
pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let offset = align.max(MIN_OFFSET);
    let Some(map_len) = mapping_len(offset, size) else {
        return ptr::null_mut();
    };
    if offset == MIN_OFFSET {
        if let Some((base, cached_len)) = take_cached(map_len) {
            // SAFETY: a cached mapping is ours, `cached_len` long, unused; its block goes to
            // the program.
            let ptr = unsafe {
                let ptr = set_up(base, offset, cached_len);
                sanitizer::handed_out(ptr, block_bytes(cached_len, offset), false);
                ptr
            };
            if zeroed {
                // SAFETY: `size` bytes from `ptr` lie inside the mapping.
                unsafe { ptr::write_bytes(ptr, 0, size) };
            }
            return ptr;
        }
    }
    let base = os::reserve_aligned(map_len, base_align(offset));
    if base.is_null() {
        return base;
    }
    // SAFETY: a fresh mapping of ours, `map_len` long; fresh pages are already zero.
    let ptr = unsafe { set_up(base, offset, map_len) };
    #[cfg(feature = "hardened")]
    {
        // SAFETY: the mapping is fresh and ours; its block is not handed out yet.
        if !unsafe { set_guards(base, ptr, map_len) } {
            // SAFETY: the mapping is ours and unused.
            unsafe { os::unmap(base, map_len) };
            return ptr::null_mut();
        }
    }
    if !chunk_map::insert(block_chunk(ptr), chunk_kind(ptr)) {
        // SAFETY: the mapping is ours and unused.
        unsafe { os::unmap(base, map_len) };
        return ptr::null_mut();
    }
    MAPPED_BYTES.fetch_add(map_len, Ordering::Relaxed);
    // SAFETY: the block of a fresh mapping goes to the program; fresh pages read as zero.
    unsafe { sanitizer::handed_out(ptr, block_bytes(map_len, offset), true) };
    ptr
}

/// Frees a large block.
///
/// # Safety
/// `ptr` was returned by [`alloc`] or [`realloc`] and is not used again.
pub(crate) unsafe fn free(ptr: *mut u8) {
    // SAFETY: by the caller's promise the header is ours.
    let (header, base, map_len) = unsafe {
        let header = header_of(ptr);
        (header, (*header).base, (*header).map_len)
    };
    let offset = ptr as usize - base as usize;
    // SAFETY: the caller hands the block back, with every byte up to its mapping's end.
    unsafe { sanitizer::taken_back(ptr, block_bytes(map_len, offset)) };
    if offset == MIN_OFFSET {
        // SAFETY: the header is ours; marking it freed makes a second free detectable.
        unsafe { (*header).magic = FREED_MAGIC };
        // `put_cached` tells the trimmer itself.
        if map_len > HOT_MAX_MAP_BYTES {
            put_cached(base, map_len);
        } else if let Some((older, older_len)) = swap_hot(pack_hot(base, map_len)) {
            put_cached(older, older_len);
        } else {
            MEMORY_FREED.notify();
        }
    } else {
        MAPPED_BYTES.fetch_sub(map_len, Ordering::Relaxed);
        chunk_map::remove(block_chunk(ptr));
        // SAFETY: the mapping is ours and its block is dead.
        unsafe { os::unmap(base, map_len) };
    }
}

/// Resizes a large block to `new_size` (still above the classes), in place when the
/// mapping can shrink or grow where it is, else by moving the mapping. Returns the block's
/// address, or null (the block is then untouched) when the OS refuses.
///
/// # Safety
/// `ptr` is a live large block of ours.
pub(crate) unsafe fn realloc(ptr: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: by the caller's promise the header is ours.
    unsafe {
        let header = header_of(ptr);
        let base = (*header).base;
        let old_len = (*header).map_len;
        let offset = ptr as usize - base as usize;
        let Some(new_len) = mapping_len(offset, new_size) else {
            return ptr::null_mut();
        };
        if new_len <= old_len && new_len >= old_len / 2 {
            // Fits, and shrinking would give back less than half: keep the mapping.
            return ptr;
        }
        if new_len > old_len && offset == MIN_OFFSET {
            if let Some((cached, cached_len)) = take_cached(new_len) {
                let moved = set_up(cached, offset, cached_len);
                sanitizer::handed_out(moved, block_bytes(cached_len, offset), false);
                ptr::copy_nonoverlapping(ptr, moved, block_bytes(old_len, offset));
                free(ptr);
                return moved;
            }
        }
        resize_mapping(ptr, header, new_len, new_size)
    }
}

/// The rest of [`realloc`]: grows or shrinks the mapping with `mremap`, in place or moved
/// without copying.
///
/// # Safety
/// `ptr` is a live large block of ours and `header` its header.
#[cfg(not(feature = "hardened"))]
unsafe fn resize_mapping(
    ptr: *mut u8,
    header: *mut LargeHeader,
    new_len: usize,
    _new_size: usize,
) -> *mut u8 {
    // SAFETY: by the caller's promise.
    unsafe {
        let base = (*header).base;
        let old_len = (*header).map_len;
        let offset = ptr as usize - base as usize;
        if os::resize_in_place(base, old_len, new_len) {
            (*header).map_len = new_len;
            account_resize(old_len, new_len);
            sanitizer::resized(
                ptr,
                block_bytes(old_len, offset),
                block_bytes(new_len, offset),
            );
            return ptr;
        }
        // The block's chunk leaves the chunk map *before* the move: `mremap` unmaps the
        // old range, and from that instant another thread may map a block or an arena
        // there and record the same chunk; a remove after the move would erase that
        // newcomer's entry, and its valid free would be taken for an invalid one. While
        // the chunk is out of the map nobody but us may touch the block (we own it).
        chunk_map::remove(block_chunk(ptr));
        let new_base = os::move_aligned(base, old_len, new_len, base_align(offset));
        if new_base.is_null() {
            // The mapping did not move: it is still ours at the old place.
            if !chunk_map::insert(block_chunk(ptr), chunk_kind(ptr)) {
                fatal("cannot record the large mapping at", ptr as usize);
            }
            return new_base;
        }
        let new_ptr = new_base.add(offset);
        let header = header_address(new_ptr);
        (*header).block = new_ptr;
        if !chunk_map::insert(block_chunk(new_ptr), chunk_kind(new_ptr)) {
            fatal("cannot record the moved large mapping at", new_ptr as usize);
        }
        (*header).base = new_base;
        (*header).map_len = new_len;
        account_resize(old_len, new_len);
        sanitizer::moved(
            ptr,
            block_bytes(old_len, offset),
            new_ptr,
            block_bytes(new_len, offset),
        );
        new_ptr
    }
}

/// The rest of [`realloc`] in hardened builds: a new block and a copy. `mremap` works on
/// one mapping of one protection, and the guard pages split a block's mapping in several.
///
/// # Safety
/// `ptr` is a live large block of ours and `header` its header.
#[cfg(feature = "hardened")]
unsafe fn resize_mapping(
    ptr: *mut u8,
    header: *mut LargeHeader,
    _new_len: usize,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: by the caller's promise.
    unsafe {
        let offset = ptr as usize - (*header).base as usize;
        let usable = block_bytes((*header).map_len, offset);
        // `offset` is the block's alignment or more, so the new block is aligned as well.
        let moved = alloc(new_size, offset, false);
        if !moved.is_null() {
            ptr::copy_nonoverlapping(ptr, moved, usable.min(new_size));
            free(ptr);
        }
        moved
    }
}

/// Bytes in large mappings: (live or cached, cached only).
pub(crate) fn mapped_bytes() -> (usize, usize) {
    let cached = CACHE.lock().bytes;
    let hot = unpack_hot(HOT.load(Ordering::Relaxed)).map_or(0, |(_, len)| len);
    (MAPPED_BYTES.load(Ordering::Relaxed), cached + hot)
}

model_static! {
    /// The most recently freed cacheable mapping, in front of the cache: freeing into it and
    /// allocating from it is one atomic swap each, no lock. Packed as `base | map_len / PAGE`
    /// (a base is 256 KiB-aligned, so a mapping of at most [`HOT_MAX_MAP_BYTES`] packs),
    /// 0 if none.
    static HOT: AtomicUsize = AtomicUsize::new(0);
}

/// The largest mapping the hot slot can hold (its page count fits below a base's
/// alignment, about 1 GiB); larger ones go to the cache directly.
const HOT_MAX_MAP_BYTES: usize = (ARENA_SIZE - 1) * PAGE_SIZE;

fn pack_hot(base: *mut u8, map_len: usize) -> usize {
    base as usize | (map_len / PAGE_SIZE)
}

fn unpack_hot(word: usize) -> Option<(*mut u8, usize)> {
    (word != 0).then(|| {
        (
            (word & ARENA_MASK) as *mut u8,
            (word & !ARENA_MASK) * PAGE_SIZE,
        )
    })
}

/// Puts `word` in the hot slot and returns what was there.
fn swap_hot(word: usize) -> Option<(*mut u8, usize)> {
    unpack_hot(HOT.swap(word, Ordering::AcqRel))
}

/// Unmaps cached mappings that sat unused for at least `decay_ms` (all of them when
/// `decay_ms == 0`). Returns the bytes unmapped.
///
/// Freeing into the cache reads no clock: a pass stamps the entries it sees for the first
/// time with its `now_ms`, and a later pass expires them by that stamp, so an entry lives
/// at least `decay_ms` and at most one trimming interval more.
pub(crate) fn trim(now_ms: u32, decay_ms: u32) -> usize {
    // The hot mapping joins the cache, where it ages like the others.
    if let Some((hot, hot_len)) = swap_hot(0) {
        put_cached(hot, hot_len);
    }
    let mut expired = [NO_MAPPING; CACHE_ENTRIES];
    let mut expired_count = 0;
    {
        let mut guard = CACHE.lock();
        let cache = &mut *guard;
        let mut kept = 0;
        for i in 0..cache.len {
            let mut entry = cache.entries[i];
            if !entry.seen {
                entry.seen = true;
                entry.seen_at_ms = now_ms;
            }
            if decay_ms == 0 || now_ms.wrapping_sub(entry.seen_at_ms) >= decay_ms {
                expired[expired_count] = entry;
                expired_count += 1;
                cache.bytes -= entry.map_len;
            } else {
                cache.entries[kept] = entry;
                kept += 1;
            }
        }
        cache.len = kept;
    }
    let mut unmapped = 0;
    for entry in &expired[..expired_count] {
        unmapped += entry.map_len;
        unmap_cached(entry);
    }
    unmapped
}

/// Unmaps a mapping that has left the cache.
fn unmap_cached(entry: &CachedMapping) {
    MAPPED_BYTES.fetch_sub(entry.map_len, Ordering::Relaxed);
    // A cached mapping's block was at `MIN_OFFSET`, in the mapping's first chunk.
    chunk_map::remove(entry.base as usize);
    // SAFETY: a cached mapping is ours and unused; it left the cache under the lock.
    unsafe { os::unmap(entry.base, entry.map_len) };
}

/// The mapping-cache lock, for the fork handlers (`lifecycle.rs`).
pub(crate) fn lock_for_fork() -> &'static RawMutex {
    CACHE.raw()
}

#[cfg(not(feature = "hardened"))]
fn account_resize(old_len: usize, new_len: usize) {
    if new_len > old_len {
        MAPPED_BYTES.fetch_add(new_len - old_len, Ordering::Relaxed);
    } else {
        MAPPED_BYTES.fetch_sub(old_len - new_len, Ordering::Relaxed);
    }
}

/// The length of a mapping for a block of `size` bytes at `offset`, its tail guard
/// included; None on overflow.
fn mapping_len(offset: usize, size: usize) -> Option<usize> {
    offset
        .checked_add(size)
        .and_then(|len| len.checked_add(TAIL_GUARD))
        .and_then(round_map_len)
}

/// Makes the page below the block and the last page of its mapping guard pages (hardened
/// builds; nothing otherwise). False when the OS refuses.
///
/// # Safety
/// `[base, base + map_len)` is a fresh mapping of ours and `ptr` its block, at least
/// [`MIN_OFFSET`] above `base`.
#[cfg(feature = "hardened")]
unsafe fn set_guards(base: *mut u8, ptr: *mut u8, map_len: usize) -> bool {
    // SAFETY: both pages lie in the mapping and hold neither the header nor the block
    // (the header is in the arena-sized slot below the block, never its last page, as the
    // block is page-aligned and at least two pages above `base`).
    unsafe {
        os::make_guard(ptr.sub(PAGE_SIZE), PAGE_SIZE)
            && os::make_guard(base.add(map_len - TAIL_GUARD), TAIL_GUARD)
    }
}

/// Alignment of a mapping's base for a block at `offset` (a power of two >= a page).
/// The bytes a block at `offset` in a mapping of `map_len` bytes may use: up to the tail
/// guard page (hardened) or the mapping's end.
fn block_bytes(map_len: usize, offset: usize) -> usize {
    map_len - offset - TAIL_GUARD
}

fn base_align(offset: usize) -> usize {
    offset.max(ARENA_SIZE)
}

/// Writes the header of a mapping at `base` and returns its block.
///
/// # Safety
/// `[base, base + map_len)` is a mapping of ours with `offset < map_len`.
unsafe fn set_up(base: *mut u8, offset: usize, map_len: usize) -> *mut u8 {
    // SAFETY: block and header lie inside the mapping.
    unsafe {
        let ptr = base.add(offset);
        let header = header_address(ptr);
        (*header).magic = LARGE_MAGIC;
        (*header).base = base;
        (*header).map_len = map_len;
        (*header).block = ptr;
        (*header).sample = 0;
        ptr
    }
}

/// The heap profiler's word of a live large block: 0, or what [`set_sample_record`] stored
/// since the block was handed out.
///
/// # Safety
/// `ptr` is a live large block of ours.
pub(crate) unsafe fn sample_record(ptr: *mut u8) -> u32 {
    // SAFETY: by the caller's promise the header is ours.
    unsafe { (*header_of(ptr)).sample }
}

/// Stores the heap profiler's word of a live large block (see [`sample_record`]).
///
/// # Safety
/// `ptr` is a live large block of ours, and the caller its only user.
pub(crate) unsafe fn set_sample_record(ptr: *mut u8, record: u32) {
    // SAFETY: by the caller's promise the header is ours.
    unsafe { (*header_of(ptr)).sample = record };
}

/// What a header slot says of `ptr`: a live large block, a freed (cached) one, or neither.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LargeState {
    Live,
    Freed,
    NotABlock,
}

/// Whether `ptr` is exactly a large block of ours (and whether it is live).
///
/// # Safety
/// The chunk map says `kind`, a large kind, of `ptr`'s chunk.
pub(crate) unsafe fn state_of(ptr: *mut u8, kind: ChunkKind) -> LargeState {
    // Only a pointer of the recorded kind has its header slot in our mapping: a pointer at
    // the start of a chunk whose block starts inside it would lead to the chunk below.
    if chunk_kind(ptr) != kind {
        return LargeState::NotABlock;
    }
    let header = header_address(ptr);
    // SAFETY: by the caller's promise the header slot is mapped and ours.
    unsafe {
        if (*header).block != ptr {
            return LargeState::NotABlock;
        }
        match (*header).magic {
            LARGE_MAGIC => LargeState::Live,
            FREED_MAGIC => LargeState::Freed,
            _ => LargeState::NotABlock,
        }
    }
}

/// Bytes usable from `ptr` to the end of its mapping.
///
/// # Safety
/// `ptr` is a live large block of ours.
pub(crate) unsafe fn usable_size(ptr: *mut u8) -> usize {
    // SAFETY: by the caller's promise the header is ours.
    unsafe {
        let header = header_of(ptr);
        block_bytes((*header).map_len, ptr as usize - (*header).base as usize)
    }
}

/// The header of a large block, after checking its magic.
///
/// The pointer is not looked up in the chunk map here: that would cost the default build
/// a fifth more instructions per large alloc+free pair. The C ABI and the hardened build's
/// Rust `dealloc` (`front::check_owner`) have checked it before they call in.
///
/// # Safety
/// The arena-sized slot below `ptr` is readable memory.
unsafe fn header_of(ptr: *mut u8) -> *mut LargeHeader {
    let header = header_address(ptr);
    // SAFETY: readable by the caller's promise.
    match unsafe { (*header).magic } {
        LARGE_MAGIC => header,
        FREED_MAGIC => fatal("double free of", ptr as usize),
        _ => fatal("invalid free of", ptr as usize),
    }
}

/// Where the header of a large block at `ptr` is.
fn header_address(ptr: *mut u8) -> *mut LargeHeader {
    ((ptr as usize - 1) & ARENA_MASK) as *mut LargeHeader
}

/// The chunk that a large block at `ptr` starts in, which the chunk map records.
fn block_chunk(ptr: *mut u8) -> usize {
    ptr as usize & ARENA_MASK
}

/// How the chunk map records a large block at `ptr`: starting inside its chunk (the
/// header at the chunk's start), or exactly at the chunk's start (aligned to a chunk or
/// more: the header in the chunk below).
fn chunk_kind(ptr: *mut u8) -> ChunkKind {
    if ptr as usize & !ARENA_MASK == 0 {
        ChunkKind::LargeAtChunkStart
    } else {
        ChunkKind::Large
    }
}

/// `len` rounded up to a page, then to a quarter of its power of two; None on overflow.
fn round_map_len(len: usize) -> Option<usize> {
    let pages = len.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    if pages <= 4 * PAGE_SIZE {
        return Some(pages);
    }
    let step = 1usize << (usize::BITS - 1 - (pages - 1).leading_zeros() - 2);
    pages.checked_add(step - 1).map(|n| n & !(step - 1))
}

/// A cached mapping of exactly `map_len` bytes (the newest), or null.
fn take_cached(map_len: usize) -> Option<(*mut u8, usize)> {
    if let Some((hot, hot_len)) = swap_hot(0) {
        if hot_len >= map_len && hot_len / 2 <= map_len {
            return Some((hot, hot_len));
        }
        put_cached(hot, hot_len);
    }
    let mut guard = CACHE.lock();
    let cache = &mut *guard;
    let mut best: Option<usize> = None;
    for i in (0..cache.len).rev() {
        let len = cache.entries[i].map_len;
        if len >= map_len && len / 2 <= map_len {
            if len == map_len {
                best = Some(i);
                break;
            }
            if best.is_none_or(|b| len < cache.entries[b].map_len) {
                best = Some(i);
            }
        }
    }
    let i = best?;
    let entry = cache.entries[i];
    cache.entries.copy_within(i + 1..cache.len, i);
    cache.len -= 1;
    cache.bytes -= entry.map_len;
    Some((entry.base, entry.map_len))
}

/// Bytes the mapping cache may hold when it would hold `cached` (the mapping coming in
/// included): as much as the live large blocks, at least [`CACHE_FLOOR_BYTES`]. A program
/// that frees and allocates its working set of multi-MiB buffers in a loop thus reuses
/// every mapping instead of faulting fresh pages in each round, and what it keeps cached
/// is gone one decay after its last free (`trim`), so the footprint still shrinks back.
fn cache_limit(cached: usize) -> usize {
    let live = MAPPED_BYTES.load(Ordering::Relaxed).saturating_sub(cached);
    live.max(CACHE_FLOOR_BYTES)
}

/// Keeps a freed mapping for reuse, unmapping the oldest entries while the cache is over
/// its entry or byte limit.
fn put_cached(base: *mut u8, map_len: usize) {
    let mut evicted = [NO_MAPPING; CACHE_ENTRIES];
    let mut evicted_count = 0;
    {
        let mut guard = CACHE.lock();
        let cache = &mut *guard;
        let limit = cache_limit(cache.bytes + map_len);
        while cache.len == CACHE_ENTRIES || (cache.len > 0 && cache.bytes + map_len > limit) {
            let oldest = cache.entries[0];
            cache.entries.copy_within(1..cache.len, 0);
            cache.len -= 1;
            cache.bytes -= oldest.map_len;
            evicted[evicted_count] = oldest;
            evicted_count += 1;
        }
        cache.entries[cache.len] = CachedMapping {
            base,
            map_len,
            ..NO_MAPPING
        };
        cache.len += 1;
        cache.bytes += map_len;
    }
    for oldest in &evicted[..evicted_count] {
        unmap_cached(oldest);
    }
    MEMORY_FREED.notify();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lengths_round_to_quarter_steps() {
        assert_eq!(round_map_len(1), Some(PAGE_SIZE));
        assert_eq!(round_map_len(4 * PAGE_SIZE), Some(4 * PAGE_SIZE));
        assert_eq!(round_map_len((1 << 20) + 1), Some((1 << 20) + (1 << 18)));
        assert_eq!(round_map_len(1 << 20), Some(1 << 20));
        assert_eq!(round_map_len(usize::MAX - 10), None);
        for len in (1..(64 << 20)).step_by(4093) {
            let rounded = round_map_len(len).unwrap();
            assert!(rounded >= len && rounded % PAGE_SIZE == 0);
            assert!(
                rounded - len < rounded / 4 + PAGE_SIZE,
                "{len} -> {rounded}"
            );
        }
    }

    #[test]
    fn blocks_are_aligned_and_headers_found() {
        for align in [1, 8, PAGE_SIZE, 1 << 16, ARENA_SIZE, 1 << 20, 4 << 20] {
            let p = alloc(300 << 10, align, true);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            // SAFETY: a live large block of 300 KiB.
            unsafe {
                assert!(core::slice::from_raw_parts(p, 300 << 10)
                    .iter()
                    .all(|&b| b == 0));
                p.write_bytes(0x5a, 300 << 10);
                let q = realloc(p, 3 << 20);
                assert_eq!(q as usize % align, 0);
                assert!(core::slice::from_raw_parts(q, 300 << 10)
                    .iter()
                    .all(|&b| b == 0x5a));
                free(q);
            }
        }
    }
}
