//! Command-line options of the driver, parsed by hand.

use crate::{ALLOCATORS, KNOWN_ALLOCATORS};
use std::path::PathBuf;
use versus_workloads::{DEFAULT_SEED, WORKLOADS};

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub quick: bool,
    /// Workload names, in the suite's order.
    pub workloads: Vec<String>,
    /// Allocator names, in the suite's order (the order of every round).
    pub allocs: Vec<String>,
    pub rounds: usize,
    /// `KEY=VALUE` settings for the ebbmalloc worker only.
    pub ebb_env: Vec<(String, String)>,
    /// Reuse the workers built by an earlier run.
    pub no_build: bool,
    pub out_dir: Option<PathBuf>,
    pub seed: u64,
    /// Seconds after which a worker is killed and its run counted as failed.
    pub timeout_s: Option<u64>,
    pub help: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            workloads: WORKLOADS.iter().map(|w| w.name.to_string()).collect(),
            allocs: ALLOCATORS.iter().map(|a| a.to_string()).collect(),
            rounds: 3,
            ebb_env: Vec::new(),
            no_build: false,
            out_dir: None,
            seed: DEFAULT_SEED,
            timeout_s: None,
            help: false,
        }
    }
}

/// The canonical name of an allocator (`glibc` is `system`).
pub fn alloc_name(name: &str) -> Option<&'static str> {
    let name = match name {
        "glibc" | "malloc" => "system",
        "ebb" => "ebbmalloc",
        "je" => "jemalloc",
        "mi" => "mimalloc",
        other => other,
    };
    KNOWN_ALLOCATORS.iter().copied().find(|a| *a == name)
}

/// Parses the arguments (without the program name).
pub fn parse<I, S>(args: I) -> Result<Options, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let mut o = Options::default();
    let mut workloads: Vec<String> = Vec::new();
    let mut allocs: Vec<String> = Vec::new();
    let mut i = 0;
    // `--flag=value` is the same as `--flag value`.
    let split = |a: &str| -> (String, Option<String>) {
        match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.to_string(), None),
        }
    };
    while i < args.len() {
        let (flag, inline) = split(&args[i]);
        i += 1;
        // The value of a flag that takes exactly one.
        let one = |i: &mut usize| -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            let v = args
                .get(*i)
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| format!("{flag} needs a value"))?;
            *i += 1;
            Ok(v.clone())
        };
        match flag.as_str() {
            "-h" | "--help" => o.help = true,
            "--quick" => o.quick = true,
            "--no-build" => o.no_build = true,
            "--workload" | "--workloads" | "-w" | "--alloc" | "--allocs" | "-a" => {
                // One or more names: comma lists, repeated flags, or several words.
                let mut names: Vec<String> = Vec::new();
                if let Some(v) = inline.clone() {
                    names.push(v);
                } else {
                    while let Some(v) = args.get(i).filter(|v| !v.starts_with('-')) {
                        names.push(v.clone());
                        i += 1;
                    }
                }
                let names: Vec<String> = names
                    .iter()
                    .flat_map(|n| n.split(','))
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                if names.is_empty() {
                    return Err(format!("{flag} needs at least one name"));
                }
                if flag.starts_with("--w") || flag == "-w" {
                    workloads.extend(names);
                } else {
                    allocs.extend(names);
                }
            }
            "--rounds" | "-r" => {
                let v = one(&mut i)?;
                o.rounds = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--rounds needs a positive number, not {v:?}"))?;
            }
            "--seed" => {
                let v = one(&mut i)?;
                o.seed = v
                    .parse()
                    .map_err(|_| format!("--seed needs a number, not {v:?}"))?;
            }
            "--timeout" => {
                let v = one(&mut i)?;
                o.timeout_s = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--timeout needs seconds, not {v:?}"))?,
                );
            }
            "--ebb-env" => {
                let v = one(&mut i)?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--ebb-env needs KEY=VALUE, not {v:?}"))?;
                if !k.starts_with("EBBMALLOC_") {
                    return Err(format!("--ebb-env takes EBBMALLOC_* settings, not {k:?}"));
                }
                o.ebb_env.push((k.to_string(), val.to_string()));
            }
            "--out" => o.out_dir = Some(PathBuf::from(one(&mut i)?)),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if !workloads.is_empty() {
        for w in &workloads {
            if w != "all" && !WORKLOADS.iter().any(|k| k.name == w) {
                return Err(format!("no workload called {w:?} (see --help)"));
            }
        }
        if !workloads.iter().any(|w| w == "all") {
            o.workloads = WORKLOADS
                .iter()
                .filter(|k| workloads.iter().any(|w| w == k.name))
                .map(|k| k.name.to_string())
                .collect();
        }
    }
    if !allocs.is_empty() {
        let mut wanted = Vec::new();
        for a in &allocs {
            if a == "all" {
                wanted.extend(ALLOCATORS.iter().copied());
            } else {
                wanted.push(alloc_name(a).ok_or_else(|| format!("no allocator called {a:?}"))?);
            }
        }
        o.allocs = KNOWN_ALLOCATORS
            .iter()
            .filter(|a| wanted.contains(a))
            .map(|a| a.to_string())
            .collect();
    }
    Ok(o)
}

