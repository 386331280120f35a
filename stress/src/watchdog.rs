//! The watchdog: a thread that ends the run as a violation when it outlives its time limit
//! (`--seconds` plus [`GRACE`]), so that a deadlock or an endless loop in the allocator
//! fails the run instead of hanging it. The report names what the main thread was doing
//! ([`phase`]) and is written without allocating, since the allocator may be the thing
//! that hangs; a fork child still running is killed first.

use crate::fail::{self, Who};
use crate::fork;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time a run may take beyond its `--seconds`: the end-of-run checks, joins and trims.
pub const GRACE: Duration = Duration::from_secs(30);

/// What the main thread is doing, named in the report.
static PHASE: Mutex<&str> = Mutex::new("starting");

/// Records what the main thread is doing now.
pub fn phase(what: &'static str) {
    if let Ok(mut phase) = PHASE.lock() {
        *phase = what;
    }
}

/// Starts the watchdog for a run of `seconds`.
pub fn start(seconds: u64) {
    let limit = Duration::from_secs(seconds) + GRACE;
    let started = Instant::now();
    let spawned = std::thread::Builder::new()
        .name("stress-watchdog".into())
        .spawn(move || {
            fail::set_who(Who::Helper {
                role: "watchdog",
                serial: 0,
            });
            while started.elapsed() < limit {
                std::thread::sleep(Duration::from_millis(200));
            }
            fork::kill_running_child();
            // `try_lock`: the main thread may be stuck holding it (it never is for long).
            let phase = PHASE.try_lock().map_or("unknown", |phase| *phase);
            fail::violation_without_allocating(
                "hang",
                format_args!(
                    "the run did not end within {} s (--seconds {seconds} + {} s); the main \
                     thread was {phase}",
                    limit.as_secs(),
                    GRACE.as_secs()
                ),
            )
        });
    if let Err(e) = spawned {
        fail::violation("thread spawn failed", format_args!("watchdog: {e}"));
    }
}
