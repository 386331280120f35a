//! Loom models of the concurrent parts, run over the real code (see "Model checking" in
//! docs/testing.md for the command):
//!
//! 1. whole batches moving between threads and a class's central lists (transfer cache and
//!    partial pools) while a trimming pass returns parked batches to their pools;
//! 2. the arena occupancy counter's transitions (pools carved and released) racing the
//!    trimmer's pass over the arenas, which releases free pages and unmaps empty arenas;
//! 3. thread caches registering, allocating, freeing and tearing down (the flush at thread
//!    exit) while another thread walks the registry for statistics and runs `trim()`;
//! 4. the background trimmer going to sleep while a pool's release notifies it: the
//!    wake-up is never lost (a sleeper nobody wakes is a deadlock loom reports).
//! 5. threads without a cache pushing freed blocks on a class's remote stack, without a
//!    lock, while a refill and the trimmer take the whole stack under the class lock.
//! 6. the trimmer taking a thread's cache without the owner's help (the asymmetric
//!    handshake of `thread_cache.rs`) while the owner allocates and frees through it.
//!
//! Loom runs each model many times, once per interleaving it explores (bounded by
//! `LOOM_MAX_PREEMPTIONS`, 2 when unset); every static of the allocator is made afresh for
//! each execution (`sync::model_static!`), and the arenas are unmapped at its end. The
//! futex lock's guards hold tracked accesses to loom cells, so loom also checks that the
//! critical sections of every lock are ordered by happens-before.
//!
//! The assertions: no block is out twice at once, none is lost (after the threads are done,
//! every block is back in its pools and every pool, arena page and arena is given back),
//! memory a thread holds is never released or unmapped under it, and the counters and lists
//! of arenas and of the thread registry are consistent whenever their lock is free.

use crate::block::{self, Batch};
use crate::config::{self, Purge, Setting};
use crate::consts::{ARENA_MASK, USABLE_PAGES};
use crate::size_class::SizeClass;
use crate::sync::MEMORY_FREED;
use crate::{arena, central, chunk_map, lifecycle, os, thread_cache, trim};
use loom::thread;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Checks `model` under loom: every interleaving within the preemption bound. Prints how
/// many executions that took (seen with `-- --nocapture`).
fn check(name: &str, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = builder.preemption_bound.or(Some(2));
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = 10_000;
    }
    let executions = Arc::new(Mutex::new(0u64));
    let counter = executions.clone();
    let model = Arc::new(model);
    let start = Instant::now();
    builder.check(move || {
        *counter.lock().unwrap() += 1;
        let model = model.clone();
        // The model runs on a thread of its own: loom's main thread has a stack too small
        // for building the central lists (52 classes, 32 KiB).
        spawn(move || {
            // No background thread (the models run the passes themselves), and passes
            // release whatever is free at once, so that no outcome depends on the clock.
            config::set(Setting::BackgroundThread, 0);
            config::set(Setting::DecayMs, 0);
            config::set(Setting::RetainedArenas, 0);
            model();
            arena::unmap_reservation_after_model();
        })
        .join()
        .unwrap();
    });
    println!(
        "loom model {name}: {} executions in {:.1} s (preemption bound {})",
        executions.lock().unwrap(),
        start.elapsed().as_secs_f64(),
        builder.preemption_bound.unwrap_or_default(),
    );
}

/// Spawns a loom thread with a stack large enough for the allocator's paths.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(f)
        .expect("a loom thread")
}

/// The class of blocks of `size` bytes.
fn class_of(size: usize) -> SizeClass {
    SizeClass::for_layout(size, 8).expect("a small size")
}

/// The blocks of `batch`, in list order.
fn blocks_of(batch: &Batch, class: SizeClass) -> Vec<usize> {
    let mut blocks = Vec::new();
    let mut block = batch.head;
    while !block.is_null() {
        blocks.push(block as usize);
        // SAFETY: a batch is a null-terminated list of free blocks that we hold.
        block = unsafe { block::next_of(block, class) };
    }
    assert_eq!(
        blocks.len(),
        batch.count as usize,
        "a batch's count is its length"
    );
    blocks
}

