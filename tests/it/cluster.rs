//! The cluster end to end: a real `lakeforge coordinator` and two `lakeforge worker` processes
//! on loopback, jobs run with `--cluster`, and every product, run record and lineage compared
//! with the same jobs run embedded. Also: what a client is told when the cluster cannot be used.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scoring::{features, project_for};
use crate::support::{Project, sorted_rows, stdout_lines};

/// A coordinator and its workers; every process is killed when the test ends, pass or fail.
pub(crate) struct Cluster {
    processes: Vec<Child>,
    address: String,
    _work: tempfile::TempDir,
}

/// A port nobody listens on right now (the OS picks it; released for the process to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    fn start(workers: usize) -> Cluster {
        Cluster::start_with(workers, &[])
    }

    /// A coordinator and `workers` workers, every role given `role_args` (e.g. `--storage`);
    /// each worker has a work folder of its own.
    pub(crate) fn start_with(workers: usize, role_args: &[&str]) -> Cluster {
        let work = tempfile::tempdir().expect("temp dir");
        let mut coordinator = Command::new(env!("CARGO_BIN_EXE_lakeforge"))
            .args(role_args)
            .args([
                "coordinator",
                "--bind",
                "127.0.0.1:0",
                "--worker-timeout",
                "10s",
            ])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the coordinator");
        let lines = stdout_lines(&mut coordinator);
        let mut cluster = Cluster {
            processes: vec![coordinator],
            address: String::new(),
            _work: work,
        };
        let first = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the coordinator did not report its address");
        cluster.address = first
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        for index in 0..workers {
            let work_dir = cluster._work.path().join(format!("worker-{index}"));
            std::fs::create_dir_all(&work_dir).unwrap();
            let worker = Command::new(env!("CARGO_BIN_EXE_lakeforge"))
                .args(role_args)
                .args(["worker", "--coordinator", &cluster.address, "--slots", "2"])
                .args(["--flight-port", &free_port().to_string()])
                .args(["--grpc-port", &free_port().to_string()])
                .args(["--heartbeat", "2s", "--memory", "1G"])
                .arg("--work-dir")
                .arg(&work_dir)
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a worker");
            cluster.processes.push(worker);
        }
        cluster
    }

    pub(crate) fn url(&self) -> String {
        format!("df://{}", self.address)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// Scoring with a model declared in the job, a partitioned product and an aggregate.
fn scoring_job(features: &str) -> String {
    format!(
        r#"
[job]
name = "scoring"
warehouse = "wh"

[models.churn]
path = "models/xgb_binary.json"

[sources.rows]
format = "csv"
path = "data/rows.csv"

[[products]]
name = "scores"
partition_by = ["bucket"]
sql = """SELECT id, CAST(id % 3 AS BIGINT) AS bucket, predict('churn', {features}) AS p,
         predict_margin('churn', {features}) AS m FROM rows"""

[[products]]
name = "summary"
sql = "SELECT count(*) AS n, avg(f0) AS mean_f0, max(f3) AS max_f3 FROM rows"
"#
    )
}

/// Reads the partitioned product back as a Delta source (pinned) and appends to its product.
const DOWNSTREAM_JOB: &str = r#"
[job]
name = "downstream"
warehouse = "wh"

[sources.scores]
format = "delta"
path = "wh/scores"

[[products]]
name = "by_bucket"
mode = "append"
sql = """SELECT bucket, count(*) AS n, round(sum(p), 9) AS p_sum, min(id) AS first_id
         FROM scores GROUP BY bucket"""
"#;

/// Joins the rows with their scores (a Delta source) and with an aggregate of themselves.
const JOINED_JOB: &str = r#"
[job]
name = "joined"
warehouse = "wh"

[sources.rows]
format = "csv"
path = "data/rows.csv"

[sources.scores]
format = "delta"
path = "wh/scores"

[[products]]
name = "joined"
sql = """SELECT r.id, r.f0, s.p, b.n FROM rows r
         JOIN scores s ON r.id = s.id
         JOIN (SELECT bucket, count(*) AS n FROM scores GROUP BY bucket) b ON s.bucket = b.bucket"""
"#;

/// A project with the jobs, the fixture's rows and its model.
fn project() -> (Project, Value) {
    let (project, expected) = project_for("xgb_binary");
    project.write("scoring.toml", &scoring_job(&features(&expected)));
    project.write("downstream.toml", DOWNSTREAM_JOB);
    project.write("joined.toml", JOINED_JOB);
    (project, expected)
}

/// Every row of a product, in a stable order.
fn rows(project: &Project, table: &str) -> Vec<String> {
    sorted_rows(project.json(&["show", table, "--limit", "100000"]))
}

/// The lineage of a product, without run ids and with the project's folder replaced, so two
/// projects compare.
fn lineage(project: &Project, table: &str) -> Value {
    let text = project.ok(&["lineage", table, "--format", "json"]);
    let mut lineage: Value =
        serde_json::from_str(&text.replace(&project.path().display().to_string(), "<project>"))
            .unwrap();
    without_run_ids(&mut lineage);
    lineage
}

fn without_run_ids(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("run_id");
            map.values_mut().for_each(without_run_ids);
        }
        Value::Array(items) => items.iter_mut().for_each(without_run_ids),
        _ => {}
    }
}

