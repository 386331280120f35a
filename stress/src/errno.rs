//! `errno` across allocator calls. A successful call of the allocator leaves `errno` as it
//! found it (DESIGN.md, rules of the house): a C caller that checks `errno` after a call
//! that did not fail must not see an error. Every allocator call the program makes on its
//! blocks is bracketed by [`arm`] and [`check`]: `errno` holds a sentinel no system call
//! sets just before the call, and must still hold it after a call that succeeded.

use crate::fail::violation;
use std::fmt;

/// What `errno` holds around a call: no errno value (they are below 4096).
const SENTINEL: i32 = 0x5eb5;

fn location() -> *mut libc::c_int {
    // SAFETY: glibc's `__errno_location` returns this thread's errno; it cannot fail.
    unsafe { libc::__errno_location() }
}

/// Sets `errno` to the sentinel; call right before an allocator call.
#[inline]
pub fn arm() {
    // SAFETY: this thread's errno, a valid `int`.
    unsafe { location().write(SENTINEL) };
}

/// Checks, right after `call` succeeded, that it left `errno` alone.
#[inline]
pub fn check(call: fmt::Arguments<'_>) {
    // SAFETY: this thread's errno, a valid `int`.
    let found = unsafe { location().read() };
    if found != SENTINEL {
        report(found, call);
    }
}

#[cold]
fn report(found: i32, call: fmt::Arguments<'_>) -> ! {
    violation(
        "errno changed by a successful call",
        format_args!(
            "{call} succeeded but changed errno from {SENTINEL} (set just before) to {found} \
             ({})",
            std::io::Error::from_raw_os_error(found)
        ),
    )
}
