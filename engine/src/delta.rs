//! Delta table operations: open (with time travel), history, rollback.
//!
//! Publishing products lives in [`crate::publish`]; this module is what every command that
//! only reads or restores a table needs.

use chrono::{DateTime, Utc};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use url::Url;

use crate::error::{EngineError, Result};
use crate::location::display_location;
use crate::metadata::{COMMIT_INFO_KEY, CommitMetadata, ENGINE_VERSION};

/// Opens the Delta table at `url`, at `version` or the latest.
pub async fn open_table(url: &Url, version: Option<u64>) -> Result<DeltaTable> {
    let location = display_location(url);
    let not_a_table = || EngineError::NotATable {
        location: location.clone(),
    };
    if !is_delta_table(url).await {
        return Err(not_a_table());
    }
    let mut builder = DeltaTableBuilder::from_url(url.clone()).map_err(|_| not_a_table())?;
    if let Some(version) = version {
        // Asking the log for a version past its end fails deep in the kernel with a message
        // about log segments; say it in the user's terms instead.
        if let Some(latest) = latest_version(url).await
            && version > latest
        {
            return Err(EngineError::Usage(format!(
                "version {version} of {location} does not exist (versions 0 to {latest} exist)"
            )));
        }
        builder = builder.with_version(version);
    }
    match builder.load().await {
        Ok(table) => Ok(table),
        Err(DeltaTableError::NotATable(_)) | Err(DeltaTableError::InvalidTableLocation(_)) => {
            Err(not_a_table())
        }
        Err(error) => match version {
            Some(version) => {
                let latest = latest_version(url).await;
                Err(EngineError::Delta {
                    context: format!(
                        "cannot read version {version} of {location}{}",
                        latest
                            .map(|v| format!(" (versions 0 to {v} exist)"))
                            .unwrap_or_default()
                    ),
                    source: error,
                })
            }
            None => Err(EngineError::delta(format!("cannot open {location}"), error)),
        },
    }
}

/// Opens the latest version of the table at `url`, or `None` when there is no table yet.
pub async fn open_existing(url: &Url) -> Result<Option<DeltaTable>> {
    match open_table(url, None).await {
        Ok(table) => Ok(Some(table)),
        Err(EngineError::NotATable { .. }) => Ok(None),
        Err(other) => Err(other),
    }
}

