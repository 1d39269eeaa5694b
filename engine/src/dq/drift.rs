//! Distribution drift: histograms built while streaming, and the statistics that compare them.
//!
//! Both sides of a comparison are histograms over the same bins, computed inside the engine
//! batch by batch (never by collecting a column):
//!
//! - **Numeric columns**: `bins` equal-width bins spanning the reference's `[min, max]`. A
//!   current value outside that range counts in the first or last bin (as if the outer edges
//!   were -inf and +inf). A constant reference (min = max) gets three bins: below, equal, above.
//!   NaN and NULL are not counted.
//! - **Categorical columns** (anything not numeric, compared as text): one bin per distinct
//!   value of either side. Categories only the current data has are *unseen* categories: they
//!   are compared against a reference share of zero, smoothed as below.
//!
//! Empty bins: PSI replaces a zero share by 0.0001 on either side (as Evidently does);
//! chi-squared gives zero-share reference categories 0.0001 and renormalises the expected
//! shares; Jensen–Shannon and Wasserstein need no smoothing (0·ln 0 = 0).
//!
//! Statistics on the two count vectors `r` (reference) and `c` (current):
//! - PSI = Σ (q − p) ln(q / p) with p = r/Σr and q = c/Σc;
//! - KS: D = max |P(≤ bin) − Q(≤ bin)| over bins; p-value from the asymptotic Kolmogorov
//!   distribution at √(n·m/(n+m))·D (scipy's `kstwobign.sf`). Evaluated at bin edges, D is a
//!   lower bound of the exact two-sample statistic (equal when every distinct value has its own
//!   bin);
//! - Jensen–Shannon distance (natural log, scipy's `jensenshannon`);
//! - normed Wasserstein: scipy's `wasserstein_distance` over bin centres weighted by the counts,
//!   divided by max(reference standard deviation, 0.001) (Evidently's normalisation);
//! - chi-squared: Pearson's statistic of `c` against the expected `Σc · p'` with K − 1 degrees
//!   of freedom, p-value from the χ² survival function (scipy's `chisquare`).

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::functions::math::expr_fn::{floor, isnan};
use datafusion::logical_expr::{Expr, cast, lit, when};
use lakeforge_planner::DriftMethod;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Share given to an empty bin by PSI and chi-squared.
pub const EMPTY_BIN_SHARE: f64 = 0.0001;

/// Most distinct categories a categorical drift histogram keeps; beyond it values are counted
/// in one overflow bucket, so memory stays bounded on high-cardinality columns.
pub const MAX_CATEGORIES: usize = 10_000;

/// The reference sample size up to which the default methods are the tests (KS, chi-squared)
/// and above which they are distances (Wasserstein, Jensen–Shannon), as in Evidently.
pub const SMALL_SAMPLE: u64 = 1000;

/// Equal-width bins over a reference range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericBins {
    #[serde(with = "crate::dq::float_bits")]
    lower: f64,
    #[serde(with = "crate::dq::float_bits")]
    width: f64,
    bins: usize,
}

impl NumericBins {
    /// `bins` bins over `[min, max]`; three bins (below, equal, above) when `min == max`.
    pub fn new(min: f64, max: f64, bins: usize) -> NumericBins {
        if max > min {
            NumericBins {
                lower: min,
                width: (max - min) / bins as f64,
                bins,
            }
        } else {
            NumericBins {
                lower: min,
                width: 0.0,
                bins: 3,
            }
        }
    }

    /// How many bins there are.
    pub fn len(&self) -> usize {
        self.bins
    }

    /// Whether there are no bins (never: at least two).
    pub fn is_empty(&self) -> bool {
        self.bins == 0
    }

    /// The bin of `value`; `None` for NaN.
    pub fn bin(&self, value: f64) -> Option<usize> {
        if value.is_nan() {
            return None;
        }
        if self.width == 0.0 {
            return Some(match value.partial_cmp(&self.lower) {
                Some(std::cmp::Ordering::Less) => 0,
                Some(std::cmp::Ordering::Equal) => 1,
                _ => 2,
            });
        }
        // The bin is `floor(position)` clamped to the bins; floor needs no call of its own, as
        // `floor(p) <= 0` exactly when `p < 1`, `floor(p) >= last` when `p >= last` (an
        // integer), and truncation is floor for the positive positions in between.
        let position = (value - self.lower) / self.width;
        let last = self.bins - 1;
        Some(if position < 1.0 {
            0
        } else if position >= last as f64 {
            last
        } else {
            position as usize
        })
    }

