//! The command line: options, their defaults, and the usage text (which lists the modes
//! from the table in `mode.rs`).

use crate::mode::{self, Mode, MODES};
use crate::rng;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
usage: stress [--mode NAME] [--seconds N] [--threads T] [--seed S] [--self-test-corrupt]

  --mode NAME           what to run and with which allocator settings (default: default)
  --seconds N           run for N seconds (default 60); a run that has not ended N + 30 s
                        after its start is reported as a hang
  --threads T           soak worker threads (default 8; mode idle-reclaim also runs T
                        sleepers, at least 2)
  --seed S              seed of the random choices (default: from the clock; printed)
  --self-test-corrupt   overwrite one byte of a live block after 1 s: the run must fail

Modes (a mode with settings runs the program again with them in its environment):";

const USAGE_END: &str = "\
Exits 0 when no violation was found, 1 on a violation (reported on stderr with the seed),
2 on bad arguments.";

pub struct Options {
    pub mode: &'static Mode,
    pub seconds: u64,
    pub threads: usize,
    pub seed: u64,
    pub self_test_corrupt: bool,
}

/// Width of the usage text.
const WIDTH: usize = 90;
/// Where a mode's description starts.
const INDENT: usize = 18;

/// The usage text.
pub fn usage() -> String {
    let mut text = format!("{USAGE}\n");
    for mode in &MODES {
        let about = format!("{} ({})", mode.about, mode::describe(mode));
        let mut line = format!("  {:<15}", mode.name);
        for word in about.split_whitespace() {
            if line.len() + 1 + word.len() > WIDTH {
                text += &line;
                text += "\n";
                line = " ".repeat(INDENT - 1);
            }
            line += " ";
            line += word;
        }
        text += &line;
        text += "\n";
    }
    text + "\n" + USAGE_END
}

pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options {
        mode: &MODES[0],
        seconds: 60,
        threads: 8,
        seed: seed_from_clock(),
        self_test_corrupt: false,
    };
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--mode" => {
                let wanted = value()?;
                opts.mode = mode::find(&wanted).ok_or_else(|| format!("unknown mode {wanted}"))?;
            }
            "--seconds" => opts.seconds = number(&name, &value()?)?,
            "--threads" => {
                opts.threads = number(&name, &value()?)? as usize;
                if opts.threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            "--seed" => opts.seed = number(&name, &value()?)?,
            "--self-test-corrupt" => opts.self_test_corrupt = true,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {name}")),
        }
    }
    Ok(opts)
}

/// A decimal or `0x` hexadecimal number.
fn number(name: &str, text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{name}: not a number: {text}"))
}

fn seed_from_clock() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rng::mix(now.as_nanos() as u64 ^ u64::from(std::process::id()))
}
