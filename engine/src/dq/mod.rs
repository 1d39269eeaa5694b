//! Evaluating data-quality checks while a dataset streams through the engine.
//!
//! The planner compiles a dataset's checks into one plan ([`CheckedDataset`]): the dataset's
//! columns followed by one column per row-level predicate and per statistic input. Here each
//! output partition of that plan gets a [`PartitionChecker`] that, batch by batch, counts
//! failing and NULL predicates, keeps the K smallest failing rows as samples, feeds the
//! statistics (moments, extremes, t-digest quantiles, newest timestamp, drift histograms), and
//! splits the rows into published and quarantined ones. The partitions' states are merged into
//! [`CheckResult`]s when the stream ends, so every check is evaluated in the same single pass
//! that publishes the data.
//!
//! Semantics (see also the README's data-quality section):
//! - a row fails a row-level check when its predicate is FALSE, or NULL with `nulls = "fail"`;
//!   a NULL predicate otherwise counts in `null_skipped` and passes;
//! - a row-level check passes when `(evaluated - failed) / evaluated >= mostly` (an empty
//!   dataset passes); `evaluated` counts every row;
//! - `drop` removes failing rows from what is published; `quarantine` moves them to the
//!   quarantine table with the names of every check they fail; a row failing both kinds is
//!   quarantined;
//! - a `fail` check that does not pass stops the run before anything is committed.

mod dense;
pub(crate) mod distinct;
pub mod drift;
pub mod keys;
pub(crate) mod predicates;
pub mod quantile;
mod radix;
pub(crate) mod ranges;
pub mod results;

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{SortColumn, filter_record_batch, lexsort_to_indices, take};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Utc};
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use lakeforge_planner::{
    AnomalyMetric, CheckAction, CheckedDataset, CompiledCheck, DriftReference, Evaluation,
    NullPolicy, Statistic,
};
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use serde::{Deserialize, Serialize};

pub use crate::check_result::{CheckResult, is_row_level};
use crate::dq::drift::{Histogram, NumericBins};
use crate::dq::keys::{KeyResources, KeySet};
pub use crate::dq::quantile::QuantileSketch;
use crate::error::{EngineError, Result};
use crate::session::RunBackend;

/// A drift check's reference, measured before the dataset streams.
#[derive(Debug, Clone)]
enum Baseline {
    /// The reference histogram (its bins are the current histogram's bins too).
    Ready {
        histogram: Histogram,
        reference_rows: u64,
        reference_std: f64,
        described: String,
    },
    /// Nothing to compare with yet (a product's first version): the check passes.
    NoReference(String),
    /// The reference cannot be compared (e.g. it lacks the column): the check fails.
    Unusable(String),
}

/// A dataset's checks, ready to evaluate: drift references measured, anomaly history loaded.
#[derive(Debug)]
pub struct DatasetCheckRun {
    /// The compiled checks.
    pub checked: CheckedDataset,
    baselines: Vec<Option<Baseline>>,
    histories: Vec<Vec<f64>>,
    run_started: DateTime<Utc>,
    program: Arc<CheckProgram>,
}

/// What an output partition needs to evaluate a dataset's checks: per check, which column to
/// read and the state it starts from. It is serializable, so a cluster worker evaluates the
/// checks with the same code as an embedded writer, and sends back a [`PartitionState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckProgram {
    /// The dataset checked, for error messages.
    pub dataset: String,
    /// The run, written with quarantined rows.
    pub run_id: String,
    /// How many leading columns of the checked plan are the dataset's own.
    pub dataset_columns: usize,
    /// One step per check, in the order of the compiled checks.
    pub checks: Vec<CheckStep>,
}

/// One check as an output partition evaluates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckStep {
    /// The check's name (listed in `failed_checks` of quarantined rows).
    pub name: String,
    /// What failing rows do.
    pub action: CheckAction,
    /// How NULL predicates count.
    pub nulls: NullPolicy,
    /// What is measured per batch.
    pub measure: Measure,
}

/// What a check measures in each batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Measure {
    /// A row-level predicate: failing rows are counted, sampled and possibly removed.
    Predicate {
        /// The predicate's column in the checked plan.
        predicate: usize,
        /// The columns shown with a failing row.
        sample_columns: Vec<usize>,
        /// How many failing rows to keep.
        samples: usize,
    },
    /// A column fed into a statistic, starting from `initial`.
    Column {
        /// The input column in the checked plan.
        input: usize,
        /// The empty state (for drift, the reference's bins).
        initial: CheckState,
    },
    /// A `unique` check's key columns, collected to find duplicates when partitions merge.
    Keys {
        /// The key columns in the checked plan (also the sample columns).
        columns: Vec<usize>,
        /// How many failing rows to keep.
        samples: usize,
    },
    /// Nothing per row (row counts, schemas, drift without a usable reference).
    Nothing,
}

/// An output partition's check states after its last batch, merged on the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Rows the partition evaluated.
    pub rows: u64,
    /// One state per check.
    pub states: Vec<CheckState>,
}

/// Where drift references that are versions of the checked product come from.
#[derive(Debug, Clone, Copy)]
pub struct ProductHistory<'a> {
    /// The product's table as it is before this run, if it exists.
    pub existing: Option<&'a DeltaTable>,
}

impl DatasetCheckRun {
    /// Measures drift references and loads anomaly history (`history`, a future of the
    /// previous observed values per check name, oldest first), side by side: the references
    /// are queries of their own, the history a read of the results table.
    pub async fn prepare(
        ctx: &SessionContext,
        checked: CheckedDataset,
        product: ProductHistory<'_>,
        history: impl Future<Output = Result<std::collections::BTreeMap<String, Vec<f64>>>>,
        run_id: &str,
        run_started: DateTime<Utc>,
    ) -> Result<DatasetCheckRun> {
        let references = futures::future::try_join_all(
            checked
                .checks
                .iter()
                .map(|check| measure_baseline(ctx, &checked.dataset, check, product)),
        );
        let (baselines, history) = tokio::join!(references, history);
        let (baselines, history) = (baselines?, history?);
        let histories: Vec<Vec<f64>> = checked
            .checks
            .iter()
            .map(|check| history.get(&check.name).cloned().unwrap_or_default())
            .collect();
        let program = Arc::new(CheckProgram {
            dataset: checked.dataset.clone(),
            run_id: run_id.to_string(),
            dataset_columns: checked.dataset_columns,
            checks: checked
                .checks
                .iter()
                .zip(&baselines)
                .map(|(check, baseline)| CheckStep {
                    name: check.name.clone(),
                    action: check.action,
                    nulls: check.nulls,
                    measure: measure_of(check, baseline.as_ref()),
                })
                .collect(),
        });
        Ok(DatasetCheckRun {
            checked,
            baselines,
            histories,
            run_started,
            program,
        })
    }

    /// What each output partition evaluates.
    pub fn program(&self) -> &Arc<CheckProgram> {
        &self.program
    }

    /// A fresh state for one output partition of the checked plan, whose batches have `schema`;
    /// collected keys take memory from `resources`.
    pub fn partition(
        &self,
        schema: &Schema,
        resources: Option<&KeyResources>,
    ) -> Result<PartitionChecker> {
        PartitionChecker::new(Arc::clone(&self.program), schema, resources)
            .map_err(|message| EngineError::product(&self.checked.dataset, message))
    }

    /// The schema of quarantined rows: `failed_checks`, `run_id`, then `dataset` (the
    /// dataset's columns as published).
    pub fn quarantine_schema(dataset: &Schema) -> SchemaRef {
        let mut fields = vec![
            Field::new(
                "failed_checks",
                // "element" is the item name Delta gives list types.
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                true,
            ),
            Field::new("run_id", DataType::Utf8, true),
        ];
        fields.extend(dataset.fields().iter().map(|f| f.as_ref().clone()));
        Arc::new(Schema::new(fields))
    }

