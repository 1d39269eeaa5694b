//! OpenLineage run events (spec 2-0-2): typed structs, built from a run, written as
//! newline-delimited JSON to a file and POSTed to an HTTP endpoint (Marquez-compatible
//! `/api/v1/lineage`).
//!
//! A run emits START when it begins, then COMPLETE (inputs with schema and version facets,
//! outputs with schema, version, column lineage, data-quality assertions and output
//! statistics) or FAIL (with the error message). Every facet carries `_producer` and
//! `_schemaURL`; `.ci/run` validates the example's events against the official schemas.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::dq::CheckResult;
use crate::metadata::ENGINE_VERSION;

use super::{InputKind, LineageEdge, LineageInput, ProductLineage};

/// Who produced the events.
pub const PRODUCER: &str = "https://github.com/lakeforge/lakeforge";
/// The core schema of a run event.
pub const RUN_EVENT_SCHEMA: &str =
    "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
/// The job namespace when the job does not set `[lineage] namespace`.
pub const DEFAULT_NAMESPACE: &str = "lakeforge";
/// How long an HTTP endpoint gets to accept an event.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A run's state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// The run began.
    Start,
    /// The run is going on (extra information).
    Running,
    /// The run succeeded.
    Complete,
    /// The run was stopped.
    Abort,
    /// The run failed.
    Fail,
    /// Anything else.
    Other,
}

/// An OpenLineage `RunEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    /// What happened.
    pub event_type: EventType,
    /// When, RFC 3339.
    pub event_time: String,
    /// The run.
    pub run: Run,
    /// The job.
    pub job: Job,
    /// The datasets read.
    pub inputs: Vec<InputDataset>,
    /// The datasets written.
    pub outputs: Vec<OutputDataset>,
    /// [`PRODUCER`].
    pub producer: String,
    /// [`RUN_EVENT_SCHEMA`].
    #[serde(rename = "schemaURL")]
    pub schema_url: String,
}

/// The run of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The run's UUID (Lakeforge's run id).
    #[serde(rename = "runId")]
    pub run_id: String,
    /// Run facets.
    #[serde(default)]
    pub facets: RunFacets,
}

/// The run facets Lakeforge emits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFacets {
    /// The engine and its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_engine: Option<Facet<ProcessingEngine>>,
    /// Why the run failed.
    #[serde(rename = "errorMessage", skip_serializing_if = "Option::is_none")]
    pub error_message: Option<Facet<ErrorMessage>>,
}

/// The job of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job namespace.
    pub namespace: String,
    /// The job's name.
    pub name: String,
    /// Job facets.
    #[serde(default)]
    pub facets: JobFacets,
}

/// The job facets Lakeforge emits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobFacets {
    /// Batch job run by Lakeforge.
    #[serde(rename = "jobType", skip_serializing_if = "Option::is_none")]
    pub job_type: Option<Facet<JobType>>,
}

/// A dataset read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDataset {
    /// Its namespace (the storage: `file`, `s3://bucket`, ...).
    pub namespace: String,
    /// Its name in the namespace (the path).
    pub name: String,
    /// Dataset facets.
    #[serde(default)]
    pub facets: DatasetFacets,
}

/// A dataset written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputDataset {
    /// Its namespace.
    pub namespace: String,
    /// Its name in the namespace.
    pub name: String,
    /// Dataset facets.
    #[serde(default)]
    pub facets: DatasetFacets,
    /// Output facets.
    #[serde(rename = "outputFacets", default)]
    pub output_facets: OutputFacets,
}

/// The dataset facets Lakeforge emits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetFacets {
    /// The columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Facet<SchemaFacet>>,
    /// The Delta (or model) version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Facet<DatasetVersion>>,
    /// Column lineage.
    #[serde(rename = "columnLineage", skip_serializing_if = "Option::is_none")]
    pub column_lineage: Option<Facet<ColumnLineage>>,
    /// The product's check results.
    #[serde(
        rename = "dataQualityAssertions",
        skip_serializing_if = "Option::is_none"
    )]
    pub data_quality_assertions: Option<Facet<DataQualityAssertions>>,
    /// The product's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documentation: Option<Facet<Documentation>>,
}

/// The output facets Lakeforge emits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputFacets {
    /// Rows, bytes and files written.
    #[serde(rename = "outputStatistics", skip_serializing_if = "Option::is_none")]
    pub output_statistics: Option<Facet<OutputStatistics>>,
}

