//! The operating system below us, named by intent: reserve address space, give pages back,
//! move a mapping. Nothing above this module calls `mmap` and friends directly.
//!
//! Every function is safe to call from inside `malloc`: none allocates or takes a lock.
//!
//! **errno.** A successful `malloc`, `realloc` or `free` leaves `errno` as it found it, yet
//! on its way it may make system calls that fail harmlessly (an `mremap` in place that finds
//! the neighbouring pages taken, a `madvise` the kernel refuses) and set `errno`. So every
//! function here puts `errno` back as it was ([`keeping_errno`]); the C front sets it
//! itself when a call fails as a whole.

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
    map_with(size, 0)
}

/// Maps `size` bytes of zeroed read-write memory with no swap reserved for them: for
/// tables of our own that are large in address space and touched sparsely (the chunk
/// map). Null when the OS refuses.
pub(crate) fn reserve_sparse(size: usize) -> *mut u8 {
    map_with(size, libc::MAP_NORESERVE)
}

fn map_with(size: usize, extra_flags: libc::c_int) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
    // no existing memory.
    let p = keeping_errno(|| unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    });
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Runs `f` (which makes system or C library calls) and restores `errno` to what it was
/// before: the allocator's own failed attempts are none of the program's business.
#[inline]
pub(crate) fn keeping_errno<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: `__errno_location` returns this thread's errno slot, valid for its life.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *slot };
    let result = f();
    // SAFETY: as above.
    unsafe { *slot = saved };
    result
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
    keeping_errno(|| unsafe {
        libc::madvise(start as *mut libc::c_void, size, advice);
    });
}

/// Makes `[start, start + size)` a guard: any access to it faults. Returns whether the OS
/// agreed (it may not, when the process is out of kernel mappings).
///
/// # Safety
/// The range is page-aligned memory of ours that nothing uses.
#[cfg(feature = "hardened")]
pub(crate) unsafe fn make_guard(start: *mut u8, size: usize) -> bool {
    // SAFETY: the caller owns the range and nothing in it is used.
    keeping_errno(|| unsafe {
        libc::mprotect(start as *mut libc::c_void, size, libc::PROT_NONE) == 0
    })
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
    let p = keeping_errno(|| unsafe {
        libc::mremap(start as *mut libc::c_void, old_size, new_size, 0)
    });
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
    let p = keeping_errno(|| unsafe {
        libc::mremap(
            start as *mut libc::c_void,
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target as *mut libc::c_void,
        )
    });
    if p == libc::MAP_FAILED {
        // SAFETY: the reservation is ours and unused.
        unsafe { unmap(target, new_size) };
        return ptr::null_mut();
    }
    p as *mut u8
}

/// 16 bytes that an attacker cannot predict (for the double-free mark and the hardened
/// link key): from `getrandom(2)` without blocking, else the kernel's `AT_RANDOM` bytes,
/// else our code and stack addresses (randomised by ASLR) and the time, mixed.
pub(crate) fn random_words() -> [u64; 2] {
    let mut words = [0u64; 2];
    // SAFETY: getrandom writes at most the 16 bytes of our buffer; GRND_NONBLOCK keeps it
    // from waiting for the entropy pool early in boot.
    let got = keeping_errno(|| unsafe {
        libc::getrandom(
            words.as_mut_ptr() as *mut libc::c_void,
            core::mem::size_of_val(&words),
            libc::GRND_NONBLOCK,
        )
    });
    if got == core::mem::size_of_val(&words) as isize {
        return words;
    }
    // SAFETY: AT_RANDOM, when present, is the address of 16 random bytes the kernel put on
    // the initial stack; they stay there for the life of the process.
    unsafe {
        let at_random = libc::getauxval(libc::AT_RANDOM) as *const [u64; 2];
        if !at_random.is_null() {
            return at_random.read_unaligned();
        }
    }
    let stack = &words as *const _ as u64;
    let code = random_words as *const () as u64;
    [
        mix(stack ^ now_ms() as u64),
        mix(code.rotate_left(32) ^ stack),
    ]
}

/// splitmix64's finaliser: a 64-bit word whose every bit depends on every bit of `z`.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sleeps for `ms` milliseconds (an interrupted sleep ends early, which callers tolerate).
pub(crate) fn sleep_ms(ms: u32) {
    let time = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads our timespec; the remainder pointer may be null.
    keeping_errno(|| unsafe { libc::nanosleep(&time, ptr::null_mut()) });
}
