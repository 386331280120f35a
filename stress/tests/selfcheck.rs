//! The stress binary, run for a few seconds: a clean run passes, and a run with one byte of
//! a live block overwritten on purpose (`--self-test-corrupt`) fails with a report, which
//! proves the checker can fail.

use std::process::{Command, Output};

fn run_stress(extra: &[&str]) -> (Output, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stress"))
        .args(["--seconds", "3", "--threads", "4", "--seed", "42"])
        .args(extra)
        .output()
        .expect("run the stress binary");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

#[test]
fn a_clean_run_passes_and_reports() {
    let (output, stdout, stderr) = run_stress(&[]);
    assert!(
        output.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("stress: seed 42 "), "{stdout}");
    assert!(stdout.contains("stress: passed"), "{stdout}");
    assert!(stdout.contains("ops/s"), "{stdout}");
    assert!(stdout.contains("forks: "), "{stdout}");
    assert!(stdout.contains("VmHWM"), "{stdout}");
    assert!(!stderr.contains("VIOLATION"), "{stderr}");
}

#[test]
fn a_corrupted_block_is_caught() {
    let (output, stdout, stderr) = run_stress(&["--self-test-corrupt"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // "stress: self-test: overwrote byte 12 of block id 345 at 0x7f.. (size 67)"
    let note = stderr
        .lines()
        .find_map(|line| line.strip_prefix("stress: self-test: overwrote byte "))
        .unwrap_or_else(|| panic!("no self-test note:\n{stderr}"));
    let corrupted = &note[note.find("block id ").expect("block id")..note.find(" (").expect("(")];
    let violation = &stderr[stderr.find("stress: VIOLATION: ").expect("a violation")..];
    assert!(
        violation.starts_with("stress: VIOLATION: stamp mismatch"),
        "{stderr}"
    );
    assert!(
        violation.contains(corrupted),
        "{corrupted} not in\n{stderr}"
    );
    assert!(stderr.contains("seed: 42"), "{stderr}");
    assert!(!stdout.contains("stress: passed"), "{stdout}");
}

#[test]
fn bad_arguments_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_stress"))
        .arg("--threads")
        .arg("none")
        .output()
        .expect("run the stress binary");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a number"));
}

#[test]
fn a_mode_with_settings_runs_again_with_them_in_force() {
    // no-background: the re-executed run must see its settings in force, find no thread
    // of ebbmalloc's, and pass with the lifecycle and large workloads running.
    let (output, stdout, stderr) = run_stress(&["--mode", "no-background"]);
    assert!(
        output.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("mode no-background: ") && stdout.contains("EBBMALLOC_BACKGROUND_THREAD=0"),
        "{stdout}"
    );
    assert!(stdout.contains("stress: passed"), "{stdout}");
    assert!(stdout.contains("lifecycle: "), "{stdout}");
}

#[test]
fn idle_reclaim_runs_sleepers_under_a_1_ms_trim_interval() {
    let (output, stdout, stderr) = run_stress(&["--mode", "idle-reclaim"]);
    assert!(
        output.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("EBBMALLOC_TRIM_INTERVAL_MS=1 EBBMALLOC_DECAY_MS=0"),
        "{stdout}"
    );
    assert!(stdout.contains("stress: passed"), "{stdout}");
    let sleepers = stdout
        .lines()
        .find_map(|line| line.strip_prefix("  sleepers: "))
        .unwrap_or_else(|| panic!("no sleepers line:\n{stdout}"));
    let sleeps: u64 = sleepers
        .split(", ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sleep count in {sleepers:?}"));
    assert!(sleeps > 0, "{sleepers}");
}

#[test]
fn unknown_modes_are_refused_and_every_mode_is_listed() {
    let output = Command::new(env!("CARGO_BIN_EXE_stress"))
        .args(["--mode", "nonsense"])
        .output()
        .expect("run the stress binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown mode nonsense"), "{stderr}");
    for mode in [
        "default",
        "large",
        "lifecycle",
        "aggressive",
        "no-cache",
        "no-background",
        "idle-reclaim",
    ] {
        assert!(
            stderr.contains(&format!("  {mode} ")),
            "{mode} not in\n{stderr}"
        );
    }
}
