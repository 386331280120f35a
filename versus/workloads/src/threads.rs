//! Thread life cycles: `thread-churn` (many short-lived threads) and `idle-threads`
//! (threads that free everything and then sit parked: does the memory come back?).

use crate::block::Block;
use crate::rng::XorShift;
use crate::{rss, Metric, Scale};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Threads alive at once in `thread-churn`.
const WAVE: u64 = 4;

pub fn run_churn(scale: Scale, seed: u64) -> Vec<Metric> {
    let threads = scale.pick(40_000, 2_000, 40);
    let start = Instant::now();
    let mut spawned = 0;
    while spawned < threads {
        let wave: Vec<_> = (0..WAVE.min(threads - spawned))
            .map(|k| {
                let n = spawned + k;
                std::thread::spawn(move || churn_thread(seed, n))
            })
            .collect();
        spawned += wave.len() as u64;
        for h in wave {
            std::hint::black_box(h.join().expect("churn thread"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let r = rss::read();
    vec![
        Metric::mops("threads", "kthreads/s", threads * 1000, secs),
        Metric::rss("RSS at end", r.rss_kib),
        Metric::rss("peak RSS", r.hwm_kib),
    ]
}

/// A little allocation: 64 blocks of 16 B .. 1 KiB, a `Vec` grown to 100, a `String`.
fn churn_thread(seed: u64, n: u64) -> usize {
    let mut rng = XorShift::stream(seed, n);
    let blocks: Vec<Block> = (0..64)
        .map(|i| Block::new(rng.range(16, 1024), i as u8))
        .collect();
    let mut v = Vec::new();
    for i in 0..100u64 {
        v.push(i);
    }
    let mut s = String::new();
    for _ in 0..50 {
        s.push_str("churn");
    }
    blocks.len() + v.len() + s.len()
}

/// The points of an RSS-over-time line after the frees: (label, delay).
pub fn time_points(scale: Scale) -> Vec<(&'static str, Duration)> {
    let ms = Duration::from_millis;
    match scale {
        Scale::Full | Scale::Quick => vec![
            ("0 ms", ms(0)),
            ("100 ms", ms(100)),
            ("1 s", ms(1000)),
            ("3 s", ms(3000)),
        ],
        // The unit tests only check the shape.
        Scale::Tiny => vec![
            ("0 ms", ms(0)),
            ("100 ms", ms(10)),
            ("1 s", ms(20)),
            ("3 s", ms(30)),
        ],
    }
}

/// Samples the resident set at each time point after `t0`, labelled `prefix + label`.
pub fn sample_after(t0: Instant, scale: Scale, prefix: &str) -> Vec<Metric> {
    time_points(scale)
        .into_iter()
        .map(|(label, at)| {
            if let Some(wait) = (t0 + at).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            Metric::rss_time(&format!("{prefix}{label}"), rss::current_kib())
        })
        .collect()
}

pub fn run_idle(scale: Scale, seed: u64) -> Vec<Metric> {
    let threads = scale.pick(8, 4, 2) as usize;
    let bytes_each = scale.pick(32 << 20, 8 << 20, 256 << 10) as usize;
    let baseline = rss::current_kib();
    // Three meeting points: all built; all freed; told to exit.
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut rng = XorShift::stream(seed, t as u64);
                let mut blocks = Vec::new();
                let mut total = 0;
                while total < bytes_each {
                    let size = rng.range(16, 256);
                    total += size;
                    blocks.push(Block::new(size, total as u8));
                }
                barrier.wait();
                drop(blocks);
                barrier.wait();
                // Parked until the main thread has sampled the resident set.
                barrier.wait();
            })
        })
        .collect();
    barrier.wait();
    let live = rss::current_kib();
    barrier.wait();
    let t0 = Instant::now();
    let mut metrics = vec![Metric::rss("baseline", baseline)];
    metrics.push(Metric::rss_time("live", live));
    metrics.extend(sample_after(t0, scale, "freed +"));
    barrier.wait();
    for h in handles {
        h.join().expect("idle thread");
    }
    metrics.push(Metric::rss_time("threads exited", rss::current_kib()));
    // What exited threads left behind once an allocator had time to act on it (ebbmalloc
    // keeps freed pages for its decay time before it releases them).
    std::thread::sleep(Duration::from_millis(scale.pick(1000, 1000, 20)));
    metrics.push(Metric::rss_time("threads exited +1 s", rss::current_kib()));
    metrics.push(Metric::rss("peak", rss::peak_kib()));
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_runs() {
        let m = run_churn(Scale::Tiny, 1);
        assert_eq!(m.len(), 3);
        assert!(m[0].value > 0.0);
        let m = run_idle(Scale::Tiny, 1);
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "baseline",
                "live",
                "freed +0 ms",
                "freed +100 ms",
                "freed +1 s",
                "freed +3 s",
                "threads exited",
                "threads exited +1 s",
                "peak"
            ]
        );
    }
}
