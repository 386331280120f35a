//! `stress`: a soak test of ebbmalloc as the global allocator. Worker threads do random
//! allocations, reallocations and frees of stamped blocks, check every block before it is
//! freed and after it is moved, hand blocks to each other, exit and are replaced; the main
//! thread forks and trims periodically. Any violation is reported with the seed and ends
//! the run with status 1. `stress --help` says how to run it.

mod block;
mod fail;
mod fork;
mod rng;
mod tester;
mod worker;

use rng::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tester::{Tester, ALLOCATOR_CALLS, KINDS, TRIM};
use worker::Shared;

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

const USAGE: &str = "\
usage: stress [--seconds N] [--threads T] [--seed S] [--self-test-corrupt]

  --seconds N           run for N seconds (default 60)
  --threads T           worker threads (default 8)
  --seed S              seed of the random choices (default: from the clock; printed)
  --self-test-corrupt   overwrite one byte of a live block after 1 s: the run must fail

Exits 0 when no violation was found, 1 on a violation (reported on stderr), 2 on bad
arguments.";

/// How often the main thread forks, trims, and prints progress.
const FORK_EVERY: Duration = Duration::from_secs(2);
const TRIM_EVERY: Duration = Duration::from_millis(500);
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Operations the main thread does on its own table before each fork.
const MAIN_OPS_PER_FORK: usize = 500;
/// Bytes ebbmalloc may count as allocated once every block of the run is freed: what the
/// standard library and this program's own structures still hold.
const LEFT_ALLOCATED_MAX: usize = 1 << 20;
/// Bytes ebbmalloc may still count as resident after `trim()` at the end: the retained
/// arenas' headers and the pools of the few blocks still allocated.
const TRIMMED_RESIDENT_MAX: usize = 16 << 20;

struct Options {
    seconds: u64,
    threads: usize,
    seed: u64,
    self_test_corrupt: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        seconds: 60,
        threads: 8,
        seed: seed_from_clock(),
        self_test_corrupt: false,
    };
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--seconds" => opts.seconds = number(&name, &value()?)?,
            "--threads" => {
                opts.threads = number(&name, &value()?)? as usize;
                if opts.threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            "--seed" => opts.seed = number(&name, &value()?)?,
            "--self-test-corrupt" => opts.self_test_corrupt = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {name}")),
        }
    }
    Ok(opts)
}

/// A decimal or `0x` hexadecimal number.
fn number(name: &str, text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{name}: not a number: {text}"))
}

fn seed_from_clock() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rng::mix(now.as_nanos() as u64 ^ u64::from(std::process::id()))
}

/// The worker thread of a slot.
struct Slot {
    handle: Option<JoinHandle<()>>,
    generation: u64,
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("stress: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    fail::set_run(opts.seed, opts.threads);
    println!(
        "stress: seed {} ({} threads, {} s; rerun with --seed {})",
        opts.seed, opts.threads, opts.seconds, opts.seed
    );
    let shared = Arc::new(Shared::new(opts.threads, opts.seed));
    let mut spawned = 0u64;
    let mut slots: Vec<Slot> = (0..opts.threads)
        .map(|_| Slot {
            handle: None,
            generation: 0,
        })
        .collect();
    for (i, slot) in slots.iter_mut().enumerate() {
        start_worker(&shared, i, slot, &mut spawned);
    }
    let mut main = Tester::new(Rng::new(opts.seed, u64::MAX / 2), 0);
    let start = Instant::now();
    let duration = Duration::from_secs(opts.seconds);
    let (mut last_fork, mut last_trim, mut last_progress) = (start, start, start);
    let mut forks = 0u64;
    let mut corrupt_pending = opts.self_test_corrupt;
    let mut latest = ebbmalloc::stats();
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(10));
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.handle.as_ref().is_some_and(JoinHandle::is_finished) {
                join(slot);
                slot.generation += 1;
                start_worker(&shared, i, slot, &mut spawned);
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
        if last_trim.elapsed() >= TRIM_EVERY {
            ebbmalloc::trim();
            main.counts[TRIM] += 1;
            // Statistics walk the thread registry while workers come and go.
            latest = ebbmalloc::stats();
            last_trim = Instant::now();
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            let ops = allocator_calls(&shared);
            let secs = start.elapsed().as_secs_f64();
            println!(
                "[{secs:6.0} s] {ops} ops ({:.2} Mops/s), {forks} forks, {spawned} threads, \
                 VmRSS {} MiB; ebbmalloc allocated {} MiB, resident {} MiB",
                ops as f64 / secs / 1e6,
                proc_status("VmRSS").unwrap_or(0) >> 10,
                latest.allocated_bytes >> 20,
                latest.resident_bytes >> 20
            );
            last_progress = Instant::now();
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    for slot in &mut slots {
        join(slot);
    }
    let elapsed = start.elapsed().as_secs_f64();
    for block in shared.drain_all() {
        main.free_block(block, "before free of a block left queued at the end");
    }
    main.free_all("before free at the end");
    main.flush_counts(&shared.totals);
    let stats = ebbmalloc::stats();
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
    report(&shared, elapsed, forks, spawned, &end);
    println!(
        "  after trim(): {} KiB released; ebbmalloc resident {} KiB, VmRSS {} KiB",
        released >> 10,
        trimmed.resident_bytes >> 10,
        proc_status("VmRSS").unwrap_or(0)
    );
}

fn start_worker(shared: &Arc<Shared>, i: usize, slot: &mut Slot, spawned: &mut u64) {
    *spawned += 1;
    let serial = *spawned;
    let generation = slot.generation;
    let shared = Arc::clone(shared);
    let handle = std::thread::Builder::new()
        .name(format!("stress-{i}"))
        .spawn(move || worker::run(&shared, i, generation, serial));
    match handle {
        Ok(handle) => slot.handle = Some(handle),
        Err(e) => fail::violation("thread spawn failed", format_args!("slot {i}: {e}")),
    }
}

fn join(slot: &mut Slot) {
    if let Some(handle) = slot.handle.take() {
        if handle.join().is_err() {
            fail::violation("worker panicked", format_args!("see its message above"));
        }
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

fn report(shared: &Shared, elapsed: f64, forks: u64, spawned: u64, end: &Footprint) {
    let ops = allocator_calls(shared);
    println!(
        "stress: passed: {elapsed:.1} s, seed {}, {} threads",
        shared.seed, shared.threads
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
    println!("  threads spawned: {spawned}");
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
