//! Registering a job's sources in a session, and recording exactly what each one was.

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use lakeforge_planner::{ResolvedJob, SourceFormat, SourceSpec};
use sha2::{Digest, Sha256};
use url::Url;

use crate::delta;
use crate::error::{EngineError, Result};
use crate::location::{display_location, resolve_location};
use crate::metadata::{FileIdentity, InputIdentity, MAX_LISTED_FILES};
use crate::session::RunBackend;

/// How many sources are registered at once. Registering one is a few round trips to its store
/// (listing, Parquet footers or the Delta log), which on an object store are tens of
/// milliseconds each; sources are independent, so they are registered concurrently.
const CONCURRENT_REGISTRATIONS: usize = 8;

/// Registers every source of `job` in `ctx` under its name and returns their identities, in
/// the spec's (alphabetical) order.
pub async fn register_sources(
    ctx: &SessionContext,
    job: &ResolvedJob,
) -> Result<Vec<InputIdentity>> {
    let mut located = Vec::with_capacity(job.spec.sources.len());
    for (name, spec) in &job.spec.sources {
        located.push((name, spec, resolve_location(&job.base_dir, &spec.path)?));
    }
    // The futures are made first (they start only when polled): a closure inside the stream
    // adapter would make the future's `Send` bound higher-ranked over the borrowed names.
    let registrations: Vec<_> = located
        .iter()
        .map(|(name, spec, url)| register_source(ctx, name, spec, url))
        .collect();
    futures::stream::iter(registrations)
        .buffered(CONCURRENT_REGISTRATIONS)
        .try_collect()
        .await
}

/// Registers one source.
pub async fn register_source(
    ctx: &SessionContext,
    name: &str,
    spec: &SourceSpec,
    url: &Url,
) -> Result<InputIdentity> {
    let source_error = |message: String| EngineError::Source {
        name: name.to_string(),
        location: display_location(url),
        message,
    };
    if spec.format == SourceFormat::Delta {
        let table = delta::open_table(url, spec.version)
            .await
            .map_err(|e| source_error(e.to_string()))?;
        let version = table.version().unwrap_or_default();
        if RunBackend::of(ctx) == RunBackend::Cluster {
            crate::cluster::register_delta_source(ctx, name, &table)
                .await
                .map_err(source_error)?;
            return Ok(InputIdentity::Delta {
                source: name.to_string(),
                url: url.to_string(),
                version,
            });
        }
        let provider = table
            .table_provider()
            .await
            .map_err(|e| source_error(format!("cannot read the table: {}", e.strip_backtrace())))?;
        ctx.register_table(name, provider)
            .map_err(|e| source_error(e.strip_backtrace()))?;
        return Ok(InputIdentity::Delta {
            source: name.to_string(),
            url: url.to_string(),
            version,
        });
    }

    let url = &crate::storage::folder_unless_object(url)
        .await
        .map_err(|e| source_error(e.to_string()))?;
    let extension = file_extension(spec.format, url);
    let identity = list_files(ctx, name, spec.format, url, &extension)
        .await
        .map_err(source_error)?;
    let path = url.as_str();
    let registered = match spec.format {
        SourceFormat::Parquet => {
            let options = ParquetReadOptions::default().file_extension(&extension);
            ctx.register_parquet(name, path, options).await
        }
        SourceFormat::Csv => {
            let delimiter = spec
                .delimiter
                .as_deref()
                .and_then(|d| d.bytes().next())
                .unwrap_or(b',');
            let options = CsvReadOptions::new()
                .has_header(spec.header.unwrap_or(true))
                .delimiter(delimiter)
                .file_extension(&extension);
            ctx.register_csv(name, path, options).await
        }
        SourceFormat::Json => {
            let options = JsonReadOptions::default().file_extension(&extension);
            ctx.register_json(name, path, options).await
        }
        SourceFormat::Delta => Ok(()),
    };
    registered
        .map_err(|e| source_error(format!("cannot read its schema: {}", e.strip_backtrace())))?;
    Ok(identity)
}

