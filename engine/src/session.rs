//! The DataFusion session every Lakeforge operation runs in.

use std::sync::Arc;

use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use lakeforge_udfs::scoring::{ModelResolver, NoModels};

use crate::config::{EngineConfig, JoinStrategy};
use crate::error::{EngineError, Result};

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
    let mut runtime = RuntimeEnvBuilder::new();
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
