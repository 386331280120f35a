//! `stress`: a soak test of ebbmalloc as the global allocator. Worker threads do random
//! allocations, reallocations and frees of stamped blocks, check every block before it is
//! freed and after it is moved, hand blocks to each other, exit and are replaced; the main
//! thread forks and trims periodically. Any violation is reported with the seed and ends
//! the run with status 1. `stress --help` says how to run it.
//!
//! Checks made in every mode, beside the stamps: each allocator call leaves `errno` alone
//! (`errno.rs`); each checked block is still known to the allocator as its own
//! (`Block::check_owned`); ebbmalloc's threads block every signal and a signal sent to the
//! process never runs on one of them (`signals.rs`); a fatal signal is reported with the
//! seed (`fail.rs`); a run that does not end in time is a hang (`watchdog.rs`).
//!
//! `--mode NAME` picks a run (`mode.rs` holds the table; a mode with settings runs the
//! program again with them in its environment):
//!
//! | mode            | allocator settings                                | workloads              |
//! |-----------------|---------------------------------------------------|------------------------|
//! | `default`       | ebbmalloc's defaults                              | soak                   |
//! | `large`         | defaults                                          | soak, large            |
//! | `lifecycle`     | defaults                                          | soak, lifecycle        |
//! | `aggressive`    | decay 0, trim interval 1 ms, no retained arenas   | soak, large, lifecycle |
//! | `no-cache`      | thread-cache budget 0, no retained arenas         | soak, large, lifecycle |
//! | `no-background` | no background thread, trim interval 1 ms, decay 0 | soak, large, lifecycle, sleepers |
//! | `idle-reclaim`  | trim interval 1 ms, decay 0                       | soak, sleepers         |
//! | `profiling`     | heap profiler on, 4 KiB interval, trim interval 1 ms, decay 0 | soak, large, lifecycle, profile reads |
//!
//! The soak is the workers above (`worker.rs`, `tester.rs`); `large.rs` moves, caches and
//! aligns large blocks across threads; `lifecycle.rs` starts and ends threads in every way
//! (never allocating, only freeing, freeing after their key destructors, detached in waves
//! beyond glibc's stack cache) while `trim()` and `stats()` loop and the process forks;
//! `sleepers.rs` holds blocks across random sleeps while the trimmer takes back the caches
//! of parked threads, and checks them and new blocks after each sleep; `profile.rs` reads
//! and checks the heap profile while sampled blocks come and go.

mod block;
mod errno;
mod fail;
mod fork;
mod large;
mod lifecycle;
mod mode;
mod options;
mod profile;
mod raw;
mod rng;
mod signals;
mod sleepers;
mod tester;
mod watchdog;
mod worker;

use rng::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tester::{Tester, ALLOCATOR_CALLS, KINDS, TRIM};
use worker::Shared;

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

/// How often the main thread forks, trims, probes signals, and prints progress.
const FORK_EVERY: Duration = Duration::from_secs(2);
const TRIM_EVERY: Duration = Duration::from_millis(500);
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Operations the main thread does on its own table before each fork.
const MAIN_OPS_PER_FORK: usize = 500;
/// Bytes ebbmalloc may count as allocated once every block of the run is freed: what the
/// standard library and this program's own structures still hold.
const LEFT_ALLOCATED_MAX: usize = 1 << 20;
/// Bytes ebbmalloc may still count as resident after `trim()` at the end: the retained
/// arenas' headers and the pools of the few blocks still allocated.
const TRIMMED_RESIDENT_MAX: usize = 16 << 20;
/// How long the end of a run waits for a trimming pass in progress to settle the figures.
const SETTLE_WAIT: Duration = Duration::from_secs(1);
/// A run at least this long must have seen ebbmalloc's background thread (when it is on),
/// so that its signal mask was checked.
const TRIMMER_EXPECTED_AFTER: Duration = Duration::from_secs(2);

/// The worker thread of a slot.
struct Slot {
    handle: Option<JoinHandle<()>>,
    generation: u64,
}

