//! Scheduled batch runs: the `lakeforge schedule` daemon, its operations endpoint, and
//! `lakeforge status`.
//!
//! - [`scheduler`]: when each job runs (cron, new input versions), retries, timeouts,
//!   catch-up, shutdown; written against traits so it is tested in paused time.
//! - [`store`]: the trigger log `WAREHOUSE/_lakeforge/schedule`, the daemon's memory.
//! - [`runner`]: runs attempts embedded, like `lakeforge run`.
//! - [`loader`]: job files and folders, reloaded on change.
//! - [`http`]: `/health`, `/metrics`, `/api/...`.
//! - [`status`]: the report shared by the API and `lakeforge status`.
//! - [`clock`]: the system clock and a tokio-driven one for tests.

pub mod clock;
pub mod http;
pub mod loader;
pub mod runner;
pub mod scheduler;
pub mod status;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::schedule::clock::{Clock, SystemClock};
use crate::schedule::loader::JobFiles;
use crate::schedule::runner::EmbeddedRunner;
use crate::schedule::scheduler::{Scheduler, SchedulerOptions, SchedulerSnapshot};
use crate::schedule::status::{
    JobStatus, LastRun, ProductFreshness, SlaSource, StatusReport, product_freshness,
};
use crate::schedule::store::WarehouseTriggerStore;

/// The default address of the operations endpoint (loopback only).
pub const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:9464";

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Job files and folders of job files.
    pub paths: Vec<PathBuf>,
    /// Where the operations endpoint listens; `None` for no endpoint.
    pub http: Option<SocketAddr>,
    /// How often job files are checked for edits and `after` inputs for new versions.
    pub poll_interval: Duration,
    /// How long in-flight runs may finish after a stop signal before they are cancelled.
    pub grace: Duration,
    /// The engine settings every run uses.
    pub config: EngineConfig,
    /// The `[profiles.NAME]` every job runs with (a job without it fails to load).
    pub profile: Option<String>,
}

/// What the daemon tells its caller once it is up.
#[derive(Debug, Clone)]
pub struct DaemonReady {
    /// Jobs scheduled.
    pub jobs: usize,
    /// The endpoint's actual address (the OS picks the port when given port 0).
    pub http: Option<SocketAddr>,
}

/// The running daemon, shared with the endpoint's handlers.
pub struct Daemon {
    /// The scheduler with production runner, store and clock.
    pub scheduler: Scheduler<EmbeddedRunner, WarehouseTriggerStore, SystemClock>,
}

impl Daemon {
    /// The status report: the scheduler's view plus each product's freshness.
    pub async fn report(&self, snapshot: &SchedulerSnapshot) -> StatusReport {
        StatusReport {
            generated_at: self.scheduler.clock().now(),
            jobs: job_statuses(snapshot),
            products: self.freshness(snapshot, None).await,
        }
    }

    /// The freshness of every product (of `job` only, when given); reads each product's log.
    pub async fn freshness(
        &self,
        snapshot: &SchedulerSnapshot,
        job: Option<&str>,
    ) -> Vec<ProductFreshness> {
        let now = self.scheduler.clock().now();
        let mut products = Vec::new();
        for (name, view) in &snapshot.jobs {
            if job.is_some_and(|job| job != name) {
                continue;
            }
            for product in &view.products {
                products.push(
                    product_freshness(
                        name,
                        &product.name,
                        &product.table,
                        SlaSource::Spec(product.freshness_sla),
                        now,
                    )
                    .await,
                );
            }
        }
        products
    }
}

/// Each job as the report shows it, from the scheduler's view alone (no I/O).
pub fn job_statuses(snapshot: &SchedulerSnapshot) -> Vec<JobStatus> {
    snapshot
        .jobs
        .iter()
        .map(|(name, view)| JobStatus {
            name: name.clone(),
            spec_path: Some(view.spec_path.clone()),
            schedule: view.schedule.clone(),
            timezone: Some(view.timezone.clone()),
            after: view.after.iter().map(|a| a.name.clone()).collect(),
            next_run: view.next_run,
            running: view.running.clone(),
            last_run: view.last_run.as_ref().map(|last| LastRun {
                run_id: last.run_id.clone(),
                status: last.status.as_str().to_string(),
                started_at: Some(last.started_at),
                ended_at: Some(last.ended_at),
                error: last.error.clone(),
            }),
            runs: snapshot
                .metrics
                .runs
                .iter()
                .filter(|((job, _), _)| job == name)
                .map(|((_, status), count)| (status.to_string(), *count))
                .collect(),
            spec_error: view.spec_error.clone(),
        })
        .collect()
}

/// Runs the daemon until `stop` completes: loads every job file (any error is fatal here),
/// starts the endpoint, reloads files every poll interval, then shuts down gracefully.
///
/// `stop` is called for each stop signal: the first stops new runs and starts the grace
/// period, a second one cancels the runs in flight at once.
pub async fn run_daemon<Stop: Future<Output = ()> + Send>(
    options: DaemonOptions,
    mut stop: impl FnMut() -> Stop,
    on_ready: impl FnOnce(&DaemonReady),
) -> Result<()> {
    let scheduler = Scheduler::new(
        EmbeddedRunner::new(options.config.clone()),
        WarehouseTriggerStore::new(options.config.clone()),
        SystemClock,
        SchedulerOptions {
            poll_interval: options.poll_interval,
        },
    );
    let mut files = JobFiles::new(options.paths.clone(), options.profile.clone());
    let jobs = files.load_all(&scheduler).await?;
    let daemon = Arc::new(Daemon { scheduler });

    let endpoint_stop = tokio_util::sync::CancellationToken::new();
    let mut endpoint = None;
    let mut http = None;
    if let Some(address) = options.http {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| EngineError::Io {
                context: format!("cannot listen on {address} for the operations endpoint"),
                source,
            })?;
        http = listener.local_addr().ok();
        let app = http::router(Arc::clone(&daemon));
        let stopped = endpoint_stop.clone();
        endpoint = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        }));
    }
    on_ready(&DaemonReady { jobs, http });

    let first_stop = stop();
    tokio::pin!(first_stop);
    loop {
        tokio::select! {
            _ = &mut first_stop => break,
            _ = tokio::time::sleep(options.poll_interval) => {
                for change in files.reload(&daemon.scheduler).await {
                    tracing::warn!("{change}");
                }
            }
        }
    }
    let running = daemon
        .scheduler
        .snapshot()
        .jobs
        .values()
        .filter(|j| j.running.is_some())
        .count();
    tracing::warn!(
        running,
        "stopping: no new runs; in-flight runs have {} to finish",
        scheduler::humanize(options.grace)
    );
    daemon.scheduler.shutdown(options.grace, stop()).await;
    endpoint_stop.cancel();
    if let Some(endpoint) = endpoint {
        match tokio::time::timeout(Duration::from_secs(5), endpoint).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the operations endpoint failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("the operations endpoint did not stop in time"),
        }
    }
    Ok(())
}
