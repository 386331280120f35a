//! The heap profiler under the soak (mode `profiling`). Every trimming tick (500 ms) the
//! main thread takes a snapshot of the profile while the workers sample, free and move
//! sampled blocks, and checks what holds of any profile; one tick in four it switches
//! sampling off until the next, so threads see the switch flip under them. Forked children
//! read the profile too (its lock is reset in the child). At the end, with every block of
//! the run freed, the live profile must be nearly empty: a sampled block whose free was
//! not recorded would show there as bytes still live, and at a 4 KiB interval they add up
//! to far more than the bound.

use crate::fail::violation;
use ebbmalloc::profiling::{self, HeapProfile, MAX_DEPTH};

/// Sampled bytes that may still be live at the end: blocks of the runtime and of the
/// harness itself (every block of the workload is freed by then).
const LEFT_LIVE_SAMPLED_MAX: u64 = 1 << 20;

/// What the main thread keeps between two reads of the profile.
pub struct ProfileReader {
    reads: u64,
    /// Samples counted by the last read: the cumulative count may only grow.
    samples: u64,
}

impl ProfileReader {
    pub fn new() -> ProfileReader {
        ProfileReader {
            reads: 0,
            samples: 0,
        }
    }

    /// Reads and checks the profile, then switches sampling on, or off one time in four.
    pub fn step(&mut self) {
        let profile = profiling::snapshot();
        let expected_active = sampling_after(self.reads);
        if profile.active != expected_active {
            violation(
                "profiler switch lost",
                format_args!(
                    "profiling::set_active({expected_active}) then snapshot().active = {}",
                    profile.active
                ),
            );
        }
        check(&profile);
        let samples = total_samples(&profile);
        if samples < self.samples {
            violation(
                "profile went back",
                format_args!(
                    "{samples} allocations sampled since the start, {} at the last read",
                    self.samples
                ),
            );
        }
        self.samples = samples;
        self.reads += 1;
        profiling::set_active(sampling_after(self.reads));
    }

    /// At the end, every block of the run freed: something was sampled, and what the
    /// profile still counts as live is within [`LEFT_LIVE_SAMPLED_MAX`].
    pub fn finish(&self) {
        let profile = profiling::snapshot();
        check(&profile);
        if total_samples(&profile) == 0 {
            violation(
                "profiler never sampled",
                format_args!("mode profiling ran, yet the profile counts no sample"),
            );
        }
        let live: u64 = profile
            .stacks
            .iter()
            .map(|s| s.counts.live_sampled_bytes)
            .sum();
        println!(
            "  profile: {} reads, {} allocations sampled in {} stacks, {} dropped; {live} \
             sampled bytes live at the end",
            self.reads,
            total_samples(&profile),
            profile.stacks.len(),
            profile.dropped_samples
        );
        if live > LEFT_LIVE_SAMPLED_MAX {
            violation(
                "freed sampled blocks still live in the profile",
                format_args!(
                    "every block of the run is freed, yet the profile counts {live} sampled \
                     bytes live (at most {LEFT_LIVE_SAMPLED_MAX} may be the runtime's)"
                ),
            );
        }
    }
}

/// Checks a snapshot taken in a forked child, if the profiler is on.
pub fn check_in_child() {
    if profiling::is_active() {
        check(&profiling::snapshot());
    }
}

/// Whether sampling is on after `reads` reads of the profile: off one read in four.
fn sampling_after(reads: u64) -> bool {
    reads % 4 != 3
}

fn total_samples(profile: &HeapProfile) -> u64 {
    profile.stacks.iter().map(|s| s.counts.alloc_samples).sum()
}

/// What holds of every stack of any profile.
fn check(profile: &HeapProfile) {
    for stack in &profile.stacks {
        let c = &stack.counts;
        let sound = !stack.frames.is_empty()
            && stack.frames.len() <= MAX_DEPTH
            && c.alloc_samples > 0
            && c.live_samples <= c.alloc_samples
            && c.live_sampled_bytes <= c.alloc_sampled_bytes
            && (c.live_samples > 0 || c.live_sampled_bytes == 0)
            && c.alloc_objects.is_finite()
            && c.alloc_bytes.is_finite()
            && c.live_objects >= 0.0
            && c.live_bytes >= 0.0
            && c.live_bytes <= c.alloc_bytes * (1.0 + 1e-9) + 1.0
            && (c.live_samples > 0 || c.live_bytes == 0.0);
        if !sound {
            violation(
                "profile inconsistent",
                format_args!("a stack of {} frames with counts {c:?}", stack.frames.len()),
            );
        }
    }
}
