//! Column lineage end to end: stored with every product version, queried upstream across jobs
//! and downstream for impact, in every output format; OpenLineage events to a file and to an
//! HTTP endpoint, for successful and failed runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::support::{COUNTRY_JOB, Project};

/// Job A: a product of the raw customers CSV.
const PROFILES_JOB: &str = r#"
[job]
name = "profiles_job"
warehouse = "wh"

[sources.customers]
format = "csv"
path = "data/customers"

[[products]]
name = "profiles"
sql = "SELECT customer_id, country, age * 12 AS age_months FROM customers WHERE age IS NOT NULL"
"#;

/// Job B: reads job A's product as a Delta source.
const COUNTRY_STATS_JOB: &str = r#"
[job]
name = "country_stats_job"
warehouse = "wh"

[sources.profiles]
format = "delta"
path = "wh/profiles"

[[products]]
name = "by_country"
sql = """
SELECT country, avg(age_months) AS mean_age_months, count(*) AS n
FROM profiles GROUP BY country
"""
"#;

fn hit<'a>(hits: &'a [Value], product: &str, column: &str) -> Option<&'a Value> {
    hits.iter()
        .find(|h| h["product"] == product && h["column"] == column)
}

#[test]
fn lineage_follows_products_across_jobs_and_impact_reaches_downstream_jobs() {
    let project = Project::new();
    project.write("a.toml", PROFILES_JOB);
    project.write("b.toml", COUNTRY_STATS_JOB);
    project.ok(&["run", "a.toml"]);
    project.ok(&["run", "b.toml"]);
    // A new version of A's product after B read version 0.
    project.ok(&["run", "a.toml"]);

    // Upstream: B's column → A's product column (at the version B read) → the CSV column.
    let tree: Value = serde_json::from_str(&project.ok(&[
        "lineage",
        "wh/by_country.mean_age_months",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(tree["job"], "country_stats_job");
    assert_eq!(tree["columns"].as_array().unwrap().len(), 1);
    let input = &tree["columns"][0]["inputs"][0];
    assert_eq!(input["kind"], "delta");
    assert_eq!(input["field"], "age_months");
    assert_eq!(input["version"], 0);
    assert_eq!(
        input["transformations"],
        serde_json::json!([{"type": "DIRECT", "subtype": "AGGREGATION", "masking": false, "inferred": false}])
    );
    let upstream = &input["upstream"];
    assert_eq!(upstream["job"], "profiles_job");
    assert_eq!(upstream["version"], 0);
    let raw = &upstream["columns"][0]["inputs"][0];
    assert_eq!(raw["kind"], "files");
    assert_eq!(raw["field"], "age");
    assert!(
        raw["dataset"]
            .as_str()
            .unwrap()
            .ends_with("/data/customers"),
        "{raw}"
    );
    assert_eq!(
        raw["transformations"],
        serde_json::json!([{"type": "DIRECT", "subtype": "TRANSFORMATION", "masking": false, "inferred": false}])
    );
    // A's WHERE clause is a dataset-wide dependency of A's product.
    assert_eq!(upstream["dataset"][0]["field"], "age");
    assert_eq!(
        upstream["dataset"][0]["transformations"],
        serde_json::json!([{"type": "INDIRECT", "subtype": "FILTER", "masking": false, "inferred": false}])
    );
    // B's GROUP BY is one of B's.
    assert!(
        tree["dataset"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["field"] == "country"
                && d["transformations"][0]["type"] == "INDIRECT"
                && d["transformations"][0]["subtype"] == "GROUP_BY"),
        "{tree}"
    );

    // The text tree shows both levels.
    let text = project.ok(&["lineage", "wh/by_country.mean_age_months"]);
    assert!(text.contains("profiles.age_months"), "{text}");
    assert!(text.contains("customers.age"), "{text}");
    assert!(text.contains("DIRECT AGGREGATION"), "{text}");

    // Impact of the raw CSV column: A's column, A's whole dataset (its filter), and through
    // them B's columns, in a stable order.
    let impact: Value = serde_json::from_str(&project.ok(&[
        "lineage",
        "impact",
        "data/customers",
        "age",
        "--warehouse",
        "wh",
        "--format",
        "json",
    ]))
    .unwrap();
    let hits = impact.as_array().unwrap();
    let age_months = hit(hits, "profiles", "age_months").expect("profiles.age_months");
    assert_eq!(age_months["depth"], 1);
    assert_eq!(
        age_months["path"][0]["transformations"],
        serde_json::json!([{"type": "DIRECT", "subtype": "TRANSFORMATION", "masking": false, "inferred": false}])
    );
    assert_eq!(
        hit(hits, "profiles", "*").unwrap()["path"][0]["transformations"][0],
        serde_json::json!({"type": "INDIRECT", "subtype": "FILTER", "masking": false, "inferred": false})
    );
    let mean = hit(hits, "by_country", "mean_age_months").expect("by_country.mean_age_months");
    assert_eq!(mean["depth"], 2);
    assert_eq!(mean["job"], "country_stats_job");
    assert_eq!(mean["path"].as_array().unwrap().len(), 2);
    // A's filter on age decides which rows B groups: B's country column is affected too.
    assert!(hit(hits, "by_country", "country").is_some(), "{impact}");
    let depths: Vec<u64> = hits.iter().map(|h| h["depth"].as_u64().unwrap()).collect();
    assert!(depths.windows(2).all(|w| w[0] <= w[1]), "{depths:?}");
    let again = project.ok(&[
        "lineage",
        "impact",
        "data/customers",
        "age",
        "--warehouse",
        "wh",
        "--format",
        "json",
    ]);
    assert_eq!(serde_json::from_str::<Value>(&again).unwrap(), impact);

    // --direct-only keeps value dependencies; --depth stops early.
    let direct: Value = serde_json::from_str(&project.ok(&[
        "lineage",
        "impact",
        "data/customers",
        "age",
        "--warehouse",
        "wh",
        "--direct-only",
        "--format",
        "json",
    ]))
    .unwrap();
    let columns: Vec<String> = direct
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}.{}",
                h["product"].as_str().unwrap(),
                h["column"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        columns,
        ["profiles.age_months", "by_country.mean_age_months"]
    );
    let shallow: Value = serde_json::from_str(&project.ok(&[
        "lineage",
        "impact",
        "data/customers",
        "age",
        "--warehouse",
        "wh",
        "--depth",
        "1",
        "--format",
        "json",
    ]))
    .unwrap();
    assert!(
        shallow
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["product"] == "profiles")
    );

    // Every format of both commands.
    let dot = project.ok(&["lineage", "wh/by_country", "--format", "dot"]);
    assert!(dot.starts_with("digraph lineage {"), "{dot}");
    assert!(dot.contains("customers.age"), "{dot}");
    assert!(dot.contains("style=dashed"), "{dot}");
    let mermaid = project.ok(&["lineage", "wh/by_country", "--format", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("-.->"), "{mermaid}");
    let impact_text = project.ok(&[
        "lineage",
        "impact",
        "data/customers",
        "age",
        "--warehouse",
        "wh",
    ]);
    assert!(
        impact_text.contains("by_country.mean_age_months"),
        "{impact_text}"
    );
    for format in ["dot", "mermaid"] {
        let graph = project.ok(&[
            "lineage",
            "impact",
            "data/customers",
            "age",
            "--warehouse",
            "wh",
            "--format",
            format,
        ]);
        assert!(graph.contains("mean_age_months"), "{graph}");
    }

    // The lineage table has one row per edge, dataset-wide ones with a NULL output column.
    let rows = project.json(&[
        "sql",
        "--table",
        "l=wh/_lakeforge/lineage",
        "SELECT product, product_version, output_column, input_field, type, subtype \
         FROM l WHERE product = 'profiles' AND product_version = 1 ORDER BY output_column, subtype",
    ]);
    let described: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}<-{} {} {}",
                r["output_column"].as_str().unwrap_or("*"),
                r["input_field"].as_str().unwrap(),
                r["type"].as_str().unwrap(),
                r["subtype"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            "age_months<-age DIRECT TRANSFORMATION",
            "country<-country DIRECT IDENTITY",
            "customer_id<-customer_id DIRECT IDENTITY",
            "*<-age INDIRECT FILTER",
        ]
    );
}

