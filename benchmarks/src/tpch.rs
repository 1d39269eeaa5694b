//! The TPC-H suite: the 22 queries on generated Parquet data, with the `lakeforge` binary as a
//! user runs them, and with DataFusion itself (its Python bindings, the same major version),
//! DuckDB and Polars (`benchmarks/peers/tpch.py`) and Apache Spark in local mode
//! (`benchmarks/peers/spark.py`) on the same files in the same invocation, rounds alternated.
//!
//! Two process models, both reported, each engine measured under both where it can be:
//! - **fresh**, a new session per query with table registration, metadata reads and planning
//!   inside the timing: `lakeforge` is `lakeforge --json sql QUERY --table ...` minus the same
//!   command on `SELECT 1` (process start), measured in the same round; `datafusion_fresh`,
//!   `duckdb_fresh`, `polars_fresh` open a new context or connection per query;
//! - **warm**, the query repeated in one session, timed after one untimed execution:
//!   `lakeforge_warm` is one `lakeforge --json sql -f SCRIPT` process running every query
//!   twice, each statement's own `elapsed_ms`; `datafusion`, `duckdb`, `polars` and `spark` (a
//!   Spark session started once per round, `local[cores]`) run in one session.
//!
//! Besides, `lakeforge_job` runs the query as a job whose product is written to Delta
//! (`lakeforge run`: planning, writing, the commit and the run record included, process start
//! included).
//!
//! Before any timing, Lakeforge's answer to every query is compared with DuckDB's (the peers
//! script does it, numbers within a relative 1e-6); a mismatch stops the suite. Spark's answers
//! are compared with Lakeforge's by the same rules in every round; a query Spark answers
//! differently is reported and left out of its ratio.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lakeforge_benchmarks::datagen::tpch::{TPCH_TABLES, TpchConfig, generate_tpch, tpch_table_dir};
use serde_json::Value;

use crate::harness::{
    Lakeforge, Measurement, Ratio, Round, SuiteReport, folder_bytes, fresh_dir, median,
    record_seconds, run_peer_script,
};

/// The peer engines measured warm, in report order: DataFusion, DuckDB and Polars
/// (`peers/tpch.py`), Spark local mode (`peers/spark.py`).
const WARM_PEERS: [&str; 4] = ["datafusion", "duckdb", "polars", "spark"];

/// The peer engines measured fresh (`peers/tpch.py`'s `ENGINE_fresh`).
const FRESH_PEERS: [&str; 3] = ["datafusion", "duckdb", "polars"];

/// The targets the project sets (issue 28), by (process model, peer): the most
/// `lakeforge / peer` may be, for the sum of per-query medians and for the worst query.
fn target(model: &str, peer: &str) -> (Option<f64>, Option<f64>) {
    match (model, peer) {
        ("fresh", "datafusion") => (Some(1.0), None),
        ("fresh", "duckdb") => (Some(1.15), Some(1.8)),
        ("warm", "duckdb") => (Some(1.5), None),
        _ => (None, None),
    }
}

/// How many times the warm script runs each query; the last execution is timed.
const WARM_REPEATS: usize = 2;

/// How the suite runs.
pub struct TpchOptions {
    /// The TPC-H scale factor.
    pub scale_factor: f64,
    /// Timed rounds.
    pub runs: usize,
    /// Untimed rounds first.
    pub warmup: usize,
    /// Where generated datasets are cached.
    pub data_root: PathBuf,
    /// Where the jobs, answers and warehouses go (emptied first).
    pub work_dir: PathBuf,
}