    /// Merges the partitions' states into one result per check. A state that does not match
    /// the checks (another number of them) is an error naming the dataset.
    pub fn finish(&self, partitions: Vec<PartitionState>) -> Result<Vec<CheckResult>> {
        let checks = self.checked.checks.len();
        if let Some(odd) = partitions.iter().find(|p| p.states.len() != checks) {
            return Err(EngineError::product(
                &self.checked.dataset,
                format!(
                    "a partition returned {} check states for {checks} checks",
                    odd.states.len()
                ),
            ));
        }
        let mut partitions = partitions.into_iter();
        let Some(mut merged) = partitions.next() else {
            return self.results(0, Vec::new());
        };
        for partition in partitions {
            merged.rows += partition.rows;
            for (state, other) in merged.states.iter_mut().zip(partition.states) {
                state.merge(other);
            }
        }
        self.results(merged.rows, merged.states)
    }

    fn results(&self, rows: u64, mut states: Vec<CheckState>) -> Result<Vec<CheckResult>> {
        if states.is_empty() {
            states = self
                .checked
                .checks
                .iter()
                .map(|_| CheckState::Nothing)
                .collect();
        }
        let schema = self.checked.plan.schema();
        // Concluding a check can take a while (merging a `unique` check's keys, selecting a
        // quantile among millions of values) and the scan is over: checks conclude in
        // parallel, their results in check order.
        let concluding: Vec<(usize, (&CompiledCheck, CheckState))> =
            self.checked.checks.iter().zip(states).enumerate().collect();
        concluding
            .into_par_iter()
            .map(|(index, (check, state))| {
                let mut result = CheckResult {
                    dataset: self.checked.dataset.clone(),
                    check: check.name.clone(),
                    kind: check.kind,
                    action: check.action,
                    description: check.description.clone(),
                    evaluated: rows,
                    failed: 0,
                    null_skipped: 0,
                    observed: None,
                    passed: true,
                    message: None,
                    samples: Vec::new(),
                };
                self.evaluate(index, check, rows, state, &mut result, schema.as_arrow())
                    .map_err(|message| {
                        EngineError::product(
                            &self.checked.dataset,
                            format!("check '{}': {message}", check.name),
                        )
                    })?;
                Ok(result)
            })
            .collect()
    }

    /// Concludes one check from its merged state. Each kind accepts only the state its pass
    /// produces: any other state is a bug and an internal error, never a pass (a check must
    /// not pass because something upstream went wrong). `Nothing` stands for a state only
    /// when no partition ran at all (`rows == 0`).
    fn evaluate(
        &self,
        index: usize,
        check: &CompiledCheck,
        rows: u64,
        mut state: CheckState,
        result: &mut CheckResult,
        schema: &Schema,
    ) -> std::result::Result<(), String> {
        let no_partitions = rows == 0 && matches!(state, CheckState::Nothing);
        let baseline = self.baselines.get(index).and_then(Option::as_ref);
        let expected = expected_state(check, baseline);
        if !no_partitions && state.kind_name() != expected {
            return Err(mismatched_state(check, expected, &state));
        }
        match &check.evaluation {
            Evaluation::Row { .. } => match state {
                CheckState::Row {
                    failed,
                    null_skipped,
                    samples,
                } => row_verdict(result, check, rows, failed, null_skipped, samples, schema),
                _ if no_partitions => {
                    row_verdict(result, check, 0, 0, 0, Samples::none(), schema);
                }
                other => return Err(mismatched_state(check, "Row", &other)),
            },
            Evaluation::UniqueKeys { columns } => match state {
                // Merging the keys can fail (a spill file that cannot be read back): the run
                // fails rather than record a verdict that was not reached.
                CheckState::Keys(keys) => {
                    let converter = row_converter(&column_types(schema, columns, &check.name)?)?;
                    let verdict = keys.conclude(&converter)?;
                    row_verdict(
                        result,
                        check,
                        rows,
                        verdict.failed,
                        verdict.null_skipped,
                        verdict.samples,
                        schema,
                    );
                }
                _ if no_partitions => {
                    row_verdict(result, check, 0, 0, 0, Samples::none(), schema);
                }
                other => return Err(mismatched_state(check, "Keys", &other)),
            },
            Evaluation::RowCount { min, max } => {
                result.observed = Some(rows as f64);
                result.passed = within(rows as f64, min.map(|v| v as f64), max.map(|v| v as f64));
            }
            Evaluation::Statistic {
                statistic,
                min,
                max,
                ..
            } => conclude_statistic(result, *statistic, *min, *max, rows, &mut state),
            Evaluation::Freshness { max_age, .. } => match state {
                CheckState::Newest(Some(newest)) => {
                    let age = (self.run_started.timestamp_micros() - newest) as f64 / 1e6;
                    result.observed = Some(age);
                    result.passed = age <= max_age.as_secs_f64();
                    result.message = Some(format!(
                        "newest value {}s old at the run's start; limit {}s",
                        age.round(),
                        max_age.as_secs()
                    ));
                }
                CheckState::Newest(None) => no_fresh_values(result),
                _ if no_partitions => no_fresh_values(result),
                other => return Err(mismatched_state(check, "Newest", &other)),
            },
            Evaluation::Schema { problems } => {
                result.passed = problems.is_empty();
                if !problems.is_empty() {
                    result.message = Some(problems.join("; "));
                }
            }
            Evaluation::Drift { .. } => {
                self.conclude_drift(index, check, result, state, no_partitions)?;
            }
            Evaluation::Anomaly { .. } => {
                self.conclude_anomaly(index, check, rows, &mut state, result)?;
            }
        }
        Ok(())
    }

