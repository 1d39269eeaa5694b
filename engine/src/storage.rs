//! Object stores: the one place that turns a location URL (and the options configured for its
//! bucket or container) into an [`ObjectStore`].
//!
//! Every read and write of the engine goes through a store from here: DataFusion sessions get
//! [`SessionStores`] as their object store registry, delta-rs gets [`register_with_delta`]'s
//! factories for the cloud schemes (so every `DeltaTableBuilder::from_url` in the engine opens
//! S3, Azure and GCS tables through the same stores), and the engine's own files (model
//! artifacts, OpenLineage events) use [`store_for`].
//!
//! The configuration is process-wide, like delta-rs' and `object_store`'s factories: options
//! apply to a whole bucket or container (a store root, `scheme://authority`), they are given
//! once per process (the `--storage` file, then each job spec's `[storage]` tables), and a second,
//! different set of options for the same root is refused naming both origins, so two jobs in
//! one scheduler cannot silently read the same bucket with different credentials.
//!
//! Credentials come from each cloud's standard environment variables (`AWS_*`, `AZURE_*`,
//! `GOOGLE_*`, read by `object_store`'s `from_env` builders) and from the options; option values
//! are never shown (`Debug` lists keys only) and never leave this module.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreRegistry;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig};
use url::Url;

use crate::error::{EngineError, Result};

/// How often a failed request to an object store is retried, and for how long at most: a store
/// that is down fails the operation within about this bound instead of `object_store`'s default
/// of ten retries over three minutes.
pub const MAX_RETRIES: usize = 3;
/// See [`MAX_RETRIES`].
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(20);
/// Connection timeout unless the options set `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: &str = "5s";
/// Per-request timeout unless the options set `timeout`.
const DEFAULT_REQUEST_TIMEOUT: &str = "60s";

/// The URL schemes that name a cloud object store.
const CLOUD_SCHEMES: [&str; 8] = ["s3", "s3a", "az", "azure", "abfs", "abfss", "adl", "gs"];

/// Options for the stores of some roots (`s3://bucket`, `az://container`, ...), with where they
/// were given (a file, a job spec) for error messages.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions {
    roots: BTreeMap<String, RootOptions>,
}

#[derive(Clone, PartialEq, Eq)]
struct RootOptions {
    options: BTreeMap<String, String>,
    origin: String,
}

impl fmt::Debug for StorageOptions {
    // Values may be secrets: only the keys are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (root, options) in &self.roots {
            map.entry(root, &options.options.keys().collect::<Vec<_>>());
        }
        map.finish()
    }
}

impl StorageOptions {
    /// Options from `tables` (store URL → key → value), given in `origin` (e.g. a file name).
    /// Each URL must be a store root (`s3://bucket`, not `s3://bucket/prefix`) of a cloud
    /// scheme, and every key one the store's builder knows.
    pub fn from_tables(
        tables: &BTreeMap<String, BTreeMap<String, String>>,
        origin: &str,
    ) -> Result<StorageOptions> {
        let mut roots = BTreeMap::new();
        for (location, options) in tables {
            let root = root_of_configured(location, origin)?;
            let options = options
                .iter()
                .map(|(key, value)| (key.to_ascii_lowercase(), value.clone()))
                .collect::<BTreeMap<_, _>>();
            // Build the store once: an unknown key or a bad value is refused here, naming the
            // origin, not at the first read.
            build_store(&root, &options).map_err(|message| EngineError::Storage {
                location: format!("[storage.\"{location}\"] in {origin}"),
                message,
            })?;
            if roots.contains_key(&root) {
                return Err(EngineError::Storage {
                    location: format!("[storage.\"{location}\"] in {origin}"),
                    message: format!("{root} is configured twice"),
                });
            }
            roots.insert(
                root,
                RootOptions {
                    options,
                    origin: origin.to_string(),
                },
            );
        }
        Ok(StorageOptions { roots })
    }

