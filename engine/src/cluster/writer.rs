//! The distributed Delta writer: a logical node the client puts on top of a product's plan, and
//! the execution plan it becomes on the coordinator, which writes each output partition's rows
//! as Parquet files into the table's location on whichever worker runs the partition.
//!
//! Each partition returns one row: the JSON of its files' `Add` actions and its row count. The
//! client collects those rows (a few bytes per file, never data) and makes the single Delta
//! commit. A task that fails or is cancelled returns nothing, so its files are never committed.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};
use deltalake::kernel::Add;
use deltalake::writer::DeltaWriter;
use futures::StreamExt;

use crate::publish::{file_writer, leading_nullable_schema};
use serde::{Deserialize, Serialize};

/// Where a distributed write goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct WriteTarget {
    /// The product (or dataset) written, for error messages.
    pub dataset: String,
    /// The table's location (a URL every worker can write to).
    pub table_url: String,
    /// Partition columns.
    pub partition_by: Vec<String>,
}

/// The schema of what the writer returns: per partition, its files' `Add` actions as JSON and
/// the rows in them.
pub fn written_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("adds", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
    ]))
}

/// The logical node: write `input` to `target`.
#[derive(Debug, Clone)]
pub struct DeltaWriteNode {
    input: LogicalPlan,
    target: WriteTarget,
    schema: DFSchemaRef,
}

impl DeltaWriteNode {
    /// A write of `input` to `target`.
    pub fn new(input: LogicalPlan, target: WriteTarget) -> Result<DeltaWriteNode> {
        let schema = Arc::new(DFSchema::try_from(written_files_schema())?);
        Ok(DeltaWriteNode {
            input,
            target,
            schema,
        })
    }

    /// The node as a logical plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }

    /// Where it writes.
    pub fn target(&self) -> &WriteTarget {
        &self.target
    }
}

impl PartialEq for DeltaWriteNode {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target && self.input == other.input
    }
}

impl Eq for DeltaWriteNode {}

impl Hash for DeltaWriteNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.target.hash(state);
        self.input.hash(state);
    }
}

impl PartialOrd for DeltaWriteNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.target.partial_cmp(&other.target) {
            Some(Ordering::Equal) => self.input.partial_cmp(&other.input),
            ordering => ordering,
        }
    }
}

impl UserDefinedLogicalNodeCore for DeltaWriteNode {
    fn name(&self) -> &str {
        "DeltaWrite"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DeltaWrite: {} -> {}",
            self.target.dataset, self.target.table_url
        )
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs.pop().ok_or_else(|| {
            DataFusionError::Internal("DeltaWrite needs exactly one input".to_string())
        })?;
        DeltaWriteNode::new(input, self.target.clone())
    }
}

/// Plans [`DeltaWriteNode`] as [`DeltaWriterExec`].
#[derive(Debug, Default)]
pub struct DeltaWritePlanner;

#[async_trait]
impl ExtensionPlanner for DeltaWritePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session_state: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(write) = node.as_any().downcast_ref::<DeltaWriteNode>() else {
            return Ok(None);
        };
        let [input] = physical_inputs else {
            return Err(DataFusionError::Internal(
                "DeltaWrite needs exactly one input".to_string(),
            ));
        };
        Ok(Some(Arc::new(DeltaWriterExec::new(
            Arc::clone(input),
            write.target.clone(),
        ))))
    }
}

/// Writes each input partition to the target table; returns one row per partition.
#[derive(Debug)]
pub struct DeltaWriterExec {
    input: Arc<dyn ExecutionPlan>,
    target: WriteTarget,
    properties: Arc<PlanProperties>,
}

impl DeltaWriterExec {
    /// A writer of `input`'s partitions.
    pub fn new(input: Arc<dyn ExecutionPlan>, target: WriteTarget) -> DeltaWriterExec {
        let partitions = input.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(written_files_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DeltaWriterExec {
            input,
            target,
            properties: Arc::new(properties),
        }
    }

    /// Where it writes.
    pub fn target(&self) -> &WriteTarget {
        &self.target
    }
}

impl DisplayAs for DeltaWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DeltaWriterExec: {} -> {}",
            self.target.dataset, self.target.table_url
        )
    }
}

impl ExecutionPlan for DeltaWriterExec {
    fn name(&self) -> &str {
        "DeltaWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // More partitions means more parallel writers, never a different answer.
        vec![true]
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.pop().ok_or_else(|| {
            DataFusionError::Internal("DeltaWriterExec needs exactly one input".to_string())
        })?;
        Ok(Arc::new(DeltaWriterExec::new(input, self.target.clone())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let target = self.target.clone();
        let input_schema = self.input.schema();
        let file_schema = leading_nullable_schema(&input_schema, input_schema.fields().len());
        let written = futures::stream::once(async move {
            let (adds, rows) = write_partition(input, &target, file_schema).await?;
            let json = serde_json::to_string(&adds).map_err(|e| {
                DataFusionError::Execution(format!(
                    "'{}': cannot encode files: {e}",
                    target.dataset
                ))
            })?;
            RecordBatch::try_new(
                written_files_schema(),
                vec![
                    Arc::new(StringArray::from(vec![json])),
                    Arc::new(UInt64Array::from(vec![rows])),
                ],
            )
            .map_err(DataFusionError::from)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            written_files_schema(),
            written,
        )))
    }
}

/// Writes one partition's batches; on failure nothing it wrote is returned (files already
/// rolled over stay uncommitted, for `VACUUM`).
async fn write_partition(
    mut input: SendableRecordBatchStream,
    target: &WriteTarget,
    file_schema: SchemaRef,
) -> Result<(Vec<Add>, u64)> {
    let failed = |what: &str, e: &dyn fmt::Display| {
        DataFusionError::Execution(format!("'{}': {what}: {e}", target.dataset))
    };
    let mut writer = file_writer(&target.table_url, &file_schema, &target.partition_by)
        .map_err(|e| failed("cannot start writing", &e))?;
    let mut rows = 0u64;
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = RecordBatch::try_new(Arc::clone(&file_schema), batch.columns().to_vec())
            .map_err(|e| failed("unexpected batch", &e))?;
        rows += batch.num_rows() as u64;
        writer
            .write(batch)
            .await
            .map_err(|e| failed("cannot write files", &e))?;
    }
    let adds = writer
        .flush()
        .await
        .map_err(|e| failed("cannot finish files", &e))?;
    Ok((adds, rows))
}
