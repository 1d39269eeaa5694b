//! Turning a resolved job into DataFusion logical plans.
//!
//! Steps become views registered in the session's catalog, so products (and later steps) can
//! refer to them by name; products become logical plans checked against what a Delta table can
//! hold. Nothing here reads data: DataFusion plans against the sources' schemas only.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use crate::check_spec::CheckSpec;
use crate::checks::{CheckPlacement, CheckedDataset, compile_checks};
use crate::error::PlannerError;
use crate::spec::{DatasetKind, ResolvedJob, ResolvedStatement, StatementKind};

/// The logical plans of a job.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// Each step's plan, in spec order (already registered as views).
    pub steps: Vec<NamedPlan>,
    /// Each product's plan, in spec order.
    pub products: Vec<NamedPlan>,
    /// Sources and steps with checks, in the order they are planned (sources first). Their
    /// registered views already leave out rows a drop or quarantine check removes.
    pub checked_inputs: Vec<CheckedDataset>,
}

/// A step's or product's logical plan.
#[derive(Debug, Clone)]
pub struct NamedPlan {
    /// The step or product name.
    pub name: String,
    /// The SQL it was planned from.
    pub sql: String,
    /// The unoptimized logical plan.
    pub plan: LogicalPlan,
    /// For a product with checks: its plan with the check columns appended.
    pub checks: Option<CheckedDataset>,
}

/// Plans every step (registering it as a view in `ctx`) and every product of `job`.
///
/// The sources must already be registered in `ctx` under their names. `placement` says where
/// the checked plans' partitions will be consumed.
pub async fn plan_job(
    ctx: &SessionContext,
    job: &ResolvedJob,
    placement: CheckPlacement,
) -> Result<JobPlan, PlannerError> {
    let mut checked_inputs = Vec::new();
    for name in job.spec.sources.keys() {
        let checks: Vec<&CheckSpec> = job.checks_on(name).collect();
        if checks.is_empty() {
            continue;
        }
        let plan = ctx
            .table(name.as_str())
            .await
            .map_err(|e| PlannerError::InvalidSpec(format!("source '{name}': {e}")))?
            .into_unoptimized_plan();
        let checked = compile_checks(
            ctx,
            name,
            DatasetKind::Source,
            plan,
            &checks,
            job.key_of(name),
            placement,
        )
        .await?;
        if checked.filters_rows() {
            // Downstream statements read the source without the rows its checks remove.
            let filtered = checked.filtered_plan()?;
            ctx.deregister_table(name.as_str())
                .and_then(|_| {
                    ctx.register_table(name.as_str(), Arc::new(ViewTable::new(filtered, None)))
                })
                .map_err(|e| PlannerError::InvalidSpec(format!("source '{name}': {e}")))?;
        }
        checked_inputs.push(checked);
    }

    let mut steps = Vec::with_capacity(job.steps.len());
    for step in &job.steps {
        let plan = plan_statement(ctx, StatementKind::Step, step).await?;
        let checks: Vec<&CheckSpec> = job.checks_on(&step.name).collect();
        let mut visible = plan.clone();
        if !checks.is_empty() {
            let checked = compile_checks(
                ctx,
                &step.name,
                DatasetKind::Step,
                plan.clone(),
                &checks,
                job.key_of(&step.name),
                placement,
            )
            .await?;
            if checked.filters_rows() {
                visible = checked.filtered_plan()?;
            }
            checked_inputs.push(checked);
        }
        let view = ViewTable::new(visible, Some(step.sql.clone()));
        ctx.register_table(step.name.as_str(), Arc::new(view))
            .map_err(|e| sql_error(StatementKind::Step, &step.name, &step.sql, &e))?;
        steps.push(NamedPlan {
            name: step.name.clone(),
            sql: step.sql.clone(),
            plan,
            checks: None,
        });
    }
    let mut products = Vec::with_capacity(job.products.len());
    for product in &job.products {
        let plan = plan_statement(ctx, StatementKind::Product, product).await?;
        let partition_by = job
            .product(&product.name)
            .map(|p| p.partition_by.as_slice())
            .unwrap_or_default();
        check_product_schema(&product.name, &plan, partition_by)?;
        let checks_on: Vec<&CheckSpec> = job.checks_on(&product.name).collect();
        let checks = if checks_on.is_empty() {
            None
        } else {
            Some(
                compile_checks(
                    ctx,
                    &product.name,
                    DatasetKind::Product,
                    plan.clone(),
                    &checks_on,
                    job.key_of(&product.name),
                    placement,
                )
                .await?,
            )
        };
        products.push(NamedPlan {
            name: product.name.clone(),
            sql: product.sql.clone(),
            plan,
            checks,
        });
    }
    Ok(JobPlan {
        steps,
        products,
        checked_inputs,
    })
}

