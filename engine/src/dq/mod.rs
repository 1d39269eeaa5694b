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
//!
//! The modules: `checker` evaluates a partition's batches into [`CheckState`]s (`state`);
//! `baseline` measures drift references before the pass; `evaluate` concludes the merged
//! states into results; `crate::check_history` records them.

mod baseline;
mod checker;
mod dense;
pub(crate) mod distinct;
pub mod drift;
mod evaluate;
pub mod keys;
pub(crate) mod predicates;
pub mod quantile;
mod radix;
pub(crate) mod ranges;
mod state;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use lakeforge_planner::{
    AnomalyMetric, CheckAction, CheckedDataset, CompiledCheck, Evaluation, NullPolicy, Statistic,
};
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use serde::{Deserialize, Serialize};

pub use crate::check_result::{CheckResult, is_row_level};
use crate::dq::baseline::{Baseline, empty_like, measure_baseline};
use crate::dq::evaluate::{Conclusion, conclude};
use crate::dq::keys::KeyResources;
use crate::error::{EngineError, Result};

pub use crate::dq::checker::{PartitionChecker, Split};
pub use crate::dq::quantile::QuantileSketch;
pub(crate) use crate::dq::state::float_bits;
pub use crate::dq::state::{CheckState, Extremes, Moments, PartitionState, Samples, StateKind};

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

impl Measure {
    /// What is measured, for internal errors.
    fn describe(&self) -> &'static str {
        match self {
            Measure::Predicate { .. } => "a predicate",
            Measure::Column { .. } => "a column",
            Measure::Keys { .. } => "keys",
            Measure::Nothing => "nothing",
        }
    }
}

impl CheckProgram {
    /// `source` as the error of one of this dataset's checks.
    fn check_error(&self, step: &CheckStep, source: EngineError) -> EngineError {
        EngineError::Check {
            dataset: self.dataset.clone(),
            check: step.name.clone(),
            source: Box::new(source),
        }
    }

    /// `source` as an error about the checked dataset (not one check).
    fn dataset_error(&self, source: EngineError) -> EngineError {
        EngineError::product(&self.dataset, source.to_string())
    }
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
    /// the checks (another number of them) is an error naming the dataset, and so is a state
    /// of another kind than its check measures (an internal error): a check never passes on a
    /// state it cannot read.
    ///
    /// Concluding runs on rayon's threads and blocks until every check is concluded: async
    /// code calls [`DatasetCheckRun::conclude`] instead.
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
            for ((state, other), check) in merged
                .states
                .iter_mut()
                .zip(partition.states)
                .zip(&self.checked.checks)
            {
                state
                    .merge(other)
                    .map_err(|source| self.check_error(check, source))?;
            }
        }
        self.results(merged.rows, merged.states)
    }

    /// [`DatasetCheckRun::finish`] for async callers: merging and concluding (rayon work
    /// that blocks until every check is concluded, seconds for a large `unique` check) runs
    /// on tokio's blocking threads, so that it does not stall the runtime's workers.
    pub async fn conclude(
        self: &Arc<Self>,
        partitions: Vec<PartitionState>,
    ) -> Result<Vec<CheckResult>> {
        let run = Arc::clone(self);
        tokio::task::spawn_blocking(move || run.finish(partitions))
            .await
            .map_err(|e| {
                EngineError::product(
                    &self.checked.dataset,
                    format!("internal error: concluding the checks did not finish: {e}"),
                )
            })?
    }

    /// An error about one of the checks, naming the dataset and the check.
    fn check_error(&self, check: &CompiledCheck, source: EngineError) -> EngineError {
        EngineError::Check {
            dataset: self.checked.dataset.clone(),
            check: check.name.clone(),
            source: Box::new(source),
        }
    }

    fn results(&self, rows: u64, mut states: Vec<CheckState>) -> Result<Vec<CheckResult>> {
        if states.is_empty() {
            // No partition ran: nothing was measured and no row evaluated. The conclusions
            // accept `Nothing` for any check only when no row was evaluated.
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
                    // Failing closed: every conclusion says itself when a check passes.
                    passed: false,
                    message: None,
                    samples: Vec::new(),
                };
                let conclusion = Conclusion {
                    check,
                    rows,
                    schema: schema.as_arrow(),
                    baseline: self.baselines.get(index).and_then(Option::as_ref),
                    history: self.histories.get(index).map_or(&[], Vec::as_slice),
                    run_started: self.run_started,
                };
                conclude(&conclusion, state, &mut result)
                    .map_err(|source| self.check_error(check, source))?;
                Ok(result)
            })
            .collect()
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

#[cfg(test)]
mod tests {
    use lakeforge_planner::{CheckKind, DriftReference};

    use super::*;
    use crate::dq::drift::Histogram;

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
        let error = match conclude_one(run, 10, state) {
            Ok(result) => panic!("a mismatched state concluded as {result:?}"),
            Err(error) => error,
        };
        // The cause is kept as the error's source, not only in its text.
        let source = std::error::Error::source(&error)
            .and_then(|s| s.downcast_ref::<Box<EngineError>>())
            .map(|s| matches!(**s, EngineError::Invariant(_)));
        assert_eq!(source, Some(true), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("check 'c'"), "{message}");
        assert!(message.contains("internal error"), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&actual), "{message}");
    }

    fn mean_check() -> DatasetCheckRun {
        one_check_run(
            CheckKind::Mean,
            Evaluation::Statistic {
                statistic: Statistic::Mean,
                input: 0,
                min: None,
                max: None,
            },
            None,
        )
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
        let mean = mean_check();
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

    #[tokio::test]
    async fn checks_conclude_off_the_runtime_like_finish() {
        let run = Arc::new(row_check());
        let state = || CheckState::Row {
            failed: 2,
            null_skipped: 1,
            samples: Samples {
                limit: 0,
                columns: Vec::new(),
                kept: Vec::new(),
            },
        };
        let partitions = || {
            vec![PartitionState {
                rows: 10,
                states: vec![state()],
            }]
        };
        let concluded = run.conclude(partitions()).await.unwrap();
        assert_eq!(concluded, run.finish(partitions()).unwrap());
        assert!(
            !concluded[0].passed && concluded[0].failed == 2,
            "{concluded:?}"
        );
        let error = run
            .conclude(vec![PartitionState {
                rows: 10,
                states: vec![CheckState::Nulls(0)],
            }])
            .await
            .unwrap_err();
        assert!(error.to_string().contains("internal error"), "{error}");
    }

    #[test]
    fn partitions_with_states_of_different_kinds_do_not_merge() {
        let partition = |state| PartitionState {
            rows: 5,
            states: vec![state],
        };
        let message = row_check()
            .finish(vec![
                partition(CheckState::Nulls(1)),
                partition(CheckState::Moments(Moments::default())),
            ])
            .map(|results| format!("{results:?}"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("check 'c': internal error"), "{message}");
        assert!(
            message.contains("Nulls") && message.contains("Moments"),
            "{message}"
        );
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
        let mean = conclude(mean_check());
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