/// A facet: its body with `_producer` and `_schemaURL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facet<T> {
    /// [`PRODUCER`].
    #[serde(rename = "_producer")]
    pub producer: String,
    /// The facet's JSON schema ([`FacetSchema::SCHEMA_URL`]).
    #[serde(rename = "_schemaURL")]
    pub schema_url: String,
    /// The facet's fields.
    #[serde(flatten)]
    pub body: T,
}

/// A facet body and the schema it follows.
pub trait FacetSchema {
    /// The `_schemaURL` of the facet.
    const SCHEMA_URL: &'static str;
}

impl<T: FacetSchema> Facet<T> {
    /// Wraps `body` with Lakeforge as producer.
    pub fn new(body: T) -> Facet<T> {
        Facet {
            producer: PRODUCER.to_string(),
            schema_url: T::SCHEMA_URL.to_string(),
            body,
        }
    }
}

/// `processing_engine` run facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessingEngine {
    /// The engine's version.
    pub version: String,
    /// `lakeforge`.
    pub name: String,
}

impl FacetSchema for ProcessingEngine {
    const SCHEMA_URL: &'static str = "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet";
}

/// `errorMessage` run facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessage {
    /// The error.
    pub message: String,
    /// `Rust`.
    pub programming_language: String,
}

impl FacetSchema for ErrorMessage {
    const SCHEMA_URL: &'static str = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
}

/// `jobType` job facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobType {
    /// `BATCH`.
    pub processing_type: String,
    /// `LAKEFORGE`.
    pub integration: String,
    /// `JOB`.
    pub job_type: String,
}

impl FacetSchema for JobType {
    const SCHEMA_URL: &'static str =
        "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
}

/// `schema` dataset facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaFacet {
    /// The columns.
    pub fields: Vec<SchemaField>,
}

/// A column of a [`SchemaFacet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaField {
    /// Its name.
    pub name: String,
    /// Its type, as Arrow names it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Nested fields of a struct.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<SchemaField>,
}

impl FacetSchema for SchemaFacet {
    const SCHEMA_URL: &'static str = "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
}

impl SchemaFacet {
    /// The facet of an Arrow schema.
    pub fn from_arrow(schema: &Schema) -> SchemaFacet {
        fn field(f: &Field) -> SchemaField {
            let fields = match f.data_type() {
                DataType::Struct(children) => children.iter().map(|c| field(c)).collect(),
                _ => Vec::new(),
            };
            SchemaField {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
                fields,
            }
        }
        SchemaFacet {
            fields: schema.fields().iter().map(|f| field(f)).collect(),
        }
    }
}

/// `version` dataset facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetVersion {
    /// The version, as a string.
    pub dataset_version: String,
}

impl FacetSchema for DatasetVersion {
    const SCHEMA_URL: &'static str = "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet";
}

/// `columnLineage` dataset facet (1-2-0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnLineage {
    /// Per output column, its inputs.
    pub fields: BTreeMap<String, ColumnLineageField>,
    /// Inputs affecting the whole dataset.
    pub dataset: Vec<LineageInputField>,
}

/// One output column of a [`ColumnLineage`] facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnLineageField {
    /// Its inputs.
    pub input_fields: Vec<LineageInputField>,
}

/// An input field of a [`ColumnLineage`] facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageInputField {
    /// The input dataset's namespace.
    pub namespace: String,
    /// The input dataset's name.
    pub name: String,
    /// The input column (nested path dotted).
    pub field: String,
    /// How the output depends on it.
    pub transformations: Vec<LineageTransformation>,
}

/// A transformation of a [`LineageInputField`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageTransformation {
    /// `DIRECT` or `INDIRECT`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `IDENTITY`, `TRANSFORMATION`, `AGGREGATION`, `JOIN`, `FILTER`, ...
    pub subtype: String,
    /// The expression's SQL text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the value is obfuscated.
    pub masking: bool,
}

impl FacetSchema for ColumnLineage {
    const SCHEMA_URL: &'static str = "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet";
}

/// `dataQualityAssertions` dataset facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataQualityAssertions {
    /// One per check.
    pub assertions: Vec<Assertion>,
}

