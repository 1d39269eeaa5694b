//! The cluster suite: the 22 TPC-H queries as jobs (each writing its Delta product), and the
//! example churn job (three products, ten data-quality checks, registry-model scoring) on its
//! generated data, embedded and on a local cluster (one coordinator and two workers of the same
//! `lakeforge` binary, on this machine), alternating in the same rounds; the ratios are the
//! cluster's overhead.
//!
//! Correctness first: after the first round, every product written by the cluster run must hold
//! the rows the embedded run wrote.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use lakeforge_benchmarks::datagen::tpch::{TpchConfig, generate_tpch};
use serde_json::Value;

use crate::harness::{
    Lakeforge, Measurement, Ratio, Round, SuiteReport, folder_bytes, fresh_dir, median,
    record_seconds,
};
use crate::tpch::{query_texts, write_jobs};

/// How the suite runs.
pub struct ClusterOptions {
    /// The TPC-H scale factor.
    pub scale_factor: f64,
    /// Customers in the example's generated data (events: 20 per customer).
    pub example_customers: u64,
    /// Timed rounds.
    pub runs: usize,
    /// Untimed rounds first.
    pub warmup: usize,
    /// Workers started (each with `slots` task slots).
    pub workers: usize,
    /// Where generated datasets are cached.
    pub data_root: PathBuf,
    /// Where the jobs and the warehouse go (emptied first).
    pub work_dir: PathBuf,
}

