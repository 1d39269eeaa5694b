//! Job files for the daemon: found in the paths given, turned into [`ScheduledJob`]s, and
//! reloaded when they change. A file whose new text does not validate is reported and the job
//! keeps its previous definition.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lakeforge_planner::{JobScheduling, JobSpec, SourceFormat, freshness_sla, is_plain_identifier};
use sha2::{Digest, Sha256};
use url::Url;

use crate::error::{EngineError, Result};
use crate::job::{LoadedJob, product_table, spec_folder};
use crate::location::{join_folder, resolve_table_location};
use crate::schedule::clock::Clock;
use crate::schedule::scheduler::{
    JobRunner, ScheduledJob, ScheduledProduct, Scheduler, TriggerInput, TriggerStore,
};

/// The job files under `paths`: files as given, and the `*.toml` files directly in folders,
/// sorted.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = BTreeSet::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| EngineError::Io {
                context: format!("cannot list job folder {}", path.display()),
                source,
            })?;
            for entry in entries.flatten() {
                let file = entry.path();
                if file.is_file() && file.extension().is_some_and(|e| e == "toml") {
                    files.insert(file);
                }
            }
        } else if path.is_file() {
            files.insert(path.clone());
        } else {
            return Err(EngineError::Usage(format!(
                "{} is neither a job file nor a folder of job files",
                path.display()
            )));
        }
    }
    Ok(files.into_iter().collect())
}

/// Reads and checks a job file for scheduling. `catalog` maps product names to tables for the
/// other jobs of the daemon, so `after` can name a product published at a custom path.
pub fn load_scheduled(
    path: &Path,
    text: &str,
    catalog: &BTreeMap<String, Url>,
    profile: Option<&str>,
) -> Result<ScheduledJob> {
    let loaded = LoadedJob::from_text(path, text, &BTreeMap::new(), profile)?;
    let spec = &loaded.job.spec;
    let scheduling = JobScheduling::from_section(&spec.job)?;
    let invalid = |message: String| EngineError::Usage(format!("{}: {message}", path.display()));
    let mut products = Vec::with_capacity(spec.products.len());
    for product in &spec.products {
        products.push(ScheduledProduct {
            name: product.name.clone(),
            table: loaded.product_url(&product.name)?,
            freshness_sla: freshness_sla(product)?,
        });
    }
    let mut after = Vec::with_capacity(scheduling.after.len());
    for entry in &scheduling.after {
        let table = if let Some(source) = spec.sources.get(entry) {
            if source.format != SourceFormat::Delta {
                return Err(invalid(format!(
                    "`after`: source '{entry}' is a {} source; only Delta tables have versions \
                     to wait for",
                    source.format
                )));
            }
            if let Some(version) = source.version {
                return Err(invalid(format!(
                    "`after`: source '{entry}' is pinned to version {version}; it never changes"
                )));
            }
            resolve_table_location(&loaded.job.base_dir, &source.path)?
        } else if spec.products.iter().any(|p| &p.name == entry) {
            return Err(invalid(format!(
                "`after`: '{entry}' is this job's own product; the job would trigger itself"
            )));
        } else if let Some(table) = catalog.get(entry) {
            table.clone()
        } else if is_plain_identifier(entry) {
            let mut table = join_folder(&loaded.warehouse, entry)?;
            if !table.path().ends_with('/') {
                table.set_path(&format!("{}/", table.path()));
            }
            table
        } else {
            resolve_table_location(&loaded.job.base_dir, entry)?
        };
        if products.iter().any(|p| p.table == table) {
            return Err(invalid(format!(
                "`after`: '{entry}' is this job's own product; the job would trigger itself"
            )));
        }
        after.push(TriggerInput {
            name: entry.clone(),
            table,
        });
    }
    Ok(ScheduledJob {
        name: loaded.job.name().to_string(),
        spec_path: path.to_path_buf(),
        spec_text: text.into(),
        profile: profile.map(str::to_string),
        warehouse: loaded.warehouse.clone(),
        scheduling,
        after,
        products,
    })
}

/// What the daemon knows of one job file.
#[derive(Debug, Clone)]
struct LoadedFile {
    digest: [u8; 32],
    /// The job it defines, when it ever validated.
    job: Option<String>,
}

/// Keeps the scheduler's jobs in step with the job files.
#[derive(Debug)]
pub struct JobFiles {
    paths: Vec<PathBuf>,
    files: BTreeMap<PathBuf, LoadedFile>,
    catalog: BTreeMap<String, Url>,
    profile: Option<String>,
}

impl JobFiles {
    /// Watches `paths` (files and folders), whose jobs run with `profile`.
    pub fn new(paths: Vec<PathBuf>, profile: Option<String>) -> JobFiles {
        JobFiles {
            paths,
            files: BTreeMap::new(),
            catalog: BTreeMap::new(),
            profile,
        }
    }

