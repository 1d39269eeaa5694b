//! Lakeforge's own tables (`WAREHOUSE/_lakeforge/...`) as typed rows.
//!
//! Each table is one `#[derive(Serialize, Deserialize)]` row struct implementing
//! [`SystemTable`], with the table's Arrow schema declared next to it. [`to_batch`] and
//! [`rows_of`] convert between rows and batches through `serde_arrow` (a well-kept crate for
//! exactly this), so no table has a hand-written column mapping, and reading is as strict as
//! the struct: a missing column, a NULL in a non-`Option` field, a negative count or JSON text
//! that does not parse is an error naming the table, the row and the column, never a default.
//! Queries over a table that return a projection read their rows into a small struct of the
//! projected columns the same way ([`query_rows`]).
//!
//! The declared schema is the stored contract: columns may be added (nullable, as `Option`
//! fields, so tables written before read them as NULL), never renamed or retyped.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use url::Url;

use crate::config::EngineConfig;
use crate::delta::{append_batch, is_delta_table, query_table};
use crate::error::{EngineError, Result};
use crate::location::join_folder;

/// A row of one of Lakeforge's own tables.
pub trait SystemTable: Serialize + DeserializeOwned {
    /// The table's location relative to the warehouse, e.g. `_lakeforge/runs`.
    const PATH: &'static str;
    /// The Delta table name recorded when the table is created.
    const NAME: &'static str;
    /// The table's schema: the stored contract the row struct's fields follow, by name.
    fn schema() -> SchemaRef;

    /// The table's location in `warehouse`.
    fn url(warehouse: &Url) -> Result<Url> {
        join_folder(warehouse, Self::PATH)
    }
}

/// `text` as a SQL string literal, for filters in queries over Lakeforge's tables.
pub(crate) fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `rows` as one batch with the table's schema.
pub fn to_batch<T: SystemTable>(rows: &[T]) -> Result<RecordBatch> {
    let schema = T::schema();
    serde_arrow::to_record_batch(schema.fields(), &rows).map_err(|e| {
        EngineError::internal(
            format!("cannot lay out rows for {}", T::PATH),
            SerdeArrowError(e),
        )
    })
}

/// Appends `rows` to `T`'s table in `warehouse` in one commit, creating the table on first use
/// (nothing when there are no rows). `context` starts the error message.
pub async fn append_rows<T: SystemTable>(warehouse: &Url, rows: &[T], context: &str) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let url = T::url(warehouse)?;
    append_batch(&url, to_batch(rows)?, T::NAME, context).await
}

/// The rows of `batches` read from `table` (its name in errors) as `R`s, by column name.
pub fn rows_of<R: DeserializeOwned>(table: &str, batches: &[RecordBatch]) -> Result<Vec<R>> {
    let mut rows = Vec::new();
    let mut first_row = 0;
    for batch in batches {
        let batch = plain_strings(table, batch)?;
        match serde_arrow::from_record_batch::<Vec<R>>(&batch) {
            Ok(read) => rows.extend(read),
            Err(error) => return Err(locate_bad_row::<R>(table, &batch, first_row, error)),
        }
        first_row += batch.num_rows();
    }
    Ok(rows)
}

/// Whether `T`'s table exists in `warehouse` (it is created by its first append).
pub async fn exists<T: SystemTable>(warehouse: &Url) -> Result<bool> {
    Ok(is_delta_table(&T::url(warehouse)?).await)
}

/// Runs `sql` over `T`'s table in `warehouse` and reads the result as `R`s, for queries that
/// filter, order or project the table. The SQL names the table by the last segment of its
/// path (`_lakeforge/runs` is `runs`).
pub async fn query_rows<T: SystemTable, R: DeserializeOwned>(
    warehouse: &Url,
    sql: &str,
    config: &EngineConfig,
    context: &str,
) -> Result<Vec<R>> {
    let url = T::url(warehouse)?;
    let name = T::PATH.rsplit('/').next().unwrap_or(T::PATH);
    let batches = query_table(&url, name, sql, config, context).await?;
    rows_of(T::PATH, &batches)
}

