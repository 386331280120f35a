//! Fuzz target `capi`: libFuzzer's inputs to `ebbmalloc_fuzz_logic::run_capi`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ebbmalloc_fuzz_logic::run_capi(data));
