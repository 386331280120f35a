//! The worker: runs one workload with one `#[global_allocator]` and prints one result line.
//!
//! Everything but the global allocator is the `versus-workloads` crate, compiled once and
//! linked unchanged into every worker. The driver builds this binary once per feature
//! (`alloc-ebbmalloc`, `alloc-system`, `alloc-jemalloc`, `alloc-mimalloc`, and on request
//! `alloc-ebbmalloc-hardened`, `alloc-ebbmalloc-prof`, `alloc-mimalloc-secure`). With several features on at once
//! (e.g. `--all-features`), the first in the order ebbmalloc, system, jemalloc, mimalloc
//! wins; the worker reports which one it has (and whether it is the hardened or secure
//! build) and the driver checks it.
//!
//! The ebbmalloc workers also give the server workload the heap profile it serves on
//! `/debug/pprof/heap`: ebbmalloc's, from `ebbmalloc-pprof`, while profiling is on
//! (`EBBMALLOC_PROF=1` in the worker's environment). It is off by default, so the benchmark
//! measures the allocator without it.

#[cfg(any(feature = "alloc-ebbmalloc", feature = "alloc-ebbmalloc-hardened"))]
#[global_allocator]
static GLOBAL: ebbmalloc::EbbMalloc = ebbmalloc::EbbMalloc;
/// The crate says whether the `hardened` feature reached it.
#[cfg(any(feature = "alloc-ebbmalloc", feature = "alloc-ebbmalloc-hardened"))]
const ALLOC: &str = if ebbmalloc::HARDENED {
    "ebbmalloc-hardened"
} else if cfg!(feature = "alloc-ebbmalloc-prof") {
    "ebbmalloc-prof"
} else {
    "ebbmalloc"
};

#[cfg(all(
    feature = "alloc-system",
    not(any(feature = "alloc-ebbmalloc", feature = "alloc-ebbmalloc-hardened"))
))]
const ALLOC: &str = "system";

#[cfg(all(
    feature = "alloc-jemalloc",
    not(any(
        feature = "alloc-ebbmalloc",
        feature = "alloc-ebbmalloc-hardened",
        feature = "alloc-system"
    ))
))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(
    feature = "alloc-jemalloc",
    not(any(
        feature = "alloc-ebbmalloc",
        feature = "alloc-ebbmalloc-hardened",
        feature = "alloc-system"
    ))
))]
const ALLOC: &str = "jemalloc";

#[cfg(all(
    any(feature = "alloc-mimalloc", feature = "alloc-mimalloc-secure"),
    not(any(
        feature = "alloc-ebbmalloc",
        feature = "alloc-ebbmalloc-hardened",
        feature = "alloc-system",
        feature = "alloc-jemalloc"
    ))
))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(
    any(feature = "alloc-mimalloc", feature = "alloc-mimalloc-secure"),
    not(any(
        feature = "alloc-ebbmalloc",
        feature = "alloc-ebbmalloc-hardened",
        feature = "alloc-system",
        feature = "alloc-jemalloc"
    ))
))]
const ALLOC: &str = if cfg!(feature = "alloc-mimalloc-secure") {
    "mimalloc-secure"
} else {
    "mimalloc"
};

// No feature: Rust's default, the system allocator (glibc malloc).
#[cfg(not(any(
    feature = "alloc-ebbmalloc",
    feature = "alloc-ebbmalloc-hardened",
    feature = "alloc-system",
    feature = "alloc-jemalloc",
    feature = "alloc-mimalloc",
    feature = "alloc-mimalloc-secure"
)))]
const ALLOC: &str = "system";

/// The heap profile while profiling is on (501 from the server otherwise).
#[cfg(any(feature = "alloc-ebbmalloc", feature = "alloc-ebbmalloc-hardened"))]
fn heap_profile() -> Option<Vec<u8>> {
    ebbmalloc::profiling::is_active().then(ebbmalloc_pprof::dump_pprof)
}

fn main() {
    // The cost of profiling: on from the start, at the interval of the environment.
    #[cfg(feature = "alloc-ebbmalloc-prof")]
    ebbmalloc::profiling::set_active(true);
    #[cfg(any(feature = "alloc-ebbmalloc", feature = "alloc-ebbmalloc-hardened"))]
    versus_workloads::server::set_heap_profile_source(heap_profile);
    versus_workloads::worker_main(ALLOC);
}
