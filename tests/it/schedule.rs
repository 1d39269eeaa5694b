//! The scheduler daemon end to end: the real `lakeforge schedule` on a one-second schedule, its
//! operations endpoint, SIGTERM, data triggers across a restart, `lakeforge status`, and a run
//! cancelled before its commits. (The scheduling rules themselves are tested in paused time in
//! `engine/src/schedule/scheduler_tests.rs`.)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Project, stdout_lines};

/// A running `lakeforge schedule`; killed if a test fails before stopping it.
struct Daemon {
    child: Child,
    address: String,
    stdout: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(project: &Project, paths: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lakeforge"))
            .arg("schedule")
            .args(paths)
            .args(["--http", "127.0.0.1:0", "--poll", "200ms", "--grace", "20s"])
            .current_dir(project.path())
            .env("LAKEFORGE_TARGET_PARTITIONS", "2")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lakeforge schedule");
        let stdout = stdout_lines(&mut child);
        let first = stdout
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon did not report it started");
        let address = first
            .split("http://")
            .nth(1)
            .unwrap_or_else(|| panic!("no endpoint address in {first:?}"))
            .trim()
            .to_string();
        Daemon {
            child,
            address,
            stdout,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).expect("connect to the endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        (status, body.to_string())
    }

    fn status(&self) -> Value {
        let (code, body) = self.get("/api/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the rest of stdout.
    fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "the daemon exited with {status}");
        let mut rest = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            rest.push(line);
        }
        rest.join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 100ms for up to a minute.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn job_status<'a>(status: &'a Value, job: &str) -> &'a Value {
    status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == job)
        .unwrap_or_else(|| panic!("no job {job} in {status}"))
}

fn succeeded_runs(status: &Value, job: &str) -> u64 {
    job_status(status, job)["runs"]["succeeded"]
        .as_u64()
        .unwrap_or(0)
}

/// Run records by status for `job`, from the warehouse.
fn recorded_runs(project: &Project, job: &str) -> BTreeMap<String, Vec<String>> {
    let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !project.join("wh/_lakeforge/runs/_delta_log").exists() {
        return runs;
    }
    for run in project.json(&["runs", "wh", "--limit", "1000"]) {
        if run["job"] == job {
            runs.entry(run["status"].as_str().unwrap().to_string())
                .or_default()
                .push(run["run_id"].as_str().unwrap().to_string());
        }
    }
    runs
}

const TICK: &str = r#"
[job]
name = "tick"
warehouse = "wh"
schedule = "* * * * * *"
[sources.customers]
format = "csv"
path = "data/customers"
[[products]]
name = "ticks"
sql = "SELECT customer_id, '${run_date}' AS run_date, '${run_ts}' AS run_ts FROM customers"
freshness_sla = "1h"
"#;

const FOLLOW: &str = r#"
[job]
name = "follow"
warehouse = "wh"
after = ["ticks"]
[sources.ticks]
format = "delta"
path = "wh/ticks"
[[products]]
name = "followed"
sql = "SELECT count(*) AS n FROM ticks"
"#;

