//! Heap profiling with ebbmalloc: allocates 64 MiB from `alloc_a` and 16 MiB from
//! `alloc_b` in blocks of several sizes, frees half of `alloc_b`'s, writes `heap.pb.gz`
//! (read it with `go tool pprof -top heap.pb.gz` or `pprof -top heap.pb.gz`) and prints the
//! estimated live bytes of each function.
//!
//! `cargo run --release -p ebbmalloc-pprof --example heap_profile`

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

/// Block sizes, each given a quarter of a function's bytes.
const SIZES: [usize; 4] = [64, 1024, 16 << 10, 256 << 10];

/// `total` bytes in blocks of [`SIZES`], each filled. Inlined, so that the allocations are
/// made from the frames of `alloc_a` and `alloc_b` (a call would be a tail call, which
/// leaves their frames off the stack).
#[inline(always)]
fn blocks(total: usize) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    for size in SIZES {
        for i in 0..total / SIZES.len() / size {
            blocks.push(vec![i as u8; size]);
        }
    }
    blocks
}

#[inline(never)]
fn alloc_a() -> Vec<Vec<u8>> {
    blocks(64 << 20)
}

#[inline(never)]
fn alloc_b() -> Vec<Vec<u8>> {
    blocks(16 << 20)
}

fn main() -> std::io::Result<()> {
    ebbmalloc::profiling::set_active(true);
    let a = alloc_a();
    let mut b = alloc_b();
    // Free every other block of `alloc_b`: half of its bytes of each size.
    let mut index = 0;
    b.retain(|_| {
        index += 1;
        index % 2 == 0
    });
    ebbmalloc_pprof::write_pprof("heap.pb.gz")?;
    let profile = ebbmalloc::profiling::snapshot();
    if std::env::var_os("HEAP_PROFILE_SUMMARY").is_some() {
        print!("{}", ebbmalloc_pprof::text_summary(&profile, 30));
    }
    let summary = ebbmalloc_pprof::summarize(&profile);
    for name in ["alloc_a", "alloc_b"] {
        let live = summary
            .iter()
            .find(|function| function.name.rsplit("::").next() == Some(name))
            .map_or(0.0, |function| function.cum_live_bytes);
        println!("{name}: estimated live {live:.0} bytes");
    }
    println!(
        "(allocated: alloc_a {} bytes live, alloc_b {} bytes live; wrote heap.pb.gz, {} stacks)",
        a.iter().map(Vec::len).sum::<usize>(),
        b.iter().map(Vec::len).sum::<usize>(),
        profile.stacks.len()
    );
    Ok(())
}