/// The queries, as single statements: q15's view becomes a CTE, and unnamed output columns get
/// names Delta accepts (a product's columns must be named).
pub fn query_texts() -> anyhow::Result<Vec<(String, String)>> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tpch/queries");
    (1..=22)
        .map(|n| {
            let path = folder.join(format!("q{n}.sql"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok((format!("q{n}"), single_statement(n, &text)))
        })
        .collect()
}

fn single_statement(n: u32, text: &str) -> String {
    let text = text.trim().trim_end_matches(';').trim().to_string();
    match n {
        15 => {
            // create view revenue0 (...) as SELECT ...; SELECT ...; drop view revenue0
            let statements: Vec<&str> = text.split(';').map(str::trim).collect();
            let view = statements[0]
                .trim_start_matches("create view ")
                .replacen(" as", " AS (", 1);
            format!("WITH {view}) {}", statements[1])
        }
        18 => text.replacen(
            "sum(l_quantity)\nfrom",
            "sum(l_quantity) AS sum_quantity\nfrom",
            1,
        ),
        _ => text,
    }
}

/// Runs the suite and returns its report.
pub fn run(lakeforge: &Lakeforge, options: &TpchOptions) -> anyhow::Result<SuiteReport> {
    let suite = TpchSuite::prepare(lakeforge, options)?;
    suite.check_answers()?;
    let mut timings = suite.time_rounds()?;
    let measurements = suite.measurements(&mut timings);
    suite.build_report(measurements, timings)
}

/// The data, the folders and the queries every phase uses.
struct TpchSuite<'a> {
    lakeforge: &'a Lakeforge,
    options: &'a TpchOptions,
    /// The TPC-H Parquet tables.
    data: PathBuf,
    /// One `QN.sql` per query (the peers read them).
    queries_dir: PathBuf,
    /// Lakeforge's answers, one `QN.jsonl` per query (the peers check theirs against them).
    answers_dir: PathBuf,
    /// Every query twice, in order: the script of the warm process model.
    warm_script: PathBuf,
    /// The queries, by name.
    queries: Vec<(String, String)>,
}

/// What the rounds measured and the peers reported.
#[derive(Default)]
struct TpchTimings {
    /// Lakeforge's `sql` seconds per query, baseline subtracted.
    lakeforge_sql: BTreeMap<String, Vec<f64>>,
    /// Lakeforge's seconds per query run a second time in one `sql` script process.
    lakeforge_warm: BTreeMap<String, Vec<f64>>,
    /// Lakeforge's job seconds per query.
    lakeforge_job: BTreeMap<String, Vec<f64>>,
    /// Seconds per (engine, query).
    peers: BTreeMap<(String, String), Vec<f64>>,
    /// Each engine's errors per query.
    peer_errors: BTreeMap<String, Value>,
    /// The peers' versions.
    versions: serde_json::Map<String, Value>,
    /// (engine, query) pairs answered wrongly, left out of the timings from then on.
    wrong_peer_answers: BTreeSet<(String, String)>,
    /// Notes about the peers for the report.
    peer_notes: BTreeSet<String>,
}