#[test]
fn cluster_runs_publish_what_embedded_runs_publish() {
    let cluster = Cluster::start(2);
    let (embedded, expected) = project();
    let (distributed, _) = project();
    let url = cluster.url();
    for job in ["scoring.toml", "downstream.toml", "downstream.toml"] {
        embedded.ok(&["run", job]);
        distributed.ok(&["run", job, "--cluster", &url]);
    }

    for table in ["wh/scores", "wh/summary", "wh/by_bucket"] {
        assert_eq!(
            rows(&embedded, table),
            rows(&distributed, table),
            "{table} differs between the embedded and the cluster run"
        );
        assert_eq!(
            lineage(&embedded, table),
            lineage(&distributed, table),
            "{table}'s lineage differs"
        );
    }
    // Joins: hash joins by default, sort-merge joins (which spill) on request; the same rows.
    embedded.ok(&["run", "joined.toml"]);
    let joined = rows(&embedded, "wh/joined");
    assert!(!joined.is_empty());
    for joins in ["hash", "sort-merge"] {
        distributed.ok(&["--joins", joins, "run", "joined.toml", "--cluster", &url]);
        assert_eq!(
            joined,
            rows(&distributed, "wh/joined"),
            "{joins} joins on the cluster"
        );
    }
    embedded.ok(&["--joins", "sort-merge", "run", "joined.toml"]);
    assert_eq!(
        joined,
        rows(&embedded, "wh/joined"),
        "embedded sort-merge joins"
    );
    let refused = embedded.fails(&["--joins", "nested-loop", "run", "joined.toml"]);
    assert!(refused.contains("--joins 'nested-loop'"), "{refused}");
    // The cluster's predictions are the library's.
    let mut scores = distributed.json(&["show", "wh/scores", "--limit", "1000"]);
    scores.sort_by_key(|r| r["id"].as_i64().unwrap());
    let want = expected["prediction"].as_array().unwrap();
    assert_eq!(scores.len(), want.len());
    for (row, want) in scores.iter().zip(want) {
        let (got, want) = (row["p"].as_f64().unwrap(), want.as_f64().unwrap());
        assert!(
            (got - want).abs() <= 1e-6,
            "row {}: {got} vs {want}",
            row["id"]
        );
    }
    // Partitioned on the workers: one folder per bucket, files in each.
    for bucket in 0..3 {
        let folder = distributed.join(&format!("wh/scores/bucket={bucket}"));
        assert!(
            std::fs::read_dir(&folder)
                .map(|d| d.count() > 0)
                .unwrap_or(false),
            "no files in {}",
            folder.display()
        );
    }
    // Two appends: versions 0 and 1, each run's rows once.
    assert_eq!(distributed.delta_versions("wh/by_bucket"), vec![0, 1]);
    assert_eq!(rows(&distributed, "wh/by_bucket").len(), 6);
    // Run records: the same runs, succeeded, with the same rows written.
    let summarize = |project: &Project| -> Vec<String> {
        let mut runs: Vec<String> = project
            .json(&["runs", "wh"])
            .iter()
            .map(|r| format!("{} {} {}", r["job"], r["status"], r["rows_written"]))
            .collect();
        runs.sort();
        runs
    };
    assert_eq!(summarize(&embedded), summarize(&distributed));
    // The Delta source was read at the version the client pinned.
    let commit = distributed.commit_info("wh/by_bucket", 0);
    let inputs = commit["lakeforge"]["inputs"].to_string();
    assert!(inputs.contains("\"version\":0"), "{inputs}");
}

