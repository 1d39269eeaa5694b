//! Run records: one row per run in the Delta table `WAREHOUSE/_lakeforge/runs`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::delta::append_batch;
use crate::error::{EngineError, Result};
use crate::location::{display_location, join_folder};
use crate::metadata::{ENGINE_VERSION, InputIdentity};

/// Where run records live, relative to the warehouse.
pub const RUNS_TABLE: &str = "_lakeforge/runs";

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every product was committed.
    Succeeded,
    /// The run stopped with an error; no product version was committed by it.
    Failed,
    /// The run was cancelled (timeout, scheduler shutdown) before committing anything.
    Cancelled,
}

impl RunStatus {
    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// A product version a run wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductVersion {
    /// The product's name.
    pub product: String,
    /// The table's location.
    pub table: String,
    /// The version committed.
    pub version: u64,
    /// Rows written.
    pub rows: u64,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: String,
    /// The job's name.
    pub job: String,
    /// How it ended.
    pub status: RunStatus,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: DateTime<Utc>,
    /// Hash of the spec and SQL.
    pub spec_hash: String,
    /// Products and versions written.
    pub products: Vec<ProductVersion>,
    /// The inputs read.
    pub inputs: Vec<InputIdentity>,
    /// The error, for a failed run.
    pub error: Option<String>,
    /// The `[profiles.NAME]` the run used.
    pub profile: Option<String>,
}

/// The runs table's schema. Nested data (products, inputs) is stored as JSON text so the
/// table stays readable by every Delta reader and stable as those records grow fields.
pub fn runs_schema() -> SchemaRef {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, true),
        Field::new("job", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("started_at", timestamp.clone(), true),
        Field::new("ended_at", timestamp, true),
        Field::new("duration_ms", DataType::Int64, true),
        Field::new("spec_hash", DataType::Utf8, true),
        Field::new("products", DataType::Utf8, true),
        Field::new("inputs", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("engine_version", DataType::Utf8, true),
        // Added with profiles: runs tables of earlier versions gain it on their next append.
        Field::new("profile", DataType::Utf8, true),
    ]))
}

/// The runs table of a warehouse.
pub fn runs_table_url(warehouse: &Url) -> Result<Url> {
    join_folder(warehouse, RUNS_TABLE)
}

/// Appends `record` to the warehouse's runs table, creating the table on first use.
pub async fn record_run(warehouse: &Url, record: &RunRecord) -> Result<()> {
    let url = runs_table_url(warehouse)?;
    let batch = record_batch(record)?;
    let context = format!(
        "cannot record run {} in {}",
        record.run_id,
        display_location(&url)
    );
    append_batch(&url, batch, "lakeforge_runs", &context).await
}

fn record_batch(record: &RunRecord) -> Result<RecordBatch> {
    let products = to_json(&record.products)?;
    let inputs = to_json(&record.inputs)?;
    let micros = |t: DateTime<Utc>| t.timestamp_micros();
    let duration = (record.ended_at - record.started_at).num_milliseconds();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![record.run_id.as_str()])),
        Arc::new(StringArray::from(vec![record.job.as_str()])),
        Arc::new(StringArray::from(vec![record.status.as_str()])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![micros(record.started_at)]).with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(vec![micros(record.ended_at)]).with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from(vec![duration])),
        Arc::new(StringArray::from(vec![record.spec_hash.as_str()])),
        Arc::new(StringArray::from(vec![products])),
        Arc::new(StringArray::from(vec![inputs])),
        Arc::new(StringArray::from(vec![record.error.as_deref()])),
        Arc::new(StringArray::from(vec![ENGINE_VERSION])),
        Arc::new(StringArray::from(vec![record.profile.as_deref()])),
    ];
    RecordBatch::try_new(runs_schema(), columns)
        .map_err(|e| EngineError::internal("cannot build the run record", e))
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| EngineError::internal("cannot encode the run record", e))
}