    /// [`NumericBins::bin`] as an expression over a `Float64` value (NULL for NULL and NaN), so
    /// a reference histogram is an aggregate computed where the data is, never the column
    /// collected. It divides like [`NumericBins::bin`] and takes the floor of the same
    /// quotient, so both give the same bin.
    pub fn bin_expr(&self, value: Expr) -> datafusion::error::Result<Expr> {
        let index = if self.width == 0.0 {
            when(value.clone().lt(lit(self.lower)), lit(0i64))
                .when(value.clone().eq(lit(self.lower)), lit(1i64))
                .otherwise(lit(2i64))?
        } else {
            let last = self.bins.saturating_sub(1);
            let position = floor((value.clone() - lit(self.lower)) / lit(self.width));
            when(position.clone().lt_eq(lit(0.0)), lit(0i64))
                .when(position.clone().gt_eq(lit(last as f64)), lit(last as i64))
                .otherwise(cast(position, DataType::Int64))?
        };
        when(
            value.clone().is_null().or(isnan(value)),
            lit(ScalarValue::Int64(None)),
        )
        .otherwise(index)
    }

    /// Each bin's centre (for the constant case: value − 1, value, value + 1).
    pub fn centers(&self) -> Vec<f64> {
        if self.width == 0.0 {
            return vec![self.lower - 1.0, self.lower, self.lower + 1.0];
        }
        (0..self.bins)
            .map(|i| self.lower + (i as f64 + 0.5) * self.width)
            .collect()
    }
}

/// A histogram being filled from batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Histogram {
    /// Counts per numeric bin.
    Numeric {
        /// The bins.
        bins: NumericBins,
        /// One count per bin.
        counts: Vec<u64>,
    },
    /// Counts per category.
    Categorical {
        /// Count per distinct value.
        counts: HashMap<String, u64>,
        /// Values seen after [`MAX_CATEGORIES`] distinct ones.
        overflow: u64,
    },
}

/// The key of the categorical overflow bucket.
const OVERFLOW_CATEGORY: &str = "\u{0}__lakeforge_other__";

impl Histogram {
    /// An empty numeric histogram over `bins`.
    pub fn numeric(bins: NumericBins) -> Histogram {
        let counts = vec![0; bins.len()];
        Histogram::Numeric { bins, counts }
    }

    /// A numeric histogram from per-bin counts (bins without a count are empty); a bin index
    /// out of range is an error.
    pub fn numeric_from_counts(
        bins: NumericBins,
        counted: impl IntoIterator<Item = (usize, u64)>,
    ) -> Result<Histogram, String> {
        let mut counts = vec![0; bins.len()];
        for (bin, count) in counted {
            *counts
                .get_mut(bin)
                .ok_or_else(|| format!("bin {bin} out of range"))? += count;
        }
        Ok(Histogram::Numeric { bins, counts })
    }

    /// A categorical histogram from the counts of (at most [`MAX_CATEGORIES`]) categories and
    /// the number of all values: the rest are the overflow.
    pub fn categorical_from_counts(categories: Vec<(String, u64)>, values: u64) -> Histogram {
        let counts: HashMap<String, u64> = categories.into_iter().take(MAX_CATEGORIES).collect();
        let kept: u64 = counts.values().sum();
        Histogram::Categorical {
            counts,
            overflow: values.saturating_sub(kept),
        }
    }

    /// An empty categorical histogram.
    pub fn categorical() -> Histogram {
        Histogram::Categorical {
            counts: HashMap::new(),
            overflow: 0,
        }
    }

    /// Counts the non-null values of `array` (`Float64` for numeric, `Utf8` for categorical).
    pub fn observe(&mut self, array: &dyn arrow::array::Array) {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::Float64Type;
        match self {
            Histogram::Numeric { bins, counts } => {
                if let Some(values) = array.as_primitive_opt::<Float64Type>() {
                    let mut count = |value: f64| {
                        if let Some(bin) = bins.bin(value) {
                            counts[bin] += 1;
                        }
                    };
                    match values.nulls().filter(|nulls| nulls.null_count() > 0) {
                        None => values.values().iter().for_each(|&value| count(value)),
                        Some(_) => values.iter().flatten().for_each(count),
                    }
                }
            }
            Histogram::Categorical { counts, overflow } => {
                if let Some(values) = array.as_string_opt::<i32>() {
                    for value in values.iter().flatten() {
                        if let Some(count) = counts.get_mut(value) {
                            *count += 1;
                        } else if counts.len() < MAX_CATEGORIES {
                            counts.insert(value.to_string(), 1);
                        } else {
                            *overflow += 1;
                        }
                    }
                }
            }
        }
    }

