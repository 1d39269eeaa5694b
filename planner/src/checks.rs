//! Compiling a dataset's `[[checks]]` into ONE plan.
//!
//! The plan is the dataset's own plan with extra columns appended: one nullable boolean per
//! row-level check (its predicate) and one helper column per dataset-level check that needs an
//! input (a column cast to `Float64`, a timestamp as epoch microseconds, a category as text).
//! The engine streams that plan once: it splits the dataset's columns (published, dropped or
//! quarantined per row) from the check columns (counted, sampled, aggregated). However many
//! checks there are, the dataset's plan runs once. `unique` on a dataset that is a plain scan
//! (of a source, or a product/step that only filters and projects one) adds a grouped aggregate
//! over the key columns alone, which the dataset probes; on any other plan (joins, aggregates,
//! ...) it adds a window over the key set instead, so the costly plan is not evaluated twice.
//! `referential` adds a join with the reference's distinct values.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, DFSchemaRef, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::utils::find_aggregate_exprs;
use datafusion::logical_expr::{Expr, ExprSchemable, JoinType, LogicalPlan, cast, col, lit, when};
use datafusion::prelude::SessionContext;

use crate::check_spec::{
    AnomalyMetric, CheckAction, CheckKind, CheckSpec, DEFAULT_SAMPLES, DriftMethod, NullPolicy,
    parse_duration, toml_number,
};
use crate::error::PlannerError;
use crate::spec::DatasetKind;

/// Prefix of the columns a checked plan appends to its dataset's columns.
pub const CHECK_COLUMN_PREFIX: &str = "__lakeforge_check_";

/// Columns a quarantine table adds in front of the dataset's columns.
pub const QUARANTINE_COLUMNS: [&str; 2] = ["failed_checks", "run_id"];

/// Default numeric histogram bins of a drift check.
pub const DEFAULT_DRIFT_BINS: usize = 20;

/// A dataset with its checks compiled into one plan.
#[derive(Debug, Clone)]
pub struct CheckedDataset {
    /// The source, step or product.
    pub dataset: String,
    /// Which of the three it is.
    pub dataset_kind: DatasetKind,
    /// The dataset's columns followed by the check columns.
    pub plan: LogicalPlan,
    /// How many leading columns of `plan` are the dataset's own.
    pub dataset_columns: usize,
    /// The checks, in spec order.
    pub checks: Vec<CompiledCheck>,
    /// Indices of the dataset's key columns.
    pub key_columns: Vec<usize>,
}

/// One check, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledCheck {
    /// Its name (unique on its dataset).
    pub name: String,
    /// Its kind.
    pub kind: CheckKind,
    /// What failing does.
    pub action: CheckAction,
    /// Passing fraction required (row-level kinds).
    pub mostly: f64,
    /// How NULL predicates count (row-level kinds).
    pub nulls: NullPolicy,
    /// Failing rows to keep as samples.
    pub samples: usize,
    /// What is checked, in SQL-like text, for reports.
    pub description: String,
    /// How it is evaluated.
    pub evaluation: Evaluation,
}

/// How a check is evaluated over the checked plan's columns.
#[derive(Debug, Clone)]
pub enum Evaluation {
    /// `unique` evaluated in the pass itself: the engine collects every row's key (the
    /// dataset columns `columns`, which are also the sample columns) and finds the duplicated
    /// ones when the partitions are merged. Only for checks that keep every row (warn, fail) in
    /// a run whose partitions all end in one process (see [`CheckPlacement`]).
    UniqueKeys {
        /// The key columns (dataset columns, ascending).
        columns: Vec<usize>,
    },
    /// A boolean predicate per row.
    Row {
        /// The predicate's column in the checked plan.
        predicate: usize,
        /// Dataset columns shown with a failing row (keys, then the columns the check reads).
        sample_columns: Vec<usize>,
    },
    /// The number of rows within bounds.
    RowCount {
        /// Inclusive lower bound.
        min: Option<u64>,
        /// Inclusive upper bound.
        max: Option<u64>,
    },
    /// A statistic of a column within bounds.
    Statistic {
        /// Which statistic.
        statistic: Statistic,
        /// Its input column in the checked plan.
        input: usize,
        /// Inclusive lower bound.
        min: Option<f64>,
        /// Inclusive upper bound.
        max: Option<f64>,
    },
    /// The newest timestamp is recent enough.
    Freshness {
        /// The input column (epoch microseconds, `Int64`).
        input: usize,
        /// Largest allowed age at the run's start.
        max_age: Duration,
    },
    /// Required columns and types, evaluated when planning.
    Schema {
        /// What is missing or mistyped; empty when the check passes.
        problems: Vec<String>,
    },
    /// The column's distribution compared with a reference.
    Drift {
        /// The dataset column compared.
        column: String,
        /// The reference's column it is compared with.
        reference_column: String,
        /// The input column: `Float64` for numeric columns, `Utf8` for categorical ones.
        input: usize,
        /// Whether the column is treated as categorical.
        categorical: bool,
        /// The method; `None` picks one from the column type and sample size.
        method: Option<DriftMethod>,
        /// The threshold; `None` is the method's default.
        threshold: Option<f64>,
        /// Numeric histogram bins.
        bins: usize,
        /// What to compare with.
        reference: DriftReference,
    },
    /// A metric compared with its own history.
    Anomaly {
        /// The metric.
        metric: AnomalyMetric,
        /// Its input column (absent for row_count).
        input: Option<usize>,
        /// Largest allowed relative change from the history's mean.
        max_change: f64,
        /// How many previous results count.
        window: usize,
        /// Results needed before the check can fail.
        min_history: usize,
    },
}

