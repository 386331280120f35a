//! The origin story in miniature: two threads build a heap of small objects, the program
//! drops it, and we watch the process's resident size (`VmRSS`) fall.
//!
//! `cargo run --release --example footprint [MiB per thread, default 256]`
#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use std::time::{Duration, Instant};

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS line")
}

fn build(bytes: usize, seed: usize) -> Vec<Box<[u8]>> {
    let mut objects = Vec::new();
    let (mut total, mut i) = (0, 0);
    while total < bytes {
        let size = 16 + (i * 7 + seed) % 200;
        objects.push(vec![1u8; size].into_boxed_slice());
        total += size;
        i += 1;
    }
    objects
}

fn main() {
    let per_thread = std::env::args()
        .nth(1)
        .map_or(256, |mib| mib.parse::<usize>().expect("MiB per thread"))
        << 20;
    let started = Instant::now();
    let builders: Vec<_> = (0..2)
        .map(|seed| std::thread::spawn(move || build(per_thread, seed)))
        .collect();
    let heaps: Vec<_> = builders.into_iter().map(|h| h.join().unwrap()).collect();
    let peak = rss_kib();
    println!(
        "built in {:?}; peak RSS {} MiB",
        started.elapsed(),
        peak >> 10
    );
    drop(heaps);
    let dropped = Instant::now();
    for ms in [0u64, 100, 250, 500, 1000, 2000, 3000] {
        while dropped.elapsed() < Duration::from_millis(ms) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let rss = rss_kib();
        println!(
            "{ms:>5} ms after the drop: {:>5} MiB ({:.1}% of peak)",
            rss >> 10,
            rss as f64 * 100.0 / peak as f64
        );
    }
    let stats = ebbmalloc::stats();
    println!(
        "stats: resident {} MiB, allocated {} KiB, {} trim passes released {} MiB",
        stats.resident_bytes >> 20,
        stats.allocated_bytes >> 10,
        stats.trim_passes,
        stats.trimmed_bytes >> 20
    );
}
