//! The data-quality suite: 50 mixed checks over the feature dataset against a plain full scan
//! of the same data, and publishing a product with and without the same checks.
//!
//! Four Lakeforge jobs run alternately over the same Parquet files, each through the `lakeforge`
//! binary (process start, planning and Delta commits included in every case alike):
//! - `scan`: one product counting the values of every column (plus one sum, so the answer cannot
//!   come from Parquet statistics): reads and decodes every column once;
//! - `checks`: the 50 checks on the source, and a product `count(*)` that Parquet statistics
//!   answer, so the run's work is the checks' single pass (plus the drift reference's column and
//!   the results commit);
//! - `publish`: a product copying the dataset (`SELECT *`) to a Delta table;
//! - `publish_checked`: the same product with the 50 checks on it, some dropping and
//!   quarantining rows;
//! - `great_expectations`: the peer (`benchmarks/peers/gx_checks.py`): Great Expectations with
//!   its pandas data source validating the checks it has expectations for, over the same files;
//!   every one of its results must equal Lakeforge's result of the same check.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use lakeforge_benchmarks::datagen::features::{features_file, features_schema};
use serde_json::Value;

use crate::harness::{
    Lakeforge, Measurement, Ratio, SuiteReport, alternate, feature_dataset, folder_bytes,
    fresh_dir, median, run_peer_script,
};

/// The target: checks cost at most this multiple of a plain scan.
const CHECKS_OVER_SCAN_TARGET: f64 = 1.3;

