//! The sampling heap profiler: which call stacks hold the live heap, and which allocated
//! the most since profiling began.
//!
//! Off by default; switched on by `EBBMALLOC_PROF=1` or [`set_active`]. This module owns
//! the sampling path of an allocation, the table of sampled stacks, the range of address
//! space where sampled small blocks live, and [`snapshot`], the raw profile that the
//! `ebbmalloc-pprof` crate turns into a pprof file.
//!
//! # Sampling
//!
//! Every thread counts down the bytes it allocates (`thread_cache::Sampler::countdown`,
//! one subtraction on the fast path, in the front). An allocation that takes the count
//! below zero comes here; while profiling is active it is sampled, and the thread draws
//! its next countdown from an exponential distribution of mean `EBBMALLOC_PROF_SAMPLE`
//! bytes (default 512 KiB). That makes sampling a Poisson process over allocated bytes: an
//! allocation of `size` bytes is sampled with probability `p = 1 - exp(-size / interval)`,
//! whatever the sizes around it, and weighting each sample by `1 / p` (objects) and
//! `size / p` (bytes) gives unbiased estimates, as jemalloc's and tcmalloc's profiles do.
//! While profiling is inactive the countdown is [`RECHECK_BYTES`], so a thread looks at
//! the switch again after that many bytes (the thread calling [`set_active`] at once).
//!
//! A sampled allocation records its call stack (`unwind::capture_stack`, at most
//! [`MAX_DEPTH`] frames) in a table of deduplicated stacks with, per stack, counts and
//! bytes allocated and live, sampled and estimated. The table lives in memory mapped for
//! it, behind one lock of its own, a leaf: nothing else is locked while it is held, and
//! nothing is allocated (the unwinder runs before the lock is taken). Every sample and
//! every free of a sampled block takes it, from any thread, so it is held for table work
//! only: the stack's hash and the sample's weight are worked out before it is taken, and
//! no system call is made under it on those paths (with more threads than CPUs, a holder
//! that sleeps in the kernel or is preempted there stalls every sampling thread; see
//! [`free_small`]).
//!
//! # Re-entry
//!
//! The unwinder may call `malloc` (the first time it reads an object's unwind tables).
//! The thread's `Sampler::busy` flag is set around the capture: an allocation made
//! meanwhile is never sampled, so it takes the ordinary path and cannot recurse.
//!
//! # Sampled blocks
//!
//! A free must find out in O(1) whether its block was sampled, without slowing the free
//! of ordinary blocks:
//!
//! - a sampled **small** block (one of a size class) is served from a range of 1 GiB
//!   reserved at a fixed low address ([`REGION_START`], 256 MiB, where the kernel maps
//!   nothing of ours while the address space above has room), one 128 KiB slot per block
//!   (the largest class, so any class's alignment holds): 8192 slots, which at the default
//!   interval hold the samples of about 4 GiB of live small blocks (beyond, samples are
//!   dropped and counted). Rust's `dealloc` and `realloc` test `ptr < limit`, the range's
//!   end once it is reserved and 0 before (see `mod limit`): one compare with a memory
//!   operand. C's `free` finds no arena there in the chunk map and comes here by its slow
//!   path, at no cost to its fast path. A freed slot keeps its pages for the next sample
//!   (freed slots are reused first) while the freed slots' resident pages stay within
//!   4 MiB; beyond, it keeps its first page if that fits, and gives the rest back, with
//!   the lock released, before it goes on a free list. Freed slots that keep more than a
//!   page are on a list of their own, taken first by samples of blocks of more than a page
//!   and last by the others, so that pages kept serve blocks that need them: when one
//!   list held both, small samples took slots that big blocks had filled, and the freed
//!   slots' pages went over the budget at once, so that (larson with 8 threads) nearly
//!   every free of a sampled block gave pages back, a system call under the lock;
//! - a sampled **large** block is an ordinary large mapping whose header carries the
//!   index of its record (`large::sample_record`), read when a large block is freed.
//!
//! Invariants (under the lock): a slot's record is live iff the slot holds a live sampled
//! block, and then it is in no free list; a freed slot is on the free list of what it
//! keeps (more than a page or not), except while the thread that freed it gives its extra
//! pages back (the slot's `resident_pages` and `free_resident_pages` count only the pages
//! it keeps from the moment it was freed); `live_samples` of a stack is the number of live
//! records naming it; the estimates are the sums of the live records' weights.
//! `realloc` of a sampled small block always moves it (the new block is an allocation
//! like any other, sampled or not), and that of a large block, sampled or not, ends its
//! record and counts as an allocation of the new size (`count_resized_large`), so a
//! record's size never changes.
//!
//! # Fork and thread exit
//!
//! The lock is taken before `fork` and reset in the child (`lifecycle.rs`); the child
//! keeps the table, whose live records are its blocks too. A slot whose pages a thread of
//! the parent was giving back at the fork is on no list in the child: lost to it (one of
//! 8192, and its page counted as kept). A thread that exits leaves its
//! samples in the table: its blocks stay live until somebody frees them.