impl TpchSuite<'_> {
    /// Generates (or reuses) the data, empties the work folder and writes the queries and jobs.
    fn prepare<'a>(
        lakeforge: &'a Lakeforge,
        options: &'a TpchOptions,
    ) -> anyhow::Result<TpchSuite<'a>> {
        let sf = options.scale_factor;
        let data = options.data_root.join(format!("tpch-sf{sf}"));
        eprintln!("tpch: scale factor {sf} at {}", data.display());
        if generate_tpch(&data, &TpchConfig::new(sf))
            .with_context(|| format!("cannot generate TPC-H data at {}", data.display()))?
        {
            eprintln!("  generated");
        }
        fresh_dir(&options.work_dir)?;
        let queries_dir = options.work_dir.join("queries");
        let answers_dir = options.work_dir.join("answers");
        std::fs::create_dir_all(&queries_dir)?;
        std::fs::create_dir_all(&answers_dir)?;
        let queries = query_texts()?;
        write_jobs(&data, &options.work_dir, &queries)?;
        let warm_script = options.work_dir.join("warm.sql");
        let mut script = String::new();
        for (_, text) in &queries {
            for _ in 0..WARM_REPEATS {
                script.push_str(text);
                script.push_str(";\n");
            }
        }
        std::fs::write(&warm_script, script)?;
        Ok(TpchSuite {
            lakeforge,
            options,
            data,
            queries_dir,
            answers_dir,
            warm_script,
            queries,
        })
    }

    /// `lakeforge --json sql QUERY --table NAME=DIR...`: JSON lines are the cheapest way the CLI
    /// prints rows (no column widths to compute).
    fn sql_args(&self, query: &str) -> Vec<String> {
        self.sql_args_with(vec![query.to_string()])
    }

    /// `lakeforge --json sql ARGS --table NAME=DIR...`.
    fn sql_args_with(&self, sql: Vec<String>) -> Vec<String> {
        let mut args = vec!["--json".to_string(), "sql".to_string()];
        args.extend(sql);
        for table in TPCH_TABLES {
            args.push("--table".to_string());
            args.push(format!(
                "{table}={}",
                tpch_table_dir(&self.data, table).display()
            ));
        }
        args
    }

    /// Correctness first: Lakeforge's answers, written to `answers_dir`, against DuckDB's.
    fn check_answers(&self) -> anyhow::Result<()> {
        eprintln!("tpch: answers");
        for (name, text) in &self.queries {
            let (_, stdout) = self
                .lakeforge
                .run(&self.options.work_dir, self.sql_args(text))?;
            std::fs::write(self.answers_dir.join(format!("{name}.jsonl")), stdout)?;
        }
        let first = run_peers(&self.data, &self.queries_dir, Some(&self.answers_dir), 1)?;
        let verdicts = first["check"]
            .as_object()
            .context("the peers script returned no check")?;
        let wrong = not_ok(verdicts);
        if !wrong.is_empty() {
            bail!(
                "Lakeforge's TPC-H answers differ from DuckDB's:\n{}",
                wrong.join("\n")
            );
        }
        eprintln!("  all 22 answers equal DuckDB's");
        let counts = first["row_counts"]
            .as_object()
            .context("the peers script returned no row counts")?;
        let mismatched_counts = not_ok(counts);
        if !mismatched_counts.is_empty() {
            bail!(
                "DataFusion's TPC-H row counts differ from DuckDB's:\n{}",
                mismatched_counts.join("\n")
            );
        }
        Ok(())
    }

    /// The warm model: one `lakeforge sql -f` process runs every query [`WARM_REPEATS`] times;
    /// each query's last execution's own time (planning to the last row, not printing).
    fn time_lakeforge_warm(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let (_, stdout) = self.lakeforge.run(
            &self.options.work_dir,
            self.sql_args_with(vec![
                "-f".to_string(),
                self.warm_script.display().to_string(),
            ]),
        )?;
        let statements: Vec<Value> = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .context("the warm script's output is not JSON lines")?;
        if statements.len() != self.queries.len() * WARM_REPEATS {
            bail!(
                "the warm script ran {} statements, expected {}",
                statements.len(),
                self.queries.len() * WARM_REPEATS
            );
        }
        let mut seconds = BTreeMap::new();
        for ((name, _), runs) in self.queries.iter().zip(statements.chunks(WARM_REPEATS)) {
            let last = &runs[WARM_REPEATS - 1];
            let elapsed_ms = last["elapsed_ms"]
                .as_f64()
                .with_context(|| format!("no elapsed_ms for {name} in the warm script"))?;
            seconds.insert(name.clone(), elapsed_ms / 1000.0);
        }
        Ok(seconds)
    }

    /// Timing: rounds alternate Lakeforge (every query, both ways) and the peers.
    fn time_rounds(&self) -> anyhow::Result<TpchTimings> {
        let mut timings = TpchTimings::default();
        for round in Round::all(self.options.warmup, self.options.runs) {
            self.time_lakeforge(round, &mut timings)?;
            self.time_peers(round, &mut timings)?;
        }
        Ok(timings)
    }

    /// One round of Lakeforge: the warm script, the `SELECT 1` baseline, then every query as
    /// `sql` and as a job.
    fn time_lakeforge(&self, round: Round, timings: &mut TpchTimings) -> anyhow::Result<()> {
        let label = round.label();
        let work_dir = &self.options.work_dir;
        for (name, seconds) in self.time_lakeforge_warm()? {
            eprintln!("  {name:<4} {label:<8} lakeforge warm {seconds:>7.3} s");
            if round.timed {
                record_seconds(&mut timings.lakeforge_warm, name, seconds);
            }
        }
        let (baseline, _) = self.lakeforge.run(work_dir, self.sql_args("SELECT 1"))?;
        for (name, text) in &self.queries {
            let (elapsed, _) = self.lakeforge.run(work_dir, self.sql_args(text))?;
            let query = elapsed.saturating_sub(baseline);
            let job = work_dir.join(format!("{name}.toml"));
            let (job_elapsed, _) = self
                .lakeforge
                .run(work_dir, ["run".as_ref(), job.as_os_str()])?;
            eprintln!(
                "  {name:<4} {label:<8} lakeforge {:>7.3} s   as a job {:>7.3} s",
                query.as_secs_f64(),
                job_elapsed.as_secs_f64()
            );
            if round.timed {
                record_seconds(
                    &mut timings.lakeforge_sql,
                    name.clone(),
                    query.as_secs_f64(),
                );
                record_seconds(
                    &mut timings.lakeforge_job,
                    name.clone(),
                    job_elapsed.as_secs_f64(),
                );
            }
        }
        Ok(())
    }

    /// One round of the peers: DuckDB and Polars, then Spark with its answers checked.
    fn time_peers(&self, round: Round, timings: &mut TpchTimings) -> anyhow::Result<()> {
        // Spark compares its answers with Lakeforge's in every round (its JVM starts once per
        // round; a separate checking round would cost another start).
        let duckdb_polars = run_peers(&self.data, &self.queries_dir, None, 1)?;
        let spark = run_spark(
            &self.data,
            &self.queries_dir,
            &self.answers_dir,
            &mut timings.peer_notes,
        )?;
        for (name, verdict) in spark.iter().flat_map(|s| s["check"].as_object()).flatten() {
            let verdict = verdict.as_str().unwrap_or_default();
            if !verdict.starts_with("ok") {
                timings
                    .wrong_peer_answers
                    .insert(("spark".to_string(), name.clone()));
                timings.peer_notes.insert(format!(
                    "spark's {name} answer differs from Lakeforge's (and DuckDB's), so it is \
                     left out of the ratio: {verdict}"
                ));
            }
        }
        for report in std::iter::once(&duckdb_polars).chain(spark.as_ref()) {
            timings.record_peer_report(report, round);
        }
        Ok(())
    }

    /// Per query: Lakeforge's two cases, then each peer that has timings.
    fn measurements(&self, timings: &mut TpchTimings) -> Vec<Measurement> {
        let mut measurements = Vec::new();
        let measurement = |case: String, description: &str, seconds: Vec<f64>| Measurement {
            case,
            description: description.to_string(),
            median_seconds: median(&seconds),
            seconds,
        };
        for (name, _) in &self.queries {
            measurements.push(measurement(
                format!("{name} lakeforge"),
                "fresh: sql command minus its SELECT 1 baseline",
                timings.lakeforge_sql.remove(name).unwrap_or_default(),
            ));
            measurements.push(measurement(
                format!("{name} lakeforge_warm"),
                "warm: second execution in one sql script process",
                timings.lakeforge_warm.remove(name).unwrap_or_default(),
            ));
            measurements.push(measurement(
                format!("{name} lakeforge_job"),
                "as a job: product written to Delta, whole process",
                timings.lakeforge_job.remove(name).unwrap_or_default(),
            ));
            let peers = WARM_PEERS
                .iter()
                .map(|e| (e.to_string(), "warm: in one session after a warm-up"))
                .chain(FRESH_PEERS.iter().map(|e| {
                    (
                        format!("{e}_fresh"),
                        "fresh: new session, registration and query",
                    )
                }));
            for (engine, description) in peers {
                if let Some(seconds) = timings.peers.remove(&(engine.clone(), name.clone())) {
                    measurements.push(measurement(
                        format!("{name} {engine}"),
                        description,
                        seconds,
                    ));
                }
            }
        }
        measurements
    }

    /// The suite's report: the ratios, the setup and the notes around `measurements`.
    fn build_report(
        &self,
        measurements: Vec<Measurement>,
        timings: TpchTimings,
    ) -> anyhow::Result<SuiteReport> {
        let sf = self.options.scale_factor;
        let ratios = totals_and_ratios(&self.queries, &measurements);
        let mut setup = BTreeMap::new();
        setup.insert(
            "dataset".to_string(),
            Value::from(format!(
                "TPC-H SF {sf} (tpchgen-arrow), Parquet (Snappy), {:.0} MiB",
                folder_bytes(&self.data)? as f64 / 1024.0 / 1024.0
            )),
        );
        setup.insert(
            "rounds".to_string(),
            Value::from(format!(
                "{} warm-up + {} timed; each round runs every query with Lakeforge, then with \
                 the peers",
                self.options.warmup, self.options.runs
            )),
        );
        setup.insert("peers".to_string(), Value::Object(timings.versions));
        setup.insert(
            "correctness".to_string(),
            Value::from("all 22 Lakeforge answers equal DuckDB's (numbers within 1e-6 relative)"),
        );
        let mut notes = vec![
            "Ratios are of sums of per-query medians over the queries both engines ran, fresh \
             against fresh and warm against warm; `worst query` is the largest per-query ratio \
             of medians."
                .to_string(),
            "The fresh `lakeforge` case includes printing every result row as a JSON line to a \
             pipe (q10 returns 37,967 rows, q16 18,314: these texts have no LIMIT); the fresh \
             peers fetch the rows into Python lists (DuckDB) or Arrow (DataFusion, Polars). \
             The warm `lakeforge_warm` time stops at the last row collected, before printing."
                .to_string(),
            "`lakeforge_job` is a whole `lakeforge run` (process start, planning, Delta write \
             and commit, run record, lineage), the way a product is built; the others time the \
             query alone."
                .to_string(),
        ];
        notes.extend(timings.peer_notes);
        for (engine, errors) in &timings.peer_errors {
            if let Some(errors) = errors.as_object() {
                for (query, error) in errors {
                    notes.push(format!(
                        "{engine} cannot run {query}: {}",
                        error.as_str().unwrap_or_default()
                    ));
                }
            }
        }
        Ok(SuiteReport {
            suite: format!("tpch-sf{sf}"),
            setup,
            measurements,
            ratios,
            notes,
        })
    }
}