/// The 50 checks: the TOML body of each (without `on` and `action`) and its action when it is
/// on the published product. On the source, `drop` and `quarantine` become `warn` so that the
/// source is not re-filtered for the product (which would make that case scan twice).
const CHECKS: &[(&str, &str)] = &[
    // not_null x8
    ("kind = \"not_null\"\ncolumn = \"customer_id\"", "fail"),
    ("kind = \"not_null\"\ncolumn = \"updated_at\"", "fail"),
    ("kind = \"not_null\"\ncolumn = \"country\"", "warn"),
    ("kind = \"not_null\"\ncolumn = \"plan\"", "warn"),
    ("kind = \"not_null\"\ncolumn = \"tenure_days\"", "warn"),
    ("kind = \"not_null\"\ncolumn = \"sessions_30d\"", "warn"),
    ("kind = \"not_null\"\ncolumn = \"churned\"", "fail"),
    ("kind = \"not_null\"\ncolumn = \"region\"", "warn"),
    // unique x1
    ("kind = \"unique\"\ncolumn = \"customer_id\"", "fail"),
    // between x11
    (
        "kind = \"between\"\ncolumn = \"age\"\nmin = 18\nmax = 80",
        "quarantine",
    ),
    (
        "kind = \"between\"\ncolumn = \"tenure_days\"\nmin = 0\nmax = 3650",
        "warn",
    ),
    (
        "kind = \"between\"\ncolumn = \"spend_30d\"\nmin = 0\nmax = 100000",
        "warn",
    ),
    (
        "kind = \"between\"\ncolumn = \"credit_score\"\nmin = 300\nmax = 850",
        "fail",
    ),
    (
        "kind = \"between\"\ncolumn = \"nps_score\"\nmin = 0\nmax = 10",
        "warn",
    ),
    (
        "kind = \"between\"\ncolumn = \"satisfaction\"\nmin = 0\nmax = 1",
        "warn",
    ),
    (
        "kind = \"between\"\ncolumn = \"discount_rate\"\nmin = 0\nmax = 0.5",
        "warn",
    ),
    (
        "kind = \"between\"\ncolumn = \"email_open_rate\"\nmin = 0\nmax = 1",
        "warn",
    ),
    (
        "kind = \"between\"\ncolumn = \"devices\"\nmin = 1\nmax = 4",
        "warn",
    ),
    (
        "kind = \"between\"\ncolumn = \"orders_90d\"\nmin = 0\nmax = 1000",
        "warn",
    ),
    (
        "kind = \"between\"\ncolumn = \"latency_ms_p95\"\nmin = 0\nmax = 100000",
        "warn",
    ),
    // in_set x6
    (
        "kind = \"in_set\"\ncolumn = \"country\"\nvalues = [\"US\", \"GB\", \"DE\", \"FR\", \"BR\", \"IN\", \"JP\", \"CA\", \"ES\", \"NL\"]",
        "fail",
    ),
    (
        "kind = \"in_set\"\ncolumn = \"plan\"\nvalues = [\"basic\", \"standard\", \"premium\"]",
        "warn",
    ),
    (
        "kind = \"in_set\"\ncolumn = \"device\"\nvalues = [\"web\", \"ios\", \"android\"]",
        "warn",
    ),
    (
        "kind = \"in_set\"\ncolumn = \"channel\"\nvalues = [\"organic\", \"paid_search\", \"social\", \"referral\", \"email\"]",
        "warn",
    ),
    (
        "kind = \"in_set\"\ncolumn = \"segment\"\nvalues = [\"consumer\", \"smb\", \"enterprise\", \"student\", \"nonprofit\", \"government\"]",
        "warn",
    ),
    (
        "kind = \"in_set\"\ncolumn = \"payment_method\"\nvalues = [\"card\", \"paypal\", \"bank_transfer\", \"gift_card\"]",
        "warn",
    ),
    // regex x2
    (
        "kind = \"regex\"\ncolumn = \"region\"\npattern = \"^r[0-9]{2}$\"",
        "warn",
    ),
    (
        "kind = \"regex\"\ncolumn = \"country\"\npattern = \"^[A-Z]{2}$\"",
        "warn",
    ),
    // expect x8
    (
        "name = \"spend_90d_positive\"\nexpect = \"spend_90d >= 0\"",
        "warn",
    ),
    (
        "name = \"purchase_recency_positive\"\nexpect = \"days_since_last_purchase >= 0\"",
        "warn",
    ),
    (
        "name = \"order_value_plausible\"\nexpect = \"avg_order_value < 200\"",
        "quarantine",
    ),
    (
        "name = \"latency_plausible\"\nexpect = \"latency_ms_p95 < 1000\"",
        "drop",
    ),
    (
        "name = \"cart_abandon_rate_is_rate\"\nexpect = \"cart_abandon_rate BETWEEN 0 AND 1\"",
        "warn",
    ),
    (
        "name = \"big_spenders_are_premium\"\nexpect = \"plan = 'premium' OR spend_30d < 50000\"\nmostly = 0.99",
        "warn",
    ),
    (
        "name = \"pages_positive\"\nexpect = \"pages_per_session > 0\"",
        "warn",
    ),
    (
        "name = \"label_is_binary\"\nexpect = \"churned IN (0, 1)\"",
        "fail",
    ),
    // row_count x1
    ("kind = \"row_count\"\nmin = 1", "fail"),
    // mean x3, stddev x2, min x1, max x1, quantile x2
    (
        "kind = \"mean\"\ncolumn = \"spend_30d\"\nmin = 0\nmax = 1000",
        "warn",
    ),
    (
        "kind = \"mean\"\ncolumn = \"sessions_30d\"\nmin = 5\nmax = 20",
        "warn",
    ),
    (
        "kind = \"mean\"\ncolumn = \"credit_score\"\nmin = 600\nmax = 760",
        "warn",
    ),
    (
        "kind = \"stddev\"\ncolumn = \"spend_30d\"\nmax = 10000",
        "warn",
    ),
    (
        "kind = \"stddev\"\ncolumn = \"age\"\nmin = 5\nmax = 40",
        "warn",
    ),
    ("kind = \"min\"\ncolumn = \"tenure_days\"\nmin = 0", "warn"),
    ("kind = \"max\"\ncolumn = \"age\"\nmax = 120", "warn"),
    (
        "kind = \"quantile\"\ncolumn = \"income_estimate\"\nquantile = 0.5\nmin = 10000\nmax = 200000",
        "warn",
    ),
    (
        "kind = \"quantile\"\ncolumn = \"latency_ms_p95\"\nquantile = 0.99\nmax = 2000",
        "warn",
    ),
    // freshness, schema, drift, anomaly
    (
        "kind = \"freshness\"\ncolumn = \"updated_at\"\nmax_age = \"3650d\"",
        "warn",
    ),
    (
        "kind = \"schema\"\ncolumns = [\"customer_id\", \"churned\", \"updated_at\"]\ntypes = { customer_id = \"bigint\", churned = \"int\" }",
        "fail",
    ),
    (
        "kind = \"drift\"\ncolumn = \"spend_30d\"\nreference = \"reference\"\nmethod = \"psi\"\nthreshold = 0.25",
        "warn",
    ),
    (
        "kind = \"anomaly\"\nmetric = \"row_count\"\nmax_change = 0.5",
        "warn",
    ),
];

