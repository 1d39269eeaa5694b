//! Running, validating and explaining jobs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chrono::Utc;
use datafusion::physical_plan::displayable;
use datafusion::prelude::SessionContext;
use lakeforge_planner::{JobPlan, JobSpec, ResolvedJob, plan_job};
use url::Url;

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::location::{display_location, resolve_location, resolve_table_location};
use crate::metadata::{CommitMetadata, ENGINE_VERSION, InputIdentity};
use crate::publish::{
    PreparedProduct, ProductTarget, StagedProduct, commit_product, discard_staged, prepare_product,
    stage_product,
};
use crate::runs::{ProductVersion, RunRecord, RunStatus, record_run};
use crate::session::new_session;
use crate::sources::register_sources;

/// A job file read and resolved, with its warehouse located.
#[derive(Debug, Clone)]
pub struct LoadedJob {
    /// The resolved spec.
    pub job: ResolvedJob,
    /// The warehouse's URL.
    pub warehouse: Url,
}

impl LoadedJob {
    /// Reads `path`, substitutes `vars` (which override the spec's `[job.vars]`) and locates the
    /// warehouse.
    pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> Result<LoadedJob> {
        let (spec, text) = JobSpec::load(path)?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let job = spec.resolve(&text, &base_dir, Some(path), vars)?;
        let warehouse = resolve_table_location(&job.base_dir, &job.spec.job.warehouse)?;
        Ok(LoadedJob { job, warehouse })
    }

    /// Where a product's table lives: its `path` (relative to the warehouse) or
    /// `WAREHOUSE/<name>`.
    pub fn product_url(&self, product: &str) -> Result<Url> {
        let path = self
            .job
            .product(product)
            .and_then(|p| p.path.clone())
            .unwrap_or_else(|| product.to_string());
        match self.warehouse.to_file_path() {
            Ok(warehouse_dir) => resolve_table_location(&warehouse_dir, &path),
            Err(()) => crate::location::join_folder(&self.warehouse, &path),
        }
    }

    fn product_targets(&self) -> Result<Vec<ProductTarget>> {
        self.job
            .spec
            .products
            .iter()
            .map(|p| {
                Ok(ProductTarget {
                    name: p.name.clone(),
                    url: self.product_url(&p.name)?,
                    mode: p.mode,
                    partition_by: p.partition_by.clone(),
                    description: p.description.clone(),
                    owner: p.owner.clone(),
                })
            })
            .collect()
    }
}

/// What a run is doing, for progress displays.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// Sources are being registered and statements planned.
    Planning,
    /// A product's files are being written; `rows` counts rows written so far.
    Writing {
        /// The product.
        product: String,
        /// Rows written so far, updated by the writers.
        rows: Arc<AtomicU64>,
    },
    /// Products are being committed.
    Committing,
}

/// Receives [`RunEvent`]s.
pub trait RunObserver: Send + Sync {
    /// Called as the run moves on.
    fn on_event(&self, event: RunEvent);
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoProgress;

impl RunObserver for NoProgress {
    fn on_event(&self, _event: RunEvent) {}
}

/// What one product run produced.
#[derive(Debug, Clone)]
pub struct ProductOutcome {
    /// The product's name.
    pub name: String,
    /// Its table.
    pub table: Url,
    /// The version committed.
    pub version: u64,
    /// Rows written.
    pub rows: u64,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Time spent computing and writing it.
    pub duration: Duration,
}

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// The job's name.
    pub job: String,
    /// Each product, in spec order.
    pub products: Vec<ProductOutcome>,
    /// Wall time of the run.
    pub duration: Duration,
    /// Set when the run succeeded but its run record could not be written.
    pub record_warning: Option<String>,
}

/// Runs `loaded` embedded: every product is computed and its files written, then each is
/// committed as one new version. A failure before the commits publishes nothing. The run is
/// recorded in the warehouse's runs table either way.
pub async fn run_job(
    loaded: &LoadedJob,
    config: &EngineConfig,
    observer: &dyn RunObserver,
) -> Result<RunSummary> {
    let run_id = uuid::Uuid::new_v4().to_string();
    let started_at = Utc::now();
    let clock = Instant::now();
    let mut inputs = Vec::new();
    let outcome = execute_run(loaded, config, observer, &run_id, &mut inputs).await;
    let ended_at = Utc::now();
    let (status, products, error) = match &outcome {
        Ok(products) => (
            RunStatus::Succeeded,
            products
                .iter()
                .map(|p| ProductVersion {
                    product: p.name.clone(),
                    table: p.table.to_string(),
                    version: p.version,
                    rows: p.rows,
                })
                .collect(),
            None,
        ),
        Err(error) => (RunStatus::Failed, Vec::new(), Some(error.to_string())),
    };
    let record = RunRecord {
        run_id: run_id.clone(),
        job: loaded.job.name().to_string(),
        status,
        started_at,
        ended_at,
        spec_hash: loaded.job.spec_hash.clone(),
        products,
        inputs,
        error,
    };
    let recorded = record_run(&loaded.warehouse, &record).await;
    match outcome {
        Ok(products) => Ok(RunSummary {
            run_id,
            job: loaded.job.name().to_string(),
            products,
            duration: clock.elapsed(),
            record_warning: recorded.err().map(|e| e.to_string()),
        }),
        Err(error) => {
            if let Err(record_error) = recorded {
                tracing::error!(%record_error, "the failed run could not be recorded");
            }
            Err(EngineError::RunFailed {
                run_id,
                source: Box::new(error),
            })
        }
    }
}

