//! The operations of the `ops` and `threads` targets and their byte encoding.
//!
//! An operation is an opcode byte, a slot byte (`% SLOTS`; ignored by trim and stats) and
//! its other fields; the opcode's range picks the operation, so every byte string decodes
//! (random bytes give about 31% alloc, 12% alloc_zeroed, 20% realloc, 23% dealloc and a few
//! checks, hand-offs, trims, statistics walks and helper threads).
//!
//! | opcode   | operation    | other fields              |
//! |----------|--------------|---------------------------|
//! | 0..80    | alloc        | size (4 bytes), alignment |
//! | 80..110  | alloc_zeroed | size (4 bytes), alignment |
//! | 110..160 | realloc      | size (4 bytes)            |
//! | 160..220 | dealloc      |                           |
//! | 220..230 | check        |                           |
//! | 230..240 | hand off     |                           |
//! | 240..250 | adopt        |                           |
//! | 250..252 | trim         |                           |
//! | 252      | stats        |                           |
//! | 253..256 | spawn        | (the slot byte / `SLOTS` picks the [`ThreadKind`]) |
//!
//! An alignment byte below 160 gives 1..16 (`1 << (b % 5)`), the others any power of two
//! up to 2 MiB (`1 << (b % 22)`).

use crate::codec::{push_size, selector, Reader};
use crate::helpers::ThreadKind;

/// Blocks each op stream (thread) holds at most, in numbered slots.
pub const SLOTS: usize = 32;

/// One operation of the `ops` and `threads` targets, on a slot of the stream's thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Free the slot's block if any, then allocate `size` bytes aligned to `align` into it.
    Alloc {
        /// The slot.
        slot: u8,
        /// Bytes, at least 1.
        size: usize,
        /// A power of two up to 2 MiB.
        align: usize,
    },
    /// As `Alloc`, with `alloc_zeroed`.
    AllocZeroed {
        /// The slot.
        slot: u8,
        /// Bytes, at least 1.
        size: usize,
        /// A power of two up to 2 MiB.
        align: usize,
    },
    /// Reallocate the slot's block, if any, to `size` bytes.
    Realloc {
        /// The slot.
        slot: u8,
        /// Bytes, at least 1.
        size: usize,
    },
    /// Free the slot's block, if any.
    Dealloc {
        /// The slot.
        slot: u8,
    },
    /// Check the contents of the slot's block, if any.
    Check {
        /// The slot.
        slot: u8,
    },
    /// Put the slot's block, if any, on the queue shared by the threads.
    HandOff {
        /// The slot.
        slot: u8,
    },
    /// Take the oldest block off the shared queue, if any, check it and keep it in the slot.
    Adopt {
        /// The slot.
        slot: u8,
    },
    /// Call `ebbmalloc::trim()`.
    Trim,
    /// Take the statistics (`ebbmalloc::stats()`), which walks every thread's cache.
    Stats,
    /// Start a helper thread of `kind`, handing it the slot's block (if any) when it frees.
    Spawn {
        /// The slot.
        slot: u8,
        /// What the thread does.
        kind: ThreadKind,
    },
}

const ALLOC: u8 = 0;
const ALLOC_ZEROED: u8 = 80;
const REALLOC: u8 = 110;
const DEALLOC: u8 = 160;
const CHECK: u8 = 220;
const HAND_OFF: u8 = 230;
const ADOPT: u8 = 240;
const TRIM: u8 = 250;
const STATS: u8 = 252;
const SPAWN: u8 = 253;

/// The alignment an alignment byte selects.
fn align(byte: u8) -> usize {
    if byte < 160 {
        1 << (byte % 5)
    } else {
        1 << (byte % 22)
    }
}

impl Op {
    /// The operations `data` encodes, up to its last whole one.
    pub fn decode_all(data: &[u8]) -> Vec<Op> {
        let mut reader = Reader::new(data);
        std::iter::from_fn(|| Op::decode(&mut reader)).collect()
    }

