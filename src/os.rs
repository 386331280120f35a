//! The operating system below us, named by intent: reserve address space, give pages back,
//! move a mapping. Nothing above this module calls `mmap` and friends directly.
//!
//! Every function is safe to call from inside `malloc`: none allocates or takes a lock.

use crate::config::Purge;
use core::ptr;

/// Maps `size` bytes of fresh, zeroed, read-write memory aligned to `align` (a power of
/// two, at least a page). Returns null when the OS refuses.
pub(crate) fn reserve_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= crate::consts::PAGE_SIZE);
    let Some(over) = size.checked_add(align - crate::consts::PAGE_SIZE) else {
        return ptr::null_mut();
    };
    let raw = map(over);
    if raw.is_null() {
        return raw;
    }
    let start = raw as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = over - head - size;
    // SAFETY: [raw, raw + head) and [aligned + size, raw + over) are parts of the mapping we
    // just made and nothing points into them.
    unsafe {
        if head > 0 {
            unmap(raw, head);
        }
        if tail > 0 {
            unmap((aligned + size) as *mut u8, tail);
        }
    }
    aligned as *mut u8
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
    // no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Returns a whole mapping, or a page-aligned part of one, to the OS.
///
/// # Safety
/// `[start, start + size)` is memory this allocator mapped and nothing will touch it again.
pub(crate) unsafe fn unmap(start: *mut u8, size: usize) {
    // SAFETY: the caller owns the range; munmap of an owned range cannot corrupt anything
    // else. It can only fail for bad arguments, which the caller rules out.
    let rc = unsafe { libc::munmap(start as *mut libc::c_void, size) };
    if rc != 0 {
        crate::fatal::fatal("munmap failed for the range at", start as usize);
    }
}

/// Tells the OS that the pages of `[start, start + size)` are no longer needed. With
/// [`Purge::DontNeed`] their physical memory is freed now and they read as zeros when next
/// touched; with [`Purge::Free`] the kernel frees them when it needs memory, and until then
/// they may keep their contents.
///
/// # Safety
/// The range is page-aligned memory of ours whose contents nobody needs.
pub(crate) unsafe fn release_pages(start: *mut u8, size: usize, how: Purge) {
    let advice = match how {
        Purge::DontNeed => libc::MADV_DONTNEED,
        Purge::Free => libc::MADV_FREE,
    };
    // SAFETY: the caller owns the range and does not need its contents.
    unsafe {
        libc::madvise(start as *mut libc::c_void, size, advice);
    }
}

/// Makes `[start, start + size)` a guard: any access to it faults. Returns whether the OS
/// agreed (it may not, when the process is out of kernel mappings).
///
/// # Safety
/// The range is page-aligned memory of ours that nothing uses.
#[cfg(feature = "hardened")]
pub(crate) unsafe fn make_guard(start: *mut u8, size: usize) -> bool {
    // SAFETY: the caller owns the range and nothing in it is used.
    unsafe { libc::mprotect(start as *mut libc::c_void, size, libc::PROT_NONE) == 0 }
}

/// Milliseconds on a monotonic clock (wraps after 49 days; compare with `wrapping_sub`).
pub(crate) fn now_ms() -> u32 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; the coarse clock is a vDSO read.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000) as u32
}

/// Shrinks or grows the mapping at `start` to `new_size` without moving it. Returns whether
/// the OS could do it (growing fails when the address space after it is taken).
///
/// # Safety
/// `[start, start + old_size)` is one mapping of ours.
#[cfg(not(feature = "hardened"))] // hardened large blocks are copied (see `large.rs`)
pub(crate) unsafe fn resize_in_place(start: *mut u8, old_size: usize, new_size: usize) -> bool {
    // SAFETY: without MREMAP_MAYMOVE the mapping stays where it is or the call fails.
    let p = unsafe { libc::mremap(start as *mut libc::c_void, old_size, new_size, 0) };
    p != libc::MAP_FAILED
}

/// Moves the mapping at `start` to a fresh place aligned to `align`, resized to `new_size`,
/// without copying its pages. Returns the new start, or null (the old mapping is then
/// untouched).
///
/// # Safety
/// `[start, start + old_size)` is one mapping of ours; nobody uses it during the call.
#[cfg(not(feature = "hardened"))]
pub(crate) unsafe fn move_aligned(
    start: *mut u8,
    old_size: usize,
    new_size: usize,
    align: usize,
) -> *mut u8 {
    let target = reserve_aligned(new_size, align);
    if target.is_null() {
        return target;
    }
    // SAFETY: MREMAP_FIXED replaces our fresh reservation at `target` atomically; the
    // source is the caller's mapping.
    let p = unsafe {
        libc::mremap(
            start as *mut libc::c_void,
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target as *mut libc::c_void,
        )
    };
    if p == libc::MAP_FAILED {
        // SAFETY: the reservation is ours and unused.
        unsafe { unmap(target, new_size) };
        return ptr::null_mut();
    }
    p as *mut u8
}

/// Sleeps for `ms` milliseconds (an interrupted sleep ends early, which callers tolerate).
pub(crate) fn sleep_ms(ms: u32) {
    let time = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads our timespec; the remainder pointer may be null.
    unsafe { libc::nanosleep(&time, ptr::null_mut()) };
}
