//! The `capi` target: the C allocation functions of `ebbmalloc::c_abi`, with the semantics
//! the module documents, under the same shadow model as the Rust ones. A C block's model
//! covers all of its `malloc_usable_size` bytes: they are filled with the pattern (so
//! they must be writable), checked when it is freed and must not overlap another block.
//!
//! `errno` is set to a value no function here sets before every call: a call that
//! succeeds (also `free`, `malloc_usable_size`, `malloc_trim` and the statistics) must
//! leave it alone, and one that fails must set what POSIX says (`posix_memalign` returns
//! it instead). Helper threads (`helpers.rs`) call the same functions under the same
//! checks.
//!
//! An operation is an opcode byte, a slot byte (`% SLOTS`; ignored by trim, statistics and
//! huge requests) and its other fields. Sizes are encoded as in `codec.rs` but start at 0.
//!
//! | opcode   | operation          | other fields                                  |
//! |----------|--------------------|-----------------------------------------------|
//! | 0..40    | malloc             | size                                          |
//! | 40..60   | calloc             | total size, count byte (255: an overflowing product) |
//! | 60..100  | realloc            | size (0 frees; an empty slot reallocs null)   |
//! | 100..112 | reallocarray       | as calloc                                     |
//! | 112..132 | posix_memalign     | alignment byte (224..: a bad one), size       |
//! | 132..144 | aligned_alloc      | alignment byte (224..: not a power of two), size |
//! | 144..154 | memalign           | alignment byte (224..: rounded up), size      |
//! | 154..160 | valloc             | size                                          |
//! | 160..166 | pvalloc            | size                                          |
//! | 166..216 | free               | (an empty slot frees null)                    |
//! | 216..232 | free_sized         |                                               |
//! | 232..240 | huge request       | which function and size                       |
//! | 240..250 | check              |                                               |
//! | 250..252 | malloc_trim        |                                               |
//! | 252      | stats              | (`ebbmalloc_stats`, which walks every thread's cache) |
//! | 253..256 | helper thread      | (the slot byte / `SLOTS` picks the [`ThreadKind`]) |
//!
//! Alignment bytes below 224 give powers of two up to 2 MiB.

use crate::codec::{push_size, selector, Reader};
use crate::helpers::{self, Handed, Heap, Helpers, ThreadKind};
use crate::ops::SLOTS;
use crate::pattern;
use crate::shadow::Shadow;
use crate::watchdog;
use core::ffi::{c_int, c_void};
use ebbmalloc::c_abi;
use std::fmt;

const PAGE_SIZE: usize = 4096;

/// Alignments that are not powers of two (bad for `aligned_alloc`, rounded up by
/// `memalign`; the last one cannot be).
pub(crate) const NOT_POWERS_OF_TWO: [usize; 10] = [
    0,
    3,
    12,
    24,
    40,
    4095,
    4100,
    100_000,
    (1 << 20) + 8,
    usize::MAX,
];

/// Alignments `posix_memalign` must reject: not a power of two, or not a multiple of
/// `sizeof(void *)`.
pub(crate) const BAD_POSIX_ALIGNMENTS: [usize; 12] = [
    0,
    1,
    2,
    4,
    3,
    12,
    24,
    40,
    4095,
    4100,
    (1 << 20) + 8,
    usize::MAX,
];

/// Requests no machine can serve, around `isize::MAX` where size arithmetic could wrap.
pub(crate) const HUGE_SIZES: [usize; 6] = [
    usize::MAX,
    usize::MAX - 4095,
    isize::MAX as usize + 1,
    isize::MAX as usize,
    isize::MAX as usize - 3 * PAGE_SIZE,
    1 << 62,
];

/// The function a [`CapiOp::Huge`] request calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugeCall {
    /// `malloc(size)`.
    Malloc,
    /// `calloc(1, size)`.
    Calloc,
    /// `realloc(slot's block or null, size)`: must leave the block untouched.
    Realloc,
    /// `aligned_alloc(64, size)`.
    AlignedAlloc,
    /// `posix_memalign(&p, 16, size)`.
    PosixMemalign,
}

pub(crate) const HUGE_CALLS: [HugeCall; 5] = [
    HugeCall::Malloc,
    HugeCall::Calloc,
    HugeCall::Realloc,
    HugeCall::AlignedAlloc,
    HugeCall::PosixMemalign,
];