/// How the suite runs.
pub struct DqOptions {
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

/// Reads every file under `dir` (untimed), so that each case starts with the dataset in the
/// page cache. Without it, a case that follows Great Expectations (whose pandas frames push the
/// files out of memory) reads from disk and the case after it does not, which favours the
/// second of any two adjacent cases.
fn read_through(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() {
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            std::io::copy(&mut file, &mut std::io::sink())
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
    }
    Ok(())
}

/// Runs the suite and returns its report.
pub fn run(lakeforge: &Lakeforge, options: &DqOptions) -> anyhow::Result<SuiteReport> {
    ensure!(
        CHECKS.len() == 50,
        "the suite must define 50 checks, not {}",
        CHECKS.len()
    );
    let (data, config) = feature_dataset("dq", &options.data_root, options.rows)?;
    let data_bytes = folder_bytes(&data)?;
    fresh_dir(&options.work_dir)?;
    let jobs = write_jobs(&options.work_dir, &data, &features_file(&data, 0))?;
    let rows = options.rows;
    let gx = GreatExpectations::prepare(lakeforge, &jobs.checks, &data, options.runs)?;
    let run_job = |job: &Path, verify: fn(&Value, u64) -> anyhow::Result<()>| {
        let dir = job.parent().map(Path::to_path_buf).unwrap_or_default();
        let job = job.to_path_buf();
        let data = data.clone();
        move || -> anyhow::Result<Duration> {
            read_through(&data)?;
            let (elapsed, stdout) =
                lakeforge.run(&dir, ["--json".as_ref(), "run".as_ref(), job.as_os_str()])?;
            let summary = run_summary(&stdout)?;
            verify(&summary, rows)
                .with_context(|| format!("checking the output of {}", job.display()))?;
            Ok(elapsed)
        }
    };
    let measurements = alternate(
        vec![
            (
                "scan",
                "count every column (+1 sum): plain full scan, no checks",
                Box::new(run_job(&jobs.scan, verify_scan)),
            ),
            (
                "checks",
                "the 50 checks on the source (one pass), product from metadata",
                Box::new(run_job(&jobs.checks, verify_checks)),
            ),
            (
                "publish",
                "SELECT * written to a Delta product, no checks",
                Box::new(run_job(&jobs.publish, verify_publish)),
            ),
            (
                "publish_checked",
                "the same product with the 50 checks (drop + quarantine)",
                Box::new(run_job(&jobs.publish_checked, verify_publish_checked)),
            ),
            (
                "great_expectations",
                "Great Expectations (pandas): read the files, validate the checks it can express",
                Box::new(|| {
                    read_through(&data)?;
                    gx.run_round()
                }),
            ),
        ],
        options.warmup,
        options.runs,
    )?;

    let mut measurements = measurements;
    measurements.extend(gx.split_measurements());
    let ratios = vec![
        Ratio::of(
            &measurements,
            "checks",
            "scan",
            Some(CHECKS_OVER_SCAN_TARGET),
        )?,
        Ratio::of(&measurements, "publish_checked", "publish", None)?,
        Ratio::of(&measurements, "checks", "great_expectations", None)?,
    ];
    let mut setup = BTreeMap::new();
    setup.insert("dataset".to_string(), Value::from(format!(
        "feature table: {} rows x {} columns (30 features with nulls), {} Parquet files, {:.0} MiB",
        rows,
        features_schema().fields().len(),
        config.files,
        data_bytes as f64 / 1024.0 / 1024.0
    )));
    setup.insert("checks".to_string(), Value::from(
        "50: not_null 8, unique 1, between 11, in_set 6, regex 2, expect 8, row_count 1, mean 3, \
         stddev 2, min 1, max 1, quantile 2, freshness 1, schema 1, drift 1, anomaly 1",
    ));
    setup.insert("rounds".to_string(), Value::from(format!(
        "{} warm-up + {} timed, cases alternated within each round, each after an untimed read of the dataset's files (so every case starts with them in the page cache); wall time of `lakeforge run`; ratios are given of the medians and per round (a round's two runs share the machine's phase), the target judged on the median of the rounds' ratios",
        options.warmup, options.runs
    )));
    setup.insert(
        "jobs".to_string(),
        Value::from(options.work_dir.display().to_string()),
    );
    gx.describe(&mut setup);
    Ok(SuiteReport {
        suite: "dq".to_string(),
        setup,
        measurements,
        ratios,
        notes: vec![
            "Every case is a whole `lakeforge run` (process start, planning, Delta commit, run \
             record); `checks` also reads the drift reference's column and commits the results."
                .to_string(),
            "On the source, the drop/quarantine checks run as warn so the product does not \
             re-read the filtered source; on the product they drop and quarantine rows."
                .to_string(),
            "`great_expectations` validates the checks Great Expectations can express (see \
             `great_expectations checks`) over the same files read into pandas, in a Python \
             process started per round (start and import not timed); every result (failing and \
             NULL counts, observed statistics, pass/fail) equals Lakeforge's result of the same \
             check. The `checks / great_expectations` ratio compares a whole `lakeforge run` of \
             all 50 checks with GX's read + validate of its subset."
                .to_string(),
        ],
    })
}

/// The four job files.
struct Jobs {
    scan: PathBuf,
    checks: PathBuf,
    publish: PathBuf,
    publish_checked: PathBuf,
}

fn write_jobs(work_dir: &Path, data: &Path, reference_file: &Path) -> anyhow::Result<Jobs> {
    let quoted = |path: &Path| serde_json::to_string(&path.display().to_string());
    let sources = format!(
        "[sources.features]\nformat = \"parquet\"\npath = {}\nkey = [\"customer_id\"]\n\n\
         [sources.reference]\nformat = \"parquet\"\npath = {}\n",
        quoted(data)?,
        quoted(reference_file)?
    );
    let schema = features_schema();
    let counts: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("count({0}) AS {0}", f.name()))
        .collect();
    let scan_sql = format!(
        "SELECT count(*) AS row_count, {}, sum(customer_id) AS customer_id_sum FROM features",
        counts.join(", ")
    );
    let product = |name: &str, sql: &str, key: bool| {
        format!(
            "[[products]]\nname = \"{name}\"\nmode = \"overwrite\"\n{}sql = {}\n",
            if key { "key = [\"customer_id\"]\n" } else { "" },
            serde_json::to_string(sql).unwrap_or_default()
        )
    };
    let checks = |on: &str, on_product: bool| -> String {
        CHECKS
            .iter()
            .map(|(body, product_action)| {
                let action = match *product_action {
                    "drop" | "quarantine" if !on_product => "warn",
                    other => other,
                };
                format!("[[checks]]\non = \"{on}\"\naction = \"{action}\"\n{body}\n\n")
            })
            .collect()
    };
    let job = |name: &str, body: String| -> anyhow::Result<PathBuf> {
        let dir = work_dir.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("job.toml");
        let text = format!(
            "[job]\nname = \"dq_bench_{name}\"\nwarehouse = \"warehouse\"\n\n{sources}\n{body}"
        );
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    };
    Ok(Jobs {
        scan: job("scan", product("scan", &scan_sql, false))?,
        checks: job(
            "checks",
            product(
                "row_count",
                "SELECT count(*) AS row_count FROM features",
                false,
            ) + "\n"
                + &checks("features", false),
        )?,
        publish: job(
            "publish",
            product("features_out", "SELECT * FROM features", true),
        )?,
        publish_checked: job(
            "publish_checked",
            product("features_out", "SELECT * FROM features", true)
                + "\n"
                + &checks("features_out", true),
        )?,
    })
}

