//! A larson-style server simulation: each of T threads owns an array of slots and replaces
//! random slots with new blocks of random size; every so often it hands half of its blocks
//! to the next thread and takes what the previous one handed it, so blocks are freed on
//! other threads than the ones that allocated them.

use crate::block::Block;
use crate::rng::XorShift;
use crate::{Metric, Scale};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

const SLOTS: usize = 1000;
const MIN: usize = 16;
const MAX: usize = 1024;
/// Operations between two hand-offs.
const PERIOD: u64 = 10_000;

pub fn run(scale: Scale, seed: u64) -> Vec<Metric> {
    let total = scale.pick(100_000_000, 4_000_000, 40_000);
    [2usize, 4, 8]
        .iter()
        .map(|&threads| {
            let secs = run_threads(threads, total, seed);
            Metric::mops(&format!("{threads} threads"), "Mops/s", total, secs)
        })
        .collect()
}

/// Runs `total` operations split over `threads` threads; returns the seconds taken.
fn run_threads(threads: usize, total: u64, seed: u64) -> f64 {
    let per_thread = total / threads as u64;
    let mailboxes: Arc<Vec<Mutex<Vec<Block>>>> =
        Arc::new((0..threads).map(|_| Mutex::new(Vec::new())).collect());
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mailboxes = Arc::clone(&mailboxes);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut rng = XorShift::stream(seed, t as u64);
                let mut slots: Vec<Option<Block>> = (0..SLOTS)
                    .map(|_| Some(Block::new(rng.range(MIN, MAX), t as u8)))
                    .collect();
                barrier.wait();
                for op in 1..=per_thread {
                    let i = rng.below(SLOTS);
                    slots[i] = None;
                    slots[i] = Some(Block::new(rng.range(MIN, MAX), op as u8));
                    if op % PERIOD == 0 {
                        hand_off(&mut slots, &mailboxes, t, &mut rng);
                    }
                }
                barrier.wait();
                drop(slots);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    barrier.wait();
    let secs = start.elapsed().as_secs_f64();
    for h in handles {
        h.join().expect("larson thread");
    }
    secs
}

/// Sends every other slot's block to the next thread, then fills the empty slots with the
/// blocks the previous thread sent (new blocks where there are too few; the surplus is freed).
fn hand_off(
    slots: &mut [Option<Block>],
    mailboxes: &[Mutex<Vec<Block>>],
    me: usize,
    rng: &mut XorShift,
) {
    let next = (me + 1) % mailboxes.len();
    let outgoing: Vec<Block> = slots
        .iter_mut()
        .step_by(2)
        .filter_map(Option::take)
        .collect();
    mailboxes[next].lock().expect("mailbox").extend(outgoing);
    let incoming = std::mem::take(&mut *mailboxes[me].lock().expect("mailbox"));
    let mut incoming = incoming.into_iter();
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        *slot = Some(match incoming.next() {
            Some(b) => b,
            None => Block::new(rng.range(MIN, MAX), me as u8),
        });
    }
    drop(incoming);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_run() {
        let m = run(Scale::Tiny, 5);
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].name, "8 threads");
        assert!(m.iter().all(|m| m.value > 0.0));
    }
}
