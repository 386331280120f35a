//! The logic of ebbmalloc's fuzz targets as plain functions over bytes. The cargo-fuzz
//! targets in `fuzz/fuzz_targets/` are one line each; stable `cargo test` runs the same
//! functions over the seed corpus in `fuzz/corpus/` and over generated inputs.
//!
//! Each function decodes its input into a sequence of operations, applies them to
//! ebbmalloc and checks every result against a shadow model kept with the system
//! allocator (the process's global allocator stays the system one):
//!
//! - [`run_ops`]: alloc / alloc_zeroed / realloc / dealloc on an [`ebbmalloc::EbbMalloc`]
//!   value called directly through `GlobalAlloc`, plus `ebbmalloc::trim()` and
//!   `ebbmalloc::stats()`;
//! - [`run_threads`]: two such streams on two threads that hand live blocks to each other,
//!   so blocks are reallocated and freed by the thread that did not allocate them;
//! - [`run_capi`]: the C functions of [`ebbmalloc::c_abi`], with their edge cases (`realloc`
//!   to 0 and from null, overflowing `calloc` and `reallocarray`, bad alignments), and
//!   `errno` checked after every call: as POSIX says after a failure, unchanged after a
//!   success.
//!
//! Every target also starts helper threads ([`ThreadKind`]): threads that never allocate,
//! that only free a block handed to them (also detached raw pthreads, and from the last
//! round of pthread-key destructors), that trim and walk the statistics, or that map, move
//! and unmap large blocks beside the streams. A run that stops making progress for a
//! minute aborts the process (a hang is reported like a crash).
//!
//! The model checks, for every live block: its alignment; that it overlaps no other live
//! block (a map of live ranges); its full contents, a pattern per block written when it is
//! allocated and checked when it is freed, handed over, reallocated (the kept prefix) or on
//! request; and that zeroed blocks come back all zero. A violation panics with a message
//! naming the operation, the block and what was wrong, which libFuzzer reports as a crash.
//!
//! Inputs are decoded by [`Op::decode_all`] and [`CapiOp::decode_all`]; the `encode`
//! functions do the reverse, and [`generate`] makes operation sequences, for the seed
//! corpus (`examples/seed_corpus.rs`) and the tests (`tests/corpus.rs`).

mod capi;
mod codec;
pub mod generate;
mod helpers;
mod ops;
mod pattern;
mod settings;
mod shadow;
mod watchdog;
mod worker;

pub use capi::{run_capi, CapiOp, HugeCall};
pub use helpers::ThreadKind;
pub use ops::{encode_threads, split_threads, Op, SLOTS};
pub use settings::{SettingsMode, SETTINGS_MODES};
pub use worker::{run_ops, run_threads};
