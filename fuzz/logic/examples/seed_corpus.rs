//! Writes the fuzz targets' seed corpus, `fuzz/corpus/<target>/seed-*`: inputs that reach
//! each path of the allocator (size-class edges, large blocks, every alignment, realloc
//! chains across the small/large edge and growing large blocks by factors past the
//! mapping cache, zeroed reuse of dirty blocks, trimming, hand-offs between threads, helper
//! threads of every kind beside statistics walks and trims, the C functions' edge cases)
//! plus generated sequences.
//!
//! `cargo run -p ebbmalloc-fuzz-logic --example seed_corpus` replaces the generated seeds
//! (`seed-NN-*`); inputs kept from campaigns (`seed-found-*`) stay.

use ebbmalloc_fuzz_logic::generate::{self, Rng};
use ebbmalloc_fuzz_logic::{encode_threads, CapiOp, HugeCall, Op, ThreadKind, SLOTS};
use std::path::Path;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Sizes around the edges of the size classes and of the large path.
const SMALL_EDGES: [usize; 24] = [
    1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 80, 112, 127, 128, 129, 160, 192, 255,
    256,
];
const MEDIUM_EDGES: [usize; 16] = [
    257,
    320,
    511,
    512,
    1023,
    1024,
    1025,
    2048,
    3000,
    4096,
    4097,
    8192,
    12288,
    16385,
    32 * KIB,
    48 * KIB,
];
const LARGE_EDGES: [usize; 12] = [
    64 * KIB,
    65 * KIB,
    96 * KIB,
    128 * KIB - 1,
    128 * KIB,
    128 * KIB + 1,
    160 * KIB,
    256 * KIB - 4096,
    256 * KIB - 1,
    MIB,
    MIB + 1,
    4 * MIB - 1,
];

fn slot(i: usize) -> u8 {
    (i % SLOTS) as u8
}

fn alloc(i: usize, size: usize, align: usize) -> Op {
    Op::Alloc {
        slot: slot(i),
        size,
        align,
    }
}

/// Allocates each size into its own slot, checks them, then frees them all.
fn alloc_all_then_free(sizes: &[usize], align: usize) -> Vec<Op> {
    let mut ops: Vec<Op> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| alloc(i, s, align))
        .collect();
    ops.extend((0..sizes.len()).map(|i| Op::Check { slot: slot(i) }));
    ops.extend((0..sizes.len()).map(|i| Op::Dealloc { slot: slot(i) }));
    ops
}

/// One block reallocated through `sizes` in turn.
fn realloc_chain(first: usize, align: usize, sizes: &[usize]) -> Vec<Op> {
    let mut ops = vec![alloc(0, first, align)];
    ops.extend(sizes.iter().map(|&size| Op::Realloc { slot: 0, size }));
    ops.push(Op::Dealloc { slot: 0 });
    ops
}

/// Dirty blocks of `size` freed, then the same size allocated zeroed: reused memory
/// must be cleared.
fn zeroed_reuse(size: usize, count: usize) -> Vec<Op> {
    let mut ops: Vec<Op> = (0..count).map(|i| alloc(i, size, 8)).collect();
    ops.extend((0..count).map(|i| Op::Dealloc { slot: slot(i) }));
    ops.extend((0..count).map(|i| Op::AllocZeroed {
        slot: slot(i),
        size,
        align: 8,
    }));
    ops
}

/// Fills the slots, frees every other one, trims, checks the rest, refills.
fn trim_with_live_blocks(size: usize) -> Vec<Op> {
    let mut ops: Vec<Op> = (0..SLOTS).map(|i| alloc(i, size, 16)).collect();
    ops.extend((0..SLOTS).step_by(2).map(|i| Op::Dealloc { slot: slot(i) }));
    ops.push(Op::Trim);
    ops.extend((0..SLOTS).map(|i| Op::Check { slot: slot(i) }));
    ops.extend((0..SLOTS).step_by(2).map(|i| alloc(i, size, 16)));
    ops.push(Op::Trim);
    ops
}

