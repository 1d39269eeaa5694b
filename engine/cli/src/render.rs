//! How results are printed: aligned tables for people, JSON lines with `--json`.

use std::time::Duration;

use arrow::array::RecordBatch;
use lakeforge_engine::dq::CheckResult;
use lakeforge_engine::job::RunSummary;
use lakeforge_engine::location::display_location;
use lakeforge_engine::registry::AliasChange;
use lakeforge_engine::tables::text_table;

/// A run's products (version, rows, files, size, time) and check results.
pub fn print_summary(summary: &RunSummary, json: bool) {
    if json {
        let products: Vec<_> = summary
            .products
            .iter()
            .map(|p| {
                serde_json::json!({
                    "product": p.name, "table": p.table.to_string(), "version": p.version,
                    "rows": p.rows, "files": p.files, "bytes": p.bytes,
                    "duration_ms": p.duration.as_millis() as u64, "quarantined": p.quarantined,
                })
            })
            .collect();
        let line = serde_json::json!({
            "run_id": summary.run_id, "job": summary.job, "status": "succeeded",
            "duration_ms": summary.duration.as_millis() as u64, "products": products,
            "checks": summary.checks,
        });
        println!("{line}");
        return;
    }
    println!(
        "run {} of job '{}' succeeded in {}",
        summary.run_id,
        summary.job,
        format_duration(summary.duration)
    );
    let header = [
        "product", "version", "rows", "files", "size", "time", "table",
    ];
    let rows: Vec<Vec<String>> = summary
        .products
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.version.to_string(),
                p.rows.to_string(),
                p.files.to_string(),
                format_bytes(p.bytes),
                format_duration(p.duration),
                display_location(&p.table),
            ]
        })
        .collect();
    print_table(&header, &rows);
    for product in summary.products.iter().filter(|p| p.quarantined > 0) {
        println!(
            "{} rows of {} quarantined (lakeforge show WAREHOUSE/_lakeforge/quarantine/{})",
            product.quarantined, product.name, product.name
        );
    }
    print_checks(&summary.checks);
}

/// One table of check results per dataset.
pub fn print_checks(results: &[CheckResult]) {
    let mut datasets: Vec<&str> = Vec::new();
    for result in results {
        if !datasets.contains(&result.dataset.as_str()) {
            datasets.push(&result.dataset);
        }
    }
    for dataset in datasets {
        println!("\nchecks on {dataset}:");
        let header = [
            "check",
            "action",
            "evaluated",
            "failed",
            "%",
            "observed",
            "passed",
            "details",
        ];
        let rows: Vec<Vec<String>> = results
            .iter()
            .filter(|r| r.dataset == dataset)
            .map(|r| {
                vec![
                    r.check.clone(),
                    r.action.to_string(),
                    r.evaluated.to_string(),
                    r.failed.to_string(),
                    r.failed_percent()
                        .map(|p| format!("{p:.2}"))
                        .unwrap_or_else(|| "-".to_string()),
                    r.observed
                        .map(|o| {
                            format!("{o:.6}")
                                .trim_end_matches('0')
                                .trim_end_matches('.')
                                .to_string()
                        })
                        .unwrap_or_else(|| "-".to_string()),
                    if r.passed { "yes" } else { "NO" }.to_string(),
                    r.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&header, &rows);
    }
}

/// Prints left-aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", text_table(header, rows));
}

/// What a promotion or alias rollback did.
pub fn print_alias_change(change: &AliasChange, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "name": change.name, "alias": change.alias, "action": change.action,
                "version": change.version, "previous_version": change.previous_version,
                "gate": change.gate,
            })
        );
    } else {
        let previous = change
            .previous_version
            .map_or_else(|| "none".to_string(), |v| v.to_string());
        println!(
            "{} '{}' of model '{}': now version {} (was {previous})",
            change.action, change.alias, change.name, change.version
        );
    }
}

/// Arrow batches as a pretty table, or as JSON lines.
pub fn print_batches(batches: &[RecordBatch], json: bool) -> anyhow::Result<()> {
    if json {
        let mut writer = arrow::json::LineDelimitedWriter::new(std::io::stdout());
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    } else {
        println!("{}", arrow::util::pretty::pretty_format_batches(batches)?);
    }
    Ok(())
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2}s")
    }
}

fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}
