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
