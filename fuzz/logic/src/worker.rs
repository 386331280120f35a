//! The `ops` and `threads` targets: op streams applied to an `EbbMalloc` value through
//! `GlobalAlloc`, each by a [`Worker`] that keeps the shadow of its slots' blocks, and the
//! helper threads they start (`helpers.rs`), which call `EbbMalloc` the same way.

use crate::helpers::{self, Handed, Heap, Helpers};
use crate::ops::{split_threads, Op, SLOTS};
use crate::pattern;
use crate::shadow::{owned_bytes, Shadow};
use crate::watchdog;
use ebbmalloc::EbbMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Barrier, Mutex};
use std::thread::Scope;

/// Decodes `data` into operations and applies them to `EbbMalloc`, checking each result
/// against the shadow model; frees every block at the end. Panics on a violation.
pub fn run_ops(data: &[u8]) {
    let _watch = watchdog::watch();
    let shared = Shared::new();
    std::thread::scope(|scope| {
        Worker::new("ops", &shared, scope).run(&Op::decode_all(data));
        shared.free_handed_off(scope);
    });
}

/// Splits `data` into two op streams (see [`crate::split_threads`]) and runs them on two
/// threads at once; blocks handed off by one are checked, reallocated and freed by the
/// other. Panics on a violation.
pub fn run_threads(data: &[u8]) {
    let _watch = watchdog::watch();
    let (first, second) = split_threads(data);
    let (first, second) = (Op::decode_all(first), Op::decode_all(second));
    let shared = Shared::new();
    let start = Barrier::new(2);
    std::thread::scope(|scope| {
        let streams: Vec<_> = [("thread A", &first), ("thread B", &second)]
            .into_iter()
            .map(|(name, ops)| {
                let (shared, start) = (&shared, &start);
                scope.spawn(move || {
                    start.wait();
                    Worker::new(name, shared, scope).run(ops);
                })
            })
            .collect();
        for stream in streams {
            if let Err(panic) = stream.join() {
                std::panic::resume_unwind(panic);
            }
        }
        shared.free_handed_off(scope);
    });
}

/// The Rust API, as helper threads call it.
impl Heap for EbbMalloc {
    fn allocate(self, size: usize, align: usize, what: &str) -> *mut u8 {
        let layout = Layout::from_size_align(size, align).expect("valid helper layouts");
        // SAFETY: the size is not zero.
        let ptr = unsafe { GlobalAlloc::alloc(&self, layout) };
        assert!(
            !ptr.is_null(),
            "ebbmalloc fuzz: {what}: alloc returned null for {layout:?}"
        );
        ptr
    }

    unsafe fn reallocate(
        self,
        ptr: *mut u8,
        size: usize,
        align: usize,
        new_size: usize,
        what: &str,
    ) -> *mut u8 {
        let layout = Layout::from_size_align(size, align).expect("valid helper layouts");
        // SAFETY: the caller's promise; the new size is far below `isize::MAX`.
        let moved = unsafe { GlobalAlloc::realloc(&self, ptr, layout, new_size) };
        assert!(
            !moved.is_null(),
            "ebbmalloc fuzz: {what}: realloc of {ptr:p} ({layout:?}) to {new_size} returned null"
        );
        moved
    }

    fn realloc_align(self, align: usize) -> usize {
        align
    }

    unsafe fn deallocate(self, ptr: *mut u8, size: usize, align: usize, _what: &str) {
        let layout = Layout::from_size_align(size, align).expect("valid helper layouts");
        // SAFETY: the caller's promise.
        unsafe { GlobalAlloc::dealloc(&self, ptr, layout) };
    }

    fn trim(self, _what: &str) {
        ebbmalloc::trim();
    }

    fn stats(self, _what: &str) {
        std::hint::black_box(ebbmalloc::stats());
    }
}

/// A live block of the model.
struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    tag: u32,
}

// SAFETY: a block is owned by one slot or one queue entry at a time; whoever holds the
// `Block` is the only user of its memory.
unsafe impl Send for Block {}

impl Block {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).expect("decoded layouts are valid")
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: a live block of `size` bytes, used by nobody but its holder.
        unsafe { std::slice::from_raw_parts(self.ptr, self.size) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and we hold the block mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.size) }
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block {:p} (size {}, align {}, tag {})",
            self.ptr, self.size, self.align, self.tag
        )
    }
}