/// True when there is a Delta table at `url`.
pub async fn is_delta_table(url: &Url) -> bool {
    match DeltaTableBuilder::from_url(url.clone()).and_then(|b| b.build()) {
        Ok(table) => table.verify_deltatable_existence().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// The newest version of the table at `url` from a listing of its log (no snapshot is read),
/// or `None` when there is no table there yet. Cheap enough to poll.
pub async fn newest_version(url: &Url) -> Result<Option<u64>> {
    let location = display_location(url);
    let table = DeltaTableBuilder::from_url(url.clone())
        .and_then(|b| b.build())
        .map_err(|e| EngineError::delta(format!("cannot open {location}"), e))?;
    if !table.verify_deltatable_existence().await.unwrap_or(false) {
        return Ok(None);
    }
    table
        .get_latest_version()
        .await
        .map(Some)
        .map_err(|e| EngineError::delta(format!("cannot list the log of {location}"), e))
}

async fn latest_version(url: &Url) -> Option<u64> {
    let table = DeltaTableBuilder::from_url(url.clone())
        .ok()?
        .load()
        .await
        .ok()?;
    table.version()
}

/// One commit of a table's history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The version the commit made.
    pub version: u64,
    /// When it was made.
    pub timestamp: Option<DateTime<Utc>>,
    /// Delta's operation name (`CREATE TABLE`, `WRITE`, `RESTORE`, ...).
    pub operation: String,
    /// Lakeforge's record, when Lakeforge made the commit.
    pub lakeforge: Option<CommitMetadata>,
}

/// The table's commits, newest first (at most `limit`).
pub async fn history(url: &Url, limit: Option<usize>) -> Result<Vec<HistoryEntry>> {
    let table = open_table(url, None).await?;
    history_of(&table, url, limit).await
}

async fn history_of(
    table: &DeltaTable,
    url: &Url,
    limit: Option<usize>,
) -> Result<Vec<HistoryEntry>> {
    let latest = table.version().unwrap_or_default();
    let infos: Vec<_> = table.history(limit).try_collect().await.map_err(|e| {
        EngineError::delta(
            format!("cannot read history of {}", display_location(url)),
            e,
        )
    })?;
    Ok(infos
        .into_iter()
        .enumerate()
        .map(|(index, info)| {
            // `history` yields contiguous commits newest first, so the n-th is latest - n.
            let version = latest.saturating_sub(index as u64);
            let lakeforge = info
                .info
                .get(COMMIT_INFO_KEY)
                .and_then(|value| serde_json::from_value(value.clone()).ok());
            HistoryEntry {
                version,
                timestamp: info
                    .timestamp
                    .and_then(DateTime::<Utc>::from_timestamp_millis),
                operation: info.operation.unwrap_or_default(),
                lakeforge,
            }
        })
        .collect())
}

/// The Lakeforge record of the commit that made `version` of the table (default: the latest),
/// with the version found. `None` when that commit was not made by Lakeforge.
pub async fn commit_metadata(
    url: &Url,
    version: Option<u64>,
) -> Result<(u64, Option<CommitMetadata>)> {
    let table = open_table(url, None).await?;
    let latest = table.version().unwrap_or_default();
    let version = version.unwrap_or(latest);
    if version > latest {
        return Err(EngineError::Usage(format!(
            "{} has no version {version}: the latest is {latest}",
            display_location(url)
        )));
    }
    let wanted = usize::try_from(latest - version).unwrap_or(usize::MAX);
    let entries = history_of(&table, url, Some(wanted.saturating_add(1))).await?;
    let entry = entries.into_iter().find(|e| e.version == version);
    Ok((version, entry.and_then(|e| e.lakeforge)))
}

/// The commit properties of a maintenance operation run from the command line (`rollback`,
/// `vacuum`): Lakeforge's metadata with the operation and its run id, no job.
fn maintenance_commit(
    operation: &str,
    run_id: &str,
    restored_version: Option<u64>,
) -> CommitProperties {
    let metadata = CommitMetadata {
        operation: operation.to_string(),
        run_id: run_id.to_string(),
        job: None,
        product: None,
        spec_hash: None,
        profile: None,
        vars: Default::default(),
        engine_version: ENGINE_VERSION.to_string(),
        rows_written: None,
        inputs: Vec::new(),
        restored_version,
        freshness_sla_seconds: None,
        checks: Vec::new(),
        models: Vec::new(),
        lineage: None,
    };
    CommitProperties::default().with_metadata([(
        COMMIT_INFO_KEY.to_string(),
        serde_json::to_value(&metadata).unwrap_or_default(),
    )])
}

/// Restores the table's contents at `to_version` as a new version, and returns it.
pub async fn rollback(url: &Url, to_version: u64, run_id: &str) -> Result<u64> {
    let location = display_location(url);
    let table = open_table(url, None).await?;
    let latest = table.version().unwrap_or_default();
    if to_version >= latest {
        return Err(EngineError::Usage(format!(
            "cannot roll {location} back to version {to_version}: the latest version is {latest}; \
             pick an earlier one"
        )));
    }
    let properties = maintenance_commit("rollback", run_id, Some(to_version));
    let (restored, _metrics) = table
        .restore()
        .with_version_to_restore(to_version)
        .with_commit_properties(properties)
        .await
        .map_err(|e| {
            EngineError::delta(
                format!("cannot restore {location} to version {to_version}"),
                e,
            )
        })?;
    Ok(restored.version().unwrap_or_default())
}

/// What `vacuum` removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VacuumReport {
    /// True when nothing was deleted.
    pub dry_run: bool,
    /// The files, relative to the table's root, in order.
    pub files: Vec<String>,
    /// The table's version after the vacuum (a vacuum that deletes files commits its start and
    /// end to the log).
    pub version: u64,
}