#[test]
fn daemon_runs_a_one_second_schedule_serves_operations_and_stops_on_sigterm() {
    let project = Project::new();
    project.write("tick.toml", TICK);
    project.write("follow.toml", FOLLOW);
    // A folder: every *.toml directly inside is a job.
    let daemon = Daemon::start(&project, &["."]);

    wait_for("two scheduled runs and a triggered one", || {
        let status = daemon.status();
        succeeded_runs(&status, "tick") >= 2 && succeeded_runs(&status, "follow") >= 1
    });

    let (code, health) = daemon.get("/health");
    assert_eq!(code, 200);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        (health["status"].as_str(), health["jobs"].as_u64()),
        (Some("ok"), Some(2))
    );

    let (code, metrics) = daemon.get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("lakeforge_job_runs_total{job=\"tick\",status=\"succeeded\"}"));
    assert!(metrics.contains("lakeforge_product_sla_breached{job=\"tick\",product=\"ticks\"} 0"));
    assert!(
        metrics
            .contains("lakeforge_product_staleness_seconds{job=\"follow\",product=\"followed\"}")
    );
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }

    let (code, tick) = daemon.get("/api/jobs/tick");
    assert_eq!(code, 200);
    let tick: Value = serde_json::from_str(&tick).unwrap();
    assert_eq!(tick["job"]["schedule"], "* * * * * *");
    assert_eq!(tick["products"][0]["state"], "fresh");
    assert_eq!(tick["products"][0]["freshness_sla_seconds"], 3600.0);
    assert_eq!(daemon.get("/api/jobs/nope").0, 404);

    // An edit that does not validate is reported; the job keeps its previous definition.
    project.write(
        "follow.toml",
        &FOLLOW.replace("after = [\"ticks\"]", "schedule = \"every minute\""),
    );
    wait_for("the broken edit to be reported", || {
        job_status(&daemon.status(), "follow")["spec_error"]
            .as_str()
            .is_some_and(|e| e.contains("`schedule`"))
    });
    let before = succeeded_runs(&daemon.status(), "follow");
    wait_for("the previous definition to keep running", || {
        succeeded_runs(&daemon.status(), "follow") > before
    });
    assert!(
        daemon
            .get("/metrics")
            .1
            .contains("lakeforge_job_spec_error{job=\"follow\"} 1")
    );

    let rest = daemon.terminate();
    assert!(rest.contains("scheduler stopped"), "{rest}");

    // Every version of the product was committed by a run recorded as succeeded: shutdown left
    // no partial version.
    let runs = recorded_runs(&project, "tick");
    let succeeded = &runs["succeeded"];
    let versions = project.delta_versions("wh/ticks");
    assert_eq!(versions.len(), succeeded.len(), "{runs:?}");
    for version in versions {
        let run_id = project.commit_info("wh/ticks", version)["lakeforge"]["run_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            succeeded.contains(&run_id),
            "version {version} by unknown run {run_id}"
        );
    }
    // Scheduled runs get their occurrence as ${run_ts} (whole seconds) and ${run_date}.
    let rows = project.json(&["show", "wh/ticks"]);
    let run_ts = rows[0]["run_ts"].as_str().unwrap();
    assert!(
        run_ts.len() == 20
            && run_ts.ends_with('Z')
            && run_ts.starts_with(rows[0]["run_date"].as_str().unwrap()),
        "{run_ts}"
    );

    // `lakeforge status` shows the same from the warehouse alone.
    let text = project.ok(&["status", "wh"]);
    assert!(
        text.contains("tick") && text.contains("* * * * * *"),
        "{text}"
    );
    let report = &project.json(&["status", "wh"])[0];
    let tick = job_status(report, "tick");
    assert_eq!(
        tick["runs"]["succeeded"].as_u64(),
        Some(succeeded.len() as u64)
    );
    assert_eq!(tick["schedule"], "* * * * * *");
    assert!(tick["next_run"].is_string());
    let ticks = report["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product"] == "ticks")
        .unwrap();
    assert_eq!(ticks["state"], "fresh");
    assert_eq!(ticks["freshness_sla_seconds"], 3600.0);
}

const UP: &str = r#"
[job]
name = "up"
warehouse = "wh"
[sources.customers]
format = "csv"
path = "data/customers"
[[products]]
name = "up_out"
sql = "SELECT customer_id FROM customers"
"#;

const DOWN: &str = r#"
[job]
name = "down"
warehouse = "wh"
after = ["up_out"]
[sources.up]
format = "delta"
path = "wh/up_out"
[[products]]
name = "down_out"
sql = "SELECT count(*) AS n FROM up"
"#;

