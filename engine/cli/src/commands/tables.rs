//! `lakeforge history`, `show`, `rollback`, `vacuum` and `sql`: reading, restoring and
//! cleaning tables.

use anyhow::Context;
use lakeforge_engine::EngineConfig;
use lakeforge_engine::delta;
use lakeforge_engine::location::display_location;
use lakeforge_engine::tables::{history_batch, run_sql, show_table};

use crate::args::{
    HistoryArgs, RollbackArgs, ShowArgs, SqlArgs, VacuumArgs, duration_flag, location_argument,
    table_argument,
};
use crate::render::print_batches;

/// Lists a table's versions.
pub async fn history(args: HistoryArgs, json: bool) -> anyhow::Result<()> {
    let url = table_argument(&args.table)?;
    let entries = delta::history(&url, args.limit).await?;
    print_batches(&[history_batch(&entries)?], json)
}

/// Prints a table's rows at a version.
pub async fn show(args: ShowArgs, config: &EngineConfig, json: bool) -> anyhow::Result<()> {
    let url = table_argument(&args.table)?;
    let batches = show_table(&url, args.version, args.limit, config).await?;
    print_batches(&batches, json)
}

/// Restores a version's contents as a new version.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let url = table_argument(&args.table)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let version = delta::rollback(&url, args.to_version, &run_id).await?;
    println!(
        "restored {} to the contents of version {} as new version {version}",
        display_location(&url),
        args.to_version
    );
    Ok(())
}

/// Deletes the files no version within the retention references.
pub async fn vacuum(args: VacuumArgs, json: bool) -> anyhow::Result<()> {
    let url = table_argument(&args.table)?;
    let retain = duration_flag("retain", &args.retain)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let report = delta::vacuum(&url, retain, args.dry_run, args.force, &run_id).await?;
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "table": display_location(&url),
                "dry_run": report.dry_run,
                "files": report.files,
                "version": report.version,
            })
        );
        return Ok(());
    }
    for file in &report.files {
        println!("{verb} {file}");
    }
    println!(
        "{}: {verb} {} file{} (version {})",
        display_location(&url),
        report.files.len(),
        if report.files.len() == 1 { "" } else { "s" },
        report.version
    );
    Ok(())
}

/// Runs ad-hoc SQL over the named locations.
pub async fn sql(args: SqlArgs, config: &EngineConfig, json: bool) -> anyhow::Result<()> {
    let tables = args
        .tables
        .iter()
        .map(|t| {
            let (name, location) = t
                .split_once('=')
                .with_context(|| format!("--table '{t}' must be NAME=LOCATION"))?;
            Ok((name.trim().to_string(), location_argument(location.trim())?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let batches = run_sql(&args.query, &tables, config).await?;
    print_batches(&batches, json)
}