    /// Options from a job spec's `[storage."URL"]` tables, given in `origin`.
    pub fn from_spec(
        tables: &BTreeMap<String, BTreeMap<String, lakeforge_planner::OptionValue>>,
        origin: &str,
    ) -> Result<StorageOptions> {
        let tables = tables
            .iter()
            .map(|(url, options)| {
                let options = options
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone().into_string()))
                    .collect();
                (url.clone(), options)
            })
            .collect();
        StorageOptions::from_tables(&tables, origin)
    }

    /// Options from a TOML file of `[storage."URL"]` tables (string, boolean or number values).
    pub fn from_toml_file(path: &std::path::Path) -> Result<StorageOptions> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            context: format!("cannot read the storage file {origin}"),
            source,
        })?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct StorageFile {
            #[serde(default)]
            storage: BTreeMap<String, BTreeMap<String, lakeforge_planner::OptionValue>>,
        }
        let file: StorageFile = toml::from_str(&text).map_err(|e| EngineError::Storage {
            location: origin.clone(),
            message: e.to_string(),
        })?;
        StorageOptions::from_spec(&file.storage, &origin)
    }

    /// True when no root is configured.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The configured roots.
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.roots.keys().map(String::as_str)
    }
}

/// The process's stores: options per root, and the stores built from them (one per root, so
/// every table of a bucket shares one HTTP connection pool).
struct Storage {
    options: RwLock<BTreeMap<String, RootOptions>>,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

fn storage() -> &'static Storage {
    static STORAGE: OnceLock<Storage> = OnceLock::new();
    STORAGE.get_or_init(|| Storage {
        options: RwLock::new(BTreeMap::new()),
        stores: RwLock::new(HashMap::new()),
    })
}

/// Adds `options` to the process's configuration. A root already configured with the same
/// options is fine; with different ones it is an error naming both origins.
pub fn configure(options: &StorageOptions) -> Result<()> {
    register_with_delta();
    let storage = storage();
    // A poisoned lock means a thread panicked while holding it; the maps are only replaced
    // whole, so their contents are still consistent.
    let mut configured = storage
        .options
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (root, given) in &options.roots {
        if let Some(existing) = configured.get(root) {
            if existing.options != given.options {
                return Err(EngineError::Storage {
                    location: root.clone(),
                    message: format!(
                        "configured differently in {} and in {}: options apply to a whole \
                         bucket or container, once per process",
                        existing.origin, given.origin
                    ),
                });
            }
            continue;
        }
        configured.insert(root.clone(), given.clone());
        // A store built before the options arrived (from the environment alone) is replaced.
        storage
            .stores
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(root);
    }
    Ok(())
}

/// The store that holds `url` (rooted at its bucket or container: paths inside it are the URL's
/// path), built on first use from the environment and the configured options.
pub fn store_for(url: &Url) -> Result<Arc<dyn ObjectStore>> {
    let root = root_of(url)?;
    let storage = storage();
    if let Some(store) = storage
        .stores
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&root)
    {
        return Ok(Arc::clone(store));
    }
    let options = storage
        .options
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&root)
        .map(|given| given.options.clone())
        .unwrap_or_default();
    let store = build_store(&root, &options).map_err(|message| EngineError::Storage {
        location: url.to_string(),
        message,
    })?;
    let mut stores = storage
        .stores
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(Arc::clone(stores.entry(root).or_insert(store)))
}

/// The object's path inside its store.
pub fn path_in_store(url: &Url) -> Result<StorePath> {
    if url.scheme() == "file" {
        let path = url.to_file_path().map_err(|()| EngineError::Location {
            location: url.to_string(),
            message: "not a local path".to_string(),
        })?;
        return StorePath::from_absolute_path(&path).map_err(|e| EngineError::Location {
            location: url.to_string(),
            message: e.to_string(),
        });
    }
    let (_, path) = ObjectStoreScheme::parse(url).map_err(|e| EngineError::Location {
        location: url.to_string(),
        message: e.to_string(),
    })?;
    Ok(path)
}

/// Reads the whole object at `url`.
pub async fn read_object(url: &Url) -> Result<Vec<u8>> {
    if url.scheme() == "file" {
        let path = local_path(url)?;
        return std::fs::read(&path).map_err(|source| EngineError::Io {
            context: format!("cannot read {}", path.display()),
            source,
        });
    }
    let store = store_for(url)?;
    let path = path_in_store(url)?;
    let failed = |source| EngineError::ObjectStore {
        context: format!("cannot read {url}"),
        source,
    };
    store
        .get(&path)
        .await
        .map_err(failed)?
        .bytes()
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(failed)
}

