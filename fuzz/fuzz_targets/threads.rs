//! Fuzz target `threads`: libFuzzer's inputs to `ebbmalloc_fuzz_logic::run_threads`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebbmalloc_fuzz_logic::run_threads(data));
