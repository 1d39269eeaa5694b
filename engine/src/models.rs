//! The models a job scores with: its `[models.NAME]` files, read once when the job is loaded,
//! and the record of which models produced a product.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::ViewTable;
use datafusion::logical_expr::{Expr, LogicalPlan};
use lakeforge_planner::ResolvedJob;
use lakeforge_udfs::models::ModelFormat;
use lakeforge_udfs::scoring::{LoadedModel, ModelResolver, SCORING_FUNCTIONS, parse_model_cached};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// A job's inline models, by name.
#[derive(Debug, Default)]
pub struct JobModels {
    models: BTreeMap<String, Arc<LoadedModel>>,
}

impl JobModels {
    /// Reads every `[models.NAME]` file of `job` (paths relative to the spec's folder); a
    /// missing, unreadable or invalid file is an error naming the model and the file.
    pub fn load(job: &ResolvedJob) -> Result<JobModels> {
        let mut models = BTreeMap::new();
        for (name, spec) in &job.spec.models {
            let path = job.base_dir.join(&spec.path);
            let failure = |message: String| EngineError::Model {
                name: name.clone(),
                path: path.display().to_string(),
                message,
            };
            let bytes =
                std::fs::read(&path).map_err(|e| failure(format!("cannot read it: {e}")))?;
            let format = match &spec.format {
                Some(text) => ModelFormat::parse(text).ok_or_else(|| {
                    failure(format!(
                        "unknown format '{text}' (expected one of {})",
                        ModelFormat::NAMES.join(", ")
                    ))
                })?,
                None => ModelFormat::detect(&path, &bytes).ok_or_else(|| {
                    failure(format!(
                        "cannot tell the model's format; set `format` to one of {}",
                        ModelFormat::NAMES.join(", ")
                    ))
                })?,
            };
            let (model, content_hash) =
                parse_model_cached(&bytes, format).map_err(|e| failure(e.to_string()))?;
            models.insert(
                name.clone(),
                Arc::new(LoadedModel {
                    name: name.clone(),
                    version: None,
                    content_hash,
                    format,
                    model,
                }),
            );
        }
        Ok(JobModels { models })
    }
}

impl ModelResolver for JobModels {
    fn resolve(&self, reference: &str) -> std::result::Result<Arc<LoadedModel>, String> {
        let (name, selector) = match reference.split_once('@') {
            Some((name, selector)) => (name, Some(selector)),
            None => (reference, None),
        };
        match (self.models.get(name), selector) {
            (Some(model), None) => Ok(Arc::clone(model)),
            (Some(_), Some(selector)) => Err(format!(
                "model '{name}' is declared in the job's [models.{name}], which has no versions \
                 or aliases; use '{name}' instead of '{name}@{selector}'"
            )),
            (None, _) if self.models.is_empty() => Err(format!(
                "no model named '{name}': declare it in the job as [models.{name}] with a `path`"
            )),
            (None, _) => Err(format!(
                "no model named '{name}' (the job declares: {})",
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// A model that produced a product version, as recorded in its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUse {
    /// How the SQL named it (`churn`, `churn@production`).
    pub reference: String,
    /// The model's name.
    pub name: String,
    /// Its registry version, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `sha256:<hex>` of the artifact.
    pub content_hash: String,
    /// The file format.
    pub format: String,
}

/// The models `plan` scores with, through the views (steps) it reads, resolved by `resolver`.
pub fn models_used(plan: &LogicalPlan, resolver: &dyn ModelResolver) -> Vec<ModelUse> {
    let mut references = BTreeSet::new();
    let mut pending = vec![plan.clone()];
    while let Some(plan) = pending.pop() {
        // The closures never fail, so neither can the walk.
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = source_as_provider(&scan.source)
                && let Some(view) = provider.downcast_ref::<ViewTable>()
            {
                pending.push(view.logical_plan().clone());
            }
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Expr::ScalarFunction(call) = e
                        && SCORING_FUNCTIONS.contains(&call.name())
                        && let Some(Expr::Literal(value, _)) = call.args.first()
                        && let ScalarValue::Utf8(Some(r))
                        | ScalarValue::Utf8View(Some(r))
                        | ScalarValue::LargeUtf8(Some(r)) = value
                    {
                        references.insert(r.clone());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        });
    }
    references
        .into_iter()
        .filter_map(|reference| {
            let loaded = resolver.resolve(&reference).ok()?;
            Some(ModelUse {
                reference,
                name: loaded.name.clone(),
                version: loaded.version,
                content_hash: loaded.content_hash.clone(),
                format: loaded.format.to_string(),
            })
        })
        .collect()
}
