//! The heap profiler under threads that sample at once and free each other's sampled
//! blocks (as larson does): the live profile returns to where it was, no sampled block is
//! handed out twice or loses its contents (a slot going back on a free list before its
//! pages are given back would), and the freed slots keep no more than their budget.
//!
//! A process of its own: the profiler's switch and interval are process-wide.

#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;

use ebbmalloc::profiling;
use std::alloc::{alloc, dealloc, Layout};
use std::sync::mpsc;

const THREADS: usize = 8;
const ROUNDS: usize = 20_000;

/// A block filled with a pattern of its address and size, checked when it is freed.
struct Filled {
    ptr: *mut u8,
    size: usize,
}

// SAFETY: the block is owned by the `Filled` alone; ebbmalloc accepts frees from any thread.
unsafe impl Send for Filled {}

impl Filled {
    fn new(size: usize) -> Filled {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a layout of non-zero size.
        let ptr = unsafe { alloc(layout) };
        assert!(!ptr.is_null());
        // SAFETY: the block holds `size` bytes.
        unsafe { std::slice::from_raw_parts_mut(ptr, size) }.fill(Self::tag(ptr, size));
        Filled { ptr, size }
    }

    fn tag(ptr: *mut u8, size: usize) -> u8 {
        ((ptr as usize >> 4) ^ size) as u8 | 1
    }
}

impl Drop for Filled {
    fn drop(&mut self) {
        let tag = Self::tag(self.ptr, self.size);
        // SAFETY: the block is live and holds `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.size) };
        if let Some(at) = bytes.iter().position(|&b| b != tag) {
            panic!(
                "block {:p} of {} bytes changed at {at}: {:#x}, not {tag:#x}",
                self.ptr, self.size, bytes[at]
            );
        }
        let layout = Layout::from_size_align(self.size, 8).unwrap();
        // SAFETY: allocated with this layout and not freed yet.
        unsafe { dealloc(self.ptr, layout) };
    }
}

fn live_totals() -> (u64, u64) {
    profiling::snapshot()
        .stacks
        .iter()
        .fold((0, 0), |(samples, bytes), stack| {
            (
                samples + stack.counts.live_samples,
                bytes + stack.counts.live_sampled_bytes,
            )
        })
}

/// xorshift64*.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn threads_sampling_and_freeing_each_others_blocks() {
    let mut settings = ebbmalloc::Settings::current();
    settings.prof_sample_bytes = 4 << 10;
    ebbmalloc::configure(&settings);
    profiling::set_active(true);
    let (before_samples, before_bytes) = live_totals();

    // Thread t sends blocks to thread t + 1 (mod THREADS), which frees them.
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Filled>()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(t, incoming)| {
            let outgoing = senders[(t + 1) % THREADS].clone();
            std::thread::spawn(move || {
                let mut random = 0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1);
                let mut kept: Vec<Option<Filled>> = (0..64).map(|_| None).collect();
                for _ in 0..ROUNDS {
                    let r = next(&mut random);
                    // Mostly small blocks, some of several pages, a few of nearly a slot.
                    let size = match r % 16 {
                        0 => 16 + (r >> 8) as usize % (96 << 10),
                        1..=3 => 16 + (r >> 8) as usize % (12 << 10),
                        _ => 16 + (r >> 8) as usize % 1024,
                    };
                    let block = Filled::new(size);
                    let slot = (r >> 40) as usize % kept.len();
                    if let Some(old) = kept[slot].replace(block) {
                        if r & (1 << 20) != 0 {
                            // The neighbour may have finished: then we free it.
                            let _ = outgoing.send(old);
                        }
                    }
                    while let Ok(theirs) = incoming.try_recv() {
                        drop(theirs);
                    }
                }
                drop(outgoing);
                drop(kept);
                // Whatever is left in our mailbox once every sender is gone.
                incoming
            })
        })
        .collect();
    drop(senders);
    let mailboxes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for mailbox in mailboxes {
        for block in mailbox.try_iter() {
            drop(block);
        }
    }

    let profile = profiling::snapshot();
    let sampled: u64 = profile.stacks.iter().map(|s| s.counts.alloc_samples).sum();
    assert!(sampled > 10_000, "only {sampled} samples");
    assert_eq!(profile.dropped_samples, 0);
    let (after_samples, after_bytes) = live_totals();
    // The test's own allocations meanwhile (the snapshots) may leave a few samples live.
    assert!(
        after_samples <= before_samples + 8 && after_bytes <= before_bytes + (64 << 10),
        "live samples {before_samples} ({before_bytes} bytes) before, \
         {after_samples} ({after_bytes} bytes) after"
    );
}
