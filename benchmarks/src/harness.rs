//! What every suite shares: the `lakeforge` binary under test, timed runs alternated between
//! cases, the machine's description, and the report files.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lakeforge_benchmarks::datagen::features::{FeaturesConfig, generate_features};
use serde::Serialize;

/// The `lakeforge` binary the suites run, as a user would.
pub struct Lakeforge {
    binary: PathBuf,
}

impl Lakeforge {
    /// Uses `explicit` when given. Otherwise the binary sits next to this one (same cargo profile);
    /// when launched by `cargo run`, it is (re)built first so a stale binary is never measured.
    pub fn locate(explicit: Option<PathBuf>) -> anyhow::Result<Lakeforge> {
        if let Some(binary) = explicit {
            if !binary.is_file() {
                bail!("--lakeforge {}: no such file", binary.display());
            }
            return Ok(Lakeforge { binary });
        }
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let dir = exe
            .parent()
            .context("this program's path has no parent folder")?;
        let profile = dir
            .file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("debug")
            .to_string();
        if let Some(cargo) = std::env::var_os("CARGO") {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .context("the benchmarks crate has no parent folder")?;
            let mut build = Command::new(cargo);
            build.current_dir(workspace).args([
                "build",
                "--locked",
                "-p",
                "lakeforge-cli",
                "--bin",
                "lakeforge",
            ]);
            match profile.as_str() {
                "debug" => {}
                "release" => {
                    build.arg("--release");
                }
                other => {
                    build.args(["--profile", other]);
                }
            }
            eprintln!("building the lakeforge binary ({profile})");
            let status = build.status().context("cannot run cargo build")?;
            if !status.success() {
                bail!("cargo build of the lakeforge binary failed");
            }
        }
        let binary = dir.join(format!("lakeforge{}", std::env::consts::EXE_SUFFIX));
        if !binary.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release -p lakeforge-cli`, \
                 or pass --lakeforge PATH",
                binary.display()
            );
        }
        Ok(Lakeforge { binary })
    }

    /// The binary's path.
    pub fn path(&self) -> &Path {
        &self.binary
    }

    /// Runs `lakeforge ARGS...` in `dir` and returns its wall time and standard output; a
    /// non-zero exit is an error carrying its standard error.
    pub fn run<I, S>(&self, dir: &Path, args: I) -> anyhow::Result<(Duration, String)>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(&self.binary);
        command.current_dir(dir).args(args);
        let started = Instant::now();
        let output = command
            .output()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            bail!(
                "{:?} failed ({}): {}",
                command,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok((
            elapsed,
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ))
    }
}

/// The feature dataset of `rows` rows under `data_root` (generated once, then reused), for the
/// suite named `suite`; returns its folder and configuration.
pub fn feature_dataset(
    suite: &str,
    data_root: &Path,
    rows: u64,
) -> anyhow::Result<(PathBuf, FeaturesConfig)> {
    let config = FeaturesConfig::with_rows(rows);
    let data = data_root.join(format!("features-{rows}"));
    eprintln!(
        "{suite}: feature dataset of {rows} rows at {}",
        data.display()
    );
    if generate_features(&data, &config)
        .with_context(|| format!("cannot generate the feature dataset at {}", data.display()))?
    {
        eprintln!("  generated");
    }
    Ok((data, config))
}

/// The bytes of every file under `dir`, recursively.
pub fn folder_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        total += if metadata.is_dir() {
            folder_bytes(&entry.path())?
        } else {
            metadata.len()
        };
    }
    Ok(total)
}

/// Runs `benchmarks/peers/<script>` with `python3` (the script sets up its own pinned virtual
/// environment), its standard error passed through, and parses the JSON document it prints.
pub fn run_peer_script<I, S>(script: &str, args: I) -> anyhow::Result<serde_json::Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(script);
    let output = Command::new("python3")
        .arg(&script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} printed no JSON", script.display()))
}

/// Empties (removes) `dir`, where a suite writes its jobs and warehouses.
pub fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    Ok(())
}

/// One timed case of a suite.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Its name, e.g. `scan`.
    pub case: String,
    /// What it does.
    pub description: String,
    /// Wall seconds of each measured run, in order (warm-up runs excluded).
    pub seconds: Vec<f64>,
    /// The median of `seconds`.
    pub median_seconds: f64,
}

/// A case to time: its name, description, and the closure running it once.
pub type Case<'a> = (
    &'a str,
    &'a str,
    Box<dyn FnMut() -> anyhow::Result<Duration> + 'a>,
);

/// Runs `warmup` untimed rounds, then `runs` timed rounds; each round runs every case once, in
/// order, so slow drifts of the machine (thermal, caches, neighbours) hit all cases alike.
pub fn alternate(
    cases: Vec<Case<'_>>,
    warmup: usize,
    runs: usize,
) -> anyhow::Result<Vec<Measurement>> {
    let mut cases = cases;
    let mut seconds: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); cases.len()];
    for round in 0..warmup + runs {
        for ((name, _, run), times) in cases.iter_mut().zip(&mut seconds) {
            let elapsed = run().with_context(|| format!("case {name}, round {}", round + 1))?;
            let label = if round < warmup { "warm-up" } else { "run" };
            eprintln!("  {name:<18} {label:<8} {:>8.3} s", elapsed.as_secs_f64());
            if round >= warmup {
                times.push(elapsed.as_secs_f64());
            }
        }
    }
    Ok(cases
        .into_iter()
        .zip(seconds)
        .map(|((name, description, _), seconds)| Measurement {
            case: name.to_string(),
            description: description.to_string(),
            median_seconds: median(&seconds),
            seconds,
        })
        .collect())
}

/// One round of a suite's own loop (for suites that cannot use [`alternate`]): the first
/// `warmup` rounds are untimed.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Its position, from 0.
    pub index: usize,
    /// Whether its times are kept.
    pub timed: bool,
}

impl Round {
    /// `warmup` untimed rounds, then `runs` timed ones.
    pub fn all(warmup: usize, runs: usize) -> impl Iterator<Item = Round> {
        (0..warmup + runs).map(move |index| Round {
            index,
            timed: index >= warmup,
        })
    }

    /// How progress lines name it.
    pub fn label(self) -> &'static str {
        if self.timed { "run" } else { "warm-up" }
    }
}

/// The median (mean of the middle two for an even count; 0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Host name.
    pub host: String,
    /// CPU model, from /proc/cpuinfo where available.
    pub cpu: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// Physical memory in GiB, from /proc/meminfo where available.
    pub memory_gib: f64,
    /// Operating system and architecture.
    pub os: String,
}

impl Machine {
    /// Describes this machine.
    pub fn detect() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let host = read("/proc/sys/kernel/hostname").trim().to_string();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        Machine {
            host: if host.is_empty() {
                "unknown".to_string()
            } else {
                host
            },
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// A ratio between two cases of a suite, with its target when the project has one.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// What it compares, e.g. `checks / scan`.
    pub name: String,
    /// `median(numerator) / median(denominator)`.
    pub value: f64,
    /// `numerator / denominator` within each timed round, in round order; empty where the two
    /// were not timed in the same rounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_round: Vec<f64>,
    /// The median of `per_round`; where there is one, the target is judged on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_round_median: Option<f64>,
    /// The most the project accepts, if it sets a target.
    pub target_at_most: Option<f64>,
}

impl Ratio {
    /// A ratio computed by the suite (not from two cases' rounds).
    pub fn new(name: impl Into<String>, value: f64, target_at_most: Option<f64>) -> Ratio {
        Ratio {
            name: name.into(),
            value,
            per_round: Vec::new(),
            per_round_median: None,
            target_at_most,
        }
    }

    /// The ratio of cases `numerator` and `denominator` of `measurements`: of their medians,
    /// and within each round. [`alternate`] runs every case once per round, one after the
    /// other, so a slow phase of the machine (which lasts minutes on a shared VM) falls on
    /// both runs of a round; the median of the rounds' ratios is what the target is judged on.
    pub fn of(
        measurements: &[Measurement],
        numerator: &str,
        denominator: &str,
        target_at_most: Option<f64>,
    ) -> anyhow::Result<Ratio> {
        let case = |name: &str| {
            measurements
                .iter()
                .find(|m| m.case == name)
                .with_context(|| format!("no case named {name}"))
        };
        let (top, bottom) = (case(numerator)?, case(denominator)?);
        let per_round: Vec<f64> = if top.seconds.len() == bottom.seconds.len() {
            top.seconds
                .iter()
                .zip(&bottom.seconds)
                .map(|(top, bottom)| top / bottom)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Ratio {
            name: format!("{numerator} / {denominator}"),
            value: top.median_seconds / bottom.median_seconds,
            per_round_median: (!per_round.is_empty()).then(|| median(&per_round)),
            per_round,
            target_at_most,
        })
    }

    /// The figure the target is judged on: the median of the rounds' ratios where there are
    /// rounds, else the ratio of the medians.
    pub fn judged(&self) -> f64 {
        self.per_round_median.unwrap_or(self.value)
    }
}

/// One suite's results.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// The suite, e.g. `dq`.
    pub suite: String,
    /// The data it ran on and how the runs were made.
    pub setup: BTreeMap<String, serde_json::Value>,
    /// Its timed cases.
    pub measurements: Vec<Measurement>,
    /// Ratios between cases.
    pub ratios: Vec<Ratio>,
    /// What a reader should know to interpret the figures.
    pub notes: Vec<String>,
}

/// A whole benchmark run: the machine, the code measured, and each suite.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it ran (UTC, RFC 3339).
    pub date: String,
    /// Where.
    pub machine: Machine,
    /// The `lakeforge --version` measured and the git commit, where known.
    pub lakeforge: String,
    /// The cargo profile of the binary.
    pub profile: String,
    /// Whether this was a smoke run (tiny data, one run: checks the harness, not speed).
    pub smoke: bool,
    /// The suites.
    pub suites: Vec<SuiteReport>,
}

impl Report {
    /// Writes `DIR/<date>-<host>-<suites>.json` and `.md`, and returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let day = self.date.get(..10).unwrap_or(&self.date);
        let suites: Vec<&str> = self.suites.iter().map(|s| s.suite.as_str()).collect();
        let stem = format!("{day}-{}-{}", self.machine.host, suites.join("+"));
        let json_path = dir.join(format!("{stem}.json"));
        let markdown_path = dir.join(format!("{stem}.md"));
        let json = serde_json::to_string_pretty(self).context("cannot encode the report")?;
        std::fs::write(&json_path, json + "\n")
            .with_context(|| format!("cannot write {}", json_path.display()))?;
        std::fs::write(&markdown_path, self.markdown())
            .with_context(|| format!("cannot write {}", markdown_path.display()))?;
        Ok((json_path, markdown_path))
    }

    /// The report as markdown tables, one per suite.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# Lakeforge benchmarks, {}", self.date);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Machine `{}`: {} ({} cores), {} GiB memory, {}. Binary: {} ({} profile){}.",
            m.host,
            m.cpu,
            m.cores,
            m.memory_gib,
            m.os,
            self.lakeforge,
            self.profile,
            if self.smoke {
                ", SMOKE RUN (tiny data: not a measurement)"
            } else {
                ""
            }
        );
        for suite in &self.suites {
            let _ = writeln!(out);
            let _ = writeln!(out, "## {}", suite.suite);
            let _ = writeln!(out);
            for (key, value) in &suite.setup {
                match value {
                    serde_json::Value::String(text) => {
                        let _ = writeln!(out, "- {key}: {text}");
                    }
                    other => {
                        let _ = writeln!(out, "- {key}: {other}");
                    }
                }
            }
            let _ = writeln!(out);
            let _ = writeln!(out, "| case | what | median (s) | runs (s) |");
            let _ = writeln!(out, "|---|---|---:|---|");
            for measurement in &suite.measurements {
                let runs: Vec<String> = measurement
                    .seconds
                    .iter()
                    .map(|s| format!("{s:.3}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.3} | {} |",
                    measurement.case,
                    measurement.description,
                    measurement.median_seconds,
                    runs.join(", ")
                );
            }
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "| ratio | of medians | median of rounds | each round | target (on the median of rounds where there are rounds) |"
            );
            let _ = writeln!(out, "|---|---:|---:|---|---|");
            for ratio in &suite.ratios {
                let target = match ratio.target_at_most {
                    Some(t) if ratio.judged() <= t => format!("<= {t} (met)"),
                    Some(t) => format!("<= {t} (NOT met)"),
                    None => "-".to_string(),
                };
                let rounds: Vec<String> = ratio.per_round.iter().map(|r| times(*r)).collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {target} |",
                    ratio.name,
                    times(ratio.value),
                    ratio.per_round_median.map_or("-".to_string(), times),
                    if rounds.is_empty() {
                        "-".to_string()
                    } else {
                        rounds.join(", ")
                    }
                );
            }
            if !suite.notes.is_empty() {
                let _ = writeln!(out);
                for note in &suite.notes {
                    let _ = writeln!(out, "- {note}");
                }
            }
        }
        out
    }
}

/// A ratio as text: three significant digits for small ones (a cost next to its baseline),
/// two decimals otherwise.
fn times(ratio: f64) -> String {
    if ratio < 0.1 {
        format!("{ratio:.3}x")
    } else {
        format!("{ratio:.2}x")
    }
}

/// Adds one timed sample, in seconds, to the samples of `key`.
pub fn record_seconds<K: Ord>(samples: &mut BTreeMap<K, Vec<f64>>, key: K, seconds: f64) {
    samples.entry(key).or_default().push(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(case: &str, seconds: &[f64]) -> Measurement {
        Measurement {
            case: case.to_string(),
            description: String::new(),
            seconds: seconds.to_vec(),
            median_seconds: median(seconds),
        }
    }

    #[test]
    fn ratios_pair_the_runs_of_each_round() {
        // The second round ran in a slow phase of the machine: both cases took twice as long.
        let measurements = [
            measured("checks", &[1.2, 2.6, 1.3]),
            measured("scan", &[1.0, 2.0, 1.0]),
            measured("alone", &[1.0, 1.0]),
        ];
        let ratio = Ratio::of(&measurements, "checks", "scan", Some(1.3)).unwrap();
        assert_eq!(ratio.value, 1.3);
        assert_eq!(ratio.per_round, vec![1.2, 1.3, 1.3]);
        assert_eq!(ratio.per_round_median, Some(1.3));
        assert_eq!(ratio.judged(), 1.3);
        let faster = [
            measured("a", &[1.0, 3.0, 1.1]),
            measured("b", &[1.0, 2.9, 1.0]),
        ];
        let ratio = Ratio::of(&faster, "a", "b", None).unwrap();
        assert!((ratio.value - 1.1).abs() < 1e-12, "{}", ratio.value);
        assert!((ratio.judged() - 1.0344827586206897).abs() < 1e-12);
        // Cases timed in different rounds have no per-round ratios.
        let unpaired = Ratio::of(&measurements, "alone", "scan", None).unwrap();
        assert!(unpaired.per_round.is_empty());
        assert_eq!(unpaired.judged(), unpaired.value);
        assert!(Ratio::of(&measurements, "nothing", "scan", None).is_err());
    }
}
