//! Plots as SVG, written by hand (no font or graphics library needed).

use crate::table::fmt_num;
use std::fmt::Write;

/// One value with its spread (e.g. median, min, max).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// One allocator's values: one per group (bar chart) or per x position (line chart).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub points: Vec<Option<Point>>,
}

const W: f64 = 960.0;
const H: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 90.0;

/// Escapes text for SVG.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step for an axis from 0 to `max`, about five ticks.
pub fn nice_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A tick label: up to four decimals, trailing zeros dropped (32, 2.5, 0.125, 0.0625).
pub fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A y axis: linear from 0, or logarithmic (base 2) between two powers of two.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Axis {
    /// From 0 to `top`, ticks every `step`.
    Linear { top: f64, step: f64 },
    /// From 2^`lo` to 2^`hi`, a tick at each power of two.
    Log2 { lo: i32, hi: i32 },
}

impl Axis {
    /// A linear axis from 0 that holds `max`.
    pub fn linear(max: f64) -> Axis {
        let step = nice_step(max);
        Axis::Linear {
            top: (max / step).ceil().max(1.0) * step,
            step,
        }
    }

    /// A log axis that holds `min..=max` and 1, at least 1/2 .. 2.
    pub fn log2(min: f64, max: f64) -> Axis {
        // Half a power of two of room at either end, for the labels past the bars.
        let lo = if min > 0.0 && min.is_finite() {
            (min.log2() - 0.5).floor() as i32
        } else {
            -1
        };
        let hi = if max > 0.0 && max.is_finite() {
            (max.log2() + 0.5).ceil() as i32
        } else {
            1
        };
        Axis::Log2 {
            lo: lo.clamp(-10, -1),
            hi: hi.clamp(1, 10),
        }
    }

    /// Where a value sits, from 0 (bottom) to 1 (top).
    fn frac(&self, v: f64) -> f64 {
        let f = match *self {
            Axis::Linear { top, .. } => v / top,
            Axis::Log2 { lo, hi } => {
                if v <= 0.0 {
                    0.0
                } else {
                    (v.log2() - lo as f64) / (hi - lo) as f64
                }
            }
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        match *self {
            Axis::Linear { top, step } => {
                let n = (top / step).round() as usize;
                (0..=n).map(|i| i as f64 * step).collect()
            }
            Axis::Log2 { lo, hi } => (lo..=hi).map(|k| 2f64.powi(k)).collect(),
        }
    }
}

/// The plot area's height.
const PLOT_H: f64 = H - TOP - BOTTOM;

fn y_of(v: f64, axis: &Axis) -> f64 {
    TOP + PLOT_H * (1.0 - axis.frac(v))
}

/// The frame: background, title, legend, y axis with ticks and grid.
fn frame(title: &str, y_label: &str, series: &[Series], axis: &Axis) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="17" text-anchor="middle" font-weight="bold">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Legend, in one row under the title.
    let mut x = LEFT;
    for se in series {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="36" width="14" height="14" fill="{}"/><text x="{}" y="48" font-size="13">{}</text>"#,
            se.color,
            x + 19.0,
            escape(&se.name)
        );
        x += 40.0 + 8.0 * se.name.len() as f64;
    }
    // Y axis, ticks and grid.
    for v in axis.ticks() {
        let y = y_of(v, axis);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/><line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        TOP + PLOT_H,
        TOP + PLOT_H,
        W - RIGHT,
        TOP + PLOT_H
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" font-size="13" text-anchor="middle">{}</text>"#,
        TOP + PLOT_H / 2.0,
        escape(y_label)
    );
    s
}

fn x_label(s: &mut String, x: f64, text: &str, rotate: bool) {
    let y = H - BOTTOM + 18.0;
    if rotate {
        let _ = writeln!(
            s,
            r#"<text transform="translate({x:.1},{y:.1}) rotate(-30)" font-size="12" text-anchor="end">{}</text>"#,
            escape(text)
        );
    } else {
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            escape(text)
        );
    }
}

