//! The heap profiler's stack walker: the return addresses of the calling thread's stack,
//! in a few dozen instructions per frame once the code on the stack has been seen.
//!
//! The C unwinder (`_Unwind_Backtrace`) costs about 1,600 instructions per frame: for every
//! frame it finds the object and the unwind table entry of the return address, and runs
//! the entry's DWARF call-frame program from the start of the function. A program's
//! allocations come from few call sites, so this module does that work once per return
//! address and keeps the outcome, a [`Rule`]: where the caller's stack pointer (the
//! canonical frame address, CFA) is, and where the return address and the caller's frame
//! pointer (`rbp`) were saved. A walk then reads two or three words per frame. This is
//! what libunwind and the fast unwinders of profilers do; frame-pointer walking would be
//! cheaper still but needs every object built with frame pointers, which Rust's and most C
//! libraries are not.
//!
//! # What it covers, and the fallback
//!
//! On x86_64 the compilers describe nearly every frame with a CFA of `rsp + n` or
//! `rbp + n`, the return address at `CFA - 8`, and `rbp` unchanged or saved at `CFA - m`;
//! GCC's stack-realigning `main` uses `*(rbp + n)` and saves `rbp` at `rbp + m`. Those
//! are the rules kept. Anything else (signal frames, other DWARF expressions, registers
//! moved into registers, code without an unwind entry) makes the whole walk fall back to
//! the C unwinder (`os::backtrace_with_unwinder`), so the profile never gets a stack the C
//! unwinder would not have given. A walk ends where the unwind tables say the return
//! address is undefined (`_start`, a thread's `clone3`), as the C unwinder's does.
//!
//! # The cache
//!
//! A fixed table of [`CACHE_ENTRIES`] entries in static memory (it allocates nothing),
//! in sets of four chosen by address, shared by all threads without a lock: an entry is a
//! key word (the address) and a rule word. A writer claims the entry by swapping its key
//! to [`WRITING`], then writes the rule and the key; a reader accepts the rule only if it
//! read the same key before and after it (a sequence lock of one writer per entry; a
//! writer that finds the entry claimed skips caching). Two threads that fill one entry
//! for one address write the same rule.
//!
//! A rule can be wrong for the code at its address: code unloaded (`dlclose`) and other
//! code loaded at the same place, JIT code deregistered and its memory reused, or a reader
//! that lost a race against two rewrites of its entry. Knowing the loader's unload count
//! would take glibc's loader lock (`dl_iterate_phdr`) on every walk, which a child of
//! `fork` can find held for good (`tests/profiling_fork.rs` deadlocked that way). So the
//! walk is made safe against wrong rules instead: every word it reads lies in the live
//! part of the thread's stack (from the first frame to the stack's end, asked once per
//! thread), aligned, and each frame's CFA must lie above the last. A wrong rule gives a
//! wrong stack in the profile, or sends the walk to the C unwinder; never a wild read or
//! a loop.

use crate::os;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Entries of the rule cache (a power of two): 4,096, 64 KiB of static memory, in sets of
/// [`CACHE_WAYS`]. (Direct-mapped, two return addresses of one stack that shared an entry
/// evicted each other at every walk: `versus pairs` lost 90% of its speed to re-reading
/// their unwind tables.)
const CACHE_ENTRIES: usize = 4096;
const CACHE_WAYS: usize = 4;
const CACHE_SETS: usize = CACHE_ENTRIES / CACHE_WAYS;
/// A key while its entry is being written.
const WRITING: u64 = u64::MAX;

/// One cached rule: `key` is the address it is for, 0 when empty.
struct Entry {
    key: AtomicU64,
    rule: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)] // only the initializer of `CACHE`
const EMPTY: Entry = Entry {
    key: AtomicU64::new(0),
    rule: AtomicU64::new(0),
};
static CACHE: [Entry; CACHE_ENTRIES] = [EMPTY; CACHE_ENTRIES];
/// Turns of the ways replaced in full sets.
static VICTIM: AtomicU32 = AtomicU32::new(0);

/// Fills `frames` with the return addresses of the calling thread's stack, innermost first,
/// starting with the return address into the caller of this function; returns how many it
/// wrote (at most `frames.len()`). `stack_end` is the end of the thread's stack
/// (`os::thread_stack_end`); one at or below the stack pointer (where the end is unknown)
/// leaves the walk to the C unwinder. May call `malloc` (the C unwinder's first look at an
/// object, or the fallback): the caller must be ready for that re-entry (see
/// `profiling.rs`).
#[inline(never)]
pub(crate) fn capture_stack(frames: &mut [usize], stack_end: usize) -> usize {
    match walk_from_here(frames, stack_end) {
        Some(depth) => depth,
        // The C unwinder, leaving out this function's frame (called from here, not from a
        // closure, so that this is one frame in a debug build too).
        None => os::backtrace_with_unwinder(frames, 1),
    }
}

/// Our walk from the frame of the function this is inlined into, starting with the return
/// address into its caller; `None` if some frame needs the C unwinder.
#[inline(always)]
fn walk_from_here(frames: &mut [usize], stack_end: usize) -> Option<usize> {
    let (pc, sp, fp): (usize, usize, usize);
    // SAFETY: reads three registers and writes them to outputs; no memory, no stack.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags),
        );
    }
    if sp >= stack_end {
        return None;
    }
    // SAFETY: the registers are those of the frame we are in, read at `pc`, inside it, and
    // `[sp, stack_end)` is the live part of this thread's stack.
    unsafe { walk(Registers { pc, sp, fp }, frames, stack_end) }
}

/// The registers a walk follows from frame to frame.
#[derive(Clone, Copy)]
struct Registers {
    pc: usize,
    sp: usize,
    fp: usize,
}