/// What the workers of one run share.
struct Shared {
    shadow: Shadow,
    /// Blocks handed off and not adopted yet, oldest first.
    handed_off: Mutex<VecDeque<Block>>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            shadow: Shadow::new(),
            handed_off: Mutex::new(VecDeque::new()),
        }
    }

    fn take_handed_off(&self) -> Option<Block> {
        self.handed_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Checks and frees the blocks nobody adopted.
    fn free_handed_off<'s, 'e>(&'e self, scope: &'s Scope<'s, 'e>) {
        let mut worker = Worker::new("end of run", self, scope);
        while let Some(block) = self.take_handed_off() {
            worker.free(block, "freeing a block left handed off");
        }
    }
}

/// One op stream's thread: its slots, the operation it is at (for messages), and where
/// its helper threads run.
struct Worker<'s, 'e> {
    name: &'static str,
    shared: &'e Shared,
    helpers: Helpers<'s, 'e, EbbMalloc>,
    slots: [Option<Block>; SLOTS],
    at: Option<(usize, Op)>,
}

impl<'s, 'e> Worker<'s, 'e> {
    fn new(name: &'static str, shared: &'e Shared, scope: &'s Scope<'s, 'e>) -> Self {
        Worker {
            name,
            shared,
            helpers: Helpers::new(scope, &shared.shadow, EbbMalloc),
            slots: [const { None }; SLOTS],
            at: None,
        }
    }

