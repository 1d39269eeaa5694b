//! `lakeforge-benchmarks`: runs benchmark suites against the `lakeforge` binary on generated
//! data and writes `benchmarks/results/<date>-<host>.{json,md}`.
//!
//! ```text
//! cargo run --release -p lakeforge-benchmarks -- dq            # 10M rows, 1 warm-up + 3 runs
//! cargo run -p lakeforge-benchmarks -- --smoke --out /tmp/r dq # tiny data: checks the harness
//! ```

mod cluster;
mod dq;
mod harness;
mod lineage;
mod scoring;
mod storage;
mod tpch;
mod write;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::harness::{Lakeforge, Machine, Report};

/// Lakeforge's benchmarks: generated data, whole `lakeforge run`s, medians and ratios.
#[derive(Debug, Parser)]
#[command(name = "lakeforge-benchmarks", version)]
struct Cli {
    /// The lakeforge binary to measure [default: the one next to this program, rebuilt first
    /// when launched by `cargo run`].
    #[arg(long, global = true)]
    lakeforge: Option<PathBuf>,
    /// Where generated datasets are cached [default: benchmarks/data].
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// Where the report files go [default: benchmarks/results].
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Timed runs per case (the median is reported).
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    /// Untimed warm-up runs per case.
    #[arg(long, global = true, default_value_t = 1)]
    warmup: usize,
    /// Tiny data, one run, no warm-up: checks that the harness works, measures nothing.
    #[arg(long, global = true)]
    smoke: bool,
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// Data quality: 50 mixed checks vs a plain full scan, and publishing with vs without them.
    Dq {
        /// Rows of the generated feature dataset.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
    },
    /// Scoring: 500-tree XGBoost and LightGBM models in SQL vs the libraries' own predict
    /// (needs python3; installs pinned peers into a virtual environment).
    Scoring {
        /// Rows of the generated feature dataset.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
    /// Lineage: column-lineage extraction time for the 22 TPC-H plans and a 5,000-column
    /// projection, next to DataFusion's planning of the same SQL.
    Lineage,
    /// TPC-H: the 22 queries with Lakeforge (query alone, and as a job writing a Delta
    /// product) and with DuckDB and Polars on the same Parquet files, answers checked against
    /// DuckDB's (needs python3; installs pinned peers into a virtual environment).
    Tpch {
        /// The scale factor (0.1, 1, 10, ...).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
    },
    /// Delta write throughput: the feature dataset published as a product (rows/s, MB/s) vs a
    /// read-only scan and other tools rewriting the same files (needs python3).
    Write {
        /// Rows of the generated feature dataset.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
    },
    /// The cluster: the 22 TPC-H queries as jobs, embedded and on a local cluster (a
    /// coordinator and workers of the same binary on this machine), products compared.
    Cluster {
        /// The scale factor (0.1, 1, 10, ...).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Workers to start.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Object storage: the 22 TPC-H queries as jobs and the Delta write of the feature dataset,
    /// with data and warehouse on a local disk and on an S3 server on this machine,
    /// alternating (data uploaded with boto3; needs python3).
    Storage {
        /// The scale factor (0.1, 1, 10, ...).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Rows of the feature dataset the write case publishes.
        #[arg(long, default_value_t = 2_000_000)]
        write_rows: u64,
        /// The S3 server: `s3s-fs` (Rust; `cargo install`ed into the cache on first use) or
        /// `moto` (Python, in a pinned virtual environment).
        #[arg(long, value_enum, default_value_t = storage::S3ServerKind::Moto)]
        server: storage::S3ServerKind,
    },
    /// Every suite, at its default size, into one report.
    All,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data_root = cli.data.unwrap_or_else(|| crate_dir.join("data"));
    let out = cli.out.unwrap_or_else(|| crate_dir.join("results"));
    let (runs, warmup) = if cli.smoke {
        (1, 0)
    } else {
        (cli.runs.max(1), cli.warmup)
    };
    let lakeforge = Lakeforge::locate(cli.lakeforge)?;
    let (_, version) = lakeforge.run(&data_root_parent(&data_root), ["--version"])?;
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&crate_dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let profile = lakeforge
        .path()
        .parent()
        .and_then(|p| p.file_name())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();

    let work_root = data_root.join("work");
    let dq_suite = |rows: u64| {
        dq::run(
            &lakeforge,
            &dq::DqOptions {
                rows: if cli.smoke { rows.min(20_000) } else { rows },
                runs,
                warmup,
                data_root: data_root.clone(),
                work_dir: work_root.join("dq"),
            },
        )
    };
    let scoring_suite = |rows: u64| {
        scoring::run(
            &lakeforge,
            &scoring::ScoringOptions {
                rows: if cli.smoke { rows.min(20_000) } else { rows },
                runs,
                warmup,
                data_root: data_root.clone(),
                work_dir: work_root.join("scoring"),
            },
        )
    };
    let lineage_suite = || {
        lineage::run(&lineage::LineageOptionsBench {
            runs,
            warmup,
            repeat: if cli.smoke { 1 } else { 20 },
            wide_columns: if cli.smoke { 200 } else { 5_000 },
        })
    };
    let tpch_suite = |sf: f64| {
        tpch::run(
            &lakeforge,
            &tpch::TpchOptions {
                scale_factor: if cli.smoke { sf.min(0.01) } else { sf },
                runs,
                warmup,
                data_root: data_root.clone(),
                work_dir: work_root.join("tpch"),
            },
        )
    };
    let cluster_suite = |sf: f64, workers: usize| {
        cluster::run(
            &lakeforge,
            &cluster::ClusterOptions {
                scale_factor: if cli.smoke { sf.min(0.01) } else { sf },
                // The example's default size at SF 1 (50,000 customers, 1M events).
                example_customers: if cli.smoke { 300 } else { 50_000 },
                runs,
                warmup,
                workers,
                data_root: data_root.clone(),
                work_dir: work_root.join("cluster"),
            },
        )
    };
    let write_suite = |rows: u64| {
        write::run(
            &lakeforge,
            &write::WriteOptions {
                rows: if cli.smoke { rows.min(20_000) } else { rows },
                runs,
                warmup,
                data_root: data_root.clone(),
                work_dir: work_root.join("write"),
            },
        )
    };
    let storage_suite = |sf: f64, write_rows: u64, server: storage::S3ServerKind| {
        storage::run(
            &lakeforge,
            &storage::StorageOptions {
                scale_factor: if cli.smoke { sf.min(0.01) } else { sf },
                write_rows: if cli.smoke {
                    write_rows.min(20_000)
                } else {
                    write_rows
                },
                runs,
                warmup,
                data_root: data_root.clone(),
                work_dir: work_root.join("storage"),
                server,
            },
        )
    };
    let suites = match cli.suite {
        Suite::Dq { rows } => vec![dq_suite(rows)?],
        Suite::Scoring { rows } => vec![scoring_suite(rows)?],
        Suite::Lineage => vec![lineage_suite()?],
        Suite::Tpch { sf } => vec![tpch_suite(sf)?],
        Suite::Write { rows } => vec![write_suite(rows)?],
        Suite::Cluster { sf, workers } => vec![cluster_suite(sf, workers)?],
        Suite::Storage {
            sf,
            write_rows,
            server,
        } => vec![storage_suite(sf, write_rows, server)?],
        Suite::All => vec![
            dq_suite(10_000_000)?,
            scoring_suite(1_000_000)?,
            lineage_suite()?,
            tpch_suite(1.0)?,
            write_suite(10_000_000)?,
            cluster_suite(1.0, 2)?,
            storage_suite(1.0, 2_000_000, storage::S3ServerKind::Moto)?,
        ],
    };
    let report = Report {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: Machine::detect(),
        lakeforge: match commit {
            Some(commit) => format!("{} (commit {commit})", version.trim()),
            None => version.trim().to_string(),
        },
        profile,
        smoke: cli.smoke,
        suites,
    };
    let (json, markdown) = report.write(&out).context("cannot write the report")?;
    println!("{}", report.markdown());
    eprintln!("wrote {} and {}", json.display(), markdown.display());
    Ok(())
}

/// A folder that exists, to run `lakeforge --version` in.
fn data_root_parent(data_root: &std::path::Path) -> PathBuf {
    data_root
        .ancestors()
        .find(|p| p.is_dir())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