/// The retention below which [`vacuum`] needs `force`: Delta's default
/// `delta.deletedFileRetentionDuration`, unless the table sets its own.
pub const DEFAULT_VACUUM_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// Deletes the files of the table at `url` that no version within `retain` references: files
/// removed by a commit older than `retain`, and files no version references at all (what a
/// killed or failed writer left) last modified before `retain`. Folders whose names start with
/// `_` or `.` are never touched (the log, Lakeforge's own tables), nor is anything while a
/// Delta table is nested inside this one (its files would look unreferenced).
///
/// A `retain` shorter than the table's `delta.deletedFileRetentionDuration` (7 days by
/// default) is refused unless `force`: readers of older versions, and runs still writing
/// files they have not committed, would lose them.
pub async fn vacuum(
    url: &Url,
    retain: std::time::Duration,
    dry_run: bool,
    force: bool,
    run_id: &str,
) -> Result<VacuumReport> {
    use deltalake::operations::vacuum::VacuumMode;

    let location = display_location(url);
    let table = open_table(url, None).await?;
    refuse_nested_tables(url).await?;
    let retention = chrono::Duration::from_std(retain)
        .map_err(|_| EngineError::Usage(format!("a retention of {retain:?} is too long")))?;
    let properties = maintenance_commit("vacuum", run_id, None);
    let minimum = table_retention(&table, &location)?;
    if retain < minimum && !force {
        return Err(EngineError::Usage(format!(
            "cannot vacuum {location} keeping only {}: the table keeps removed files for {} \
             (delta.deletedFileRetentionDuration), so readers of older versions and runs \
             still writing their files do not lose them; pass --force to vacuum anyway",
            humantime_like(retain),
            humantime_like(minimum)
        )));
    }
    let (vacuumed, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Full)
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .with_dry_run(dry_run)
        .with_commit_properties(properties)
        .await
        .map_err(|e| EngineError::delta(format!("cannot vacuum {location}"), e))?;
    let mut files = metrics.files_deleted;
    files.sort();
    Ok(VacuumReport {
        dry_run,
        files,
        version: vacuumed.version().unwrap_or_default(),
    })
}

/// The table's `delta.deletedFileRetentionDuration` (7 days unless it sets one).
fn table_retention(table: &DeltaTable, location: &str) -> Result<std::time::Duration> {
    use deltalake::table::config::TablePropertiesExt;
    let snapshot = table
        .snapshot()
        .map_err(|e| EngineError::delta(format!("cannot read the state of {location}"), e))?;
    Ok(snapshot.table_config().deleted_file_retention_duration())
}