    fn run(mut self, ops: &[Op]) {
        let _busy = helpers::busy();
        for (index, &op) in ops.iter().enumerate() {
            self.at = Some((index, op));
            self.apply(op);
            watchdog::progress();
        }
        self.at = None;
        for slot in 0..SLOTS {
            if let Some(block) = self.slots[slot].take() {
                self.free(block, "freeing what is left at the end");
            }
        }
        self.helpers.join();
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Alloc { slot, size, align } => self.alloc(slot, size, align, false),
            Op::AllocZeroed { slot, size, align } => self.alloc(slot, size, align, true),
            Op::Realloc { slot, size } => self.realloc(slot, size),
            Op::Dealloc { slot } => {
                if let Some(block) = self.slots[slot as usize].take() {
                    self.free(block, "dealloc");
                }
            }
            Op::Check { slot } => {
                if let Some(block) = &self.slots[slot as usize] {
                    self.check(block, 0, block.size, "check");
                }
            }
            Op::HandOff { slot } => {
                if let Some(block) = self.slots[slot as usize].take() {
                    self.check(&block, 0, block.size, "handing off");
                    let mut queue = self
                        .shared
                        .handed_off
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    queue.push_back(block);
                }
            }
            Op::Adopt { slot } => {
                if let Some(block) = self.shared.take_handed_off() {
                    self.check(&block, 0, block.size, "adopting a handed-off block");
                    self.put(slot, block);
                }
            }
            Op::Trim => {
                ebbmalloc::trim();
            }
            Op::Stats => EbbMalloc.stats("stats"),
            Op::Spawn { slot, kind } => {
                let block = kind
                    .take_block(&mut self.slots[slot as usize])
                    .map(|block| self.hand_over(block));
                let seed = self.at.map_or(0, |(index, _)| index as u64) << 8 | slot as u64;
                self.helpers.spawn(kind, block, seed);
            }
        }
    }

    /// Checks `block` and takes it out of the model, for a helper thread to free.
    fn hand_over(&self, block: Block) -> Handed {
        self.check(&block, 0, block.size, "handing over to a helper thread");
        self.shared.shadow.remove(block.ptr as usize);
        self.shared.shadow.release(block.size);
        Handed {
            ptr: block.ptr,
            size: block.size,
            align: block.align,
        }
    }

    /// Keeps `block` in `slot`, freeing the block that was there.
    fn put(&mut self, slot: u8, block: Block) {
        if let Some(old) = self.slots[slot as usize].replace(block) {
            self.free(old, "freeing a replaced block");
        }
    }

    fn alloc(&mut self, slot: u8, size: usize, align: usize, zeroed: bool) {
        if let Some(old) = self.slots[slot as usize].take() {
            self.free(old, "freeing a replaced block");
        }
        if !self.shared.shadow.reserve(size) {
            return;
        }
        let layout = Layout::from_size_align(size, align).expect("decoded layouts are valid");
        // SAFETY: the layout's size is at least 1.
        let ptr = unsafe {
            if zeroed {
                EbbMalloc.alloc_zeroed(layout)
            } else {
                EbbMalloc.alloc(layout)
            }
        };
        if ptr.is_null() {
            self.fail(format_args!("returned null for {layout:?}"));
        }
        let mut block = Block {
            ptr,
            size,
            align,
            tag: self.shared.shadow.new_tag(),
        };
        self.check_placement(&block, "allocating");
        if zeroed {
            if let Some(at) = pattern::first_nonzero(block.bytes()) {
                let found = block.bytes()[at];
                self.fail(format_args!(
                    "zeroed {block} holds {found:#04x} at offset {at}"
                ));
            }
        }
        let tag = block.tag;
        pattern::fill(block.bytes_mut(), tag, 0);
        self.slots[slot as usize] = Some(block);
    }

    fn realloc(&mut self, slot: u8, new_size: usize) {
        let Some(block) = self.slots[slot as usize].take() else {
            return;
        };
        let old_size = block.size;
        if new_size > old_size && !self.shared.shadow.reserve(new_size - old_size) {
            self.slots[slot as usize] = Some(block);
            return;
        }
        self.shared.shadow.remove(block.ptr as usize);
        // SAFETY: the block is live, allocated with this layout; the new size is at least 1
        // and, rounded up to the alignment, far below `isize::MAX`.
        let ptr = unsafe { EbbMalloc.realloc(block.ptr, block.layout(), new_size) };
        if ptr.is_null() {
            self.fail(format_args!(
                "realloc of {block} to {new_size} returned null"
            ));
        }
        let mut moved = Block {
            ptr,
            size: new_size,
            ..block
        };
        self.check_placement(&moved, "reallocating");
        let kept = old_size.min(new_size);
        self.check(&moved, 0, kept, "after realloc");
        if new_size > old_size {
            let tag = moved.tag;
            pattern::fill(&mut moved.bytes_mut()[old_size..], tag, old_size);
        } else {
            self.shared.shadow.release(old_size - new_size);
        }
        self.slots[slot as usize] = Some(moved);
    }

    /// Checks `block`'s contents, then frees it.
    fn free(&mut self, block: Block, what: &str) {
        self.check(&block, 0, block.size, what);
        self.shared.shadow.remove(block.ptr as usize);
        // SAFETY: the block is live, allocated with this layout, and dropped here.
        unsafe { EbbMalloc.dealloc(block.ptr, block.layout()) };
        self.shared.shadow.release(block.size);
    }

    /// Checks a new block's alignment and that it overlaps no live block, then records it.
    fn check_placement(&self, block: &Block, what: &str) {
        if block.ptr as usize % block.align != 0 {
            self.fail(format_args!("{what}: {block} is misaligned"));
        }
        let inserted = self
            .shared
            .shadow
            .insert(block.ptr as usize, block.size, block.tag);
        if let Err(overlap) = inserted {
            self.fail(format_args!("{what}: {overlap}"));
        }
    }

    /// Checks that ebbmalloc still knows `block` and bytes `from..to` of it against its
    /// pattern.
    fn check(&self, block: &Block, from: usize, to: usize, what: &str) {
        // SAFETY: a live block.
        let usable = unsafe { owned_bytes(block.ptr) };
        if usable < block.size {
            self.fail(format_args!("{what}: {block} has {usable} usable bytes"));
        }
        if let Some((at, expected)) =
            pattern::first_mismatch(&block.bytes()[from..to], block.tag, from)
        {
            let at = from + at;
            let found = block.bytes()[at];
            self.fail(format_args!(
                "{what}: {block} holds {found:#04x} at offset {at}, expected {expected:#04x}"
            ));
        }
    }

    #[cold]
    fn fail(&self, message: fmt::Arguments<'_>) -> ! {
        match self.at {
            Some((index, op)) => panic!(
                "ebbmalloc fuzz: {}, op #{index} {op:?}: {message}",
                self.name
            ),
            None => panic!("ebbmalloc fuzz: {}: {message}", self.name),
        }
    }
}
