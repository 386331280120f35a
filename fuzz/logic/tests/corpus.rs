//! The fuzz targets' logic on stable, as CI runs it: each target over its checked-in seed
//! corpus (`fuzz/corpus/<target>/seed-*`), over random bytes and over generated operation
//! sequences, all from fixed seeds. Bounded to a few seconds in a debug build.

use ebbmalloc_fuzz_logic::generate::{self, Rng};
use ebbmalloc_fuzz_logic::{encode_threads, run_capi, run_ops, run_threads, CapiOp, Op};
use std::path::Path;

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
