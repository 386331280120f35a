//! Medians and spreads of the rounds.

/// The summary of one figure over the rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles (linear interpolation between the sorted values).
    pub q1: f64,
    pub q3: f64,
}

impl Summary {
    /// The summary of `values` (non-finite values are left out); `None` if none are left.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Summary {
            n: v.len(),
            median: quantile_sorted(&v, 0.5),
            min: v[0],
            max: v[v.len() - 1],
            q1: quantile_sorted(&v, 0.25),
            q3: quantile_sorted(&v, 0.75),
        })
    }

    /// The spread (max - min) relative to the median, e.g. 0.05 for 5%.
    pub fn relative_spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median.abs()
        }
    }
}

/// The `q` quantile (0..=1) of sorted values, interpolating linearly (so the median of an
/// even count is the mean of the middle two).
pub fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    debug_assert!(!v.is_empty());
    let pos = (v.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// `value / baseline`, if both are usable.
pub fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline != 0.0 && baseline.is_finite() && value.is_finite()).then(|| value / baseline)
}

/// The geometric mean of positive values (`None` if there are none).
pub fn geomean(values: &[f64]) -> Option<f64> {
    let v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert_eq!((s.q1, s.q3), (1.5, 2.5));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        assert_eq!((s.q1, s.q3), (1.75, 3.25));
        let s = Summary::of(&[7.0]).unwrap();
        assert_eq!(
            (s.median, s.min, s.max, s.q1, s.q3),
            (7.0, 7.0, 7.0, 7.0, 7.0)
        );
        assert_eq!(s.relative_spread(), 0.0);
    }

    #[test]
    fn bad_values_are_left_out() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[f64::NAN]).is_none());
        let s = Summary::of(&[f64::NAN, 10.0, f64::INFINITY, 20.0]).unwrap();
        assert_eq!((s.n, s.median), (2, 15.0));
        assert!((s.relative_spread() - 10.0 / 15.0).abs() < 1e-12);
    }

    #[test]
    fn ratios_and_geomeans() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert!((geomean(&[2.0, 8.0]).unwrap() - 4.0).abs() < 1e-12);
        assert_eq!(geomean(&[0.0, -1.0]), None);
    }
}