/// One operation of the `capi` target, on a slot. An operation that allocates into a slot
/// frees the slot's block first (except `Realloc` and `ReallocArray`, which resize it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapiOp {
    Malloc {
        slot: u8,
        size: usize,
    },
    /// `count * size` may overflow, which must fail with `ENOMEM`.
    Calloc {
        slot: u8,
        count: usize,
        size: usize,
    },
    Realloc {
        slot: u8,
        size: usize,
    },
    ReallocArray {
        slot: u8,
        count: usize,
        size: usize,
    },
    PosixMemalign {
        slot: u8,
        align: usize,
        size: usize,
    },
    AlignedAlloc {
        slot: u8,
        align: usize,
        size: usize,
    },
    Memalign {
        slot: u8,
        align: usize,
        size: usize,
    },
    Valloc {
        slot: u8,
        size: usize,
    },
    Pvalloc {
        slot: u8,
        size: usize,
    },
    Free {
        slot: u8,
    },
    /// `free_sized(p, size)`, or C++'s sized `operator delete(p, size)` for every other
    /// block (by tag) asked for with no more than `malloc`'s alignment.
    FreeSized {
        slot: u8,
    },
    /// A request of [`HUGE_SIZES`]: must fail with `ENOMEM` and change nothing.
    Huge {
        slot: u8,
        call: HugeCall,
        size: usize,
    },
    /// Check the slot's block's contents and usable size.
    Check {
        slot: u8,
    },
    MallocTrim,
    /// `ebbmalloc_stats`.
    Stats,
    /// Start a helper thread of `kind`, handing it the slot's block (if any) when it frees.
    Thread {
        slot: u8,
        kind: ThreadKind,
    },
}

const MALLOC: u8 = 0;
const CALLOC: u8 = 40;
const REALLOC: u8 = 60;
const REALLOCARRAY: u8 = 100;
const POSIX_MEMALIGN: u8 = 112;
const ALIGNED_ALLOC: u8 = 132;
const MEMALIGN: u8 = 144;
const VALLOC: u8 = 154;
const PVALLOC: u8 = 160;
const FREE: u8 = 166;
const FREE_SIZED: u8 = 216;
const HUGE: u8 = 232;
const CHECK: u8 = 240;
const MALLOC_TRIM: u8 = 250;
const STATS: u8 = 252;
const THREAD: u8 = 253;

/// A selector byte at or above this picks from a table of odd alignments.
const ODD_ALIGNMENTS: u8 = 224;
/// The count byte of a product that overflows.
const OVERFLOW: u8 = 255;

fn posix_alignment(byte: u8) -> usize {
    if byte < ODD_ALIGNMENTS {
        8 << (byte % 19)
    } else {
        BAD_POSIX_ALIGNMENTS[byte as usize % BAD_POSIX_ALIGNMENTS.len()]
    }
}

fn any_alignment(byte: u8) -> usize {
    if byte < ODD_ALIGNMENTS {
        1 << (byte % 22)
    } else {
        NOT_POWERS_OF_TWO[byte as usize % NOT_POWERS_OF_TWO.len()]
    }
}

fn huge_request(byte: u8) -> (HugeCall, usize) {
    let byte = byte as usize;
    (
        HUGE_CALLS[byte % HUGE_CALLS.len()],
        HUGE_SIZES[byte / HUGE_CALLS.len() % HUGE_SIZES.len()],
    )
}

/// A `count * size` pair: a total split `count` ways, or a product that overflows.
fn product(r: &mut Reader<'_>) -> Option<(usize, usize)> {
    let total = r.size(0)?;
    Some(match r.byte()? {
        OVERFLOW => (usize::MAX / (total + 2) + 1, total + 2),
        count_byte => {
            let count = 1 + count_byte as usize % 16;
            (count, total / count)
        }
    })
}

fn push_product(out: &mut Vec<u8>, count: usize, size: usize) {
    match count.checked_mul(size) {
        Some(total) => {
            assert!((1..=16).contains(&count), "count {count} cannot be encoded");
            push_size(out, total, 0);
            out.push(count as u8 - 1);
        }
        None => {
            assert_eq!(count, usize::MAX / size + 1, "overflow cannot be encoded");
            push_size(out, size - 2, 0);
            out.push(OVERFLOW);
        }
    }
}