fn powers_of_two(to: usize) -> impl Iterator<Item = usize> {
    (0..).map(|k| 1usize << k).take_while(move |&p| p <= to)
}

/// A large block grown by factors, past the 16 MiB limit of the mapping cache, while the
/// blocks allocated just before it (at higher addresses: mappings are placed downwards)
/// stay live, so `mremap` cannot grow it in place and it moves; then shrunk. `odd` is 1
/// for the Rust API, whose sizes above 4 MiB are odd.
fn growth_by_factors(align: usize, odd: usize) -> Vec<Op> {
    let realloc = |slot, size| Op::Realloc { slot, size };
    vec![
        alloc(1, MIB, 16),
        alloc(0, 5 * MIB + odd, align),
        realloc(0, 24 * MIB + odd),
        alloc(2, 2 * MIB, 16),
        realloc(0, 30 * MIB + odd),
        realloc(1, 17 * MIB + odd),
        Op::Check { slot: 0 },
        Op::Check { slot: 1 },
        realloc(0, 6 * MIB + odd),
        realloc(1, 300 * KIB),
        Op::Dealloc { slot: 2 },
        Op::Dealloc { slot: 0 },
        Op::Dealloc { slot: 1 },
    ]
}

/// Every kind of helper thread, each handed a block of its own, with statistics walks.
fn helper_threads(size: usize) -> Vec<Op> {
    let mut ops: Vec<Op> = ThreadKind::ALL
        .into_iter()
        .enumerate()
        .flat_map(|(i, kind)| {
            let slot = slot(i);
            [alloc(i, size + i, 8), Op::Spawn { slot, kind }, Op::Stats]
        })
        .collect();
    ops.extend([Op::Trim, Op::Stats]);
    ops
}

/// Rounds of a raw thread whose only call to the allocator, a free, comes after its
/// pthread-key destructors (as glibc's free of a detached thread's `dtv`), then another
/// raw thread that frees (and may reuse the first one's stack and TLS), a trim and a
/// statistics walk over every thread cache.
fn frees_after_destructors(rounds: usize) -> Vec<Op> {
    (0..rounds)
        .flat_map(|_| {
            [
                alloc(0, 64, 8),
                Op::Spawn {
                    slot: 0,
                    kind: ThreadKind::FreeAtExit,
                },
                alloc(1, 64, 8),
                Op::Spawn {
                    slot: 1,
                    kind: ThreadKind::RawFree,
                },
                Op::Trim,
                Op::Stats,
            ]
        })
        .collect()
}

/// `count` rounds of a mapper and a preempter started, then small blocks of `size` taken
/// and freed (arenas come and go) while they run: the streams hold little, so that the
/// mappers' blocks fit in the live-bytes budget.
fn mappers_preempted(count: usize, size: usize) -> Vec<Op> {
    (0..count)
        .flat_map(|i| {
            [
                Op::Spawn {
                    slot: slot(i),
                    kind: ThreadKind::Mapper,
                },
                Op::Spawn {
                    slot: slot(i + 4),
                    kind: ThreadKind::Preempter,
                },
            ]
            .into_iter()
            .chain((8..16).map(move |j| alloc(j, size + i * j, 8)))
            .chain([Op::Stats, Op::Dealloc { slot: slot(8 + i) }])
        })
        .collect()
}

/// `count` times: a helper of `kind` (handed nothing), then a statistics walk and `between`.
fn spawn_each(kind: ThreadKind, count: usize, between: &[Op]) -> Vec<Op> {
    (0..count)
        .flat_map(|i| {
            [
                Op::Spawn {
                    slot: slot(i),
                    kind,
                },
                Op::Stats,
            ]
            .into_iter()
            .chain(between.iter().copied())
        })
        .collect()
}

