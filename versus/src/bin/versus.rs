//! The driver: builds one worker per allocator, runs every workload once per allocator per
//! round (one process at a time, allocators alternating), and reports. `--help` says how.

use std::fs::{self, File};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use versus::args::{self, Options};
use versus::stats::Summary;
use versus::svg::{self, Point, Series};
use versus::table::{self, Row};
use versus::{color, machine, BASELINE};
use versus_workloads::{workload, Kind, Report};

fn main() -> ExitCode {
    let opts = match args::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("versus: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        print!("{}", args::help());
        return ExitCode::SUCCESS;
    }
    match run(&opts) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("versus: {failed} run(s) failed; see the logs");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("versus: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace this driver was built from (the parent of the `versus` package).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `<target>/versus`, `<target>` being the directory the driver itself was built into.
fn default_out_dir(workspace: &Path) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent() {
            if let Some(target) = profile_dir.parent() {
                if target.join("CACHEDIR.TAG").exists() {
                    return target.join("versus");
                }
            }
        }
    }
    workspace.join("target").join("versus")
}

/// A run of the whole suite; returns how many runs failed.
fn run(opts: &Options) -> Result<usize, String> {
    let workspace = workspace_root();
    let out = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| default_out_dir(&workspace));
    let bin_dir = out.join("bin");
    let log_dir = out.join("logs");
    for d in [&bin_dir, &log_dir] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }

    // 1. One worker per allocator.
    let build_start = Instant::now();
    let mut workers = Vec::new();
    for alloc in &opts.allocs {
        let dest = bin_dir.join(format!("worker-{alloc}"));
        if !opts.no_build {
            eprintln!("versus: building worker-{alloc}");
            build_worker(&workspace, alloc, &dest)?;
        }
        let reported = Command::new(&dest)
            .arg("--allocator")
            .output()
            .map_err(|e| format!("cannot run {}: {e} (build it first)", dest.display()))?;
        let reported = String::from_utf8_lossy(&reported.stdout).trim().to_string();
        if reported != *alloc {
            return Err(format!(
                "{} reports allocator {reported:?}, expected {alloc:?}",
                dest.display()
            ));
        }
        workers.push((alloc.clone(), dest));
    }
    let build_secs = build_start.elapsed().as_secs_f64();

    // 2. The runs: per workload, rounds of every allocator in turn.
    let timeout = Duration::from_secs(opts.timeout_s.unwrap_or(if opts.quick { 120 } else { 600 }));
    let total = opts.workloads.len() * opts.rounds * workers.len();
    let mut progress = Progress::new(total);
    let mut results: Vec<WorkloadResult> = Vec::new();
    let mut raw_runs = Vec::new();
    let runs_start = Instant::now();
    for w in &opts.workloads {
        let mut reports: Vec<(String, Report)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        for round in 1..=opts.rounds {
            for (alloc, exe) in &workers {
                let job = Job {
                    exe,
                    alloc,
                    workload: w,
                    round,
                    opts,
                    log_dir: &log_dir,
                    timeout,
                };
                let started = Instant::now();
                let result =
                    job.run(&mut |elapsed| progress.show(w, round, opts.rounds, alloc, elapsed));
                let secs = started.elapsed().as_secs_f64();
                progress.done(w, round, opts.rounds, alloc, secs, result.is_ok());
                match result {
                    Ok(r) => {
                        raw_runs.push(serde_json::json!({
                            "workload": w, "alloc": alloc, "round": round, "report": &r,
                        }));
                        reports.push((alloc.clone(), r));
                    }
                    Err(e) => {
                        progress.clear();
                        eprintln!("versus: {w} / {alloc} / round {round} failed: {e}");
                        raw_runs.push(serde_json::json!({
                            "workload": w, "alloc": alloc, "round": round, "error": &e,
                        }));
                        failures.push(format!("{alloc}, round {round}: {}", first_line(&e)));
                    }
                }
            }
        }
        let rows = table::rows(&reports, &opts.allocs);
        let result = WorkloadResult {
            name: w.clone(),
            rows,
            failures,
        };
        progress.clear();
        let mut stdout = std::io::stdout();
        let _ = writeln!(
            stdout,
            "{}",
            result.section(&opts.allocs, opts.rounds, false)
        );
        let _ = stdout.flush();
        results.push(result);
    }
    let runs_secs = runs_start.elapsed().as_secs_f64();
    progress.clear();

    // 3. The report, the raw figures, the plots.
    let failed: usize = results.iter().map(|r| r.failures.len()).sum();
    let all: Vec<(String, Vec<Row>)> = results
        .iter()
        .map(|r| (r.name.clone(), r.rows.clone()))
        .collect();
    let summary = table::summary_markdown(&all, &opts.allocs, BASELINE);
    let behind = table::behind(&all, &opts.allocs, "ebbmalloc", 0.05);
    let machine = machine::describe(&workspace);
    let mut plots = Vec::new();
    for r in &results {
        plots.extend(r.plots(&out, &opts.allocs)?);
    }
    let report = report_md(
        opts, &machine, &summary, &behind, &results, build_secs, runs_secs,
    );
    let report_path = out.join("report.md");
    write(&report_path, &report)?;
    let json = serde_json::json!({
        "options": {
            "quick": opts.quick, "rounds": opts.rounds, "seed": opts.seed,
            "workloads": &opts.workloads, "allocs": &opts.allocs,
            "ebb_env": opts.ebb_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        },
        "machine": machine.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "runs": raw_runs,
    });
    let json_path = out.join("results.json");
    write(
        &json_path,
        &serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
    )?;

    if opts.allocs.len() > 1 {
        println!("## Summary\n\n{summary}");
    }
    if opts.allocs.iter().any(|a| a == "ebbmalloc") && opts.allocs.len() > 1 {
        println!("{}", behind_md(&behind));
    }
    eprintln!(
        "versus: workers built in {:.0} s, {} runs in {}; report: {}",
        build_secs,
        total,
        fmt_duration(runs_secs),
        report_path.display()
    );
    eprintln!("versus: raw figures: {}", json_path.display());
    for p in &plots {
        eprintln!("versus: plot: {}", p.display());
    }
    Ok(failed)
}

