//! The command line's grammar (clap) and the conversions from its text to engine types.
//!
//! Every flag of every command is declared here, so `lakeforge --help` and this file are the
//! same thing; the commands in `commands/` receive parsed structs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use lakeforge_engine::config::parse_byte_size;
use lakeforge_engine::lineage::query::LineageFormat;
use lakeforge_engine::location::{resolve_location, resolve_table_location};
use lakeforge_engine::storage::StorageOptions;
use lakeforge_engine::{EngineConfig, JoinStrategy};
use lakeforge_worker::ClusterAddress;
use url::Url;

/// Lakeforge: SQL-defined ML data products, published as versioned Delta tables.
#[derive(Debug, Parser)]
#[command(
    name = "lakeforge",
    version,
    about = "Lakeforge: SQL-defined ML data products, published as versioned Delta tables"
)]
pub struct Cli {
    /// Settings of the embedded engine.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print results as JSON lines instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings of the embedded engine.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Partitions work is split into [default: number of cores].
    #[arg(long, global = true, env = "LAKEFORGE_TARGET_PARTITIONS")]
    target_partitions: Option<usize>,
    /// Rows per Arrow batch.
    #[arg(
        long,
        global = true,
        default_value_t = 8192,
        env = "LAKEFORGE_BATCH_SIZE"
    )]
    batch_size: usize,
    /// Memory operators may use before spilling, e.g. 4G; "none" for no limit
    /// [default: 70% of physical memory].
    #[arg(long, global = true, env = "LAKEFORGE_MEMORY_LIMIT")]
    memory_limit: Option<String>,
    /// How equi-joins run, embedded and on a cluster: "hash" (fastest; each task holds its
    /// build side in memory) or "sort-merge" (slower; spills, for joins larger than memory).
    #[arg(long, global = true, default_value = "hash", env = "LAKEFORGE_JOINS")]
    joins: String,
    /// A TOML file of object-store options, one `[storage."s3://bucket"]` table per bucket or
    /// container (endpoint, region, allow_http, ...); credentials may also come from the
    /// standard AWS_*, AZURE_* and GOOGLE_* environment variables.
    #[arg(long, global = true, value_name = "FILE", env = "LAKEFORGE_STORAGE")]
    storage: Option<PathBuf>,
}

impl EngineArgs {
    /// The engine configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<EngineConfig> {
        let mut config = EngineConfig::default();
        if let Some(partitions) = self.target_partitions {
            if partitions == 0 {
                bail!("--target-partitions must be at least 1");
            }
            config.target_partitions = partitions;
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        config.batch_size = self.batch_size;
        match self.memory_limit.as_deref() {
            None => {}
            Some("none") => config.memory_limit = None,
            Some(text) => config.memory_limit = Some(parse_byte_size(text)?),
        }
        config.joins =
            JoinStrategy::parse(&self.joins).map_err(|e| anyhow::anyhow!("--joins {e}"))?;
        let storage = match &self.storage {
            Some(file) => StorageOptions::from_toml_file(file)
                .map_err(|e| anyhow::anyhow!("--storage: {e}"))?,
            None => StorageOptions::default(),
        };
        lakeforge_engine::storage::configure(&storage)?;
        Ok(config)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job: compute its products and publish each as a new Delta table version.
    Run(RunArgs),
    /// Parse a job and plan every statement without reading data.
    Validate(JobArgs),
    /// Print the logical and physical plan of each check pass and each product.
    Plan(JobArgs),
    /// List a Delta table's versions: version, timestamp, operation, run id, job, rows written.
    History(HistoryArgs),
    /// Print a Delta table's rows.
    Show(ShowArgs),
    /// Restore an earlier version of a Delta table as a new version.
    Rollback(RollbackArgs),
    /// Delete the files of a Delta table that no version within the retention references,
    /// including what failed or killed runs left behind.
    Vacuum(VacuumArgs),
    /// Run ad-hoc SQL over Delta tables and Parquet/CSV/JSON files.
    Sql(SqlArgs),
    /// Run job files on their schedules and data triggers until SIGTERM or Ctrl-C.
    Schedule(ScheduleArgs),
    /// Run a cluster coordinator (an embedded Ballista scheduler) until SIGTERM or Ctrl-C.
    Coordinator(CoordinatorArgs),
    /// Run a cluster worker (an embedded Ballista executor) until SIGTERM or Ctrl-C.
    Worker(WorkerArgs),
    /// Show jobs (last run, next run) and products (age against their freshness SLA) from a
    /// warehouse's tables; works without the scheduler.
    Status(StatusArgs),
    /// List the run records of a warehouse, newest first.
    Runs(RunsArgs),
    /// Show the history of check results recorded in a warehouse, newest first.
    Dq(DqArgs),
    /// The model registry: register model files, list versions, promote and roll back aliases.
    Model {
        /// What to do.
        #[command(subcommand)]
        action: ModelCommand,
    },
    /// Column lineage. `lineage TABLE[.COLUMN]`: where a product's columns come from, down to
    /// the original sources, across jobs. `lineage impact LOCATION COLUMN`: every product
    /// column that depends on a column.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Lineage(LineageArgs),
    /// Generate a sample dataset and run its example job end to end.
    Example(ExampleArgs),
}

/// A job file and its variables.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job spec (TOML).
    pub job: PathBuf,
    /// Set a ${KEY} variable used in the job's SQL and locations (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Apply the job's [profiles.NAME] (its warehouse and vars).
    #[arg(long, value_name = "NAME", env = "LAKEFORGE_PROFILE")]
    pub profile: Option<String>,
}