/// A check result in a [`DataQualityAssertions`] facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assertion {
    /// The check's kind (`not_null`, `unique`, `expect`, ...).
    pub assertion: String,
    /// Whether it passed.
    pub success: bool,
    /// The check's name.
    pub name: String,
    /// The action taken on failure (`warn`, `drop`, `quarantine`, `fail`).
    pub severity: String,
    /// What it checks.
    pub description: String,
    /// The observed value or failing row count.
    pub actual: String,
}

impl FacetSchema for DataQualityAssertions {
    const SCHEMA_URL: &'static str = "https://openlineage.io/spec/facets/1-1-0/DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet";
}

/// `documentation` dataset facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Documentation {
    /// The product's description.
    pub description: String,
}

impl FacetSchema for Documentation {
    const SCHEMA_URL: &'static str = "https://openlineage.io/spec/facets/1-1-0/DocumentationDatasetFacet.json#/$defs/DocumentationDatasetFacet";
}

/// `outputStatistics` output facet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputStatistics {
    /// Rows written.
    pub row_count: u64,
    /// Bytes written.
    pub size: u64,
    /// Files written.
    pub file_count: u64,
}

impl FacetSchema for OutputStatistics {
    const SCHEMA_URL: &'static str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
}

/// OpenLineage's (namespace, name) of a location: `file` + path for local files, the bucket as
/// namespace for object stores, `scheme://host` otherwise.
pub fn dataset_name(url: &Url) -> (String, String) {
    let path = url.path().trim_end_matches('/');
    match url.scheme() {
        "file" => ("file".to_string(), path.to_string()),
        scheme => {
            let mut namespace = format!("{scheme}://{}", url.host_str().unwrap_or_default());
            if let Some(port) = url.port() {
                namespace.push_str(&format!(":{port}"));
            }
            let name = if matches!(
                scheme,
                "s3" | "s3a" | "gs" | "gcs" | "az" | "abfs" | "abfss"
            ) {
                path.trim_start_matches('/').to_string()
            } else {
                path.to_string()
            };
            (namespace, name)
        }
    }
}

/// What a run's events describe, shared by its START, COMPLETE and FAIL.
#[derive(Debug, Clone)]
pub struct RunDescription<'a> {
    /// The job namespace.
    pub namespace: &'a str,
    /// The job's name.
    pub job: &'a str,
    /// The run id.
    pub run_id: &'a str,
    /// The warehouse (models are named after its registry).
    pub warehouse: &'a Url,
}

/// A product a run wrote, for its COMPLETE event.
#[derive(Debug, Clone)]
pub struct PublishedProduct<'a> {
    /// Its table.
    pub table: &'a Url,
    /// The version committed.
    pub version: u64,
    /// Its output schema.
    pub schema: &'a Schema,
    /// Its lineage.
    pub lineage: &'a ProductLineage,
    /// Its checks' results.
    pub checks: Vec<&'a CheckResult>,
    /// Its description.
    pub description: Option<&'a str>,
    /// Rows, bytes, files written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Files written.
    pub files: u64,
}

/// A source a run read, for its COMPLETE event.
#[derive(Debug, Clone)]
pub struct ReadSource<'a> {
    /// Its location.
    pub url: &'a Url,
    /// The Delta version read.
    pub version: Option<u64>,
    /// Its schema.
    pub schema: Option<&'a Schema>,
}

