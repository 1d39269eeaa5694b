//! Data-quality checks: every kind, every action, NULL handling, `mostly`, quarantine, fail,
//! history, anomaly, drift and the one-scan plan, all through the CLI.

use serde_json::Value;

use crate::support::Project;

/// id, name, age, country, email, signup: one row per case the checks below count.
const PEOPLE: &str = "id,name,age,country,email,signup
1,ann,34,FR,ann@example.com,2026-11-20T10:00:00Z
2,bob,17,DE,bob@example.com,2026-11-21T10:00:00Z
3,cat,,FR,cat@example.com,2026-11-21T11:00:00Z
4,dan,45,XX,dan-at-example.com,2026-11-19T10:00:00Z
4,eve,200,DE,eve@example.com,2026-11-21T12:00:00Z
6,fay,29,,fay@example.com,2026-11-21T13:00:00Z
7,gus,52,US,,2026-11-18T09:00:00Z
8,hal,38,US,hal@example.com,2026-11-17T08:00:00Z
";

fn project_with(job: &str) -> Project {
    let project = Project::new();
    project.write("data/people.csv", PEOPLE);
    project.write("data/countries.csv", "code\nFR\nDE\nUS\n");
    project.write("job.toml", job);
    project
}

const HEADER: &str = r#"
[job]
name = "people"
warehouse = "wh"

[sources.people]
format = "csv"
path = "data/people.csv"
key = ["id"]

[sources.countries]
format = "csv"
path = "data/countries.csv"

[[products]]
name = "people_out"
key = ["id"]
sql = "SELECT id, name, age, country, email, CAST(signup AS TIMESTAMP) AS signup FROM people"
"#;

fn run_checks(project: &Project) -> (Value, Vec<Value>) {
    let lines = project.json(&["run", "job.toml"]);
    let summary = lines.last().cloned().expect("a summary line");
    let checks = summary["checks"].as_array().cloned().unwrap_or_default();
    (summary, checks)
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no result for {name} in {checks:#?}"))
}

fn counts(result: &Value) -> (u64, u64, u64, bool) {
    (
        result["evaluated"].as_u64().unwrap(),
        result["failed"].as_u64().unwrap(),
        result["null_skipped"].as_u64().unwrap(),
        result["passed"].as_bool().unwrap(),
    )
}

#[test]
fn row_level_kinds_count_failures_nulls_and_samples() {
    let job = format!(
        r#"{HEADER}
[[checks]]
on = "people_out"
kind = "not_null"
column = "age"

[[checks]]
on = "people_out"
kind = "in_set"
column = "country"
values = ["FR", "DE", "US"]

[[checks]]
on = "people_out"
kind = "between"
column = "age"
min = 18
max = 120
samples = 2

[[checks]]
on = "people_out"
name = "age_known_and_adult"
kind = "between"
column = "age"
min = 18
nulls = "fail"

[[checks]]
on = "people_out"
kind = "regex"
column = "email"
pattern = "^[^@]+@[^@]+$"

[[checks]]
on = "people_out"
kind = "unique"
columns = ["id"]

[[checks]]
on = "people_out"
kind = "referential"
column = "country"
reference = "countries"
reference_column = "code"

[[checks]]
on = "people_out"
name = "adult_expect"
expect = "age >= 18 OR country = 'FR'"
"#
    );
    let project = project_with(&job);
    let (summary, checks) = run_checks(&project);
    assert_eq!(summary["products"][0]["rows"], 8, "warn keeps every row");
    // (evaluated, failed, null_skipped, passed)
    assert_eq!(counts(check(&checks, "not_null_age")), (8, 1, 0, false));
    assert_eq!(counts(check(&checks, "in_set_country")), (8, 1, 1, false));
    assert_eq!(counts(check(&checks, "between_age")), (8, 2, 1, false));
    assert_eq!(
        counts(check(&checks, "age_known_and_adult")),
        (8, 2, 0, false)
    );
    assert_eq!(counts(check(&checks, "regex_email")), (8, 1, 1, false));
    assert_eq!(counts(check(&checks, "unique_id")), (8, 2, 0, false));
    assert_eq!(
        counts(check(&checks, "referential_country")),
        (8, 1, 1, false)
    );
    // bob (17, DE) fails; cat (NULL age, FR) passes through the OR.
    assert_eq!(counts(check(&checks, "adult_expect")), (8, 1, 0, false));

    // Samples: the key column and the checked column, smallest key first, at most `samples`.
    let samples = check(&checks, "between_age")["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0]["id"], "2");
    assert_eq!(samples[0]["age"], "17");
    assert_eq!(samples[1]["id"], "4");
    assert_eq!(samples[1]["age"], "200");
    let unique = check(&checks, "unique_id")["samples"].as_array().unwrap();
    assert!(unique.iter().all(|s| s["id"] == "4"), "{unique:?}");

    // Results are in the commit metadata and the history table.
    let history = project.json(&["dq", "wh", "--check", "between_age"]);
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["failed"], 2);
    assert_eq!(history[0]["product_version"], 0);
    let log =
        std::fs::read_to_string(project.join("wh/people_out/_delta_log/00000000000000000000.json"))
            .unwrap();
    assert!(log.contains("\"check\":\"between_age\""), "{log}");
}

#[test]
fn mostly_passes_at_its_exact_boundary_and_fail_blocks_the_commit() {
    // 8 rows, 1 failing not_null: pass rate 7/8 = 0.875 exactly.
    let job = |mostly: &str, action: &str| {
        format!(
            r#"{HEADER}
[[checks]]
on = "people_out"
kind = "not_null"
column = "age"
mostly = {mostly}
action = "{action}"
"#
        )
    };
    let project = project_with(&job("0.875", "fail"));
    let (_, checks) = run_checks(&project);
    assert_eq!(counts(check(&checks, "not_null_age")), (8, 1, 0, true));
    let before = project.snapshot_log("wh/people_out");

    project.write("job.toml", &job("0.876", "fail"));
    let err = project.fails(&["run", "job.toml"]);
    assert!(
        err.contains("check 'not_null_age' on 'people_out' failed: 1 of 8 rows failed"),
        "{err}"
    );
    assert!(err.contains("nothing was committed"), "{err}");
    assert_eq!(project.snapshot_log("wh/people_out"), before);
    // The failed run's metrics are still recorded, without a product version.
    let history = project.json(&["dq", "wh", "--check", "not_null_age"]);
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["passed"], false);
    assert!(history[0]["product_version"].is_null());
    assert_eq!(history[1]["passed"], true);
    let runs = project.json(&["runs", "wh"]);
    assert_eq!(runs[0]["status"], "failed");
}