    /// Adds another partition's counts (same bins).
    pub fn merge(&mut self, other: Histogram) {
        match (self, other) {
            (Histogram::Numeric { counts, .. }, Histogram::Numeric { counts: more, .. }) => {
                for (count, extra) in counts.iter_mut().zip(more) {
                    *count += extra;
                }
            }
            (
                Histogram::Categorical { counts, overflow },
                Histogram::Categorical {
                    counts: more,
                    overflow: more_overflow,
                },
            ) => {
                *overflow += more_overflow;
                for (value, extra) in more {
                    if let Some(count) = counts.get_mut(&value) {
                        *count += extra;
                    } else if counts.len() < MAX_CATEGORIES {
                        counts.insert(value, extra);
                    } else {
                        *overflow += extra;
                    }
                }
            }
            _ => {}
        }
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        match self {
            Histogram::Numeric { counts, .. } => counts.iter().sum(),
            Histogram::Categorical { counts, overflow } => counts.values().sum::<u64>() + overflow,
        }
    }
}

/// Aligns a reference and a current histogram: the count vectors over the same bins, and for
/// numeric ones the bin centres.
pub fn align(reference: &Histogram, current: &Histogram) -> (Vec<u64>, Vec<u64>, Option<Vec<f64>>) {
    match (reference, current) {
        (Histogram::Numeric { bins, counts: r }, Histogram::Numeric { counts: c, .. }) => {
            (r.clone(), c.clone(), Some(bins.centers()))
        }
        (
            Histogram::Categorical {
                counts: r,
                overflow: r_over,
            },
            Histogram::Categorical {
                counts: c,
                overflow: c_over,
            },
        ) => {
            let mut union: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for (value, count) in r {
                union.entry(value).or_default().0 += count;
            }
            for (value, count) in c {
                union.entry(value).or_default().1 += count;
            }
            if *r_over > 0 || *c_over > 0 {
                let bucket = union.entry(OVERFLOW_CATEGORY).or_default();
                bucket.0 += r_over;
                bucket.1 += c_over;
            }
            let (r, c) = union.values().copied().unzip();
            (r, c, None)
        }
        _ => (Vec::new(), Vec::new(), None),
    }
}

/// The result of one drift comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftOutcome {
    /// The method used.
    pub method: DriftMethod,
    /// The statistic (a distance, or the test statistic for KS and chi-squared).
    pub statistic: f64,
    /// The p-value, for KS and chi-squared.
    pub p_value: Option<f64>,
    /// The threshold applied.
    pub threshold: f64,
    /// Whether drift was detected.
    pub drifted: bool,
}

impl DriftOutcome {
    /// The value reported as `observed`: the p-value of tests, the distance otherwise.
    pub fn observed(&self) -> f64 {
        self.p_value.unwrap_or(self.statistic)
    }
}

/// The default method: tests for small references, distances for large ones.
pub fn default_method(categorical: bool, reference_size: u64) -> DriftMethod {
    match (categorical, reference_size <= SMALL_SAMPLE) {
        (false, true) => DriftMethod::Ks,
        (false, false) => DriftMethod::Wasserstein,
        (true, true) => DriftMethod::ChiSquared,
        (true, false) => DriftMethod::JensenShannon,
    }
}

/// Compares two aligned count vectors with `method`.
pub fn compare(
    method: DriftMethod,
    threshold: f64,
    reference: &[u64],
    current: &[u64],
    centers: Option<&[f64]>,
    reference_std: f64,
) -> DriftOutcome {
    let (statistic, p_value) = match method {
        DriftMethod::Psi => (psi(reference, current), None),
        DriftMethod::JensenShannon => (jensen_shannon(reference, current), None),
        DriftMethod::Ks => {
            let (d, p) = kolmogorov_smirnov(reference, current);
            (d, Some(p))
        }
        DriftMethod::Wasserstein => (
            wasserstein(reference, current, centers.unwrap_or_default()) / reference_std.max(0.001),
            None,
        ),
        DriftMethod::ChiSquared => {
            let (x2, p) = chi_squared(reference, current);
            (x2, Some(p))
        }
    };
    let drifted = match p_value {
        Some(p) => p < threshold,
        None => statistic >= threshold,
    };
    DriftOutcome {
        method,
        statistic,
        p_value,
        threshold,
        drifted,
    }
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|&c| c as f64 / total as f64).collect()
}