/// Reads the whole object at `url` from synchronous code, in any context (inside or outside a
/// tokio runtime, of either flavor): the read runs on its own thread with its own runtime and a
/// store built for it alone (a store's pooled connections belong to the runtime that opened
/// them, so the process's stores are not shared across runtimes).
pub fn read_object_blocking(url: &Url) -> Result<Vec<u8>> {
    read_objects_blocking(std::slice::from_ref(url))
        .pop()
        .unwrap_or_else(|| {
            Err(EngineError::Storage {
                location: url.to_string(),
                message: "nothing was read".to_string(),
            })
        })
}

/// Reads several whole objects from synchronous code, concurrently, like
/// [`read_object_blocking`] (one thread and runtime of its own for all of them); the results are
/// in the order of `urls`.
pub fn read_objects_blocking(urls: &[Url]) -> Vec<Result<Vec<u8>>> {
    if urls.iter().all(|url| url.scheme() == "file") {
        return urls
            .iter()
            .map(|url| {
                let path = local_path(url)?;
                std::fs::read(&path).map_err(|source| EngineError::Io {
                    context: format!("cannot read {}", path.display()),
                    source,
                })
            })
            .collect();
    }
    let read_all = || -> std::result::Result<Vec<Result<Vec<u8>>>, std::io::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(futures::future::join_all(urls.iter().map(read_fresh))))
    };
    match std::thread::scope(|scope| scope.spawn(read_all).join()) {
        Ok(Ok(results)) => results,
        Ok(Err(error)) => urls
            .iter()
            .map(|url| {
                Err(EngineError::Storage {
                    location: url.to_string(),
                    message: format!("cannot start a runtime to read it: {error}"),
                })
            })
            .collect(),
        Err(_) => urls
            .iter()
            .map(|url| {
                Err(EngineError::Storage {
                    location: url.to_string(),
                    message: "the reading thread panicked".to_string(),
                })
            })
            .collect(),
    }
}

/// Reads `url` with a store built for this read alone (see [`read_object_blocking`]).
async fn read_fresh(url: &Url) -> Result<Vec<u8>> {
    if url.scheme() == "file" {
        let path = local_path(url)?;
        return std::fs::read(&path).map_err(|source| EngineError::Io {
            context: format!("cannot read {}", path.display()),
            source,
        });
    }
    let root = root_of(url)?;
    let options = storage()
        .options
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&root)
        .map(|given| given.options.clone())
        .unwrap_or_default();
    let store = build_store(&root, &options).map_err(|message| EngineError::Storage {
        location: url.to_string(),
        message,
    })?;
    let path = path_in_store(url)?;
    let failed = |source| EngineError::ObjectStore {
        context: format!("cannot read {url}"),
        source,
    };
    let object = store.get(&path).await.map_err(failed)?;
    object.bytes().await.map(|b| b.to_vec()).map_err(failed)
}

/// Writes `bytes` as the object at `url`, replacing what is there (local folders are created).
pub async fn put_object(url: &Url, bytes: Vec<u8>) -> Result<()> {
    if url.scheme() == "file" {
        let path = local_path(url)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EngineError::Io {
                context: format!("cannot create {}", parent.display()),
                source,
            })?;
        }
        return std::fs::write(&path, bytes).map_err(|source| EngineError::Io {
            context: format!("cannot write {}", path.display()),
            source,
        });
    }
    let store = store_for(url)?;
    store
        .put(&path_in_store(url)?, bytes.into())
        .await
        .map(|_| ())
        .map_err(|source| EngineError::ObjectStore {
            context: format!("cannot write {url}"),
            source,
        })
}

