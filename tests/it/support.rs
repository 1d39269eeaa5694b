//! Helpers: a scratch project folder and a way to run `lakeforge` in it.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::mpsc;

use serde_json::Value;

/// A temporary folder holding job files, data and a warehouse.
pub struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let project = Project {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        project.write(
            "data/customers/customers.csv",
            "customer_id,country,age\n1,US,34\n2,DE,51\n3,US,\n4,FR,28\n",
        );
        project
    }

    /// Copies the churn example's job, SQL and model into `folder` of the project.
    pub fn copy_example(&self, folder: &str) {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/churn");
        for file in ["job.toml", "purchase_gaps.sql", "models/churn_xgb.json"] {
            let text = fs::read_to_string(format!("{example}/{file}")).unwrap();
            self.write(&format!("{folder}/{file}"), &text);
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.join(relative);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    /// Runs `lakeforge ARGS` in the project folder.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lakeforge"))
            .args(args)
            .current_dir(self.path())
            .env("LAKEFORGE_TARGET_PARTITIONS", "2")
            .env_remove("RUST_LOG")
            .output()
            .expect("run lakeforge")
    }

    /// Runs `lakeforge ARGS`, asserts it succeeded, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "lakeforge {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
    }

    /// Runs `lakeforge ARGS`, asserts it failed with one `error:` line, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !output.status.success(),
            "lakeforge {args:?} succeeded but should have failed\nstdout:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(stderr.starts_with("error: "), "no error line:\n{stderr}");
        stderr
    }

    /// The `commitInfo` action of version `version` of the table at `table`, read straight
    /// from its `_delta_log`.
    pub fn commit_info(&self, table: &str, version: u64) -> Value {
        let log = fs::read_to_string(
            self.join(table)
                .join(format!("_delta_log/{version:020}.json")),
        )
        .unwrap();
        log.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find_map(|a| a.get("commitInfo").cloned())
            .expect("commitInfo")
    }

    /// Runs `lakeforge --json ARGS` and parses every stdout line as JSON.
    pub fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ok(&all)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }

    /// The latest version of the table at `relative`, from its `_delta_log`.
    pub fn delta_versions(&self, relative: &str) -> Vec<u64> {
        let log = self.join(relative).join("_delta_log");
        let mut versions: Vec<u64> = match fs::read_dir(&log) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".json").and_then(|v| v.parse().ok())
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        versions.sort();
        versions
    }

    /// The whole `_delta_log` folder as bytes, to prove a failure left it untouched.
    pub fn snapshot_log(&self, relative: &str) -> Vec<(String, Vec<u8>)> {
        let log = self.join(relative).join("_delta_log");
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&log)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            fs::read(e.path()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// A simple job over the project's customers CSV: `customers_by_country` groups by country
/// and stamps each row with the `${tag}` variable.
pub const COUNTRY_JOB: &str = r#"
[job]
name = "countries"
warehouse = "wh"

[job.vars]
tag = "first"

[sources.customers]
format = "csv"
path = "data/customers"

[[steps]]
name = "adults"
sql = "SELECT * FROM customers WHERE age IS NULL OR age >= 18"

[[products]]
name = "customers_by_country"
mode = "overwrite"
sql = """
SELECT country, count(*) AS customers, '${tag}' AS tag
FROM adults
GROUP BY country
ORDER BY country
"""
"#;

/// Rows of `show --json` sorted by their JSON text, for order-insensitive comparisons.
pub fn sorted_rows(rows: Vec<Value>) -> Vec<String> {
    let mut text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    text.sort();
    text
}

/// Forwards a spawned process's stdout (piped), line by line, to the returned channel.
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (sender, lines) = mpsc::channel();
    let out = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
