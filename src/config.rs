//! Every setting of the allocator, declared once in [`SETTINGS`]: its name, its
//! `EBBMALLOC_*` environment variable, its default and its meaning. The README's table is
//! checked against this one by a test (`tests/config_table.rs`).
//!
//! Values live in atomics and are read where they are used (all on slow paths). The
//! environment is read once, at process set-up, with `getenv` (which does not allocate); a
//! value that does not parse prints one warning naming the variable and keeps the default.
//! Rust programs can also change settings at any time with [`crate::configure`]; a value set
//! that way wins over the environment.

use crate::fatal::print_line;
use crate::os;
pub use crate::os::Purge;
use crate::sync::{model_static, AtomicU64, Ordering};

/// One setting of the table.
#[derive(Clone, Copy, Debug)]
pub struct SettingInfo {
    /// Name used in [`crate::Settings`] and the statistics.
    pub name: &'static str,
    /// Environment variable that sets it.
    pub env: &'static str,
    /// Default, as written in the environment variable.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Bool,
    Number { min: u64, max: u64 },
    Purge,
}

/// Indices into [`SETTINGS`] and the value array, one per setting.
#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum Setting {
    BackgroundThread,
    TrimIntervalMs,
    DecayMs,
    RetainedArenas,
    ThreadCacheBytes,
    Purge,
    StatsAtExit,
    Verbose,
}

const SETTING_COUNT: usize = 8;

/// The table of settings.
pub static SETTINGS: [SettingInfo; SETTING_COUNT] = [
    SettingInfo {
        name: "background_thread",
        env: "EBBMALLOC_BACKGROUND_THREAD",
        default: "1",
        meaning: "Run the trimming pass on a background thread (0: run it from the allocator's slow path instead).",
        kind: Kind::Bool,
    },
    SettingInfo {
        name: "trim_interval_ms",
        env: "EBBMALLOC_TRIM_INTERVAL_MS",
        default: "100",
        meaning: "Milliseconds between trimming passes while there is memory to give back.",
        kind: Kind::Number { min: 1, max: 3_600_000 },
    },
    SettingInfo {
        name: "decay_ms",
        env: "EBBMALLOC_DECAY_MS",
        default: "300",
        meaning: "Milliseconds a free page (or cached large mapping) stays resident before it is released; 0 releases at the next pass.",
        kind: Kind::Number { min: 0, max: 3_600_000 },
    },
    SettingInfo {
        name: "retained_arenas",
        env: "EBBMALLOC_RETAINED_ARENAS",
        default: "4",
        meaning: "Empty arenas kept mapped (their pages released) for reuse; more are unmapped.",
        kind: Kind::Number { min: 0, max: 1 << 20 },
    },
    SettingInfo {
        name: "thread_cache_bytes",
        env: "EBBMALLOC_THREAD_CACHE_BYTES",
        default: "4194304",
        meaning: "Most bytes one thread's cache may hold, summed over its size classes (applies to threads set up afterwards).",
        kind: Kind::Number { min: 0, max: 1 << 34 },
    },
    SettingInfo {
        name: "purge",
        env: "EBBMALLOC_PURGE",
        default: "dontneed",
        meaning: "How free pages are released: `dontneed` (RSS drops at once) or `free` (MADV_FREE: the kernel takes them under pressure).",
        kind: Kind::Purge,
    },
    SettingInfo {
        name: "stats_at_exit",
        env: "EBBMALLOC_STATS",
        default: "0",
        meaning: "Print the statistics table to stderr when the process exits.",
        kind: Kind::Bool,
    },
    SettingInfo {
        name: "verbose",
        env: "EBBMALLOC_VERBOSE",
        default: "0",
        meaning: "Print the settings at start-up and a line per background trimming pass that released memory.",
        kind: Kind::Bool,
    },
];

/// Set in a value slot once a Rust caller has set it: the environment then leaves it alone.
const SET_BY_PROGRAM: u64 = 1 << 63;

