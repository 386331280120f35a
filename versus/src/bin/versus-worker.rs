//! The worker: runs one workload with one `#[global_allocator]` and prints one result line.
//!
//! Everything but the global allocator is the `versus-workloads` crate, compiled once and
//! linked unchanged into every worker. The driver builds this binary once per feature
//! (`alloc-ebbmalloc`, `alloc-system`, `alloc-jemalloc`, `alloc-mimalloc`). With several
//! features on at once (e.g. `--all-features`), the first in that order wins; the worker
//! reports which one it has and the driver checks it.

#[cfg(feature = "alloc-ebbmalloc")]
#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;
#[cfg(feature = "alloc-ebbmalloc")]
const ALLOC: &str = "ebbmalloc";

#[cfg(all(feature = "alloc-system", not(feature = "alloc-ebbmalloc")))]
const ALLOC: &str = "system";

#[cfg(all(
    feature = "alloc-jemalloc",
    not(any(feature = "alloc-ebbmalloc", feature = "alloc-system"))
))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(
    feature = "alloc-jemalloc",
    not(any(feature = "alloc-ebbmalloc", feature = "alloc-system"))
))]
const ALLOC: &str = "jemalloc";

#[cfg(all(
    feature = "alloc-mimalloc",
    not(any(
        feature = "alloc-ebbmalloc",
        feature = "alloc-system",
        feature = "alloc-jemalloc"
    ))
))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(
    feature = "alloc-mimalloc",
    not(any(
        feature = "alloc-ebbmalloc",
        feature = "alloc-system",
        feature = "alloc-jemalloc"
    ))
))]
const ALLOC: &str = "mimalloc";

// No feature: Rust's default, the system allocator (glibc malloc).
#[cfg(not(any(
    feature = "alloc-ebbmalloc",
    feature = "alloc-system",
    feature = "alloc-jemalloc",
    feature = "alloc-mimalloc"
)))]
const ALLOC: &str = "system";

fn main() {
    versus_workloads::worker_main(ALLOC);
}
