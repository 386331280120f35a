//! Collecting the figures of the rounds and rendering them as markdown.

use crate::stats::{geomean, ratio, Summary};
use versus_workloads::{Better, Kind, Report};

/// One figure of a workload: its summary over the rounds for each allocator.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub better: Better,
    pub kind: Kind,
    /// One per allocator, in the order of `allocs`; `None` where no round succeeded.
    pub cells: Vec<Option<Summary>>,
}

impl Row {
    /// The summary of `alloc`'s figure.
    pub fn get<'a>(&'a self, allocs: &[String], alloc: &str) -> Option<&'a Summary> {
        let i = allocs.iter().position(|a| a == alloc)?;
        self.cells.get(i)?.as_ref()
    }
}

/// The rows of one workload from its successful runs, as (allocator, report) pairs; the
/// figures keep the order in which the worker reports them.
pub fn rows(reports: &[(String, Report)], allocs: &[String]) -> Vec<Row> {
    let mut names: Vec<(String, String, Better, Kind)> = Vec::new();
    for (_, r) in reports {
        for m in &r.metrics {
            if !names.iter().any(|n| n.0 == m.name) {
                names.push((m.name.clone(), m.unit.clone(), m.better, m.kind));
            }
        }
    }
    names
        .into_iter()
        .map(|(name, unit, better, kind)| {
            let cells = allocs
                .iter()
                .map(|a| {
                    let values: Vec<f64> = reports
                        .iter()
                        .filter(|(alloc, _)| alloc == a)
                        .flat_map(|(_, r)| r.metrics.iter().filter(|m| m.name == name))
                        .map(|m| m.value)
                        .collect();
                    Summary::of(&values)
                })
                .collect();
            Row {
                name,
                unit,
                better,
                kind,
                cells,
            }
        })
        .collect()
}

/// A number with three significant digits or more, without exponent: 263, 31.2, 4.07, 0.0866.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 6) as usize;
    format!("{v:.decimals$}")
}

/// A ratio such as `1.31×`; two significant digits below 0.1 (`0.0032×`).
pub fn fmt_ratio(r: f64) -> String {
    if r.abs() >= 0.1 || r == 0.0 || !r.is_finite() {
        format!("{r:.2}×")
    } else {
        let decimals = (1 - r.abs().log10().floor() as i32).clamp(2, 8) as usize;
        format!("{r:.decimals$}×")
    }
}

/// One cell: `median (min–max) ratio×`, the ratio to the baseline's median when known.
pub fn cell(s: Option<&Summary>, baseline: Option<&Summary>) -> String {
    let Some(s) = s else {
        return "failed".to_string();
    };
    let mut out = fmt_num(s.median);
    if s.n > 1 {
        out.push_str(&format!(" ({}–{})", fmt_num(s.min), fmt_num(s.max)));
    }
    if let Some(r) = baseline.and_then(|b| ratio(s.median, b.median)) {
        out.push(' ');
        out.push_str(&fmt_ratio(r));
    }
    out
}

fn arrow(b: Better) -> &'static str {
    match b {
        Better::Higher => "↑",
        Better::Lower => "↓",
    }
}

/// The markdown table of one workload.
pub fn markdown(rows: &[Row], allocs: &[String], baseline: &str) -> String {
    let mut s = String::from("| figure | unit |");
    for a in allocs {
        s.push_str(&format!(" {a} |"));
    }
    s.push_str("\n|---|---|");
    for _ in allocs {
        s.push_str("---:|");
    }
    s.push('\n');
    for row in rows {
        let base = row.get(allocs, baseline);
        s.push_str(&format!(
            "| {} {} | {} |",
            row.name,
            arrow(row.better),
            row.unit
        ));
        for c in &row.cells {
            s.push_str(&format!(" {} |", cell(c.as_ref(), base)));
        }
        s.push('\n');
    }
    s
}

/// The kinds of figure the overall summary averages, with their labels.
const SUMMARY_KINDS: &[(&str, &[Kind])] = &[
    ("throughput ↑", &[Kind::Throughput]),
    ("latency ↓", &[Kind::Latency]),
    ("RSS ↓", &[Kind::Rss, Kind::RssTime]),
];

