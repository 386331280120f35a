//! Producer/consumer: one thread allocates batches of blocks, another frees them; the batches
//! go through a bounded channel, so every block is freed on the other thread.

use crate::block::Block;
use crate::rng::XorShift;
use crate::{Metric, Scale};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

const BATCH: usize = 64;
const CHANNEL: usize = 16;

pub fn run(scale: Scale, seed: u64) -> Vec<Metric> {
    let blocks = scale.pick(60_000_000, 3_000_000, 20_000);
    let batches = blocks / BATCH as u64;
    let (tx, rx) = sync_channel::<Vec<Block>>(CHANNEL);
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        for batch in rx {
            for b in &batch {
                sum = sum.wrapping_add(b.first() as u64);
            }
            drop(batch);
        }
        sum
    });
    let producer = std::thread::spawn(move || {
        let mut rng = XorShift::new(seed);
        for i in 0..batches {
            let batch: Vec<Block> = (0..BATCH)
                .map(|_| Block::new(rng.range(16, 512), i as u8))
                .collect();
            tx.send(batch).expect("consumer alive");
        }
    });
    producer.join().expect("producer");
    std::hint::black_box(consumer.join().expect("consumer"));
    let secs = start.elapsed().as_secs_f64();
    vec![Metric::mops(
        "blocks",
        "Mblocks/s",
        batches * BATCH as u64,
        secs,
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_run() {
        let m = run(Scale::Tiny, 5);
        assert_eq!(m.len(), 1);
        assert!(m[0].value > 0.0);
    }
}
