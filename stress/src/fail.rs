//! The way out on a violation: one report on stderr (what, where, which thread, the seed),
//! then exit with status 1. The first thread to fail reports; any other that fails at the
//! same time waits for the exit.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static SEED: AtomicU64 = AtomicU64::new(0);
static THREADS: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicBool = AtomicBool::new(false);
/// Set in a forked child: it must not flush the stdout buffer it shares with its parent.
static IN_CHILD: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Which thread this is, for reports: the slot and the serial number of a worker.
    static WHO: Cell<Who> = const { Cell::new(Who::Main) };
}

/// The role of a thread, named in reports.
#[derive(Clone, Copy)]
pub enum Who {
    Main,
    Worker { slot: usize, serial: u64 },
    ForkChild,
    ForkChildThread,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Main => write!(f, "main thread"),
            Who::Worker { slot, serial } => write!(f, "worker slot {slot} (thread #{serial})"),
            Who::ForkChild => write!(f, "fork child"),
            Who::ForkChildThread => write!(f, "fork child's thread"),
        }
    }
}

/// Records what a report needs to name the run: its seed and thread count.
pub fn set_run(seed: u64, threads: usize) {
    SEED.store(seed, Ordering::Relaxed);
    THREADS.store(threads as u64, Ordering::Relaxed);
}

pub fn seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

pub fn set_who(who: Who) {
    WHO.with(|w| w.set(who));
}

pub fn who() -> Who {
    WHO.with(Cell::get)
}

pub fn enter_child() {
    IN_CHILD.store(true, Ordering::Relaxed);
    set_who(Who::ForkChild);
}

/// Reports a violation of kind `kind` with `details`, and ends the process with status 1.
#[cold]
pub fn violation(kind: &str, details: fmt::Arguments<'_>) -> ! {
    if FAILED.swap(true, Ordering::SeqCst) {
        // Another thread is reporting and about to exit.
        loop {
            std::thread::park();
        }
    }
    let in_child = IN_CHILD.load(Ordering::Relaxed);
    if !in_child {
        let _ = std::io::stdout().flush();
    }
    eprintln!(
        "stress: VIOLATION: {kind}\n  {details}\n  in: {}\n  seed: {} (rerun: stress --seed {} \
         --threads {})",
        who(),
        seed(),
        seed(),
        THREADS.load(Ordering::Relaxed)
    );
    // SAFETY: `_exit` ends the process at once; no other thread's state matters any more,
    // and not running exit handlers keeps a possibly corrupt heap from being walked.
    unsafe { libc::_exit(1) }
}
