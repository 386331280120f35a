//! Single-thread workloads: `pairs` (alloc+free of one size in a loop) and `window`
//! (a sliding window of random-size blocks).

use crate::block::Block;
use crate::rng::XorShift;
use crate::{Metric, Scale};
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::hint::black_box;
use std::time::Instant;

/// The sizes of `pairs`, with the operation count of a full run for each.
const PAIRS: &[(usize, &str, u64)] = &[
    (16, "16 B", 50_000_000),
    (64, "64 B", 50_000_000),
    (256, "256 B", 50_000_000),
    (1024, "1 KiB", 50_000_000),
    (4096, "4 KiB", 40_000_000),
    (16 << 10, "16 KiB", 20_000_000),
    (64 << 10, "64 KiB", 4_000_000),
    (256 << 10, "256 KiB", 4_000_000),
    (1 << 20, "1 MiB", 4_000_000),
];

/// One alloc+free pair of `layout`, `n` times; the block's first byte is written so the
/// allocation cannot be optimised away or left untouched. Returns the seconds taken.
fn pair_loop(layout: Layout, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        // SAFETY: `layout` has a non-zero size; the block is freed with the same layout.
        unsafe {
            let p = alloc(layout);
            if p.is_null() {
                handle_alloc_error(layout);
            }
            p.write(i as u8);
            dealloc(black_box(p), layout);
        }
    }
    start.elapsed().as_secs_f64()
}

pub fn run_pairs(scale: Scale, _seed: u64) -> Vec<Metric> {
    PAIRS
        .iter()
        .map(|&(size, name, full)| {
            let n = scale.pick(full, full / 20, 1000);
            let layout = Layout::from_size_align(size, 8).expect("valid layout");
            // A short warm-up, so that the first pair's set-up is not timed.
            pair_loop(layout, 100);
            let secs = pair_loop(layout, n);
            Metric::mops(name, "Mops/s", n, secs)
        })
        .collect()
}

/// A ring of `W` live blocks: each operation frees the oldest and allocates a new block of a
/// random size ([`XorShift::mixed_size`]) in its place.
pub fn run_window(scale: Scale, seed: u64) -> Vec<Metric> {
    const W: usize = 10_000;
    let ops = scale.pick(120_000_000, 3_000_000, 20_000);
    let mut rng = XorShift::new(seed);
    let mut ring: Vec<Option<Block>> = (0..W)
        .map(|i| Some(Block::new(rng.mixed_size(), i as u8)))
        .collect();
    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..ops {
        let slot = (i % W as u64) as usize;
        let size = rng.mixed_size();
        if let Some(old) = ring[slot].take() {
            sum = sum.wrapping_add(old.first() as u64);
        }
        ring[slot] = Some(Block::new(size, i as u8));
    }
    let secs = start.elapsed().as_secs_f64();
    black_box(sum);
    drop(ring);
    vec![Metric::mops("free+alloc", "Mops/s", ops, secs)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_runs_report_every_size() {
        let m = run_pairs(Scale::Tiny, 1);
        assert_eq!(m.len(), PAIRS.len());
        assert!(m.iter().all(|m| m.value > 0.0 && m.value.is_finite()));
        let w = run_window(Scale::Tiny, 1);
        assert_eq!(w.len(), 1);
        assert!(w[0].value > 0.0);
    }
}
