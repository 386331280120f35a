//! Signals and the threads ebbmalloc starts. Every such thread must block every signal: the
//! kernel hands a process-directed signal to any thread that does not block it, so a
//! thread of the allocator that does not would run the program's handlers on its stack, at
//! any point of a trimming pass, and steal signals from a program that blocks them
//! everywhere to take them with `sigwait`. Two checks:
//!
//! - [`check_allocator_threads`] reads the name of every thread of the process
//!   (`/proc/self/task/*/comm`) and, for each thread of ebbmalloc's (`ebbmalloc-trim`, or
//!   any name starting with `ebbmalloc`), its blocked set (`SigBlk` in its `status`), which
//!   must hold every signal that can be blocked: the kernel never blocks SIGKILL and
//!   SIGSTOP, and glibc does not let a program block its internal signals 32 and 33, so
//!   `fffffffe7ffbfeff` counts as all.
//! - [`probe`]: the program blocks [`PROBE`] in every thread of its own ([`block_probe`]
//!   runs in `main` before any thread of the program starts; threads inherit the mask)
//!   and installs a handler that only counts. A probe sends the signal to the process and
//!   takes it with `sigtimedwait`; the handler must never run, and the signal must never be
//!   lost. ebbmalloc's background thread is started before the mask is set
//!   ([`start_allocator_threads`]), as it would be in a program whose runtime allocates
//!   first, so it blocks the probe only if ebbmalloc blocks every signal in it.

use crate::fail::violation;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The signal the program blocks everywhere and sends to itself.
const PROBE: libc::c_int = libc::SIGUSR1;
/// How long the start of a run waits for ebbmalloc's background thread to show up.
const START_WAIT: Duration = Duration::from_secs(2);
/// How long a probe leaves its signal pending before taking it.
const PROBE_GRACE: Duration = Duration::from_millis(20);
/// How long a probe waits for its signal.
const PROBE_WAIT: Duration = Duration::from_secs(5);
/// Signals that no thread can block, as bits of `SigBlk` (signal `n` is bit `n - 1`):
/// SIGKILL and SIGSTOP (the kernel's rule), 32 and 33 (glibc's internal ones).
const UNBLOCKABLE: u64 = 1 << (libc::SIGKILL - 1) | 1 << (libc::SIGSTOP - 1) | 0b11 << 31;

/// Times the probe's handler ran, and the thread it last ran on.
static HANDLED: AtomicU64 = AtomicU64::new(0);
static HANDLED_ON: AtomicI32 = AtomicI32::new(0);

/// Installs the probe's counting handler and blocks the probe signal in the calling thread
/// (which every thread started afterwards inherits). Call first thing in `main`.
pub fn block_probe() {
    // SAFETY: a zeroed `sigaction` and `sigset_t` are valid starting points; the handler is
    // an `extern "C"` function that lives for the whole process and is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_probe as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(PROBE, &action, std::ptr::null_mut());
        let set = probe_set();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

extern "C" fn on_probe(_signal: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: `gettid` is a plain system call.
    HANDLED_ON.store(unsafe { libc::gettid() }, Ordering::SeqCst);
}

fn probe_set() -> libc::sigset_t {
    // SAFETY: `sigemptyset` initialises the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, PROBE);
        set
    }
}

/// Sends the probe signal to the process and takes it back with `sigtimedwait`.
pub fn probe() {
    let set = probe_set();
    let timeout = libc::timespec {
        tv_sec: PROBE_WAIT.as_secs() as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: signalling our own process with a signal every thread of ours blocks.
    unsafe { libc::kill(libc::getpid(), PROBE) };
    // Time for a thread that does not block it to take it: taken at once, it would be ours.
    std::thread::sleep(PROBE_GRACE);
    fail_if_handled();
    let taken = loop {
        // SAFETY: `set` and `timeout` are valid; the siginfo pointer may be null.
        let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break r;
        }
    };
    fail_if_handled();
    if taken != PROBE {
        violation(
            "signal lost",
            format_args!(
                "SIGUSR1 sent to the process was not there for sigtimedwait within {} s \
                 (returned {taken}: {})",
                PROBE_WAIT.as_secs(),
                std::io::Error::last_os_error()
            ),
        );
    }
}

