//! Modes: named runs that CI can call one by one (`stress --mode NAME`). A mode picks the
//! allocator settings of the run and the workloads that run beside the soak workers; the
//! table of modes is [`MODES`] (summed up in the crate's doc and the usage text).
//!
//! ebbmalloc reads its `EBBMALLOC_*` variables once, at set-up, which has happened long
//! before `main` (the runtime allocates), so a mode with settings re-executes the program
//! with them in its environment, and the new process checks with
//! `ebbmalloc::Settings::current()` that the allocator took them.

use crate::fail::violation;
use ebbmalloc::Settings;
use std::os::unix::process::CommandExt;

/// One setting of a mode: an `EBBMALLOC_*` variable and its value.
pub struct Setting {
    pub env: &'static str,
    pub value: u64,
}

pub struct Mode {
    pub name: &'static str,
    pub about: &'static str,
    pub settings: &'static [Setting],
    /// Run the large-block workload (`large.rs`).
    pub large: bool,
    /// Run the thread lifecycle workload (`lifecycle.rs`).
    pub lifecycle: bool,
    /// Run the sleepers workload (`sleepers.rs`).
    pub sleepers: bool,
}

impl Mode {
    /// Whether the heap profiler samples in this mode (then the main thread reads and checks
    /// the profile as the run goes, `profile.rs`).
    pub fn profiling(&self) -> bool {
        self.settings.iter().any(|s| s.env == PROF && s.value == 1)
    }

    /// Whether ebbmalloc's background trimming thread should run in this mode.
    pub fn background_thread(&self) -> bool {
        !self
            .settings
            .iter()
            .any(|s| s.env == BACKGROUND_THREAD && s.value == 0)
    }
}

const DECAY_MS: &str = "EBBMALLOC_DECAY_MS";
const TRIM_INTERVAL_MS: &str = "EBBMALLOC_TRIM_INTERVAL_MS";
const RETAINED_ARENAS: &str = "EBBMALLOC_RETAINED_ARENAS";
const THREAD_CACHE_BYTES: &str = "EBBMALLOC_THREAD_CACHE_BYTES";
const BACKGROUND_THREAD: &str = "EBBMALLOC_BACKGROUND_THREAD";
const PROF: &str = "EBBMALLOC_PROF";
const PROF_SAMPLE: &str = "EBBMALLOC_PROF_SAMPLE";

/// Set in the environment of a re-executed run: its settings must now be in force.
const REEXEC_MARK: &str = "EBBMALLOC_STRESS_REEXEC";

pub static MODES: [Mode; 8] = [
    Mode {
        name: "default",
        about: "the soak at ebbmalloc's default settings",
        settings: &[],
        large: false,
        lifecycle: false,
        sleepers: false,
    },
    Mode {
        name: "large",
        about: "the soak, and threads that move large blocks with realloc (5 -> 24 MiB), \
                keep eight alive, and align them to 64 KiB..2 MiB",
        settings: &[],
        large: true,
        lifecycle: false,
        sleepers: false,
    },
    Mode {
        name: "lifecycle",
        about: "the soak, and threads that never allocate, only free, free after their key \
                destructors, in waves of detached 8 MiB stacks, while trim() and stats() \
                loop and the process forks",
        settings: &[],
        large: false,
        lifecycle: true,
        sleepers: false,
    },
    Mode {
        name: "aggressive",
        about: "the soak, large and lifecycle, with decay 0, a 1 ms trim interval and no \
                retained arenas",
        settings: &[
            Setting {
                env: DECAY_MS,
                value: 0,
            },
            Setting {
                env: TRIM_INTERVAL_MS,
                value: 1,
            },
            Setting {
                env: RETAINED_ARENAS,
                value: 0,
            },
        ],
        large: true,
        lifecycle: true,
        sleepers: false,
    },
    Mode {
        name: "no-cache",
        about: "the soak, large and lifecycle, with a thread-cache budget of 0 (every call \
                goes to the central lists) and no retained arenas",
        settings: &[
            Setting {
                env: THREAD_CACHE_BYTES,
                value: 0,
            },
            Setting {
                env: RETAINED_ARENAS,
                value: 0,
            },
        ],
        large: true,
        lifecycle: true,
        sleepers: false,
    },
    Mode {
        name: "no-background",
        about: "the soak, large, lifecycle and sleepers, with no background thread (the \
                slow paths trim, and take back sleeping threads' caches), a 1 ms trim \
                interval and decay 0",
        settings: &[
            Setting {
                env: BACKGROUND_THREAD,
                value: 0,
            },
            Setting {
                env: TRIM_INTERVAL_MS,
                value: 1,
            },
            Setting {
                env: DECAY_MS,
                value: 0,
            },
        ],
        large: true,
        lifecycle: true,
        sleepers: true,
    },
    Mode {
        name: "idle-reclaim",
        about: "the soak, and as many sleepers: threads that sleep at random (50 us to \
                100 ms) holding blocks of their own and of others, free some before a sleep, \
                allocate after it and check them all, while the trimmer runs every 1 ms and \
                takes back the caches of parked threads",
        settings: &[
            Setting {
                env: TRIM_INTERVAL_MS,
                value: 1,
            },
            Setting {
                env: DECAY_MS,
                value: 0,
            },
        ],
        large: false,
        lifecycle: false,
        sleepers: true,
    },
    Mode {
        name: "profiling",
        about: "the soak, large and lifecycle with the heap profiler sampling every 4 KiB \
                on average (sampled blocks freed and moved by other threads, in forked \
                children and after their threads exit), switched off and on, its profile \
                read and checked every 500 ms, with decay 0 and a 1 ms trim interval (freed \
                sampled slots give their pages back)",
        settings: &[
            Setting {
                env: PROF,
                value: 1,
            },
            Setting {
                env: PROF_SAMPLE,
                value: 4096,
            },
            Setting {
                env: DECAY_MS,
                value: 0,
            },
            Setting {
                env: TRIM_INTERVAL_MS,
                value: 1,
            },
        ],
        large: true,
        lifecycle: true,
        sleepers: false,
    },
];