impl TpchTimings {
    /// Takes one peers script's round report: its versions, errors and (timed rounds, right
    /// answers only) seconds.
    fn record_peer_report(&mut self, report: &Value, round: Round) {
        let label = round.label();
        if let Some(found) = report["versions"].as_object() {
            self.versions.extend(found.clone());
        }
        for (engine, seconds) in report["seconds"].as_object().into_iter().flatten() {
            if let Some(errors) = report["errors"][engine].as_object()
                && !errors.is_empty()
            {
                self.peer_errors
                    .insert(engine.to_string(), Value::Object(errors.clone()));
            }
            for (name, seconds) in seconds.as_object().into_iter().flatten() {
                let Some(seconds) = seconds.as_f64() else {
                    continue;
                };
                eprintln!("  {name:<4} {label:<8} {engine:<9} {seconds:>7.3} s");
                if round.timed
                    && !self
                        .wrong_peer_answers
                        .contains(&(engine.clone(), name.clone()))
                {
                    record_seconds(&mut self.peers, (engine.to_string(), name.clone()), seconds);
                }
            }
        }
    }
}

/// Writes `queries/QN.sql` and a job `QN.toml` per query under `work_dir`: the query's result
/// as product `QN` of warehouse `warehouse`, over the TPC-H Parquet tables at `data`.
pub fn write_jobs(
    data: &Path,
    work_dir: &Path,
    queries: &[(String, String)],
) -> anyhow::Result<()> {
    let queries_dir = work_dir.join("queries");
    std::fs::create_dir_all(&queries_dir)?;
    let mut sources = String::new();
    for table in TPCH_TABLES {
        sources.push_str(&format!(
            "[sources.{table}]\nformat = \"parquet\"\npath = {}\n",
            serde_json::to_string(&tpch_table_dir(data, table).display().to_string())?
        ));
    }
    for (name, text) in queries {
        std::fs::write(queries_dir.join(format!("{name}.sql")), text)?;
        std::fs::write(
            work_dir.join(format!("{name}.toml")),
            format!(
                "[job]\nname = \"tpch_{name}\"\nwarehouse = \"warehouse\"\n\n{sources}\n\
                 [[products]]\nname = \"{name}\"\nsql_file = \"queries/{name}.sql\"\n"
            ),
        )?;
    }
    Ok(())
}

