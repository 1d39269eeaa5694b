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