    /// A drift check: the current histogram against the measured reference.
    fn conclude_drift(
        &self,
        index: usize,
        check: &CompiledCheck,
        result: &mut CheckResult,
        state: CheckState,
        no_partitions: bool,
    ) -> std::result::Result<(), String> {
        let Evaluation::Drift {
            method,
            threshold,
            categorical,
            ..
        } = &check.evaluation
        else {
            return Err(format!(
                "internal error: '{}' is not a drift check",
                check.name
            ));
        };
        match (self.baselines.get(index).and_then(Option::as_ref), state) {
            (
                Some(Baseline::Ready {
                    histogram,
                    reference_rows,
                    reference_std,
                    described,
                }),
                CheckState::Histogram(current),
            ) => {
                let method =
                    method.unwrap_or_else(|| drift::default_method(*categorical, *reference_rows));
                let threshold = threshold.unwrap_or(method.default_threshold());
                let (r, c, centers) = drift::align(histogram, &current);
                let outcome = drift::compare(
                    method,
                    threshold,
                    &r,
                    &c,
                    centers.as_deref(),
                    *reference_std,
                );
                result.observed = Some(outcome.observed());
                result.passed = !outcome.drifted;
                result.message = Some(format!(
                    "{} {} {:.6} (threshold {}{}) vs {described} ({} reference values, {} \
                     current)",
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
            (Some(Baseline::Ready { described, .. }), CheckState::Nothing) if no_partitions => {
                result.message = Some(format!("no rows to compare with {described}"));
            }
            (Some(Baseline::NoReference(message)), _) => {
                result.message = Some(message.clone());
            }
            (Some(Baseline::Unusable(message)), _) => {
                result.passed = false;
                result.message = Some(message.clone());
            }
            (Some(Baseline::Ready { .. }), other) => {
                return Err(mismatched_state(check, "Histogram", &other));
            }
            (None, _) => {
                return Err(
                    "internal error: the drift check's reference was never measured".to_string(),
                );
            }
        }
        Ok(())
    }

    /// An anomaly check: the measured value against the mean of its recent history.
    fn conclude_anomaly(
        &self,
        index: usize,
        check: &CompiledCheck,
        rows: u64,
        state: &mut CheckState,
        result: &mut CheckResult,
    ) -> std::result::Result<(), String> {
        let Evaluation::Anomaly {
            metric,
            max_change,
            min_history,
            window,
            ..
        } = &check.evaluation
        else {
            return Err(format!(
                "internal error: '{}' is not an anomaly check",
                check.name
            ));
        };
        let value = match metric {
            AnomalyMetric::RowCount => Some(rows as f64),
            AnomalyMetric::NullFraction => state.statistic(Statistic::NullFraction, rows),
            AnomalyMetric::Mean => state.statistic(Statistic::Mean, rows),
            AnomalyMetric::Stddev => state.statistic(Statistic::Stddev, rows),
            AnomalyMetric::Min => state.statistic(Statistic::Min, rows),
            AnomalyMetric::Max => state.statistic(Statistic::Max, rows),
        };
        let history = self
            .histories
            .get(index)
            .ok_or("internal error: the anomaly check's history was never loaded")?;
        let recent = &history[history.len().saturating_sub(*window)..];
        match value {
            None => {
                result.passed = false;
                result.message = Some("no non-null values to measure".to_string());
            }
            Some(value) if recent.len() < *min_history => {
                result.observed = Some(value);
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
                result.passed = change <= *max_change;
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
}

fn within(value: f64, min: Option<f64>, max: Option<f64>) -> bool {
    min.is_none_or(|lo| value >= lo) && max.is_none_or(|hi| value <= hi)
}

/// The state a check's pass produces: the variant a partition starts it with.
fn expected_state(check: &CompiledCheck, baseline: Option<&Baseline>) -> &'static str {
    match measure_of(check, baseline) {
        Measure::Predicate { .. } => "Row",
        Measure::Keys { .. } => "Keys",
        Measure::Column { initial, .. } => initial.kind_name(),
        Measure::Nothing => "Nothing",
    }
}

/// The internal error of a check given a state its pass does not produce.
fn mismatched_state(check: &CompiledCheck, expected: &str, actual: &CheckState) -> String {
    format!(
        "internal error: a {} check concludes from a {expected} state, but its pass produced \
         a {} state",
        check.kind,
        actual.kind_name()
    )
}

fn no_fresh_values(result: &mut CheckResult) {
    result.passed = false;
    result.message = Some("no values: nothing is fresh".to_string());
}

/// A statistic check: the measured value within its bounds.
fn conclude_statistic(
    result: &mut CheckResult,
    statistic: Statistic,
    min: Option<f64>,
    max: Option<f64>,
    rows: u64,
    state: &mut CheckState,
) {
    match state.statistic(statistic, rows) {
        Some(value) => {
            result.observed = Some(value);
            result.passed = within(value, min, max);
            if let CheckState::Quantile(sketch) = &*state
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
}

/// Measures a drift check's reference histogram; `None` for other kinds.
async fn measure_baseline(
    ctx: &SessionContext,
    dataset: &str,
    check: &CompiledCheck,
    product: ProductHistory<'_>,
) -> Result<Option<Baseline>> {
    let Evaluation::Drift {
        reference_column: column,
        categorical,
        bins,
        reference,
        ..
    } = &check.evaluation
    else {
        return Ok(None);
    };
    let measuring = ReferenceMeasurement {
        ctx,
        dataset,
        check,
        column,
    };
    measuring
        .measure(*categorical, *bins, reference, product)
        .await
        .map(Some)
}

/// Measuring one drift check's reference: its histogram computed with aggregates (so on a
/// cluster the workers compute it): numeric bins span its [min, max] (found by one aggregate
/// first) and are counted by a grouped aggregate; categories are its most frequent distinct
/// values. Only counts reach the client, never the column.
struct ReferenceMeasurement<'a> {
    ctx: &'a SessionContext,
    dataset: &'a str,
    check: &'a CompiledCheck,
    /// The reference's column.
    column: &'a str,
}

/// What [`ReferenceMeasurement::frame`] found: the reference's rows, or the reason there is
/// nothing to compare with.
enum ReferenceRows {
    /// The reference and how it is described in messages.
    Found(DataFrame, String),
    /// No usable reference; the check concludes with this.
    Missing(Baseline),
}

impl ReferenceMeasurement<'_> {
    fn failure(&self, e: datafusion::error::DataFusionError) -> EngineError {
        EngineError::datafusion(
            format!(
                "check '{}' on '{}': cannot read the drift reference",
                self.check.name, self.dataset
            ),
            e,
        )
    }

    fn invalid(&self, message: impl std::fmt::Display) -> EngineError {
        EngineError::product(
            self.dataset,
            format!("check '{}': {message}", self.check.name),
        )
    }

    async fn measure(
        &self,
        categorical: bool,
        bins: usize,
        reference: &DriftReference,
        product: ProductHistory<'_>,
    ) -> Result<Baseline> {
        let (frame, described) = match self.frame(reference, product).await? {
            ReferenceRows::Found(frame, described) => (frame, described),
            ReferenceRows::Missing(baseline) => return Ok(baseline),
        };
        let column = self.column;
        if frame.schema().field_with_unqualified_name(column).is_err() {
            return Ok(Baseline::Unusable(format!(
                "the reference ({described}) has no column '{column}'"
            )));
        }
        let target = if categorical {
            DataType::Utf8
        } else {
            DataType::Float64
        };
        let values = frame
            .select(vec![
                cast(
                    col(datafusion::common::Column::new_unqualified(column)),
                    target,
                )
                .alias("value"),
            ])
            .map_err(|e| self.failure(e))?;
        let (histogram, reference_std) = if categorical {
            (self.categories(&values).await?, 0.0)
        } else {
            match self.numeric(&values, bins).await? {
                Some(measured) => measured,
                None => {
                    return Ok(Baseline::Unusable(format!(
                        "the reference ({described}) has no finite values in '{column}'"
                    )));
                }
            }
        };
        let reference_rows = histogram.total();
        if reference_rows == 0 {
            return Ok(Baseline::Unusable(format!(
                "the reference ({described}) has no non-null values in '{column}'"
            )));
        }
        Ok(Baseline::Ready {
            histogram,
            reference_rows,
            reference_std,
            described,
        })
    }

    /// The reference's rows: another dataset of the job, or a version of the product.
    async fn frame(
        &self,
        reference: &DriftReference,
        product: ProductHistory<'_>,
    ) -> Result<ReferenceRows> {
        let ctx = self.ctx;
        if let DriftReference::Dataset(name) = reference {
            let frame = ctx
                .table(name.as_str())
                .await
                .map_err(|e| self.failure(e))?;
            return Ok(ReferenceRows::Found(frame, name.clone()));
        }
        let Some(table) = product.existing else {
            return Ok(ReferenceRows::Missing(Baseline::NoReference(
                "no previous version to compare with (the product is new)".to_string(),
            )));
        };
        let (table, version) = match reference {
            DriftReference::Version(version) => {
                let mut pinned = table.clone();
                if let Err(e) = pinned.load_version(*version).await {
                    return Ok(ReferenceRows::Missing(Baseline::Unusable(format!(
                        "reference version {version} cannot be read: {e}"
                    ))));
                }
                (pinned, *version)
            }
            _ => {
                let version = table.version().unwrap_or(0);
                (table.clone(), version)
            }
        };
        // On a cluster, delta-rs's scan cannot travel: read the version's files instead.
        let provider: Arc<dyn datafusion::catalog::TableProvider> = match RunBackend::of(ctx) {
            RunBackend::Cluster => crate::delta_files::files_provider(&table)
                .await
                .map_err(|e| self.invalid(format!("drift reference: {e}")))?,
            RunBackend::Embedded => table.table_provider().await.map_err(|e| self.failure(e))?,
        };
        let frame = ctx.read_table(provider).map_err(|e| self.failure(e))?;
        Ok(ReferenceRows::Found(frame, format!("version {version}")))
    }

    async fn summary(&self, values: &DataFrame, aggregates: Vec<Expr>) -> Result<Vec<RecordBatch>> {
        values
            .clone()
            .aggregate(vec![], aggregates)
            .map_err(|e| self.failure(e))?
            .collect()
            .await
            .map_err(|e| self.failure(e))
    }

    /// The most frequent categories, the rest counted as overflow.
    async fn categories(&self, values: &DataFrame) -> Result<Histogram> {
        use datafusion::functions_aggregate::expr_fn::count;
        let totals = self
            .summary(values, vec![count(col("value")).alias("values")])
            .await?;
        let values_counted = first_u64(&totals, "values").unwrap_or(0);
        let counted = values
            .clone()
            .filter(col("value").is_not_null())
            .and_then(|f| f.aggregate(vec![col("value")], vec![count(lit(1)).alias("n")]))
            .and_then(|f| {
                f.sort(vec![
                    col("n").sort(false, false),
                    col("value").sort(true, false),
                ])
            })
            .and_then(|f| f.limit(0, Some(drift::MAX_CATEGORIES)))
            .map_err(|e| self.failure(e))?
            .collect()
            .await
            .map_err(|e| self.failure(e))?;
        let mut categories = Vec::new();
        for batch in &counted {
            let names = arrow::compute::cast(batch.column(0), &DataType::Utf8)
                .map_err(|e| self.invalid(e))?;
            let (Some(names), Some(counts)) = (
                names.as_string_opt::<i32>(),
                batch.column(1).as_primitive_opt::<Int64Type>(),
            ) else {
                continue;
            };
            for (name, count) in names.iter().zip(counts.iter()) {
                if let (Some(name), Some(count)) = (name, count) {
                    categories.push((name.to_string(), u64::try_from(count).unwrap_or(0)));
                }
            }
        }
        Ok(Histogram::categorical_from_counts(
            categories,
            values_counted,
        ))
    }

    /// Equal-width bins over the reference's finite range, and its standard deviation;
    /// `None` when it has no finite values.
    async fn numeric(&self, values: &DataFrame, bins: usize) -> Result<Option<(Histogram, f64)>> {
        use datafusion::functions_aggregate::expr_fn::{count, max, min, stddev_pop};
        let totals = self
            .summary(
                values,
                vec![
                    min(col("value")).alias("lo"),
                    max(col("value")).alias("hi"),
                    stddev_pop(col("value")).alias("sd"),
                ],
            )
            .await?;
        let scalar = |name: &str| -> Option<f64> {
            totals.first().and_then(|b| {
                let array = b.column_by_name(name)?;
                let values = array.as_primitive_opt::<Float64Type>()?;
                (!values.is_null(0)).then(|| values.value(0))
            })
        };
        let bins = match (scalar("lo"), scalar("hi")) {
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => {
                NumericBins::new(lo, hi, bins)
            }
            _ => return Ok(None),
        };
        let binned = bins
            .bin_expr(col("value"))
            .and_then(|bin| values.clone().select(vec![bin.alias("bin")]))
            .and_then(|f| f.filter(col("bin").is_not_null()))
            .and_then(|f| f.aggregate(vec![col("bin")], vec![count(lit(1)).alias("n")]))
            .map_err(|e| self.failure(e))?
            .collect()
            .await
            .map_err(|e| self.failure(e))?;
        let mut counted = Vec::new();
        for batch in &binned {
            let (Some(bin), Some(n)) = (
                batch.column(0).as_primitive_opt::<Int64Type>(),
                batch.column(1).as_primitive_opt::<Int64Type>(),
            ) else {
                continue;
            };
            for (bin, n) in bin.iter().zip(n.iter()) {
                if let (Some(bin), Some(n)) = (bin, n) {
                    counted.push((
                        usize::try_from(bin).unwrap_or(usize::MAX),
                        u64::try_from(n).unwrap_or(0),
                    ));
                }
            }
        }
        let histogram =
            Histogram::numeric_from_counts(bins, counted).map_err(|e| self.invalid(e))?;
        Ok(Some((histogram, scalar("sd").unwrap_or(0.0))))
    }
}

/// What an output partition measures for `check` (whose drift reference is `baseline`).
fn measure_of(check: &CompiledCheck, baseline: Option<&Baseline>) -> Measure {
    let column = |input: usize, initial: CheckState| Measure::Column { input, initial };
    match &check.evaluation {
        Evaluation::Row {
            predicate,
            sample_columns,
        } => Measure::Predicate {
            predicate: *predicate,
            sample_columns: sample_columns.clone(),
            samples: check.samples,
        },
        Evaluation::UniqueKeys { columns } => Measure::Keys {
            columns: columns.clone(),
            samples: check.samples,
        },
        Evaluation::RowCount { .. } | Evaluation::Schema { .. } => Measure::Nothing,
        Evaluation::Statistic {
            statistic, input, ..
        } => column(
            *input,
            match statistic {
                Statistic::Mean | Statistic::Stddev => CheckState::Moments(Moments::default()),
                Statistic::Min | Statistic::Max => CheckState::Extremes(Extremes::default()),
                Statistic::NullFraction => CheckState::Nulls(0),
                Statistic::Quantile(q) => CheckState::Quantile(QuantileSketch::new(*q)),
            },
        ),
        Evaluation::Freshness { input, .. } => column(*input, CheckState::Newest(None)),
        Evaluation::Drift { input, .. } => match baseline {
            Some(Baseline::Ready { histogram, .. }) => {
                column(*input, CheckState::Histogram(empty_like(histogram)))
            }
            _ => Measure::Nothing,
        },
        Evaluation::Anomaly {
            metric,
            input: Some(input),
            ..
        } => match metric {
            AnomalyMetric::RowCount => Measure::Nothing,
            AnomalyMetric::NullFraction => column(*input, CheckState::Nulls(0)),
            AnomalyMetric::Mean | AnomalyMetric::Stddev => {
                column(*input, CheckState::Moments(Moments::default()))
            }
            AnomalyMetric::Min | AnomalyMetric::Max => {
                column(*input, CheckState::Extremes(Extremes::default()))
            }
        },
        Evaluation::Anomaly { input: None, .. } => Measure::Nothing,
    }
}

/// The first row's `name` column of an aggregate's result, as a count.
fn first_u64(batches: &[RecordBatch], name: &str) -> Option<u64> {
    let batch = batches.first()?;
    let values = batch
        .column_by_name(name)?
        .as_primitive_opt::<Int64Type>()?;
    (!values.is_empty() && !values.is_null(0)).then(|| u64::try_from(values.value(0)).unwrap_or(0))
}

/// A row-level check's result from its counts: it passes when the passing fraction reaches
/// `mostly` (an empty dataset passes).
fn row_verdict(
    result: &mut CheckResult,
    check: &CompiledCheck,
    rows: u64,
    failed: u64,
    null_skipped: u64,
    samples: Samples,
    schema: &Schema,
) {
    result.failed = failed;
    result.null_skipped = null_skipped;
    result.passed = rows == 0 || (rows - failed) as f64 / rows as f64 >= check.mostly;
    result.samples = samples.into_json(schema);
    if check.mostly < 1.0 {
        result.message = Some(format!("mostly {}", check.mostly));
    }
}

/// The types of `columns` of `schema` (a check's sample or key columns).
fn column_types(
    schema: &Schema,
    columns: &[usize],
    check: &str,
) -> std::result::Result<Vec<DataType>, String> {
    columns
        .iter()
        .map(|&c| {
            schema
                .fields()
                .get(c)
                .map(|f| f.data_type().clone())
                .ok_or_else(|| format!("check '{check}': no column {c} in the checked plan"))
        })
        .collect()
}

/// The row-format encoder of sample or key columns (ascending, NULLs first): encoded rows
/// compare like the columns' values, which orders samples and keys alike.
fn row_converter(types: &[DataType]) -> std::result::Result<RowConverter, String> {
    RowConverter::new(types.iter().cloned().map(SortField::new).collect())
        .map_err(|e| e.to_string())
}

/// Each row of `columns` as display text (NULL as `None`), as samples show them.
fn display_rows(columns: &[ArrayRef]) -> std::result::Result<Vec<Vec<Option<String>>>, String> {
    let options = FormatOptions::default();
    let formatters: Vec<ArrayFormatter> = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    Ok((0..columns.first().map_or(0, |c| c.len()))
        .map(|row| {
            columns
                .iter()
                .zip(&formatters)
                .map(|(c, f)| (!c.is_null(row)).then(|| f.value(row).to_string()))
                .collect()
        })
        .collect())
}

fn empty_like(histogram: &Histogram) -> Histogram {
    match histogram {
        Histogram::Numeric { bins, .. } => Histogram::numeric(bins.clone()),
        Histogram::Categorical { .. } => Histogram::categorical(),
    }
}

/// What one batch becomes after its checks.
#[derive(Debug)]
pub struct Split {
    /// The rows to publish (the dataset's columns only).
    pub valid: RecordBatch,
    /// Rows to quarantine, in the quarantine schema.
    pub quarantined: Option<RecordBatch>,
}

/// One output partition's check state.
#[derive(Debug)]
pub struct PartitionChecker {
    program: Arc<CheckProgram>,
    /// Per check, the sort-key encoder of its sample columns (row-level checks only).
    converters: Vec<Option<RowConverter>>,
    rows: u64,
    states: Vec<CheckState>,
}

impl PartitionChecker {
    /// A fresh state for a partition whose batches have `schema` (dataset columns, then check
    /// columns).
    pub fn new(
        program: Arc<CheckProgram>,
        schema: &Schema,
        resources: Option<&KeyResources>,
    ) -> std::result::Result<PartitionChecker, String> {
        let mut converters = Vec::with_capacity(program.checks.len());
        let mut states = Vec::with_capacity(program.checks.len());
        for step in &program.checks {
            match &step.measure {
                Measure::Predicate {
                    sample_columns,
                    samples,
                    ..
                } => {
                    let types = column_types(schema, sample_columns, &step.name)?;
                    let converter = row_converter(&types)
                        .map_err(|e| format!("check '{}': cannot sample rows: {e}", step.name))?;
                    converters.push(Some(converter));
                    states.push(CheckState::Row {
                        failed: 0,
                        null_skipped: 0,
                        samples: Samples {
                            limit: *samples,
                            columns: sample_columns.clone(),
                            kept: Vec::new(),
                        },
                    });
                }
                Measure::Keys { columns, samples } => {
                    let types = column_types(schema, columns, &step.name)?;
                    converters.push(Some(row_converter(&types).map_err(|e| {
                        format!("check '{}': cannot encode keys: {e}", step.name)
                    })?));
                    states.push(CheckState::Keys(KeySet::new(
                        &step.name, &types, columns, step.nulls, *samples, resources,
                    )));
                }
                Measure::Column { initial, .. } => {
                    converters.push(None);
                    let mut state = initial.clone();
                    if let (CheckState::Quantile(sketch), Some(resources)) = (&mut state, resources)
                    {
                        sketch.keep_values(&step.name, &resources.pool);
                    }
                    states.push(state);
                }
                Measure::Nothing => {
                    converters.push(None);
                    states.push(CheckState::Nothing);
                }
            }
        }
        Ok(PartitionChecker {
            program,
            converters,
            rows: 0,
            states,
        })
    }

    /// The state to merge with the other partitions' (collected keys sorted here, so that
    /// partitions sort theirs in parallel).
    pub fn finish(mut self) -> PartitionState {
        for state in &mut self.states {
            if let CheckState::Keys(keys) = state {
                keys.seal();
            }
        }
        PartitionState {
            rows: self.rows,
            states: self.states,
        }
    }

    /// Evaluates the checks on `batch` (dataset columns then check columns) and splits its rows.
    /// `dataset_schema` is the schema of the dataset columns as published.
    pub fn observe(
        &mut self,
        batch: &RecordBatch,
        dataset_schema: &SchemaRef,
        quarantine_schema: Option<&SchemaRef>,
    ) -> std::result::Result<Split, String> {
        let program = Arc::clone(&self.program);
        let rows = batch.num_rows();
        self.rows += rows as u64;
        let mut removed: Option<BooleanBuffer> = None;
        let mut quarantined: Option<BooleanBuffer> = None;
        let mut failing_masks: Vec<Option<BooleanBuffer>> =
            Vec::with_capacity(program.checks.len());
        let mut batch_moments = BatchMoments::default();
        for ((step, state), converter) in program
            .checks
            .iter()
            .zip(self.states.iter_mut())
            .zip(&self.converters)
        {
            let mut failing_mask = None;
            match (&step.measure, state) {
                (
                    Measure::Predicate { predicate, .. },
                    CheckState::Row {
                        failed,
                        null_skipped,
                        samples,
                    },
                ) => {
                    let predicate = as_boolean(batch.column(*predicate))?;
                    let failing = failing_rows(&predicate, step.nulls);
                    let count = failing.count_set_bits() as u64;
                    *failed += count;
                    if step.nulls == NullPolicy::Pass {
                        *null_skipped += predicate.null_count() as u64;
                    }
                    if count > 0 {
                        if let Some(converter) = converter {
                            samples.offer(converter, batch, &failing)?;
                        }
                        if matches!(step.action, CheckAction::Drop | CheckAction::Quarantine) {
                            removed = Some(or(removed.take(), &failing));
                        }
                        if step.action == CheckAction::Quarantine {
                            quarantined = Some(or(quarantined.take(), &failing));
                        }
                        failing_mask = Some(failing);
                    }
                }
                (Measure::Column { input, .. }, state) => {
                    state.observe(batch.column(*input), &mut batch_moments)?
                }
                (Measure::Keys { columns, .. }, CheckState::Keys(keys)) => {
                    if let Some(converter) = converter {
                        keys.observe(converter, batch, columns)?;
                    }
                }
                _ => {}
            }
            failing_masks.push(failing_mask);
        }

        let dataset = RecordBatch::try_new(
            Arc::clone(dataset_schema),
            batch.columns()[..program.dataset_columns].to_vec(),
        )
        .map_err(|e| format!("cannot separate the checked rows: {e}"))?;
        let Some(removed) = removed else {
            return Ok(Split {
                valid: dataset,
                quarantined: None,
            });
        };
        let keep = BooleanArray::new(!&removed, None);
        let valid = filter_record_batch(&dataset, &keep).map_err(|e| e.to_string())?;
        let quarantined = match (quarantined, quarantine_schema) {
            (Some(mask), Some(schema)) => Some(quarantine_batch(
                &dataset,
                &mask,
                &program.checks,
                &failing_masks,
                &program.run_id,
                schema,
            )?),
            _ => None,
        };
        Ok(Split { valid, quarantined })
    }
}

fn quarantine_batch(
    dataset: &RecordBatch,
    mask: &BooleanBuffer,
    checks: &[CheckStep],
    failing_masks: &[Option<BooleanBuffer>],
    run_id: &str,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, String> {
    let selected = BooleanArray::new(mask.clone(), None);
    let rows = filter_record_batch(dataset, &selected).map_err(|e| e.to_string())?;
    let mut failed_checks = ListBuilder::new(StringBuilder::new());
    if let DataType::List(item) = schema.field(0).data_type() {
        failed_checks = failed_checks.with_field(Arc::clone(item));
    }
    for row in mask.set_indices() {
        for (check, failing) in checks.iter().zip(failing_masks) {
            if failing.as_ref().is_some_and(|f| f.value(row)) {
                failed_checks.values().append_value(&check.name);
            }
        }
        failed_checks.append(true);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(failed_checks.finish()),
        Arc::new(StringArray::from(vec![run_id; rows.num_rows()])),
    ];
    columns.extend(rows.columns().iter().cloned());
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}

fn as_boolean(array: &ArrayRef) -> std::result::Result<BooleanArray, String> {
    if let Some(values) = array.as_boolean_opt() {
        return Ok(values.clone());
    }
    arrow::compute::cast(array, &DataType::Boolean)
        .map(|a| a.as_boolean().clone())
        .map_err(|e| format!("a check predicate is not boolean: {e}"))
}

/// Rows failing a predicate: FALSE, or NULL when NULLs fail.
fn failing_rows(predicate: &BooleanArray, nulls: NullPolicy) -> BooleanBuffer {
    let values = predicate.values();
    match (predicate.nulls(), nulls) {
        (None, _) => !values,
        (Some(valid), NullPolicy::Pass) => valid.inner() & &!values,
        (Some(valid), NullPolicy::Fail) => !&(valid.inner() & values),
    }
}

fn or(current: Option<BooleanBuffer>, more: &BooleanBuffer) -> BooleanBuffer {
    match current {
        None => more.clone(),
        Some(current) => &current | more,
    }
}

/// Running mean and variance (Welford), mergeable across partitions (Chan et al.).
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    count: u64,
    #[serde(with = "float_bits")]
    mean: f64,
    #[serde(with = "float_bits")]
    m2: f64,
}

impl Moments {
    /// The moments of one batch's non-null, non-NaN values (see [`counted_values`]), by the
    /// two-pass algorithm (mean, then squared deviations from it): as stable as Welford's update
    /// without its division per value; batches are then combined by [`Moments::merge`].
    fn of(values: &[f64]) -> Moments {
        // Eight independent accumulators per sum, without branches, let the compiler vectorize
        // both passes; a NaN (a NULL's slot included) is skipped by a branch-free NaN test.
        let (mut counts, mut sums) = ([0u64; LANES], [0f64; LANES]);
        for_lanes(values, |lane, value| {
            let take = !value.is_nan();
            counts[lane] += u64::from(take);
            sums[lane] += if take { value } else { 0.0 };
        });
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return Moments::default();
        }
        let mean = sums.iter().sum::<f64>() / count as f64;
        let mut squares = [0f64; LANES];
        for_lanes(values, |lane, value| {
            let deviation = if value.is_nan() { 0.0 } else { value - mean };
            squares[lane] += deviation * deviation;
        });
        Moments {
            count,
            mean,
            m2: squares.iter().sum(),
        }
    }

    fn merge(&mut self, other: Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other;
            return;
        }
        let count = self.count + other.count;
        let delta = other.mean - self.mean;
        self.mean += delta * other.count as f64 / count as f64;
        self.m2 += other.m2 + delta * delta * self.count as f64 * other.count as f64 / count as f64;
        self.count = count;
    }
}

/// Smallest and largest value seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Extremes {
    #[serde(with = "float_bits")]
    min: f64,
    #[serde(with = "float_bits")]
    max: f64,
    count: u64,
}

impl Extremes {
    /// The smallest and largest of one batch's non-null, non-NaN values (see
    /// [`counted_values`]).
    fn of(values: &[f64]) -> Extremes {
        let (mut mins, mut maxes, mut counts) = (
            [f64::INFINITY; LANES],
            [f64::NEG_INFINITY; LANES],
            [0u64; LANES],
        );
        for_lanes(values, |lane, value| {
            // A NaN compares false, so it never replaces a bound.
            mins[lane] = if value < mins[lane] {
                value
            } else {
                mins[lane]
            };
            maxes[lane] = if value > maxes[lane] {
                value
            } else {
                maxes[lane]
            };
            counts[lane] += u64::from(!value.is_nan());
        });
        Extremes {
            min: mins.into_iter().fold(f64::INFINITY, f64::min),
            max: maxes.into_iter().fold(f64::NEG_INFINITY, f64::max),
            count: counts.iter().sum(),
        }
    }

    fn merge(&mut self, other: Extremes) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
    }
}

/// One batch's moments per column of values, so that checks on the same column (a mean and a
/// standard deviation, an anomaly on either) compute them once.
#[derive(Default)]
struct BatchMoments {
    /// The values' address and length, and their moments.
    computed: Vec<((*const f64, usize), Moments)>,
}

impl BatchMoments {
    fn of(&mut self, values: &Float64Array) -> Moments {
        // Checks on the same column read the same buffer: the projection outputs the column
        // (or its common cast) once per check, each a reference to one array.
        let identity = (values.values().as_ptr(), values.len());
        if let Some((_, moments)) = self.computed.iter().find(|(seen, _)| *seen == identity) {
            return *moments;
        }
        let moments = Moments::of(&counted_values(values));
        self.computed.push((identity, moments));
        moments
    }
}

/// Accumulators per statistic in [`for_lanes`]: independent sums the compiler keeps in vector
/// registers.
const LANES: usize = 8;

/// Calls `visit(lane, value)` for every value, the lane being the value's index modulo
/// [`LANES`], in an order the compiler can vectorize.
#[inline(always)]
fn for_lanes(values: &[f64], mut visit: impl FnMut(usize, f64)) {
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in chunk.iter().enumerate() {
            visit(lane, value);
        }
    }
    for (lane, &value) in chunks.remainder().iter().enumerate() {
        visit(lane, value);
    }
}

