//! Lakeforge's deterministic sample-data generators: the churn example's customers and events
//! (`lakeforge example`) and the benchmarks' feature table. A small crate of its own so the
//! product binary can generate the example's data without linking the benchmark harness (the
//! TPC-H generator stays in `lakeforge-benchmarks`).
//!
//!
//! Every generator writes into a temporary sibling folder and renames it into place at the end
//! (so an interrupted run never leaves a half dataset a later run would reuse), and records its
//! configuration in a manifest: asking again for the same configuration reuses the files. Each
//! chunk of rows draws from its own ChaCha8 generator seeded from `(seed, chunk)`, so the bytes
//! written do not depend on how many threads rayon uses.

pub mod churn;
pub mod features;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DatagenError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    /// Arrow refused a batch for `path`.
    pub fn arrow(path: &Path, source: arrow::error::ArrowError) -> Self {
        DatagenError::Arrow {
            path: path.to_path_buf(),
            source,
        }
    }
    /// The Parquet writer failed on `path`.
    pub fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Self {
        DatagenError::Parquet {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The file recording the configuration a dataset folder was generated with.
const MANIFEST: &str = "_datagen.json";

/// Generates a dataset under `root` with `write` unless the folder's manifest says it already
/// holds the data of an equal `config`. Returns whether data was generated.
pub fn generate_cached<C>(
    root: &Path,
    config: &C,
    write: impl FnOnce(&Path) -> Result<(), DatagenError>,
) -> Result<bool, DatagenError>
where
    C: Serialize + DeserializeOwned + PartialEq,
{
    let manifest_path = root.join(MANIFEST);
    if let Ok(text) = fs::read_to_string(&manifest_path)
        && serde_json::from_str::<C>(&text).ok().as_ref() == Some(config)
    {
        return Ok(false);
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".to_string());
    let staging = root.with_file_name(format!(".{name}.staging-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| DatagenError::io(&staging, e))?;
    }
    fs::create_dir_all(&staging).map_err(|e| DatagenError::io(&staging, e))?;
    let written = write(&staging).and_then(|()| {
        let manifest = serde_json::to_string_pretty(config).map_err(DatagenError::Manifest)?;
        let path = staging.join(MANIFEST);
        fs::write(&path, manifest).map_err(|e| DatagenError::io(&path, e))
    });
    if let Err(error) = written {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    if root.exists() {
        fs::remove_dir_all(root).map_err(|e| DatagenError::io(root, e))?;
    }
    fs::rename(&staging, root).map_err(|e| DatagenError::io(root, e))?;
    Ok(true)
}

/// The generator of chunk `chunk` of a dataset seeded with `seed`.
pub(crate) fn chunk_rng(seed: u64, chunk: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (chunk + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Rows per generated batch (and the granularity at which generators draw).
const BATCH_ROWS: u64 = 65_536;

/// Writes rows `first..end` to a Snappy-compressed Parquet file at `path`, one batch of at most
/// [`BATCH_ROWS`] rows at a time from `batch(first, end)`.
pub(crate) fn write_parquet_rows(
    path: &Path,
    schema: SchemaRef,
    row_group_rows: usize,
    first: u64,
    end: u64,
    mut batch: impl FnMut(u64, u64) -> Result<RecordBatch, arrow::error::ArrowError>,
) -> Result<(), DatagenError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| DatagenError::io(parent, e))?;
    }
    let file = File::create(path).map_err(|e| DatagenError::io(path, e))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties))
        .map_err(|e| DatagenError::parquet(path, e))?;
    let mut start = first;
    while start < end {
        let stop = (start + BATCH_ROWS).min(end);
        let rows = batch(start, stop).map_err(|e| DatagenError::arrow(path, e))?;
        writer
            .write(&rows)
            .map_err(|e| DatagenError::parquet(path, e))?;
        start = stop;
    }
    writer.close().map_err(|e| DatagenError::parquet(path, e))?;
    Ok(())
}

/// Draws from a weighted list; the weights need not sum to one.
pub(crate) fn pick<'a>(rng: &mut ChaCha8Rng, choices: &[(&'a str, f64)]) -> &'a str {
    let total: f64 = choices.iter().map(|(_, w)| w).sum();
    let mut draw = rng.random::<f64>() * total;
    for (value, weight) in choices {
        if draw < *weight {
            return value;
        }
        draw -= weight;
    }
    choices.last().map(|(v, _)| *v).unwrap_or_default()
}

/// Customer ids are sparse and large, like real surrogate keys.
pub(crate) fn customer_id(index: u64) -> i64 {
    1_000_000 + (index as i64) * 7
}

/// Countries and their shares of customers: a few dominate, as in real product data.
pub(crate) const COUNTRIES: &[(&str, f64)] = &[
    ("US", 0.34),
    ("GB", 0.12),
    ("DE", 0.11),
    ("FR", 0.09),
    ("BR", 0.08),
    ("IN", 0.08),
    ("JP", 0.06),
    ("CA", 0.05),
    ("ES", 0.04),
    ("NL", 0.03),
];
