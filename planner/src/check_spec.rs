//! The `[[checks]]` entries of a job spec: data-quality assertions on a source, step or product.
//!
//! A check is either row-level (a boolean per row: `expect`, `not_null`, `unique`, `in_set`,
//! `between`, `regex`, `referential`) or dataset-level (one observed value per run:
//! `row_count`, `freshness`, `schema`, `mean`, `stddev`, `min`, `max`, `quantile`, `drift`,
//! `anomaly`). Only row-level checks can `drop` or `quarantine` rows.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::PlannerError;

/// Sample failing rows kept per check unless the check says otherwise.
pub const DEFAULT_SAMPLES: usize = 5;

/// One `[[checks]]` entry, as written. Which keys apply depends on `kind`; [`CheckSpec::validate`]
/// refuses keys that do not apply, so a typo never silently weakens a check.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// The source, step or product checked.
    pub on: String,
    /// The check's name, unique per dataset; derived from kind and columns when absent
    /// (required for `expect`).
    #[serde(default)]
    pub name: Option<String>,
    /// The kind; `expect` when absent and `expect` is given.
    #[serde(default)]
    pub kind: Option<CheckKind>,
    /// `expect`: a SQL boolean over one row.
    #[serde(default)]
    pub expect: Option<String>,
    /// What a failing row or check does.
    #[serde(default)]
    pub action: CheckAction,
    /// Pass when `failed / evaluated <= 1 - mostly` (row-level kinds; default 1.0).
    #[serde(default)]
    pub mostly: Option<f64>,
    /// Whether a NULL predicate passes (default) or fails (row-level kinds).
    #[serde(default)]
    pub nulls: Option<NullPolicy>,
    /// The column of single-column kinds.
    #[serde(default)]
    pub column: Option<String>,
    /// The columns of `not_null`, `unique` (a column set) and `schema`.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `in_set`: the allowed values.
    #[serde(default)]
    pub values: Vec<toml::Value>,
    /// Lower bound (`between`, `row_count`, aggregate kinds), inclusive.
    #[serde(default)]
    pub min: Option<toml::Value>,
    /// Upper bound (`between`, `row_count`, aggregate kinds), inclusive.
    #[serde(default)]
    pub max: Option<toml::Value>,
    /// `regex`: the pattern a value must match (anywhere; anchor it with `^...$`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// `freshness`: the largest allowed age of the newest value, e.g. `"26h"`.
    #[serde(default)]
    pub max_age: Option<String>,
    /// `referential`: the source or step holding the allowed values; `drift`: the source or
    /// step to compare with, or `"previous"` (the product's previous version, the default).
    #[serde(default)]
    pub reference: Option<String>,
    /// `referential` and `drift`: the column of `reference` (default: the same name as
    /// `column`).
    #[serde(default)]
    pub reference_column: Option<String>,
    /// `drift`: compare with this version of the product instead of the previous one.
    #[serde(default)]
    pub reference_version: Option<u64>,
    /// `schema`: required columns with their types (SQL or Arrow names).
    #[serde(default)]
    pub types: BTreeMap<String, String>,
    /// `drift`: the statistic (default chosen by the column's type).
    #[serde(default)]
    pub method: Option<DriftMethod>,
    /// `drift`: the method's threshold (defaults per method).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// `drift`: numeric histogram bins (default 20).
    #[serde(default)]
    pub bins: Option<usize>,
    /// `quantile`: which one, in [0, 1].
    #[serde(default)]
    pub quantile: Option<f64>,
    /// `anomaly`: the metric compared with its history.
    #[serde(default)]
    pub metric: Option<AnomalyMetric>,
    /// `anomaly`: the largest allowed relative change from the history's mean (default 0.5).
    #[serde(default)]
    pub max_change: Option<f64>,
    /// `anomaly`: how many previous results form the history (default 5).
    #[serde(default)]
    pub window: Option<usize>,
    /// `anomaly`: results needed before the check can fail (default 3).
    #[serde(default)]
    pub min_history: Option<usize>,
    /// Failing rows kept as samples (row-level kinds; default 5).
    #[serde(default)]
    pub samples: Option<usize>,
}