/// Per process model and peer: the sum of per-query medians over the queries both sides ran,
/// as a ratio `lakeforge / peer`, and the worst query's ratio.
fn totals_and_ratios(queries: &[(String, String)], measurements: &[Measurement]) -> Vec<Ratio> {
    let median_of = |case: &str| {
        measurements
            .iter()
            .find(|m| m.case == case)
            .map(|m| m.median_seconds)
    };
    let pairs = FRESH_PEERS
        .iter()
        .map(|peer| ("fresh", "lakeforge", *peer, format!("{peer}_fresh")))
        .chain(
            WARM_PEERS
                .iter()
                .map(|peer| ("warm", "lakeforge_warm", *peer, peer.to_string())),
        );
    let mut ratios = Vec::new();
    for (model, ours_case, peer, theirs_case) in pairs {
        let (mut ours, mut theirs) = (0.0, 0.0);
        let mut worst: Option<(f64, &str)> = None;
        for (name, _) in queries {
            if let (Some(a), Some(b)) = (
                median_of(&format!("{name} {ours_case}")),
                median_of(&format!("{name} {theirs_case}")),
            ) {
                ours += a;
                theirs += b;
                if b > 0.0 && worst.is_none_or(|(ratio, _)| a / b > ratio) {
                    worst = Some((a / b, name));
                }
            }
        }
        if theirs > 0.0 {
            let (total_target, worst_target) = target(model, peer);
            ratios.push(Ratio::new(
                format!("{model}: lakeforge / {peer} (sum of query medians)"),
                ours / theirs,
                total_target,
            ));
            if let Some((ratio, query)) = worst {
                ratios.push(Ratio::new(
                    format!("{model}: lakeforge / {peer}, worst query ({query})"),
                    ratio,
                    worst_target,
                ));
            }
        }
    }
    ratios
}

