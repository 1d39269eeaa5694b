//! One output partition's side of a dataset's checks: batch by batch, a [`PartitionChecker`]
//! counts failing and NULL predicates, samples failing rows, feeds the statistics and collects
//! `unique` keys, and splits the rows into published and quarantined ones. Its
//! [`PartitionState`] is merged with the other partitions' when the stream ends.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::row::RowConverter;
use lakeforge_planner::{CheckAction, NullPolicy};

use crate::dq::keys::{KeyResources, KeySet};
use crate::dq::state::{
    BatchMoments, CheckState, PartitionState, Samples, column_types, row_converter,
};
use crate::dq::{CheckProgram, CheckStep, Measure};
use crate::error::{EngineError, Result};

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
    ) -> Result<PartitionChecker> {
        let mut converters = Vec::with_capacity(program.checks.len());
        let mut states = Vec::with_capacity(program.checks.len());
        for step in &program.checks {
            let in_check = |source| program.check_error(step, source);
            match &step.measure {
                Measure::Predicate {
                    sample_columns,
                    samples,
                    ..
                } => {
                    let types = column_types(schema, sample_columns).map_err(in_check)?;
                    let converter = row_converter(&types).map_err(in_check)?;
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
                    let types = column_types(schema, columns).map_err(in_check)?;
                    converters.push(Some(row_converter(&types).map_err(in_check)?));
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
    ) -> Result<Split> {
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
            let in_check = |source| program.check_error(step, source);
            match (&step.measure, state) {
                (
                    Measure::Predicate { predicate, .. },
                    CheckState::Row {
                        failed,
                        null_skipped,
                        samples,
                    },
                ) => {
                    let predicate = as_boolean(batch.column(*predicate)).map_err(in_check)?;
                    let failing = failing_rows(&predicate, step.nulls);
                    let count = failing.count_set_bits() as u64;
                    *failed += count;
                    if step.nulls == NullPolicy::Pass {
                        *null_skipped += predicate.null_count() as u64;
                    }
                    if count > 0 {
                        if let Some(converter) = converter {
                            samples
                                .offer(converter, batch, &failing)
                                .map_err(in_check)?;
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
                (Measure::Column { input, .. }, state) => state
                    .observe(batch.column(*input), &mut batch_moments)
                    .map_err(in_check)?,
                (Measure::Keys { columns, .. }, CheckState::Keys(keys)) => {
                    if let Some(converter) = converter {
                        keys.observe(converter, batch, columns).map_err(in_check)?;
                    }
                }
                (Measure::Nothing, CheckState::Nothing) => {}
                // Failing closed: a state that does not belong to its check's measure would
                // count nothing, and the check could pass on rows it never saw.
                (measure, state) => {
                    return Err(in_check(EngineError::Invariant(format!(
                        "a {:?} state for a check that measures {}",
                        state.kind(),
                        measure.describe()
                    ))));
                }
            }
            failing_masks.push(failing_mask);
        }

        let dataset = RecordBatch::try_new(
            Arc::clone(dataset_schema),
            batch.columns()[..program.dataset_columns].to_vec(),
        )
        .map_err(|e| {
            program.dataset_error(EngineError::arrow("cannot separate the checked rows", e))
        })?;
        let Some(removed) = removed else {
            return Ok(Split {
                valid: dataset,
                quarantined: None,
            });
        };
        let keep = BooleanArray::new(!&removed, None);
        let valid = filter_record_batch(&dataset, &keep).map_err(|e| {
            program.dataset_error(EngineError::arrow("cannot remove the failing rows", e))
        })?;
        let quarantined = match (quarantined, quarantine_schema) {
            (Some(mask), Some(schema)) => Some(
                quarantine_batch(
                    &dataset,
                    &mask,
                    &program.checks,
                    &failing_masks,
                    &program.run_id,
                    schema,
                )
                .map_err(|e| program.dataset_error(e))?,
            ),
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
) -> Result<RecordBatch> {
    let selected = BooleanArray::new(mask.clone(), None);
    let rows = filter_record_batch(dataset, &selected)
        .map_err(|e| EngineError::arrow("cannot select the quarantined rows", e))?;
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
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| EngineError::arrow("cannot build the quarantined rows", e))
}

fn as_boolean(array: &ArrayRef) -> Result<BooleanArray> {
    if let Some(values) = array.as_boolean_opt() {
        return Ok(values.clone());
    }
    arrow::compute::cast(array, &DataType::Boolean)
        .map(|a| a.as_boolean().clone())
        .map_err(|e| EngineError::arrow("the check's predicate is not boolean", e))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
