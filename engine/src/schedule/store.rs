//! The scheduler's memory in the warehouse: the Delta table `WAREHOUSE/_lakeforge/schedule`,
//! one row per finished trigger (why the job ran, the input versions it consumed, how it
//! ended). A restarted daemon reads its trigger state from here, so data-driven triggers are
//! neither repeated nor missed and missed cron occurrences are known.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use url::Url;

use crate::config::EngineConfig;
use crate::delta::{append_batch, is_delta_table, newest_version, query_table};
use crate::dq::results::sql_string;
use crate::error::{EngineError, Result};
use crate::location::{display_location, join_folder};
use crate::metadata::ENGINE_VERSION;
use crate::schedule::scheduler::{
    ScheduledJob, Trigger, TriggerRecord, TriggerState, TriggerStore,
};

/// Where the trigger log lives, relative to the warehouse.
pub const SCHEDULE_TABLE: &str = "_lakeforge/schedule";

/// The status stored for a trigger a shutdown interrupted (it runs again after a restart).
const INTERRUPTED: &str = "interrupted";

/// The trigger log of a warehouse.
pub fn schedule_table_url(warehouse: &Url) -> Result<Url> {
    join_folder(warehouse, SCHEDULE_TABLE)
}

/// The trigger log's schema. Input versions are JSON text (`{"table URL": version}`).
pub fn schedule_schema() -> SchemaRef {
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("job", DataType::Utf8, true),
        Field::new("trigger", DataType::Utf8, true),
        Field::new("scheduled_for", timestamp.clone(), true),
        Field::new("input_versions", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("attempts", DataType::Int64, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("started_at", timestamp.clone(), true),
        Field::new("ended_at", timestamp, true),
        Field::new("schedule", DataType::Utf8, true),
        Field::new("timezone", DataType::Utf8, true),
        Field::new("engine_version", DataType::Utf8, true),
    ]))
}

/// The production [`TriggerStore`]: each job's warehouse's trigger log, and Delta logs for
/// input versions.
#[derive(Debug, Clone)]
pub struct WarehouseTriggerStore {
    config: EngineConfig,
}

impl WarehouseTriggerStore {
    /// A store reading with `config`.
    pub fn new(config: EngineConfig) -> Self {
        WarehouseTriggerStore { config }
    }
}

impl TriggerStore for WarehouseTriggerStore {
    async fn load(&self, job: &ScheduledJob) -> Result<TriggerState> {
        read_trigger_state(&job.warehouse, &job.name, &self.config).await
    }

    async fn record(&self, job: &ScheduledJob, record: &TriggerRecord) -> Result<()> {
        let url = schedule_table_url(&job.warehouse)?;
        let context = format!(
            "cannot record the trigger of job '{}' in {}",
            record.job,
            display_location(&url)
        );
        append_batch(&url, trigger_batch(record)?, "lakeforge_schedule", &context).await
    }

    async fn latest_version(&self, table: &Url) -> Result<Option<u64>> {
        newest_version(table).await
    }
}

fn trigger_batch(record: &TriggerRecord) -> Result<RecordBatch> {
    let micros = |t: DateTime<Utc>| t.timestamp_micros();
    let scheduled_for = match record.trigger {
        Trigger::Schedule { scheduled_for } => Some(micros(scheduled_for)),
        Trigger::Inputs => None,
    };
    let versions = serde_json::to_string(&record.input_versions)
        .map_err(|e| EngineError::internal("cannot encode input versions", e))?;
    let timestamp = |value: Option<i64>| {
        Arc::new(TimestampMicrosecondArray::from(vec![value]).with_timezone("UTC")) as ArrayRef
    };
    let text = |value: Option<&str>| Arc::new(StringArray::from(vec![value])) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        text(Some(&record.job)),
        text(Some(record.trigger.kind())),
        timestamp(scheduled_for),
        text(Some(&versions)),
        text(record.run_id.as_deref()),
        text(Some(if record.interrupted {
            INTERRUPTED
        } else {
            record.status.as_str()
        })),
        Arc::new(Int64Array::from(vec![i64::from(record.attempts)])),
        text(record.error.as_deref()),
        timestamp(Some(micros(record.started_at))),
        timestamp(Some(micros(record.ended_at))),
        text(record.schedule.as_deref()),
        text(Some(&record.timezone)),
        text(Some(ENGINE_VERSION)),
    ];
    RecordBatch::try_new(schedule_schema(), columns)
        .map_err(|e| EngineError::internal("cannot build the trigger record", e))
}

/// The newest scheduled occurrence and the input versions consumed by `job`'s triggers.
pub async fn read_trigger_state(
    warehouse: &Url,
    job: &str,
    config: &EngineConfig,
) -> Result<TriggerState> {
    let url = schedule_table_url(warehouse)?;
    let mut state = TriggerState::default();
    if !is_delta_table(&url).await {
        return Ok(state);
    }
    let batches = query_table(
        &url,
        "schedule",
        &format!(
            "SELECT scheduled_for, input_versions, status FROM schedule WHERE job = {}",
            sql_string(job)
        ),
        config,
        &format!("cannot read the trigger state of job '{job}'"),
    )
    .await?;
    for batch in &batches {
        let scheduled_for = timestamps(batch.column(0))?;
        let versions = strings(batch.column(1))?;
        let status = strings(batch.column(2))?;
        for ((scheduled_for, versions), status) in
            scheduled_for.into_iter().zip(versions).zip(status)
        {
            let versions = versions.unwrap_or_else(|| "{}".to_string());
            let parsed: BTreeMap<String, u64> = serde_json::from_str(&versions).map_err(|e| {
                EngineError::Usage(format!(
                    "{}: unreadable input versions {versions:?}: {e}",
                    display_location(&url)
                ))
            })?;
            let interrupted = status.as_deref() == Some(INTERRUPTED);
            state.absorb(scheduled_for, &parsed, interrupted);
        }
    }
    Ok(state)
}

/// A column as optional strings, whatever string or null type the scan gave it.
pub(crate) fn strings(column: &ArrayRef) -> Result<Vec<Option<String>>> {
    let cast = arrow::compute::cast(column, &DataType::Utf8)
        .map_err(|e| EngineError::internal("cannot read a text column", e))?;
    let values = cast.as_string::<i32>();
    Ok((0..values.len())
        .map(|i| values.is_valid(i).then(|| values.value(i).to_string()))
        .collect())
}

/// A timestamp (or null) column as optional UTC instants.
pub(crate) fn timestamps(column: &ArrayRef) -> Result<Vec<Option<DateTime<Utc>>>> {
    let micros = arrow::compute::cast(
        column,
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )
    .and_then(|c| arrow::compute::cast(&c, &DataType::Int64))
    .map_err(|e| EngineError::internal("cannot read a timestamp column", e))?;
    let values = micros.as_primitive::<Int64Type>();
    Ok((0..values.len())
        .map(|i| {
            values
                .is_valid(i)
                .then(|| DateTime::<Utc>::from_timestamp_micros(values.value(i)))
                .flatten()
        })
        .collect())
}
