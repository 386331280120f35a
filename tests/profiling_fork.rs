//! The heap profiler survives thread exit and `fork`: the live samples of threads that
//! exited stay in the profile until their blocks are freed, and a child forked while other
//! threads sample (and may hold the profiler's lock) can allocate with profiling on and
//! take a snapshot.
//!
//! One test function: profiling is process-wide.

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn live_bytes() -> f64 {
    ebbmalloc::profiling::snapshot()
        .stacks
        .iter()
        .map(|stack| stack.counts.live_bytes)
        .sum()
}

fn live_samples() -> u64 {
    ebbmalloc::profiling::snapshot()
        .stacks
        .iter()
        .map(|stack| stack.counts.live_samples)
        .sum()
}

/// 8 MiB in 4 KiB blocks, handed to the caller.
#[inline(never)]
fn thread_site() -> Vec<Vec<u8>> {
    (0..2048).map(|i| vec![i as u8; 4096]).collect()
}

/// Waits for `child` to exit, at most `limit`; its exit status, or `None` (killed) when
/// it did not exit in time: a deadlock.
fn wait_for(child: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waits for our own child without blocking.
        let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if done == child {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        if start.elapsed() > limit {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// In a forked child: allocates with profiling on, takes snapshots, and exits 0 if the
/// child's samples show in them.
fn child_work() -> ! {
    let before = live_samples();
    let blocks: Vec<Vec<u8>> = (0..1024).map(|i| vec![i as u8; 1024]).collect();
    let after = live_samples();
    let ok = after > before && blocks.len() == 1024;
    drop(blocks);
    // SAFETY: ends the child without running the parent's exit handlers twice.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

#[test]
fn samples_survive_thread_exit_and_the_profiler_survives_fork() {
    let mut settings = ebbmalloc::Settings::current();
    settings.prof_sample_bytes = 4096;
    ebbmalloc::configure(&settings);
    ebbmalloc::profiling::set_active(true);

    // Thread exit: blocks allocated by threads that are gone stay live in the profile.
    let before = live_bytes();
    let kept: Vec<Vec<Vec<u8>>> = (0..4)
        .map(|_| std::thread::spawn(thread_site))
        .map(|thread| thread.join().unwrap())
        .collect();
    let held = live_bytes() - before;
    let allocated = (4 * 2048 * 4096) as f64;
    assert!(
        (0.85..1.15).contains(&(held / allocated)),
        "live after the threads exited: {held} of {allocated}"
    );
    drop(kept);
    let after_free = live_bytes() - before;
    assert!(
        after_free < allocated * 0.05,
        "live after freeing the exited threads' blocks: {after_free}"
    );

    // Fork while other threads sample as fast as they can.
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    blocks.push(vec![i as u8; 64 + i % 5000]);
                    if blocks.len() > 256 {
                        blocks.swap_remove(i % 256);
                    }
                    if i % 1000 == 0 {
                        std::hint::black_box(ebbmalloc::profiling::snapshot());
                    }
                    i += 1;
                }
            });
        }
        let mut failure = None;
        for round in 0..30 {
            // SAFETY: the child only allocates, snapshots and `_exit`s.
            let child = unsafe { libc::fork() };
            assert!(child >= 0, "fork failed");
            if child == 0 {
                child_work();
            }
            let status = wait_for(child, Duration::from_secs(10));
            if status != Some(0) {
                failure = Some((round, status));
                break;
            }
        }
        // Before any assertion, so that a failure does not leave the scope waiting.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(failure, None, "(round, child status; None: deadlocked)");
    });
}
