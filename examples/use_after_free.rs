//! Deliberate misuse of ebbmalloc's blocks, for `scripts/sanitizers.sh`: shows that a
//! sanitizer sees misuse of a block that sits in ebbmalloc's cache only when the allocator
//! is built with the `asan` feature (under `-Zsanitizer=address`) or the `valgrind` feature
//! (under `valgrind --tool=memcheck`).
//!
//! ```sh
//! cargo run --example use_after_free -- <mode>
//! ```
//!
//! | mode             | what it does                                                 |
//! |------------------|--------------------------------------------------------------|
//! | `use-after-free` | frees a 64-byte block (it goes to the thread cache), reads it |
//! | `large`          | the same with a 1 MiB block (it goes to the mapping cache)    |
//! | `overflow`       | reads the byte after a 1 KiB block (a free neighbour)         |
//! | `leak`           | loses the only pointer to 100 blocks of 3 KiB                 |
//! | `clean`          | correct use of small, large, reallocated and cross-thread blocks |
//!
//! Each mode ends by printing `not detected` when no tool stopped it.

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use std::hint::black_box;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "use-after-free" => use_after_free::<64>(),
        "large" => use_after_free::<{ 1 << 20 }>(),
        "overflow" => overflow(),
        "leak" => leak(),
        "clean" => clean(),
        _ => {
            eprintln!("usage: use_after_free use-after-free|large|overflow|leak|clean");
            std::process::exit(2);
        }
    }
    println!("{mode}: not detected");
}

/// Frees a block of `N` bytes and reads a byte of it afterwards.
fn use_after_free<const N: usize>() {
    let block = black_box(vec![7u8; N].into_boxed_slice());
    let raw = block.as_ptr();
    drop(block);
    // SAFETY: none. This read is the use-after-free the tools must report: the block is
    // back in ebbmalloc's cache, still mapped, so without the hooks it reads old bytes.
    let byte = unsafe { raw.add(N / 2).read_volatile() };
    println!("read {byte} from a freed block of {N} bytes");
}

/// Reads one byte past the end of a 1 KiB block: the start of the next block of the class,
/// which is free (in the thread cache, or not carved yet).
fn overflow() {
    let block = black_box(vec![7u8; 1024].into_boxed_slice());
    // SAFETY: none. The read is one past the block's end, the overflow the tools must
    // report.
    let byte = unsafe { block.as_ptr().add(1024).read_volatile() };
    println!("read {byte} past the end of a 1 KiB block");
}

/// Allocates 100 blocks and forgets them.
fn leak() {
    for i in 0..100u8 {
        std::mem::forget(black_box(vec![i; 3000]));
    }
    println!("lost 100 blocks of 3000 bytes");
}

/// Correct use that a tool must not complain about: a cached block reused, `alloc_zeroed`,
/// reallocations across classes and into large blocks, a large block grown in place and
/// moved, and blocks freed by another thread.
fn clean() {
    let mut total = 0u64;
    for round in 0..3u64 {
        let mut boxes: Vec<Box<[u64]>> = (0..2000u64)
            .map(|i| vec![i + round; (i % 40 + 1) as usize].into_boxed_slice())
            .collect();
        let zeroed = vec![0u8; 5000];
        total += zeroed.iter().map(|&b| b as u64).sum::<u64>();
        let mut grown: Vec<u8> = Vec::new();
        for i in 0..(3 << 20) {
            grown.push(i as u8);
        }
        total += grown[(3 << 20) - 1] as u64;
        let handed = std::thread::spawn(move || {
            let sum = boxes.iter().map(|b| b[0]).sum::<u64>();
            boxes.clear();
            sum
        })
        .join()
        .unwrap();
        total += handed;
    }
    println!("checksum {total}");
}
