//! Every setting of the allocator, declared once: one entry of the `settings!` invocation
//! below gives its field of [`Settings`] and that field's type, its [`Setting`] index, its
//! `EBBMALLOC_*` environment variable, its default, its kind (how its text parses and what
//! range it is clamped to) and its meaning. The macro generates from these entries the
//! [`Setting`] enum, the [`SETTINGS`] table, the [`Settings`] struct with its field docs,
//! and [`Settings::current`] and [`Settings::apply`]; everything else (reading the
//! environment, [`print_settings`]) iterates [`SETTINGS`]. The README's table is checked
//! against [`SETTINGS`] by a test (`tests/config_table.rs`).
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

/// Declares every setting from one entry each: generates the [`Setting`] indices,
/// `SETTING_COUNT`, the [`SETTINGS`] table, the [`Settings`] struct (its field docs made
/// from the variable, default and meaning) and the conversions between a [`Settings`] and
/// the value slots ([`Settings::current`], [`Settings::apply`]).
macro_rules! settings {
    ($(
        $field:ident: $ty:ty => $variant:ident {
            env: $env:literal,
            default: $default:literal,
            kind: $kind:expr,
            meaning: $meaning:literal $(,)?
        }
    ),* $(,)?) => {
        /// Indices into [`SETTINGS`] and the value array, one per setting.
        #[derive(Clone, Copy)]
        #[repr(usize)]
        pub(crate) enum Setting {
            $(#[doc = concat!("`", $env, "`.")] $variant,)*
        }

        const SETTING_COUNT: usize = [$(Setting::$variant),*].len();

        /// The table of settings.
        pub static SETTINGS: [SettingInfo; SETTING_COUNT] = [$(
            SettingInfo {
                name: stringify!($field),
                env: $env,
                default: $default,
                meaning: $meaning,
                kind: $kind,
            },
        )*];

        /// The settings as one value, for [`crate::configure`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Settings {
            $(
                #[doc = concat!("`", $env, "` (default `", $default, "`): ", $meaning)]
                pub $field: $ty,
            )*
        }

        impl Settings {
            /// The settings in force now.
            pub fn current() -> Settings {
                Settings {
                    $($field: Value::from_raw(get(Setting::$variant)),)*
                }
            }

            /// Puts these settings in force (each value clamped to its valid range). They
            /// win over the environment, also when set before the first allocation.
            pub fn apply(&self) {
                $(set(Setting::$variant, self.$field.to_raw());)*
            }
        }
    };
}

settings! {
    background_thread: bool => BackgroundThread {
        env: "EBBMALLOC_BACKGROUND_THREAD",
        default: "1",
        kind: Kind::Bool,
        meaning: "Run the trimming pass on a background thread (0: run it from the allocator's slow path instead).",
    },
    trim_interval_ms: u32 => TrimIntervalMs {
        env: "EBBMALLOC_TRIM_INTERVAL_MS",
        default: "100",
        kind: Kind::Number { min: 1, max: 3_600_000 },
        meaning: "Milliseconds between trimming passes while there is memory to give back.",
    },
    decay_ms: u32 => DecayMs {
        env: "EBBMALLOC_DECAY_MS",
        default: "300",
        kind: Kind::Number { min: 0, max: 3_600_000 },
        meaning: "Milliseconds a free page (or cached large mapping) stays resident before it is released; 0 releases at the next pass.",
    },
    retained_arenas: u32 => RetainedArenas {
        env: "EBBMALLOC_RETAINED_ARENAS",
        default: "4",
        kind: Kind::Number { min: 0, max: 1 << 20 },
        meaning: "Empty arenas kept mapped (their pages released) for reuse; more are unmapped.",
    },
    thread_cache_bytes: usize => ThreadCacheBytes {
        env: "EBBMALLOC_THREAD_CACHE_BYTES",
        default: "4194304",
        kind: Kind::Number { min: 0, max: 1 << 34 },
        meaning: "Most bytes one thread's cache may hold, summed over its size classes (applies to threads set up afterwards).",
    },
    purge: Purge => Purge {
        env: "EBBMALLOC_PURGE",
        default: "dontneed",
        kind: Kind::Purge,
        meaning: "How free pages are released: `dontneed` (RSS drops at once) or `free` (MADV_FREE: the kernel takes them under pressure).",
    },
    stats_at_exit: bool => StatsAtExit {
        env: "EBBMALLOC_STATS",
        default: "0",
        kind: Kind::Bool,
        meaning: "Print the statistics table to stderr when the process exits.",
    },
    verbose: bool => Verbose {
        env: "EBBMALLOC_VERBOSE",
        default: "0",
        kind: Kind::Bool,
        meaning: "Print the settings at start-up and a line per background trimming pass that released memory.",
    },
    prof: bool => Prof {
        env: "EBBMALLOC_PROF",
        default: "0",
        kind: Kind::Bool,
        meaning: "Sample allocations for the heap profiler (`ebbmalloc::profiling`); also switched at run time by `profiling::set_active`.",
    },
    prof_sample_bytes: usize => ProfSampleBytes {
        env: "EBBMALLOC_PROF_SAMPLE",
        default: "524288",
        kind: Kind::Number { min: 1, max: 1 << 40 },
        meaning: "Mean bytes allocated between two samples of the heap profiler (each thread draws its intervals from an exponential distribution).",
    },
}

