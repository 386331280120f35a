//! The sleepers workload (mode `idle-reclaim`): threads that sleep at random while they
//! hold blocks, so that ebbmalloc's trimmer takes back the cache of a thread that is parked
//! and the thread then wakes up and allocates again, perhaps while the trimmer is at work.
//! A block handed out twice (kept in a cache the trimmer also emptied), a block lost or
//! written over, or a crash fails the run.
//!
//! A *sleeper* works in bursts. A burst is a random number of operations on its table
//! ([`operate`]: allocations, reallocations and frees of sizes the thread cache serves, at
//! most [`TABLE_MAX`] blocks kept), then the blocks other sleepers left in its mailbox (each
//! checked; half kept, half freed: frees of blocks another thread allocated), then a few of
//! its blocks left in other sleepers' mailboxes. Between bursts it may sleep ([`pause`]):
//! under one trim interval (its wake-up races the trimmer's pass), 1 to 20 ms, or 21 to
//! 100 ms (many intervals). Before a sleep it frees a random share of its blocks, so that
//! its cache holds blocks for the trimmer to take, and leaves a few with other sleepers,
//! which free them while it sleeps. After the sleep it checks every block it kept across it
//! (its own and those handed to it), allocates a run of new blocks (from its cache, or from
//! the central lists if the trimmer took the cache) and checks every block again: a block
//! handed out twice overwrites the stamp of a kept one.
//!
//! Sleepers live for a random number of bursts, then exit, leaving a third of their blocks
//! in mailboxes (half of those in their own slot's, for the sleeper that replaces them) and
//! freeing the rest, so threads exit and give their caches back while others sleep. A
//! keeper thread starts and replaces the sleepers and, once they are all gone at the end,
//! frees what is left in the mailboxes.

use crate::block::Block;
use crate::fail::{self, Who};
use crate::rng::Rng;
use crate::tester::{Tester, CHECK, HAND_OFF};
use crate::worker::{self, Shared};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Blocks a mailbox holds at most; a sleeper frees what it cannot leave.
const MAILBOX_BLOCKS: usize = 512;
/// Bytes a mailbox holds at most.
const MAILBOX_BYTES: usize = 16 << 20;
/// Operations in a burst, at least and at most.
const BURST_OPS: (usize, usize) = (20, 300);
/// Bursts a sleeper lives for, at least and at most.
const LIFETIME_BURSTS: (usize, usize) = (10, 100);
/// Blocks a sleeper's table holds at most (it frees instead of allocating beyond).
const TABLE_MAX: usize = 2048;
/// The largest block size ebbmalloc serves from size classes, and so from thread caches.
const CLASS_MAX: usize = 128 << 10;
/// Blocks a sleeper leaves with others after a burst, at most.
const HANDED_MAX: usize = 8;
/// New blocks a sleeper allocates right after a sleep, at least and at most.
const WAKE_ALLOCATIONS: (usize, usize) = (16, 512);
/// How often the keeper looks for sleepers that have exited.
const KEEPER_PAUSE: Duration = Duration::from_millis(5);

/// What the workload did, for the report.
static SLEEPER_THREADS: AtomicU64 = AtomicU64::new(0);
static SLEEPS: AtomicU64 = AtomicU64::new(0);
static SLEEPS_UNDER_1_MS: AtomicU64 = AtomicU64::new(0);
static SLEPT_US: AtomicU64 = AtomicU64::new(0);
static LONGEST_SLEEP_US: AtomicU64 = AtomicU64::new(0);
static CHECKED_AFTER_SLEEP: AtomicU64 = AtomicU64::new(0);

/// The mailboxes of the sleepers' slots: blocks left for a slot by other sleepers, or by
/// the slot's previous sleeper.
struct Mailboxes {
    slots: Vec<Mutex<Vec<Block>>>,
}

impl Mailboxes {
    fn slot(&self, slot: usize) -> MutexGuard<'_, Vec<Block>> {
        match self.slots[slot].lock() {
            Ok(guard) => guard,
            Err(_) => fail::violation(
                "sleepers' mailbox poisoned",
                format_args!("a thread panicked holding the mailbox of sleeper slot {slot}"),
            ),
        }
    }

    /// Leaves `block` for `slot`, or gives it back when the mailbox is full.
    fn send(&self, slot: usize, block: Block) -> Result<(), Block> {
        let mut mailbox = self.slot(slot);
        let bytes: usize = mailbox.iter().map(|b| b.size).sum();
        if mailbox.len() >= MAILBOX_BLOCKS || bytes + block.size > MAILBOX_BYTES {
            return Err(block);
        }
        mailbox.push(block);
        Ok(())
    }

    fn take(&self, slot: usize) -> Vec<Block> {
        std::mem::take(&mut *self.slot(slot))
    }
}

/// The sleeper of one slot.
struct Sleeper {
    handle: Option<JoinHandle<()>>,
    generation: u64,
}

