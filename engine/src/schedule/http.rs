//! The daemon's operations endpoint: `/health`, `/metrics` (Prometheus text format 0.0.4), and
//! a JSON API (`/api/status`, `/api/jobs`, `/api/jobs/{name}`) with the same report as
//! `lakeforge status`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::schedule::scheduler::SchedulerSnapshot;
use crate::schedule::status::{FreshnessState, StatusReport};
use crate::schedule::{Daemon, job_statuses};

/// The endpoint's routes.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{name}", get(job))
        .with_state(daemon)
}

async fn health(State(daemon): State<Arc<Daemon>>) -> Response {
    let snapshot = daemon.scheduler.snapshot();
    axum::Json(json!({
        "status": "ok",
        "jobs": snapshot.jobs.len(),
        "running": snapshot.jobs.values().filter(|j| j.running.is_some()).count(),
        "engine_version": crate::metadata::ENGINE_VERSION,
    }))
    .into_response()
}

async fn metrics(State(daemon): State<Arc<Daemon>>) -> Response {
    let snapshot = daemon.scheduler.snapshot();
    let report = daemon.report(&snapshot).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&snapshot, &report),
    )
        .into_response()
}

async fn status(State(daemon): State<Arc<Daemon>>) -> Response {
    let snapshot = daemon.scheduler.snapshot();
    axum::Json(daemon.report(&snapshot).await).into_response()
}

async fn jobs(State(daemon): State<Arc<Daemon>>) -> Response {
    axum::Json(job_statuses(&daemon.scheduler.snapshot())).into_response()
}

async fn job(State(daemon): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    let snapshot = daemon.scheduler.snapshot();
    let Some(job) = job_statuses(&snapshot).into_iter().find(|j| j.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": format!("no job named '{name}'") })),
        )
            .into_response();
    };
    let products = daemon.freshness(&snapshot, Some(&name)).await;
    axum::Json(json!({ "job": job, "products": products })).into_response()
}

/// One metric family being written.
struct Family<'a> {
    text: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.text, "{}{suffix}{labels} {value}", self.name);
    }
}

fn family<'a>(text: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
    Family { text, name }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics in Prometheus text format. Counters count since the daemon started.
