//! Reading tables for the CLI: `show`, `sql`, `history`, `runs`; and laying rows out as text.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::SessionContext;
use url::Url;

use crate::config::EngineConfig;
use crate::delta::{HistoryEntry, open_table};
use crate::error::{EngineError, Result};
use crate::location::display_location;
use crate::runs::runs_table_url;
use crate::session::new_session;
use crate::sources::register_location;

/// The rows of the table at `url` (at `version`, or the latest), at most `limit`.
pub async fn show_table(
    url: &Url,
    version: Option<u64>,
    limit: usize,
    config: &EngineConfig,
) -> Result<Vec<RecordBatch>> {
    let ctx = new_session(config)?;
    let table = open_table(url, version).await?;
    let provider = table.table_provider().await.map_err(|e| {
        EngineError::datafusion(format!("cannot read {}", display_location(url)), e)
    })?;
    let frame = ctx
        .read_table(provider)
        .and_then(|df| df.limit(0, Some(limit)))
        .map_err(|e| {
            EngineError::datafusion(format!("cannot read {}", display_location(url)), e)
        })?;
    frame
        .collect()
        .await
        .map_err(|e| EngineError::datafusion(format!("cannot read {}", display_location(url)), e))
}

/// Runs `query` over the named locations (Delta tables, Parquet, CSV or JSON files).
pub async fn run_sql(
    query: &str,
    tables: &[(String, Url)],
    config: &EngineConfig,
) -> Result<Vec<RecordBatch>> {
    let ctx = new_session(config)?;
    for (name, url) in tables {
        register_location(&ctx, name, url).await?;
    }
    collect_sql(&ctx, query).await
}

async fn collect_sql(ctx: &SessionContext, query: &str) -> Result<Vec<RecordBatch>> {
    let frame = ctx
        .sql(query)
        .await
        .map_err(|e| EngineError::datafusion("query failed", e))?;
    frame
        .collect()
        .await
        .map_err(|e| EngineError::datafusion("query failed", e))
}

/// The warehouse's run records, newest first, at most `limit`.
pub async fn list_runs(
    warehouse: &Url,
    limit: usize,
    config: &EngineConfig,
) -> Result<Vec<RecordBatch>> {
    let url = runs_table_url(warehouse)?;
    let table = open_table(&url, None).await.map_err(|error| match error {
        EngineError::NotATable { .. } => EngineError::NotATable {
            location: format!(
                "{} (no job has run in this warehouse yet)",
                display_location(&url)
            ),
        },
        other => other,
    })?;
    let ctx = new_session(config)?;
    let provider = table
        .table_provider()
        .await
        .map_err(|e| EngineError::datafusion("cannot read the runs table", e))?;
    ctx.register_table("runs", provider)
        .map_err(|e| EngineError::datafusion("cannot read the runs table", e))?;
    collect_sql(
        &ctx,
        &format!(
            "SELECT run_id, job, status, started_at, duration_ms, products, error \
             FROM runs ORDER BY started_at DESC LIMIT {limit}"
        ),
    )
    .await
}

/// History entries as a table: version, timestamp, operation, run_id, job, rows_written,
/// profile.
pub fn history_batch(entries: &[HistoryEntry]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("operation", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("job", DataType::Utf8, true),
        Field::new("rows_written", DataType::UInt64, true),
        Field::new("profile", DataType::Utf8, true),
    ]));
    let lakeforge = |f: fn(&crate::metadata::CommitMetadata) -> Option<String>| {
        entries
            .iter()
            .map(|e| e.lakeforge.as_ref().and_then(f))
            .collect::<StringArray>()
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(entries.iter().map(|e| e.version).collect::<UInt64Array>()),
        Arc::new(
            entries
                .iter()
                .map(|e| e.timestamp.map(|t| t.timestamp_millis()))
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        ),
        Arc::new(
            entries
                .iter()
                .map(|e| Some(e.operation.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(lakeforge(|m| Some(m.run_id.clone()))),
        Arc::new(lakeforge(|m| m.job.clone())),
        Arc::new(
            entries
                .iter()
                .map(|e| e.lakeforge.as_ref().and_then(|m| m.rows_written))
                .collect::<UInt64Array>(),
        ),
        Arc::new(lakeforge(|m| m.profile.clone())),
    ];
    RecordBatch::try_new(schema, columns)
        .map_err(|e| EngineError::internal("cannot format the history", e))
}

/// Left-aligned columns under a header, two spaces apart, one line per row (trailing spaces
/// trimmed).
pub fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

#[cfg(test)]
mod text_table_tests {
    use super::text_table;

    #[test]
    fn columns_are_aligned_and_lines_trimmed() {
        let text = text_table(
            &["A", "LONGER"],
            &[vec!["wide cell".to_string(), "x".to_string()]],
        );
        assert_eq!(text, "A          LONGER\nwide cell  x\n");
    }
}