use crate::config::{self, Setting};
use crate::consts::{MAX_CLASS_SIZE, PAGE_SIZE};
use crate::fatal::fatal;
use crate::sync::{model_static, AtomicBool, Mutex, Ordering, RawMutex, MEMORY_FREED};
use crate::{large, os, thread_cache, trim, unwind};
use core::ptr;

/// The most frames recorded of a stack.
pub const MAX_DEPTH: usize = 64;

/// Where the range of sampled small blocks starts (256 MiB).
const REGION_START: usize = 0x1000_0000;
/// Bytes in the range of sampled small blocks.
const REGION_BYTES: usize = 1 << 30;
/// The end of the range of sampled small blocks.
const REGION_END: usize = REGION_START + REGION_BYTES;
/// One sampled small block per slot.
const SLOT_SHIFT: u32 = 17;
const SLOT_BYTES: usize = 1 << SLOT_SHIFT;
const _: () = assert!(SLOT_BYTES == MAX_CLASS_SIZE);
const SLOTS: usize = REGION_BYTES >> SLOT_SHIFT;
/// Records of sampled large blocks that may be live at once.
const LARGE_RECORDS: usize = 8192;
const RECORDS: usize = SLOTS + LARGE_RECORDS;
/// Distinct stacks the table holds (a power of two; filled to three quarters at most).
const STACKS: usize = 1 << 13;
const MAX_STACKS: usize = STACKS / 4 * 3;
/// Resident pages that freed slots may keep, for the next samples to reuse without a fault
/// (4 MiB); past it a freed slot gives all its pages back. The first page counts too: with
/// it left out, a burst of samples (thousands of blocks at a small interval) left a page
/// per slot resident for good (13 MB in a server after one profile dump at 16 KiB). What
/// is kept goes back too once no sampled block was freed for the decay time
/// ([`release_idle_slots`], from the trimming pass).
const FREE_RESIDENT_PAGES_BUDGET: usize = (4 << 20) / PAGE_SIZE;
const _: () = assert!(SLOT_BYTES / PAGE_SIZE <= u8::MAX as usize);
/// The countdown while profiling is inactive: bytes between two looks at the switch.
const RECHECK_BYTES: usize = 4 << 20;

/// The sampled-block limit: 0 until the range of sampled small blocks is reserved, then
/// its end, [`REGION_END`]. A block of ours below it is a sampled one, or else (after a
/// second look, [`free_small`]) an ordinary block that the OS placed that low, which it
/// does only when the address space above is full, or under valgrind, whose clients' maps
/// start low. So before the profiler samples its first small block, the free fast path's
/// test is never true.
///
/// On x86_64 it is a hidden symbol defined in assembly, which the free fast path compares
/// with as a memory operand, rip-relative ([`below_sampled_limit_or!`]): 2 instructions.
#[cfg(all(target_arch = "x86_64", not(loom)))]
mod limit {
    core::arch::global_asm!(
        ".section .data.ebbmalloc_sampled_limit_v0,\"aw\",@progbits",
        ".balign 8",
        ".globl ebbmalloc_sampled_limit_v0",
        ".hidden ebbmalloc_sampled_limit_v0",
        ".type ebbmalloc_sampled_limit_v0, @object",
        ".size ebbmalloc_sampled_limit_v0, 8",
        "ebbmalloc_sampled_limit_v0:",
        ".quad 0",
        ".text",
    );

    extern "C" {
        /// Written once, when the range is reserved (see the module above).
        static ebbmalloc_sampled_limit_v0: crate::sync::unmodelled::AtomicUsize;
    }

    /// The limit's word.
    pub(super) fn word() -> &'static crate::sync::unmodelled::AtomicUsize {
        // SAFETY: an 8-byte aligned, zero-initialised word of writable data, valid for
        // the whole process, accessed only atomically.
        unsafe { &ebbmalloc_sampled_limit_v0 }
    }
}

/// The sampled-block limit elsewhere: a plain static.
#[cfg(not(all(target_arch = "x86_64", not(loom))))]
mod limit {
    static LIMIT: crate::sync::unmodelled::AtomicUsize =
        crate::sync::unmodelled::AtomicUsize::new(0);

    /// The limit's word.
    #[inline(always)]
    pub(super) fn word() -> &'static crate::sync::unmodelled::AtomicUsize {
        &LIMIT
    }
}

