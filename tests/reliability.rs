//! Regression tests for the defects of issue 11 (reliability II), with `EbbMalloc` as the
//! global allocator of this test binary. Each test names the defect it guards and failed
//! on the code before its fix. The C-library shapes of the same defects (glibc's own frees
//! after a thread's destructors, programs under `LD_PRELOAD`) are in `tests/preload.rs`;
//! the double frees in `tests/misuse.rs`.
//!
//! Tests that need settings of their own (read once, at the allocator's set-up) run this
//! binary again as a child with the settings in its environment: see [`in_child`].

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use ebbmalloc::c_abi;
use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Set in a child that [`in_child`] started; the test body then runs for real.
const CHILD_VAR: &str = "EBBMALLOC_RELIABILITY_CHILD";

/// Runs the test `name` of this binary in a child process with `env` added, and asserts it
/// passed there. Returns false in the child itself, where the caller goes on with the body.
fn in_child(name: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var_os(CHILD_VAR).is_some() {
        return false;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, "1")
        .envs(env.iter().copied())
        .output()
        .expect("the test binary runs");
    assert!(
        output.status.success(),
        "{name} failed in its child process ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

fn errno() -> i32 {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

/// Writes a pattern from `seed` at the start, middle and end of `len` bytes at `p`.
fn stamp(p: *mut u8, len: usize, seed: u8) {
    for (i, at) in [0, len / 2, len - 1].into_iter().enumerate() {
        // SAFETY: `at < len`, inside the caller's block.
        unsafe { p.add(at).write(seed.wrapping_add(i as u8)) };
    }
}

fn check_stamp(p: *const u8, len: usize, seed: u8) {
    for (i, at) in [0, len / 2, len - 1].into_iter().enumerate() {
        // SAFETY: as in `stamp`.
        let found = unsafe { p.add(at).read() };
        assert_eq!(found, seed.wrapping_add(i as u8), "block {p:p} byte {at}");
    }
}

/// Defect 1: `realloc` moved a large mapping and only then took its old header chunk out
/// of the chunk map; a block or arena mapped at the old address in between lost its entry,
/// and its valid free aborted with "invalid free". The shape of the issue, through the C
/// functions (whose `free` looks every pointer up in the chunk map): two threads grow 5 MiB
/// blocks to 24 MiB, two keep eight 5 MiB blocks turning over, one maps arenas with small
/// blocks; every block is stamped and checked, every free must succeed.
#[test]
fn moving_large_reallocs_leave_other_blocks_ours() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..2u8 {
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1);
                let seed = t.wrapping_mul(31).wrapping_add(round);
                // SAFETY: each block is the C functions' own and freed once.
                unsafe {
                    let p = c_abi::malloc(5 * MIB) as *mut u8;
                    assert!(!p.is_null());
                    stamp(p, 5 * MIB, seed);
                    let q = c_abi::realloc(p.cast(), 24 * MIB) as *mut u8;
                    assert!(!q.is_null());
                    check_stamp(q, 5 * MIB, seed);
                    c_abi::free(q.cast());
                }
            }
        }));
    }
    for t in 0..2u8 {
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let mut held: Vec<(usize, u8)> = Vec::new();
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1);
                let seed = t.wrapping_mul(77).wrapping_add(round);
                let p = c_abi::malloc(5 * MIB) as *mut u8;
                assert!(!p.is_null());
                stamp(p, 5 * MIB, seed);
                held.push((p as usize, seed));
                if held.len() > 8 {
                    let (p, seed) = held.remove(0);
                    check_stamp(p as *const u8, 5 * MIB, seed);
                    // SAFETY: allocated above, freed once.
                    unsafe { c_abi::free(p as *mut _) };
                }
            }
            for (p, seed) in held {
                check_stamp(p as *const u8, 5 * MIB, seed);
                // SAFETY: as above.
                unsafe { c_abi::free(p as *mut _) };
            }
        }));
    }
    {
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            // Small blocks of many classes: arenas are mapped, and unmapped by the trims.
            let mut held: Vec<usize> = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let p = c_abi::malloc(16 + (i * 7919) % 4000);
                assert!(!p.is_null());
                held.push(p as usize);
                if held.len() > 20_000 {
                    for p in held.drain(..) {
                        // SAFETY: allocated above, freed once.
                        unsafe { c_abi::free(p as *mut _) };
                    }
                    ebbmalloc::trim();
                }
                i += 1;
            }
            for p in held {
                // SAFETY: as above.
                unsafe { c_abi::free(p as *mut _) };
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("a worker failed");
    }
}