/// Parquet scans may give text back as views or large strings; rows read plain UTF-8.
fn plain_strings(table: &str, batch: &RecordBatch) -> Result<RecordBatch> {
    let needs_cast = |t: &DataType| matches!(t, DataType::Utf8View | DataType::LargeUtf8);
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| needs_cast(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if needs_cast(field.data_type()) {
            let cast = arrow::compute::cast(column, &DataType::Utf8).map_err(|e| {
                EngineError::CorruptTable {
                    table: table.to_string(),
                    row: 0,
                    column: field.name().clone(),
                    message: format!("cannot read the text column: {e}"),
                }
            })?;
            fields.push(Field::new(
                field.name(),
                DataType::Utf8,
                field.is_nullable(),
            ));
            columns.push(cast);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| EngineError::internal(format!("cannot read {table}"), e))
}

/// The error for a batch that does not read as `R`s: the first row that fails on its own,
/// and the column `serde_arrow` names.
fn locate_bad_row<R: DeserializeOwned>(
    table: &str,
    batch: &RecordBatch,
    first_row: usize,
    error: serde_arrow::Error,
) -> EngineError {
    let row = (0..batch.num_rows())
        .find(|&i| serde_arrow::from_record_batch::<Vec<R>>(&batch.slice(i, 1)).is_err())
        .unwrap_or(0);
    let message = error.to_string();
    // serde_arrow annotates the failing field as `field: "$.name"` (or `"$.name.inner"`).
    let column = message
        .split("field: \"$.")
        .nth(1)
        .and_then(|rest| rest.split(['"', '.']).next())
        .unwrap_or_default()
        .to_string();
    EngineError::CorruptTable {
        table: table.to_string(),
        row: first_row + row,
        column,
        message: message
            .strip_prefix("Error: ")
            .unwrap_or(&message)
            .to_string(),
    }
}

/// `serde_arrow`'s error as a `std::error::Error` source (its `Display` omits the backtrace).
#[derive(Debug)]
struct SerdeArrowError(serde_arrow::Error);

impl std::fmt::Display for SerdeArrowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SerdeArrowError {}

/// Serde helpers for the column encodings Lakeforge's tables use.
pub mod encode {
    /// A value stored as JSON text in a UTF-8 column (nested records stay readable by every
    /// Delta reader and stable as they grow fields): `#[serde(with = "encode::json_text")]`.
    pub mod json_text {
        use serde::de::{DeserializeOwned, Error as _};
        use serde::ser::Error as _;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        /// Writes `value` as JSON text.
        pub fn serialize<T: Serialize, S: Serializer>(
            value: &T,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            let text = serde_json::to_string(value).map_err(S::Error::custom)?;
            serializer.serialize_str(&text)
        }

        /// Parses JSON text into `T`.
        pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<T, D::Error> {
            let text = String::deserialize(deserializer)?;
            serde_json::from_str(&text)
                .map_err(|e| D::Error::custom(format!("not the JSON expected: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{Int64Array, StringArray, StringViewArray};
    use arrow::datatypes::TimeUnit;
    use chrono::{DateTime, TimeZone, Utc};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum State {
        Running,
        Done,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        name: String,
        state: State,
        count: u64,
        note: Option<String>,
        #[serde(with = "encode::json_text")]
        tags: BTreeMap<String, f64>,
        #[serde(with = "chrono::serde::ts_microseconds")]
        at: DateTime<Utc>,
        /// A column later versions added: older tables do not have it.
        #[serde(default)]
        added: Option<String>,
    }

    impl SystemTable for Row {
        const PATH: &'static str = "_lakeforge/test";
        const NAME: &'static str = "lakeforge_test";
        fn schema() -> SchemaRef {
            Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, true),
                Field::new("state", DataType::Utf8, true),
                Field::new("count", DataType::Int64, true),
                Field::new("note", DataType::Utf8, true),
                Field::new("tags", DataType::Utf8, true),
                Field::new(
                    "at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
                Field::new("added", DataType::Utf8, true),
            ]))
        }
    }

    fn rows() -> Vec<Row> {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 17, 0, 0).unwrap();
        vec![
            Row {
                name: "a".into(),
                state: State::Running,
                count: 3,
                note: None,
                tags: BTreeMap::from([("auc".to_string(), 0.5)]),
                at,
                added: Some("x".into()),
            },
            Row {
                name: "b".into(),
                state: State::Done,
                count: 0,
                note: Some("n".into()),
                tags: BTreeMap::new(),
                at: at + chrono::Duration::microseconds(7),
                added: None,
            },
        ]
    }

    #[test]
    fn rows_round_trip_through_the_declared_schema() {
        let batch = to_batch(&rows()).unwrap();
        assert_eq!(batch.schema(), Row::schema());
        let tags = batch.column_by_name("tags").unwrap();
        let tags = tags.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(tags.value(0), r#"{"auc":0.5}"#);
        let state = batch.column_by_name("state").unwrap();
        let state = state.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(state.value(1), "done");
        assert_eq!(rows_of::<Row>("t", &[batch]).unwrap(), rows());
    }

    fn replace(batch: &RecordBatch, name: &str, column: ArrayRef) -> RecordBatch {
        let index = batch.schema().index_of(name).unwrap();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[index] = Field::new(name, column.data_type().clone(), true);
        let mut columns = batch.columns().to_vec();
        columns[index] = column;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn views_and_missing_added_columns_read() {
        let batch = to_batch(&rows()).unwrap();
        let batch = replace(
            &batch,
            "name",
            Arc::new(StringViewArray::from(vec!["a", "b"])),
        );
        let without_added = batch.project(&[0, 1, 2, 3, 4, 5]).unwrap();
        let read = rows_of::<Row>("t", &[without_added]).unwrap();
        assert_eq!(read[0].name, "a");
        assert_eq!(read[0].added, None);
    }

    #[test]
    fn bad_values_are_errors_naming_table_row_and_column() {
        let batch = to_batch(&rows()).unwrap();
        let negative = replace(&batch, "count", Arc::new(Int64Array::from(vec![1, -4])));
        let error = rows_of::<Row>("_lakeforge/test", &[negative]).unwrap_err();
        let EngineError::CorruptTable {
            table, row, column, ..
        } = &error
        else {
            panic!("{error}");
        };
        assert_eq!(
            (table.as_str(), *row, column.as_str()),
            ("_lakeforge/test", 1, "count")
        );

        let null_name = replace(
            &batch,
            "name",
            Arc::new(StringArray::from(vec![Some("a"), None])),
        );
        let error = rows_of::<Row>("t", &[batch.clone(), null_name]).unwrap_err();
        let EngineError::CorruptTable { row, column, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!((*row, column.as_str()), (3, "name"));

        let bad_json = replace(
            &batch,
            "tags",
            Arc::new(StringArray::from(vec!["{}", "[1"])),
        );
        let error = rows_of::<Row>("t", &[bad_json]).unwrap_err();
        assert!(
            error.to_string().contains("not the JSON expected"),
            "{error}"
        );

        let missing = batch.project(&[1, 2, 3, 4, 5]).unwrap();
        let error = rows_of::<Row>("t", &[missing]).unwrap_err();
        assert!(error.to_string().contains("name"), "{error}");
    }
}