/// The coordinator and workers; killed when dropped.
struct LocalCluster {
    processes: Vec<Child>,
    url: String,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalCluster {
    fn start(
        lakeforge: &Lakeforge,
        workers: usize,
        slots: usize,
        work_dir: &std::path::Path,
    ) -> anyhow::Result<LocalCluster> {
        let mut coordinator = Command::new(lakeforge.path())
            .args(["coordinator", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the coordinator")?;
        let mut first = String::new();
        if let Some(out) = coordinator.stdout.take() {
            BufReader::new(out).read_line(&mut first)?;
        }
        let mut cluster = LocalCluster {
            processes: vec![coordinator],
            url: String::new(),
        };
        let address = first
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("the coordinator did not report its address: {first:?}"))?
            .to_string();
        cluster.url = format!("df://{address}");
        for index in 0..workers {
            let shuffle = work_dir.join(format!("worker-{index}"));
            std::fs::create_dir_all(&shuffle)?;
            let worker = Command::new(lakeforge.path())
                .args(["worker", "--coordinator", &address])
                .args(["--slots", &slots.to_string()])
                .args(["--flight-port", &free_port()?.to_string()])
                .args(["--grpc-port", &free_port()?.to_string()])
                .arg("--work-dir")
                .arg(&shuffle)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start a worker")?;
            cluster.processes.push(worker);
        }
        // Let the workers register before the first timed job.
        std::thread::sleep(Duration::from_secs(2));
        Ok(cluster)
    }
}

/// Runs the suite.
pub fn run(lakeforge: &Lakeforge, options: &ClusterOptions) -> anyhow::Result<SuiteReport> {
    let suite = ClusterSuite::prepare(lakeforge, options)?;
    let cluster = LocalCluster::start(lakeforge, options.workers, suite.slots, &options.work_dir)?;
    let slots = suite.slots;
    eprintln!(
        "  coordinator at {}, {} workers x {slots} slots",
        cluster.url, options.workers
    );
    let timings = suite.time_query_rounds(&cluster.url)?;
    let example = example_rounds(lakeforge, options, &cluster.url)?;
    drop(cluster);
    suite.build_report(timings, example)
}

/// The data, the queries and the parallelism every phase uses.
struct ClusterSuite<'a> {
    lakeforge: &'a Lakeforge,
    options: &'a ClusterOptions,
    /// The TPC-H Parquet tables.
    data: PathBuf,
    /// The queries, by name (a job `NAME.toml` each in the work folder).
    queries: Vec<(String, String)>,
    /// This machine's cores: the embedded runs' partitions.
    cores: usize,
    /// Task slots per worker.
    slots: usize,
}

/// Each query's timed seconds, both ways.
#[derive(Default)]
struct QueryTimings {
    embedded: BTreeMap<String, Vec<f64>>,
    distributed: BTreeMap<String, Vec<f64>>,
}

impl ClusterSuite<'_> {
    /// Generates (or reuses) the data, empties the work folder, writes the jobs and sizes the
    /// workers.
    fn prepare<'a>(
        lakeforge: &'a Lakeforge,
        options: &'a ClusterOptions,
    ) -> anyhow::Result<ClusterSuite<'a>> {
        let sf = options.scale_factor;
        let data = options.data_root.join(format!("tpch-sf{sf}"));
        eprintln!("cluster: TPC-H scale factor {sf} at {}", data.display());
        generate_tpch(&data, &TpchConfig::new(sf))
            .with_context(|| format!("cannot generate TPC-H data at {}", data.display()))?;
        fresh_dir(&options.work_dir)?;
        let queries = query_texts()?;
        write_jobs(&data, &options.work_dir, &queries)?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        // The same parallelism both ways: the workers' slots add up to the embedded run's
        // partitions.
        let slots = (cores / options.workers.max(1)).max(1);
        Ok(ClusterSuite {
            lakeforge,
            options,
            data,
            queries,
            cores,
            slots,
        })
    }

    /// The rows of the product `name` the latest run wrote.
    fn product_rows(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let work_dir = &self.options.work_dir;
        table_rows(
            self.lakeforge,
            work_dir,
            &work_dir.join("warehouse").join(name),
        )
    }

    /// Every round runs each query embedded, then on the cluster at `url`.
    fn time_query_rounds(&self, url: &str) -> anyhow::Result<QueryTimings> {
        let mut timings = QueryTimings::default();
        for round in Round::all(self.options.warmup, self.options.runs) {
            for (name, _) in &self.queries {
                self.time_query(name, round, url, &mut timings)?;
            }
        }
        Ok(timings)
    }

    /// One query, embedded then on the cluster; in the first round, their products must hold
    /// the same rows.
    fn time_query(
        &self,
        name: &str,
        round: Round,
        url: &str,
        timings: &mut QueryTimings,
    ) -> anyhow::Result<()> {
        let label = round.label();
        let work_dir = &self.options.work_dir;
        let job = work_dir.join(format!("{name}.toml"));
        let (local, _) = self
            .lakeforge
            .run(work_dir, ["run".as_ref(), job.as_os_str()])?;
        let local_rows = if round.index == 0 {
            Some(self.product_rows(name)?)
        } else {
            None
        };
        let (remote, _) = self.lakeforge.run(
            work_dir,
            [
                "run".as_ref(),
                job.as_os_str(),
                "--cluster".as_ref(),
                url.as_ref(),
            ],
        )?;
        if let Some(local_rows) = local_rows
            && local_rows != self.product_rows(name)?
        {
            bail!("{name}: the cluster run's product differs from the embedded run's");
        }
        eprintln!(
            "  {name:<4} {label:<8} embedded {:>7.3} s   cluster {:>7.3} s",
            local.as_secs_f64(),
            remote.as_secs_f64()
        );
        if round.timed {
            record_seconds(&mut timings.embedded, name.to_string(), local.as_secs_f64());
            record_seconds(
                &mut timings.distributed,
                name.to_string(),
                remote.as_secs_f64(),
            );
        }
        Ok(())
    }

    /// Per query, the embedded then the cluster measurement.
    fn query_measurements(&self, mut timings: QueryTimings) -> Vec<Measurement> {
        let mut measurements = Vec::new();
        for (name, _) in &self.queries {
            for (case, times) in [
                ("embedded", &mut timings.embedded),
                ("cluster", &mut timings.distributed),
            ] {
                let seconds = times.remove(name).unwrap_or_default();
                measurements.push(Measurement {
                    case: format!("{name} {case}"),
                    description: format!(
                        "as a job ({case}): product written to Delta, whole process"
                    ),
                    median_seconds: median(&seconds),
                    seconds,
                });
            }
        }
        measurements
    }

    /// The suite's report: the queries' measurements, then the example's, with the overhead
    /// ratios and the setup.
    fn build_report(
        &self,
        timings: QueryTimings,
        example: [Measurement; 2],
    ) -> anyhow::Result<SuiteReport> {
        let mut measurements = self.query_measurements(timings);
        let sum = |case: &str| -> f64 {
            measurements
                .iter()
                .filter(|m| m.case.ends_with(&format!(" {case}")))
                .map(|m| m.median_seconds)
                .sum()
        };
        let (embedded_total, cluster_total) = (sum("embedded"), sum("cluster"));
        let ratios = vec![
            Ratio::new(
                "cluster / embedded (sum of query medians)".to_string(),
                ratio(cluster_total, embedded_total),
                Some(1.5),
            ),
            Ratio::new(
                "example job: cluster / embedded (medians)".to_string(),
                ratio(example[1].median_seconds, example[0].median_seconds),
                Some(1.5),
            ),
        ];
        measurements.extend(example);
        let sf = self.options.scale_factor;
        Ok(SuiteReport {
            suite: format!("cluster-tpch-sf{sf}"),
            setup: self.setup()?,
            measurements,
            ratios,
            notes: vec![
                "Both cases are whole `lakeforge run` processes (planning, execution, Delta \
                 write and commit, run record, lineage); the cluster case adds shipping the \
                 plan, scheduling stages, shuffling through the workers' disks and Flight, and \
                 fetching the writers' file lists."
                    .to_string(),
            ],
        })
    }

    /// The report's description of the data, the cluster, the rounds and the example.
    fn setup(&self) -> anyhow::Result<BTreeMap<String, Value>> {
        let options = self.options;
        let (sf, slots, cores) = (options.scale_factor, self.slots, self.cores);
        let mut setup = BTreeMap::new();
        setup.insert(
            "dataset".to_string(),
            Value::from(format!(
                "TPC-H SF {sf} (tpchgen-arrow), Parquet (Snappy), {:.0} MiB",
                folder_bytes(&self.data)? as f64 / 1024.0 / 1024.0
            )),
        );
        setup.insert(
            "cluster".to_string(),
            Value::from(format!(
                "1 coordinator + {} workers x {slots} slots on this machine (loopback); embedded \
                 runs use {cores} partitions",
                options.workers
            )),
        );
        setup.insert(
            "rounds".to_string(),
            Value::from(format!(
                "{} warm-up + {} timed; each query runs embedded then on the cluster",
                options.warmup, options.runs
            )),
        );
        setup.insert(
            "example".to_string(),
            Value::from(format!(
                "examples/churn: {} customers, {} events; 3 products, 10 checks, XGBoost \
                 scoring from the registry (`lakeforge example churn`, data generated once)",
                options.example_customers,
                options.example_customers * EVENTS_PER_CUSTOMER
            )),
        );
        setup.insert(
            "correctness".to_string(),
            Value::from("every cluster product equals the embedded product (first round)"),
        );
        Ok(setup)
    }
}

