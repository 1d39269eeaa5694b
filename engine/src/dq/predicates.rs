//! How the check projection's predicates are evaluated in embedded runs.
//!
//! DataFusion evaluates the checked plan's root projection, one column per row-level check,
//! expression by expression over the whole batch. Three rewrites of that projection cut what
//! the checks cost beyond reading the data:
//! - comparisons of a column with literals, `BETWEEN` included, run as one kernel
//!   ([`RangePredicate`](crate::dq::ranges::RangePredicate));
//! - subexpressions that read a single low-cardinality column run once per distinct value
//!   ([`DistinctValuePredicate`](crate::dq::distinct::DistinctValuePredicate));
//! - a predicate with `AND`, `OR` or `CASE` sees only the columns it reads
//!   ([`NarrowedPredicate`]). Those operators evaluate their right-hand side on the rows the
//!   left-hand side leaves open by filtering the batch, and filtering a dataset's 30-odd
//!   columns for a predicate of two is most of the predicate's cost.
//!
//! Both are plain [`PhysicalExpr`]s without a protobuf form, so the cluster, which ships its
//! plans to executors, keeps DataFusion's own evaluation.
//!
//! The rewritten projection runs as a [`CheckProjectionExec`]: the same expressions evaluated
//! the same way, without the per-batch accounting of `ProjectionExec` (a timer per expression,
//! and the output batch's memory counted buffer by buffer through a hash set: with a column
//! per check, that costs as much as a few checks).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CaseExpr, Column};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::dq::distinct::memoize;
use crate::dq::ranges::fuse_ranges;

/// Rewrites the check projection at the root of an embedded checked plan: every check column
/// (those after the first `dataset_columns`) is narrowed and memoized where that pays (see
/// the module documentation). A plan whose root is not a projection is returned unchanged.
pub(crate) fn rewrite_check_projection(
    plan: Arc<dyn ExecutionPlan>,
    dataset_columns: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(projection) = plan.downcast_ref::<ProjectionExec>() else {
        return Ok(plan);
    };
    let input_schema = projection.input().schema();
    let mut changed = false;
    let mut exprs = Vec::with_capacity(projection.expr().len());
    for (index, projected) in projection.expr().iter().enumerate() {
        let expr = if index < dataset_columns {
            Arc::clone(&projected.expr)
        } else {
            let rewritten = rewrite_predicate(Arc::clone(&projected.expr), &input_schema)?;
            changed |= rewritten.transformed;
            rewritten.data
        };
        exprs.push(ProjectionExpr {
            expr,
            alias: projected.alias.clone(),
        });
    }
    if !changed {
        return Ok(plan);
    }
    let rewritten = ProjectionExec::try_new(exprs, Arc::clone(projection.input()))?;
    Ok(Arc::new(CheckProjectionExec::new(&rewritten)))
}

