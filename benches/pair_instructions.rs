//! Instructions per 64-byte alloc+free pair, for `valgrind --tool=callgrind`.
//!
//! `cargo bench --bench pair_instructions --no-run` builds it; then run the binary under
//! callgrind twice with different pair counts and divide the difference of the totals by
//! the difference of the counts (see benches/README.md). Each allocator is called through
//! `GlobalAlloc`, monomorphised, behind a non-inlined call as a `#[global_allocator]` is.
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

/// The call boundary a `#[global_allocator]` has (`__rust_alloc` is not inlined into its
/// callers), so every allocator pays for one call per operation.
#[inline(never)]
fn alloc_shim<A: GlobalAlloc>(allocator: &A, layout: Layout) -> *mut u8 {
    // SAFETY: a valid non-zero layout.
    unsafe { allocator.alloc(layout) }
}

#[inline(never)]
fn dealloc_shim<A: GlobalAlloc>(allocator: &A, block: *mut u8, layout: Layout) {
    // SAFETY: the block came from `alloc_shim` with this layout.
    unsafe { allocator.dealloc(block, layout) }
}

fn pairs<A: GlobalAlloc>(allocator: &A, size: usize, count: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for _ in 0..count {
        let p = black_box(alloc_shim(allocator, layout));
        assert!(!p.is_null());
        // SAFETY: the block holds at least one byte.
        unsafe { p.write(1) };
        dealloc_shim(allocator, black_box(p), layout);
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let name = args.next().unwrap_or_else(|| "ebbmalloc".to_string());
    let count: usize = args
        .next()
        .map_or(1_000_000, |n| n.parse().expect("pair count"));
    let size: usize = args.next().map_or(64, |n| n.parse().expect("size"));
    match name.as_str() {
        "ebbmalloc" => pairs(&ebbmalloc::EbbMalloc, size, count),
        "system" => pairs(&System, size, count),
        "jemalloc" => pairs(&tikv_jemallocator::Jemalloc, size, count),
        "mimalloc" => pairs(&mimalloc::MiMalloc, size, count),
        other => panic!("unknown allocator {other}: ebbmalloc, system, jemalloc, mimalloc"),
    }
}