/// Defect 2, as a Rust program can see it: a free never sets a thread cache up. A thread
/// whose only operations are frees gives its blocks back to the central lists (where other
/// threads' refills take them); before the fix its first free registered a cache (which is
/// what broke when glibc freed after the thread's destructors had run) and kept the blocks
/// in it. So a `trim()` by another thread, which empties the central lists but not other
/// threads' caches, finds none of them cached while the freeing thread still lives.
#[test]
fn a_thread_that_only_frees_keeps_no_cache() {
    // A size no other code of this binary uses, so its class's figures are ours.
    const SIZE: usize = 9000;
    const BLOCKS: usize = 200;
    let layout = Layout::from_size_align(SIZE, 8).unwrap();
    let class_of = |stats: &ebbmalloc::Stats| {
        stats
            .classes
            .iter()
            .position(|c| c.block_size >= SIZE)
            .unwrap()
    };
    let blocks: Vec<usize> = (0..BLOCKS)
        // SAFETY: a valid layout.
        .map(|_| unsafe { GLOBAL.alloc(layout) } as usize)
        .collect();
    ebbmalloc::trim();
    let before = ebbmalloc::stats();
    let class = class_of(&before);
    let cached_before = before.classes[class].cached_blocks;

    // A raw thread (std's spawn allocates on the new thread) that frees and then waits.
    struct Job {
        blocks: Vec<usize>,
        layout: Layout,
        freed: AtomicBool,
        release: AtomicBool,
    }
    extern "C" fn free_all(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the `Job` the test keeps alive until this thread is joined.
        let job = unsafe { &*(arg as *const Job) };
        for &p in &job.blocks {
            // SAFETY: live blocks of `layout`, each freed once, here.
            unsafe { GLOBAL.dealloc(p as *mut u8, job.layout) };
        }
        job.freed.store(true, Ordering::Release);
        while !job.release.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        std::ptr::null_mut()
    }
    let job = Job {
        blocks,
        layout,
        freed: AtomicBool::new(false),
        release: AtomicBool::new(false),
    };
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `job` outlives the thread, which is joined below.
    let rc = unsafe {
        libc::pthread_create(
            &mut thread,
            std::ptr::null(),
            free_all,
            &job as *const Job as *mut libc::c_void,
        )
    };
    assert_eq!(rc, 0);
    while !job.freed.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    ebbmalloc::trim();
    let cached = ebbmalloc::stats().classes[class].cached_blocks;
    job.release.store(true, Ordering::Release);
    // SAFETY: our thread, joined once.
    unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
    assert_eq!(
        cached, cached_before,
        "the freeing thread (alive, never allocated) holds blocks in a cache"
    );
}

/// Defect 3: a successful call leaves errno as it found it. Growing a large block whose
/// following address space is taken first fails an in-place `mremap` (ENOMEM), then moves
/// the mapping; the success used to leave ENOMEM behind. Every other C function is checked
/// the same way.
#[test]
fn successful_calls_leave_errno_alone() {
    const SENTINEL: i32 = 12345;
    let check = |what: &str| {
        assert_eq!(errno(), SENTINEL, "{what} changed errno");
    };
    // SAFETY: plain calls of the C functions on blocks they returned.
    unsafe {
        for round in 0..20 {
            let p = c_abi::malloc(5 * MIB) as *mut u8;
            assert!(!p.is_null());
            // Take the address space right after the mapping, so it cannot grow in place.
            let end = p.add(c_abi::malloc_usable_size(p.cast()));
            let blocker = libc::mmap(
                end.cast(),
                4096,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            );
            stamp(p, 5 * MIB, round);
            set_errno(SENTINEL);
            let q = c_abi::realloc(p.cast(), 24 * MIB) as *mut u8;
            assert!(!q.is_null());
            check("realloc growing a large block that had to move");
            check_stamp(q, 5 * MIB, round);
            let q = c_abi::realloc(q.cast(), 3 * MIB);
            check("realloc shrinking a large block");
            c_abi::free(q);
            check("free of a large block");
            if blocker != libc::MAP_FAILED {
                libc::munmap(blocker, 4096);
            }
        }
        set_errno(SENTINEL);
        let mut blocks = Vec::new();
        for size in [1usize, 24, 1000, 40_000, 200_000, 20 * MIB] {
            blocks.push(c_abi::malloc(size));
            blocks.push(c_abi::calloc(3, size));
            let mut aligned = std::ptr::null_mut();
            assert_eq!(c_abi::posix_memalign(&mut aligned, 1 << 16, size), 0);
            blocks.push(aligned);
            blocks.push(c_abi::aligned_alloc(4096, size));
            check("an allocation");
        }
        for block in blocks.iter_mut() {
            *block = c_abi::realloc(*block, 300_000);
            check("realloc");
        }
        for block in blocks {
            c_abi::free(block);
            check("free");
        }
        c_abi::malloc_trim(0);
        ebbmalloc::trim();
        check("trim");
    }
}