impl JobArgs {
    /// The `--var` flags as a map.
    pub fn vars(&self) -> anyhow::Result<BTreeMap<String, String>> {
        self.vars
            .iter()
            .map(|v| {
                let (key, value) = v
                    .split_once('=')
                    .with_context(|| format!("--var '{v}' must be KEY=VALUE"))?;
                if key.trim().is_empty() {
                    bail!("--var '{v}' has an empty KEY");
                }
                Ok((key.trim().to_string(), value.to_string()))
            })
            .collect()
    }
}

/// `lakeforge run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job and its variables.
    #[command(flatten)]
    pub job: JobArgs,
    /// The cluster to run on.
    #[command(flatten)]
    pub cluster: ClusterArg,
}

/// `--cluster df://HOST:PORT`.
#[derive(Debug, Args)]
pub struct ClusterArg {
    /// Plan here and execute on the cluster whose coordinator is at df://HOST:PORT.
    #[arg(long, value_name = "df://HOST:PORT", env = "LAKEFORGE_CLUSTER")]
    cluster: Option<String>,
    /// How long to wait for a worker to register with the coordinator before failing.
    #[arg(
        long,
        value_name = "DURATION",
        env = "LAKEFORGE_WORKER_WAIT",
        default_value = "60s"
    )]
    worker_wait: String,
}

impl ClusterArg {
    /// `config` set to run on the cluster, when one was given.
    pub fn apply(&self, config: EngineConfig) -> anyhow::Result<EngineConfig> {
        on_cluster(config, self.cluster.as_deref(), &self.worker_wait)
    }
}

/// `config` set to run on the cluster whose coordinator is at `address`, when one is given.
fn on_cluster(
    mut config: EngineConfig,
    address: Option<&str>,
    worker_wait: &str,
) -> anyhow::Result<EngineConfig> {
    config.cluster = address.map(ClusterAddress::parse).transpose()?;
    config.worker_wait = duration_flag("worker-wait", worker_wait)?;
    Ok(config)
}

/// `lakeforge history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The table: a path or URL.
    pub table: String,
    /// Show at most this many versions, newest first.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `lakeforge show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The table: a path or URL.
    pub table: String,
    /// Read this version instead of the latest (time travel).
    #[arg(long)]
    pub version: Option<u64>,
    /// Print at most this many rows.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// `lakeforge rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The table: a path or URL.
    pub table: String,
    /// The version whose contents to restore.
    #[arg(long = "to-version")]
    pub to_version: u64,
}

/// `lakeforge vacuum`.
#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// The table: a path or URL.
    pub table: String,
    /// Keep every file a version of this age or younger references, and unreferenced files
    /// younger than this (runs may still be writing them).
    #[arg(long, default_value = "168h")]
    pub retain: String,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow a retention shorter than the table's delta.deletedFileRetentionDuration (7 days
    /// unless set): readers of older versions and runs writing at that moment may lose files.
    #[arg(long)]
    pub force: bool,
}

/// `lakeforge sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL: one statement, or several separated by `;`, run in order in one session (a
    /// view one creates is seen by the next). With --json and more than one statement, each
    /// statement prints one line {"statement", "sql", "elapsed_ms", "rows"} instead of its
    /// rows as JSON lines.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub query: Option<String>,
    /// Read the SQL from this file instead ("-": standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// After each statement, print on standard error how long it took and how many rows it
    /// returned.
    #[arg(long)]
    pub timing: bool,
    /// Make a location queryable as NAME (repeatable).
    #[arg(long = "table", value_name = "NAME=LOCATION")]
    pub tables: Vec<String>,
}