fn ops_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let growth: Vec<usize> = powers_of_two(4 * MIB - 1).skip(1).collect();
    let shrink: Vec<usize> = growth.iter().rev().copied().collect();
    let across: Vec<usize> = [100, 200 * KIB, 64, 300 * KIB, 128 * KIB, 128 * KIB + 1, 8]
        .into_iter()
        .cycle()
        .take(21)
        .collect();
    let aligned_small: Vec<Op> = powers_of_two(MIB)
        .enumerate()
        .map(|(i, a)| alloc(i, 1, a))
        .collect();
    let aligned_odd: Vec<Op> = powers_of_two(MIB)
        .enumerate()
        .map(|(i, a)| alloc(i, 100, a))
        .collect();
    let aligned_large: Vec<Op> = powers_of_two(MIB)
        .enumerate()
        .map(|(i, a)| alloc(i, 200 * KIB, a))
        .collect();
    let mut hand_offs = Vec::new();
    for i in 0..8 {
        hand_offs.extend([alloc(i, 40 + i * 300, 8), Op::HandOff { slot: slot(i) }]);
    }
    for i in 0..8 {
        hand_offs.extend([
            Op::Adopt { slot: slot(i + 10) },
            Op::Realloc {
                slot: slot(i + 10),
                size: 5000,
            },
        ]);
    }
    let mut cache_loop = Vec::new();
    for round in 0..6 {
        cache_loop.extend([
            alloc(0, MIB, 16),
            Op::Realloc {
                slot: 0,
                size: MIB + round * 200 * KIB,
            },
            Op::Dealloc { slot: 0 },
            alloc(1, 512 * KIB, 16),
            Op::Realloc {
                slot: 1,
                size: 900 * KIB,
            },
        ]);
    }
    let aligned_giant: Vec<Op> = [MIB, 2 * MIB]
        .into_iter()
        .flat_map(|align| {
            [
                alloc(0, 17 * MIB + 1, align),
                alloc(1, 300 * KIB, align),
                Op::Realloc {
                    slot: 1,
                    size: 5 * MIB + 1,
                },
                Op::Realloc {
                    slot: 0,
                    size: 3 * MIB,
                },
                Op::Check { slot: 0 },
                Op::Dealloc { slot: 1 },
            ]
        })
        .collect();
    let mut seeds = vec![
        (
            "small-edges",
            Op::encode(&alloc_all_then_free(&SMALL_EDGES, 1)),
        ),
        (
            "medium-edges",
            Op::encode(&alloc_all_then_free(&MEDIUM_EDGES, 8)),
        ),
        (
            "large-edges",
            Op::encode(&alloc_all_then_free(&LARGE_EDGES, 16)),
        ),
        ("realloc-grow", Op::encode(&realloc_chain(1, 1, &growth))),
        (
            "realloc-shrink",
            Op::encode(&realloc_chain(4 * MIB - 1, 16, &shrink)),
        ),
        (
            "realloc-across-large",
            Op::encode(&realloc_chain(1000, 8, &across)),
        ),
        (
            "realloc-aligned",
            Op::encode(&realloc_chain(64, 4096, &across)),
        ),
        (
            "realloc-aligned-1m",
            Op::encode(&realloc_chain(10, MIB, &across)),
        ),
        ("aligned-1b", Op::encode(&aligned_small)),
        ("aligned-100b", Op::encode(&aligned_odd)),
        ("aligned-200k", Op::encode(&aligned_large)),
        ("zeroed-reuse-16", Op::encode(&zeroed_reuse(16, SLOTS))),
        ("zeroed-reuse-4k", Op::encode(&zeroed_reuse(4096, SLOTS))),
        ("zeroed-reuse-100k", Op::encode(&zeroed_reuse(100 * KIB, 8))),
        ("zeroed-reuse-300k", Op::encode(&zeroed_reuse(300 * KIB, 8))),
        ("trim-live-48", Op::encode(&trim_with_live_blocks(48))),
        (
            "trim-live-20k",
            Op::encode(&trim_with_live_blocks(20 * KIB)),
        ),
        ("hand-off-self", Op::encode(&hand_offs)),
        ("large-cache-loop", Op::encode(&cache_loop)),
        ("growth-by-factors", Op::encode(&growth_by_factors(16, 1))),
        (
            "growth-by-factors-aligned",
            Op::encode(&growth_by_factors(2 * MIB, 1)),
        ),
        ("aligned-giant", Op::encode(&aligned_giant)),
        ("helper-threads", Op::encode(&helper_threads(100))),
        (
            "frees-after-destructors",
            Op::encode(&frees_after_destructors(8)),
        ),
    ];
    let mut rng = Rng::new(0x0905);
    for name in &GENERATED[..8] {
        seeds.push((*name, Op::encode(&generate::ops(&mut rng, 60, 8))));
    }
    seeds
}

