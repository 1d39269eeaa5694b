//! What ran, what failed, what is stale: one report shape for the daemon's JSON API and for
//! `lakeforge status WAREHOUSE`, which builds it from the warehouse tables alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use lakeforge_planner::CronSchedule;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::EngineConfig;
use crate::delta::{history, is_delta_table};
use crate::error::{EngineError, Result};
use crate::location::display_location;
use crate::runs::{ProductVersion, StoredRun, runs_table_url};
use crate::schedule::scheduler::{RunningView, humanize};
use crate::schedule::store::{StoredTrigger, schedule_table_url};
use crate::system_table::{SystemTable, encode, query_rows};
use crate::tables::text_table;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// Every job, by name.
    pub jobs: Vec<JobStatus>,
    /// Every product, by job then name.
    pub products: Vec<ProductFreshness>,
}

/// A job's schedule and runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobStatus {
    /// The job.
    pub name: String,
    /// Its file (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_path: Option<PathBuf>,
    /// Its cron pattern.
    pub schedule: Option<String>,
    /// The pattern's time zone.
    pub timezone: Option<String>,
    /// Its `after` inputs (daemon only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// The next cron occurrence.
    pub next_run: Option<DateTime<Utc>>,
    /// The run going on (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningView>,
    /// The newest run.
    pub last_run: Option<LastRun>,
    /// Runs by status: all recorded ones (`status`), or since the daemon started (daemon).
    pub runs: BTreeMap<String, u64>,
    /// The job file's error when an edit no longer validates (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec_error: Option<String>,
}

/// The newest run of a job.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    /// Its id.
    pub run_id: Option<String>,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Its error.
    pub error: Option<String>,
}

/// Whether a product meets its freshness SLA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FreshnessState {
    /// Newer than its SLA.
    Fresh,
    /// Older than its SLA.
    Stale,
    /// No SLA declared.
    NoSla,
    /// The table does not exist (yet).
    Missing,
}

impl FreshnessState {
    /// As shown.
    pub fn as_str(self) -> &'static str {
        match self {
            FreshnessState::Fresh => "fresh",
            FreshnessState::Stale => "stale",
            FreshnessState::NoSla => "no_sla",
            FreshnessState::Missing => "missing",
        }
    }
}

/// A product's age against its SLA.
#[derive(Debug, Clone, Serialize)]
pub struct ProductFreshness {
    /// The job publishing it.
    pub job: String,
    /// The product.
    pub product: String,
    /// Its table.
    pub table: String,
    /// Its newest version.
    pub version: Option<u64>,
    /// When that version was committed.
    pub last_commit: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub age_seconds: Option<f64>,
    /// Its `freshness_sla`.
    pub freshness_sla_seconds: Option<f64>,
    /// Fresh, stale, no SLA, or missing.
    pub state: FreshnessState,
}

/// Where a product's SLA comes from.
#[derive(Debug, Clone, Copy)]
pub enum SlaSource {
    /// The job spec (the daemon has it).
    Spec(Option<Duration>),
    /// The newest run commit's metadata (`lakeforge status` has only the table).
    Commits,
}

/// How many commits are searched for the newest run commit's SLA (rollbacks carry none).
const SLA_SEARCH_DEPTH: usize = 20;

/// `table`'s age at `now` against its SLA.
pub async fn product_freshness(
    job: &str,
    product: &str,
    table: &Url,
    sla: SlaSource,
    now: DateTime<Utc>,
) -> ProductFreshness {
    let mut freshness = ProductFreshness {
        job: job.to_string(),
        product: product.to_string(),
        table: display_location(table),
        version: None,
        last_commit: None,
        age_seconds: None,
        freshness_sla_seconds: None,
        state: FreshnessState::Missing,
    };
    let depth = match sla {
        SlaSource::Spec(_) => 1,
        SlaSource::Commits => SLA_SEARCH_DEPTH,
    };
    let commits = match history(table, Some(depth)).await {
        Ok(commits) => commits,
        Err(_) => {
            if let SlaSource::Spec(sla) = sla {
                freshness.freshness_sla_seconds = sla.map(|d| d.as_secs_f64());
            }
            return freshness;
        }
    };
    let Some(newest) = commits.first() else {
        return freshness;
    };
    let sla = match sla {
        SlaSource::Spec(sla) => sla,
        SlaSource::Commits => commits
            .iter()
            .filter_map(|c| c.lakeforge.as_ref())
            .find(|m| m.operation == "run")
            .and_then(|m| m.freshness_sla_seconds)
            .map(Duration::from_secs),
    };
    freshness.version = Some(newest.version);
    freshness.last_commit = newest.timestamp;
    freshness.freshness_sla_seconds = sla.map(|d| d.as_secs_f64());
    let age = newest
        .timestamp
        .map(|t| (now - t).to_std().unwrap_or_default());
    freshness.age_seconds = age.map(|a| a.as_secs_f64());
    freshness.state = match (sla, age) {
        (None, _) => FreshnessState::NoSla,
        (Some(sla), Some(age)) if age <= sla => FreshnessState::Fresh,
        (Some(_), _) => FreshnessState::Stale,
    };
    freshness
}

