//! The driver side of the `versus` suite: argument parsing, statistics, markdown tables,
//! SVG plots and the report. The workloads themselves are in the `versus-workloads` crate,
//! which every worker binary links unchanged.

pub mod args;
pub mod machine;
pub mod stats;
pub mod svg;
pub mod table;

/// The allocators of a run that names none, in the order of a round.
pub const ALLOCATORS: &[&str] = &["ebbmalloc", "system", "jemalloc", "mimalloc"];

/// Every allocator the suite can build, in the order of a round. Those not in
/// [`ALLOCATORS`] run only when `--alloc` names them: ebbmalloc built with its `hardened`
/// feature, and mimalloc built with its `secure` feature (the cost of hardening), and
/// ebbmalloc with its heap profiler on (the cost of profiling).
pub const KNOWN_ALLOCATORS: &[&str] = &[
    "ebbmalloc",
    "ebbmalloc-hardened",
    "ebbmalloc-prof",
    "system",
    "jemalloc",
    "mimalloc",
    "mimalloc-secure",
];

/// The allocator every figure is also given as a ratio to.
pub const BASELINE: &str = "mimalloc";

/// The plot colour of an allocator.
pub fn color(alloc: &str) -> &'static str {
    match alloc {
        "ebbmalloc" => "#1f77b4",
        "system" => "#7f7f7f",
        "jemalloc" => "#2ca02c",
        "mimalloc" => "#ff7f0e",
        "ebbmalloc-hardened" => "#17becf",
        "ebbmalloc-prof" => "#8c564b",
        "mimalloc-secure" => "#d62728",
        _ => "#9467bd",
    }
}
