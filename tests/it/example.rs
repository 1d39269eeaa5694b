//! The example job runs end to end from the CLI on freshly generated data.

use std::fs;

use crate::support::Project;

#[test]
fn churn_example_runs_end_to_end() {
    let project = Project::new();
    project.copy_example("churn");
    let out = project.ok(&[
        "example",
        "churn",
        "--dir",
        "churn",
        "--customers",
        "300",
        "--events",
        "20000",
    ]);
    assert!(out.contains("customer_features"), "{out}");
    assert!(out.contains("country_daily_revenue"), "{out}");

    let features = project.json(&[
        "show",
        "churn/warehouse/customer_features",
        "--limit",
        "1000",
    ]);
    assert_eq!(features.len(), 300);
    assert!(
        features
            .iter()
            .all(|r| r["churned"] == 0 || r["churned"] == 1)
    );
    assert!(features.iter().any(|r| r["spend_rank_in_country"] == 1));
    // Events per customer in the product equal a direct count over the generated Parquet.
    let direct = project.json(&[
        "sql",
        "SELECT sum(n) AS total FROM (SELECT count(*) AS n FROM e WHERE event_ts < TIMESTAMP '2026-07-01T00:00:00Z' GROUP BY customer_id)",
        "--table",
        "e=churn/data/events",
    ]);
    let total: i64 = features.iter().map(|r| r["events"].as_i64().unwrap()).sum();
    assert_eq!(direct[0]["total"].as_i64().unwrap(), total);

    // A second run reuses the data and makes version 1 of both products.
    let again = project.json(&[
        "example",
        "churn",
        "--dir",
        "churn",
        "--customers",
        "300",
        "--events",
        "20000",
    ]);
    assert_eq!(again[0]["products"][0]["version"], 1);
    assert_eq!(again[0]["products"][1]["version"], 1);
    assert_eq!(again[0]["products"][2]["version"], 1);
    // The churn model scored every customer with a probability.
    let risk = project.json(&[
        "show",
        "churn/warehouse/customer_churn_risk",
        "--limit",
        "1000",
    ]);
    assert_eq!(risk.len(), 300);
    assert!(
        risk.iter()
            .all(|r| (0.0..=1.0).contains(&r["churn_probability"].as_f64().unwrap()))
    );
    let commit = project.commit_info("churn/warehouse/customer_churn_risk", 1);
    let model = &commit["lakeforge"]["models"][0];
    assert_eq!(model["reference"], "churn_risk@production", "{commit}");
    assert_eq!(model["name"], "churn_risk");
    assert_eq!(model["version"], 1);
    let models = project.json(&["model", "list", "--warehouse", "churn/warehouse"]);
    assert_eq!(
        models.len(),
        1,
        "registered once, on the first run: {models:?}"
    );
    assert_eq!(models[0]["aliases"], "production");
    // Its checks ran, drift now against version 0, and every result passed on this data.
    let checks = again[0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 10, "{checks:#?}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:#?}");
    let drift = checks
        .iter()
        .find(|c| c["check"] == "drift_total_spend")
        .unwrap();
    // 300 reference values: the default method is KS; identical data has p-value 1.
    assert_eq!(
        drift["observed"].as_f64(),
        Some(1.0),
        "same data, no drift: {drift}"
    );
    let history = project.json(&["dq", "churn/warehouse"]);
    assert_eq!(history.len(), 20);
    let partitions: Vec<_> = fs::read_dir(project.join("churn/warehouse/country_daily_revenue"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("country="))
        .collect();
    assert_eq!(partitions.len(), 10, "{partitions:?}");

    // Every product version carries lineage for every output column.
    for product in [
        "customer_features",
        "country_daily_revenue",
        "customer_churn_risk",
    ] {
        let table = format!("churn/warehouse/{product}");
        let shown = project.json(&["show", &table, "--limit", "1"]);
        let columns: Vec<&String> = shown[0].as_object().unwrap().keys().collect();
        let commit = project.commit_info(&table, 1);
        let lineage = &commit["lakeforge"]["lineage"]["columns"];
        let mut recorded: Vec<&str> = lineage
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        recorded.sort();
        let mut expected: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
        expected.sort();
        assert_eq!(recorded, expected, "{product}");
    }
    // The score depends on the model version and on the features the model reads, through
    // the steps, down to the generated files.
    let tree: serde_json::Value = serde_json::from_str(&project.ok(&[
        "lineage",
        "churn/warehouse/customer_churn_risk.churn_probability",
        "--format",
        "json",
    ]))
    .unwrap();
    let inputs = tree["columns"][0]["inputs"].as_array().unwrap();
    let model = inputs
        .iter()
        .find(|i| i["kind"] == "model")
        .expect("model input");
    assert_eq!(model["name"], "churn_risk");
    assert_eq!(model["version"], 1);
    for feature in ["age", "monthly_fee", "amount", "event_type"] {
        assert!(
            inputs.iter().any(|i| i["field"] == feature),
            "{feature} missing from {inputs:#?}"
        );
    }
    for format in ["text", "dot", "mermaid"] {
        let out = project.ok(&[
            "lineage",
            "churn/warehouse/customer_features",
            "--format",
            format,
        ]);
        assert!(out.contains("total_spend"), "{format}: {out}");
    }
    let impact = project.json(&[
        "lineage",
        "impact",
        "churn/data/customers",
        "monthly_fee",
        "--warehouse",
        "churn/warehouse",
        "--direct-only",
    ]);
    let impacted: Vec<String> = impact[0]
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
        impacted,
        [
            "customer_churn_risk.churn_probability",
            "customer_features.monthly_fee"
        ]
    );
    // OpenLineage events of both runs: START and COMPLETE each.
    let events =
        fs::read_to_string(project.join("churn/warehouse/_lakeforge/openlineage/events.ndjson"))
            .unwrap();
    let types: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["eventType"].to_string())
        .collect();
    assert_eq!(
        types,
        [r#""START""#, r#""COMPLETE""#, r#""START""#, r#""COMPLETE""#]
    );
}
