//! Versioned products: run, history, show with time travel, rollback, append vs overwrite,
//! run records, Delta sources pinned to a version, ad-hoc SQL.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use crate::support::{COUNTRY_JOB, Project, sorted_rows};

const TABLE: &str = "wh/customers_by_country";

#[test]
fn overwrite_runs_make_versions_with_history_and_time_travel() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);

    let first = project.json(&["run", "job.toml"]);
    assert_eq!(first[0]["status"], "succeeded");
    assert_eq!(first[0]["products"][0]["version"], 0);
    assert_eq!(first[0]["products"][0]["rows"], 3);
    let first_run = first[0]["run_id"].as_str().unwrap().to_string();

    let second = project.json(&["run", "job.toml", "--var", "tag=second"]);
    assert_eq!(second[0]["products"][0]["version"], 1);
    let second_run = second[0]["run_id"].as_str().unwrap().to_string();
    assert_ne!(first_run, second_run);

    // History: newest first, with Lakeforge's run id, job and rows.
    let history = project.json(&["history", TABLE]);
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["version"], 1);
    assert_eq!(history[0]["operation"], "WRITE");
    assert_eq!(history[0]["run_id"], second_run.as_str());
    assert_eq!(history[0]["job"], "countries");
    assert_eq!(history[0]["rows_written"], 3);
    assert_eq!(history[1]["version"], 0);
    assert_eq!(history[1]["operation"], "CREATE TABLE");
    assert_eq!(history[1]["run_id"], first_run.as_str());

    // Latest vs. time travel.
    let latest = project.json(&["show", TABLE]);
    assert!(latest.iter().all(|r| r["tag"] == "second"), "{latest:?}");
    let old = project.json(&["show", TABLE, "--version", "0"]);
    assert_eq!(
        sorted_rows(old),
        vec![
            r#"{"country":"DE","customers":1,"tag":"first"}"#,
            r#"{"country":"FR","customers":1,"tag":"first"}"#,
            r#"{"country":"US","customers":2,"tag":"first"}"#,
        ]
    );

    // The table printer works too.
    let table = project.ok(&["show", TABLE, "--limit", "1"]);
    assert!(table.contains("| country |"), "{table}");

    // A version that does not exist is a clear error.
    let err = project.fails(&["show", TABLE, "--version", "9"]);
    assert!(err.contains("version 9"), "{err}");
}

#[test]
fn commit_metadata_records_inputs_and_spec() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    project.ok(&["run", "job.toml"]);
    let commit = project.commit_info(TABLE, 0);
    let lakeforge = &commit["lakeforge"];
    assert_eq!(lakeforge["operation"], "run");
    assert_eq!(lakeforge["job"], "countries");
    assert_eq!(lakeforge["product"], "customers_by_country");
    assert_eq!(lakeforge["rows_written"], 3);
    assert_eq!(lakeforge["spec_hash"].as_str().unwrap().len(), 64);
    assert_eq!(lakeforge["vars"]["tag"], "first");
    let input = &lakeforge["inputs"][0];
    assert_eq!(input["kind"], "files");
    assert_eq!(input["source"], "customers");
    assert_eq!(input["file_count"], 1);
    assert!(
        input["files"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("customers.csv")
    );
    assert!(input["files"][0]["size"].as_u64().unwrap() > 0);
    assert_eq!(commit["operationMetrics"]["numOutputRows"], 3);
}

#[test]
fn append_adds_rows_and_overwrite_replaces_them() {
    let project = Project::new();
    project.write(
        "job.toml",
        &COUNTRY_JOB.replace("mode = \"overwrite\"", "mode = \"append\""),
    );
    project.ok(&["run", "job.toml"]);
    project.ok(&["run", "job.toml", "--var", "tag=second"]);
    let rows = project.json(&["show", TABLE, "--limit", "100"]);
    assert_eq!(rows.len(), 6);
    let tags: BTreeSet<String> = rows
        .iter()
        .map(|r| r["tag"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tags,
        BTreeSet::from(["first".to_string(), "second".to_string()])
    );

    // Switching the same product to overwrite replaces the rows.
    project.write("job.toml", COUNTRY_JOB);
    project.ok(&["run", "job.toml", "--var", "tag=third"]);
    let rows = project.json(&["show", TABLE, "--limit", "100"]);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["tag"] == "third"));
    assert_eq!(project.delta_versions(TABLE), vec![0, 1, 2]);
}

