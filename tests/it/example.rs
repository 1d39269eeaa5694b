//! The example job runs end to end from the CLI on freshly generated data.

use std::fs;

use crate::support::Project;

#[test]
fn churn_example_runs_end_to_end() {
    let project = Project::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/churn");
    for file in ["job.toml", "purchase_gaps.sql", "models/churn_xgb.json"] {
        let text = fs::read_to_string(format!("{example}/{file}")).unwrap();
        project.write(&format!("churn/{file}"), &text);
    }
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
}