#[test]
fn drop_and_quarantine_split_rows_in_one_pass() {
    let job = format!(
        r#"{HEADER}
[[checks]]
on = "people_out"
name = "age_in_range"
expect = "age BETWEEN 18 AND 120"
action = "quarantine"

[[checks]]
on = "people_out"
kind = "referential"
column = "country"
reference = "countries"
reference_column = "code"
action = "drop"

[[checks]]
on = "people_out"
kind = "unique"
column = "id"
action = "quarantine"
"#
    );
    let project = project_with(&job);
    let (summary, _) = run_checks(&project);
    // bob (17) and eve (200, duplicate id 4) and dan (duplicate id 4) are quarantined; dan's
    // country XX would also be dropped, but quarantine wins. cat (NULL age) and fay (NULL
    // country) pass because NULL predicates pass.
    assert_eq!(summary["products"][0]["rows"], 5);
    assert_eq!(summary["products"][0]["quarantined"], 3);
    let quarantined = project.json(&["show", "wh/_lakeforge/quarantine/people_out"]);
    let mut by_id: Vec<(String, Vec<String>)> = quarantined
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["failed_checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    by_id.sort();
    assert_eq!(
        by_id,
        vec![
            ("bob".to_string(), vec!["age_in_range".to_string()]),
            (
                "dan".to_string(),
                vec!["referential_country".to_string(), "unique_id".to_string()]
            ),
            (
                "eve".to_string(),
                vec!["age_in_range".to_string(), "unique_id".to_string()]
            ),
        ]
    );
    assert!(quarantined.iter().all(|r| r["run_id"] == summary["run_id"]));
    let published = project.json(&["show", "wh/people_out"]);
    let names: Vec<&str> = published
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(published.len(), 5, "{names:?}");
    assert!(!names.contains(&"dan") && !names.contains(&"bob"));

    // A second run appends to the quarantine table.
    project.ok(&["run", "job.toml"]);
    assert_eq!(
        project.delta_versions("wh/_lakeforge/quarantine/people_out"),
        vec![0, 1]
    );
}

#[test]
fn dataset_level_kinds_measure_values() {
    let job = format!(
        r#"{HEADER}
[[checks]]
on = "people_out"
kind = "row_count"
min = 1
max = 7

[[checks]]
on = "people_out"
kind = "mean"
column = "age"
min = 30
max = 80

[[checks]]
on = "people_out"
kind = "stddev"
column = "age"
max = 10

[[checks]]
on = "people_out"
kind = "min"
column = "age"
min = 18

[[checks]]
on = "people_out"
kind = "max"
column = "age"
max = 200

[[checks]]
on = "people_out"
kind = "quantile"
column = "age"
quantile = 0.5
min = 30
max = 50

[[checks]]
on = "people_out"
name = "p90_age"
kind = "quantile"
column = "age"
quantile = 0.9
max = 100

[[checks]]
on = "people_out"
kind = "freshness"
column = "signup"
max_age = "3650d"

[[checks]]
on = "people_out"
name = "stale"
kind = "freshness"
column = "signup"
max_age = "1h"

[[checks]]
on = "people_out"
kind = "schema"
columns = ["id", "signup"]
types = {{ age = "bigint", name = "string", email = "int" }}
"#
    );
    let project = project_with(&job);
    let (_, checks) = run_checks(&project);
    let observed = |name: &str| check(&checks, name)["observed"].as_f64().unwrap();
    let passed = |name: &str| check(&checks, name)["passed"].as_bool().unwrap();
    let ages = [34.0, 17.0, 45.0, 200.0, 29.0, 52.0, 38.0];
    let mean = ages.iter().sum::<f64>() / 7.0;
    let variance = ages.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 6.0;
    assert_eq!(observed("row_count"), 8.0);
    assert!(!passed("row_count"), "8 rows > max 7");
    assert!((observed("mean_age") - mean).abs() < 1e-9);
    assert!(passed("mean_age"));
    assert!((observed("stddev_age") - variance.sqrt()).abs() < 1e-9);
    assert!(!passed("stddev_age"));
    assert_eq!(observed("min_age"), 17.0);
    assert!(!passed("min_age"));
    assert_eq!(observed("max_age"), 200.0);
    assert!(passed("max_age"));
    assert_eq!(observed("quantile_age"), 38.0);
    assert!(passed("quantile_age"));
    // Exact, interpolated between ranks: numpy.quantile(ages, 0.9) = 111.20000000000005.
    assert!((observed("p90_age") - 111.2).abs() < 1e-9);
    assert!(!passed("p90_age"));
    assert!(
        check(&checks, "p90_age")["message"].is_null(),
        "exact, not estimated"
    );
    assert!(passed("freshness_signup"));
    assert!(!passed("stale"));
    assert!(observed("stale") > 3600.0);
    let schema = check(&checks, "schema_id_signup");
    assert_eq!(schema["passed"], false);
    let message = schema["message"].as_str().unwrap();
    assert!(message.contains("column 'email' is Utf8"), "{message}");
    assert!(!message.contains("'age'"), "{message}");
}

#[test]
fn anomaly_compares_with_history_and_drift_with_the_previous_version() {
    let job = r#"
[job]
name = "people"
warehouse = "wh"
[job.vars]
limit = "4"
shift = "0"

[sources.people]
format = "csv"
path = "data/people.csv"

[sources.countries]
format = "csv"
path = "data/countries.csv"

[[products]]
name = "people_out"
sql = "SELECT id, age + ${shift} AS age, country FROM people WHERE id <= ${limit}"

[[checks]]
on = "people_out"
kind = "anomaly"
metric = "row_count"
window = 2
min_history = 2
max_change = 0.5

[[checks]]
on = "people_out"
kind = "drift"
column = "age"
method = "psi"
bins = 4

[[checks]]
on = "people_out"
kind = "drift"
name = "country_mix"
column = "country"
reference = "countries"
reference_column = "code"
method = "chi_squared"
"#;
    let project = project_with(job);
    let run = |vars: &[&str]| {
        let mut args = vec!["run", "job.toml"];
        for v in vars {
            args.extend(["--var", v]);
        }
        let lines = project.json(&args);
        lines.last().unwrap()["checks"].as_array().unwrap().clone()
    };
    let first = run(&[]);
    let anomaly = check(&first, "anomaly_row_count");
    assert_eq!(anomaly["passed"], true);
    assert!(anomaly["message"].as_str().unwrap().contains("0 of the 2"));
    let drift = check(&first, "drift_age");
    assert_eq!(drift["passed"], true);
    assert!(drift["observed"].is_null(), "no previous version yet");
    // countries has one row per code; people's countries are mostly FR/DE/US.
    assert!(check(&first, "country_mix")["observed"].as_f64().is_some());

    let second = run(&[]);
    assert_eq!(check(&second, "drift_age")["observed"].as_f64(), Some(0.0));
    assert_eq!(check(&second, "drift_age")["passed"], true);
    let third = run(&["shift=100"]);
    let drift = check(&third, "drift_age");
    assert_eq!(drift["passed"], false, "{drift}");
    assert!(drift["observed"].as_f64().unwrap() >= 0.1);
    assert_eq!(check(&third, "anomaly_row_count")["passed"], true);

    // 8 rows against the last two runs' mean of 5: +60% > 50%.
    let fourth = run(&["limit=8"]);
    let anomaly = check(&fourth, "anomaly_row_count");
    assert_eq!(anomaly["observed"].as_f64(), Some(8.0));
    assert_eq!(anomaly["passed"], false, "{anomaly}");
}

#[test]
fn checks_on_sources_and_steps_filter_what_downstream_reads() {
    let job = r#"
[job]
name = "people"
warehouse = "wh"

[sources.people]
format = "csv"
path = "data/people.csv"
key = ["id"]

[[steps]]
name = "adults"
sql = "SELECT id, name, age FROM people"

[[products]]
name = "names"
sql = "SELECT id, name FROM adults"

[[checks]]
on = "people"
kind = "regex"
column = "email"
pattern = "@"
action = "quarantine"

[[checks]]
on = "adults"
kind = "between"
column = "age"
min = 18
action = "drop"
"#;
    let project = project_with(job);
    // `plan` shows each check pass, as an embedded run executes it, before the products.
    let plan = project.ok(&["plan", "job.toml"]);
    let passes: Vec<&str> = plan.split("== ").skip(1).collect();
    assert!(
        passes[0].starts_with("checks on people (one pass)"),
        "{plan}"
    );
    assert!(
        passes[1].starts_with("checks on adults (one pass)"),
        "{plan}"
    );
    assert!(passes[2].starts_with("product names"), "{plan}");
    let people = passes[0].split("-- physical plan").nth(1).unwrap();
    assert_eq!(people.matches("DataSourceExec").count(), 1, "{people}");
    assert!(
        people.contains("[per distinct value]"),
        "the regex runs per distinct email: {people}"
    );
    let adults = passes[1].split("-- physical plan").nth(1).unwrap();
    assert!(
        adults.contains("age@") && adults.contains(">= 18 [fused]"),
        "{adults}"
    );

    let (summary, checks) = run_checks(&project);
    assert_eq!(counts(check(&checks, "regex_email")), (8, 1, 1, false));
    // The step sees the source without dan (bad email); bob (17) is dropped by the step.
    assert_eq!(counts(check(&checks, "between_age")), (7, 1, 1, false));
    assert_eq!(summary["products"][0]["rows"], 6);
    let quarantined = project.json(&["show", "wh/_lakeforge/quarantine/people"]);
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0]["name"], "dan");
}