/// Builds the worker with `alloc`'s feature and copies it to `dest` (cargo writes every
/// feature set's binary to the same path).
fn build_worker(workspace: &Path, alloc: &str, dest: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let feature = format!("alloc-{alloc}");
    let output = Command::new(&cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "-p",
            "versus",
            "--bin",
            "versus-worker",
            "--features",
            &feature,
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the {alloc} worker failed ({})",
            output.status
        ));
    }
    let built = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "versus-worker")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo did not say where the {alloc} worker is"))?;
    let _ = fs::remove_file(dest);
    fs::copy(&built, dest)
        .map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), dest.display()))?;
    Ok(())
}

/// One run of one worker.
struct Job<'a> {
    exe: &'a Path,
    alloc: &'a str,
    workload: &'a str,
    round: usize,
    opts: &'a Options,
    log_dir: &'a Path,
    timeout: Duration,
}

impl Job<'_> {
    /// Runs the worker, calling `tick` with the seconds elapsed now and then; returns its
    /// report. Its stdout and stderr go to `logs/WORKLOAD-ALLOC-rROUND.{out,err}`.
    fn run(&self, tick: &mut dyn FnMut(f64)) -> Result<Report, String> {
        let stem = format!("{}-{}-r{}", self.workload, self.alloc, self.round);
        let out_path = self.log_dir.join(format!("{stem}.out"));
        let err_path = self.log_dir.join(format!("{stem}.err"));
        let create = |p: &Path| File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut cmd = Command::new(self.exe);
        cmd.args([
            "--workload",
            self.workload,
            "--seed",
            &self.opts.seed.to_string(),
        ]);
        if self.opts.quick {
            cmd.arg("--quick");
        }
        if self.alloc.starts_with("ebbmalloc") {
            for (k, v) in &self.opts.ebb_env {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(create(&out_path)?)
            .stderr(create(&err_path)?);
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            let elapsed = start.elapsed();
            if elapsed > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("killed after {} s", self.timeout.as_secs()));
            }
            tick(elapsed.as_secs_f64());
            std::thread::sleep(Duration::from_millis(25));
        };
        let stdout = fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = fs::read_to_string(&err_path).unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("{status}\n{}", tail.join("\n")));
        }
        let report = Report::from_output(&stdout)?;
        if report.alloc != self.alloc || report.workload != self.workload {
            return Err(format!(
                "expected {}/{}, the worker reported {}/{}",
                self.workload, self.alloc, report.workload, report.alloc
            ));
        }
        Ok(report)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn fmt_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The progress display on stderr: one line rewritten in place on a terminal, one line per