/// The built-in kinds of checks.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A SQL boolean over one row.
    Expect,
    /// The columns are not NULL.
    NotNull,
    /// The column set is unique (rows with a NULL key are not compared).
    Unique,
    /// The value is one of `values`.
    InSet,
    /// `min <= value <= max`.
    Between,
    /// The value matches `pattern`.
    Regex,
    /// The value exists in `reference.reference_column`.
    Referential,
    /// The number of rows is within bounds.
    RowCount,
    /// The newest timestamp is at most `max_age` old at the run's start.
    Freshness,
    /// Required columns exist with the given types.
    Schema,
    /// The column's mean is within bounds.
    Mean,
    /// The column's sample standard deviation is within bounds.
    Stddev,
    /// The column's minimum is within bounds.
    Min,
    /// The column's maximum is within bounds.
    Max,
    /// The column's `quantile` is within bounds.
    Quantile,
    /// The column's distribution has not drifted from a reference.
    Drift,
    /// A metric has not changed abnormally from its history.
    Anomaly,
}

impl CheckKind {
    /// Row-level kinds evaluate a predicate per row and can drop or quarantine rows.
    pub fn is_row_level(self) -> bool {
        matches!(
            self,
            CheckKind::Expect
                | CheckKind::NotNull
                | CheckKind::Unique
                | CheckKind::InSet
                | CheckKind::Between
                | CheckKind::Regex
                | CheckKind::Referential
        )
    }

    /// The kind named as in specs (`not_null`, `drift`, ...).
    pub fn from_name(name: &str) -> Option<CheckKind> {
        use serde::de::IntoDeserializer;
        let deserializer: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            name.into_deserializer();
        CheckKind::deserialize(deserializer).ok()
    }

    /// The kind as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Expect => "expect",
            CheckKind::NotNull => "not_null",
            CheckKind::Unique => "unique",
            CheckKind::InSet => "in_set",
            CheckKind::Between => "between",
            CheckKind::Regex => "regex",
            CheckKind::Referential => "referential",
            CheckKind::RowCount => "row_count",
            CheckKind::Freshness => "freshness",
            CheckKind::Schema => "schema",
            CheckKind::Mean => "mean",
            CheckKind::Stddev => "stddev",
            CheckKind::Min => "min",
            CheckKind::Max => "max",
            CheckKind::Quantile => "quantile",
            CheckKind::Drift => "drift",
            CheckKind::Anomaly => "anomaly",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failing check does.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CheckAction {
    /// Keep the rows; record the result.
    #[default]
    Warn,
    /// Remove failing rows from what is published.
    Drop,
    /// Move failing rows to `WAREHOUSE/_lakeforge/quarantine/<dataset>`.
    Quarantine,
    /// Fail the run (nothing is committed) when the check does not pass.
    Fail,
}

impl fmt::Display for CheckAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckAction::Warn => "warn",
            CheckAction::Drop => "drop",
            CheckAction::Quarantine => "quarantine",
            CheckAction::Fail => "fail",
        })
    }
}

/// How a row whose predicate is NULL counts.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NullPolicy {
    /// Counted as `null_skipped` and treated as passing.
    #[default]
    Pass,
    /// Counted as failing.
    Fail,
}

/// Distribution-drift statistics.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DriftMethod {
    /// Population stability index; drift when >= threshold (0.1).
    Psi,
    /// Two-sample Kolmogorov–Smirnov; drift when the p-value < threshold (0.05).
    Ks,
    /// Jensen–Shannon distance (natural log); drift when >= threshold (0.1).
    JensenShannon,
    /// Wasserstein distance divided by the reference's standard deviation; drift when >=
    /// threshold (0.1).
    Wasserstein,
    /// Pearson's chi-squared goodness of fit; drift when the p-value < threshold (0.05).
    ChiSquared,
}

