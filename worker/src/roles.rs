//! Starting the coordinator and workers, and connecting a client session to them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::RuntimeProducer;
use ballista_core::config::BALLISTA_ADAPTIVE_PLANNER_ENABLED;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::physical_planner::ExtensionPlanner;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use extension_planning::QueryPlannerWithExtensions;

use crate::codec::{LakeforgeCodec, LayeredLogicalCodec, LayeredPhysicalCodec};
use crate::{LAKEFORGE_VERSION, Result, WorkerError};

/// How long `connect` waits for the coordinator to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `connect` asks a coordinator without workers again.
const READINESS_POLL: Duration = Duration::from_millis(200);

/// What the engine adds to every cluster role: how its plan nodes travel, the functions every
/// session must know, and how its logical nodes become execution plans.
#[derive(Clone)]
pub struct ClusterExtensions {
    /// Lakeforge's codec (layered over Ballista's in every role).
    pub codec: Arc<dyn LakeforgeCodec>,
    /// Scalar functions for the coordinator's and workers' registries.
    pub scalar_functions: Vec<Arc<ScalarUDF>>,
    /// Aggregate functions for the coordinator's and workers' registries.
    pub aggregate_functions: Vec<Arc<AggregateUDF>>,
    /// Planners for Lakeforge's logical extension nodes (used by the coordinator).
    pub extension_planners: Vec<Arc<dyn ExtensionPlanner + Send + Sync>>,
    /// Where every role finds the object store of a URL (the engine's stores, configured the
    /// same way in every process), so sources and products on object storage need no shared
    /// filesystem.
    pub object_stores: Arc<dyn ObjectStoreRegistry>,
}

impl std::fmt::Debug for ClusterExtensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterExtensions")
            .field("codec", &self.codec)
            .field("scalar_functions", &self.scalar_functions.len())
            .field("aggregate_functions", &self.aggregate_functions.len())
            .field("extension_planners", &self.extension_planners.len())
            .finish()
    }
}

/// A coordinator's address as the client gives it: `df://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAddress {
    /// Host name or IP.
    pub host: String,
    /// The coordinator's port.
    pub port: u16,
}

impl ClusterAddress {
    /// Parses `df://HOST:PORT` (or plain `HOST:PORT`).
    pub fn parse(text: &str) -> Result<ClusterAddress> {
        let invalid = |message: &str| WorkerError::InvalidAddress {
            what: "coordinator address",
            text: text.to_string(),
            message: message.to_string(),
        };
        let rest = text.strip_prefix("df://").unwrap_or(text);
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected df://HOST:PORT, e.g. df://127.0.0.1:50050"))?;
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("the port must be a number from 1 to 65535"))?;
        Ok(ClusterAddress {
            host: host.to_string(),
            port,
        })
    }

    /// `df://HOST:PORT`, the form Ballista's client takes.
    pub fn url(&self) -> String {
        format!("df://{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for ClusterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How to run the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// Where the scheduler's gRPC service listens (port 0: one the OS picks).
    pub bind: SocketAddr,
    /// A worker silent for this long is considered lost (its tasks are re-run elsewhere).
    pub worker_timeout: Duration,
}

/// Runs the coordinator until `stop` resolves. `on_ready` gets the bound address once it
/// listens.
pub async fn run_coordinator(
    options: CoordinatorOptions,
    extensions: ClusterExtensions,
    on_ready: impl FnOnce(SocketAddr),
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let role_error = |message: String| WorkerError::Role {
        role: "coordinator",
        message,
    };
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|e| role_error(format!("cannot listen on {}: {e}", options.bind)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| role_error(format!("cannot read the bound address: {e}")))?;

    let session_extensions = extensions.clone();
    let worker_timeout = options.worker_timeout.as_secs().max(1);
    let mut config = SchedulerConfig {
        bind_host: bound.ip().to_string(),
        bind_port: bound.port(),
        external_host: bound.ip().to_string(),
        executor_timeout_seconds: worker_timeout,
        no_executors_grace_period_seconds: worker_timeout,
        expire_dead_executor_interval_seconds: worker_timeout.clamp(1, 15),
        ..SchedulerConfig::default()
    };
    config.override_session_builder = Some(Arc::new(move |session_config: SessionConfig| {
        let state = default_session_builder(session_config)?;
        let planner =
            QueryPlannerWithExtensions::new(session_extensions.extension_planners.clone());
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::clone(&session_extensions.object_stores))
            .build_arc()?;
        let mut state = SessionStateBuilder::new_from_existing(state)
            .with_query_planner(Arc::new(planner))
            .with_runtime_env(runtime)
            .build();
        for function in &session_extensions.scalar_functions {
            state.register_udf(Arc::clone(function))?;
        }
        for function in &session_extensions.aggregate_functions {
            state.register_udaf(Arc::clone(function))?;
        }
        Ok(state)
    }));
    config.override_logical_codec = Some(Arc::new(LayeredLogicalCodec::new(Arc::clone(
        &extensions.codec,
    ))));
    config.override_physical_codec = Some(Arc::new(LayeredPhysicalCodec::new(Arc::clone(
        &extensions.codec,
    ))));
    config
        .validate()
        .map_err(|e| role_error(format!("invalid configuration: {e}")))?;
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| role_error(e.to_string()))?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(|e| role_error(e.to_string()))?;
    tracing::info!(
        "Lakeforge {LAKEFORGE_VERSION} coordinator (Ballista {}) listening on {bound}",
        crate::BALLISTA_VERSION
    );
    on_ready(bound);
    tokio::select! {
        served = start_grpc_service_with_listener(listener, scheduler) => {
            served.map_err(|e| role_error(e.to_string()))
        }
        () = stop => Ok(()),
    }
}