#[test]
fn a_check_that_cannot_be_evaluated_fails_at_planning() {
    let project = project_with(HEADER);
    project.ok(&["run", "job.toml"]);
    let before = project.snapshot_log("wh/people_out");
    for (check_toml, needles) in [
        (
            "kind = \"not_null\"\ncolumn = \"agee\"",
            vec![
                "check 'not_null_agee' on 'people_out'",
                "No field named agee",
            ],
        ),
        (
            "name = \"numeric\"\nexpect = \"age + 1\"",
            vec!["check 'numeric' on 'people_out'", "not a boolean"],
        ),
        (
            "name = \"agg\"\nexpect = \"sum(age) > 1\"",
            vec!["check 'agg'", "aggregate function"],
        ),
        (
            "kind = \"mean\"\ncolumn = \"name\"\nmax = 3",
            vec!["check 'mean_name'", "needs a numeric column"],
        ),
        (
            "kind = \"row_count\"\nmin = 1\naction = \"drop\"",
            vec!["check 'row_count'", "row-level checks only"],
        ),
        (
            "kind = \"regex\"\ncolumn = \"name\"\npattern = \"([\"",
            vec!["check 'regex_name'", "not a valid regex"],
        ),
        (
            "kind = \"between\"\ncolumn = \"age\"\nmin = 1\nmaxx = 3",
            vec!["unknown field `maxx`", "line"],
        ),
    ] {
        project.write(
            "bad.toml",
            &format!("{HEADER}\n[[checks]]\non = \"people_out\"\n{check_toml}\n"),
        );
        let err = project.fails(&["run", "bad.toml"]);
        for needle in needles {
            assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
        }
        assert_eq!(project.snapshot_log("wh/people_out"), before);
    }
}

