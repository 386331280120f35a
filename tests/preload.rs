//! `libebbmalloc.so` with real programs: a C program over every function's edge cases,
//! misuse that must abort with a clear message, a multithreaded C program with
//! cross-thread frees, fork+exec from a threaded process, CPython, and shell pipelines.
//! Each test checks the program's output, not only its exit status.
//!
//! The library is built once per run with its own cargo invocation and target directory
//! (the outer `cargo test` holds the lock of the usual one).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn build_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("preload")
}

/// The absolute path of a freshly built `libebbmalloc.so`, hardened when these tests are
/// (`cargo test --features hardened`).
fn library() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let target = build_dir().join("cargo-target");
        let features = if cfg!(feature = "hardened") {
            "hardened"
        } else {
            ""
        };
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "ebbmalloc-capi",
                "--features",
                features,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building libebbmalloc.so failed");
        target.join("release/libebbmalloc.so")
    })
}

/// Compiles `tests/c/<name>.c`, linked against the library, and returns the executable.
fn c_program(name: &str) -> PathBuf {
    let library = library();
    let out = build_dir().join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let lib_dir = library.parent().unwrap();
    let status = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&out)
        .arg(&source)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lebbmalloc")
        .status()
        .expect("cc runs");
    assert!(status.success(), "compiling {name}.c failed");
    out
}

fn preloaded(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.env("LD_PRELOAD", library());
    command
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_ran(output: &Output, expected_stdout: &str) {
    let (stdout, stderr) = text(output);
    assert!(
        output.status.success() && stdout.contains(expected_stdout),
        "status {}, expected {expected_stdout:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

#[test]
fn every_function_keeps_glibc_semantics_linked_and_preloaded() {
    let program = c_program("capi_edge_cases");
    let linked = Command::new(&program).output().unwrap();
    assert_ran(&linked, " 0 failed");
    let (_, stderr) = text(&linked);
    assert!(
        stderr.contains("ebbmalloc statistics"),
        "stats_print wrote nothing: {stderr}"
    );
    let preloaded = preloaded(&program).output().unwrap();
    assert_ran(&preloaded, " 0 failed");
}

#[test]
fn misuse_aborts_with_a_clear_message() {
    use std::os::unix::process::ExitStatusExt;
    let program = c_program("misuse");
    for (case, message) in [
        ("stack", "ebbmalloc: free(): invalid pointer 0x"),
        ("interior", "ebbmalloc: free(): invalid pointer 0x"),
        ("large-double", "double free of 0x"),
        (
            "realloc-foreign",
            "ebbmalloc: realloc(): invalid pointer 0x",
        ),
    ] {
        let output = Command::new(&program).arg(case).output().unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "{case}: {stderr}"
        );
        assert!(
            stderr.contains(message),
            "{case}: expected {message:?} in {stderr:?}"
        );
    }
}

#[test]
fn threads_free_each_others_blocks() {
    let program = c_program("threads");
    assert_ran(
        &preloaded(&program).output().unwrap(),
        "threads: 160000 blocks ok",
    );
}

#[test]
fn fork_and_exec_from_a_threaded_program() {
    let program = c_program("fork_exec");
    let output = preloaded(&program).output().unwrap();
    assert_ran(&output, "fork+exec: 20 of 20 ok");
    assert_eq!(text(&output).0.matches("child").count(), 20);
}

const PYTHON_ORIGIN: &str = r#"
import gc, time
def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
data = {i: [str(i), str(i * 2), (i, i + 1)] for i in range(600_000)}
checksum = sum(len(v[0]) + len(v[1]) for v in data.values())
peak = rss_mib()
del data
gc.collect()
deadline = time.time() + 3
while rss_mib() > peak * 0.5 and time.time() < deadline:
    time.sleep(0.01)
after = rss_mib()
print("checksum", checksum)
print("returned", "yes" if after <= peak * 0.5 else "no", round(peak), round(after))
"#;

#[test]
fn cpython_builds_drops_and_gives_memory_back() {
    let output = preloaded("python3")
        .env("PYTHONMALLOC", "malloc")
        .args(["-c", PYTHON_ORIGIN])
        .output()
        .unwrap();
    let expected: usize = (0..600_000usize)
        .map(|i| i.to_string().len() + (i * 2).to_string().len())
        .sum();
    assert_ran(&output, &format!("checksum {expected}\n"));
    assert_ran(&output, "returned yes");
}

#[test]
fn cpython_module_with_threads() {
    let dir = build_dir().join("pymod");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ebbthreads.py"),
        r#"
import json
from concurrent.futures import ThreadPoolExecutor
def work(n):
    doc = {"id": n, "items": [{"k": str(i), "v": [i] * 5} for i in range(2000)]}
    return len(json.loads(json.dumps(doc))["items"])
with ThreadPoolExecutor(max_workers=8) as pool:
    print("total", sum(pool.map(work, range(64))))
"#,
    )
    .unwrap();
    let output = preloaded("python3")
        .env("PYTHONMALLOC", "malloc")
        .env("PYTHONPATH", &dir)
        .args(["-m", "ebbthreads"])
        .output()
        .unwrap();
    assert_ran(&output, "total 128000");
}

#[test]
fn shell_pipelines_fork_and_exec() {
    let cases = [
        "seq 1 200000 | sort -rn | head -3",
        "printf 'ebb\\nflow\\nebb\\n' | sort | uniq -c | tr -s ' '",
        "git --version | cut -d' ' -f1-2",
        "for i in $(seq 1 50); do echo $i; done | awk '{ s += $1 } END { print s }'",
    ];
    for case in cases {
        let plain = Command::new("bash").args(["-c", case]).output().unwrap();
        let with_us = preloaded("bash").args(["-c", case]).output().unwrap();
        let (stdout, stderr) = text(&with_us);
        assert!(with_us.status.success(), "{case}: {stderr}");
        assert!(!stdout.is_empty(), "{case}: no output");
        assert_eq!(
            stdout,
            text(&plain).0,
            "{case}: output differs under the preload"
        );
        assert!(
            !stderr.contains("ERROR: ld.so"),
            "{case}: preload failed: {stderr}"
        );
    }
}