async fn execute_run(
    loaded: &LoadedJob,
    config: &EngineConfig,
    observer: &dyn RunObserver,
    run_id: &str,
    inputs: &mut Vec<InputIdentity>,
) -> Result<Vec<ProductOutcome>> {
    observer.on_event(RunEvent::Planning);
    let ctx = new_session(config)?;
    let (plan, identities) = plan_loaded_job(&ctx, loaded).await?;
    *inputs = identities;
    let prepared = prepare_products(loaded, &plan).await?;

    // Phase 1: compute every product and write its files, committing nothing.
    let mut staged: Vec<(StagedProduct, Duration)> = Vec::with_capacity(prepared.len());
    for product in prepared {
        let rows = Arc::new(AtomicU64::new(0));
        observer.on_event(RunEvent::Writing {
            product: product.target.name.clone(),
            rows: Arc::clone(&rows),
        });
        let clock = Instant::now();
        match stage_product(&ctx, product, rows).await {
            Ok(done) => staged.push((done, clock.elapsed())),
            Err(error) => {
                for (done, _) in &staged {
                    discard_staged(done).await;
                }
                return Err(error);
            }
        }
    }

    // Phase 2: one commit per product.
    observer.on_event(RunEvent::Committing);
    let mut outcomes = Vec::with_capacity(staged.len());
    for (index, (product, duration)) in staged.iter().enumerate() {
        let target = &product.prepared.target;
        let metadata = CommitMetadata {
            operation: "run".to_string(),
            run_id: run_id.to_string(),
            job: Some(loaded.job.name().to_string()),
            product: Some(target.name.clone()),
            spec_hash: Some(loaded.job.spec_hash.clone()),
            vars: loaded.job.vars.clone(),
            engine_version: ENGINE_VERSION.to_string(),
            rows_written: Some(product.rows),
            inputs: inputs.clone(),
            restored_version: None,
        };
        match commit_product(product, &metadata).await {
            Ok(version) => outcomes.push(ProductOutcome {
                name: target.name.clone(),
                table: target.url.clone(),
                version,
                rows: product.rows,
                files: product.adds.len(),
                bytes: product.bytes,
                duration: *duration,
            }),
            Err(error) => {
                for (rest, _) in &staged[index..] {
                    discard_staged(rest).await;
                }
                if outcomes.is_empty() {
                    return Err(error);
                }
                // Delta has no multi-table transactions: earlier products are already
                // committed. Say exactly which, so the operator can roll them back.
                let committed = outcomes
                    .iter()
                    .map(|o| format!("{} version {}", o.name, o.version))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(EngineError::product(
                    &target.name,
                    format!("{error} (already committed by this run: {committed})"),
                ));
            }
        }
    }
    Ok(outcomes)
}

/// Registers the job's sources in `ctx` and plans its steps and products.
pub async fn plan_loaded_job(
    ctx: &SessionContext,
    loaded: &LoadedJob,
) -> Result<(JobPlan, Vec<InputIdentity>)> {
    let identities = register_sources(ctx, &loaded.job).await?;
    let plan = plan_job(ctx, &loaded.job).await?;
    Ok((plan, identities))
}

async fn prepare_products(loaded: &LoadedJob, plan: &JobPlan) -> Result<Vec<PreparedProduct>> {
    let targets = loaded.product_targets()?;
    let mut prepared = Vec::with_capacity(targets.len());
    for (target, product) in targets.into_iter().zip(&plan.products) {
        prepared.push(prepare_product(target, product.plan.clone()).await?);
    }
    Ok(prepared)
}

/// A product as `validate` and `plan` report it.
#[derive(Debug, Clone)]
pub struct ProductReport {
    /// The product's name.
    pub name: String,
    /// The table it publishes to.
    pub table: String,
    /// Its output columns and types.
    pub columns: Vec<(String, String)>,
    /// Whether the table exists already.
    pub table_exists: bool,
    /// The optimized logical plan.
    pub logical_plan: String,
    /// The physical plan.
    pub physical_plan: String,
}

/// Plans every statement of the job against its sources' schemas and every product against
/// its existing table, without reading data.
pub async fn validate_job(loaded: &LoadedJob, config: &EngineConfig) -> Result<Vec<ProductReport>> {
    let ctx = new_session(config)?;
    let (plan, _) = plan_loaded_job(&ctx, loaded).await?;
    let prepared = prepare_products(loaded, &plan).await?;
    let mut reports = Vec::with_capacity(prepared.len());
    for product in prepared {
        let name = product.target.name.clone();
        let state = ctx.state();
        let optimized = state.optimize(&product.plan).map_err(|e| {
            EngineError::product(&name, format!("cannot optimize: {}", e.strip_backtrace()))
        })?;
        let physical = state
            .create_physical_plan(&product.plan)
            .await
            .map_err(|e| {
                EngineError::product(&name, format!("cannot plan: {}", e.strip_backtrace()))
            })?;
        reports.push(ProductReport {
            table: display_location(&product.target.url),
            columns: product
                .schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect(),
            table_exists: product.existing.is_some(),
            logical_plan: optimized.display_indent().to_string(),
            physical_plan: displayable(physical.as_ref()).indent(true).to_string(),
            name,
        });
    }
    Ok(reports)
}

/// Resolves a table argument of the CLI (a path relative to the working directory, or a URL).
pub fn table_argument(text: &str) -> Result<Url> {
    let cwd = std::env::current_dir().map_err(|source| EngineError::Io {
        context: "cannot read the working directory".to_string(),
        source,
    })?;
    resolve_table_location(&cwd, text)
}

/// Resolves a location argument that may be a file or a folder.
pub fn location_argument(text: &str) -> Result<Url> {
    let cwd = std::env::current_dir().map_err(|source| EngineError::Io {
        context: "cannot read the working directory".to_string(),
        source,
    })?;
    resolve_location(&cwd, text)
}