/// A float column's values with each NULL's slot set to NaN, so statistics skip NULLs and NaNs
/// with one branch-free test (borrowed when there are no NULLs).
fn counted_values(values: &Float64Array) -> Cow<'_, [f64]> {
    match values.nulls().filter(|nulls| nulls.null_count() > 0) {
        None => Cow::Borrowed(values.values()),
        Some(nulls) => {
            let mut owned = values.values().to_vec();
            for row in (!nulls.inner()).set_indices() {
                owned[row] = f64::NAN;
            }
            Cow::Owned(owned)
        }
    }
}

impl Default for Extremes {
    fn default() -> Self {
        Extremes {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            count: 0,
        }
    }
}

/// Per-check state of one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CheckState {
    /// Nothing measured per row.
    Nothing,
    /// A row-level check's counts and samples.
    Row {
        /// Rows failing.
        failed: u64,
        /// Rows whose predicate was NULL and passed.
        null_skipped: u64,
        /// The smallest failing rows.
        samples: Samples,
    },
    /// Mean and variance.
    Moments(Moments),
    /// Minimum and maximum.
    Extremes(Extremes),
    /// A t-digest for a quantile.
    Quantile(QuantileSketch),
    /// NULLs counted.
    Nulls(u64),
    /// The newest timestamp (epoch microseconds).
    Newest(Option<i64>),
    /// A drift histogram over the reference's bins.
    Histogram(Histogram),
    /// A `unique` check's collected keys.
    Keys(KeySet),
}