/// The report from a warehouse's runs and trigger tables and its products' Delta logs.
pub async fn warehouse_status(
    warehouse: &Url,
    config: &EngineConfig,
    now: DateTime<Utc>,
) -> Result<StatusReport> {
    let mut jobs: BTreeMap<String, JobStatus> = BTreeMap::new();
    let mut products: BTreeMap<String, (String, String, Url)> = BTreeMap::new();
    let runs = runs_table_url(warehouse)?;
    let schedule = schedule_table_url(warehouse)?;
    let (has_runs, has_schedule) = (is_delta_table(&runs).await, is_delta_table(&schedule).await);
    if !has_runs && !has_schedule {
        return Err(EngineError::Usage(format!(
            "{} has no run records ({} is not a Delta table); is it a Lakeforge warehouse?",
            display_location(warehouse),
            display_location(&runs)
        )));
    }
    if has_runs {
        #[derive(Deserialize)]
        struct Count {
            job: String,
            status: String,
            runs: u64,
        }
        let counts: Vec<Count> = query_rows::<StoredRun, _>(
            warehouse,
            "SELECT job, status, count(*) AS runs FROM runs GROUP BY job, status",
            config,
            "cannot read the runs table",
        )
        .await?;
        for count in counts {
            status_of(&mut jobs, &count.job)
                .runs
                .insert(count.status, count.runs);
        }
        #[derive(Deserialize)]
        struct Newest {
            job: String,
            run_id: String,
            status: String,
            #[serde(with = "chrono::serde::ts_microseconds")]
            started_at: DateTime<Utc>,
            #[serde(with = "chrono::serde::ts_microseconds")]
            ended_at: DateTime<Utc>,
            error: Option<String>,
        }
        let newest: Vec<Newest> = query_rows::<StoredRun, _>(
            warehouse,
            "SELECT job, run_id, status, started_at, ended_at, error FROM (SELECT *, \
             row_number() OVER (PARTITION BY job ORDER BY started_at DESC) AS newest FROM runs) \
             WHERE newest = 1",
            config,
            "cannot read the runs table",
        )
        .await?;
        for run in newest {
            status_of(&mut jobs, &run.job).last_run = Some(LastRun {
                run_id: Some(run.run_id),
                status: run.status,
                started_at: Some(run.started_at),
                ended_at: Some(run.ended_at),
                error: run.error,
            });
        }
        #[derive(Deserialize)]
        struct Published {
            run_id: String,
            job: String,
            #[serde(with = "encode::json_text")]
            products: Vec<ProductVersion>,
        }
        let published: Vec<Published> = query_rows::<StoredRun, _>(
            warehouse,
            "SELECT run_id, job, products FROM runs WHERE status = 'succeeded' \
             ORDER BY started_at",
            config,
            "cannot read the runs table",
        )
        .await?;
        for (row, run) in published.into_iter().enumerate() {
            for version in run.products {
                let url = Url::parse(&version.table).map_err(|e| EngineError::CorruptTable {
                    table: StoredRun::PATH.to_string(),
                    // The row of the query's result (succeeded runs, oldest first); the run
                    // id in the message finds it in the table.
                    row,
                    column: "products".to_string(),
                    message: format!(
                        "run {}: '{}' is not a table URL: {e}",
                        run.run_id, version.table
                    ),
                })?;
                products.insert(
                    version.table.clone(),
                    (run.job.clone(), version.product, url),
                );
            }
        }
    }

    if has_schedule {
        #[derive(Deserialize)]
        struct Schedule {
            job: String,
            schedule: Option<String>,
            timezone: Option<String>,
        }
        let newest: Vec<Schedule> = query_rows::<StoredTrigger, _>(
            warehouse,
            "SELECT job, schedule, timezone FROM (SELECT *, row_number() OVER (PARTITION BY job \
             ORDER BY ended_at DESC) AS newest FROM schedule) WHERE newest = 1",
            config,
            "cannot read the trigger log",
        )
        .await?;
        for row in newest {
            let entry = status_of(&mut jobs, &row.job);
            entry.schedule = row.schedule;
            entry.timezone = row.timezone;
            entry.next_run =
                next_occurrence(entry.schedule.as_deref(), entry.timezone.as_deref(), now);
        }
    }

    let mut freshness = Vec::with_capacity(products.len());
    for (job, product, url) in products.into_values() {
        freshness.push(product_freshness(&job, &product, &url, SlaSource::Commits, now).await);
    }
    freshness.sort_by(|a, b| (&a.job, &a.product).cmp(&(&b.job, &b.product)));
    Ok(StatusReport {
        generated_at: now,
        jobs: jobs.into_values().collect(),
        products: freshness,
    })
}