/// `numerator / denominator`, or 0 when nothing was measured (no division by zero).
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Events generated per example customer (the example's own ratio).
const EVENTS_PER_CUSTOMER: u64 = 20;

/// The example job's products.
const EXAMPLE_PRODUCTS: [&str; 3] = [
    "customer_features",
    "country_daily_revenue",
    "customer_churn_risk",
];

/// Runs `lakeforge example churn` in two copies of the example, one embedded and one on the
/// cluster, alternating; checks that the products are equal after the first round and returns
/// the embedded and the cluster measurement.
fn example_rounds(
    lakeforge: &Lakeforge,
    options: &ClusterOptions,
    url: &str,
) -> anyhow::Result<[Measurement; 2]> {
    let source = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/churn"));
    let folders = ["example-embedded", "example-cluster"].map(|f| options.work_dir.join(f));
    for folder in &folders {
        for file in ["job.toml", "purchase_gaps.sql", "models/churn_xgb.json"] {
            let target = folder.join(file);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(source.join(file), &target)
                .with_context(|| format!("cannot copy the example's {file}"))?;
        }
    }
    let customers = options.example_customers.to_string();
    let events = (options.example_customers * EVENTS_PER_CUSTOMER).to_string();
    let run = |folder: &PathBuf, cluster: Option<&str>| -> anyhow::Result<f64> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--json".as_ref(),
            "example".as_ref(),
            "churn".as_ref(),
            "--dir".as_ref(),
            folder.as_os_str(),
            "--customers".as_ref(),
            customers.as_ref(),
            "--events".as_ref(),
            events.as_ref(),
        ];
        if let Some(url) = cluster {
            args.push("--cluster".as_ref());
            args.push(url.as_ref());
        }
        Ok(lakeforge.run(&options.work_dir, args)?.0.as_secs_f64())
    };
    // Generates each copy's data (cached) outside the timed rounds.
    run(&folders[0], None)?;
    run(&folders[1], Some(url))?;
    let rows = |folder: &PathBuf, product: &str| {
        table_rows(
            lakeforge,
            &options.work_dir,
            &folder.join("warehouse").join(product),
        )
    };
    for product in EXAMPLE_PRODUCTS {
        if rows(&folders[0], product)? != rows(&folders[1], product)? {
            bail!("example {product}: the cluster run's product differs from the embedded run's");
        }
    }
    let (mut embedded, mut distributed) = (Vec::new(), Vec::new());
    for round in 0..options.warmup + options.runs {
        let (local, remote) = (run(&folders[0], None)?, run(&folders[1], Some(url))?);
        eprintln!("  example  embedded {local:>7.3} s   cluster {remote:>7.3} s");
        if round >= options.warmup {
            embedded.push(local);
            distributed.push(remote);
        }
    }
    let measurement = |case: &str, seconds: Vec<f64>| Measurement {
        case: format!("example {case}"),
        description: format!(
            "the churn example job ({case}): 3 products, 10 checks, scoring; whole process"
        ),
        median_seconds: median(&seconds),
        seconds,
    };
    Ok([
        measurement("embedded", embedded),
        measurement("cluster", distributed),
    ])
}

/// Every row of the table at `table`, floats normalized, sorted: what two runs' products are
/// compared by.
fn table_rows(
    lakeforge: &Lakeforge,
    work_dir: &std::path::Path,
    table: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let (_, stdout) = lakeforge.run(
        work_dir,
        [
            "--json".as_ref(),
            "show".as_ref(),
            table.as_os_str(),
            "--limit".as_ref(),
            "10000000".as_ref(),
        ],
    )?;
    let mut rows: Vec<String> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(normalize(&serde_json::from_str(l)?).to_string()))
        .collect::<anyhow::Result<_>>()?;
    rows.sort();
    Ok(rows)
}

/// Floats rounded to 9 significant digits, so sums computed in another order compare equal.
pub(crate) fn normalize(value: &Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => n
            .as_f64()
            .map(|f| Value::from(format!("{f:.9e}")))
            .unwrap_or_else(|| value.clone()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        _ => value.clone(),
    }
}
