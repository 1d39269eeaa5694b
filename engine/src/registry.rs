//! The model registry of a warehouse.
//!
//! - `WAREHOUSE/_lakeforge/models` (Delta): one row per registered version: name, version,
//!   format, content hash, artifact path, feature names, metrics, training dataset, time.
//! - `WAREHOUSE/_lakeforge/models/_artifacts/<name>/<version>/<file>`: the artifact, copied at
//!   registration. (The `_` folder keeps it out of reach of a Delta `VACUUM` of the table.)
//! - `WAREHOUSE/_lakeforge/model_aliases` (Delta): every alias change (promote, rollback), so an
//!   alias's history can be shown and rolled back.
//!
//! References: `name` is the latest version, `name@3` version 3, `name@production` the version
//! the alias points to now.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use lakeforge_udfs::models::ModelFormat;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::model_files::{ModelFile, read_model_file};
use crate::system_table::{SystemTable, append_rows, encode, exists, query_rows};

/// The registry's versions table, relative to the warehouse.
pub const MODELS_TABLE: &str = "_lakeforge/models";
/// The alias history table, relative to the warehouse.
pub const ALIASES_TABLE: &str = "_lakeforge/model_aliases";
/// Where artifacts are copied, relative to the warehouse.
pub const ARTIFACTS_FOLDER: &str = "_lakeforge/models/_artifacts";

/// One registered model version: a row of `_lakeforge/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    /// The model's name.
    pub name: String,
    /// Its version (1, 2, ...).
    pub version: u64,
    /// The artifact's format.
    #[serde(with = "format_name")]
    pub format: ModelFormat,
    /// `sha256:<hex>` of the artifact.
    pub content_hash: String,
    /// The artifact's path relative to the warehouse.
    pub artifact: String,
    /// The features the model reads, in order.
    #[serde(with = "encode::json_text")]
    pub feature_names: Vec<String>,
    /// Metrics given at registration (e.g. `auc`).
    #[serde(with = "encode::json_text")]
    pub metrics: BTreeMap<String, f64>,
    /// The training dataset: a table location and its version, when given.
    pub training: Option<String>,
    /// When it was registered.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub registered_at: DateTime<Utc>,
}

impl SystemTable for RegisteredModel {
    const PATH: &'static str = MODELS_TABLE;
    const NAME: &'static str = "lakeforge_models";
    fn schema() -> SchemaRef {
        models_schema()
    }
}

/// What an alias change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasAction {
    /// `lakeforge model promote`: the alias moved to a version.
    Promote,
    /// `lakeforge model rollback`: the alias went back to the version before.
    Rollback,
}

impl AliasAction {
    /// The action as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AliasAction::Promote => "promote",
            AliasAction::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for AliasAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model format stored by its name.
mod format_name {
    use lakeforge_udfs::models::ModelFormat;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        format: &ModelFormat,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(format)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ModelFormat, D::Error> {
        let name = String::deserialize(deserializer)?;
        ModelFormat::parse(&name)
            .ok_or_else(|| D::Error::custom(format!("unknown model format '{name}'")))
    }
}

/// One alias change: a row of `_lakeforge/model_aliases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasChange {
    /// The model.
    pub name: String,
    /// The alias (e.g. `production`).
    pub alias: String,
    /// The version it points to after the change.
    pub version: u64,
    /// The version it pointed to before, if any.
    pub previous_version: Option<u64>,
    /// What the change did.
    pub action: AliasAction,
    /// The gate that was checked (`auc>=0.8, ...`), for gated promotions.
    pub gate: Option<String>,
    /// When.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub changed_at: DateTime<Utc>,
}

impl SystemTable for AliasChange {
    const PATH: &'static str = ALIASES_TABLE;
    const NAME: &'static str = "lakeforge_model_aliases";
    fn schema() -> SchemaRef {
        aliases_schema()
    }
}

/// A metric condition of a gated promotion: `auc>=0.8`.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    /// The metric.
    pub metric: String,
    /// `>=`, `>`, `<=`, `<` or `=`.
    pub operator: String,
    /// The bound.
    pub value: f64,
}

