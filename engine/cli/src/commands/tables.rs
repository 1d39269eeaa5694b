//! `lakeforge history`, `show`, `rollback`, `vacuum` and `sql`: reading, restoring and
//! cleaning tables.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use arrow::array::RecordBatch;
use lakeforge_engine::EngineConfig;
use lakeforge_engine::delta;
use lakeforge_engine::location::display_location;
use lakeforge_engine::tables::{SqlSession, history_batch, show_table};

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

/// Runs ad-hoc SQL (one statement or a `;`-separated script) over the named locations,
/// printing each statement's result as soon as it has run.
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
    let script = match (&args.query, &args.file) {
        (Some(query), _) => query.clone(),
        (None, Some(file)) => read_sql_file(file)?,
        // clap requires one of the two (`required_unless_present`).
        (None, None) => anyhow::bail!("give the SQL as an argument or with -f FILE"),
    };
    let session = SqlSession::open(&tables, config).await?;
    let statements = session.parse(&script)?;
    let script_has_several = statements.len() > 1;
    let mut printed_a_table = false;
    for statement in statements {
        let number = statement.number;
        let text = statement.text.clone();
        let output = session.execute(statement).await?;
        let rows: usize = output.batches.iter().map(|b| b.num_rows()).sum();
        if args.timing {
            eprintln!(
                "statement {number}: {:.1} ms, {rows} row{}",
                output.elapsed.as_secs_f64() * 1000.0,
                if rows == 1 { "" } else { "s" }
            );
        }
        if json && script_has_several {
            println!(
                "{}",
                serde_json::json!({
                    "statement": number,
                    "sql": text,
                    "elapsed_ms": output.elapsed.as_secs_f64() * 1000.0,
                    "rows": json_rows(&output.batches)?,
                })
            );
        } else if output.returns_rows() || !script_has_several {
            if printed_a_table && !json {
                println!();
            }
            print_batches(&output.batches, json)?;
            printed_a_table = true;
        }
    }
    Ok(())
}

/// The SQL in `file`, or on standard input for `-`.
fn read_sql_file(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut script = String::new();
        std::io::stdin()
            .read_to_string(&mut script)
            .context("cannot read the SQL from standard input")?;
        return Ok(script);
    }
    std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the SQL file {}", file.display()))
}

/// A statement's rows as a JSON array of objects, one per row.
fn json_rows(batches: &[RecordBatch]) -> anyhow::Result<serde_json::Value> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        // arrow's writer writes nothing, not `[]`, when it was given no rows.
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    Ok(serde_json::from_slice(&bytes)?)
}
