//! Drift references, measured before the dataset streams: each drift check's reference
//! (another dataset of the job, or a version of the checked product) is summarized into a
//! histogram by aggregate queries, so that on a cluster the workers compute it and only counts
//! reach the client.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use lakeforge_planner::{CompiledCheck, DriftReference, Evaluation};

use crate::dq::ProductHistory;
use crate::dq::drift::{self, Histogram, NumericBins};
use crate::error::{EngineError, Result};
use crate::session::RunBackend;

/// A drift check's reference, measured before the dataset streams.
#[derive(Debug, Clone)]
pub(super) enum Baseline {
    /// The reference histogram (its bins are the current histogram's bins too).
    Ready {
        histogram: Histogram,
        reference_rows: u64,
        reference_std: f64,
        described: String,
    },
    /// Nothing to compare with yet (a product's first version): the check passes.
    NoReference(String),
    /// The reference cannot be compared (e.g. it lacks the column): the check fails.
    Unusable(String),
}

/// Measures a drift check's reference histogram; `None` for other kinds.
pub(super) async fn measure_baseline(
    ctx: &SessionContext,
    dataset: &str,
    check: &CompiledCheck,
    product: ProductHistory<'_>,
) -> Result<Option<Baseline>> {
    let Evaluation::Drift {
        reference_column: column,
        categorical,
        bins,
        reference,
        ..
    } = &check.evaluation
    else {
        return Ok(None);
    };
    let read = ReferenceRead {
        ctx,
        dataset,
        check,
        product,
    };
    let compared = Compared {
        column,
        categorical: *categorical,
        bins: *bins,
        reference,
    };
    measure_reference(&read, &compared).await.map(Some)
}

/// Where a drift reference is read from, and what its errors name.
struct ReferenceRead<'a> {
    ctx: &'a SessionContext,
    /// The dataset checked.
    dataset: &'a str,
    /// The drift check.
    check: &'a CompiledCheck,
    /// The checked product's versions.
    product: ProductHistory<'a>,
}

impl ReferenceRead<'_> {
    /// A query of the reference that failed.
    fn failure(&self, e: DataFusionError) -> EngineError {
        EngineError::datafusion(
            format!(
                "check '{}' on '{}': cannot read the drift reference",
                self.check.name, self.dataset
            ),
            e,
        )
    }

    /// Any other error about the check.
    fn error(&self, message: impl std::fmt::Display) -> EngineError {
        EngineError::product(
            self.dataset,
            format!("check '{}': {message}", self.check.name),
        )
    }
}

/// What a drift check compares in its reference.
struct Compared<'a> {
    /// The reference's column.
    column: &'a str,
    /// Whether the column is treated as categorical.
    categorical: bool,
    /// Numeric histogram bins.
    bins: usize,
    /// The reference itself.
    reference: &'a DriftReference,
}

/// A drift reference's rows, or why there are none to compare with.
enum ReferenceFrame {
    /// The reference and how results describe it.
    Read(DataFrame, String),
    /// No reference, or one that cannot be read: the check concludes from this.
    Lacking(Baseline),
}

