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
use crate::storage::{read_object_blocking, read_objects_blocking};

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
    let bytes = read_object_blocking(location)
        .map_err(|e| format!("cannot read the artifact of model '{shown}': {e}"))?;
    verify_artifact(shown, location, &bytes, format, expected_hash, since)
}

/// Parses an artifact's `bytes` and checks they still have `expected_hash`.
fn verify_artifact(
    shown: &str,
    location: &Url,
    bytes: &[u8],
    format: ModelFormat,
    expected_hash: &str,
    since: &str,
) -> std::result::Result<(Arc<Model>, String), String> {
    let displayed = display_location(location);
    let (model, content_hash) = parse_model_cached(bytes, format)
        .map_err(|e| format!("model '{shown}' ({displayed}): {e}"))?;
    if content_hash != expected_hash {
        return Err(format!(
            "the artifact of model '{shown}' ({displayed}) has changed since {since} \
             ({content_hash}, expected {expected_hash})"
        ));
    }
    Ok((model, content_hash))
}

/// The models of a plan that came from another process: each pinned reference must still have
/// the content hash the client resolved.
///
/// A worker decodes a plan once per task, so every task's resolver names the same pins: models
/// are kept once per process (by pin: name, version, location, hash), and the first reference
/// a resolver needs prefetches every pin the process does not hold yet, their artifacts read
/// concurrently from their stores before any row is scored (plans are decoded, and scoring
/// functions typed, before execution starts).
#[derive(Debug, Default)]
pub struct PinnedModels {
    pins: BTreeMap<String, ModelPin>,
}

/// What identifies a pinned model's artifact: name, version, location, content hash, format.
type PinKey = (String, Option<u64>, String, String, String);

fn pin_key(pin: &ModelPin) -> PinKey {
    (
        pin.name.clone(),
        pin.version,
        pin.location.clone(),
        pin.content_hash.clone(),
        pin.format.clone(),
    )
}

/// The process's models loaded from pins. Bounded by the distinct pins of the plans this
/// process ran (a handful of model versions).
fn process_models() -> &'static Mutex<HashMap<PinKey, Arc<LoadedModel>>> {
    static MODELS: std::sync::OnceLock<Mutex<HashMap<PinKey, Arc<LoadedModel>>>> =
        std::sync::OnceLock::new();
    MODELS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cached(pin: &ModelPin) -> Option<Arc<LoadedModel>> {
    process_models()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&pin_key(pin))
        .cloned()
}

impl PinnedModels {
    /// A resolver that knows exactly `pins`.
    pub fn new(pins: Vec<ModelPin>) -> PinnedModels {
        PinnedModels {
            pins: pins.into_iter().map(|p| (p.reference.clone(), p)).collect(),
        }
    }

    /// Loads every pin the process does not hold yet, reading their artifacts concurrently;
    /// returns the error of each pin that failed, by reference.
    fn prefetch(&self) -> BTreeMap<String, String> {
        let missing: Vec<&ModelPin> = self
            .pins
            .values()
            .filter(|pin| cached(pin).is_none())
            .collect();
        let mut errors = BTreeMap::new();
        let mut readable = Vec::new();
        for pin in missing {
            match Url::parse(&pin.location) {
                Ok(url) => readable.push((pin, url)),
                Err(e) => {
                    errors.insert(
                        pin.reference.clone(),
                        format!(
                            "model '{}': invalid location '{}': {e}",
                            shown(pin),
                            pin.location
                        ),
                    );
                }
            }
        }
        let urls: Vec<Url> = readable.iter().map(|(_, url)| url.clone()).collect();
        let contents = read_objects_blocking(&urls);
        for ((pin, url), bytes) in readable.into_iter().zip(contents) {
            match Self::verify(pin, &url, bytes) {
                Ok(model) => {
                    process_models()
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(pin_key(pin))
                        .or_insert(model);
                }
                Err(message) => {
                    errors.insert(pin.reference.clone(), message);
                }
            }
        }
        errors
    }

    /// A pin's artifact, read, parsed and checked against the hash the client resolved.
    fn verify(
        pin: &ModelPin,
        url: &Url,
        bytes: Result<Vec<u8>>,
    ) -> std::result::Result<Arc<LoadedModel>, String> {
        let shown = shown(pin);
        let format = ModelFormat::parse(&pin.format)
            .ok_or_else(|| format!("model '{shown}': unknown format '{}'", pin.format))?;
        let bytes =
            bytes.map_err(|e| format!("cannot read the artifact of model '{shown}': {e}"))?;
        let (model, content_hash) = verify_artifact(
            &shown,
            url,
            &bytes,
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

/// `name@version` of a pin, for messages.
fn shown(pin: &ModelPin) -> String {
    match pin.version {
        Some(version) => format!("{}@{version}", pin.name),
        None => pin.name.clone(),
    }
}

impl ModelResolver for PinnedModels {
    fn resolve(&self, reference: &str) -> std::result::Result<Arc<LoadedModel>, String> {
        let pin = self.pins.get(reference).ok_or_else(|| {
            format!("model '{reference}' was not resolved when the job was planned")
        })?;
        if let Some(model) = cached(pin) {
            return Ok(model);
        }
        let mut errors = self.prefetch();
        if let Some(message) = errors.remove(reference) {
            return Err(message);
        }
        cached(pin).ok_or_else(|| format!("model '{}' could not be loaded", shown(pin)))
    }

    fn pins(&self) -> std::result::Result<Vec<ModelPin>, String> {
        Ok(self.pins.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn pin(reference: &str, path: &std::path::Path, bytes: &[u8]) -> ModelPin {
        let (_, content_hash) = parse_model_cached(bytes, ModelFormat::XgboostJson).unwrap();
        ModelPin {
            reference: reference.to_string(),
            name: reference.to_string(),
            version: Some(1),
            content_hash,
            format: ModelFormat::XgboostJson.to_string(),
            location: Url::from_file_path(path).unwrap().to_string(),
        }
    }

    #[test]
    fn the_first_reference_prefetches_every_pin_once_per_process() {
        let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/xgb_binary.json");
        let bytes = std::fs::read(fixture).unwrap();
        let folder = tempfile::tempdir().unwrap();
        let pins: Vec<ModelPin> = ["prefetch_a", "prefetch_b"]
            .iter()
            .map(|name| {
                let path = folder.path().join(format!("{name}.json"));
                std::fs::write(&path, &bytes).unwrap();
                pin(name, &path, &bytes)
            })
            .collect();
        let first_task = PinnedModels::new(pins.clone());
        assert_eq!(first_task.resolve("prefetch_a").unwrap().name, "prefetch_a");
        // Both artifacts were read with the first reference: with the files gone, another
        // task's resolver (a new plan decoded by the same process) still has both.
        drop(folder);
        let second_task = PinnedModels::new(pins);
        assert_eq!(
            second_task.resolve("prefetch_b").unwrap().name,
            "prefetch_b"
        );
        assert_eq!(
            second_task.resolve("prefetch_a").unwrap().name,
            "prefetch_a"
        );
    }
}