/// Walks from `registers` (a frame still live on this thread's stack, whose code is at
/// `registers.pc`) to the end of the stack or of `frames`; `None` if some frame needs the
/// C unwinder.
///
/// Every word read lies in `[registers.sp, stack_end)`, the live part of this thread's
/// stack, whatever the rules say: a rule that does not fit the code (a stale cache entry
/// for code loaded where other code was unloaded, or for JIT code registered and
/// deregistered with `__register_frame`) gives a wrong stack, never a wild read; and a
/// return address of no loaded code sends the walk to the C unwinder.
///
/// # Safety
/// `registers` are the register values of a live frame of the calling thread at `pc`, and
/// `[registers.sp, stack_end)` is readable memory of this thread's stack.
unsafe fn walk(registers: Registers, frames: &mut [usize], stack_end: usize) -> Option<usize> {
    let Registers {
        mut pc,
        mut sp,
        mut fp,
    } = registers;
    let low = sp;
    let read = |address: usize| {
        (address >= low && address % 8 == 0 && address < stack_end - 7).then(|| {
            // SAFETY: an aligned word of `[low, stack_end)`, readable by the caller's
            // promise.
            unsafe { read_word(address) }
        })
    };
    let mut depth = 0;
    while depth < frames.len() {
        let step = match rule_for(&CACHE, pc) {
            Rule::Step(step) => step,
            Rule::End => break,
            Rule::Unknown => return None,
        };
        let at = |base: usize, offset: i64| base.wrapping_add_signed(offset as isize);
        let cfa = match step.cfa {
            Cfa::Sp(offset) => at(sp, offset.into()),
            Cfa::Fp(offset) => at(fp, offset.into()),
            Cfa::AtFp(offset) => read(at(fp, offset.into()))?,
        };
        // The caller's frame is above this one, or the rule is not the code's.
        if cfa <= sp || cfa % 8 != 0 {
            return None;
        }
        let return_address = read(at(cfa, step.ra.into()))?;
        let caller_fp = match step.fp {
            SavedFp::Same => fp,
            SavedFp::AtCfa(offset) => read(at(cfa, offset.into()))?,
            SavedFp::AtFp(offset) => read(at(fp, offset.into()))?,
        };
        if return_address == 0 {
            break;
        }
        frames[depth] = return_address;
        depth += 1;
        sp = cfa;
        fp = caller_fp;
        // The call instruction, whose row describes the caller at the return address.
        pc = return_address - 1;
    }
    Some(depth)
}

/// # Safety
/// `address` is an aligned, readable word.
#[inline(always)]
unsafe fn read_word(address: usize) -> usize {
    // SAFETY: the caller's.
    unsafe { (address as *const usize).read() }
}

/// The rule for the code at `pc`, from `cache` or worked out and cached there.
fn rule_for(cache: &[Entry; CACHE_ENTRIES], pc: usize) -> Rule {
    let key = pc as u64;
    let ways = &cache[set_of(pc) * CACHE_WAYS..][..CACHE_WAYS];
    let mut seen = [0; CACHE_WAYS];
    for (entry, seen) in ways.iter().zip(&mut seen) {
        *seen = entry.key.load(Ordering::Acquire);
        if *seen == key {
            let packed = entry.rule.load(Ordering::Acquire);
            if entry.key.load(Ordering::Relaxed) == key {
                return Rule::unpack(packed);
            }
        }
    }
    #[cfg(test)]
    tests::MISSES.with(|misses| misses.set(misses.get() + 1));
    let rule = match os::unwind_entry(pc) {
        // SAFETY: `entry` is the unwind table entry covering `pc`, of an object that stays
        // loaded while its code is on our stack.
        Some((entry, function)) => unsafe { rule_at(entry, function, pc) },
        None => Rule::Unknown,
    };
    // An empty way, else one in turn (a fixed choice by address would let two hot
    // addresses evict each other at every walk).
    let way = seen
        .iter()
        .position(|&old| old == 0)
        .unwrap_or_else(|| VICTIM.fetch_add(1, Ordering::Relaxed) as usize % CACHE_WAYS);
    let (entry, before) = (&ways[way], seen[way]);
    if before != WRITING
        && entry
            .key
            .compare_exchange(before, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    {
        // Orders the claim before the rule: a reader that sees the new rule sees the claim
        // (or what follows it) in its second key read.
        fence(Ordering::Release);
        entry.rule.store(rule.pack(), Ordering::Relaxed);
        entry.key.store(key, Ordering::Release);
    }
    rule
}

/// The cache set of `pc`: the top bits of the address times 2^64 / φ (Fibonacci hashing).
fn set_of(pc: usize) -> usize {
    ((pc as u64).wrapping_mul(os::WEYL_STEP) >> (64 - CACHE_SETS.trailing_zeros())) as usize
}

/// What to do at one return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Step to the caller.
    Step(Step),
    /// The outermost frame: the return address is undefined.
    End,
    /// Outside what [`Step`] can say: the C unwinder must walk this stack.
    Unknown,
}

/// How to find the caller's frame from a frame's registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    cfa: Cfa,
    /// The return address is at `CFA + ra`.
    ra: i8,
    fp: SavedFp,
}

/// Where the canonical frame address (the caller's stack pointer) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cfa {
    /// `rsp + n`.
    Sp(i32),
    /// `rbp + n`.
    Fp(i32),
    /// The word at `rbp + n` (a stack-realigning prologue).
    AtFp(i32),
}

/// Where the caller's `rbp` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SavedFp {
    /// Still in `rbp`.
    Same,
    /// Saved at `CFA + n`.
    AtCfa(i16),
    /// Saved at `rbp + n`.
    AtFp(i16),
}