fn whisker(s: &mut String, x: f64, p: &Point, axis: &Axis) {
    if p.high <= p.low {
        return;
    }
    let (y1, y2) = (y_of(p.low, axis), y_of(p.high, axis));
    let _ = writeln!(
        s,
        r#"<path d="M{:.1},{y1:.1}H{:.1}M{x:.1},{y1:.1}V{y2:.1}M{:.1},{y2:.1}H{:.1}" stroke="black" stroke-width="1" fill="none"/>"#,
        x - 3.0,
        x + 3.0,
        x - 3.0,
        x + 3.0
    );
}

fn points(series: &[Series]) -> impl Iterator<Item = &Point> {
    series.iter().flat_map(|s| s.points.iter().flatten())
}

fn max_of(series: &[Series]) -> f64 {
    points(series)
        .map(|p| p.high.max(p.value))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
}

fn min_of(series: &[Series]) -> f64 {
    points(series)
        .map(|p| p.low.min(p.value))
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(f64::INFINITY, f64::min)
}

/// Grouped bars of ratios: one group per figure, one bar per series, min–max whiskers, on a
/// log2 axis with the bars standing on 1 (up: more than the reference, down: less).
pub fn bar_chart(title: &str, y_label: &str, groups: &[String], series: &[Series]) -> String {
    let axis = Axis::log2(min_of(series), max_of(series));
    let mut s = frame(title, y_label, series, &axis);
    let plot_w = W - LEFT - RIGHT;
    let group_w = plot_w / groups.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    let rotate = groups.len() > 8 || groups.iter().any(|g| g.len() * 7 > group_w as usize);
    let base_y = y_of(1.0, &axis);
    for (g, name) in groups.iter().enumerate() {
        let gx = LEFT + group_w * g as f64 + group_w * 0.1;
        for (k, se) in series.iter().enumerate() {
            let Some(Some(p)) = se.points.get(g) else {
                continue;
            };
            if !(p.value > 0.0 && p.value.is_finite()) {
                continue;
            }
            let x = gx + bar_w * k as f64;
            let y = y_of(p.value, &axis);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                y.min(base_y),
                bar_w * 0.92,
                (y - base_y).abs().max(1.0),
                se.color,
                escape(&se.name),
                fmt_num(p.value)
            );
            let cx = x + bar_w * 0.46;
            whisker(&mut s, cx, p, &axis);
            // The value past the end of the bar (and its whisker), upright if it fits.
            let label = format!("{:.2}", p.value);
            let (end_y, up) = if p.value >= 1.0 {
                (y_of(p.high.max(p.value), &axis) - 4.0, true)
            } else {
                (y_of(p.low.min(p.value), &axis) + 4.0, false)
            };
            if bar_w >= 6.5 * label.len() as f64 {
                let _ = writeln!(
                    s,
                    r#"<text x="{cx:.1}" y="{:.1}" font-size="10" text-anchor="middle">{label}</text>"#,
                    if up { end_y } else { end_y + 8.0 }
                );
            } else {
                let _ = writeln!(
                    s,
                    r#"<text transform="translate({:.1},{end_y:.1}) rotate(-90)" font-size="10" text-anchor="{}">{label}</text>"#,
                    cx + 3.5,
                    if up { "start" } else { "end" }
                );
            }
        }
        x_label(&mut s, LEFT + group_w * (g as f64 + 0.5), name, rotate);
    }
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{base_y:.1}" x2="{}" y2="{base_y:.1}" stroke="black" stroke-dasharray="6,4"/>"#,
        W - RIGHT
    );
    s.push_str("</svg>\n");
    s
}