/// The JSON summary `lakeforge --json run` prints last.
pub(crate) fn run_summary(stdout: &str) -> anyhow::Result<Value> {
    stdout
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v.get("status").is_some() && v.get("products").is_some())
        .with_context(|| format!("no run summary in the output: {stdout}"))
}

pub(crate) fn product_field(summary: &Value, field: &str) -> anyhow::Result<u64> {
    summary["products"][0][field]
        .as_u64()
        .with_context(|| format!("the run summary has no products[0].{field}: {summary}"))
}

fn verify_scan(summary: &Value, _rows: u64) -> anyhow::Result<()> {
    ensure!(
        product_field(summary, "rows")? == 1,
        "the scan product must have one row"
    );
    Ok(())
}

/// The 50 results are there, every row-level check saw every row, and the checks meant to pass
/// on this data did.
fn verify_checks_ran(summary: &Value, rows: u64) -> anyhow::Result<Vec<Value>> {
    let checks = summary["checks"]
        .as_array()
        .context("the run summary has no checks")?
        .clone();
    ensure!(
        checks.len() == 50,
        "expected 50 check results, got {}",
        checks.len()
    );
    for check in &checks {
        let name = check["check"].as_str().unwrap_or_default();
        let kind = check["kind"].as_str().unwrap_or_default();
        if kind == "row_count" {
            ensure!(
                check["observed"].as_f64() == Some(rows as f64),
                "{name} observed {} rows, expected {rows}",
                check["observed"]
            );
        }
        let row_level = matches!(
            kind,
            "expect" | "not_null" | "unique" | "in_set" | "between" | "regex" | "referential"
        );
        if row_level {
            ensure!(
                check["evaluated"].as_u64() == Some(rows),
                "{name} evaluated {} rows, expected {rows}",
                check["evaluated"]
            );
        }
        let expected_to_fail = ["order_value_plausible", "latency_plausible", "between_age"];
        if !expected_to_fail.contains(&name) && kind != "anomaly" && kind != "drift" {
            ensure!(
                check["passed"] == Value::Bool(true),
                "check {name} did not pass: {check}"
            );
        }
    }
    Ok(checks)
}

