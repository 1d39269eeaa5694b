//! Publishing products as Delta table versions, in two phases.
//!
//! 1. [`stage_product`] executes a product's plan and writes its Parquet files into the table
//!    location, one writer per output partition, running in parallel. Nothing is committed: the
//!    files are invisible to every Delta reader.
//! 2. [`commit_product`] makes ONE Delta commit with those files (plus the removes of an
//!    overwrite and the metadata of a schema change) and Lakeforge's [`CommitMetadata`].
//!
//! A run stages every product before it commits any, so a failure while computing any product
//! publishes nothing; [`discard_staged`] deletes the files of a run that will not commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::common::Column;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, cast, col};
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt, StructType, Transaction, new_metadata};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::{StreamExt, TryStreamExt};
use lakeforge_planner::WriteMode;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tokio::task::JoinSet;
use url::Url;

use crate::cancel::RunCancellation;
use crate::delta::open_existing;
use crate::dq::keys::KeyResources;
use crate::dq::predicates::rewrite_check_projection;
use crate::dq::{CheckResult, DatasetCheckRun, PartitionChecker, PartitionState};
use crate::error::{EngineError, Result};
use crate::location::display_location;
use crate::metadata::{COMMIT_INFO_KEY, CommitMetadata};
use crate::storage::describe_error;

/// Files roll over at this size, so large products become many files readers can split.
const TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// Where and how a product is published.
#[derive(Debug, Clone)]
pub struct ProductTarget {
    /// The product's name.
    pub name: String,
    /// The table's location.
    pub url: Url,
    /// Overwrite or append.
    pub mode: WriteMode,
    /// Partition columns.
    pub partition_by: Vec<String>,
    /// Stored as the table's description.
    pub description: Option<String>,
    /// Stored in the table's configuration as `lakeforge.owner`.
    pub owner: Option<String>,
}

/// A product whose plan is ready to run against its target table: the output cast to types
/// Delta can hold, and checked against the existing table. Preparing reads no data.
#[derive(Debug)]
pub struct PreparedProduct {
    /// The target.
    pub target: ProductTarget,
    /// The product's plan with a final projection to Delta-compatible types.
    pub plan: LogicalPlan,
    /// The Arrow schema of the files (all columns nullable, as Delta readers expect).
    pub schema: SchemaRef,
    /// The table as it is now, when it exists.
    pub existing: Option<DeltaTable>,
    /// The product's checks, evaluated while its files are written.
    pub checks: Option<Arc<DatasetCheckRun>>,
    /// Where rows its checks quarantine go.
    pub quarantine: Option<QuarantineTarget>,
}

/// A quarantine table: `WAREHOUSE/_lakeforge/quarantine/<dataset>`, appended to by every run
/// that quarantines rows of the dataset.
#[derive(Debug, Clone)]
pub struct QuarantineTarget {
    /// The table, as a publishing target (append mode).
    pub target: ProductTarget,
    /// `failed_checks`, `run_id`, then the dataset's columns.
    pub schema: SchemaRef,
    /// The table as it is now, when it exists.
    pub existing: Option<DeltaTable>,
}

/// Files written but not committed.
#[derive(Debug, Default, Clone)]
pub struct StagedFiles {
    /// The files.
    pub adds: Vec<Add>,
    /// Rows in them.
    pub rows: u64,
    /// Their total size.
    pub bytes: u64,
}

impl StagedFiles {
    /// Files and the rows in them (their size summed from the actions).
    pub fn new(adds: Vec<Add>, rows: u64) -> StagedFiles {
        let bytes = adds
            .iter()
            .map(|a| u64::try_from(a.size).unwrap_or(0))
            .sum();
        StagedFiles { adds, rows, bytes }
    }
}

/// A product whose files are written but not committed.
#[derive(Debug)]
pub struct StagedProduct {
    /// The prepared product.
    pub prepared: PreparedProduct,
    /// The files written.
    pub adds: Vec<Add>,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Quarantined rows written, when checks quarantined any.
    pub quarantine: Option<(QuarantineTarget, StagedFiles)>,
    /// The product's check results.
    pub check_results: Vec<CheckResult>,
}

/// An input dataset (source or step) after its check pass.
#[derive(Debug)]
pub struct CheckedInput {
    /// The check results.
    pub results: Vec<CheckResult>,
    /// Quarantined rows written, when checks quarantined any.
    pub quarantine: Option<(QuarantineTarget, StagedFiles)>,
}

/// Casts the product's plan to Delta types and checks it against the table at the target.
///
/// `dataset_columns` is how many leading columns of `plan` are the product's (the rest are
/// check columns, left as they are); `None` means all of them.
pub async fn prepare_product(
    target: ProductTarget,
    plan: LogicalPlan,
    dataset_columns: Option<usize>,
) -> Result<PreparedProduct> {
    let product = target.name.clone();
    let columns = dataset_columns.unwrap_or(plan.schema().fields().len());
    let plan = cast_to_delta_types(&product, plan, columns)?;
    let schema = leading_nullable_schema(plan.schema().as_arrow(), columns);
    let existing = open_existing(&target.url).await?;
    match &existing {
        Some(table) => check_against_table(&target, &schema, table)?,
        None => ensure_no_foreign_files(&target).await?,
    }
    Ok(PreparedProduct {
        target,
        plan,
        schema,
        existing,
        checks: None,
        quarantine: None,
    })
}

