//! What a partition measures for each check ([`CheckState`]) and the mergeable statistics
//! behind it: moments, extremes, samples of failing rows. States travel from cluster workers
//! as JSON, so floats are kept as their bit patterns ([`float_bits`]).

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{SortColumn, lexsort_to_indices, take};
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use lakeforge_planner::Statistic;
use serde::{Deserialize, Serialize};

use crate::dq::drift::Histogram;
use crate::dq::keys::KeySet;
use crate::dq::quantile::QuantileSketch;
use crate::error::{EngineError, Result};

/// An output partition's check states after its last batch, merged on the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Rows the partition evaluated.
    pub rows: u64,
    /// One state per check.
    pub states: Vec<CheckState>,
}

/// Per-check state of one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CheckState {
    /// Nothing measured per row.
    Nothing,
    /// A row-level check's counts and samples.
    Row {
        /// Rows failing.
        failed: u64,
        /// Rows whose predicate was NULL and passed.
        null_skipped: u64,
        /// The smallest failing rows.
        samples: Samples,
    },
    /// Mean and variance.
    Moments(Moments),
    /// Minimum and maximum.
    Extremes(Extremes),
    /// A t-digest for a quantile.
    Quantile(QuantileSketch),
    /// NULLs counted.
    Nulls(u64),
    /// The newest timestamp (epoch microseconds).
    Newest(Option<i64>),
    /// A drift histogram over the reference's bins.
    Histogram(Histogram),
    /// A `unique` check's collected keys.
    Keys(KeySet),
}

/// The kinds of [`CheckState`], to name them in internal errors and to compare a state with
/// the one its check measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// [`CheckState::Nothing`].
    Nothing,
    /// [`CheckState::Row`].
    Row,
    /// [`CheckState::Moments`].
    Moments,
    /// [`CheckState::Extremes`].
    Extremes,
    /// [`CheckState::Quantile`].
    Quantile,
    /// [`CheckState::Nulls`].
    Nulls,
    /// [`CheckState::Newest`].
    Newest,
    /// [`CheckState::Histogram`].
    Histogram,
    /// [`CheckState::Keys`].
    Keys,
}

impl CheckState {
    /// Which kind of state this is.
    pub fn kind(&self) -> StateKind {
        match self {
            CheckState::Nothing => StateKind::Nothing,
            CheckState::Row { .. } => StateKind::Row,
            CheckState::Moments(_) => StateKind::Moments,
            CheckState::Extremes(_) => StateKind::Extremes,
            CheckState::Quantile(_) => StateKind::Quantile,
            CheckState::Nulls(_) => StateKind::Nulls,
            CheckState::Newest(_) => StateKind::Newest,
            CheckState::Histogram(_) => StateKind::Histogram,
            CheckState::Keys(_) => StateKind::Keys,
        }
    }

    /// Adds one batch's values; `batch_moments` holds the moments this batch's other checks
    /// computed already.
    pub(super) fn observe(
        &mut self,
        array: &ArrayRef,
        batch_moments: &mut BatchMoments,
    ) -> Result<()> {
        match self {
            CheckState::Moments(moments) => {
                if let Some(values) = array.as_primitive_opt::<Float64Type>() {
                    moments.merge(batch_moments.of(values));
                }
            }
            CheckState::Extremes(extremes) => {
                if let Some(values) = array.as_primitive_opt::<Float64Type>() {
                    extremes.merge(Extremes::of(&counted_values(values)));
                }
            }
            CheckState::Quantile(sketch) => sketch.observe(array),
            CheckState::Nulls(count) => *count += array.null_count() as u64,
            CheckState::Newest(newest) => {
                if let Some(values) = array.as_primitive_opt::<Int64Type>()
                    && let Some(max) = arrow::compute::max(values)
                {
                    *newest = Some(newest.map_or(max, |n| n.max(max)));
                }
            }
            CheckState::Histogram(histogram) => histogram.observe(array.as_ref()),
            CheckState::Nothing | CheckState::Row { .. } | CheckState::Keys(_) => {}
        }
        Ok(())
    }

