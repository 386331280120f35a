//! What machine the figures come from: cores, CPU, kernel, toolchain, libraries, date.

use std::path::Path;
use std::process::Command;

/// The machine's description as (label, value) pairs.
pub fn describe(workspace: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |k: &str, v: String| out.push((k.to_string(), v));
    add("date (UTC)", utc_now());
    add(
        "nproc",
        std::thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into()),
    );
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    add(
        "CPU",
        cpu_model(&cpuinfo).unwrap_or_else(|| "?".to_string()),
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    add(
        "memory",
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "?".into()),
    );
    add(
        "kernel",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| command_line("uname", &["-r"])),
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    add("rustc", command_line(&rustc, &["--version"]));
    add("glibc", command_line("getconf", &["GNU_LIBC_VERSION"]));
    let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).unwrap_or_default();
    for (label, krate) in [
        ("tikv-jemallocator", "tikv-jemallocator"),
        ("jemalloc (tikv-jemalloc-sys)", "tikv-jemalloc-sys"),
        ("mimalloc", "mimalloc"),
        ("mimalloc (libmimalloc-sys)", "libmimalloc-sys"),
        ("tokio", "tokio"),
        ("hyper", "hyper"),
    ] {
        add(
            label,
            lock_version(&lock, krate).unwrap_or_else(|| "?".into()),
        );
    }
    add(
        "ebbmalloc commit",
        command_line(
            "git",
            &[
                "-C",
                &workspace.to_string_lossy(),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
    );
    out
}

/// The first line a command prints, or `?`.
fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// The `model name` of `/proc/cpuinfo`.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// The version of package `name` in a `Cargo.lock`.
pub fn lock_version(lock: &str, name: &str) -> Option<String> {
    let want = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == want {
            let v = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(v.trim_end_matches('"').to_string());
        }
    }
    None
}

/// Now, as `YYYY-MM-DD HH:MM:SS`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc(secs)
}

/// Seconds since the epoch as a UTC date and time (days to civil date: H. Hinnant).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(4_107_542_399), "2100-02-28 23:59:59");
    }

    #[test]
    fn cpu_and_lock() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("nothing"), None);
        let lock = "[[package]]\nname = \"tokio\"\nversion = \"1.48.0\"\nsource = \"x\"\n";
        assert_eq!(lock_version(lock, "tokio").as_deref(), Some("1.48.0"));
        assert_eq!(lock_version(lock, "hyper"), None);
    }
}
