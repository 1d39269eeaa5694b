//! The distributed Delta writer: a logical node the client puts on top of a dataset's plan, and
//! the execution plan it becomes on the coordinator, which runs each output partition through
//! the same sinks as an embedded run (`PartitionSinks`) on whichever worker computes it: the
//! dataset's checks evaluated batch by batch, valid rows written as Parquet files into the
//! product's table, quarantined rows into the quarantine table.
//!
//! Each partition returns one row: the JSON of its files' `Add` actions, its row counts and its
//! check state. The client collects those rows (a few bytes per file and check, never data),
//! merges the check states and makes the single Delta commit. A task that fails or is cancelled
//! returns nothing, so its files are never committed.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

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

use crate::dq::{CheckProgram, DatasetCheckRun, PartitionChecker};
use crate::error::EngineError;
use crate::publish::{PartitionDone, PartitionSinks, file_writer, leading_nullable_schema};
use serde::{Deserialize, Serialize};

/// What a distributed pass over a dataset does with its rows. Every location is a URL every
/// worker can write to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetWrite {
    /// The product, source or step, for error messages.
    pub dataset: String,
    /// The product's table, when the dataset is published (checked inputs are not).
    pub publish: Option<TableWrite>,
    /// The dataset's checks, when it has any: the input's leading columns are the dataset's,
    /// the rest are check columns.
    pub checks: Option<CheckProgram>,
    /// The quarantine table, when checks quarantine rows.
    pub quarantine_url: Option<String>,
}

/// A table written to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableWrite {
    /// The table's location.
    pub table_url: String,
    /// Partition columns.
    pub partition_by: Vec<String>,
}

/// The schema of what the writer returns: per partition, the `Add` actions (as JSON) of its
/// product files and of its quarantine files, the rows in each, and its check state (JSON).
pub fn written_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("adds", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("quarantine_adds", DataType::Utf8, false),
        Field::new("quarantined", DataType::UInt64, false),
        Field::new("checks", DataType::Utf8, true),
    ]))
}

/// The logical node: write `input` as `target` says.
#[derive(Debug, Clone)]
pub struct DeltaWriteNode {
    input: LogicalPlan,
    target: Arc<DatasetWrite>,
    /// `target` as JSON: what equality, hashing and ordering compare (the checks hold floats).
    key: String,
    schema: DFSchemaRef,
}

impl DeltaWriteNode {
    /// A write of `input` as `target` says.
    pub fn new(input: LogicalPlan, target: DatasetWrite) -> Result<DeltaWriteNode> {
        let schema = Arc::new(DFSchema::try_from(written_files_schema())?);
        let key = serde_json::to_string(&target).map_err(|e| {
            DataFusionError::Internal(format!(
                "'{}': cannot encode the write: {e}",
                target.dataset
            ))
        })?;
        Ok(DeltaWriteNode {
            input,
            target: Arc::new(target),
            key,
            schema,
        })
    }

    /// The node as a logical plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }

    /// What it writes.
    pub fn target(&self) -> &DatasetWrite {
        &self.target
    }
}

impl PartialEq for DeltaWriteNode {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.input == other.input
    }
}

impl Eq for DeltaWriteNode {}

impl Hash for DeltaWriteNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        self.input.hash(state);
    }
}

impl PartialOrd for DeltaWriteNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.key.partial_cmp(&other.key) {
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
        write!(f, "DeltaWrite: {}", describe(&self.target))
    }

    fn with_exprs_and_inputs(
        &self,
        _exprs: Vec<Expr>,
        mut inputs: Vec<LogicalPlan>,
    ) -> Result<Self> {
        let input = inputs.pop().ok_or_else(|| {
            DataFusionError::Internal("DeltaWrite needs exactly one input".to_string())
        })?;
        Ok(DeltaWriteNode {
            input,
            target: Arc::clone(&self.target),
            key: self.key.clone(),
            schema: Arc::clone(&self.schema),
        })
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
            Arc::clone(&write.target),
        ))))
    }
}

/// Checks and writes each input partition; returns one row per partition.
#[derive(Debug)]
pub struct DeltaWriterExec {
    input: Arc<dyn ExecutionPlan>,
    target: Arc<DatasetWrite>,
    properties: Arc<PlanProperties>,
}

