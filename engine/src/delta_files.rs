//! A Delta table read as one version's Parquet files, with their partition values: how a
//! cluster reads Delta sources, the version pinned on the client.
//!
//! delta-rs's scan node cannot travel to Ballista's workers (it has no codec), so the client
//! resolves the version's files and this provider scans exactly those with DataFusion's own
//! Parquet reader, which every Ballista process can serialize. Tables whose features this
//! shortcut cannot honour (deletion vectors, column mapping) are refused by name.

use std::sync::Arc;

use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use serde::{Deserialize, Serialize};
use url::Url;

/// The files of one Delta version, as the plan carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaFilesSpec {
    /// The table, for messages and plan displays.
    pub table: String,
    /// The version the files belong to.
    pub version: i64,
    /// The object store holding the files (`file://`, `s3://bucket`, ...).
    pub store_url: String,
    /// Partition columns, in the order of each file's `partition_values`.
    pub partition_columns: Vec<String>,
    /// The files.
    pub files: Vec<DeltaFile>,
}

/// One data file of the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaFile {
    /// Its path in the object store.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its partition values as Delta serializes them (`None` for null).
    pub partition_values: Vec<Option<String>>,
}

impl DeltaFilesSpec {
    /// The files of `table` at its loaded version; an error names a feature the Parquet
    /// shortcut cannot read correctly.
    pub fn of_table(table: &DeltaTable) -> std::result::Result<DeltaFilesSpec, String> {
        let state = table
            .snapshot()
            .map_err(|e| format!("cannot read the table's state: {e}"))?;
        let version = state.version();
        let configuration = state.metadata().configuration();
        if let Some(mode) = configuration.get("delta.columnMapping.mode")
            && mode != "none"
        {
            return Err(format!(
                "version {version} uses column mapping (mode '{mode}'), which cluster runs \
                 cannot read yet; run this job embedded (without --cluster)"
            ));
        }
        let partition_columns: Vec<String> = state.metadata().partition_columns().to_vec();
        let table_url = table.table_url().clone();
        let store_url = format!("{}://{}", table_url.scheme(), table_url.authority());
        let root = table_url
            .path()
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        let mut files = Vec::new();
        for file in state.log_data().iter() {
            if file.deletion_vector_descriptor().is_some() {
                return Err(format!(
                    "version {version} has deletion vectors (file {}), which cluster runs \
                     cannot read yet; run this job embedded (without --cluster)",
                    file.path()
                ));
            }
            let path = file.path();
            let path = match Url::parse(&path) {
                // An absolute file URL in the log.
                Ok(url) => url.path().trim_start_matches('/').to_string(),
                Err(_) if root.is_empty() => path.to_string(),
                Err(_) => format!("{root}/{path}"),
            };
            let values = file.partition_values_map();
            files.push(DeltaFile {
                path,
                size: u64::try_from(file.size()).unwrap_or(0),
                partition_values: partition_columns
                    .iter()
                    .map(|c| values.get(c).cloned().flatten())
                    .collect(),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(DeltaFilesSpec {
            table: crate::location::display_location(&table_url),
            version: i64::try_from(version).unwrap_or(i64::MAX),
            store_url,
            partition_columns,
            files,
        })
    }
}

/// The provider: `spec`'s files, with the schema the embedded (delta-rs) provider has.
#[derive(Debug)]
pub struct DeltaFilesTable {
    spec: DeltaFilesSpec,
    schema: SchemaRef,
}

impl DeltaFilesTable {
    /// A table of `spec`'s files with `schema` (partition columns included).
    pub fn new(spec: DeltaFilesSpec, schema: SchemaRef) -> DeltaFilesTable {
        DeltaFilesTable { spec, schema }
    }

    /// What the plan carries.
    pub fn spec(&self) -> &DeltaFilesSpec {
        &self.spec
    }

    /// The partition value of `text` for a column of `data_type`.
    fn partition_value(&self, text: Option<&str>, data_type: &DataType) -> Result<ScalarValue> {
        let value_type = match data_type {
            DataType::Dictionary(_, value) => value.as_ref(),
            other => other,
        };
        let value = match text {
            None => ScalarValue::try_from(value_type)?,
            Some(text) => {
                ScalarValue::try_from_string(text.to_string(), value_type).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "{}: partition value '{text}' is not a {value_type}: {e}",
                        self.spec.table
                    ))
                })?
            }
        };
        Ok(match data_type {
            DataType::Dictionary(key, _) => ScalarValue::Dictionary(key.clone(), Box::new(value)),
            _ => value,
        })
    }
}