impl CheckState {
    /// The variant's name, for internal-error messages.
    fn kind_name(&self) -> &'static str {
        match self {
            CheckState::Nothing => "Nothing",
            CheckState::Row { .. } => "Row",
            CheckState::Moments(_) => "Moments",
            CheckState::Extremes(_) => "Extremes",
            CheckState::Quantile(_) => "Quantile",
            CheckState::Nulls(_) => "Nulls",
            CheckState::Newest(_) => "Newest",
            CheckState::Histogram(_) => "Histogram",
            CheckState::Keys(_) => "Keys",
        }
    }

    /// Adds one batch's values; `batch_moments` holds the moments this batch's other checks
    /// computed already.
    fn observe(
        &mut self,
        array: &ArrayRef,
        batch_moments: &mut BatchMoments,
    ) -> std::result::Result<(), String> {
        match self {
            CheckState::Moments(moments) => {
                if let Some(values) = array.as_primitive_opt::<Float64Type>() {
                    moments.merge(batch_moments.of(values));
                }
            }
            CheckState::Extremes(extremes) => {
                if let Some(values) = array.as_primitive_opt::<Float64Type>() {
                    extremes.merge(Extremes::of(&counted_values(values)));
                }
            }
            CheckState::Quantile(sketch) => sketch.observe(array),
            CheckState::Nulls(count) => *count += array.null_count() as u64,
            CheckState::Newest(newest) => {
                if let Some(values) = array.as_primitive_opt::<Int64Type>()
                    && let Some(max) = arrow::compute::max(values)
                {
                    *newest = Some(newest.map_or(max, |n| n.max(max)));
                }
            }
            CheckState::Histogram(histogram) => histogram.observe(array.as_ref()),
            CheckState::Nothing | CheckState::Row { .. } | CheckState::Keys(_) => {}
        }
        Ok(())
    }

    fn merge(&mut self, other: CheckState) {
        match (self, other) {
            (
                CheckState::Row {
                    failed,
                    null_skipped,
                    samples,
                },
                CheckState::Row {
                    failed: f,
                    null_skipped: n,
                    samples: s,
                },
            ) => {
                *failed += f;
                *null_skipped += n;
                samples.absorb(s);
            }
            (CheckState::Moments(a), CheckState::Moments(b)) => a.merge(b),
            (CheckState::Extremes(a), CheckState::Extremes(b)) => a.merge(b),
            (CheckState::Quantile(a), CheckState::Quantile(b)) => a.merge(b),
            (CheckState::Nulls(a), CheckState::Nulls(b)) => *a += b,
            (CheckState::Newest(a), CheckState::Newest(b)) => {
                *a = match (*a, b) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
            }
            (CheckState::Histogram(a), CheckState::Histogram(b)) => a.merge(b),
            (CheckState::Keys(a), CheckState::Keys(b)) => a.absorb(b),
            _ => {}
        }
    }

    fn statistic(&mut self, statistic: Statistic, rows: u64) -> Option<f64> {
        match (statistic, self) {
            (Statistic::Mean, CheckState::Moments(m)) => (m.count > 0).then_some(m.mean),
            (Statistic::Stddev, CheckState::Moments(m)) => {
                (m.count > 1).then(|| (m.m2 / (m.count - 1) as f64).sqrt())
            }
            (Statistic::Min, CheckState::Extremes(e)) => (e.count > 0).then_some(e.min),
            (Statistic::Max, CheckState::Extremes(e)) => (e.count > 0).then_some(e.max),
            (Statistic::NullFraction, CheckState::Nulls(n)) => {
                (rows > 0).then(|| *n as f64 / rows as f64)
            }
            (Statistic::Quantile(_), CheckState::Quantile(sketch)) => sketch.value(),
            _ => None,
        }
    }
}

