//! The lineage suite: how long column-lineage extraction takes next to the planning DataFusion
//! does anyway, for the 22 TPC-H queries and for a 5,000-column projection.
//!
//! Extraction runs inside every `lakeforge run` and `validate`, between planning and execution,
//! so it cannot be timed from outside the process; this suite calls the planner's
//! `extract_lineage` directly (the one place the harness links Lakeforge code rather than
//! driving the binary). The baseline is what every run pays already: SQL to logical plan,
//! then the optimizer, on the same session.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use lakeforge_planner::{LineageOptions, extract_lineage};

use crate::harness::{Case, Ratio, SuiteReport, alternate};

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct LineageOptionsBench {
    /// Timed rounds per case.
    pub runs: usize,
    /// Untimed rounds first.
    pub warmup: usize,
    /// Times the TPC-H cases repeat their work within a round (22 short plans need many
    /// repetitions to be above timer noise; the wide cases run once per round, DataFusion's
    /// planning of 5,000 columns alone taking seconds).
    pub repeat: usize,
    /// Columns of the wide projection (5,000; fewer in smoke runs, where DataFusion's own
    /// planning of 5,000 columns in a debug build takes a minute).
    pub wide_columns: usize,
}

/// Runs the suite.
pub fn run(options: &LineageOptionsBench) -> anyhow::Result<SuiteReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start a runtime")?;
    let tpch_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tpch");
    let tpch = runtime.block_on(tpch_session(&tpch_dir))?;
    let queries = tpch_queries(&tpch_dir)?;
    let width = options.wide_columns.max(2);
    let wide = runtime.block_on(wide_session(width))?;
    let wide_sql = wide_projection(width);
    let lineage_options = LineageOptions::default();

    let plan_all = |ctx: &SessionContext, queries: &[String]| -> anyhow::Result<Vec<LogicalPlan>> {
        queries
            .iter()
            .map(|sql| runtime.block_on(plan(ctx, sql)))
            .collect()
    };
    let tpch_plans = plan_all(&tpch, &queries)?;
    let wide_plans = plan_all(&wide, std::slice::from_ref(&wide_sql))?;

    let repeat = options.repeat.max(1);
    let time_planning =
        |ctx: &SessionContext, queries: &[String], repeat: usize| -> anyhow::Result<Duration> {
            let start = Instant::now();
            for _ in 0..repeat {
                for sql in queries {
                    let plan = runtime.block_on(plan(ctx, sql))?;
                    ctx.state().optimize(&plan).context("optimize")?;
                }
            }
            Ok(start.elapsed())
        };
    let time_extraction = |plans: &[LogicalPlan], repeat: usize| -> anyhow::Result<Duration> {
        let start = Instant::now();
        for _ in 0..repeat {
            for plan in plans {
                extract_lineage(plan, &lineage_options)?;
            }
        }
        Ok(start.elapsed())
    };
    let cases: Vec<Case<'_>> = vec![
        (
            "tpch_planning",
            "SQL to logical plan + optimizer, 22 TPC-H queries (x repeat)",
            Box::new(|| time_planning(&tpch, &queries, repeat)),
        ),
        (
            "tpch_lineage",
            "column lineage of the 22 TPC-H plans (x repeat)",
            Box::new(|| time_extraction(&tpch_plans, repeat)),
        ),
        (
            "wide_planning",
            "SQL to logical plan + optimizer, wide projection",
            Box::new(|| time_planning(&wide, std::slice::from_ref(&wide_sql), 1)),
        ),
        (
            "wide_lineage",
            "column lineage of the wide projection",
            Box::new(|| time_extraction(&wide_plans, 1)),
        ),
    ];
    let measurements = alternate(cases, options.warmup, options.runs)?;

    // Per query, one extraction each (after the rounds above warmed everything up).
    let mut per_query = BTreeMap::new();
    for (index, plan) in tpch_plans.iter().enumerate() {
        let start = Instant::now();
        for _ in 0..repeat {
            extract_lineage(plan, &lineage_options)?;
        }
        let micros = start.elapsed().as_secs_f64() * 1e6 / repeat as f64;
        per_query.insert(format!("q{:02}", index + 1), (micros * 10.0).round() / 10.0);
    }
    let mut setup = BTreeMap::new();
    setup.insert(
        "work".to_string(),
        serde_json::json!(format!(
            "TPC-H cases repeat their work {repeat} times per round, wide cases once; plans come \
             from empty tables with the TPC-H schema (benchmarks/tpch/schema.sql) and a \
             {width}-column table"
        )),
    );
    setup.insert(
        "tpch_extraction_microseconds_per_query".to_string(),
        serde_json::to_value(&per_query)?,
    );
    let ratios = vec![
        Ratio::of(&measurements, "tpch_lineage", "tpch_planning", Some(0.25))?,
        Ratio::of(&measurements, "wide_lineage", "wide_planning", Some(0.25))?,
    ];
    Ok(SuiteReport {
        suite: "lineage".to_string(),
        setup,
        measurements,
        ratios,
        notes: vec![
            "Extraction reads the unoptimized plan (the one stored lineage comes from); the \
             baseline is the planning every run already does for the same SQL. The target \
             (at most a quarter of planning time) keeps lineage a negligible share of a job, \
             whose execution takes far longer than its planning."
                .to_string(),
        ],
    })
}

async fn plan(ctx: &SessionContext, sql: &str) -> anyhow::Result<LogicalPlan> {
    Ok(ctx
        .sql(sql)
        .await
        .with_context(|| format!("cannot plan {sql:.80}"))?
        .into_unoptimized_plan())
}

async fn tpch_session(dir: &Path) -> anyhow::Result<SessionContext> {
    let ctx = SessionContext::new();
    let ddl = std::fs::read_to_string(dir.join("schema.sql")).context("TPC-H schema")?;
    for statement in ddl.split(';').filter(|s| s.contains("CREATE")) {
        ctx.sql(statement).await.context("TPC-H schema")?;
    }
    Ok(ctx)
}

/// The 22 query texts; q15's view is inlined as a derived table (it is a CREATE VIEW, a
/// SELECT and a DROP VIEW).
fn tpch_queries(dir: &Path) -> anyhow::Result<Vec<String>> {
    (1..=22)
        .map(|n| {
            let path = dir.join(format!("queries/q{n}.sql"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n != 15 {
                return Ok(text);
            }
            let statements: Vec<&str> = text.split(';').map(str::trim).collect();
            let (view, select) = match statements.as_slice() {
                [view, select, ..] => (*view, *select),
                _ => anyhow::bail!("q15 is not CREATE VIEW; SELECT; DROP VIEW"),
            };
            let body = view
                .split_once(" as")
                .map(|(_, body)| body)
                .context("q15's view has no AS")?;
            Ok(select.replace(
                "revenue0",
                &format!("(SELECT * FROM ({body}) AS v(supplier_no, total_revenue)) AS revenue0"),
            ))
        })
        .collect()
}

async fn wide_session(width: usize) -> anyhow::Result<SessionContext> {
    let ctx = SessionContext::new();
    let columns: Vec<String> = (0..width).map(|i| format!("c{i} BIGINT")).collect();
    ctx.sql(&format!("CREATE TABLE wide ({})", columns.join(", ")))
        .await
        .context("wide table")?;
    Ok(ctx)
}

fn wide_projection(width: usize) -> String {
    let select: Vec<String> = (0..width)
        .map(|i| format!("c{i} * 2 + c{} AS o{i}", (i + 1) % width))
        .collect();
    format!("SELECT {} FROM wide WHERE c0 > 0", select.join(", "))
}
