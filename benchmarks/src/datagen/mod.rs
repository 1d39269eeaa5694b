//! Deterministic sample-data generators.

pub mod churn;

use std::path::{Path, PathBuf};

/// What can go wrong while generating data.
#[derive(Debug, thiserror::Error)]
pub enum DatagenError {
    /// A file or folder could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Arrow refused a batch (a generator bug).
    #[error("cannot build {}: {source}", path.display())]
    Arrow {
        /// The file being written.
        path: PathBuf,
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },
    /// The Parquet writer failed.
    #[error("cannot write Parquet file {}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Parquet's error.
        source: parquet::errors::ParquetError,
    },
    /// The manifest could not be encoded.
    #[error("cannot encode the dataset manifest: {0}")]
    Manifest(serde_json::Error),
    /// The configuration makes no sense.
    #[error("invalid generator configuration: {0}")]
    InvalidConfig(String),
}

impl DatagenError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DatagenError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn arrow(path: &Path, source: arrow::error::ArrowError) -> Self {
        DatagenError::Arrow {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Self {
        DatagenError::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }
}