/// The K smallest failing rows of a check, ordered by the sample columns' values (compared as
/// Arrow row-format keys), so samples do not depend on how the data was partitioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    limit: usize,
    columns: Vec<usize>,
    /// (sort key, the row's sample values as text)
    kept: Vec<(Vec<u8>, Vec<Option<String>>)>,
}

impl Samples {
    /// No samples: what a check of a dataset that produced no partitions reports.
    fn none() -> Samples {
        Samples {
            limit: 0,
            columns: Vec::new(),
            kept: Vec::new(),
        }
    }

    fn offer(
        &mut self,
        converter: &RowConverter,
        batch: &RecordBatch,
        failing: &BooleanBuffer,
    ) -> std::result::Result<(), String> {
        if self.limit == 0 || self.columns.is_empty() {
            return Ok(());
        }
        let mask = BooleanArray::new(failing.clone(), None);
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&c| arrow::compute::filter(batch.column(c), &mask))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let sort: Vec<SortColumn> = columns
            .iter()
            .map(|values| SortColumn {
                values: Arc::clone(values),
                options: None,
            })
            .collect();
        let order = lexsort_to_indices(&sort, Some(self.limit)).map_err(|e| e.to_string())?;
        let smallest: Vec<ArrayRef> = columns
            .iter()
            .map(|c| take(c.as_ref(), &order, None))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let encoded = converter
            .convert_columns(&smallest)
            .map_err(|e| e.to_string())?;
        for (row, values) in display_rows(&smallest)?.into_iter().enumerate() {
            self.kept.push((encoded.row(row).as_ref().to_vec(), values));
        }
        self.trim();
        Ok(())
    }

    fn absorb(&mut self, other: Samples) {
        self.kept.extend(other.kept);
        self.trim();
    }

    fn trim(&mut self) {
        self.kept.sort_by(|a, b| a.0.cmp(&b.0));
        self.kept.truncate(self.limit);
    }

    fn into_json(self, schema: &Schema) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.kept
            .into_iter()
            .map(|(_, values)| {
                self.columns
                    .iter()
                    .zip(values)
                    .map(|(&c, value)| {
                        (
                            schema.field(c).name().clone(),
                            value.map_or(serde_json::Value::Null, serde_json::Value::String),
                        )
                    })
                    .collect()
            })
            .collect()
    }
}

