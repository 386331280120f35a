//! The heap profiler's core with `EbbMalloc` as the global allocator: sampled blocks
//! behave as blocks (contents kept by `realloc`, zeroed memory zero, alignment held, C
//! `free`/`realloc`/`malloc_usable_size` accept them), frees of sampled blocks leave the
//! live profile, and the estimates follow what was allocated.
//!
//! One test function: the profiler's switch and the sampling interval are process-wide.

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use ebbmalloc::profiling;
use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};

/// Below this address a block of ours is a sampled small block (`profiling.rs`).
const SAMPLED_LIMIT: usize = 0x5000_0000;

fn set_interval(bytes: usize) {
    let mut settings = ebbmalloc::Settings::current();
    settings.prof_sample_bytes = bytes;
    ebbmalloc::configure(&settings);
}

/// Resident KiB of the range of sampled small blocks (`profiling.rs`: 1 GiB at 256 MiB),
/// from the kernel's side.
fn sampled_range_rss_kib() -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_range = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, _)) = range.split_once('-') {
                if let Ok(start) = usize::from_str_radix(start, 16) {
                    in_range = start == 0x1000_0000;
                    continue;
                }
            }
        }
        if in_range {
            if let Some(rss) = line.strip_prefix("Rss:") {
                return rss.trim().trim_end_matches(" kB").parse().unwrap();
            }
        }
    }
    panic!("the range of sampled blocks is not mapped");
}

fn live_totals() -> (u64, f64) {
    let profile = profiling::snapshot();
    profile
        .stacks
        .iter()
        .fold((0, 0.0), |(samples, bytes), stack| {
            (
                samples + stack.counts.live_samples,
                bytes + stack.counts.live_bytes,
            )
        })
}

