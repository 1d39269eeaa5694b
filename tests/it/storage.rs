//! Object storage end to end, on real servers on loopback: moto's S3 server and Azurite's Blob
//! service (installed by `tests/servers/install.sh`, which `.ci/run` runs). Each test starts
//! its own server on a port the OS picked, waits for it with a readiness probe, and kills it
//! when it ends. Buckets and containers are created, and every object is scanned for secrets,
//! with the clouds' own SDKs (`tests/servers/admin.py`), not with Lakeforge.
//!
//! Without the servers installed the tests say so and pass, so `cargo test` works on a machine
//! with only a Rust toolchain; `LAKEFORGE_REQUIRE_SERVERS=1` (set by `.ci/run`) makes a missing
//! server a failure.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::scoring::{features, project_for};
use serde_json::Value;

use crate::support::Project;

/// Azurite's published development account and key (documented by Microsoft; not a secret).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The S3 secret the tests configure; it must appear in no object and no output.
const S3_SECRET: &str = "lakeforge-test-secret-Zq81xV";

fn servers_dir() -> PathBuf {
    let cache = std::env::var_os("LAKEFORGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/lakeforge")
        });
    cache.join("servers")
}

/// The installed program at `relative` under the servers folder; `None` (the test is skipped)
/// when it is not installed, unless `LAKEFORGE_REQUIRE_SERVERS` is set.
fn installed(relative: &str) -> Option<PathBuf> {
    let path = servers_dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "{} is not installed: run tests/servers/install.sh",
        path.display()
    );
    if std::env::var_os("LAKEFORGE_REQUIRE_SERVERS").is_some() {
        panic!("{message}");
    }
    eprintln!("skipping this object-store test: {message}");
    None
}

