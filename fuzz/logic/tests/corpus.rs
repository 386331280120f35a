//! The fuzz targets' logic on stable, as CI runs it: each target over its checked-in seed
//! corpus (`fuzz/corpus/<target>/seed-*`), over random bytes and over generated operation
//! sequences, all from fixed seeds; and the seed corpora again in a child process per
//! settings mode (`SETTINGS_MODES`: ebbmalloc reads its environment once, at set-up).
//! Bounded to a few seconds each in a debug build.

use ebbmalloc_fuzz_logic::generate::{self, Rng};
use ebbmalloc_fuzz_logic::{
    encode_threads, run_capi, run_ops, run_threads, CapiOp, Op, SETTINGS_MODES,
};
use std::path::Path;
use std::process::Command;

/// Names the settings mode a child process of `seed_corpora_under_each_settings_mode`
/// runs under.
const MODE_VARIABLE: &str = "EBBMALLOC_FUZZ_SETTINGS_MODE";

/// The seed inputs of `target`, by file name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            name.starts_with("seed-").then(|| {
                let bytes = std::fs::read(&path).expect("a readable seed");
                (name, bytes)
            })
        })
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 20,
        "{}: {} seeds; write them with `cargo run -p ebbmalloc-fuzz-logic --example seed_corpus`",
        dir.display(),
        seeds.len()
    );
    seeds
}

fn run_seeds(target: &str, run: fn(&[u8])) {
    for (name, bytes) in seeds(target) {
        // Printed only if the test fails.
        println!("{target}: {name}");
        run(&bytes);
    }
}

#[test]
fn ops_over_the_seed_corpus() {
    run_seeds("ops", run_ops);
}

#[test]
fn threads_over_the_seed_corpus() {
    run_seeds("threads", run_threads);
}

#[test]
fn capi_over_the_seed_corpus() {
    run_seeds("capi", run_capi);
}

/// Runs this test binary's `seed_corpora_in_a_child` once per settings mode, in a child
/// process with the mode's environment.
#[test]
fn seed_corpora_under_each_settings_mode() {
    let this = std::env::current_exe().expect("the test binary's path");
    for mode in SETTINGS_MODES {
        let output = Command::new(&this)
            .args(["--exact", "seed_corpora_in_a_child", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(MODE_VARIABLE, mode.name)
            .envs(mode.env.iter().copied())
            .output()
            .expect("the test binary starts");
        let tail = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        assert!(
            output.status.success(),
            "settings mode {} ({:?}): {}\n--- stdout (end)\n{}\n--- stderr (end)\n{}",
            mode.name,
            mode.env,
            output.status,
            tail(&output.stdout),
            tail(&output.stderr)
        );
    }
}

/// The three seed corpora, in a child process of `seed_corpora_under_each_settings_mode`
/// (nothing otherwise); checks that the mode's settings are in force.
#[test]
fn seed_corpora_in_a_child() {
    let Ok(name) = std::env::var(MODE_VARIABLE) else {
        return;
    };
    let mode = SETTINGS_MODES
        .iter()
        .find(|mode| mode.name == name)
        .unwrap_or_else(|| panic!("no settings mode {name}"));
    let wrong = mode.not_in_force();
    assert!(wrong.is_empty(), "mode {name}: not in force: {wrong:?}");
    run_seeds("ops", run_ops);
    run_seeds("threads", run_threads);
    run_seeds("capi", run_capi);
}

/// Random inputs of up to `max_len` bytes.
fn random_inputs(seed: u64, count: usize, max_len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count).map(move |_| {
        let len = rng.below(max_len + 1);
        rng.bytes(len)
    })
}

#[test]
fn ops_over_random_bytes() {
    for data in random_inputs(1, 1000, 400) {
        run_ops(&data);
    }
}

#[test]
fn threads_over_random_bytes() {
    for data in random_inputs(2, 1000, 400) {
        run_threads(&data);
    }
}

#[test]
fn capi_over_random_bytes() {
    for data in random_inputs(3, 1000, 400) {
        run_capi(&data);
    }
}

#[test]
fn ops_over_generated_sequences() {
    let mut rng = Rng::new(4);
    for round in 0..500 {
        let ops = generate::ops(&mut rng, 1 + round % 80, 1 + round % 8);
        let data = Op::encode(&ops);
        assert_eq!(Op::decode_all(&data), ops);
        run_ops(&data);
    }
}

#[test]
fn threads_over_generated_sequences() {
    let mut rng = Rng::new(5);
    for round in 0..300 {
        let first = generate::ops(&mut rng, 1 + round % 60, 1 + round % 6);
        let second = generate::ops(&mut rng, 1 + round % 50, 1 + round % 5);
        run_threads(&encode_threads(&first, &second));
    }
}

#[test]
fn capi_over_generated_sequences() {
    let mut rng = Rng::new(6);
    for round in 0..500 {
        let ops = generate::capi_ops(&mut rng, 1 + round % 80, 1 + round % 8);
        let data = CapiOp::encode(&ops);
        assert_eq!(CapiOp::decode_all(&data), ops);
        run_capi(&data);
    }
}
