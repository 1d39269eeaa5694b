//! What Lakeforge writes into each Delta commit it makes, and reads back from history.
//!
//! The record sits under the [`COMMIT_INFO_KEY`] key of the commit's `commitInfo` action, so any
//! Delta reader sees it in the table history without knowing Lakeforge.

pub mod lineage;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use lineage::ProductLineage;

/// The `commitInfo` key holding [`CommitMetadata`].
pub const COMMIT_INFO_KEY: &str = "lakeforge";

/// Lakeforge's version, recorded with every commit and run.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Most files listed one by one in a file source's identity; beyond it only the count, total
/// size and fingerprint are kept, so commits stay small on sources with many files.
pub const MAX_LISTED_FILES: usize = 1000;

/// Lakeforge's record in a Delta commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitMetadata {
    /// `run` for a job run, `rollback` for a restore.
    pub operation: String,
    /// The run's id (a UUID).
    pub run_id: String,
    /// The job's name (absent for a rollback made outside a job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The product this table is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// SHA-256 of the spec and its SQL after substitution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// The `[profiles.NAME]` the run used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The `${VAR}` values in effect.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The Lakeforge version that made the commit.
    pub engine_version: String,
    /// Rows this commit added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_written: Option<u64>,
    /// The exact inputs the run read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputIdentity>,
    /// For a rollback: the version whose contents were restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_version: Option<u64>,
    /// The results of the checks on this product and on the inputs it was computed from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSummary>,
    /// The models that scored this version's rows (`predict` in its SQL or its steps').
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelUse>,
    /// Where every output column comes from (compact form; descriptions are in the
    /// warehouse's lineage table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<ProductLineage>,
    /// The product's `freshness_sla` in seconds, so `lakeforge status` can judge staleness
    /// from the table alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_sla_seconds: Option<u64>,
}

/// A check result in compact form, as stored in commit metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckSummary {
    /// The dataset checked.
    pub dataset: String,
    /// The check.
    pub check: String,
    /// Its kind.
    pub kind: String,
    /// Its action.
    pub action: String,
    /// Rows evaluated.
    pub evaluated: u64,
    /// Rows failing.
    pub failed: u64,
    /// The measured value of dataset-level checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// Whether it passed.
    pub passed: bool,
}

impl From<&crate::check_result::CheckResult> for CheckSummary {
    fn from(result: &crate::check_result::CheckResult) -> Self {
        CheckSummary {
            dataset: result.dataset.clone(),
            check: result.check.clone(),
            kind: result.kind.to_string(),
            action: result.action.to_string(),
            evaluated: result.evaluated,
            failed: result.failed,
            observed: result.observed,
            passed: result.passed,
        }
    }
}

/// Which data exactly a source was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputIdentity {
    /// A Delta table at a version.
    Delta {
        /// The source's name in the job.
        source: String,
        /// The table's URL.
        url: String,
        /// The version read.
        version: u64,
    },
    /// Files (Parquet, CSV, JSON) as they were when listed.
    Files {
        /// The source's name in the job.
        source: String,
        /// parquet, csv or json.
        format: String,
        /// The location's URL.
        url: String,
        /// How many files were read.
        file_count: usize,
        /// Their total size in bytes.
        total_bytes: u64,
        /// SHA-256 over every file's path, size and modification time.
        fingerprint: String,
        /// The files (at most [`MAX_LISTED_FILES`]).
        files: Vec<FileIdentity>,
        /// True when `files` is cut at [`MAX_LISTED_FILES`].
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        files_truncated: bool,
    },
}

/// One file of a file source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// The object path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, RFC 3339.
    pub modified: String,
}

impl InputIdentity {
    /// The source's name.
    pub fn source(&self) -> &str {
        match self {
            InputIdentity::Delta { source, .. } | InputIdentity::Files { source, .. } => source,
        }
    }
}

/// A model that produced a product version, as recorded in its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUse {
    /// How the SQL named it (`churn`, `churn@production`).
    pub reference: String,
    /// The model's name.
    pub name: String,
    /// Its registry version, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `sha256:<hex>` of the artifact.
    pub content_hash: String,
    /// The file format.
    pub format: String,
}
