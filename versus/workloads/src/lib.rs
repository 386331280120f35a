//! The workloads of the `versus` suite.
//!
//! This crate is compiled once and linked unchanged into every worker binary: the only
//! difference between the workers is the `#[global_allocator]` of the binary crate, which
//! the linker resolves through `__rust_alloc` and friends. Every workload runs a fixed
//! amount of work (the same for every allocator, from the same seeds) and reports its
//! figures as [`Metric`]s, which the worker prints as one JSON line.

use serde::{Deserialize, Serialize};
use std::time::Instant;

pub mod block;
pub mod collections;
pub mod larson;
pub mod origin;
pub mod pairs;
pub mod prodcons;
pub mod rng;
pub mod rss;
pub mod server;
pub mod threads;

/// The prefix of the one line a worker prints on stdout with its results.
pub const RESULT_PREFIX: &str = "VERSUS-RESULT ";

/// The seed every workload starts its generators from, unless told otherwise.
pub const DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Which direction of a figure is the good one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// What a figure measures; decides how the driver tabulates and plots it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Work per second (bar plots).
    Throughput,
    /// A resident-set figure in MiB.
    Rss,
    /// A point of an RSS-over-time line, in MiB (line plots); in order of time.
    RssTime,
    /// The resident set above the workload's baseline per thread, in KiB. It restates the
    /// workload's RSS figures for one thread, so the summary does not average it in again.
    RssPerThread,
    /// A latency.
    Latency,
    /// A duration.
    Time,
    /// A dimensionless ratio.
    Ratio,
}

/// One figure of one run of one workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    pub value: f64,
    pub better: Better,
    pub kind: Kind,
}

impl Metric {
    pub fn new(name: &str, unit: &str, value: f64, better: Better, kind: Kind) -> Self {
        Metric {
            name: name.to_string(),
            unit: unit.to_string(),
            value,
            better,
            kind,
        }
    }

    /// Millions of operations per second.
    pub fn mops(name: &str, unit: &str, ops: u64, secs: f64) -> Self {
        Metric::new(
            name,
            unit,
            ops as f64 / secs.max(1e-9) / 1e6,
            Better::Higher,
            Kind::Throughput,
        )
    }

    /// A resident-set figure in MiB, from kB.
    pub fn rss(name: &str, kib: u64) -> Self {
        Metric::new(name, "MiB", kib as f64 / 1024.0, Better::Lower, Kind::Rss)
    }

    /// A point of an RSS-over-time line in MiB, from kB.
    pub fn rss_time(name: &str, kib: u64) -> Self {
        Metric::new(
            name,
            "MiB",
            kib as f64 / 1024.0,
            Better::Lower,
            Kind::RssTime,
        )
    }

    /// RSS above the baseline per thread in KiB, from kB above the baseline for `threads`.
    pub fn rss_per_thread(name: &str, kib_above_baseline: u64, threads: usize) -> Self {
        Metric::new(
            name,
            "KiB",
            kib_above_baseline as f64 / threads.max(1) as f64,
            Better::Lower,
            Kind::RssPerThread,
        )
    }
}

/// What a worker prints: its allocator, the workload, and the figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub alloc: String,
    pub workload: String,
    pub quick: bool,
    pub seed: u64,
    pub elapsed_s: f64,
    pub metrics: Vec<Metric>,
}

impl Report {
    /// The result line, prefix included.
    pub fn to_line(&self) -> String {
        format!(
            "{}{}",
            RESULT_PREFIX,
            serde_json::to_string(self).expect("a report serializes")
        )
    }

    /// Finds and parses the result line in a worker's stdout.
    pub fn from_output(stdout: &str) -> Result<Report, String> {
        let line = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(RESULT_PREFIX))
            .ok_or_else(|| "the worker printed no result line".to_string())?;
        serde_json::from_str(line).map_err(|e| format!("bad result line: {e}"))
    }
}

/// How big a run is: the full run, the `--quick` smoke run, or the tiny one of the unit tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Full,
    Quick,
    Tiny,
}

impl Scale {
    /// `full`, scaled down for the smaller runs.
    pub fn pick(self, full: u64, quick: u64, tiny: u64) -> u64 {
        match self {
            Scale::Full => full,
            Scale::Quick => quick,
            Scale::Tiny => tiny,
        }
    }
}

/// A workload: its name, a one-line description, and the function that runs it.
pub struct Workload {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(Scale, u64) -> Vec<Metric>,
}