impl Requirement {
    /// Parses `metric>=value` (also `>`, `<=`, `<`, `=`).
    pub fn parse(text: &str) -> Result<Requirement> {
        for operator in [">=", "<=", ">", "<", "="] {
            if let Some((metric, value)) = text.split_once(operator) {
                let value = value
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| EngineError::Usage(format!("'{value}' is not a number")))?;
                return Ok(Requirement {
                    metric: metric.trim().to_string(),
                    operator: operator.to_string(),
                    value,
                });
            }
        }
        Err(EngineError::Usage(
            "expected METRIC>=VALUE (or >, <=, <, =)".to_string(),
        ))
    }

    fn holds(&self, observed: f64) -> bool {
        match self.operator.as_str() {
            ">=" => observed >= self.value,
            ">" => observed > self.value,
            "<=" => observed <= self.value,
            "<" => observed < self.value,
            _ => observed == self.value,
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.metric, self.operator, self.value)
    }
}

/// A warehouse's registry, read in full (it is small).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Every version, oldest first.
    pub models: Vec<RegisteredModel>,
    /// Every alias change, oldest first.
    pub changes: Vec<AliasChange>,
}

impl Registry {
    /// Reads the registry of `warehouse` (empty when nothing was ever registered).
    pub async fn load(warehouse: &Url, config: &EngineConfig) -> Result<Registry> {
        let mut registry = Registry::default();
        if exists::<RegisteredModel>(warehouse).await? {
            registry.models = query_rows::<RegisteredModel, _>(
                warehouse,
                "SELECT * FROM models ORDER BY registered_at, name, version",
                config,
                "cannot read the model registry",
            )
            .await?;
        }
        if exists::<AliasChange>(warehouse).await? {
            registry.changes = query_rows::<AliasChange, _>(
                warehouse,
                "SELECT * FROM model_aliases ORDER BY changed_at",
                config,
                "cannot read the model aliases",
            )
            .await?;
        }
        Ok(registry)
    }

    /// The versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = &RegisteredModel> {
        self.models.iter().filter(move |m| m.name == name)
    }

    /// The alias's versions as a stack: promotions push, rollbacks pop; the last is current.
    fn alias_stack(&self, name: &str, alias: &str) -> Vec<u64> {
        let mut stack = Vec::new();
        for change in self
            .changes
            .iter()
            .filter(|c| c.name == name && c.alias == alias)
        {
            if change.action == AliasAction::Rollback {
                stack.pop();
            } else {
                stack.push(change.version);
            }
        }
        stack
    }

    /// Where each alias of `name` points now.
    pub fn aliases(&self, name: &str) -> BTreeMap<String, u64> {
        let mut aliases = BTreeMap::new();
        for change in self.changes.iter().filter(|c| c.name == name) {
            if let Some(&version) = self.alias_stack(name, &change.alias).last() {
                aliases.insert(change.alias.clone(), version);
            } else {
                aliases.remove(&change.alias);
            }
        }
        aliases
    }

    /// The version `reference` names: `name` (latest), `name@N`, `name@alias`.
    pub fn resolve(&self, reference: &str) -> std::result::Result<&RegisteredModel, String> {
        let (name, selector) = match reference.split_once('@') {
            Some((name, selector)) => (name, Some(selector)),
            None => (reference, None),
        };
        let versions: Vec<&RegisteredModel> = self.versions(name).collect();
        if versions.is_empty() {
            return Err(format!(
                "no model named '{name}' is registered in this warehouse"
            ));
        }
        let version = match selector {
            None => versions.iter().map(|m| m.version).max().unwrap_or_default(),
            Some(text) => match text.parse::<u64>() {
                Ok(version) => version,
                Err(_) => *self.aliases(name).get(text).ok_or_else(|| {
                    format!(
                        "model '{name}' has no alias '{text}' (aliases: {})",
                        alias_list(&self.aliases(name))
                    )
                })?,
            },
        };
        versions
            .into_iter()
            .find(|m| m.version == version)
            .ok_or_else(|| format!("model '{name}' has no version {version}"))
    }
}