#[test]
fn a_thousand_checks_over_five_hundred_columns_scan_once() {
    const COLUMNS: usize = 500;
    let project = Project::new();
    let header: Vec<String> = (0..COLUMNS).map(|c| format!("c{c}")).collect();
    let mut csv = header.join(",") + "\n";
    for row in 0..20 {
        let values: Vec<String> = (0..COLUMNS)
            .map(|c| ((row * 7 + c) % 100).to_string())
            .collect();
        csv += &(values.join(",") + "\n");
    }
    project.write("data/wide.csv", &csv);
    let mut job = String::from(
        "[job]\nname = \"wide\"\nwarehouse = \"wh\"\n[sources.wide]\nformat = \"csv\"\n\
         path = \"data/wide.csv\"\n[[products]]\nname = \"wide_out\"\nsql = \"SELECT * FROM wide\"\n",
    );
    for c in 0..COLUMNS {
        job += &format!(
            "[[checks]]\non = \"wide_out\"\nkind = \"between\"\ncolumn = \"c{c}\"\nmin = 0\nmax = 98\n"
        );
        if c % 2 == 0 {
            job += &format!(
                "[[checks]]\non = \"wide_out\"\nkind = \"mean\"\ncolumn = \"c{c}\"\nmax = 99\n"
            );
        } else {
            job +=
                &format!("[[checks]]\non = \"wide_out\"\nkind = \"not_null\"\ncolumn = \"c{c}\"\n");
        }
    }
    project.write("job.toml", &job);
    let plan = project.ok(&["plan", "job.toml"]);
    let physical = plan.split("-- physical plan").nth(1).unwrap();
    let scans = physical.matches("DataSourceExec").count();
    assert_eq!(scans, 1, "one scan for 1,000 checks:\n{physical}");
    assert!(
        !physical.contains("AggregateExec"),
        "checks add no aggregate pass"
    );
    assert_eq!(
        physical.matches("[fused]").count(),
        COLUMNS,
        "every BETWEEN is one range kernel"
    );

    let (summary, checks) = run_checks(&project);
    assert_eq!(checks.len(), 1000);
    assert_eq!(summary["products"][0]["rows"], 20);
    // Column c0 holds (row * 7) % 100 for rows 0..20: 99 never occurs, so every between passes
    // except where a 99 appears.
    let failing: usize = checks
        .iter()
        .filter(|c| c["kind"] == "between" && c["passed"] == false)
        .count();
    let expected = (0..COLUMNS)
        .filter(|c| (0..20).any(|row| (row * 7 + c) % 100 == 99))
        .count();
    assert_eq!(failing, expected);
}

