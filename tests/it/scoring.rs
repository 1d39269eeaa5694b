//! Scoring inside SQL: `predict` / `predict_margin` with models declared in the job, checked
//! against the predictions the training libraries wrote into `tests/fixtures/models/`.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::Project;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap()
}

/// A project whose `data/rows.csv` holds the fixture's test rows (id + features, NULL as an
/// empty field) and whose `models/` holds its model files.
pub(crate) fn project_for(name: &str) -> (Project, Value) {
    let expected = expected(name);
    let project = Project::new();
    let names: Vec<&str> = expected["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let mut csv = format!("id,{}\n", names.join(","));
    for (id, row) in expected["rows"].as_array().unwrap().iter().enumerate() {
        let values: Vec<String> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().map(|f| format!("{f:?}")).unwrap_or_default())
            .collect();
        csv += &format!("{id},{}\n", values.join(","));
    }
    project.write("data/rows.csv", &csv);
    for key in ["model", "model_ubj"] {
        if let Some(file) = expected[key].as_str() {
            let bytes = std::fs::read(fixture(file)).unwrap();
            std::fs::create_dir_all(project.join("models")).unwrap();
            std::fs::write(project.join("models").join(file), bytes).unwrap();
        }
    }
    (project, expected)
}

pub(crate) fn features(expected: &Value) -> String {
    expected["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("CAST({} AS DOUBLE)", n.as_str().unwrap()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn job(models: &str, sql: &str) -> String {
    format!(
        r#"
[job]
name = "scoring"
warehouse = "wh"

{models}

[sources.rows]
format = "csv"
path = "data/rows.csv"

[[products]]
name = "scores"
sql = """{sql}"""
"#
    )
}

fn scored(project: &Project) -> Vec<Value> {
    let mut rows = project.json(&["show", "wh/scores", "--limit", "1000"]);
    rows.sort_by_key(|r| r["id"].as_i64().unwrap());
    rows
}

#[test]
fn xgboost_predictions_in_sql_equal_the_library_and_commits_name_the_model() {
    let (project, expected) = project_for("xgb_binary");
    let features = features(&expected);
    project.write(
        "job.toml",
        &job(
            "[models.churn]\npath = \"models/xgb_binary.json\"\n\n[models.churn_ubj]\npath = \"models/xgb_binary.ubj\"",
            &format!(
                "SELECT id, predict('churn', {features}) AS p, predict_margin('churn', {features}) AS m, \
                 predict('churn_ubj', {features}) AS p_ubj FROM rows"
            ),
        ),
    );
    project.ok(&["run", "job.toml"]);
    let rows = scored(&project);
    let margins = expected["margin"].as_array().unwrap();
    let predictions = expected["prediction"].as_array().unwrap();
    assert_eq!(rows.len(), margins.len());
    for (row, (margin, prediction)) in rows.iter().zip(margins.iter().zip(predictions)) {
        let want = margin.as_f64().unwrap() as f32;
        assert_eq!(
            row["m"].as_f64().unwrap() as f32,
            want,
            "margin of row {}",
            row["id"]
        );
        let p = row["p"].as_f64().unwrap();
        assert!(
            (p - prediction.as_f64().unwrap()).abs() <= 1e-6,
            "row {}: {p} vs {prediction}",
            row["id"]
        );
        assert_eq!(row["p"], row["p_ubj"], "JSON and UBJSON models agree");
    }

    let commit = project.commit_info("wh/scores", 0);
    let models = commit["lakeforge"]["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["churn", "churn_ubj"]);
    assert!(
        models[0]["content_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(models[0]["format"], "xgboost-json");
}

#[test]
fn lightgbm_multiclass_scores_are_lists_and_work_through_steps() {
    let (project, expected) = project_for("lgb_multiclass");
    let features = features(&expected);
    let mut text = job(
        "[models.segments]\npath = \"models/lgb_multiclass.txt\"",
        "SELECT id, probabilities, raw FROM scored_rows",
    );
    text = text.replace(
        "[[products]]",
        &format!(
            "[[steps]]\nname = \"scored_rows\"\nsql = \"SELECT id, predict('segments', {features}) AS probabilities, predict_margin('segments', {features}) AS raw FROM rows\"\n\n[[products]]"
        ),
    );
    project.write("job.toml", &text);
    project.ok(&["run", "job.toml"]);
    let rows = scored(&project);
    let predictions = expected["prediction"].as_array().unwrap();
    let margins = expected["margin"].as_array().unwrap();
    for (row, (want_p, want_m)) in rows.iter().zip(predictions.iter().zip(margins)) {
        for (key, want, tolerance) in [("probabilities", want_p, 1e-9), ("raw", want_m, 1e-12)] {
            let got = row[key].as_array().unwrap();
            let want = want.as_array().unwrap();
            assert_eq!(got.len(), 3);
            for (g, w) in got.iter().zip(want) {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!(
                    (g - w).abs() <= tolerance * w.abs().max(1.0),
                    "row {}: {key} {g} vs {w}",
                    row["id"]
                );
            }
        }
    }
    // The model used in a step is recorded on the product that reads the step.
    let commit = project.commit_info("wh/scores", 0);
    assert_eq!(
        commit["lakeforge"]["models"][0]["name"], "segments",
        "{commit}"
    );
}

#[test]
fn feature_mismatches_are_planning_errors_naming_the_model_and_commit_nothing() {
    let (project, expected) = project_for("xgb_regression");
    let names: Vec<String> = expected["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let models = "[models.price]\npath = \"models/xgb_regression.json\"";

    // One feature short.
    project.write(
        "job.toml",
        &job(
            models,
            &format!(
                "SELECT predict('price', {}) AS p FROM rows",
                names[..names.len() - 1].join(", ")
            ),
        ),
    );
    let error = project.fails(&["run", "job.toml"]);
    assert!(
        error.contains("model 'price' reads 6 features (f0, f1, f2, f3, f4, f5)"),
        "{error}"
    );
    assert!(error.contains("given 5"), "{error}");

    // Two features swapped.
    let mut swapped = names.clone();
    swapped.swap(0, 1);
    project.write(
        "job.toml",
        &job(
            models,
            &format!(
                "SELECT predict('price', {}) AS p FROM rows",
                swapped.join(", ")
            ),
        ),
    );
    let error = project.fails(&["validate", "job.toml"]);
    assert!(
        error.contains("reads feature 'f1' at position 2"),
        "{error}"
    );

    // An unknown model, and a version of an inline model.
    project.write(
        "job.toml",
        &job(
            models,
            &format!(
                "SELECT predict('nope', {}) AS p FROM rows",
                names.join(", ")
            ),
        ),
    );
    let error = project.fails(&["run", "job.toml"]);
    assert!(
        error.contains("no model named 'nope' (known models: price)"),
        "{error}"
    );
    project.write(
        "job.toml",
        &job(
            models,
            &format!(
                "SELECT predict('price@2', {}) AS p FROM rows",
                names.join(", ")
            ),
        ),
    );
    let error = project.fails(&["run", "job.toml"]);
    assert!(error.contains("has no versions or aliases"), "{error}");

    // A text column where a number is expected.
    project.write("data/text.csv", "id,f0\n1,abc\n");
    project.write(
        "job.toml",
        &job(
            models,
            &format!(
                "SELECT predict('price', CAST(id AS VARCHAR), {}) AS p FROM rows",
                names[1..].join(", ")
            ),
        ),
    );
    let error = project.fails(&["run", "job.toml"]);
    assert!(
        error.contains("feature 'f0' (argument 2) must be a number"),
        "{error}"
    );
    assert!(!project.join("wh/scores").exists(), "nothing was committed");
}

#[test]
fn bad_model_files_are_named_before_anything_runs() {
    let project = Project::new();
    project.write("data/rows.csv", "id,f0\n1,2\n");
    let truncated = std::fs::read(fixture("lgb_binary.txt")).unwrap();
    project.write(
        "models/broken.txt",
        &String::from_utf8_lossy(&truncated[..truncated.len() / 2]),
    );
    project.write(
        "job.toml",
        &job(
            "[models.broken]\npath = \"models/broken.txt\"",
            "SELECT id FROM rows",
        ),
    );
    let error = project.fails(&["validate", "job.toml"]);
    assert!(error.starts_with("error: model 'broken' ("), "{error}");
    assert!(error.contains("broken.txt"), "{error}");
    assert!(error.contains("cannot read the lightgbm model"), "{error}");

    project.write(
        "job.toml",
        &job(
            "[models.gone]\npath = \"models/gone.json\"",
            "SELECT id FROM rows",
        ),
    );
    let error = project.fails(&["run", "job.toml"]);
    assert!(
        error.contains("model 'gone'") && error.contains("cannot read it"),
        "{error}"
    );

    project.write(
        "job.toml",
        &job(
            "[models.odd]\npath = \"models/broken.txt\"\nformat = \"onnx\"",
            "SELECT id FROM rows",
        ),
    );
    let error = project.fails(&["run", "job.toml"]);
    assert!(error.contains("unknown format 'onnx'"), "{error}");
}

/// Register two versions, score through an alias, gate a promotion, roll the alias back: each
/// product commit names the model version that produced it.
#[test]
fn registry_versions_aliases_gates_and_rollback() {
    let (project, expected) = project_for("lgb_binary");
    let features = features(&expected);
    let register = |file: &str, auc: &str| {
        project.json(&[
            "model",
            "register",
            file,
            "--name",
            "churn",
            "--metric",
            &format!("auc={auc}"),
            "--training",
            "wh/train@4",
            "--warehouse",
            "wh",
        ])
    };
    let first = register("models/lgb_binary.txt", "0.71");
    assert_eq!(first[0]["version"], 1);
    assert_eq!(first[0]["format"], "lightgbm");
    // The same artifact under another format is refused, and registers nothing.
    let error = project.fails(&[
        "model",
        "register",
        "models/lgb_binary.txt",
        "--name",
        "churn",
        "--format",
        "xgboost-json",
        "--warehouse",
        "wh",
    ]);
    assert!(
        error.contains("model 'churn'") && error.contains("invalid JSON"),
        "{error}"
    );
    let second = register("models/lgb_binary.txt", "0.83");
    assert_eq!(second[0]["version"], 2);
    assert!(
        project
            .join(
                second[0]["artifact"]
                    .as_str()
                    .map(|a| format!("wh/{a}"))
                    .unwrap()
                    .as_str()
            )
            .is_file()
    );

    // Gated promotion: version 1 fails the gate, version 2 passes.
    let error = project.fails(&[
        "model",
        "promote",
        "churn",
        "1",
        "--alias",
        "production",
        "--require",
        "auc>=0.8",
        "--warehouse",
        "wh",
    ]);
    assert!(
        error.contains("auc is 0.71, the gate requires auc>=0.8"),
        "{error}"
    );
    project.ok(&[
        "model",
        "promote",
        "churn",
        "1",
        "--alias",
        "production",
        "--warehouse",
        "wh",
    ]);
    project.ok(&[
        "model",
        "promote",
        "churn",
        "2",
        "--alias",
        "production",
        "--require",
        "auc>=0.8",
        "--warehouse",
        "wh",
    ]);
    let list = project.json(&["model", "list", "--warehouse", "wh"]);
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["aliases"], "production");
    assert_eq!(list[0]["training"], "wh/train@4");

    project.write(
        "job.toml",
        &job(
            "",
            &format!("SELECT id, predict('churn@production', {features}) AS p FROM rows"),
        ),
    );
    project.ok(&["run", "job.toml"]);
    let rows = scored(&project);
    let want = expected["prediction"].as_array().unwrap();
    for (row, want) in rows.iter().zip(want) {
        assert!((row["p"].as_f64().unwrap() - want.as_f64().unwrap()).abs() <= 1e-9);
    }
    let model_version = |version: u64| {
        let commit = project.commit_info("wh/scores", version);
        let used = &commit["lakeforge"]["models"][0];
        assert_eq!(used["reference"], "churn@production");
        used["version"].as_u64().unwrap()
    };
    assert_eq!(model_version(0), 2);

    // Roll the alias back: the next run scores with version 1.
    let rolled = project.json(&[
        "model",
        "rollback",
        "churn",
        "--alias",
        "production",
        "--warehouse",
        "wh",
    ]);
    assert_eq!(rolled[0]["version"], 1);
    assert_eq!(rolled[0]["previous_version"], 2);
    project.ok(&["run", "job.toml"]);
    assert_eq!(model_version(1), 1);
    let history = project.json(&["model", "history", "churn", "--warehouse", "wh"]);
    let actions: Vec<(&str, i64)> = history
        .iter()
        .map(|h| {
            (
                h["action"].as_str().unwrap(),
                h["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions, [("promote", 1), ("promote", 2), ("rollback", 1)]);
    let error = project.fails(&[
        "model",
        "rollback",
        "churn",
        "--alias",
        "production",
        "--warehouse",
        "wh",
    ]);
    assert!(error.contains("no earlier version"), "{error}");

    // Unknown alias and version name the model.
    project.write(
        "job.toml",
        &job(
            "",
            &format!("SELECT predict('churn@staging', {features}) AS p FROM rows"),
        ),
    );
    let error = project.fails(&["run", "job.toml"]);
    assert!(
        error.contains("model 'churn' has no alias 'staging' (aliases: production -> 1)"),
        "{error}"
    );
}