/// Column statistics dataset-level checks bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// Arithmetic mean of non-null values.
    Mean,
    /// Sample standard deviation of non-null values.
    Stddev,
    /// Smallest non-null value.
    Min,
    /// Largest non-null value.
    Max,
    /// Approximate quantile (t-digest) of non-null values.
    Quantile(f64),
    /// Fraction of rows where the column is NULL.
    NullFraction,
}

/// What a drift check compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum DriftReference {
    /// The product's latest committed version before this run.
    PreviousVersion,
    /// A pinned version of the product.
    Version(u64),
    /// Another source or step of the job.
    Dataset(String),
}

impl CheckedDataset {
    /// Whether any check removes rows (drop or quarantine).
    pub fn filters_rows(&self) -> bool {
        self.checks
            .iter()
            .any(|c| matches!(c.action, CheckAction::Drop | CheckAction::Quarantine))
    }

    /// Whether any check quarantines rows.
    pub fn quarantines_rows(&self) -> bool {
        self.checks
            .iter()
            .any(|c| c.action == CheckAction::Quarantine)
    }

    /// The dataset as downstream statements see it: rows failing a drop or quarantine check
    /// removed, check columns removed.
    pub fn filtered_plan(&self) -> Result<LogicalPlan, PlannerError> {
        let schema = self.plan.schema();
        let mut keep: Option<Expr> = None;
        for check in &self.checks {
            let (CheckAction::Drop | CheckAction::Quarantine, Evaluation::Row { predicate, .. }) =
                (check.action, &check.evaluation)
            else {
                continue;
            };
            let (qualifier, field) = schema.qualified_field(*predicate);
            let passes = datafusion::functions::expr_fn::coalesce(vec![
                col(Column::from((qualifier, field))),
                lit(check.nulls == NullPolicy::Pass),
            ]);
            keep = Some(match keep {
                None => passes,
                Some(previous) => previous.and(passes),
            });
        }
        let columns = dataset_column_exprs(schema, self.dataset_columns);
        let mut builder = datafusion::logical_expr::LogicalPlanBuilder::from(self.plan.clone());
        if let Some(keep) = keep {
            builder = builder.filter(keep).map_err(|e| self.error(&e))?;
        }
        builder
            .project(columns)
            .and_then(|b| b.build())
            .map_err(|e| self.error(&e))
    }

    fn error(&self, error: &datafusion::error::DataFusionError) -> PlannerError {
        PlannerError::InvalidSpec(format!(
            "cannot apply the checks of '{}': {}",
            self.dataset,
            error.strip_backtrace()
        ))
    }
}

/// Where the checked plan's partitions end, which decides how `unique` is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckPlacement {
    /// Every partition is consumed in this process (embedded runs): a `unique` check that
    /// keeps every row collects the keys in the pass ([`Evaluation::UniqueKeys`]) instead of
    /// planning a second, grouped aggregate over the key.
    #[default]
    InProcess,
    /// Partitions are consumed by cluster workers, whose check states travel to the client:
    /// `unique` is planned as a grouped aggregate (or a window), so no state grows with the
    /// number of rows.
    Distributed,
}

/// Compiles `checks` on a dataset whose plan is `plan` into one [`CheckedDataset`].
///
/// Every problem a check has on this dataset (unknown column, wrong type, a predicate that is
/// not boolean or not row-level) is an error naming the check, found before any data is read.
pub async fn compile_checks(
    ctx: &SessionContext,
    dataset: &str,
    dataset_kind: DatasetKind,
    plan: LogicalPlan,
    checks: &[&CheckSpec],
    key: &[String],
    placement: CheckPlacement,
) -> Result<CheckedDataset, PlannerError> {
    let schema = plan.schema().clone();
    let dataset_columns = schema.fields().len();
    let key_columns = key_column_indices(dataset, &schema, key)?;
    let mut compilation = CheckCompilation {
        ctx,
        dataset,
        schema,
        dataset_columns,
        dataset_plan: plan.clone(),
        key_columns,
        placement,
        frame: DataFrame::new(ctx.state(), plan),
        extra: Vec::new(),
    };
    let mut compiled = Vec::with_capacity(checks.len());
    for (ordinal, spec) in checks.iter().enumerate() {
        compiled.push(compilation.compile_check(ordinal, spec).await?);
    }
    compilation.finish(dataset_kind, compiled)
}

/// The indices of the dataset's key columns, in `key` order.
fn key_column_indices(
    dataset: &str,
    schema: &DFSchema,
    key: &[String],
) -> Result<Vec<usize>, PlannerError> {
    let mut key_columns = Vec::with_capacity(key.len());
    for name in key {
        let index = column_position(schema, name).ok_or_else(|| {
            PlannerError::InvalidSpec(format!(
                "key column '{name}' of '{dataset}' is not one of its columns ({})",
                column_list(schema)
            ))
        })?;
        key_columns.push(index);
    }
    Ok(key_columns)
}

/// The index of the first column of `schema` named `name`, whatever its qualifier.
fn column_position(schema: &DFSchema, name: &str) -> Option<usize> {
    schema.fields().iter().position(|f| f.name() == name)
}