/// Refuses to create a table where files already are: a folder that holds someone else's
/// files, turned into a Delta table, would have them deleted by a later VACUUM (they are not
/// in the log). An empty or missing folder is fine.
async fn ensure_no_foreign_files(target: &ProductTarget) -> Result<()> {
    let location = display_location(&target.url);
    let table = deltalake::DeltaTableBuilder::from_url(target.url.clone())
        .and_then(|b| b.build())
        .map_err(|e| EngineError::delta(format!("cannot open {location}"), e))?;
    let store = table.object_store();
    let mut listing = store.list(None);
    let first = loop {
        match listing.try_next().await {
            // A Delta log without a readable version is a concurrent writer creating the
            // table right now: its commit and ours are settled by the log's put-if-absent,
            // not refused here.
            Ok(Some(object)) if object.location.as_ref().starts_with("_delta_log/") => {}
            Ok(first) => break first,
            // Nothing there at all (a local folder that does not exist yet lists as an error
            // on some stores): nothing to protect.
            Err(object_store::Error::NotFound { .. }) => break None,
            Err(error) => {
                return Err(EngineError::product(
                    &target.name,
                    format!("cannot list {location}: {error}"),
                ));
            }
        }
    };
    match first {
        None => Ok(()),
        Some(object) => Err(EngineError::product(
            &target.name,
            format!(
                "{location} is not a Delta table but already holds files (e.g. {}); Lakeforge \
                 will not create a table among them, since a later VACUUM would delete them: \
                 choose another path or move the files away",
                object.location
            ),
        )),
    }
}

/// The schema the first `columns` columns of `plan` are written with: Delta types, nullable.
pub fn delta_compatible_schema(
    dataset: &str,
    plan: &LogicalPlan,
    columns: usize,
) -> Result<SchemaRef> {
    let cast = cast_to_delta_types(dataset, plan.clone(), columns)?;
    Ok(leading_nullable_schema(cast.schema().as_arrow(), columns))
}

/// Locates a dataset's quarantine table and checks that rows of `dataset_schema` can be
/// appended to it.
pub async fn prepare_quarantine(
    url: Url,
    dataset: &str,
    dataset_schema: &Schema,
) -> Result<QuarantineTarget> {
    let target = ProductTarget {
        name: format!("quarantine of {dataset}"),
        url,
        mode: WriteMode::Append,
        partition_by: Vec::new(),
        description: Some(format!("Rows of '{dataset}' that failed quarantine checks")),
        owner: None,
    };
    let schema = DatasetCheckRun::quarantine_schema(dataset_schema);
    let existing = open_existing(&target.url).await?;
    if let Some(table) = &existing {
        check_against_table(&target, &schema, table)?;
    }
    Ok(QuarantineTarget {
        target,
        schema,
        existing,
    })
}

/// Runs an input dataset's checks (one pass over its checked plan), writing quarantined rows
/// but committing nothing.
pub async fn check_input(
    ctx: &SessionContext,
    checks: Arc<DatasetCheckRun>,
    quarantine: Option<QuarantineTarget>,
    cancel: &RunCancellation,
) -> Result<CheckedInput> {
    let dataset = checks.checked.dataset.clone();
    let columns = checks.checked.dataset_columns;
    let plan = input_check_plan(&checks, quarantine.is_some())?;
    let dataset_schema = leading_nullable_schema(plan.schema().as_arrow(), columns);
    let outputs = PassOutputs {
        target: None,
        dataset_schema: &dataset_schema,
        checks: Some(&checks),
        quarantine: quarantine.as_ref(),
    };
    let streamed = stream_to_tables(
        ctx,
        &dataset,
        &plan,
        outputs,
        Arc::new(AtomicU64::new(0)),
        cancel,
    )
    .await?;
    checked_input(&checks, quarantine, streamed).await
}

/// An input's check pass as its writers left it: the partitions' check states merged into
/// results. When they cannot be merged, the quarantined rows are deleted and the error returned.
pub(crate) async fn checked_input(
    checks: &Arc<DatasetCheckRun>,
    quarantine: Option<QuarantineTarget>,
    streamed: Streamed,
) -> Result<CheckedInput> {
    let mut checked = CheckedInput {
        results: Vec::new(),
        quarantine: with_quarantined(quarantine, streamed.quarantined),
    };
    match checks.conclude(streamed.checks).await {
        Ok(results) => {
            checked.results = results;
            Ok(checked)
        }
        Err(error) => {
            discard_input(&checked).await;
            Err(error)
        }
    }
}

/// The quarantine table with the files written to it, when any rows were quarantined.
fn with_quarantined(
    target: Option<QuarantineTarget>,
    files: StagedFiles,
) -> Option<(QuarantineTarget, StagedFiles)> {
    target.filter(|_| files.rows > 0).map(|q| (q, files))
}

/// The plan an input dataset's check pass runs. Only quarantined rows are written: without a
/// quarantine table the dataset's columns are merely read (for samples), so they keep their
/// types (no Utf8View-to-Utf8 copies).
pub(crate) fn input_check_plan(checks: &DatasetCheckRun, quarantines: bool) -> Result<LogicalPlan> {
    let checked = &checks.checked;
    if quarantines {
        cast_to_delta_types(
            &checked.dataset,
            checked.plan.clone(),
            checked.dataset_columns,
        )
    } else {
        Ok(checked.plan.clone())
    }
}