/// Lines over equally spaced x positions (e.g. RSS at successive times), with markers and
/// min–max whiskers.
pub fn line_chart(title: &str, y_label: &str, x_labels: &[String], series: &[Series]) -> String {
    let axis = Axis::linear(max_of(series) * 1.08);
    let mut s = frame(title, y_label, series, &axis);
    let plot_w = W - LEFT - RIGHT;
    let step = plot_w / x_labels.len().max(1) as f64;
    let x_at = |i: usize| LEFT + step * (i as f64 + 0.5);
    for (i, l) in x_labels.iter().enumerate() {
        x_label(&mut s, x_at(i), l, false);
    }
    for (k, se) in series.iter().enumerate() {
        // Series side by side by a few pixels, so equal values stay visible.
        let dx = (k as f64 - (series.len() as f64 - 1.0) / 2.0) * 4.0;
        let mut path = String::new();
        let mut pen_down = false;
        for (i, p) in se.points.iter().enumerate() {
            match p {
                Some(p) => {
                    let (x, y) = (x_at(i) + dx, y_of(p.value, &axis));
                    let _ = write!(path, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = writeln!(
            s,
            r#"<path d="{}" stroke="{}" stroke-width="2.5" fill="none"/>"#,
            path.trim_end(),
            se.color
        );
        for (i, p) in se.points.iter().enumerate() {
            if let Some(p) = p {
                let x = x_at(i) + dx;
                whisker(&mut s, x, p, &axis);
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{:.1}" r="4" fill="{}"><title>{} {}: {}</title></circle>"#,
                    y_of(p.value, &axis),
                    se.color,
                    escape(&se.name),
                    escape(&x_labels[i.min(x_labels.len().saturating_sub(1))]),
                    fmt_num(p.value)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series() -> Vec<Series> {
        vec![
            Series {
                name: "ebbmalloc".into(),
                color: "#1f77b4".into(),
                points: vec![
                    Some(Point {
                        value: 1.2,
                        low: 1.1,
                        high: 1.3,
                    }),
                    None,
                ],
            },
            Series {
                name: "mimalloc".into(),
                color: "#ff7f0e".into(),
                points: vec![
                    Some(Point {
                        value: 1.0,
                        low: 1.0,
                        high: 1.0,
                    }),
                    Some(Point {
                        value: 1.0,
                        low: 0.9,
                        high: 1.1,
                    }),
                ],
            },
        ]
    }

    #[test]
    fn ticks() {
        assert_eq!(fmt_tick(32.0), "32");
        assert_eq!(fmt_tick(0.0625), "0.0625");
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(0.30000000000000004), "0.3");
        assert_eq!(fmt_tick(0.0), "0");
    }

    #[test]
    fn steps() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(1.3), 0.5);
        assert_eq!(nice_step(600.0), 200.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(
            Axis::linear(9.0),
            Axis::Linear {
                top: 10.0,
                step: 2.0
            }
        );
        assert_eq!(Axis::log2(0.3, 20.0), Axis::Log2 { lo: -3, hi: 5 });
        assert_eq!(Axis::log2(0.26, 15.0), Axis::Log2 { lo: -3, hi: 5 });
        assert_eq!(Axis::log2(0.9, 1.1), Axis::Log2 { lo: -1, hi: 1 });
        let a = Axis::Log2 { lo: -1, hi: 1 };
        assert_eq!(a.ticks(), [0.5, 1.0, 2.0]);
        assert_eq!(a.frac(1.0), 0.5);
        assert_eq!(a.frac(0.0), 0.0);
    }

    #[test]
    fn charts_are_complete_documents() {
        let groups = vec!["16 B".to_string(), "a <b> & c".to_string()];
        for svg in [
            bar_chart("t", "ratio", &groups, &series()),
            line_chart("t", "MiB", &groups, &series()),
        ] {
            assert!(svg.starts_with("<svg "));
            assert!(svg.trim_end().ends_with("</svg>"));
            assert!(svg.contains("a &lt;b&gt; &amp; c"));
            assert!(!svg.contains("NaN"));
            assert!(svg.contains("ebbmalloc") && svg.contains("#ff7f0e"));
            assert_eq!(svg.matches("<svg").count(), 1);
        }
        let bars = bar_chart("t", "ratio", &groups, &series());
        assert_eq!(bars.matches("<rect x=").count(), 2 + 3); // legend (2) + bars (3)
        let lines = line_chart("t", "MiB", &groups, &series());
        assert_eq!(lines.matches("<circle").count(), 3);
    }
}