const GENERATED: [&str; 16] = [
    "generated-a",
    "generated-b",
    "generated-c",
    "generated-d",
    "generated-e",
    "generated-f",
    "generated-g",
    "generated-h",
    "generated-i",
    "generated-j",
    "generated-k",
    "generated-l",
    "generated-m",
    "generated-n",
    "generated-o",
    "generated-p",
];

/// A producer stream: allocates `count` blocks of `size` and hands each off.
fn producer(size: usize, count: usize, align: usize) -> Vec<Op> {
    (0..count)
        .flat_map(|i| [alloc(i, size + i, align), Op::HandOff { slot: slot(i) }])
        .collect()
}

/// A consumer stream: adopts blocks, resizes them to `size`, frees them.
fn consumer(size: usize, count: usize) -> Vec<Op> {
    (0..count)
        .flat_map(|i| {
            let slot = slot(i);
            [
                Op::Adopt { slot },
                Op::Realloc { slot, size },
                Op::Dealloc { slot },
            ]
        })
        .collect()
}

fn threads_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = vec![
        (
            "small-to-other",
            encode_threads(&producer(24, 32, 8), &consumer(48, 32)),
        ),
        (
            "small-both-ways",
            encode_threads(
                &[producer(64, 16, 8), consumer(64, 16)].concat(),
                &[producer(64, 16, 8), consumer(64, 16)].concat(),
            ),
        ),
        (
            "medium-to-other",
            encode_threads(&producer(3000, 24, 16), &consumer(100, 24)),
        ),
        (
            "large-to-other",
            encode_threads(&producer(200 * KIB, 8, 16), &consumer(300 * KIB, 8)),
        ),
        (
            "aligned-to-other",
            encode_threads(&producer(100, 16, 4096), &consumer(5000, 16)),
        ),
        (
            "huge-to-other",
            encode_threads(&producer(2 * MIB, 3, MIB), &consumer(10, 3)),
        ),
        (
            "shrink-to-small",
            encode_threads(&producer(150 * KIB, 8, 8), &consumer(16, 8)),
        ),
        (
            "trim-while-other-frees",
            encode_threads(
                &[producer(80, 32, 8), vec![Op::Trim; 4]].concat(),
                &[consumer(80, 32), vec![Op::Trim]].concat(),
            ),
        ),
        (
            "churn-both",
            encode_threads(
                &alloc_all_then_free(&SMALL_EDGES, 8),
                &alloc_all_then_free(&MEDIUM_EDGES, 8),
            ),
        ),
        (
            "zeroed-both",
            encode_threads(&zeroed_reuse(32, 16), &zeroed_reuse(32, 16)),
        ),
        ("one-sided", encode_threads(&producer(40, 20, 8), &[])),
        (
            "helpers-both",
            encode_threads(&helper_threads(40), &helper_threads(3000)),
        ),
        (
            "frees-after-destructors-vs-stats",
            encode_threads(
                &frees_after_destructors(16),
                &spawn_each(ThreadKind::RawIdle, 16, &[Op::Trim]),
            ),
        ),
        (
            "exits-during-trims",
            encode_threads(
                &producer(80, 24, 8)
                    .into_iter()
                    .map(|op| match op {
                        Op::HandOff { slot } => Op::Spawn {
                            slot,
                            kind: ThreadKind::Free,
                        },
                        other => other,
                    })
                    .collect::<Vec<_>>(),
                &spawn_each(ThreadKind::Trimmer, 8, &[Op::Trim]),
            ),
        ),
        (
            "large-moves-vs-mappers",
            encode_threads(
                &[growth_by_factors(16, 1), growth_by_factors(MIB, 1)].concat(),
                &spawn_each(
                    ThreadKind::Mapper,
                    6,
                    &[
                        Op::Spawn {
                            slot: 22,
                            kind: ThreadKind::Preempter,
                        },
                        alloc(20, 300 * KIB, 4096),
                        alloc(21, 100, 8),
                        Op::Dealloc { slot: 20 },
                    ],
                ),
            ),
        ),
        (
            "mappers-preempted",
            encode_threads(&mappers_preempted(4, 100), &mappers_preempted(4, 20_000)),
        ),
    ];
    let mut rng = Rng::new(0x7ead);
    for name in &GENERATED[..12] {
        let first = generate::ops(&mut rng, 50, 6);
        let second = generate::ops(&mut rng, 50, 6);
        seeds.push((*name, encode_threads(&first, &second)));
    }
    seeds
}

