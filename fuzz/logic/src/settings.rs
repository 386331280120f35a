//! The allocator settings the targets are fuzzed under besides the defaults: modes that
//! make every rare path common. ebbmalloc reads its `EBBMALLOC_*` environment variables
//! once, at its set-up (its first slow path), and the targets use it only through their
//! calls (the process's global allocator stays the system one), so a mode is given to a
//! whole process before its first call: `env VAR=value ... cargo fuzz run ...` in CI, and
//! a child process per mode in the corpus replay test (`tests/corpus.rs`).
//!
//! | mode         | settings                                                      |
//! |--------------|---------------------------------------------------------------|
//! | `trim-hard`  | decay 0, trim interval 1 ms, no retained arena: the background thread releases every free page, empty arena and cached mapping at once, beside the streams |
//! | `no-cache`   | as `trim-hard`, thread-cache budget 0 (every block goes through the central lists), no background thread (the slow paths run the passes), `MADV_FREE` purging |
//! | `profiling`  | as `trim-hard`, the heap profiler on with a mean interval of 1 KiB: most blocks of a run are sampled ones (their own address range, their own `realloc` and `free`, their slots' pages released by the trimmer) |

use ebbmalloc::{c_abi, Purge, Settings};

/// A set of `EBBMALLOC_*` variables the targets are fuzzed under.
#[derive(Clone, Copy, Debug)]
pub struct SettingsMode {
    /// Its name, for messages.
    pub name: &'static str,
    /// The variables and their values.
    pub env: &'static [(&'static str, &'static str)],
}

const TRIM_HARD: &[(&str, &str)] = &[
    ("EBBMALLOC_DECAY_MS", "0"),
    ("EBBMALLOC_TRIM_INTERVAL_MS", "1"),
    ("EBBMALLOC_RETAINED_ARENAS", "0"),
];

const NO_CACHE: &[(&str, &str)] = &[
    ("EBBMALLOC_DECAY_MS", "0"),
    ("EBBMALLOC_TRIM_INTERVAL_MS", "1"),
    ("EBBMALLOC_RETAINED_ARENAS", "0"),
    ("EBBMALLOC_THREAD_CACHE_BYTES", "0"),
    ("EBBMALLOC_BACKGROUND_THREAD", "0"),
    ("EBBMALLOC_PURGE", "free"),
];

const PROFILING: &[(&str, &str)] = &[
    ("EBBMALLOC_DECAY_MS", "0"),
    ("EBBMALLOC_TRIM_INTERVAL_MS", "1"),
    ("EBBMALLOC_RETAINED_ARENAS", "0"),
    ("EBBMALLOC_PROF", "1"),
    ("EBBMALLOC_PROF_SAMPLE", "1024"),
];

/// The modes, as `.ci/run` runs each fuzz target under them too.
pub const SETTINGS_MODES: [SettingsMode; 3] = [
    SettingsMode {
        name: "trim-hard",
        env: TRIM_HARD,
    },
    SettingsMode {
        name: "no-cache",
        env: NO_CACHE,
    },
    SettingsMode {
        name: "profiling",
        env: PROFILING,
    },
];

impl SettingsMode {
    /// The variables that differ from the settings in force, with the value in force: none
    /// when this process runs under the mode. Sets ebbmalloc up first (its first
    /// allocation reads the environment).
    pub fn not_in_force(&self) -> Vec<(&'static str, String)> {
        // SAFETY: a block freed at once.
        unsafe { c_abi::free(c_abi::malloc(64)) };
        let now = Settings::current();
        self.env
            .iter()
            .filter_map(|&(name, want)| {
                let value = match name {
                    "EBBMALLOC_DECAY_MS" => now.decay_ms.to_string(),
                    "EBBMALLOC_TRIM_INTERVAL_MS" => now.trim_interval_ms.to_string(),
                    "EBBMALLOC_RETAINED_ARENAS" => now.retained_arenas.to_string(),
                    "EBBMALLOC_THREAD_CACHE_BYTES" => now.thread_cache_bytes.to_string(),
                    "EBBMALLOC_BACKGROUND_THREAD" => (now.background_thread as u8).to_string(),
                    "EBBMALLOC_PROF" => (now.prof as u8).to_string(),
                    "EBBMALLOC_PROF_SAMPLE" => now.prof_sample_bytes.to_string(),
                    "EBBMALLOC_PURGE" => match now.purge {
                        Purge::DontNeed => "dontneed".to_owned(),
                        Purge::Free => "free".to_owned(),
                    },
                    other => panic!("ebbmalloc fuzz: no setting read from {other}"),
                };
                (value != want).then_some((name, value))
            })
            .collect()
    }
}