/// Deletes the object at `url` (nothing there is fine).
pub async fn delete_object(url: &Url) -> Result<()> {
    if url.scheme() == "file" {
        let path = local_path(url)?;
        return match std::fs::remove_file(&path) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(EngineError::Io {
                context: format!("cannot remove {}", path.display()),
                source,
            }),
            _ => Ok(()),
        };
    }
    let store = store_for(url)?;
    match store.delete(&path_in_store(url)?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(source) => Err(EngineError::ObjectStore {
            context: format!("cannot delete {url}"),
            source,
        }),
    }
}

/// How often [`append_line`] retries when another writer changed the object in between.
const APPEND_ATTEMPTS: usize = 20;

/// Appends `line` and a newline to the object at `url`. A local file is appended to with one
/// write (concurrent writers do not interleave); an object store cannot append, so the object is
/// read and written back with a conditional put (if it is still the version read, or absent),
/// retried when a concurrent writer got there first: no writer's line is lost.
pub async fn append_line(url: &Url, line: &str) -> Result<()> {
    use object_store::{PutMode, PutOptions, UpdateVersion};
    if url.scheme() == "file" {
        use std::io::Write as _;
        let path = local_path(url)?;
        let io = |source| EngineError::Io {
            context: format!("cannot append to {}", path.display()),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        return file.write_all(format!("{line}\n").as_bytes()).map_err(io);
    }
    let store = store_for(url)?;
    let path = path_in_store(url)?;
    let failed = |source| EngineError::ObjectStore {
        context: format!("cannot append to {url}"),
        source,
    };
    for _ in 0..APPEND_ATTEMPTS {
        let (mut content, mode) = match store.get(&path).await {
            Ok(existing) => {
                let version = UpdateVersion {
                    e_tag: existing.meta.e_tag.clone(),
                    version: existing.meta.version.clone(),
                };
                let bytes = existing.bytes().await.map_err(failed)?;
                (bytes.to_vec(), PutMode::Update(version))
            }
            Err(object_store::Error::NotFound { .. }) => (Vec::new(), PutMode::Create),
            Err(source) => return Err(failed(source)),
        };
        content.extend_from_slice(line.as_bytes());
        content.push(b'\n');
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match store.put_opts(&path, content.into(), options).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => continue,
            Err(source) => return Err(failed(source)),
        }
    }
    Err(EngineError::Storage {
        location: url.to_string(),
        message: format!(
            "other writers changed the object {APPEND_ATTEMPTS} times while a line was appended"
        ),
    })
}

/// Fails at once, naming `url` and with a short cause, when its store cannot be reached or
/// refuses the credentials: a run checks its warehouse before it writes anything, so a wrong
/// key is one error instead of a failure halfway through (and its records and events failing
/// after it). Local folders are not checked (they may not exist yet).
pub async fn check_access(url: &Url) -> Result<()> {
    if !is_cloud(url) {
        return Ok(());
    }
    let store = store_for(url)?;
    let prefix = path_in_store(url)?;
    match store.list_with_delimiter(Some(&prefix)).await {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(error) => Err(EngineError::Storage {
            location: url.to_string(),
            message: format!("cannot access it: {}", short_cause(&error)),
        }),
    }
}

/// An error in one line for the user: when an object store's failure is among its causes
/// (delta-rs and the Parquet writer wrap them, e.g. `Failed to parse parquet: External: ...`),
/// that failure as [`short_cause`] says it; otherwise the error's own text.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(store_error) = current.downcast_ref::<object_store::Error>() {
            return format!("the object store failed: {}", short_cause(store_error));
        }
        // Writers that go through `AsyncWrite` wrap the store's error in an `io::Error`, whose
        // `source()` skips the wrapped error itself; look inside.
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<object_store::Error>())
        {
            return format!("the object store failed: {}", short_cause(inner));
        }
        cause = current.source();
    }
    error.to_string()
}

/// An `object_store` error in one line: what kind of failure, without the server's response
/// body (XML that may run over many lines).
pub fn short_cause(error: &object_store::Error) -> String {
    match error {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            "access denied: the store refused the credentials or they lack permission \
             (check the account, key or token)"
                .to_string()
        }
        other => {
            let text = other.to_string();
            let cut = text
                .find(": <?xml")
                .or_else(|| text.find('\n'))
                .unwrap_or(text.len());
            let mut line = text[..cut].to_string();
            if text.contains("403 Forbidden") {
                line.push_str(" (access denied: check the account, key or token)");
            }
            line
        }
    }
}