/// `QUERY: VERDICT` for each query of the peers script's `verdicts` that is not `ok...`.
fn not_ok(verdicts: &serde_json::Map<String, Value>) -> Vec<String> {
    verdicts
        .iter()
        .filter(|(_, v)| !v.as_str().unwrap_or_default().starts_with("ok"))
        .map(|(q, v)| format!("{q}: {}", v.as_str().unwrap_or_default()))
        .collect()
}

fn run_peers(
    data: &Path,
    queries: &Path,
    check: Option<&Path>,
    warmup: usize,
) -> anyhow::Result<Value> {
    let mut args: Vec<OsString> = vec![
        "--data".into(),
        data.into(),
        "--queries".into(),
        queries.into(),
        "--warmup".into(),
        warmup.to_string().into(),
    ];
    if let Some(check) = check {
        args.extend(["--check".into(), check.into()]);
    }
    run_peer_script("tpch.py", args)
}

/// Spark's timings for one round (`peers/spark.py tpch`), its answers compared with Lakeforge's
/// in `answers`; `None` when Spark cannot run here (no Java runtime), noted once.
fn run_spark(
    data: &Path,
    queries: &Path,
    answers: &Path,
    notes: &mut BTreeSet<String>,
) -> anyhow::Result<Option<Value>> {
    let report = run_peer_script(
        "spark.py",
        [
            OsString::from("tpch"),
            "--data".into(),
            data.into(),
            "--queries".into(),
            queries.into(),
            "--check".into(),
            answers.into(),
            "--warmup".into(),
            "1".into(),
        ],
    )?;
    if let Some(reason) = report["skipped"].as_str() {
        notes.insert(format!("spark did not run: {reason}"));
        return Ok(None);
    }
    Ok(Some(report))
}
