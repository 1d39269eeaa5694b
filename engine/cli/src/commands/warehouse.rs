//! `lakeforge status`, `runs` and `dq`: what a warehouse's own tables record.

use lakeforge_engine::EngineConfig;
use lakeforge_engine::check_history::list_results;
use lakeforge_engine::schedule::status::{render_text, warehouse_status};
use lakeforge_engine::tables::list_runs;

use crate::args::{DqArgs, RunsArgs, StatusArgs, table_argument};
use crate::render::print_batches;

/// Jobs and products of a warehouse, with freshness.
pub async fn status(args: StatusArgs, config: &EngineConfig, json: bool) -> anyhow::Result<()> {
    let url = table_argument(&args.warehouse)?;
    let report = warehouse_status(&url, config, chrono::Utc::now()).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    Ok(())
}

/// The run records, newest first.
pub async fn runs(args: RunsArgs, config: &EngineConfig, json: bool) -> anyhow::Result<()> {
    let url = table_argument(&args.warehouse)?;
    let batches = list_runs(&url, args.limit, config).await?;
    print_batches(&batches, json)
}

/// The check results, newest first.
pub async fn dq(args: DqArgs, config: &EngineConfig, json: bool) -> anyhow::Result<()> {
    let url = table_argument(&args.warehouse)?;
    let batches = list_results(
        &url,
        args.job.as_deref(),
        args.check.as_deref(),
        args.limit,
        config,
    )
    .await?;
    print_batches(&batches, json)
}