impl CapiOp {
    /// The operations `data` encodes, up to its last whole one.
    pub fn decode_all(data: &[u8]) -> Vec<CapiOp> {
        let mut reader = Reader::new(data);
        std::iter::from_fn(|| CapiOp::decode(&mut reader)).collect()
    }

    fn decode(r: &mut Reader<'_>) -> Option<CapiOp> {
        let code = r.byte()?;
        let (slot, slot_byte) = r.slot(SLOTS)?;
        Some(match code {
            MALLOC..CALLOC => CapiOp::Malloc {
                slot,
                size: r.size(0)?,
            },
            CALLOC..REALLOC => {
                let (count, size) = product(r)?;
                CapiOp::Calloc { slot, count, size }
            }
            REALLOC..REALLOCARRAY => CapiOp::Realloc {
                slot,
                size: r.size(0)?,
            },
            REALLOCARRAY..POSIX_MEMALIGN => {
                let (count, size) = product(r)?;
                CapiOp::ReallocArray { slot, count, size }
            }
            POSIX_MEMALIGN..ALIGNED_ALLOC => {
                let align = posix_alignment(r.byte()?);
                CapiOp::PosixMemalign {
                    slot,
                    align,
                    size: r.size(0)?,
                }
            }
            ALIGNED_ALLOC..MEMALIGN => {
                let align = any_alignment(r.byte()?);
                CapiOp::AlignedAlloc {
                    slot,
                    align,
                    size: r.size(0)?,
                }
            }
            MEMALIGN..VALLOC => {
                let align = any_alignment(r.byte()?);
                CapiOp::Memalign {
                    slot,
                    align,
                    size: r.size(0)?,
                }
            }
            VALLOC..PVALLOC => CapiOp::Valloc {
                slot,
                size: r.size(0)?,
            },
            PVALLOC..FREE => CapiOp::Pvalloc {
                slot,
                size: r.size(0)?,
            },
            FREE..FREE_SIZED => CapiOp::Free { slot },
            FREE_SIZED..HUGE => CapiOp::FreeSized { slot },
            HUGE..CHECK => {
                let (call, size) = huge_request(r.byte()?);
                CapiOp::Huge { slot, call, size }
            }
            CHECK..MALLOC_TRIM => CapiOp::Check { slot },
            MALLOC_TRIM..STATS => CapiOp::MallocTrim,
            STATS..THREAD => CapiOp::Stats,
            THREAD..=u8::MAX => CapiOp::Thread {
                slot,
                kind: ThreadKind::decode(slot_byte, SLOTS),
            },
        })
    }

    /// The bytes that decode to `ops` (values as the decoder produces them).
    pub fn encode(ops: &[CapiOp]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            match *op {
                CapiOp::Malloc { slot, size } => {
                    out.extend([MALLOC, slot]);
                    push_size(&mut out, size, 0);
                }
                CapiOp::Calloc { slot, count, size } => {
                    out.extend([CALLOC, slot]);
                    push_product(&mut out, count, size);
                }
                CapiOp::Realloc { slot, size } => {
                    out.extend([REALLOC, slot]);
                    push_size(&mut out, size, 0);
                }
                CapiOp::ReallocArray { slot, count, size } => {
                    out.extend([REALLOCARRAY, slot]);
                    push_product(&mut out, count, size);
                }
                CapiOp::PosixMemalign { slot, align, size } => {
                    out.extend([POSIX_MEMALIGN, slot]);
                    out.push(selector(align, posix_alignment, "posix_memalign alignment"));
                    push_size(&mut out, size, 0);
                }
                CapiOp::AlignedAlloc { slot, align, size } => {
                    out.extend([ALIGNED_ALLOC, slot]);
                    out.push(selector(align, any_alignment, "alignment"));
                    push_size(&mut out, size, 0);
                }
                CapiOp::Memalign { slot, align, size } => {
                    out.extend([MEMALIGN, slot]);
                    out.push(selector(align, any_alignment, "alignment"));
                    push_size(&mut out, size, 0);
                }
                CapiOp::Valloc { slot, size } => {
                    out.extend([VALLOC, slot]);
                    push_size(&mut out, size, 0);
                }
                CapiOp::Pvalloc { slot, size } => {
                    out.extend([PVALLOC, slot]);
                    push_size(&mut out, size, 0);
                }
                CapiOp::Free { slot } => out.extend([FREE, slot]),
                CapiOp::FreeSized { slot } => out.extend([FREE_SIZED, slot]),
                CapiOp::Huge { slot, call, size } => {
                    out.extend([HUGE, slot]);
                    let index = |c: HugeCall, s: usize| {
                        let call = HUGE_CALLS.iter().position(|&x| x == c).unwrap_or(0);
                        let size = HUGE_SIZES.iter().position(|&x| x == s).unwrap_or(0);
                        call * HUGE_SIZES.len() + size
                    };
                    out.push(selector(
                        index(call, size),
                        |byte| {
                            let (c, s) = huge_request(byte);
                            index(c, s)
                        },
                        "huge request",
                    ));
                }
                CapiOp::Check { slot } => out.extend([CHECK, slot]),
                // The slot byte is read and ignored.
                CapiOp::MallocTrim => out.extend([MALLOC_TRIM, 0]),
                CapiOp::Stats => out.extend([STATS, 0]),
                CapiOp::Thread { slot, kind } => out.extend([THREAD, kind.encode(slot, SLOTS)]),
            }
        }
        out
    }
}