/// The overall summary: per allocator, the geometric mean of its ratios to the baseline,
/// over every figure of each kind in every workload.
pub fn summary_markdown(
    workloads: &[(String, Vec<Row>)],
    allocs: &[String],
    baseline: &str,
) -> String {
    let mut s = String::from("| geometric mean of ratios to ");
    s.push_str(baseline);
    s.push_str(" | figures |");
    for a in allocs {
        s.push_str(&format!(" {a} |"));
    }
    s.push_str("\n|---|---:|");
    for _ in allocs {
        s.push_str("---:|");
    }
    s.push('\n');
    for (label, kinds) in SUMMARY_KINDS {
        let rows: Vec<&Row> = workloads
            .iter()
            .flat_map(|(_, rows)| rows.iter())
            .filter(|r| kinds.contains(&r.kind))
            .collect();
        if rows.is_empty() {
            continue;
        }
        s.push_str(&format!("| {label} | {} |", rows.len()));
        for a in allocs {
            let ratios: Vec<f64> = rows
                .iter()
                .filter_map(|r| ratio(r.get(allocs, a)?.median, r.get(allocs, baseline)?.median))
                .collect();
            match geomean(&ratios) {
                Some(g) => s.push_str(&format!(" {} |", fmt_ratio(g))),
                None => s.push_str(" – |"),
            }
        }
        s.push('\n');
    }
    s
}