impl DriftMethod {
    /// The method's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            DriftMethod::Ks | DriftMethod::ChiSquared => 0.05,
            DriftMethod::Psi | DriftMethod::JensenShannon | DriftMethod::Wasserstein => 0.1,
        }
    }

    /// True when the statistic is a p-value (drift below the threshold); false when it is a
    /// distance (drift at or above the threshold).
    pub fn is_p_value(self) -> bool {
        matches!(self, DriftMethod::Ks | DriftMethod::ChiSquared)
    }

    /// Whether the method applies to numeric (binned) columns.
    pub fn is_numeric_only(self) -> bool {
        matches!(self, DriftMethod::Ks | DriftMethod::Wasserstein)
    }

    /// The method's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftMethod::Psi => "psi",
            DriftMethod::Ks => "ks",
            DriftMethod::JensenShannon => "jensen_shannon",
            DriftMethod::Wasserstein => "wasserstein",
            DriftMethod::ChiSquared => "chi_squared",
        }
    }
}

/// Metrics an `anomaly` check can follow.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyMetric {
    /// Rows in the dataset.
    RowCount,
    /// Fraction of NULLs in `column`.
    NullFraction,
    /// Mean of `column`.
    Mean,
    /// Sample standard deviation of `column`.
    Stddev,
    /// Minimum of `column`.
    Min,
    /// Maximum of `column`.
    Max,
}

impl AnomalyMetric {
    /// The metric's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyMetric::RowCount => "row_count",
            AnomalyMetric::NullFraction => "null_fraction",
            AnomalyMetric::Mean => "mean",
            AnomalyMetric::Stddev => "stddev",
            AnomalyMetric::Min => "min",
            AnomalyMetric::Max => "max",
        }
    }
}

impl CheckSpec {
    /// The kind, from `kind` or implied by `expect`.
    pub fn effective_kind(&self) -> Result<CheckKind, PlannerError> {
        match (self.kind, &self.expect) {
            (Some(kind), _) => Ok(kind),
            (None, Some(_)) => Ok(CheckKind::Expect),
            (None, None) => Err(PlannerError::InvalidSpec(format!(
                "check {} on '{}' has neither `kind` nor `expect`",
                self.name
                    .as_deref()
                    .map(|n| format!("'{n}'"))
                    .unwrap_or_default(),
                self.on
            ))),
        }
    }

    /// The check's name: as given, or `<kind>_<columns>`.
    pub fn effective_name(&self) -> Result<String, PlannerError> {
        if let Some(name) = &self.name {
            return Ok(name.clone());
        }
        let kind = self.effective_kind()?;
        let mut parts = vec![kind.as_str().to_string()];
        if let Some(metric) = self.metric {
            parts.push(metric.as_str().to_string());
        }
        parts.extend(self.column.iter().cloned());
        parts.extend(self.columns.iter().cloned());
        if kind == CheckKind::Expect
            || parts.len() == 1 && !matches!(kind, CheckKind::RowCount | CheckKind::Schema)
        {
            return Err(PlannerError::InvalidSpec(format!(
                "a `{kind}` check on '{}' needs a `name`",
                self.on
            )));
        }
        Ok(parts.join("_"))
    }

    /// The mostly fraction in effect.
    pub fn effective_mostly(&self) -> f64 {
        self.mostly.unwrap_or(1.0)
    }

    /// Checks that the keys given fit the kind, naming the check and the key at fault.
    pub fn validate(&self) -> Result<(), PlannerError> {
        let kind = self.effective_kind()?;
        let name = self.effective_name()?;
        let check = CheckValidation {
            spec: self,
            kind,
            name,
        };
        check.keys_apply()?;
        check.row_level_options()?;
        check.kind_rules()?;
        if matches!(kind, CheckKind::NotNull | CheckKind::Unique)
            && self.column.is_some()
            && !self.columns.is_empty()
        {
            return Err(check.invalid("give `column` or `columns`, not both".to_string()));
        }
        Ok(())
    }

