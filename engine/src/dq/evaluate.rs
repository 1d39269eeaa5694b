//! Concluding a dataset's checks: each check's merged partition state becomes its
//! [`CheckResult`]. A check concludes only from the state it measures (what `measure_of`
//! tells the partitions to measure); any other state is a bug in the engine and an internal
//! error, never a pass. `Nothing` is accepted for any check only when no row was evaluated,
//! which is what a pass without partitions leaves.

use arrow::datatypes::Schema;
use chrono::{DateTime, Utc};
use lakeforge_planner::{AnomalyMetric, CompiledCheck, DriftMethod, Evaluation, Statistic};

use crate::dq::CheckResult;
use crate::dq::baseline::Baseline;
use crate::dq::drift;
use crate::dq::state::{CheckState, Samples, StateKind, column_types, row_converter};
use crate::error::{EngineError, Result};

/// What concluding one check reads besides its merged state.
pub(super) struct Conclusion<'a> {
    /// The check concluded.
    pub(super) check: &'a CompiledCheck,
    /// Rows the partitions evaluated.
    pub(super) rows: u64,
    /// The checked plan's schema (names of sample columns, types of key columns).
    pub(super) schema: &'a Schema,
    /// A drift check's reference (`None` for other kinds, and for a drift check a bug).
    pub(super) baseline: Option<&'a Baseline>,
    /// An anomaly check's previous observed values, oldest first.
    pub(super) history: &'a [f64],
    /// When the run started (freshness is measured from it).
    pub(super) run_started: DateTime<Utc>,
}

impl Conclusion<'_> {
    /// Whether `state` is what a pass without partitions concludes from: `Nothing`, with no
    /// row evaluated. Any other `Nothing` where a check measures something is a bug.
    fn unmeasured(&self, state: &CheckState) -> bool {
        self.rows == 0 && matches!(state, CheckState::Nothing)
    }
}

/// The error for a state that does not belong to its check: a bug in the engine, reported
/// rather than concluded so that it never counts as a pass.
fn mismatched(expected: StateKind, state: &CheckState) -> EngineError {
    EngineError::Invariant(format!(
        "the check was concluded from a {:?} state; it measures {expected:?}",
        state.kind()
    ))
}

/// Concludes one check from its merged state into `result`, which starts as not passed.
pub(super) fn conclude(
    c: &Conclusion<'_>,
    state: CheckState,
    result: &mut CheckResult,
) -> Result<()> {
    match &c.check.evaluation {
        Evaluation::Row { .. } => conclude_rows(c, state, result),
        Evaluation::UniqueKeys { columns } => conclude_unique(c, columns, state, result),
        Evaluation::RowCount { min, max } => conclude_row_count(c, (*min, *max), state, result),
        Evaluation::Statistic {
            statistic,
            min,
            max,
            ..
        } => conclude_statistic(c, *statistic, (*min, *max), state, result),
        Evaluation::Freshness { max_age, .. } => conclude_freshness(c, *max_age, state, result),
        Evaluation::Schema { problems } => conclude_schema(problems, state, result),
        Evaluation::Drift {
            method,
            threshold,
            categorical,
            ..
        } => conclude_drift(c, (*method, *threshold, *categorical), state, result),
        Evaluation::Anomaly {
            metric,
            input,
            max_change,
            min_history,
            window,
        } => {
            let rule = AnomalyRule {
                metric: *metric,
                measured: input.is_some(),
                max_change: *max_change,
                min_history: *min_history,
                window: *window,
            };
            conclude_anomaly(c, &rule, state, result)
        }
    }
}

/// Whether `value` lies within the inclusive bounds.
fn within(value: f64, min: Option<f64>, max: Option<f64>) -> bool {
    min.is_none_or(|lo| value >= lo) && max.is_none_or(|hi| value <= hi)
}

/// A row-level check: its failing rows counted by the partitions.
fn conclude_rows(c: &Conclusion<'_>, state: CheckState, result: &mut CheckResult) -> Result<()> {
    match state {
        CheckState::Row {
            failed,
            null_skipped,
            samples,
        } => {
            row_verdict(c, failed, null_skipped, samples, result);
            Ok(())
        }
        // An empty dataset passes.
        state if c.unmeasured(&state) => {
            result.passed = true;
            Ok(())
        }
        state => Err(mismatched(StateKind::Row, &state)),
    }
}

/// A `unique` check evaluated in the pass: its collected keys merged into duplicates.
fn conclude_unique(
    c: &Conclusion<'_>,
    columns: &[usize],
    state: CheckState,
    result: &mut CheckResult,
) -> Result<()> {
    match state {
        CheckState::Keys(keys) => {
            // Merging the keys can fail (a spill file that cannot be read back): the run
            // fails rather than record a verdict that was not reached.
            let converter = row_converter(&column_types(c.schema, columns)?)?;
            let verdict = keys.conclude(&converter)?;
            row_verdict(
                c,
                verdict.failed,
                verdict.null_skipped,
                verdict.samples,
                result,
            );
            Ok(())
        }
        // An empty dataset has no duplicates.
        state if c.unmeasured(&state) => {
            result.passed = true;
            Ok(())
        }
        state => Err(mismatched(StateKind::Keys, &state)),
    }
}