/// Runs the prepared product's plan and writes its files, one writer per output partition,
/// evaluating its checks (and writing quarantined rows) in the same pass.
///
/// `rows_progress` is incremented as rows are written, for progress displays. On failure every
/// file this call wrote is deleted (best effort) and nothing is committed.
pub async fn stage_product(
    ctx: &SessionContext,
    prepared: PreparedProduct,
    rows_progress: Arc<AtomicU64>,
    cancel: &RunCancellation,
) -> Result<StagedProduct> {
    let product = prepared.target.name.clone();
    let outputs = PassOutputs {
        target: Some(&prepared.target),
        dataset_schema: &prepared.schema,
        checks: prepared.checks.as_ref(),
        quarantine: prepared.quarantine.as_ref(),
    };
    let streamed = stream_to_tables(
        ctx,
        &product,
        &prepared.plan,
        outputs,
        rows_progress,
        cancel,
    )
    .await?;
    staged_product(prepared, streamed).await
}

/// A product as its writers left it, embedded or on a cluster: files staged, the partitions'
/// check states merged into results. When they cannot be merged, the files are deleted and the
/// error returned.
pub(crate) async fn staged_product(
    prepared: PreparedProduct,
    streamed: Streamed,
) -> Result<StagedProduct> {
    let quarantine = with_quarantined(prepared.quarantine.clone(), streamed.quarantined);
    let mut staged = StagedProduct {
        prepared,
        adds: streamed.published.adds,
        rows: streamed.published.rows,
        bytes: streamed.published.bytes,
        quarantine,
        check_results: Vec::new(),
    };
    let Some(checks) = &staged.prepared.checks else {
        return Ok(staged);
    };
    match checks.conclude(streamed.checks).await {
        Ok(results) => {
            staged.check_results = results;
            Ok(staged)
        }
        Err(error) => {
            discard_staged(&staged).await;
            Err(error)
        }
    }
}

/// What a pass over a dataset wrote, from every output partition.
pub(crate) struct Streamed {
    /// The product's files.
    pub published: StagedFiles,
    /// The quarantine table's files.
    pub quarantined: StagedFiles,
    /// Each partition's check state (none without checks).
    pub checks: Vec<PartitionState>,
}

/// Where a pass over a dataset writes, and what it checks on the way.
struct PassOutputs<'a> {
    /// The product's table (none for a checked source or step, which publishes nothing).
    target: Option<&'a ProductTarget>,
    /// The dataset's columns as published.
    dataset_schema: &'a SchemaRef,
    /// The checks evaluated in the pass.
    checks: Option<&'a Arc<DatasetCheckRun>>,
    /// Where quarantined rows go.
    quarantine: Option<&'a QuarantineTarget>,
}