/// Population stability index, with empty shares replaced by [`EMPTY_BIN_SHARE`].
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let smooth = |s: f64| if s == 0.0 { EMPTY_BIN_SHARE } else { s };
    shares(reference)
        .into_iter()
        .zip(shares(current))
        .map(|(p, q)| {
            let (p, q) = (smooth(p), smooth(q));
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// Jensen–Shannon distance with natural logarithms (scipy's `jensenshannon` default).
pub fn jensen_shannon(reference: &[u64], current: &[u64]) -> f64 {
    let p = shares(reference);
    let q = shares(current);
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(x, _)| **x > 0.0)
            .map(|(x, y)| x * (x / y).ln())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    ((kl(&p, &m) + kl(&q, &m)) / 2.0).max(0.0).sqrt()
}

/// The KS statistic over bins and its asymptotic p-value.
pub fn kolmogorov_smirnov(reference: &[u64], current: &[u64]) -> (f64, f64) {
    let n: u64 = reference.iter().sum();
    let m: u64 = current.iter().sum();
    if n == 0 || m == 0 {
        return (0.0, 1.0);
    }
    let (mut cdf_r, mut cdf_c, mut d) = (0u64, 0u64, 0.0f64);
    for (r, c) in reference.iter().zip(current) {
        cdf_r += r;
        cdf_c += c;
        d = d.max((cdf_r as f64 / n as f64 - cdf_c as f64 / m as f64).abs());
    }
    let effective = (n as f64 * m as f64) / (n as f64 + m as f64);
    (d, kolmogorov_survival(effective.sqrt() * d))
}

/// The survival function of the Kolmogorov distribution, `P(K > x)` (scipy's
/// `special.kolmogorov`): the alternating series for large `x`, the Jacobi theta form for
/// small `x`, where each converges in a few terms.
pub fn kolmogorov_survival(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // 1 - sqrt(2π)/x Σ_{k≥1} exp(-(2k-1)²π²/(8x²))
        let factor = -std::f64::consts::PI.powi(2) / (8.0 * x * x);
        let sum: f64 = (1..=20)
            .map(|k| {
                let odd = (2 * k - 1) as f64;
                (odd * odd * factor).exp()
            })
            .sum();
        return (1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * sum).clamp(0.0, 1.0);
    }
    // 2 Σ_{k≥1} (-1)^(k-1) exp(-2k²x²)
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * x * x).exp();
        sum += if k as u64 % 2 == 1 { term } else { -term };
        if term < 1e-300 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// The 1-Wasserstein distance between two weighted samples on the same sorted points.
pub fn wasserstein(reference: &[u64], current: &[u64], points: &[f64]) -> f64 {
    let p = shares(reference);
    let q = shares(current);
    let (mut cdf_p, mut cdf_q, mut distance) = (0.0, 0.0, 0.0);
    for i in 0..points.len().saturating_sub(1) {
        cdf_p += p[i];
        cdf_q += q[i];
        distance += (cdf_p - cdf_q).abs() * (points[i + 1] - points[i]);
    }
    distance
}

