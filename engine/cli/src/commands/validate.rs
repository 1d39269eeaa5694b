//! `lakeforge validate` and `lakeforge plan`: a job planned without reading data.

use lakeforge_engine::EngineConfig;
use lakeforge_engine::job::{LoadedJob, validate_job};

use crate::args::JobArgs;

/// Plans every statement and prints each product's table and columns.
pub async fn validate(args: JobArgs, config: &EngineConfig) -> anyhow::Result<()> {
    let loaded = LoadedJob::load(&args.job, &args.vars()?, args.profile.as_deref())?;
    let reports = validate_job(&loaded, config).await?;
    println!("job '{}' is valid", loaded.job.name());
    for report in reports.products {
        let columns = report
            .columns
            .iter()
            .map(|(name, ty)| format!("{name}: {ty}"))
            .collect::<Vec<_>>()
            .join(", ");
        let state = if report.table_exists {
            "existing table"
        } else {
            "new table"
        };
        println!(
            "  product {} -> {} ({state})\n    {columns}",
            report.name, report.table
        );
    }
    Ok(())
}

/// Prints the logical and physical plans of each check pass and each product.
pub async fn plan(args: JobArgs, config: &EngineConfig) -> anyhow::Result<()> {
    let loaded = LoadedJob::load(&args.job, &args.vars()?, args.profile.as_deref())?;
    let reports = validate_job(&loaded, config).await?;
    for pass in reports.check_passes {
        println!("== checks on {} (one pass)", pass.dataset);
        println!("-- logical plan\n{}", pass.logical_plan);
        println!("-- physical plan\n{}", pass.physical_plan);
    }
    for report in reports.products {
        println!("== product {} -> {}", report.name, report.table);
        println!("-- logical plan\n{}", report.logical_plan);
        println!("-- physical plan\n{}", report.physical_plan);
    }
    Ok(())
}
