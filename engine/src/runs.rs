//! Run records: one row per run in the Delta table `WAREHOUSE/_lakeforge/runs`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::Result;
use crate::location::display_location;
use crate::metadata::{ENGINE_VERSION, InputIdentity};
use crate::system_table::{SystemTable, append_rows, encode};

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

/// A row of the runs table: a [`RunRecord`] with its duration and the engine that ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    /// The run's id.
    pub run_id: String,
    /// The job's name.
    pub job: String,
    /// How it ended.
    pub status: RunStatus,
    /// When it started.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub started_at: DateTime<Utc>,
    /// When it ended.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub ended_at: DateTime<Utc>,
    /// `ended_at - started_at` in milliseconds.
    pub duration_ms: i64,
    /// Hash of the spec and SQL.
    pub spec_hash: String,
    /// Products and versions written.
    #[serde(with = "encode::json_text")]
    pub products: Vec<ProductVersion>,
    /// The inputs read.
    #[serde(with = "encode::json_text")]
    pub inputs: Vec<InputIdentity>,
    /// The error, for a failed run.
    pub error: Option<String>,
    /// The version of Lakeforge that ran it.
    pub engine_version: String,
    /// The `[profiles.NAME]` the run used (NULL in rows written before profiles existed).
    #[serde(default)]
    pub profile: Option<String>,
}

impl SystemTable for StoredRun {
    const PATH: &'static str = RUNS_TABLE;
    const NAME: &'static str = "lakeforge_runs";
    fn schema() -> SchemaRef {
        runs_schema()
    }
}

impl From<&RunRecord> for StoredRun {
    fn from(record: &RunRecord) -> Self {
        StoredRun {
            run_id: record.run_id.clone(),
            job: record.job.clone(),
            status: record.status,
            started_at: record.started_at,
            ended_at: record.ended_at,
            duration_ms: (record.ended_at - record.started_at).num_milliseconds(),
            spec_hash: record.spec_hash.clone(),
            products: record.products.clone(),
            inputs: record.inputs.clone(),
            error: record.error.clone(),
            engine_version: ENGINE_VERSION.to_string(),
            profile: record.profile.clone(),
        }
    }
}

/// The runs table of a warehouse.
pub fn runs_table_url(warehouse: &Url) -> Result<Url> {
    StoredRun::url(warehouse)
}

/// Appends `record` to the warehouse's runs table, creating the table on first use.
pub async fn record_run(warehouse: &Url, record: &RunRecord) -> Result<()> {
    let context = format!(
        "cannot record run {} in {}",
        record.run_id,
        display_location(&runs_table_url(warehouse)?)
    );
    append_rows(warehouse, &[StoredRun::from(record)], &context).await
}
