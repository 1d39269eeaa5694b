//! The scoring suite: a 500-tree depth-6 XGBoost model and a 500-tree LightGBM model over the
//! feature dataset (23 numeric features), Lakeforge's native `predict` against the libraries'
//! own predict, in the same invocation.
//!
//! `benchmarks/peers/scoring.py` (its own pinned virtual environment) trains the models once,
//! times the libraries' predict over an in-memory matrix with 1 thread and with every core, and
//! returns the predictions of the first 1,000 rows. Lakeforge then runs, alternately:
//! - `scan`: a job summing the 23 features (reading and decoding them, no model);
//! - `xgboost` / `lightgbm`: the same job summing `predict(...)`,
//!
//! each with one partition (one core) and with every core. Its per-core speed is the rows over
//! the scoring time (the model job minus the scan job, so reading Parquet is not charged to the
//! model, as the peers' matrix is already in memory). Lakeforge's predictions of the first 1,000
//! rows must equal the libraries' (XGBoost within 1e-6, LightGBM within 1e-9) before anything is
//! timed.
//!
//! The job a Spark user would write instead runs too (`benchmarks/peers/spark.py scoring`, Spark
//! in local mode): a pandas UDF calling the same library on Arrow batches of the same files,
//! summed; its first 1,000 predictions must equal the library's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::harness::{
    Lakeforge, Measurement, Ratio, SuiteReport, alternate, feature_dataset, fresh_dir, median,
    run_peer_script,
};

/// The numeric features the models read, in order (as in `benchmarks/peers/scoring.py`).
const FEATURES: [&str; 23] = [
    "spend_30d",
    "spend_90d",
    "avg_order_value",
    "sessions_30d",
    "avg_session_minutes",
    "days_since_last_login",
    "days_since_last_purchase",
    "pages_per_session",
    "discount_rate",
    "refund_rate",
    "email_open_rate",
    "push_click_rate",
    "nps_score",
    "satisfaction",
    "cart_abandon_rate",
    "latency_ms_p95",
    "credit_score",
    "income_estimate",
    "age",
    "tenure_days",
    "orders_90d",
    "devices",
    "support_tickets_90d",
];

/// How the suite runs.
pub struct ScoringOptions {
    /// Rows of the feature dataset.
    pub rows: u64,
    /// Timed rounds.
    pub runs: usize,
    /// Untimed rounds first.
    pub warmup: usize,
    /// Where generated datasets (and the trained models) are cached.
    pub data_root: PathBuf,
    /// Where the jobs and their warehouses go (emptied first).
    pub work_dir: PathBuf,
}

/// Runs the suite and returns its report.
pub fn run(lakeforge: &Lakeforge, options: &ScoringOptions) -> anyhow::Result<SuiteReport> {
    let suite = ScoringSuite::prepare(lakeforge, options)?;
    suite.check_parity()?;
    let spark = suite.run_spark_checked()?;
    let mut measurements = suite.time_lakeforge()?;
    let peer_seconds = suite.peers["seconds"]
        .as_object()
        .context("the peers script reported no timings")?;
    measurements.extend(peer_measurements(
        peer_seconds,
        "the library's own predict over an in-memory float64 matrix",
    ));
    let mut notes = Vec::new();
    match &spark {
        Some(spark) => {
            measurements.extend(peer_measurements(
                spark["seconds"].as_object().into_iter().flatten(),
                "Spark local mode: sum of a pandas UDF calling the library's predict on Arrow \
                 batches of the Parquet files (1 thread per task)",
            ));
        }
        None => notes.push("spark did not run: no Java runtime for Spark".to_string()),
    }
    let speeds = suite.speeds(&measurements, spark.is_some())?;
    Ok(suite.build_report(measurements, speeds, notes))
}