/// Pearson's chi-squared of the current counts against the reference shares, and its p-value.
pub fn chi_squared(reference: &[u64], current: &[u64]) -> (f64, f64) {
    let total: u64 = current.iter().sum();
    if reference.len() < 2 || total == 0 {
        return (0.0, 1.0);
    }
    let smoothed: Vec<f64> = shares(reference)
        .into_iter()
        .map(|s| if s == 0.0 { EMPTY_BIN_SHARE } else { s })
        .collect();
    let norm: f64 = smoothed.iter().sum();
    let statistic: f64 = smoothed
        .iter()
        .zip(current)
        .map(|(share, &observed)| {
            let expected = total as f64 * share / norm;
            (observed as f64 - expected).powi(2) / expected
        })
        .sum();
    let degrees = (reference.len() - 1) as f64;
    let p = ChiSquared::new(degrees)
        .map(|d| d.sf(statistic))
        .unwrap_or(f64::NAN);
    (statistic, p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Values computed by scipy/numpy (tests/fixtures/dq/drift_golden.py); see that script for
    /// the exact calls.
    pub(crate) const GOLDEN: &str = include_str!("../../../tests/fixtures/dq/drift_golden.json");

    /// A golden JSON array of floats.
    pub(crate) fn floats(value: &serde_json::Value) -> Vec<f64> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    }

    fn counts(value: &serde_json::Value) -> Vec<u64> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    }

    fn close(name: &str, ours: f64, theirs: f64) {
        assert!(
            (ours - theirs).abs() <= 1e-9,
            "{name}: lakeforge {ours} vs scipy {theirs}"
        );
    }

    #[test]
    fn statistics_match_scipy() {
        let golden: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
        let cases = golden["cases"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let r = counts(&case["reference"]);
            let c = counts(&case["current"]);
            close(
                &format!("{name} psi"),
                psi(&r, &c),
                case["psi"].as_f64().unwrap(),
            );
            close(
                &format!("{name} js"),
                jensen_shannon(&r, &c),
                case["jensen_shannon"].as_f64().unwrap(),
            );
            let (d, p) = kolmogorov_smirnov(&r, &c);
            close(
                &format!("{name} ks"),
                d,
                case["ks_statistic"].as_f64().unwrap(),
            );
            close(
                &format!("{name} ks p"),
                p,
                case["ks_p_value"].as_f64().unwrap(),
            );
            let centers = floats(&case["centers"]);
            close(
                &format!("{name} wasserstein"),
                wasserstein(&r, &c, &centers),
                case["wasserstein"].as_f64().unwrap(),
            );
            let (x2, p) = chi_squared(&r, &c);
            close(
                &format!("{name} chi2"),
                x2,
                case["chi2_statistic"].as_f64().unwrap(),
            );
            close(
                &format!("{name} chi2 p"),
                p,
                case["chi2_p_value"].as_f64().unwrap(),
            );
        }
        for point in golden["kolmogorov"].as_array().unwrap() {
            let x = point[0].as_f64().unwrap();
            close(
                &format!("kolmogorov({x})"),
                kolmogorov_survival(x),
                point[1].as_f64().unwrap(),
            );
        }
    }

    #[test]
    fn bins_clamp_and_handle_constants() {
        let bins = NumericBins::new(0.0, 10.0, 5);
        assert_eq!(bins.bin(-3.0), Some(0));
        assert_eq!(bins.bin(0.0), Some(0));
        assert_eq!(bins.bin(2.0), Some(1));
        assert_eq!(bins.bin(10.0), Some(4));
        assert_eq!(bins.bin(99.0), Some(4));
        assert_eq!(bins.bin(f64::NAN), None);
        assert_eq!(bins.centers(), vec![1.0, 3.0, 5.0, 7.0, 9.0]);
        // The floor of the quotient, clamped (as `bin_expr` computes it), at and around every
        // edge of uneven bins.
        let uneven = NumericBins::new(-0.3, 7.1, 7);
        for k in -2..=10 {
            let edge = -0.3 + k as f64 * uneven.width;
            for value in [
                edge,
                edge.next_down(),
                edge.next_up(),
                edge + 0.5 * uneven.width,
            ] {
                let position = ((value - uneven.lower) / uneven.width).floor();
                let expected = position.clamp(0.0, 6.0) as usize;
                assert_eq!(uneven.bin(value), Some(expected), "{value}");
            }
        }
        assert_eq!(uneven.bin(f64::INFINITY), Some(6));
        assert_eq!(uneven.bin(f64::NEG_INFINITY), Some(0));
        let constant = NumericBins::new(4.0, 4.0, 20);
        assert_eq!(constant.len(), 3);
        assert_eq!(
            [constant.bin(3.0), constant.bin(4.0), constant.bin(5.0)],
            [Some(0), Some(1), Some(2)]
        );
    }

    #[test]
    fn identical_distributions_do_not_drift() {
        let r = [10, 20, 30, 40];
        for method in [
            DriftMethod::Psi,
            DriftMethod::Ks,
            DriftMethod::JensenShannon,
            DriftMethod::Wasserstein,
            DriftMethod::ChiSquared,
        ] {
            let outcome = compare(
                method,
                method.default_threshold(),
                &r,
                &r,
                Some(&[0.0, 1.0, 2.0, 3.0]),
                1.0,
            );
            assert!(!outcome.drifted, "{method:?}: {outcome:?}");
        }
    }
}