/// The blocks the model's threads hold (out of the allocator), to catch a block handed out
/// twice. Touched without loom operations inside, so the plain lock never blocks.
#[derive(Default)]
struct Holdings(Mutex<HashSet<usize>>);

impl Holdings {
    fn take(&self, blocks: &[usize]) {
        let mut held = self.0.lock().unwrap();
        for &block in blocks {
            assert!(held.insert(block), "block {block:#x} handed out twice");
        }
    }

    fn give_back(&self, blocks: &[usize]) {
        let mut held = self.0.lock().unwrap();
        for &block in blocks {
            assert!(
                held.remove(&block),
                "block {block:#x} given back but not held"
            );
        }
    }
}

/// Writes `stamp` into the second and the last word of the block at `block`.
///
/// # Safety
/// The caller holds the block, of `size >= 16` bytes.
unsafe fn stamp(block: usize, size: usize, stamp: u64) {
    // SAFETY: both words lie inside the block, which is ours (caller).
    unsafe {
        *((block + 8) as *mut u64) = stamp;
        *((block + size - 8) as *mut u64) = stamp;
    }
}

/// Whether the block at `block` still carries `stamp` (its memory was neither released nor
/// handed to anybody else).
///
/// # Safety
/// As [`stamp`].
unsafe fn has_stamp(block: usize, size: usize, stamp: u64) -> bool {
    // SAFETY: as in `stamp`.
    unsafe { *((block + 8) as *const u64) == stamp && *((block + size - 8) as *const u64) == stamp }
}

/// After the model's threads are done: every block of `class` is back in central, and once
/// the transfer cache is emptied, in its pools, which all went back to their arenas.
fn assert_everything_comes_back(class: SizeClass) {
    let figures = central::figures(class);
    assert_eq!(
        figures.blocks_out, figures.transfer_blocks,
        "every block out of a pool is parked in the transfer cache"
    );
    central::trim(class, true);
    let figures = central::figures(class);
    assert_eq!(
        (figures.blocks_out, figures.transfer_blocks, figures.pools),
        (0, 0, 0),
        "every block back in its pool, every pool released"
    );
    assert_eq!(arena::check_invariants().pool_pages, 0);
    arena::trim(os::now_ms(), 0, 0, Purge::DontNeed);
    assert_eq!(
        arena::check_invariants().mapped,
        0,
        "every empty arena unmapped"
    );
}

/// Model 1: two threads each take two batches of a class in turn, check them and flush
/// them back, while the trimmer returns parked batches to their pools (which empties
/// pools, releases them and makes the next refill carve a new one).
#[test]
fn batches_move_through_the_central_lists_whole() {
    check("central batches", || {
        let class = class_of(8192); // batches of 2, 8 blocks a pool
        let batch = class.info().batch as u32;
        assert!(batch >= 2, "the model moves batches of several blocks");
        let held = Arc::new(Holdings::default());
        let workers: Vec<_> = (0..2)
            .map(|worker| {
                let held = held.clone();
                spawn(move || {
                    for round in 0..2 {
                        let taken = central::refill(class, batch);
                        assert_eq!(taken.count, batch, "a refill brings a whole batch");
                        let blocks = blocks_of(&taken, class);
                        held.take(&blocks);
                        let mark = (worker << 8 | round) as u64;
                        for &block in &blocks {
                            // SAFETY: the block is ours until flushed.
                            unsafe { stamp(block, class.size(), mark) };
                        }
                        for &block in &blocks {
                            // SAFETY: as above.
                            assert!(unsafe { has_stamp(block, class.size(), mark) });
                        }
                        held.give_back(&blocks);
                        // SAFETY: the blocks are out blocks of the class we no longer use.
                        unsafe { central::flush(class, taken) };
                    }
                })
            })
            .collect();
        central::trim(class, true);
        for worker in workers {
            worker.join().unwrap();
        }
        assert_everything_comes_back(class);
    });
}