    /// The kind-specific keys present in this entry.
    fn given_kind_keys(&self) -> Vec<&'static str> {
        [
            ("expect", self.expect.is_some()),
            ("column", self.column.is_some()),
            ("columns", !self.columns.is_empty()),
            ("values", !self.values.is_empty()),
            ("min", self.min.is_some()),
            ("max", self.max.is_some()),
            ("pattern", self.pattern.is_some()),
            ("max_age", self.max_age.is_some()),
            ("reference", self.reference.is_some()),
            ("reference_column", self.reference_column.is_some()),
            ("reference_version", self.reference_version.is_some()),
            ("types", !self.types.is_empty()),
            ("method", self.method.is_some()),
            ("threshold", self.threshold.is_some()),
            ("bins", self.bins.is_some()),
            ("quantile", self.quantile.is_some()),
            ("metric", self.metric.is_some()),
            ("max_change", self.max_change.is_some()),
            ("window", self.window.is_some()),
            ("min_history", self.min_history.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, present)| present.then_some(key))
        .collect()
    }
}

/// The kind-specific keys a kind takes.
fn allowed_keys(kind: CheckKind) -> &'static [&'static str] {
    match kind {
        CheckKind::Expect => &["expect"],
        CheckKind::NotNull => &["column", "columns"],
        CheckKind::Unique => &["column", "columns"],
        CheckKind::InSet => &["column", "values"],
        CheckKind::Between => &["column", "min", "max"],
        CheckKind::Regex => &["column", "pattern"],
        CheckKind::Referential => &["column", "reference", "reference_column"],
        CheckKind::RowCount => &["min", "max"],
        CheckKind::Freshness => &["column", "max_age"],
        CheckKind::Schema => &["columns", "types"],
        CheckKind::Mean | CheckKind::Stddev | CheckKind::Min | CheckKind::Max => {
            &["column", "min", "max"]
        }
        CheckKind::Quantile => &["column", "min", "max", "quantile"],
        CheckKind::Drift => &[
            "column",
            "reference",
            "reference_column",
            "reference_version",
            "method",
            "threshold",
            "bins",
        ],
        CheckKind::Anomaly => &["column", "metric", "max_change", "window", "min_history"],
    }
}

/// A check being validated, with its effective kind and name, so the per-kind rules share
/// one way of naming the check in their errors.
struct CheckValidation<'a> {
    spec: &'a CheckSpec,
    kind: CheckKind,
    name: String,
}

