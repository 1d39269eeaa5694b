//! The storage suite: the same jobs with their data and warehouse on a local disk and on an S3
//! server on this machine, alternating in the same rounds; the ratio is what object storage
//! costs Lakeforge. Two servers, chosen with `--server`:
//!
//! - `s3s-fs`: the S3 server of the `s3s` project (crates.io `s3s-fs`, Rust, tokio + hyper,
//!   objects as files), built once with `cargo install` into the cache. It runs every job of
//!   the suite (since file sources are listed before they are probed with a HEAD, which it
//!   answers with 500 for a "folder"), but it is no faster a server than moto here: measured
//!   with `s3_server.py floor`, a 1 MiB ranged GET takes it about 50 ms and whole objects
//!   stream at about 72 MB/s, so its ratio, too, is mostly the server's time.
//! - `moto` (default): the server the storage tests use (PyPI `moto[server]`, `benchmarks/peers/
//!   s3_server.py`), one Python process; its ~14 ms per ranged GET dominates the ratio.
//!
//! - the 22 TPC-H queries as jobs (Parquet sources, a Delta product, the run record), one job
//!   file each with a `[profiles.s3]` that moves its sources and warehouse to the bucket;
//! - the Delta write of the feature dataset (`SELECT *` published as a product), likewise.
//!
//! Correctness first: after the first round every product on S3 must hold the rows of the one
//! on disk. Where time goes: the server's access log is counted per request kind (LIST, GET,
//! HEAD, PUT, POST, DELETE) for each S3 run of the first timed round.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lakeforge_benchmarks::datagen::tpch::{TPCH_TABLES, TpchConfig, generate_tpch};
use serde_json::Value;

use crate::cluster::normalize;
use crate::harness::{
    Lakeforge, Measurement, Ratio, Round, SuiteReport, feature_dataset, folder_bytes, fresh_dir,
    median, record_seconds, run_peer_script,
};
use crate::tpch::query_texts;

/// How the suite runs.
pub struct StorageOptions {
    /// The TPC-H scale factor.
    pub scale_factor: f64,
    /// Rows of the feature dataset the write case publishes.
    pub write_rows: u64,
    /// Timed rounds.
    pub runs: usize,
    /// Untimed rounds first.
    pub warmup: usize,
    /// Where generated datasets are cached.
    pub data_root: PathBuf,
    /// Where the jobs, the local warehouse and the server's log go (emptied first).
    pub work_dir: PathBuf,
    /// The S3 server to run.
    pub server: S3ServerKind,
}

/// Which S3 server the suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum S3ServerKind {
    /// `s3s-fs` (Rust), installed with `cargo install` on first use.
    S3sFs,
    /// moto's server (Python), in a pinned virtual environment.
    Moto,
}

/// The `s3s-fs` release the suite installs (0.14 is the newest that builds with Rust 1.95).
const S3S_FS_VERSION: &str = "0.14.1";

/// The bucket everything goes to.
const BUCKET: &str = "bench";