impl DeltaWriterExec {
    /// A writer of `input`'s partitions.
    pub fn new(input: Arc<dyn ExecutionPlan>, target: Arc<DatasetWrite>) -> DeltaWriterExec {
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

    /// What it writes.
    pub fn target(&self) -> &DatasetWrite {
        &self.target
    }
}

impl DisplayAs for DeltaWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeltaWriterExec: {}", describe(&self.target))
    }
}

/// `dataset -> table [checks: N, quarantine -> URL]`, for plans as text.
fn describe(target: &DatasetWrite) -> String {
    let mut text = target.dataset.clone();
    if let Some(publish) = &target.publish {
        text.push_str(&format!(" -> {}", publish.table_url));
    }
    if let Some(checks) = &target.checks {
        text.push_str(&format!(", {} checks", checks.checks.len()));
    }
    if let Some(url) = &target.quarantine_url {
        text.push_str(&format!(", quarantine -> {url}"));
    }
    text
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
        Ok(Arc::new(DeltaWriterExec::new(
            input,
            Arc::clone(&self.target),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let target = Arc::clone(&self.target);
        let input_schema = self.input.schema();
        let written = futures::stream::once(async move {
            let failed = |what: &str, e: &dyn fmt::Display| {
                DataFusionError::Execution(format!("'{}': {what}: {e}", target.dataset))
            };
            let done = write_partition(input, &target, &input_schema).await?;
            let encode = |adds: &[Add]| {
                serde_json::to_string(adds).map_err(|e| failed("cannot encode files", &e))
            };
            let checks = done
                .checks
                .map(|state| serde_json::to_string(&state))
                .transpose()
                .map_err(|e| failed("cannot encode the check state", &e))?;
            RecordBatch::try_new(
                written_files_schema(),
                vec![
                    Arc::new(StringArray::from(vec![encode(&done.published.0)?])),
                    Arc::new(UInt64Array::from(vec![done.published.1])),
                    Arc::new(StringArray::from(vec![encode(&done.quarantined.0)?])),
                    Arc::new(UInt64Array::from(vec![done.quarantined.1])),
                    Arc::new(StringArray::from(vec![checks])),
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

/// Runs one partition through its sinks; on failure nothing it wrote is returned (files already
/// rolled over stay uncommitted, for `VACUUM`).
async fn write_partition(
    input: SendableRecordBatchStream,
    target: &DatasetWrite,
    input_schema: &SchemaRef,
) -> Result<PartitionDone> {
    let failed = |what: &str, e: &dyn fmt::Display| {
        DataFusionError::Execution(format!("'{}': {what}: {e}", target.dataset))
    };
    let dataset_columns = target
        .checks
        .as_ref()
        .map_or(input_schema.fields().len(), |c| c.dataset_columns);
    let dataset_schema = leading_nullable_schema(input_schema, dataset_columns);
    let published = target
        .publish
        .as_ref()
        .map(|t| file_writer(&t.table_url, &dataset_schema, &t.partition_by))
        .transpose()
        .map_err(|e| failed("cannot start writing", &e))?;
    let quarantine = target
        .quarantine_url
        .as_ref()
        .map(|url| {
            let schema = DatasetCheckRun::quarantine_schema(&dataset_schema);
            file_writer(url, &schema, &[]).map(|writer| (writer, schema))
        })
        .transpose()
        .map_err(|e| failed("cannot start writing quarantined rows", &e))?;
    let checker = target
        .checks
        .as_ref()
        .map(|program| PartitionChecker::new(Arc::new(program.clone()), input_schema, None))
        .transpose()
        .map_err(|e| DataFusionError::Execution(e.to_string()))?;
    let sinks = PartitionSinks {
        dataset_schema,
        published,
        quarantine,
        checker,
        rows_progress: Arc::new(AtomicU64::new(0)),
    };
    sinks.consume(input).await.map_err(|e| match e {
        // A check's error names the dataset and the check already.
        EngineError::Check { .. } => DataFusionError::Execution(e.to_string()),
        e => DataFusionError::Execution(format!("'{}': {e}", target.dataset)),
    })
}
