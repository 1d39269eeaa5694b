//! Check results over time: the Delta table `WAREHOUSE/_lakeforge/dq_results`, one row per
//! check per run, appended in one commit per run. (Persistence lives here, outside `dq`, which
//! only evaluates.)

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use lakeforge_planner::{CheckAction, CheckKind};

use crate::check_result::CheckResult;
use crate::config::EngineConfig;
use crate::delta::{is_delta_table, query_table};
use crate::error::{EngineError, Result};
use crate::location::display_location;
use crate::system_table::{SystemTable, append_rows, encode, exists, query_rows, sql_string};

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

/// A row of the results table: one check's result in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCheckResult {
    /// The run.
    pub run_id: String,
    /// The job.
    pub job: String,
    /// The source, step or product checked.
    pub dataset: String,
    /// The product version the run committed for the dataset (products of successful runs).
    pub product_version: Option<u64>,
    /// The check's name.
    pub check: String,
    /// Its kind (stored by its name in specs, `not_null`).
    pub kind: CheckKind,
    /// Its action (stored by name, `quarantine`).
    pub action: CheckAction,
    /// Rows evaluated.
    pub evaluated: u64,
    /// Rows failing.
    pub failed: u64,
    /// Rows whose predicate was NULL and that passed.
    pub null_skipped: u64,
    /// The value measured (dataset-level kinds).
    pub observed: Option<f64>,
    /// Whether the check passed.
    pub passed: bool,
    /// What it checks.
    pub description: String,
    /// Details.
    pub message: Option<String>,
    /// Failing rows, as JSON text.
    #[serde(with = "encode::json_text")]
    pub samples: Vec<serde_json::Map<String, serde_json::Value>>,
    /// When the run recorded it.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub recorded_at: DateTime<Utc>,
}

impl SystemTable for StoredCheckResult {
    const PATH: &'static str = DQ_RESULTS_TABLE;
    const NAME: &'static str = "lakeforge_dq_results";
    fn schema() -> SchemaRef {
        results_schema()
    }
}

/// The results table of a warehouse.
pub fn results_table_url(warehouse: &Url) -> Result<Url> {
    StoredCheckResult::url(warehouse)
}

/// Appends one run's results in one commit (nothing when there are none).
pub async fn record_results(
    warehouse: &Url,
    run_id: &str,
    job: &str,
    results: &[RecordedResult<'_>],
    recorded_at: DateTime<Utc>,
) -> Result<()> {
    let rows: Vec<StoredCheckResult> = results
        .iter()
        .map(|recorded| {
            let result = recorded.result;
            StoredCheckResult {
                run_id: run_id.to_string(),
                job: job.to_string(),
                dataset: result.dataset.clone(),
                product_version: recorded.product_version,
                check: result.check.clone(),
                kind: result.kind,
                action: result.action,
                evaluated: result.evaluated,
                failed: result.failed,
                null_skipped: result.null_skipped,
                observed: result.observed,
                passed: result.passed,
                description: result.description.clone(),
                message: result.message.clone(),
                samples: result.samples.clone(),
                recorded_at,
            }
        })
        .collect();
    let context = format!(
        "cannot record the check results of run {run_id} in {}",
        display_location(&results_table_url(warehouse)?)
    );
    append_rows(warehouse, &rows, &context).await
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
    /// The projection read back.
    #[derive(Deserialize)]
    struct Observed {
        check: String,
        observed: f64,
    }
    let mut history: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    if checks.is_empty() || !exists::<StoredCheckResult>(warehouse).await? {
        return Ok(history);
    }
    let rows: Vec<Observed> = query_rows::<StoredCheckResult, _>(
        warehouse,
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
    for row in rows {
        history.entry(row.check).or_default().push(row.observed);
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
