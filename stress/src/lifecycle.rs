//! The thread lifecycle workload: threads that come and go in every way a program's threads
//! can, while `ebbmalloc::trim()` and `ebbmalloc::stats()` run in loops on threads of their
//! own and the process forks as threads start up. A *churn* thread runs waves; each wave
//! starts [`WAVE_THREADS`] raw threads (`pthread_create` of a detached thread with
//! [`STACK_BYTES`] of stack), one of each [`RawKind`] in turn:
//!
//! - **idle**: does nothing, so never touches the allocator;
//! - **frees only**: checks and frees blocks other threads allocated, and allocates nothing
//!   (its first call of the allocator is a free);
//! - **late free**: does nothing itself, but a pthread key destructor frees blocks handed
//!   to it in the last round of key destructors, when ebbmalloc's own destructor has run
//!   or was never due. glibc does this to every program: when its cache of thread stacks
//!   passes 40 MiB, an exiting thread frees the TLS of cached stacks (`_dl_deallocate_tls`
//!   calls `free`) after its key destructors. Such a free must not set a cache up (nothing
//!   would tear it down, and the registry would keep the dead thread's TLS) nor use a cache
//!   torn down;
//! - **late free after use**: allocates first, so its cache is set up and torn down, then as
//!   late free;
//! - **allocates**: a short random workload; hands some blocks back to the churn thread.
//!
//! Twelve 8 MiB stacks are more than glibc's 40 MiB stack cache, so glibc unmaps the stacks
//! of exited threads, and with them the TLS of any cache left registered. Each wave also
//! starts std threads (joined): one that does nothing, one that only frees, and one whose
//! thread-local destructor frees. Every [`FORK_EVERY`] the churn thread forks
//! while the wave's threads start up, and the child starts a thread that allocates (see
//! `fork.rs`). Then the churn thread waits for the wave to end.

use crate::block::Block;
use crate::fail::{self, violation, Who};
use crate::fork;
use crate::raw;
use crate::rng::Rng;
use crate::tester::Tester;
use crate::worker::{self, Shared};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Raw threads per wave.
const WAVE_THREADS: usize = 12;
/// Stack of every thread a wave starts: twelve of them pass glibc's stack cache.
const STACK_BYTES: usize = 8 << 20;
/// Blocks handed to a thread at most.
const HANDED_MAX: usize = 8;
/// Operations of the threads that allocate.
const THREAD_OPS: usize = 300;
/// Operations of the churn thread between two waves (they make the blocks it hands out).
const CHURN_OPS: usize = 200;
/// How long a wave may take to end.
const WAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the churn thread forks.
const FORK_EVERY: Duration = Duration::from_millis(300);
const TRIM_PAUSE: Duration = Duration::from_millis(1);
const STATS_PAUSE: Duration = Duration::from_micros(200);

#[derive(Clone, Copy, PartialEq, Eq)]
enum RawKind {
    Idle,
    FreesOnly,
    LateFree,
    LateFreeAfterUse,
    Allocates,
}

const RAW_KINDS: [RawKind; 5] = [
    RawKind::Idle,
    RawKind::FreesOnly,
    RawKind::LateFree,
    RawKind::LateFreeAfterUse,
    RawKind::Allocates,
];

impl RawKind {
    fn role(self) -> &'static str {
        match self {
            RawKind::Idle => "raw thread (idle)",
            RawKind::FreesOnly => "raw thread (frees only)",
            RawKind::LateFree => "raw thread (late free)",
            RawKind::LateFreeAfterUse => "raw thread (late free after use)",
            RawKind::Allocates => "raw thread (allocates)",
        }
    }
}

/// What a raw thread is given. Boxed by the churn thread, owned by the raw thread (or its
/// key destructor) from then on.
struct Job {
    kind: RawKind,
    blocks: Vec<Block>,
    shared: Arc<Shared>,
    serial: u64,
    /// Key destructor rounds so far (late frees).
    rounds: usize,
}

