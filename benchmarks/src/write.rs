//! The Delta write suite: rows/s and MB/s of publishing the feature dataset (10M rows x 33
//! columns by default) as a Lakeforge product, next to a read-only scan of the same data (the
//! write's own cost) and to other tools rewriting the same files (`benchmarks/peers/write.py`:
//! the Python `deltalake` writer, DuckDB's and Polars' Parquet writers), rounds alternated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::ensure;
use lakeforge_benchmarks::datagen::features::features_schema;
use serde_json::Value;

use crate::dq::{product_field, run_summary};
use crate::harness::{
    Lakeforge, Measurement, Ratio, Round, SuiteReport, feature_dataset, fresh_dir, median,
    record_seconds, run_peer_script,
};

/// How the suite runs.
pub struct WriteOptions {
    /// Rows of the feature dataset.
    pub rows: u64,
    /// Timed rounds.
    pub runs: usize,
    /// Untimed rounds first.
    pub warmup: usize,
    /// Where generated datasets are cached.
    pub data_root: PathBuf,
    /// Where the jobs and their warehouses go (emptied first).
    pub work_dir: PathBuf,
}

/// Runs the suite and returns its report.
pub fn run(lakeforge: &Lakeforge, options: &WriteOptions) -> anyhow::Result<SuiteReport> {
    let suite = WriteSuite {
        lakeforge,
        options,
        jobs: prepare_jobs(options)?,
    };
    let timings = suite.time_rounds()?;
    build_report(options, timings)
}

/// The jobs and folders every round uses.
struct WriteJobs {
    /// The feature dataset's Parquet folder.
    data: PathBuf,
    /// The job counting every column (nothing large written).
    scan: PathBuf,
    /// The job publishing `SELECT *` as a Delta product.
    publish: PathBuf,
    /// Where the peers write their copies.
    peers_out: PathBuf,
}

/// Generates (or reuses) the dataset, empties the work folder and writes the two jobs.
fn prepare_jobs(options: &WriteOptions) -> anyhow::Result<WriteJobs> {
    let (data, _) = feature_dataset("write", &options.data_root, options.rows)?;
    fresh_dir(&options.work_dir)?;
    std::fs::create_dir_all(&options.work_dir)?;
    let source = format!(
        "[sources.features]\nformat = \"parquet\"\npath = {}\n",
        serde_json::to_string(&data.display().to_string())?
    );
    let counts: Vec<String> = features_schema()
        .fields()
        .iter()
        .map(|f| format!("count({0}) AS {0}", f.name()))
        .collect();
    let job = |name: &str, sql: &str| -> anyhow::Result<PathBuf> {
        let path = options.work_dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[job]\nname = \"write_bench_{name}\"\nwarehouse = \"warehouse\"\n\n{source}\n\
                 [[products]]\nname = \"{name}\"\nsql = {}\n",
                serde_json::to_string(sql)?
            ),
        )?;
        Ok(path)
    };
    let scan = job(
        "scan",
        &format!(
            "SELECT count(*) AS row_count, {}, sum(customer_id) AS customer_id_sum FROM features",
            counts.join(", ")
        ),
    )?;
    let publish = job("published", "SELECT * FROM features")?;
    let peers_out = options.work_dir.join("peers");
    Ok(WriteJobs {
        data,
        scan,
        publish,
        peers_out,
    })
}

/// What the rounds measured and saw.
#[derive(Default)]
struct WriteTimings {
    /// Lakeforge's timed seconds per case (`scan`, `publish`).
    lakeforge: BTreeMap<&'static str, Vec<f64>>,
    /// Each peer's timed seconds.
    peers: BTreeMap<String, Vec<f64>>,
    /// Bytes of Parquet Lakeforge's publish wrote (latest round).
    written_bytes: u64,
    /// Bytes each peer wrote (latest round).
    peer_bytes: BTreeMap<String, u64>,
    /// The peers' library versions (latest round).
    versions: Value,
}

/// What the timed rounds need.
struct WriteSuite<'a> {
    lakeforge: &'a Lakeforge,
    options: &'a WriteOptions,
    jobs: WriteJobs,
}