/// `unique` on an embedded run, when it keeps every row (warn, fail), collects the keys in the
/// dataset's single pass: no second read, no window. A `unique` that drops or quarantines rows
/// must know the duplicates before the rows stream: on a plain scan it reads the key columns
/// once more through a grouped aggregate, on a costly plan (here an aggregate) it is a window,
/// so the plan runs once. Every way counts the same failing rows and shows the same samples.
#[test]
fn unique_is_evaluated_in_the_pass_or_planned_when_it_removes_rows() {
    let job = r#"
[job]
name = "people"
warehouse = "wh"

[sources.people]
format = "csv"
path = "data/people.csv"

[[products]]
name = "plain"
sql = "SELECT id, country FROM people WHERE name <> 'zed' ORDER BY id"

[[products]]
name = "grouped"
sql = "SELECT id, country, count(*) AS n FROM people GROUP BY id, country"

[[products]]
name = "plain_dropped"
sql = "SELECT id, country FROM people WHERE name <> 'zed' ORDER BY id"

[[products]]
name = "grouped_dropped"
sql = "SELECT id, country, count(*) AS n FROM people GROUP BY id, country"

[[checks]]
on = "plain"
kind = "unique"
column = "id"

[[checks]]
on = "grouped"
kind = "unique"
column = "id"
action = "fail"
mostly = 0.7

[[checks]]
on = "plain"
kind = "unique"
columns = ["id", "country"]

[[checks]]
on = "plain_dropped"
kind = "unique"
column = "id"
action = "drop"

[[checks]]
on = "grouped_dropped"
kind = "unique"
column = "id"
action = "drop"
"#;
    let project = project_with(job);
    let plan = project.ok(&["plan", "job.toml"]);
    let product_plan = |name: &str| {
        let start = plan
            .find(&format!("== product {name} "))
            .unwrap_or_else(|| panic!("{plan}"));
        let physical = plan[start..].split("-- physical plan").nth(1).unwrap();
        physical.split("== product ").next().unwrap().to_string()
    };
    for in_pass in ["plain", "grouped"] {
        let physical = product_plan(in_pass);
        assert!(
            !physical.contains("WindowAggExec") && !physical.contains("HashJoinExec"),
            "unique in the pass needs neither a window nor a join:\n{physical}"
        );
        assert_eq!(
            physical.matches("DataSourceExec").count(),
            1,
            "one read of the data:\n{physical}"
        );
    }
    let plain = product_plan("plain_dropped");
    assert!(
        !plain.contains("WindowAggExec"),
        "no window on a scan:\n{plain}"
    );
    assert_eq!(
        plain.matches("DataSourceExec").count(),
        2,
        "the dataset, then a key read for the dropping unique check:\n{plain}"
    );
    let grouped = product_plan("grouped_dropped");
    assert!(
        grouped.contains("WindowAggExec"),
        "a window on an aggregate:\n{grouped}"
    );
    assert_eq!(
        grouped.matches("DataSourceExec").count(),
        1,
        "the aggregate runs once:\n{grouped}"
    );

    let (_, checks) = run_checks(&project);
    let by = |dataset: &str, name: &str| {
        checks
            .iter()
            .find(|c| c["dataset"] == dataset && c["check"] == name)
            .unwrap_or_else(|| panic!("{dataset}.{name} in {checks:?}"))
    };
    // Two rows share id 4 (dan/XX, eve/DE); (id, country) pairs are all distinct, except that
    // fay's NULL country makes her key NULL, which is skipped. `mostly = 0.7` lets the grouped
    // product's fail check pass with 2 of 8 failing (0.75 pass).
    assert_eq!(counts(by("plain", "unique_id")), (8, 2, 0, false));
    assert_eq!(counts(by("grouped", "unique_id")), (8, 2, 0, true));
    assert_eq!(counts(by("plain", "unique_id_country")), (8, 0, 1, true));
    assert_eq!(counts(by("plain_dropped", "unique_id")), (8, 2, 0, false));
    assert_eq!(counts(by("grouped_dropped", "unique_id")), (8, 2, 0, false));
    for dataset in ["plain", "grouped", "plain_dropped", "grouped_dropped"] {
        let result = by(dataset, "unique_id");
        assert_eq!(
            result["description"], "no other row has the same (id)",
            "one description however it is evaluated"
        );
        let samples = result["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "{dataset}: {samples:?}");
        assert!(
            samples.iter().all(|s| s["id"] == "4"),
            "{dataset}: {samples:?}"
        );
    }
}