#[test]
fn lineage_of_a_rolled_back_version_is_the_restored_one_and_bad_targets_are_named() {
    let project = Project::new();
    project.write("job.toml", COUNTRY_JOB);
    let first = project.json(&["run", "job.toml"]);
    project.ok(&["run", "job.toml", "--var", "tag=second"]);
    project.ok(&["rollback", "wh/customers_by_country", "--to-version", "0"]);
    let tree: Value = serde_json::from_str(&project.ok(&[
        "lineage",
        "wh/customers_by_country",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(tree["version"], 0);
    assert_eq!(tree["run_id"], first[0]["run_id"]);
    let country = &tree["columns"][0];
    assert_eq!(country["column"], "country");
    assert_eq!(country["inputs"][0]["field"], "country");
    // `tag` is a constant: present, with no inputs.
    assert_eq!(tree["columns"][2]["column"], "tag");
    assert_eq!(tree["columns"][2]["inputs"], serde_json::json!([]));

    let err = project.fails(&["lineage", "wh/customers_by_country.nope"]);
    assert!(
        err.contains("no column 'nope'") && err.contains("customers"),
        "{err}"
    );
    let err = project.fails(&["lineage", "wh/missing"]);
    assert!(err.contains("not a Delta table"), "{err}");
    let err = project.fails(&[
        "lineage",
        "impact",
        "data/customers",
        "age",
        "--warehouse",
        "elsewhere",
    ]);
    assert!(err.contains("no lineage table"), "{err}");
}

/// A loopback HTTP server that answers 200 to every request and hands over (path, body).
fn lineage_endpoint() -> (String, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            if sender
                .send((path, String::from_utf8(body).unwrap()))
                .is_err()
            {
                return;
            }
        }
    });
    (format!("http://{address}"), receiver)
}