/// Starts the keeper, which keeps `shared.threads` sleepers (at least 2) running until
/// `shared.stop`, then frees the blocks left in their mailboxes.
pub fn start(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    let serial = shared.new_serial();
    vec![worker::spawn("sleepers' keeper", move || {
        fail::set_who(Who::Helper {
            role: "sleepers' keeper",
            serial,
        });
        keep(&shared, serial);
    })]
}

/// One line for the final report.
pub fn report() {
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let sleeps = get(&SLEEPS);
    println!(
        "  sleepers: {} threads, {sleeps} sleeps ({} under 1 ms, longest {} ms, {:.1} s \
         asleep in all), {} blocks checked after a sleep",
        get(&SLEEPER_THREADS),
        get(&SLEEPS_UNDER_1_MS),
        get(&LONGEST_SLEEP_US) / 1000,
        get(&SLEPT_US) as f64 / 1e6,
        get(&CHECKED_AFTER_SLEEP)
    );
    // The point of the mode is that the trimmer takes caches from sleeping threads: a run
    // in which it never did tested nothing of that.
    let reclaimed = ebbmalloc::stats().caches_reclaimed;
    println!("  idle thread caches the trimmer took back: {reclaimed}");
    if sleeps > 0 && reclaimed == 0 {
        fail::violation(
            "sleepers",
            format_args!(
                "{sleeps} sleeps, but the trimmer took no sleeping thread's cache \
                 (does the kernel refuse membarrier?)"
            ),
        );
    }
}

fn keep(shared: &Arc<Shared>, serial: u64) {
    let slots = shared.threads.max(2);
    let mailboxes = Arc::new(Mailboxes {
        slots: (0..slots).map(|_| Mutex::new(Vec::new())).collect(),
    });
    let mut sleepers: Vec<Sleeper> = (0..slots)
        .map(|_| Sleeper {
            handle: None,
            generation: 0,
        })
        .collect();
    while !shared.stop.load(Ordering::Relaxed) {
        for (slot, sleeper) in sleepers.iter_mut().enumerate() {
            if let Some(handle) = sleeper.handle.take_if(|h| h.is_finished()) {
                worker::join(handle);
                sleeper.generation += 1;
            }
            if sleeper.handle.is_none() {
                sleeper.handle = Some(start_sleeper(shared, &mailboxes, slot, sleeper.generation));
            }
        }
        std::thread::sleep(KEEPER_PAUSE);
    }
    for handle in sleepers.iter_mut().filter_map(|s| s.handle.take()) {
        worker::join(handle);
    }
    let mut tester = Tester::new(Rng::new(shared.seed, 10 << 60), serial);
    for slot in 0..slots {
        for block in mailboxes.take(slot) {
            tester.free_block(block, "before free of a block left in a sleeper's mailbox");
        }
    }
    tester.flush_counts(&shared.totals);
}

fn start_sleeper(
    shared: &Arc<Shared>,
    mailboxes: &Arc<Mailboxes>,
    slot: usize,
    generation: u64,
) -> JoinHandle<()> {
    let (shared, mailboxes) = (Arc::clone(shared), Arc::clone(mailboxes));
    let serial = shared.new_serial();
    SLEEPER_THREADS.fetch_add(1, Ordering::Relaxed);
    worker::spawn("sleeper", move || {
        fail::set_who(Who::Helper {
            role: "sleeper",
            serial,
        });
        let stream = (9 << 60) | ((slot as u64) << 32) | generation;
        let mut tester = Tester::new(Rng::new(shared.seed, stream), serial);
        sleep_and_work(&shared, &mailboxes, slot, &mut tester);
        tester.flush_counts(&shared.totals);
    })
}

/// The life of one sleeper: bursts and sleeps, then its exit.
fn sleep_and_work(shared: &Shared, mailboxes: &Mailboxes, slot: usize, tester: &mut Tester) {
    let slots = mailboxes.slots.len();
    let lifetime = tester.rng.range(LIFETIME_BURSTS.0, LIFETIME_BURSTS.1);
    for _ in 0..lifetime {
        if shared.stop.load(Ordering::Relaxed) {
            tester.free_all("before free at the end of a sleeper");
            return;
        }
        for _ in 0..tester.rng.range(BURST_OPS.0, BURST_OPS.1) {
            operate(tester);
        }
        receive(mailboxes, slot, tester);
        hand_out(mailboxes, slot, tester);
        if let Some(pause) = pause(&mut tester.rng) {
            sleep(mailboxes, slot, tester, pause);
        }
        tester.flush_counts(&shared.totals);
    }
    // A third of the blocks go on: half to the slot's next sleeper, half to others.
    for block in tester.take_all() {
        if !tester.rng.one_in(3) {
            tester.free_block(block, "before free at a sleeper's exit");
            continue;
        }
        let to = if tester.rng.one_in(2) {
            slot
        } else {
            worker::other_slot(&mut tester.rng, slots, slot)
        };
        match mailboxes.send(to, block) {
            Ok(()) => tester.counts[HAND_OFF] += 1,
            Err(block) => tester.free_block(block, "before free at a sleeper's exit"),
        }
    }
}