/// Every workload, in the order the driver runs them.
pub static WORKLOADS: &[Workload] = &[
    Workload {
        name: "pairs",
        about: "single thread: alloc+free pairs, 16 B .. 1 MiB (Mops/s per size)",
        run: pairs::run_pairs,
    },
    Workload {
        name: "window",
        about: "single thread: sliding window of 10,000 random-size blocks (Mops/s)",
        run: pairs::run_window,
    },
    Workload {
        name: "vec-string",
        about: "Vec<u64> and String growth by push, realloc chains (M elements/s)",
        run: collections::run_vec_string,
    },
    Workload {
        name: "hashmap",
        about: "HashMap<String, Vec<u32>> build and drop (M entries/s)",
        run: collections::run_hashmap,
    },
    Workload {
        name: "larson",
        about: "larson-style server: 2/4/8 threads replace random slots, hand half on (Mops/s)",
        run: larson::run,
    },
    Workload {
        name: "prodcons",
        about: "one thread allocates, another frees, batches over a bounded channel (Mblocks/s)",
        run: prodcons::run,
    },
    Workload {
        name: "thread-churn",
        about: "thousands of short-lived threads doing a little allocation (kthreads/s, RSS)",
        run: threads::run_churn,
    },
    Workload {
        name: "idle-threads",
        about: "threads allocate 32 MiB each in small objects, free it, park (RSS over time)",
        run: threads::run_idle,
    },
    Workload {
        name: "parked-pool",
        about: "512 threads allocate and free 2 MiB each in small blocks, park (RSS over time)",
        run: threads::run_parked_pool,
    },
    Workload {
        name: "origin",
        about: "two threads build ~1 GiB of small objects, drop it (RSS over time), rebuild",
        run: origin::run,
    },
    Workload {
        name: "server",
        about: "HTTP/JSON server (hyper on tokio) loaded over loopback by 32 connections",
        run: server::run,
    },
];

/// The workload called `name`.
pub fn workload(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// The worker's `main`: parses `--workload NAME [--quick] [--seed N]`, runs the workload
/// and prints the result line. `alloc` is the name of the worker's global allocator.
/// `--serve ADDR` runs the `server` workload's server alone on `ADDR` instead, without the
/// load generator, until the process is killed: for profiling it by hand.
pub fn worker_main(alloc: &str) {
    let mut workload_name = None;
    let mut serve_addr = None;
    let mut quick = false;
    let mut seed = DEFAULT_SEED;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workload" => workload_name = args.next(),
            "--quick" => quick = true,
            "--seed" => {
                seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| die("--seed needs a number"))
            }
            "--serve" => {
                serve_addr = Some(
                    args.next()
                        .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
                        .unwrap_or_else(|| die("--serve needs an address, e.g. 127.0.0.1:8080")),
                )
            }
            "--allocator" => {
                println!("{alloc}");
                return;
            }
            "--help" | "-h" => {
                eprintln!(
                    "usage: versus-worker --workload NAME [--quick] [--seed N] | --allocator"
                );
                eprintln!(
                    "       versus-worker [--workload server] --serve ADDR  (the server alone, \
                     no load, until killed: POST /order, GET {})",
                    server::HEAP_PROFILE_PATH
                );
                for w in WORKLOADS {
                    eprintln!("  {:<13} {}", w.name, w.about);
                }
                return;
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    if let Some(addr) = serve_addr {
        if workload_name
            .as_deref()
            .is_some_and(|name| name != "server")
        {
            die("--serve runs the server workload only");
        }
        let (runtime, bound) =
            server::start(addr).unwrap_or_else(|e| die(&format!("cannot serve on {addr}: {e}")));
        println!(
            "versus-worker ({alloc}): serving on http://{bound} (POST /order, GET {})",
            server::HEAP_PROFILE_PATH
        );
        runtime.block_on(std::future::pending::<()>());
        unreachable!("a pending future never completes");
    }
    let name = workload_name.unwrap_or_else(|| die("--workload NAME is required"));
    let w = workload(&name).unwrap_or_else(|| die(&format!("no workload called {name:?}")));
    let scale = if quick { Scale::Quick } else { Scale::Full };
    let start = Instant::now();
    let metrics = (w.run)(scale, seed);
    let report = Report {
        alloc: alloc.to_string(),
        workload: name,
        quick,
        seed,
        elapsed_s: start.elapsed().as_secs_f64(),
        metrics,
    };
    println!("{}", report.to_line());
}

fn die(msg: &str) -> ! {
    eprintln!("versus-worker: {msg}");
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_through_its_line() {
        let r = Report {
            alloc: "mimalloc".into(),
            workload: "pairs".into(),
            quick: true,
            seed: 7,
            elapsed_s: 1.5,
            metrics: vec![
                Metric::mops("16 B", "Mops/s", 2_000_000, 0.5),
                Metric::rss_time("1 s", 2048),
            ],
        };
        let out = format!("noise\n{}\nmore noise\n", r.to_line());
        let back = Report::from_output(&out).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.metrics[0].value, 4.0);
        assert_eq!(back.metrics[1].value, 2.0);
        assert_eq!(back.metrics[1].kind, Kind::RssTime);
        assert!(Report::from_output("nothing here").is_err());
    }

    #[test]
    fn workload_names_are_unique_and_found() {
        for (i, w) in WORKLOADS.iter().enumerate() {
            assert!(WORKLOADS[..i].iter().all(|o| o.name != w.name));
            assert!(std::ptr::eq(workload(w.name).unwrap(), w));
        }
        assert!(workload("nope").is_none());
    }
}