#[test]
fn rollback_restores_an_old_version_as_a_new_one() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    project.ok(&["run", "job.toml"]);
    project.ok(&["run", "job.toml", "--var", "tag=second"]);
    let out = project.ok(&["rollback", TABLE, "--to-version", "0"]);
    assert!(out.contains("new version 2"), "{out}");
    let rows = project.json(&["show", TABLE]);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["tag"] == "first"), "{rows:?}");
    let history = project.json(&["history", TABLE, "--limit", "1"]);
    assert_eq!(history[0]["operation"], "RESTORE");
    assert_eq!(history[0]["version"], 2);
    // The versions in between stay readable.
    let second = project.json(&["show", TABLE, "--version", "1"]);
    assert!(second.iter().all(|r| r["tag"] == "second"));

    let err = project.fails(&["rollback", TABLE, "--to-version", "2"]);
    assert!(err.contains("latest version is 2"), "{err}");
}

#[test]
fn runs_table_records_successes_and_failures() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    project.ok(&["run", "job.toml"]);
    project.write(
        "bad.toml",
        &COUNTRY_JOB.replace("count(*) AS customers", "CAST(country AS INT) AS customers"),
    );
    let err = project.fails(&["run", "bad.toml"]);
    assert!(err.contains("failed"), "{err}");

    let runs = project.json(&["runs", "wh"]);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let failed = runs
        .iter()
        .find(|r| r["status"] == "failed")
        .expect("failed run");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("customers_by_country"),
        "{failed}"
    );
    let succeeded = runs
        .iter()
        .find(|r| r["status"] == "succeeded")
        .expect("succeeded run");
    let products: Value = serde_json::from_str(succeeded["products"].as_str().unwrap()).unwrap();
    assert_eq!(products[0]["product"], "customers_by_country");
    assert_eq!(products[0]["version"], 0);
    assert!(err.contains(failed["run_id"].as_str().unwrap()), "{err}");
}

#[test]
fn a_failure_in_any_product_publishes_no_product() {
    let project = Project::new();
    let job = format!(
        "{COUNTRY_JOB}\n[[products]]\nname = \"broken\"\nsql = \"SELECT CAST(country AS INT) AS c FROM customers\"\n"
    );
    project.write("job.toml", &job);
    project.fails(&["run", "job.toml"]);
    assert!(project.delta_versions(TABLE).is_empty());
    assert!(project.delta_versions("wh/broken").is_empty());
    // No data files were left behind either.
    let leftovers: Vec<_> = fs::read_dir(project.join(TABLE))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".parquet")),
        "{leftovers:?}"
    );
}

#[test]
fn delta_sources_can_be_pinned_to_a_version() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    project.ok(&["run", "job.toml"]);
    project.ok(&["run", "job.toml", "--var", "tag=second"]);
    let downstream = |version: &str| {
        format!(
            r#"
[job]
name = "downstream"
warehouse = "wh"
[sources.countries]
format = "delta"
path = "wh/customers_by_country"
{version}
[[products]]
name = "tags"
sql = "SELECT DISTINCT tag FROM countries"
"#
        )
    };
    project.write("down.toml", &downstream("version = 0"));
    project.ok(&["run", "down.toml"]);
    let rows = project.json(&["show", "wh/tags"]);
    assert_eq!(rows, vec![serde_json::json!({"tag": "first"})]);
    let commit = project.commit_info("wh/tags", 0);
    assert_eq!(commit["lakeforge"]["inputs"][0]["kind"], "delta");
    assert_eq!(commit["lakeforge"]["inputs"][0]["version"], 0);

    project.write("down.toml", &downstream(""));
    project.ok(&["run", "down.toml"]);
    assert_eq!(
        project.json(&["show", "wh/tags"]),
        vec![serde_json::json!({"tag": "second"})]
    );

    project.write("down.toml", &downstream("version = 7"));
    let err = project.fails(&["run", "down.toml"]);
    assert!(
        err.contains("source 'countries'") && err.contains("version 7"),
        "{err}"
    );
}

#[test]
fn sql_validate_and_plan() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    let out = project.ok(&["validate", "job.toml"]);
    assert!(out.contains("job 'countries' is valid"), "{out}");
    assert!(out.contains("customers: Int64"), "{out}");
    assert!(
        project.delta_versions(TABLE).is_empty(),
        "validate must not write"
    );

    let plan = project.ok(&["plan", "job.toml"]);
    assert!(
        plan.contains("-- logical plan") && plan.contains("-- physical plan"),
        "{plan}"
    );
    assert!(plan.contains("Aggregate"), "{plan}");

    project.ok(&["run", "job.toml"]);
    let rows = project.json(&[
        "sql",
        "SELECT t.country, t.customers, count(c.customer_id) AS n FROM t JOIN c ON t.country = c.country GROUP BY 1, 2 ORDER BY 1",
        "--table",
        "t=wh/customers_by_country",
        "--table",
        "c=data/customers/customers.csv",
    ]);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[2],
        serde_json::json!({"country": "US", "customers": 2, "n": 2})
    );
}