fn status_of<'a>(jobs: &'a mut BTreeMap<String, JobStatus>, name: &str) -> &'a mut JobStatus {
    jobs.entry(name.to_string()).or_insert_with(|| JobStatus {
        name: name.to_string(),
        ..JobStatus::default()
    })
}

/// The next occurrence of a recorded pattern, when it still parses.
fn next_occurrence(
    pattern: Option<&str>,
    timezone: Option<&str>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let timezone = timezone
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::UTC);
    CronSchedule::parse(pattern?, timezone)
        .ok()?
        .next_after(now)
}

/// The report as text: a jobs table and a products table.
pub fn render_text(report: &StatusReport) -> String {
    let time = |t: &Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".to_string())
    };
    let mut text = String::new();
    let jobs: Vec<Vec<String>> = report
        .jobs
        .iter()
        .map(|job| {
            let last = job.last_run.as_ref();
            let mut state = match (&job.running, last) {
                (Some(running), _) => format!("running (attempt {})", running.attempt),
                (None, Some(last)) => last.status.clone(),
                (None, None) => "never ran".to_string(),
            };
            if job.spec_error.is_some() {
                state.push_str(", spec error");
            }
            vec![
                job.name.clone(),
                job.schedule.clone().unwrap_or_else(|| {
                    if job.after.is_empty() {
                        "-".to_string()
                    } else {
                        format!("after {}", job.after.join(", "))
                    }
                }),
                time(&job.next_run),
                state,
                time(&last.and_then(|l| l.started_at)),
                job.runs
                    .iter()
                    .map(|(status, count)| format!("{count} {status}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    text.push_str(&text_table(
        &["JOB", "SCHEDULE", "NEXT RUN", "LAST RUN", "STARTED", "RUNS"],
        &jobs,
    ));
    for job in &report.jobs {
        if let Some(error) = &job.spec_error {
            let _ = writeln!(
                text,
                "  {}: the job file no longer validates: {error}",
                job.name
            );
        }
        if let Some(error) = job.last_run.as_ref().and_then(|l| l.error.as_ref()) {
            let _ = writeln!(text, "  {}: last error: {error}", job.name);
        }
    }
    text.push('\n');
    let products: Vec<Vec<String>> = report
        .products
        .iter()
        .map(|p| {
            vec![
                p.product.clone(),
                p.job.clone(),
                p.version.map_or("-".to_string(), |v| v.to_string()),
                time(&p.last_commit),
                p.age_seconds
                    .map_or("-".to_string(), |a| humanize(Duration::from_secs(a as u64))),
                p.freshness_sla_seconds
                    .map_or("-".to_string(), |s| humanize(Duration::from_secs(s as u64))),
                p.state.as_str().to_string(),
            ]
        })
        .collect();
    text.push_str(&text_table(
        &[
            "PRODUCT",
            "JOB",
            "VERSION",
            "LAST COMMIT",
            "AGE",
            "SLA",
            "STATE",
        ],
        &products,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_occurrence_uses_the_recorded_zone() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = next_occurrence(Some("0 2 * * *"), Some("Asia/Tokyo"), now).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-01T17:00:00+00:00");
        assert!(next_occurrence(Some("not cron"), None, now).is_none());
    }
}
