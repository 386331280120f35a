//! The C-ABI layer called from Rust: regressions found through the C test program stay
//! covered here too.

use ebbmalloc::c_abi;

fn errno() -> i32 {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[test]
fn huge_requests_fail_with_enomem_instead_of_wrapping() {
    // A size near `usize::MAX` once wrapped to a tiny class in the size rounding.
    for size in [
        usize::MAX,
        usize::MAX - 7,
        usize::MAX / 2 + 1,
        isize::MAX as usize + 1,
    ] {
        assert!(c_abi::malloc(size).is_null(), "malloc({size:#x}) succeeded");
        assert_eq!(errno(), libc::ENOMEM);
        assert!(c_abi::aligned_alloc(64, size).is_null());
        assert!(c_abi::calloc(1, size).is_null());
    }
    let block = c_abi::malloc(16);
    // SAFETY: `block` is live; a failed realloc leaves it untouched and it is freed once.
    unsafe {
        assert!(c_abi::realloc(block, usize::MAX).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        assert!(c_abi::malloc_usable_size(block) >= 16);
        c_abi::free(block);
    }
}

#[test]
fn usable_size_and_realloc_in_place() {
    for size in [1usize, 9, 100, 5000, 100_000, 300_000, 3 << 20] {
        let block = c_abi::malloc(size) as *mut u8;
        // SAFETY: live blocks of at least `usable` bytes, freed once.
        unsafe {
            let usable = c_abi::malloc_usable_size(block as *mut _);
            assert!(usable >= size);
            block.write_bytes(0x77, usable);
            let same = c_abi::realloc(block as *mut _, usable) as *mut u8;
            assert_eq!(same, block, "realloc to the usable size of {size} moved");
            c_abi::free(same as *mut _);
        }
    }
}

/// `mallinfo2` is `stats()` in glibc's fields: live small bytes, live large bytes, free
/// cached blocks (issue 13, part 6).
#[test]
fn mallinfo2_is_stats_in_glibc_terms() {
    let stats = ebbmalloc::stats();
    let info = c_abi::mallinfo2_of(&stats);
    let small_live: usize = stats
        .classes
        .iter()
        .map(|c| c.live_blocks * c.block_size)
        .sum();
    assert_eq!(info.uordblks, small_live);
    assert_eq!(info.hblkhd, stats.allocated_bytes - small_live);
    let cached: usize = stats.classes.iter().map(|c| c.cached_blocks).sum();
    assert_eq!(info.ordblks, cached);
    assert!(info.arena <= stats.mapped_bytes);
    assert_eq!(
        (info.smblks, info.fsmblks, info.usmblks, info.hblks),
        (0, 0, 0, 0)
    );
    assert_eq!(
        c_abi::mallopt(-3, 1 << 20),
        1,
        "M_MMAP_THRESHOLD is accepted"
    );
}

/// C++ sized delete frees by size: the block goes back and the next allocation of that
/// size can reuse it (issue 13, part 5).
#[test]
fn sized_delete_takes_blocks_back() {
    for size in [0usize, 1, 24, 100, 4000, 200_000] {
        let block = c_abi::malloc(size);
        assert!(!block.is_null());
        // SAFETY: a live block from `malloc(size)`, given up here.
        unsafe { c_abi::delete_sized(block, size) };
        let again = c_abi::malloc(size);
        if size <= 4000 {
            // The thread cache is LIFO: the block freed by size is the next one of its class.
            assert_eq!(again, block, "size {size}");
        }
        // SAFETY: a live block from `malloc(size)`.
        unsafe { c_abi::delete_sized(again, size) };
    }
    // SAFETY: null is a no-op, as for `free`.
    unsafe { c_abi::delete_sized(core::ptr::null_mut(), 8) };
}

#[test]
fn free_of_null_does_nothing_and_keeps_errno() {
    // `free` tells null apart after its test for a small block (its chunk is never an
    // arena); it must still return quietly, before and after blocks exist, and leave
    // `errno` alone.
    // SAFETY: null is always a valid argument of `free`.
    unsafe {
        *libc::__errno_location() = libc::EINTR;
        c_abi::free(core::ptr::null_mut());
        let block = c_abi::malloc(24);
        *libc::__errno_location() = libc::EINTR;
        c_abi::free(core::ptr::null_mut());
        c_abi::free_sized(core::ptr::null_mut(), 24);
        assert_eq!(errno(), libc::EINTR);
        c_abi::free(block);
    }
}