/// The status line `name` of this process's thread `tid` (from /proc).
fn task_status_line(tid: &str, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

/// The ids of this process's threads named `comm`.
fn threads_named(comm: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// Defect 4: the background trimmer was created with the signal mask of whichever thread
/// started it, so a process-directed signal that the program blocks in all of *its*
/// threads (to take it with `sigwait`) ran its handler on our thread instead. Every thread
/// of ours blocks every signal it can (not SIGKILL, SIGSTOP, nor glibc's two internal ones).
#[test]
fn the_background_trimmer_blocks_every_signal() {
    // Free memory so that the trimmer starts (from a slow path, on this thread, whose mask
    // blocks nothing).
    let deadline = Instant::now() + Duration::from_secs(20);
    let trimmers = loop {
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 200]).collect();
        drop(blocks);
        let found = threads_named("ebbmalloc-trim");
        if !found.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the background trimmer never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    for tid in trimmers {
        let blocked = task_status_line(&tid, "SigBlk:").expect("SigBlk line");
        let mask = u64::from_str_radix(&blocked, 16).expect("a hex mask");
        // SIGKILL and SIGSTOP cannot be blocked; signals 32 and 33 are glibc's own, which
        // it refuses to block. Bit n - 1 stands for signal n.
        let unblockable = [libc::SIGKILL, libc::SIGSTOP, 32, 33]
            .iter()
            .fold(0u64, |m, &s| m | 1 << (s - 1));
        assert_eq!(
            mask | unblockable,
            u64::MAX,
            "the trimmer (thread {tid}) leaves signals unblocked: SigBlk {blocked}"
        );
    }
}

/// Defect 5: `EBBMALLOC_THREAD_CACHE_BYTES=0` turns caching off, as documented. A refill
/// used to leave the rest of its batch in the bin, and exiting threads parked whole bins as
/// one transfer batch. With the budget at 0 no block of any class is ever cached: after
/// two threads allocate, hand over and free blocks of many classes, the statistics show
/// none in thread caches or transfer caches.
#[test]
fn a_zero_cache_budget_caches_nothing() {
    if in_child(
        "a_zero_cache_budget_caches_nothing",
        &[("EBBMALLOC_THREAD_CACHE_BYTES", "0")],
    ) {
        return;
    }
    let (sender, receiver) = std::sync::mpsc::channel::<Vec<Vec<u8>>>();
    let consumer = std::thread::spawn(move || {
        for batch in receiver {
            assert!(batch.iter().enumerate().all(|(i, b)| b[0] == i as u8));
        }
    });
    for round in 0..50 {
        let batch: Vec<Vec<u8>> = (0..500)
            .map(|i| vec![i as u8; 1 + (i * 37 + round) % 5000])
            .collect();
        let kept: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8; 16 + i * 8]).collect();
        sender.send(batch).unwrap();
        drop(kept);
    }
    drop(sender);
    consumer.join().unwrap();
    let stats = ebbmalloc::stats();
    for class in stats.classes.iter() {
        assert_eq!(
            class.cached_blocks, 0,
            "blocks of {} bytes cached with a budget of 0",
            class.block_size
        );
    }
}

/// Issue 13 (found by the `threads` fuzz target in CI): C's `free`, `realloc` and
/// `malloc_usable_size` recognise a small block by its out bit, read without the class
/// lock, while refills under the lock sweep over the bits of a pool to find the blocks
/// that came back (`pool.rs`). The sweep tested a bit by clearing and setting it again,
/// so for an instant a live block's bit was clear and `malloc_usable_size` on it aborted
/// with `invalid pointer`. With the thread-cache budget at 0, every free goes to its pool
/// and every allocation sweeps: live blocks spread through the pools are checked from one
/// thread while two others churn the same class.
#[test]
fn live_blocks_stay_known_while_their_pools_are_swept() {
    if in_child(
        "live_blocks_stay_known_while_their_pools_are_swept",
        &[("EBBMALLOC_THREAD_CACHE_BYTES", "0")],
    ) {
        return;
    }
    const SIZE: usize = 256;
    let blocks: Vec<usize> = (0..4096).map(|_| c_abi::malloc(SIZE) as usize).collect();
    let mut held = Vec::new();
    for (i, p) in blocks.into_iter().enumerate() {
        if i % 4 == 0 {
            held.push(p);
        } else {
            // SAFETY: a live block of ours, not used again.
            unsafe { c_abi::free(p as *mut _) };
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::with_capacity(64);
                while !stop.load(Ordering::Relaxed) {
                    mine.extend((0..64).map(|_| c_abi::malloc(SIZE) as usize));
                    for p in mine.drain(..) {
                        // SAFETY: a live block of ours, not used again.
                        unsafe { c_abi::free(p as *mut _) };
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        for &p in &held {
            // SAFETY: a live block of ours (an invalid one aborts the child).
            let usable = unsafe { c_abi::malloc_usable_size(p as *mut _) };
            assert_eq!(usable, SIZE);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for churner in churners {
        churner.join().unwrap();
    }
    for p in held {
        // SAFETY: a live block of ours, not used again.
        unsafe { c_abi::free(p as *mut _) };
    }
}