/// Evaluates `$low` (which leaves the function) if `$block` lies below the sampled-block
/// limit (see `mod limit`): the test of Rust's `dealloc` and `realloc` fast paths. On
/// x86_64 one compare with the limit as a memory operand (an atomic load would be a
/// separate instruction) and a branch; an aligned x86 load is atomic.
macro_rules! below_sampled_limit_or {
    ($block:expr, $low:expr) => {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        core::arch::asm!(
            "cmp {block}, qword ptr [rip + ebbmalloc_sampled_limit_v0]",
            "jb {low}",
            block = in(reg) $block as usize,
            low = label { $low },
            options(nostack, readonly),
        );
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        #[allow(unused_unsafe)]
        if ($block as usize) < $crate::profiling::sampled_limit() {
            $low
        }
    };
}
pub(crate) use below_sampled_limit_or;

/// The sampled-block limit (see `mod limit`).
#[cfg_attr(all(target_arch = "x86_64", not(loom)), allow(dead_code))]
#[inline(always)]
pub(crate) fn sampled_limit() -> usize {
    limit::word().load(Ordering::Relaxed)
}

/// Switches sampling on or off for the whole process (as `EBBMALLOC_PROF` does at start).
/// The calling thread's next allocation sees the change; other threads see it within
/// 4 MiB of their own allocations (or at their next sample). Samples taken before are
/// kept: frees of sampled blocks are still recorded while sampling is off.
pub fn set_active(active: bool) {
    config::set(Setting::Prof, active as u64);
    // SAFETY: the sampler is this thread's.
    unsafe { (*thread_cache::sampler()).countdown = 0 };
}

/// Whether sampling is on.
pub fn is_active() -> bool {
    config::enabled(Setting::Prof)
}

/// Counts of one stack (or all of them), sampled and estimated. The estimates weight each
/// sample by the inverse of its probability of being sampled (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Allocations sampled since profiling began.
    pub alloc_samples: u64,
    /// Bytes requested by the sampled allocations.
    pub alloc_sampled_bytes: u64,
    /// Estimated allocations (sampled or not) since profiling began.
    pub alloc_objects: f64,
    /// Estimated bytes allocated since profiling began.
    pub alloc_bytes: f64,
    /// Sampled allocations not freed yet.
    pub live_samples: u64,
    /// Bytes requested by the sampled allocations not freed yet.
    pub live_sampled_bytes: u64,
    /// Estimated live allocations.
    pub live_objects: f64,
    /// Estimated live bytes.
    pub live_bytes: f64,
}

impl Counts {
    fn add(&mut self, size: usize, weight: f64) {
        self.alloc_samples += 1;
        self.alloc_sampled_bytes += size as u64;
        self.alloc_objects += weight;
        self.alloc_bytes += weight * size as f64;
        self.live_samples += 1;
        self.live_sampled_bytes += size as u64;
        self.live_objects += weight;
        self.live_bytes += weight * size as f64;
    }

    fn remove(&mut self, size: usize, weight: f64) {
        self.live_samples -= 1;
        self.live_sampled_bytes -= size as u64;
        if self.live_samples == 0 {
            // No rounding residue of the float sums survives the last free.
            self.live_objects = 0.0;
            self.live_bytes = 0.0;
        } else {
            self.live_objects -= weight;
            self.live_bytes -= weight * size as f64;
        }
    }
}

/// One call stack of the profile with its counts.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledStack {
    /// Return addresses, innermost first: the first frames are the allocator's own, then
    /// the program's call that allocated. (A return address points after its call; a
    /// symboliser should look up `address - 1`.)
    pub frames: Vec<usize>,
    /// What was sampled at this stack.
    pub counts: Counts,
}

/// The raw heap profile: every stack sampled since profiling began, with live and
/// cumulative counts.
#[derive(Clone, Debug, PartialEq)]
pub struct HeapProfile {
    /// The mean sampling interval in force (`EBBMALLOC_PROF_SAMPLE`), in bytes.
    pub sample_interval_bytes: u64,
    /// Whether sampling is on now.
    pub active: bool,
    /// Samples that could not be recorded (the stack table, the slots of sampled small
    /// blocks or the large records full, or the range of sampled blocks unavailable): the
    /// allocation went on unsampled, and the estimates are that much short.
    pub dropped_samples: u64,
    /// The sampled stacks, in no particular order.
    pub stacks: Vec<SampledStack>,
}

/// The profile as it is now. Only the result is allocated (by the caller's global
/// allocator, with no lock of ours held); the table is copied under its lock.
pub fn snapshot() -> HeapProfile {
    let count = STATE.lock().stack_count();
    // Room for stacks recorded between the two looks; more are left out of this snapshot.
    let mut raw: Vec<StackEntry> = Vec::with_capacity(count + 64);
    let dropped = {
        let state = STATE.lock();
        // SAFETY: we hold the lock; pushes stay within the capacity, so nothing allocates.
        unsafe { state.copy_stacks(&mut raw) };
        state.dropped
    };
    let stacks = raw
        .iter()
        .map(|entry| SampledStack {
            frames: entry.frames[..entry.depth as usize].to_vec(),
            counts: entry.counts,
        })
        .collect();
    HeapProfile {
        sample_interval_bytes: config::get(Setting::ProfSampleBytes),
        active: is_active(),
        dropped_samples: dropped,
        stacks,
    }
}

