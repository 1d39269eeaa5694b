//! The `lakeforge` command line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use clap::{Args, Parser, Subcommand};
use lakeforge_benchmarks::datagen::churn::{ChurnConfig, generate_churn};
use lakeforge_engine::config::parse_byte_size;
use lakeforge_engine::delta::{history, is_delta_table, rollback};
use lakeforge_engine::dq::CheckResult;
use lakeforge_engine::dq::results::list_results;
use lakeforge_engine::job::{
    LoadedJob, RunEvent, RunObserver, RunSummary, location_argument, run_job, table_argument,
    validate_job,
};
use lakeforge_engine::lineage::query::{
    LineageFormat, impact as impact_of, render_impact, render_upstream, upstream,
};
use lakeforge_engine::location::display_location;
use lakeforge_engine::registry::{
    AliasChange, Registry, Requirement, history_batch as registry_history_batch,
    list_batch as registry_list_batch, promote_model, register_model, rollback_alias,
};
use lakeforge_engine::schedule::status::{render_text as render_status, warehouse_status};
use lakeforge_engine::schedule::{DaemonOptions, run_daemon};
use lakeforge_engine::tables::{history_batch, list_runs, run_sql, show_table, text_table};
use lakeforge_engine::{EngineConfig, EngineError, JoinStrategy};
use lakeforge_planner::parse_duration;
use lakeforge_worker::{
    ClusterAddress, CoordinatorOptions, WorkerOptions, run_coordinator, run_worker,
};