    /// Merges another partition's state of the same check; states of different kinds are an
    /// internal error, since dropping either would lose what it counted.
    pub(super) fn merge(&mut self, other: CheckState) -> Result<()> {
        match (self, other) {
            (
                CheckState::Row {
                    failed,
                    null_skipped,
                    samples,
                },
                CheckState::Row {
                    failed: f,
                    null_skipped: n,
                    samples: s,
                },
            ) => {
                *failed += f;
                *null_skipped += n;
                samples.absorb(s);
            }
            (CheckState::Moments(a), CheckState::Moments(b)) => a.merge(b),
            (CheckState::Extremes(a), CheckState::Extremes(b)) => a.merge(b),
            (CheckState::Quantile(a), CheckState::Quantile(b)) => a.merge(b),
            (CheckState::Nulls(a), CheckState::Nulls(b)) => *a += b,
            (CheckState::Newest(a), CheckState::Newest(b)) => {
                *a = match (*a, b) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
            }
            (CheckState::Histogram(a), CheckState::Histogram(b)) => a.merge(b),
            (CheckState::Keys(a), CheckState::Keys(b)) => a.absorb(b),
            (CheckState::Nothing, CheckState::Nothing) => {}
            (state, other) => {
                return Err(EngineError::Invariant(format!(
                    "partitions returned a {:?} and a {:?} state for the check",
                    state.kind(),
                    other.kind()
                )));
            }
        }
        Ok(())
    }

    pub(super) fn statistic(&mut self, statistic: Statistic, rows: u64) -> Option<f64> {
        match (statistic, self) {
            (Statistic::Mean, CheckState::Moments(m)) => (m.count > 0).then_some(m.mean),
            (Statistic::Stddev, CheckState::Moments(m)) => {
                (m.count > 1).then(|| (m.m2 / (m.count - 1) as f64).sqrt())
            }
            (Statistic::Min, CheckState::Extremes(e)) => (e.count > 0).then_some(e.min),
            (Statistic::Max, CheckState::Extremes(e)) => (e.count > 0).then_some(e.max),
            (Statistic::NullFraction, CheckState::Nulls(n)) => {
                (rows > 0).then(|| *n as f64 / rows as f64)
            }
            (Statistic::Quantile(_), CheckState::Quantile(sketch)) => sketch.value(),
            _ => None,
        }
    }
}

/// Running mean and variance (Welford), mergeable across partitions (Chan et al.).
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    count: u64,
    #[serde(with = "float_bits")]
    mean: f64,
    #[serde(with = "float_bits")]
    m2: f64,
}

impl Moments {
    /// The moments of one batch's non-null, non-NaN values (see [`counted_values`]), by the
    /// two-pass algorithm (mean, then squared deviations from it): as stable as Welford's update
    /// without its division per value; batches are then combined by [`Moments::merge`].
    fn of(values: &[f64]) -> Moments {
        // Eight independent accumulators per sum, without branches, let the compiler vectorize
        // both passes; a NaN (a NULL's slot included) is skipped by a branch-free NaN test.
        let (mut counts, mut sums) = ([0u64; LANES], [0f64; LANES]);
        for_lanes(values, |lane, value| {
            let take = !value.is_nan();
            counts[lane] += u64::from(take);
            sums[lane] += if take { value } else { 0.0 };
        });
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return Moments::default();
        }
        let mean = sums.iter().sum::<f64>() / count as f64;
        let mut squares = [0f64; LANES];
        for_lanes(values, |lane, value| {
            let deviation = if value.is_nan() { 0.0 } else { value - mean };
            squares[lane] += deviation * deviation;
        });
        Moments {
            count,
            mean,
            m2: squares.iter().sum(),
        }
    }

    fn merge(&mut self, other: Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other;
            return;
        }
        let count = self.count + other.count;
        let delta = other.mean - self.mean;
        self.mean += delta * other.count as f64 / count as f64;
        self.m2 += other.m2 + delta * delta * self.count as f64 * other.count as f64 / count as f64;
        self.count = count;
    }
}

/// Smallest and largest value seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Extremes {
    #[serde(with = "float_bits")]
    min: f64,
    #[serde(with = "float_bits")]
    max: f64,
    count: u64,
}