/// `row_count`: nothing measured per row, the rows counted.
fn conclude_row_count(
    c: &Conclusion<'_>,
    (min, max): (Option<u64>, Option<u64>),
    state: CheckState,
    result: &mut CheckResult,
) -> Result<()> {
    let CheckState::Nothing = state else {
        return Err(mismatched(StateKind::Nothing, &state));
    };
    result.observed = Some(c.rows as f64);
    result.passed = within(c.rows as f64, min.map(|v| v as f64), max.map(|v| v as f64));
    Ok(())
}

/// The state a statistic is computed from.
fn statistic_state(statistic: Statistic) -> StateKind {
    match statistic {
        Statistic::Mean | Statistic::Stddev => StateKind::Moments,
        Statistic::Min | Statistic::Max => StateKind::Extremes,
        Statistic::NullFraction => StateKind::Nulls,
        Statistic::Quantile(_) => StateKind::Quantile,
    }
}

/// A statistic within bounds.
fn conclude_statistic(
    c: &Conclusion<'_>,
    statistic: Statistic,
    (min, max): (Option<f64>, Option<f64>),
    mut state: CheckState,
    result: &mut CheckResult,
) -> Result<()> {
    let expected = statistic_state(statistic);
    if state.kind() != expected && !c.unmeasured(&state) {
        return Err(mismatched(expected, &state));
    }
    match state.statistic(statistic, c.rows) {
        Some(value) => {
            result.observed = Some(value);
            result.passed = within(value, min, max);
            if let CheckState::Quantile(sketch) = &state
                && !sketch.is_exact()
            {
                result.message = Some(
                    "a t-digest estimate: the values did not all fit one process's memory"
                        .to_string(),
                );
            }
        }
        None => {
            result.passed = false;
            result.message = Some("no non-null values to measure".to_string());
        }
    }
    Ok(())
}

/// `freshness`: the newest timestamp's age at the run's start.
fn conclude_freshness(
    c: &Conclusion<'_>,
    max_age: std::time::Duration,
    state: CheckState,
    result: &mut CheckResult,
) -> Result<()> {
    match state {
        CheckState::Newest(Some(newest)) => {
            let age = (c.run_started.timestamp_micros() - newest) as f64 / 1e6;
            result.observed = Some(age);
            result.passed = age <= max_age.as_secs_f64();
            result.message = Some(format!(
                "newest value {}s old at the run's start; limit {}s",
                age.round(),
                max_age.as_secs()
            ));
        }
        CheckState::Newest(None) => no_fresh_values(result),
        state if c.unmeasured(&state) => no_fresh_values(result),
        state => return Err(mismatched(StateKind::Newest, &state)),
    }
    Ok(())
}

/// A freshness check without a timestamp fails.
fn no_fresh_values(result: &mut CheckResult) {
    result.passed = false;
    result.message = Some("no values: nothing is fresh".to_string());
}

/// `schema`: evaluated when planning, nothing measured per row.
fn conclude_schema(problems: &[String], state: CheckState, result: &mut CheckResult) -> Result<()> {
    let CheckState::Nothing = state else {
        return Err(mismatched(StateKind::Nothing, &state));
    };
    result.passed = problems.is_empty();
    if !problems.is_empty() {
        result.message = Some(problems.join("; "));
    }
    Ok(())
}

/// `drift`: the current histogram compared with the reference's; `rule` is the check's
/// method, threshold and whether the column is categorical.
fn conclude_drift(
    c: &Conclusion<'_>,
    rule: (Option<DriftMethod>, Option<f64>, bool),
    state: CheckState,
    result: &mut CheckResult,
) -> Result<()> {
    match (c.baseline, state) {
        (
            Some(Baseline::Ready {
                histogram,
                reference_rows,
                reference_std,
                described,
            }),
            CheckState::Histogram(current),
        ) => {
            let (method, threshold, categorical) = rule;
            let method =
                method.unwrap_or_else(|| drift::default_method(categorical, *reference_rows));
            let threshold = threshold.unwrap_or(method.default_threshold());
            let (reference, counted, centers) = drift::align(histogram, &current);
            let outcome = drift::compare(
                method,
                threshold,
                &reference,
                &counted,
                centers.as_deref(),
                *reference_std,
            );
            result.observed = Some(outcome.observed());
            result.passed = !outcome.drifted;
            result.message = Some(format!(
                "{} {} {:.6} (threshold {}{}) vs {described} ({} reference values, {} current)",
                method.as_str(),
                if outcome.p_value.is_some() {
                    "p-value"
                } else {
                    "="
                },
                outcome.observed(),
                if outcome.p_value.is_some() {
                    "p < "
                } else {
                    ">= "
                },
                threshold,
                histogram.total(),
                current.total()
            ));
        }
        // A pass without partitions counted nothing; it concludes as it always has, without a
        // comparison.
        (Some(Baseline::Ready { .. }), state) if c.unmeasured(&state) => result.passed = true,
        (Some(Baseline::Ready { .. }), state) => {
            return Err(mismatched(StateKind::Histogram, &state));
        }
        (Some(Baseline::NoReference(message)), CheckState::Nothing) => {
            result.passed = true;
            result.message = Some(message.clone());
        }
        (Some(Baseline::Unusable(message)), CheckState::Nothing) => {
            result.passed = false;
            result.message = Some(message.clone());
        }
        (Some(Baseline::NoReference(_) | Baseline::Unusable(_)), state) => {
            return Err(mismatched(StateKind::Nothing, &state));
        }
        (None, _) => {
            return Err(EngineError::Invariant(
                "the drift check's reference was not measured".to_string(),
            ));
        }
    }
    Ok(())
}