/// Threads of the current wave that have not finished what they do (each decrements it at
/// the very end).
static UNFINISHED: AtomicUsize = AtomicUsize::new(0);
/// Blocks the allocating threads hand back to the churn thread.
static RETURNED: Mutex<Vec<Block>> = Mutex::new(Vec::new());
/// The key whose destructor does the late frees, and glibc's rounds of key destructors.
static LATE_FREE: OnceLock<(libc::pthread_key_t, usize)> = OnceLock::new();

/// What the workload did, for the report.
static WAVES: AtomicU64 = AtomicU64::new(0);
static RAW_THREADS: AtomicU64 = AtomicU64::new(0);
static STD_THREADS: AtomicU64 = AtomicU64::new(0);
static FORKS: AtomicU64 = AtomicU64::new(0);
static TRIMS: AtomicU64 = AtomicU64::new(0);
static STATS_WALKS: AtomicU64 = AtomicU64::new(0);

/// The body of one of the workload's long-running threads, given its serial number.
type LoopBody = fn(&Arc<Shared>, u64);

/// Starts the churn, trim and statistics threads; they run until `shared.stop`.
pub fn start(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    LATE_FREE.get_or_init(create_late_free_key);
    let loops: [(&str, LoopBody); 3] = [
        ("lifecycle churn", churn),
        ("trim() loop", trim_loop),
        ("stats() loop", stats_loop),
    ];
    loops
        .into_iter()
        .map(|(role, body)| {
            let shared = Arc::clone(shared);
            let serial = shared.new_serial();
            worker::spawn(role, move || {
                fail::set_who(Who::Helper { role, serial });
                body(&shared, serial);
            })
        })
        .collect()
}

/// One line for the final report.
pub fn report() {
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    println!(
        "  lifecycle: {} waves, {} raw threads, {} std threads, {} forks as threads started; \
         {} trim() and {} stats() calls looping beside them",
        get(&WAVES),
        get(&RAW_THREADS),
        get(&STD_THREADS),
        get(&FORKS),
        get(&TRIMS),
        get(&STATS_WALKS)
    );
}

fn trim_loop(shared: &Arc<Shared>, _serial: u64) {
    while !shared.stop.load(Ordering::Relaxed) {
        ebbmalloc::trim();
        TRIMS.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(TRIM_PAUSE);
    }
}

fn stats_loop(shared: &Arc<Shared>, _serial: u64) {
    while !shared.stop.load(Ordering::Relaxed) {
        std::hint::black_box(ebbmalloc::stats());
        STATS_WALKS.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(STATS_PAUSE);
    }
}

fn churn(shared: &Arc<Shared>, serial: u64) {
    let mut tester = Tester::new(Rng::new(shared.seed, 5 << 60), serial);
    let mut last_fork = Instant::now();
    let mut wave = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        for _ in 0..CHURN_OPS {
            tester.step();
        }
        adopt_returned(&mut tester);
        UNFINISHED.store(WAVE_THREADS + STD_KINDS, Ordering::SeqCst);
        for i in 0..WAVE_THREADS {
            let kind = RAW_KINDS[(wave as usize + i) % RAW_KINDS.len()];
            start_raw(shared, kind, &mut tester);
        }
        let joinable = start_std_threads(shared, &mut tester);
        if last_fork.elapsed() >= FORK_EVERY {
            // While the wave's threads start up and exit, and the trim loop runs.
            fork::fork_from_helper(shared.seed, (7 << 60) | wave);
            FORKS.fetch_add(1, Ordering::Relaxed);
            last_fork = Instant::now();
        }
        wait_for_wave(wave);
        for handle in joinable {
            worker::join(handle);
        }
        tester.flush_counts(&shared.totals);
        WAVES.fetch_add(1, Ordering::Relaxed);
        wave += 1;
    }
    adopt_returned(&mut tester);
    tester.free_all("before free at the end of the lifecycle churn");
    tester.flush_counts(&shared.totals);
}

