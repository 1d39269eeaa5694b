//! Bad input gets one clear error, a non-zero exit, and leaves every table version untouched.

use crate::support::{COUNTRY_JOB, Project};

const TABLE: &str = "wh/customers_by_country";

/// Runs the good job once, then `bad_job`, and checks the error mentions every `needle` and
/// the product's log did not change.
fn fails_cleanly(bad_job: &str, needles: &[&str]) -> String {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    project.ok(&["run", "job.toml"]);
    let before = project.snapshot_log(TABLE);
    assert!(!before.is_empty());

    project.write("bad.toml", bad_job);
    let err = project.fails(&["run", "bad.toml"]);
    for needle in needles {
        assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    }
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert_eq!(
        project.snapshot_log(TABLE),
        before,
        "the table's log changed"
    );
    err
}

#[test]
fn unknown_key_names_key_and_line() {
    let bad = COUNTRY_JOB.replace("format = \"csv\"", "format = \"csv\"\nheadr = true");
    fails_cleanly(&bad, &["bad.toml", "headr", "line 11"]);
}

#[test]
fn missing_source_path_names_the_source() {
    let bad = COUNTRY_JOB.replace("data/customers", "data/no_such_folder");
    fails_cleanly(
        &bad,
        &[
            "source 'customers'",
            "no_such_folder",
            "no .csv files found",
        ],
    );
}

#[test]
fn sql_syntax_error_names_the_step_and_position() {
    let bad = COUNTRY_JOB.replace(
        "SELECT * FROM customers WHERE",
        "SELECT * FROM customers WHER",
    );
    fails_cleanly(&bad, &["step 'adults'", "Line: 1, Column"]);
}

#[test]
fn unknown_table_names_the_step_and_table() {
    let bad = COUNTRY_JOB.replace("FROM customers WHERE", "FROM customerz WHERE");
    fails_cleanly(&bad, &["step 'adults'", "customerz", "not found"]);
}

#[test]
fn unknown_column_names_the_product_and_column() {
    let bad = COUNTRY_JOB.replace("SELECT country, count(*)", "SELECT countr, count(*)");
    fails_cleanly(&bad, &["product 'customers_by_country'", "countr"]);
}

#[test]
fn undefined_variable_names_the_variable() {
    let bad = COUNTRY_JOB.replace("'${tag}'", "'${run_date}'");
    fails_cleanly(
        &bad,
        &["product 'customers_by_country'", "run_date", "--var"],
    );
}

#[test]
fn append_with_a_changed_schema_names_the_columns() {
    let project = Project::new();
    let append = COUNTRY_JOB.replace("mode = \"overwrite\"", "mode = \"append\"");
    project.write("job.toml", &append);
    project.ok(&["run", "job.toml"]);
    let before = project.snapshot_log(TABLE);
    project.write(
        "bad.toml",
        &append.replace("count(*) AS customers", "count(*) AS customer_count"),
    );
    let err = project.fails(&["run", "bad.toml"]);
    assert!(err.contains("append mode"), "{err}");
    assert!(err.contains("column 'customers' is missing"), "{err}");
    assert!(err.contains("column 'customer_count' is new"), "{err}");
    assert_eq!(project.snapshot_log(TABLE), before);
    // validate catches it too, before any data is read.
    let err = project.fails(&["validate", "bad.toml"]);
    assert!(err.contains("column 'customers' is missing"), "{err}");
}

#[test]
fn corrupt_parquet_names_the_source_and_publishes_nothing() {
    let project = Project::new();
    project.write("data/events/part-0.parquet", "this is not parquet");
    project.write(
        "job.toml",
        r#"
[job]
name = "corrupt"
warehouse = "wh"
[sources.events]
format = "parquet"
path = "data/events"
[[products]]
name = "event_count"
sql = "SELECT count(*) AS n FROM events"
"#,
    );
    let err = project.fails(&["run", "job.toml"]);
    assert!(err.contains("source 'events'"), "{err}");
    assert!(project.delta_versions("wh/event_count").is_empty());
}

#[test]
fn corrupt_parquet_after_planning_fails_the_run_without_a_version() {
    // The footer is valid but a data page is not: planning succeeds, execution fails.
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    project.ok(&["run", "job.toml"]);
    let before = project.snapshot_log(TABLE);
    let file = project.join(TABLE).join(
        std::fs::read_dir(project.join(TABLE))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with(".parquet"))
            .unwrap(),
    );
    let mut bytes = std::fs::read(&file).unwrap();
    // Overwrite the first data page (after the 4-byte magic) with garbage, keep the footer.
    for byte in bytes.iter_mut().skip(4).take(40) {
        *byte = 0xAB;
    }
    std::fs::write(&file, bytes).unwrap();
    project.write(
        "down.toml",
        r#"
[job]
name = "down"
warehouse = "wh"
[sources.countries]
format = "delta"
path = "wh/customers_by_country"
[[products]]
name = "copy"
sql = "SELECT * FROM countries"
"#,
    );
    let err = project.fails(&["run", "down.toml"]);
    assert!(err.contains("product 'copy'"), "{err}");
    assert!(project.delta_versions("wh/copy").is_empty());
    assert_eq!(project.snapshot_log(TABLE), before);
    let runs = project.json(&["runs", "wh"]);
    assert!(
        runs.iter()
            .any(|r| r["status"] == "failed" && r["job"] == "down"),
        "{runs:?}"
    );
}

