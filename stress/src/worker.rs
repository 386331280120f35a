//! Worker threads and what they share: the exchange queues that carry blocks from one thread
//! slot to another (so blocks are freed by threads that did not allocate them), the stop
//! and self-test flags, and the operation totals.
//!
//! A worker lives for a random number of operations, then hands a third of its blocks to
//! other slots and frees the rest, and exits; the main thread starts a new worker in its
//! slot, which inherits the blocks queued for the slot. [`spawn`] and [`join`] start and
//! end every thread of the program that is not a raw pthread.

use crate::block::Block;
use crate::fail::{self, Who};
use crate::rng::Rng;
use crate::tester::{Tester, HAND_OFF, KINDS, TRIM};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

/// Blocks a queue holds at most.
const QUEUE_BLOCKS: usize = 256;
/// Bytes a queue holds at most.
const QUEUE_BYTES: usize = 8 << 20;

/// Blocks on their way from one slot to another.
#[derive(Default)]
struct Exchange {
    blocks: Vec<Block>,
    bytes: usize,
}

pub struct Shared {
    pub threads: usize,
    pub seed: u64,
    /// `queues[from * threads + to]`.
    queues: Vec<Mutex<Exchange>>,
    pub stop: AtomicBool,
    /// Set by the main thread for `--self-test-corrupt`; the first worker to see it
    /// corrupts a block.
    pub corrupt: AtomicBool,
    pub totals: [AtomicU64; KINDS.len()],
    /// Threads of the run started so far; each is numbered by the count at its start.
    serials: AtomicU64,
}

impl Shared {
    pub fn new(threads: usize, seed: u64) -> Shared {
        Shared {
            threads,
            seed,
            queues: (0..threads * threads).map(|_| Mutex::default()).collect(),
            stop: AtomicBool::new(false),
            corrupt: AtomicBool::new(false),
            totals: Default::default(),
            serials: AtomicU64::new(0),
        }
    }

    /// The serial number of a thread about to start.
    pub fn new_serial(&self) -> u64 {
        self.serials.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Threads started so far.
    pub fn started(&self) -> u64 {
        self.serials.load(Ordering::Relaxed)
    }

    pub fn total(&self, kind: usize) -> u64 {
        self.totals[kind].load(Ordering::Relaxed)
    }

    fn queue(&self, from: usize, to: usize) -> std::sync::MutexGuard<'_, Exchange> {
        match self.queues[from * self.threads + to].lock() {
            Ok(guard) => guard,
            Err(_) => fail::violation(
                "exchange queue poisoned",
                format_args!("a thread panicked holding the queue {from} -> {to}"),
            ),
        }
    }

    /// Queues `block` for slot `to`, or gives it back when the queue is full.
    fn send(&self, from: usize, to: usize, block: Block) -> Result<(), Block> {
        let mut queue = self.queue(from, to);
        if queue.blocks.len() >= QUEUE_BLOCKS || queue.bytes + block.size > QUEUE_BYTES {
            return Err(block);
        }
        queue.bytes += block.size;
        queue.blocks.push(block);
        Ok(())
    }

    /// Every block queued from `from` to `to`.
    fn receive(&self, from: usize, to: usize) -> Vec<Block> {
        let mut queue = self.queue(from, to);
        queue.bytes = 0;
        std::mem::take(&mut queue.blocks)
    }

    /// Every block of every queue (at the end, with the workers gone).
    pub fn drain_all(&self) -> Vec<Block> {
        let mut all = Vec::new();
        for from in 0..self.threads {
            for to in 0..self.threads {
                all.extend(self.receive(from, to));
            }
        }
        all
    }

    /// In a forked child: the blocks of every queue whose lock was free at the fork (a lock
    /// another thread held then stays held for ever in the child).
    pub fn drain_unlocked(&self) -> Vec<Block> {
        let mut all = Vec::new();
        for queue in &self.queues {
            if let Ok(mut queue) = queue.try_lock() {
                queue.bytes = 0;
                all.append(&mut queue.blocks);
            }
        }
        all
    }
}