/// How a field of [`Settings`] is kept in its value slot (see [`get`]).
trait Value {
    fn to_raw(self) -> u64;
    fn from_raw(raw: u64) -> Self;
}

impl Value for bool {
    fn to_raw(self) -> u64 {
        self as u64
    }
    fn from_raw(raw: u64) -> bool {
        raw != 0
    }
}

impl Value for u32 {
    fn to_raw(self) -> u64 {
        self as u64
    }
    fn from_raw(raw: u64) -> u32 {
        raw as u32
    }
}

impl Value for usize {
    fn to_raw(self) -> u64 {
        self as u64
    }
    fn from_raw(raw: u64) -> usize {
        raw as usize
    }
}

impl Value for Purge {
    fn to_raw(self) -> u64 {
        (self == Purge::Free) as u64
    }
    fn from_raw(raw: u64) -> Purge {
        if raw == 1 {
            Purge::Free
        } else {
            Purge::DontNeed
        }
    }
}

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
        // Read before set-up (or set-up never ran).
        default_of(setting)
    } else {
        raw & !SET_BY_PROGRAM
    }
}

/// The value of a setting once it was read from the environment or set by the program;
/// `None` before (then [`get`] parses the default), for paths that leave that case to a
/// call out of line.
#[inline]
pub(crate) fn get_if_known(setting: Setting) -> Option<u64> {
    let raw = VALUES[setting as usize].load(Ordering::Relaxed);
    (raw != u64::MAX).then_some(raw & !SET_BY_PROGRAM)
}

/// The default value of a setting, parsed from the table: out of line, so that the callers
/// of [`get`] on the allocator's paths (a free without a cache) carry no call.
#[cold]
#[inline(never)]
fn default_of(setting: Setting) -> u64 {
    parse(
        &SETTINGS[setting as usize],
        SETTINGS[setting as usize].default.as_bytes(),
    )
    .unwrap_or(0)
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
    Purge::from_raw(get(Setting::Purge))
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
    fn table_entries_are_in_setting_order_and_distinct() {
        assert_eq!(
            SETTINGS[Setting::BackgroundThread as usize].name,
            "background_thread"
        );
        assert_eq!(SETTINGS[Setting::Verbose as usize].name, "verbose");
        assert_eq!(
            SETTINGS[Setting::ProfSampleBytes as usize].name,
            "prof_sample_bytes"
        );
        assert_eq!(SETTINGS.len(), Setting::ProfSampleBytes as usize + 1);
        for (index, info) in SETTINGS.iter().enumerate() {
            for other in &SETTINGS[index + 1..] {
                assert!(
                    info.name != other.name && info.env != other.env,
                    "{}",
                    info.name
                );
            }
        }
    }

    #[test]
    fn values_round_trip_through_their_slots() {
        for raw in [0, 1] {
            assert_eq!(bool::from_raw(raw).to_raw(), raw);
            assert_eq!(Purge::from_raw(raw).to_raw(), raw);
        }
        assert_eq!(Purge::from_raw(1), Purge::Free);
        assert_eq!(u32::from_raw(3_600_000).to_raw(), 3_600_000);
        assert_eq!(usize::from_raw(1 << 34).to_raw(), 1 << 34);
    }
}