#[test]
fn tables_are_readable_without_delta_rs() {
    // An independent reader: replay the _delta_log by hand and read the Parquet files with the
    // parquet crate alone.
    let project = Project::new();
    project.write(
        "job.toml",
        &COUNTRY_JOB.replace(
            "mode = \"overwrite\"",
            "mode = \"overwrite\"\npartition_by = [\"country\"]",
        ),
    );
    project.ok(&["run", "job.toml"]);
    project.ok(&["run", "job.toml", "--var", "tag=second"]);
    let table = project.join(TABLE);
    let mut active = BTreeSet::new();
    for version in project.delta_versions(TABLE) {
        let log = fs::read_to_string(table.join(format!("_delta_log/{version:020}.json"))).unwrap();
        for line in log.lines() {
            let action: Value = serde_json::from_str(line).unwrap();
            if let Some(path) = action["add"]["path"].as_str() {
                active.insert(path.to_string());
            }
            if let Some(path) = action["remove"]["path"].as_str() {
                active.remove(path);
            }
        }
    }
    let mut rows = 0;
    let mut countries = BTreeSet::new();
    for path in &active {
        assert!(path.starts_with("country="), "{path}");
        countries.insert(path.split('/').next().unwrap().to_string());
        let file = fs::File::open(table.join(path)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let tags = batch.column_by_name("tag").unwrap();
            let tags = tags
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            assert!(tags.iter().all(|t| t == Some("second")));
            rows += batch.num_rows();
        }
    }
    assert_eq!(rows, 3);
    assert_eq!(countries.len(), 3);
}

#[test]
fn overwrite_can_change_the_schema_and_old_versions_keep_theirs() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    project.ok(&["run", "job.toml"]);
    project.write(
        "job.toml",
        &COUNTRY_JOB.replace("'${tag}' AS tag", "'${tag}' AS tag, max(age) AS oldest"),
    );
    project.ok(&["run", "job.toml"]);
    let latest = project.json(&["show", TABLE]);
    assert!(
        latest
            .iter()
            .any(|r| r["country"] == "DE" && r["oldest"] == 51),
        "{latest:?}"
    );
    let old = project.json(&["show", TABLE, "--version", "0"]);
    assert!(old.iter().all(|r| r.get("oldest").is_none()), "{old:?}");

    // A timestamp without time zone needs a table feature the existing table lacks: refused,
    // table untouched.
    let before = project.snapshot_log(TABLE);
    project.write(
        "job.toml",
        &COUNTRY_JOB.replace(
            "'${tag}' AS tag",
            "'${tag}' AS tag, CAST('2026-01-01' AS TIMESTAMP) AS ts",
        ),
    );
    let err = project.fails(&["run", "job.toml"]);
    assert!(
        err.contains("column 'ts'") && err.contains("timestampNtz"),
        "{err}"
    );
    assert_eq!(project.snapshot_log(TABLE), before);
}

#[test]
fn vacuum_keeps_what_versions_reference_and_refuses_nested_tables() {
    let project = Project::new();
    project.write(
        "job.toml",
        r#"
[job]
name = "vac"
warehouse = "wh"

[[products]]
name = "outer"
sql = "SELECT value AS id FROM generate_series(1, 10)"

[[products]]
name = "inner"
path = "outer/inner"
sql = "SELECT value AS id FROM generate_series(1, 5)"
"#,
    );
    project.ok(&["run", "job.toml"]);
    project.ok(&["run", "job.toml"]);
    // An overwrite's replaced files are kept for the retention (7 days by default).
    let report = project.json(&["vacuum", "wh/outer/inner", "--dry-run"]);
    assert_eq!(report[0]["files"], serde_json::json!([]), "{report:?}");
    assert_eq!(report[0]["dry_run"], true);
    // With no retention the replaced version's file goes, and the latest still reads.
    let error = project.fails(&["vacuum", "wh/outer/inner", "--retain", "0s"]);
    assert!(error.contains("--force"), "{error}");
    let report = project.json(&["vacuum", "wh/outer/inner", "--retain", "0s", "--force"]);
    assert_eq!(
        report[0]["files"].as_array().unwrap().len(),
        1,
        "{report:?}"
    );
    assert_eq!(project.json(&["show", "wh/outer/inner"]).len(), 5);
    let operations: Vec<Value> = project
        .json(&["history", "wh/outer/inner"])
        .into_iter()
        .map(|h| h["operation"].clone())
        .collect();
    assert!(
        operations.contains(&Value::from("VACUUM END")),
        "{operations:?}"
    );
    // A table inside the table's folder would look like orphans: refused, nothing deleted.
    let error = project.fails(&["vacuum", "wh/outer", "--retain", "0s", "--force"]);
    assert!(error.contains("another Delta table at inner/"), "{error}");
    assert_eq!(project.json(&["show", "wh/outer/inner"]).len(), 5);
    let error = project.fails(&["vacuum", "wh/missing"]);
    assert!(error.contains("wh/missing"), "{error}");
}

