//! The models a job scores with: its `[models.NAME]` files, read once when the job is loaded,
//! and the record of which models produced a product.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use lakeforge_planner::ResolvedJob;
use lakeforge_udfs::models::{Model, ModelFormat};
use lakeforge_udfs::scoring::{LoadedModel, ModelPin, ModelResolver, parse_model_cached};
use url::Url;

use crate::error::Result;
use crate::location::{display_location, resolve_location};
pub use crate::metadata::ModelUse;
pub use crate::model_files::{ModelFile, read_model_file};
use crate::registry::Registry;
use crate::registry::artifact_url;
use crate::storage::read_object_blocking;

/// The models a job can score with: its inline `[models.NAME]`, then its warehouse's registry.
#[derive(Debug, Default)]
pub struct JobModels {
    models: BTreeMap<String, Arc<LoadedModel>>,
    /// The warehouse and its registry, once attached.
    registry: Option<(Url, Registry)>,
    /// Every reference resolved so far: a reference resolves once per session, so planning
    /// and execution (and an alias moved meanwhile) cannot disagree.
    resolved: Mutex<HashMap<String, Arc<LoadedModel>>>,
}

impl JobModels {
    /// Reads every `[models.NAME]` file of `job` (paths relative to the spec's folder, or
    /// URLs); a missing, unreadable or invalid file is an error naming the model and the file.
    pub fn load(job: &ResolvedJob) -> Result<JobModels> {
        let mut models = BTreeMap::new();
        for (name, spec) in &job.spec.models {
            let location = resolve_location(&job.base_dir, &spec.path)?;
            let file = read_model_file(name, &location, spec.format.as_deref())?;
            models.insert(
                name.clone(),
                Arc::new(LoadedModel {
                    name: name.clone(),
                    version: None,
                    content_hash: file.content_hash,
                    format: file.format,
                    model: file.model,
                    location: Some(location.to_string()),
                }),
            );
        }
        Ok(JobModels {
            models,
            ..JobModels::default()
        })
    }

