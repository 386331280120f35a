//! The periodic `fork()`: the child checks and frees blocks inherited from the parent's
//! threads, does a few thousand operations of its own and on a thread it starts, trims, and
//! exits 0 (1 on a violation); the parent waits for it and fails if the child failed,
//! crashed or hung. A helper thread (see `lifecycle.rs`) forks too, while threads start up
//! and trimming runs; its child only starts a thread that allocates, trims and exits.
//! Either child also checks the signal mask of the allocator's threads it ends up with. A
//! child starts its thread with `pthread_create` (see `raw.rs`) and dies with the thread
//! that forked it.

use crate::fail::{self, violation, Who};
use crate::raw;
use crate::rng::Rng;
use crate::signals;
use crate::tester::Tester;
use crate::worker::Shared;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Operations the child does on the main thread's table.
const CHILD_OPS: usize = 3_000;
/// Operations on the thread the child starts.
const CHILD_THREAD_OPS: usize = 1_000;
/// How long the parent waits for its child before calling it hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// Children being waited for (at most one per forking thread), for the watchdog to kill.
static CHILDREN: [AtomicI32; 4] = [const { AtomicI32::new(0) }; 4];

/// Forks; `main` is the main thread's table, which the child inherits. Returns when the
/// child has exited 0.
pub fn fork_and_check(shared: &Shared, main: &mut Tester, fork_number: u64) {
    fork_and_wait(|| child(shared, main, fork_number));
}

/// Forks from a helper thread; the child starts a thread that allocates (stream `stream`
/// of the run's seed), trims, and exits. Returns when the child has exited 0.
pub fn fork_from_helper(seed: u64, stream: u64) {
    fork_and_wait(|| {
        run_thread(seed, stream);
        ebbmalloc::trim();
        signals::check_allocator_threads();
    });
}

/// Kills the children being waited for (the watchdog, before it ends the run).
pub fn kill_running_child() {
    for child in &CHILDREN {
        let pid = child.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: signalling a child of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Forks; the child runs `body` then exits 0. Returns when the child has exited 0.
fn fork_and_wait(body: impl FnOnce()) {
    // SAFETY: plain getpid call.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child runs only `body`, then `_exit`; what it uses of the parent's state
    // is the allocator (fork-safe by its `pthread_atfork` handlers), the forking thread's
    // own data, and queue locks taken with `try_lock` only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        violation(
            "fork failed",
            format_args!("{}", std::io::Error::last_os_error()),
        );
    }
    if pid == 0 {
        fail::enter_child();
        // A child must not outlive its parent: one that ended on a violation (or was
        // killed) does not wait for it any more.
        // SAFETY: plain prctl and getppid calls.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        body();
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(0) }
    }
    let slot = CHILDREN.iter().find(|slot| {
        slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
    wait_for(pid);
    if let Some(slot) = slot {
        slot.store(0, Ordering::SeqCst);
    }
}

fn wait_for(pid: libc::pid_t) {
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if r < 0 {
            violation(
                "waitpid failed",
                format_args!("child {pid}: {}", std::io::Error::last_os_error()),
            );
        }
        if start.elapsed() > CHILD_TIMEOUT {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            violation(
                "fork child hung",
                format_args!(
                    "child {pid} did not exit within {} s (a lock left held across fork?)",
                    CHILD_TIMEOUT.as_secs()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if libc::WIFSIGNALED(status) {
        violation(
            "fork child crashed",
            format_args!("child {pid} killed by signal {}", libc::WTERMSIG(status)),
        );
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        violation(
            "fork child failed",
            format_args!(
                "child {pid} exited with status {}",
                libc::WEXITSTATUS(status)
            ),
        );
    }
}

/// The child's whole life after a fork of the main thread.
fn child(shared: &Shared, main: &mut Tester, fork_number: u64) {
    main.check_all("in a fork child, inherited from the parent");
    for _ in 0..main.len() / 2 {
        main.free_random("in a fork child, before free of an inherited block");
    }
    for block in shared.drain_unlocked() {
        main.free_block(
            block,
            "in a fork child, before free of a block queued in the parent",
        );
    }
    for _ in 0..CHILD_OPS {
        main.step();
    }
    run_thread(shared.seed, u64::MAX - fork_number);
    ebbmalloc::trim();
    main.free_all("in a fork child, before free at exit");
    signals::check_allocator_threads();
    crate::profile::check_in_child();
}

/// In a fork child: starts a thread that allocates, and waits for it.
fn run_thread(seed: u64, stream: u64) {
    let arg = Box::into_raw(Box::new((seed, stream)));
    raw::join(raw::start(
        thread_main,
        arg.cast(),
        0,
        raw::Ending::Joined,
        "fork child's thread",
    ));
}

extern "C" fn thread_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: the box `run_thread` leaked for this thread.
    let (seed, stream) = *unsafe { Box::from_raw(arg.cast::<(u64, u64)>()) };
    fail::set_who(Who::ForkChildThread);
    let mut tester = Tester::new(Rng::new(seed, stream), u64::MAX);
    for _ in 0..CHILD_THREAD_OPS {
        tester.step();
    }
    tester.free_all("in a fork child's thread, before free");
    std::ptr::null_mut()
}