impl Rule {
    /// The rule as a cache word: bits 0-1 the kind, 2-3 the CFA's kind, 4-5 the frame
    /// pointer's, 8-15 the return address offset, 16-31 the frame pointer's offset, 32-63
    /// the CFA's offset. Kind 0 is not used, so no rule packs to 0, an empty entry's word.
    fn pack(self) -> u64 {
        let step = match self {
            Rule::End => return 2,
            Rule::Unknown => return 3,
            Rule::Step(step) => step,
        };
        let (cfa_kind, cfa_offset) = match step.cfa {
            Cfa::Sp(n) => (0, n),
            Cfa::Fp(n) => (1, n),
            Cfa::AtFp(n) => (2, n),
        };
        let (fp_kind, fp_offset) = match step.fp {
            SavedFp::Same => (0, 0),
            SavedFp::AtCfa(n) => (1, n),
            SavedFp::AtFp(n) => (2, n),
        };
        1 | cfa_kind << 2
            | fp_kind << 4
            | u64::from(step.ra as u8) << 8
            | u64::from(fp_offset as u16) << 16
            | u64::from(cfa_offset as u32) << 32
    }

    fn unpack(word: u64) -> Rule {
        match word & 3 {
            1 => {}
            2 => return Rule::End,
            _ => return Rule::Unknown,
        }
        let cfa_offset = (word >> 32) as u32 as i32;
        let fp_offset = (word >> 16) as u16 as i16;
        Rule::Step(Step {
            cfa: match (word >> 2) & 3 {
                0 => Cfa::Sp(cfa_offset),
                1 => Cfa::Fp(cfa_offset),
                _ => Cfa::AtFp(cfa_offset),
            },
            ra: (word >> 8) as u8 as i8,
            fp: match (word >> 4) & 3 {
                0 => SavedFp::Same,
                1 => SavedFp::AtCfa(fp_offset),
                _ => SavedFp::AtFp(fp_offset),
            },
        })
    }
}

/// DWARF register numbers of x86_64.
const REG_FP: u64 = 6;
const REG_SP: u64 = 7;
const REG_RA: u64 = 16;

/// DWARF expression operators we recognise: `DW_OP_breg6` (rbp + sleb) and `DW_OP_deref`.
const DW_OP_BREG_FP: u8 = 0x76;
const DW_OP_DEREF: u8 = 0x06;

/// Pointer encodings (`DW_EH_PE_*`): the low nibble is the format.
const DW_EH_PE_OMIT: u8 = 0xff;

/// A CFA rule while the call-frame program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CfaRule {
    Register(u64, i64),
    AtFp(i64),
    Unknown,
}

/// A register's rule while the call-frame program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegisterRule {
    Same,
    Undefined,
    AtCfa(i64),
    AtFp(i64),
    Unknown,
}

/// The row of the call-frame table, as far as we follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    cfa: CfaRule,
    fp: RegisterRule,
    ra: RegisterRule,
}

impl Row {
    const START: Row = Row {
        cfa: CfaRule::Unknown,
        fp: RegisterRule::Same,
        ra: RegisterRule::Same,
    };

    fn set(&mut self, register: u64, rule: RegisterRule) {
        match register {
            REG_FP => self.fp = rule,
            REG_RA => self.ra = rule,
            _ => {}
        }
    }

    fn rule(self) -> Rule {
        if self.ra == RegisterRule::Undefined {
            return Rule::End;
        }
        let cfa = match self.cfa {
            CfaRule::Register(REG_SP, n) => i32::try_from(n).ok().map(Cfa::Sp),
            CfaRule::Register(REG_FP, n) => i32::try_from(n).ok().map(Cfa::Fp),
            CfaRule::AtFp(n) if n % 8 == 0 => i32::try_from(n).ok().map(Cfa::AtFp),
            _ => None,
        };
        let ra = match self.ra {
            RegisterRule::AtCfa(n) => i8::try_from(n).ok(),
            _ => None,
        };
        let fp = match self.fp {
            RegisterRule::Same => Some(SavedFp::Same),
            RegisterRule::AtCfa(n) if n % 8 == 0 => i16::try_from(n).ok().map(SavedFp::AtCfa),
            RegisterRule::AtFp(n) if n % 8 == 0 => i16::try_from(n).ok().map(SavedFp::AtFp),
            _ => None,
        };
        match (cfa, ra, fp) {
            (Some(cfa), Some(ra), Some(fp)) if ra % 8 == 0 => Rule::Step(Step { cfa, ra, fp }),
            _ => Rule::Unknown,
        }
    }
}

/// Reads the bytes of one unwind table record, never past its end.
struct Reader {
    at: *const u8,
    end: *const u8,
}

impl Reader {
    fn done(&self) -> bool {
        self.at >= self.end
    }