#[test]
fn sql_reads_newline_delimited_json_files() {
    let project = Project::new();
    project.write(
        "events.ndjson",
        "{\"kind\":\"START\",\"n\":1}\n{\"kind\":\"COMPLETE\",\"n\":2}\n",
    );
    let rows = project.json(&[
        "sql",
        "SELECT kind, n FROM e ORDER BY n",
        "--table",
        "e=events.ndjson",
    ]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1]["kind"], "COMPLETE");
}

#[test]
fn sql_runs_a_script_of_statements_in_one_session() {
    let project = Project::new();
    // A view made by the first statement is seen by the second (TPC-H q15's shape); a `;`
    // inside a string literal or a comment does not split a statement.
    project.write(
        "script.sql",
        "CREATE VIEW by_country AS SELECT country, count(*) AS n FROM c GROUP BY country;\n\
         -- counts; per country\n\
         SELECT country, n, 'a;b' AS tag FROM by_country ORDER BY country;\n\
         DROP VIEW by_country;\n",
    );
    let table = ["--table", "c=data/customers/customers.csv"];
    let text = project.ok(&[&["sql", "-f", "script.sql"][..], &table[..]].concat());
    assert!(text.contains("| DE      | 1 | a;b |"), "{text}");
    assert!(text.contains("| US      | 2 | a;b |"), "{text}");
    // DDL prints nothing in a script: exactly one table came out.
    assert_eq!(text.matches("| country |").count(), 1, "{text}");

    let lines = project.json(&[&["sql", "-f", "script.sql"][..], &table[..]].concat());
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1]["statement"], 2);
    assert!(
        lines[1]["sql"]
            .as_str()
            .unwrap()
            .starts_with("SELECT country")
    );
    assert!(lines[1]["elapsed_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        lines[1]["rows"],
        serde_json::json!([
            {"country": "DE", "n": 1, "tag": "a;b"},
            {"country": "FR", "n": 1, "tag": "a;b"},
            {"country": "US", "n": 2, "tag": "a;b"},
        ])
    );
    assert_eq!(lines[0]["rows"], serde_json::json!([]));

    // The same query twice in one process (the warm measurement), with timings on stderr.
    let output = project.run(&[
        "sql",
        "--timing",
        "SELECT count(*) AS n FROM c; SELECT count(*) AS n FROM c",
        "--table",
        "c=data/customers/customers.csv",
    ]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("statement 1: "), "{stderr}");
    assert!(stderr.contains("statement 2: "), "{stderr}");
    assert!(stderr.contains(" ms, 1 row\n"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .matches("| 4 |")
            .count(),
        2
    );

    // A failing statement names itself; what ran before it was printed, nothing after runs.
    let output = project.run(&[
        "sql",
        "SELECT 1 AS first; SELECT * FROM missing_table; SELECT 3 AS third",
    ]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("first"), "{stdout}");
    assert!(!stdout.contains("third"), "{stdout}");
    assert!(
        stderr.starts_with("error: statement 2 (SELECT * FROM missing_table) failed: "),
        "{stderr}"
    );
    assert!(stderr.contains("missing_table"), "{stderr}");

    let error = project.fails(&["sql", "SELECT 1; SELEC 2"]);
    assert!(error.contains("cannot parse the SQL"), "{error}");
    let error = project.fails(&["sql", " ; "]);
    assert!(error.contains("no SQL statement given"), "{error}");
    let error = project.fails(&["sql", "-f", "nope.sql"]);
    assert!(error.contains("nope.sql"), "{error}");
    let error = project.fails(&["sql"]);
    assert!(error.contains("required"), "{error}");
}