    /// The first load: every job file must validate, and there must be at least one.
    pub async fn load_all<R: JobRunner, S: TriggerStore, C: Clock>(
        &mut self,
        scheduler: &Scheduler<R, S, C>,
    ) -> Result<usize> {
        let files = discover(&self.paths)?;
        if files.is_empty() {
            return Err(EngineError::Usage(format!(
                "no job files (*.toml) in {}",
                self.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut jobs = Vec::new();
        let texts = files
            .iter()
            .map(|file| read(file).map(|text| (file.clone(), text)))
            .collect::<Result<Vec<_>>>()?;
        self.catalog = catalog(&texts);
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (file, text) in &texts {
            let job = load_scheduled(file, text, &self.catalog, self.profile.as_deref())?;
            if let Some(other) = names.insert(job.name.clone(), file.clone()) {
                return Err(EngineError::Usage(format!(
                    "job name '{}' is used by {} and {}; job names must be unique",
                    job.name,
                    other.display(),
                    file.display()
                )));
            }
            self.files.insert(
                file.clone(),
                LoadedFile {
                    digest: digest(text),
                    job: Some(job.name.clone()),
                },
            );
            jobs.push(job);
        }
        let count = jobs.len();
        for job in jobs {
            if !job.scheduling.is_triggered() {
                tracing::info!(
                    job = job.name,
                    "no `schedule` or `after`: the job never runs by itself; its products' \
                     freshness is still watched"
                );
            }
            scheduler.upsert(job).await;
        }
        Ok(count)
    }

    /// Looks for added, changed and removed files and applies them; returns what happened,
    /// one line per change, for the log.
    pub async fn reload<R: JobRunner, S: TriggerStore, C: Clock>(
        &mut self,
        scheduler: &Scheduler<R, S, C>,
    ) -> Vec<String> {
        let mut changes = Vec::new();
        let files = match discover(&self.paths) {
            Ok(files) => files,
            Err(error) => {
                changes.push(format!("cannot list job files: {error}"));
                return changes;
            }
        };
        let removed: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|f| !files.contains(f))
            .cloned()
            .collect();
        for file in removed {
            if let Some(LoadedFile {
                job: Some(name), ..
            }) = self.files.remove(&file)
            {
                scheduler.remove(&name);
                changes.push(format!(
                    "{}: removed; job '{name}' unscheduled",
                    file.display()
                ));
            }
            scheduler.set_file_error(file, None);
        }
        let mut texts = Vec::new();
        let mut edited = Vec::new();
        for file in &files {
            match read(file) {
                Ok(text) => {
                    let new_digest = digest(&text);
                    if self.files.get(file).is_none_or(|k| k.digest != new_digest) {
                        edited.push((file.clone(), text.clone(), new_digest));
                    }
                    texts.push((file.clone(), text));
                }
                Err(error) => changes.push(error.to_string()),
            }
        }
        if edited.is_empty() {
            return changes;
        }
        self.catalog = catalog(&texts);
        for (file, text, new_digest) in edited {
            let known = self.files.get(&file).cloned();
            let previous_job = known.as_ref().and_then(|k| k.job.clone());
            let taken_by_other = |name: &str| {
                self.files
                    .iter()
                    .any(|(other, loaded)| *other != file && loaded.job.as_deref() == Some(name))
            };
            let outcome = load_scheduled(&file, &text, &self.catalog, self.profile.as_deref())
                .and_then(|job| {
                    if taken_by_other(&job.name) {
                        Err(EngineError::Usage(format!(
                            "job name '{}' is already used by another job file",
                            job.name
                        )))
                    } else {
                        Ok(job)
                    }
                });
            match outcome {
                Ok(job) => {
                    if let Some(old) = previous_job.as_ref().filter(|old| **old != job.name) {
                        scheduler.remove(old);
                    }
                    let name = job.name.clone();
                    scheduler.upsert(job).await;
                    scheduler.set_spec_error(&name, None);
                    scheduler.set_file_error(file.clone(), None);
                    changes.push(match previous_job {
                        Some(_) => format!("{}: reloaded job '{name}'", file.display()),
                        None => format!("{}: scheduled job '{name}'", file.display()),
                    });
                    self.files.insert(
                        file.clone(),
                        LoadedFile {
                            digest: new_digest,
                            job: Some(name),
                        },
                    );
                }
                Err(error) => {
                    let message = error.to_string();
                    match &previous_job {
                        Some(name) => {
                            scheduler.set_spec_error(name, Some(message.clone()));
                            changes.push(format!(
                                "{}: the edit does not validate; job '{name}' keeps its previous \
                                 definition: {message}",
                                file.display()
                            ));
                        }
                        None => {
                            scheduler.set_file_error(file.clone(), Some(message.clone()));
                            changes.push(format!("{}: not scheduled: {message}", file.display()));
                        }
                    }
                    self.files.insert(
                        file.clone(),
                        LoadedFile {
                            digest: new_digest,
                            job: previous_job,
                        },
                    );
                }
            }
        }
        changes
    }
}

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|source| EngineError::Io {
        context: format!("cannot read job file {}", file.display()),
        source,
    })
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Product name → table for every job file that parses, for resolving `after`. Reads nothing
/// but the texts: no SQL files, no models.
fn catalog(texts: &[(PathBuf, String)]) -> BTreeMap<String, Url> {
    let mut catalog = BTreeMap::new();
    for (file, text) in texts {
        let Ok(spec) = JobSpec::parse(text, &file.display().to_string()) else {
            continue;
        };
        let Ok(warehouse) = resolve_table_location(&spec_folder(file), &spec.job.warehouse) else {
            continue;
        };
        for product in &spec.products {
            if let Ok(table) = product_table(&warehouse, &product.name, product.path.as_deref()) {
                catalog.insert(product.name.clone(), table);
            }
        }
    }
    catalog
}