pub fn find(name: &str) -> Option<&'static Mode> {
    MODES.iter().find(|mode| mode.name == name)
}

/// The value in force of the setting read from `env`; `None` for a variable this program
/// does not know.
fn in_force(env: &str, settings: &Settings) -> Option<u64> {
    Some(match env {
        DECAY_MS => settings.decay_ms.into(),
        TRIM_INTERVAL_MS => settings.trim_interval_ms.into(),
        RETAINED_ARENAS => settings.retained_arenas.into(),
        THREAD_CACHE_BYTES => settings.thread_cache_bytes as u64,
        BACKGROUND_THREAD => settings.background_thread.into(),
        PROF => settings.prof.into(),
        PROF_SAMPLE => settings.prof_sample_bytes as u64,
        _ => return None,
    })
}

/// The settings of `mode` that are not in force, with the value in force.
fn missing(mode: &Mode) -> Vec<(&'static Setting, Option<u64>)> {
    let current = Settings::current();
    mode.settings
        .iter()
        .filter_map(|setting| {
            let found = in_force(setting.env, &current);
            (found != Some(setting.value)).then_some((setting, found))
        })
        .collect()
}

/// Puts the settings of `mode` in force: returns when they are, else re-executes the
/// program with them in its environment (and does not return). A re-executed run whose
/// settings are still not in force is a violation.
pub fn enter(mode: &Mode) {
    let missing = missing(mode);
    if missing.is_empty() {
        return;
    }
    if std::env::var_os(REEXEC_MARK).is_some() {
        let (setting, found) = missing[0];
        violation(
            "mode settings not in force",
            format_args!(
                "mode {}: the program was re-executed with {}={} but ebbmalloc's setting is \
                 {found:?}",
                mode.name, setting.env, setting.value
            ),
        );
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => violation("re-exec failed", format_args!("current_exe: {e}")),
    };
    let e = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(mode.settings.iter().map(|s| (s.env, s.value.to_string())))
        .env(REEXEC_MARK, mode.name)
        .exec();
    violation(
        "re-exec failed",
        format_args!("mode {}: exec: {e}", mode.name),
    )
}

/// The settings of `mode` as they are written in the environment.
pub fn describe(mode: &Mode) -> String {
    if mode.settings.is_empty() {
        return "ebbmalloc's default settings".into();
    }
    let settings: Vec<String> = mode
        .settings
        .iter()
        .map(|s| format!("{}={}", s.env, s.value))
        .collect();
    settings.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_one_of_ebbmallocs_and_known_here() {
        for mode in &MODES {
            for setting in mode.settings {
                assert!(
                    ebbmalloc::SETTINGS.iter().any(|s| s.env == setting.env),
                    "mode {}: {} is not in ebbmalloc::SETTINGS",
                    mode.name,
                    setting.env
                );
                assert!(
                    in_force(setting.env, &Settings::current()).is_some(),
                    "{}",
                    setting.env
                );
            }
        }
    }

    #[test]
    fn names_are_unique() {
        for (i, mode) in MODES.iter().enumerate() {
            assert!(MODES[i + 1..].iter().all(|m| m.name != mode.name));
        }
    }
}