impl CheckValidation<'_> {
    /// An error naming the check and its dataset.
    fn invalid(&self, message: String) -> PlannerError {
        PlannerError::InvalidCheck {
            check: self.name.clone(),
            dataset: self.spec.on.clone(),
            message,
        }
    }

    /// An error unless `present`: the kind needs `key`.
    fn require(&self, present: bool, key: &str) -> Result<(), PlannerError> {
        if present {
            Ok(())
        } else {
            Err(self.invalid(format!("a `{}` check needs `{key}`", self.kind)))
        }
    }

    /// Refuses kind-specific keys that do not apply to the kind.
    fn keys_apply(&self) -> Result<(), PlannerError> {
        let kind = self.kind;
        let allowed = allowed_keys(kind);
        let given = self.spec.given_kind_keys();
        if let Some(key) = given.iter().find(|k| !allowed.contains(k)) {
            return Err(self.invalid(format!(
                "`{key}` does not apply to a `{kind}` check (it takes: {})",
                allowed.join(", ")
            )));
        }
        Ok(())
    }

    /// Refuses row-level options (dropping or quarantining rows, `mostly`, `nulls`,
    /// `samples`) on a dataset-level kind, and a `mostly` outside [0, 1].
    fn row_level_options(&self) -> Result<(), PlannerError> {
        let (spec, kind) = (self.spec, self.kind);
        if !kind.is_row_level() {
            if matches!(spec.action, CheckAction::Drop | CheckAction::Quarantine) {
                return Err(self.invalid(format!(
                    "action `{}` applies to row-level checks only; a `{kind}` check can \
                     `warn` or `fail`",
                    spec.action
                )));
            }
            for (key, present) in [
                ("mostly", spec.mostly.is_some()),
                ("nulls", spec.nulls.is_some()),
                ("samples", spec.samples.is_some()),
            ] {
                if present {
                    return Err(self.invalid(format!(
                        "`{key}` applies to row-level checks only, not to `{kind}`"
                    )));
                }
            }
        }
        if let Some(mostly) = spec.mostly
            && !(0.0..=1.0).contains(&mostly)
        {
            return Err(self.invalid(format!("`mostly` must be within [0, 1], got {mostly}")));
        }
        Ok(())
    }

    /// The keys the kind requires, and the ranges of their values.
    fn kind_rules(&self) -> Result<(), PlannerError> {
        let spec = self.spec;
        match self.kind {
            CheckKind::Expect => {}
            CheckKind::NotNull | CheckKind::Unique => {
                self.require(spec.column.is_some() || !spec.columns.is_empty(), "columns")?;
            }
            CheckKind::InSet => {
                self.require(spec.column.is_some(), "column")?;
                self.require(!spec.values.is_empty(), "values")?;
            }
            CheckKind::Between => {
                self.require(spec.column.is_some(), "column")?;
                self.require(spec.min.is_some() || spec.max.is_some(), "min` or `max")?;
            }
            CheckKind::Regex => {
                self.require(spec.column.is_some(), "column")?;
                self.require(spec.pattern.is_some(), "pattern")?;
            }
            CheckKind::Referential => {
                self.require(spec.column.is_some(), "column")?;
                self.require(spec.reference.is_some(), "reference")?;
            }
            CheckKind::RowCount => self.row_count_rules()?,
            CheckKind::Freshness => self.freshness_rules()?,
            CheckKind::Schema => {
                self.require(
                    !spec.columns.is_empty() || !spec.types.is_empty(),
                    "columns` or `types",
                )?;
            }
            CheckKind::Mean
            | CheckKind::Stddev
            | CheckKind::Min
            | CheckKind::Max
            | CheckKind::Quantile => self.statistic_rules()?,
            CheckKind::Drift => self.drift_rules()?,
            CheckKind::Anomaly => self.anomaly_rules()?,
        }
        Ok(())
    }

    /// `row_count`: a bound, each a non-negative integer.
    fn row_count_rules(&self) -> Result<(), PlannerError> {
        let spec = self.spec;
        self.require(spec.min.is_some() || spec.max.is_some(), "min` or `max")?;
        for bound in [&spec.min, &spec.max].into_iter().flatten() {
            if bound.as_integer().is_none_or(|n| n < 0) {
                return Err(self.invalid(format!(
                    "`min` and `max` of a row_count are non-negative integers, got {bound}"
                )));
            }
        }
        Ok(())
    }

    /// `freshness`: a column and a `max_age` that parses as a duration.
    fn freshness_rules(&self) -> Result<(), PlannerError> {
        let spec = self.spec;
        self.require(spec.column.is_some(), "column")?;
        self.require(spec.max_age.is_some(), "max_age")?;
        if let Some(age) = &spec.max_age {
            parse_duration(age).map_err(|e| self.invalid(format!("`max_age`: {e}")))?;
        }
        Ok(())
    }

    /// `mean`, `stddev`, `min`, `max`, `quantile`: a column and numeric bounds; a
    /// `quantile` within [0, 1].
    fn statistic_rules(&self) -> Result<(), PlannerError> {
        let (spec, kind) = (self.spec, self.kind);
        self.require(spec.column.is_some(), "column")?;
        self.require(spec.min.is_some() || spec.max.is_some(), "min` or `max")?;
        for bound in [&spec.min, &spec.max].into_iter().flatten() {
            if toml_number(bound).is_none() {
                return Err(self.invalid(format!(
                    "`min` and `max` of a `{kind}` check are numbers, got {bound}"
                )));
            }
        }
        if kind == CheckKind::Quantile {
            self.require(spec.quantile.is_some(), "quantile")?;
            if let Some(q) = spec.quantile
                && !(0.0..=1.0).contains(&q)
            {
                return Err(self.invalid(format!("`quantile` must be within [0, 1], got {q}")));
            }
        }
        Ok(())
    }

    /// `drift`: a column; a pinned version only of the checked product; bins and threshold
    /// in range.
    fn drift_rules(&self) -> Result<(), PlannerError> {
        let spec = self.spec;
        self.require(spec.column.is_some(), "column")?;
        if spec.reference_version.is_some()
            && spec.reference.as_deref().is_some_and(|r| r != "previous")
        {
            return Err(self.invalid(
                "`reference_version` pins a version of the checked product; it cannot \
                 be combined with another `reference`"
                    .to_string(),
            ));
        }
        if let Some(bins) = spec.bins
            && !(2..=1000).contains(&bins)
        {
            return Err(self.invalid(format!("`bins` must be within 2..=1000, got {bins}")));
        }
        if let Some(threshold) = spec.threshold
            && !(threshold.is_finite() && threshold > 0.0)
        {
            return Err(self.invalid(format!(
                "`threshold` must be a positive number, got {threshold}"
            )));
        }
        Ok(())
    }

    /// `anomaly`: a metric, a column exactly when the metric reads one, and a positive
    /// `max_change` and `window`.
    fn anomaly_rules(&self) -> Result<(), PlannerError> {
        let spec = self.spec;
        let metric = spec
            .metric
            .ok_or_else(|| self.invalid("an `anomaly` check needs `metric`".to_string()))?;
        if metric != AnomalyMetric::RowCount {
            self.require(spec.column.is_some(), "column")?;
        } else if spec.column.is_some() {
            return Err(self.invalid("metric `row_count` takes no `column`".to_string()));
        }
        if spec.max_change.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return Err(self.invalid("`max_change` must be a positive number".to_string()));
        }
        if spec.window == Some(0) {
            return Err(self.invalid("`window` must be at least 1".to_string()));
        }
        Ok(())
    }
}

