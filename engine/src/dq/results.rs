//! Check results over time: the Delta table `WAREHOUSE/_lakeforge/dq_results`, one row per
//! check per run, appended in one commit per run.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use url::Url;

use crate::config::EngineConfig;
use crate::delta::{append_batch, is_delta_table, query_table};
use crate::dq::CheckResult;
use crate::error::{EngineError, Result};
use crate::location::{display_location, join_folder};

/// Where check results live, relative to the warehouse.
pub const DQ_RESULTS_TABLE: &str = "_lakeforge/dq_results";

/// A check result with the run it belongs to.
#[derive(Debug, Clone)]
pub struct RecordedResult<'a> {
    /// The result.
    pub result: &'a CheckResult,
    /// The product version the run committed for the dataset (products of successful runs).
    pub product_version: Option<u64>,
}

/// The results table's schema.
pub fn results_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, true),
        Field::new("job", DataType::Utf8, true),
        Field::new("dataset", DataType::Utf8, true),
        Field::new("product_version", DataType::Int64, true),
        Field::new("check", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, true),
        Field::new("action", DataType::Utf8, true),
        Field::new("evaluated", DataType::Int64, true),
        Field::new("failed", DataType::Int64, true),
        Field::new("null_skipped", DataType::Int64, true),
        Field::new("observed", DataType::Float64, true),
        Field::new("passed", DataType::Boolean, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("message", DataType::Utf8, true),
        Field::new("samples", DataType::Utf8, true),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

/// The results table of a warehouse.
pub fn results_table_url(warehouse: &Url) -> Result<Url> {
    join_folder(warehouse, DQ_RESULTS_TABLE)
}

/// Appends one run's results in one commit (nothing when there are none).
pub async fn record_results(
    warehouse: &Url,
    run_id: &str,
    job: &str,
    results: &[RecordedResult<'_>],
    recorded_at: DateTime<Utc>,
) -> Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let url = results_table_url(warehouse)?;
    let context = || {
        format!(
            "cannot record the check results of run {run_id} in {}",
            display_location(&url)
        )
    };
    let i64_of = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let strings = |f: &dyn Fn(&RecordedResult<'_>) -> Option<String>| -> ArrayRef {
        Arc::new(results.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|_| Some(run_id.to_string())),
        strings(&|_| Some(job.to_string())),
        strings(&|r| Some(r.result.dataset.clone())),
        Arc::new(
            results
                .iter()
                .map(|r| r.product_version.map(i64_of))
                .collect::<Int64Array>(),
        ),
        strings(&|r| Some(r.result.check.clone())),
        strings(&|r| Some(r.result.kind.to_string())),
        strings(&|r| Some(r.result.action.to_string())),
        Arc::new(
            results
                .iter()
                .map(|r| Some(i64_of(r.result.evaluated)))
                .collect::<Int64Array>(),
        ),
        Arc::new(
            results
                .iter()
                .map(|r| Some(i64_of(r.result.failed)))
                .collect::<Int64Array>(),
        ),
        Arc::new(
            results
                .iter()
                .map(|r| Some(i64_of(r.result.null_skipped)))
                .collect::<Int64Array>(),
        ),
        Arc::new(
            results
                .iter()
                .map(|r| r.result.observed)
                .collect::<Float64Array>(),
        ),
        Arc::new(
            results
                .iter()
                .map(|r| Some(r.result.passed))
                .collect::<BooleanArray>(),
        ),
        strings(&|r| Some(r.result.description.clone())),
        strings(&|r| r.result.message.clone()),
        strings(&|r| serde_json::to_string(&r.result.samples).ok()),
        Arc::new(
            TimestampMicrosecondArray::from(vec![recorded_at.timestamp_micros(); results.len()])
                .with_timezone("UTC"),
        ),
    ];
    let batch = RecordBatch::try_new(results_schema(), columns)
        .map_err(|e| EngineError::Usage(format!("{}: {e}", context())))?;
    append_batch(&url, batch, "lakeforge_dq_results", &context()).await
}

/// The observed values of a job's checks named `checks` on `dataset`, per check name, oldest
/// first (results without an observed value are skipped).
pub async fn observed_history(
    warehouse: &Url,
    job: &str,
    dataset: &str,
    checks: &[String],
    config: &EngineConfig,
) -> Result<BTreeMap<String, Vec<f64>>> {
    let url = results_table_url(warehouse)?;
    let mut history: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    if checks.is_empty() || !is_delta_table(&url).await {
        return Ok(history);
    }
    let batches = query_table(
        &url,
        "dq_results",
        &format!(
            "SELECT \"check\", observed FROM dq_results WHERE job = {} AND dataset = {} \
             AND \"check\" IN ({}) AND observed IS NOT NULL ORDER BY recorded_at, \"check\"",
            sql_string(job),
            sql_string(dataset),
            checks
                .iter()
                .map(|check| sql_string(check))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        config,
        "cannot read the check results",
    )
    .await?;
    for batch in &batches {
        // Parquet strings may come back as Utf8View; read them as plain strings.
        let checks = arrow::compute::cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| EngineError::Usage(format!("cannot read the check results: {e}")))?;
        let (Some(checks), Some(values)) = (
            checks.as_string_opt::<i32>(),
            batch.column(1).as_primitive_opt::<Float64Type>(),
        ) else {
            continue;
        };
        for (check, value) in checks.iter().zip(values.iter()) {
            if let (Some(check), Some(value)) = (check, value) {
                history.entry(check.to_string()).or_default().push(value);
            }
        }
    }
    Ok(history)
}

/// Results for `lakeforge dq`: newest first, optionally for one job and/or check.
pub async fn list_results(
    warehouse: &Url,
    job: Option<&str>,
    check: Option<&str>,
    limit: usize,
    config: &EngineConfig,
) -> Result<Vec<RecordBatch>> {
    let url = results_table_url(warehouse)?;
    if !is_delta_table(&url).await {
        return Err(EngineError::NotATable {
            location: format!(
                "{} (no run in this warehouse has recorded check results yet)",
                display_location(&url)
            ),
        });
    }
    let mut filters = Vec::new();
    if let Some(job) = job {
        filters.push(format!("job = {}", sql_string(job)));
    }
    if let Some(check) = check {
        filters.push(format!("\"check\" = {}", sql_string(check)));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", filters.join(" AND "))
    };
    query_table(
        &url,
        "dq_results",
        &format!(
            "SELECT recorded_at, job, dataset, product_version, \"check\", kind, action, \
             evaluated, failed, null_skipped, observed, passed, message, run_id \
             FROM dq_results {filter} ORDER BY recorded_at DESC, dataset, \"check\" \
             LIMIT {limit}"
        ),
        config,
        "cannot read the check results",
    )
    .await
}

pub(crate) fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
