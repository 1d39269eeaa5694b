//! Reading tables for the CLI: `show`, `sql`, `history`, `runs`; and laying rows out as text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
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

/// One session for a script of ad-hoc SQL statements: the named locations are registered
/// once, then the statements run one after another in it, so a view or setting one makes is
/// seen by the next (TPC-H q15's `CREATE VIEW ...; SELECT ...; DROP VIEW ...`) and a query
/// repeated in the script runs warm (file listings and Parquet metadata already cached).
pub struct SqlSession {
    ctx: SessionContext,
}

/// One statement of a script, parsed, with its 1-based position and its text for messages.
pub struct SqlStatement {
    /// Its position in the script, from 1.
    pub number: usize,
    /// The statement as DataFusion's parser printed it back.
    pub text: String,
    statement: DfStatement,
}

/// What one statement returned and how long it took (planning, execution and collecting the
/// rows; printing them is the caller's).
pub struct StatementOutput {
    /// The result's schema; no columns for statements that return nothing (DDL, SET).
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Wall-clock time from planning to the last row.
    pub elapsed: Duration,
}

impl StatementOutput {
    /// Whether the statement returns a result to show (a query, EXPLAIN, SHOW), as opposed
    /// to one that only changes the session (CREATE VIEW, DROP VIEW, SET).
    pub fn returns_rows(&self) -> bool {
        !self.schema.fields().is_empty()
    }
}

impl SqlSession {
    /// A session in which each `(name, location)` is queryable as `name`.
    pub async fn open(tables: &[(String, Url)], config: &EngineConfig) -> Result<Self> {
        let ctx = new_session(config)?;
        for (name, url) in tables {
            register_location(&ctx, name, url).await?;
        }
        Ok(Self { ctx })
    }

    /// Splits `script` into its `;`-separated statements with DataFusion's own parser (so a
    /// `;` inside a string literal or comment does not split), in the session's dialect.
    pub fn parse(&self, script: &str) -> Result<Vec<SqlStatement>> {
        let state = self.ctx.state();
        let options = state.config_options();
        let dialect_name = options.sql_parser.dialect;
        let dialect = dialect_from_str(dialect_name).ok_or_else(|| {
            EngineError::Usage(format!("unsupported SQL dialect '{dialect_name}'"))
        })?;
        let statements = DFParserBuilder::new(script)
            .with_dialect(dialect.as_ref())
            .with_recursion_limit(options.sql_parser.recursion_limit.get())
            .build()
            .and_then(|mut parser| parser.parse_statements())
            .map_err(|e| EngineError::datafusion("cannot parse the SQL", e))?;
        if statements.is_empty() {
            return Err(EngineError::Usage("no SQL statement given".to_string()));
        }
        Ok(statements
            .into_iter()
            .enumerate()
            .map(|(index, statement)| SqlStatement {
                number: index + 1,
                text: statement.to_string(),
                statement,
            })
            .collect())
    }

    /// Plans, runs and collects one statement. The error names the statement by its position
    /// and its first words, so a failure in the middle of a long script is easy to find.
    pub async fn execute(&self, statement: SqlStatement) -> Result<StatementOutput> {
        let context = format!(
            "statement {} ({}) failed",
            statement.number,
            abbreviate(&statement.text, 60)
        );
        let started = Instant::now();
        let plan = self
            .ctx
            .state()
            .statement_to_plan(statement.statement)
            .await
            .map_err(|e| EngineError::datafusion(&context, e))?;
        let frame = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|e| EngineError::datafusion(&context, e))?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame
            .collect()
            .await
            .map_err(|e| EngineError::datafusion(&context, e))?;
        Ok(StatementOutput {
            schema,
            batches,
            elapsed: started.elapsed(),
        })
    }
}

/// `text` on one line, cut to at most `max_chars` characters with an ellipsis.
fn abbreviate(text: &str, max_chars: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max_chars {
        return one_line;
    }
    let cut: String = one_line.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
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
