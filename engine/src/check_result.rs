//! The outcome of one data-quality check in one run: a leaf type, computed by [`crate::dq`],
//! carried by errors (a run stopped by `fail` checks), commit metadata, run records,
//! OpenLineage events and the CLI.

use lakeforge_planner::{CheckAction, CheckKind};
use serde::{Deserialize, Serialize};

/// One check's outcome in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The source, step or product checked.
    pub dataset: String,
    /// The check's name.
    pub check: String,
    /// Its kind.
    pub kind: CheckKind,
    /// Its action.
    pub action: CheckAction,
    /// What it checks, in SQL-like text.
    pub description: String,
    /// Rows evaluated.
    pub evaluated: u64,
    /// Rows failing (row-level kinds).
    pub failed: u64,
    /// Rows whose predicate was NULL and that passed (row-level kinds).
    pub null_skipped: u64,
    /// The value measured (dataset-level kinds): a count, statistic, age in seconds, p-value or
    /// distance.
    pub observed: Option<f64>,
    /// Whether the check passed.
    pub passed: bool,
    /// Details: bounds, reference, why it could not be evaluated.
    pub message: Option<String>,
    /// Up to K failing rows: the dataset's key columns and the columns the check reads, as text,
    /// smallest first.
    pub samples: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl CheckResult {
    /// Whether this result stops the run.
    pub fn blocks_run(&self) -> bool {
        !self.passed && self.action == CheckAction::Fail
    }

    /// `failed / evaluated` in percent, for row-level results.
    pub fn failed_percent(&self) -> Option<f64> {
        (self.evaluated > 0 && self.kind.is_row_level())
            .then(|| self.failed as f64 * 100.0 / self.evaluated as f64)
    }
}

/// Whether a result's kind (as stored) is row-level.
pub fn is_row_level(kind: &str) -> bool {
    CheckKind::from_name(kind).is_some_and(CheckKind::is_row_level)
}