    fn decode(r: &mut Reader<'_>) -> Option<Op> {
        let code = r.byte()?;
        let (slot, slot_byte) = r.slot(SLOTS)?;
        Some(match code {
            ALLOC..ALLOC_ZEROED => {
                let size = r.size(1)?;
                Op::Alloc {
                    slot,
                    size,
                    align: align(r.byte()?),
                }
            }
            ALLOC_ZEROED..REALLOC => {
                let size = r.size(1)?;
                Op::AllocZeroed {
                    slot,
                    size,
                    align: align(r.byte()?),
                }
            }
            REALLOC..DEALLOC => Op::Realloc {
                slot,
                size: r.size(1)?,
            },
            DEALLOC..CHECK => Op::Dealloc { slot },
            CHECK..HAND_OFF => Op::Check { slot },
            HAND_OFF..ADOPT => Op::HandOff { slot },
            ADOPT..TRIM => Op::Adopt { slot },
            TRIM..STATS => Op::Trim,
            STATS..SPAWN => Op::Stats,
            SPAWN..=u8::MAX => Op::Spawn {
                slot,
                kind: ThreadKind::decode(slot_byte, SLOTS),
            },
        })
    }

    /// The bytes that decode to `ops` (slots below [`SLOTS`], sizes from 1 to 32 MiB, odd
    /// above 4 MiB, power-of-two alignments up to 2 MiB).
    pub fn encode(ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            match *op {
                Op::Alloc { slot, size, align } | Op::AllocZeroed { slot, size, align } => {
                    let code = if matches!(op, Op::Alloc { .. }) {
                        ALLOC
                    } else {
                        ALLOC_ZEROED
                    };
                    out.extend([code, slot]);
                    push_size(&mut out, size, 1);
                    out.push(selector(align, self::align, "alignment"));
                }
                Op::Realloc { slot, size } => {
                    out.extend([REALLOC, slot]);
                    push_size(&mut out, size, 1);
                }
                Op::Dealloc { slot } => out.extend([DEALLOC, slot]),
                Op::Check { slot } => out.extend([CHECK, slot]),
                Op::HandOff { slot } => out.extend([HAND_OFF, slot]),
                Op::Adopt { slot } => out.extend([ADOPT, slot]),
                // The slot byte is read and ignored.
                Op::Trim => out.extend([TRIM, 0]),
                Op::Stats => out.extend([STATS, 0]),
                Op::Spawn { slot, kind } => out.extend([SPAWN, kind.encode(slot, SLOTS)]),
            }
        }
        out
    }
}

/// The two op streams of a `threads` input: the first two bytes (little endian) give the
/// length of the first stream, the rest of the input after it is the second.
pub fn split_threads(data: &[u8]) -> (&[u8], &[u8]) {
    let (head, rest) = data.split_at(data.len().min(2));
    let first_len = match *head {
        [low, high] => u16::from_le_bytes([low, high]) as usize,
        _ => 0,
    };
    rest.split_at(first_len.min(rest.len()))
}

/// The `threads` input that runs `first` and `second` on the two threads.
pub fn encode_threads(first: &[Op], second: &[Op]) -> Vec<u8> {
    let first = Op::encode(first);
    let first_len = u16::try_from(first.len()).expect("first stream under 64 KiB");
    let mut out = first_len.to_le_bytes().to_vec();
    out.extend(first);
    out.extend(Op::encode(second));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_op_round_trips() {
        let ops = [
            Op::Alloc {
                slot: 0,
                size: 1,
                align: 1,
            },
            Op::AllocZeroed {
                slot: 31,
                size: (4 << 20) - 1,
                align: 1 << 20,
            },
            Op::Alloc {
                slot: 30,
                size: (24 << 20) + 1,
                align: 2 << 20,
            },
            Op::Alloc {
                slot: 5,
                size: 200_000,
                align: 64,
            },
            Op::Realloc {
                slot: 5,
                size: 4097,
            },
            Op::Dealloc { slot: 7 },
            Op::Check { slot: 8 },
            Op::HandOff { slot: 9 },
            Op::Adopt { slot: 10 },
            Op::Trim,
            Op::Stats,
        ]
        .into_iter()
        .chain(ThreadKind::ALL.map(|kind| Op::Spawn { slot: 11, kind }))
        .collect::<Vec<_>>();
        assert_eq!(Op::decode_all(&Op::encode(&ops)), ops);
    }

    #[test]
    fn thread_streams_split_where_encoded() {
        let first = [Op::Dealloc { slot: 1 }, Op::Trim];
        let second = [Op::Check { slot: 2 }];
        let data = encode_threads(&first, &second);
        let (a, b) = split_threads(&data);
        assert_eq!(Op::decode_all(a), first);
        assert_eq!(Op::decode_all(b), second);
        assert_eq!(split_threads(&[9]), (&[][..], &[][..]));
    }
}