impl WriteSuite<'_> {
    /// The warm-up and timed rounds: Lakeforge's scan and publish, then the peers.
    fn time_rounds(&self) -> anyhow::Result<WriteTimings> {
        let mut timings = WriteTimings::default();
        for round in Round::all(self.options.warmup, self.options.runs) {
            self.time_lakeforge(round, &mut timings)?;
            self.time_peers(round, &mut timings)?;
        }
        Ok(timings)
    }

    /// One round of Lakeforge's two jobs; checks the published row count.
    fn time_lakeforge(&self, round: Round, timings: &mut WriteTimings) -> anyhow::Result<()> {
        let label = round.label();
        for (case, job) in [("scan", &self.jobs.scan), ("publish", &self.jobs.publish)] {
            let (elapsed, stdout) = self.lakeforge.run(
                &self.options.work_dir,
                ["--json".as_ref(), "run".as_ref(), job.as_os_str()],
            )?;
            let summary = run_summary(&stdout)?;
            if case == "publish" {
                let rows = product_field(&summary, "rows")?;
                ensure!(
                    rows == self.options.rows,
                    "the product has {rows} rows, not {}",
                    self.options.rows
                );
                timings.written_bytes = product_field(&summary, "bytes")?;
            }
            eprintln!("  {case:<10} {label:<8} {:>8.3} s", elapsed.as_secs_f64());
            if round.timed {
                record_seconds(&mut timings.lakeforge, case, elapsed.as_secs_f64());
            }
        }
        Ok(())
    }

    /// One round of the peers script; checks the deltalake peer's row count.
    fn time_peers(&self, round: Round, timings: &mut WriteTimings) -> anyhow::Result<()> {
        let label = round.label();
        let peers = run_peers(&self.jobs.data, &self.jobs.peers_out)?;
        timings.versions = peers["versions"].clone();
        ensure!(
            peers["rows"].as_u64() == Some(self.options.rows),
            "the deltalake peer wrote {} rows, not {}",
            peers["rows"],
            self.options.rows
        );
        for (peer, seconds) in peers["seconds"].as_object().into_iter().flatten() {
            let seconds = seconds.as_f64().unwrap_or_default();
            eprintln!("  {peer:<10} {label:<8} {seconds:>8.3} s");
            if round.timed {
                timings.peers.entry(peer.clone()).or_default().push(seconds);
            }
            timings.peer_bytes.insert(
                peer.clone(),
                peers["bytes"][peer.as_str()].as_u64().unwrap_or_default(),
            );
        }
        Ok(())
    }
}

/// Bytes as MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// The suite's report: measurements, ratios to the publish, and the setup.
fn build_report(options: &WriteOptions, mut timings: WriteTimings) -> anyhow::Result<SuiteReport> {
    let measurements = measurements(&mut timings);
    let publish = measurements[1].median_seconds;
    let mut ratios = vec![Ratio::of(&measurements, "publish", "scan", None)?];
    for peer in ["deltalake", "duckdb", "polars"] {
        if measurements.iter().any(|m| m.case == peer) {
            ratios.push(Ratio::of(&measurements, "publish", peer, None)?);
        }
    }
    let mut setup = BTreeMap::new();
    setup.insert(
        "dataset".to_string(),
        Value::from(format!(
            "feature table: {} rows x {} columns, Parquet",
            options.rows,
            features_schema().fields().len()
        )),
    );
    setup.insert(
        "throughput".to_string(),
        Value::from(format!(
            "publish: {:.2} M rows/s, {:.0} MiB/s written (whole run, process start included)",
            options.rows as f64 / publish / 1e6,
            mib(timings.written_bytes) / publish
        )),
    );
    setup.insert(
        "rounds".to_string(),
        Value::from(format!(
            "{} warm-up + {} timed; each round: lakeforge scan, lakeforge publish, then the \
             peers",
            options.warmup, options.runs
        )),
    );
    setup.insert("peers".to_string(), timings.versions);
    Ok(SuiteReport {
        suite: "write".to_string(),
        setup,
        measurements,
        ratios,
        notes: vec![
            "Lakeforge's cases are whole `lakeforge run`s (process start, planning, commit, run \
             record, lineage); the peers are timed inside one Python process."
                .to_string(),
        ],
    })
}

/// Lakeforge's scan and publish, then each peer that ran. The publish stays second: the
/// throughput is read from there.
fn measurements(timings: &mut WriteTimings) -> Vec<Measurement> {
    let measurement = |case: &str, description: String, seconds: Vec<f64>| Measurement {
        case: case.to_string(),
        description,
        median_seconds: median(&seconds),
        seconds,
    };
    let mut measurements = vec![
        measurement(
            "scan",
            "lakeforge run: count every column (+1 sum), nothing written".to_string(),
            timings.lakeforge.remove("scan").unwrap_or_default(),
        ),
        measurement(
            "publish",
            format!(
                "lakeforge run: SELECT * as a Delta product ({:.0} MiB of Parquet)",
                mib(timings.written_bytes)
            ),
            timings.lakeforge.remove("publish").unwrap_or_default(),
        ),
    ];
    for (peer, what) in [
        (
            "deltalake",
            "Python deltalake write_deltalake, streamed (Delta)",
        ),
        (
            "duckdb",
            "DuckDB COPY TO Parquet, per-thread files (no Delta log)",
        ),
        ("polars", "Polars sink_parquet, one file (no Delta log)"),
    ] {
        if let Some(seconds) = timings.peers.remove(peer) {
            measurements.push(measurement(
                peer,
                format!(
                    "{what} ({:.0} MiB)",
                    mib(timings.peer_bytes.get(peer).copied().unwrap_or_default())
                ),
                seconds,
            ));
        }
    }
    measurements
}

fn run_peers(data: &Path, out: &Path) -> anyhow::Result<Value> {
    run_peer_script(
        "write.py",
        [
            "--data".as_ref(),
            data.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ],
    )
}
