//! The periodic `fork()`: the child checks and frees blocks inherited from the parent's
//! threads, does a few thousand operations of its own and on a thread it starts, trims, and
//! exits 0 (1 on a violation); the parent waits for it and fails if the child failed,
//! crashed or hung.

use crate::fail::{self, violation, Who};
use crate::rng::Rng;
use crate::tester::Tester;
use crate::worker::Shared;
use std::time::{Duration, Instant};

/// Operations the child does on the main thread's table.
const CHILD_OPS: usize = 3_000;
/// Operations on the thread the child starts.
const CHILD_THREAD_OPS: usize = 1_000;
/// How long the parent waits for its child before calling it hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Forks; `main` is the main thread's table, which the child inherits. Returns when the
/// child has exited 0.
pub fn fork_and_check(shared: &Shared, main: &mut Tester, fork_number: u64) {
    // SAFETY: the child runs only `child`, which ends with `_exit`; what it uses of the
    // parent's state is the allocator (fork-safe by its `pthread_atfork` handlers), this
    // thread's own data, and queue locks taken with `try_lock` only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        violation(
            "fork failed",
            format_args!("{}", std::io::Error::last_os_error()),
        );
    }
    if pid == 0 {
        child(shared, main, fork_number);
    }
    wait_for(pid);
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

/// The child's whole life.
fn child(shared: &Shared, main: &mut Tester, fork_number: u64) -> ! {
    fail::enter_child();
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
    let seed = shared.seed;
    let thread = std::thread::spawn(move || {
        fail::set_who(Who::ForkChildThread);
        let mut tester = Tester::new(Rng::new(seed, u64::MAX - fork_number), u64::MAX);
        for _ in 0..CHILD_THREAD_OPS {
            tester.step();
        }
        tester.free_all("in a fork child's thread, before free");
    });
    if thread.join().is_err() {
        violation("fork child's thread panicked", format_args!("see above"));
    }
    ebbmalloc::trim();
    main.free_all("in a fork child, before free at exit");
    // SAFETY: ends the child without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}