/// The body of the `generation`th worker thread in `slot`; `serial` numbers the threads of
/// the run in the order they started.
pub fn run(shared: &Shared, slot: usize, generation: u64, serial: u64) {
    fail::set_who(Who::Worker { slot, serial });
    let stream = ((slot as u64) << 32) | generation;
    let mut tester = Tester::new(Rng::new(shared.seed, stream), serial);
    let lifetime = tester.rng.log_uniform(2_000, 200_000);
    for n in 0..lifetime {
        if n % 64 == 0 {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            receive(shared, slot, &mut tester);
            if shared.corrupt.load(Ordering::Relaxed)
                && shared.corrupt.swap(false, Ordering::Relaxed)
                && !tester.corrupt_one()
            {
                shared.corrupt.store(true, Ordering::Relaxed);
            }
        }
        if n % 4096 == 0 {
            tester.flush_counts(&shared.totals);
        }
        tester.step();
        if shared.threads > 1 && tester.rng.one_in(50) {
            if let Some(block) = tester.take_random() {
                let to = other_slot(&mut tester.rng, shared.threads, slot);
                match shared.send(slot, to, block) {
                    Ok(()) => tester.counts[HAND_OFF] += 1,
                    Err(block) => tester.adopt(block),
                }
            }
        }
        if tester.rng.one_in(50_000) {
            ebbmalloc::trim();
            tester.counts[TRIM] += 1;
        }
    }
    if shared.stop.load(Ordering::Relaxed) || shared.threads == 1 {
        tester.free_all("before free at thread exit");
    } else {
        for block in tester.take_all() {
            let to = other_slot(&mut tester.rng, shared.threads, slot);
            if !tester.rng.one_in(3) {
                tester.free_block(block, "before free at thread exit");
                continue;
            }
            match shared.send(slot, to, block) {
                Ok(()) => tester.counts[HAND_OFF] += 1,
                Err(block) => tester.free_block(block, "before free at thread exit"),
            }
        }
    }
    tester.flush_counts(&shared.totals);
}

/// Checks the blocks other slots queued for `slot`; frees most, keeps some (and resizes
/// half of those: a realloc of a block another thread allocated).
fn receive(shared: &Shared, slot: usize, tester: &mut Tester) {
    for from in (0..shared.threads).filter(|&from| from != slot) {
        for mut block in shared.receive(from, slot) {
            block.check("on receipt from another thread");
            if tester.rng.one_in(4) && tester.room_for(2 * block.size) {
                if tester.rng.one_in(2) {
                    let new_size = tester.rng.range(1, 2 * block.size);
                    tester.resize(&mut block, new_size);
                }
                tester.adopt(block);
            } else {
                tester.free_block(block, "before free of a received block");
            }
        }
    }
}

/// A random slot other than `slot` (`threads > 1`).
pub fn other_slot(rng: &mut Rng, threads: usize, slot: usize) -> usize {
    (slot + rng.range(1, threads - 1)) % threads
}

/// Starts a thread of the program named `name`.
pub fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    start(std::thread::Builder::new(), name, body)
}

/// Starts a thread of the program named `name` on a stack of `stack_bytes`.
pub fn spawn_with_stack(
    name: &str,
    stack_bytes: usize,
    body: impl FnOnce() + Send + 'static,
) -> JoinHandle<()> {
    start(
        std::thread::Builder::new().stack_size(stack_bytes),
        name,
        body,
    )
}

fn start(
    builder: std::thread::Builder,
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> JoinHandle<()> {
    match builder.name(name.into()).spawn(body) {
        Ok(handle) => handle,
        Err(e) => fail::violation("thread spawn failed", format_args!("{name}: {e}")),
    }
}

/// Waits for a thread started by [`spawn`]; a panic in it is a violation.
pub fn join(handle: JoinHandle<()>) {
    if handle.join().is_err() {
        fail::violation("thread panicked", format_args!("see its message above"));
    }
}