/// finished run otherwise.
struct Progress {
    tty: bool,
    total: usize,
    finished: usize,
    start: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            total,
            finished: 0,
            start: Instant::now(),
            last_draw: None,
        }
    }

    fn left(&self) -> String {
        if self.finished == 0 {
            return String::new();
        }
        let per_run = self.start.elapsed().as_secs_f64() / self.finished as f64;
        format!(
            ", ~{} left",
            fmt_duration(per_run * (self.total - self.finished) as f64)
        )
    }

    fn show(&mut self, w: &str, round: usize, rounds: usize, alloc: &str, elapsed: f64) {
        if !self.tty
            || self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        eprint!(
            "\r\x1b[K[{:>3}/{}] {:<13} round {}/{}  {:<10} {:>5.1} s   (total {}{})",
            self.finished + 1,
            self.total,
            w,
            round,
            rounds,
            alloc,
            elapsed,
            fmt_duration(self.start.elapsed().as_secs_f64()),
            self.left()
        );
    }

    fn done(&mut self, w: &str, round: usize, rounds: usize, alloc: &str, secs: f64, ok: bool) {
        self.finished += 1;
        if !self.tty {
            eprintln!(
                "[{:>3}/{}] {:<13} round {}/{}  {:<10} {:>6.2} s{}{}",
                self.finished,
                self.total,
                w,
                round,
                rounds,
                alloc,
                secs,
                if ok { "" } else { "  FAILED" },
                self.left()
            );
        }
    }

    fn clear(&mut self) {
        if self.tty {
            eprint!("\r\x1b[K");
            self.last_draw = None;
        }
    }
}

/// The figures of one workload.
struct WorkloadResult {
    name: String,
    rows: Vec<Row>,
    failures: Vec<String>,
}

impl WorkloadResult {
    /// Its markdown section: heading, description, table, plots (in the report), failures.
    fn section(&self, allocs: &[String], rounds: usize, with_plots: bool) -> String {
        let about = workload(&self.name).map(|w| w.about).unwrap_or("");
        let mut s = format!("## {}\n\n{about}\n\n", self.name);
        s.push_str(&format!(
            "Median of {rounds} round(s) (min–max), × = ratio to {BASELINE}'s median; ↑ higher is better, ↓ lower is better.\n\n"
        ));
        s.push_str(&table::markdown(&self.rows, allocs, BASELINE));
        if with_plots {
            for kind in [PlotKind::Throughput, PlotKind::RssTime] {
                if self.has(kind) {
                    s.push_str(&format!("\n![{}]({})\n", self.name, kind.file(&self.name)));
                }
            }
        }
        if !self.failures.is_empty() {
            s.push_str("\nFailed runs:\n");
            for f in &self.failures {
                s.push_str(&format!("- {f}\n"));
            }
        }
        s
    }

    fn has(&self, kind: PlotKind) -> bool {
        self.rows.iter().any(|r| kind.takes(r.kind))
    }