#[cfg(not(loom))]
#[allow(clippy::declare_interior_mutable_const)]
const UNSET: AtomicU64 = AtomicU64::new(u64::MAX);
model_static! {
    static VALUES: [AtomicU64; SETTING_COUNT] = [UNSET; SETTING_COUNT],
    loom = core::array::from_fn(|_| AtomicU64::new(u64::MAX));
}

/// The current value of a setting (booleans are 0/1, `purge` is 0 for dontneed, 1 for free).
#[inline]
pub(crate) fn get(setting: Setting) -> u64 {
    let raw = VALUES[setting as usize].load(Ordering::Relaxed);
    if raw == u64::MAX {
        // Read before set-up (or set-up never ran): the default.
        parse(
            &SETTINGS[setting as usize],
            SETTINGS[setting as usize].default.as_bytes(),
        )
        .unwrap_or(0)
    } else {
        raw & !SET_BY_PROGRAM
    }
}

/// Sets a value from the program; wins over the environment.
pub(crate) fn set(setting: Setting, value: u64) {
    let info = &SETTINGS[setting as usize];
    let value = match info.kind {
        Kind::Bool | Kind::Purge => value.min(1),
        Kind::Number { min, max } => value.clamp(min, max),
    };
    VALUES[setting as usize].store(value | SET_BY_PROGRAM, Ordering::Relaxed);
}

/// Whether a bool setting is on.
#[inline]
pub(crate) fn enabled(setting: Setting) -> bool {
    get(setting) != 0
}

/// The purge method in force.
pub(crate) fn purge() -> Purge {
    if get(Setting::Purge) == 1 {
        Purge::Free
    } else {
        Purge::DontNeed
    }
}

/// Reads every `EBBMALLOC_*` variable once; called at process set-up.
pub(crate) fn read_environment() {
    for (index, info) in SETTINGS.iter().enumerate() {
        let mut name = [0u8; 64];
        name[..info.env.len()].copy_from_slice(info.env.as_bytes());
        let text = core::ffi::CStr::from_bytes_until_nul(&name)
            .ok()
            .and_then(os::env_var);
        let default = parse(info, info.default.as_bytes()).unwrap_or(0);
        let value = match text {
            None => default,
            Some(text) => match parse(info, text) {
                Some(value) => value,
                None => {
                    warn_bad_value(info);
                    default
                }
            },
        };
        // Leave values the program set before set-up alone.
        let _ =
            VALUES[index].compare_exchange(u64::MAX, value, Ordering::Relaxed, Ordering::Relaxed);
    }
}

fn parse(info: &SettingInfo, text: &[u8]) -> Option<u64> {
    let text = trim_ascii(text);
    match info.kind {
        Kind::Bool => match text {
            b"1" | b"true" | b"yes" | b"on" => Some(1),
            b"0" | b"false" | b"no" | b"off" => Some(0),
            _ => None,
        },
        Kind::Purge => match text {
            b"dontneed" => Some(0),
            b"free" => Some(1),
            _ => None,
        },
        Kind::Number { min, max } => {
            if text.is_empty() || text.len() > 19 {
                return None;
            }
            let mut value: u64 = 0;
            for &digit in text {
                if !digit.is_ascii_digit() {
                    return None;
                }
                value = value * 10 + (digit - b'0') as u64;
            }
            (min..=max).contains(&value).then_some(value)
        }
    }
}

fn trim_ascii(mut text: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = text {
        if !first.is_ascii_whitespace() {
            break;
        }
        text = rest;
    }
    while let [rest @ .., last] = text {
        if !last.is_ascii_whitespace() {
            break;
        }
        text = rest;
    }
    text
}

fn warn_bad_value(info: &SettingInfo) {
    print_line(format_args!(
        "ebbmalloc: warning: {} has an invalid value; using the default {}\n",
        info.env, info.default
    ));
}

/// Prints the settings in force (for `EBBMALLOC_VERBOSE=1`).
pub(crate) fn print_settings() {
    for (index, info) in SETTINGS.iter().enumerate() {
        let value = VALUES[index].load(Ordering::Relaxed) & !SET_BY_PROGRAM;
        if let Kind::Purge = info.kind {
            // Shown as it is written in the environment, not as its stored number.
            let name = if value == 1 { "free" } else { "dontneed" };
            print_line(format_args!("ebbmalloc: {} = {}\n", info.env, name));
        } else {
            print_line(format_args!("ebbmalloc: {} = {}\n", info.env, value));
        }
    }
}