/// How to run a worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The coordinator to register with.
    pub coordinator: ClusterAddress,
    /// The IP address the worker listens on.
    pub bind_host: String,
    /// The host name or IP others reach it at.
    pub advertised_host: String,
    /// Port of its Arrow Flight service (shuffle data).
    pub flight_port: u16,
    /// Port of its gRPC service (tasks from the coordinator).
    pub grpc_port: u16,
    /// Tasks it runs at once.
    pub slots: usize,
    /// Where shuffle files go (a temporary folder when unset).
    pub work_dir: Option<PathBuf>,
    /// Memory for its tasks, shared by its slots (70% of the machine's when unset).
    pub memory_limit: Option<u64>,
    /// How often it reports to the coordinator.
    pub heartbeat: Duration,
}

/// Runs a worker until SIGINT/SIGTERM (handled by Ballista's executor, which tells the
/// coordinator it is leaving and lets running tasks finish).
pub async fn run_worker(options: WorkerOptions, extensions: ClusterExtensions) -> Result<()> {
    let role_error = |message: String| WorkerError::Role {
        role: "worker",
        message,
    };
    // Refuse an unreachable coordinator up front, with the address in the message.
    probe(&options.coordinator).await?;
    let mut registry = BallistaFunctionRegistry::default();
    for function in &extensions.scalar_functions {
        registry
            .scalar_functions
            .insert(function.name().to_string(), Arc::clone(function));
    }
    for function in &extensions.aggregate_functions {
        registry
            .aggregate_functions
            .insert(function.name().to_string(), Arc::clone(function));
    }
    let defaults = ExecutorProcessConfig::default();
    // Ballista makes a temporary work folder when none is given, but a runtime of our own (for
    // the object stores) must name it: make it here, removed when the worker stops.
    let work_dir = WorkDir::for_worker(options.work_dir.as_deref())?;
    let temp_dir = work_dir.path.clone();
    let object_stores = Arc::clone(&extensions.object_stores);
    let runtime_producer: RuntimeProducer = Arc::new(move |_config: &SessionConfig| {
        Ok(Arc::new(
            RuntimeEnvBuilder::new()
                .with_temp_file_path(temp_dir.clone())
                .with_object_store_registry(Arc::clone(&object_stores))
                .build()?,
        ))
    });
    let config = ExecutorProcessConfig {
        executor_id: format!("lakeforge-{LAKEFORGE_VERSION}-{}", defaults.executor_id),
        bind_host: options.bind_host.clone(),
        external_host: Some(options.advertised_host.clone()),
        port: options.flight_port,
        grpc_port: options.grpc_port,
        scheduler_host: options.coordinator.host.clone(),
        scheduler_port: options.coordinator.port,
        scheduler_connect_timeout_seconds: 10,
        vcores: options.slots.max(1),
        work_dir: Some(work_dir.path.display().to_string()),
        override_runtime_producer: Some(runtime_producer),
        executor_heartbeat_interval_seconds: options.heartbeat.as_secs().max(1),
        memory_pool_size: options.memory_limit,
        print_thread_info: false,
        override_function_registry: Some(Arc::new(registry)),
        override_logical_codec: Some(Arc::new(LayeredLogicalCodec::new(Arc::clone(
            &extensions.codec,
        )))),
        override_physical_codec: Some(Arc::new(LayeredPhysicalCodec::new(Arc::clone(
            &extensions.codec,
        )))),
        ..defaults
    };
    tracing::info!(
        "Lakeforge {LAKEFORGE_VERSION} worker {} (flight {}:{}, grpc {}:{}, {} slots) joining \
         the coordinator at {}",
        config.executor_id,
        options.advertised_host,
        config.port,
        options.advertised_host,
        config.grpc_port,
        config.vcores,
        options.coordinator
    );
    let stopped = start_executor_process(Arc::new(config))
        .await
        .map_err(|e| role_error(e.to_string()));
    drop(work_dir);
    stopped
}