/// Decodes `data` into C-ABI operations and applies them to `ebbmalloc::c_abi`, checking
/// results, `errno` and the shadow model; frees every block at the end. Panics on a
/// violation.
pub fn run_capi(data: &[u8]) {
    let _watch = watchdog::watch();
    let shadow = Shadow::new();
    std::thread::scope(|scope| {
        let _busy = helpers::busy();
        let mut worker = CapiWorker {
            shadow: &shadow,
            helpers: Helpers::new(scope, &shadow, CAbi),
            slots: [const { None }; SLOTS],
            at: None,
        };
        for (index, op) in CapiOp::decode_all(data).into_iter().enumerate() {
            worker.at = Some((index, op));
            worker.apply(op);
            watchdog::progress();
        }
        worker.at = None;
        for slot in 0..SLOTS {
            worker.free_slot(slot as u8, "freeing what is left at the end");
        }
        worker.helpers.join();
    });
}

/// A live C block of the model: `size` bytes asked for, `usable` bytes it has.
struct CBlock {
    ptr: *mut u8,
    size: usize,
    usable: usize,
    tag: u32,
    /// Asked for with no more than `malloc`'s alignment, so its class follows from `size`
    /// and C++'s sized `operator delete(p, size)` may free it.
    malloc_like: bool,
}

impl CBlock {
    fn bytes(&self) -> &[u8] {
        // SAFETY: a live block with `usable` bytes, used by nobody else.
        unsafe { std::slice::from_raw_parts(self.ptr, self.usable) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and we hold the block mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.usable) }
    }
}

impl fmt::Display for CBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block {:p} (size {}, usable {}, tag {})",
            self.ptr, self.size, self.usable, self.tag
        )
    }
}

/// What a new block must satisfy.
struct Expect {
    size: usize,
    align: usize,
    /// The usable size must be at least this (`size`, or more for `pvalloc`).
    min_usable: usize,
    zeroed: bool,
}

impl Expect {
    /// A `malloc`-like block: 8-aligned up to 8 bytes, 16-aligned above (`max_align_t`).
    fn malloc(size: usize) -> Self {
        Expect {
            size,
            align: if size <= 8 { 8 } else { 16 },
            min_usable: size,
            zeroed: false,
        }
    }

    fn aligned(size: usize, align: usize) -> Self {
        Expect {
            align,
            ..Expect::malloc(size)
        }
    }
}