/// The state of compiling one dataset's checks, shared by the per-kind compilers so each
/// takes the check alone rather than the dataset's plan, schema, keys and placement.
struct CheckCompilation<'a> {
    ctx: &'a SessionContext,
    /// The dataset's name, for errors.
    dataset: &'a str,
    /// The dataset plan's schema, which checks name their columns in.
    schema: DFSchemaRef,
    /// How many columns the dataset has (the check columns follow them).
    dataset_columns: usize,
    /// The dataset's plan as given, without the joins checks add (what a grouped `unique`
    /// re-reads).
    dataset_plan: LogicalPlan,
    /// Indices of the dataset's key columns.
    key_columns: Vec<usize>,
    placement: CheckPlacement,
    /// The dataset with the joins of the checks compiled so far.
    frame: DataFrame,
    /// Check columns, in the order they are appended after the dataset's columns.
    extra: Vec<Expr>,
}

/// The check being compiled, as its per-kind compiler sees it.
struct CheckTarget<'s> {
    spec: &'s CheckSpec,
    /// Its effective name, for errors.
    name: String,
    kind: CheckKind,
    /// Its position among the dataset's checks, which names its helper columns and joins.
    ordinal: usize,
}

/// A compiled check's description (for reports) and how it is evaluated.
type KindCompiled = (String, Evaluation);

