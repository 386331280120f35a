//! The origin story (Evan Jones, CPython 2.5): build a large structure of small objects,
//! drop it, and see whether the memory goes back to the OS; then rebuild half of it, free a
//! random 90% and allocate the same volume again: is freed memory reused, or does the
//! footprint grow?
//!
//! Two long-lived threads do the work, each on its own half; the main thread only gives
//! orders and reads the resident set between them.

use crate::rng::XorShift;
use crate::threads::sample_after;
use crate::{rss, Better, Kind, Metric, Scale};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Instant;

const CHUNK: usize = 1024;
const MIN: usize = 32;
const MAX: usize = 256;

enum Order {
    /// Allocate this many more payload bytes.
    Build(usize),
    /// Drop everything.
    Drop,
    /// Free a random 90% of the objects, then allocate the same volume again.
    Churn,
    Exit,
}

/// One thread's objects: byte vectors of 32..=256 bytes, filled, in chunks of 1024.
struct Heap {
    rng: XorShift,
    chunks: Vec<Vec<Vec<u8>>>,
    tag: u8,
}

impl Heap {
    fn object(&mut self) -> Vec<u8> {
        self.tag = self.tag.wrapping_add(1) | 1;
        vec![self.tag; self.rng.range(MIN, MAX)]
    }

    fn push(&mut self, v: Vec<u8>) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks.last_mut().expect("a chunk").push(v);
    }

    fn build(&mut self, bytes: usize) {
        let mut done = 0;
        while done < bytes {
            let v = self.object();
            done += v.len();
            self.push(v);
        }
    }

    fn churn(&mut self) {
        let mut freed = 0;
        for chunk in &mut self.chunks {
            for slot in chunk.iter_mut() {
                if self.rng.below(10) != 0 {
                    freed += slot.len();
                    *slot = Vec::new();
                }
            }
        }
        let mut again = 0;
        'refill: for c in 0..self.chunks.len() {
            for s in 0..self.chunks[c].len() {
                if again >= freed {
                    break 'refill;
                }
                if self.chunks[c][s].is_empty() {
                    let v = self.object();
                    again += v.len();
                    self.chunks[c][s] = v;
                }
            }
        }
        while again < freed {
            let v = self.object();
            again += v.len();
            self.push(v);
        }
    }
}

fn worker(seed: u64, n: u64, orders: Receiver<Order>, done: Sender<()>) {
    let mut heap = Heap {
        rng: XorShift::stream(seed, n),
        chunks: Vec::new(),
        tag: 0,
    };
    for order in orders {
        match order {
            Order::Build(bytes) => heap.build(bytes),
            Order::Drop => heap.chunks = Vec::new(),
            Order::Churn => heap.churn(),
            Order::Exit => break,
        }
        done.send(()).expect("main thread alive");
    }
}

pub fn run(scale: Scale, seed: u64) -> Vec<Metric> {
    const THREADS: usize = 2;
    let per_thread = scale.pick(512 << 20, 64 << 20, 1 << 20) as usize;
    let (done_tx, done_rx) = channel();
    let workers: Vec<_> = (0..THREADS)
        .map(|n| {
            let (tx, rx) = channel();
            let done = done_tx.clone();
            let h = std::thread::spawn(move || worker(seed, n as u64, rx, done));
            (tx, h)
        })
        .collect();
    let order_all = |make: &dyn Fn() -> Order| {
        for (tx, _) in &workers {
            tx.send(make()).expect("worker alive");
        }
        for _ in 0..THREADS {
            done_rx.recv().expect("worker alive");
        }
    };

    let baseline = rss::current_kib();
    let start = Instant::now();
    order_all(&|| Order::Build(per_thread));
    let build_secs = start.elapsed().as_secs_f64();
    let first = rss::read();

    order_all(&|| Order::Drop);
    let mut metrics = vec![
        Metric::rss("baseline", baseline),
        Metric::new("first build", "s", build_secs, Better::Lower, Kind::Time),
        Metric::rss("first peak", first.hwm_kib),
        Metric::rss_time("live", first.rss_kib),
    ];
    metrics.extend(sample_after(Instant::now(), scale, "dropped +"));

    // The rebuild's own peak: reset VmHWM, or failing that, sample between the steps.
    let reset = rss::reset_peak();
    order_all(&|| Order::Build(per_thread / 2));
    let after_half = rss::current_kib();
    order_all(&|| Order::Churn);
    let end = rss::read();
    let rebuild_peak = if reset {
        end.hwm_kib
    } else {
        after_half.max(end.rss_kib)
    };
    order_all(&|| Order::Drop);
    for (tx, _) in &workers {
        tx.send(Order::Exit).expect("worker alive");
    }
    for (_, h) in workers {
        h.join().expect("origin worker");
    }

    metrics.push(Metric::rss("rebuild peak", rebuild_peak));
    metrics.push(Metric::rss("rebuild end", end.rss_kib));
    metrics.push(Metric::new(
        "rebuild peak / first peak",
        "ratio",
        rebuild_peak as f64 / first.hwm_kib.max(1) as f64,
        Better::Lower,
        Kind::Ratio,
    ));
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_keeps_the_volume() {
        let mut heap = Heap {
            rng: XorShift::new(9),
            chunks: Vec::new(),
            tag: 0,
        };
        heap.build(200_000);
        let volume = |h: &Heap| -> usize { h.chunks.iter().flatten().map(Vec::len).sum() };
        let before = volume(&heap);
        assert!((200_000..200_000 + MAX).contains(&before));
        heap.churn();
        let after = volume(&heap);
        assert!(after >= before && after < before + MAX, "{before} {after}");
        assert!(heap.chunks.iter().all(|c| c.len() <= CHUNK));
    }

    #[test]
    fn tiny_run() {
        let m = run(Scale::Tiny, 1);
        assert_eq!(m.len(), 11);
        assert_eq!(m[10].kind, Kind::Ratio);
        assert!(m[10].value > 0.0);
    }
}
