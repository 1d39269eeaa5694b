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

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use lakeforge_planner::LineageOptions;
use lakeforge_udfs::scoring::SCORING_FUNCTIONS;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::Result;
use crate::location::display_location;
use crate::system_table::{SystemTable, append_rows};

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

/// A row of the lineage table: one edge from an input column (or the whole input) to a
/// product column (or the whole product) of a committed version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredLineageEdge {
    /// The run that committed the version.
    pub run_id: String,
    /// The job.
    pub job: String,
    /// The product's name.
    pub product: String,
    /// The product's table, normalized (no trailing slash).
    pub product_table: String,
    /// The version committed.
    pub product_version: u64,
    /// The product column, NULL for a dependency of the whole dataset.
    pub output_column: Option<String>,
    /// `delta`, `files`, `model` or `table`.
    pub input_kind: Option<String>,
    /// The input's name in the job.
    pub input_name: Option<String>,
    /// The input's dataset id (normalized URL, or `model:NAME`).
    pub input_dataset: Option<String>,
    /// The input's version read (Delta tables, models).
    pub input_version: Option<u64>,
    /// The input column.
    pub input_field: String,
    /// `DIRECT` or `INDIRECT`.
    #[serde(rename = "type")]
    pub edge_type: String,
    /// `IDENTITY`, `TRANSFORMATION`, `AGGREGATION`, `FILTER`, `JOIN`, ...
    pub subtype: String,
    /// Whether the transformation masks the input (NULL in rows written before it existed).
    #[serde(default)]
    pub masking: Option<bool>,
    /// Whether the edge was inferred rather than read from the plan (NULL in older rows).
    #[serde(default)]
    pub inferred: Option<bool>,
    /// The transformation's description.
    pub description: Option<String>,
    /// When the run recorded it.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub recorded_at: DateTime<Utc>,
}

impl SystemTable for StoredLineageEdge {
    const PATH: &'static str = LINEAGE_TABLE;
    const NAME: &'static str = "lakeforge_lineage";
    fn schema() -> SchemaRef {
        lineage_schema()
    }
}

/// The lineage table of a warehouse.
pub fn lineage_table_url(warehouse: &Url) -> Result<Url> {
    StoredLineageEdge::url(warehouse)
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
    let rows: Vec<StoredLineageEdge> = rows
        .into_iter()
        .map(|row| StoredLineageEdge {
            run_id: run_id.to_string(),
            job: job.to_string(),
            product: row.product.product.to_string(),
            product_table: normalize_dataset_url(row.product.table.as_str()),
            product_version: row.product.version,
            output_column: row.column.map(str::to_string),
            input_kind: row.input.map(|i| i.kind.as_str().to_string()),
            input_name: row.input.map(|i| i.name.clone()),
            input_dataset: row.input.map(LineageInput::dataset_id),
            input_version: row.input.and_then(|i| i.version),
            input_field: row.edge.field.clone(),
            edge_type: row.edge.subtype.kind().to_string(),
            subtype: row.edge.subtype.as_str().to_string(),
            masking: Some(row.edge.masking),
            inferred: Some(row.edge.inferred),
            description: row.edge.description.clone(),
            recorded_at,
        })
        .collect();
    let context = format!(
        "cannot record the lineage of run {run_id} in {}",
        display_location(&lineage_table_url(warehouse)?)
    );
    append_rows(warehouse, &rows, &context).await
}
