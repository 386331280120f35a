//! Hangs are bugs too (a walk of the thread-cache registry that goes round a cycle holds
//! the registry lock for good, and every thread that starts or ends waits on it), but
//! nothing ends a hung test, and libFuzzer only after its `-timeout` (20 minutes by
//! default). While a run is in progress, a watchdog thread aborts the process, naming the
//! hang, when no operation has finished for [`HANG_SECONDS`].

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

/// Seconds without progress, while a run is in progress, that make a hang.
const HANG_SECONDS: u32 = 60;

/// Operations finished, by every run.
static PROGRESS: AtomicU64 = AtomicU64::new(0);
/// Runs in progress.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts one finished operation.
pub(crate) fn progress() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

/// A run in progress, watched until it is dropped.
pub(crate) struct Watch(());

/// Watches the calling run, starting the watchdog on first use.
pub(crate) fn watch() -> Watch {
    static START: Once = Once::new();
    START.call_once(|| {
        std::thread::Builder::new()
            .name("fuzz watchdog".into())
            .spawn(watchdog)
            .expect("ebbmalloc fuzz: the watchdog thread starts");
    });
    ACTIVE.fetch_add(1, Ordering::Relaxed);
    progress();
    Watch(())
}

impl Drop for Watch {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
        progress();
    }
}

fn watchdog() {
    let mut seen = PROGRESS.load(Ordering::Relaxed);
    let mut still = 0;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = PROGRESS.load(Ordering::Relaxed);
        if now != seen || ACTIVE.load(Ordering::Relaxed) == 0 {
            (seen, still) = (now, 0);
            continue;
        }
        still += 1;
        if still == HANG_SECONDS {
            // Straight to the file: `eprintln!` would go to the capture of the test that
            // started this thread, which nobody prints after an abort.
            let _ = writeln!(
                std::io::stderr(),
                "ebbmalloc fuzz: no operation finished for {HANG_SECONDS} s: the run hangs \
                 (a lock held for good, or a walk going round a cycle)"
            );
            std::process::abort();
        }
    }
}
