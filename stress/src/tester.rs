//! One thread's share of the work: its table of live blocks and the random operations on
//! them (alloc, alloc_zeroed, realloc chains, checks, frees), with the size and alignment
//! mix, and its operation counts.

use crate::block::{self, Block};
use crate::rng::Rng;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of operation counted, in report order.
pub const KINDS: [&str; 8] = [
    "alloc",
    "alloc_zeroed",
    "realloc",
    "free",
    "free (cross-thread)",
    "hand-off",
    "check",
    "trim",
];
pub const ALLOC: usize = 0;
pub const ALLOC_ZEROED: usize = 1;
pub const REALLOC: usize = 2;
pub const FREE: usize = 3;
pub const CROSS_FREE: usize = 4;
pub const HAND_OFF: usize = 5;
pub const CHECK: usize = 6;
pub const TRIM: usize = 7;
/// The kinds that are allocator calls, summed as "ops".
pub const ALLOCATOR_CALLS: [usize; 5] = [ALLOC, ALLOC_ZEROED, REALLOC, FREE, CROSS_FREE];

/// Most bytes one table holds; past it, operations free instead of allocating.
pub const LIVE_BYTES_MAX: usize = 96 << 20;
/// Largest block ever requested.
const HUGE_MAX: usize = 64 << 20;
/// Block counts a table drifts towards, one per phase: drains and build-ups.
const TARGETS: [usize; 5] = [0, 16, 256, 2048, 8192];

/// Block ids are handed to tables this many at a time.
const ID_BATCH: u64 = 1 << 16;

pub struct Tester {
    pub rng: Rng,
    live: Vec<Block>,
    live_bytes: usize,
    /// Serial number of the thread this table belongs to.
    pub serial: u64,
    next_id: u64,
    id_end: u64,
    target: usize,
    phase_left: u64,
    pub counts: [u64; KINDS.len()],
}

