//! A product version's column lineage, in the form recorded in its commit metadata and in the
//! lineage table: the planner's lineage resolved to the exact inputs a run read (source
//! locations and Delta versions, model names, versions and hashes).
//!
//! A leaf of the engine: persistence and queries live in [`crate::lineage`].

use std::collections::BTreeMap;

use lakeforge_planner::{InputRef, PlanLineage, Subtype};
use lakeforge_udfs::scoring::ModelResolver;
use serde::{Deserialize, Serialize};

use super::{InputIdentity, ModelUse};
use crate::error::{EngineError, Result};

/// The kind of an input of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A Delta table at a version.
    Delta,
    /// Files (Parquet, CSV, JSON).
    Files,
    /// A model evaluated by a scoring function.
    Model,
    /// A table the session knows that is not one of the job's sources (a table function).
    Table,
}

impl InputKind {
    /// The lowercase name stored in the lineage table.
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Delta => "delta",
            InputKind::Files => "files",
            InputKind::Model => "model",
            InputKind::Table => "table",
        }
    }
}

/// An input a product's columns depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageInput {
    /// Delta, files, model or table.
    pub kind: InputKind,
    /// The source's name in the job, or the model's name.
    pub name: String,
    /// The location's URL (absent for models and non-source tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The Delta version read, or the model's registry version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// For a model: `sha256:<hex>` of its artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// For a model: its file format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl LineageInput {
    /// The identifier the lineage table and impact analysis use: the URL without a trailing
    /// slash, or `model:NAME`, or the table's name.
    pub fn dataset_id(&self) -> String {
        match (&self.kind, &self.url) {
            (InputKind::Model, _) => format!("model:{}", self.name),
            (_, Some(url)) => normalize_dataset_url(url),
            (_, None) => self.name.clone(),
        }
    }
}

/// A URL as lineage compares locations: without a trailing slash.
pub fn normalize_dataset_url(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// One dependency of an output column (or of the whole dataset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageEdge {
    /// Index into [`ProductLineage::inputs`].
    pub input: usize,
    /// The input column, nested path dotted (`s.a`); for a model, the reference used.
    pub field: String,
    /// How (its kind is DIRECT or INDIRECT).
    pub subtype: Subtype,
    /// Whether the value is obfuscated on the way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masking: bool,
    /// Set when the extractor did not model the expression and assumed a transformation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
    /// The expression's SQL text; kept in the lineage table and OpenLineage events, left out
    /// of commit metadata to keep commits small.
    #[serde(skip)]
    pub description: Option<String>,
}

/// One output column's dependencies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageColumn {
    /// The column.
    pub name: String,
    /// Its dependencies.
    pub inputs: Vec<LineageEdge>,
}

/// A product version's column lineage, in the form stored in its commit metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductLineage {
    /// Every input referred to, in a stable order.
    pub inputs: Vec<LineageInput>,
    /// One entry per output column, in schema order.
    pub columns: Vec<LineageColumn>,
    /// Dependencies of the whole dataset (filters, joins, grouping, sort keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataset: Vec<LineageEdge>,
}

impl ProductLineage {
    /// Maps the planner's lineage (in table names and model references) to the inputs a run
    /// read: `identities` by source name, models through `models`.
    pub fn resolve(
        plan: &PlanLineage,
        identities: &[InputIdentity],
        models: &dyn ModelResolver,
    ) -> Result<ProductLineage> {
        let mut inputs: Vec<LineageInput> = Vec::new();
        let mut index_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut edges = |fields: &[lakeforge_planner::InputField]| -> Result<Vec<LineageEdge>> {
            let mut edges = Vec::new();
            for field in fields {
                let key = match &field.input {
                    InputRef::Column { table, .. } => format!("table:{table}"),
                    InputRef::Model { reference } => format!("model:{reference}"),
                };
                let input = match index_of.get(&key) {
                    Some(index) => *index,
                    None => {
                        let resolved = resolve_input(&field.input, identities, models)?;
                        inputs.push(resolved);
                        index_of.insert(key, inputs.len() - 1);
                        inputs.len() - 1
                    }
                };
                for t in &field.transformations {
                    edges.push(LineageEdge {
                        input,
                        field: field.input.field(),
                        subtype: t.subtype,
                        masking: t.masking,
                        inferred: t.inferred,
                        description: t.description.clone(),
                    });
                }
            }
            Ok(edges)
        };
        let mut columns = Vec::with_capacity(plan.columns.len());
        for column in &plan.columns {
            columns.push(LineageColumn {
                name: column.column.clone(),
                inputs: edges(&column.inputs)?,
            });
        }
        let dataset = edges(&plan.dataset)?;
        Ok(ProductLineage {
            inputs,
            columns,
            dataset,
        })
    }

    /// The models this product version was scored with.
    pub fn models(&self) -> Vec<ModelUse> {
        let mut used: BTreeMap<String, ModelUse> = BTreeMap::new();
        for edge in self
            .columns
            .iter()
            .flat_map(|c| &c.inputs)
            .chain(&self.dataset)
        {
            let Some(input) = self.inputs.get(edge.input) else {
                continue;
            };
            if input.kind != InputKind::Model {
                continue;
            }
            used.entry(edge.field.clone()).or_insert_with(|| ModelUse {
                reference: edge.field.clone(),
                name: input.name.clone(),
                version: input.version,
                content_hash: input.content_hash.clone().unwrap_or_default(),
                format: input.format.clone().unwrap_or_default(),
            });
        }
        used.into_values().collect()
    }
}

fn resolve_input(
    input: &InputRef,
    identities: &[InputIdentity],
    models: &dyn ModelResolver,
) -> Result<LineageInput> {
    match input {
        InputRef::Column { table, .. } => {
            let identity = identities.iter().find(|i| i.source() == table);
            Ok(match identity {
                Some(InputIdentity::Delta { url, version, .. }) => LineageInput {
                    kind: InputKind::Delta,
                    name: table.clone(),
                    url: Some(url.clone()),
                    version: Some(*version),
                    content_hash: None,
                    format: None,
                },
                Some(InputIdentity::Files { url, .. }) => LineageInput {
                    kind: InputKind::Files,
                    name: table.clone(),
                    url: Some(url.clone()),
                    version: None,
                    content_hash: None,
                    format: None,
                },
                None => LineageInput {
                    kind: InputKind::Table,
                    name: table.clone(),
                    url: None,
                    version: None,
                    content_hash: None,
                    format: None,
                },
            })
        }
        InputRef::Model { reference } => {
            let model = models
                .resolve(reference)
                .map_err(|message| EngineError::Usage(format!("model '{reference}': {message}")))?;
            Ok(LineageInput {
                kind: InputKind::Model,
                name: model.name.clone(),
                url: None,
                version: model.version,
                content_hash: Some(model.content_hash.clone()),
                format: Some(model.format.to_string()),
            })
        }
    }
}