fn local_path(url: &Url) -> Result<std::path::PathBuf> {
    url.to_file_path().map_err(|()| EngineError::Location {
        location: url.to_string(),
        message: "not a local path".to_string(),
    })
}

/// A cloud URL without a trailing slash may name an object or a "folder" (every object under
/// that prefix): object stores do not say which, as a local filesystem does. When there is no
/// object at exactly that key the URL is taken as the folder (with a trailing slash), so
/// `s3://bucket/tables/events` reads the files under it, as the same path on disk would.
pub async fn folder_unless_object(url: &Url) -> Result<Url> {
    if !is_cloud(url) || url.path().ends_with('/') || url.path().contains(['*', '?', '[']) {
        return Ok(url.clone());
    }
    let store = store_for(url)?;
    let path = path_in_store(url)?;
    let as_folder = || {
        let mut folder = url.clone();
        crate::location::ensure_trailing_slash(&mut folder);
        folder
    };
    // List first: one page of one LIST says whether anything lies under `path/`. Asking for
    // the folder's key first (a HEAD) would be one request too, but some S3-compatible servers
    // answer a HEAD of a key that is also a prefix with an error instead of 404 (s3s-fs does).
    let cannot_read = |source| EngineError::ObjectStore {
        context: format!("cannot read {url}"),
        source,
    };
    if let Some(first) = store.list(Some(&path)).next().await {
        first.map_err(cannot_read)?;
        return Ok(as_folder());
    }
    match store.head(&path).await {
        Ok(_) => Ok(url.clone()),
        // Neither an object nor a folder: the caller's listing names the empty location.
        Err(object_store::Error::NotFound { .. }) => Ok(as_folder()),
        Err(source) => Err(cannot_read(source)),
    }
}

/// True when `url` names a cloud object store (not a local path).
pub fn is_cloud(url: &Url) -> bool {
    CLOUD_SCHEMES.contains(&url.scheme())
}

/// `scheme://authority` of a URL: the key stores and options are kept under (DataFusion's
/// registry uses the same key).
fn root_of(url: &Url) -> Result<String> {
    match url.scheme() {
        "file" => Ok("file://".to_string()),
        scheme if CLOUD_SCHEMES.contains(&scheme) => {
            let authority = url.authority();
            if authority.is_empty() {
                return Err(EngineError::Location {
                    location: url.to_string(),
                    message: "no bucket or container in the URL".to_string(),
                });
            }
            Ok(format!("{scheme}://{authority}"))
        }
        other => Err(EngineError::Location {
            location: url.to_string(),
            message: format!(
                "unsupported scheme '{other}': use a local path, file://, s3://, az://, \
                 abfss://, or gs://"
            ),
        }),
    }
}

/// The root a `[storage."URL"]` table names; a URL with a path is refused (options are per
/// bucket or container).
fn root_of_configured(location: &str, origin: &str) -> Result<String> {
    let refuse = |message: String| EngineError::Storage {
        location: format!("[storage.\"{location}\"] in {origin}"),
        message,
    };
    let url = Url::parse(location).map_err(|e| refuse(format!("not a URL: {e}")))?;
    if !is_cloud(&url) {
        return Err(refuse(format!(
            "'{}' is not an object store scheme (s3, s3a, az, azure, abfs, abfss, adl, gs)",
            url.scheme()
        )));
    }
    let root = root_of(&url).map_err(|e| refuse(e.to_string()))?;
    if !matches!(url.path(), "" | "/") {
        return Err(refuse(format!(
            "options apply to a whole bucket or container: write \"{root}\""
        )));
    }
    Ok(root)
}