impl Tester {
    pub fn new(rng: Rng, serial: u64) -> Tester {
        Tester {
            rng,
            live: Vec::new(),
            live_bytes: 0,
            serial,
            next_id: 0,
            id_end: 0,
            target: TARGETS[2],
            phase_left: 0,
            counts: [0; KINDS.len()],
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn room_for(&self, size: usize) -> bool {
        self.live_bytes + size <= LIVE_BYTES_MAX
    }

    /// One random operation on the table.
    pub fn step(&mut self) {
        if self.phase_left == 0 {
            self.target = TARGETS[self.rng.below(TARGETS.len() as u64) as usize];
            self.phase_left = self.rng.log_uniform(1_000, 200_000) as u64;
        }
        self.phase_left -= 1;
        if self.live.is_empty() {
            self.alloc_random();
            return;
        }
        let over = self.live.len() > self.target || self.live_bytes > LIVE_BYTES_MAX;
        let free_below = if over { 75 } else { 45 };
        match self.rng.below(100) {
            0..=2 => {
                let i = self.pick();
                self.live[i].check("audit of a live block");
                self.counts[CHECK] += 1;
            }
            3..=12 => self.realloc_chain(),
            r if r < free_below => {
                let i = self.pick();
                self.free_at(i, "before free");
            }
            _ => self.alloc_random(),
        }
    }

    /// Allocates a block of a random size and alignment (zeroed once in four).
    pub fn alloc_random(&mut self) {
        let mut size = pick_size(&mut self.rng);
        if !self.room_for(size) {
            size = self.rng.range(8, 1024);
        }
        let align = pick_align(&mut self.rng);
        let zeroed = self.rng.one_in(4);
        let block = self.allocate(size, align, zeroed);
        self.adopt(block);
    }

    /// Allocates a stamped block of this table's thread (not put in the table).
    pub fn allocate(&mut self, size: usize, align: usize, zeroed: bool) -> Block {
        let id = self.next_id();
        self.counts[if zeroed { ALLOC_ZEROED } else { ALLOC }] += 1;
        block::allocate(size, align, zeroed, id, self.serial)
    }

    /// Resizes a block that is not in the table.
    pub fn resize(&mut self, block: &mut Block, new_size: usize) {
        block::reallocate(block, new_size);
        self.counts[REALLOC] += 1;
    }

    /// Resizes one block one to four times in a row, growing or shrinking.
    fn realloc_chain(&mut self) {
        let i = self.pick();
        for _ in 0..self.rng.range(1, 4) {
            self.realloc_at(i);
        }
    }

    fn realloc_at(&mut self, i: usize) {
        let old = self.live[i].size;
        let mut new = match self.rng.below(8) {
            0 => pick_size(&mut self.rng),
            1..=4 => old.saturating_add(self.rng.range(1, old)).min(HUGE_MAX),
            _ => self.rng.range((old / 4).max(1), old),
        };
        if new > old && !self.room_for(new - old) {
            new = self.rng.range((old / 4).max(1), old);
        }
        block::reallocate(&mut self.live[i], new);
        self.live_bytes = self.live_bytes - old + new;
        self.counts[REALLOC] += 1;
    }

    /// Takes a random block out of the table (to hand it to another thread).
    pub fn take_random(&mut self) -> Option<Block> {
        if self.live.is_empty() {
            return None;
        }
        let i = self.pick();
        Some(self.remove(i))
    }

    /// Takes every block out of the table.
    pub fn take_all(&mut self) -> Vec<Block> {
        self.live_bytes = 0;
        std::mem::take(&mut self.live)
    }

    /// Puts a block (new, or received from another thread) in the table.
    pub fn adopt(&mut self, block: Block) {
        self.live_bytes += block.size;
        self.live.push(block);
    }

    /// Checks and frees a block that is not in the table.
    pub fn free_block(&mut self, block: Block, context: &str) {
        let kind = if block.owner == self.serial {
            FREE
        } else {
            CROSS_FREE
        };
        block::free(block, context);
        self.counts[kind] += 1;
    }

    pub fn free_at(&mut self, i: usize, context: &str) {
        let block = self.remove(i);
        self.free_block(block, context);
    }

    /// Frees a random block.
    pub fn free_random(&mut self, context: &str) {
        if !self.live.is_empty() {
            let i = self.pick();
            self.free_at(i, context);
        }
    }

    pub fn check_all(&mut self, context: &str) {
        for block in &self.live {
            block.check(context);
        }
        self.counts[CHECK] += self.live.len() as u64;
    }

    pub fn free_all(&mut self, context: &str) {
        for block in self.take_all() {
            self.free_block(block, context);
        }
    }

    /// Overwrites one stamped byte of a random block and frees it through the usual path,
    /// whose check must catch it (`--self-test-corrupt`). False if the table is empty.
    pub fn corrupt_one(&mut self) -> bool {
        if self.live.is_empty() {
            return false;
        }
        let i = self.pick();
        let pick = self.rng.next_u64();
        let block = &mut self.live[i];
        let offset = block.corrupt(pick);
        eprintln!(
            "stress: self-test: overwrote byte {offset} of block id {} at {:#x} (size {})",
            block.id, block.ptr as usize, block.size
        );
        self.free_at(i, "before free");
        true
    }

    /// Adds the counts to `totals` and clears them.
    pub fn flush_counts(&mut self, totals: &[AtomicU64; KINDS.len()]) {
        for (total, count) in totals.iter().zip(&mut self.counts) {
            total.fetch_add(*count, Ordering::Relaxed);
            *count = 0;
        }
    }

    fn pick(&mut self) -> usize {
        self.rng.below(self.live.len() as u64) as usize
    }

    fn remove(&mut self, i: usize) -> Block {
        let block = self.live.swap_remove(i);
        self.live_bytes -= block.size;
        block
    }

    fn next_id(&mut self) -> u64 {
        if self.next_id == self.id_end {
            self.next_id = block::reserve_ids(ID_BATCH);
            self.id_end = self.next_id + ID_BATCH;
        }
        self.next_id += 1;
        self.next_id - 1
    }
}

/// Sizes: mostly small (8 B..1 KiB), some medium (to 128 KiB), a few large (to 4 MiB),
/// rarely huge (to 64 MiB).
fn pick_size(rng: &mut Rng) -> usize {
    match rng.below(100_000) {
        0..=4 => rng.log_uniform((4 << 20) + 1, HUGE_MAX),
        5..=999 => rng.log_uniform((128 << 10) + 1, 4 << 20),
        1_000..=15_999 => rng.log_uniform(1025, 128 << 10),
        r if r % 2 == 0 => rng.range(8, 128),
        _ => rng.range(8, 1024),
    }
}

/// Alignments: powers of two from 8 to 1 MiB, mostly 8.
fn pick_align(rng: &mut Rng) -> usize {
    let shift = match rng.below(1000) {
        0..=1 => rng.range(17, 20),
        2..=19 => rng.range(11, 16),
        20..=149 => rng.range(4, 10),
        _ => 3,
    };
    1 << shift
}