impl RunDescription<'_> {
    fn event(&self, event_type: EventType, at: DateTime<Utc>) -> RunEvent {
        RunEvent {
            event_type,
            event_time: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            run: Run {
                run_id: self.run_id.to_string(),
                facets: RunFacets {
                    processing_engine: Some(Facet::new(ProcessingEngine {
                        version: ENGINE_VERSION.to_string(),
                        name: "lakeforge".to_string(),
                    })),
                    error_message: None,
                },
            },
            job: Job {
                namespace: self.namespace.to_string(),
                name: self.job.to_string(),
                facets: JobFacets {
                    job_type: Some(Facet::new(JobType {
                        processing_type: "BATCH".to_string(),
                        integration: "LAKEFORGE".to_string(),
                        job_type: "JOB".to_string(),
                    })),
                },
            },
            inputs: Vec::new(),
            outputs: Vec::new(),
            producer: PRODUCER.to_string(),
            schema_url: RUN_EVENT_SCHEMA.to_string(),
        }
    }

    /// The START event.
    pub fn start(&self, at: DateTime<Utc>) -> RunEvent {
        self.event(EventType::Start, at)
    }

    /// The FAIL event.
    pub fn fail(&self, at: DateTime<Utc>, error: &str) -> RunEvent {
        self.ended_with_error(EventType::Fail, at, error)
    }

    /// The ABORT event: the run was cancelled (timeout, scheduler shutdown).
    pub fn abort(&self, at: DateTime<Utc>, reason: &str) -> RunEvent {
        self.ended_with_error(EventType::Abort, at, reason)
    }

    fn ended_with_error(&self, event_type: EventType, at: DateTime<Utc>, error: &str) -> RunEvent {
        let mut event = self.event(event_type, at);
        event.run.facets.error_message = Some(Facet::new(ErrorMessage {
            message: error.to_string(),
            programming_language: "Rust".to_string(),
        }));
        event
    }

    /// The COMPLETE event: every source read and every model used as inputs, every product
    /// as an output with its column lineage.
    pub fn complete(
        &self,
        at: DateTime<Utc>,
        sources: &[ReadSource<'_>],
        products: &[PublishedProduct<'_>],
    ) -> RunEvent {
        let mut event = self.event(EventType::Complete, at);
        let mut inputs: BTreeMap<(String, String), InputDataset> = BTreeMap::new();
        for source in sources {
            let (namespace, name) = dataset_name(source.url);
            inputs.insert(
                (namespace.clone(), name.clone()),
                InputDataset {
                    namespace,
                    name,
                    facets: DatasetFacets {
                        schema: source
                            .schema
                            .map(|s| Facet::new(SchemaFacet::from_arrow(s))),
                        version: source.version.map(|v| {
                            Facet::new(DatasetVersion {
                                dataset_version: v.to_string(),
                            })
                        }),
                        ..DatasetFacets::default()
                    },
                },
            );
        }
        for product in products {
            // Inputs the lineage names that are not sources: models and other tables.
            for input in &product.lineage.inputs {
                let (namespace, name) = self.input_name(input);
                inputs
                    .entry((namespace.clone(), name.clone()))
                    .or_insert_with(|| InputDataset {
                        namespace,
                        name,
                        facets: DatasetFacets {
                            version: input
                                .version
                                .map(|v| v.to_string())
                                .or_else(|| input.content_hash.clone())
                                .map(|v| Facet::new(DatasetVersion { dataset_version: v })),
                            ..DatasetFacets::default()
                        },
                    });
            }
        }
        event.inputs = inputs.into_values().collect();
        event.outputs = products.iter().map(|p| self.output(p)).collect();
        event
    }

    /// The (namespace, name) of a lineage input: its location, or for a model the registry's
    /// entry for it in the warehouse.
    fn input_name(&self, input: &LineageInput) -> (String, String) {
        match (&input.kind, &input.url) {
            (InputKind::Model, _) => {
                let (namespace, warehouse) = dataset_name(self.warehouse);
                (
                    namespace,
                    format!("{warehouse}/_lakeforge/models/{}", input.name),
                )
            }
            (_, Some(url)) => match Url::parse(url) {
                Ok(url) => dataset_name(&url),
                Err(_) => (DEFAULT_NAMESPACE.to_string(), url.clone()),
            },
            (_, None) => (self.namespace.to_string(), input.name.clone()),
        }
    }

    fn lineage_fields(
        &self,
        lineage: &ProductLineage,
        edges: &[LineageEdge],
    ) -> Vec<LineageInputField> {
        let mut grouped: BTreeMap<(String, String, String), Vec<LineageTransformation>> =
            BTreeMap::new();
        for edge in edges {
            let Some(input) = lineage.inputs.get(edge.input) else {
                continue;
            };
            let (namespace, name) = self.input_name(input);
            let field = match input.kind {
                // A model is one field: the model itself.
                InputKind::Model => "model".to_string(),
                _ => edge.field.clone(),
            };
            grouped
                .entry((namespace, name, field))
                .or_default()
                .push(LineageTransformation {
                    kind: edge.subtype.kind().to_string(),
                    subtype: edge.subtype.as_str().to_string(),
                    description: edge.description.clone(),
                    masking: edge.masking,
                });
        }
        grouped
            .into_iter()
            .map(
                |((namespace, name, field), transformations)| LineageInputField {
                    namespace,
                    name,
                    field,
                    transformations,
                },
            )
            .collect()
    }

    fn output(&self, product: &PublishedProduct<'_>) -> OutputDataset {
        let (namespace, name) = dataset_name(product.table);
        let lineage = product.lineage;
        let fields = lineage
            .columns
            .iter()
            .map(|column| {
                (
                    column.name.clone(),
                    ColumnLineageField {
                        input_fields: self.lineage_fields(lineage, &column.inputs),
                    },
                )
            })
            .collect();
        let assertions: Vec<Assertion> = product
            .checks
            .iter()
            .map(|check| Assertion {
                assertion: check.kind.to_string(),
                success: check.passed,
                name: check.check.clone(),
                severity: check.action.to_string(),
                description: check.description.clone(),
                actual: match check.observed {
                    Some(observed) => observed.to_string(),
                    None => format!("{} of {} rows failed", check.failed, check.evaluated),
                },
            })
            .collect();
        OutputDataset {
            namespace,
            name,
            facets: DatasetFacets {
                schema: Some(Facet::new(SchemaFacet::from_arrow(product.schema))),
                version: Some(Facet::new(DatasetVersion {
                    dataset_version: product.version.to_string(),
                })),
                column_lineage: Some(Facet::new(ColumnLineage {
                    fields,
                    dataset: self.lineage_fields(lineage, &lineage.dataset),
                })),
                data_quality_assertions: (!assertions.is_empty())
                    .then(|| Facet::new(DataQualityAssertions { assertions })),
                documentation: product.description.map(|d| {
                    Facet::new(Documentation {
                        description: d.to_string(),
                    })
                }),
            },
            output_facets: OutputFacets {
                output_statistics: Some(Facet::new(OutputStatistics {
                    row_count: product.rows,
                    size: product.bytes,
                    file_count: product.files,
                })),
            },
        }
    }
}

/// Where a run's events go: a newline-delimited JSON file, an HTTP endpoint, or both.
#[derive(Debug, Clone, Default)]
pub struct EventSink {
    /// The file (or object) events are appended to.
    pub file: Option<Url>,
    /// The endpoint's base URL; events are POSTed to `URL/api/v1/lineage`.
    pub url: Option<Url>,
}

impl EventSink {
    /// Writes `event` everywhere configured. Lineage emission never fails a run: a problem is
    /// returned as a message for the caller to warn about.
    pub async fn emit(&self, event: &RunEvent) -> Result<(), String> {
        let line = serde_json::to_string(event)
            .map_err(|e| format!("cannot write the OpenLineage event as JSON: {e}"))?;
        let mut problems = Vec::new();
        if let Some(file) = &self.file
            && let Err(error) = crate::storage::append_line(file, &line).await
        {
            problems.push(format!("cannot write the OpenLineage event: {error}"));
        }
        if let Some(base) = &self.url
            && let Err(error) = post(base, line).await
        {
            problems.push(error);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// The endpoint events are POSTed to.
pub fn endpoint(base: &Url) -> String {
    format!("{}/api/v1/lineage", base.as_str().trim_end_matches('/'))
}

async fn post(base: &Url, body: String) -> Result<(), String> {
    let endpoint = endpoint(base);
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot create an HTTP client for {endpoint}: {e}"))?;
    let response = client
        .post(&endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("cannot POST the OpenLineage event to {endpoint}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "{endpoint} refused the OpenLineage event: HTTP {}",
            response.status()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description(warehouse: &Url) -> RunDescription<'_> {
        RunDescription {
            namespace: "lakeforge",
            job: "demo",
            run_id: "0b7c2a4e-8f1d-4c55-9d7e-2f7b8d4d9a10",
            warehouse,
        }
    }

    #[test]
    fn facets_carry_producer_and_schema_url() {
        let warehouse = Url::parse("file:///data/wh/").unwrap();
        let event = description(&warehouse).start(DateTime::UNIX_EPOCH);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["eventType"], "START");
        assert_eq!(json["schemaURL"], RUN_EVENT_SCHEMA);
        assert_eq!(json["run"]["runId"], "0b7c2a4e-8f1d-4c55-9d7e-2f7b8d4d9a10");
        let engine = &json["run"]["facets"]["processing_engine"];
        assert_eq!(engine["_producer"], PRODUCER);
        assert_eq!(engine["_schemaURL"], ProcessingEngine::SCHEMA_URL);
        assert_eq!(engine["name"], "lakeforge");
        assert_eq!(json["job"]["facets"]["jobType"]["processingType"], "BATCH");
        assert_eq!(json["eventTime"], "1970-01-01T00:00:00.000Z");
        let back: RunEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn failures_carry_the_error() {
        let warehouse = Url::parse("file:///data/wh/").unwrap();
        let event = description(&warehouse).fail(DateTime::UNIX_EPOCH, "check 'x' failed");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["eventType"], "FAIL");
        assert_eq!(
            json["run"]["facets"]["errorMessage"]["message"],
            "check 'x' failed"
        );
        assert_eq!(
            json["run"]["facets"]["errorMessage"]["programmingLanguage"],
            "Rust"
        );
    }

    #[test]
    fn complete_events_describe_lineage_and_name_models_after_the_registry() {
        use lakeforge_planner::Subtype;

        let warehouse = Url::parse("file:///data/wh/").unwrap();
        let table = Url::parse("file:///data/wh/scores/").unwrap();
        let source = Url::parse("file:///data/in/customers.csv").unwrap();
        let lineage = ProductLineage {
            inputs: vec![
                LineageInput {
                    kind: InputKind::Files,
                    name: "customers".into(),
                    url: Some(source.to_string()),
                    version: None,
                    content_hash: None,
                    format: None,
                },
                LineageInput {
                    kind: InputKind::Model,
                    name: "churn".into(),
                    url: None,
                    version: Some(3),
                    content_hash: Some("sha256:ab".into()),
                    format: Some("xgboost-json".into()),
                },
            ],
            columns: vec![super::super::LineageColumn {
                name: "p".into(),
                inputs: vec![
                    LineageEdge {
                        input: 0,
                        field: "age".into(),
                        subtype: Subtype::Transformation,
                        masking: false,
                        inferred: false,
                        description: Some("predict('churn@3', age)".into()),
                    },
                    LineageEdge {
                        input: 1,
                        field: "churn@3".into(),
                        subtype: Subtype::Transformation,
                        masking: false,
                        inferred: false,
                        description: None,
                    },
                ],
            }],
            dataset: vec![LineageEdge {
                input: 0,
                field: "country".into(),
                subtype: Subtype::Filter,
                masking: false,
                inferred: false,
                description: Some("country = 'FR'".into()),
            }],
        };
        let schema = Schema::new(vec![Field::new("p", DataType::Float64, true)]);
        let product = PublishedProduct {
            table: &table,
            version: 4,
            schema: &schema,
            lineage: &lineage,
            checks: Vec::new(),
            description: Some("scores"),
            rows: 10,
            bytes: 100,
            files: 1,
        };
        let sources = [ReadSource {
            url: &source,
            version: None,
            schema: None,
        }];
        let event = description(&warehouse).complete(DateTime::UNIX_EPOCH, &sources, &[product]);
        let json = serde_json::to_value(&event).unwrap();
        let names: Vec<&str> = json["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["/data/in/customers.csv", "/data/wh/_lakeforge/models/churn"]
        );
        let output = &json["outputs"][0];
        assert_eq!(output["namespace"], "file");
        assert_eq!(output["name"], "/data/wh/scores");
        assert_eq!(output["facets"]["version"]["datasetVersion"], "4");
        let p = &output["facets"]["columnLineage"]["fields"]["p"]["inputFields"];
        assert_eq!(p[0]["field"], "age");
        assert_eq!(p[0]["transformations"][0]["type"], "DIRECT");
        assert_eq!(p[0]["transformations"][0]["subtype"], "TRANSFORMATION");
        assert_eq!(p[1]["name"], "/data/wh/_lakeforge/models/churn");
        assert_eq!(p[1]["field"], "model");
        let dataset = &output["facets"]["columnLineage"]["dataset"][0];
        assert_eq!(dataset["field"], "country");
        assert_eq!(dataset["transformations"][0]["type"], "INDIRECT");
        assert_eq!(output["outputFacets"]["outputStatistics"]["rowCount"], 10);
    }

    #[test]
    fn object_store_locations_use_the_bucket_as_namespace() {
        let url = Url::parse("s3://bucket/warehouse/table/").unwrap();
        assert_eq!(
            dataset_name(&url),
            ("s3://bucket".to_string(), "warehouse/table".to_string())
        );
    }
}
