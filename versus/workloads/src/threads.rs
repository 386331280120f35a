//! Thread life cycles: `thread-churn` (many short-lived threads), and threads that free
//! everything and then sit parked (does the memory come back?): a few with much memory
//! each (`idle-threads`) and many with a little each, the shape of a blocking pool
//! (`parked-pool`).

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

/// The label of the time point one second after the frees.
const ONE_SECOND: &str = "1 s";

/// The points of an RSS-over-time line after the frees: (label, delay).
pub fn time_points(scale: Scale) -> Vec<(&'static str, Duration)> {
    let ms = Duration::from_millis;
    match scale {
        Scale::Full | Scale::Quick => vec![
            ("0 ms", ms(0)),
            ("100 ms", ms(100)),
            (ONE_SECOND, ms(1000)),
            ("3 s", ms(3000)),
        ],
        // The unit tests only check the shape.
        Scale::Tiny => vec![
            ("0 ms", ms(0)),
            ("100 ms", ms(10)),
            (ONE_SECOND, ms(20)),
            ("3 s", ms(30)),
        ],
    }
}

/// The resident set in kB at each time point after `t0`, with the point's label.
fn rss_after(t0: Instant, scale: Scale) -> Vec<(&'static str, u64)> {
    time_points(scale)
        .into_iter()
        .map(|(label, at)| {
            if let Some(wait) = (t0 + at).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            (label, rss::current_kib())
        })
        .collect()
}

/// RSS-over-time figures of `samples`, labelled `prefix + label`.
fn over_time(samples: &[(&str, u64)], prefix: &str) -> Vec<Metric> {
    samples
        .iter()
        .map(|&(label, kib)| Metric::rss_time(&format!("{prefix}{label}"), kib))
        .collect()
}

/// Samples the resident set at each time point after `t0`, labelled `prefix + label`.
pub fn sample_after(t0: Instant, scale: Scale, prefix: &str) -> Vec<Metric> {
    over_time(&rss_after(t0, scale), prefix)
}

pub fn run_idle(scale: Scale, seed: u64) -> Vec<Metric> {
    let threads = scale.pick(8, 4, 2) as usize;
    let bytes_each = scale.pick(32 << 20, 8 << 20, 256 << 10) as usize;
    run_parked(scale, threads, None, move |n| {
        let mut rng = XorShift::stream(seed, n);
        let mut blocks = Vec::new();
        let mut total = 0;
        while total < bytes_each {
            let size = rng.range(16, 256);
            total += size;
            blocks.push(Block::new(size, total as u8));
        }
        blocks
    })
}

/// Stack of each `parked-pool` thread. A parked thread keeps about 10 KiB of its stack, TLS
/// and thread descriptor resident whatever its stack size (512 threads that allocate 100
/// bytes and park: +5.0 MiB under glibc with 64 KiB stacks, +5.1 MiB with 2 MiB ones), so
/// the stacks' share of the per-thread figure is about 10 KiB; the small size keeps the
/// reservation at 32 MiB of address space instead of 1 GiB.
const POOL_STACK_BYTES: usize = 64 << 10;

/// The shape of a blocking pool (tokio's allows 512 threads): each thread runs one task that
/// allocates and frees a few MiB of small blocks, then sits parked until it times out.
pub fn run_parked_pool(scale: Scale, seed: u64) -> Vec<Metric> {
    let threads = scale.pick(512, 128, 8) as usize;
    let bytes_each = scale.pick(2 << 20, 2 << 20, 64 << 10) as usize;
    run_parked(scale, threads, Some(POOL_STACK_BYTES), move |n| {
        pool_task(&mut XorShift::stream(seed, n), bytes_each)
    })
}

/// Allocates `bytes` in blocks of 16 B .. 1 KiB (60% up to 128 B); before each allocation,
/// one time in two, frees a random block allocated earlier, so the thread's cache fills and
/// empties as it goes. Returns the blocks still live (about half the bytes).
fn pool_task(rng: &mut XorShift, bytes: usize) -> Vec<Block> {
    let mut kept: Vec<Block> = Vec::new();
    let mut total = 0;
    while total < bytes {
        let size = if rng.below(10) < 6 {
            rng.range(16, 128)
        } else {
            rng.range(129, 1024)
        };
        total += size;
        if !kept.is_empty() && rng.below(2) == 0 {
            let i = rng.below(kept.len());
            kept.swap_remove(i);
        }
        kept.push(Block::new(size, total as u8));
    }
    kept
}

/// `threads` threads (on stacks of `stack_bytes`, std's default if `None`) each run
/// `work(n)`, `n` being the thread's number, and free what it returns; then they park while
/// the main thread samples the resident set, and exit. Besides the RSS line, one figure
/// states how much each parked thread holds: the resident set above the baseline one second
/// after the frees, per thread.
fn run_parked<F>(scale: Scale, threads: usize, stack_bytes: Option<usize>, work: F) -> Vec<Metric>
where
    F: Fn(u64) -> Vec<Block> + Send + Sync + 'static,
{
    let baseline = rss::current_kib();
    let work = Arc::new(work);
    // Three meeting points: all built; all freed; told to exit.
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|n| {
            let (barrier, work) = (Arc::clone(&barrier), Arc::clone(&work));
            let mut builder = std::thread::Builder::new();
            if let Some(bytes) = stack_bytes {
                builder = builder.stack_size(bytes);
            }
            builder
                .spawn(move || {
                    let blocks = work(n as u64);
                    barrier.wait();
                    drop(blocks);
                    barrier.wait();
                    // Parked until the main thread has sampled the resident set.
                    barrier.wait();
                })
                .expect("spawn a parked thread")
        })
        .collect();
    barrier.wait();
    let live = rss::current_kib();
    barrier.wait();
    let freed = rss_after(Instant::now(), scale);
    let mut metrics = vec![Metric::rss("baseline", baseline)];
    metrics.push(Metric::rss_time("live", live));
    metrics.extend(over_time(&freed, "freed +"));
    if let Some(&(_, kib)) = freed.iter().find(|(label, _)| *label == ONE_SECOND) {
        metrics.push(Metric::rss_per_thread(
            "per parked thread +1 s",
            kib.saturating_sub(baseline),
            threads,
        ));
    }
    barrier.wait();
    for h in handles {
        h.join().expect("parked thread");
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
    use crate::Kind;

    #[test]
    fn tiny_runs() {
        let m = run_churn(Scale::Tiny, 1);
        assert_eq!(m.len(), 3);
        assert!(m[0].value > 0.0);
        let parked_names = [
            "baseline",
            "live",
            "freed +0 ms",
            "freed +100 ms",
            "freed +1 s",
            "freed +3 s",
            "per parked thread +1 s",
            "threads exited",
            "threads exited +1 s",
            "peak",
        ];
        for m in [run_idle(Scale::Tiny, 1), run_parked_pool(Scale::Tiny, 1)] {
            let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, parked_names);
            let per_thread = &m[6];
            assert_eq!(per_thread.kind, Kind::RssPerThread);
            assert_eq!(per_thread.unit, "KiB");
            assert!(per_thread.value >= 0.0);
        }
    }

    #[test]
    fn pool_tasks_keep_about_half_and_churn() {
        let blocks = pool_task(&mut XorShift::new(3), 1 << 20);
        let kept: usize = blocks.iter().map(Block::size).sum();
        assert!((300 << 10..700 << 10).contains(&kept), "{kept}");
        assert!(blocks.iter().all(|b| (16..=1024).contains(&b.size())));
    }
}