/// Executes `plan` partition by partition: checks evaluated per batch, valid rows written to
/// `target` (when publishing), quarantined rows to `quarantine`. On failure, every file written
/// is deleted and the error names `dataset`.
async fn stream_to_tables(
    ctx: &SessionContext,
    dataset: &str,
    plan: &LogicalPlan,
    outputs: PassOutputs<'_>,
    rows_progress: Arc<AtomicU64>,
    cancel: &RunCancellation,
) -> Result<Streamed> {
    let PassOutputs {
        target,
        dataset_schema,
        checks,
        quarantine,
    } = outputs;
    let physical = ctx.state().create_physical_plan(plan).await.map_err(|e| {
        EngineError::product(dataset, format!("cannot plan: {}", e.strip_backtrace()))
    })?;
    let physical = match checks {
        Some(checks) => rewrite_check_projection(physical, checks.checked.dataset_columns)
            .map_err(|e| {
                EngineError::product(dataset, format!("cannot plan: {}", e.strip_backtrace()))
            })?,
        None => physical,
    };
    let partitions = physical.output_partitioning().partition_count();
    let task_ctx = ctx.task_ctx();
    let key_resources = KeyResources {
        pool: Arc::clone(task_ctx.memory_pool()),
        disk: Arc::clone(&task_ctx.runtime_env().disk_manager),
    };
    let new_writer = |url: &Url, schema: &SchemaRef, partition_by: &[String]| {
        file_writer(url.as_str(), schema, partition_by)
            .map_err(|e| EngineError::delta(format!("'{dataset}': cannot start writing"), e))
    };
    let mut writers = JoinSet::new();
    for partition in 0..partitions {
        let stream = physical
            .execute(partition, Arc::clone(&task_ctx))
            .map_err(|e| EngineError::product(dataset, e.strip_backtrace()))?;
        let sinks = PartitionSinks {
            dataset_schema: Arc::clone(dataset_schema),
            published: target
                .map(|t| new_writer(&t.url, dataset_schema, &t.partition_by))
                .transpose()?,
            quarantine: quarantine
                .map(|q| {
                    Ok::<_, EngineError>((
                        new_writer(&q.target.url, &q.schema, &[])?,
                        Arc::clone(&q.schema),
                    ))
                })
                .transpose()?,
            checker: checks
                .map(|c| c.partition(physical.schema().as_ref(), Some(&key_resources)))
                .transpose()?,
            rows_progress: Arc::clone(&rows_progress),
        };
        writers.spawn(sinks.consume(stream));
    }

    let mut published = Vec::new();
    let mut quarantined = Vec::new();
    let (mut published_rows, mut quarantined_rows) = (0, 0);
    let mut check_states = Vec::new();
    let mut failure = None;
    let mut cancelled = false;
    loop {
        let joined = tokio::select! {
            biased;
            _ = cancel.cancelled(), if !cancelled => {
                cancelled = true;
                writers.abort_all();
                continue;
            }
            joined = writers.join_next() => joined,
        };
        let Some(joined) = joined else { break };
        match joined {
            Ok(Ok(done)) => {
                published.extend(done.published.0);
                published_rows += done.published.1;
                quarantined.extend(done.quarantined.0);
                quarantined_rows += done.quarantined.1;
                check_states.extend(done.checks);
            }
            Ok(Err(error)) => {
                failure.get_or_insert(error);
                writers.abort_all();
            }
            Err(join_error) if join_error.is_cancelled() => {}
            Err(join_error) => {
                failure.get_or_insert(EngineError::Invariant(format!(
                    "a writer task failed: {join_error}"
                )));
                writers.abort_all();
            }
        }
    }
    if failure.is_some() || cancelled {
        if let Some(target) = target {
            delete_files(&target.url, &published).await;
        }
        if let Some(quarantine) = quarantine {
            delete_files(&quarantine.target.url, &quarantined).await;
        }
        return Err(match failure {
            Some(error) if !cancelled && is_disk_full(&error.to_string()) => {
                EngineError::DiskFull {
                    product: dataset.to_string(),
                    location: target
                        .map(|t| &t.url)
                        .or(quarantine.map(|q| &q.target.url))
                        .map_or_else(String::new, display_location),
                }
            }
            // A check's error names the dataset and the check already.
            Some(error @ EngineError::Check { .. }) if !cancelled => error,
            Some(error) if !cancelled => match target {
                Some(target) => EngineError::Publish {
                    product: dataset.to_string(),
                    table: display_location(&target.url),
                    source: Box::new(error),
                },
                None => EngineError::product(dataset, error.to_string()),
            },
            _ => cancel.error(),
        });
    }
    Ok(Streamed {
        published: StagedFiles::new(published, published_rows),
        quarantined: StagedFiles::new(quarantined, quarantined_rows),
        checks: check_states,
    })
}

/// Whether a writer's error is the filesystem running out of space. The Parquet and Delta
/// writers hand their I/O errors on as text (the `std::io::Error` is gone by then), so the
/// operating system's wording and code are what is left to recognise (ENOSPC is 28 on Linux
/// and macOS).
fn is_disk_full(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("(os error 28)")
}

/// A writer of Parquet files into the table at `table_url` (files roll over at
/// [`TARGET_FILE_SIZE`]); used by embedded runs and by the cluster's writers alike.
pub(crate) fn file_writer(
    table_url: &str,
    schema: &SchemaRef,
    partition_by: &[String],
) -> std::result::Result<RecordBatchWriter, deltalake::DeltaTableError> {
    RecordBatchWriter::try_new(
        table_url,
        Arc::clone(schema),
        Some(partition_by.to_vec()),
        None,
    )
    .map(|w| w.with_target_file_size(TARGET_FILE_SIZE))
}

/// Where one partition's rows go: its checks, the product's writer and the quarantine table's
/// writer. Embedded runs and the cluster's writers run partitions through this alike.
pub(crate) struct PartitionSinks {
    /// The dataset's columns as published.
    pub dataset_schema: SchemaRef,
    /// The product's files, when the dataset is published.
    pub published: Option<RecordBatchWriter>,
    /// The quarantine table's files and their schema, when checks quarantine rows.
    pub quarantine: Option<(RecordBatchWriter, SchemaRef)>,
    /// The dataset's checks, when it has any.
    pub checker: Option<PartitionChecker>,
    /// Incremented as rows are published.
    pub rows_progress: Arc<AtomicU64>,
}

/// What one partition wrote: (files, rows) published and quarantined, and its check state.
pub(crate) struct PartitionDone {
    pub published: (Vec<Add>, u64),
    pub quarantined: (Vec<Add>, u64),
    pub checks: Option<PartitionState>,
}