/// The data, the trained models and the peers' report every phase uses.
struct ScoringSuite<'a> {
    lakeforge: &'a Lakeforge,
    options: &'a ScoringOptions,
    /// The feature dataset's Parquet folder.
    data: PathBuf,
    /// The peers script's report: timings, check predictions, model paths, versions.
    peers: Value,
    /// The cores the peers' all-threads case used.
    cores: usize,
    /// The trained XGBoost model.
    xgboost: PathBuf,
    /// The trained LightGBM model.
    lightgbm: PathBuf,
}

/// The derived speeds: rows/s per core (for the setup) and the ratios.
struct Speeds {
    throughput: BTreeMap<String, f64>,
    ratios: Vec<Ratio>,
}

/// The features as a `predict` argument list.
fn feature_list() -> String {
    FEATURES.join(", ")
}

impl ScoringSuite<'_> {
    /// Generates (or reuses) the data, trains (or reuses) the models and times the libraries'
    /// own predict, then empties the work folder.
    fn prepare<'a>(
        lakeforge: &'a Lakeforge,
        options: &'a ScoringOptions,
    ) -> anyhow::Result<ScoringSuite<'a>> {
        let (data, _) = feature_dataset("scoring", &options.data_root, options.rows)?;
        let models = options.data_root.join(format!("models-{}", options.rows));

        eprintln!("scoring: the libraries' own predict (benchmarks/peers/scoring.py)");
        let peers = run_peers(&data, &models, options)?;
        let cores = peers["cores"].as_u64().unwrap_or(1) as usize;

        fresh_dir(&options.work_dir)?;
        let model_path = |library: &str| -> anyhow::Result<PathBuf> {
            peers["models"][library]
                .as_str()
                .map(PathBuf::from)
                .with_context(|| format!("the peers script reported no {library} model"))
        };
        let xgboost = model_path("xgboost")?;
        let lightgbm = model_path("lightgbm")?;
        Ok(ScoringSuite {
            lakeforge,
            options,
            data,
            peers,
            cores,
            xgboost,
            lightgbm,
        })
    }

    /// Parity first: Lakeforge's first 1,000 predictions equal the libraries'.
    fn check_parity(&self) -> anyhow::Result<()> {
        let features = feature_list();
        for (library, path, tolerance) in [
            ("xgboost", &self.xgboost, 1e-6),
            ("lightgbm", &self.lightgbm, 1e-9),
        ] {
            let job = write_job(
                &self.options.work_dir,
                &format!("check_{library}"),
                &self.data,
                Some(path),
                &format!(
                    "SELECT customer_id, predict('m', {features}) AS p FROM features ORDER BY customer_id LIMIT 1000"
                ),
            )?;
            let dir = job.parent().map(Path::to_path_buf).unwrap_or_default();
            self.lakeforge
                .run(&dir, ["run".as_ref(), job.as_os_str()])?;
            let (_, shown) = self.lakeforge.run(
                &dir,
                ["--json", "show", "warehouse/scores", "--limit", "1000"],
            )?;
            let mut rows: Vec<Value> = shown
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            rows.sort_by_key(|r| r["customer_id"].as_i64().unwrap_or_default());
            let got: Vec<f64> = rows
                .iter()
                .map(|row| row["p"].as_f64().unwrap_or(f64::NAN))
                .collect();
            ensure_same_predictions(
                library,
                "Lakeforge",
                &got,
                &self.peers["check"][library],
                tolerance,
            )?;
            eprintln!(
                "  {library}: the first 1,000 predictions equal the library's (within {tolerance:e})"
            );
        }
        Ok(())
    }

    /// Spark's pandas-UDF jobs, their first 1,000 predictions checked against the library's;
    /// `None` when Spark cannot run here.
    fn run_spark_checked(&self) -> anyhow::Result<Option<Value>> {
        eprintln!("scoring: Spark local mode, pandas UDFs (benchmarks/peers/spark.py)");
        let spark = run_spark(&self.data, &self.xgboost, &self.lightgbm, self.options)?;
        if let Some(spark) = &spark {
            for library in ["xgboost", "lightgbm"] {
                let got: Vec<f64> = spark["check"][library]
                    .as_array()
                    .context("spark.py returned no check predictions")?
                    .iter()
                    .map(|p| p.as_f64().unwrap_or(f64::NAN))
                    .collect();
                // The same library on the same float64 values: equal up to summation order.
                ensure_same_predictions(
                    library,
                    "the Spark UDF",
                    &got,
                    &self.peers["check"][library],
                    1e-9,
                )?;
                eprintln!("  {library}: Spark's first 1,000 predictions equal the library's");
            }
        }
        Ok(spark)
    }

    /// Lakeforge's scan, XGBoost and LightGBM jobs with one partition, then with every core,
    /// alternated; cases named `lakeforge ...`.
    fn time_lakeforge(&self) -> anyhow::Result<Vec<Measurement>> {
        let work_dir = &self.options.work_dir;
        let features = feature_list();
        let sum_sql = |expression: &str| {
            format!("SELECT count(*) AS n, sum({expression}) AS s FROM features")
        };
        let scan_job = write_job(
            work_dir,
            "scan",
            &self.data,
            None,
            &sum_sql(
                &FEATURES
                    .map(|f| format!("coalesce(CAST({f} AS DOUBLE), 0)"))
                    .join(" + "),
            ),
        )?;
        let xgb_job = write_job(
            work_dir,
            "xgboost",
            &self.data,
            Some(&self.xgboost),
            &sum_sql(&format!("predict('m', {features})")),
        )?;
        let lgb_job = write_job(
            work_dir,
            "lightgbm",
            &self.data,
            Some(&self.lightgbm),
            &sum_sql(&format!("predict('m', {features})")),
        )?;
        let lakeforge = self.lakeforge;
        let run_job = |job: &Path, partitions: Option<usize>| {
            let dir = job.parent().map(Path::to_path_buf).unwrap_or_default();
            let job = job.to_path_buf();
            move || -> anyhow::Result<Duration> {
                let mut args: Vec<String> = Vec::new();
                if let Some(partitions) = partitions {
                    args.extend(["--target-partitions".to_string(), partitions.to_string()]);
                }
                args.extend(["run".to_string(), job.display().to_string()]);
                Ok(lakeforge.run(&dir, &args)?.0)
            }
        };
        let mut measurements = alternate(
            vec![
                (
                    "scan, 1 core",
                    "sum of the 23 features, no model",
                    Box::new(run_job(&scan_job, Some(1))),
                ),
                (
                    "xgboost, 1 core",
                    "sum of predict() with the XGBoost model",
                    Box::new(run_job(&xgb_job, Some(1))),
                ),
                (
                    "lightgbm, 1 core",
                    "sum of predict() with the LightGBM model",
                    Box::new(run_job(&lgb_job, Some(1))),
                ),
                (
                    "scan, all cores",
                    "sum of the 23 features, no model",
                    Box::new(run_job(&scan_job, None)),
                ),
                (
                    "xgboost, all cores",
                    "sum of predict() with the XGBoost model",
                    Box::new(run_job(&xgb_job, None)),
                ),
                (
                    "lightgbm, all cores",
                    "sum of predict() with the LightGBM model",
                    Box::new(run_job(&lgb_job, None)),
                ),
            ],
            self.options.warmup,
            self.options.runs,
        )?;
        for measurement in &mut measurements {
            measurement.case = format!("lakeforge {}", measurement.case);
        }
        Ok(measurements)
    }

    /// Per library: Lakeforge's scoring speed (the model job minus the scan job) against the
    /// library's predict, and (when Spark ran) Lakeforge's whole job against Spark's.
    fn speeds(&self, measurements: &[Measurement], spark_ran: bool) -> anyhow::Result<Speeds> {
        let cores = self.cores;
        let all = format!("{cores} cores");
        let rows = self.options.rows as f64;
        let seconds_of = |case: &str| {
            measurements
                .iter()
                .find(|m| m.case == case)
                .map(|m| m.median_seconds)
                .with_context(|| format!("no case {case}"))
        };
        let mut throughput = BTreeMap::new();
        let mut ratios = Vec::new();
        for library in ["xgboost", "lightgbm"] {
            let scoring_one = seconds_of(&format!("lakeforge {library}, 1 core"))?
                - seconds_of("lakeforge scan, 1 core")?;
            let scoring_all = seconds_of(&format!("lakeforge {library}, all cores"))?
                - seconds_of("lakeforge scan, all cores")?;
            let peer_one = seconds_of(&format!("{library} predict, 1 thread"))?;
            let peer_all = seconds_of(&format!("{library} predict, {cores} threads"))?;
            let per_core = |seconds: f64, used: usize| rows / seconds.max(1e-9) / used as f64;
            throughput.insert(
                format!("{library}: lakeforge rows/s per core (1 core, scan subtracted)"),
                per_core(scoring_one, 1),
            );
            throughput.insert(
                format!("{library}: library rows/s per core (1 thread)"),
                per_core(peer_one, 1),
            );
            throughput.insert(
                format!("{library}: lakeforge rows/s per core ({all}, scan subtracted)"),
                per_core(scoring_all, cores),
            );
            throughput.insert(
                format!("{library}: library rows/s per core ({cores} threads)"),
                per_core(peer_all, cores),
            );
            ratios.push(Ratio::new(
                format!("{library}: lakeforge per-core speed / library's (1 core)"),
                peer_one / scoring_one.max(1e-9),
                None,
            ));
            ratios.push(Ratio::new(
                format!("{library}: lakeforge speed / library's ({all})"),
                peer_all / scoring_all.max(1e-9),
                None,
            ));
            if spark_ran {
                let spark_job = seconds_of(&format!("spark pandas_udf {library}, {cores} cores"))?;
                let ours = seconds_of(&format!("lakeforge {library}, all cores"))?;
                ratios.push(Ratio::new(
                    format!(
                        "{library}: lakeforge job speed / Spark pandas UDF job's ({all}, whole jobs)"
                    ),
                    spark_job / ours.max(1e-9),
                    None,
                ));
            }
        }
        Ok(Speeds { throughput, ratios })
    }

    /// The suite's report: the setup (with the throughputs) and the notes around
    /// `measurements`; `notes` come last.
    fn build_report(
        &self,
        measurements: Vec<Measurement>,
        speeds: Speeds,
        notes: Vec<String>,
    ) -> SuiteReport {
        let mut setup = BTreeMap::new();
        setup.insert(
            "dataset".to_string(),
            Value::from(format!(
                "feature table, {} rows; the models read its 23 numeric features (with NULLs)",
                self.options.rows
            )),
        );
        setup.insert(
            "models".to_string(),
            Value::from(format!(
                "XGBoost {} (500 trees, depth 6, binary:logistic) and LightGBM {} (500 trees, <= 64 leaves, depth 6, binary), trained on a 200,000-row sample",
                self.peers["versions"]["xgboost"].as_str().unwrap_or("?"),
                self.peers["versions"]["lightgbm"].as_str().unwrap_or("?")
            )),
        );
        setup.insert(
            "rounds".to_string(),
            Value::from(format!(
                "{} warm-up + {} timed; Lakeforge cases alternated within each round",
                self.options.warmup, self.options.runs
            )),
        );
        for (key, value) in speeds.throughput {
            setup.insert(key, Value::from(format!("{value:.0}")));
        }
        SuiteReport {
            suite: "scoring".to_string(),
            setup,
            measurements,
            ratios: speeds.ratios,
            notes: [
                "Ratios are speeds (higher is better for Lakeforge): the library's median time \
                 over Lakeforge's scoring time, where Lakeforge's scoring time is its model job \
                 minus its scan job (process start, planning, Parquet reading and the Delta \
                 commit cancel out)."
                    .to_string(),
                "The libraries score a float64 matrix already in memory; Lakeforge reads the \
                 Parquet files and gathers Arrow columns into row blocks inside the plan."
                    .to_string(),
                "The Spark ratios compare whole jobs: Lakeforge's `lakeforge run` (process \
                 start, planning, the Delta commit and the run record included) against the \
                 Spark job's collect() in a session already started (its JVM start is not \
                 counted). Spark's pandas UDF is the iterator form, which loads the model once \
                 per task."
                    .to_string(),
            ]
            .into_iter()
            .chain(notes)
            .collect(),
        }
    }
}

