//! Running jobs on a Lakeforge cluster (`run --cluster df://HOST:PORT`).
//!
//! The client plans exactly as an embedded run does, in a session connected through
//! `lakeforge-worker` (which owns Ballista). What differs is where data moves:
//! - Delta sources are pinned to a version on the client and read on the workers as that
//!   version's Parquet files ([`delta_files`]).
//! - Each product's plan is wrapped in a [`writer::DeltaWriteNode`]; the coordinator plans it as
//!   a writer per output partition, the workers write the files into the table's location, and
//!   the client receives only their `Add` actions and makes the single commit, as embedded runs
//!   do.
//! - Scoring functions travel pinned to the models the client resolved ([`codec`]).
//!
//! The coordinator and worker roles get the same codec, functions and planners from
//! [`extensions`], so a plan the client encodes is one every process can decode.

pub mod codec;
pub mod delta_files;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::Add;
use lakeforge_udfs::scoring::{ModelResolver, NoModels};
use lakeforge_worker::{ClusterAddress, ClusterExtensions};

use crate::cancel::RunCancellation;
use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::publish::{PreparedProduct, StagedProduct};
use crate::session::session_config;
use delta_files::{DeltaFilesSpec, DeltaFilesTable};
use writer::{DeltaWriteNode, DeltaWritePlanner, WriteTarget};

/// What every cluster role adds to Ballista: the engine's codec, Lakeforge's functions (from
/// the one list in `lakeforge-udfs`; scoring functions get their models from the plan) and the
/// writer's planner.
pub fn extensions() -> ClusterExtensions {
    ClusterExtensions {
        codec: Arc::new(codec::EngineCodec),
        scalar_functions: lakeforge_udfs::scalar_functions(Arc::new(NoModels)),
        aggregate_functions: lakeforge_udfs::aggregate_functions(),
        extension_planners: vec![Arc::new(DeltaWritePlanner)],
    }
}

/// Marks a session whose queries run on a cluster, so its Delta sources take the cluster path.
#[derive(Debug)]
struct ClusterSession;

/// A session whose queries run on the cluster at `address`, with Lakeforge's functions (models
/// resolved by `models`) registered after connecting, as Ballista requires.
pub async fn connect_session(
    address: &ClusterAddress,
    config: &EngineConfig,
    models: Arc<dyn ModelResolver>,
) -> Result<SessionContext> {
    let session_config = session_config(config).with_extension(Arc::new(ClusterSession));
    let ctx = lakeforge_worker::connect(address, session_config, &extensions()).await?;
    lakeforge_udfs::register_all(&ctx, models);
    Ok(ctx)
}

/// Whether `ctx`'s queries run on a cluster.
pub fn is_cluster_session(ctx: &SessionContext) -> bool {
    ctx.state()
        .config()
        .get_extension::<ClusterSession>()
        .is_some()
}

/// Registers Delta source `name` (opened at its version) as that version's files.
pub async fn register_delta_source(
    ctx: &SessionContext,
    name: &str,
    table: &DeltaTable,
) -> std::result::Result<(), String> {
    let spec = DeltaFilesSpec::of_table(table)?;
    // The schema the embedded provider gives, so both runs plan the same columns and types.
    let schema = table
        .table_provider()
        .await
        .map_err(|e| format!("cannot read the table: {}", e.strip_backtrace()))?
        .schema();
    ctx.register_table(name, Arc::new(DeltaFilesTable::new(spec, schema)))
        .map_err(|e| e.strip_backtrace())?;
    Ok(())
}

/// Writes a prepared product's files on the workers and returns it staged, committing nothing.
/// Products with checks are refused before this is reached (see `job.rs`).
pub async fn stage_on_cluster(
    ctx: &SessionContext,
    prepared: PreparedProduct,
    rows_progress: Arc<AtomicU64>,
    cancel: &RunCancellation,
) -> Result<StagedProduct> {
    let product = prepared.target.name.clone();
    let failed = |message: String| EngineError::product(&product, message);
    let target = WriteTarget {
        dataset: product.clone(),
        table_url: prepared.target.url.to_string(),
        partition_by: prepared.target.partition_by.clone(),
    };
    let write = DeltaWriteNode::new(prepared.plan.clone(), target)
        .map_err(|e| failed(e.strip_backtrace()))?
        .into_plan();
    let batches = cancel
        .guard(async {
            let frame = ctx
                .execute_logical_plan(write)
                .await
                .map_err(|e| failed(format!("cannot plan: {}", e.strip_backtrace())))?;
            frame
                .collect()
                .await
                .map_err(|e| failed(format!("failed on the cluster: {}", e.strip_backtrace())))
        })
        .await?;
    let (adds, rows) = written_files(&batches).map_err(failed)?;
    rows_progress.fetch_add(rows, Ordering::Relaxed);
    let bytes = adds
        .iter()
        .map(|a| u64::try_from(a.size).unwrap_or(0))
        .sum();
    Ok(StagedProduct {
        prepared,
        adds,
        rows,
        bytes,
        quarantine: None,
        check_results: Vec::new(),
    })
}

/// The files and row count the writers returned.
fn written_files(batches: &[RecordBatch]) -> std::result::Result<(Vec<Add>, u64), String> {
    let mut adds = Vec::new();
    let mut rows = 0;
    for batch in batches {
        let (Some(json), Some(counts)) = (
            batch
                .column_by_name("adds")
                .and_then(|c| c.as_string_opt::<i32>()),
            batch
                .column_by_name("rows")
                .and_then(|c| c.as_primitive_opt::<UInt64Type>()),
        ) else {
            return Err("the cluster's writers returned an unexpected result".to_string());
        };
        for (json, count) in json.iter().zip(counts.iter()) {
            let partition: Vec<Add> = serde_json::from_str(json.unwrap_or("[]"))
                .map_err(|e| format!("cannot read the written files: {e}"))?;
            adds.extend(partition);
            rows += count.unwrap_or(0);
        }
    }
    Ok((adds, rows))
}
