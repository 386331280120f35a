//! The heap profiler's sampling path never allocates through the global allocator: this
//! binary's global allocator wraps `EbbMalloc` and aborts the process when it is entered
//! again on a thread that is inside it, while every allocation is a candidate for
//! sampling (a 64-byte interval) on several threads, with small and large blocks, zeroed
//! ones and reallocations.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// `EbbMalloc`, aborting on re-entry.
struct NoReentry;

#[global_allocator]
static GLOBAL: NoReentry = NoReentry;

std::thread_local! {
    /// This thread is inside the allocator. `const` and without `Drop`: no destructor is
    /// registered for it and reaching it never allocates.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` inside the allocator, aborting if this thread is already inside.
fn inside<T>(f: impl FnOnce() -> T) -> T {
    if INSIDE.with(|inside| inside.replace(true)) {
        let message = b"profiling_reentry: the allocator was entered again from inside\n";
        // SAFETY: writes our buffer to stderr.
        unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
        std::process::abort();
    }
    let result = f();
    INSIDE.with(|inside| inside.set(false));
    result
}

// SAFETY: every call is `EbbMalloc`'s, which keeps the `GlobalAlloc` contract.
unsafe impl GlobalAlloc for NoReentry {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        inside(|| unsafe { ebbmalloc::EbbMalloc.alloc(layout) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract.
        inside(|| unsafe { ebbmalloc::EbbMalloc.dealloc(ptr, layout) })
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        inside(|| unsafe { ebbmalloc::EbbMalloc.alloc_zeroed(layout) })
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        inside(|| unsafe { ebbmalloc::EbbMalloc.realloc(ptr, layout, new_size) })
    }
}

#[inline(never)]
fn churn(seed: usize) -> usize {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    for i in 0..8_000usize {
        let size = [16, 64, 200, 1500, 9000, 70_000, 200_000][(i + seed) % 7];
        let mut block = if i % 3 == 0 {
            vec![0u8; size]
        } else {
            vec![1u8; size]
        };
        if i % 5 == 0 {
            block.resize(size * 2 + 1, 2);
        }
        total += block.len();
        kept.push(block);
        if kept.len() > 64 {
            kept.swap_remove(i % 64);
        }
    }
    total
}

#[test]
fn sampling_never_allocates_through_the_global_allocator() {
    let mut settings = ebbmalloc::Settings::current();
    settings.prof_sample_bytes = 64;
    ebbmalloc::configure(&settings);
    ebbmalloc::profiling::set_active(true);
    let threads: Vec<_> = (0..4)
        .map(|seed| std::thread::spawn(move || churn(seed)))
        .collect();
    let mut total = churn(7);
    for thread in threads {
        total += thread.join().unwrap();
    }
    ebbmalloc::profiling::set_active(false);
    let profile = ebbmalloc::profiling::snapshot();
    let samples: u64 = profile.stacks.iter().map(|s| s.counts.alloc_samples).sum();
    // Nearly every allocation of at least 64 bytes was sampled.
    assert!(samples > 20_000, "{samples} samples of {total} bytes");
}
