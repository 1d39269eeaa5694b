//! `lakeforge run`.

use lakeforge_engine::EngineConfig;
use lakeforge_engine::EngineError;
use lakeforge_engine::job::{LoadedJob, RunSummary, run_job};

use crate::args::RunArgs;
use crate::progress::TerminalProgress;
use crate::render::{print_checks, print_summary};

/// Runs a job and prints its summary.
pub async fn run(args: RunArgs, config: EngineConfig, json: bool) -> anyhow::Result<()> {
    let loaded = LoadedJob::load(
        &args.job.job,
        &args.job.vars()?,
        args.job.profile.as_deref(),
    )?;
    let config = args.cluster.apply(config)?;
    let summary = run_with_progress(&loaded, &config, json).await?;
    print_summary(&summary, json);
    Ok(())
}

/// Runs `loaded` with a spinner on a terminal; a run stopped by failing checks shows every
/// check's counts before the error line.
pub async fn run_with_progress(
    loaded: &LoadedJob,
    config: &EngineConfig,
    json: bool,
) -> anyhow::Result<RunSummary> {
    let progress = TerminalProgress::new();
    let summary = run_job(loaded, config, &progress).await;
    progress.finish();
    if let Err(EngineError::RunFailed { run_id, source }) = &summary
        && let EngineError::ChecksFailed { results, .. } = source.as_ref()
    {
        // Show every check's counts before the error line, so the failing ones are in context.
        if json {
            let line = serde_json::json!({
                "run_id": run_id, "job": loaded.job.name(), "status": "failed", "checks": results,
            });
            println!("{line}");
        } else {
            print_checks(results);
        }
    }
    let summary = summary?;
    if let Some(warning) = &summary.record_warning {
        eprintln!("warning: the run succeeded but its record was not written: {warning}");
    }
    Ok(summary)
}
