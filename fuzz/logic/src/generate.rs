//! Deterministic generation of operation sequences, for the tests that run the targets'
//! logic on stable and for the seed corpus. Unlike random bytes, generated sequences use
//! few slots, so reallocations, frees, hand-offs and helper threads mostly hit live blocks.

use crate::capi::{BAD_POSIX_ALIGNMENTS, HUGE_CALLS, HUGE_SIZES, NOT_POWERS_OF_TWO};
use crate::codec::{GIANT_SPAN, HUGE_SPAN, MEDIUM_SPAN};
use crate::{CapiOp, Op, ThreadKind};

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (at least 1).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// A size of at least `min`: mostly under 1 KiB, some up to 256 KiB, a few up to 4 MiB
    /// and rarely up to 32 MiB.
    fn size(&mut self, min: usize) -> usize {
        min + match self.below(200) {
            0..=159 => self.below(1024),
            160..=193 => self.below(MEDIUM_SPAN),
            194..=198 => self.below(HUGE_SPAN),
            // Giant sizes are encoded in 2-byte units.
            _ => (HUGE_SPAN + self.below(GIANT_SPAN - HUGE_SPAN)) & !1,
        }
    }

    /// Mostly 1..16, sometimes any power of two up to 2 MiB.
    fn align(&mut self) -> usize {
        if self.below(4) == 0 {
            1 << self.below(22)
        } else {
            1 << self.below(5)
        }
    }

    /// A `count * size` pair splitting a size, or (one time in ten) overflowing.
    fn product(&mut self) -> (usize, usize) {
        if self.below(10) == 0 {
            let size = 2 + self.below(100);
            (usize::MAX / size + 1, size)
        } else {
            let count = 1 + self.below(16);
            (count, self.size(0) / count)
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// `count` operations for the `ops` and `threads` targets on slots below `slots`.
pub fn ops(rng: &mut Rng, count: usize, slots: usize) -> Vec<Op> {
    (0..count)
        .map(|_| {
            let slot = rng.below(slots) as u8;
            match rng.below(100) {
                0..=29 => Op::Alloc {
                    slot,
                    size: rng.size(1),
                    align: rng.align(),
                },
                30..=39 => Op::AllocZeroed {
                    slot,
                    size: rng.size(1),
                    align: rng.align(),
                },
                40..=59 => Op::Realloc {
                    slot,
                    size: rng.size(1),
                },
                60..=79 => Op::Dealloc { slot },
                80..=83 => Op::Check { slot },
                84..=89 => Op::HandOff { slot },
                90..=95 => Op::Adopt { slot },
                96 => Op::Trim,
                97 => Op::Stats,
                _ => Op::Spawn {
                    slot,
                    kind: rng.pick(&ThreadKind::ALL),
                },
            }
        })
        .collect()
}

/// `count` operations for the `capi` target on slots below `slots`.
pub fn capi_ops(rng: &mut Rng, count: usize, slots: usize) -> Vec<CapiOp> {
    (0..count)
        .map(|_| {
            let slot = rng.below(slots) as u8;
            match rng.below(100) {
                0..=19 => CapiOp::Malloc {
                    slot,
                    size: rng.size(0),
                },
                20..=27 => {
                    let (count, size) = rng.product();
                    CapiOp::Calloc { slot, count, size }
                }
                28..=44 => CapiOp::Realloc {
                    slot,
                    size: if rng.below(8) == 0 { 0 } else { rng.size(0) },
                },
                45..=49 => {
                    let (count, size) = rng.product();
                    CapiOp::ReallocArray { slot, count, size }
                }
                50..=57 => CapiOp::PosixMemalign {
                    slot,
                    align: if rng.below(4) == 0 {
                        rng.pick(&BAD_POSIX_ALIGNMENTS)
                    } else {
                        8 << rng.below(19)
                    },
                    size: rng.size(0),
                },
                58..=62 => CapiOp::AlignedAlloc {
                    slot,
                    align: odd_or_power(rng),
                    size: rng.size(0),
                },
                63..=66 => CapiOp::Memalign {
                    slot,
                    align: odd_or_power(rng),
                    size: rng.size(0),
                },
                67..=68 => CapiOp::Valloc {
                    slot,
                    size: rng.size(0),
                },
                69..=70 => CapiOp::Pvalloc {
                    slot,
                    size: rng.size(0),
                },
                71..=84 => CapiOp::Free { slot },
                85..=89 => CapiOp::FreeSized { slot },
                90..=92 => CapiOp::Huge {
                    slot,
                    call: rng.pick(&HUGE_CALLS),
                    size: rng.pick(&HUGE_SIZES),
                },
                93..=95 => CapiOp::Check { slot },
                96 => CapiOp::MallocTrim,
                97 => CapiOp::Stats,
                _ => CapiOp::Thread {
                    slot,
                    kind: rng.pick(&ThreadKind::ALL),
                },
            }
        })
        .collect()
}

/// One time in four an alignment that is not a power of two, else one up to 2 MiB.
fn odd_or_power(rng: &mut Rng) -> usize {
    if rng.below(4) == 0 {
        rng.pick(&NOT_POWERS_OF_TWO)
    } else {
        1 << rng.below(22)
    }
}