#[test]
fn data_triggers_fire_once_per_version_across_a_daemon_restart() {
    let project = Project::new();
    project.write("up.toml", UP);
    project.write("down.toml", DOWN);
    project.ok(&["run", "up.toml"]);
    let down_runs = || {
        recorded_runs(&project, "down")
            .get("succeeded")
            .map_or(0, Vec::len)
    };

    let daemon = Daemon::start(&project, &["down.toml"]);
    wait_for("the first triggered run", || down_runs() == 1);
    project.ok(&["run", "up.toml"]);
    wait_for("the run for version 1", || down_runs() == 2);
    daemon.terminate();

    // A version lands while the daemon is down; the restarted daemon runs for it once.
    project.ok(&["run", "up.toml"]);
    let daemon = Daemon::start(&project, &["down.toml"]);
    wait_for("the run for version 2", || down_runs() == 3);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(down_runs(), 3, "a version triggered more than one run");
    daemon.terminate();

    let log = project.json(&["show", "wh/_lakeforge/schedule", "--limit", "100"]);
    let mut consumed: Vec<String> = log
        .iter()
        .filter(|r| r["job"] == "down")
        .map(|r| {
            assert_eq!(r["trigger"], "inputs");
            assert_eq!(r["status"], "succeeded");
            r["input_versions"].as_str().unwrap().to_string()
        })
        .collect();
    consumed.sort();
    assert_eq!(consumed.len(), 3);
    for (version, entry) in consumed.iter().enumerate() {
        assert!(
            entry.ends_with(&format!("up_out/\":{version}}}")),
            "{entry}"
        );
    }
}

#[test]
fn bad_schedules_and_after_entries_are_refused_with_their_key() {
    let project = Project::new();
    project.write("bad_cron.toml", &TICK.replace("* * * * * *", "61 * * * *"));
    let error = project.fails(&["validate", "bad_cron.toml"]);
    assert!(error.contains("job 'tick': `schedule`"), "{error}");

    project.write("self.toml", &DOWN.replace("[\"up_out\"]", "[\"down_out\"]"));
    let error = project.fails(&["schedule", "self.toml", "--http", "off"]);
    assert!(error.contains("would trigger itself"), "{error}");

    project.write(
        "csv_after.toml",
        &TICK.replace("schedule = \"* * * * * *\"", "after = [\"customers\"]"),
    );
    let error = project.fails(&["schedule", "csv_after.toml", "--http", "off"]);
    assert!(error.contains("only Delta tables have versions"), "{error}");

    let error = project.fails(&["schedule", "missing_folder", "--http", "off"]);
    assert!(error.contains("missing_folder"), "{error}");

    let error = project.fails(&["status", "data"]);
    assert!(error.contains("is it a Lakeforge warehouse?"), "{error}");
}

#[tokio::test]
async fn a_cancelled_run_commits_nothing_and_is_recorded_as_cancelled() {
    use lakeforge_engine::cancel::RunCancellation;
    use lakeforge_engine::job::{LoadedJob, NoProgress, run_job_with};

    let project = Project::new();
    project.write(
        "slow.toml",
        r#"
[job]
name = "slow"
warehouse = "wh"
[[products]]
name = "numbers"
sql = "SELECT value AS v, value * 2 AS w FROM generate_series(1, 5000000000)"
"#,
    );
    let loaded = LoadedJob::load(&project.join("slow.toml"), &BTreeMap::new(), None).unwrap();
    let cancel = RunCancellation::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        canceller.cancel("timed out after 500ms");
    });
    let started = Instant::now();
    let error = run_job_with(&loaded, &Default::default(), &NoProgress, &cancel)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cancellation took {:?}",
        started.elapsed()
    );
    assert!(
        error
            .to_string()
            .contains("cancelled: timed out after 500ms"),
        "{error}"
    );
    assert!(
        project.delta_versions("wh/numbers").is_empty(),
        "a version was committed"
    );
    let runs = recorded_runs(&project, "slow");
    assert_eq!(runs.keys().collect::<Vec<_>>(), vec!["cancelled"]);
    let events =
        std::fs::read_to_string(project.join("wh/_lakeforge/openlineage/events.ndjson")).unwrap();
    let last: Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(last["eventType"], "ABORT");
}