fn main() {
    let opts = match options::parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("stress: {e}\n{}", options::usage());
            std::process::exit(2);
        }
    };
    let mode = opts.mode;
    fail::set_run(opts.seed, opts.threads, mode.name);
    fail::report_fatal_signals();
    mode::enter(mode);
    signals::start_allocator_threads(mode.background_thread());
    // Before any thread of the program starts, so that each inherits the mask.
    signals::block_probe();
    watchdog::start(opts.seconds);
    println!(
        "stress: seed {} ({} threads, {} s, mode {}; rerun with --mode {} --seed {})",
        opts.seed, opts.threads, opts.seconds, mode.name, mode.name, opts.seed
    );
    println!(
        "  mode {}: {}; {}",
        mode.name,
        mode.about,
        mode::describe(mode)
    );
    let shared = Arc::new(Shared::new(opts.threads, opts.seed));
    let mut slots: Vec<Slot> = (0..opts.threads)
        .map(|_| Slot {
            handle: None,
            generation: 0,
        })
        .collect();
    for (i, slot) in slots.iter_mut().enumerate() {
        start_worker(&shared, i, slot);
    }
    let mut helpers = Vec::new();
    if mode.large {
        helpers.extend(large::start(&shared));
    }
    if mode.lifecycle {
        helpers.extend(lifecycle::start(&shared));
    }
    if mode.sleepers {
        helpers.extend(sleepers::start(&shared));
    }
    let mut main = Tester::new(Rng::new(opts.seed, u64::MAX / 2), 0);
    let start = Instant::now();
    let duration = Duration::from_secs(opts.seconds);
    let (mut last_fork, mut last_trim, mut last_progress) = (start, start, start);
    let mut last_probe = start;
    let mut forks = 0u64;
    let mut trimmer_seen = false;
    let mut corrupt_pending = opts.self_test_corrupt;
    let mut latest = ebbmalloc::stats();
    let mut profile = mode.profiling().then(profile::ProfileReader::new);
    watchdog::phase("running the workload");
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(10));
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                if let Some(handle) = slot.handle.take() {
                    worker::join(handle);
                }
                slot.generation += 1;
                start_worker(&shared, i, slot);
            }
        }
        if corrupt_pending && start.elapsed() >= Duration::from_secs(1) {
            shared.corrupt.store(true, Ordering::Relaxed);
            corrupt_pending = false;
        }
        if last_fork.elapsed() >= FORK_EVERY {
            last_fork = Instant::now();
            for _ in 0..MAIN_OPS_PER_FORK {
                main.step();
            }
            forks += 1;
            fork::fork_and_check(&shared, &mut main, forks);
        }
        if last_probe.elapsed() >= PROBE_EVERY {
            signals::probe();
            last_probe = Instant::now();
        }
        if last_trim.elapsed() >= TRIM_EVERY {
            ebbmalloc::trim();
            main.counts[TRIM] += 1;
            // Statistics walk the thread registry while workers come and go.
            latest = ebbmalloc::stats();
            trimmer_seen |= check_allocator_threads(mode) > 0;
            if let Some(profile) = &mut profile {
                profile.step();
            }
            last_trim = Instant::now();
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            let ops = allocator_calls(&shared);
            let secs = start.elapsed().as_secs_f64();
            println!(
                "[{secs:6.0} s] {ops} ops ({:.2} Mops/s), {forks} forks, {} threads, \
                 VmRSS {} MiB; ebbmalloc allocated {} MiB, resident {} MiB",
                ops as f64 / secs / 1e6,
                shared.started(),
                proc_status("VmRSS").unwrap_or(0) >> 10,
                latest.allocated_bytes >> 20,
                latest.resident_bytes >> 20
            );
            last_progress = Instant::now();
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    watchdog::phase("joining the threads at the end");
    for slot in &mut slots {
        if let Some(handle) = slot.handle.take() {
            worker::join(handle);
        }
    }
    for handle in helpers {
        worker::join(handle);
    }
    watchdog::phase("checking at the end");
    let elapsed = start.elapsed().as_secs_f64();
    for block in shared.drain_all() {
        main.free_block(block, "before free of a block left queued at the end");
    }
    main.free_all("before free at the end");
    main.flush_counts(&shared.totals);
    signals::probe();
    trimmer_seen |= check_allocator_threads(mode) > 0;
    if mode.background_thread() && !trimmer_seen && start.elapsed() >= TRIMMER_EXPECTED_AFTER {
        fail::violation(
            "background thread never seen",
            format_args!(
                "no thread named ebbmalloc-* showed up in /proc/self/task during the run, so \
                 the signal mask of ebbmalloc's background thread was never checked"
            ),
        );
    }
    let stats = settled_stats();
    if stats.allocated_bytes > LEFT_ALLOCATED_MAX {
        fail::violation(
            "blocks unaccounted for",
            format_args!(
                "every block of the run is freed and every worker has exited, yet \
                 ebbmalloc::stats() counts {} bytes allocated",
                stats.allocated_bytes
            ),
        );
    }
    if let Some(profile) = &profile {
        profile.finish();
    }
    let end = Footprint::now(stats);
    let released = ebbmalloc::trim();
    let trimmed = ebbmalloc::stats();
    if trimmed.resident_bytes > TRIMMED_RESIDENT_MAX {
        fail::violation(
            "memory not given back",
            format_args!(
                "with {} bytes allocated, trim() released {released} bytes and \
                 ebbmalloc::stats() still counts {} bytes resident",
                trimmed.allocated_bytes, trimmed.resident_bytes
            ),
        );
    }
    report(&shared, mode, elapsed, forks, &end);
    println!(
        "  after trim(): {} KiB released; ebbmalloc resident {} KiB, VmRSS {} KiB",
        released >> 10,
        trimmed.resident_bytes >> 10,
        proc_status("VmRSS").unwrap_or(0)
    );
}

