//! Threads started with `pthread_create` itself, outside Rust's `std::thread`: the threads
//! of the lifecycle workload that must not touch the allocator at all (std's start-up of a
//! thread frees what its creator allocated), and the threads of fork children. std keeps a
//! process-wide lock while it starts a thread; a fork while another thread holds it leaves
//! the child unable to start a std thread, which would be our hang, not the allocator's.

use crate::fail::violation;

/// What a raw thread runs: a C function of one pointer.
pub type Body = extern "C" fn(*mut libc::c_void) -> *mut libc::c_void;

/// Starts `body(arg)` on a thread with `stack_bytes` of stack (0: glibc's default); `role`
/// names it in a report of failure.
pub fn start(
    body: Body,
    arg: *mut libc::c_void,
    stack_bytes: usize,
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

/// Lets a thread from [`start`] end on its own: its resources go when it exits.
pub fn detach(thread: libc::pthread_t) {
    // SAFETY: a joinable thread of ours, neither joined nor detached yet.
    unsafe { libc::pthread_detach(thread) };
}

/// Waits for a thread from [`start`] to end.
pub fn join(thread: libc::pthread_t) {
    // SAFETY: a joinable thread of ours, neither joined nor detached yet.
    unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
}