/// Builds the store for `root` from the environment, Lakeforge's bounded retries and timeouts,
/// and `options` (which override both). The message of an error names the bad key, never a
/// value.
fn build_store(
    root: &str,
    options: &BTreeMap<String, String>,
) -> std::result::Result<Arc<dyn ObjectStore>, String> {
    if root == "file://" {
        if let Some(key) = options.keys().next() {
            return Err(format!("local files take no options (got '{key}')"));
        }
        return Ok(Arc::new(LocalFileSystem::new()));
    }
    let url = Url::parse(root).map_err(|e| e.to_string())?;
    let (scheme, _) = ObjectStoreScheme::parse(&url).map_err(|e| e.to_string())?;
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    };
    let unknown = |key: &str, store: &str| {
        format!(
            "unknown option '{key}' for {store} (see object_store's {store} configuration keys)"
        )
    };
    let invalid = |e: object_store::Error| without_values(&e.to_string());
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = AmazonS3Builder::from_env()
                .with_url(root)
                .with_retry(retry)
                .with_config(
                    AmazonS3ConfigKey::Client(ConnectTimeout),
                    DEFAULT_CONNECT_TIMEOUT,
                )
                .with_config(AmazonS3ConfigKey::Client(Timeout), DEFAULT_REQUEST_TIMEOUT);
            for (key, value) in options {
                let key: AmazonS3ConfigKey = key.parse().map_err(|_| unknown(key, "S3"))?;
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(invalid)?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_url(root)
                .with_retry(retry)
                .with_config(
                    AzureConfigKey::Client(ConnectTimeout),
                    DEFAULT_CONNECT_TIMEOUT,
                )
                .with_config(AzureConfigKey::Client(Timeout), DEFAULT_REQUEST_TIMEOUT);
            for (key, value) in options {
                let key: AzureConfigKey = key.parse().map_err(|_| unknown(key, "Azure"))?;
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(invalid)?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_url(root)
                .with_retry(retry)
                .with_config(
                    GoogleConfigKey::Client(ConnectTimeout),
                    DEFAULT_CONNECT_TIMEOUT,
                )
                .with_config(GoogleConfigKey::Client(Timeout), DEFAULT_REQUEST_TIMEOUT);
            for (key, value) in options {
                let key: GoogleConfigKey = key.parse().map_err(|_| unknown(key, "GCS"))?;
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(invalid)?)
        }
        other => return Err(format!("unsupported store {other:?}")),
    };
    Ok(store)
}

use object_store::ClientConfigKey::{ConnectTimeout, Timeout};