/// Model 2: a thread takes a block of the 128 KiB class (one pool fills the only aligned
/// run of an arena, so every block has an arena of its own), uses it and gives it back,
/// twice, so that the arena's occupancy goes up and down; meanwhile the trimmer passes
/// over the arenas twice (releasing free pages and unmapping empty arenas, none retained).
/// The held block must keep its contents and its arena stay mapped.
#[test]
fn the_trimmer_never_takes_an_arena_in_use() {
    check("occupancy vs trimmer", || {
        let class = class_of(128 << 10);
        assert_eq!(class.info().blocks_per_pool, 1);
        assert!(class.info().pool_pages as usize > USABLE_PAGES / 2);
        let user = spawn(move || {
            for round in 0..2u64 {
                let taken = central::refill(class, 1);
                assert_eq!(taken.count, 1);
                let block = taken.head as usize;
                // SAFETY: the block is ours until flushed.
                unsafe { stamp(block, class.size(), round + 1) };
                // A loom operation between writing and reading: the trimmer may run here.
                let arenas = arena::check_invariants();
                assert!(arenas.pool_pages >= class.info().pool_pages as usize);
                assert!(
                    chunk_map::is_arena(block & ARENA_MASK),
                    "the arena of a held block is mapped"
                );
                // SAFETY: as above.
                let kept = unsafe { has_stamp(block, class.size(), round + 1) };
                assert!(kept, "a held block's pages were released");
                // SAFETY: the block is an out block of the class we no longer use.
                unsafe { central::flush(class, taken) };
                // Back to its pool, which empties and goes back to its arena.
                central::trim(class, true);
            }
        });
        for _ in 0..2 {
            arena::trim(os::now_ms(), 0, 0, Purge::DontNeed);
            arena::check_invariants();
        }
        user.join().unwrap();
        assert_everything_comes_back(class);
    });
}

/// Model 3: two threads each set up their cache (registering it), allocate two blocks,
/// free them and tear the cache down as at thread exit; meanwhile another thread sums the
/// cached blocks over the registry (statistics) and runs `trim()`'s full pass (all but its
/// taking of other threads' caches, model 6's subject).
#[test]
fn thread_caches_register_and_tear_down_while_the_registry_is_walked() {
    check("registry and teardown", || {
        let class = class_of(8192);
        let held = Arc::new(Holdings::default());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let held = held.clone();
                spawn(move || {
                    let blocks =
                        [(); 2].map(|()| thread_cache::alloc(class, lifecycle::register_thread));
                    let blocks = blocks.map(|block| block as usize);
                    assert!(blocks.iter().all(|&block| block != 0));
                    held.take(&blocks);
                    held.give_back(&blocks);
                    for block in blocks {
                        // SAFETY: a block of the class we allocated and no longer use.
                        unsafe { thread_cache::free(block as *mut u8, class) };
                    }
                    thread_cache::tear_down_this_thread();
                })
            })
            .collect();
        let max_cached = class.info().max_cached as usize;
        assert!(thread_cache::cached_blocks(class) <= 2 * max_cached);
        // `trim()`, but without taking the other threads' caches, which is model 6's
        // subject (with it, this model's interleavings grow past what CI can run).
        thread_cache::flush_this_thread();
        trim::trim_now(|_, _| false);
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(
            thread_cache::registered_caches(),
            0,
            "torn-down caches left"
        );
        assert_eq!(thread_cache::cached_blocks(class), 0);
        assert_everything_comes_back(class);
    });
}

/// Model 4: a thread releases a pool (which notifies `MEMORY_FREED`) while the background
/// trimmer's sleep starts: the sleeper always learns of it.
#[test]
fn a_released_pool_always_wakes_the_sleeping_trimmer() {
    check("trimmer wake-up", || {
        let class = class_of(128 << 10);
        let releaser = spawn(move || {
            let taken = central::refill(class, 1);
            assert_eq!(taken.count, 1);
            // SAFETY: the block is an out block of the class we no longer use.
            unsafe { central::flush(class, taken) };
            // Back to its pool, which empties and goes back to its arena: a notification.
            central::trim(class, true);
        });
        assert!(
            MEMORY_FREED.wait_ms(10_000),
            "the sleeper missed the notification"
        );
        releaser.join().unwrap();
        assert_everything_comes_back(class);
    });
}