    fn u8(&mut self) -> Option<u8> {
        if self.done() {
            return None;
        }
        // SAFETY: `at` is below `end`, inside the record (the `Reader`'s invariant).
        let byte = unsafe { self.at.read() };
        self.at = self.at.wrapping_add(1);
        Some(byte)
    }

    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut out = [0; N];
        for byte in &mut out {
            *byte = self.u8()?;
        }
        Some(out)
    }

    fn skip(&mut self, count: u64) -> Option<()> {
        let left = (self.end as usize).saturating_sub(self.at as usize);
        if count > left as u64 {
            return None;
        }
        self.at = self.at.wrapping_add(count as usize);
        Some(())
    }

    fn uleb(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
    }

    fn sleb(&mut self) -> Option<i64> {
        let mut value = 0i64;
        let mut shift = 0;
        loop {
            let byte = self.u8()?;
            if shift < 64 {
                value |= i64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    value |= -1 << shift;
                }
                return Some(value);
            }
        }
    }

    /// Skips a pointer of `encoding`'s format (its application, pc-relative or other,
    /// does not matter to a skip).
    fn skip_pointer(&mut self, encoding: u8) -> Option<()> {
        match encoding & 0x0f {
            0x00 | 0x04 | 0x0c => self.skip(8),
            0x02 | 0x0a => self.skip(2),
            0x03 | 0x0b => self.skip(4),
            0x01 => self.uleb().map(drop),
            0x09 => self.sleb().map(drop),
            _ => None,
        }
    }

    /// The `length`-prefixed record at `start`: a reader of its body, and where the body
    /// starts. 64-bit lengths (never emitted for `.eh_frame` on Linux) are not read.
    ///
    /// # Safety
    /// `start` is a record of a loaded `.eh_frame` section.
    unsafe fn record(start: *const u8) -> Option<Reader> {
        // SAFETY: a record starts with its 4-byte length.
        let length = unsafe { (start as *const u32).read_unaligned() };
        if length == 0 || length == u32::MAX {
            return None;
        }
        let body = start.wrapping_add(4);
        Some(Reader {
            at: body,
            end: body.wrapping_add(length as usize),
        })
    }
}

/// What a common information entry (CIE) says for the frames it covers.
struct Cie {
    code_align: u64,
    data_align: i64,
    /// The format of the FDE's address fields.
    address_encoding: u8,
    has_augmentation_data: bool,
    /// The CIE's initial instructions.
    program: Reader,
}

/// Reads the CIE at `start`; `None` for what we do not follow (signal frames, unknown
/// augmentations, a return address column other than x86_64's).
///
/// # Safety
/// `start` is a CIE of a loaded `.eh_frame` section.
unsafe fn read_cie(start: *const u8) -> Option<Cie> {
    // SAFETY: the caller's.
    let mut cie = unsafe { Reader::record(start) }?;
    if cie.bytes::<4>()? != [0; 4] {
        return None;
    }
    let version = cie.u8()?;
    // `.eh_frame` has versions 1 and 3; 4 adds fields (address and segment sizes) that
    // would be read as the alignments.
    if version != 1 && version != 3 {
        return None;
    }
    let mut augmentation = [0u8; 8];
    let mut length = 0;
    loop {
        let byte = cie.u8()?;
        if byte == 0 {
            break;
        }
        *augmentation.get_mut(length)? = byte;
        length += 1;
    }
    let augmentation = &augmentation[..length];
    let code_align = cie.uleb()?;
    let data_align = cie.sleb()?;
    let return_column = if version == 1 {
        u64::from(cie.u8()?)
    } else {
        cie.uleb()?
    };
    if return_column != REG_RA {
        return None;
    }
    let mut address_encoding = 0;
    let has_augmentation_data = augmentation.first() == Some(&b'z');
    if has_augmentation_data {
        let data_length = cie.uleb()?;
        let data_end = cie.at.wrapping_add(data_length as usize);
        for &letter in &augmentation[1..] {
            match letter {
                b'R' => address_encoding = cie.u8()?,
                b'L' => {
                    cie.u8()?;
                }
                b'P' => {
                    let encoding = cie.u8()?;
                    cie.skip_pointer(encoding)?;
                }
                // 'S' (a signal frame) and anything newer: the C unwinder's.
                _ => return None,
            }
        }
        if cie.at > data_end || data_end > cie.end {
            return None;
        }
        cie.at = data_end;
    } else if !augmentation.is_empty() {
        return None;
    }
    if address_encoding == DW_EH_PE_OMIT {
        return None;
    }
    Some(Cie {
        code_align,
        data_align,
        address_encoding,
        has_augmentation_data,
        program: cie,
    })
}

/// The rule at `pc` from the frame description entry (FDE) at `fde`, whose function
/// starts at `function`.
///
/// # Safety
/// `fde` is an FDE of a loaded `.eh_frame` section that covers `pc`.
unsafe fn rule_at(fde: *const u8, function: usize, pc: usize) -> Rule {
    // SAFETY: the caller's.
    unsafe { row_at(fde, function, pc) }.map_or(Rule::Unknown, Row::rule)
}

/// # Safety
/// As [`rule_at`].
unsafe fn row_at(fde: *const u8, function: usize, pc: usize) -> Option<Row> {
    // SAFETY: the caller's.
    let mut body = unsafe { Reader::record(fde) }?;
    let cie_offset = u32::from_ne_bytes(body.bytes::<4>()?);
    // The CIE pointer counts back from the field itself, which starts the body.
    let cie_start = fde.wrapping_add(4).wrapping_sub(cie_offset as usize);
    // SAFETY: an FDE's CIE pointer names a CIE of the same section.
    let cie = unsafe { read_cie(cie_start) }?;
    body.skip_pointer(cie.address_encoding)?;
    body.skip_pointer(cie.address_encoding)?;
    if cie.has_augmentation_data {
        let length = body.uleb()?;
        body.skip(length)?;
    }
    let mut machine = Machine {
        row: Row::START,
        initial: Row::START,
        saved: [Row::START; 8],
        saved_count: 0,
        location: function,
        code_align: cie.code_align,
        data_align: cie.data_align,
    };
    // The CIE's program runs to its end; its row is what `DW_CFA_restore` goes back to.
    machine.run(cie.program, usize::MAX)?;
    machine.initial = machine.row;
    machine.run(body, pc)?;
    Some(machine.row)
}