fn events_of(receiver: &mpsc::Receiver<(String, String)>, count: usize) -> Vec<Value> {
    (0..count)
        .map(|_| {
            let (path, body) = receiver
                .recv_timeout(Duration::from_secs(30))
                .expect("an event");
            assert_eq!(path, "/api/v1/lineage");
            serde_json::from_str(&body).unwrap()
        })
        .collect()
}

#[test]
fn runs_post_openlineage_events_and_failed_runs_emit_fail() {
    let project = Project::new();
    let (url, receiver) = lineage_endpoint();
    project.write(
        "job.toml",
        &format!(
            "{COUNTRY_JOB}\n[lineage]\nnamespace = \"analytics\"\nurl = \"{url}\"\nevents_file = \"events.ndjson\"\n"
        ),
    );
    let run = project.json(&["run", "job.toml"]);
    let events = events_of(&receiver, 2);
    assert_eq!(events[0]["eventType"], "START");
    assert_eq!(events[1]["eventType"], "COMPLETE");
    for event in &events {
        assert_eq!(event["run"]["runId"], run[0]["run_id"]);
        assert_eq!(event["job"]["namespace"], "analytics");
        assert_eq!(event["job"]["name"], "countries");
    }
    let output = &events[1]["outputs"][0];
    assert!(
        output["name"]
            .as_str()
            .unwrap()
            .ends_with("/wh/customers_by_country")
    );
    let fields = output["facets"]["columnLineage"]["fields"]
        .as_object()
        .unwrap();
    let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(keys, ["country", "customers", "tag"]);
    assert_eq!(output["facets"]["version"]["datasetVersion"], "0");
    assert_eq!(
        events[1]["inputs"][0]["facets"]["schema"]["fields"][0]["name"],
        "customer_id"
    );
    // The same events went to the file, one per line.
    let file = std::fs::read_to_string(project.join("events.ndjson")).unwrap();
    let lines: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, events);

    // A failing run: START, then FAIL with the error; nothing committed.
    project.write(
        "job.toml",
        &format!(
            "{COUNTRY_JOB}\n[lineage]\nurl = \"{url}\"\n\n[[checks]]\non = \"customers_by_country\"\nname = \"too_many\"\nkind = \"row_count\"\nmax = 1\naction = \"fail\"\n"
        ),
    );
    let err = project.fails(&["run", "job.toml"]);
    assert!(err.contains("too_many"), "{err}");
    let events = events_of(&receiver, 2);
    assert_eq!(events[0]["eventType"], "START");
    assert_eq!(events[1]["eventType"], "FAIL");
    let message = events[1]["run"]["facets"]["errorMessage"]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("too_many"), "{message}");
    assert_eq!(events[1]["outputs"], serde_json::json!([]));
    assert_eq!(project.delta_versions("wh/customers_by_country"), [0]);

    // An unreachable endpoint does not fail the run: it is a warning.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    project.write(
        "job.toml",
        &format!("{COUNTRY_JOB}\n[lineage]\nurl = \"{dead}\"\n"),
    );
    let output = project.run(&["run", "job.toml"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot POST the OpenLineage event"),
        "{stderr}"
    );
}