/// A worker's folder for shuffle and spill files: the one given, or a temporary one that is
/// removed when the worker stops.
struct WorkDir {
    path: PathBuf,
    temporary: bool,
}

impl WorkDir {
    fn for_worker(given: Option<&std::path::Path>) -> Result<WorkDir> {
        let (path, temporary) = match given {
            Some(dir) => (dir.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("lakeforge-worker-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&path).map_err(|e| WorkerError::Role {
            role: "worker",
            message: format!("cannot create the work folder {}: {e}", path.display()),
        })?;
        Ok(WorkDir { path, temporary })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A client session whose queries run on the cluster at `address`: planned here, executed on
/// the workers. The engine registers its functions on the returned context (Ballista rebuilds
/// the function map when a session connects, so they must be added afterwards).
///
/// Waits up to `worker_wait` for at least one worker to be registered: Ballista queues a job
/// on a coordinator without workers for as long as it takes, so without this bound a run
/// against an empty cluster would never end. (Ballista itself fails running jobs when the
/// last worker is lost, after the coordinator's worker timeout.)
pub async fn connect(
    address: &ClusterAddress,
    config: SessionConfig,
    extensions: &ClusterExtensions,
    worker_wait: Duration,
) -> Result<SessionContext> {
    probe(address).await?;
    wait_for_workers(address, worker_wait).await?;
    let runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::clone(&extensions.object_stores))
        .build_arc()
        .map_err(|e| WorkerError::Role {
            role: "client",
            message: e.to_string(),
        })?;
    let state = SessionStateBuilder::new()
        .with_runtime_env(runtime)
        .with_config(
            client_settings(config)
                .with_ballista_logical_extension_codec(Arc::new(LayeredLogicalCodec::new(
                    Arc::clone(&extensions.codec),
                )))
                .with_ballista_physical_extension_codec(Arc::new(LayeredPhysicalCodec::new(
                    Arc::clone(&extensions.codec),
                ))),
        )
        .with_default_features()
        .build();
    SessionContext::remote_with_state(&address.url(), state)
        .await
        .map_err(|e| WorkerError::Role {
            role: "client",
            message: e.to_string(),
        })
}

/// The client session's settings: `config` upgraded for Ballista, with the engine's join
/// choice kept and Ballista's adaptive planner off.
fn client_settings(config: SessionConfig) -> SessionConfig {
    // Ballista's upgrade turns `prefer_hash_join` off unless it differs from DataFusion's
    // default (on), so it cannot tell "the engine asks for hash joins" from "unset". The
    // engine's choice is applied again after the upgrade: hash joins unless the user asked for
    // sort-merge joins (which spill), as in embedded runs.
    let prefer_hash_join = config.options().optimizer.prefer_hash_join;
    // Ballista 55's adaptive planner (on by default) re-plans stages at run time. Its join
    // selection loops forever, one single-task stage after another, on a join whose other side
    // is empty (a `unique` check with no duplicates); with only join selection turned off it
    // plans sort-merge joins over inputs that are not co-partitioned. Its authors also list
    // executor failure as not covered yet. The static planner runs every Lakeforge job
    // correctly and re-runs lost tasks.
    config
        .upgrade_for_ballista()
        .set_str(BALLISTA_ADAPTIVE_PLANNER_ENABLED, "false")
        .set_bool("datafusion.optimizer.prefer_hash_join", prefer_hash_join)
}

/// Opens (and closes) a TCP connection to the coordinator, so a wrong address or a stopped
/// coordinator is reported at once instead of as a gRPC retry loop.
async fn probe(address: &ClusterAddress) -> Result<()> {
    let unreachable = |message: String| WorkerError::Unreachable {
        address: address.to_string(),
        message,
    };
    let target = (address.host.as_str(), address.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("cannot resolve the host: {e}")))?
        .next()
        .ok_or_else(|| unreachable("the host has no address".to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!(
            "no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Polls the coordinator's readiness probe (`GET /readyz`, served by Ballista's scheduler on
/// its gRPC port: 200 once a worker is registered, 503 before) until it answers 200 or
/// `worker_wait` has passed.
async fn wait_for_workers(address: &ClusterAddress, worker_wait: Duration) -> Result<()> {
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| WorkerError::Role {
            role: "client",
            message: format!("cannot build the HTTP client for the readiness probe: {e}"),
        })?;
    let url = format!("http://{}:{}/readyz", address.host, address.port);
    let deadline = tokio::time::Instant::now() + worker_wait;
    let mut logged = false;
    loop {
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {}
            // Anything else (a 404 from a coordinator without the probe, a proxy's error) is
            // not a Lakeforge coordinator answering "no workers": let the job go ahead and
            // Ballista report what it finds, rather than refuse a cluster that may work.
            Ok(response) => {
                tracing::warn!(
                    "the coordinator at {address} answered {} to {url}; not waiting for workers",
                    response.status()
                );
                return Ok(());
            }
            Err(e) => {
                return Err(WorkerError::Unreachable {
                    address: address.to_string(),
                    message: format!("its readiness probe {url} failed: {e}"),
                });
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WorkerError::NoWorkers {
                address: address.to_string(),
                waited_seconds: worker_wait.as_secs(),
            });
        }
        if !logged {
            tracing::info!(
                "waiting up to {} s for a worker to register with the coordinator at {address}",
                worker_wait.as_secs()
            );
            logged = true;
        }
        tokio::time::sleep(READINESS_POLL.min(worker_wait)).await;
    }
}

/// DataFusion's query planner with extension planners (DataFusion has the planner but no
/// `QueryPlanner` that carries extension planners).
mod extension_planning {
    use std::sync::Arc;

    use datafusion::catalog::Session;
    use datafusion::execution::context::QueryPlanner;
    use datafusion::logical_expr::LogicalPlan;
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

    /// A [`QueryPlanner`] that plans with [`DefaultPhysicalPlanner`] and the given extension
    /// planners.
    pub struct QueryPlannerWithExtensions {
        planners: Vec<Arc<dyn ExtensionPlanner + Send + Sync>>,
    }

    impl std::fmt::Debug for QueryPlannerWithExtensions {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "QueryPlannerWithExtensions({} planners)",
                self.planners.len()
            )
        }
    }

    impl QueryPlannerWithExtensions {
        pub fn new(planners: Vec<Arc<dyn ExtensionPlanner + Send + Sync>>) -> Self {
            QueryPlannerWithExtensions { planners }
        }
    }

    #[async_trait::async_trait]
    impl QueryPlanner for QueryPlannerWithExtensions {
        async fn create_physical_plan(
            &self,
            logical_plan: &LogicalPlan,
            session_state: &dyn Session,
        ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
            DefaultPhysicalPlanner::with_extension_planners(self.planners.clone())
                .create_physical_plan(logical_plan, session_state)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(config: SessionConfig) -> (bool, Option<String>) {
        let settings = client_settings(config);
        let adaptive = settings
            .options()
            .entries()
            .into_iter()
            .find(|entry| entry.key == BALLISTA_ADAPTIVE_PLANNER_ENABLED)
            .and_then(|entry| entry.value);
        (settings.options().optimizer.prefer_hash_join, adaptive)
    }

    #[test]
    fn the_engine_join_choice_survives_the_ballista_upgrade() {
        let (hash, adaptive) = settings_of(SessionConfig::new());
        assert!(
            hash,
            "hash joins, as embedded, unless sort-merge joins are asked for"
        );
        assert_eq!(adaptive.as_deref(), Some("false"));
        let sort_merge =
            SessionConfig::new().set_bool("datafusion.optimizer.prefer_hash_join", false);
        assert!(!settings_of(sort_merge).0);
    }
}