/// `2h`, `7d`, `90s`: a retention as people write it.
fn humantime_like(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 && s > 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Refuses to vacuum a table with another Delta table inside its folder: the nested table's
/// files are referenced by no version of this one, so a full vacuum would delete them.
async fn refuse_nested_tables(url: &Url) -> Result<()> {
    let store = crate::storage::store_for(url)?;
    let root = crate::storage::path_in_store(url)?;
    let mut listing = store.list(Some(&root));
    while let Some(object) =
        listing
            .try_next()
            .await
            .map_err(|source| EngineError::ObjectStore {
                context: format!("cannot list {}", display_location(url)),
                source,
            })?
    {
        let Some(relative) = object.location.prefix_match(&root) else {
            continue;
        };
        let parts: Vec<String> = relative.map(|part| part.as_ref().to_string()).collect();
        // `a/b/_delta_log/...` below the root: a table at `a/b`.
        if let Some(position) = parts.iter().position(|p| p == "_delta_log")
            && position > 0
        {
            let nested = parts[..position].join("/");
            if parts[..position]
                .iter()
                .any(|p| p.starts_with('_') || p.starts_with('.'))
            {
                // Inside a hidden folder: vacuum never looks there.
                continue;
            }
            return Err(EngineError::Usage(format!(
                "cannot vacuum {}: it holds another Delta table at {nested}/, whose files a \
                 vacuum would delete; move that table out first",
                display_location(url)
            )));
        }
    }
    Ok(())
}

/// How many commits Lakeforge's own tables take between two maintenances (see
/// [`append_batch`]).
pub const MAINTENANCE_INTERVAL: u64 = 50;

/// How many commits Lakeforge's own tables take between two checkpoints. Opening a Delta table
/// reads every commit since its last checkpoint (delta-kernel's replay reads each twice), which
/// on an object store is a request per commit: with a checkpoint every 10 commits, recording a
/// run reads at most about 20 small objects per table instead of up to 100.
pub const CHECKPOINT_INTERVAL: u64 = 10;

/// Appends `batch` to Lakeforge's own table at `url` (runs, check results, lineage, the model
/// registry, triggers), creating it on first use. `context` says what is being recorded, for
/// the error.
///
/// These tables take one small commit per event, so every [`CHECKPOINT_INTERVAL`] versions a
/// checkpoint is written, and every [`MAINTENANCE_INTERVAL`] their small files are compacted
/// first: reading them (the anomaly checks' history, `lakeforge dq`, `lakeforge runs`) then
/// costs a checkpoint, fewer than [`CHECKPOINT_INTERVAL`] commits and a few files, however many
/// runs they record, rather than one commit and one file per run. Maintenance is best effort: the batch is committed
/// whether it succeeds or not.
pub async fn append_batch(
    url: &Url,
    batch: arrow::array::RecordBatch,
    table_name: &str,
    context: &str,
) -> Result<()> {
    let mut table = DeltaTableBuilder::from_url(url.clone())
        .and_then(|b| b.build())
        .map_err(|e| EngineError::delta(context, e))?;
    if table.verify_deltatable_existence().await.unwrap_or(false) {
        table
            .load()
            .await
            .map_err(|e| EngineError::delta(context, e))?;
    }
    let table = table
        .write(vec![batch])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        // Lakeforge's tables gain nullable columns across versions (`profile` in runs): an
        // older table takes them on, its earlier rows reading NULL.
        .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
        .with_table_name(table_name)
        .await
        .map_err(|e| EngineError::delta(context, e))?;
    let commits = table.version().map_or(0, |version| version + 1);
    let maintained = if commits > 0 && commits % MAINTENANCE_INTERVAL == 0 {
        maintain(table).await
    } else if commits > 0 && commits % CHECKPOINT_INTERVAL == 0 {
        deltalake::checkpoints::create_checkpoint(&table, None).await
    } else {
        Ok(())
    };
    if let Err(error) = maintained {
        tracing::warn!(table = %display_location(url), %error, "could not compact or checkpoint the table");
    }
    Ok(())
}

/// Compacts the small files of Lakeforge's own table `table` and writes a checkpoint of the
/// compacted version.
async fn maintain(table: DeltaTable) -> std::result::Result<(), DeltaTableError> {
    let (compacted, _metrics) = table
        .optimize()
        .with_type(deltalake::operations::optimize::OptimizeType::Compact)
        .await?;
    deltalake::checkpoints::create_checkpoint(&compacted, None).await
}

/// Runs `sql` over the latest version of Lakeforge's own table at `url`, registered as `name`.
/// `context` says what is being read, for the error.
pub async fn query_table(
    url: &Url,
    name: &str,
    sql: &str,
    config: &crate::config::EngineConfig,
    context: &str,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let table = open_table(url, None).await?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| EngineError::datafusion(context, e))?;
    let ctx = crate::session::new_session(config)?;
    ctx.register_table(name, provider)
        .map_err(|e| EngineError::datafusion(context, e))?;
    ctx.sql(sql)
        .await
        .map_err(|e| EngineError::datafusion(context, e))?
        .collect()
        .await
        .map_err(|e| EngineError::datafusion(context, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    #[tokio::test]
    async fn own_tables_are_compacted_and_checkpointed_as_they_grow() {
        let dir = tempfile::tempdir().unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let appends = 2 * MAINTENANCE_INTERVAL + 3;
        for n in 0..appends {
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(vec![n as i64]))],
            )
            .unwrap();
            append_batch(&url, batch, "numbers", "recording a number")
                .await
                .unwrap();
        }
        let table = open_table(&url, None).await.unwrap();
        // Appends, then a compaction at every MAINTENANCE_INTERVAL-th version.
        assert_eq!(table.version(), Some(appends + 1));
        let files = table.get_file_uris().unwrap().count();
        assert!(
            files <= 5,
            "{files} files: compacted twice, with 4 appends since"
        );
        let checkpoint = dir.path().join("_delta_log").join(format!(
            "{:020}.checkpoint.parquet",
            2 * MAINTENANCE_INTERVAL
        ));
        assert!(checkpoint.exists(), "no checkpoint at the last compaction");
        // Nothing was lost or repeated.
        let batches = query_table(
            &url,
            "numbers",
            "SELECT count(*) AS rows, count(DISTINCT n) AS distinct_numbers, sum(n) AS total \
             FROM numbers",
            &crate::config::EngineConfig::default(),
            "reading the numbers",
        )
        .await
        .unwrap();
        let value = |column: usize| {
            batches[0]
                .column(column)
                .as_primitive::<Int64Type>()
                .value(0)
        };
        let expected_total = (0..appends as i64).sum::<i64>();
        assert_eq!(
            (value(0), value(1), value(2)),
            (appends as i64, appends as i64, expected_total)
        );
    }
}