/// A TOML integer or float as f64.
pub fn toml_number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Parses durations like `90s`, `30m`, `26h`, `7d`, `500ms`, or combinations like `1h30m`, with
/// humantime (which also takes long unit names, `1h 30m`, and months and years as 30.44 and
/// 365.25 days).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    // humantime's grammar (`26h`, `1h30m`, `1h 30m`, `500ms`, `7d`, `2w`, long unit names);
    // its messages say what is wrong but not which text, so both are given.
    humantime::parse_duration(text.trim()).map_err(|error| {
        format!("{text:?} is not a duration like 30m, 26h, 500ms or 1h30m ({error})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> CheckSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("26h").unwrap().as_secs(), 26 * 3600);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert!(parse_duration("26").is_err());
        assert!(parse_duration("3x").is_err());
        assert_eq!(parse_duration("1h 30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_duration("2w").unwrap().as_secs(), 14 * 86_400);
        assert_eq!(parse_duration(" 30s ").unwrap().as_secs(), 30);
        let error = parse_duration("26").unwrap_err();
        assert!(
            error.starts_with("\"26\" is not a duration like"),
            "{error}"
        );
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert_eq!(parse_duration("1m30s").unwrap().as_secs(), 90);
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn names_and_kinds() {
        let c = check("on = 'f'\nkind = 'not_null'\ncolumns = ['a', 'b']");
        assert_eq!(c.effective_name().unwrap(), "not_null_a_b");
        c.validate().unwrap();
        let e = check("on = 'f'\nexpect = 'a > 1'");
        assert!(e.effective_name().is_err(), "expect checks need a name");
        assert_eq!(CheckKind::from_name("not_null"), Some(CheckKind::NotNull));
        assert_eq!(CheckKind::from_name("nope"), None);
        let rc = check("on = 'f'\nkind = 'row_count'\nmin = 1");
        assert_eq!(rc.effective_name().unwrap(), "row_count");
    }

    #[test]
    fn keys_that_do_not_apply_are_refused() {
        let c = check("on = 'f'\nkind = 'between'\ncolumn = 'a'\nmin = 1\npattern = 'x'");
        let message = c.validate().unwrap_err().to_string();
        assert!(message.contains("`pattern` does not apply"), "{message}");
        let c = check("on = 'f'\nkind = 'row_count'\nmin = 1\naction = 'drop'");
        let message = c.validate().unwrap_err().to_string();
        assert!(message.contains("row-level checks only"), "{message}");
        let c = check("on = 'f'\nkind = 'mean'\ncolumn = 'a'\nmin = 'x'");
        assert!(c.validate().is_err());
        let c = check("on = 'f'\nname = 'x'\nexpect = 'a'\nmostly = 1.5");
        assert!(c.validate().unwrap_err().to_string().contains("mostly"));
    }
}
