//! Running, validating and explaining jobs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Utc};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::displayable;
use datafusion::prelude::SessionContext;
use lakeforge_planner::{
    CheckKind, CheckPlacement, CheckedDataset, Evaluation, JobPlan, JobScheduling, JobSpec,
    ResolvedJob, extract_lineage, freshness_sla, plan_job,
};
use lakeforge_udfs::scoring::ModelResolver;
use url::Url;

use crate::cancel::RunCancellation;
use crate::check_history::{RecordedResult, observed_history, record_results};
use crate::cluster;
use crate::config::EngineConfig;
use crate::dq::predicates::rewrite_check_projection;
use crate::dq::{CheckResult, DatasetCheckRun, ProductHistory};
use crate::error::{EngineError, Result};
use crate::lineage::openlineage::{
    self, DEFAULT_NAMESPACE, EventSink, PublishedProduct, ReadSource, RunDescription,
};
use crate::lineage::{ProductLineage, PublishedLineage, lineage_options, record_lineage};
use crate::location::{
    display_location, join_file, join_folder, resolve_location, resolve_table_location,
};
use crate::metadata::{CheckSummary, CommitMetadata, ENGINE_VERSION, InputIdentity};
use crate::models::JobModels;
use crate::publish::{
    CheckedInput, PreparedProduct, ProductTarget, QuarantineTarget, StagedFiles, StagedProduct,
    check_input, commit_product, commit_quarantine, delta_compatible_schema, discard_quarantine,
    discard_staged, prepare_product, prepare_quarantine, stage_product,
};
use crate::registry::Registry;
use crate::runs::{ProductVersion, RunRecord, RunStatus, record_run};
use crate::session::{RunBackend, new_session_with_models};
use crate::sources::register_sources;
use crate::storage::StorageOptions;

/// Where quarantine tables live, relative to the warehouse: `<folder>/<dataset>`.
pub const QUARANTINE_FOLDER: &str = "_lakeforge/quarantine";

/// Where a local warehouse keeps the OpenLineage events of its runs, relative to it.
pub const OPENLINEAGE_EVENTS_FILE: &str = "_lakeforge/openlineage/events.ndjson";

/// A job file read and resolved, with its warehouse located.
#[derive(Debug, Clone)]
pub struct LoadedJob {
    /// The resolved spec.
    pub job: ResolvedJob,
    /// The warehouse's URL.
    pub warehouse: Url,
    /// The models the job declares, read and checked.
    pub models: Arc<JobModels>,
}

impl LoadedJob {
    /// Reads `path`, substitutes `vars` (which override the spec's `[job.vars]`) and locates the
    /// warehouse.
    pub fn load(
        path: &Path,
        vars: &BTreeMap<String, String>,
        profile: Option<&str>,
    ) -> Result<LoadedJob> {
        let (_, text) = JobSpec::load(path)?;
        LoadedJob::from_text(path, &text, vars, profile)
    }

    /// [`load`](Self::load) from the spec's text, read earlier from `path` (the scheduler keeps
    /// the last text that validated, so a broken edit does not change what runs).
    ///
    /// A job with a `schedule` or `after` trigger gets `run_date` / `run_ts` set to now (in its
    /// time zone) unless `vars` or `[job.vars]` set them, so a manual run of a scheduled job
    /// works like a run triggered now.
    pub fn from_text(
        path: &Path,
        text: &str,
        vars: &BTreeMap<String, String>,
        profile: Option<&str>,
    ) -> Result<LoadedJob> {
        let spec = JobSpec::parse(text, &path.display().to_string())?;
        let scheduling = JobScheduling::from_section(&spec.job)?;
        let mut vars = vars.clone();
        if scheduling.is_triggered() {
            for (name, value) in scheduling.run_vars(Utc::now()) {
                if !spec.job.vars.contains_key(&name) {
                    vars.entry(name).or_insert(value);
                }
            }
        }
        let vars = &vars;
        let base_dir = spec_folder(path);
        let job = spec.resolve(text, &base_dir, Some(path), vars, profile)?;
        // Before anything is read: the job's stores may need its `[storage]` options.
        crate::storage::configure(&StorageOptions::from_spec(
            &job.spec.storage,
            &path.display().to_string(),
        )?)?;
        let warehouse = resolve_table_location(&job.base_dir, &job.spec.job.warehouse)?;
        let models = Arc::new(JobModels::load(&job)?);
        Ok(LoadedJob {
            job,
            warehouse,
            models,
        })
    }