/// Measures a drift reference's histogram with aggregates (so on a cluster the workers compute
/// it): numeric bins span its [min, max] (found by one aggregate first) and are counted by a
/// grouped aggregate; categories are its most frequent distinct values.
async fn measure_reference(read: &ReferenceRead<'_>, compared: &Compared<'_>) -> Result<Baseline> {
    let column = compared.column;
    let (frame, described) = match reference_frame(read, compared.reference).await? {
        ReferenceFrame::Read(frame, described) => (frame, described),
        ReferenceFrame::Lacking(baseline) => return Ok(baseline),
    };
    if frame.schema().field_with_unqualified_name(column).is_err() {
        return Ok(Baseline::Unusable(format!(
            "the reference ({described}) has no column '{column}'"
        )));
    }
    let target = if compared.categorical {
        DataType::Utf8
    } else {
        DataType::Float64
    };
    let values = frame
        .select(vec![
            cast(
                col(datafusion::common::Column::new_unqualified(column)),
                target,
            )
            .alias("value"),
        ])
        .map_err(|e| read.failure(e))?;
    let (histogram, reference_std) = if compared.categorical {
        (categorical_histogram(read, &values).await?, 0.0)
    } else {
        match numeric_histogram(read, &values, compared.bins).await? {
            Some(measured) => measured,
            None => {
                return Ok(Baseline::Unusable(format!(
                    "the reference ({described}) has no finite values in '{column}'"
                )));
            }
        }
    };
    let reference_rows = histogram.total();
    if reference_rows == 0 {
        return Ok(Baseline::Unusable(format!(
            "the reference ({described}) has no non-null values in '{column}'"
        )));
    }
    Ok(Baseline::Ready {
        histogram,
        reference_rows,
        reference_std,
        described,
    })
}

/// The reference's rows: another dataset of the job, or a version of the checked product.
async fn reference_frame(
    read: &ReferenceRead<'_>,
    reference: &DriftReference,
) -> Result<ReferenceFrame> {
    let ctx = read.ctx;
    let version = match reference {
        DriftReference::Dataset(name) => {
            let frame = ctx
                .table(name.as_str())
                .await
                .map_err(|e| read.failure(e))?;
            return Ok(ReferenceFrame::Read(frame, name.clone()));
        }
        DriftReference::Version(version) => Some(*version),
        DriftReference::PreviousVersion => None,
    };
    let Some(table) = read.product.existing else {
        return Ok(ReferenceFrame::Lacking(Baseline::NoReference(
            "no previous version to compare with (the product is new)".to_string(),
        )));
    };
    let (table, version) = match version {
        Some(version) => {
            let mut pinned = table.clone();
            if let Err(e) = pinned.load_version(version).await {
                return Ok(ReferenceFrame::Lacking(Baseline::Unusable(format!(
                    "reference version {version} cannot be read: {e}"
                ))));
            }
            (pinned, version)
        }
        None => {
            let version = table.version().unwrap_or(0);
            (table.clone(), version)
        }
    };
    // On a cluster, delta-rs's scan cannot travel: read the version's files instead.
    let provider: Arc<dyn datafusion::catalog::TableProvider> =
        if RunBackend::of(ctx) == RunBackend::Cluster {
            crate::delta_files::files_provider(&table)
                .await
                .map_err(|e| read.error(format!("drift reference: {e}")))?
        } else {
            table.table_provider().await.map_err(|e| read.failure(e))?
        };
    let frame = ctx.read_table(provider).map_err(|e| read.failure(e))?;
    Ok(ReferenceFrame::Read(frame, format!("version {version}")))
}

/// One row of `aggregates` over all of `values`.
async fn summarize(
    read: &ReferenceRead<'_>,
    values: &DataFrame,
    aggregates: Vec<Expr>,
) -> Result<Vec<RecordBatch>> {
    values
        .clone()
        .aggregate(vec![], aggregates)
        .map_err(|e| read.failure(e))?
        .collect()
        .await
        .map_err(|e| read.failure(e))
}