pub fn render_metrics(snapshot: &SchedulerSnapshot, report: &StatusReport) -> String {
    let mut text = String::new();
    scheduler_metrics(&mut text, snapshot);
    job_metrics(&mut text, snapshot);
    product_metrics(&mut text, snapshot, report);
    text
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The daemon's own families and the run counters.
fn scheduler_metrics(text: &mut String, snapshot: &SchedulerSnapshot) {
    let metrics = &snapshot.metrics;

    family(text, "lakeforge_scheduler_jobs", "gauge", "Jobs scheduled.").sample(
        "",
        &[],
        snapshot.jobs.len() as f64,
    );
    family(
        text,
        "lakeforge_scheduler_file_errors",
        "gauge",
        "Job files that cannot be loaded.",
    )
    .sample("", &[], snapshot.file_errors.len() as f64);

    let mut runs = family(
        text,
        "lakeforge_job_runs_total",
        "counter",
        "Finished run attempts by job and status.",
    );
    for ((job, status), count) in &metrics.runs {
        runs.sample("", &[("job", job), ("status", status)], *count as f64);
    }
    let mut durations = family(
        text,
        "lakeforge_job_run_duration_seconds",
        "summary",
        "Wall time of run attempts.",
    );
    for (job, (sum, count)) in &metrics.durations {
        durations.sample("_sum", &[("job", job)], *sum);
        durations.sample("_count", &[("job", job)], *count as f64);
    }
    let mut exhausted = family(
        text,
        "lakeforge_job_retries_exhausted_total",
        "counter",
        "Triggers whose every attempt failed.",
    );
    for (job, count) in &metrics.exhausted {
        exhausted.sample("", &[("job", job)], *count as f64);
    }
}

/// Each job's state: in flight, next occurrence, last outcome, spec errors.
fn job_metrics(text: &mut String, snapshot: &SchedulerSnapshot) {
    let mut running = family(
        text,
        "lakeforge_job_running",
        "gauge",
        "1 while the job has a run in flight.",
    );
    for (name, job) in &snapshot.jobs {
        running.sample("", &[("job", name)], bool_value(job.running.is_some()));
    }
    let mut next = family(
        text,
        "lakeforge_job_next_run_timestamp_seconds",
        "gauge",
        "Unix time of the job's next cron occurrence.",
    );
    for (name, job) in &snapshot.jobs {
        if let Some(at) = job.next_run {
            next.sample("", &[("job", name)], at.timestamp() as f64);
        }
    }
    let mut last = family(
        text,
        "lakeforge_job_last_run_succeeded",
        "gauge",
        "1 when the job's last trigger succeeded, 0 when it failed.",
    );
    for (name, job) in &snapshot.jobs {
        if let Some(run) = &job.last_run {
            last.sample(
                "",
                &[("job", name)],
                bool_value(run.status == crate::runs::RunStatus::Succeeded),
            );
        }
    }
    let mut spec_errors = family(
        text,
        "lakeforge_job_spec_error",
        "gauge",
        "1 when the job file was edited and no longer validates (the previous spec runs).",
    );
    for (name, job) in &snapshot.jobs {
        spec_errors.sample("", &[("job", name)], bool_value(job.spec_error.is_some()));
    }
}

/// Per product: rows written, failed checks, staleness against the freshness SLA.
fn product_metrics(text: &mut String, snapshot: &SchedulerSnapshot, report: &StatusReport) {
    let metrics = &snapshot.metrics;
    let mut rows = family(
        text,
        "lakeforge_product_rows_written_total",
        "counter",
        "Rows written by successful runs, by product.",
    );
    for ((job, product), count) in &metrics.rows_written {
        rows.sample("", &[("job", job), ("product", product)], *count as f64);
    }
    let mut failed_checks = family(
        text,
        "lakeforge_dq_failed_checks_total",
        "counter",
        "Data-quality checks that did not pass, by job.",
    );
    for (job, count) in &metrics.failed_checks {
        failed_checks.sample("", &[("job", job)], *count as f64);
    }
    let mut staleness = family(
        text,
        "lakeforge_product_staleness_seconds",
        "gauge",
        "Seconds since the product's newest version was committed.",
    );
    for product in &report.products {
        if let Some(age) = product.age_seconds {
            staleness.sample(
                "",
                &[("job", &product.job), ("product", &product.product)],
                age,
            );
        }
    }
    let mut sla = family(
        text,
        "lakeforge_product_freshness_sla_seconds",
        "gauge",
        "The product's freshness SLA.",
    );
    for product in &report.products {
        if let Some(seconds) = product.freshness_sla_seconds {
            sla.sample(
                "",
                &[("job", &product.job), ("product", &product.product)],
                seconds,
            );
        }
    }
    let mut breached = family(
        text,
        "lakeforge_product_sla_breached",
        "gauge",
        "1 when the product is older than its freshness SLA (or missing), 0 when fresh.",
    );
    for product in &report.products {
        let value = match product.state {
            FreshnessState::Fresh => 0.0,
            FreshnessState::Stale => 1.0,
            FreshnessState::Missing if product.freshness_sla_seconds.is_some() => 1.0,
            FreshnessState::Missing | FreshnessState::NoSla => continue,
        };
        breached.sample(
            "",
            &[("job", &product.job), ("product", &product.product)],
            value,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut text = String::new();
        family(&mut text, "lakeforge_scheduler_jobs", "gauge", "Jobs.").sample(
            "",
            &[("job", "a \"quoted\"\\name\n")],
            1.0,
        );
        assert!(
            text.ends_with("lakeforge_scheduler_jobs{job=\"a \\\"quoted\\\"\\\\name\\n\"} 1\n"),
            "{text}"
        );
    }
}