impl CheckCompilation<'_> {
    /// Compiles one check, appending the column and join it needs.
    async fn compile_check(
        &mut self,
        ordinal: usize,
        spec: &CheckSpec,
    ) -> Result<CompiledCheck, PlannerError> {
        let name = spec.effective_name()?;
        let kind = spec.effective_kind()?;
        let check = CheckTarget {
            spec,
            name,
            kind,
            ordinal,
        };
        let (description, evaluation) = match kind {
            CheckKind::Referential => self.compile_referential(&check).await?,
            CheckKind::Unique => self.compile_unique(&check)?,
            kind if kind.is_row_level() => self.compile_row_predicate(&check)?,
            CheckKind::RowCount => compile_row_count(spec),
            CheckKind::Mean
            | CheckKind::Stddev
            | CheckKind::Min
            | CheckKind::Max
            | CheckKind::Quantile => self.compile_statistic(&check)?,
            CheckKind::Freshness => self.compile_freshness(&check)?,
            CheckKind::Schema => self.compile_schema(spec),
            CheckKind::Drift => self.compile_drift(&check)?,
            CheckKind::Anomaly => self.compile_anomaly(&check)?,
            // Every row-level kind is handled above.
            _ => (
                String::new(),
                Evaluation::Schema {
                    problems: Vec::new(),
                },
            ),
        };
        Ok(CompiledCheck {
            name: check.name,
            kind,
            action: spec.action,
            mostly: spec.effective_mostly(),
            nulls: spec.nulls.unwrap_or_default(),
            samples: spec.samples.unwrap_or(DEFAULT_SAMPLES),
            description,
            evaluation,
        })
    }

    /// An error naming `check` on this dataset.
    fn invalid(&self, check: &CheckTarget<'_>, message: String) -> PlannerError {
        PlannerError::InvalidCheck {
            check: check.name.clone(),
            dataset: self.dataset.to_string(),
            message,
        }
    }

    /// The index and type of the dataset's column `column`, which `check` reads.
    fn field_of(
        &self,
        check: &CheckTarget<'_>,
        column: &str,
    ) -> Result<(usize, DataType), PlannerError> {
        let index = column_position(&self.schema, column).ok_or_else(|| {
            self.invalid(
                check,
                format!(
                    "column '{column}' does not exist (columns: {})",
                    column_list(&self.schema)
                ),
            )
        })?;
        Ok((index, self.schema.field(index).data_type().clone()))
    }

    /// Appends `expr` as `check`'s column; returns its index in the checked plan.
    fn append(&mut self, check: &CheckTarget<'_>, expr: Expr) -> usize {
        let index = self.dataset_columns + self.extra.len();
        self.extra
            .push(expr.alias(format!("{CHECK_COLUMN_PREFIX}{}", check.ordinal)));
        index
    }

    /// Right-joins `build` with the dataset on `on`: `build` is the join's left (build) side,
    /// so the dataset streams through as the probe side instead of being collected into a
    /// hash table.
    fn probe_with(
        &mut self,
        check: &CheckTarget<'_>,
        build: DataFrame,
        on: Vec<Expr>,
    ) -> Result<(), PlannerError> {
        // `join_on` takes the dataset's frame by value; the clone is replaced right after.
        self.frame = build
            .join_on(self.frame.clone(), JoinType::Right, on)
            .map_err(|e| self.invalid(check, e.strip_backtrace()))?;
        Ok(())
    }

    /// `referential`: a join with the reference's distinct values; a row passes when its
    /// value has a match (NULL values are skipped).
    async fn compile_referential(
        &mut self,
        check: &CheckTarget<'_>,
    ) -> Result<KindCompiled, PlannerError> {
        let spec = check.spec;
        let column = spec.column.as_deref().unwrap_or_default();
        let (index, data_type) = self.field_of(check, column)?;
        let reference = spec.reference.as_deref().unwrap_or_default();
        let reference_column = spec.reference_column.as_deref().unwrap_or(column);
        let reference_alias = format!("__lakeforge_reference_{}", check.ordinal);
        let reference_frame = self
            .ctx
            .table(reference)
            .await
            .and_then(|t| {
                t.select(vec![
                    cast(col(ident(reference_column)), data_type.clone()).alias(&reference_alias),
                ])
            })
            .and_then(|t| t.distinct())
            .and_then(|t| t.alias(&reference_alias))
            .map_err(|e| {
                self.invalid(
                    check,
                    format!(
                        "cannot read {reference}.{reference_column}: {}",
                        e.strip_backtrace()
                    ),
                )
            })?;
        let (qualifier, field) = self.schema.qualified_field(index);
        let dataset_column = col(Column::from((qualifier, field)));
        let reference_value = col(Column::new(
            Some(reference_alias.as_str()),
            &reference_alias,
        ));
        self.probe_with(
            check,
            reference_frame,
            vec![reference_value.clone().eq(dataset_column.clone())],
        )?;
        let description = format!("{column} IN (SELECT {reference_column} FROM {reference})");
        let passes = when(dataset_column.is_null(), lit(ScalarValue::Boolean(None)))
            .otherwise(reference_value.is_not_null())
            .map_err(|e| self.invalid(check, e.strip_backtrace()))?;
        let predicate = self.append(check, passes);
        let sample_columns = union_columns(&self.key_columns, &[index]);
        Ok((
            description,
            Evaluation::Row {
                predicate,
                sample_columns,
            },
        ))
    }

    /// `unique`: from keys collected in the pass where it can be, else by probing a grouped
    /// aggregate of the keys where the dataset is cheap to read again, else by a window.
    fn compile_unique(&mut self, check: &CheckTarget<'_>) -> Result<KindCompiled, PlannerError> {
        if let Some(columns) = self.unique_keys(check)? {
            return Ok((
                unique_description(check.spec),
                Evaluation::UniqueKeys { columns },
            ));
        }
        if cheap_to_recompute(&self.dataset_plan) {
            return self.compile_unique_aggregate(check);
        }
        self.compile_row_predicate(check)
    }

    /// The key columns (ascending) a `unique` check is evaluated from in the pass, or `None`
    /// when it cannot be.
    ///
    /// A `unique` check that keeps every row, in a run whose partitions end here, is
    /// evaluated from keys collected in the pass, when its sample columns (the dataset's key
    /// columns and its own) are its own columns, so the collected keys can show the failing
    /// rows.
    fn unique_keys(&self, check: &CheckTarget<'_>) -> Result<Option<Vec<usize>>, PlannerError> {
        let spec = check.spec;
        if self.placement != CheckPlacement::InProcess
            || !matches!(spec.action, CheckAction::Warn | CheckAction::Fail)
        {
            return Ok(None);
        }
        let mut columns = Vec::new();
        for column in spec.column.iter().chain(&spec.columns) {
            columns.push(self.field_of(check, column)?.0);
        }
        columns.sort_unstable();
        columns.dedup();
        let mut samples = union_columns(&self.key_columns, &columns);
        samples.sort_unstable();
        Ok((samples == columns).then_some(columns))
    }

    /// `unique` on a dataset that is cheap to read again: a grouped aggregate over the key
    /// columns alone (the dataset is a plain scan, so this re-reads only those columns) finds
    /// the duplicated keys; the dataset then probes that small set. Cheaper than the window
    /// of [`Self::compile_row_predicate`], which sorts every column of the dataset by the key.
    fn compile_unique_aggregate(
        &mut self,
        check: &CheckTarget<'_>,
    ) -> Result<KindCompiled, PlannerError> {
        let spec = check.spec;
        let columns: Vec<&String> = spec.column.iter().chain(&spec.columns).collect();
        let mut indices = Vec::with_capacity(columns.len());
        for column in &columns {
            indices.push(self.field_of(check, column)?.0);
        }
        let duplicates_alias = format!("__lakeforge_duplicates_{}", check.ordinal);
        let flag = format!("{duplicates_alias}_flag");
        let key_names: Vec<String> = (0..indices.len())
            .map(|i| format!("{duplicates_alias}_key{i}"))
            .collect();
        let dataset_keys: Vec<Expr> = indices
            .iter()
            .map(|&i| col(Column::from(self.schema.qualified_field(i))))
            .collect();
        let duplicates = DataFrame::new(self.ctx.state(), without_sorts(self.dataset_plan.clone()))
            .aggregate(
                dataset_keys
                    .iter()
                    .zip(&key_names)
                    .map(|(key, name)| key.clone().alias(name))
                    .collect(),
                vec![count(lit(1)).alias(&flag)],
            )
            .and_then(|t| t.filter(col(Column::from_name(&flag)).gt(lit(1_i64))))
            .and_then(|t| {
                t.select(
                    key_names
                        .iter()
                        .map(|name| col(Column::from_name(name)))
                        .chain([lit(true).alias(&flag)])
                        .collect::<Vec<_>>(),
                )
            })
            .and_then(|t| t.alias(&duplicates_alias))
            .map_err(|e| self.invalid(check, e.strip_backtrace()))?;
        let qualified = |name: &str| col(Column::new(Some(duplicates_alias.as_str()), name));
        let on: Vec<Expr> = dataset_keys
            .iter()
            .zip(&key_names)
            .map(|(key, name)| qualified(name).eq(key.clone()))
            .collect();
        self.probe_with(check, duplicates, on)?;
        let any_null_key = dataset_keys
            .iter()
            .map(|key| key.clone().is_null())
            .reduce(Expr::or)
            .unwrap_or_else(|| lit(false));
        let description = unique_description(spec);
        let passes = when(any_null_key, lit(ScalarValue::Boolean(None)))
            .otherwise(qualified(&flag).is_null())
            .map_err(|e| self.invalid(check, e.strip_backtrace()))?;
        let predicate = self.append(check, passes);
        indices.sort_unstable();
        Ok((
            description,
            Evaluation::Row {
                predicate,
                sample_columns: union_columns(&self.key_columns, &indices),
            },
        ))
    }

    /// A row-level check evaluated as a SQL predicate per row (for `unique`, a window).
    fn compile_row_predicate(
        &mut self,
        check: &CheckTarget<'_>,
    ) -> Result<KindCompiled, PlannerError> {
        let (spec, kind) = (check.spec, check.kind);
        let sql = row_predicate_sql(spec, kind).map_err(|m| self.invalid(check, m))?;
        let expr = self
            .ctx
            .parse_sql_expr(&sql, &self.schema)
            .map_err(|e| self.invalid(check, format!("{} (in `{sql}`)", e.strip_backtrace())))?;
        check_row_predicate(&expr, &self.schema)
            .map_err(|m| self.invalid(check, format!("{m} (in `{sql}`)")))?;
        let mut referenced = Vec::new();
        for column in expr.column_refs() {
            if let Some(index) = column_position(&self.schema, &column.name) {
                referenced.push(index);
            }
        }
        referenced.sort_unstable();
        let description = if kind == CheckKind::Unique {
            unique_description(spec)
        } else {
            sql
        };
        let predicate = self.append(check, expr);
        Ok((
            description,
            Evaluation::Row {
                predicate,
                sample_columns: union_columns(&self.key_columns, &referenced),
            },
        ))
    }

    /// `mean`, `stddev`, `min`, `max`, `quantile`: a bounded statistic of a numeric column,
    /// aggregated from its `Float64` helper column.
    fn compile_statistic(&mut self, check: &CheckTarget<'_>) -> Result<KindCompiled, PlannerError> {
        let (spec, kind) = (check.spec, check.kind);
        let column = spec.column.as_deref().unwrap_or_default();
        let (index, data_type) = self.field_of(check, column)?;
        if !data_type.is_numeric() {
            return Err(self.invalid(
                check,
                format!(
                    "column '{column}' is {data_type}; a `{kind}` check needs a numeric column"
                ),
            ));
        }
        let statistic = match kind {
            CheckKind::Mean => Statistic::Mean,
            CheckKind::Stddev => Statistic::Stddev,
            CheckKind::Min => Statistic::Min,
            CheckKind::Max => Statistic::Max,
            _ => Statistic::Quantile(spec.quantile.unwrap_or(0.5)),
        };
        let (min, max) = (
            spec.min.as_ref().and_then(toml_number),
            spec.max.as_ref().and_then(toml_number),
        );
        let function = match statistic {
            Statistic::Quantile(q) => format!("quantile({column}, {q})"),
            _ => format!("{kind}({column})"),
        };
        let description = bounds_text(&function, min, max);
        let input = self.append(check, float_input(&self.schema, index));
        Ok((
            description,
            Evaluation::Statistic {
                statistic,
                input,
                min,
                max,
            },
        ))
    }

    /// `freshness`: the newest value of a timestamp or date column, as epoch microseconds.
    fn compile_freshness(&mut self, check: &CheckTarget<'_>) -> Result<KindCompiled, PlannerError> {
        let spec = check.spec;
        let column = spec.column.as_deref().unwrap_or_default();
        let (index, data_type) = self.field_of(check, column)?;
        let max_age_text = spec.max_age.as_deref().unwrap_or_default();
        let max_age = parse_duration(max_age_text).map_err(|m| self.invalid(check, m))?;
        let (qualifier, field) = self.schema.qualified_field(index);
        let value = col(Column::from((qualifier, field)));
        let micros = match &data_type {
            DataType::Timestamp(_, Some(_)) => cast(
                cast(
                    value,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                ),
                DataType::Int64,
            ),
            DataType::Timestamp(_, None) | DataType::Date32 | DataType::Date64 => cast(
                cast(value, DataType::Timestamp(TimeUnit::Microsecond, None)),
                DataType::Int64,
            ),
            other => {
                return Err(self.invalid(
                    check,
                    format!("column '{column}' is {other}; freshness needs a timestamp or date"),
                ));
            }
        };
        let description = format!("now() - max({column}) <= {max_age_text}");
        let input = self.append(check, micros);
        Ok((description, Evaluation::Freshness { input, max_age }))
    }

    /// `schema`: the required columns and types, compared with the dataset's when planning.
    fn compile_schema(&self, spec: &CheckSpec) -> KindCompiled {
        let mut problems = Vec::new();
        let mut required: Vec<(String, Option<String>)> =
            spec.columns.iter().map(|c| (c.clone(), None)).collect();
        required.extend(spec.types.iter().map(|(c, t)| (c.clone(), Some(t.clone()))));
        for (column, expected) in &required {
            match column_position(&self.schema, column) {
                None => problems.push(format!("column '{column}' is missing")),
                Some(index) => {
                    let actual = self.schema.field(index).data_type();
                    if let Some(expected) = expected
                        && !type_matches(expected, actual)
                    {
                        problems.push(format!(
                            "column '{column}' is {actual}, expected {expected}"
                        ));
                    }
                }
            }
        }
        let description = required
            .iter()
            .map(|(c, t)| match t {
                Some(t) => format!("{c} {t}"),
                None => c.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        (description, Evaluation::Schema { problems })
    }

    /// `drift`: the column's values (as `Float64`, or as text when categorical), compared
    /// with the reference's distribution after the pass.
    fn compile_drift(&mut self, check: &CheckTarget<'_>) -> Result<KindCompiled, PlannerError> {
        let spec = check.spec;
        let column = spec.column.as_deref().unwrap_or_default();
        let (index, data_type) = self.field_of(check, column)?;
        let categorical = !data_type.is_numeric();
        if categorical && let Some(method) = spec.method.filter(|m| m.is_numeric_only()) {
            return Err(self.invalid(
                check,
                format!(
                    "method `{}` needs a numeric column; '{column}' is {data_type} (use psi, \
                     jensen_shannon or chi_squared)",
                    method.as_str()
                ),
            ));
        }
        if !categorical && spec.method == Some(DriftMethod::ChiSquared) {
            return Err(self.invalid(
                check,
                format!(
                    "method `chi_squared` applies to categorical columns; '{column}' is \
                     {data_type} (use psi, ks, jensen_shannon or wasserstein)"
                ),
            ));
        }
        let input = if categorical {
            let (qualifier, field) = self.schema.qualified_field(index);
            cast(col(Column::from((qualifier, field))), DataType::Utf8)
        } else {
            float_input(&self.schema, index)
        };
        let reference = match (spec.reference.as_deref(), spec.reference_version) {
            (_, Some(version)) => DriftReference::Version(version),
            (None | Some("previous"), None) => DriftReference::PreviousVersion,
            (Some(other), None) => DriftReference::Dataset(other.to_string()),
        };
        let description = format!(
            "distribution of {column} vs {}",
            match &reference {
                DriftReference::PreviousVersion => "the previous version".to_string(),
                DriftReference::Version(v) => format!("version {v}"),
                DriftReference::Dataset(d) => d.clone(),
            }
        );
        let input = self.append(check, input);
        Ok((
            description,
            Evaluation::Drift {
                column: column.to_string(),
                reference_column: spec
                    .reference_column
                    .clone()
                    .unwrap_or_else(|| column.to_string()),
                input,
                categorical,
                method: spec.method,
                threshold: spec.threshold,
                bins: spec.bins.unwrap_or(DEFAULT_DRIFT_BINS),
                reference,
            },
        ))
    }

    /// `anomaly`: a metric (with a `Float64` helper column for the numeric ones) compared
    /// with the check's own history after the pass.
    fn compile_anomaly(&mut self, check: &CheckTarget<'_>) -> Result<KindCompiled, PlannerError> {
        let spec = check.spec;
        let metric = spec.metric.unwrap_or(AnomalyMetric::RowCount);
        let input = match (metric, spec.column.as_deref()) {
            (AnomalyMetric::RowCount, _) | (_, None) => None,
            (AnomalyMetric::NullFraction, Some(column)) => Some(self.field_of(check, column)?.0),
            (_, Some(column)) => {
                let (index, data_type) = self.field_of(check, column)?;
                if !data_type.is_numeric() {
                    return Err(self.invalid(
                        check,
                        format!(
                            "column '{column}' is {data_type}; metric `{}` needs a numeric \
                             column",
                            metric.as_str()
                        ),
                    ));
                }
                Some(self.append(check, float_input(&self.schema, index)))
            }
        };
        let max_change = spec.max_change.unwrap_or(0.5);
        let description = format!(
            "{}{} within ±{}% of its recent mean",
            metric.as_str(),
            spec.column
                .as_deref()
                .map(|c| format!("({c})"))
                .unwrap_or_default(),
            max_change * 100.0
        );
        Ok((
            description,
            Evaluation::Anomaly {
                metric,
                input,
                max_change,
                window: spec.window.unwrap_or(5),
                min_history: spec.min_history.unwrap_or(3),
            },
        ))
    }

    /// Appends the check columns to the dataset's and runs the analyzer over the result, so
    /// the checks' type errors are reported before any data is read.
    fn finish(
        self,
        dataset_kind: DatasetKind,
        compiled: Vec<CompiledCheck>,
    ) -> Result<CheckedDataset, PlannerError> {
        let (ctx, dataset) = (self.ctx, self.dataset);
        if compiled.iter().any(|c| c.action == CheckAction::Quarantine)
            && let Some(clash) = QUARANTINE_COLUMNS
                .iter()
                .find(|name| column_position(&self.schema, name).is_some())
        {
            return Err(PlannerError::InvalidSpec(format!(
                "'{dataset}' has a column named '{clash}', which its quarantine table uses for \
                 itself; rename the column to quarantine rows"
            )));
        }

        let mut projection = dataset_column_exprs(&self.schema, self.dataset_columns);
        projection.extend(self.extra);
        let checked = self
            .frame
            .select(projection)
            .map_err(|e| {
                PlannerError::InvalidSpec(format!(
                    "cannot combine the checks of '{dataset}': {}",
                    e.strip_backtrace()
                ))
            })?
            .into_unoptimized_plan();
        // Type errors (e.g. comparing a number with text) surface in the analyzer; run it now
        // so they are reported before any data is read, naming the check when one alone is at
        // fault.
        analyze(ctx, &checked)
            .map_err(|message| analysis_error(ctx, dataset, &checked, &compiled, message))?;
        Ok(CheckedDataset {
            dataset: dataset.to_string(),
            dataset_kind,
            plan: checked,
            dataset_columns: self.dataset_columns,
            checks: compiled,
            key_columns: self.key_columns,
        })
    }
}

/// `row_count`: the number of rows within integer bounds.
fn compile_row_count(spec: &CheckSpec) -> KindCompiled {
    let bound = |v: &Option<toml::Value>| {
        v.as_ref()
            .and_then(toml::Value::as_integer)
            .and_then(|n| u64::try_from(n).ok())
    };
    let (min, max) = (bound(&spec.min), bound(&spec.max));
    let description = bounds_text("count(*)", min.map(|v| v as f64), max.map(|v| v as f64));
    (description, Evaluation::RowCount { min, max })
}

/// The error for a checked plan the analyzer refuses with `message`: naming the check whose
/// predicate alone fails to analyze, else the dataset's checks as a whole.
fn analysis_error(
    ctx: &SessionContext,
    dataset: &str,
    checked: &LogicalPlan,
    compiled: &[CompiledCheck],
    message: String,
) -> PlannerError {
    let culprit = compiled.iter().find(|c| {
        matches!(&c.evaluation, Evaluation::Row { predicate, .. } if {
            let single = checked.schema().qualified_field(*predicate);
            let expr = col(Column::from(single));
            DataFrame::new(ctx.state(), checked.clone())
                .select(vec![expr])
                .ok()
                .is_some_and(|f| analyze(ctx, f.logical_plan()).is_err())
        })
    });
    match culprit {
        Some(check) => PlannerError::InvalidCheck {
            check: check.name.clone(),
            dataset: dataset.to_string(),
            message: format!("{message} (in `{}`)", check.description),
        },
        None => {
            PlannerError::InvalidSpec(format!("the checks of '{dataset}' do not plan: {message}"))
        }
    }
}

/// The description of a `unique` check.
fn unique_description(spec: &CheckSpec) -> String {
    format!(
        "no other row has the same ({})",
        spec.column
            .iter()
            .chain(&spec.columns)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whether evaluating `plan` a second time (for the key columns of a `unique` check) is cheap
/// and gives the same rows: scans, filters, projections, unions and full sorts of
/// deterministic expressions. Joins, aggregates, windows, limits and anything else are
/// evaluated once, and their `unique` checks use a window instead.
fn cheap_to_recompute(plan: &LogicalPlan) -> bool {
    let costly_or_unstable = plan.exists(|node| {
        let allowed = match node {
            LogicalPlan::TableScan(scan) => scan.fetch.is_none(),
            LogicalPlan::Sort(sort) => sort.fetch.is_none(),
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::EmptyRelation(_)
            | LogicalPlan::Values(_) => true,
            _ => false,
        };
        Ok(!allowed || node.expressions().iter().any(Expr::is_volatile))
    });
    // `exists` fails only when its closure does, and ours never does.
    !costly_or_unstable.unwrap_or(true)
}

/// `plan` without its full sorts (order does not matter to an aggregate over it).
fn without_sorts(plan: LogicalPlan) -> LogicalPlan {
    let stripped = plan.clone().transform_up(|node| match node {
        LogicalPlan::Sort(sort) if sort.fetch.is_none() => {
            Ok(Transformed::yes(Arc::unwrap_or_clone(sort.input)))
        }
        other => Ok(Transformed::no(other)),
    });
    // `transform_up` fails only when its closure does, and ours never does.
    stripped.map(|t| t.data).unwrap_or(plan)
}

/// Runs the session's analyzer (type coercion and plan checks) over `plan`.
fn analyze(ctx: &SessionContext, plan: &LogicalPlan) -> Result<(), String> {
    let state = ctx.state();
    state
        .analyzer()
        .execute_and_check(plan.clone(), state.config_options(), |_, _| {})
        .map(|_| ())
        .map_err(|e| e.strip_backtrace())
}

/// The SQL text of a built-in row-level check's predicate (TRUE = pass, NULL = skipped).
fn row_predicate_sql(spec: &CheckSpec, kind: CheckKind) -> Result<String, String> {
    let column = || ident_sql(spec.column.as_deref().unwrap_or_default());
    let columns: Vec<String> = spec
        .column
        .iter()
        .chain(&spec.columns)
        .map(|c| ident_sql(c))
        .collect();
    Ok(match kind {
        CheckKind::Expect => spec.expect.clone().unwrap_or_default(),
        CheckKind::NotNull => columns
            .iter()
            .map(|c| format!("{c} IS NOT NULL"))
            .collect::<Vec<_>>()
            .join(" AND "),
        CheckKind::Unique => format!(
            "CASE WHEN {} THEN NULL ELSE count(1) OVER (PARTITION BY {}) = 1 END",
            columns
                .iter()
                .map(|c| format!("{c} IS NULL"))
                .collect::<Vec<_>>()
                .join(" OR "),
            columns.join(", ")
        ),
        CheckKind::InSet => format!(
            "{} IN ({})",
            column(),
            spec.values
                .iter()
                .map(literal_sql)
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        ),
        CheckKind::Between => match (&spec.min, &spec.max) {
            (Some(min), Some(max)) => format!(
                "{} BETWEEN {} AND {}",
                column(),
                literal_sql(min)?,
                literal_sql(max)?
            ),
            (Some(min), None) => format!("{} >= {}", column(), literal_sql(min)?),
            (None, Some(max)) => format!("{} <= {}", column(), literal_sql(max)?),
            (None, None) => return Err("a `between` check needs `min` or `max`".to_string()),
        },
        CheckKind::Regex => {
            let pattern = spec.pattern.as_deref().unwrap_or_default();
            regex::Regex::new(pattern)
                .map_err(|e| format!("`pattern` is not a valid regex: {e}"))?;
            format!(
                "regexp_like(CAST({} AS VARCHAR), {})",
                column(),
                literal_sql(&toml::Value::String(pattern.to_string()))?
            )
        }
        other => return Err(format!("`{other}` is not a row-level check")),
    })
}

/// A row-level predicate must be boolean and must not aggregate over rows.
fn check_row_predicate(expr: &Expr, schema: &DFSchema) -> Result<(), String> {
    if !find_aggregate_exprs([expr]).is_empty() {
        return Err(
            "an aggregate function is not a row-level predicate; use a dataset-level kind \
             (row_count, mean, stddev, min, max, quantile) or a window (OVER)"
                .to_string(),
        );
    }
    let data_type = expr.get_type(schema).map_err(|e| e.strip_backtrace())?;
    if !matches!(data_type, DataType::Boolean | DataType::Null) {
        return Err(format!(
            "the predicate is {data_type}, not a boolean (e.g. `age BETWEEN 18 AND 120`)"
        ));
    }
    Ok(())
}

/// `column` cast to `Float64`, for statistics.
fn float_input(schema: &DFSchema, index: usize) -> Expr {
    let (qualifier, field) = schema.qualified_field(index);
    cast(col(Column::from((qualifier, field))), DataType::Float64)
}

/// Expressions selecting the first `count` columns of `schema` by their qualified names.
fn dataset_column_exprs(schema: &DFSchema, count: usize) -> Vec<Expr> {
    (0..count)
        .map(|i| {
            let (qualifier, field) = schema.qualified_field(i);
            col(Column::from((qualifier, field)))
        })
        .collect()
}

/// Keys first, then the other columns, without duplicates.
fn union_columns(keys: &[usize], others: &[usize]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    keys.iter()
        .chain(others)
        .copied()
        .filter(|c| seen.insert(*c))
        .collect()
}

/// An unqualified column reference for generated SQL, quoted so any name works.
fn ident_sql(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A column reference that DataFusion will not case-fold.
fn ident(name: &str) -> Column {
    Column::new_unqualified(name)
}

/// A TOML scalar as a SQL literal.
fn literal_sql(value: &toml::Value) -> Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_finite() => format!("{f:?}"),
        toml::Value::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        toml::Value::Datetime(d) => format!("'{d}'"),
        other => return Err(format!("{other} is not a value a check can compare with")),
    })
}

/// `lo <= what <= hi` with absent bounds left out.
fn bounds_text(what: &str, min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(lo), Some(hi)) => format!("{lo} <= {what} <= {hi}"),
        (Some(lo), None) => format!("{what} >= {lo}"),
        (None, Some(hi)) => format!("{what} <= {hi}"),
        (None, None) => what.to_string(),
    }
}