/// Takes the blocks the allocating threads handed back into the table.
fn adopt_returned(tester: &mut Tester) {
    let returned = std::mem::take(&mut *RETURNED.lock().unwrap_or_else(|e| e.into_inner()));
    for block in returned {
        block.check("on receipt from an exited thread");
        tester.adopt(block);
    }
}

/// Up to [`HANDED_MAX`] blocks of the table, to hand to another thread.
fn hand_out(tester: &mut Tester) -> Vec<Block> {
    let n = tester.rng.range(1, HANDED_MAX);
    (0..n).filter_map(|_| tester.take_random()).collect()
}

fn wait_for_wave(wave: u64) {
    let start = Instant::now();
    while UNFINISHED.load(Ordering::SeqCst) > 0 {
        if start.elapsed() > WAVE_TIMEOUT {
            violation(
                "thread wave did not end",
                format_args!(
                    "{} of the threads of wave {wave} did not finish within {} s",
                    UNFINISHED.load(Ordering::SeqCst),
                    WAVE_TIMEOUT.as_secs()
                ),
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Checks and frees blocks handed to this thread, counting them as `serial`'s frees.
fn free_handed(shared: &Shared, serial: u64, blocks: Vec<Block>, context: &str) {
    let mut tester = Tester::new(Rng::new(shared.seed, serial), serial);
    for block in blocks {
        tester.free_block(block, context);
    }
    tester.flush_counts(&shared.totals);
}

/// Some random work of this thread's own; hands a few blocks back to the churn thread
/// when `hand_back`, frees the rest.
fn allocate_some(shared: &Shared, serial: u64, hand_back: bool) {
    let mut tester = Tester::new(Rng::new(shared.seed, (6 << 60) | serial), serial);
    for _ in 0..THREAD_OPS {
        tester.step();
    }
    if hand_back {
        let blocks = hand_out(&mut tester);
        RETURNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(blocks);
    }
    tester.free_all("before free at the exit of a short-lived thread");
    tester.flush_counts(&shared.totals);
}

fn start_raw(shared: &Arc<Shared>, kind: RawKind, tester: &mut Tester) {
    let arg = if kind == RawKind::Idle {
        // Not even its job is freed by it.
        std::ptr::null_mut()
    } else {
        let blocks = match kind {
            RawKind::Allocates => Vec::new(),
            _ => hand_out(tester),
        };
        Box::into_raw(Box::new(Job {
            kind,
            blocks,
            shared: Arc::clone(shared),
            serial: shared.new_serial(),
            rounds: 0,
        }))
    };
    RAW_THREADS.fetch_add(1, Ordering::Relaxed);
    // `raw_main` takes `arg` over (a leaked `Box<Job>`, or null).
    raw::start(
        raw_main,
        arg.cast(),
        STACK_BYTES,
        raw::Ending::Detached,
        kind.role(),
    );
}

extern "C" fn raw_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    if arg.is_null() {
        UNFINISHED.fetch_sub(1, Ordering::SeqCst);
        return std::ptr::null_mut();
    }
    // SAFETY: a `Box<Job>` leaked by `start_raw` for this thread alone.
    let job = unsafe { Box::from_raw(arg.cast::<Job>()) };
    fail::set_who(Who::Helper {
        role: job.kind.role(),
        serial: job.serial,
    });
    match job.kind {
        RawKind::Idle | RawKind::FreesOnly => {
            let Job {
                blocks,
                shared,
                serial,
                ..
            } = *job;
            free_handed(
                &shared,
                serial,
                blocks,
                "before free in a thread that only frees",
            );
        }
        RawKind::Allocates => allocate_some(&job.shared, job.serial, true),
        RawKind::LateFree | RawKind::LateFreeAfterUse => {
            if job.kind == RawKind::LateFreeAfterUse {
                allocate_some(&job.shared, job.serial, false);
            }
            let (key, _) = late_free_key();
            // SAFETY: our key; the value is the job, which the destructor takes over.
            unsafe { libc::pthread_setspecific(key, Box::into_raw(job).cast()) };
            // The destructor finishes this thread's part.
            return std::ptr::null_mut();
        }
    }
    UNFINISHED.fetch_sub(1, Ordering::SeqCst);
    std::ptr::null_mut()
}

fn create_late_free_key() -> (libc::pthread_key_t, usize) {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: creating a key with an `extern "C"` destructor that lives for the process.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(late_free)) };
    if rc != 0 {
        violation(
            "pthread_key_create failed",
            format_args!("{}", std::io::Error::from_raw_os_error(rc)),
        );
    }
    // SAFETY: a plain query.
    let rounds = unsafe { libc::sysconf(libc::_SC_THREAD_DESTRUCTOR_ITERATIONS) };
    (key, rounds.max(1) as usize)
}

fn late_free_key() -> (libc::pthread_key_t, usize) {
    *LATE_FREE.get_or_init(create_late_free_key)
}

/// The key destructor of a late-free thread: sets the key again until glibc's last round
/// of destructors, then frees the blocks handed to the thread.
extern "C" fn late_free(value: *mut libc::c_void) {
    let (key, rounds) = late_free_key();
    let job = value.cast::<Job>();
    // SAFETY: the value is the thread's `Box<Job>`, set by `raw_main`; only this thread's
    // destructor sees it.
    unsafe {
        (*job).rounds += 1;
        if (*job).rounds < rounds {
            // A value set again makes glibc run another round of destructors.
            libc::pthread_setspecific(key, value);
            return;
        }
        let Job {
            blocks,
            shared,
            serial,
            ..
        } = *Box::from_raw(job);
        free_handed(
            &shared,
            serial,
            blocks,
            "before free in the last key destructor of an exiting thread",
        );
    }
    UNFINISHED.fetch_sub(1, Ordering::SeqCst);
}

/// std threads per wave (all of them count in `UNFINISHED`).
const STD_KINDS: usize = 3;

/// Starts the wave's std threads; returns those to join.
fn start_std_threads(shared: &Arc<Shared>, tester: &mut Tester) -> Vec<JoinHandle<()>> {
    STD_THREADS.fetch_add(STD_KINDS as u64, Ordering::Relaxed);
    let mut joinable = Vec::new();
    // Never allocates itself (std frees what it allocated for the thread in it).
    joinable.push(worker::spawn_with_stack(
        "std thread (idle)",
        STACK_BYTES,
        || {
            UNFINISHED.fetch_sub(1, Ordering::SeqCst);
        },
    ));
    // Only frees. Joined: dropping its handle would detach a thread that may be exiting
    // (see `raw.rs`); the detached threads that free are the raw ones.
    let (blocks, owner) = (hand_out(tester), Arc::clone(shared));
    let serial = shared.new_serial();
    joinable.push(worker::spawn_with_stack(
        "std thread (frees only)",
        STACK_BYTES,
        move || {
            free_handed(
                &owner,
                serial,
                blocks,
                "before free in a std thread that only frees",
            );
            UNFINISHED.fetch_sub(1, Ordering::SeqCst);
        },
    ));
    // Frees from a thread-local destructor, at its exit.
    let (blocks, owner) = (hand_out(tester), Arc::clone(shared));
    let serial = shared.new_serial();
    joinable.push(worker::spawn_with_stack(
        "std thread (TLS destructor frees)",
        STACK_BYTES,
        move || {
            HELD.with_borrow_mut(|held| {
                *held = Some(Held {
                    blocks,
                    shared: owner,
                    serial,
                })
            });
        },
    ));
    joinable
}

/// Blocks a std thread frees from its thread-local destructor.
struct Held {
    blocks: Vec<Block>,
    shared: Arc<Shared>,
    serial: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let blocks = std::mem::take(&mut self.blocks);
        free_handed(
            &self.shared,
            self.serial,
            blocks,
            "before free in a thread-local destructor",
        );
        UNFINISHED.fetch_sub(1, Ordering::SeqCst);
    }
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}