/// The call-frame program's interpreter (DWARF 5 §6.4.2), following the CFA, `rbp` and
/// the return address.
struct Machine {
    row: Row,
    /// The row after the CIE's program.
    initial: Row,
    /// `DW_CFA_remember_state`'s stack (GCC's interpreter keeps the CFA in it too).
    saved: [Row; 8],
    saved_count: usize,
    location: usize,
    code_align: u64,
    data_align: i64,
}

impl Machine {
    /// Runs `program` while the location stays at or below `pc`.
    fn run(&mut self, mut program: Reader, pc: usize) -> Option<()> {
        while !program.done() {
            let op = program.u8()?;
            let operand = u64::from(op & 0x3f);
            match op >> 6 {
                // DW_CFA_advance_loc
                1 => {
                    if !self.advance(operand, pc) {
                        return Some(());
                    }
                    continue;
                }
                // DW_CFA_offset
                2 => {
                    let offset = self.factored(program.uleb()?)?;
                    self.row.set(operand, RegisterRule::AtCfa(offset));
                    continue;
                }
                // DW_CFA_restore
                3 => {
                    self.restore(operand);
                    continue;
                }
                _ => {}
            }
            match op {
                // DW_CFA_nop
                0x00 => {}
                // DW_CFA_advance_loc1, 2, 4
                0x02..=0x04 => {
                    let delta = match op {
                        0x02 => u64::from(program.u8()?),
                        0x03 => u64::from(u16::from_ne_bytes(program.bytes()?)),
                        _ => u64::from(u32::from_ne_bytes(program.bytes()?)),
                    };
                    if !self.advance(delta, pc) {
                        return Some(());
                    }
                }
                // DW_CFA_offset_extended
                0x05 => {
                    let register = program.uleb()?;
                    let offset = self.factored(program.uleb()?)?;
                    self.row.set(register, RegisterRule::AtCfa(offset));
                }
                // DW_CFA_restore_extended
                0x06 => {
                    let register = program.uleb()?;
                    self.restore(register);
                }
                // DW_CFA_undefined
                0x07 => {
                    let register = program.uleb()?;
                    self.row.set(register, RegisterRule::Undefined);
                }
                // DW_CFA_same_value
                0x08 => {
                    let register = program.uleb()?;
                    self.row.set(register, RegisterRule::Same);
                }
                // DW_CFA_register: a register saved in another register.
                0x09 => {
                    let register = program.uleb()?;
                    program.uleb()?;
                    self.row.set(register, RegisterRule::Unknown);
                }
                // DW_CFA_remember_state
                0x0a => {
                    *self.saved.get_mut(self.saved_count)? = self.row;
                    self.saved_count += 1;
                }
                // DW_CFA_restore_state
                0x0b => {
                    self.saved_count = self.saved_count.checked_sub(1)?;
                    self.row = self.saved[self.saved_count];
                }
                // DW_CFA_def_cfa
                0x0c => {
                    let register = program.uleb()?;
                    let offset = i64::try_from(program.uleb()?).ok()?;
                    self.row.cfa = CfaRule::Register(register, offset);
                }
                // DW_CFA_def_cfa_register
                0x0d => {
                    let register = program.uleb()?;
                    self.row.cfa = match self.row.cfa {
                        CfaRule::Register(_, offset) => CfaRule::Register(register, offset),
                        _ => CfaRule::Unknown,
                    };
                }
                // DW_CFA_def_cfa_offset
                0x0e => {
                    let offset = i64::try_from(program.uleb()?).ok()?;
                    self.set_cfa_offset(offset);
                }
                // DW_CFA_def_cfa_expression
                0x0f => {
                    let expression = block(&mut program)?;
                    self.row.cfa = match fp_relative(expression) {
                        Some((offset, true)) => CfaRule::AtFp(offset),
                        _ => CfaRule::Unknown,
                    };
                }
                // DW_CFA_expression: saved at the address the expression computes.
                0x10 => {
                    let register = program.uleb()?;
                    let expression = block(&mut program)?;
                    let rule = match fp_relative(expression) {
                        Some((offset, false)) => RegisterRule::AtFp(offset),
                        _ => RegisterRule::Unknown,
                    };
                    self.row.set(register, rule);
                }
                // DW_CFA_offset_extended_sf
                0x11 => {
                    let register = program.uleb()?;
                    let offset = program.sleb()?.checked_mul(self.data_align)?;
                    self.row.set(register, RegisterRule::AtCfa(offset));
                }
                // DW_CFA_def_cfa_sf
                0x12 => {
                    let register = program.uleb()?;
                    let offset = program.sleb()?.checked_mul(self.data_align)?;
                    self.row.cfa = CfaRule::Register(register, offset);
                }
                // DW_CFA_def_cfa_offset_sf
                0x13 => {
                    let offset = program.sleb()?.checked_mul(self.data_align)?;
                    self.set_cfa_offset(offset);
                }
                // DW_CFA_val_offset, DW_CFA_val_offset_sf: a value, not a saved register.
                0x14 | 0x15 => {
                    let register = program.uleb()?;
                    if op == 0x14 {
                        program.uleb()?;
                    } else {
                        program.sleb()?;
                    }
                    self.row.set(register, RegisterRule::Unknown);
                }
                // DW_CFA_val_expression
                0x16 => {
                    let register = program.uleb()?;
                    block(&mut program)?;
                    self.row.set(register, RegisterRule::Unknown);
                }
                // DW_CFA_GNU_args_size: the stack size of outgoing arguments, which only a
                // landing pad needs.
                0x2e => {
                    program.uleb()?;
                }
                // DW_CFA_GNU_negative_offset_extended
                0x2f => {
                    let register = program.uleb()?;
                    let offset = self.factored(program.uleb()?)?.checked_neg()?;
                    self.row.set(register, RegisterRule::AtCfa(offset));
                }
                // DW_CFA_set_loc and anything else: not followed.
                _ => return None,
            }
        }
        Some(())
    }