/// Model 5: two threads without a cache free two blocks each (`central::free_one`), pushing
/// them on the class's remote stack without a lock, while another thread refills (taking
/// the stack when no batch is parked: it hands out at most what it asked for and files the
/// rest, whole batches parked and the remainder as the loose batch) and gives its blocks
/// back, and the trimmer passes twice (taking the stack, returning an idle loose batch to
/// its pools). No block is handed out twice, a refill brings at most what it asked for or
/// a parked batch, and everything comes back.
#[test]
fn blocks_freed_one_by_one_make_batches() {
    check("remote stack", || {
        let class = class_of(8192); // batches of 2, 8 blocks a pool
        let batch = class.info().batch as u32;
        assert!(batch >= 2, "the model frees batches of several blocks");
        let held = Arc::new(Holdings::default());
        let mut blocks = Vec::new();
        for _ in 0..2 {
            let taken = central::refill(class, batch);
            blocks.extend(blocks_of(&taken, class));
        }
        held.take(&blocks);
        let freers: Vec<_> = blocks
            .chunks(2)
            .map(|mine| {
                let mine = mine.to_vec();
                let held = held.clone();
                spawn(move || {
                    held.give_back(&mine);
                    for &block in &mine {
                        // SAFETY: an out block of the class that we no longer use.
                        unsafe { central::free_one(class, block as *mut block::Block) };
                    }
                })
            })
            .collect();
        let user = {
            let held = held.clone();
            spawn(move || {
                let taken = central::refill(class, 1);
                assert!(
                    (1..=batch).contains(&taken.count),
                    "a refill brings one block, or a parked batch"
                );
                let blocks = blocks_of(&taken, class);
                held.take(&blocks);
                held.give_back(&blocks);
                // SAFETY: out blocks of the class we no longer use.
                unsafe { central::flush(class, taken) };
            })
        };
        central::trim(class, false);
        central::trim(class, false);
        for freer in freers {
            freer.join().unwrap();
        }
        user.join().unwrap();
        assert_everything_comes_back(class);
    });
}

/// Model 6 (issue 14): the trimmer takes a thread's cache without the owner's help, while
/// the owner sets its cache up, allocates, frees into it and allocates again (the cached
/// block, or a refill after the trimmer took it), then tears it down. The trimmer asks for
/// every cache (as `trim()` does) twice, at whatever point loom puts it: it raises the
/// floors, runs the heavy side of the asymmetric fence and takes the lists only of an owner
/// outside an operation. No block is handed out twice or changed under its holder, the
/// cache's count stays equal to its list, and everything comes back.
#[test]
fn the_trimmer_takes_a_cache_only_from_an_owner_outside_it() {
    check("idle cache reclaim", || {
        let class = class_of(8192); // batches of 2, 8 blocks a pool
        let size = class.size();
        let held = Arc::new(Holdings::default());
        let owner = {
            let held = held.clone();
            spawn(move || {
                let alloc = || thread_cache::alloc(class, lifecycle::register_thread) as usize;
                let (a, b) = (alloc(), alloc());
                assert!(a != 0 && b != 0);
                held.take(&[a, b]);
                // SAFETY: blocks of the class that we hold.
                unsafe {
                    stamp(b, size, 0xb);
                    held.give_back(&[a]);
                    thread_cache::free(a as *mut u8, class);
                }
                let c = alloc();
                assert!(c != 0);
                held.take(&[c]);
                // SAFETY: blocks of the class that we hold.
                unsafe {
                    stamp(c, size, 0xc);
                    assert!(has_stamp(b, size, 0xb), "a held block changed under us");
                    assert!(has_stamp(c, size, 0xc), "a held block changed under us");
                    held.give_back(&[b, c]);
                    thread_cache::free(b as *mut u8, class);
                    thread_cache::free(c as *mut u8, class);
                }
                let cached = thread_cache::cached_blocks(class);
                assert!(
                    cached <= 3,
                    "{cached} blocks cached: count and list disagree"
                );
                thread_cache::tear_down_this_thread();
            })
        };
        thread_cache::reclaim_idle_caches(1, true);
        thread_cache::reclaim_idle_caches(2, true);
        owner.join().unwrap();
        assert_eq!(thread_cache::cached_blocks(class), 0);
        assert_everything_comes_back(class);
    });
}