/// `lakeforge schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Job files, or folders of job files (every *.toml directly inside).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Where the operations endpoint listens (/health, /metrics, /api/status); "off" for
    /// none. Port 0 lets the OS pick one (printed at start).
    #[arg(long, default_value = lakeforge_engine::schedule::DEFAULT_HTTP_ADDRESS)]
    pub http: String,
    /// How often job files are reread and `after` inputs checked for new versions.
    #[arg(long, default_value = "5s")]
    pub poll: String,
    /// After a stop signal, how long in-flight runs may finish before they are cancelled.
    #[arg(long, default_value = "30s")]
    pub grace: String,
    /// Apply each job's [profiles.NAME] (a job without that profile fails to load).
    #[arg(long, value_name = "NAME", env = "LAKEFORGE_PROFILE")]
    pub profile: Option<String>,
    /// Run the jobs on the cluster whose coordinator is at df://HOST:PORT.
    #[command(flatten)]
    pub cluster: ClusterArg,
}

/// `lakeforge coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Where it listens for clients and workers (gRPC). Port 0 lets the OS pick one (printed
    /// at start).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: String,
    /// A worker silent for this long is considered lost; its tasks run again elsewhere.
    #[arg(long, default_value = "60s")]
    pub worker_timeout: String,
}

/// `lakeforge worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The coordinator to join, HOST:PORT or df://HOST:PORT.
    #[arg(long)]
    pub coordinator: String,
    /// The IP address the worker listens on (0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// The host name or IP the coordinator, other workers and clients reach it at
    /// [default: --bind].
    #[arg(long)]
    pub advertise: Option<String>,
    /// Port of its Arrow Flight service, where other workers and clients fetch results.
    #[arg(long, default_value_t = 50051)]
    pub flight_port: u16,
    /// Port of its gRPC service, where the coordinator sends tasks.
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Tasks it runs at once [default: number of cores].
    #[arg(long)]
    pub slots: Option<usize>,
    /// Where it keeps shuffle files [default: a temporary folder].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Memory its tasks share before spilling, e.g. 8G [default: 70% of physical memory].
    #[arg(long)]
    pub memory: Option<String>,
    /// How often it reports to the coordinator.
    #[arg(long, default_value = "10s")]
    pub heartbeat: String,
}

/// `lakeforge status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The warehouse: a path or URL.
    pub warehouse: String,
}

/// `lakeforge runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The warehouse: a path or URL.
    pub warehouse: String,
    /// Show at most this many runs.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// `lakeforge dq`.
#[derive(Debug, Args)]
pub struct DqArgs {
    /// The warehouse: a path or URL.
    pub warehouse: String,
    /// Only this job's results.
    #[arg(long)]
    pub job: Option<String>,
    /// Only this check's results.
    #[arg(long)]
    pub check: Option<String>,
    /// Show at most this many results.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// `lakeforge lineage`.
#[derive(Debug, Args)]
pub struct LineageArgs {
    /// `impact`, or nothing for a product's upstream lineage.
    #[command(subcommand)]
    pub impact: Option<LineageCommand>,
    /// A product table (path or URL), optionally followed by .COLUMN.
    #[arg(required = true)]
    pub target: Option<String>,
    /// Describe this version of the table instead of the latest.
    #[arg(long)]
    pub version: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
}

/// `lakeforge example`.
#[derive(Debug, Args)]
pub struct ExampleArgs {
    /// The example to run.
    #[arg(value_parser = ["churn"], default_value = "churn")]
    pub name: String,
    /// The example's folder (holding job.toml); data is generated under DIR/data.
    #[arg(long, default_value = "examples/churn")]
    pub dir: PathBuf,
    /// Number of customers to generate.
    #[arg(long, default_value_t = 50_000)]
    pub customers: u64,
    /// Number of events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Generate the data here and run the job on the cluster whose coordinator is at
    /// df://HOST:PORT (its workers must see DIR at the same path).
    #[arg(long, value_name = "df://HOST:PORT", env = "LAKEFORGE_CLUSTER")]
    pub cluster: Option<String>,
    /// How long to wait for a worker to register with the coordinator before failing.
    #[arg(
        long,
        value_name = "DURATION",
        env = "LAKEFORGE_WORKER_WAIT",
        default_value = "60s"
    )]
    pub worker_wait: String,
}