/// One random operation on a sleeper's table: mostly allocations and frees, some
/// reallocations and checks.
fn operate(tester: &mut Tester) {
    match tester.rng.below(100) {
        0..=1 => {
            if let Some(block) = tester.take_random() {
                block.check("audit of a sleeper's block");
                tester.counts[CHECK] += 1;
                tester.adopt(block);
            }
        }
        2..=11 => {
            if let Some(mut block) = tester.take_random() {
                let new_size = cached_size(&mut tester.rng);
                tester.resize(&mut block, new_size);
                tester.adopt(block);
            }
        }
        12..=55 => tester.free_random("before free in a sleeper's burst"),
        _ if tester.len() >= TABLE_MAX => tester.free_random("before free in a sleeper's burst"),
        _ => allocate(tester),
    }
}

/// Allocates a block of a size the thread cache serves and puts it in the table.
fn allocate(tester: &mut Tester) {
    let size = cached_size(&mut tester.rng);
    let align = if tester.rng.one_in(16) {
        1 << tester.rng.range(4, 12)
    } else {
        8
    };
    let zeroed = tester.rng.one_in(8);
    let block = tester.allocate(size, align, zeroed);
    tester.adopt(block);
}

/// A size of a class: 70% up to 256 B, 28% up to 4 KiB, 2% up to [`CLASS_MAX`].
fn cached_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=69 => rng.range(8, 256),
        70..=97 => rng.range(257, 4096),
        _ => rng.log_uniform(4097, CLASS_MAX),
    }
}

/// How long a sleeper sleeps after a burst, if at all.
fn pause(rng: &mut Rng) -> Option<Duration> {
    match rng.below(100) {
        0..=39 => None,
        // Under the 1 ms trim interval: the wake-up races the trimmer's pass.
        40..=54 => Some(Duration::from_micros(rng.range(50, 999) as u64)),
        55..=94 => Some(Duration::from_millis(rng.range(1, 20) as u64)),
        _ => Some(Duration::from_millis(rng.range(21, 100) as u64)),
    }
}

/// Frees a random share of the table, leaves a few blocks with others, sleeps, then checks
/// what it kept, allocates anew and checks everything again.
fn sleep(mailboxes: &Mailboxes, slot: usize, tester: &mut Tester, pause: Duration) {
    for _ in 0..tester.rng.range(0, tester.len() / 2) {
        tester.free_random("before free ahead of a sleep");
    }
    hand_out(mailboxes, slot, tester);
    let start = Instant::now();
    std::thread::sleep(pause);
    let slept_us = start.elapsed().as_micros() as u64;
    SLEEPS.fetch_add(1, Ordering::Relaxed);
    if pause < Duration::from_millis(1) {
        SLEEPS_UNDER_1_MS.fetch_add(1, Ordering::Relaxed);
    }
    SLEPT_US.fetch_add(slept_us, Ordering::Relaxed);
    LONGEST_SLEEP_US.fetch_max(slept_us, Ordering::Relaxed);
    CHECKED_AFTER_SLEEP.fetch_add(tester.len() as u64, Ordering::Relaxed);
    tester.check_all(&format!(
        "check of a block kept across a sleep of {slept_us} us"
    ));
    for _ in 0..tester.rng.range(WAKE_ALLOCATIONS.0, WAKE_ALLOCATIONS.1) {
        tester.alloc_random();
    }
    tester.check_all(&format!(
        "check after the allocations that followed a sleep of {slept_us} us"
    ));
    receive(mailboxes, slot, tester);
}

/// Checks the blocks left for `slot`; keeps half (to hold across the next sleep), frees the
/// rest.
fn receive(mailboxes: &Mailboxes, slot: usize, tester: &mut Tester) {
    for block in mailboxes.take(slot) {
        block.check("on receipt by a sleeper");
        if tester.rng.one_in(2) && tester.room_for(block.size) {
            tester.adopt(block);
        } else {
            tester.free_block(block, "before free of a block a sleeper received");
        }
    }
}

/// Leaves up to [`HANDED_MAX`] random blocks with other sleepers.
fn hand_out(mailboxes: &Mailboxes, slot: usize, tester: &mut Tester) {
    for _ in 0..tester.rng.range(0, HANDED_MAX) {
        let Some(block) = tester.take_random() else {
            return;
        };
        let to = worker::other_slot(&mut tester.rng, mailboxes.slots.len(), slot);
        match mailboxes.send(to, block) {
            Ok(()) => tester.counts[HAND_OFF] += 1,
            Err(block) => tester.adopt(block),
        }
    }
}
