//! The driver side of the `versus` suite: argument parsing, statistics, markdown tables,
//! SVG plots and the report. The workloads themselves are in the `versus-workloads` crate,
//! which every worker binary links unchanged.

pub mod args;
pub mod machine;
pub mod stats;
pub mod svg;
pub mod table;

/// Every allocator the suite knows, in the order of a round.
pub const ALLOCATORS: &[&str] = &["ebbmalloc", "system", "jemalloc", "mimalloc"];

/// The allocator every figure is also given as a ratio to.
pub const BASELINE: &str = "mimalloc";

/// The plot colour of an allocator.
pub fn color(alloc: &str) -> &'static str {
    match alloc {
        "ebbmalloc" => "#1f77b4",
        "system" => "#7f7f7f",
        "jemalloc" => "#2ca02c",
        "mimalloc" => "#ff7f0e",
        _ => "#9467bd",
    }
}