    /// Writes its plots; returns their paths.
    fn plots(&self, out: &Path, allocs: &[String]) -> Result<Vec<PathBuf>, String> {
        let mut paths = Vec::new();
        // Throughput: bars of the ratio to the baseline (or to the first allocator).
        if self.has(PlotKind::Throughput) {
            let base = if allocs.iter().any(|a| a == BASELINE) {
                BASELINE.to_string()
            } else {
                allocs[0].clone()
            };
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| PlotKind::Throughput.takes(r.kind))
                .collect();
            let groups: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
            let series: Vec<Series> = allocs
                .iter()
                .map(|a| Series {
                    name: a.clone(),
                    color: color(a).to_string(),
                    points: rows
                        .iter()
                        .map(|r| {
                            let b = r.get(allocs, &base)?.median;
                            let s = r.get(allocs, a)?;
                            (b > 0.0).then(|| Point {
                                value: s.median / b,
                                low: s.min / b,
                                high: s.max / b,
                            })
                        })
                        .collect(),
                })
                .collect();
            let title = format!(
                "{}: throughput relative to {base} (higher is better)",
                self.name
            );
            let y = format!("ratio to {base}'s median (log scale)");
            let path = out.join(PlotKind::Throughput.file(&self.name));
            write(&path, &svg::bar_chart(&title, &y, &groups, &series))?;
            paths.push(path);
        }
        // RSS over time: lines in MiB.
        if self.has(PlotKind::RssTime) {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| PlotKind::RssTime.takes(r.kind))
                .collect();
            let labels: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
            let series: Vec<Series> = allocs
                .iter()
                .map(|a| Series {
                    name: a.clone(),
                    color: color(a).to_string(),
                    points: rows
                        .iter()
                        .map(|r| {
                            r.get(allocs, a).map(|s: &Summary| Point {
                                value: s.median,
                                low: s.min,
                                high: s.max,
                            })
                        })
                        .collect(),
                })
                .collect();
            let title = format!("{}: resident set over time (lower is better)", self.name);
            let path = out.join(PlotKind::RssTime.file(&self.name));
            write(
                &path,
                &svg::line_chart(&title, "RSS (MiB)", &labels, &series),
            )?;
            paths.push(path);
        }
        Ok(paths)
    }
}

#[derive(Clone, Copy)]
enum PlotKind {
    Throughput,
    RssTime,
}

impl PlotKind {
    fn takes(self, k: Kind) -> bool {
        match self {
            PlotKind::Throughput => k == Kind::Throughput,
            PlotKind::RssTime => k == Kind::RssTime,
        }
    }

    fn file(self, workload: &str) -> String {
        match self {
            PlotKind::Throughput => format!("throughput-{workload}.svg"),
            PlotKind::RssTime => format!("rss-{workload}.svg"),
        }
    }
}

fn behind_md(behind: &[String]) -> String {
    let mut s = String::from(
        "### Where ebbmalloc is behind (by more than 5% of the best other allocator)\n\n",
    );
    if behind.is_empty() {
        s.push_str("Nowhere.\n");
    }
    for b in behind {
        s.push_str(&format!("- {b}\n"));
    }
    s
}

fn report_md(
    opts: &Options,
    machine: &[(String, String)],
    summary: &str,
    behind: &[String],
    results: &[WorkloadResult],
    build_secs: f64,
    runs_secs: f64,
) -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = String::from("# versus: ebbmalloc, glibc, jemalloc and mimalloc head to head\n\n");
    s.push_str(&format!(
        "Command: `cargo run --release -p versus --{}{}`\n\n",
        if args.is_empty() { "" } else { " " },
        args.join(" ")
    ));
    s.push_str(&format!(
        "Mode: {}; {} round(s), allocators in this order each round: {}; seed {}; ebbmalloc settings: {}.\n\n",
        if opts.quick { "--quick" } else { "full" },
        opts.rounds,
        opts.allocs.join(", "),
        opts.seed,
        if opts.ebb_env.is_empty() {
            "defaults (plus any EBBMALLOC_* in the environment)".to_string()
        } else {
            opts.ebb_env
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    s.push_str(
        "Every allocator is the `#[global_allocator]` of its own worker process; the workers \
         differ in nothing else. Workers run one at a time. Figures are medians over the \
         rounds with their min–max spread; × is the ratio to mimalloc's median. RSS is read \
         by each worker from `/proc/self/status` (`VmRSS`; `VmHWM` for peaks). A per-thread \
         figure (KiB) is the RSS above the workload's baseline divided by its threads; it \
         restates an RSS figure, so the summary does not average it in again.\n\n",
    );
    s.push_str(&format!(
        "Time: workers built in {}, runs took {}.\n\n## Machine\n\n| | |\n|---|---|\n",
        fmt_duration(build_secs),
        fmt_duration(runs_secs)
    ));
    for (k, v) in machine {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    if opts.allocs.len() > 1 {
        s.push_str(&format!("\n## Summary\n\n{summary}\n"));
        if opts.allocs.iter().any(|a| a == "ebbmalloc") {
            s.push_str(&behind_md(behind));
        }
    }
    for r in results {
        s.push('\n');
        s.push_str(&r.section(&opts.allocs, opts.rounds, true));
    }
    s
}