/// The settings as one value, for [`crate::configure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `EBBMALLOC_BACKGROUND_THREAD`.
    pub background_thread: bool,
    /// `EBBMALLOC_TRIM_INTERVAL_MS`.
    pub trim_interval_ms: u32,
    /// `EBBMALLOC_DECAY_MS`.
    pub decay_ms: u32,
    /// `EBBMALLOC_RETAINED_ARENAS`.
    pub retained_arenas: u32,
    /// `EBBMALLOC_THREAD_CACHE_BYTES`.
    pub thread_cache_bytes: usize,
    /// `EBBMALLOC_PURGE`.
    pub purge: Purge,
    /// `EBBMALLOC_STATS`.
    pub stats_at_exit: bool,
    /// `EBBMALLOC_VERBOSE`.
    pub verbose: bool,
}

impl Settings {
    /// The settings in force now.
    pub fn current() -> Settings {
        Settings {
            background_thread: enabled(Setting::BackgroundThread),
            trim_interval_ms: get(Setting::TrimIntervalMs) as u32,
            decay_ms: get(Setting::DecayMs) as u32,
            retained_arenas: get(Setting::RetainedArenas) as u32,
            thread_cache_bytes: get(Setting::ThreadCacheBytes) as usize,
            purge: purge(),
            stats_at_exit: enabled(Setting::StatsAtExit),
            verbose: enabled(Setting::Verbose),
        }
    }

    /// Puts these settings in force (each value clamped to its valid range). They win over
    /// the environment, also when set before the first allocation.
    pub fn apply(&self) {
        set(Setting::BackgroundThread, self.background_thread as u64);
        set(Setting::TrimIntervalMs, self.trim_interval_ms as u64);
        set(Setting::DecayMs, self.decay_ms as u64);
        set(Setting::RetainedArenas, self.retained_arenas as u64);
        set(Setting::ThreadCacheBytes, self.thread_cache_bytes as u64);
        set(Setting::Purge, (self.purge == Purge::Free) as u64);
        set(Setting::StatsAtExit, self.stats_at_exit as u64);
        set(Setting::Verbose, self.verbose as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_bad_values_are_refused() {
        for info in SETTINGS.iter() {
            assert!(
                parse(info, info.default.as_bytes()).is_some(),
                "{}",
                info.name
            );
            assert!(parse(info, b"not a value").is_none(), "{}", info.name);
            assert!(info.env.len() < 63);
        }
        let decay = &SETTINGS[Setting::DecayMs as usize];
        assert_eq!(parse(decay, b" 250 "), Some(250));
        assert_eq!(parse(decay, b"-1"), None);
        assert_eq!(parse(decay, b"99999999999999999999"), None);
        let interval = &SETTINGS[Setting::TrimIntervalMs as usize];
        assert_eq!(parse(interval, b"0"), None, "below the minimum");
        let purge = &SETTINGS[Setting::Purge as usize];
        assert_eq!(parse(purge, b"free"), Some(1));
    }

    #[test]
    fn table_order_matches_the_setting_indices() {
        assert_eq!(
            SETTINGS[Setting::BackgroundThread as usize].name,
            "background_thread"
        );
        assert_eq!(
            SETTINGS[Setting::TrimIntervalMs as usize].name,
            "trim_interval_ms"
        );
        assert_eq!(SETTINGS[Setting::DecayMs as usize].name, "decay_ms");
        assert_eq!(
            SETTINGS[Setting::RetainedArenas as usize].name,
            "retained_arenas"
        );
        assert_eq!(
            SETTINGS[Setting::ThreadCacheBytes as usize].name,
            "thread_cache_bytes"
        );
        assert_eq!(SETTINGS[Setting::Purge as usize].name, "purge");
        assert_eq!(
            SETTINGS[Setting::StatsAtExit as usize].name,
            "stats_at_exit"
        );
        assert_eq!(SETTINGS[Setting::Verbose as usize].name, "verbose");
    }
}
