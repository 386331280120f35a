//! Resident set size from the OS side: `/proc/self/status`.

/// `VmRSS` and `VmHWM` (peak) in kB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rss {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` of this process (zeros if `/proc` cannot be read).
pub fn read() -> Rss {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| parse_status(&s))
        .unwrap_or_default()
}

/// The current resident set in kB.
pub fn current_kib() -> u64 {
    read().rss_kib
}

/// The peak resident set in kB.
pub fn peak_kib() -> u64 {
    read().hwm_kib
}

/// Resets the peak (`VmHWM`) to the current resident set, by writing 5 to
/// `/proc/self/clear_refs` (Linux 4.0 and later). Returns whether it worked.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Parses the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Rss {
    let mut rss = Rss::default();
    for line in text.lines() {
        let field = |prefix: &str| -> Option<u64> {
            line.strip_prefix(prefix)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        if let Some(v) = field("VmRSS:") {
            rss.rss_kib = v;
        } else if let Some(v) = field("VmHWM:") {
            rss.hwm_kib = v;
        }
    }
    rss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_text() {
        let text = "Name:\tworker\nVmPeak:\t  200000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\nThreads:\t3\n";
        assert_eq!(
            parse_status(text),
            Rss {
                rss_kib: 40960,
                hwm_kib: 51234
            }
        );
        assert_eq!(parse_status("garbage"), Rss::default());
    }

    #[test]
    fn reads_own_status() {
        let r = read();
        assert!(r.rss_kib > 0);
        assert!(r.hwm_kib >= r.rss_kib);
    }
}
