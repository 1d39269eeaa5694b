//! The engine's error type.

use datafusion::error::DataFusionError;
use deltalake::DeltaTableError;
use lakeforge_planner::PlannerError;

/// Everything that can stop a Lakeforge operation, each naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The job spec or one of its statements is wrong.
    #[error(transparent)]
    Planner(#[from] PlannerError),

    /// A model declared by the job cannot be read.
    #[error("model '{name}' ({path}): {message}")]
    Model {
        /// The model's name in the spec.
        name: String,
        /// Its file.
        path: String,
        /// What is wrong.
        message: String,
    },

    /// A source cannot be found or read.
    #[error("source '{name}' ({location}): {message}")]
    Source {
        /// The source's name in the spec.
        name: String,
        /// Where it points.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// A product cannot be computed or published.
    #[error("product '{product}': {message}")]
    Product {
        /// The product's name in the spec.
        product: String,
        /// What is wrong.
        message: String,
    },

    /// A path or URL that cannot be used as a location.
    #[error("invalid location '{location}': {message}")]
    Location {
        /// The text as given.
        location: String,
        /// Why it is refused.
        message: String,
    },

    /// An object store's configuration is wrong, or a store cannot be built for a location.
    /// Names the location or the `[storage]` table and the key at fault, never a value.
    #[error("storage {location}: {message}")]
    Storage {
        /// The location, or the `[storage."URL"]` table and where it was given.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// Reading or writing an object in a store failed.
    #[error("{context}: {source}")]
    ObjectStore {
        /// What was being done, naming the location.
        context: String,
        /// `object_store`'s error.
        #[source]
        source: object_store::Error,
    },

    /// There is no Delta table where one was expected.
    #[error("no Delta table at {location}")]
    NotATable {
        /// The location.
        location: String,
    },

    /// DataFusion failed while doing what `context` says (its message shown without a
    /// backtrace; the error itself kept as the source).
    #[error("{context}: {}", .source.strip_backtrace())]
    DataFusion {
        /// What was being done.
        context: String,
        /// DataFusion's error.
        #[source]
        source: DataFusionError,
    },

    /// delta-rs failed while doing what `context` says.
    #[error("{context}: {source}")]
    Delta {
        /// What was being done.
        context: String,
        /// delta-rs's error.
        source: DeltaTableError,
    },

    /// A run failed; it was recorded under `run_id` and published nothing (see the source for
    /// the exception of a commit failing after earlier products were committed).
    #[error("run {run_id} failed: {source}")]
    RunFailed {
        /// The run's id.
        run_id: String,
        /// Why.
        source: Box<EngineError>,
    },

    /// Checks with action `fail` did not pass; nothing was committed and the results were
    /// recorded.
    #[error("{message}")]
    ChecksFailed {
        /// Names each blocking check with its counts.
        message: String,
        /// Every check result of the run.
        results: Vec<crate::check_result::CheckResult>,
    },

    /// A product's files could not be written because the filesystem is full; the files
    /// already written were removed and nothing was published.
    #[error(
        "product '{product}': the disk is full: no space left to write {location}; nothing was \
         published (the files written so far were removed)"
    )]
    DiskFull {
        /// The product (or checked dataset) being written.
        product: String,
        /// Where its files were going.
        location: String,
    },

    /// The run was cancelled before its commits (timeout, shutdown); nothing was committed.
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why, e.g. "timed out after 30m".
        reason: String,
    },

    /// A data-quality check could not be measured or concluded (a spill file that cannot be
    /// written or read back, an Arrow kernel's failure, a state that does not belong to the
    /// check). The check did not pass: the run fails and publishes nothing.
    #[error("product '{dataset}': check '{check}': {source}")]
    Check {
        /// The checked dataset (a product or a step).
        dataset: String,
        /// The check's name.
        check: String,
        /// What went wrong.
        #[source]
        source: Box<EngineError>,
    },

    /// An Arrow kernel failed while doing what `context` says.
    #[error("{context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// Arrow's error.
        #[source]
        source: arrow::error::ArrowError,
    },

    /// Executing a plan failed (DataFusion's message without a backtrace; the error itself
    /// kept as the source).
    #[error("{}", .0.strip_backtrace())]
    Execution(#[source] DataFusionError),

    /// Writing a dataset's Parquet files failed: `action` says which ("write files", "finish
    /// quarantine files"); an object store's failure is told in one line, without the
    /// server's response body.
    #[error("cannot {action}: {detail}")]
    WriteFiles {
        /// What was being done.
        action: &'static str,
        /// The cause in one line (`storage::describe_error` of the source).
        detail: String,
        /// delta-rs's writer error (boxed: it is large, and every `Result` carries the size).
        #[source]
        source: Box<DeltaTableError>,
    },

    /// Publishing a dataset into `table` failed.
    #[error("product '{product}': {source} (table {table})")]
    Publish {
        /// The product (or checked dataset).
        product: String,
        /// The table its files were going to.
        table: String,
        /// Why.
        #[source]
        source: Box<EngineError>,
    },

    /// A broken invariant of the engine: a bug to report, never the user's input.
    #[error("internal error: {0}")]
    Invariant(String),

    /// A value stored in one of Lakeforge's own tables is missing or does not parse.
    #[error("Lakeforge table {table}, row {row}, column '{column}': {message}")]
    CorruptTable {
        /// The table, e.g. `_lakeforge/models`.
        table: String,
        /// The row of the batch read.
        row: usize,
        /// The column.
        column: String,
        /// What is wrong with the value.
        message: String,
    },

    /// Building or encoding one of Lakeforge's own records failed (a bug, not the user's
    /// input): what was being done, and the cause.
    #[error("{context}: {source}")]
    Internal {
        /// What was being done.
        context: String,
        /// The Arrow or JSON error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A value the caller gave (a flag's value, a gate, a name) is malformed; the caller names
    /// where it came from.
    #[error("{0}")]
    Usage(String),

    /// The cluster could not be reached or refused the job.
    #[error(transparent)]
    Cluster(#[from] lakeforge_worker::WorkerError),

    /// Reading or writing a local file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl EngineError {
    /// Wraps a DataFusion error with what was being done.
    pub fn datafusion(context: impl Into<String>, error: DataFusionError) -> Self {
        EngineError::DataFusion {
            context: context.into(),
            source: error,
        }
    }

    /// Wraps a delta-rs error with what was being done.
    pub fn delta(context: impl Into<String>, source: DeltaTableError) -> Self {
        EngineError::Delta {
            context: context.into(),
            source,
        }
    }

    /// Wraps the failure of building or encoding a record Lakeforge made itself.
    pub fn internal(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        EngineError::Internal {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an Arrow error with what was being done.
    pub fn arrow(context: impl Into<String>, source: arrow::error::ArrowError) -> Self {
        EngineError::Arrow {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    /// An error about one product.
    pub fn product(product: &str, message: impl Into<String>) -> Self {
        EngineError::Product {
            product: product.to_string(),
            message: message.into(),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn datafusion_errors_keep_their_cause() {
        let error = EngineError::datafusion(
            "cannot plan product 'p'",
            DataFusionError::Plan("no column x".to_string()),
        );
        assert_eq!(
            error.to_string(),
            "cannot plan product 'p': Error during planning: no column x"
        );
        let source = error.source().map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("Error during planning: no column x")
        );
    }
}