/// The S3 server; killed when dropped.
struct S3Server {
    kind: S3ServerKind,
    child: Child,
    endpoint: String,
    log: PathBuf,
    /// What it is, for the report.
    description: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts the server on a free loopback port, its request log into `log` (objects of
    /// `s3s-fs` under `root`), and waits until it accepts connections.
    fn start(kind: S3ServerKind, log: PathBuf, root: &Path) -> anyhow::Result<S3Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let (mut command, description) = match kind {
            S3ServerKind::Moto => {
                let versions = run_peer_script("s3_server.py", ["versions"])?;
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/s3_server.py");
                let mut command = Command::new("python3");
                command.arg(&script).args(["serve", &port.to_string()]);
                let description = format!(
                    "moto {} (Python, one process)",
                    versions["moto"].as_str().unwrap_or("?")
                );
                (command, description)
            }
            S3ServerKind::S3sFs => {
                std::fs::create_dir_all(root.join(BUCKET))?;
                let mut command = Command::new(s3s_fs_binary()?);
                command
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", "bench", "--secret-key", "bench"])
                    .arg(root)
                    // One `resolved route, op: GetObject` line per request, which is counted.
                    .env("RUST_LOG", "s3s::ops=debug")
                    .env("NO_COLOR", "1");
                let description =
                    format!("s3s-fs {S3S_FS_VERSION} (Rust, tokio + hyper, objects as files)");
                (command, description)
            }
        };
        let child = command
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("stderr.log"))?)
            .spawn()
            .with_context(|| format!("cannot start the S3 server ({description})"))?;
        let mut server = S3Server {
            kind,
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            description,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the S3 server exited at start ({status}); see {}",
                    server.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!("the S3 server did not listen on {port} within 120 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Requests the server has logged so far, by kind.
    fn requests(&self) -> anyhow::Result<RequestCounts> {
        // moto's werkzeug logs to stderr, s3s-fs's tracing to stdout.
        let log = match self.kind {
            S3ServerKind::Moto => self.log.with_extension("stderr.log"),
            S3ServerKind::S3sFs => self.log.clone(),
        };
        let file = std::fs::File::open(&log)?;
        let mut counts = RequestCounts::default();
        for line in BufReader::new(file).lines() {
            let line = line?;
            let kind = match self.kind {
                S3ServerKind::Moto => request_kind(&line),
                S3ServerKind::S3sFs => s3s_operation_kind(&line),
            };
            if let Some(kind) = kind {
                *counts.0.entry(kind).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

/// Requests by kind.
#[derive(Debug, Clone, Default, PartialEq)]
struct RequestCounts(BTreeMap<&'static str, u64>);

impl RequestCounts {
    /// What `later` counted that `self` had not.
    fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts(
            self.0
                .iter()
                .map(|(kind, n)| (*kind, n - earlier.0.get(kind).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    fn add(&mut self, other: &RequestCounts) {
        for (kind, n) in &other.0 {
            *self.0.entry(kind).or_default() += n;
        }
    }

    fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(kind, n)| (kind.to_string(), Value::from(*n)))
                .collect(),
        )
    }
}

/// The kind of request one line of werkzeug's access log records (`... "GET /b/k?x HTTP/1.1"
/// 200 -`, possibly coloured), or `None` for other lines.
fn request_kind(line: &str) -> Option<&'static str> {
    let plain = strip_ansi(line);
    let request = plain.split('"').nth(1)?;
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next()?, parts.next()?);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let bucket_only = path.trim_matches('/').split('/').count() == 1;
    Some(match method {
        "GET" if query.contains("list-type") || (bucket_only && !query.contains("location")) => {
            "LIST"
        }
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        _ => return None,
    })
}

/// The kind of request one line of s3s's debug log records (`... resolved route, op:
/// GetObject, s3_path: ...`), or `None` for other lines.
fn s3s_operation_kind(line: &str) -> Option<&'static str> {
    let plain = strip_ansi(line);
    let operation = plain
        .split("resolved route, op: ")
        .nth(1)?
        .split([',', ' '])
        .next()?;
    Some(match operation {
        "GetObject" => "GET",
        "HeadObject" | "HeadBucket" => "HEAD",
        "ListObjects" | "ListObjectsV2" | "ListBuckets" => "LIST",
        "PutObject" | "UploadPart" | "CopyObject" | "CreateBucket" => "PUT",
        "CreateMultipartUpload" | "CompleteMultipartUpload" => "POST",
        "DeleteObject" | "DeleteObjects" | "AbortMultipartUpload" => "DELETE",
        _ => "OTHER",
    })
}

/// The `s3s-fs` binary, installed into the cache with `cargo install` the first time (a few
/// minutes, outside any timing).
fn s3s_fs_binary() -> anyhow::Result<PathBuf> {
    let cache = std::env::var_os("LAKEFORGE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/lakeforge")))
        .context("neither LAKEFORGE_CACHE nor HOME is set")?;
    let root = cache.join(format!("s3s-fs-{S3S_FS_VERSION}"));
    let binary = root.join("bin/s3s-fs");
    if !binary.exists() {
        eprintln!(
            "  installing s3s-fs {S3S_FS_VERSION} into {} (once)",
            root.display()
        );
        let status = Command::new("cargo")
            .args(["install", "--locked", "--quiet", "--features", "binary"])
            .arg(format!("s3s-fs@{S3S_FS_VERSION}"))
            .arg("--root")
            .arg(&root)
            // Its own target folder: not the workspace's, whose artifacts it must not disturb.
            .env("CARGO_TARGET_DIR", cache.join("s3s-fs-build"))
            .status()
            .context("cannot run cargo install s3s-fs")?;
        if !status.success() {
            bail!("cargo install s3s-fs@{S3S_FS_VERSION} failed ({status})");
        }
    }
    Ok(binary)
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The jobs and data every round uses.
struct StorageSuite<'a> {
    lakeforge: &'a Lakeforge,
    options: &'a StorageOptions,
    server: S3Server,
    /// `--storage FILE` for every command.
    storage_file: PathBuf,
    /// Job names in order: `q1`..`q22`, then `write`.
    jobs: Vec<String>,
    /// The data's description for the report.
    setup: BTreeMap<String, Value>,
}

/// Each job's timed seconds on each side, and the S3 runs' requests.
#[derive(Default)]
struct StorageTimings {
    local: BTreeMap<String, Vec<f64>>,
    s3: BTreeMap<String, Vec<f64>>,
    requests: BTreeMap<String, RequestCounts>,
}

/// Runs the suite.
pub fn run(lakeforge: &Lakeforge, options: &StorageOptions) -> anyhow::Result<SuiteReport> {
    let suite = StorageSuite::prepare(lakeforge, options)?;
    let timings = suite.time_rounds()?;
    suite.build_report(timings)
}

impl StorageSuite<'_> {
    /// Generates (or reuses) the data, starts the server, uploads the data to it and writes
    /// the jobs.
    fn prepare<'a>(
        lakeforge: &'a Lakeforge,
        options: &'a StorageOptions,
    ) -> anyhow::Result<StorageSuite<'a>> {
        let sf = options.scale_factor;
        let tpch = options.data_root.join(format!("tpch-sf{sf}"));
        eprintln!("storage: TPC-H scale factor {sf} at {}", tpch.display());
        generate_tpch(&tpch, &TpchConfig::new(sf))
            .with_context(|| format!("cannot generate TPC-H data at {}", tpch.display()))?;
        let (features, _) = feature_dataset("storage", &options.data_root, options.write_rows)?;
        fresh_dir(&options.work_dir)?;
        std::fs::create_dir_all(&options.work_dir)?;
        // Installs the server (once) outside any timing.
        let server = S3Server::start(
            options.server,
            options.work_dir.join("s3-server.log"),
            &options.work_dir.join("s3-objects"),
        )?;
        eprintln!(
            "  S3 server ({}) at {}",
            server.description, server.endpoint
        );
        let mut uploaded = BTreeMap::new();
        for (prefix, folder) in [("tpch", &tpch), ("features", &features)] {
            let folder_text = folder.display().to_string();
            let done = run_peer_script(
                "s3_server.py",
                [
                    "upload",
                    &server.endpoint,
                    BUCKET,
                    prefix,
                    folder_text.as_str(),
                ],
            )?;
            uploaded.insert(prefix, done);
        }
        let storage_file = options.work_dir.join("storage.toml");
        std::fs::write(
            &storage_file,
            format!(
                "[storage.\"s3://{BUCKET}\"]\nendpoint = \"{}\"\nallow_http = true\nregion = \
                 \"us-east-1\"\naccess_key_id = \"bench\"\nsecret_access_key = \"bench\"\n",
                server.endpoint
            ),
        )?;
        let mut jobs = write_query_jobs(&tpch, &options.work_dir)?;
        jobs.push(write_publish_job(&features, &options.work_dir)?);
        let mut setup = BTreeMap::new();
        setup.insert(
            "dataset".to_string(),
            Value::from(format!(
                "TPC-H SF {sf} (tpchgen-arrow), Parquet (Snappy), {:.0} MiB; feature dataset \
                 of {} rows x 33 columns, {:.0} MiB",
                folder_bytes(&tpch)? as f64 / 1024.0 / 1024.0,
                options.write_rows,
                folder_bytes(&features)? as f64 / 1024.0 / 1024.0
            )),
        );
        setup.insert(
            "server".to_string(),
            Value::from(format!(
                "{} on loopback, on the same cores as Lakeforge; data uploaded with boto3: {}",
                server.description,
                serde_json::to_string(&uploaded)?
            )),
        );
        setup.insert(
            "rounds".to_string(),
            Value::from(format!(
                "{} warm-up + {} timed; each job runs on disk, then with --profile s3",
                options.warmup, options.runs
            )),
        );
        setup.insert(
            "correctness".to_string(),
            Value::from("every product on S3 equals the product on disk (first round)"),
        );
        Ok(StorageSuite {
            lakeforge,
            options,
            server,
            storage_file,
            jobs,
            setup,
        })
    }

    /// Runs `lakeforge --storage FILE ARGS` in the work folder.
    fn lakeforge<I, S>(&self, args: I) -> anyhow::Result<(Duration, String)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec![
            "--storage".into(),
            self.storage_file.clone().into_os_string(),
        ];
        all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self.lakeforge.run(&self.options.work_dir, all)
    }

    fn time_rounds(&self) -> anyhow::Result<StorageTimings> {
        let mut timings = StorageTimings::default();
        for round in Round::all(self.options.warmup, self.options.runs) {
            for name in &self.jobs {
                self.time_job(name, round, &mut timings)?;
            }
        }
        Ok(timings)
    }

    /// One job on disk, then on S3; products compared in the first round, requests counted in
    /// the first timed one.
    fn time_job(
        &self,
        name: &str,
        round: Round,
        timings: &mut StorageTimings,
    ) -> anyhow::Result<()> {
        let job = format!("{name}.toml");
        let (local, _) = self.lakeforge(["run", &job])?;
        let before = self.server.requests()?;
        let (remote, _) = self.lakeforge(["run", &job, "--profile", "s3"])?;
        let first_timed = round.index == self.options.warmup;
        if first_timed {
            let requests = self.server.requests()?.since(&before);
            timings.requests.insert(name.to_string(), requests);
        }
        if round.index == 0 {
            let product = if name == "write" { "published" } else { name };
            let on_disk = self.product_rows(&format!("warehouse/{product}"))?;
            let on_s3 = self.product_rows(&format!("s3://{BUCKET}/wh/{product}"))?;
            if on_disk != on_s3 {
                bail!("{name}: the product on S3 differs from the product on disk");
            }
        }
        eprintln!(
            "  {name:<5} {:<8} disk {:>7.3} s   s3 {:>7.3} s",
            round.label(),
            local.as_secs_f64(),
            remote.as_secs_f64()
        );
        if round.timed {
            record_seconds(&mut timings.local, name.to_string(), local.as_secs_f64());
            record_seconds(&mut timings.s3, name.to_string(), remote.as_secs_f64());
        }
        Ok(())
    }

    /// Every row of a table (floats normalized), sorted.
    fn product_rows(&self, table: &str) -> anyhow::Result<Vec<String>> {
        let (_, stdout) = self.lakeforge(["--json", "show", table, "--limit", "100000000"])?;
        let mut rows: Vec<String> = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Ok(normalize(&serde_json::from_str(l)?).to_string()))
            .collect::<anyhow::Result<_>>()?;
        rows.sort();
        Ok(rows)
    }

    fn build_report(self, mut timings: StorageTimings) -> anyhow::Result<SuiteReport> {
        let mut measurements = Vec::new();
        let (mut disk_total, mut s3_total) = (0.0, 0.0);
        let mut worst: Option<(String, f64)> = None;
        let mut tpch_requests = RequestCounts::default();
        for name in &self.jobs {
            let disk = timings.local.remove(name).unwrap_or_default();
            let s3 = timings.s3.remove(name).unwrap_or_default();
            let (disk_median, s3_median) = (median(&disk), median(&s3));
            if name != "write" {
                disk_total += disk_median;
                s3_total += s3_median;
                if let Some(requests) = timings.requests.get(name) {
                    tpch_requests.add(requests);
                }
                let ratio = ratio(s3_median, disk_median);
                if worst.as_ref().is_none_or(|(_, r)| ratio > *r) {
                    worst = Some((name.clone(), ratio));
                }
            }
            let what = if name == "write" {
                "the feature dataset published as a Delta product"
            } else {
                "TPC-H query as a job writing its Delta product"
            };
            for (case, seconds, median_seconds) in
                [("disk", disk, disk_median), ("s3", s3, s3_median)]
            {
                measurements.push(Measurement {
                    case: format!("{name} {case}"),
                    description: format!("{what}, data and warehouse on {case}; whole process"),
                    median_seconds,
                    seconds,
                });
            }
        }
        // The smoke run in CI checks the counting works (the harness has no unit tests).
        if tpch_requests.0.get("GET").copied().unwrap_or(0) == 0 {
            bail!(
                "no GET counted in the S3 server's log {}: its format changed?",
                self.server.log.display()
            );
        }
        let mut ratios = vec![Ratio::new(
            "TPC-H jobs: s3 / disk (sum of query medians)",
            ratio(s3_total, disk_total),
            Some(1.5),
        )];
        if let Some((name, worst)) = worst {
            ratios.push(Ratio::new(
                format!("TPC-H jobs: worst query, s3 / disk ({name})"),
                worst,
                None,
            ));
        }
        ratios.push(Ratio::of(
            &measurements,
            "write s3",
            "write disk",
            Some(1.5),
        )?);
        let mut setup = self.setup;
        setup.insert(
            "requests: TPC-H jobs (22 S3 runs, first timed round)".to_string(),
            tpch_requests.to_json(),
        );
        if let Some(write) = timings.requests.get("write") {
            setup.insert("requests: write (one S3 run)".to_string(), write.to_json());
        }
        setup.insert(
            "requests per query (first timed round)".to_string(),
            Value::Object(
                timings
                    .requests
                    .iter()
                    .map(|(name, counts)| (name.clone(), counts.to_json()))
                    .collect(),
            ),
        );
        let sf = self.options.scale_factor;
        Ok(SuiteReport {
            suite: format!("storage-tpch-sf{sf}"),
            setup,
            measurements,
            ratios,
            notes: vec![
                "Both sides are whole `lakeforge run` processes of the same job file: on disk \
                 by default, with `--profile s3` on the bucket (sources, product, run record, \
                 lineage, OpenLineage file). The S3 server runs on the same cores, so its own \
                 CPU time is inside the S3 side's time."
                    .to_string(),
            ],
        })
    }
}