fn column_list(schema: &DFSchema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a `schema` check's expected type name (SQL or Arrow spelling) matches `actual`.
pub fn type_matches(expected: &str, actual: &DataType) -> bool {
    let expected = expected.trim().to_ascii_lowercase();
    let family = match expected.as_str() {
        "string" | "varchar" | "text" | "utf8" | "largeutf8" | "utf8view" => {
            return matches!(
                actual,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
        }
        "timestamp" => return matches!(actual, DataType::Timestamp(..)),
        "decimal" | "numeric" => {
            return matches!(
                actual,
                DataType::Decimal32(..)
                    | DataType::Decimal64(..)
                    | DataType::Decimal128(..)
                    | DataType::Decimal256(..)
            );
        }
        "bigint" | "long" | "int64" => DataType::Int64,
        "int" | "integer" | "int32" => DataType::Int32,
        "smallint" | "int16" => DataType::Int16,
        "tinyint" | "int8" => DataType::Int8,
        "double" | "float64" => DataType::Float64,
        "float" | "real" | "float32" => DataType::Float32,
        "boolean" | "bool" => DataType::Boolean,
        "date" | "date32" => DataType::Date32,
        "binary" | "bytea" => DataType::Binary,
        _ => return actual.to_string().to_ascii_lowercase() == expected,
    };
    &family == actual
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        assert_eq!(
            literal_sql(&toml::Value::String("it's".into())).unwrap(),
            "'it''s'"
        );
        assert_eq!(literal_sql(&toml::Value::Float(0.5)).unwrap(), "0.5");
        assert_eq!(ident_sql("we\"ird"), "\"we\"\"ird\"");
        assert!(literal_sql(&toml::Value::Array(vec![])).is_err());
    }

    #[test]
    fn type_names() {
        assert!(type_matches("string", &DataType::Utf8View));
        assert!(type_matches("BIGINT", &DataType::Int64));
        assert!(type_matches("Int64", &DataType::Int64));
        assert!(!type_matches("int", &DataType::Int64));
        assert!(type_matches(
            "timestamp",
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        ));
    }
}