    /// Moves the location on by `delta` code units; false (and no move) if that passes `pc`.
    fn advance(&mut self, delta: u64, pc: usize) -> bool {
        let next = (delta as usize)
            .checked_mul(self.code_align as usize)
            .and_then(|bytes| self.location.checked_add(bytes));
        match next {
            Some(next) if next <= pc => {
                self.location = next;
                true
            }
            _ => false,
        }
    }

    fn factored(&self, offset: u64) -> Option<i64> {
        i64::try_from(offset).ok()?.checked_mul(self.data_align)
    }

    fn restore(&mut self, register: u64) {
        match register {
            REG_FP => self.row.fp = self.initial.fp,
            REG_RA => self.row.ra = self.initial.ra,
            _ => {}
        }
    }

    fn set_cfa_offset(&mut self, offset: i64) {
        self.row.cfa = match self.row.cfa {
            CfaRule::Register(register, _) => CfaRule::Register(register, offset),
            _ => CfaRule::Unknown,
        };
    }
}

/// A DWARF expression's bytes (a ULEB length, then the bytes).
fn block(program: &mut Reader) -> Option<Reader> {
    let length = program.uleb()?;
    let start = program.at;
    program.skip(length)?;
    Some(Reader {
        at: start,
        end: program.at,
    })
}