fn errno() -> c_int {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

/// An `errno` value no function here sets, to see that one was left alone.
const UNTOUCHED: c_int = libc::EDOM;

/// Calls `call` with `errno` set to [`UNTOUCHED`]: a call that `succeeded` (by its result)
/// must leave it so. Returns the result, or says what was wrong.
fn quietly<T: fmt::Debug>(
    call: impl FnOnce() -> T,
    succeeded: impl FnOnce(&T) -> bool,
) -> Result<T, String> {
    set_errno(UNTOUCHED);
    let result = call();
    let found = errno();
    if !succeeded(&result) {
        Err(format!("failed, returning {result:?}, errno {found}"))
    } else if found != UNTOUCHED {
        Err(format!(
            "succeeded, returning {result:?}, but changed errno from {UNTOUCHED} to {found}"
        ))
    } else {
        Ok(result)
    }
}

/// The C functions, as helper threads call them: `malloc` (`posix_memalign` beyond its
/// alignment), `realloc`, `free`, `malloc_trim` and `ebbmalloc_stats`, under
/// [`quietly`].
#[derive(Clone, Copy)]
struct CAbi;

impl CAbi {
    fn quietly<T: fmt::Debug>(
        what: &str,
        call: impl FnOnce() -> T,
        succeeded: impl FnOnce(&T) -> bool,
    ) -> T {
        quietly(call, succeeded).unwrap_or_else(|wrong| panic!("ebbmalloc fuzz: {what}: {wrong}"))
    }
}

impl Heap for CAbi {
    fn allocate(self, size: usize, align: usize, what: &str) -> *mut u8 {
        if align <= Expect::malloc(size).align {
            return Self::quietly(what, || c_abi::malloc(size), |p| !p.is_null()).cast();
        }
        let mut out = std::ptr::null_mut();
        // SAFETY: `out` is valid for a pointer write.
        let call = || unsafe { c_abi::posix_memalign(&mut out, align, size) };
        Self::quietly(what, call, |&code| code == 0);
        out.cast()
    }

    unsafe fn reallocate(
        self,
        ptr: *mut u8,
        _size: usize,
        _align: usize,
        new_size: usize,
        what: &str,
    ) -> *mut u8 {
        // SAFETY: the caller's promise.
        let call = || unsafe { c_abi::realloc(ptr.cast(), new_size) };
        Self::quietly(what, call, |p| !p.is_null()).cast()
    }

    fn realloc_align(self, _align: usize) -> usize {
        Expect::malloc(usize::MAX).align
    }

    unsafe fn deallocate(self, ptr: *mut u8, _size: usize, _align: usize, what: &str) {
        // SAFETY: the caller's promise.
        Self::quietly(what, || unsafe { c_abi::free(ptr.cast()) }, |_| true);
    }

    fn trim(self, what: &str) {
        Self::quietly(what, || c_abi::malloc_trim(0), |_| true);
    }

    fn stats(self, what: &str) {
        Self::quietly(what, c_stats, |_| true);
    }
}

/// `ebbmalloc_stats`, into a struct nobody reads.
fn c_stats() {
    let mut stats = c_abi::CStats::default();
    // SAFETY: `stats` is valid for the write.
    unsafe { c_abi::stats(&mut stats) };
}

struct CapiWorker<'s, 'e> {
    shadow: &'e Shadow,
    helpers: Helpers<'s, 'e, CAbi>,
    slots: [Option<CBlock>; SLOTS],
    at: Option<(usize, CapiOp)>,
}

impl CapiWorker<'_, '_> {
    fn apply(&mut self, op: CapiOp) {
        match op {
            CapiOp::Malloc { slot, size } => {
                self.allocate(slot, size, |_| c_abi::malloc(size), Expect::malloc(size));
            }
            CapiOp::Calloc { slot, count, size } => match count.checked_mul(size) {
                Some(total) => self.allocate(
                    slot,
                    total,
                    |_| c_abi::calloc(count, size),
                    Expect {
                        zeroed: true,
                        ..Expect::malloc(total)
                    },
                ),
                None => self.expect_failure(
                    "calloc with an overflowing product",
                    |_| c_abi::calloc(count, size),
                    libc::ENOMEM,
                ),
            },
            CapiOp::Realloc { slot, size } => self.realloc(slot, size),
            CapiOp::ReallocArray { slot, count, size } => match count.checked_mul(size) {
                Some(total) => self.realloc(slot, total),
                None => {
                    let ptr = self.ptr_of(slot);
                    // SAFETY: `ptr` is null or the slot's live block; an overflowing
                    // product must fail and leave it untouched.
                    let call =
                        |_: &mut *mut c_void| unsafe { c_abi::reallocarray(ptr, count, size) };
                    self.expect_failure("reallocarray overflowing", call, libc::ENOMEM);
                }
            },
            CapiOp::PosixMemalign { slot, align, size } => self.posix_memalign(slot, align, size),
            CapiOp::AlignedAlloc { slot, align, size } => {
                if align.is_power_of_two() {
                    let call = |_: &mut _| c_abi::aligned_alloc(align, size);
                    self.allocate(slot, size, call, Expect::aligned(size, align));
                } else {
                    let call = |_: &mut _| c_abi::aligned_alloc(align, size);
                    self.expect_failure("aligned_alloc, bad alignment", call, libc::EINVAL);
                }
            }
            CapiOp::Memalign { slot, align, size } => match align.checked_next_power_of_two() {
                Some(rounded) => {
                    let call = |_: &mut _| c_abi::memalign(align, size);
                    self.allocate(slot, size, call, Expect::aligned(size, rounded));
                }
                None => {
                    let call = |_: &mut _| c_abi::memalign(align, size);
                    self.expect_failure("memalign, alignment past usize", call, libc::ENOMEM);
                }
            },
            CapiOp::Valloc { slot, size } => {
                let expect = Expect::aligned(size, PAGE_SIZE);
                self.allocate(slot, size, |_| c_abi::valloc(size), expect);
            }
            CapiOp::Pvalloc { slot, size } => {
                let expect = Expect {
                    min_usable: size.max(1).next_multiple_of(PAGE_SIZE),
                    ..Expect::aligned(size, PAGE_SIZE)
                };
                self.allocate(slot, size, |_| c_abi::pvalloc(size), expect);
            }
            CapiOp::Free { slot } => {
                if self.slots[slot as usize].is_some() {
                    self.free_slot(slot, "free");
                } else {
                    // SAFETY: freeing null does nothing.
                    self.quietly("free(NULL)", || unsafe {
                        c_abi::free(std::ptr::null_mut())
                    });
                }
            }
            CapiOp::FreeSized { slot } => match self.slots[slot as usize].take() {
                // Every other malloc-like block (by its tag) goes through C++'s sized
                // delete, which trusts the size to find the block's class.
                Some(block) if block.malloc_like && block.tag % 2 == 1 => {
                    let size = block.size;
                    // SAFETY: a live block from `malloc(size)` or alike, freed once with
                    // that size.
                    self.release(block, "operator delete(p, size)", |ptr| unsafe {
                        c_abi::delete_sized(ptr, size)
                    });
                }
                Some(block) => {
                    let size = block.size;
                    // SAFETY: a live block, freed once with the size it was asked with.
                    self.release(block, "free_sized", |ptr| unsafe {
                        c_abi::free_sized(ptr, size)
                    });
                }
                None => {
                    // SAFETY: freeing null does nothing.
                    let call = || unsafe { c_abi::free_sized(std::ptr::null_mut(), 0) };
                    self.quietly("free_sized(NULL)", call);
                }
            },
            CapiOp::Huge { slot, call, size } => self.huge(slot, call, size),
            CapiOp::Check { slot } => {
                if let Some(block) = &self.slots[slot as usize] {
                    self.check(block, block.usable, "check");
                    let ptr = block.ptr.cast();
                    // SAFETY: a live block.
                    let usable = self.quietly("malloc_usable_size", || unsafe {
                        c_abi::malloc_usable_size(ptr)
                    });
                    if usable != block.usable {
                        self.fail(format_args!("{block}: usable size now {usable}"));
                    }
                }
            }
            CapiOp::MallocTrim => {
                let released = self.quietly("malloc_trim", || c_abi::malloc_trim(0));
                if released != 0 && released != 1 {
                    self.fail(format_args!("malloc_trim returned {released}"));
                }
            }
            CapiOp::Stats => self.quietly("ebbmalloc_stats", c_stats),
            CapiOp::Thread { slot, kind } => {
                let block = kind
                    .take_block(&mut self.slots[slot as usize])
                    .map(|block| self.hand_over(block));
                let seed = self.at.map_or(0, |(index, _)| index as u64) << 8 | slot as u64;
                self.helpers.spawn(kind, block, seed);
            }
        }
    }

    /// Calls `call`, which cannot fail, under [`quietly`].
    fn quietly<T: fmt::Debug>(&self, what: &str, call: impl FnOnce() -> T) -> T {
        quietly(call, |_| true).unwrap_or_else(|wrong| self.fail(format_args!("{what}: {wrong}")))
    }

    /// Checks `block` and takes it out of the model, for a helper thread to free.
    fn hand_over(&self, block: CBlock) -> Handed {
        self.check(&block, block.usable, "handing over to a helper thread");
        self.shadow.remove(block.ptr as usize);
        self.shadow.release(block.size);
        Handed {
            ptr: block.ptr,
            size: block.size,
            align: Expect::malloc(block.size).align,
        }
    }

    fn ptr_of(&self, slot: u8) -> *mut c_void {
        self.slots[slot as usize]
            .as_ref()
            .map_or(std::ptr::null_mut(), |block| block.ptr.cast())
    }

    /// Frees the slot's block, if any, then calls `call` for a new block of `size` bytes
    /// that must meet `expect`, and keeps it in the slot. `call` gets a pointer it may use
    /// as an out-parameter.
    fn allocate(
        &mut self,
        slot: u8,
        size: usize,
        call: impl FnOnce(&mut *mut c_void) -> *mut c_void,
        expect: Expect,
    ) {
        self.free_slot(slot, "freeing a replaced block");
        if !self.shadow.reserve(size) {
            return;
        }
        let mut out = std::ptr::null_mut();
        let ptr = quietly(|| call(&mut out), |ptr| !ptr.is_null())
            .unwrap_or_else(|wrong| self.fail(format_args!("{wrong}")));
        let block = self.adopt(ptr.cast(), &expect, self.shadow.new_tag(), 0);
        self.slots[slot as usize] = Some(block);
    }

    /// Checks a block fresh from ebbmalloc against `expect`, records it and fills it with
    /// the pattern of `tag` from offset `kept` on.
    fn adopt(&self, ptr: *mut u8, expect: &Expect, tag: u32, kept: usize) -> CBlock {
        if ptr as usize % expect.align != 0 {
            self.fail(format_args!("{ptr:p} is not aligned to {}", expect.align));
        }
        // SAFETY: a live block from ebbmalloc.
        let usable = unsafe { c_abi::malloc_usable_size(ptr.cast()) };
        if usable < expect.min_usable {
            self.fail(format_args!(
                "{ptr:p} has {usable} usable bytes, fewer than {}",
                expect.min_usable
            ));
        }
        let mut block = CBlock {
            ptr,
            size: expect.size,
            usable,
            tag,
            malloc_like: expect.align <= Expect::malloc(expect.size).align,
        };
        if let Err(overlap) = self.shadow.insert(ptr as usize, usable, tag) {
            self.fail(format_args!("{overlap}"));
        }
        if expect.zeroed {
            if let Some(at) = pattern::first_nonzero(&block.bytes()[..expect.size]) {
                let found = block.bytes()[at];
                self.fail(format_args!(
                    "zeroed {block} holds {found:#04x} at offset {at}"
                ));
            }
        }
        pattern::fill(&mut block.bytes_mut()[kept..], tag, kept);
        block
    }

    /// Calls `call`, which must fail: return null and set `errno` to `code`.
    fn expect_failure(
        &self,
        what: &str,
        call: impl FnOnce(&mut *mut c_void) -> *mut c_void,
        code: c_int,
    ) {
        set_errno(0);
        let mut out = std::ptr::null_mut();
        let ptr = call(&mut out);
        let found = errno();
        if !ptr.is_null() || found != code {
            self.fail(format_args!(
                "{what}: returned {ptr:p} with errno {found}, expected null and {code}"
            ));
        }
    }

    fn realloc(&mut self, slot: u8, size: usize) {
        let Some(block) = self.slots[slot as usize].take() else {
            // realloc(NULL, size) is malloc(size).
            // SAFETY: reallocating null allocates.
            let call = |_: &mut _| unsafe { c_abi::realloc(std::ptr::null_mut(), size) };
            self.allocate(slot, size, call, Expect::malloc(size));
            return;
        };
        if size == 0 {
            // realloc(p, 0) frees p and returns null.
            self.release(block, "realloc to 0", |ptr| {
                // SAFETY: a live block, freed by this call.
                let result = unsafe { c_abi::realloc(ptr, 0) };
                assert!(
                    result.is_null(),
                    "ebbmalloc fuzz: realloc({ptr:p}, 0) returned {result:p}, not null"
                );
            });
            return;
        }
        if size > block.size && !self.shadow.reserve(size - block.size) {
            self.slots[slot as usize] = Some(block);
            return;
        }
        let kept = block.size.min(size);
        self.shadow.remove(block.ptr as usize);
        // SAFETY: a live block; on success it is ours no more.
        let call = || unsafe { c_abi::realloc(block.ptr.cast(), size) };
        let ptr = quietly(call, |ptr| !ptr.is_null()).unwrap_or_else(|wrong| {
            self.fail(format_args!("realloc of {block} to {size} {wrong}"))
        });
        if size < block.size {
            self.shadow.release(block.size - size);
        }
        let moved = self.adopt(ptr.cast(), &Expect::malloc(size), block.tag, kept);
        self.check(&moved, kept, "after realloc");
        self.slots[slot as usize] = Some(moved);
    }

    fn posix_memalign(&mut self, slot: u8, align: usize, size: usize) {
        let valid = align.is_power_of_two() && align % std::mem::size_of::<*mut c_void>() == 0;
        /// What `*out` holds before the call, to see that a failure leaves it alone.
        const SENTINEL: usize = 0x5e17;
        let call = |out: &mut *mut c_void| {
            *out = SENTINEL as *mut c_void;
            set_errno(UNTOUCHED);
            // SAFETY: `out` is valid for a pointer write.
            let code = unsafe { c_abi::posix_memalign(out, align, size) };
            let errno = errno();
            match (code, valid) {
                (0, true) if errno == UNTOUCHED => *out,
                (libc::EINVAL, false) if errno == UNTOUCHED && *out as usize == SENTINEL => {
                    std::ptr::null_mut()
                }
                _ => panic!(
                    "ebbmalloc fuzz: posix_memalign(align {align:#x}, size {size}) returned \
                     {code}, *out {:p}, errno {errno} (was {UNTOUCHED})",
                    *out
                ),
            }
        };
        if valid {
            self.allocate(slot, size, call, Expect::aligned(size, align));
        } else {
            call(&mut std::ptr::null_mut());
        }
    }

    fn huge(&mut self, slot: u8, call: HugeCall, size: usize) {
        let ptr = self.ptr_of(slot);
        let what = format!("{call:?} of {size:#x} bytes");
        match call {
            HugeCall::Malloc => self.expect_failure(&what, |_| c_abi::malloc(size), libc::ENOMEM),
            HugeCall::Calloc => {
                self.expect_failure(&what, |_| c_abi::calloc(1, size), libc::ENOMEM);
            }
            // SAFETY: `ptr` is null or the slot's live block, which the failing call must
            // leave untouched (its contents are checked when it is freed).
            HugeCall::Realloc => self.expect_failure(
                &what,
                |_| unsafe { c_abi::realloc(ptr, size) },
                libc::ENOMEM,
            ),
            HugeCall::AlignedAlloc => {
                self.expect_failure(&what, |_| c_abi::aligned_alloc(64, size), libc::ENOMEM);
            }
            HugeCall::PosixMemalign => {
                let mut out = std::ptr::null_mut();
                set_errno(UNTOUCHED);
                // SAFETY: `out` is valid for a pointer write.
                let code = unsafe { c_abi::posix_memalign(&mut out, 16, size) };
                if code != libc::ENOMEM || errno() != UNTOUCHED || !out.is_null() {
                    self.fail(format_args!(
                        "{what}: returned {code}, *out {out:p}, errno {}",
                        errno()
                    ));
                }
            }
        }
    }

    /// Checks and frees the slot's block, if any.
    fn free_slot(&mut self, slot: u8, what: &str) {
        if let Some(block) = self.slots[slot as usize].take() {
            // SAFETY: a live block, freed once.
            self.release(block, what, |ptr| unsafe { c_abi::free(ptr) });
        }
    }

    /// Checks `block`'s contents, forgets it, and hands it to `free` (under [`quietly`]).
    fn release(&self, block: CBlock, what: &str, free: impl FnOnce(*mut c_void)) {
        self.check(&block, block.usable, what);
        self.shadow.remove(block.ptr as usize);
        self.quietly(what, || free(block.ptr.cast()));
        self.shadow.release(block.size);
    }

    /// Checks the first `len` bytes of `block` against its pattern.
    fn check(&self, block: &CBlock, len: usize, what: &str) {
        if let Some((at, expected)) = pattern::first_mismatch(&block.bytes()[..len], block.tag, 0) {
            let found = block.bytes()[at];
            self.fail(format_args!(
                "{what}: {block} holds {found:#04x} at offset {at}, expected {expected:#04x}"
            ));
        }
    }

    #[cold]
    fn fail(&self, message: fmt::Arguments<'_>) -> ! {
        match self.at {
            Some((index, op)) => panic!("ebbmalloc fuzz: capi, op #{index} {op:?}: {message}"),
            None => panic!("ebbmalloc fuzz: capi: {message}"),
        }
    }
}