    /// Where a product's table lives: its `path` (relative to the warehouse) or
    /// `WAREHOUSE/<name>`.
    pub fn product_url(&self, product: &str) -> Result<Url> {
        product_table(
            &self.warehouse,
            product,
            self.job.product(product).and_then(|p| p.path.as_deref()),
        )
    }

    /// The OpenLineage job namespace.
    pub fn lineage_namespace(&self) -> &str {
        self.job
            .spec
            .lineage
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    /// Where this job's OpenLineage events go: `[lineage] events_file` (default
    /// `WAREHOUSE/_lakeforge/openlineage/events.ndjson` for a local warehouse) and `[lineage]
    /// url`, which `LAKEFORGE_OPENLINEAGE_URL` overrides.
    pub fn event_sink(&self) -> EventSink {
        let spec = &self.job.spec.lineage;
        let file = match &spec.events_file {
            Some(path) => match resolve_location(&self.job.base_dir, path) {
                Ok(url) => Some(url),
                Err(error) => {
                    tracing::warn!("ignoring [lineage] events_file: {error}");
                    None
                }
            },
            None => join_file(&self.warehouse, OPENLINEAGE_EVENTS_FILE).ok(),
        };
        let url = std::env::var("LAKEFORGE_OPENLINEAGE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| spec.url.clone())
            .and_then(|u| match Url::parse(&u) {
                Ok(url) => Some(url),
                Err(error) => {
                    tracing::warn!("ignoring the OpenLineage URL {u:?}: {error}");
                    None
                }
            });
        EventSink { file, url }
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

/// Where product `name` of a job with `warehouse` lives: `path` (relative to the warehouse, or
/// a URL) or `WAREHOUSE/<name>`.
pub fn product_table(warehouse: &Url, name: &str, path: Option<&str>) -> Result<Url> {
    let path = path.unwrap_or(name);
    match warehouse.to_file_path() {
        Ok(warehouse_dir) => resolve_table_location(&warehouse_dir, path),
        Err(()) => crate::location::join_folder(warehouse, path),
    }
}

/// The folder a job file's relative paths resolve against.
pub fn spec_folder(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
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
    /// The checks of a source or step are being evaluated.
    Checking {
        /// The source or step.
        dataset: String,
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
    /// Rows its checks quarantined (committed to its quarantine table).
    pub quarantined: u64,
    /// The columns written.
    pub schema: SchemaRef,
    /// Where each column comes from.
    pub lineage: ProductLineage,
}

impl ProductOutcome {
    /// The product version as run records list it.
    pub fn version_record(&self) -> ProductVersion {
        ProductVersion {
            product: self.name.clone(),
            table: self.table.to_string(),
            version: self.version,
            rows: self.rows,
        }
    }
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
    /// Every check result, inputs first, in spec order.
    pub checks: Vec<CheckResult>,
    /// Wall time of the run.
    pub duration: Duration,
    /// Set when the run succeeded but its run record could not be written.
    pub record_warning: Option<String>,
}

/// What a run collects as it goes; recorded whether it succeeds or fails.
#[derive(Debug, Default)]
struct RunLedger {
    inputs: Vec<InputIdentity>,
    /// Each source's schema, by name (for the OpenLineage events).
    source_schemas: BTreeMap<String, SchemaRef>,
    checks: Vec<CheckResult>,
    versions: BTreeMap<String, u64>,
}

/// Runs `loaded` embedded: every product is computed and its files written, then each is
/// committed as one new version. A failure before the commits publishes nothing. The run is
/// recorded in the warehouse's runs table either way, and its check results in the
/// `dq_results` table.
pub async fn run_job(
    loaded: &LoadedJob,
    config: &EngineConfig,
    observer: &dyn RunObserver,
) -> Result<RunSummary> {
    run_job_with(loaded, config, observer, &RunCancellation::new()).await
}

/// [`run_job`], stoppable through `cancel` until its commits start: a cancelled run deletes
/// the files it wrote, commits nothing, and is recorded as `cancelled` with the reason.
pub async fn run_job_with(
    loaded: &LoadedJob,
    config: &EngineConfig,
    observer: &dyn RunObserver,
    cancel: &RunCancellation,
) -> Result<RunSummary> {
    crate::storage::check_access(&loaded.warehouse).await?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let started_at = Utc::now();
    let clock = Instant::now();
    let events = loaded.event_sink();
    let run = RunDescription {
        namespace: loaded.lineage_namespace(),
        job: loaded.job.name(),
        run_id: &run_id,
        warehouse: &loaded.warehouse,
    };
    emit(&events, &run.start(started_at)).await;
    let mut ledger = RunLedger::default();
    let context = RunContext {
        loaded,
        config,
        observer,
        run_id: &run_id,
        started_at,
        cancel,
        backend: RunBackend::chosen_by(config),
    };
    let outcome = execute_run(&context, &mut ledger).await;
    let ended_at = Utc::now();
    let (status, products, error) = match &outcome {
        Ok(products) => (
            RunStatus::Succeeded,
            products
                .iter()
                .map(ProductOutcome::version_record)
                .collect(),
            None,
        ),
        Err(error @ EngineError::Cancelled { .. }) => {
            (RunStatus::Cancelled, Vec::new(), Some(error.to_string()))
        }
        Err(error) => (RunStatus::Failed, Vec::new(), Some(error.to_string())),
    };
    let recorded_checks: Vec<RecordedResult<'_>> = ledger
        .checks
        .iter()
        .map(|result| RecordedResult {
            result,
            product_version: ledger.versions.get(&result.dataset).copied(),
        })
        .collect();
    let record = RunRecord {
        run_id: run_id.clone(),
        job: loaded.job.name().to_string(),
        status,
        started_at,
        ended_at,
        spec_hash: loaded.job.spec_hash.clone(),
        products,
        inputs: ledger.inputs.clone(),
        error,
        profile: loaded.job.profile.clone(),
    };
    let published: Vec<PublishedLineage<'_>> = match &outcome {
        Ok(products) => products
            .iter()
            .map(|p| PublishedLineage {
                product: &p.name,
                table: &p.table,
                version: p.version,
                lineage: &p.lineage,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let event = match &outcome {
        Ok(products) => complete_event(loaded, &run, &ledger, products, ended_at),
        Err(error @ EngineError::Cancelled { .. }) => run.abort(ended_at, &error.to_string()),
        Err(error) => run.fail(ended_at, &error.to_string()),
    };
    emit(&events, &event).await;
    // The run's record, its check results and its lineage go to three tables of their own:
    // committed side by side, each an atomic commit of its own.
    let (run_recorded, checks_recorded, lineage_recorded) = tokio::join!(
        record_run(&loaded.warehouse, &record),
        record_results(
            &loaded.warehouse,
            &run_id,
            loaded.job.name(),
            &recorded_checks,
            ended_at,
        ),
        async {
            if outcome.is_err() {
                return Ok(());
            }
            record_lineage(
                &loaded.warehouse,
                &run_id,
                loaded.job.name(),
                &published,
                ended_at,
            )
            .await
        },
    );
    let recorded = run_recorded.and(checks_recorded).and(lineage_recorded);
    match outcome {
        Ok(products) => Ok(RunSummary {
            run_id,
            job: loaded.job.name().to_string(),
            products,
            checks: ledger.checks,
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

/// What every phase of a run needs to know about it.
struct RunContext<'a> {
    loaded: &'a LoadedJob,
    config: &'a EngineConfig,
    observer: &'a dyn RunObserver,
    run_id: &'a str,
    started_at: DateTime<Utc>,
    cancel: &'a RunCancellation,
    /// Embedded or on a cluster: decided once, from the configuration, when the run starts.
    backend: RunBackend,
}

/// Every file a run has written and not yet committed. When a run fails, [`Staging::discard`]
/// removes all of them, whichever phase failed: the one place a failed run's files are
/// cleaned up. Commits are counted as they land, so nothing committed is ever deleted.
#[derive(Default)]
struct Staging {
    /// Checked sources and steps (their quarantined rows).
    inputs: Vec<CheckedInput>,
    /// Products written, in spec order, with the time each took.
    products: Vec<(StagedProduct, Duration)>,
    /// How many of `products` are committed (their files belong to the table now).
    committed_products: usize,
    /// How many quarantine tables are committed, in [`Staging::quarantines`] order.
    committed_quarantines: usize,
}

impl Staging {
    /// The quarantined rows of the inputs, then of the committed products, in commit order.
    fn quarantines(&self) -> impl Iterator<Item = &(QuarantineTarget, StagedFiles)> {
        self.inputs
            .iter()
            .filter_map(|i| i.quarantine.as_ref())
            .chain(
                self.products[..self.committed_products]
                    .iter()
                    .filter_map(|(p, _)| p.quarantine.as_ref()),
            )
    }

    /// Deletes every uncommitted file (best effort; a file that cannot be deleted is logged
    /// and never referenced by a Delta log).
    async fn discard(&self) {
        for (quarantine, files) in self.quarantines().skip(self.committed_quarantines) {
            discard_quarantine(quarantine, files).await;
        }
        // An uncommitted product's own quarantined rows go with it.
        for (product, _) in &self.products[self.committed_products..] {
            discard_staged(product).await;
        }
    }
}

/// Plans, checks, stages and commits the run; on failure every file it wrote and did not
/// commit is removed.
async fn execute_run(run: &RunContext<'_>, ledger: &mut RunLedger) -> Result<Vec<ProductOutcome>> {
    let mut staging = Staging::default();
    let outcome = run_phases(run, ledger, &mut staging).await;
    if outcome.is_err() {
        staging.discard().await;
    }
    outcome
}

async fn run_phases(
    run: &RunContext<'_>,
    ledger: &mut RunLedger,
    staging: &mut Staging,
) -> Result<Vec<ProductOutcome>> {
    let (cancel, config, loaded) = (run.cancel, run.config, run.loaded);
    run.observer.on_event(RunEvent::Planning);
    let models = cancel.guard(job_models(loaded, config)).await?;
    let ctx = match (run.backend, &config.cluster) {
        (RunBackend::Cluster, Some(address)) => {
            cancel
                .guard(cluster::connect_session(address, config, models.clone()))
                .await?
        }
        _ => new_session_with_models(config, models.clone())?,
    };
    let (plan, identities) = cancel
        .guard(plan_loaded_job(&ctx, loaded, run.backend.placement()))
        .await?;
    ledger.inputs = identities;
    ledger.source_schemas = source_schemas(&ctx, loaded).await;
    let lineages = product_lineages(loaded, &plan, &ledger.inputs, models.as_ref())?;

    check_inputs(run, &ctx, &plan, ledger, staging).await?;
    if let Some(error) = blocking_checks(&ledger.checks) {
        return Err(error);
    }
    let prepared = cancel
        .guard(prepare_run_products(
            &ctx,
            loaded,
            config,
            &plan,
            run.run_id,
            run.started_at,
        ))
        .await?;
    stage_products(run, &ctx, prepared, ledger, staging).await?;
    // The last point where the run may be cancelled: from here on, every commit is made.
    if let Some(error) = blocking_checks(&ledger.checks).or_else(|| cancel.check().err()) {
        return Err(error);
    }
    commit_all(run, ledger, staging, lineages).await
}

/// Checks on sources and steps: one pass over each checked input, publishing nothing.
async fn check_inputs(
    run: &RunContext<'_>,
    ctx: &SessionContext,
    plan: &JobPlan,
    ledger: &mut RunLedger,
    staging: &mut Staging,
) -> Result<()> {
    for checked in &plan.checked_inputs {
        run.observer.on_event(RunEvent::Checking {
            dataset: checked.dataset.clone(),
        });
        let checks = run
            .cancel
            .guard(prepare_checks(
                ctx,
                run.loaded,
                run.config,
                checked.clone(),
                None,
                run.run_id,
                run.started_at,
            ))
            .await?;
        let quarantine = quarantine_for(run.loaded, &checks).await?;
        let input = match run.backend {
            RunBackend::Cluster => {
                cluster::check_input_on_cluster(ctx, checks, quarantine, run.cancel).await?
            }
            RunBackend::Embedded => check_input(ctx, checks, quarantine, run.cancel).await?,
        };
        ledger.checks.extend(input.results.iter().cloned());
        staging.inputs.push(input);
    }
    Ok(())
}

/// Phase 1: computes every product and writes its files, committing nothing.
async fn stage_products(
    run: &RunContext<'_>,
    ctx: &SessionContext,
    prepared: Vec<PreparedProduct>,
    ledger: &mut RunLedger,
    staging: &mut Staging,
) -> Result<()> {
    for product in prepared {
        let rows = Arc::new(AtomicU64::new(0));
        run.observer.on_event(RunEvent::Writing {
            product: product.target.name.clone(),
            rows: Arc::clone(&rows),
        });
        let clock = Instant::now();
        let done = match run.backend {
            RunBackend::Cluster => {
                cluster::stage_on_cluster(ctx, product, rows, run.cancel).await?
            }
            RunBackend::Embedded => stage_product(ctx, product, rows, run.cancel).await?,
        };
        ledger.checks.extend(done.check_results.iter().cloned());
        staging.products.push((done, clock.elapsed()));
    }
    Ok(())
}

/// The commit record of a run's products (`product` is `None` for a quarantine table).
fn commit_metadata(
    run: &RunContext<'_>,
    inputs: &[InputIdentity],
    product: Option<&str>,
    rows: u64,
    checks: Vec<CheckSummary>,
    lineage: Option<ProductLineage>,
) -> CommitMetadata {
    let loaded = run.loaded;
    CommitMetadata {
        operation: "run".to_string(),
        run_id: run.run_id.to_string(),
        job: Some(loaded.job.name().to_string()),
        product: product.map(str::to_string),
        spec_hash: Some(loaded.job.spec_hash.clone()),
        profile: loaded.job.profile.clone(),
        vars: loaded.job.vars.clone(),
        engine_version: ENGINE_VERSION.to_string(),
        rows_written: Some(rows),
        inputs: inputs.to_vec(),
        restored_version: None,
        freshness_sla_seconds: product
            .and_then(|name| loaded.job.spec.products.iter().find(|p| p.name == name))
            .and_then(|spec| freshness_sla(spec).ok().flatten())
            .map(|sla| sla.as_secs()),
        checks,
        models: lineage
            .as_ref()
            .map(ProductLineage::models)
            .unwrap_or_default(),
        lineage,
    }
}

/// Phase 2: one commit per product, then the quarantined rows.
async fn commit_all(
    run: &RunContext<'_>,
    ledger: &mut RunLedger,
    staging: &mut Staging,
    lineages: Vec<ProductLineage>,
) -> Result<Vec<ProductOutcome>> {
    run.observer.on_event(RunEvent::Committing);
    let input_checks: Vec<CheckSummary> = staging
        .inputs
        .iter()
        .flat_map(|i| i.results.iter().map(CheckSummary::from))
        .collect();
    let mut outcomes = Vec::with_capacity(staging.products.len());
    for (index, (product, duration)) in staging.products.iter().enumerate() {
        let target = &product.prepared.target;
        let mut checks = input_checks.clone();
        checks.extend(product.check_results.iter().map(CheckSummary::from));
        let lineage = lineages.get(index).cloned().unwrap_or_default();
        let metadata = commit_metadata(
            run,
            &ledger.inputs,
            Some(&target.name),
            product.rows,
            checks,
            Some(lineage.clone()),
        );
        let version = commit_product(product, &metadata)
            .await
            .map_err(|error| partially_committed(&target.name, error, &outcomes))?;
        staging.committed_products = index + 1;
        ledger.versions.insert(target.name.clone(), version);
        outcomes.push(ProductOutcome {
            name: target.name.clone(),
            table: target.url.clone(),
            version,
            rows: product.rows,
            files: product.adds.len(),
            bytes: product.bytes,
            duration: *duration,
            quarantined: product.quarantine.as_ref().map_or(0, |(_, f)| f.rows),
            schema: product.prepared.schema.clone(),
            lineage,
        });
    }
    // Every product is committed: [`Staging::quarantines`] lists them all.
    let quarantines = staging.quarantines().count();
    for index in 0..quarantines {
        if let Some((quarantine, files)) = staging.quarantines().nth(index) {
            let metadata = commit_metadata(run, &ledger.inputs, None, files.rows, Vec::new(), None);
            commit_quarantine(quarantine, files, &metadata)
                .await
                .map_err(|error| partially_committed(&quarantine.target.name, error, &outcomes))?;
        }
        staging.committed_quarantines = index + 1;
    }
    Ok(outcomes)
}

/// Each product's column lineage, in spec order. A product whose checks drop or quarantine
/// rows is described by the plan that filters them, so those checks appear as filters.
fn product_lineages(
    loaded: &LoadedJob,
    plan: &JobPlan,
    identities: &[InputIdentity],
    models: &dyn ModelResolver,
) -> Result<Vec<ProductLineage>> {
    let options = lineage_options(&loaded.job.spec.lineage.masking_functions);
    plan.products
        .iter()
        .map(|named| {
            let published = match &named.checks {
                Some(checked) if checked.filters_rows() => checked.filtered_plan()?,
                _ => named.plan.clone(),
            };
            let extracted = extract_lineage(&published, &options)
                .map_err(|e| EngineError::product(&named.name, e.to_string()))?;
            ProductLineage::resolve(&extracted, identities, models)
        })
        .collect()
}

/// Each registered source's schema, by name.
async fn source_schemas(ctx: &SessionContext, loaded: &LoadedJob) -> BTreeMap<String, SchemaRef> {
    let mut schemas = BTreeMap::new();
    for name in loaded.job.spec.sources.keys() {
        if let Ok(provider) = ctx.table_provider(name.as_str()).await {
            schemas.insert(name.clone(), provider.schema());
        }
    }
    schemas
}

/// The COMPLETE event of a successful run.
fn complete_event(
    loaded: &LoadedJob,
    run: &RunDescription<'_>,
    ledger: &RunLedger,
    products: &[ProductOutcome],
    at: DateTime<Utc>,
) -> openlineage::RunEvent {
    let urls: Vec<(Option<Url>, &InputIdentity)> = ledger
        .inputs
        .iter()
        .map(|identity| {
            let url = match identity {
                InputIdentity::Delta { url, .. } | InputIdentity::Files { url, .. } => {
                    Url::parse(url).ok()
                }
            };
            (url, identity)
        })
        .collect();
    let sources: Vec<ReadSource<'_>> = urls
        .iter()
        .filter_map(|(url, identity)| {
            Some(ReadSource {
                url: url.as_ref()?,
                version: match identity {
                    InputIdentity::Delta { version, .. } => Some(*version),
                    InputIdentity::Files { .. } => None,
                },
                schema: ledger
                    .source_schemas
                    .get(identity.source())
                    .map(|s| s.as_ref()),
            })
        })
        .collect();
    let published: Vec<PublishedProduct<'_>> = products
        .iter()
        .map(|p| PublishedProduct {
            table: &p.table,
            version: p.version,
            schema: p.schema.as_ref(),
            lineage: &p.lineage,
            checks: ledger
                .checks
                .iter()
                .filter(|c| c.dataset == p.name)
                .collect(),
            description: loaded
                .job
                .product(&p.name)
                .and_then(|spec| spec.description.as_deref()),
            rows: p.rows,
            bytes: p.bytes,
            files: p.files as u64,
        })
        .collect();
    run.complete(at, &sources, &published)
}

/// Emits an OpenLineage event; a problem is a warning, never a failed run.
async fn emit(events: &EventSink, event: &openlineage::RunEvent) {
    if let Err(problem) = events.emit(event).await {
        tracing::warn!("{problem}");
    }
}

/// Delta has no multi-table transactions: when a commit fails after earlier products were
/// committed, say exactly which, so the operator can roll them back.
fn partially_committed(name: &str, error: EngineError, outcomes: &[ProductOutcome]) -> EngineError {
    if outcomes.is_empty() {
        return error;
    }
    let committed = outcomes
        .iter()
        .map(|o| format!("{} version {}", o.name, o.version))
        .collect::<Vec<_>>()
        .join(", ");
    EngineError::product(
        name,
        format!("{error} (already committed by this run: {committed})"),
    )
}

/// The error stopping a run when checks with action `fail` did not pass.
fn blocking_checks(results: &[CheckResult]) -> Option<EngineError> {
    let blocking: Vec<String> = results
        .iter()
        .filter(|r| r.blocks_run())
        .map(|r| {
            let detail = match r.observed {
                Some(observed) => format!("observed {observed} ({})", r.description),
                None if r.kind == CheckKind::Schema => r.message.clone().unwrap_or_default(),
                None if r.evaluated == 0 || !r.kind.is_row_level() => {
                    r.message.clone().unwrap_or_else(|| r.description.clone())
                }
                None => format!(
                    "{} of {} rows failed ({:.2}%{}), {} NULL skipped",
                    r.failed,
                    r.evaluated,
                    r.failed as f64 * 100.0 / r.evaluated as f64,
                    r.message
                        .as_deref()
                        .map(|m| format!(", {m}"))
                        .unwrap_or_default(),
                    r.null_skipped
                ),
            };
            format!("check '{}' on '{}' failed: {detail}", r.check, r.dataset)
        })
        .collect();
    (!blocking.is_empty()).then(|| EngineError::ChecksFailed {
        message: format!("{}; nothing was committed", blocking.join("; ")),
        results: results.to_vec(),
    })
}

/// Measures what a dataset's checks need before its pass: drift references and, for anomaly
/// checks, the history of their observed values.
async fn prepare_checks(
    ctx: &SessionContext,
    loaded: &LoadedJob,
    config: &EngineConfig,
    checked: CheckedDataset,
    existing: Option<&deltalake::DeltaTable>,
    run_id: &str,
    started_at: DateTime<Utc>,
) -> Result<Arc<DatasetCheckRun>> {
    let anomaly_checks: Vec<String> = checked
        .checks
        .iter()
        .filter(|c| matches!(c.evaluation, Evaluation::Anomaly { .. }))
        .map(|c| c.name.clone())
        .collect();
    let dataset = checked.dataset.clone();
    let history = async {
        if anomaly_checks.is_empty() {
            Ok(BTreeMap::new())
        } else {
            observed_history(
                &loaded.warehouse,
                loaded.job.name(),
                &dataset,
                &anomaly_checks,
                config,
            )
            .await
        }
    };
    let run = DatasetCheckRun::prepare(
        ctx,
        checked,
        ProductHistory { existing },
        history,
        run_id,
        started_at,
    )
    .await?;
    Ok(Arc::new(run))
}

/// The quarantine table of a dataset whose checks quarantine rows.
async fn quarantine_for(
    loaded: &LoadedJob,
    checks: &DatasetCheckRun,
) -> Result<Option<QuarantineTarget>> {
    if !checks.checked.quarantines_rows() {
        return Ok(None);
    }
    let dataset = &checks.checked.dataset;
    let url = join_folder(&loaded.warehouse, &format!("{QUARANTINE_FOLDER}/{dataset}"))?;
    let dataset_schema = delta_compatible_schema(
        dataset,
        &checks.checked.plan,
        checks.checked.dataset_columns,
    )?;
    prepare_quarantine(url, dataset, &dataset_schema)
        .await
        .map(Some)
}

/// Products prepared to run, each with its checks attached.
async fn prepare_run_products(
    ctx: &SessionContext,
    loaded: &LoadedJob,
    config: &EngineConfig,
    plan: &JobPlan,
    run_id: &str,
    started_at: DateTime<Utc>,
) -> Result<Vec<PreparedProduct>> {
    let mut prepared = prepare_products(loaded, plan).await?;
    for (product, named) in prepared.iter_mut().zip(&plan.products) {
        let Some(checked) = &named.checks else {
            continue;
        };
        let checks = prepare_checks(
            ctx,
            loaded,
            config,
            checked.clone(),
            product.existing.as_ref(),
            run_id,
            started_at,
        )
        .await?;
        product.quarantine = quarantine_for(loaded, &checks).await?;
        product.checks = Some(checks);
    }
    Ok(prepared)
}

/// Registers the job's sources in `ctx` and plans its steps and products.
pub async fn plan_loaded_job(
    ctx: &SessionContext,
    loaded: &LoadedJob,
    placement: CheckPlacement,
) -> Result<(JobPlan, Vec<InputIdentity>)> {
    let identities = register_sources(ctx, &loaded.job).await?;
    let plan = plan_job(ctx, &loaded.job, placement).await?;
    Ok((plan, identities))
}

async fn prepare_products(loaded: &LoadedJob, plan: &JobPlan) -> Result<Vec<PreparedProduct>> {
    let targets = loaded.product_targets()?;
    let mut prepared = Vec::with_capacity(targets.len());
    for (target, product) in targets.into_iter().zip(&plan.products) {
        let (plan, columns) = match &product.checks {
            Some(checked) => (checked.plan.clone(), Some(checked.dataset_columns)),
            None => (product.plan.clone(), None),
        };
        prepared.push(prepare_product(target, plan, columns).await?);
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

/// The job's inline models with its warehouse's model registry behind them.
pub async fn job_models(loaded: &LoadedJob, config: &EngineConfig) -> Result<Arc<JobModels>> {
    let registry = Registry::load(&loaded.warehouse, config).await?;
    Ok(Arc::new(
        loaded.models.with_registry(&loaded.warehouse, registry),
    ))
}

/// A source's or step's check pass as `plan` reports it.
#[derive(Debug, Clone)]
pub struct CheckPassReport {
    /// The checked source or step.
    pub dataset: String,
    /// The optimized logical plan: the dataset's columns, then one per check input.
    pub logical_plan: String,
    /// The physical plan an embedded run executes (check predicates as evaluated in the pass).
    pub physical_plan: String,
}

/// What planning a job found: its products and the check passes of its sources and steps.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// Each product, in spec order.
    pub products: Vec<ProductReport>,
    /// Each checked source and step, in the order they run (sources first).
    pub check_passes: Vec<CheckPassReport>,
}

/// The optimized logical plan and the physical plan of `plan` as an embedded run executes it
/// (with `dataset_columns` leading columns and check columns after them, when checked).
async fn displayed_plans(
    ctx: &SessionContext,
    name: &str,
    plan: &LogicalPlan,
    dataset_columns: Option<usize>,
) -> Result<(String, String)> {
    let state = ctx.state();
    let optimized = state.optimize(plan).map_err(|e| {
        EngineError::product(name, format!("cannot optimize: {}", e.strip_backtrace()))
    })?;
    let cannot_plan = |e: DataFusionError| {
        EngineError::product(name, format!("cannot plan: {}", e.strip_backtrace()))
    };
    let mut physical = state
        .create_physical_plan(plan)
        .await
        .map_err(cannot_plan)?;
    if let Some(columns) = dataset_columns {
        physical = rewrite_check_projection(physical, columns).map_err(cannot_plan)?;
    }
    Ok((
        optimized.display_indent().to_string(),
        displayable(physical.as_ref()).indent(true).to_string(),
    ))
}

/// Plans every statement of the job against its sources' schemas and every product against
/// its existing table, without reading data.
pub async fn validate_job(loaded: &LoadedJob, config: &EngineConfig) -> Result<JobReport> {
    let models = job_models(loaded, config).await?;
    let ctx = new_session_with_models(config, models.clone())?;
    let (plan, identities) = plan_loaded_job(&ctx, loaded, CheckPlacement::InProcess).await?;
    // Lineage is part of every commit: a plan it cannot describe is found here, not mid-run.
    product_lineages(loaded, &plan, &identities, models.as_ref())?;
    let prepared = prepare_products(loaded, &plan).await?;
    let mut reports = Vec::with_capacity(prepared.len());
    for (product, named) in prepared.into_iter().zip(&plan.products) {
        let name = product.target.name.clone();
        let checked_columns = named.checks.as_ref().map(|c| c.dataset_columns);
        let (logical_plan, physical_plan) =
            displayed_plans(&ctx, &name, &product.plan, checked_columns).await?;
        reports.push(ProductReport {
            table: display_location(&product.target.url),
            columns: product
                .schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().to_string()))
                .collect(),
            table_exists: product.existing.is_some(),
            logical_plan,
            physical_plan,
            name,
        });
    }
    let mut check_passes = Vec::with_capacity(plan.checked_inputs.len());
    for checked in &plan.checked_inputs {
        let (logical_plan, physical_plan) = displayed_plans(
            &ctx,
            &checked.dataset,
            &checked.plan,
            Some(checked.dataset_columns),
        )
        .await?;
        check_passes.push(CheckPassReport {
            dataset: checked.dataset.clone(),
            logical_plan,
            physical_plan,
        });
    }
    Ok(JobReport {
        products: reports,
        check_passes,
    })
}