/// Floats as their bit patterns, so infinities and NaN (an empty digest's extremes, a column
/// holding infinities) survive JSON.
pub(crate) mod float_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        u64::deserialize(deserializer).map(f64::from_bits)
    }

    /// The same for a vector of floats.
    pub mod many {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
            values
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
                .serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<f64>, D::Error> {
            Vec::<u64>::deserialize(deserializer)
                .map(|v| v.into_iter().map(f64::from_bits).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use lakeforge_planner::CheckKind;

    use super::*;

    #[test]
    fn moments_of_batches_merge_to_the_whole_columns_moments() {
        use arrow::array::Float64Array;
        let values = [1.0, 2.0, 4.0, 8.0, 16.0, 3.5];
        // numpy: mean and sum of squared deviations of the non-null, non-NaN values.
        let (mean, m2) = (5.75, 154.875);
        let of = |array: Float64Array| Moments::of(&counted_values(&array));
        let whole = of(Float64Array::from(values.to_vec()));
        assert_eq!(whole.count, 6);
        assert!((whole.mean - mean).abs() < 1e-12);
        assert!((whole.m2 - m2).abs() < 1e-9);
        let mut a = of(Float64Array::from(vec![Some(1.0), None, Some(2.0)]));
        let b = of(Float64Array::from(vec![4.0, f64::NAN, 8.0, 16.0, 3.5]));
        a.merge(b);
        assert_eq!(a.count, 6);
        assert!((a.mean - mean).abs() < 1e-12);
        assert!((a.m2 - m2).abs() < 1e-9);
        assert_eq!(of(Float64Array::from(vec![f64::NAN])), Moments::default());
        // Min and max skip NULLs and NaNs too, across a remainder shorter than the lanes.
        let extremes = Extremes::of(&counted_values(&Float64Array::from(vec![
            Some(f64::NAN),
            None,
            Some(-2.5),
            Some(7.0),
            Some(0.0),
            Some(f64::NAN),
            Some(3.0),
            Some(1.0),
            None,
            Some(-9.0),
        ])));
        assert_eq!((extremes.min, extremes.max, extremes.count), (-9.0, 7.0, 6));
    }

    #[test]
    fn failing_rows_follow_the_null_policy() {
        let predicate = BooleanArray::from(vec![Some(true), Some(false), None, Some(false)]);
        let pass = failing_rows(&predicate, NullPolicy::Pass);
        assert_eq!(
            pass.iter().collect::<Vec<_>>(),
            vec![false, true, false, true]
        );
        let fail = failing_rows(&predicate, NullPolicy::Fail);
        assert_eq!(
            fail.iter().collect::<Vec<_>>(),
            vec![false, true, true, true]
        );
    }
    /// A run of one check `c` on dataset `d` (a plan without columns: the mismatch tests
    /// never reach the schema), its drift reference `baseline`.
    fn one_check_run(
        kind: CheckKind,
        evaluation: Evaluation,
        baseline: Option<Baseline>,
    ) -> DatasetCheckRun {
        let plan = datafusion::logical_expr::LogicalPlanBuilder::empty(false)
            .build()
            .unwrap();
        let check = CompiledCheck {
            name: "c".to_string(),
            kind,
            action: CheckAction::Fail,
            mostly: 1.0,
            nulls: NullPolicy::Pass,
            samples: 0,
            description: "c".to_string(),
            evaluation,
        };
        DatasetCheckRun {
            checked: CheckedDataset {
                dataset: "d".to_string(),
                dataset_kind: lakeforge_planner::DatasetKind::Product,
                plan,
                dataset_columns: 0,
                checks: vec![check],
                key_columns: Vec::new(),
            },
            baselines: vec![baseline],
            histories: vec![Vec::new()],
            run_started: Utc::now(),
            program: Arc::new(CheckProgram {
                dataset: "d".to_string(),
                run_id: "r".to_string(),
                dataset_columns: 0,
                checks: Vec::new(),
            }),
        }
    }

    /// Concludes `run` from one partition of `rows` rows whose state is `state`.
    fn conclude_one(run: &DatasetCheckRun, rows: u64, state: CheckState) -> Result<CheckResult> {
        let mut results = run.finish(vec![PartitionState {
            rows,
            states: vec![state],
        }])?;
        Ok(results.remove(0))
    }

    /// Asserts that concluding `run` from `state` is an internal error naming the check and
    /// both state kinds, never a verdict.
    fn assert_internal_error(run: &DatasetCheckRun, state: CheckState, expected: &str) {
        let actual = format!("{state:?}");
        let actual = actual
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_string();
        let message = match conclude_one(run, 10, state) {
            Ok(result) => panic!("a mismatched state concluded as {result:?}"),
            Err(error) => error.to_string(),
        };
        assert!(message.contains("check 'c'"), "{message}");
        assert!(message.contains("internal error"), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&actual), "{message}");
    }

    fn row_check() -> DatasetCheckRun {
        one_check_run(
            CheckKind::Expect,
            Evaluation::Row {
                predicate: 0,
                sample_columns: Vec::new(),
            },
            None,
        )
    }

    fn drift(categorical: bool) -> Evaluation {
        Evaluation::Drift {
            column: "x".to_string(),
            reference_column: "x".to_string(),
            input: 0,
            categorical,
            method: None,
            threshold: None,
            bins: 4,
            reference: DriftReference::PreviousVersion,
        }
    }

    fn ready_baseline() -> Baseline {
        Baseline::Ready {
            histogram: Histogram::categorical_from_counts(vec![("a".to_string(), 3)], 3),
            reference_rows: 3,
            reference_std: 0.0,
            described: "version 1".to_string(),
        }
    }

    #[test]
    fn a_row_check_given_another_checks_state_fails_closed() {
        assert_internal_error(&row_check(), CheckState::Moments(Moments::default()), "Row");
        assert_internal_error(&row_check(), CheckState::Nulls(3), "Row");
        // Rows were evaluated, yet nothing was counted: a bug, not a pass.
        assert_internal_error(&row_check(), CheckState::Nothing, "Row");
    }

    #[test]
    fn a_unique_check_given_another_checks_state_fails_closed() {
        let run = one_check_run(
            CheckKind::Unique,
            Evaluation::UniqueKeys { columns: vec![0] },
            None,
        );
        let row_state = CheckState::Row {
            failed: 0,
            null_skipped: 0,
            samples: Samples {
                limit: 0,
                columns: Vec::new(),
                kept: Vec::new(),
            },
        };
        assert_internal_error(&run, row_state, "Keys");
        assert_internal_error(&run, CheckState::Nothing, "Keys");
    }

    #[test]
    fn a_drift_check_given_another_state_or_no_reference_fails_closed() {
        let ready = one_check_run(CheckKind::Drift, drift(true), Some(ready_baseline()));
        assert_internal_error(&ready, CheckState::Moments(Moments::default()), "Histogram");
        assert_internal_error(&ready, CheckState::Nothing, "Histogram");
        // A drift check whose reference was never measured is a bug, not a pass.
        let unmeasured = one_check_run(CheckKind::Drift, drift(true), None);
        let message = conclude_one(
            &unmeasured,
            10,
            CheckState::Histogram(Histogram::categorical()),
        )
        .map(|result| format!("{result:?}"))
        .unwrap_err()
        .to_string();
        assert!(message.contains("check 'c'"), "{message}");
        assert!(message.contains("internal error"), "{message}");
        // Without a usable reference nothing is measured per row: any state is a bug.
        let unusable = one_check_run(
            CheckKind::Drift,
            drift(true),
            Some(Baseline::Unusable("unusable".to_string())),
        );
        assert_internal_error(
            &unusable,
            CheckState::Histogram(Histogram::categorical()),
            "Nothing",
        );
    }

    #[test]
    fn dataset_level_checks_given_another_checks_state_fail_closed() {
        let mean = one_check_run(
            CheckKind::Mean,
            Evaluation::Statistic {
                statistic: Statistic::Mean,
                input: 0,
                min: None,
                max: None,
            },
            None,
        );
        assert_internal_error(&mean, CheckState::Extremes(Extremes::default()), "Moments");
        let freshness = one_check_run(
            CheckKind::Freshness,
            Evaluation::Freshness {
                input: 0,
                max_age: std::time::Duration::from_secs(60),
            },
            None,
        );
        assert_internal_error(&freshness, CheckState::Nulls(0), "Newest");
        let anomaly = one_check_run(
            CheckKind::Anomaly,
            Evaluation::Anomaly {
                metric: AnomalyMetric::Max,
                input: Some(0),
                max_change: 0.5,
                window: 5,
                min_history: 1,
            },
            None,
        );
        assert_internal_error(
            &anomaly,
            CheckState::Moments(Moments::default()),
            "Extremes",
        );
        let row_count = one_check_run(
            CheckKind::RowCount,
            Evaluation::RowCount {
                min: Some(1),
                max: None,
            },
            None,
        );
        assert_internal_error(&row_count, CheckState::Nulls(0), "Nothing");
    }

    #[test]
    fn checks_of_a_pass_without_partitions_conclude_as_before() {
        // No partition at all: every state is `Nothing` and no row was evaluated.
        let conclude = |run: DatasetCheckRun| run.finish(Vec::new()).unwrap().remove(0);
        let row = conclude(row_check());
        assert!(
            row.passed && row.failed == 0 && row.message.is_none(),
            "{row:?}"
        );
        let unique = conclude(one_check_run(
            CheckKind::Unique,
            Evaluation::UniqueKeys { columns: vec![0] },
            None,
        ));
        assert!(unique.passed, "{unique:?}");
        let mean = conclude(one_check_run(
            CheckKind::Mean,
            Evaluation::Statistic {
                statistic: Statistic::Mean,
                input: 0,
                min: None,
                max: None,
            },
            None,
        ));
        assert!(!mean.passed, "{mean:?}");
        assert_eq!(
            mean.message.as_deref(),
            Some("no non-null values to measure")
        );
        let fresh = conclude(one_check_run(
            CheckKind::Freshness,
            Evaluation::Freshness {
                input: 0,
                max_age: std::time::Duration::from_secs(60),
            },
            None,
        ));
        assert!(!fresh.passed, "{fresh:?}");
        assert_eq!(
            fresh.message.as_deref(),
            Some("no values: nothing is fresh")
        );
        let drifted = conclude(one_check_run(
            CheckKind::Drift,
            drift(true),
            Some(ready_baseline()),
        ));
        assert!(drifted.passed && drifted.observed.is_none(), "{drifted:?}");
        let new = conclude(one_check_run(
            CheckKind::Drift,
            drift(true),
            Some(Baseline::NoReference("new".to_string())),
        ));
        assert!(new.passed, "{new:?}");
        assert_eq!(new.message.as_deref(), Some("new"));
    }
}