/// An anomaly check's rule.
struct AnomalyRule {
    /// The metric compared with its history.
    metric: AnomalyMetric,
    /// Whether the metric has an input column (the partitions measured it).
    measured: bool,
    /// Largest allowed relative change from the history's mean.
    max_change: f64,
    /// Results needed before the check can fail.
    min_history: usize,
    /// How many previous results count.
    window: usize,
}

impl AnomalyRule {
    /// The state the partitions measure for the metric (see `measure_of`).
    fn state(&self) -> StateKind {
        match (self.metric, self.measured) {
            (AnomalyMetric::RowCount, _) | (_, false) => StateKind::Nothing,
            (AnomalyMetric::NullFraction, true) => StateKind::Nulls,
            (AnomalyMetric::Mean | AnomalyMetric::Stddev, true) => StateKind::Moments,
            (AnomalyMetric::Min | AnomalyMetric::Max, true) => StateKind::Extremes,
        }
    }
}

/// `anomaly`: a metric compared with the mean of its recent history.
fn conclude_anomaly(
    c: &Conclusion<'_>,
    rule: &AnomalyRule,
    mut state: CheckState,
    result: &mut CheckResult,
) -> Result<()> {
    let expected = rule.state();
    if state.kind() != expected && !c.unmeasured(&state) {
        return Err(mismatched(expected, &state));
    }
    let rows = c.rows;
    let value = match rule.metric {
        AnomalyMetric::RowCount => Some(rows as f64),
        AnomalyMetric::NullFraction => state.statistic(Statistic::NullFraction, rows),
        AnomalyMetric::Mean => state.statistic(Statistic::Mean, rows),
        AnomalyMetric::Stddev => state.statistic(Statistic::Stddev, rows),
        AnomalyMetric::Min => state.statistic(Statistic::Min, rows),
        AnomalyMetric::Max => state.statistic(Statistic::Max, rows),
    };
    let (max_change, min_history) = (rule.max_change, rule.min_history);
    let recent = &c.history[c.history.len().saturating_sub(rule.window)..];
    match value {
        None => {
            result.passed = false;
            result.message = Some("no non-null values to measure".to_string());
        }
        Some(value) if recent.len() < min_history => {
            result.observed = Some(value);
            result.passed = true;
            result.message = Some(format!(
                "history has {} of the {min_history} results needed; not judged yet",
                recent.len()
            ));
        }
        Some(value) => {
            let baseline = recent.iter().sum::<f64>() / recent.len() as f64;
            let change = if baseline == 0.0 {
                if value == 0.0 { 0.0 } else { f64::INFINITY }
            } else {
                (value - baseline).abs() / baseline.abs()
            };
            result.observed = Some(value);
            result.passed = change <= max_change;
            result.message = Some(format!(
                "{:+.1}% vs the mean {baseline} of the last {} results (limit ±{}%)",
                if baseline == 0.0 {
                    change * 100.0
                } else {
                    (value - baseline) / baseline.abs() * 100.0
                },
                recent.len(),
                max_change * 100.0
            ));
        }
    }
    Ok(())
}

/// A row-level check's result from its counts: it passes when the passing fraction reaches
/// `mostly` (an empty dataset passes).
fn row_verdict(
    c: &Conclusion<'_>,
    failed: u64,
    null_skipped: u64,
    samples: Samples,
    result: &mut CheckResult,
) {
    let (rows, mostly) = (c.rows, c.check.mostly);
    result.failed = failed;
    result.null_skipped = null_skipped;
    result.passed = rows == 0 || (rows - failed) as f64 / rows as f64 >= mostly;
    result.samples = samples.into_json(c.schema);
    if mostly < 1.0 {
        result.message = Some(format!("mostly {mostly}"));
    }
}