/// Writes the profile in the text format of gperftools' heap profiles (`heap_v2`), which
/// `pprof` reads and symbolises from the binaries: a header line with the totals and the
/// sampling interval, one line per stack, `live samples: live bytes [allocated samples:
/// allocated bytes] @ return addresses`, all as sampled (`pprof` scales them by the
/// interval), then `MAPPED_LIBRARIES:` and this process's `/proc/self/maps`. For the C
/// library's `ebbmalloc_prof_dump`, which cannot use the `ebbmalloc-pprof` crate.
/// Allocates (through the global allocator) like any caller: not for use inside it.
pub fn write_heap_v2(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let profile = snapshot();
    let mut total = Counts::default();
    for stack in &profile.stacks {
        total.live_samples += stack.counts.live_samples;
        total.live_sampled_bytes += stack.counts.live_sampled_bytes;
        total.alloc_samples += stack.counts.alloc_samples;
        total.alloc_sampled_bytes += stack.counts.alloc_sampled_bytes;
    }
    writeln!(
        out,
        "heap profile: {}: {} [{}: {}] @ heap_v2/{}",
        total.live_samples,
        total.live_sampled_bytes,
        total.alloc_samples,
        total.alloc_sampled_bytes,
        profile.sample_interval_bytes
    )?;
    for stack in &profile.stacks {
        let counts = &stack.counts;
        write!(
            out,
            "{}: {} [{}: {}] @",
            counts.live_samples,
            counts.live_sampled_bytes,
            counts.alloc_samples,
            counts.alloc_sampled_bytes
        )?;
        for frame in &stack.frames {
            write!(out, " {frame:#x}")?;
        }
        writeln!(out)?;
    }
    writeln!(out, "\nMAPPED_LIBRARIES:")?;
    out.write_all(&std::fs::read("/proc/self/maps")?)
}

/// A stack of the table. `repr(C)`: it lives in memory mapped for the table, valid as
/// zero bytes (an unused entry has depth 0).
#[repr(C)]
#[derive(Clone, Copy)]
struct StackEntry {
    hash: u64,
    /// Frames in `frames`; 0 for an unused entry.
    depth: u32,
    frames: [usize; MAX_DEPTH],
    counts: Counts,
}

/// A live sampled block: its stack (index + 1; 0 when the record is free), the size
/// requested, the bytes usable, and its weight `1 / p`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Record {
    stack: u32,
    size: usize,
    usable: usize,
    weight: f64,
}

/// The profiler's tables, mapped once and never unmapped; zero bytes are a valid empty
/// state.
#[repr(C)]
struct Tables {
    stacks: [StackEntry; STACKS],
    /// Records `0..SLOTS` are the slots of the range, in address order; the rest are for
    /// large blocks.
    records: [Record; RECORDS],
    /// Freed slots that keep at most one resident page, to reuse first (a stack of
    /// indices).
    free_slots: [u32; SLOTS],
    free_slot_count: usize,
    /// Freed slots that keep more than one page, which a sample of a block of more than
    /// a page takes first (and a smaller one last), so that the pages kept serve the
    /// blocks that need them.
    free_wide_slots: [u32; SLOTS],
    free_wide_slot_count: usize,
    /// Per slot, the pages that may be resident (written by a block).
    resident_pages: [u8; SLOTS],
    /// The sum of `resident_pages` over the free slots (those of the free lists and those
    /// whose extra pages are being given back): at most [`FREE_RESIDENT_PAGES_BUDGET`].
    free_resident_pages: usize,
    /// When a freed slot last kept its pages (`os::now_ms`).
    last_kept_ms: u32,
    /// Slots below this index have been used.
    fresh_slot: usize,
    /// Freed large records (indices into `records`).
    free_large: [u32; LARGE_RECORDS],
    free_large_count: usize,
    fresh_large: usize,
    stack_count: usize,
}

/// What the lock guards.
struct State {
    /// Null until the first sample.
    tables: *mut Tables,
    /// The range of sampled small blocks: not tried yet, reserved, or unavailable.
    region: Region,
    dropped: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Region {
    Untried,
    Reserved,
    Unavailable,
}

// SAFETY: the tables are memory of ours, reached only under the lock.
unsafe impl Send for State {}

model_static! {
    static STATE: Mutex<State> = Mutex::new(State {
        tables: ptr::null_mut(),
        region: Region::Untried,
        dropped: 0,
    });
    /// Whether freed slots keep resident pages (`free_resident_pages > 0`), for the
    /// trimming pass to look at without the lock.
    static SLOTS_KEEP_PAGES: AtomicBool = AtomicBool::new(false);
}

/// The lock of the profile, for the fork handlers (`lifecycle.rs`).
pub(crate) fn lock_for_fork() -> &'static RawMutex {
    STATE.raw()
}