fn capi_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let each = |make: &dyn Fn(u8, usize) -> CapiOp, sizes: &[usize]| -> Vec<CapiOp> {
        let mut ops: Vec<CapiOp> = sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| make(slot(i), s))
            .collect();
        ops.extend((0..sizes.len()).map(|i| CapiOp::Check { slot: slot(i) }));
        ops.extend((0..sizes.len()).map(|i| CapiOp::Free { slot: slot(i) }));
        ops
    };
    let sizes: Vec<usize> = [0]
        .into_iter()
        .chain(SMALL_EDGES)
        .chain([4096, 100 * KIB, 200 * KIB, 3 * MIB])
        .collect();
    let posix_bad: Vec<CapiOp> = [0, 1, 2, 4, 3, 12, 24, 40, 4095, 4100, MIB + 8, usize::MAX]
        .into_iter()
        .map(|align| CapiOp::PosixMemalign {
            slot: 0,
            align,
            size: 64,
        })
        .collect();
    let posix_good: Vec<CapiOp> = powers_of_two(MIB)
        .skip(3)
        .enumerate()
        .map(|(i, align)| CapiOp::PosixMemalign {
            slot: slot(i),
            align,
            size: 3 * i * i,
        })
        .collect();
    let aligned_alloc: Vec<CapiOp> = powers_of_two(MIB)
        .chain([0, 3, 12, 24, 4095, MIB + 8, usize::MAX])
        .enumerate()
        .map(|(i, align)| CapiOp::AlignedAlloc {
            slot: slot(i),
            align,
            size: 1000 * i,
        })
        .collect();
    let memalign: Vec<CapiOp> = [
        0,
        1,
        3,
        12,
        24,
        40,
        4095,
        4100,
        100_000,
        MIB + 8,
        usize::MAX,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, align)| CapiOp::Memalign {
        slot: slot(i),
        align,
        size: 77,
    })
    .collect();
    let huge: Vec<CapiOp> = [
        HugeCall::Malloc,
        HugeCall::Calloc,
        HugeCall::Realloc,
        HugeCall::AlignedAlloc,
        HugeCall::PosixMemalign,
    ]
    .into_iter()
    .flat_map(|call| {
        [
            usize::MAX,
            usize::MAX - 4095,
            isize::MAX as usize + 1,
            isize::MAX as usize,
            isize::MAX as usize - 3 * 4096,
            1 << 62,
        ]
        .map(|size| CapiOp::Huge {
            slot: 0,
            call,
            size,
        })
    })
    .collect();
    let realloc_edges = vec![
        CapiOp::Realloc { slot: 0, size: 0 },
        CapiOp::Realloc { slot: 0, size: 0 },
        CapiOp::Realloc { slot: 1, size: 100 },
        CapiOp::Realloc {
            slot: 1,
            size: 200 * KIB,
        },
        CapiOp::Realloc {
            slot: 1,
            size: 300 * KIB,
        },
        CapiOp::Realloc { slot: 1, size: 50 },
        CapiOp::Realloc { slot: 1, size: 0 },
        CapiOp::Free { slot: 1 },
        CapiOp::Free { slot: 1 },
    ];
    let reallocarray = vec![
        CapiOp::ReallocArray {
            slot: 0,
            count: 4,
            size: 25,
        },
        CapiOp::ReallocArray {
            slot: 0,
            count: usize::MAX / 10 + 1,
            size: 10,
        },
        CapiOp::Check { slot: 0 },
        CapiOp::ReallocArray {
            slot: 0,
            count: 16,
            size: 10_000,
        },
        CapiOp::ReallocArray {
            slot: 0,
            count: 3,
            size: 0,
        },
        CapiOp::ReallocArray {
            slot: 1,
            count: usize::MAX / 2 + 1,
            size: 2,
        },
    ];
    let mut calloc_reuse: Vec<CapiOp> = (0..16)
        .map(|i| CapiOp::Malloc {
            slot: slot(i),
            size: 4000,
        })
        .collect();
    calloc_reuse.extend((0..16).map(|i| CapiOp::Free { slot: slot(i) }));
    calloc_reuse.extend((0..16).map(|i| CapiOp::Calloc {
        slot: slot(i),
        count: 16,
        size: 250,
    }));
    calloc_reuse.push(CapiOp::Calloc {
        slot: 20,
        count: usize::MAX / 3 + 1,
        size: 3,
    });
    let mut usable_growth = Vec::new();
    for size in [1, 9, 100, 5000, 100_000, 300_000, 3 * MIB] {
        usable_growth.extend([
            CapiOp::Malloc { slot: 0, size },
            CapiOp::Realloc {
                slot: 0,
                size: size + 1,
            },
            CapiOp::Check { slot: 0 },
            CapiOp::FreeSized { slot: 0 },
        ]);
    }
    let realloc = |slot, size| CapiOp::Realloc { slot, size };
    let grow_by_factors = vec![
        CapiOp::Malloc { slot: 1, size: MIB },
        CapiOp::Malloc {
            slot: 0,
            size: 5 * MIB,
        },
        realloc(0, 24 * MIB),
        CapiOp::Malloc {
            slot: 2,
            size: 2 * MIB,
        },
        realloc(0, 30 * MIB),
        realloc(1, 17 * MIB),
        CapiOp::Check { slot: 0 },
        CapiOp::Check { slot: 1 },
        realloc(0, 6 * MIB),
        realloc(1, 300 * KIB),
        realloc(2, 20 * MIB),
        CapiOp::Free { slot: 0 },
        CapiOp::Free { slot: 1 },
    ];
    let aligned_giant: Vec<CapiOp> = [MIB, 2 * MIB]
        .into_iter()
        .flat_map(|align| {
            [
                CapiOp::PosixMemalign {
                    slot: 0,
                    align,
                    size: 17 * MIB,
                },
                CapiOp::AlignedAlloc {
                    slot: 1,
                    align,
                    size: 300 * KIB,
                },
                CapiOp::Memalign {
                    slot: 2,
                    align,
                    size: 5 * MIB,
                },
                realloc(1, 5 * MIB),
                realloc(0, 3 * MIB),
                realloc(2, 25 * MIB),
                CapiOp::Check { slot: 0 },
                CapiOp::Free { slot: 1 },
            ]
        })
        .collect();
    let mut helper_threads: Vec<CapiOp> = ThreadKind::ALL
        .into_iter()
        .enumerate()
        .flat_map(|(i, kind)| {
            let slot = slot(i);
            [
                CapiOp::Malloc {
                    slot,
                    size: 100 + 1000 * i,
                },
                CapiOp::Thread { slot, kind },
                CapiOp::Stats,
            ]
        })
        .collect();
    helper_threads.extend([CapiOp::MallocTrim, CapiOp::Stats]);
    let frees_after_destructors: Vec<CapiOp> = (0..8)
        .flat_map(|_| {
            [
                CapiOp::Malloc { slot: 0, size: 64 },
                CapiOp::Thread {
                    slot: 0,
                    kind: ThreadKind::FreeAtExit,
                },
                CapiOp::Malloc { slot: 1, size: 64 },
                CapiOp::Thread {
                    slot: 1,
                    kind: ThreadKind::RawFree,
                },
                CapiOp::MallocTrim,
                CapiOp::Stats,
            ]
        })
        .collect();
    let mut seeds = vec![
        (
            "malloc-sizes",
            CapiOp::encode(&each(&|slot, size| CapiOp::Malloc { slot, size }, &sizes)),
        ),
        (
            "calloc-sizes",
            CapiOp::encode(&each(
                &|slot, size| CapiOp::Calloc {
                    slot,
                    count: 1,
                    size,
                },
                &sizes,
            )),
        ),
        (
            "valloc-sizes",
            CapiOp::encode(&each(&|slot, size| CapiOp::Valloc { slot, size }, &sizes)),
        ),
        (
            "pvalloc-sizes",
            CapiOp::encode(&each(&|slot, size| CapiOp::Pvalloc { slot, size }, &sizes)),
        ),
        (
            "realloc-null-sizes",
            CapiOp::encode(&each(&|slot, size| CapiOp::Realloc { slot, size }, &sizes)),
        ),
        ("posix-memalign-bad", CapiOp::encode(&posix_bad)),
        ("posix-memalign-good", CapiOp::encode(&posix_good)),
        ("aligned-alloc", CapiOp::encode(&aligned_alloc)),
        ("memalign-odd", CapiOp::encode(&memalign)),
        ("huge-requests", CapiOp::encode(&huge)),
        ("realloc-edges", CapiOp::encode(&realloc_edges)),
        ("reallocarray", CapiOp::encode(&reallocarray)),
        ("calloc-reuse", CapiOp::encode(&calloc_reuse)),
        ("usable-growth", CapiOp::encode(&usable_growth)),
        (
            "trim",
            CapiOp::encode(&[
                CapiOp::Malloc {
                    slot: 0,
                    size: 300 * KIB,
                },
                CapiOp::Free { slot: 0 },
                CapiOp::MallocTrim,
                CapiOp::Malloc { slot: 0, size: 20 },
                CapiOp::MallocTrim,
            ]),
        ),
        ("grow-by-factors", CapiOp::encode(&grow_by_factors)),
        ("aligned-giant", CapiOp::encode(&aligned_giant)),
        ("helper-threads", CapiOp::encode(&helper_threads)),
        (
            "frees-after-destructors",
            CapiOp::encode(&frees_after_destructors),
        ),
    ];
    let mut rng = Rng::new(0xca91);
    for name in GENERATED {
        seeds.push((name, CapiOp::encode(&generate::capi_ops(&mut rng, 60, 8))));
    }
    seeds
}

fn write(target: &str, seeds: Vec<(&str, Vec<u8>)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("seed-") && !name.starts_with("seed-found-") {
            std::fs::remove_file(&path).expect("old seed removed");
        }
    }
    let count = seeds.len();
    for (index, (name, bytes)) in seeds.into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{index:02}-{name}")), bytes).expect("seed written");
    }
    println!("{}: {count} seeds", dir.display());
}

fn main() {
    write("ops", ops_seeds());
    write("threads", threads_seeds());
    write("capi", capi_seeds());
}