/// The check projection of an embedded run: a `ProjectionExec`'s expressions and properties,
/// evaluated batch by batch with only the output rows and the compute time recorded.
#[derive(Debug)]
pub(crate) struct CheckProjectionExec {
    exprs: Vec<ProjectionExpr>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CheckProjectionExec {
    fn new(projection: &ProjectionExec) -> CheckProjectionExec {
        CheckProjectionExec {
            exprs: projection.expr().to_vec(),
            input: Arc::clone(projection.input()),
            properties: Arc::clone(projection.properties()),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for CheckProjectionExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CheckProjectionExec: expr=[")?;
        for (index, projected) in self.exprs.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            write!(f, "{separator}{} as {}", projected.expr, projected.alias)?;
        }
        write!(f, "]")
    }
}

impl ExecutionPlan for CheckProjectionExec {
    fn name(&self) -> &str {
        "CheckProjectionExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for projected in &self.exprs {
            if f(&projected.expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return Err(DataFusionError::Internal(
                "CheckProjectionExec needs exactly one input".to_string(),
            ));
        };
        // Through DataFusion's projection, so that the properties follow the new input.
        let projection = ProjectionExec::try_new(self.exprs.clone(), input)?;
        Ok(Arc::new(CheckProjectionExec::new(&projection)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = self.schema();
        let exprs: Vec<Arc<dyn PhysicalExpr>> =
            self.exprs.iter().map(|p| Arc::clone(&p.expr)).collect();
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let compute = MetricBuilder::new(&self.metrics).elapsed_compute(partition);
        let output = Arc::clone(&schema);
        let projected = input.map(move |batch| {
            let batch = batch?;
            let _timer = compute.timer();
            let rows = batch.num_rows();
            let columns = exprs
                .iter()
                .map(|expr| expr.evaluate(&batch)?.into_array(rows))
                .collect::<Result<Vec<_>>>()?;
            output_rows.add(rows);
            let options = RecordBatchOptions::new().with_row_count(Some(rows));
            Ok(RecordBatch::try_new_with_options(
                Arc::clone(&output),
                columns,
                &options,
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, projected)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One check column's expression: comparisons with literals fused, then narrowed when it
/// filters batches, and memoized where it reads one column.
fn rewrite_predicate(
    expr: Arc<dyn PhysicalExpr>,
    schema: &SchemaRef,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    fuse_ranges(expr, schema)?.transform_data(|expr| {
        match NarrowedPredicate::try_new(&expr, schema)? {
            Some(narrowed) => Ok(Transformed::yes(Arc::new(narrowed) as Arc<dyn PhysicalExpr>)),
            None => memoize(expr, schema),
        }
    })
}

/// A predicate evaluated on a batch of only the columns it reads.
#[derive(Debug)]
pub(crate) struct NarrowedPredicate {
    /// The expression as planned, over the whole batch (for display and equality).
    planned: Arc<dyn PhysicalExpr>,
    /// The columns it reads, in the whole batch, ascending.
    columns: Vec<usize>,
    /// The narrow batch's schema: those columns' fields.
    schema: SchemaRef,
    /// The expression over the narrow batch, memoized where it pays.
    on_narrow: Arc<dyn PhysicalExpr>,
}

impl NarrowedPredicate {
    /// The narrowed form of `expr` when it holds an `AND`, `OR` or `CASE` (which filter the
    /// batch for their later operands) and reads fewer columns than the batch has.
    pub(crate) fn try_new(
        expr: &Arc<dyn PhysicalExpr>,
        schema: &SchemaRef,
    ) -> Result<Option<Self>> {
        let mut columns = Vec::new();
        let mut filters_batches = false;
        expr.apply(|node| {
            filters_batches |= node.is::<CaseExpr>()
                || node
                    .downcast_ref::<BinaryExpr>()
                    .is_some_and(|binary| matches!(binary.op(), Operator::And | Operator::Or));
            if let Some(column) = node.downcast_ref::<Column>() {
                columns.push(column.index());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        columns.sort_unstable();
        columns.dedup();
        if !filters_batches || columns.len() >= schema.fields().len() {
            return Ok(None);
        }
        let narrow_schema = Arc::new(schema.project(&columns)?);
        let on_narrow = Arc::clone(expr)
            .transform(|node| match node.downcast_ref::<Column>() {
                Some(read) => {
                    // `columns` holds every index the expression reads (collected above).
                    let narrow_index = columns.binary_search(&read.index()).unwrap_or_default();
                    Ok(Transformed::yes(
                        Arc::new(Column::new(read.name(), narrow_index)) as Arc<dyn PhysicalExpr>,
                    ))
                }
                None => Ok(Transformed::no(node)),
            })?
            .data;
        let on_narrow = memoize(on_narrow, &narrow_schema)?.data;
        Ok(Some(Self {
            planned: Arc::clone(expr),
            columns,
            schema: narrow_schema,
            on_narrow,
        }))
    }
}

impl fmt::Display for NarrowedPredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [on its columns]", self.on_narrow)
    }
}

impl PartialEq for NarrowedPredicate {
    fn eq(&self, other: &Self) -> bool {
        self.planned.eq(&other.planned)
    }
}

impl Eq for NarrowedPredicate {}

impl Hash for NarrowedPredicate {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.planned.hash(state);
    }
}

impl PhysicalExpr for NarrowedPredicate {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        self.on_narrow.data_type(&self.schema)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        self.on_narrow.nullable(&self.schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let columns = self
            .columns
            .iter()
            .map(|&index| Arc::clone(batch.column(index)))
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let narrow =
            RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        self.on_narrow.evaluate(&narrow)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        // A leaf for the optimizer, like `DistinctValuePredicate`: put in place after physical
        // optimization, with column indices that must not be remapped.
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self)
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.planned.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, Int32Array, StringViewArray};
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{IsNotNullExpr, lit};

    fn column(name: &str, schema: &Schema) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new_with_schema(name, schema).unwrap())
    }

    #[test]
    fn narrowed_predicates_evaluate_like_the_planned_ones() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("plan", DataType::Utf8View, true),
            Field::new("unused", DataType::Int32, true),
            Field::new("spend", DataType::Float64, true),
        ]));
        let rows = 5000;
        let plans = ["premium", "basic", "standard"];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from_iter_values(0..rows)),
            // Mostly premium, so `plan = 'premium' OR ...` pre-selects the rest.
            Arc::new(StringViewArray::from_iter((0..rows).map(|i| {
                (i % 11 != 0).then(|| {
                    if i % 7 == 0 {
                        plans[(i % 3) as usize]
                    } else {
                        plans[0]
                    }
                })
            }))),
            Arc::new(Int32Array::from_iter(
                (0..rows).map(|i| (i % 2 == 0).then_some(i)),
            )),
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (i % 13 != 0).then_some(f64::from(i % 100_000) * 17.5)),
            )),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
        // `(plan = 'premium' OR spend < 50000) AND id IS NOT NULL`
        let premium = lit(datafusion::common::ScalarValue::Utf8View(Some(
            "premium".into(),
        )));
        let planned: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(
                Arc::new(BinaryExpr::new(
                    column("plan", &schema),
                    Operator::Eq,
                    premium,
                )),
                Operator::Or,
                Arc::new(BinaryExpr::new(
                    column("spend", &schema),
                    Operator::Lt,
                    lit(50_000.0),
                )),
            )),
            Operator::And,
            Arc::new(IsNotNullExpr::new(column("id", &schema))),
        ));
        let narrowed = NarrowedPredicate::try_new(&planned, &schema)
            .unwrap()
            .expect("an OR over three of four columns is narrowed");
        assert_eq!(narrowed.columns, vec![0, 1, 3]);
        assert_eq!(
            narrowed.to_string(),
            "(plan@1 = premium [per distinct value] OR spend@2 < 50000) AND id@0 IS NOT NULL \
             [on its columns]"
        );
        let expected = planned.evaluate(&batch).unwrap().into_array(0).unwrap();
        let actual = narrowed.evaluate(&batch).unwrap().into_array(0).unwrap();
        assert_eq!(actual.as_ref(), expected.as_ref());
        assert_eq!(
            narrowed.data_type(&schema).unwrap(),
            planned.data_type(&schema).unwrap()
        );
        // A plain comparison filters nothing: left as planned.
        let plain: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            column("spend", &schema),
            Operator::Lt,
            lit(5.0),
        ));
        assert!(
            NarrowedPredicate::try_new(&plain, &schema)
                .unwrap()
                .is_none()
        );
    }
}