impl State {
    /// The tables, mapped on first use; `None` when the OS refuses.
    fn tables(&mut self) -> Option<&mut Tables> {
        if self.tables.is_null() {
            self.tables = os::reserve_sparse(core::mem::size_of::<Tables>()) as *mut Tables;
        }
        // SAFETY: a mapping of ours of the tables' size, zero bytes when fresh (a valid
        // state), reached only under the lock we hold (`&mut self`).
        unsafe { self.tables.as_mut() }
    }

    fn stack_count(&self) -> usize {
        // SAFETY: as in `tables`.
        unsafe { self.tables.as_ref() }.map_or(0, |tables| tables.stack_count)
    }

    /// Pushes the used stack entries onto `out`, as many as its capacity allows.
    ///
    /// # Safety
    /// No push beyond the capacity happens, so `out` is not reallocated (the lock is held).
    unsafe fn copy_stacks(&self, out: &mut Vec<StackEntry>) {
        // SAFETY: as in `tables`.
        let Some(tables) = (unsafe { self.tables.as_ref() }) else {
            return;
        };
        for entry in tables.stacks.iter().filter(|entry| entry.depth != 0) {
            if out.len() == out.capacity() {
                return;
            }
            out.push(*entry);
        }
    }

    /// Records `sample`; returns the record's index, or `None` (counted as dropped) when a
    /// table is full. `take_record` picks the record.
    fn record(
        &mut self,
        sample: &Sample<'_>,
        take_record: impl FnOnce(&mut Tables) -> Option<usize>,
    ) -> Option<usize> {
        let recorded = self.tables().and_then(|tables| {
            let stack = intern(tables, sample.frames, sample.hash)?;
            let index = take_record(tables)?;
            tables.records[index] = Record {
                stack: stack as u32 + 1,
                size: sample.size,
                usable: sample.usable,
                weight: sample.weight,
            };
            tables.stacks[stack].counts.add(sample.size, sample.weight);
            Some(index)
        });
        if recorded.is_none() {
            self.dropped += 1;
        }
        recorded
    }

    /// Ends the record `index` (its block was freed) and returns it.
    fn forget(&mut self, index: usize) -> Record {
        let Some(tables) = self.tables() else {
            fatal("heap profiler: no tables for a sampled block", index);
        };
        let record = core::mem::replace(
            &mut tables.records[index],
            Record {
                stack: 0,
                size: 0,
                usable: 0,
                weight: 0.0,
            },
        );
        if let Some(entry) = tables
            .stacks
            .get_mut((record.stack as usize).wrapping_sub(1))
        {
            entry.counts.remove(record.size, record.weight);
        }
        record
    }

    /// Reserves the range of sampled small blocks on first use; whether it is ours.
    fn region_reserved(&mut self) -> bool {
        if self.region == Region::Untried {
            self.region = if os::reserve_sparse_at(REGION_START, REGION_BYTES) {
                limit::word().store(REGION_END, Ordering::Relaxed);
                // From now on freed slots may keep pages, which the trimming pass gives
                // back through us.
                trim::register_upper_release(release_idle_slots);
                Region::Reserved
            } else {
                Region::Unavailable
            };
        }
        self.region == Region::Reserved
    }
}

impl Tables {
    /// A freed slot for a block of `pages` pages, one that keeps more than a page first if
    /// `pages > 1`, one that keeps at most a page first otherwise; `None` when none is free.
    fn take_free_slot(&mut self, pages: usize) -> Option<usize> {
        let wide = if pages > 1 {
            self.free_wide_slot_count > 0
        } else {
            self.free_slot_count == 0
        };
        let (slots, count) = if wide {
            (&self.free_wide_slots, &mut self.free_wide_slot_count)
        } else {
            (&self.free_slots, &mut self.free_slot_count)
        };
        *count = count.checked_sub(1)?;
        let slot = slots[*count] as usize;
        self.free_resident_pages -= usize::from(self.resident_pages[slot]);
        Some(slot)
    }

    /// Puts the freed slot `slot` on the free list of what it keeps (its pages already
    /// counted in `free_resident_pages`); if it keeps some, notes when (for
    /// [`release_idle_slots`]) and returns true.
    fn push_free_slot(&mut self, slot: usize) -> bool {
        let keeps = self.resident_pages[slot] > 0;
        if keeps {
            self.last_kept_ms = os::now_ms();
            SLOTS_KEEP_PAGES.store(true, Ordering::Relaxed);
        }
        if self.resident_pages[slot] > 1 {
            self.free_wide_slots[self.free_wide_slot_count] = slot as u32;
            self.free_wide_slot_count += 1;
        } else {
            self.free_slots[self.free_slot_count] = slot as u32;
            self.free_slot_count += 1;
        }
        keeps
    }
}

