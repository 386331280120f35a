//! The large-block workload: threads whose blocks all get mappings of their own, so that
//! mappings are made, moved (`mremap`), cached and unmapped on several threads at once
//! while the soak workers map and unmap arenas for their small blocks. Every change of the
//! address space must stay ordered against the allocator's chunk map: a mapping moved by
//! one thread must not take the chunk-map entry of another thread's new mapping or arena
//! along with its old place. Each block is stamped and checked (with its owner, see
//! `Block::check_owned`) before every resize and free.
//!
//! Roles, one thread each:
//!
//! - two **movers**: allocate 5 MiB, grow it to 24 MiB (past the mapping cache's 16 MiB
//!   limit, so `mremap` moves the mapping), maybe shrink it, free it; now and then other
//!   pairs of sizes: growing within the cache's sizes, shrinking from above its limit;
//! - two **holders**: allocate 5 MiB blocks (some up to 32 MiB) and free one at random,
//!   keeping eight alive, so mappings come and go where the movers' blocks were;
//! - one **aligner**: blocks aligned to 64 KiB..2 MiB, from 1 KiB to 24 MiB, resized up and
//!   down (the alignment must survive a move), a few kept alive.

use crate::fail::{self, Who};
use crate::rng::Rng;
use crate::tester::Tester;
use crate::worker::{self, Shared};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

const MIB: usize = 1 << 20;
/// The mapping cache of ebbmalloc keeps mappings up to this size; bigger ones are unmapped
/// when freed, and only `mremap` can grow a block to such a size.
const CACHE_LIMIT: usize = 16 * MIB;
/// Blocks a holder keeps alive.
const HELD: usize = 8;
/// Blocks the aligner keeps alive.
const ALIGNED_HELD: usize = 4;
/// Operations between two flushes of a thread's counts.
const FLUSH_EVERY: u64 = 64;

#[derive(Clone, Copy)]
enum Role {
    Mover,
    Holder,
    Aligner,
}

const ROLES: [(Role, &str); 5] = [
    (Role::Mover, "large mover"),
    (Role::Mover, "large mover"),
    (Role::Holder, "large holder"),
    (Role::Holder, "large holder"),
    (Role::Aligner, "large aligner"),
];

/// Starts the workload's threads; they run until `shared.stop`, then free their blocks.
pub fn start(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    ROLES
        .iter()
        .enumerate()
        .map(|(index, &(role, name))| {
            let shared = Arc::clone(shared);
            let serial = shared.new_serial();
            let stream = (3 << 60) | index as u64;
            worker::spawn(name, move || {
                fail::set_who(Who::Helper { role: name, serial });
                let mut tester = Tester::new(Rng::new(shared.seed, stream), serial);
                let mut n = 0u64;
                while !shared.stop.load(Ordering::Relaxed) {
                    match role {
                        Role::Mover => move_one(&mut tester),
                        Role::Holder => hold_one(&mut tester),
                        Role::Aligner => align_one(&mut tester),
                    }
                    n += 1;
                    if n % FLUSH_EVERY == 0 {
                        tester.flush_counts(&shared.totals);
                    }
                }
                tester.free_all("before free of a large block at the end");
                tester.flush_counts(&shared.totals);
            })
        })
        .collect()
}

/// One block through a moving `realloc` and back to the allocator.
fn move_one(tester: &mut Tester) {
    let rng = &mut tester.rng;
    let (from, to) = match rng.below(8) {
        // The shape of issue 11: across the cache limit, so the mapping moves.
        0..=4 => (5 * MIB, 24 * MIB),
        // Within the cache's sizes: a cached mapping may be taken, or `mremap` grows.
        5 => (rng.range(MIB, 8 * MIB), rng.range(8 * MIB, CACHE_LIMIT)),
        // Above the limit on both sides.
        6 => (
            rng.range(CACHE_LIMIT + 1, 24 * MIB),
            rng.range(25 * MIB, 40 * MIB),
        ),
        // Shrinking from above the limit.
        _ => (
            rng.range(CACHE_LIMIT + 1, 40 * MIB),
            rng.range(MIB, 12 * MIB),
        ),
    };
    let shrink_after = rng.one_in(3).then(|| rng.range(256 << 10, to));
    let zeroed = rng.one_in(8);
    let mut block = tester.allocate(from, 8, zeroed);
    tester.resize(&mut block, to);
    if let Some(size) = shrink_after {
        tester.resize(&mut block, size);
    }
    tester.free_block(block, "before free of a moved large block");
}

/// One more block, and one fewer once more than [`HELD`] are alive.
fn hold_one(tester: &mut Tester) {
    let size = if tester.rng.one_in(4) {
        tester.rng.log_uniform((128 << 10) + 1, 32 * MIB)
    } else {
        5 * MIB
    };
    let block = tester.allocate(size, 8, false);
    tester.adopt(block);
    if tester.len() > HELD {
        tester.free_random("before free of a held large block");
    }
}

/// One aligned block, resized once or twice; some are kept for a while.
fn align_one(tester: &mut Tester) {
    let align = 1 << tester.rng.range(16, 21);
    let size = tester.rng.log_uniform(1 << 10, 24 * MIB);
    let zeroed = tester.rng.one_in(4);
    let mut block = tester.allocate(size, align, zeroed);
    for _ in 0..tester.rng.range(1, 2) {
        let new_size = tester.rng.log_uniform(1 << 10, 24 * MIB);
        tester.resize(&mut block, new_size);
    }
    tester.adopt(block);
    if tester.len() > ALIGNED_HELD {
        tester.free_random("before free of an aligned large block");
    }
}