/// Reports a run of the probe's handler: a thread that does not block the probe signal.
fn fail_if_handled() {
    let handled = HANDLED.load(Ordering::SeqCst);
    if handled > 0 {
        let tid = HANDLED_ON.load(Ordering::SeqCst);
        violation(
            "signal handled by a thread that should block it",
            format_args!(
                "SIGUSR1, blocked in every thread of the program and sent to the process, ran \
                 its handler {handled} time(s), last on thread {tid} '{}': a thread the program \
                 did not start, which does not block every signal",
                thread_name(tid).unwrap_or_default()
            ),
        );
    }
}

/// Has ebbmalloc start its background thread now, if `background` (the mode leaves it on),
/// before the program blocks any signal. Programs allocate long before they set up their
/// signal masks (the runtime does), so a thread of the allocator's may well start before
/// them, and not block a signal because it did not inherit the block. The probe then
/// finds such a thread, and not only a thread with a mask that is read as too open. Frees
/// and allocates small blocks (each batch of them is a slow path, which starts the thread)
/// until the thread shows up, or for [`START_WAIT`] at most.
pub fn start_allocator_threads(background: bool) {
    let start = Instant::now();
    while background && allocator_threads().next().is_none() && start.elapsed() < START_WAIT {
        let blocks: Vec<Box<[u64; 6]>> = (0..4096).map(|i| Box::new([i; 6])).collect();
        drop(std::hint::black_box(blocks));
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Checks the blocked signals of every thread of ebbmalloc's; returns how many there are.
pub fn check_allocator_threads() -> usize {
    let mut seen = 0;
    for (tid, name) in allocator_threads() {
        // A thread that exits meanwhile has no files any more: skip it.
        let Some(blocked) = blocked_signals(tid) else {
            continue;
        };
        seen += 1;
        if blocked | UNBLOCKABLE != u64::MAX {
            violation(
                "allocator thread does not block every signal",
                format_args!(
                    "thread {tid} '{name}': SigBlk {blocked:016x}, so signals {} can be \
                     delivered to it",
                    open_signals(blocked | UNBLOCKABLE)
                ),
            );
        }
    }
    seen
}

/// The id and name of every thread of ebbmalloc's (named `ebbmalloc...`).
fn allocator_threads() -> impl Iterator<Item = (i32, String)> {
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    tasks.flatten().filter_map(|task| {
        let tid = task.file_name().to_str()?.parse().ok()?;
        let name = thread_name(tid)?;
        name.starts_with("ebbmalloc").then_some((tid, name))
    })
}

/// The signals a blocked set leaves open, as ranges: "1-8, 11-18, 20-31, 34-64".
fn open_signals(blocked: u64) -> String {
    let open = |n: u32| blocked & (1 << (n - 1)) == 0;
    let mut ranges = Vec::new();
    let mut n = 1;
    while n <= 64 {
        if !open(n) {
            n += 1;
            continue;
        }
        let first = n;
        while n < 64 && open(n + 1) {
            n += 1;
        }
        ranges.push(if first == n {
            first.to_string()
        } else {
            format!("{first}-{n}")
        });
        n += 1;
    }
    ranges.join(", ")
}

fn thread_name(tid: i32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

fn blocked_signals(tid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("SigBlk:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_signals_are_listed_as_ranges() {
        assert_eq!(open_signals(u64::MAX), "");
        // SIGUSR1 (10) blocked, as inherited from a thread of the program.
        assert_eq!(
            open_signals(1 << 9 | UNBLOCKABLE),
            "1-8, 11-18, 20-31, 34-64"
        );
        assert_eq!(open_signals(!(1 << 63)), "64");
    }
}