/// Pages of a slot that a block of `usable` bytes may touch.
fn pages_touched(usable: usize) -> usize {
    usable.div_ceil(PAGE_SIZE).min(SLOT_BYTES / PAGE_SIZE)
}

/// A sample to record, with what can be worked out before the lock is taken (the lock is
/// held as briefly as possible: every sample and every free of a sampled block takes it).
struct Sample<'a> {
    /// The call stack, innermost frame first.
    frames: &'a [usize],
    /// The stack's hash, for the table.
    hash: u64,
    /// Bytes requested and usable.
    size: usize,
    usable: usize,
    /// `1 / p` (see [`weight_of`]).
    weight: f64,
}

impl<'a> Sample<'a> {
    fn new(frames: &'a [usize], size: usize, usable: usize) -> Sample<'a> {
        Sample {
            frames,
            hash: frames.iter().fold(frames.len() as u64, |hash, &frame| {
                os::mix(hash ^ frame as u64)
            }) | 1,
            size,
            usable,
            weight: weight_of(size, config::get(Setting::ProfSampleBytes)),
        }
    }
}

/// The index of `frames` (of hash `hash`) in the stack table, inserted if new; `None` when
/// the table is full.
fn intern(tables: &mut Tables, frames: &[usize], hash: u64) -> Option<usize> {
    let mut index = hash as usize & (STACKS - 1);
    loop {
        let entry = &mut tables.stacks[index];
        if entry.depth == 0 {
            if tables.stack_count >= MAX_STACKS {
                return None;
            }
            entry.hash = hash;
            entry.depth = frames.len() as u32;
            entry.frames[..frames.len()].copy_from_slice(frames);
            tables.stack_count += 1;
            return Some(index);
        }
        if entry.hash == hash && &entry.frames[..entry.depth as usize] == frames {
            return Some(index);
        }
        index = (index + 1) & (STACKS - 1);
    }
}

/// `1 / p`, `p = 1 - exp(-size / interval)` the probability that an allocation of `size`
/// bytes is sampled.
fn weight_of(size: usize, interval: u64) -> f64 {
    let p = -(-(size as f64) / interval.max(1) as f64).exp_m1();
    if p > 0.0 {
        1.0 / p
    } else {
        // A zero-byte allocation cannot be sampled; count it once.
        1.0
    }
}

/// The sampling path's first step, for an allocation whose countdown ran out: draws the
/// thread's next countdown, and says whether to sample this allocation (profiling is
/// active and the thread is not sampling already).
fn take_sample() -> bool {
    let sampler = thread_cache::sampler();
    // SAFETY: the sampler is this thread's, and only this thread touches it.
    unsafe {
        let active = config::get_if_known(Setting::Prof);
        (*sampler).countdown = match active {
            // The settings are not read yet (the process is being set up): look again
            // at the next allocation.
            None => 0,
            Some(0) => RECHECK_BYTES,
            Some(_) => draw_countdown(&mut (*sampler).random),
        };
        active.unwrap_or(0) != 0 && !(*sampler).busy
    }
}

/// An exponentially distributed number of bytes of mean `EBBMALLOC_PROF_SAMPLE`, from the
/// thread's generator (seeded from `os::random_words` on first use).
fn draw_countdown(random: &mut u64) -> usize {
    if *random == 0 {
        *random = os::random_words()[0] | 1;
    }
    // splitmix64: a Weyl sequence through a mixer.
    *random = random.wrapping_add(os::WEYL_STEP);
    let bits = os::mix(*random) >> 11;
    // Uniform in (0, 1].
    let uniform = (bits + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let mean = config::get(Setting::ProfSampleBytes) as f64;
    // Saturating: `as` maps what does not fit to the bounds.
    ((-uniform.ln() * mean) as usize).max(1)
}

/// Captures the calling thread's stack with its `busy` flag set (see "Re-entry").
fn capture(frames: &mut [usize; MAX_DEPTH]) -> usize {
    let sampler = thread_cache::sampler();
    // SAFETY: the sampler is this thread's, and only this thread touches it.
    let stack_end = unsafe {
        (*sampler).busy = true;
        if (*sampler).stack_end == 0 {
            // Unknown (0) is kept as 1, below every stack: the C unwinder walks, as our
            // walk needs the bound.
            (*sampler).stack_end = os::thread_stack_end().max(1);
        }
        (*sampler).stack_end
    };
    let depth = unwind::capture_stack(frames, stack_end);
    // SAFETY: as above.
    unsafe { (*sampler).busy = false };
    depth
}

/// The sampling path of a small allocation (`usable` bytes, the class's size, for a
/// request of `size`): a sampled block from the range, or null when this allocation is
/// not sampled (the caller then allocates as usual).
pub(crate) fn alloc_small(size: usize, usable: usize) -> *mut u8 {
    if !take_sample() {
        return ptr::null_mut();
    }
    let mut frames = [0; MAX_DEPTH];
    let depth = capture(&mut frames);
    let sample = Sample::new(&frames[..depth], size, usable);
    let mut state = STATE.lock();
    if !state.region_reserved() {
        state.dropped += 1;
        return ptr::null_mut();
    }
    let slot = state.record(&sample, |tables| {
        if let Some(slot) = tables.take_free_slot(pages_touched(usable)) {
            Some(slot)
        } else if tables.fresh_slot < SLOTS {
            tables.fresh_slot += 1;
            Some(tables.fresh_slot - 1)
        } else {
            None
        }
    });
    match slot {
        Some(slot) => slot_start(slot),
        None => ptr::null_mut(),
    }
}

/// The sampling path of a large allocation: `large::alloc`'s block, recorded if this
/// allocation is sampled.
pub(crate) fn alloc_large(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if !take_sample() {
        return large::alloc(size, align, zeroed);
    }
    let mut frames = [0; MAX_DEPTH];
    let depth = capture(&mut frames);
    let block = large::alloc(size, align, zeroed);
    if !block.is_null() {
        // SAFETY: a live large block that nobody else knows of yet.
        unsafe { record_large(block, &frames[..depth], size) };
    }
    block
}

/// The sampling path of a large block that `large::realloc` resized in place (or moved
/// with `mremap`) to `size` bytes: for the sampler, an allocation of the new size, as
/// jemalloc counts a `realloc`; recorded like a fresh block when sampled. Without this, a
/// buffer grown from small to huge in place would never be in the profile. A sampled
/// large block is resized the same way (its record ended first by [`forget_large`]): made
/// to move, a buffer grown to 1 GiB under the profiler would be copied over and over.
///
/// # Safety
/// `block` is a live large block of ours, not sampled, that the caller is handing out.
pub(crate) unsafe fn count_resized_large(block: *mut u8, size: usize) {
    if !thread_cache::count_down(size) || !take_sample() {
        return;
    }
    let mut frames = [0; MAX_DEPTH];
    let depth = capture(&mut frames);
    // SAFETY: the caller's promise.
    unsafe { record_large(block, &frames[..depth], size) };
}

/// Records the large block `block` of `size` requested bytes as sampled at `stack`.
///
/// # Safety
/// `block` is a live large block, not sampled, that nobody else uses yet.
unsafe fn record_large(block: *mut u8, stack: &[usize], size: usize) {
    // SAFETY: the caller's promise.
    let usable = unsafe { large::usable_size(block) };
    let sample = Sample::new(stack, size, usable);
    let record = STATE.lock().record(&sample, |tables| {
        if tables.free_large_count > 0 {
            tables.free_large_count -= 1;
            Some(tables.free_large[tables.free_large_count] as usize)
        } else if tables.fresh_large < LARGE_RECORDS {
            tables.fresh_large += 1;
            Some(SLOTS + tables.fresh_large - 1)
        } else {
            None
        }
    });
    if let Some(record) = record {
        // SAFETY: the block is live and still only ours.
        unsafe { large::set_sample_record(block, record as u32 + 1) };
    }
}

/// Where slot `slot` of the range of sampled small blocks starts.
fn slot_start(slot: usize) -> *mut u8 {
    (REGION_START + (slot << SLOT_SHIFT)) as *mut u8
}

/// Whether `block` (below [`SAMPLED_LIMIT`]) lies in the range of sampled small blocks.
fn in_region(block: *mut u8) -> bool {
    (block as usize).wrapping_sub(REGION_START) < REGION_BYTES
}

/// What a pointer into the range is: `Some(usable bytes)` for a live sampled block,
/// `Some(0)` for the start of a freed slot, `None` when it is not the start of a slot of
/// ours (or not in the range).
pub(crate) fn small_block_state(block: *mut u8) -> Option<usize> {
    let offset = (block as usize).wrapping_sub(REGION_START);
    if offset >= REGION_BYTES || offset & (SLOT_BYTES - 1) != 0 {
        return None;
    }
    let mut state = STATE.lock();
    if state.region != Region::Reserved {
        return None;
    }
    let record = state.tables()?.records[offset >> SLOT_SHIFT];
    Some(if record.stack != 0 { record.usable } else { 0 })
}

/// Frees `block` if it lies in the range of sampled small blocks (aborting on a double
/// or invalid free there); false when it does not, and the caller frees it as usual.
///
/// The slot keeps its pages for the next sample while the freed slots' pages stay within
/// [`FREE_RESIDENT_PAGES_BUDGET`]; beyond, it keeps its first page if that fits, else none,
/// and gives the rest back with the lock released (a system call that, in a process with
/// threads on other CPUs, interrupts them all to flush their TLBs: made under the lock, it
/// held up every sample and every free of a sampled block behind it). Only then does the
/// slot go on a free list, so no sample gets it before its pages are given back.
///
/// # Safety
/// `block` is a block of ours that the caller gives up.
pub(crate) unsafe fn free_small(block: *mut u8) -> bool {
    if !in_region(block) {
        return false;
    }
    let offset = block as usize - REGION_START;
    let slot = offset >> SLOT_SHIFT;
    let (kept, resident, keeps) = {
        let mut state = STATE.lock();
        let live = offset & (SLOT_BYTES - 1) == 0
            && state.region == Region::Reserved
            && state
                .tables()
                .is_some_and(|tables| tables.records[slot].stack != 0);
        if !live {
            drop(state);
            fatal("double free or invalid free of", block as usize);
        }
        let record = state.forget(slot);
        let Some(tables) = state.tables() else {
            return true;
        };
        // The slot's pages that may be resident: what this block could touch, or more if
        // an earlier one touched more.
        let resident = usize::from(tables.resident_pages[slot]).max(pages_touched(record.usable));
        let kept = if tables.free_resident_pages + resident <= FREE_RESIDENT_PAGES_BUDGET {
            resident
        } else if tables.free_resident_pages < FREE_RESIDENT_PAGES_BUDGET {
            resident.min(1)
        } else {
            0
        };
        tables.resident_pages[slot] = kept as u8;
        tables.free_resident_pages += kept;
        // Kept whole for the next sample, a program that allocates and frees at a steady
        // rate makes no system call and takes no page fault for its samples.
        let keeps = kept == resident && tables.push_free_slot(slot);
        (kept, resident, keeps)
    };
    if keeps {
        // A background trimmer asleep for want of free memory comes back for them.
        MEMORY_FREED.notify();
    }
    if kept < resident {
        // SAFETY: the slot's pages past the first `kept` are ours and their contents dead;
        // the slot is on no free list (nor live), so nobody uses it until we put it on one.
        unsafe {
            os::release_pages(
                block.add(kept * PAGE_SIZE),
                (resident - kept) * PAGE_SIZE,
                os::Purge::DontNeed,
            )
        };
        let keeps = STATE
            .lock()
            .tables()
            .is_some_and(|tables| tables.push_free_slot(slot));
        if keeps {
            MEMORY_FREED.notify();
        }
    }
    true
}

/// The trimming pass's step for us (`trim::UpperRelease`), at `now` (`os::now_ms`): gives
/// back every page that the freed sampled slots of the free lists keep, once no slot kept
/// its pages for `decay_ms` (all at once: the next samples fault theirs in again, a page or
/// a few each). Returns the bytes released and whether pages are still kept (never: a slot
/// that a free puts on a list later, after giving some of its pages back, is noted then).
fn release_idle_slots(now: u32, decay_ms: u32) -> (usize, bool) {
    if !SLOTS_KEEP_PAGES.load(Ordering::Relaxed) {
        return (0, false);
    }
    let mut state = STATE.lock();
    let Some(tables) = state.tables() else {
        return (0, false);
    };
    // Signed: a slot may have kept its pages after the pass read `now`.
    if (now.wrapping_sub(tables.last_kept_ms) as i32) < decay_ms as i32 {
        return (0, true);
    }
    let mut released_pages = 0;
    let free = tables.free_slots[..tables.free_slot_count]
        .iter()
        .chain(&tables.free_wide_slots[..tables.free_wide_slot_count]);
    for &slot in free {
        let pages = usize::from(core::mem::take(&mut tables.resident_pages[slot as usize]));
        if pages > 0 {
            // SAFETY: a free slot's pages are ours and hold no live block; the slot is not
            // reused before the lock is released.
            unsafe {
                os::release_pages(
                    slot_start(slot as usize),
                    pages * PAGE_SIZE,
                    os::Purge::DontNeed,
                )
            };
            released_pages += pages;
        }
    }
    // The wide slots keep nothing now: they join the others.
    while tables.free_wide_slot_count > 0 {
        tables.free_wide_slot_count -= 1;
        let slot = tables.free_wide_slots[tables.free_wide_slot_count] as usize;
        tables.push_free_slot(slot);
    }
    tables.free_resident_pages -= released_pages;
    SLOTS_KEEP_PAGES.store(false, Ordering::Relaxed);
    (released_pages * PAGE_SIZE, false)
}

/// Ends the record of the live large block `block` if it was sampled (before it is freed,
/// or resized: it is then no longer sampled).
///
/// # Safety
/// `block` is a live large block of ours that the caller is freeing or resizing.
pub(crate) unsafe fn forget_large(block: *mut u8) {
    // SAFETY: by the caller's promise.
    let record = unsafe { large::sample_record(block) } as usize;
    if record == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { large::set_sample_record(block, 0) };
    let mut state = STATE.lock();
    state.forget(record - 1);
    if let Some(tables) = state.tables() {
        tables.free_large[tables.free_large_count] = (record - 1) as u32;
        tables.free_large_count += 1;
    }
}