fn start_worker(shared: &Arc<Shared>, i: usize, slot: &mut Slot) {
    let serial = shared.new_serial();
    let generation = slot.generation;
    let shared = Arc::clone(shared);
    slot.handle = Some(worker::spawn(&format!("stress-{i}"), move || {
        worker::run(&shared, i, generation, serial)
    }));
}

/// Checks the signal masks of ebbmalloc's threads, and that there are none when the mode
/// turns the background thread off; returns how many there are.
fn check_allocator_threads(mode: &mode::Mode) -> usize {
    let seen = signals::check_allocator_threads();
    if seen > 0 && !mode.background_thread() {
        fail::violation(
            "background thread running though turned off",
            format_args!(
                "mode {} sets EBBMALLOC_BACKGROUND_THREAD=0, yet {seen} thread(s) named \
                 ebbmalloc-* run",
                mode.name
            ),
        );
    }
    seen
}

/// The statistics once no trimming pass is under way. A pass of the background thread
/// takes cached large mappings out of the cache before it unmaps them, and for that moment
/// `stats()` counts them as allocated: read again until the figure is within bounds or
/// [`SETTLE_WAIT`] has passed (a real leak stays).
fn settled_stats() -> ebbmalloc::Stats {
    let start = Instant::now();
    loop {
        let stats = ebbmalloc::stats();
        if stats.allocated_bytes <= LEFT_ALLOCATED_MAX || start.elapsed() >= SETTLE_WAIT {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn allocator_calls(shared: &Shared) -> u64 {
    ALLOCATOR_CALLS.iter().map(|&kind| shared.total(kind)).sum()
}

/// Memory figures at one moment: the OS's (KiB) and ebbmalloc's.
struct Footprint {
    vm_rss_kib: u64,
    vm_hwm_kib: u64,
    stats: ebbmalloc::Stats,
}

impl Footprint {
    fn now(stats: ebbmalloc::Stats) -> Footprint {
        Footprint {
            vm_rss_kib: proc_status("VmRSS").unwrap_or(0),
            vm_hwm_kib: proc_status("VmHWM").unwrap_or(0),
            stats,
        }
    }
}

fn report(shared: &Shared, mode: &mode::Mode, elapsed: f64, forks: u64, end: &Footprint) {
    let ops = allocator_calls(shared);
    println!(
        "stress: passed: {elapsed:.1} s, mode {}, seed {}, {} threads",
        mode.name, shared.seed, shared.threads
    );
    println!(
        "  ops: {ops} allocator calls, {:.0} ops/s",
        ops as f64 / elapsed
    );
    for (kind, name) in KINDS.iter().enumerate() {
        let count = shared.total(kind);
        println!(
            "    {name:<20} {count:>12} {:>12.0}/s",
            count as f64 / elapsed
        );
    }
    println!("  forks: {forks} (every child exited 0)");
    println!("  threads spawned: {}", shared.started());
    if mode.lifecycle {
        lifecycle::report();
    }
    if mode.sleepers {
        sleepers::report();
    }
    println!(
        "  at the end: VmRSS {} KiB, VmHWM {} KiB; ebbmalloc resident {} KiB, allocated {} \
         KiB, mapped {} KiB",
        end.vm_rss_kib,
        end.vm_hwm_kib,
        end.stats.resident_bytes >> 10,
        end.stats.allocated_bytes >> 10,
        end.stats.mapped_bytes >> 10
    );
}

/// A `kB` figure of /proc/self/status.
fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}