/// The reference's most frequent categories, the rest counted as overflow; only counts reach
/// the client, never the column.
async fn categorical_histogram(read: &ReferenceRead<'_>, values: &DataFrame) -> Result<Histogram> {
    use datafusion::functions_aggregate::expr_fn::count;
    let totals = summarize(read, values, vec![count(col("value")).alias("values")]).await?;
    let values_counted = first_u64(&totals, "values").unwrap_or(0);
    let counted = values
        .clone()
        .filter(col("value").is_not_null())
        .and_then(|f| f.aggregate(vec![col("value")], vec![count(lit(1)).alias("n")]))
        .and_then(|f| {
            f.sort(vec![
                col("n").sort(false, false),
                col("value").sort(true, false),
            ])
        })
        .and_then(|f| f.limit(0, Some(drift::MAX_CATEGORIES)))
        .map_err(|e| read.failure(e))?
        .collect()
        .await
        .map_err(|e| read.failure(e))?;
    let mut categories = Vec::new();
    for batch in &counted {
        let names =
            arrow::compute::cast(batch.column(0), &DataType::Utf8).map_err(|e| read.error(e))?;
        let (Some(names), Some(counts)) = (
            names.as_string_opt::<i32>(),
            batch.column(1).as_primitive_opt::<Int64Type>(),
        ) else {
            continue;
        };
        for (name, count) in names.iter().zip(counts.iter()) {
            if let (Some(name), Some(count)) = (name, count) {
                categories.push((name.to_string(), u64::try_from(count).unwrap_or(0)));
            }
        }
    }
    Ok(Histogram::categorical_from_counts(
        categories,
        values_counted,
    ))
}

/// The reference's numeric histogram over `bins` bins spanning its [min, max], and its
/// population standard deviation; `None` when it has no finite values to span.
async fn numeric_histogram(
    read: &ReferenceRead<'_>,
    values: &DataFrame,
    bins: usize,
) -> Result<Option<(Histogram, f64)>> {
    use datafusion::functions_aggregate::expr_fn::{count, max, min, stddev_pop};
    let totals = summarize(
        read,
        values,
        vec![
            min(col("value")).alias("lo"),
            max(col("value")).alias("hi"),
            stddev_pop(col("value")).alias("sd"),
        ],
    )
    .await?;
    let scalar = |name: &str| -> Option<f64> {
        totals.first().and_then(|b| {
            let array = b.column_by_name(name)?;
            let values = array.as_primitive_opt::<Float64Type>()?;
            (!values.is_null(0)).then(|| values.value(0))
        })
    };
    let bins = match (scalar("lo"), scalar("hi")) {
        (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() => NumericBins::new(lo, hi, bins),
        _ => return Ok(None),
    };
    let binned = bins
        .bin_expr(col("value"))
        .and_then(|bin| values.clone().select(vec![bin.alias("bin")]))
        .and_then(|f| f.filter(col("bin").is_not_null()))
        .and_then(|f| f.aggregate(vec![col("bin")], vec![count(lit(1)).alias("n")]))
        .map_err(|e| read.failure(e))?
        .collect()
        .await
        .map_err(|e| read.failure(e))?;
    let mut counted = Vec::new();
    for batch in &binned {
        let (Some(bin), Some(n)) = (
            batch.column(0).as_primitive_opt::<Int64Type>(),
            batch.column(1).as_primitive_opt::<Int64Type>(),
        ) else {
            continue;
        };
        for (bin, n) in bin.iter().zip(n.iter()) {
            if let (Some(bin), Some(n)) = (bin, n) {
                counted.push((
                    usize::try_from(bin).unwrap_or(usize::MAX),
                    u64::try_from(n).unwrap_or(0),
                ));
            }
        }
    }
    let histogram = Histogram::numeric_from_counts(bins, counted).map_err(|e| read.error(e))?;
    Ok(Some((histogram, scalar("sd").unwrap_or(0.0))))
}

/// The first row's `name` column of an aggregate's result, as a count.
fn first_u64(batches: &[RecordBatch], name: &str) -> Option<u64> {
    let batch = batches.first()?;
    let values = batch
        .column_by_name(name)?
        .as_primitive_opt::<Int64Type>()?;
    (!values.is_empty() && !values.is_null(0)).then(|| u64::try_from(values.value(0)).unwrap_or(0))
}

/// An empty histogram over `histogram`'s bins: where a partition's drift counting starts.
pub(super) fn empty_like(histogram: &Histogram) -> Histogram {
    match histogram {
        Histogram::Numeric { bins, .. } => Histogram::numeric(bins.clone()),
        Histogram::Categorical { .. } => Histogram::categorical(),
    }
}