impl PartitionSinks {
    /// Streams one partition into its sinks. On failure, buffered rows are dropped and the
    /// error is returned; files already rolled over are the caller's to delete.
    pub(crate) async fn consume(
        mut self,
        mut stream: SendableRecordBatchStream,
    ) -> Result<PartitionDone> {
        let (mut published_rows, mut quarantined_rows) = (0u64, 0u64);
        let outcome: Result<()> = async {
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(EngineError::Execution)?;
                if batch.num_rows() == 0 {
                    continue;
                }
                let (valid, quarantined) = match &mut self.checker {
                    Some(checker) => {
                        let split = checker.observe(
                            &batch,
                            &self.dataset_schema,
                            self.quarantine.as_ref().map(|(_, schema)| schema),
                        )?;
                        (split.valid, split.quarantined)
                    }
                    None => (batch, None),
                };
                if let Some(writer) = &mut self.published
                    && valid.num_rows() > 0
                {
                    let count = valid.num_rows() as u64;
                    writer
                        .write(valid)
                        .await
                        .map_err(write_failed("write files"))?;
                    published_rows += count;
                    self.rows_progress.fetch_add(count, Ordering::Relaxed);
                }
                if let (Some((writer, _)), Some(rows)) = (&mut self.quarantine, quarantined)
                    && rows.num_rows() > 0
                {
                    let count = rows.num_rows() as u64;
                    writer
                        .write(rows)
                        .await
                        .map_err(write_failed("write quarantined rows"))?;
                    quarantined_rows += count;
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = outcome {
            if let Some(writer) = &mut self.published {
                writer.reset();
            }
            if let Some((writer, _)) = &mut self.quarantine {
                writer.reset();
            }
            return Err(error);
        }
        let published = match &mut self.published {
            Some(writer) => writer.flush().await.map_err(write_failed("finish files"))?,
            None => Vec::new(),
        };
        let quarantined = match &mut self.quarantine {
            Some((writer, _)) if quarantined_rows > 0 => writer
                .flush()
                .await
                .map_err(write_failed("finish quarantine files"))?,
            _ => Vec::new(),
        };
        Ok(PartitionDone {
            published: (published, published_rows),
            quarantined: (quarantined, quarantined_rows),
            checks: self.checker.map(PartitionChecker::finish),
        })
    }
}

/// The error of a Parquet writer's failure while doing `action` ("write files"), its cause
/// told in one line.
fn write_failed(action: &'static str) -> impl FnOnce(deltalake::DeltaTableError) -> EngineError {
    move |source| EngineError::WriteFiles {
        detail: describe_error(&source),
        action,
        source: Box::new(source),
    }
}

/// Deletes the files of a staged product (and its quarantined rows) that will not be
/// committed. Best effort: a file that cannot be deleted is only logged, since uncommitted files
/// are invisible to readers and a Delta `VACUUM` removes them.
pub async fn discard_staged(staged: &StagedProduct) {
    delete_files(&staged.prepared.target.url, &staged.adds).await;
    if let Some((quarantine, files)) = &staged.quarantine {
        delete_files(&quarantine.target.url, &files.adds).await;
    }
}

/// Deletes the quarantined rows of an input that will not be committed.
pub async fn discard_input(checked: &CheckedInput) {
    if let Some((quarantine, files)) = &checked.quarantine {
        delete_files(&quarantine.target.url, &files.adds).await;
    }
}

/// Deletes the uncommitted files of quarantined rows.
pub async fn discard_quarantine(quarantine: &QuarantineTarget, files: &StagedFiles) {
    delete_files(&quarantine.target.url, &files.adds).await;
}

async fn delete_files(table_url: &Url, adds: &[Add]) {
    if adds.is_empty() {
        return;
    }
    let Ok(table) =
        deltalake::DeltaTableBuilder::from_url(table_url.clone()).and_then(|b| b.build())
    else {
        return;
    };
    let store = table.object_store();
    for add in adds {
        let path = ObjectPath::from_url_path(&add.path)
            .unwrap_or_else(|_| ObjectPath::from(add.path.as_str()));
        if let Err(error) = store.delete(&path).await {
            tracing::warn!(file = %add.path, %error, "could not delete an uncommitted file");
        }
    }
}

/// Commits a dataset's quarantined rows as one new version of its quarantine table.
pub async fn commit_quarantine(
    quarantine: &QuarantineTarget,
    files: &StagedFiles,
    metadata: &CommitMetadata,
) -> Result<u64> {
    commit_files(
        &quarantine.target,
        &quarantine.schema,
        quarantine.existing.as_ref(),
        files,
        metadata,
    )
    .await
}

/// Commits a staged product as one new table version and returns it.
pub async fn commit_product(staged: &StagedProduct, metadata: &CommitMetadata) -> Result<u64> {
    let files = StagedFiles {
        adds: staged.adds.clone(),
        rows: staged.rows,
        bytes: staged.bytes,
    };
    commit_files(
        &staged.prepared.target,
        &staged.prepared.schema,
        staged.prepared.existing.as_ref(),
        &files,
        metadata,
    )
    .await
}

/// Commits `files` to the table at `target` as one version: a new table, an append, or an
/// overwrite (removing the current files, with new metadata when the schema changes).
async fn commit_files(
    target: &ProductTarget,
    schema: &SchemaRef,
    existing: Option<&DeltaTable>,
    staged: &StagedFiles,
    metadata: &CommitMetadata,
) -> Result<u64> {
    let product = &target.name;
    let lakeforge = serde_json::to_value(metadata).map_err(|e| {
        EngineError::product(product, format!("cannot encode commit metadata: {e}"))
    })?;
    let operation_metrics = serde_json::json!({
        "numOutputRows": staged.rows,
        "numFiles": staged.adds.len(),
        "numOutputBytes": staged.bytes,
    });
    let transaction = run_transaction(&metadata.run_id);
    let properties = CommitProperties::default()
        .with_metadata([
            (COMMIT_INFO_KEY.to_string(), lakeforge),
            ("operationMetrics".to_string(), operation_metrics),
        ])
        .with_application_transaction(transaction.clone());
    let delta_schema: StructType = schema.as_ref().try_into_kernel().map_err(|e| {
        EngineError::product(product, format!("schema not supported by Delta: {e}"))
    })?;
    let adds = staged.adds.iter().cloned().map(Action::Add);
    let failed_commit = |e: deltalake::DeltaTableError| {
        EngineError::delta(
            format!(
                "product '{product}': cannot commit to {}",
                display_location(&target.url)
            ),
            e,
        )
    };

    // A commit that fails because this run's transaction is already in the log (delta-rs's own
    // conflict retry after an attempt whose outcome was unknown, or a retried call with a stale
    // snapshot) happened: report that commit instead of failing or making a second one.
    let commit_error = |e: deltalake::DeltaTableError| async {
        match committed_by_run(&target.url, &transaction, &metadata.run_id).await {
            Some(version) => Ok(version),
            None => Err(failed_commit(e)),
        }
    };

    let Some(table) = existing else {
        let mut create = CreateBuilder::new()
            .with_location(target.url.as_str())
            .with_table_name(product.replace(' ', "_"))
            .with_columns(delta_schema.fields().cloned())
            .with_partition_columns(target.partition_by.clone())
            .with_raise_if_key_not_exists(false)
            .with_actions(adds)
            .with_commit_properties(properties);
        if let Some(description) = &target.description {
            create = create.with_comment(description.as_str());
        }
        if let Some(owner) = &target.owner {
            create = create.with_configuration([("lakeforge.owner", Some(owner.as_str()))]);
        }
        return match create.await {
            Ok(table) => Ok(table.version().unwrap_or_default()),
            Err(e) => commit_error(e).await,
        };
    };

    let snapshot = match table.snapshot() {
        Ok(snapshot) => snapshot,
        Err(e) => return commit_error(e).await,
    };
    let mut actions = Vec::new();
    let save_mode = match target.mode {
        WriteMode::Append => SaveMode::Append,
        WriteMode::Overwrite => {
            let current = snapshot.metadata();
            let schema_changed = current.parse_schema().ok().as_ref() != Some(&delta_schema);
            let partitions_changed = current.partition_columns() != target.partition_by;
            let description_changed = current.description() != target.description.as_deref();
            if schema_changed || partitions_changed || description_changed {
                let mut replaced = new_metadata(
                    &delta_schema,
                    target.partition_by.clone(),
                    current.configuration().clone(),
                )
                .and_then(|m| m.with_table_id(current.id().to_string()))
                .and_then(|m| m.with_name(product.replace(' ', "_")))
                .map_err(|e| failed_commit(e.into()))?;
                if let Some(description) = &target.description {
                    replaced = replaced
                        .with_description(description.clone())
                        .map_err(|e| failed_commit(e.into()))?;
                }
                actions.push(Action::Metadata(replaced));
            }
            let removes: Vec<Action> = snapshot
                .snapshot()
                .file_views(table.log_store().as_ref(), None)
                .map_ok(|file| Action::Remove(file.remove_action(true)))
                .try_collect()
                .await
                .map_err(failed_commit)?;
            actions.extend(removes);
            SaveMode::Overwrite
        }
    };
    actions.extend(adds);
    let operation = DeltaOperation::Write {
        mode: save_mode,
        partition_by: (!target.partition_by.is_empty()).then(|| target.partition_by.clone()),
        predicate: None,
    };
    match CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await
    {
        Ok(committed) => Ok(committed.version()),
        Err(e) => commit_error(e).await,
    }
}

/// The Delta application transaction every commit of a run carries, one id per run: delta-rs
/// refuses to commit it twice (its conflict retries fail instead of duplicating), and Lakeforge
/// looks for it after a failed commit.
fn run_transaction(run_id: &str) -> Transaction {
    Transaction::new_with_last_update(
        format!("lakeforge-run-{run_id}"),
        0,
        Some(chrono::Utc::now().timestamp_millis()),
    )
}

/// The version of the table at `url` that run `run_id` committed, when its transaction is in
/// the log.
async fn committed_by_run(url: &Url, transaction: &Transaction, run_id: &str) -> Option<u64> {
    let table = crate::delta::open_existing(url).await.ok()??;
    let state = table.snapshot().ok()?;
    state
        .transaction_version(table.log_store().as_ref(), &transaction.app_id)
        .await
        .ok()??;
    // Commits are few per run; the run's is among the newest.
    crate::delta::history(url, Some(COMMIT_SEARCH_DEPTH))
        .await
        .ok()?
        .into_iter()
        .find(|entry| entry.lakeforge.as_ref().is_some_and(|m| m.run_id == run_id))
        .map(|entry| entry.version)
}

/// How far back [`committed_by_run`] looks for the commit holding a run's transaction.
const COMMIT_SEARCH_DEPTH: usize = 1000;

/// Checks that the product's output can go into the existing table under its write mode.
fn check_against_table(target: &ProductTarget, schema: &Schema, table: &DeltaTable) -> Result<()> {
    let product = &target.name;
    let snapshot = table.snapshot().map_err(|e| {
        EngineError::delta(
            format!("product '{product}': cannot read the existing table"),
            e,
        )
    })?;
    if target.mode == WriteMode::Overwrite {
        return check_protocol_allows(target, schema, table);
    }
    let existing_partitions = snapshot.metadata().partition_columns();
    if existing_partitions != target.partition_by {
        return Err(EngineError::product(
            product,
            format!(
                "append mode: partition_by {:?} differs from the table's partition columns {:?} \
                 at {}; use mode = \"overwrite\" to change the layout",
                target.partition_by,
                existing_partitions,
                display_location(&target.url)
            ),
        ));
    }
    let kernel_schema = snapshot.schema();
    let existing: Schema = kernel_schema.as_ref().try_into_arrow().map_err(|e| {
        EngineError::product(product, format!("cannot read the table's schema: {e}"))
    })?;
    let differences = schema_differences(&existing, schema);
    if differences.is_empty() {
        return Ok(());
    }
    Err(EngineError::product(
        product,
        format!(
            "append mode: the query's columns no longer match the table at {}: {}; \
             use mode = \"overwrite\" to replace the table",
            display_location(&target.url),
            differences.join("; ")
        ),
    ))
}

/// A timestamp without time zone needs the `timestampNtz` table feature. New tables get it
/// when created; an existing table without it cannot take such a column by overwrite (delta-rs
/// would not upgrade the protocol), so refuse rather than write a table readers reject.
fn check_protocol_allows(
    target: &ProductTarget,
    schema: &Schema,
    table: &DeltaTable,
) -> Result<()> {
    let Some(column) = schema
        .fields()
        .iter()
        .find(|f| has_timestamp_without_zone(f.data_type()))
    else {
        return Ok(());
    };
    let protocol = table
        .snapshot()
        .ok()
        .and_then(|s| serde_json::to_value(s.protocol()).ok())
        .unwrap_or_default();
    let supported = protocol["writerFeatures"]
        .as_array()
        .is_some_and(|features| features.iter().any(|f| f == "timestampNtz"));
    if supported {
        return Ok(());
    }
    Err(EngineError::product(
        &target.name,
        format!(
            "column '{}' is a timestamp without time zone, which the existing table at {} does \
             not support (no timestampNtz feature); cast it to a timestamp with time zone, \
             e.g. `arrow_cast(col, 'Timestamp(Microsecond, Some(\"UTC\"))')`",
            column.name(),
            display_location(&target.url)
        ),
    ))
}

fn has_timestamp_without_zone(data_type: &DataType) -> bool {
    match data_type {
        DataType::Timestamp(_, None) => true,
        DataType::List(f) | DataType::Map(f, _) => has_timestamp_without_zone(f.data_type()),
        DataType::Struct(fields) => fields
            .iter()
            .any(|f| has_timestamp_without_zone(f.data_type())),
        _ => false,
    }
}

/// Human-readable differences between a table's schema and a new output schema (names and
/// types; nullability is ignored because products are written all-nullable).
fn schema_differences(existing: &Schema, new: &Schema) -> Vec<String> {
    let mut differences = Vec::new();
    for field in existing.fields() {
        match new.field_with_name(field.name()) {
            Err(_) => differences.push(format!("column '{}' is missing", field.name())),
            Ok(new_field) if !types_match(field.data_type(), new_field.data_type()) => {
                differences.push(format!(
                    "column '{}' changes type from {} to {}",
                    field.name(),
                    field.data_type(),
                    new_field.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    for field in new.fields() {
        if existing.field_with_name(field.name()).is_err() {
            differences.push(format!("column '{}' is new", field.name()));
        }
    }
    differences
}

/// Types are equal up to nullability and list item names of nested fields.
fn types_match(a: &DataType, b: &DataType) -> bool {
    strip_nullability(a) == strip_nullability(b)
}

fn strip_nullability(data_type: &DataType) -> DataType {
    let field =
        |f: &Arc<Field>| Arc::new(Field::new(f.name(), strip_nullability(f.data_type()), true));
    match data_type {
        // Writers name list items "item" or "element"; the name carries no meaning.
        DataType::List(f) => DataType::List(Arc::new(Field::new(
            "element",
            strip_nullability(f.data_type()),
            true,
        ))),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        other => other.clone(),
    }
}

/// The first `columns` fields, all nullable: Delta readers (and later appends) expect nullable
/// columns, and a plan's nullability is an artefact of the optimizer, not a contract of the
/// product.
pub(crate) fn leading_nullable_schema(schema: &Schema, columns: usize) -> SchemaRef {
    let fields: Fields = schema
        .fields()
        .iter()
        .take(columns)
        .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, HashMap::new()))
}

/// Adds a projection casting every column whose type Delta cannot store to the nearest type
/// it can. Types with no Delta equivalent are an error naming the column.
///
/// Only the first `columns` columns are published; later ones (check columns) pass unchanged.
fn cast_to_delta_types(product: &str, plan: LogicalPlan, columns: usize) -> Result<LogicalPlan> {
    let mut needs_cast = false;
    let mut exprs = Vec::with_capacity(plan.schema().fields().len());
    for (index, (qualifier, field)) in plan.schema().iter().enumerate() {
        if index >= columns {
            exprs.push(col(Column::from((qualifier, field))));
            continue;
        }
        let target = delta_type(field.data_type()).map_err(|reason| {
            EngineError::product(
                product,
                format!(
                    "column '{}' has type {}, which Delta tables cannot store ({reason}); cast it in the SQL",
                    field.name(),
                    field.data_type()
                ),
            )
        })?;
        let column = col(Column::from((qualifier, field)));
        if &target == field.data_type() {
            exprs.push(column);
        } else {
            needs_cast = true;
            exprs.push(cast(column, target).alias(field.name()));
        }
    }
    if !needs_cast {
        return Ok(plan);
    }
    LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(|b| b.build())
        .map_err(|e| {
            EngineError::product(
                product,
                format!("cannot cast to Delta types: {}", e.strip_backtrace()),
            )
        })
}

/// The Arrow type Delta stores for `data_type`.
fn delta_type(data_type: &DataType) -> std::result::Result<DataType, String> {
    let field = |f: &Arc<Field>| -> std::result::Result<Arc<Field>, String> {
        Ok(Arc::new(Field::new(
            f.name(),
            delta_type(f.data_type())?,
            f.is_nullable(),
        )))
    };
    Ok(match data_type {
        DataType::Null => DataType::Utf8,
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary | DataType::FixedSizeBinary(_) => {
            DataType::Binary
        }
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| Arc::from("UTC")))
        }
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => DataType::Decimal128(*p, *s),
        DataType::Decimal256(p, s) if *p <= 38 => DataType::Decimal128(*p, *s),
        DataType::Dictionary(_, value) => delta_type(value)?,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => DataType::List(field(f)?),
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(field)
                .collect::<std::result::Result<Fields, _>>()?,
        ),
        DataType::Map(f, sorted) => DataType::Map(field(f)?, *sorted),
        DataType::Time32(_) | DataType::Time64(_) => return Err("no time-of-day type".to_string()),
        DataType::Duration(_) | DataType::Interval(_) => return Err("no interval type".to_string()),
        DataType::Decimal256(..) => return Err("decimal precision above 38".to_string()),
        DataType::Union(..) | DataType::RunEndEncoded(..) => {
            return Err("no union type".to_string());
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `values` as a file of the table at `url`, uncommitted.
    async fn staged(url: &Url, schema: &SchemaRef, values: Vec<i64>) -> StagedFiles {
        let rows = values.len() as u64;
        let mut writer = file_writer(url.as_str(), schema, &[]).unwrap();
        let batch = arrow::array::RecordBatch::try_new(
            Arc::clone(schema),
            vec![Arc::new(arrow::array::Int64Array::from(values))],
        )
        .unwrap();
        writer.write(batch).await.unwrap();
        StagedFiles::new(writer.flush().await.unwrap(), rows)
    }

    #[tokio::test]
    async fn a_retried_commit_of_a_run_lands_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        let url = Url::from_directory_path(dir.path().join("t")).unwrap();
        let schema: SchemaRef = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
            "x",
            DataType::Int64,
            true,
        )]));
        let target = ProductTarget {
            name: "t".to_string(),
            url: url.clone(),
            mode: WriteMode::Append,
            partition_by: Vec::new(),
            description: None,
            owner: None,
        };
        let run = |id: &str| -> CommitMetadata {
            serde_json::from_value(serde_json::json!({
                "operation": "run", "run_id": id, "engine_version": "test"
            }))
            .unwrap()
        };
        let versions = |table: &DeltaTable| table.version();