/// A port nobody listens on right now (the OS picks it; released for the server to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A server process, killed when the test ends (pass or fail).
struct Server {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Server {
    fn start(program: PathBuf, args: impl Fn(u16, &std::path::Path) -> Vec<String>) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new(&program)
            .args(args(port, data.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut server = Server {
            child,
            port,
            _data: data,
        };
        // Readiness probe: the port accepts connections (bounded; no fixed sleep).
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{} exited at start: {status}", program.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} within 60 s",
                program.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn moto() -> Option<Server> {
        let program = installed("venv/bin/moto_server")?;
        Some(Server::start(program, |port, _| {
            vec![
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
            ]
        }))
    }

    fn azurite() -> Option<Server> {
        let program = installed("azurite/node_modules/.bin/azurite-blob")?;
        Some(Server::start(program, |port, data| {
            vec![
                "--silent".into(),
                "--skipApiVersionCheck".into(),
                "--location".into(),
                data.display().to_string(),
                "--blobHost".into(),
                "127.0.0.1".into(),
                "--blobPort".into(),
                port.to_string(),
            ]
        }))
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `--storage` file for the bucket `lake` on the S3 server at `endpoint`.
fn s3_storage(endpoint: &str) -> String {
    format!(
        "[storage.\"s3://lake\"]\nendpoint = \"{endpoint}\"\nallow_http = true\nregion = \
         \"us-east-1\"\naccess_key_id = \"lakeforge\"\nsecret_access_key = \"{S3_SECRET}\"\n"
    )
}

/// Runs `admin.py ARGS` with the servers' Python; returns stdout.
fn admin(args: &[&str]) -> String {
    let python = servers_dir().join("venv/bin/python");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/servers/admin.py");
    let run = || {
        Command::new(&python)
            .arg(script)
            .args(args)
            .output()
            .expect("run admin.py")
    };
    let mut output = run();
    // Python deltalake's Azure reader sometimes aborts at exit after reading a table
    // ("terminate called without an active exception"), a crash in the independent reader,
    // not a wrong answer: run it once more before failing.
    if !output.status.success()
        && String::from_utf8_lossy(&output.stderr).contains("terminate called without an active")
    {
        output = run();
    }
    assert!(
        output.status.success(),
        "admin.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts the scan found no object holding the secret, and scanned at least `at_least`.
fn assert_no_leak(scan: &str, at_least: usize) {
    assert!(!scan.contains("LEAK"), "the secret was written:\n{scan}");
    let scanned: usize = scan
        .lines()
        .find_map(|l| l.strip_prefix("scanned "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a count");
    assert!(scanned >= at_least, "only {scanned} objects scanned");
}

/// A job scoring `rows` with the registered model `churn`, with a quarantine check, in
/// `warehouse`; its profile `cloud` puts the warehouse and the rows on the store `scheme://lake`
/// (`${bucket}` from the profile).
fn scoring_job(warehouse: &str, features: &str, mode: &str, scheme: &str) -> String {
    format!(
        r#"
[job]
name = "scores_job"
warehouse = "{warehouse}"
vars = {{ data = "data" }}

[profiles.cloud]
warehouse = "{scheme}://${{bucket}}/wh"
vars = {{ bucket = "lake", data = "{scheme}://lake/data" }}

[sources.rows]
format = "csv"
path = "${{data}}/rows.csv"

[[products]]
name = "scores"
mode = "{mode}"
sql = "SELECT id, predict('churn', {features}) AS score FROM rows"

[[checks]]
on = "scores"
name = "known_ids"
expect = "id >= 2"
action = "quarantine"
"#
    )
}

/// Reads products on S3 back as a Delta source and as Parquet files.
fn reader_job(warehouse: &str) -> String {
    format!(
        r#"
[job]
name = "reader"
warehouse = "{warehouse}"

[sources.scores]
format = "delta"
path = "{warehouse}/scores"

[sources.files]
format = "parquet"
path = "{warehouse}/scores"

[[products]]
name = "summary"
sql = "SELECT (SELECT count(*) FROM scores) AS delta_rows, (SELECT count(*) FROM files) AS file_rows"
"#
    )
}

/// Everything `lakeforge sql` prints for `query` over `table`, for comparing two warehouses.
fn rows(project: &Project, storage: &str, table: &str, query: &str) -> String {
    project.ok(&[
        "--storage",
        storage,
        "sql",
        query,
        "--table",
        &format!("t={table}"),
    ])
}

/// A store under test, and how its cloud's own SDK (`admin.py`) reaches it.
struct Cloud {
    /// The bucket or container: `s3://lake`, `az://lake`.
    root: String,
    /// Its URL scheme.
    scheme: &'static str,
    /// The store's name in option errors.
    store: &'static str,
    /// The `--storage` file.
    storage: String,
    /// The secret in it, which must appear nowhere else.
    secret: String,
    /// `admin.py`'s command prefix (`s3`, `azure`) and its first argument (endpoint,
    /// connection string).
    admin: (&'static str, String),
}

impl Cloud {
    /// `admin.py PREFIX-COMMAND TARGET lake ARGS`.
    fn admin(&self, command: &str, args: &[&str]) -> String {
        let command = format!("{}-{command}", self.admin.0);
        let mut all = vec![command.as_str(), self.admin.1.as_str(), "lake"];
        all.extend_from_slice(args);
        admin(&all)
    }
}

/// The scoring job with its rows and warehouse on `cloud` (and the same job on disk): models
/// in the registry there, products, quarantine, history, time travel, rollback, Delta and
/// Parquet sources on the store, the warehouse's tables, lineage, status, the OpenLineage file,
/// no secret anywhere, and mistakes named.
fn a_cloud_warehouse_works_as_one_on_disk(cloud: &Cloud) {
    let root = cloud.root.as_str();
    let (project, expected) = project_for("xgb_binary");
    let features = features(&expected);
    project.write("storage.toml", &cloud.storage);
    cloud.admin(
        "put",
        &[
            "data/rows.csv",
            &project.join("data/rows.csv").display().to_string(),
        ],
    );
    let mut outputs = String::new();
    let mut ok = |args: &[&str]| {
        let mut all = vec!["--storage", "storage.toml"];
        all.extend_from_slice(args);
        let out = project.ok(&all);
        outputs.push_str(&out);
        out
    };

    // The same model, job and checks on the store and on disk.
    for warehouse in [format!("{root}/wh").as_str(), "wh"] {
        ok(&[
            "model",
            "register",
            "models/xgb_binary.json",
            "--name",
            "churn",
            "--warehouse",
            warehouse,
        ]);
    }
    // One job file: on disk by default, on the store with its `cloud` profile.
    project.write(
        "job.toml",
        &scoring_job("wh", &features, "append", cloud.scheme),
    );
    ok(&["run", "job.toml", "--profile", "cloud"]);
    ok(&["run", "job.toml"]);
    let query = "SELECT id, score FROM t ORDER BY id";
    assert_eq!(
        rows(
            &project,
            "storage.toml",
            &format!("{root}/wh/scores"),
            query
        ),
        rows(&project, "storage.toml", "wh/scores", query)
    );
    assert_eq!(
        rows(
            &project,
            "storage.toml",
            &format!("{root}/wh/_lakeforge/quarantine/scores"),
            "SELECT id FROM t ORDER BY id"
        ),
        rows(
            &project,
            "storage.toml",
            "wh/_lakeforge/quarantine/scores",
            "SELECT id FROM t ORDER BY id"
        )
    );

    // Versions, time travel and rollback.
    ok(&["run", "job.toml", "--profile", "cloud"]);
    ok(&[
        "rollback",
        &format!("{root}/wh/scores"),
        "--to-version",
        "0",
    ]);
    let history = project.json(&[
        "--storage",
        "storage.toml",
        "history",
        &format!("{root}/wh/scores"),
    ]);
    assert_eq!(history.len(), 3, "{history:?}");
    let count = |version: &str| {
        let shown = project.json(&[
            "--storage",
            "storage.toml",
            "show",
            &format!("{root}/wh/scores"),
            "--version",
            version,
            "--limit",
            "1000",
        ]);
        shown.len()
    };
    assert_eq!(count("1"), 2 * count("0"));
    assert_eq!(count("2"), count("0"));

    // Sources on the store: the product as a Delta source and as Parquet files.
    project.write("reader.toml", &reader_job(&format!("{root}/wh")));
    ok(&["run", "reader.toml"]);
    let summary = project.json(&[
        "--storage",
        "storage.toml",
        "show",
        &format!("{root}/wh/summary"),
    ]);
    // The Parquet files of every version (two appends) against the latest version.
    assert_eq!(
        summary[0]["file_rows"].as_i64().unwrap(),
        2 * summary[0]["delta_rows"].as_i64().unwrap(),
        "{summary:?}"
    );

    // The warehouse's own tables and OpenLineage events live on the store too.
    let runs = project.json(&["--storage", "storage.toml", "runs", &format!("{root}/wh")]);
    assert_eq!(runs.len(), 3, "{runs:?}");
    let history = project.json(&[
        "--storage",
        "storage.toml",
        "history",
        &format!("{root}/wh/scores"),
    ]);
    let profiles: Vec<&str> = history
        .iter()
        .filter_map(|h| h["profile"].as_str())
        .collect();
    assert_eq!(profiles, ["cloud", "cloud"], "{history:?}");
    let recorded = rows(
        &project,
        "storage.toml",
        &format!("{root}/wh/_lakeforge/runs"),
        "SELECT DISTINCT job, profile FROM t WHERE job = 'scores_job'",
    );
    assert!(recorded.contains("cloud"), "{recorded}");
    let error = project.fails(&["run", "job.toml", "--profile", "prod"]);
    assert!(
        error.contains("no profile 'prod' in the job spec (profiles: cloud)"),
        "{error}"
    );
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    let dq = project.json(&["--storage", "storage.toml", "dq", &format!("{root}/wh")]);
    assert!(dq.iter().any(|r| r["check"] == "known_ids"), "{dq:?}");
    let lineage = ok(&["lineage", &format!("{root}/wh/scores")]);
    assert!(lineage.contains("rows.f0"), "{lineage}");
    ok(&["status", &format!("{root}/wh")]);
    let events = cloud.admin("lines", &["wh/_lakeforge/openlineage/events.ndjson"]);
    // START and COMPLETE of the three runs, appended to one object.
    assert_eq!(events.trim(), "6", "{events}");

    // No secret in any object the runs wrote, nor in anything they printed.
    assert_no_leak(&cloud.admin("scan", &[&cloud.secret]), 20);
    assert!(!outputs.contains(&cloud.secret));

    // Mistakes are one error naming what is wrong, never the secret.
    project.write(
        "typo.toml",
        &format!(
            "{}\n[storage.\"{root}\"]\nendpiont = \"x\"\n",
            scoring_job(&format!("{root}/wh"), &features, "append", cloud.scheme)
        ),
    );
    let error = project.fails(&["run", "typo.toml"]);
    assert!(
        error.contains(&format!("unknown option 'endpiont' for {}", cloud.store))
            && error.contains("typo.toml"),
        "{error}"
    );
    let clock = Instant::now();
    let error = project.fails(&[
        "--storage",
        "storage.toml",
        "history",
        &format!("{root}/no/such/table"),
    ]);
    assert!(error.contains(&format!("{root}/no/such/table")), "{error}");
    assert!(!error.contains(&cloud.secret), "{error}");
    assert!(clock.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_warehouse_on_s3_works_as_one_on_disk() {
    let Some(s3) = Server::moto() else { return };
    admin(&["s3-create", &s3.endpoint(), "lake"]);
    a_cloud_warehouse_works_as_one_on_disk(&Cloud {
        root: "s3://lake".to_string(),
        scheme: "s3",
        store: "S3",
        storage: s3_storage(&s3.endpoint()),
        secret: S3_SECRET.to_string(),
        admin: ("s3", s3.endpoint()),
    });
}

#[test]
fn a_warehouse_on_azure_works_as_one_on_disk() {
    let Some(azurite) = Server::azurite() else {
        return;
    };
    let endpoint = format!("{}/{AZURITE_ACCOUNT}", azurite.endpoint());
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};\
         BlobEndpoint={endpoint};"
    );
    admin(&["azure-create", &connection, "lake"]);
    a_cloud_warehouse_works_as_one_on_disk(&Cloud {
        root: "az://lake".to_string(),
        scheme: "az",
        store: "Azure",
        storage: format!(
            "[storage.\"az://lake\"]\nendpoint = \"{endpoint}\"\naccount_name = \
             \"{AZURITE_ACCOUNT}\"\naccess_key = \"{AZURITE_KEY}\"\nallow_http = true\n"
        ),
        secret: AZURITE_KEY.to_string(),
        admin: ("azure", connection),
    });
}

#[test]
fn concurrent_commits_on_s3_lose_nothing() {
    let Some(s3) = Server::moto() else { return };
    admin(&["s3-create", &s3.endpoint(), "lake"]);
    let project = Project::new();
    project.write(
        "job.toml",
        &format!(
            r#"
[job]
name = "appends"
warehouse = "s3://lake/wh"

[storage."s3://lake"]
endpoint = "{}"
allow_http = true
region = "us-east-1"
access_key_id = "lakeforge"
secret_access_key = "{S3_SECRET}"

[sources.customers]
format = "csv"
path = "data/customers/customers.csv"

[[products]]
name = "log"
mode = "append"
sql = "SELECT customer_id FROM customers"
"#,
            s3.endpoint()
        ),
    );
    // The first run creates the table (a table is created by one writer: a second writer
    // creating the same new table at the same moment is refused, seeing the first one's files).
    project.ok(&["run", "job.toml"]);
    // Then three writers at once: Delta's commit is a put-if-absent of the next log entry, so
    // each commit lands as its own version (a writer that loses the race retries on the next).
    let children: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_lakeforge"))
                .args(["run", "job.toml"])
                .current_dir(project.path())
                .env("LAKEFORGE_TARGET_PARTITIONS", "2")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run lakeforge")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let storage = s3_storage(&s3.endpoint());
    project.write("storage.toml", &storage);
    let history = project.json(&["--storage", "storage.toml", "history", "s3://lake/wh/log"]);
    let mut versions: Vec<i64> = history
        .iter()
        .map(|h| h["version"].as_i64().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, [0, 1, 2, 3], "{history:?}");
    let count = rows(
        &project,
        "storage.toml",
        "s3://lake/wh/log",
        "SELECT count(*) AS n FROM t",
    );
    assert!(count.contains("| 16 "), "{count}");
}

#[test]
fn a_warehouse_on_azure_blob_storage_works_and_bad_keys_are_refused() {
    let Some(azurite) = Server::azurite() else {
        return;
    };
    let endpoint = format!("{}/{AZURITE_ACCOUNT}", azurite.endpoint());
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};\
         BlobEndpoint={endpoint};"
    );
    admin(&["azure-create", &connection, "lake"]);
    let project = Project::new();
    let storage = |key: &str| {
        format!(
            "[storage.\"az://lake\"]\nendpoint = \"{endpoint}\"\naccount_name = \
             \"{AZURITE_ACCOUNT}\"\naccess_key = \"{key}\"\nallow_http = true\n"
        )
    };
    project.write("storage.toml", &storage(AZURITE_KEY));
    project.write(
        "job.toml",
        r#"
[job]
name = "azure"
warehouse = "az://lake/wh"

[sources.customers]
format = "csv"
path = "data/customers/customers.csv"

[[products]]
name = "customers_out"
sql = "SELECT customer_id, country FROM customers"

[[checks]]
on = "customers_out"
name = "known_country"
expect = "country <> 'FR'"
action = "quarantine"
"#,
    );
    let run = |args: &[&str]| {
        let mut all = vec!["--storage", "storage.toml"];
        all.extend_from_slice(args);
        project.ok(&all)
    };
    run(&["run", "job.toml"]);
    run(&["run", "job.toml"]);
    let history = project.json(&[
        "--storage",
        "storage.toml",
        "history",
        "az://lake/wh/customers_out",
    ]);
    assert_eq!(history.len(), 2, "{history:?}");
    let shown = project.json(&[
        "--storage",
        "storage.toml",
        "show",
        "az://lake/wh/customers_out",
        "--version",
        "0",
    ]);
    assert_eq!(shown.len(), 3, "{shown:?}");
    let quarantined = project.json(&[
        "--storage",
        "storage.toml",
        "show",
        "az://lake/wh/_lakeforge/quarantine/customers_out",
    ]);
    // FR's row, once per run (quarantine tables are appended to).
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert_no_leak(
        &admin(&["azure-scan", &connection, "lake", AZURITE_KEY]),
        10,
    );

    // A wrong account key: one error naming the location, nothing written, no key shown.
    let wrong = "d3JvbmctYnV0LXdlbGwtZm9ybWVkLWtleS0wMTIzNDU2Nzg5MDEyMzQ1Njc4OQ==";
    project.write("storage.toml", &storage(wrong));
    let clock = Instant::now();
    let error = project.fails(&["--storage", "storage.toml", "run", "job.toml"]);
    assert!(error.contains("az://lake/wh"), "{error}");
    assert!(
        !error.contains(wrong) && !error.contains(AZURITE_KEY),
        "{error}"
    );
    assert!(
        clock.elapsed() < Duration::from_secs(90),
        "{:?}",
        clock.elapsed()
    );
    project.write("storage.toml", &storage(AZURITE_KEY));
    let history = project.json(&[
        "--storage",
        "storage.toml",
        "history",
        "az://lake/wh/customers_out",
    ]);
    assert_eq!(history.len(), 2, "{history:?}");
}

/// The cluster with nothing shared but the bucket: the coordinator and two workers (each with
/// its own work folder) get the same `--storage` file; the job's source, its registered model
/// and its products all live on S3; the result equals the embedded run's.
#[test]
fn a_cluster_shares_nothing_but_the_object_store() {
    let Some(s3) = Server::moto() else { return };
    admin(&["s3-create", &s3.endpoint(), "lake"]);
    let (project, expected) = project_for("xgb_binary");
    let features = features(&expected);
    project.write("storage.toml", &s3_storage(&s3.endpoint()));
    let storage_file = project.join("storage.toml").display().to_string();
    let cluster = crate::cluster::Cluster::start_with(2, &["--storage", &storage_file]);
    let ok = |args: &[&str]| {
        let mut all = vec!["--storage", "storage.toml"];
        all.extend_from_slice(args);
        project.ok(&all)
    };
    // The rows and the model go to S3 first (the model into the warehouse's registry).
    project.write(
        "load.toml",
        r#"
[job]
name = "load"
warehouse = "s3://lake/raw"

[sources.rows]
format = "csv"
path = "data/rows.csv"

[[products]]
name = "raw_rows"
sql = "SELECT * FROM rows"
"#,
    );
    ok(&["run", "load.toml"]);
    for warehouse in ["s3://lake/cluster", "s3://lake/embedded"] {
        ok(&[
            "model",
            "register",
            "models/xgb_binary.json",
            "--name",
            "churn",
            "--warehouse",
            warehouse,
        ]);
    }
    let job = |warehouse: &str| {
        format!(
            r#"
[job]
name = "scores_job"
warehouse = "{warehouse}"

[sources.rows]
format = "delta"
path = "s3://lake/raw/raw_rows"

[[products]]
name = "scores"
partition_by = ["bucket"]
sql = "SELECT id, CAST(id % 3 AS BIGINT) AS bucket, predict('churn', {features}) AS score FROM rows"

[[checks]]
on = "scores"
name = "known_ids"
expect = "id >= 2"
action = "quarantine"
"#
        )
    };
    project.write("cluster.toml", &job("s3://lake/cluster"));
    project.write("embedded.toml", &job("s3://lake/embedded"));
    ok(&["run", "cluster.toml", "--cluster", &cluster.url()]);
    ok(&["run", "embedded.toml"]);

    let query = "SELECT id, bucket, score FROM t ORDER BY id";
    let clustered = rows(&project, "storage.toml", "s3://lake/cluster/scores", query);
    assert_eq!(
        clustered,
        rows(&project, "storage.toml", "s3://lake/embedded/scores", query)
    );
    assert!(clustered.lines().count() > 5, "{clustered}");
    let quarantine = "SELECT id FROM t ORDER BY id";
    assert_eq!(
        rows(
            &project,
            "storage.toml",
            "s3://lake/cluster/_lakeforge/quarantine/scores",
            quarantine
        ),
        rows(
            &project,
            "storage.toml",
            "s3://lake/embedded/_lakeforge/quarantine/scores",
            quarantine
        )
    );
    // The run record says where it ran and which model version scored.
    let runs = project.json(&["--storage", "storage.toml", "runs", "s3://lake/cluster"]);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
    let lineage = ok(&["lineage", "s3://lake/cluster/scores"]);
    assert!(lineage.contains("churn"), "{lineage}");
    assert_no_leak(&admin(&["s3-scan", &s3.endpoint(), "lake", S3_SECRET]), 20);
}

/// A TCP proxy in front of a server that fails on cue: once `limit` bytes have gone from
/// clients to the server since [`FlakyProxy::fail_after`], it cuts every connection and refuses
/// new ones until [`FlakyProxy::recover`] (the server "goes down" in the middle of an upload,
/// deterministically, and comes back with its data intact).
struct FlakyProxy {
    port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    down: std::sync::atomic::AtomicBool,
    stopped: std::sync::atomic::AtomicBool,
    uploaded: std::sync::atomic::AtomicU64,
    limit: std::sync::atomic::AtomicU64,
}

impl FlakyProxy {
    fn start(upstream: u16) -> FlakyProxy {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState::default());
        state.limit.store(u64::MAX, SeqCst);
        let shared = std::sync::Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stopped.load(SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if shared.down.load(SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream, counted: bool| {
                    let state = std::sync::Arc::clone(&shared);
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buffer = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if counted {
                                let total = state.uploaded.fetch_add(n as u64, SeqCst) + n as u64;
                                if total > state.limit.load(SeqCst) {
                                    state.down.store(true, SeqCst);
                                }
                            }
                            if state.down.load(SeqCst) || to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                pipe(client, server, true);
                pipe(server_copy, client_copy, false);
            }
        });
        FlakyProxy { port, state }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Fails once `bytes` more bytes have been uploaded.
    fn fail_after(&self, bytes: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.uploaded.store(0, SeqCst);
        self.state.limit.store(bytes, SeqCst);
    }

    fn is_down(&self) -> bool {
        self.state.down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The server is back.
    fn recover(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.limit.store(u64::MAX, SeqCst);
        self.state.down.store(false, SeqCst);
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.state
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The store fails in the middle of a run's upload: the run fails naming the table, commits
/// nothing, and the files it could not clean up are orphans; once the store is back a rerun
/// succeeds, and `lakeforge vacuum` removes exactly the orphans (refusing a short retention
/// without `--force`), leaving every version readable.
#[test]
fn a_store_failing_mid_write_loses_nothing_and_vacuum_removes_the_orphans() {
    let Some(s3) = Server::moto() else { return };
    admin(&["s3-create", &s3.endpoint(), "lake"]);
    let proxy = FlakyProxy::start(s3.port);
    let project = Project::new();
    project.write("storage.toml", &s3_storage(&proxy.endpoint()));
    // Products are staged one after the other: `small`'s file is complete when the store
    // fails during `events`' upload (about 18 MB of Parquet in four files), so the failed run
    // leaves at least that file behind.
    project.write(
        "job.toml",
        r#"
[job]
name = "big"
warehouse = "s3://lake/wh"

[[products]]
name = "small"
mode = "append"
sql = "SELECT value AS id FROM generate_series(1, 1000)"

[[products]]
name = "events"
mode = "append"
sql = """SELECT value AS id, value * 7 % 1000003 AS k, sha256(CAST(value AS VARCHAR)) AS h
         FROM generate_series(1, 400000)"""
"#,
    );
    let with_storage = |args: &[&str]| -> Vec<String> {
        ["--storage", "storage.toml", "--target-partitions", "4"]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect()
    };
    let ok = |args: &[&str]| {
        let all = with_storage(args);
        project.ok(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let json = |args: &[&str]| {
        let all = with_storage(args);
        project.json(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Parquet objects under a table, listed by the S3 SDK (not by Lakeforge).
    let data_files = |table: &str| -> Vec<String> {
        admin(&["s3-list", &s3.endpoint(), "lake", &format!("wh/{table}/")])
            .lines()
            .filter(|key| key.ends_with(".parquet"))
            .map(|key| key.trim_start_matches(&format!("wh/{table}/")).to_string())
            .collect()
    };
    let tables = ["small", "events"];
    ok(&["run", "job.toml"]);
    let committed: Vec<Vec<String>> = tables.iter().map(|t| data_files(t)).collect();

    proxy.fail_after(2_000_000);
    let clock = Instant::now();
    let all = with_storage(&["run", "job.toml"]);
    let output = project.run(&all.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!output.status.success());
    // Warnings (the OpenLineage event and the run record could not be written either) may
    // come first in the log; the error is one line, the last.
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let error = stderr.lines().last().unwrap_or_default().to_string();
    assert!(error.starts_with("error: "), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{stderr}"
    );
    eprintln!("the failed run said: {error}");
    assert!(proxy.is_down(), "the store never failed: {error}");
    assert!(error.contains("s3://lake/wh/events"), "{error}");
    assert!(!stderr.contains(S3_SECRET), "{stderr}");
    assert!(
        clock.elapsed() < Duration::from_secs(120),
        "{:?}",
        clock.elapsed()
    );
    proxy.recover();

    // Nothing committed; what the failed run uploaded is orphaned next to the tables' files.
    let mut orphans = Vec::new();
    for (table, before) in tables.iter().zip(&committed) {
        let history = json(&["history", &format!("s3://lake/wh/{table}")]);
        assert_eq!(history.len(), 1, "{table}: {history:?}");
        let mut left: Vec<String> = data_files(table)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        left.sort();
        orphans.push(left);
    }
    assert!(
        !orphans[0].is_empty(),
        "the failed run left no file of 'small'"
    );

    // The store is back: the rerun commits version 1 of both.
    ok(&["run", "job.toml"]);
    let error = project.fails(&[
        "--storage",
        "storage.toml",
        "vacuum",
        "s3://lake/wh/small",
        "--retain",
        "0h",
    ]);
    assert!(error.contains("--force") && error.contains("7d"), "{error}");
    for (table, orphaned) in tables.iter().zip(&orphans) {
        let url = format!("s3://lake/wh/{table}");
        let referenced = data_files(table).len() - orphaned.len();
        let vacuum = ["vacuum", url.as_str(), "--retain", "0h", "--force"];
        let planned = json(&[&vacuum[..], &["--dry-run"]].concat());
        let planned: Vec<&str> = planned[0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(
            &planned, orphaned,
            "{table}: a dry run lists exactly the orphans"
        );
        assert_eq!(
            data_files(table).len(),
            referenced + orphaned.len(),
            "{table}"
        );
        ok(&vacuum);
        assert_eq!(
            data_files(table).len(),
            referenced,
            "{table}: only the orphans went"
        );
    }

    // Every version still reads in full (sums read every file; counts could come from stats).
    project.write(
        "check.toml",
        r#"
[job]
name = "check"
warehouse = "local"

[sources.v0]
format = "delta"
path = "s3://lake/wh/events"
version = 0

[sources.v1]
format = "delta"
path = "s3://lake/wh/events"
version = 1

[[products]]
name = "sums"
sql = "SELECT (SELECT sum(k) FROM v0) AS s0, (SELECT sum(k) FROM v1) AS s1"
"#,
    );
    ok(&["run", "check.toml"]);
    let sums = project.json(&["show", "local/sums"]);
    let expected_sum: i64 = (1..=400_000i64).map(|v| v * 7 % 1_000_003).sum();
    assert_eq!(sums[0]["s0"].as_i64().unwrap(), expected_sum, "{sums:?}");
    assert_eq!(
        sums[0]["s1"].as_i64().unwrap(),
        2 * expected_sum,
        "{sums:?}"
    );
}

/// One job across two clouds: its source a Delta table on Azure (Azurite, named in the Data
/// Lake `abfss://` form), its warehouse on S3; both tables read back by an independent reader,
/// the Python `deltalake` package, with its own storage options.
#[test]
fn a_job_reads_from_azure_and_publishes_to_s3() {
    let Some(s3) = Server::moto() else { return };
    let Some(azurite) = Server::azurite() else {
        return;
    };
    admin(&["s3-create", &s3.endpoint(), "lake"]);
    let blob_endpoint = format!("{}/{AZURITE_ACCOUNT}", azurite.endpoint());
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};\
         BlobEndpoint={blob_endpoint};"
    );
    admin(&["azure-create", &connection, "raw"]);
    let abfss_root = format!("abfss://raw@{AZURITE_ACCOUNT}.dfs.core.windows.net");
    let azure_options = format!(
        "endpoint = \"{blob_endpoint}\"\naccount_name = \"{AZURITE_ACCOUNT}\"\naccess_key = \
         \"{AZURITE_KEY}\"\nallow_http = true\n"
    );
    let project = Project::new();
    project.write(
        "storage.toml",
        &format!(
            "[storage.\"s3://lake\"]\nendpoint = \"{}\"\nallow_http = true\nregion = \
             \"us-east-1\"\naccess_key_id = \"lakeforge\"\nsecret_access_key = \"{S3_SECRET}\"\n\n\
             [storage.\"az://raw\"]\n{azure_options}\n[storage.\"{abfss_root}\"]\n{azure_options}",
            s3.endpoint()
        ),
    );
    let ok = |args: &[&str]| {
        let mut all = vec!["--storage", "storage.toml"];
        all.extend_from_slice(args);
        project.ok(&all)
    };
    // The raw table lands on Azure (written through the az:// form)...
    project.write(
        "land.toml",
        r#"
[job]
name = "land"
warehouse = "az://raw/landing"

[sources.customers]
format = "csv"
path = "data/customers/customers.csv"

[[products]]
name = "raw_customers"
partition_by = ["country"]
sql = "SELECT customer_id, country FROM customers"
"#,
    );
    ok(&["run", "land.toml"]);
    // ... and a job reads it through the Data Lake form, publishing to S3.
    project.write(
        "features.toml",
        &format!(
            r#"
[job]
name = "features"
warehouse = "s3://lake/wh"

[sources.customers]
format = "delta"
path = "{abfss_root}/landing/raw_customers"

[[products]]
name = "by_country"
sql = "SELECT country, count(*) AS customers FROM customers GROUP BY country"
"#
        ),
    );
    ok(&["run", "features.toml"]);
    let shown = project.json(&[
        "--storage",
        "storage.toml",
        "show",
        "s3://lake/wh/by_country",
    ]);
    let total: i64 = shown.iter().map(|r| r["customers"].as_i64().unwrap()).sum();
    assert_eq!(total, 4, "{shown:?}");
    // The lineage names the Azure source.
    let lineage = ok(&["lineage", "s3://lake/wh/by_country", "--format", "json"]);
    assert!(lineage.contains(&abfss_root), "{lineage}");

    // An independent reader sees both tables, with Lakeforge's metadata.
    let s3_options = serde_json::json!({
        "endpoint": s3.endpoint(), "allow_http": "true", "region": "us-east-1",
        "access_key_id": "lakeforge", "secret_access_key": S3_SECRET,
    });
    let read = admin(&[
        "delta-read",
        "s3://lake/wh/by_country",
        &s3_options.to_string(),
    ]);
    let read: serde_json::Value = serde_json::from_str(read.trim()).unwrap();
    assert_eq!(read["rows"], shown.len(), "{read}");
    assert_eq!(read["jobs"], serde_json::json!(["features"]), "{read}");
    let azure_options = serde_json::json!({
        "endpoint": blob_endpoint, "account_name": AZURITE_ACCOUNT, "access_key": AZURITE_KEY,
        "allow_http": "true",
    });
    let read = admin(&[
        "delta-read",
        &format!("{abfss_root}/landing/raw_customers"),
        &azure_options.to_string(),
    ]);
    let read: serde_json::Value = serde_json::from_str(read.trim()).unwrap();
    assert_eq!(read["rows"], 4, "{read}");
    assert_eq!(read["jobs"], serde_json::json!(["land"]), "{read}");
}

/// Kills a child process when dropped (a test that fails leaves nothing running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The scheduler's data triggers on S3: a job `after` a product on the bucket runs once per new
/// version of it, and the trigger log lives in the bucket's warehouse.
#[test]
fn the_scheduler_triggers_on_versions_of_a_table_on_s3() {
    let Some(s3) = Server::moto() else { return };
    admin(&["s3-create", &s3.endpoint(), "lake"]);
    let project = Project::new();
    project.write("storage.toml", &s3_storage(&s3.endpoint()));
    project.write(
        "up.toml",
        r#"
[job]
name = "up"
warehouse = "s3://lake/wh"
[sources.customers]
format = "csv"
path = "data/customers"
[[products]]
name = "up_out"
mode = "append"
sql = "SELECT customer_id FROM customers"
"#,
    );
    project.write(
        "down.toml",
        r#"
[job]
name = "down"
warehouse = "s3://lake/wh"
after = ["up_out"]
[sources.up]
format = "delta"
path = "s3://lake/wh/up_out"
[[products]]
name = "down_out"
sql = "SELECT count(*) AS n FROM up"
"#,
    );
    let ok = |args: &[&str]| {
        let mut all = vec!["--storage", "storage.toml"];
        all.extend_from_slice(args);
        project.ok(&all)
    };
    ok(&["run", "up.toml"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lakeforge"))
        .args(["--storage", "storage.toml", "schedule", "down.toml"])
        .args(["--http", "127.0.0.1:0", "--poll", "200ms"])
        .current_dir(project.path())
        .env("LAKEFORGE_TARGET_PARTITIONS", "2")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lakeforge schedule");
    let lines = crate::support::stdout_lines(&mut child);
    let _daemon = Running(child);
    lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the daemon did not report it started");
    let down_counts = || -> Vec<i64> {
        let runs = project.json(&["--storage", "storage.toml", "runs", "s3://lake/wh"]);
        let succeeded = runs
            .iter()
            .filter(|r| r["job"] == "down" && r["status"] == "succeeded")
            .count();
        if succeeded == 0 {
            return Vec::new();
        }
        project
            .json(&[
                "--storage",
                "storage.toml",
                "history",
                "s3://lake/wh/down_out",
            ])
            .iter()
            .map(|h| h["version"].as_i64().unwrap())
            .collect()
    };
    let wait_for = |versions: usize| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while down_counts().len() < versions {
            assert!(
                Instant::now() < deadline,
                "the triggered run {versions} did not happen"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for(1);
    ok(&["run", "up.toml"]);
    wait_for(2);
    // The scheduler records what a run consumed after the run commits its product: poll for
    // the second record rather than racing it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = project.json(&[
            "--storage",
            "storage.toml",
            "show",
            "s3://lake/wh/_lakeforge/schedule",
            "--limit",
            "100",
        ]);
        if log.iter().filter(|r| r["job"] == "down").count() >= 2 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let consumed: Vec<&Value> = log.iter().filter(|r| r["job"] == "down").collect();
    assert_eq!(consumed.len(), 2, "{log:?}");
    assert!(
        consumed.iter().all(|r| r["trigger"] == "inputs"),
        "{consumed:?}"
    );
    let latest = project.json(&["--storage", "storage.toml", "show", "s3://lake/wh/down_out"]);
    // Two appends of the four customers.
    assert_eq!(latest[0]["n"], 8, "{latest:?}");
}