impl ExampleArgs {
    /// `config` set to run on the cluster, when one was given.
    pub fn apply(&self, config: EngineConfig) -> anyhow::Result<EngineConfig> {
        on_cluster(config, self.cluster.as_deref(), &self.worker_wait)
    }
}

/// `lakeforge model ...`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Register a model file as the next version of NAME (the file is copied into the
    /// warehouse).
    Register {
        /// The model file: XGBoost .json/.ubj, LightGBM .txt, or linear JSON.
        file: PathBuf,
        /// The model's name.
        #[arg(long)]
        name: String,
        /// The file's format: xgboost-json, xgboost-ubj, lightgbm, linear [default: guessed].
        #[arg(long)]
        format: Option<String>,
        /// A metric of this version, e.g. auc=0.87 (repeatable).
        #[arg(long = "metric", alias = "metrics", value_name = "NAME=VALUE")]
        metrics: Vec<String>,
        /// The training dataset: a table path or URL, optionally @VERSION.
        #[arg(long)]
        training: Option<String>,
        /// The warehouse.
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// List registered versions and their aliases.
    List {
        /// Only this model.
        name: Option<String>,
        /// The warehouse.
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// Point an alias (e.g. production) at a version, if its metrics pass the gates.
    Promote {
        /// The model.
        name: String,
        /// The version.
        version: u64,
        /// The alias.
        #[arg(long)]
        alias: String,
        /// A gate on the version's metrics, e.g. auc>=0.8 (repeatable).
        #[arg(long = "require", value_name = "METRIC>=VALUE")]
        requirements: Vec<String>,
        /// The warehouse.
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// Point an alias back at the version it had before its latest promotion.
    Rollback {
        /// The model.
        name: String,
        /// The alias.
        #[arg(long)]
        alias: String,
        /// The warehouse.
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// Show a model's alias changes, oldest first.
    History {
        /// The model.
        name: String,
        /// The warehouse.
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
}

/// `lakeforge lineage impact ...`.
#[derive(Debug, Subcommand)]
pub enum LineageCommand {
    /// Every product column that depends on COLUMN of LOCATION (a source file or folder, or a
    /// table), directly or through other products, with the hops and their types; uses each
    /// product's latest version recorded in the warehouse's lineage table.
    Impact {
        /// The dataset: a path or URL.
        location: String,
        /// The column (a nested field as `column.field`).
        column: String,
        /// Follow at most this many hops.
        #[arg(long, default_value_t = 32)]
        depth: usize,
        /// Only DIRECT dependencies (values computed from the column), not filters, joins,
        /// grouping, sorting or conditions.
        #[arg(long)]
        direct_only: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
        /// The warehouse.
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
}

/// The warehouse a `model` command works on.
#[derive(Debug, Args)]
pub struct WarehouseArg {
    /// The warehouse: a path or URL.
    #[arg(long, env = "LAKEFORGE_WAREHOUSE", default_value = "warehouse")]
    pub warehouse: String,
}

/// A duration flag (`30s`, `5m`, `1h30m`...), its error naming the flag.
pub fn duration_flag(flag: &str, text: &str) -> anyhow::Result<Duration> {
    lakeforge_planner::parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

/// A table argument: a path relative to the working directory, or a URL.
pub fn table_argument(text: &str) -> anyhow::Result<Url> {
    let cwd = working_directory()?;
    Ok(resolve_table_location(&cwd, text)?)
}

/// A location argument that may be a file or a folder: a path relative to the working
/// directory, or a URL.
pub fn location_argument(text: &str) -> anyhow::Result<Url> {
    let cwd = working_directory()?;
    Ok(resolve_location(&cwd, text)?)
}

fn working_directory() -> anyhow::Result<PathBuf> {
    std::env::current_dir().map_err(|e| anyhow::anyhow!("cannot read the working directory: {e}"))
}

/// `--format` of the lineage commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// An indented tree (upstream) or a list of hops (impact).
    Text,
    /// JSON, for scripts.
    Json,
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

impl FormatArg {
    /// The engine's format; `--json` makes it JSON whatever `--format` says.
    pub fn format(self, json: bool) -> LineageFormat {
        match self {
            _ if json => LineageFormat::Json,
            FormatArg::Text => LineageFormat::Text,
            FormatArg::Json => LineageFormat::Json,
            FormatArg::Dot => LineageFormat::Dot,
            FormatArg::Mermaid => LineageFormat::Mermaid,
        }
    }
}