/// The figures where `subject` is behind the best of the others by more than `threshold`
/// (relative), ignoring RSS differences under 1 MiB and the per-thread figures (each
/// restates an RSS figure of its workload, which is checked with the 1 MiB floor); worst
/// first.
pub fn behind(
    workloads: &[(String, Vec<Row>)],
    allocs: &[String],
    subject: &str,
    threshold: f64,
) -> Vec<String> {
    let mut found: Vec<(f64, String)> = Vec::new();
    for (workload, rows) in workloads {
        for row in rows.iter().filter(|r| r.kind != Kind::RssPerThread) {
            let Some(me) = row.get(allocs, subject) else {
                continue;
            };
            let best = allocs
                .iter()
                .filter(|a| *a != subject)
                .filter_map(|a| Some((a, row.get(allocs, a)?.median)))
                .reduce(|x, y| {
                    let y_better = match row.better {
                        Better::Higher => y.1 > x.1,
                        Better::Lower => y.1 < x.1,
                    };
                    if y_better {
                        y
                    } else {
                        x
                    }
                });
            let Some((best_alloc, best)) = best else {
                continue;
            };
            let gap = match row.better {
                Better::Higher if me.median > 0.0 => best / me.median - 1.0,
                Better::Lower if best > 0.0 => me.median / best - 1.0,
                _ => continue,
            };
            let small_rss = row.unit == "MiB" && (me.median - best).abs() < 1.0;
            if gap > threshold && !small_rss {
                found.push((
                    gap,
                    format!(
                        "{workload} / {}: {subject} {} {} vs {best_alloc} {} ({:.0}% behind)",
                        row.name,
                        fmt_num(me.median),
                        row.unit,
                        fmt_num(best),
                        gap * 100.0
                    ),
                ));
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    found.into_iter().map(|f| f.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use versus_workloads::Metric;

    fn report(alloc: &str, ops: f64, rss: f64) -> (String, Report) {
        (
            alloc.to_string(),
            Report {
                alloc: alloc.to_string(),
                workload: "w".into(),
                quick: false,
                seed: 1,
                elapsed_s: 1.0,
                metrics: vec![
                    Metric::new("ops", "Mops/s", ops, Better::Higher, Kind::Throughput),
                    Metric::new("rss", "MiB", rss, Better::Lower, Kind::RssTime),
                ],
            },
        )
    }

    fn allocs() -> Vec<String> {
        vec!["ebbmalloc".into(), "mimalloc".into()]
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(263.4), "263");
        assert_eq!(fmt_num(31.24), "31.2");
        assert_eq!(fmt_num(4.071), "4.07");
        assert_eq!(fmt_num(0.08661), "0.0866");
        assert_eq!(fmt_num(123456.7), "123457");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(-2.5), "-2.50");
        assert_eq!(fmt_ratio(1.3149), "1.31×");
        assert_eq!(fmt_ratio(0.1), "0.10×");
        assert_eq!(fmt_ratio(0.0873), "0.087×");
        assert_eq!(fmt_ratio(0.003198), "0.0032×");
        assert_eq!(fmt_ratio(0.0), "0.00×");
    }

    #[test]
    fn rows_and_table() {
        let reports = vec![
            report("ebbmalloc", 10.0, 50.0),
            report("mimalloc", 5.0, 100.0),
            report("ebbmalloc", 12.0, 50.0),
            report("mimalloc", 5.0, 100.0),
            report("ebbmalloc", 11.0, 50.0),
            report("mimalloc", 6.0, 100.0),
        ];
        let rows = rows(&reports, &allocs());
        assert_eq!(rows.len(), 2);
        let ebb = rows[0].get(&allocs(), "ebbmalloc").unwrap();
        assert_eq!((ebb.median, ebb.min, ebb.max), (11.0, 10.0, 12.0));
        let md = markdown(&rows, &allocs(), "mimalloc");
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "| figure | unit | ebbmalloc | mimalloc |");
        assert_eq!(lines[1], "|---|---|---:|---:|");
        assert_eq!(
            lines[2],
            "| ops ↑ | Mops/s | 11.0 (10.0–12.0) 2.20× | 5.00 (5.00–6.00) 1.00× |"
        );
        assert_eq!(
            lines[3],
            "| rss ↓ | MiB | 50.0 (50.0–50.0) 0.50× | 100 (100–100) 1.00× |"
        );

        let all = vec![("w".to_string(), rows)];
        let summary = summary_markdown(&all, &allocs(), "mimalloc");
        assert!(
            summary.contains("| throughput ↑ | 1 | 2.20× | 1.00× |"),
            "{summary}"
        );
        assert!(
            summary.contains("| RSS ↓ | 1 | 0.50× | 1.00× |"),
            "{summary}"
        );
        assert!(!summary.contains("latency"));
        assert!(behind(&all, &allocs(), "ebbmalloc", 0.05).is_empty());
        let b = behind(&all, &allocs(), "mimalloc", 0.05);
        assert_eq!(b.len(), 2);
        assert!(
            b[0].starts_with("w / ops: mimalloc 5.00 Mops/s vs ebbmalloc 11.0"),
            "{b:?}"
        );
    }

    #[test]
    fn per_thread_figures_are_tabled_but_not_summed_or_listed_as_behind() {
        let with_per_thread = |alloc: &str, kib: f64| {
            let (alloc, mut r) = report(alloc, 1.0, 10.0);
            r.metrics.push(Metric::new(
                "per parked thread",
                "KiB",
                kib,
                Better::Lower,
                Kind::RssPerThread,
            ));
            (alloc, r)
        };
        let reports = vec![
            with_per_thread("ebbmalloc", 900.0),
            with_per_thread("mimalloc", 300.0),
        ];
        let rows = rows(&reports, &allocs());
        let md = markdown(&rows, &allocs(), "mimalloc");
        assert!(
            md.contains("| per parked thread ↓ | KiB | 900 3.00× | 300 1.00× |"),
            "{md}"
        );
        let all = vec![("w".to_string(), rows)];
        let summary = summary_markdown(&all, &allocs(), "mimalloc");
        assert!(
            summary.contains("| RSS ↓ | 1 | 1.00× | 1.00× |"),
            "{summary}"
        );
        assert!(behind(&all, &allocs(), "ebbmalloc", 0.05).is_empty());
    }

    #[test]
    fn failed_and_single_round_cells() {
        let rows = rows(&[report("ebbmalloc", 3.0, 1.0)], &allocs());
        let md = markdown(&rows, &allocs(), "mimalloc");
        assert!(md.contains("| ops ↑ | Mops/s | 3.00 | failed |"), "{md}");
    }
}