#[test]
fn sampled_blocks_behave_and_leave_the_live_profile() {
    assert!(!profiling::is_active(), "off by default");
    let (samples_before, _) = live_totals();
    assert_eq!(samples_before, 0, "nothing sampled while inactive");

    set_interval(16 << 10);
    profiling::set_active(true);
    assert!(profiling::is_active());

    // Rust API: sizes of several classes, alignments, zeroing, realloc.
    let mut blocks = Vec::with_capacity(20_000);
    let mut sampled = 0;
    for i in 0..20_000usize {
        let size = [24, 100, 700, 3000, 40_000][i % 5];
        let align = [8, 16, 64, 4096, 8][i % 5];
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a valid non-zero layout.
        let block = unsafe {
            if i % 3 == 0 {
                alloc_zeroed(layout)
            } else {
                alloc(layout)
            }
        };
        assert!(!block.is_null());
        assert_eq!(block as usize % align, 0, "alignment of {size}/{align}");
        if i % 3 == 0 {
            // SAFETY: the block holds `size` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(block, size) };
            assert!(
                bytes.iter().all(|&b| b == 0),
                "zeroed block of {size} bytes"
            );
        }
        if (block as usize) < SAMPLED_LIMIT {
            sampled += 1;
        }
        // SAFETY: the block holds `size` bytes.
        unsafe { block.write_bytes((i % 251) as u8, size) };
        blocks.push((block, layout, i));
    }
    assert!(sampled > 100, "sampled small blocks: {sampled}");

    let (live_samples, live_bytes) = live_totals();
    assert!(live_samples >= sampled, "{live_samples} < {sampled}");
    let allocated: usize = blocks.iter().map(|(_, layout, _)| layout.size()).sum();
    let ratio = live_bytes / allocated as f64;
    assert!(
        (0.85..1.15).contains(&ratio),
        "estimate/allocated = {ratio}"
    );

    // Grow every block: contents kept, sampled or not.
    for (block, layout, i) in blocks.iter_mut() {
        let new_size = layout.size() * 2 + 8;
        // SAFETY: a live block of this layout.
        let moved = unsafe { realloc(*block, *layout, new_size) };
        assert!(!moved.is_null());
        // SAFETY: the block holds at least the old size.
        let bytes = unsafe { std::slice::from_raw_parts(moved, layout.size()) };
        assert!(
            bytes.iter().all(|&b| b == (*i % 251) as u8),
            "contents after realloc"
        );
        *block = moved;
        *layout = Layout::from_size_align(new_size, layout.align()).unwrap();
    }
    for (block, layout, _) in blocks.drain(..) {
        // SAFETY: a live block of this layout.
        unsafe { dealloc(block, layout) };
    }

    // C API: malloc, calloc, realloc, malloc_usable_size and free take sampled blocks.
    let mut c_blocks = Vec::with_capacity(5000);
    let mut c_sampled = 0;
    for i in 0..5000usize {
        let size = 50 + i % 900;
        let block = if i % 2 == 0 {
            ebbmalloc::c_abi::malloc(size)
        } else {
            ebbmalloc::c_abi::calloc(1, size)
        } as *mut u8;
        assert!(!block.is_null());
        // SAFETY: a live block of ours.
        assert!(unsafe { ebbmalloc::c_abi::malloc_usable_size(block.cast()) } >= size);
        if (block as usize) < SAMPLED_LIMIT {
            c_sampled += 1;
        }
        // SAFETY: the block holds `size` bytes.
        unsafe { block.write_bytes(7, size) };
        // SAFETY: a live block of ours.
        let moved = unsafe { ebbmalloc::c_abi::realloc(block.cast(), size + 3000) } as *mut u8;
        assert!(!moved.is_null());
        // SAFETY: the block holds at least `size` bytes.
        assert!(unsafe { std::slice::from_raw_parts(moved, size) }
            .iter()
            .all(|&b| b == 7));
        c_blocks.push(moved);
    }
    assert!(c_sampled > 10, "sampled C blocks: {c_sampled}");
    for block in c_blocks {
        // SAFETY: a live block of ours.
        unsafe { ebbmalloc::c_abi::free(block.cast()) };
    }

    // Large blocks, sampled nearly always at this interval.
    let large = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: a valid layout.
    let big: Vec<*mut u8> = (0..16).map(|_| unsafe { alloc(large) }).collect();
    let (_, live_with_large) = live_totals();
    assert!(
        live_with_large >= (15 << 20) as f64,
        "large blocks sampled: {live_with_large}"
    );
    for block in big {
        // SAFETY: a live block of this layout.
        unsafe { dealloc(block, large) };
    }

    // A large block allocated while profiling is off, then grown by `realloc` (in place or
    // moved by `mremap`) while it is on: the growth is an allocation of the new size for
    // the sampler, and at this interval it is sampled.
    profiling::set_active(false);
    // SAFETY: a valid layout.
    let unsampled = unsafe { alloc(large) };
    assert!(!unsampled.is_null());
    // SAFETY: the block holds 1 MiB.
    unsafe { unsampled.write_bytes(0x5a, 1 << 20) };
    profiling::set_active(true);
    let (_, before_growth) = live_totals();
    let grown = grow_keeping_first_megabyte(unsampled, large, 8 << 20);
    let (_, after_growth) = live_totals();
    assert!(
        after_growth - before_growth > (7 << 20) as f64,
        "a large block grown by realloc is in the live profile: {before_growth} -> {after_growth}"
    );
    // Grown again while sampled: its old record ends, the new size is sampled (nearly
    // surely at this interval), nothing counted twice.
    let grown_layout = Layout::from_size_align(8 << 20, 8).unwrap();
    let grown = grow_keeping_first_megabyte(grown, grown_layout, 16 << 20);
    let (_, after_regrowth) = live_totals();
    let added = after_regrowth - before_growth;
    assert!(
        ((15 << 20) as f64..(17 << 20) as f64).contains(&added),
        "a sampled large block grown again is counted once, at its new size: {added}"
    );
    let grown_layout = Layout::from_size_align(16 << 20, 8).unwrap();
    // SAFETY: a live block of this layout.
    unsafe { dealloc(grown, grown_layout) };
    let (_, after_free) = live_totals();
    assert!(
        after_free - before_growth < (1 << 20) as f64,
        "the grown block left the live profile: {after_free}"
    );

    // A burst of samples: thousands of sampled small blocks live at once, then freed. Their
    // slots' pages go back to the OS beyond a budget of 4 MiB, first pages included.
    set_interval(1 << 10);
    let small = Layout::from_size_align(256, 8).unwrap();
    // SAFETY: a valid layout.
    let burst: Vec<*mut u8> = (0..25_000).map(|_| unsafe { alloc(small) }).collect();
    for &block in &burst {
        assert!(!block.is_null());
        // SAFETY: the block holds 256 bytes.
        unsafe { block.write_bytes(1, 256) };
    }
    let burst_rss = sampled_range_rss_kib();
    assert!(
        burst_rss > 16 << 10,
        "sampled slots resident: {burst_rss} KiB"
    );
    for block in burst {
        // SAFETY: a live block of this layout.
        unsafe { dealloc(block, small) };
    }
    let after_burst = sampled_range_rss_kib();
    assert!(
        after_burst <= 4 << 10,
        "freed sampled slots keep {after_burst} KiB resident (of {burst_rss})"
    );
    // What they keep goes back after the decay time, without a call (the background
    // trimmer's pass; the default decay is 300 ms), once no sample is taken: sampling off
    // meanwhile, as the reads of smaps would be sampled at this interval, and their frees
    // keep slots' pages (a steady sampler keeps them, within the budget).
    profiling::set_active(false);
    let start = std::time::Instant::now();
    while sampled_range_rss_kib() > 256 && start.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let idle = sampled_range_rss_kib();
    assert!(
        idle <= 256,
        "freed sampled slots still keep {idle} KiB after 5 s"
    );
    profiling::set_active(true);
    set_interval(16 << 10);

    // The C library's dump: gperftools' heap_v2 text, which pprof reads.
    let path = std::env::temp_dir().join(format!("ebbmalloc-prof-{}.heap", std::process::id()));
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { ebbmalloc::c_abi::prof_dump(c_path.as_ptr()) }, 0);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("heap profile: ") && header.ends_with("@ heap_v2/16384"),
        "{header}"
    );
    let stack_line = lines.next().unwrap();
    assert!(stack_line.contains("] @ 0x"), "{stack_line}");
    assert!(text.contains("\nMAPPED_LIBRARIES:\n"));
    // SAFETY: null is refused, not read.
    assert_eq!(unsafe { ebbmalloc::c_abi::prof_dump(std::ptr::null()) }, -1);

    profiling::set_active(false);
    let profile = profiling::snapshot();
    assert!(!profile.active);
    // Everything this test allocated is freed; what is still live was allocated by the
    // test harness (a few blocks at most).
    let (live_samples, live_bytes) = live_totals();
    assert!(
        live_samples < 20 && live_bytes < (1 << 20) as f64,
        "live after freeing everything: {live_samples} samples, {live_bytes} bytes"
    );
    let allocated: f64 = profile.stacks.iter().map(|s| s.counts.alloc_bytes).sum();
    assert!(allocated > (100 << 20) as f64, "cumulative: {allocated}");
    assert!(profile
        .stacks
        .iter()
        .all(|s| !s.frames.is_empty() && s.frames.len() <= profiling::MAX_DEPTH));
    assert_eq!(profile.dropped_samples, 0);
}

/// `realloc`s the live large block `block` (of `layout`, its first megabyte filled with
/// 0x5a) to `new_size` bytes, and checks the new block kept that megabyte.
fn grow_keeping_first_megabyte(block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: a live block of this layout (the caller's).
    let grown = unsafe { realloc(block, layout, new_size) };
    assert!(!grown.is_null());
    // SAFETY: the block holds at least the old megabyte.
    assert!(unsafe { std::slice::from_raw_parts(grown, 1 << 20) }
        .iter()
        .all(|&b| b == 0x5a));
    grown
}