/// Plans one SQL statement, which must be a single query.
pub async fn plan_statement(
    ctx: &SessionContext,
    kind: StatementKind,
    statement: &ResolvedStatement,
) -> Result<LogicalPlan, PlannerError> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let parsed = state
        .sql_to_statement(&statement.sql, &dialect)
        .map_err(|e| sql_error(kind, &statement.name, &statement.sql, &e))?;
    let is_query =
        matches!(&parsed, DfStatement::Statement(s) if matches!(**s, SqlStatement::Query(_)));
    if !is_query {
        return Err(PlannerError::Sql {
            kind,
            name: statement.name.clone(),
            message: "only a query (SELECT, WITH, VALUES) is allowed here; \
                      Lakeforge itself writes the results"
                .to_string(),
        });
    }
    state
        .statement_to_plan(parsed)
        .await
        .map_err(|e| sql_error(kind, &statement.name, &statement.sql, &e))
}

/// Wraps a DataFusion error with the statement's name and, when DataFusion knows it, the
/// line and column in the statement's SQL.
fn sql_error(kind: StatementKind, name: &str, sql: &str, error: &DataFusionError) -> PlannerError {
    let mut message = error.strip_backtrace();
    if let Some(span) = error.diagnostic().and_then(|d| d.span)
        && span.start.line > 0
    {
        let line = sql
            .lines()
            .nth(usize::try_from(span.start.line - 1).unwrap_or(usize::MAX))
            .unwrap_or_default();
        message = format!(
            "{message} (at line {}, column {}: `{}`)",
            span.start.line,
            span.start.column,
            line.trim()
        );
    }
    PlannerError::Sql {
        kind,
        name: name.to_string(),
        message,
    }
}

/// Characters Delta tables without column mapping do not allow in column names.
const DELTA_FORBIDDEN_NAME_CHARS: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// A product's output columns must have unique names that Delta accepts, and must include
/// its partition columns.
fn check_product_schema(
    product: &str,
    plan: &LogicalPlan,
    partition_by: &[String],
) -> Result<(), PlannerError> {
    let invalid = |message: String| PlannerError::InvalidProduct {
        product: product.to_string(),
        message,
    };
    let mut names = BTreeSet::new();
    for field in plan.schema().fields() {
        let name = field.name();
        if name.contains(DELTA_FORBIDDEN_NAME_CHARS) || name.is_empty() {
            return Err(invalid(format!(
                "output column {name:?} is not a valid Delta column name (no spaces or any of \
                 ,;{{}}()=); give it an alias, e.g. `{name} AS my_column`"
            )));
        }
        if !names.insert(name.to_lowercase()) {
            return Err(invalid(format!(
                "output column '{name}' appears more than once; alias the duplicates"
            )));
        }
    }
    for column in partition_by {
        if !plan.schema().fields().iter().any(|f| f.name() == column) {
            return Err(invalid(format!(
                "partition column '{column}' is not an output column (columns: {})",
                plan.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}