impl Extremes {
    /// The smallest and largest of one batch's non-null, non-NaN values (see
    /// [`counted_values`]).
    fn of(values: &[f64]) -> Extremes {
        let (mut mins, mut maxes, mut counts) = (
            [f64::INFINITY; LANES],
            [f64::NEG_INFINITY; LANES],
            [0u64; LANES],
        );
        for_lanes(values, |lane, value| {
            // A NaN compares false, so it never replaces a bound.
            mins[lane] = if value < mins[lane] {
                value
            } else {
                mins[lane]
            };
            maxes[lane] = if value > maxes[lane] {
                value
            } else {
                maxes[lane]
            };
            counts[lane] += u64::from(!value.is_nan());
        });
        Extremes {
            min: mins.into_iter().fold(f64::INFINITY, f64::min),
            max: maxes.into_iter().fold(f64::NEG_INFINITY, f64::max),
            count: counts.iter().sum(),
        }
    }

    fn merge(&mut self, other: Extremes) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count += other.count;
    }
}

impl Default for Extremes {
    fn default() -> Self {
        Extremes {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            count: 0,
        }
    }
}

/// One batch's moments per column of values, so that checks on the same column (a mean and a
/// standard deviation, an anomaly on either) compute them once.
#[derive(Default)]
pub(super) struct BatchMoments {
    /// The values' address and length, and their moments.
    computed: Vec<((*const f64, usize), Moments)>,
}

impl BatchMoments {
    pub(super) fn of(&mut self, values: &Float64Array) -> Moments {
        // Checks on the same column read the same buffer: the projection outputs the column
        // (or its common cast) once per check, each a reference to one array.
        let identity = (values.values().as_ptr(), values.len());
        if let Some((_, moments)) = self.computed.iter().find(|(seen, _)| *seen == identity) {
            return *moments;
        }
        let moments = Moments::of(&counted_values(values));
        self.computed.push((identity, moments));
        moments
    }
}

/// Accumulators per statistic in [`for_lanes`]: independent sums the compiler keeps in vector
/// registers.
const LANES: usize = 8;

/// Calls `visit(lane, value)` for every value, the lane being the value's index modulo
/// [`LANES`], in an order the compiler can vectorize.
#[inline(always)]
fn for_lanes(values: &[f64], mut visit: impl FnMut(usize, f64)) {
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in chunk.iter().enumerate() {
            visit(lane, value);
        }
    }
    for (lane, &value) in chunks.remainder().iter().enumerate() {
        visit(lane, value);
    }
}

/// A float column's values with each NULL's slot set to NaN, so statistics skip NULLs and NaNs
/// with one branch-free test (borrowed when there are no NULLs).
fn counted_values(values: &Float64Array) -> Cow<'_, [f64]> {
    match values.nulls().filter(|nulls| nulls.null_count() > 0) {
        None => Cow::Borrowed(values.values()),
        Some(nulls) => {
            let mut owned = values.values().to_vec();
            for row in (!nulls.inner()).set_indices() {
                owned[row] = f64::NAN;
            }
            Cow::Owned(owned)
        }
    }
}

/// The K smallest failing rows of a check, ordered by the sample columns' values (compared as
/// Arrow row-format keys), so samples do not depend on how the data was partitioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub(super) limit: usize,
    pub(super) columns: Vec<usize>,
    /// (sort key, the row's sample values as text)
    pub(super) kept: Vec<(Vec<u8>, Vec<Option<String>>)>,
}

impl Samples {
    pub(super) fn offer(
        &mut self,
        converter: &RowConverter,
        batch: &RecordBatch,
        failing: &BooleanBuffer,
    ) -> Result<()> {
        if self.limit == 0 || self.columns.is_empty() {
            return Ok(());
        }
        let mask = BooleanArray::new(failing.clone(), None);
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|&c| arrow::compute::filter(batch.column(c), &mask))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| EngineError::arrow("cannot select the failing rows to sample", e))?;
        let sort: Vec<SortColumn> = columns
            .iter()
            .map(|values| SortColumn {
                values: Arc::clone(values),
                options: None,
            })
            .collect();
        let order = lexsort_to_indices(&sort, Some(self.limit))
            .map_err(|e| EngineError::arrow("cannot order the sampled rows", e))?;
        let smallest: Vec<ArrayRef> = columns
            .iter()
            .map(|c| take(c.as_ref(), &order, None))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| EngineError::arrow("cannot take the sampled rows", e))?;
        let encoded = converter
            .convert_columns(&smallest)
            .map_err(|e| EngineError::arrow("cannot encode the sampled rows", e))?;
        for (row, values) in display_rows(&smallest)?.into_iter().enumerate() {
            self.kept.push((encoded.row(row).as_ref().to_vec(), values));
        }
        self.trim();
        Ok(())
    }

    pub(super) fn absorb(&mut self, other: Samples) {
        self.kept.extend(other.kept);
        self.trim();
    }

    pub(super) fn trim(&mut self) {
        self.kept.sort_by(|a, b| a.0.cmp(&b.0));
        self.kept.truncate(self.limit);
    }

    pub(super) fn into_json(
        self,
        schema: &Schema,
    ) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.kept
            .into_iter()
            .map(|(_, values)| {
                self.columns
                    .iter()
                    .zip(values)
                    .map(|(&c, value)| {
                        (
                            schema.field(c).name().clone(),
                            value.map_or(serde_json::Value::Null, serde_json::Value::String),
                        )
                    })
                    .collect()
            })
            .collect()
    }
}

