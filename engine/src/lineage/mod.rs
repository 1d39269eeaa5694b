//! Column lineage of products: resolved to the exact inputs a run read, stored with each product
//! version (commit metadata, compact) and in `WAREHOUSE/_lakeforge/lineage` (one row per edge),
//! and queried upstream ([`query::upstream`]) and downstream ([`query::impact`]).
//!
//! The planner extracts lineage from the plans in terms of the tables the SQL names; this
//! module maps those names to the sources' locations and versions and the model references to
//! registry versions, so lineage can be followed across jobs: a product read by another job
//! is a Delta source there, and its own lineage is found at the version that job read.

pub mod openlineage;
pub mod query;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use lakeforge_planner::LineageOptions;
use lakeforge_udfs::scoring::SCORING_FUNCTIONS;
use url::Url;

use crate::delta::append_batch;
use crate::error::{EngineError, Result};
use crate::location::{display_location, join_folder};

/// Where lineage edges live, relative to the warehouse.
pub const LINEAGE_TABLE: &str = "_lakeforge/lineage";

/// What the extractor needs to know about a job's functions: the scoring functions (whose
/// first argument names a model) and the job's masking functions.
pub fn lineage_options(extra_masking: &[String]) -> LineageOptions {
    let mut options = LineageOptions::default();
    options
        .model_functions
        .extend(SCORING_FUNCTIONS.iter().map(|f| f.to_string()));
    options
        .masking_functions
        .extend(extra_masking.iter().cloned());
    options
}

pub use crate::metadata::lineage::{
    InputKind, LineageColumn, LineageEdge, LineageInput, ProductLineage, normalize_dataset_url,
};

/// The lineage table's schema.
pub fn lineage_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, true),
        Field::new("job", DataType::Utf8, true),
        Field::new("product", DataType::Utf8, true),
        Field::new("product_table", DataType::Utf8, true),
        Field::new("product_version", DataType::Int64, true),
        Field::new("output_column", DataType::Utf8, true),
        Field::new("input_kind", DataType::Utf8, true),
        Field::new("input_name", DataType::Utf8, true),
        Field::new("input_dataset", DataType::Utf8, true),
        Field::new("input_version", DataType::Int64, true),
        Field::new("input_field", DataType::Utf8, true),
        Field::new("type", DataType::Utf8, true),
        Field::new("subtype", DataType::Utf8, true),
        Field::new("masking", DataType::Boolean, true),
        Field::new("inferred", DataType::Boolean, true),
        Field::new("description", DataType::Utf8, true),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

/// The lineage table of a warehouse.
pub fn lineage_table_url(warehouse: &Url) -> Result<Url> {
    join_folder(warehouse, LINEAGE_TABLE)
}

/// A committed product version and its lineage.
#[derive(Debug, Clone)]
pub struct PublishedLineage<'a> {
    /// The product's name.
    pub product: &'a str,
    /// Its table.
    pub table: &'a Url,
    /// The version committed.
    pub version: u64,
    /// Its lineage.
    pub lineage: &'a ProductLineage,
}

/// Appends the edges of every product a run committed, in one commit (the output column is
/// NULL for dataset-wide dependencies).
pub async fn record_lineage(
    warehouse: &Url,
    run_id: &str,
    job: &str,
    products: &[PublishedLineage<'_>],
    recorded_at: DateTime<Utc>,
) -> Result<()> {
    struct Row<'a> {
        product: &'a PublishedLineage<'a>,
        column: Option<&'a str>,
        edge: &'a LineageEdge,
        input: Option<&'a LineageInput>,
    }
    let rows: Vec<Row<'_>> = products
        .iter()
        .flat_map(|product| {
            let columns = product.lineage.columns.iter().flat_map(move |column| {
                column
                    .inputs
                    .iter()
                    .map(move |edge| (Some(column.name.as_str()), edge))
            });
            let dataset = product.lineage.dataset.iter().map(|edge| (None, edge));
            columns.chain(dataset).map(move |(column, edge)| Row {
                product,
                column,
                edge,
                input: product.lineage.inputs.get(edge.input),
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let url = lineage_table_url(warehouse)?;
    let i64_of = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let strings = |f: &dyn Fn(&Row<'_>) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|_| Some(run_id.to_string())),
        strings(&|_| Some(job.to_string())),
        strings(&|r| Some(r.product.product.to_string())),
        strings(&|r| Some(normalize_dataset_url(r.product.table.as_str()))),
        Arc::new(
            rows.iter()
                .map(|r| Some(i64_of(r.product.version)))
                .collect::<Int64Array>(),
        ),
        strings(&|r| r.column.map(str::to_string)),
        strings(&|r| r.input.map(|i| i.kind.as_str().to_string())),
        strings(&|r| r.input.map(|i| i.name.clone())),
        strings(&|r| r.input.map(LineageInput::dataset_id)),
        Arc::new(
            rows.iter()
                .map(|r| r.input.and_then(|i| i.version).map(i64_of))
                .collect::<Int64Array>(),
        ),
        strings(&|r| Some(r.edge.field.clone())),
        strings(&|r| Some(r.edge.subtype.kind().to_string())),
        strings(&|r| Some(r.edge.subtype.as_str().to_string())),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.edge.masking))
                .collect::<BooleanArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.edge.inferred))
                .collect::<BooleanArray>(),
        ),
        strings(&|r| r.edge.description.clone()),
        Arc::new(
            TimestampMicrosecondArray::from(vec![recorded_at.timestamp_micros(); rows.len()])
                .with_timezone("UTC"),
        ),
    ];
    let batch = RecordBatch::try_new(lineage_schema(), columns).map_err(|e| EngineError::Io {
        context: "cannot build the lineage rows".to_string(),
        source: std::io::Error::other(e),
    })?;
    append_batch(
        &url,
        batch,
        "lakeforge_lineage",
        &format!(
            "cannot record the lineage of run {run_id} in {}",
            display_location(&url)
        ),
    )
    .await
}
