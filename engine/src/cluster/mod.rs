//! Running jobs on a Lakeforge cluster (`run --cluster df://HOST:PORT`).
//!
//! The client plans exactly as an embedded run does, in a session connected through
//! `lakeforge-worker` (which owns Ballista). What differs is where data moves:
//! - Delta sources are pinned to a version on the client and read on the workers as that
//!   version's Parquet files (`crate::delta_files`).
//! - Each product's plan is wrapped in a [`writer::DeltaWriteNode`]; the coordinator plans it as
//!   a writer per output partition, the workers write the files into the table's location, and
//!   the client receives only their `Add` actions and makes the single commit, as embedded runs
//!   do.
//! - Scoring functions travel pinned to the models the client resolved ([`codec`]).
//!
//! The coordinator and worker roles get the same codec, functions and planners from
//! [`extensions`], so a plan the client encodes is one every process can decode.

pub mod codec;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::Add;
use lakeforge_udfs::scoring::{ModelResolver, NoModels};
use lakeforge_worker::{ClusterAddress, ClusterExtensions};

use crate::cancel::RunCancellation;
use crate::config::EngineConfig;
use crate::delta_files::files_provider;
use crate::dq::DatasetCheckRun;
use crate::error::{EngineError, Result};
use crate::publish::{
    CheckedInput, PreparedProduct, QuarantineTarget, StagedFiles, StagedProduct, Streamed,
    checked_input, input_check_plan, staged_product,
};
use crate::session::{RunBackend, session_config};
use writer::{DatasetWrite, DeltaWriteNode, DeltaWritePlanner, TableWrite};

/// What every cluster role adds to Ballista: the engine's codec, Lakeforge's functions (from
/// the one list in `lakeforge-udfs`; scoring functions get their models from the plan) and the
/// writer's planner.
pub fn extensions() -> ClusterExtensions {
    ClusterExtensions {
        codec: Arc::new(codec::EngineCodec),
        scalar_functions: lakeforge_udfs::scalar_functions(Arc::new(NoModels)),
        aggregate_functions: lakeforge_udfs::aggregate_functions(),
        extension_planners: vec![Arc::new(DeltaWritePlanner)],
        object_stores: Arc::new(crate::storage::SessionStores::default()),
    }
}

/// A session whose queries run on the cluster at `address`, with Lakeforge's functions (models
/// resolved by `models`) registered after connecting, as Ballista requires.
pub async fn connect_session(
    address: &ClusterAddress,
    config: &EngineConfig,
    models: Arc<dyn ModelResolver>,
) -> Result<SessionContext> {
    let session_config = session_config(config).with_extension(Arc::new(RunBackend::Cluster));
    let ctx = lakeforge_worker::connect(address, session_config, &extensions(), config.worker_wait)
        .await?;
    lakeforge_udfs::register_all(&ctx, models);
    Ok(ctx)
}

/// Registers Delta source `name` (opened at its version) as that version's files.
pub async fn register_delta_source(
    ctx: &SessionContext,
    name: &str,
    table: &DeltaTable,
) -> std::result::Result<(), String> {
    ctx.register_table(name, files_provider(table).await?)
        .map_err(|e| e.strip_backtrace())?;
    Ok(())
}

/// Writes a prepared product's files on the workers and returns it staged, committing nothing:
/// its checks are evaluated and its quarantined rows written in the same pass, on the workers.
pub async fn stage_on_cluster(
    ctx: &SessionContext,
    prepared: PreparedProduct,
    rows_progress: Arc<AtomicU64>,
    cancel: &RunCancellation,
) -> Result<StagedProduct> {
    let target = DatasetWrite {
        dataset: prepared.target.name.clone(),
        publish: Some(TableWrite {
            table_url: prepared.target.url.to_string(),
            partition_by: prepared.target.partition_by.clone(),
        }),
        checks: prepared
            .checks
            .as_ref()
            .map(|c| c.program().as_ref().clone()),
        quarantine_url: prepared
            .quarantine
            .as_ref()
            .map(|q| q.target.url.to_string()),
    };
    let written = write_on_cluster(ctx, prepared.plan.clone(), target, cancel).await?;
    rows_progress.fetch_add(written.published.rows, Ordering::Relaxed);
    staged_product(prepared, written).await
}

/// Runs an input dataset's checks on the workers (one pass over its checked plan), writing
/// quarantined rows there but committing nothing.
pub async fn check_input_on_cluster(
    ctx: &SessionContext,
    checks: Arc<DatasetCheckRun>,
    quarantine: Option<QuarantineTarget>,
    cancel: &RunCancellation,
) -> Result<CheckedInput> {
    let plan = input_check_plan(&checks, quarantine.is_some())?;
    let target = DatasetWrite {
        dataset: checks.checked.dataset.clone(),
        publish: None,
        checks: Some(checks.program().as_ref().clone()),
        quarantine_url: quarantine.as_ref().map(|q| q.target.url.to_string()),
    };
    let written = write_on_cluster(ctx, plan, target, cancel).await?;
    checked_input(&checks, quarantine, written).await
}

/// Runs `plan` through [`DeltaWriteNode`] on the cluster and gathers what every partition
/// returned.
async fn write_on_cluster(
    ctx: &SessionContext,
    plan: LogicalPlan,
    target: DatasetWrite,
    cancel: &RunCancellation,
) -> Result<Streamed> {
    let dataset = target.dataset.clone();
    let failed = |message: String| EngineError::product(&dataset, message);
    let write = DeltaWriteNode::new(plan, target)
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
    written_files(&batches).map_err(failed)
}

/// The files, row counts and check states the writers returned.
fn written_files(batches: &[RecordBatch]) -> std::result::Result<Streamed, String> {
    let unexpected = || "the cluster's writers returned an unexpected result".to_string();
    let (mut published, mut quarantined) = ((Vec::new(), 0), (Vec::new(), 0));
    let mut checks = Vec::new();
    for batch in batches {
        let strings = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(unexpected)
        };
        let counts = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(unexpected)
        };
        for (files, rows, into) in [
            (strings("adds")?, counts("rows")?, &mut published),
            (
                strings("quarantine_adds")?,
                counts("quarantined")?,
                &mut quarantined,
            ),
        ] {
            for (json, count) in files.iter().zip(rows.iter()) {
                let partition: Vec<Add> = serde_json::from_str(json.unwrap_or("[]"))
                    .map_err(|e| format!("cannot read the written files: {e}"))?;
                into.0.extend(partition);
                into.1 += count.unwrap_or(0);
            }
        }
        for state in strings("checks")?.iter().flatten() {
            checks.push(
                serde_json::from_str(state)
                    .map_err(|e| format!("cannot read a partition's check state: {e}"))?,
            );
        }
    }
    Ok(Streamed {
        published: StagedFiles::new(published.0, published.1),
        quarantined: StagedFiles::new(quarantined.0, quarantined.1),
        checks,
    })
}