#[test]
fn cluster_problems_are_reported_before_anything_is_written() {
    let (project, _) = project();
    // Nobody listens on this port: the client says so at once, naming the address.
    let port = free_port();
    let clock = Instant::now();
    let error = project.fails(&[
        "run",
        "scoring.toml",
        "--cluster",
        &format!("df://127.0.0.1:{port}"),
    ]);
    assert!(
        error.contains(&format!("cannot reach the coordinator at 127.0.0.1:{port}")),
        "{error}"
    );
    assert!(
        clock.elapsed() < Duration::from_secs(30),
        "took {:?}",
        clock.elapsed()
    );
    assert!(project.delta_versions("wh/scores").is_empty());

    let error = project.fails(&["run", "scoring.toml", "--cluster", "df://no-port"]);
    assert!(
        error.contains("invalid coordinator address 'df://no-port'"),
        "{error}"
    );

    // A coordinator without workers would queue the job forever: the client waits the
    // --worker-wait it was given, then fails naming the coordinator, and writes nothing.
    let empty = Cluster::start(0);
    let clock = Instant::now();
    let error = project.fails(&[
        "run",
        "scoring.toml",
        "--cluster",
        &empty.url(),
        "--worker-wait",
        "2s",
    ]);
    assert!(
        error.contains(&format!(
            "the coordinator at {} has no workers",
            empty.address
        )) && error.contains("within 2 s"),
        "{error}"
    );
    assert!(
        clock.elapsed() < Duration::from_secs(30),
        "took {:?}",
        clock.elapsed()
    );
    assert!(project.delta_versions("wh/scores").is_empty());
    drop(empty);

    // A failing `fail` check on the cluster: nothing is committed (product or quarantine),
    // the run is recorded as failed and the check's result is kept.
    let cluster = Cluster::start(1);
    project.write("data/raw/part-0.csv", &checked_rows(0..40));
    project.write("data/reference.csv", &checked_rows(0..10));
    project.write(
        "blocked.toml",
        &format!(
            "{CHECKED_JOB}\n[[checks]]\non = \"measured\"\nname = \"impossible\"\n\
             expect = \"x > 100\"\naction = \"fail\"\n"
        ),
    );
    let error = project.fails(&["run", "blocked.toml", "--cluster", &cluster.url()]);
    assert!(
        error.contains("impossible") && error.contains("nothing was committed"),
        "{error}"
    );
    assert!(project.delta_versions("wh/measured").is_empty());
    assert!(
        project
            .delta_versions("wh/_lakeforge/quarantine/measured")
            .is_empty()
    );
    let runs = project.json(&["runs", "wh"]);
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    let history = project.json(&["dq", "wh", "--check", "impossible"]);
    assert_eq!(history.len(), 1);
    // 39 rows (the source quarantined id 3), 3 with a NULL x skipped.
    assert_eq!(history[0]["failed"], 36);
    drop(cluster);
    let leftovers: Vec<_> = walk_files(&project.join("wh/measured"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
}

/// `count` rows of the checked job's data for ids in `ids`: `x` with NULLs and values beyond
/// ±4, `y` sometimes too large, a category that is sometimes unexpected.
fn checked_rows(ids: std::ops::Range<u64>) -> String {
    let mut csv = String::from("id,cat,x,y\n");
    for id in ids {
        let x = if id % 13 == 5 {
            String::new()
        } else {
            format!("{:.2}", ((id * 37) % 101) as f64 / 10.0 - 5.0)
        };
        let cat = if id % 50 == 7 {
            "z"
        } else {
            ["a", "b", "c", "d"][(id % 4) as usize]
        };
        csv += &format!("{id},{cat},{x},{}\n", (id * 7) % 97);
    }
    csv
}

/// Checks of every kind that runs per partition, on a source (quarantine) and on a
/// partitioned product (quarantine, drop, samples, statistics, drift against another source
/// and against the previous version, anomaly history).
const CHECKED_JOB: &str = r#"
[job]
name = "checked"
warehouse = "wh"

[sources.raw]
format = "csv"
path = "data/raw"
key = ["id"]

[sources.reference]
format = "csv"
path = "data/reference.csv"

[[products]]
name = "measured"
key = ["id"]
partition_by = ["cat"]
sql = "SELECT id, cat, x, y FROM raw"

[[checks]]
on = "raw"
name = "id_not_multiple_of_97"
expect = "id % 97 <> 3"
action = "quarantine"

[[checks]]
on = "measured"
kind = "between"
column = "x"
min = -4
max = 4
action = "quarantine"
samples = 4

[[checks]]
on = "measured"
name = "y_below_90"
expect = "y < 90"
action = "drop"

[[checks]]
on = "measured"
kind = "in_set"
column = "cat"
values = ["a", "b", "c", "d"]
samples = 3

[[checks]]
on = "measured"
kind = "not_null"
column = "x"
mostly = 0.9

[[checks]]
on = "measured"
kind = "unique"
columns = ["id"]
action = "fail"

[[checks]]
on = "measured"
kind = "mean"
column = "x"
min = -10
max = 10

[[checks]]
on = "measured"
kind = "stddev"
column = "x"
max = 100

[[checks]]
on = "measured"
kind = "quantile"
column = "y"
quantile = 0.9
max = 1000

[[checks]]
on = "measured"
kind = "max"
column = "y"
max = 1000

[[checks]]
on = "measured"
name = "x_like_reference"
kind = "drift"
column = "x"
reference = "reference"
method = "psi"
bins = 5

[[checks]]
on = "measured"
name = "cat_mix"
kind = "drift"
column = "cat"
method = "chi_squared"

[[checks]]
on = "measured"
kind = "anomaly"
metric = "mean"
column = "y"
min_history = 1
max_change = 0.5

[[checks]]
on = "measured"
kind = "row_count"
min = 1
"#;

/// Every file under `folder`.
fn walk_files(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A run's check results as comparable text: run-specific fields removed, observed values to
/// 9 significant digits (partitions merge in another order on the cluster). Quantiles are
/// exact in an embedded run and t-digest estimates on a cluster (whose message says so): they
/// are compared by [`assert_quantiles_close`] instead.
fn comparable_checks(results: &[Value]) -> Vec<String> {
    let mut rows: Vec<String> = results
        .iter()
        .map(|result| {
            let mut result = result.clone();
            let object = result.as_object_mut().unwrap();
            for key in ["run_id", "recorded_at"] {
                object.remove(key);
            }
            if object.get("kind").and_then(Value::as_str) == Some("quantile") {
                object.remove("observed");
                object.remove("message");
            }
            if let Some(observed) = object.get("observed").and_then(Value::as_f64) {
                object.insert("observed".into(), Value::from(format!("{observed:.8e}")));
            }
            if let Some(message) = object.get("message").and_then(Value::as_str) {
                // Messages quote the observed value at full precision.
                let rounded = message
                    .split(' ')
                    .map(|word| match word.parse::<f64>() {
                        Ok(v) if word.contains('.') => format!("{v:.8e}"),
                        _ => word.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                object.insert("message".into(), Value::from(rounded));
            }
            result.to_string()
        })
        .collect();
    rows.sort();
    rows
}

/// Quantile estimates of two runs within 1% of each other.
fn assert_quantiles_close(a: &[Value], b: &[Value]) {
    let quantiles = |results: &[Value]| -> Vec<(String, f64)> {
        let mut found: Vec<(String, f64)> = results
            .iter()
            .filter(|r| r["kind"] == "quantile")
            .map(|r| (r["check"].to_string(), r["observed"].as_f64().unwrap()))
            .collect();
        found.sort_by(|x, y| x.0.cmp(&y.0));
        found
    };
    let (a, b) = (quantiles(a), quantiles(b));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 0.01 * x.abs().max(y.abs()),
            "{name}: {x} vs {y}"
        );
    }
}

#[test]
fn checks_on_the_cluster_equal_embedded_checks() {
    let cluster = Cluster::start(2);
    let url = cluster.url();
    let projects = [Project::new(), Project::new()];
    for project in &projects {
        // Three files, so the checks run in several partitions.
        for (part, ids) in [(0, 0..200), (1, 200..420), (2, 420..600)] {
            project.write(&format!("data/raw/part-{part}.csv"), &checked_rows(ids));
        }
        project.write("data/reference.csv", &checked_rows(1000..1400));
        project.write("checked.toml", CHECKED_JOB);
    }
    let [embedded, distributed] = &projects;
    let mut summaries = Vec::new();
    let mut last_run_id = Value::Null;
    for round in 0..2 {
        // The second round changes the data, so drift and anomaly have something to judge.
        if round == 1 {
            for project in &projects {
                project.write("data/raw/part-2.csv", &checked_rows(420..900));
            }
        }
        let mut checks = Vec::new();
        let mut raw = Vec::new();
        for (project, args) in [
            (embedded, vec!["run", "checked.toml"]),
            (
                distributed,
                vec!["run", "checked.toml", "--cluster", url.as_str()],
            ),
        ] {
            let lines = project.json(&args);
            let summary = lines.last().cloned().expect("a summary line");
            last_run_id = summary["run_id"].clone();
            let results = summary["checks"].as_array().expect("check results").clone();
            checks.push(comparable_checks(&results));
            raw.push(results);
        }
        assert_eq!(checks[0], checks[1], "round {round}: check results differ");
        assert_quantiles_close(&raw[0], &raw[1]);
        summaries.push(checks.remove(0));
    }
    // The checks did judge something: rows failed and were sampled, and in the second round
    // drift compared with the previous version and with the reference source.
    let all = summaries.concat().join("\n");
    for expected in [
        "\"failed\":111,",
        "\"samples\":[{",
        "vs version 0",
        "vs reference (",
    ] {
        assert!(all.contains(expected), "{expected} not in {all}");
    }
    for table in [
        "wh/measured",
        "wh/_lakeforge/quarantine/measured",
        "wh/_lakeforge/quarantine/raw",
    ] {
        let strip = |project: &Project| -> Vec<String> {
            let mut rows = project.json(&["show", table, "--limit", "100000"]);
            rows.iter_mut().for_each(without_run_ids);
            sorted_rows(rows)
        };
        let (a, b) = (strip(embedded), strip(distributed));
        assert!(!a.is_empty(), "{table} is empty");
        assert_eq!(
            a, b,
            "{table} differs between the embedded and the cluster run"
        );
        assert_eq!(
            embedded.delta_versions(table),
            distributed.delta_versions(table),
            "{table}'s versions"
        );
    }
    // Only counts and file actions came back from the workers, yet nothing was lost: the
    // published rows, the quarantined rows of this run and the dropped-only rows are the input.
    let last_run = |table: &str| -> Vec<Value> {
        distributed
            .json(&["show", table, "--limit", "100000"])
            .into_iter()
            .filter(|r| r["run_id"] == last_run_id)
            .collect()
    };
    let source_quarantined = last_run("wh/_lakeforge/quarantine/raw").len();
    let product_quarantined = last_run("wh/_lakeforge/quarantine/measured");
    let published = distributed.json(&["show", "wh/measured", "--limit", "100000"]);
    let dropped_only = (0..900u64)
        .filter(|id| id % 97 != 3 && (id * 7) % 97 >= 90)
        .filter(|id| {
            !product_quarantined
                .iter()
                .any(|r| r["id"].as_u64() == Some(*id))
        })
        .count();
    assert!(source_quarantined > 0 && !product_quarantined.is_empty() && dropped_only > 0);
    assert_eq!(
        published.len() + product_quarantined.len() + dropped_only + source_quarantined,
        900
    );
}

fn spawn_run(project: &Project, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lakeforge"))
        .args(args)
        .current_dir(project.path())
        .env("LAKEFORGE_TARGET_PARTITIONS", "4")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lakeforge")
}

/// Waits (bounded) for a background run; returns whether it succeeded and its stderr.
fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            return (
                status.success(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A job heavy enough to be running when a worker dies: 150³ joined rows, grouped.
const HEAVY_JOB: &str = r#"
[job]
name = "heavy"
warehouse = "wh"

[sources.rows]
format = "csv"
path = "data/rows.csv"

[[products]]
name = "cube"
mode = "append"
sql = """SELECT a.id % 10 AS k, count(*) AS n, sum(b.id + c.id) AS s
         FROM rows a, rows b, rows c GROUP BY a.id % 10"""
"#;

#[test]
fn a_worker_killed_mid_job_leaves_a_complete_version_or_none() {
    let mut cluster = Cluster::start(2);
    let (project, _) = project();
    project.write("heavy.toml", HEAVY_JOB);
    let url = cluster.url();
    let run = spawn_run(&project, &["run", "heavy.toml", "--cluster", &url]);
    std::thread::sleep(Duration::from_millis(700));
    // SIGKILL: no goodbye to the coordinator, its shuffle files gone with it.
    let mut worker = cluster.processes.remove(2);
    worker.kill().unwrap();
    worker.wait().unwrap();
    let (succeeded, stderr) = finish(run, Duration::from_secs(240));
    eprintln!("run after the kill: succeeded={succeeded} {stderr}");
    let runs = project.json(&["runs", "wh"]);
    assert_eq!(runs.len(), 1, "{runs:?}");
    if succeeded {
        // Ballista re-ran the lost work: the one version holds the whole answer.
        assert_eq!(project.delta_versions("wh/cube"), vec![0]);
        let total: i64 = project
            .json(&["show", "wh/cube"])
            .iter()
            .map(|r| r["n"].as_i64().unwrap())
            .sum();
        assert_eq!(total, 150 * 150 * 150);
        assert_eq!(runs[0]["status"], "succeeded");
    } else {
        // Or the job failed clearly, and nothing was committed.
        assert!(stderr.contains("product 'cube'"), "{stderr}");
        assert!(project.delta_versions("wh/cube").is_empty());
        assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    }
}

#[test]
fn concurrent_runs_of_one_job_lose_and_duplicate_nothing() {
    let cluster = Cluster::start(2);
    let (project, _) = project();
    let url = cluster.url();
    project.ok(&["run", "scoring.toml", "--cluster", &url]);
    let runs: Vec<Child> = (0..2)
        .map(|_| spawn_run(&project, &["run", "downstream.toml", "--cluster", &url]))
        .collect();
    let outcomes: Vec<(bool, String)> = runs
        .into_iter()
        .map(|run| finish(run, Duration::from_secs(120)))
        .collect();
    let succeeded = outcomes.iter().filter(|(ok, _)| *ok).count();
    for (ok, stderr) in &outcomes {
        assert!(
            *ok || stderr.contains("by_bucket"),
            "a failed run must say why: {stderr}"
        );
    }
    assert!(succeeded >= 1, "{outcomes:?}");
    // Each successful run appended its three rows exactly once, as its own version.
    let versions = project.delta_versions("wh/by_bucket");
    assert_eq!(versions.len(), succeeded, "{versions:?}");
    assert_eq!(rows(&project, "wh/by_bucket").len(), 3 * succeeded);
}

#[test]
fn the_scheduler_runs_its_jobs_on_the_cluster() {
    let cluster = Cluster::start(1);
    let (project, _) = project();
    let scheduled = std::fs::read_to_string(project.join("scoring.toml"))
        .unwrap()
        .replace(
            "name = \"scoring\"",
            "name = \"scoring\"\nschedule = \"* * * * * *\"",
        );
    project.write("scheduled.toml", &scheduled);
    let url = cluster.url();
    let daemon = spawn_run(
        &project,
        &[
            "schedule",
            "scheduled.toml",
            "--http",
            "off",
            "--poll",
            "200ms",
            "--cluster",
            &url,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while project.delta_versions("wh/scores").len() < 2 {
        assert!(Instant::now() < deadline, "no two scheduled runs landed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = daemon.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (stopped, stderr) = finish(daemon, Duration::from_secs(60));
    assert!(stopped, "the daemon did not exit cleanly: {stderr}");
    let runs = project.json(&["runs", "wh"]);
    assert!(runs.len() >= 2, "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| r["status"] == "succeeded" || r["status"] == "cancelled"),
        "{runs:?}"
    );
}

#[test]
fn the_example_job_on_the_cluster_equals_the_embedded_run() {
    let cluster = Cluster::start(2);
    let url = cluster.url();
    let projects = [Project::new(), Project::new()];
    for project in &projects {
        project.copy_example("churn");
    }
    let [embedded, distributed] = &projects;
    let example_args = [
        "example",
        "churn",
        "--dir",
        "churn",
        "--customers",
        "300",
        "--events",
        "20000",
    ];
    // Twice: the second run judges drift against version 0 and reads the first's history.
    for round in 0..2 {
        let mut checks = Vec::new();
        for (project, cluster_args) in [(embedded, vec![]), (distributed, vec!["--cluster", &url])]
        {
            let mut args = example_args.to_vec();
            args.extend(cluster_args);
            let lines = project.json(&args);
            let summary = lines.last().cloned().expect("a summary line");
            checks.push(comparable_checks(
                summary["checks"].as_array().expect("check results"),
            ));
        }
        assert_eq!(checks[0], checks[1], "round {round}: check results differ");
        assert_eq!(checks[0].len(), 10);
    }
    for product in [
        "customer_features",
        "country_daily_revenue",
        "customer_churn_risk",
    ] {
        let table = format!("churn/warehouse/{product}");
        assert_eq!(
            rows(embedded, &table),
            rows(distributed, &table),
            "{product} differs between the embedded and the cluster run"
        );
        assert_eq!(distributed.delta_versions(&table), vec![0, 1]);
        assert_eq!(
            lineage(embedded, &table),
            lineage(distributed, &table),
            "{product}'s lineage differs"
        );
    }
    let history = |project: &Project| {
        comparable_checks(&project.json(&["dq", "churn/warehouse", "--limit", "1000"]))
    };
    assert_eq!(history(embedded), history(distributed));
}