/// Lakeforge: SQL-defined ML data products, published as versioned Delta tables.
#[derive(Debug, Parser)]
#[command(
    name = "lakeforge",
    version,
    about = "Lakeforge: SQL-defined ML data products, published as versioned Delta tables"
)]
struct Cli {
    #[command(flatten)]
    engine: EngineArgs,
    /// Print results as JSON lines instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Settings of the embedded engine.
#[derive(Debug, Args)]
struct EngineArgs {
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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job: compute its products and publish each as a new Delta table version.
    Run {
        /// The job spec (TOML).
        job: PathBuf,
        /// Set a ${KEY} variable used in the job's SQL (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// Plan here and execute on the cluster whose coordinator is at df://HOST:PORT.
        #[arg(long, value_name = "df://HOST:PORT", env = "LAKEFORGE_CLUSTER")]
        cluster: Option<String>,
    },
    /// Parse a job and plan every statement without reading data.
    Validate {
        /// The job spec (TOML).
        job: PathBuf,
        /// Set a ${KEY} variable used in the job's SQL (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// Print the logical and physical plan of each check pass and each product.
    Plan {
        /// The job spec (TOML).
        job: PathBuf,
        /// Set a ${KEY} variable used in the job's SQL (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
    /// List a Delta table's versions: version, timestamp, operation, run id, job, rows written.
    History {
        /// The table: a path or URL.
        table: String,
        /// Show at most this many versions, newest first.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print a Delta table's rows.
    Show {
        /// The table: a path or URL.
        table: String,
        /// Read this version instead of the latest (time travel).
        #[arg(long)]
        version: Option<u64>,
        /// Print at most this many rows.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Restore an earlier version of a Delta table as a new version.
    Rollback {
        /// The table: a path or URL.
        table: String,
        /// The version whose contents to restore.
        #[arg(long = "to-version")]
        to_version: u64,
    },
    /// Run ad-hoc SQL over Delta tables and Parquet/CSV/JSON files.
    Sql {
        /// The query.
        query: String,
        /// Make a location queryable as NAME (repeatable).
        #[arg(long = "table", value_name = "NAME=LOCATION")]
        tables: Vec<String>,
    },
    /// Run job files on their schedules and data triggers until SIGTERM or Ctrl-C.
    Schedule {
        /// Job files, or folders of job files (every *.toml directly inside).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Where the operations endpoint listens (/health, /metrics, /api/status); "off" for
        /// none. Port 0 lets the OS pick one (printed at start).
        #[arg(long, default_value = lakeforge_engine::schedule::DEFAULT_HTTP_ADDRESS)]
        http: String,
        /// How often job files are reread and `after` inputs checked for new versions.
        #[arg(long, default_value = "5s")]
        poll: String,
        /// After a stop signal, how long in-flight runs may finish before they are cancelled.
        #[arg(long, default_value = "30s")]
        grace: String,
        /// Run the jobs on the cluster whose coordinator is at df://HOST:PORT.
        #[arg(long, value_name = "df://HOST:PORT", env = "LAKEFORGE_CLUSTER")]
        cluster: Option<String>,
    },
    /// Run a cluster coordinator (an embedded Ballista scheduler) until SIGTERM or Ctrl-C.
    Coordinator {
        /// Where it listens for clients and workers (gRPC). Port 0 lets the OS pick one (printed
        /// at start).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: String,
        /// A worker silent for this long is considered lost; its tasks run again elsewhere.
        #[arg(long, default_value = "60s")]
        worker_timeout: String,
    },
    /// Run a cluster worker (an embedded Ballista executor) until SIGTERM or Ctrl-C.
    Worker {
        /// The coordinator to join, HOST:PORT or df://HOST:PORT.
        #[arg(long)]
        coordinator: String,
        /// The IP address the worker listens on (0.0.0.0: every interface).
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// The host name or IP the coordinator, other workers and clients reach it at
        /// [default: --bind].
        #[arg(long)]
        advertise: Option<String>,
        /// Port of its Arrow Flight service, where other workers and clients fetch results.
        #[arg(long, default_value_t = 50051)]
        flight_port: u16,
        /// Port of its gRPC service, where the coordinator sends tasks.
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks it runs at once [default: number of cores].
        #[arg(long)]
        slots: Option<usize>,
        /// Where it keeps shuffle files [default: a temporary folder].
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Memory its tasks share before spilling, e.g. 8G [default: 70% of physical memory].
        #[arg(long)]
        memory: Option<String>,
        /// How often it reports to the coordinator.
        #[arg(long, default_value = "10s")]
        heartbeat: String,
    },
    /// Show jobs (last run, next run) and products (age against their freshness SLA) from a
    /// warehouse's tables; works without the scheduler.
    Status {
        /// The warehouse: a path or URL.
        warehouse: String,
    },
    /// List the run records of a warehouse, newest first.
    Runs {
        /// The warehouse: a path or URL.
        warehouse: String,
        /// Show at most this many runs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show the history of check results recorded in a warehouse, newest first.
    Dq {
        /// The warehouse: a path or URL.
        warehouse: String,
        /// Only this job's results.
        #[arg(long)]
        job: Option<String>,
        /// Only this check's results.
        #[arg(long)]
        check: Option<String>,
        /// Show at most this many results.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The model registry: register model files, list versions, promote and roll back aliases.
    Model {
        #[command(subcommand)]
        action: ModelCommand,
    },
    /// Column lineage. `lineage TABLE[.COLUMN]`: where a product's columns come from, down to
    /// the original sources, across jobs. `lineage impact LOCATION COLUMN`: every product
    /// column that depends on a column.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Lineage {
        #[command(subcommand)]
        impact: Option<LineageCommand>,
        /// A product table (path or URL), optionally followed by .COLUMN.
        #[arg(required = true)]
        target: Option<String>,
        /// Describe this version of the table instead of the latest.
        #[arg(long)]
        version: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: LineageFormat,
    },
    /// Generate a sample dataset and run its example job end to end.
    Example {
        /// The example to run.
        #[arg(value_parser = ["churn"], default_value = "churn")]
        name: String,
        /// The example's folder (holding job.toml); data is generated under DIR/data.
        #[arg(long, default_value = "examples/churn")]
        dir: PathBuf,
        /// Number of customers to generate.
        #[arg(long, default_value_t = 50_000)]
        customers: u64,
        /// Number of events to generate.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Generate the data here and run the job on the cluster whose coordinator is at
        /// df://HOST:PORT (its workers must see DIR at the same path).
        #[arg(long, value_name = "df://HOST:PORT", env = "LAKEFORGE_CLUSTER")]
        cluster: Option<String>,
    },
}

/// `lakeforge model ...`.
#[derive(Debug, Subcommand)]
enum ModelCommand {
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
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// List registered versions and their aliases.
    List {
        /// Only this model.
        name: Option<String>,
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
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// Show a model's alias changes, oldest first.
    History {
        /// The model.
        name: String,
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
}

/// `lakeforge lineage impact ...`.
#[derive(Debug, Subcommand)]
enum LineageCommand {
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
        format: LineageFormat,
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
}

/// The warehouse a `model` command works on.
#[derive(Debug, Args)]
struct WarehouseArg {
    /// The warehouse: a path or URL.
    #[arg(long, env = "LAKEFORGE_WAREHOUSE", default_value = "warehouse")]
    warehouse: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Library errors already carry their causes in their message.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // delta-rs's kernel logs errors it also returns; Lakeforge reports those itself.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "warn,buoyant_kernel=off,lakeforge_engine::schedule=info",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = engine_config(&cli.engine)?;
    let json = cli.json;
    match cli.command {
        Command::Run { job, vars, cluster } => {
            let loaded = LoadedJob::load(&job, &parse_vars(&vars)?)?;
            let mut config = config;
            config.cluster = cluster.as_deref().map(ClusterAddress::parse).transpose()?;
            let summary = run_with_progress(&loaded, &config, json).await?;
            print_summary(&summary, json);
        }
        Command::Validate { job, vars } => {
            let loaded = LoadedJob::load(&job, &parse_vars(&vars)?)?;
            let reports = validate_job(&loaded, &config).await?;
            println!("job '{}' is valid", loaded.job.name());
            for report in reports.products {
                let columns = report
                    .columns
                    .iter()
                    .map(|(name, ty)| format!("{name}: {ty}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let state = if report.table_exists {
                    "existing table"
                } else {
                    "new table"
                };
                println!(
                    "  product {} -> {} ({state})\n    {columns}",
                    report.name, report.table
                );
            }
        }
        Command::Plan { job, vars } => {
            let loaded = LoadedJob::load(&job, &parse_vars(&vars)?)?;
            let reports = validate_job(&loaded, &config).await?;
            for pass in reports.check_passes {
                println!("== checks on {} (one pass)", pass.dataset);
                println!("-- logical plan\n{}", pass.logical_plan);
                println!("-- physical plan\n{}", pass.physical_plan);
            }
            for report in reports.products {
                println!("== product {} -> {}", report.name, report.table);
                println!("-- logical plan\n{}", report.logical_plan);
                println!("-- physical plan\n{}", report.physical_plan);
            }
        }
        Command::History { table, limit } => {
            let url = table_argument(&table)?;
            let entries = history(&url, limit).await?;
            print_batches(&[history_batch(&entries)?], json)?;
        }
        Command::Show {
            table,
            version,
            limit,
        } => {
            let url = table_argument(&table)?;
            let batches = show_table(&url, version, limit, &config).await?;
            print_batches(&batches, json)?;
        }
        Command::Rollback { table, to_version } => {
            let url = table_argument(&table)?;
            let run_id = uuid::Uuid::new_v4().to_string();
            let version = rollback(&url, to_version, &run_id).await?;
            println!(
                "restored {} to the contents of version {to_version} as new version {version}",
                display_location(&url)
            );
        }
        Command::Sql { query, tables } => {
            let tables = tables
                .iter()
                .map(|t| {
                    let (name, location) = t
                        .split_once('=')
                        .with_context(|| format!("--table '{t}' must be NAME=LOCATION"))?;
                    Ok((name.trim().to_string(), location_argument(location.trim())?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let batches = run_sql(&query, &tables, &config).await?;
            print_batches(&batches, json)?;
        }
        Command::Schedule {
            paths,
            http,
            poll,
            grace,
            cluster,
        } => {
            let mut config = config;
            config.cluster = cluster.as_deref().map(ClusterAddress::parse).transpose()?;
            schedule_command(paths, &http, &poll, &grace, config).await?
        }
        Command::Coordinator {
            bind,
            worker_timeout,
        } => {
            let bind: std::net::SocketAddr = bind.parse().with_context(|| {
                format!("--bind '{bind}' must be HOST:PORT, e.g. 127.0.0.1:50050")
            })?;
            let worker_timeout = parse_duration(&worker_timeout)
                .map_err(|e| anyhow::anyhow!("--worker-timeout: {e}"))?;
            let options = CoordinatorOptions {
                bind,
                worker_timeout,
            };
            run_coordinator(
                options,
                lakeforge_engine::cluster::extensions(),
                |bound| {
                    println!(
                        "lakeforge coordinator {} listening on {bound} (clients: --cluster df://{bound}, workers: --coordinator {bound})",
                        env!("CARGO_PKG_VERSION")
                    );
                },
                stop_signal(),
            )
            .await?;
            println!("coordinator stopped");
        }
        Command::Worker {
            coordinator,
            bind,
            advertise,
            flight_port,
            grpc_port,
            slots,
            work_dir,
            memory,
            heartbeat,
        } => {
            let options = WorkerOptions {
                coordinator: ClusterAddress::parse(&coordinator)?,
                advertised_host: advertise.unwrap_or_else(|| bind.clone()),
                bind_host: bind,
                flight_port,
                grpc_port,
                slots: slots.unwrap_or(config.target_partitions),
                work_dir,
                memory_limit: memory.as_deref().map(parse_byte_size).transpose()?,
                heartbeat: parse_duration(&heartbeat)
                    .map_err(|e| anyhow::anyhow!("--heartbeat: {e}"))?,
            };
            run_worker(options, lakeforge_engine::cluster::extensions()).await?;
            println!("worker stopped");
        }
        Command::Status { warehouse } => {
            let url = table_argument(&warehouse)?;
            let report = warehouse_status(&url, &config, chrono::Utc::now()).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", render_status(&report));
            }
        }
        Command::Runs { warehouse, limit } => {
            let url = table_argument(&warehouse)?;
            let batches = list_runs(&url, limit, &config).await?;
            print_batches(&batches, json)?;
        }
        Command::Dq {
            warehouse,
            job,
            check,
            limit,
        } => {
            let url = table_argument(&warehouse)?;
            let batches =
                list_results(&url, job.as_deref(), check.as_deref(), limit, &config).await?;
            print_batches(&batches, json)?;
        }
        Command::Model { action } => model_command(action, &config, json).await?,
        Command::Lineage {
            impact,
            target,
            version,
            format,
        } => {
            let json_format = |f: LineageFormat| if json { LineageFormat::Json } else { f };
            match impact {
                Some(LineageCommand::Impact {
                    location,
                    column,
                    depth,
                    direct_only,
                    format,
                    warehouse,
                }) => {
                    let warehouse = location_argument(&warehouse.warehouse)?;
                    let dataset = location_argument(&location)?;
                    let hits =
                        impact_of(&warehouse, &dataset, &column, depth, direct_only, &config)
                            .await?;
                    if hits.is_empty() && !json {
                        eprintln!(
                            "nothing in {} depends on {}.{column}",
                            display_location(&warehouse),
                            display_location(&dataset)
                        );
                    }
                    print!("{}", render_impact(&hits, json_format(format))?);
                }
                None => {
                    let target = target.context("give a table, e.g. `lineage warehouse/t.col`")?;
                    let (table, column) = lineage_target(&target).await?;
                    let tree = upstream(&table, version, column.as_deref()).await?;
                    print!("{}", render_upstream(&tree, json_format(format))?);
                }
            }
        }
        Command::Example {
            name: _,
            dir,
            customers,
            events,
            cluster,
        } => {
            let mut config = config;
            config.cluster = cluster.as_deref().map(ClusterAddress::parse).transpose()?;
            run_example(&dir, customers, events, &config, json).await?;
        }
    }
    Ok(())
}

fn engine_config(args: &EngineArgs) -> anyhow::Result<EngineConfig> {
    let mut config = EngineConfig::default();
    if let Some(partitions) = args.target_partitions {
        if partitions == 0 {
            bail!("--target-partitions must be at least 1");
        }
        config.target_partitions = partitions;
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    config.batch_size = args.batch_size;
    match args.memory_limit.as_deref() {
        None => {}
        Some("none") => config.memory_limit = None,
        Some(text) => config.memory_limit = Some(parse_byte_size(text)?),
    }
    config.joins = JoinStrategy::parse(&args.joins)?;
    Ok(config)
}

/// `lakeforge schedule`: the daemon, stopped by SIGTERM or SIGINT.
async fn schedule_command(
    paths: Vec<PathBuf>,
    http: &str,
    poll: &str,
    grace: &str,
    config: EngineConfig,
) -> anyhow::Result<()> {
    let duration =
        |flag: &str, text: &str| parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"));
    let http = match http {
        "off" | "none" => None,
        address => Some(address.parse().with_context(|| {
            format!("--http: {address:?} is not an address like 127.0.0.1:9464")
        })?),
    };
    let options = DaemonOptions {
        paths,
        http,
        poll_interval: duration("poll", poll)?.max(Duration::from_millis(10)),
        grace: duration("grace", grace)?,
        config,
    };
    run_daemon(options, stop_signal, |ready| {
        match ready.http {
            Some(address) => println!(
                "scheduling {} job(s); operations endpoint on http://{address}",
                ready.jobs
            ),
            None => println!("scheduling {} job(s)", ready.jobs),
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    })
    .await?;
    println!("scheduler stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_vars(vars: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    vars.iter()
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

async fn run_example(
    dir: &Path,
    customers: u64,
    events: u64,
    config: &EngineConfig,
    json: bool,
) -> anyhow::Result<()> {
    let job_path = dir.join("job.toml");
    if !job_path.is_file() {
        bail!(
            "no example job at {}; run this from the repository root or pass --dir",
            job_path.display()
        );
    }
    let data = dir.join("data");
    let churn = ChurnConfig {
        customers,
        events,
        ..ChurnConfig::default()
    };
    let dataset = tokio::task::spawn_blocking(move || generate_churn(&data, &churn)).await??;
    if dataset.generated {
        eprintln!(
            "generated {customers} customers and {events} events under {}",
            dataset.root.display()
        );
    } else {
        eprintln!("reusing the sample data under {}", dataset.root.display());
    }
    let loaded = LoadedJob::load(&job_path, &BTreeMap::new())?;
    register_example_model(dir, &loaded, config).await?;
    let summary = run_with_progress(&loaded, config, json).await?;
    print_summary(&summary, json);
    if !json && let Some(first) = summary.products.first() {
        println!(
            "\nfirst rows of {} (lakeforge show {}):",
            first.name,
            display_location(&first.table)
        );
        let batches = show_table(&first.table, None, 5, config).await?;
        print_batches(&batches, false)?;
    }
    Ok(())
}

async fn run_with_progress(
    loaded: &LoadedJob,
    config: &EngineConfig,
    json: bool,
) -> anyhow::Result<RunSummary> {
    let progress = TerminalProgress::new();
    let summary = run_job(loaded, config, &progress).await;
    progress.finish();
    if let Err(EngineError::RunFailed { run_id, source }) = &summary
        && let EngineError::ChecksFailed { results, .. } = source.as_ref()
    {
        // Show every check's counts before the error line, so the failing ones are in context.
        if json {
            let line = serde_json::json!({
                "run_id": run_id, "job": loaded.job.name(), "status": "failed", "checks": results,
            });
            println!("{line}");
        } else {
            print_checks(results);
        }
    }
    let summary = summary?;
    if let Some(warning) = &summary.record_warning {
        eprintln!("warning: the run succeeded but its record was not written: {warning}");
    }
    Ok(summary)
}

fn print_summary(summary: &RunSummary, json: bool) {
    if json {
        let products: Vec<_> = summary
            .products
            .iter()
            .map(|p| {
                serde_json::json!({
                    "product": p.name, "table": p.table.to_string(), "version": p.version,
                    "rows": p.rows, "files": p.files, "bytes": p.bytes,
                    "duration_ms": p.duration.as_millis() as u64, "quarantined": p.quarantined,
                })
            })
            .collect();
        let line = serde_json::json!({
            "run_id": summary.run_id, "job": summary.job, "status": "succeeded",
            "duration_ms": summary.duration.as_millis() as u64, "products": products,
            "checks": summary.checks,
        });
        println!("{line}");
        return;
    }
    println!(
        "run {} of job '{}' succeeded in {}",
        summary.run_id,
        summary.job,
        format_duration(summary.duration)
    );
    let header = [
        "product", "version", "rows", "files", "size", "time", "table",
    ];
    let rows: Vec<Vec<String>> = summary
        .products
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.version.to_string(),
                p.rows.to_string(),
                p.files.to_string(),
                format_bytes(p.bytes),
                format_duration(p.duration),
                display_location(&p.table),
            ]
        })
        .collect();
    print_table(&header, &rows);
    for product in summary.products.iter().filter(|p| p.quarantined > 0) {
        println!(
            "{} rows of {} quarantined (lakeforge show WAREHOUSE/_lakeforge/quarantine/{})",
            product.quarantined, product.name, product.name
        );
    }
    print_checks(&summary.checks);
}

/// One table of check results per dataset.
fn print_checks(results: &[CheckResult]) {
    let mut datasets: Vec<&str> = Vec::new();
    for result in results {
        if !datasets.contains(&result.dataset.as_str()) {
            datasets.push(&result.dataset);
        }
    }
    for dataset in datasets {
        println!("\nchecks on {dataset}:");
        let header = [
            "check",
            "action",
            "evaluated",
            "failed",
            "%",
            "observed",
            "passed",
            "details",
        ];
        let rows: Vec<Vec<String>> = results
            .iter()
            .filter(|r| r.dataset == dataset)
            .map(|r| {
                vec![
                    r.check.clone(),
                    r.action.clone(),
                    r.evaluated.to_string(),
                    r.failed.to_string(),
                    r.failed_percent()
                        .map(|p| format!("{p:.2}"))
                        .unwrap_or_else(|| "-".to_string()),
                    r.observed
                        .map(|o| {
                            format!("{o:.6}")
                                .trim_end_matches('0')
                                .trim_end_matches('.')
                                .to_string()
                        })
                        .unwrap_or_else(|| "-".to_string()),
                    if r.passed { "yes" } else { "NO" }.to_string(),
                    r.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print_table(&header, &rows);
    }
}

/// Prints left-aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", text_table(header, rows));
}

/// `TABLE` or `TABLE.COLUMN`: the table is the longest prefix that is a Delta table.
async fn lineage_target(target: &str) -> anyhow::Result<(url::Url, Option<String>)> {
    let whole = table_argument(target)?;
    if is_delta_table(&whole).await {
        return Ok((whole, None));
    }
    if let Some((table, column)) = target.rsplit_once('.') {
        let table_url = table_argument(table)?;
        if is_delta_table(&table_url).await {
            return Ok((table_url, Some(column.to_string())));
        }
    }
    bail!(
        "{} is not a Delta table (nor TABLE.COLUMN of one)",
        display_location(&whole)
    )
}

async fn model_command(
    action: ModelCommand,
    config: &EngineConfig,
    json: bool,
) -> anyhow::Result<()> {
    match action {
        ModelCommand::Register {
            file,
            name,
            format,
            metrics,
            training,
            warehouse,
        } => {
            let url = location_argument(&warehouse.warehouse)?;
            let mut parsed = BTreeMap::new();
            for metric in &metrics {
                let (key, value) = metric
                    .split_once('=')
                    .with_context(|| format!("--metric {metric}: expected NAME=VALUE"))?;
                let value: f64 = value
                    .trim()
                    .parse()
                    .with_context(|| format!("--metric {metric}: '{value}' is not a number"))?;
                parsed.insert(key.trim().to_string(), value);
            }
            let registered = register_model(
                &url,
                &file,
                &name,
                format.as_deref(),
                parsed,
                training,
                config,
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": registered.name, "version": registered.version,
                        "format": registered.format.to_string(),
                        "content_hash": registered.content_hash, "artifact": registered.artifact,
                        "features": registered.feature_names,
                    })
                );
            } else {
                println!(
                    "registered {}@{} ({}, {} features, {})",
                    registered.name,
                    registered.version,
                    registered.format,
                    registered.feature_names.len(),
                    registered.content_hash
                );
            }
        }
        ModelCommand::List { name, warehouse } => {
            let url = location_argument(&warehouse.warehouse)?;
            let registry = Registry::load(&url, config).await?;
            print_batches(&[registry_list_batch(&registry, name.as_deref())?], json)?;
        }
        ModelCommand::Promote {
            name,
            version,
            alias,
            requirements,
            warehouse,
        } => {
            let url = location_argument(&warehouse.warehouse)?;
            let requirements = requirements
                .iter()
                .map(|r| Ok(Requirement::parse(r)?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let change = promote_model(&url, &name, version, &alias, &requirements, config).await?;
            print_alias_change(&change, json);
        }
        ModelCommand::Rollback {
            name,
            alias,
            warehouse,
        } => {
            let url = location_argument(&warehouse.warehouse)?;
            let change = rollback_alias(&url, &name, &alias, config).await?;
            print_alias_change(&change, json);
        }
        ModelCommand::History { name, warehouse } => {
            let url = location_argument(&warehouse.warehouse)?;
            let registry = Registry::load(&url, config).await?;
            print_batches(&[registry_history_batch(&registry, &name)?], json)?;
        }
    }
    Ok(())
}

/// The example scores with `churn_risk@production` from its warehouse's registry: on first use,
/// register the example's model file and promote it through a metric gate, as a user would with
/// `lakeforge model register` and `lakeforge model promote`.
async fn register_example_model(
    dir: &Path,
    loaded: &LoadedJob,
    config: &EngineConfig,
) -> anyhow::Result<()> {
    const NAME: &str = "churn_risk";
    let registry = Registry::load(&loaded.warehouse, config).await?;
    if registry.versions(NAME).next().is_some() {
        return Ok(());
    }
    let file = dir.join("models").join("churn_xgb.json");
    // Hold-out AUC reported by tests/fixtures/models/make_models.py, which trained it.
    let metrics = BTreeMap::from([("auc".to_string(), 0.701)]);
    let training = Some("synthetic churn rows (tests/fixtures/models/make_models.py)".to_string());
    let registered = register_model(
        &loaded.warehouse,
        &file,
        NAME,
        Some("xgboost-json"),
        metrics,
        training,
        config,
    )
    .await?;
    let gate = [Requirement::parse("auc>=0.65")?];
    promote_model(
        &loaded.warehouse,
        NAME,
        registered.version,
        "production",
        &gate,
        config,
    )
    .await?;
    eprintln!(
        "registered {} as {NAME}@{} and promoted it to production (lakeforge model list --warehouse {})",
        file.display(),
        registered.version,
        display_location(&loaded.warehouse)
    );
    Ok(())
}

fn print_alias_change(change: &AliasChange, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "name": change.name, "alias": change.alias, "action": change.action,
                "version": change.version, "previous_version": change.previous_version,
                "gate": change.gate,
            })
        );
    } else {
        let previous = change
            .previous_version
            .map_or_else(|| "none".to_string(), |v| v.to_string());
        println!(
            "{} '{}' of model '{}': now version {} (was {previous})",
            change.action, change.alias, change.name, change.version
        );
    }
}

fn print_batches(batches: &[RecordBatch], json: bool) -> anyhow::Result<()> {
    if json {
        let mut writer = arrow::json::LineDelimitedWriter::new(std::io::stdout());
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    } else {
        println!("{}", arrow::util::pretty::pretty_format_batches(batches)?);
    }
    Ok(())
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else {
        format!("{seconds:.2}s")
    }
}

fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// A spinner on stderr showing what a run is doing; silent when stderr is not a terminal.
struct TerminalProgress {
    bar: Option<indicatif::ProgressBar>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl TerminalProgress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        TerminalProgress {
            bar,
            ticker: Mutex::new(None),
        }
    }

    fn stop_ticker(&self) {
        if let Ok(mut ticker) = self.ticker.lock()
            && let Some(handle) = ticker.take()
        {
            handle.abort();
        }
    }

    fn finish(&self) {
        self.stop_ticker();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl RunObserver for TerminalProgress {
    fn on_event(&self, event: RunEvent) {
        let Some(bar) = &self.bar else { return };
        self.stop_ticker();
        match event {
            RunEvent::Planning => bar.set_message("planning"),
            RunEvent::Committing => bar.set_message("committing"),
            RunEvent::Checking { dataset } => bar.set_message(format!("checking {dataset}")),
            RunEvent::Writing { product, rows } => {
                let bar = bar.clone();
                let rows = Arc::clone(&rows);
                let handle = tokio::spawn(async move {
                    loop {
                        bar.set_message(format!(
                            "writing {product}: {} rows",
                            rows.load(Ordering::Relaxed)
                        ));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
                if let Ok(mut ticker) = self.ticker.lock() {
                    *ticker = Some(handle);
                }
            }
        }
    }
}