/// `object_store`'s configuration errors quote the offending value (`Unable to parse
/// "VALUE" as ...`); a value may be a secret, so quoted parts are replaced.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"<value>");
            } else {
                out.push('"');
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// A DataFusion session's object store registry: the stores DataFusion and delta-rs register
/// for this session (delta-rs registers each table's store under a `delta-rs://` URL), and the
/// process's stores for every other URL.
#[derive(Default)]
pub struct SessionStores {
    registered: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl fmt::Debug for SessionStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let registered = self
            .registered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.debug_struct("SessionStores")
            .field("registered", &registered.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// DataFusion's key for a URL: `scheme://authority`.
fn registry_key(url: &Url) -> String {
    format!("{}://{}", url.scheme(), url.authority())
}

impl ObjectStoreRegistry for SessionStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.registered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(registry_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.registered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&registry_key(url))
            .ok_or_else(|| {
                DataFusionError::Execution(format!("no object store registered for {url}"))
            })
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Some(store) = self
            .registered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&registry_key(url))
        {
            return Ok(Arc::clone(store));
        }
        store_for(url).map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

/// delta-rs' store factory for the cloud schemes: the process's stores.
#[derive(Debug)]
struct DeltaStores;

impl ObjectStoreFactory for DeltaStores {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> deltalake::DeltaResult<(ObjectStoreRef, StorePath)> {
        let to_delta = |e: EngineError| deltalake::DeltaTableError::Generic(e.to_string());
        let store = store_for(url).map_err(to_delta)?;
        let path = path_in_store(url).map_err(to_delta)?;
        Ok((store, path))
    }
}

/// delta-rs' log store for the cloud schemes: its default log store, which commits with the
/// store's conditional put (put-if-absent), so concurrent writers never overwrite each other's
/// commit and no locking service (DynamoDB) is needed.
#[derive(Debug)]
struct DeltaLogStores;

impl LogStoreFactory for DeltaLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers the process's stores with delta-rs for the cloud schemes (once; later calls do
/// nothing). Called before any table is opened.
pub fn register_with_delta() {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        let stores: Arc<dyn ObjectStoreFactory> = Arc::new(DeltaStores);
        let log_stores: Arc<dyn LogStoreFactory> = Arc::new(DeltaLogStores);
        for scheme in CLOUD_SCHEMES {
            // `scheme://` always parses: the schemes are constants of URL-safe letters.
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                object_store_factories().insert(url.clone(), Arc::clone(&stores));
                logstore_factories().insert(url, Arc::clone(&log_stores));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(url: &str, options: &[(&str, &str)]) -> BTreeMap<String, BTreeMap<String, String>> {
        let options = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BTreeMap::from([(url.to_string(), options)])
    }

    #[test]
    fn options_are_per_bucket_and_checked_by_key() {
        let ok = StorageOptions::from_tables(
            &tables(
                "s3://bucket",
                &[
                    ("endpoint", "http://127.0.0.1:9000"),
                    ("allow_http", "true"),
                ],
            ),
            "test.toml",
        )
        .unwrap();
        assert_eq!(ok.roots().collect::<Vec<_>>(), ["s3://bucket"]);

        let error =
            StorageOptions::from_tables(&tables("s3://bucket", &[("endpiont", "x")]), "test.toml")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("unknown option 'endpiont' for S3") && error.contains("test.toml"),
            "{error}"
        );

        let error = StorageOptions::from_tables(&tables("s3://bucket/prefix", &[]), "test.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("write \"s3://bucket\""), "{error}");

        let error = StorageOptions::from_tables(&tables("ftp://host", &[]), "test.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not an object store scheme"), "{error}");
    }

    #[test]
    fn gcs_and_azure_options_are_understood() {
        StorageOptions::from_tables(
            &tables(
                "gs://bucket",
                &[("service_account_key", "{}"), ("bucket", "bucket")],
            ),
            "t",
        )
        .map(|_| ())
        .or_else(|e| {
            // A service account key that is not a key is refused by the builder, by key name.
            assert!(!e.to_string().contains("unknown option"), "{e}");
            Ok::<(), EngineError>(())
        })
        .unwrap();
        StorageOptions::from_tables(
            &tables(
                "abfss://data@account.dfs.core.windows.net",
                &[("use_emulator", "true")],
            ),
            "t",
        )
        .unwrap();
    }

    #[test]
    fn bad_values_are_not_quoted_back() {
        let secret = "s3cr3t-value";
        let error =
            StorageOptions::from_tables(&tables("s3://bucket", &[("allow_http", secret)]), "t")
                .unwrap_err()
                .to_string();
        assert!(!error.contains(secret), "{error}");
        let options = StorageOptions::from_tables(
            &tables(
                "s3://bucket",
                &[("access_key_id", "AKID"), ("secret_access_key", secret)],
            ),
            "t",
        )
        .unwrap();
        assert!(!format!("{options:?}").contains(secret));
    }

    #[test]
    fn conflicting_configurations_are_refused() {
        let first =
            StorageOptions::from_tables(&tables("s3://conflict", &[("region", "eu-west-1")]), "a")
                .unwrap();
        let second =
            StorageOptions::from_tables(&tables("s3://conflict", &[("region", "us-east-1")]), "b")
                .unwrap();
        configure(&first).unwrap();
        configure(&first).unwrap();
        let error = configure(&second).unwrap_err().to_string();
        assert!(
            error.contains("configured differently in a and in b"),
            "{error}"
        );
    }

    #[test]
    fn roots_and_paths() {
        let url = Url::parse("abfss://data@acct.dfs.core.windows.net/wh/t/").unwrap();
        assert_eq!(
            root_of(&url).unwrap(),
            "abfss://data@acct.dfs.core.windows.net"
        );
        assert_eq!(path_in_store(&url).unwrap().as_ref(), "wh/t");
        let error = root_of(&Url::parse("hdfs://x/y").unwrap()).unwrap_err();
        assert!(
            error.to_string().contains("unsupported scheme 'hdfs'"),
            "{error}"
        );
    }
}