#[test]
fn non_query_statements_are_refused() {
    let bad = COUNTRY_JOB.replace(
        "SELECT * FROM customers WHERE age IS NULL OR age >= 18",
        "DROP TABLE customers",
    );
    fails_cleanly(&bad, &["step 'adults'", "only a query"]);
}

#[test]
fn unnamed_expressions_must_be_aliased() {
    let bad = COUNTRY_JOB.replace("count(*) AS customers", "count(*)");
    fails_cleanly(
        &bad,
        &["product 'customers_by_country'", "count(*)", "alias"],
    );
}

#[test]
fn missing_job_file_and_bad_arguments() {
    let project = Project::new();
    let err = project.fails(&["run", "nope.toml"]);
    assert!(err.contains("nope.toml"), "{err}");
    project.write("job.toml", COUNTRY_JOB);
    let err = project.fails(&["run", "job.toml", "--var", "novalue"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = project.fails(&["history", "wh/none"]);
    assert!(err.contains("no Delta table"), "{err}");
    let err = project.fails(&["runs", "wh"]);
    assert!(err.contains("no job has run"), "{err}");
}

/// A product whose rows do not fit the filesystem: one error line saying the disk is full and
/// where, no panic or warning from the writers, no file left behind. The warehouse is a small
/// tmpfs mounted in a private mount namespace (`unshare -m`), so nothing outside the test sees
/// it and it disappears with the process; where namespaces or mounts are not allowed (not
/// root), the test says so and stops.
#[test]
fn a_full_disk_is_one_clear_error_and_leaves_no_files() {
    let allowed = std::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1M tmpfs /mnt && umount /mnt",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !allowed {
        eprintln!("skipped: this machine cannot mount a small tmpfs (unshare -m / mount)");
        return;
    }
    let project = Project::new();
    // md5 strings barely compress: about 25 MB of Parquet for a 3 MiB filesystem.
    project.write(
        "job.toml",
        r#"
[job]
name = "fill"
warehouse = "wh"

[[products]]
name = "big"
sql = "SELECT value AS id, md5(CAST(value AS VARCHAR)) AS h, md5(CAST(value + 1 AS VARCHAR)) AS h2 FROM generate_series(1, 400000)"
"#,
    );
    std::fs::create_dir_all(project.join("wh")).unwrap();
    let script = r#"mount -t tmpfs -o size=3M tmpfs wh || exit 90
"$0" run job.toml 2>stderr.txt; echo "exit=$?"
echo "files=$(find wh/big -type f 2>/dev/null | wc -l)"
cat stderr.txt >&2"#;
    let output = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", script, env!("CARGO_BIN_EXE_lakeforge")])
        .current_dir(project.path())
        .env("LAKEFORGE_TARGET_PARTITIONS", "2")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stdout.contains("exit=1"), "{stdout}\n{stderr}");
    assert!(stdout.contains("files=0"), "files left behind:\n{stdout}");
    assert!(
        !stderr.contains("panicked"),
        "a panic was printed:\n{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "more than the error line:\n{stderr}"
    );
    assert!(
        stderr.starts_with("error:")
            && stderr.contains("product 'big'")
            && stderr.contains("the disk is full")
            && stderr.contains("wh/big"),
        "{stderr}"
    );
}

/// A product path that already holds files that are not a Delta table is refused (a later
/// VACUUM would delete them); the files stay as they were. An empty folder is fine.
#[test]
fn a_product_folder_holding_other_files_is_refused() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    project.write("wh/customers_by_country/notes.txt", "someone else's file");
    let err = project.fails(&["run", "job.toml"]);
    assert!(
        err.contains("product 'customers_by_country'")
            && err.contains("not a Delta table but already holds files")
            && err.contains("notes.txt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("wh/customers_by_country/notes.txt")).unwrap(),
        "someone else's file"
    );
    assert!(!project.join("wh/customers_by_country/_delta_log").exists());
    let err = project.fails(&["validate", "job.toml"]);
    assert!(err.contains("already holds files"), "{err}");

    std::fs::remove_file(project.join("wh/customers_by_country/notes.txt")).unwrap();
    project.ok(&["run", "job.toml"]);
}

/// `worker --bind` takes an IP address (the ports have their own flags); HOST:PORT is refused
/// naming the flag and the expected form, before anything starts.
#[test]
fn worker_bind_must_be_an_ip_address() {
    let project = Project::new();
    let err = project.fails(&[
        "worker",
        "--coordinator",
        "127.0.0.1:1",
        "--bind",
        "127.0.0.1:50051",
    ]);
    assert!(
        err.contains("--bind '127.0.0.1:50051'")
            && err.contains("IP address")
            && err.contains("--flight-port"),
        "{err}"
    );
}