fn verify_checks(summary: &Value, rows: u64) -> anyhow::Result<()> {
    verify_checks_ran(summary, rows)?;
    ensure!(
        product_field(summary, "rows")? == 1,
        "the row_count product must have one row"
    );
    Ok(())
}

fn verify_publish(summary: &Value, rows: u64) -> anyhow::Result<()> {
    let published = product_field(summary, "rows")?;
    ensure!(
        published == rows,
        "published {published} rows, expected {rows}"
    );
    Ok(())
}

/// Published + quarantined + dropped = the dataset; dropped rows are at most what the drop
/// check failed.
fn verify_publish_checked(summary: &Value, rows: u64) -> anyhow::Result<()> {
    let checks = verify_checks_ran(summary, rows)?;
    let published = product_field(summary, "rows")?;
    let quarantined = product_field(summary, "quarantined")?;
    let drop_failed: u64 = checks
        .iter()
        .filter(|c| c["action"] == "drop")
        .filter_map(|c| c["failed"].as_u64())
        .sum();
    if published + quarantined > rows || published + quarantined + drop_failed < rows {
        bail!(
            "published {published} + quarantined {quarantined} rows do not account for {rows} \
             input rows with at most {drop_failed} dropped"
        );
    }
    Ok(())
}

/// The Great Expectations peer: the checks job's checks as GX expectations, run once per round
/// by `benchmarks/peers/gx_checks.py` against Lakeforge's results of the same checks.
struct GreatExpectations {
    job: PathBuf,
    data: PathBuf,
    /// Lakeforge's results of the checks job (`checks` of its `--json run` summary).
    lakeforge_results: PathBuf,
    /// The last report of the script: versions, expectations, unmapped checks.
    last_report: RefCell<Value>,
    /// Seconds per timed round: reading the files into pandas, and validating.
    read_seconds: RefCell<Vec<f64>>,
    validate_seconds: RefCell<Vec<f64>>,
    /// How many of the rounds are timed (the last ones).
    timed_rounds: usize,
}