/// The extension DataFusion should list: the file's own when the location is one file, else
/// the format's usual one.
fn file_extension(format: SourceFormat, url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    if !last.is_empty()
        && let Some((_, ext)) = last.rsplit_once('.')
    {
        return format!(".{ext}");
    }
    format!(".{format}")
}

/// Lists the files DataFusion will read and fingerprints them. No files is an error: a typo in
/// a path must not silently produce an empty product.
async fn list_files(
    ctx: &SessionContext,
    name: &str,
    format: SourceFormat,
    url: &Url,
    extension: &str,
) -> std::result::Result<InputIdentity, String> {
    // Scoped to the table's name, the listing lands in the session's list-files cache under the
    // key DataFusion's own registration and scan use: the files are listed once per run, not
    // once here and again there (a round trip each on an object store).
    let table_url = ListingTableUrl::parse(url.as_str())
        .map_err(|e| e.strip_backtrace())?
        .with_table_ref(datafusion::common::TableReference::bare(name));
    let store = ctx
        .runtime_env()
        .object_store(&table_url)
        .map_err(|e| e.strip_backtrace())?;
    let state = ctx.state();
    let mut files: Vec<FileIdentity> = table_url
        .list_all_files(&state, store.as_ref(), extension)
        .await
        .map_err(|e| format!("cannot list files: {}", e.strip_backtrace()))?
        .map_ok(|meta| FileIdentity {
            path: meta.location.to_string(),
            size: meta.size,
            modified: meta.last_modified.to_rfc3339(),
        })
        .try_collect()
        .await
        .map_err(|e| format!("cannot list files: {}", e.strip_backtrace()))?;
    if files.is_empty() {
        return Err(format!("no {extension} files found (does the path exist?)"));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for file in &files {
        hasher.update(file.path.as_bytes());
        hasher.update(file.size.to_le_bytes());
        hasher.update(file.modified.as_bytes());
    }
    let file_count = files.len();
    let total_bytes = files.iter().map(|f| f.size).sum();
    let files_truncated = files.len() > MAX_LISTED_FILES;
    files.truncate(MAX_LISTED_FILES);
    Ok(InputIdentity::Files {
        source: name.to_string(),
        format: format.to_string(),
        url: url.to_string(),
        file_count,
        total_bytes,
        fingerprint: hex::encode(hasher.finalize()),
        files,
        files_truncated,
    })
}

/// Registers a location for ad-hoc SQL, guessing its format: a Delta table when it has a
/// `_delta_log`, otherwise by the files' extension.
pub async fn register_location(
    ctx: &SessionContext,
    name: &str,
    url: &Url,
) -> Result<InputIdentity> {
    let format = if delta::is_delta_table(url).await {
        SourceFormat::Delta
    } else {
        guess_file_format(ctx, url)
            .await
            .ok_or_else(|| EngineError::Source {
                name: name.to_string(),
                location: display_location(url),
                message: "neither a Delta table nor .parquet, .csv, .json or .ndjson files"
                    .to_string(),
            })?
    };
    let spec = SourceSpec {
        format,
        path: url.to_string(),
        version: None,
        header: None,
        delimiter: None,
        key: Vec::new(),
    };
    register_source(ctx, name, &spec, url).await
}

async fn guess_file_format(ctx: &SessionContext, url: &Url) -> Option<SourceFormat> {
    let candidates = [
        (".parquet", SourceFormat::Parquet),
        (".csv", SourceFormat::Csv),
        (".json", SourceFormat::Json),
        // Newline-delimited JSON under its other usual name (the OpenLineage events file).
        (".ndjson", SourceFormat::Json),
    ];
    let mut with_slash = url.clone();
    crate::location::ensure_trailing_slash(&mut with_slash);
    for (extension, format) in candidates {
        if url.path().ends_with(extension) {
            return Some(format);
        }
        if list_files(ctx, "", format, &with_slash, extension)
            .await
            .is_ok()
        {
            return Some(format);
        }
    }
    None
}