        // Creating the table, then the same run's commit again (the client never learnt the
        // outcome): the second finds the run's transaction and reports version 0.
        let files = staged(&url, &schema, vec![1, 2, 3]).await;
        let first = commit_files(&target, &schema, None, &files, &run("r1")).await;
        let retried = commit_files(&target, &schema, None, &files, &run("r1")).await;
        assert_eq!((first.unwrap(), retried.unwrap()), (0, 0));
        let table = crate::delta::open_existing(&url).await.unwrap().unwrap();
        assert_eq!(versions(&table), Some(0));

        // Appending with a snapshot that goes stale: the retry lands nowhere new either.
        let files = staged(&url, &schema, vec![4, 5]).await;
        let second = commit_files(&target, &schema, Some(&table), &files, &run("r2")).await;
        let retried = commit_files(&target, &schema, Some(&table), &files, &run("r2")).await;
        assert_eq!((second.unwrap(), retried.unwrap()), (1, 1));
        let table = crate::delta::open_existing(&url).await.unwrap().unwrap();
        assert_eq!(versions(&table), Some(1));
        let ctx = SessionContext::new();
        let rows = ctx
            .read_table(table.table_provider().await.unwrap())
            .unwrap()
            .count()
            .await
            .unwrap();
        assert_eq!(rows, 5, "each run's rows once");
    }

    #[test]
    fn delta_types() {
        assert_eq!(delta_type(&DataType::Utf8View).unwrap(), DataType::Utf8);
        assert_eq!(
            delta_type(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("+00:00".into())
            ))
            .unwrap(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(delta_type(&DataType::UInt32).unwrap(), DataType::Int64);
        assert!(delta_type(&DataType::Time64(TimeUnit::Microsecond)).is_err());
    }

    #[test]
    fn differences_name_columns() {
        let old = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let new = Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("c", DataType::Utf8, true),
        ]);
        let diff = schema_differences(&old, &new);
        assert_eq!(
            diff,
            vec![
                "column 'a' changes type from Int64 to Float64",
                "column 'b' is missing",
                "column 'c' is new"
            ]
        );
        assert!(schema_differences(&old, &old).is_empty());
    }
}
