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
    Lakeforge, Measurement, Ratio, SuiteReport, feature_dataset, fresh_dir, median, run_peer_script,
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
    let scan_job = job(
        "scan",
        &format!(
            "SELECT count(*) AS row_count, {}, sum(customer_id) AS customer_id_sum FROM features",
            counts.join(", ")
        ),
    )?;
    let publish_job = job("published", "SELECT * FROM features")?;
    let peers_out = options.work_dir.join("peers");

    let mut lakeforge_times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut peer_times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut written_bytes = 0u64;
    let mut peer_bytes: BTreeMap<String, u64> = BTreeMap::new();
    let mut versions = Value::Null;
    for round in 0..options.warmup + options.runs {
        let timed = round >= options.warmup;
        let label = if timed { "run" } else { "warm-up" };
        for (case, job) in [("scan", &scan_job), ("publish", &publish_job)] {
            let (elapsed, stdout) = lakeforge.run(
                &options.work_dir,
                ["--json".as_ref(), "run".as_ref(), job.as_os_str()],
            )?;
            let summary = run_summary(&stdout)?;
            if case == "publish" {
                let rows = product_field(&summary, "rows")?;
                ensure!(
                    rows == options.rows,
                    "the product has {rows} rows, not {}",
                    options.rows
                );
                written_bytes = product_field(&summary, "bytes")?;
            }
            eprintln!("  {case:<10} {label:<8} {:>8.3} s", elapsed.as_secs_f64());
            if timed {
                lakeforge_times
                    .entry(case)
                    .or_default()
                    .push(elapsed.as_secs_f64());
            }
        }
        let peers = run_peers(&data, &peers_out)?;
        versions = peers["versions"].clone();
        ensure!(
            peers["rows"].as_u64() == Some(options.rows),
            "the deltalake peer wrote {} rows, not {}",
            peers["rows"],
            options.rows
        );
        for (peer, seconds) in peers["seconds"].as_object().into_iter().flatten() {
            let seconds = seconds.as_f64().unwrap_or_default();
            eprintln!("  {peer:<10} {label:<8} {seconds:>8.3} s");
            if timed {
                peer_times.entry(peer.clone()).or_default().push(seconds);
            }
            peer_bytes.insert(
                peer.clone(),
                peers["bytes"][peer.as_str()].as_u64().unwrap_or_default(),
            );
        }
    }

    let measurement = |case: &str, description: String, seconds: Vec<f64>| Measurement {
        case: case.to_string(),
        description,
        median_seconds: median(&seconds),
        seconds,
    };
    let mib = |bytes: u64| bytes as f64 / 1024.0 / 1024.0;
    let mut measurements = vec![
        measurement(
            "scan",
            "lakeforge run: count every column (+1 sum), nothing written".to_string(),
            lakeforge_times.remove("scan").unwrap_or_default(),
        ),
        measurement(
            "publish",
            format!(
                "lakeforge run: SELECT * as a Delta product ({:.0} MiB of Parquet)",
                mib(written_bytes)
            ),
            lakeforge_times.remove("publish").unwrap_or_default(),
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
        if let Some(seconds) = peer_times.remove(peer) {
            measurements.push(measurement(
                peer,
                format!(
                    "{what} ({:.0} MiB)",
                    mib(peer_bytes.get(peer).copied().unwrap_or_default())
                ),
                seconds,
            ));
        }
    }
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
            mib(written_bytes) / publish
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
    setup.insert("peers".to_string(), versions);
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
