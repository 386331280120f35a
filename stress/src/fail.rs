//! The way out on a violation: one report on stderr (what, where, which thread, the seed),
//! then exit with status 1. The first thread to fail reports; any other that fails at the
//! same time waits for the exit.
//!
//! Two ways out do not allocate, because the allocator may be what is broken: a fatal
//! signal (a crash, or ebbmalloc's own `abort` after its `ebbmalloc: ...` message) is
//! reported by a handler, and the watchdog reports a hang; both write a report formatted on
//! the stack with `write(2)` and exit with status 1 as well.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

static SEED: AtomicU64 = AtomicU64::new(0);
static THREADS: AtomicU64 = AtomicU64::new(0);
/// The mode of the run, for the rerun command.
static MODE: OnceLock<&'static str> = OnceLock::new();
static FAILED: AtomicBool = AtomicBool::new(false);
/// Set in a forked child: it must not flush the stdout buffer it shares with its parent.
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// The signals that end the process and get a report.
const FATAL_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGILL,
    libc::SIGFPE,
];

thread_local! {
    /// Which thread this is, for reports: the slot and the serial number of a worker.
    static WHO: Cell<Who> = const { Cell::new(Who::Main) };
}

/// The role of a thread, named in reports.
#[derive(Clone, Copy)]
pub enum Who {
    Main,
    Worker {
        slot: usize,
        serial: u64,
    },
    /// A thread of one of the mode's extra workloads.
    Helper {
        role: &'static str,
        serial: u64,
    },
    ForkChild,
    ForkChildThread,
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Main => write!(f, "main thread"),
            Who::Worker { slot, serial } => write!(f, "worker slot {slot} (thread #{serial})"),
            Who::Helper { role, serial } => write!(f, "{role} (thread #{serial})"),
            Who::ForkChild => write!(f, "fork child"),
            Who::ForkChildThread => write!(f, "fork child's thread"),
        }
    }
}

/// Records what a report needs to name the run: its seed, thread count and mode.
pub fn set_run(seed: u64, threads: usize, mode: &'static str) {
    SEED.store(seed, Ordering::Relaxed);
    THREADS.store(threads as u64, Ordering::Relaxed);
    let _ = MODE.set(mode);
}

pub fn seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

/// The line that names the run in every report.
struct RunLine;

impl fmt::Display for RunLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = MODE.get().copied().unwrap_or("default");
        write!(
            f,
            "seed: {} (rerun: stress --mode {mode} --seed {} --threads {})",
            seed(),
            seed(),
            THREADS.load(Ordering::Relaxed)
        )
    }
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
        "stress: VIOLATION: {kind}\n  {details}\n  in: {}\n  {RunLine}",
        who()
    );
    // SAFETY: `_exit` ends the process at once; no other thread's state matters any more,
    // and not running exit handlers keeps a possibly corrupt heap from being walked.
    unsafe { libc::_exit(1) }
}

/// Reports a violation without allocating (the allocator may be hung or broken) and ends
/// the process with status 1. Safe to call from a signal handler.
pub fn violation_without_allocating(kind: &str, details: fmt::Arguments<'_>) -> ! {
    let mut report = StackText::new();
    if FAILED.swap(true, Ordering::SeqCst) {
        // A report is on its way (or this failure happened while writing it).
        let _ = writeln!(report, "stress: also: {kind}");
    } else {
        let _ = writeln!(
            report,
            "stress: VIOLATION: {kind}\n  {details}\n  in: {}\n  {RunLine}",
            who()
        );
    }
    report.write_to_stderr();
    // SAFETY: as in `violation`.
    unsafe { libc::_exit(1) }
}

/// Installs the report of fatal signals. Call after [`set_run`].
pub fn report_fatal_signals() {
    for signal in FATAL_SIGNALS {
        // SAFETY: a zeroed `sigaction` is valid; the handler is an `extern "C"` function that
        // lives for the whole process, and only writes to stderr and exits.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

extern "C" fn on_fatal_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    if signal == libc::SIGABRT {
        violation_without_allocating(
            "abort (SIGABRT)",
            format_args!("ebbmalloc's message, if it found misuse or corruption, is above"),
        )
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for the faults
    // handled here it holds the faulting address.
    let address = unsafe { (*info).si_addr() } as usize;
    violation_without_allocating(
        "crash: fatal signal",
        format_args!("signal {signal}, fault address {address:#x}"),
    )
}

/// Text formatted on the stack, for reports that must not allocate; cut short when full.
struct StackText {
    bytes: [u8; 1024],
    len: usize,
}

impl StackText {
    fn new() -> StackText {
        StackText {
            bytes: [0; 1024],
            len: 0,
        }
    }

    fn write_to_stderr(&self) {
        let mut written = 0;
        while written < self.len {
            // SAFETY: writing bytes of our buffer to stderr.
            let n = unsafe {
                libc::write(
                    2,
                    self.bytes[written..self.len].as_ptr().cast(),
                    self.len - written,
                )
            };
            if n <= 0 {
                return;
            }
            written += n as usize;
        }
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
