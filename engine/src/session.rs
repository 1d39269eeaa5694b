//! The DataFusion session every Lakeforge operation runs in.

use std::sync::Arc;

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use lakeforge_planner::CheckPlacement;
use lakeforge_udfs::scoring::{ModelResolver, NoModels};

use crate::config::{EngineConfig, JoinStrategy};
use crate::error::{EngineError, Result};

/// Where a session's queries execute. Chosen once, from the configuration, when a run or
/// command starts ([`RunBackend::chosen_by`]); the cluster's session carries it
/// ([`RunBackend::of`]), so the few places whose plans differ (how a Delta table is read,
/// where check state may live) read that one decision instead of making their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunBackend {
    /// In this process.
    Embedded,
    /// On the cluster of `EngineConfig::cluster`.
    Cluster,
}

impl RunBackend {
    /// The backend `config` asks for.
    pub fn chosen_by(config: &EngineConfig) -> RunBackend {
        match config.cluster {
            Some(_) => RunBackend::Cluster,
            None => RunBackend::Embedded,
        }
    }

    /// The backend `ctx` was created for (sessions made by [`new_session`] are embedded).
    pub fn of(ctx: &SessionContext) -> RunBackend {
        ctx.state()
            .config()
            .get_extension::<RunBackend>()
            .map_or(RunBackend::Embedded, |backend| *backend)
    }

    /// Where the planner may put check state: per process (keys, exact quantiles) only when
    /// everything runs in one.
    pub fn placement(self) -> CheckPlacement {
        match self {
            RunBackend::Embedded => CheckPlacement::InProcess,
            RunBackend::Cluster => CheckPlacement::Distributed,
        }
    }
}

/// A session configured from `config`, with Lakeforge's functions registered and no models
/// (for commands that run no job).
pub fn new_session(config: &EngineConfig) -> Result<SessionContext> {
    new_session_with_models(config, Arc::new(NoModels))
}

/// A session configured from `config` whose `predict` functions find models through `models`.
pub fn new_session_with_models(
    config: &EngineConfig,
    models: Arc<dyn ModelResolver>,
) -> Result<SessionContext> {
    let session_config = session_config(config);
    crate::storage::register_with_delta();
    let mut runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(crate::storage::SessionStores::default()));
    if let Some(limit) = config.memory_limit {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    let runtime = runtime
        .build_arc()
        .map_err(|e| EngineError::datafusion("cannot build the execution runtime", e))?;
    let ctx = SessionContext::new_with_config_rt(session_config, runtime);
    lakeforge_udfs::register_all(&ctx, models);
    Ok(ctx)
}

/// The session settings every Lakeforge session shares, embedded or connected to a cluster.
pub fn session_config(config: &EngineConfig) -> SessionConfig {
    SessionConfig::new()
        .with_target_partitions(config.target_partitions.max(1))
        .with_batch_size(config.batch_size.max(1))
        .with_information_schema(true)
        .set_bool(
            "datafusion.optimizer.prefer_hash_join",
            config.joins == JoinStrategy::Hash,
        )
}
