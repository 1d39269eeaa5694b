//! The scheduler's memory in the warehouse: the Delta table `WAREHOUSE/_lakeforge/schedule`,
//! one row per finished trigger (why the job ran, the input versions it consumed, how it
//! ended). A restarted daemon reads its trigger state from here, so data-driven triggers are
//! neither repeated nor missed and missed cron occurrences are known.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::EngineConfig;
use crate::delta::newest_version;
use crate::error::Result;
use crate::location::display_location;
use crate::metadata::ENGINE_VERSION;
use crate::schedule::scheduler::{
    ScheduledJob, Trigger, TriggerRecord, TriggerState, TriggerStore,
};
use crate::system_table::{SystemTable, append_rows, encode, exists, query_rows, sql_string};

/// Where the trigger log lives, relative to the warehouse.
pub const SCHEDULE_TABLE: &str = "_lakeforge/schedule";

/// The status stored for a trigger a shutdown interrupted (it runs again after a restart).
const INTERRUPTED: &str = "interrupted";

/// The trigger log of a warehouse.
pub fn schedule_table_url(warehouse: &Url) -> Result<Url> {
    StoredTrigger::url(warehouse)
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

/// A row of the trigger log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTrigger {
    /// The job.
    pub job: String,
    /// `schedule` or `inputs`.
    pub trigger: String,
    /// The cron occurrence, for a scheduled trigger.
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Versions of the watched tables consumed (table URL → version), as JSON text.
    #[serde(with = "encode::json_text")]
    pub input_versions: BTreeMap<String, u64>,
    /// The last attempt's run id.
    pub run_id: Option<String>,
    /// The last attempt's status, or `interrupted`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: Option<String>,
    /// When the first attempt started.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub started_at: DateTime<Utc>,
    /// When the last attempt ended.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub ended_at: DateTime<Utc>,
    /// The job's cron pattern at the time.
    pub schedule: Option<String>,
    /// The job's time zone.
    pub timezone: String,
    /// The version of Lakeforge that recorded it.
    pub engine_version: String,
}

impl SystemTable for StoredTrigger {
    const PATH: &'static str = SCHEDULE_TABLE;
    const NAME: &'static str = "lakeforge_schedule";
    fn schema() -> SchemaRef {
        schedule_schema()
    }
}

impl From<&TriggerRecord> for StoredTrigger {
    fn from(record: &TriggerRecord) -> Self {
        StoredTrigger {
            job: record.job.clone(),
            trigger: record.trigger.kind().to_string(),
            scheduled_for: match record.trigger {
                Trigger::Schedule { scheduled_for } => Some(scheduled_for),
                Trigger::Inputs => None,
            },
            input_versions: record.input_versions.clone(),
            run_id: record.run_id.clone(),
            status: if record.interrupted {
                INTERRUPTED.to_string()
            } else {
                record.status.as_str().to_string()
            },
            attempts: record.attempts,
            error: record.error.clone(),
            started_at: record.started_at,
            ended_at: record.ended_at,
            schedule: record.schedule.clone(),
            timezone: record.timezone.clone(),
            engine_version: ENGINE_VERSION.to_string(),
        }
    }
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
        let context = format!(
            "cannot record the trigger of job '{}' in {}",
            record.job,
            display_location(&schedule_table_url(&job.warehouse)?)
        );
        append_rows(&job.warehouse, &[StoredTrigger::from(record)], &context).await
    }

    async fn latest_version(&self, table: &Url) -> Result<Option<u64>> {
        newest_version(table).await
    }
}

/// The newest scheduled occurrence and the input versions consumed by `job`'s triggers.
pub async fn read_trigger_state(
    warehouse: &Url,
    job: &str,
    config: &EngineConfig,
) -> Result<TriggerState> {
    /// The projection read back.
    #[derive(Deserialize)]
    struct Consumed {
        #[serde(with = "chrono::serde::ts_microseconds_option")]
        scheduled_for: Option<DateTime<Utc>>,
        #[serde(with = "encode::json_text")]
        input_versions: BTreeMap<String, u64>,
        status: String,
    }
    let mut state = TriggerState::default();
    if !exists::<StoredTrigger>(warehouse).await? {
        return Ok(state);
    }
    let rows: Vec<Consumed> = query_rows::<StoredTrigger, _>(
        warehouse,
        &format!(
            "SELECT scheduled_for, input_versions, status FROM schedule WHERE job = {}",
            sql_string(job)
        ),
        config,
        &format!("cannot read the trigger state of job '{job}'"),
    )
    .await?;
    for row in rows {
        state.absorb(
            row.scheduled_for,
            &row.input_versions,
            row.status == INTERRUPTED,
        );
    }
    Ok(state)
}