impl GreatExpectations {
    /// Runs the checks job once with Lakeforge and keeps its results for the comparison.
    fn prepare(
        lakeforge: &Lakeforge,
        checks_job: &Path,
        data: &Path,
        timed_rounds: usize,
    ) -> anyhow::Result<Self> {
        let dir = checks_job
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let (_, stdout) = lakeforge.run(
            &dir,
            ["--json".as_ref(), "run".as_ref(), checks_job.as_os_str()],
        )?;
        let summary = run_summary(&stdout)?;
        let lakeforge_results = dir.join("lakeforge_check_results.json");
        std::fs::write(&lakeforge_results, summary["checks"].to_string())
            .with_context(|| format!("cannot write {}", lakeforge_results.display()))?;
        Ok(GreatExpectations {
            job: checks_job.to_path_buf(),
            data: data.to_path_buf(),
            lakeforge_results,
            last_report: RefCell::new(Value::Null),
            read_seconds: RefCell::new(Vec::new()),
            validate_seconds: RefCell::new(Vec::new()),
            timed_rounds,
        })
    }

    /// One round: read + validate, timed by the script; fails when any GX result differs from
    /// Lakeforge's.
    fn run_round(&self) -> anyhow::Result<Duration> {
        let report = run_peer_script(
            "gx_checks.py",
            [
                "--job".as_ref(),
                self.job.as_os_str(),
                "--dataset".as_ref(),
                "features".as_ref(),
                "--data".as_ref(),
                self.data.as_os_str(),
                "--lakeforge".as_ref(),
                self.lakeforge_results.as_os_str(),
                "--runs".as_ref(),
                "1".as_ref(),
                "--warmup".as_ref(),
                "0".as_ref(),
            ],
        )?;
        let wrong: Vec<String> = report["verdicts"]
            .as_object()
            .context("gx_checks.py returned no verdicts")?
            .iter()
            .filter(|(_, verdict)| verdict.as_str() != Some("ok"))
            .map(|(check, verdict)| format!("{check}: {}", verdict.as_str().unwrap_or_default()))
            .collect();
        ensure!(
            wrong.is_empty(),
            "Great Expectations' results differ from Lakeforge's:\n{}",
            wrong.join("\n")
        );
        let first = |case: &str| report["seconds"][case][0].as_f64();
        let (Some(total), Some(read), Some(validate)) = (
            first("great_expectations"),
            first("great_expectations read"),
            first("great_expectations validate"),
        ) else {
            bail!("gx_checks.py returned no timings: {report}");
        };
        self.read_seconds.borrow_mut().push(read);
        self.validate_seconds.borrow_mut().push(validate);
        *self.last_report.borrow_mut() = report;
        Ok(Duration::from_secs_f64(total))
    }

    /// The read and validate parts of the timed rounds (the warm-up rounds come first).
    fn split_measurements(&self) -> Vec<Measurement> {
        let timed = |all: &RefCell<Vec<f64>>| -> Vec<f64> {
            let all = all.borrow();
            let rounds = all.len();
            // alternate() ran every case in every round: the timed rounds are the last ones.
            all[rounds.saturating_sub(self.timed_rounds)..].to_vec()
        };
        [
            (
                "great_expectations read",
                "the Parquet files into one pandas DataFrame",
                timed(&self.read_seconds),
            ),
            (
                "great_expectations validate",
                "batch.validate(suite) over the DataFrame",
                timed(&self.validate_seconds),
            ),
        ]
        .into_iter()
        .map(|(case, description, seconds)| Measurement {
            case: case.to_string(),
            description: description.to_string(),
            median_seconds: median(&seconds),
            seconds,
        })
        .collect()
    }

    /// Setup lines: the versions, and which checks GX ran.
    fn describe(&self, setup: &mut BTreeMap<String, Value>) {
        let report = self.last_report.borrow();
        let versions = &report["versions"];
        setup.insert(
            "great_expectations".to_string(),
            Value::from(format!(
                "Great Expectations {} with pandas {}",
                versions["great_expectations"].as_str().unwrap_or("?"),
                versions["pandas"].as_str().unwrap_or("?")
            )),
        );
        let unmapped: Vec<String> = report["unmapped"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(check, reason)| format!("{check} ({})", reason.as_str().unwrap_or_default()))
            .collect();
        setup.insert(
            "great_expectations checks".to_string(),
            Value::from(format!(
                "{} of the 50 as GX expectations, results equal to Lakeforge's; not expressible \
                 in GX: {}",
                report["expectations"],
                unmapped.join("; ")
            )),
        );
    }
}
