//! Typed reads of the rows of Lakeforge's own tables (`_lakeforge/...`): every value is read
//! by column name and checked, and a value that is missing or does not parse is an error
//! naming the table, the row and the column, never a silent default.

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::error::{EngineError, Result};

/// One batch read back from a Lakeforge table.
pub struct StoredBatch<'a> {
    table: &'a str,
    batch: &'a RecordBatch,
    /// Text columns cast to plain UTF-8 once (Parquet may give back views), by position.
    strings: Vec<Option<StringArray>>,
}

impl<'a> StoredBatch<'a> {
    /// Wraps `batch`, read from the Lakeforge table `table` (its name in errors).
    pub fn new(table: &'a str, batch: &'a RecordBatch) -> Result<StoredBatch<'a>> {
        let strings = batch
            .columns()
            .iter()
            .map(|column| match column.data_type() {
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                    arrow::compute::cast(column, &DataType::Utf8)
                        .map(|cast| cast.as_string_opt::<i32>().cloned())
                        .map_err(|e| EngineError::CorruptTable {
                            table: table.to_string(),
                            row: 0,
                            column: String::new(),
                            message: format!("cannot read a text column: {e}"),
                        })
                }
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(StoredBatch {
            table,
            batch,
            strings,
        })
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    fn corrupt(&self, row: usize, column: &str, message: impl Into<String>) -> EngineError {
        EngineError::CorruptTable {
            table: self.table.to_string(),
            row,
            column: column.to_string(),
            message: message.into(),
        }
    }

    fn position(&self, row: usize, column: &str) -> Result<usize> {
        self.batch
            .schema()
            .index_of(column)
            .map_err(|_| self.corrupt(row, column, "the column is missing"))
    }

    /// A text value that may be NULL.
    pub fn optional_text(&self, row: usize, column: &str) -> Result<Option<String>> {
        let index = self.position(row, column)?;
        let Some(Some(strings)) = self.strings.get(index) else {
            return Err(self.corrupt(row, column, "expected text"));
        };
        Ok(strings
            .is_valid(row)
            .then(|| strings.value(row).to_string()))
    }

    /// A text value that must be present.
    pub fn text(&self, row: usize, column: &str) -> Result<String> {
        self.optional_text(row, column)?
            .ok_or_else(|| self.corrupt(row, column, "the value is NULL"))
    }

    /// A non-negative integer that may be NULL.
    pub fn optional_count(&self, row: usize, column: &str) -> Result<Option<u64>> {
        let index = self.position(row, column)?;
        let values = self
            .batch
            .column(index)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| self.corrupt(row, column, "expected a BIGINT"))?;
        if values.is_null(row) {
            return Ok(None);
        }
        let value = values.value(row);
        u64::try_from(value)
            .map(Some)
            .map_err(|_| self.corrupt(row, column, format!("{value} is negative")))
    }

    /// A non-negative integer that must be present.
    pub fn count(&self, row: usize, column: &str) -> Result<u64> {
        self.optional_count(row, column)?
            .ok_or_else(|| self.corrupt(row, column, "the value is NULL"))
    }

    /// A UTC timestamp (microseconds) that must be present.
    pub fn timestamp(&self, row: usize, column: &str) -> Result<DateTime<Utc>> {
        let index = self.position(row, column)?;
        let array = self.batch.column(index);
        if !matches!(
            array.data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, _)
        ) {
            return Err(self.corrupt(row, column, "expected a microsecond timestamp"));
        }
        let values = array.as_primitive::<TimestampMicrosecondType>();
        if values.is_null(row) {
            return Err(self.corrupt(row, column, "the value is NULL"));
        }
        let micros = values.value(row);
        DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| self.corrupt(row, column, format!("{micros} is out of range")))
    }

    /// A JSON document stored as text, parsed into `T`.
    pub fn json<T: DeserializeOwned>(&self, row: usize, column: &str) -> Result<T> {
        let text = self.text(row, column)?;
        serde_json::from_str(&text)
            .map_err(|e| self.corrupt(row, column, format!("not the JSON expected: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8View, true),
                Field::new("version", DataType::Int64, true),
                Field::new("metrics", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(arrow::array::StringViewArray::from(vec![
                    Some("churn"),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![Some(3), Some(-1)])),
                Arc::new(StringArray::from(vec![
                    Some("{\"auc\": 0.8}"),
                    Some("{oops"),
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn good_values_are_read() {
        let batch = batch();
        let rows = StoredBatch::new("_lakeforge/models", &batch).unwrap();
        assert_eq!(rows.text(0, "name").unwrap(), "churn");
        assert_eq!(rows.count(0, "version").unwrap(), 3);
        let metrics: std::collections::BTreeMap<String, f64> = rows.json(0, "metrics").unwrap();
        assert_eq!(metrics["auc"], 0.8);
    }

    #[test]
    fn bad_values_name_the_table_row_and_column() {
        let batch = batch();
        let rows = StoredBatch::new("_lakeforge/models", &batch).unwrap();
        let message = |e: EngineError| e.to_string();
        assert_eq!(
            message(rows.text(1, "name").unwrap_err()),
            "Lakeforge table _lakeforge/models, row 1, column 'name': the value is NULL"
        );
        assert!(message(rows.count(1, "version").unwrap_err()).contains("-1 is negative"));
        let bad = rows.json::<std::collections::BTreeMap<String, f64>>(1, "metrics");
        assert!(message(bad.unwrap_err()).contains("column 'metrics': not the JSON expected"));
        assert!(message(rows.text(0, "nope").unwrap_err()).contains("the column is missing"));
        assert!(message(rows.text(0, "version").unwrap_err()).contains("expected text"));
    }
}
