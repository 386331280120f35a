//! Issue 11, suspected defect: a `fork` by another thread while the allocator is being set
//! up left the child in "setting up" for good, so no thread of the child ever got a cache
//! (and nothing in it ever started the trimmer).
//!
//! The fork is made to fall inside the set-up deterministically: this binary defines its
//! own `getenv`, which the allocator's set-up calls to read its `EBBMALLOC_*` settings (an
//! executable's definition interposes on the C library's). The first such call starts a
//! thread that forks while the set-up waits in `getenv`. In the child, a new thread works
//! a size class: it must get a cache, and its slow paths must start the background trimmer,
//! which is what the test looks for (`/proc/self/task/*/comm`).
//!
//! A plain program (`harness = false`): nothing else may allocate, start threads or set the
//! allocator up before the fork.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

/// The first `EBBMALLOC_*` lookup has happened (and forked).
static FORKED: AtomicBool = AtomicBool::new(false);
/// The child's wait status, as the forking thread collected it.
static CHILD_STATUS: AtomicI32 = AtomicI32::new(-1);

extern "C" {
    static environ: *const *const c_char;
}

/// The C library's `getenv`, reading `environ` itself; the first lookup of an allocator
/// setting forks from another thread before it answers.
///
/// # Safety
/// `name` is a NUL-terminated string (the C contract).
#[no_mangle]
pub unsafe extern "C" fn getenv(name: *const c_char) -> *mut c_char {
    // SAFETY: the C contract.
    let wanted = unsafe { CStr::from_ptr(name) }.to_bytes();
    if wanted.starts_with(b"EBBMALLOC_") && !FORKED.swap(true, Ordering::SeqCst) {
        fork_from_another_thread();
    }
    // SAFETY: `environ` is the process's NUL-terminated array of NUL-terminated strings.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = CStr::from_ptr(*entry).to_bytes();
            if text.len() > wanted.len() && text.starts_with(wanted) && text[wanted.len()] == b'=' {
                return (*entry).add(wanted.len() + 1) as *mut c_char;
            }
            entry = entry.add(1);
        }
    }
    std::ptr::null_mut()
}

/// Starts a raw thread that forks and waits for its child, and joins it: the set-up that
/// called `getenv` is in progress all the while.
fn fork_from_another_thread() {
    extern "C" fn forker(_: *mut c_void) -> *mut c_void {
        // SAFETY: fork; the child runs `child` and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = child();
            // SAFETY: leave the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        CHILD_STATUS.store(status, Ordering::SeqCst);
        std::ptr::null_mut()
    }
    spawn_and_join(forker);
}

/// Runs `body` on a new raw thread (std's spawn allocates, and would set up the allocator
/// where the test must not) and waits for it.
fn spawn_and_join(body: extern "C" fn(*mut c_void) -> *mut c_void) {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: plain pthread calls; `body` takes no argument.
    unsafe {
        assert_eq!(
            libc::pthread_create(&mut thread, std::ptr::null(), body, std::ptr::null_mut()),
            0
        );
        libc::pthread_join(thread, std::ptr::null_mut());
    }
}

/// In the child: a thread allocates and frees blocks of one class for a while; its slow
/// paths start the background trimmer, if it has a cache. Whether the trimmer appears.
fn child() -> bool {
    extern "C" fn worker(_: *mut c_void) -> *mut c_void {
        for _ in 0..50 {
            let blocks: Vec<Box<[u8; 3000]>> = (0..200).map(|_| Box::new([7; 3000])).collect();
            assert!(blocks.iter().all(|b| b[2999] == 7));
        }
        std::ptr::null_mut()
    }
    spawn_and_join(worker);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if trimmer_running() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        spawn_and_join(worker);
    }
}

fn trimmer_running() -> bool {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .any(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "ebbmalloc-trim")
        })
}

fn main() -> std::process::ExitCode {
    // The first allocation sets the allocator up (if the runtime did not already).
    drop(std::hint::black_box(Box::new(1u64)));
    let status = CHILD_STATUS.load(Ordering::SeqCst);
    let outcome = if !FORKED.load(Ordering::SeqCst) {
        Err("the set-up never read a setting: nothing forked".to_string())
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!(
            "the child forked during set-up never got a working cache (status {status:#x})"
        ))
    };
    match outcome {
        Ok(()) => {
            println!("fork_during_set_up: 1 passed, 0 failed");
            std::process::ExitCode::SUCCESS
        }
        Err(why) => {
            println!("fork_during_set_up: {why}\nfork_during_set_up: 0 passed, 1 failed");
            std::process::ExitCode::FAILURE
        }
    }
}