/// `numerator / denominator`, or 0 when nothing was measured.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// The 22 queries as jobs, each with a `[profiles.s3]` moving its sources and warehouse to the
/// bucket. Returns their names.
fn write_query_jobs(tpch: &Path, work_dir: &Path) -> anyhow::Result<Vec<String>> {
    let queries_dir = work_dir.join("queries");
    std::fs::create_dir_all(&queries_dir)?;
    let mut sources = String::new();
    for table in TPCH_TABLES {
        sources.push_str(&format!(
            "[sources.{table}]\nformat = \"parquet\"\npath = \"${{data}}/{table}\"\n"
        ));
    }
    let mut names = Vec::new();
    for (name, text) in query_texts()? {
        std::fs::write(queries_dir.join(format!("{name}.sql")), &text)?;
        std::fs::write(
            work_dir.join(format!("{name}.toml")),
            format!(
                "{}\n{sources}\n[[products]]\nname = \"{name}\"\nsql_file = \
                 \"queries/{name}.sql\"\n",
                job_header(&format!("storage_{name}"), tpch, "tpch")?
            ),
        )?;
        names.push(name);
    }
    Ok(names)
}

/// The write case's job: the feature dataset published as is.
fn write_publish_job(features: &Path, work_dir: &Path) -> anyhow::Result<String> {
    std::fs::write(
        work_dir.join("write.toml"),
        format!(
            "{}\n[sources.features]\nformat = \"parquet\"\npath = \"${{data}}\"\n\n\
             [[products]]\nname = \"published\"\nsql = \"SELECT * FROM features\"\n",
            job_header("storage_write", features, "features")?
        ),
    )?;
    Ok("write".to_string())
}

/// `[job]` with the local data folder as `${data}`, and the S3 profile.
fn job_header(job: &str, local_data: &Path, s3_prefix: &str) -> anyhow::Result<String> {
    Ok(format!(
        "[job]\nname = \"{job}\"\nwarehouse = \"warehouse\"\n\n[job.vars]\ndata = {}\n\n\
         [profiles.s3]\nwarehouse = \"s3://{BUCKET}/wh\"\nvars = {{ data = \
         \"s3://{BUCKET}/{s3_prefix}\" }}\n",
        serde_json::to_string(&local_data.display().to_string())?
    ))
}
