//! The production [`JobRunner`]: runs the job embedded, exactly like `lakeforge run`.

use crate::cancel::RunCancellation;
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::job::{LoadedJob, NoProgress, ProductOutcome, run_job_with};
use crate::runs::RunStatus;
use crate::schedule::scheduler::{AttemptOutcome, JobRunner, RunRequest, ScheduledJob};

/// Runs attempts in this process.
#[derive(Debug, Clone)]
pub struct EmbeddedRunner {
    config: EngineConfig,
}

impl EmbeddedRunner {
    /// A runner using `config` for every run.
    pub fn new(config: EngineConfig) -> Self {
        EmbeddedRunner { config }
    }
}

impl JobRunner for EmbeddedRunner {
    async fn run(
        &self,
        job: &ScheduledJob,
        request: &RunRequest,
        cancel: RunCancellation,
    ) -> AttemptOutcome {
        // The text that last validated, with this run's variables: an edit that broke the
        // file since does not change what runs.
        let loaded = match LoadedJob::from_text(
            &job.spec_path,
            &job.spec_text,
            &request.vars,
            job.profile.as_deref(),
        ) {
            Ok(loaded) => loaded,
            Err(error) => return AttemptOutcome::failed(error.to_string()),
        };
        match run_job_with(&loaded, &self.config, &NoProgress, &cancel).await {
            Ok(summary) => AttemptOutcome {
                run_id: Some(summary.run_id),
                status: RunStatus::Succeeded,
                error: summary.record_warning,
                products: summary
                    .products
                    .iter()
                    .map(ProductOutcome::version_record)
                    .collect(),
                failed_checks: summary.checks.iter().filter(|c| !c.passed).count() as u64,
            },
            Err(EngineError::RunFailed { run_id, source }) => AttemptOutcome {
                run_id: Some(run_id),
                status: match source.as_ref() {
                    EngineError::Cancelled { .. } => RunStatus::Cancelled,
                    _ => RunStatus::Failed,
                },
                error: Some(source.to_string()),
                products: Vec::new(),
                failed_checks: match source.as_ref() {
                    EngineError::ChecksFailed { results, .. } => {
                        results.iter().filter(|c| !c.passed).count() as u64
                    }
                    _ => 0,
                },
            },
            Err(error) => AttemptOutcome::failed(error.to_string()),
        }
    }
}