#[async_trait]
impl TableProvider for DeltaFilesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(projection) => projection.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        if self.spec.files.is_empty() {
            let projected = self.schema.project(&projection)?;
            return Ok(Arc::new(EmptyExec::new(Arc::new(projected))));
        }
        // The scan's columns: the files' columns, then the partition columns.
        let is_partition = |name: &str| self.spec.partition_columns.iter().any(|c| c == name);
        let file_fields: Vec<FieldRef> = self
            .schema
            .fields()
            .iter()
            .filter(|f| !is_partition(f.name()))
            .cloned()
            .collect();
        let mut partition_fields: Vec<FieldRef> = Vec::new();
        for column in &self.spec.partition_columns {
            let field = self.schema.field_with_name(column).map_err(|_| {
                DataFusionError::Plan(format!(
                    "{}: partition column '{column}' is not in the table's schema",
                    self.spec.table
                ))
            })?;
            partition_fields.push(Arc::new(field.clone()));
        }
        let scan_order: Vec<&str> = file_fields
            .iter()
            .chain(partition_fields.iter())
            .map(|f| f.name().as_str())
            .collect();
        let scan_projection = projection
            .iter()
            .map(|&i| {
                let name = self.schema.field(i).name();
                scan_order.iter().position(|n| n == name).ok_or_else(|| {
                    DataFusionError::Internal(format!("column '{name}' missing from the scan"))
                })
            })
            .collect::<Result<Vec<_>>>()?;

        let partitions = state
            .config()
            .target_partitions()
            .max(1)
            .min(self.spec.files.len());
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
        let mut files: Vec<&DeltaFile> = self.spec.files.iter().collect();
        files.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
        for file in files {
            let values = file
                .partition_values
                .iter()
                .zip(&partition_fields)
                .map(|(value, field)| self.partition_value(value.as_deref(), field.data_type()))
                .collect::<Result<Vec<_>>>()?;
            let smallest = groups
                .iter_mut()
                .min_by_key(|(bytes, _)| *bytes)
                .ok_or_else(|| DataFusionError::Internal("no file groups".to_string()))?;
            smallest.0 += file.size;
            smallest.1.push(
                PartitionedFile::new(file.path.clone(), file.size).with_partition_values(values),
            );
        }
        let file_schema = Arc::new(Schema::new(file_fields));
        let source = ParquetSource::new(
            TableSchema::builder(file_schema)
                .with_table_partition_cols(partition_fields)
                .build(),
        );
        let config = FileScanConfigBuilder::new(
            ObjectStoreUrl::parse(&self.spec.store_url)?,
            Arc::new(source),
        )
        .with_file_groups(
            groups
                .into_iter()
                .map(|(_, files)| FileGroup::new(files))
                .collect(),
        )
        .with_limit(limit)
        .with_projection_indices(Some(scan_projection))?
        .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// A Delta table at the version it is opened at, read as that version's files (the form that
/// travels to a cluster's workers).
pub async fn files_provider(
    table: &DeltaTable,
) -> std::result::Result<Arc<dyn TableProvider>, String> {
    let spec = DeltaFilesSpec::of_table(table)?;
    // The schema the embedded provider gives, so both runs plan the same columns and types.
    let schema = table
        .table_provider()
        .await
        .map_err(|e| format!("cannot read the table: {}", e.strip_backtrace()))?
        .schema();
    Ok(Arc::new(DeltaFilesTable::new(spec, schema)))
}