/// The types of `columns` of `schema` (a check's sample or key columns).
pub(super) fn column_types(schema: &Schema, columns: &[usize]) -> Result<Vec<DataType>> {
    columns
        .iter()
        .map(|&c| {
            schema
                .fields()
                .get(c)
                .map(|f| f.data_type().clone())
                .ok_or_else(|| EngineError::Invariant(format!("no column {c} in the checked plan")))
        })
        .collect()
}

/// The row-format encoder of sample or key columns (ascending, NULLs first): encoded rows
/// compare like the columns' values, which orders samples and keys alike.
pub(super) fn row_converter(types: &[DataType]) -> Result<RowConverter> {
    RowConverter::new(types.iter().cloned().map(SortField::new).collect())
        .map_err(|e| EngineError::arrow("cannot encode rows of these columns", e))
}

/// Each row of `columns` as display text (NULL as `None`), as samples show them.
pub(super) fn display_rows(columns: &[ArrayRef]) -> Result<Vec<Vec<Option<String>>>> {
    let options = FormatOptions::default();
    let formatters: Vec<ArrayFormatter> = columns
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| EngineError::arrow("cannot display the sampled values", e))?;
    Ok((0..columns.first().map_or(0, |c| c.len()))
        .map(|row| {
            columns
                .iter()
                .zip(&formatters)
                .map(|(c, f)| (!c.is_null(row)).then(|| f.value(row).to_string()))
                .collect()
        })
        .collect())
}

/// Floats as their bit patterns, so infinities and NaN (an empty digest's extremes, a column
/// holding infinities) survive JSON.
pub(crate) mod float_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        u64::deserialize(deserializer).map(f64::from_bits)
    }

    /// The same for a vector of floats.
    pub mod many {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
            values
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
                .serialize(serializer)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<f64>, D::Error> {
            Vec::<u64>::deserialize(deserializer)
                .map(|v| v.into_iter().map(f64::from_bits).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_of_batches_merge_to_the_whole_columns_moments() {
        use arrow::array::Float64Array;
        let values = [1.0, 2.0, 4.0, 8.0, 16.0, 3.5];
        // numpy: mean and sum of squared deviations of the non-null, non-NaN values.
        let (mean, m2) = (5.75, 154.875);
        let of = |array: Float64Array| Moments::of(&counted_values(&array));
        let whole = of(Float64Array::from(values.to_vec()));
        assert_eq!(whole.count, 6);
        assert!((whole.mean - mean).abs() < 1e-12);
        assert!((whole.m2 - m2).abs() < 1e-9);
        let mut a = of(Float64Array::from(vec![Some(1.0), None, Some(2.0)]));
        let b = of(Float64Array::from(vec![4.0, f64::NAN, 8.0, 16.0, 3.5]));
        a.merge(b);
        assert_eq!(a.count, 6);
        assert!((a.mean - mean).abs() < 1e-12);
        assert!((a.m2 - m2).abs() < 1e-9);
        assert_eq!(of(Float64Array::from(vec![f64::NAN])), Moments::default());
        // Min and max skip NULLs and NaNs too, across a remainder shorter than the lanes.
        let extremes = Extremes::of(&counted_values(&Float64Array::from(vec![
            Some(f64::NAN),
            None,
            Some(-2.5),
            Some(7.0),
            Some(0.0),
            Some(f64::NAN),
            Some(3.0),
            Some(1.0),
            None,
            Some(-9.0),
        ])));
        assert_eq!((extremes.min, extremes.max, extremes.count), (-9.0, 7.0, 6));
    }
}