/// The text of `--help`.
pub fn help() -> String {
    let mut s = String::from(
        "versus: head-to-head benchmarks of ebbmalloc, glibc, jemalloc and mimalloc

USAGE:
    cargo run --release -p versus -- [OPTIONS]

Builds one worker binary per allocator (the same code, only the #[global_allocator]
differs), then runs every workload once per allocator per round, alternating the
allocators (A B C D, A B C D, ...), one process at a time. Prints a markdown table per
workload (median, min-max spread, ratio to mimalloc) and writes target/versus/report.md,
target/versus/results.json and SVG plots next to them.

OPTIONS:
    --quick                 smaller sizes, for a smoke run (a few minutes in all)
    --workload NAME...      workloads to run (repeatable, or a comma list; default: all)
    --alloc NAME...         allocators: ebbmalloc, system (glibc), jemalloc, mimalloc
                            (repeatable, or a comma list; default and `all`: these
                            four), and on request ebbmalloc-hardened, mimalloc-secure,
                            ebbmalloc-prof (heap profiler on, EBBMALLOC_PROF_SAMPLE)
    --rounds N              rounds (default 3; each round runs every allocator once)
    --ebb-env KEY=VALUE     an EBBMALLOC_* setting for the ebbmalloc worker only
                            (repeatable). The driver's own environment, EBBMALLOC_*,
                            MALLOC_*, MIMALLOC_* and MALLOC_CONF included, is inherited by
                            every worker.
    --seed N                seed of the workloads' random sequences (same for every allocator)
    --timeout SECS          kill a worker after this long (default 600, 120 with --quick)
    --no-build              reuse the workers built by an earlier run
    --out DIR               where the report goes (default: target/versus)
    -h, --help              this text

WORKLOADS:
",
    );
    for w in WORKLOADS {
        s.push_str(&format!("    {:<14}{}\n", w.name, w.about));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, String> {
        parse(args.iter().copied())
    }

    #[test]
    fn defaults() {
        let o = p(&[]).unwrap();
        assert_eq!(o, Options::default());
        assert_eq!(o.rounds, 3);
        assert_eq!(o.allocs, ALLOCATORS);
        assert_eq!(o.workloads.len(), WORKLOADS.len());
        assert!(!o.quick);
    }

    #[test]
    fn lists_repeats_and_words() {
        let o = p(&[
            "--workload",
            "server,pairs",
            "--workload",
            "larson",
            "--quick",
        ])
        .unwrap();
        assert_eq!(o.workloads, ["pairs", "larson", "server"]);
        assert!(o.quick);
        let o = p(&["--workload", "origin", "window", "--alloc=glibc,mimalloc"]).unwrap();
        assert_eq!(o.workloads, ["window", "origin"]);
        assert_eq!(o.allocs, ["system", "mimalloc"]);
        let o = p(&["-a", "mimalloc", "-a", "ebbmalloc", "-w", "all"]).unwrap();
        assert_eq!(o.allocs, ["ebbmalloc", "mimalloc"]);
        assert_eq!(o.workloads.len(), WORKLOADS.len());
    }

    #[test]
    fn numbers_and_env() {
        let o = p(&[
            "--rounds",
            "5",
            "--seed=9",
            "--ebb-env",
            "EBBMALLOC_DECAY_MS=0",
            "--ebb-env=EBBMALLOC_PURGE=free",
            "--timeout",
            "30",
            "--out",
            "/tmp/x",
            "--no-build",
        ])
        .unwrap();
        assert_eq!(o.rounds, 5);
        assert_eq!(o.seed, 9);
        assert_eq!(o.timeout_s, Some(30));
        assert!(o.no_build);
        assert_eq!(o.out_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(
            o.ebb_env,
            [
                ("EBBMALLOC_DECAY_MS".to_string(), "0".to_string()),
                ("EBBMALLOC_PURGE".to_string(), "free".to_string())
            ]
        );
    }

    #[test]
    fn errors() {
        assert!(p(&["--rounds", "0"]).is_err());
        assert!(p(&["--rounds"]).is_err());
        assert!(p(&["--rounds", "--quick"]).is_err());
        assert!(p(&["--workload", "nope"]).is_err());
        assert!(p(&["--workload"]).is_err());
        assert!(p(&["--alloc", "tcmalloc"]).is_err());
        assert!(p(&["--ebb-env", "NOEQUALS"]).is_err());
        assert!(p(&["--ebb-env", "MALLOC_ARENA_MAX=1"]).is_err());
        assert!(p(&["stray"]).is_err());
    }

    #[test]
    fn help_lists_every_workload() {
        let h = help();
        for w in WORKLOADS {
            assert!(h.contains(w.name));
        }
        assert!(h.contains("--ebb-env"));
        assert!(h.contains("inherited"));
    }

    #[test]
    fn hardened_builds_run_only_when_named() {
        let o = p(&[
            "--alloc",
            "mimalloc-secure,ebbmalloc-prof,ebbmalloc",
            "ebbmalloc-hardened",
        ])
        .unwrap();
        assert_eq!(
            o.allocs,
            [
                "ebbmalloc",
                "ebbmalloc-hardened",
                "ebbmalloc-prof",
                "mimalloc-secure"
            ]
        );
        assert_eq!(p(&["--alloc", "all"]).unwrap().allocs, ALLOCATORS);
        assert!(!ALLOCATORS.contains(&"ebbmalloc-hardened"));
        assert!(!ALLOCATORS.contains(&"ebbmalloc-prof"));
    }
}
