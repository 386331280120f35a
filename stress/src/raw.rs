//! Threads started with `pthread_create` itself, outside Rust's `std::thread`: the threads
//! of the lifecycle workload that must not touch the allocator at all (std's start-up of a
//! thread frees what its creator allocated), and the threads of fork children. std keeps a
//! process-wide lock while it starts a thread; a fork while another thread holds it leaves
//! the child unable to start a std thread, which would be our hang, not the allocator's.
//!
//! A thread to detach is created detached ([`Ending::Detached`]), never detached after it
//! started: glibc 2.36's `pthread_detach` reads the thread's descriptor after marking it
//! detached, and a thread that exits in between frees its own stack, which glibc unmaps
//! when its stack cache is over 40 MiB (as the lifecycle waves keep it): the detach then
//! faults (`scripts/glibc-detach-race.c`).

use crate::fail::violation;

/// What a raw thread runs: a C function of one pointer.
pub type Body = extern "C" fn(*mut libc::c_void) -> *mut libc::c_void;

/// How a thread from [`start`] ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its resources go when it exits; nobody waits for it.
    Detached,
    /// Somebody [`join`]s it.
    Joined,
}

/// Starts `body(arg)` on a thread with `stack_bytes` of stack (0: glibc's default), ending
/// as `ending` says; `role` names it in a report of failure.
pub fn start(
    body: Body,
    arg: *mut libc::c_void,
    stack_bytes: usize,
    ending: Ending,
    role: &str,
) -> libc::pthread_t {
    // SAFETY: the attributes and the handle are ours; `body` is an `extern "C"` function,
    // which the caller made responsible for `arg`.
    let (rc, thread) = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut thread: libc::pthread_t = 0;
        libc::pthread_attr_init(&mut attr);
        if stack_bytes > 0 {
            libc::pthread_attr_setstacksize(&mut attr, stack_bytes);
        }
        if ending == Ending::Detached {
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        }
        let rc = libc::pthread_create(&mut thread, &attr, body, arg);
        libc::pthread_attr_destroy(&mut attr);
        (rc, thread)
    };
    if rc != 0 {
        violation(
            "thread creation failed",
            format_args!(
                "pthread_create of a {role}: {}",
                std::io::Error::from_raw_os_error(rc)
            ),
        );
    }
    thread
}

/// Waits for a thread that [`start`] started [`Ending::Joined`] to end.
pub fn join(thread: libc::pthread_t) {
    // SAFETY: a joinable thread of ours, neither joined nor detached yet.
    unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
}