/// Reads the two expressions we follow: `DW_OP_breg6 n` (`(n, false)`: the address
/// `rbp + n`) and `DW_OP_breg6 n; DW_OP_deref` (`(n, true)`: the word there).
fn fp_relative(mut expression: Reader) -> Option<(i64, bool)> {
    if expression.u8()? != DW_OP_BREG_FP {
        return None;
    }
    let offset = expression.sleb()?;
    if expression.done() {
        return Some((offset, false));
    }
    (expression.u8()? == DW_OP_DEREF && expression.done()).then_some((offset, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::hint::black_box;

    thread_local! {
        /// Cache misses of this thread's walks.
        pub(super) static MISSES: Cell<usize> = const { Cell::new(0) };
    }

    /// A CIE as GCC and LLVM write them for x86_64 (`zR`, pc-relative 4-byte addresses,
    /// CFA `rsp + 8`, return address at `CFA - 8`), followed by an FDE whose program is
    /// `program`; returns the bytes and where the FDE starts.
    fn table(cie_augmentation: &[u8], cie_extra: &[u8], program: &[u8]) -> (Vec<u8>, usize) {
        let mut cie = vec![0, 0, 0, 0, 1];
        cie.extend_from_slice(cie_augmentation);
        cie.push(0);
        // Code alignment 1, data alignment -8, return address column 16.
        cie.extend_from_slice(&[1, 0x78, 16]);
        cie.extend_from_slice(cie_extra);
        // DW_CFA_def_cfa rsp 8; DW_CFA_offset r16 at CFA - 8.
        cie.extend_from_slice(&[0x0c, 7, 8, 0x90, 1]);
        while (cie.len() + 4) % 8 != 0 {
            cie.push(0);
        }
        let mut bytes = (cie.len() as u32).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&cie);
        let fde_start = bytes.len();
        let mut fde = (fde_start as u32 + 4).to_ne_bytes().to_vec();
        // Address and range, 4 bytes each (their values are not read: the caller gives
        // the function's start), and no augmentation data.
        fde.extend_from_slice(&[0; 8]);
        fde.push(0);
        fde.extend_from_slice(program);
        bytes.extend_from_slice(&(fde.len() as u32).to_ne_bytes());
        bytes.extend_from_slice(&fde);
        // A terminator, as the section ends.
        bytes.extend_from_slice(&[0; 4]);
        (bytes, fde_start)
    }

    fn rule_in(table: &(Vec<u8>, usize), offset: usize) -> Rule {
        let fde = table.0[table.1..].as_ptr();
        // SAFETY: `fde` is an FDE of the table `table` built, alive for the call.
        unsafe { rule_at(fde, 0x1000, 0x1000 + offset) }
    }

    fn step(cfa: Cfa, fp: SavedFp) -> Rule {
        Rule::Step(Step { cfa, ra: -8, fp })
    }

    /// `push rbp; mov rbp, rsp; ...; pop rbp; ret`, with GCC's remember/restore around
    /// an early return.
    #[test]
    fn a_frame_pointer_prologue_and_epilogue() {
        let program = [
            0x41, // advance 1: after `push rbp`
            0x0e, 16, // def_cfa_offset 16
            0x86, 2,    // rbp at CFA - 16
            0x43, // advance 3: after `mov rbp, rsp`
            0x0d, 6,    // def_cfa_register rbp
            0x50, // advance 16
            0x0a, // remember_state
            0x0c, 7, 8,    // def_cfa rsp 8: after `pop rbp`
            0xc6, // restore rbp
            0x41, // advance 1: the `ret`
            0x0b, // restore_state
        ];
        let table = table(b"zR", &[1, 0x1b], &program);
        assert_eq!(rule_in(&table, 0), step(Cfa::Sp(8), SavedFp::Same));
        assert_eq!(rule_in(&table, 1), step(Cfa::Sp(16), SavedFp::AtCfa(-16)));
        assert_eq!(rule_in(&table, 3), step(Cfa::Sp(16), SavedFp::AtCfa(-16)));
        assert_eq!(rule_in(&table, 4), step(Cfa::Fp(16), SavedFp::AtCfa(-16)));
        assert_eq!(rule_in(&table, 19), step(Cfa::Fp(16), SavedFp::AtCfa(-16)));
        assert_eq!(rule_in(&table, 20), step(Cfa::Sp(8), SavedFp::Same));
        assert_eq!(rule_in(&table, 21), step(Cfa::Fp(16), SavedFp::AtCfa(-16)));
        assert_eq!(rule_in(&table, 500), step(Cfa::Fp(16), SavedFp::AtCfa(-16)));
    }

    /// GCC's stack-realigning `main`: the CFA moves to r10, then to `*(rbp - 8)` with
    /// `rbp` saved at `rbp + 0`.
    #[test]
    fn a_realigned_frame() {
        let program = [
            0x44, // advance 4
            0x0c, 10, 0,    // def_cfa r10 0
            0x49, // advance 9
            0x10, 6, 2, 0x76, 0, // expression rbp: DW_OP_breg6 0
            0x0f, 3, 0x76, 0x78, 0x06, // def_cfa_expression: DW_OP_breg6 -8; DW_OP_deref
        ];
        let table = table(b"zR", &[1, 0x1b], &program);
        assert_eq!(rule_in(&table, 5), Rule::Unknown);
        assert_eq!(rule_in(&table, 13), step(Cfa::AtFp(-8), SavedFp::AtFp(0)));
    }

    #[test]
    fn what_is_not_followed_is_unknown_and_an_undefined_return_address_ends() {
        // A signal frame's CIE.
        let table_s = table(b"zRS", &[1, 0x1b], &[]);
        assert_eq!(rule_in(&table_s, 0), Rule::Unknown);
        // The return address moved into a register.
        let moved = table(b"zR", &[1, 0x1b], &[0x09, 16, 3]);
        assert_eq!(rule_in(&moved, 0), Rule::Unknown);
        // `rbp` described by an expression other than `DW_OP_breg6 n`.
        let other = table(b"zR", &[1, 0x1b], &[0x10, 6, 2, 0x77, 0]);
        assert_eq!(rule_in(&other, 0), Rule::Unknown);
        // Another register's expression changes nothing.
        let rbx = table(b"zR", &[1, 0x1b], &[0x10, 3, 2, 0x77, 0]);
        assert_eq!(rule_in(&rbx, 0), step(Cfa::Sp(8), SavedFp::Same));
        // `_start`: DW_CFA_undefined rip.
        let start = table(b"zR", &[1, 0x1b], &[0x07, 16]);
        assert_eq!(rule_in(&start, 0), Rule::End);
        // A personality routine and an LSDA in the augmentation are skipped.
        let personality = table(b"zPLR", &[7, 0x9b, 1, 2, 3, 4, 0x1b, 0x1b], &[]);
        let fde = personality.0[personality.1..].as_ptr();
        // The FDE of a `zPLR` CIE has augmentation data: none here but its length byte,
        // which `table` wrote.
        // SAFETY: as in `rule_in`.
        let rule = unsafe { rule_at(fde, 0x1000, 0x1000) };
        assert_eq!(rule, step(Cfa::Sp(8), SavedFp::Same));
        // A program cut short.
        let cut = table(b"zR", &[1, 0x1b], &[0x0c, 7]);
        assert_eq!(rule_in(&cut, 0), Rule::Unknown);
    }

    #[test]
    fn rules_survive_the_cache_word() {
        let rules = [
            Rule::End,
            Rule::Unknown,
            step(Cfa::Sp(8), SavedFp::Same),
            step(Cfa::Fp(-1 << 31), SavedFp::AtCfa(-16)),
            step(Cfa::AtFp(i32::MAX), SavedFp::AtFp(i16::MIN)),
            Rule::Step(Step {
                cfa: Cfa::Sp(4096),
                ra: -120,
                fp: SavedFp::AtFp(i16::MAX),
            }),
        ];
        for rule in rules {
            assert_eq!(Rule::unpack(rule.pack()), rule);
            assert_ne!(rule.pack(), 0);
        }
    }

    /// Our walk alone, from this function's caller: `None` if it needed the C unwinder.
    #[inline(never)]
    fn our_walk_only(frames: &mut [usize], stack_end: usize) -> Option<usize> {
        walk_from_here(frames, stack_end)
    }

    /// Both walkers from one frame: ours (which must not have needed the fallback), and
    /// the C unwinder's leaving out its own frame.
    #[inline(never)]
    fn both_walks() -> (Vec<usize>, Vec<usize>) {
        let mut ours = [0; 64];
        let mut theirs = [0; 64];
        let ours_len = our_walk_only(&mut ours, os::thread_stack_end())
            .expect("our walk needed the C unwinder");
        let theirs_len = os::backtrace_with_unwinder(&mut theirs, 0);
        black_box((ours[..ours_len].to_vec(), theirs[..theirs_len].to_vec()))
    }

    /// The two walks agree on every frame but the first (each is the return address of
    /// its own call, some bytes apart in `both_walks`: 67 in a debug build).
    fn assert_agree((ours, theirs): (Vec<usize>, Vec<usize>)) {
        assert!(ours.len() > 3, "too short a walk: {ours:x?}");
        assert_eq!(ours.len(), theirs.len(), "{ours:x?}\n{theirs:x?}");
        assert!(
            ours[0].abs_diff(theirs[0]) < 256,
            "{:#x} {:#x}",
            ours[0],
            theirs[0]
        );
        assert_eq!(ours[1..], theirs[1..]);
    }

    #[inline(never)]
    fn deep(levels: u32, pad: &mut [u8]) -> (Vec<usize>, Vec<usize>) {
        // A frame of a size of its own at every level.
        let mut local = [levels as u8; 96];
        black_box(&mut local);
        pad[0] = local[7];
        if levels == 0 {
            return both_walks();
        }
        let walks = deep(levels - 1, black_box(&mut local[..]));
        black_box(walks)
    }

    #[test]
    fn our_walk_agrees_with_the_c_unwinder() {
        let mut pad = [0u8; 4];
        assert_agree(deep(0, &mut pad));
        assert_agree(deep(40, &mut pad));
        // Once more, from the cache.
        assert_agree(deep(40, &mut pad));
        // Through closures and a trait object.
        let through: &dyn Fn() -> (Vec<usize>, Vec<usize>) = &|| deep(3, &mut [0; 4]);
        assert_agree(black_box(through)());
    }

    #[test]
    fn our_walk_agrees_through_c_frames_and_to_the_end_of_a_thread() {
        // glibc's `qsort` calls back into us: its frames are C, built by GCC.
        static WALKS: std::sync::Mutex<Option<(Vec<usize>, Vec<usize>)>> =
            std::sync::Mutex::new(None);
        extern "C" fn compare(a: *const libc::c_void, b: *const libc::c_void) -> libc::c_int {
            let mut walks = WALKS.lock().unwrap();
            if walks.is_none() {
                *walks = Some(both_walks());
            }
            // SAFETY: `qsort` passes pointers to two of the array's `u32`s.
            unsafe { (*(a as *const u32)).cmp(&*(b as *const u32)) as libc::c_int }
        }
        std::thread::spawn(|| {
            let mut numbers = [5u32, 3, 9, 1, 7, 2];
            // SAFETY: the array and its element size are right; `compare` reads two
            // elements.
            unsafe {
                libc::qsort(
                    numbers.as_mut_ptr() as *mut libc::c_void,
                    numbers.len(),
                    4,
                    Some(compare),
                )
            };
            assert_eq!(numbers, [1, 2, 3, 5, 7, 9]);
        })
        .join()
        .unwrap();
        let walks = WALKS.lock().unwrap().take().unwrap();
        assert_agree(walks);
    }

    /// A signal frame is the C unwinder's: the walk through a signal handler falls back,
    /// and gives the C unwinder's frames.
    #[test]
    fn a_walk_through_a_signal_handler_falls_back() {
        use core::sync::atomic::AtomicUsize;
        static OURS: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];
        static FALLBACK: AtomicUsize = AtomicUsize::new(usize::MAX);
        extern "C" fn handler(_: libc::c_int) {
            let mut frames = [0; 64];
            FALLBACK.store(
                usize::from(our_walk_only(&mut frames, os::thread_stack_end()).is_none()),
                Ordering::Relaxed,
            );
            let depth = capture_stack(&mut frames, os::thread_stack_end());
            for (slot, frame) in OURS.iter().zip(&frames[..depth]) {
                slot.store(*frame, Ordering::Relaxed);
            }
        }
        std::thread::spawn(|| {
            // SAFETY: installs a handler that only writes atomics and walks the stack, for
            // a signal raised on this thread, then puts the default back.
            unsafe {
                libc::signal(libc::SIGUSR2, handler as *const () as libc::sighandler_t);
                libc::raise(libc::SIGUSR2);
                libc::signal(libc::SIGUSR2, libc::SIG_DFL);
            }
        })
        .join()
        .unwrap();
        assert_eq!(FALLBACK.load(Ordering::Relaxed), 1);
        // The C unwinder went through the signal frame, past `raise`, to this thread's
        // start: more than the handler's two frames.
        let depth = OURS
            .iter()
            .take_while(|frame| frame.load(Ordering::Relaxed) != 0);
        assert!(depth.count() > 4);
    }

    /// The same stack walked again is read from the cache alone.
    #[test]
    fn a_stack_walked_again_comes_from_the_cache() {
        let mut pad = [0u8; 4];
        let mut misses = Vec::new();
        // Not unrolled: every walk from the same call site.
        for _ in 0..black_box(3) {
            let before = MISSES.with(Cell::get);
            assert_agree(deep(20, &mut pad));
            misses.push(MISSES.with(Cell::get) - before);
        }
        assert!(misses[0] > 0, "{misses:?}");
        assert_eq!(misses[1..], [0, 0]);
    }

    /// Return addresses that share a set stay cached together, up to its four ways.
    #[test]
    fn addresses_of_one_set_do_not_evict_each_other() {
        // Addresses of no loaded object (their rule is `Unknown`, cached all the same),
        // in the set of the first.
        let first = 0x1000_0000usize;
        let pcs: Vec<usize> = (first..)
            .filter(|&pc| set_of(pc) == set_of(first))
            .take(CACHE_WAYS)
            .collect();
        // A cache of the test's own: the other tests share `CACHE`.
        let cache = [EMPTY; CACHE_ENTRIES];
        for &pc in &pcs {
            assert_eq!(rule_for(&cache, pc), Rule::Unknown);
        }
        let before = MISSES.with(Cell::get);
        for &pc in pcs.iter().rev() {
            assert_eq!(rule_for(&cache, pc), Rule::Unknown);
        }
        assert_eq!(MISSES.with(Cell::get) - before, 0);
    }

    /// The walk reads nothing at or above the stack end it is given: with an end just
    /// above this frame, it cannot read the caller's return address and gives up.
    #[test]
    fn a_walk_reads_only_below_the_stack_end() {
        let sp: usize;
        // SAFETY: reads a register into an output.
        unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack)) };
        let mut frames = [0; 64];
        assert_eq!(our_walk_only(&mut frames, sp + 16), None);
        assert!(our_walk_only(&mut frames, os::thread_stack_end()).is_some());
    }

    #[test]
    fn a_full_frame_list_stops_the_walk() {
        let mut frames = [0; 3];
        assert_eq!(capture_stack(&mut frames, os::thread_stack_end()), 3);
        assert!(frames.iter().all(|&frame| frame != 0));
    }
}