fn alias_list(aliases: &BTreeMap<String, u64>) -> String {
    if aliases.is_empty() {
        return "none".to_string();
    }
    aliases
        .iter()
        .map(|(a, v)| format!("{a} -> {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A model file to register, and what to record with it.
#[derive(Debug, Clone)]
pub struct ModelRegistration<'a> {
    /// The model file.
    pub file: &'a Path,
    /// The model's name.
    pub name: &'a str,
    /// The file's format name, or `None` to guess it from the file.
    pub format: Option<&'a str>,
    /// Metrics of this version (the gates of `promote` compare them).
    pub metrics: BTreeMap<String, f64>,
    /// The training dataset, as given.
    pub training: Option<String>,
}

/// The location of a registered artifact (`artifact` is relative to the warehouse).
pub fn artifact_url(warehouse: &Url, artifact: &str) -> Result<Url> {
    crate::location::join_file(warehouse, artifact)
}

/// A local file as a `file://` URL.
fn local_file_url(file: &std::path::Path) -> Result<Url> {
    let absolute = std::path::absolute(file).map_err(|source| EngineError::Io {
        context: format!("cannot resolve {}", file.display()),
        source,
    })?;
    Url::from_file_path(&absolute).map_err(|()| EngineError::Location {
        location: file.display().to_string(),
        message: "not a local path".to_string(),
    })
}

/// Registers `file` as the next version of `name`: copies the artifact into the warehouse and
/// appends its row. The file is read and validated first, so a bad file registers nothing.
pub async fn register_model(
    warehouse: &Url,
    registration: ModelRegistration<'_>,
    config: &EngineConfig,
) -> Result<RegisteredModel> {
    let ModelRegistration {
        file,
        name,
        format,
        metrics,
        training,
    } = registration;
    if name.is_empty() || name.contains(['@', '/', '\\']) || name.starts_with('_') {
        return Err(EngineError::Usage(format!(
            "model name '{name}' must be non-empty, not start with '_', and contain no '@', '/' or '\\'"
        )));
    }
    let ModelFile {
        bytes,
        format,
        model,
        content_hash,
    } = read_model_file(name, &local_file_url(file)?, format)?;
    let registry = Registry::load(warehouse, config).await?;
    let version = registry
        .versions(name)
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
        + 1;
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string());
    let artifact = format!("{ARTIFACTS_FOLDER}/{name}/{version}/{file_name}");
    let target = artifact_url(warehouse, &artifact)?;
    crate::storage::put_object(&target, bytes).await?;
    let registered = RegisteredModel {
        name: name.to_string(),
        version,
        format,
        content_hash,
        artifact,
        feature_names: model.feature_names().to_vec(),
        metrics,
        training,
        registered_at: Utc::now(),
    };
    let appended = append_rows(
        warehouse,
        std::slice::from_ref(&registered),
        &format!("cannot register model '{name}'"),
    )
    .await;
    if let Err(error) = appended {
        // The version row is the registration; without it the copied file is an orphan.
        if let Err(cleanup) = crate::storage::delete_object(&target).await {
            tracing::warn!("the copied model file is left behind: {cleanup}");
        }
        return Err(error);
    }
    Ok(registered)
}

/// Points `alias` of `name` at `version`, if every requirement holds on its metrics.
pub async fn promote_model(
    warehouse: &Url,
    name: &str,
    version: u64,
    alias: &str,
    requirements: &[Requirement],
    config: &EngineConfig,
) -> Result<AliasChange> {
    if alias.is_empty() || alias.parse::<u64>().is_ok() {
        return Err(EngineError::Usage(format!(
            "alias '{alias}' must be a non-numeric name"
        )));
    }
    let registry = Registry::load(warehouse, config).await?;
    let model = registry
        .resolve(&format!("{name}@{version}"))
        .map_err(EngineError::Usage)?;
    for requirement in requirements {
        match model.metrics.get(&requirement.metric) {
            Some(&observed) if requirement.holds(observed) => {}
            Some(&observed) => {
                return Err(EngineError::Usage(format!(
                    "promotion of {name}@{version} to '{alias}' refused: {} is {observed}, the gate requires {requirement}",
                    requirement.metric
                )));
            }
            None => {
                return Err(EngineError::Usage(format!(
                    "promotion of {name}@{version} to '{alias}' refused: it has no metric '{}' (metrics: {})",
                    requirement.metric,
                    model.metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    let change = AliasChange {
        name: name.to_string(),
        alias: alias.to_string(),
        version,
        previous_version: registry.aliases(name).get(alias).copied(),
        action: AliasAction::Promote,
        gate: (!requirements.is_empty()).then(|| {
            requirements
                .iter()
                .map(Requirement::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }),
        changed_at: Utc::now(),
    };
    record_change(warehouse, &change).await?;
    Ok(change)
}

/// Points `alias` of `name` back at the version it had before its latest promotion.
pub async fn rollback_alias(
    warehouse: &Url,
    name: &str,
    alias: &str,
    config: &EngineConfig,
) -> Result<AliasChange> {
    let registry = Registry::load(warehouse, config).await?;
    let stack = registry.alias_stack(name, alias);
    let (current, previous) = match stack.as_slice() {
        [.., previous, current] => (*current, *previous),
        [_] => {
            return Err(EngineError::Usage(format!(
                "alias '{alias}' of model '{name}' has no earlier version to roll back to"
            )));
        }
        [] => {
            return Err(EngineError::Usage(format!(
                "model '{name}' has no alias '{alias}' (aliases: {})",
                alias_list(&registry.aliases(name))
            )));
        }
    };
    let change = AliasChange {
        name: name.to_string(),
        alias: alias.to_string(),
        version: previous,
        previous_version: Some(current),
        action: AliasAction::Rollback,
        gate: None,
        changed_at: Utc::now(),
    };
    record_change(warehouse, &change).await?;
    Ok(change)
}

async fn record_change(warehouse: &Url, change: &AliasChange) -> Result<()> {
    append_rows(
        warehouse,
        std::slice::from_ref(change),
        &format!("cannot record the alias change of model '{}'", change.name),
    )
    .await
}

/// The versions table's schema.
pub fn models_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("version", DataType::Int64, true),
        Field::new("format", DataType::Utf8, true),
        Field::new("content_hash", DataType::Utf8, true),
        Field::new("artifact", DataType::Utf8, true),
        Field::new("feature_names", DataType::Utf8, true),
        Field::new("metrics", DataType::Utf8, true),
        Field::new("training", DataType::Utf8, true),
        Field::new(
            "registered_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

/// The alias history's schema.
pub fn aliases_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("alias", DataType::Utf8, true),
        Field::new("version", DataType::Int64, true),
        Field::new("previous_version", DataType::Int64, true),
        Field::new("action", DataType::Utf8, true),
        Field::new("gate", DataType::Utf8, true),
        Field::new(
            "changed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]))
}

/// `lakeforge model list`: one row per version with its aliases.
pub fn list_batch(registry: &Registry, name: Option<&str>) -> Result<RecordBatch> {
    let models: Vec<&RegisteredModel> = registry
        .models
        .iter()
        .filter(|m| name.is_none_or(|n| m.name == n))
        .collect();
    let aliases = |m: &RegisteredModel| {
        registry
            .aliases(&m.name)
            .into_iter()
            .filter(|(_, v)| *v == m.version)
            .map(|(a, _)| a)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("aliases", DataType::Utf8, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("features", DataType::Int64, false),
        Field::new("metrics", DataType::Utf8, false),
        Field::new("training", DataType::Utf8, true),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new("registered_at", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            models.iter().map(|m| m.name.clone()),
        )),
        Arc::new(Int64Array::from_iter_values(
            models.iter().map(|m| m.version as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            models.iter().map(|m| aliases(m)),
        )),
        Arc::new(StringArray::from_iter_values(
            models.iter().map(|m| m.format.to_string()),
        )),
        Arc::new(Int64Array::from_iter_values(
            models.iter().map(|m| m.feature_names.len() as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            models
                .iter()
                .map(|m| serde_json::to_string(&m.metrics).unwrap_or_default()),
        )),
        Arc::new(StringArray::from(
            models
                .iter()
                .map(|m| m.training.clone())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from_iter_values(
            models.iter().map(|m| m.content_hash.clone()),
        )),
        Arc::new(StringArray::from_iter_values(
            models.iter().map(|m| m.registered_at.to_rfc3339()),
        )),
    ];
    RecordBatch::try_new(schema, columns)
        .map_err(|e| EngineError::internal("cannot list the models", e))
}

/// `lakeforge model history`: the alias changes of `name`, oldest first.
pub fn history_batch(registry: &Registry, name: &str) -> Result<RecordBatch> {
    let changes: Vec<&AliasChange> = registry.changes.iter().filter(|c| c.name == name).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("changed_at", DataType::Utf8, false),
        Field::new("alias", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("previous_version", DataType::Int64, true),
        Field::new("gate", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            changes.iter().map(|c| c.changed_at.to_rfc3339()),
        )),
        Arc::new(StringArray::from_iter_values(
            changes.iter().map(|c| c.alias.clone()),
        )),
        Arc::new(StringArray::from_iter_values(
            changes.iter().map(|c| c.action.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            changes.iter().map(|c| c.version as i64),
        )),
        Arc::new(Int64Array::from(
            changes
                .iter()
                .map(|c| c.previous_version.map(|v| v as i64))
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            changes.iter().map(|c| c.gate.clone()).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, columns)
        .map_err(|e| EngineError::internal("cannot list the alias history", e))
}
