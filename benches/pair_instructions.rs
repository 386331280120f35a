//! Instructions per 64-byte alloc+free pair, for `valgrind --tool=callgrind`.
//!
//! `cargo bench --bench pair_instructions --no-run` builds it; then run the binary under
//! callgrind twice with different pair counts and divide the difference of the totals by
//! the difference of the counts (see benches/README.md). Each allocator is called directly
//! through `GlobalAlloc`, monomorphised, as a `#[global_allocator]` would be.
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

fn pairs<A: GlobalAlloc>(allocator: &A, size: usize, count: usize) {
    let layout = Layout::from_size_align(size, 8).unwrap();
    for _ in 0..count {
        // SAFETY: a valid non-zero layout; the block is freed with the same layout.
        unsafe {
            let p = black_box(allocator.alloc(layout));
            assert!(!p.is_null());
            p.write(1);
            allocator.dealloc(black_box(p), layout);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let name = args.next().unwrap_or_else(|| "ebbmalloc".to_string());
    let count: usize = args.next().map_or(1_000_000, |n| n.parse().expect("pair count"));
    let size: usize = args.next().map_or(64, |n| n.parse().expect("size"));
    match name.as_str() {
        "ebbmalloc" => pairs(&ebbmalloc::EbbMalloc, size, count),
        "system" => pairs(&System, size, count),
        "jemalloc" => pairs(&tikv_jemallocator::Jemalloc, size, count),
        "mimalloc" => pairs(&mimalloc::MiMalloc, size, count),
        other => panic!("unknown allocator {other}: ebbmalloc, system, jemalloc, mimalloc"),
    }
}
