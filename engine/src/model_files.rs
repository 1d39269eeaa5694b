//! Model files read from disk and parsed: what both the job's `[models.NAME]` declarations
//! ([`crate::models`]) and the registry ([`crate::registry`], which copies files in) need,
//! below both so neither depends on the other for it.

use std::path::Path;
use std::sync::Arc;

use url::Url;

use lakeforge_udfs::models::{Model, ModelFormat};
use lakeforge_udfs::scoring::parse_model_cached;

use crate::error::{EngineError, Result};

/// A model file read and parsed.
pub struct ModelFile {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Its format (given, or guessed from the file).
    pub format: ModelFormat,
    /// The parsed model (shared with every other load of the same bytes).
    pub model: Arc<Model>,
    /// `sha256:<hex>` of the bytes.
    pub content_hash: String,
}

/// Reads and parses the file of model `name` at `location` (a local file or an object), in
/// `format` (a format name) or the one guessed from the file; every failure names the model and
/// the file.
pub fn read_model_file(name: &str, location: &Url, format: Option<&str>) -> Result<ModelFile> {
    let shown = crate::location::display_location(location);
    let failure = |message: String| EngineError::Model {
        name: name.to_string(),
        path: shown.clone(),
        message,
    };
    let bytes = crate::storage::read_object_blocking(location)
        .map_err(|e| failure(format!("cannot read it: {}", io_cause(&e))))?;
    let path = Path::new(location.path());
    let format = match format {
        Some(text) => ModelFormat::parse(text).ok_or_else(|| {
            failure(format!(
                "unknown format '{text}' (expected one of {})",
                ModelFormat::NAMES.join(", ")
            ))
        })?,
        None => ModelFormat::detect(path, &bytes).ok_or_else(|| {
            failure(format!(
                "cannot tell the model's format; give it as one of {}",
                ModelFormat::NAMES.join(", ")
            ))
        })?,
    };
    let (model, content_hash) =
        parse_model_cached(&bytes, format).map_err(|e| failure(e.to_string()))?;
    Ok(ModelFile {
        bytes,
        format,
        model,
        content_hash,
    })
}

/// The cause of a failed read, without the location the caller already names.
fn io_cause(error: &EngineError) -> String {
    match error {
        EngineError::Io { source, .. } => source.to_string(),
        EngineError::ObjectStore { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}