fn write_job(
    work_dir: &Path,
    name: &str,
    data: &Path,
    model: Option<&PathBuf>,
    sql: &str,
) -> anyhow::Result<PathBuf> {
    let dir = work_dir.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let mut text = format!("[job]\nname = \"scoring_bench_{name}\"\nwarehouse = \"warehouse\"\n\n");
    if let Some(model) = model {
        text += &format!(
            "[models.m]\npath = {}\n\n",
            quoted(&model.display().to_string())
        );
    }
    text += &format!(
        "[sources.features]\nformat = \"parquet\"\npath = {}\n\n[[products]]\nname = \"scores\"\nsql = {}\n",
        quoted(&data.display().to_string()),
        quoted(sql)
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn run_peers(data: &Path, models: &Path, options: &ScoringOptions) -> anyhow::Result<Value> {
    let (runs, warmup) = (options.runs.to_string(), options.warmup.to_string());
    run_peer_script(
        "scoring.py",
        [
            "--data".as_ref(),
            data.as_os_str(),
            "--models".as_ref(),
            models.as_os_str(),
            "--runs".as_ref(),
            runs.as_ref(),
            "--warmup".as_ref(),
            warmup.as_ref(),
        ],
    )
}

/// Spark's pandas-UDF scoring jobs (`peers/spark.py scoring`), or `None` when Spark cannot run
/// here (no Java runtime).
fn run_spark(
    data: &Path,
    xgboost: &Path,
    lightgbm: &Path,
    options: &ScoringOptions,
) -> anyhow::Result<Option<Value>> {
    let (runs, warmup) = (options.runs.to_string(), options.warmup.to_string());
    let report = run_peer_script(
        "spark.py",
        [
            "scoring".as_ref(),
            "--data".as_ref(),
            data.as_os_str(),
            "--xgboost".as_ref(),
            xgboost.as_os_str(),
            "--lightgbm".as_ref(),
            lightgbm.as_os_str(),
            "--runs".as_ref(),
            runs.as_ref(),
            "--warmup".as_ref(),
            warmup.as_ref(),
        ],
    )?;
    Ok(report.get("skipped").is_none().then_some(report))
}

/// Fails unless `got` (scored by `scorer`) has the library's predictions `want` (the peers
/// script's check list), each within `tolerance`.
fn ensure_same_predictions(
    library: &str,
    scorer: &str,
    got: &[f64],
    want: &Value,
    tolerance: f64,
) -> anyhow::Result<()> {
    let want = want.as_array().context("no check predictions")?;
    ensure!(
        got.len() == want.len(),
        "{library}: {scorer} returned {} predictions, expected {}",
        got.len(),
        want.len()
    );
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        let want = want.as_f64().unwrap_or(f64::NAN);
        if (got - want).abs() > tolerance {
            bail!("{library}: row {i} scored {got} by {scorer}, {want} by the library");
        }
    }
    Ok(())
}

/// One measurement per case of a peer script's `{"case": [seconds, ...]}` timings.
fn peer_measurements<'a>(
    cases: impl IntoIterator<Item = (&'a String, &'a Value)>,
    description: &str,
) -> Vec<Measurement> {
    cases
        .into_iter()
        .map(|(case, seconds)| {
            let seconds: Vec<f64> = seconds
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            Measurement {
                case: case.clone(),
                description: description.to_string(),
                median_seconds: median(&seconds),
                seconds,
            }
        })
        .collect()
}