    /// These inline models, with `registry` (of the warehouse at `warehouse`) behind them.
    pub fn with_registry(&self, warehouse: &Url, registry: Registry) -> JobModels {
        JobModels {
            models: self.models.clone(),
            registry: Some((warehouse.clone(), registry)),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    fn resolve_uncached(&self, reference: &str) -> std::result::Result<Arc<LoadedModel>, String> {
        let (name, selector) = match reference.split_once('@') {
            Some((name, selector)) => (name, Some(selector)),
            None => (reference, None),
        };
        if let Some(model) = self.models.get(name) {
            return match selector {
                None => Ok(Arc::clone(model)),
                Some(selector) => Err(format!(
                    "model '{name}' is declared in the job's [models.{name}], which has no \
                     versions or aliases; use '{name}' instead of '{name}@{selector}'"
                )),
            };
        }
        let registered = match &self.registry {
            Some((_, registry)) if registry.versions(name).next().is_some() => {
                registry.resolve(reference)?
            }
            _ => {
                let declared: Vec<String> = self.models.keys().cloned().collect();
                let mut known = declared.clone();
                if let Some((_, registry)) = &self.registry {
                    let mut names: Vec<String> =
                        registry.models.iter().map(|m| m.name.clone()).collect();
                    names.dedup();
                    known.extend(names);
                }
                return Err(if known.is_empty() {
                    format!(
                        "no model named '{name}': declare it in the job as [models.{name}] with \
                         a `path`, or register it with `lakeforge model register`"
                    )
                } else {
                    format!(
                        "no model named '{name}' (known models: {})",
                        known.join(", ")
                    )
                });
            }
        };
        let Some((warehouse, _)) = &self.registry else {
            return Err(format!("no model named '{name}'"));
        };
        let location = artifact_url(warehouse, &registered.artifact).map_err(|e| e.to_string())?;
        let shown = format!("{name}@{}", registered.version);
        let (model, content_hash) = read_verified_artifact(
            &shown,
            &location,
            registered.format,
            &registered.content_hash,
            "it was registered",
        )?;
        Ok(Arc::new(LoadedModel {
            name: name.to_string(),
            version: Some(registered.version),
            content_hash,
            format: registered.format,
            model,
            location: Some(location.to_string()),
        }))
    }
}

impl ModelResolver for JobModels {
    fn resolve(&self, reference: &str) -> std::result::Result<Arc<LoadedModel>, String> {
        if let Ok(resolved) = self.resolved.lock()
            && let Some(model) = resolved.get(reference)
        {
            return Ok(Arc::clone(model));
        }
        let model = self.resolve_uncached(reference)?;
        if let Ok(mut resolved) = self.resolved.lock() {
            // A concurrent resolution of the same reference may have won: keep the first.
            return Ok(Arc::clone(
                resolved.entry(reference.to_string()).or_insert(model),
            ));
        }
        Ok(model)
    }

    fn resolved(&self) -> Vec<(String, Arc<LoadedModel>)> {
        match self.resolved.lock() {
            Ok(resolved) => resolved
                .iter()
                .map(|(reference, model)| (reference.clone(), Arc::clone(model)))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Reads and parses the artifact of model `shown` at `location` (a local file or an object),
/// and checks it still has `expected_hash`, the hash it had when `since` (e.g. "it was
/// registered").
fn read_verified_artifact(
    shown: &str,
    location: &Url,
    format: ModelFormat,
    expected_hash: &str,
    since: &str,
) -> std::result::Result<(Arc<Model>, String), String> {
    let displayed = display_location(location);
    let bytes = read_object_blocking(location)
        .map_err(|e| format!("cannot read the artifact of model '{shown}': {e}"))?;
    let (model, content_hash) = parse_model_cached(&bytes, format)
        .map_err(|e| format!("model '{shown}' ({displayed}): {e}"))?;
    if content_hash != expected_hash {
        return Err(format!(
            "the artifact of model '{shown}' ({displayed}) has changed since {since} \
             ({content_hash}, expected {expected_hash})"
        ));
    }
    Ok((model, content_hash))
}

/// The models of a plan that came from another process: each pinned reference is loaded from
/// its location the first time a function needs it (lazily, once per process and content
/// hash), and must still have the content hash the client resolved.
#[derive(Debug, Default)]
pub struct PinnedModels {
    pins: BTreeMap<String, ModelPin>,
    loaded: Mutex<HashMap<String, Arc<LoadedModel>>>,
}

impl PinnedModels {
    /// A resolver that knows exactly `pins`.
    pub fn new(pins: Vec<ModelPin>) -> PinnedModels {
        PinnedModels {
            pins: pins.into_iter().map(|p| (p.reference.clone(), p)).collect(),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    fn load(pin: &ModelPin) -> std::result::Result<Arc<LoadedModel>, String> {
        let shown = match pin.version {
            Some(version) => format!("{}@{version}", pin.name),
            None => pin.name.clone(),
        };
        let url = Url::parse(&pin.location)
            .map_err(|e| format!("model '{shown}': invalid location '{}': {e}", pin.location))?;
        let format = ModelFormat::parse(&pin.format)
            .ok_or_else(|| format!("model '{shown}': unknown format '{}'", pin.format))?;
        let (model, content_hash) = read_verified_artifact(
            &shown,
            &url,
            format,
            &pin.content_hash,
            "the job was planned",
        )?;
        Ok(Arc::new(LoadedModel {
            name: pin.name.clone(),
            version: pin.version,
            content_hash,
            format,
            model,
            location: Some(pin.location.clone()),
        }))
    }
}

impl ModelResolver for PinnedModels {
    fn resolve(&self, reference: &str) -> std::result::Result<Arc<LoadedModel>, String> {
        if let Ok(loaded) = self.loaded.lock()
            && let Some(model) = loaded.get(reference)
        {
            return Ok(Arc::clone(model));
        }
        let pin = self.pins.get(reference).ok_or_else(|| {
            format!("model '{reference}' was not resolved when the job was planned")
        })?;
        let model = Self::load(pin)?;
        if let Ok(mut loaded) = self.loaded.lock() {
            return Ok(Arc::clone(
                loaded.entry(reference.to_string()).or_insert(model),
            ));
        }
        Ok(model)
    }

    fn pins(&self) -> std::result::Result<Vec<ModelPin>, String> {
        Ok(self.pins.values().cloned().collect())
    }
}
