//! Comparisons of a number, date or time column with literals, fused into one kernel.
//!
//! Row-level checks are mostly ranges: `between` compiles to `x >= lo AND x <= hi`, and many
//! `expect` predicates are one comparison (`latency_ms_p95 < 1000`). DataFusion evaluates
//! each comparison into a boolean array (for floats, after copying the column to turn -0.0
//! into 0.0), then the AND counts the left side's bits to decide whether to short-circuit and
//! combines the two arrays. A [`RangePredicate`] reads the column once and writes the verdict
//! bits directly, with the same semantics: NULL rows are NULL, and floats compare in total
//! order with -0.0 equal to 0.0 (so NaN is above every number, as in DataFusion).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, internal_datafusion_err};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};

/// Replaces, bottom up, every comparison of a column with a literal by a [`RangePredicate`],
/// and every AND of a lower and an upper bound on the same column by one predicate.
pub(crate) fn fuse_ranges(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.transform_up(|node| {
        let fused = match RangePredicate::of_comparison(&node, schema)? {
            Some(range) => Some(range),
            None => RangePredicate::of_conjunction(&node),
        };
        Ok(match fused {
            Some(range) => Transformed::yes(Arc::new(range) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(node),
        })
    })
}

/// One bound of a range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bound {
    /// The literal, of the column's type.
    value: ScalarValue,
    /// Whether the bound itself is in the range.
    inclusive: bool,
}

/// `column` within literal bounds (either may be absent; equality is both, inclusive).
#[derive(Debug)]
pub(crate) struct RangePredicate {
    /// The column compared (a [`Column`]; a child, so narrowing can remap it).
    column: Arc<dyn PhysicalExpr>,
    lower: Option<Bound>,
    upper: Option<Bound>,
}

impl RangePredicate {
    /// `column <op> literal` or `literal <op> column` for a comparison operator, a column of a
    /// supported type and a non-NULL literal of the same type.
    fn of_comparison(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Option<Self>> {
        let Some(binary) = expr.downcast_ref::<BinaryExpr>() else {
            return Ok(None);
        };
        let (column, literal, op) = match (
            binary.left().downcast_ref::<Column>(),
            binary.right().downcast_ref::<Literal>(),
            binary.left().downcast_ref::<Literal>(),
            binary.right().downcast_ref::<Column>(),
        ) {
            (Some(_), Some(literal), _, _) => (binary.left(), literal, *binary.op()),
            (_, _, Some(literal), Some(_)) => match binary.op().swap() {
                Some(op) => (binary.right(), literal, op),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        let data_type = column.data_type(schema)?;
        if !supported(&data_type) || literal.value().is_null() {
            return Ok(None);
        }
        if literal.value().data_type() != data_type {
            return Ok(None);
        }
        let bound = |inclusive| Bound {
            value: literal.value().clone(),
            inclusive,
        };
        let (lower, upper) = match op {
            Operator::Gt => (Some(bound(false)), None),
            Operator::GtEq => (Some(bound(true)), None),
            Operator::Lt => (None, Some(bound(false))),
            Operator::LtEq => (None, Some(bound(true))),
            Operator::Eq => (Some(bound(true)), Some(bound(true))),
            _ => return Ok(None),
        };
        Ok(Some(Self {
            column: Arc::clone(column),
            lower,
            upper,
        }))
    }

    /// `a AND b` where `a` and `b` are ranges of the same column, one bounded below only and
    /// the other above only (as `BETWEEN` plans).
    fn of_conjunction(expr: &Arc<dyn PhysicalExpr>) -> Option<Self> {
        let binary = expr.downcast_ref::<BinaryExpr>()?;
        if *binary.op() != Operator::And {
            return None;
        }
        let left = binary.left().downcast_ref::<RangePredicate>()?;
        let right = binary.right().downcast_ref::<RangePredicate>()?;
        if !left.column.eq(&right.column) {
            return None;
        }
        let (lower, upper) = match (&left.lower, &left.upper, &right.lower, &right.upper) {
            (Some(lower), None, None, Some(upper)) | (None, Some(upper), Some(lower), None) => {
                (lower.clone(), upper.clone())
            }
            _ => return None,
        };
        Some(Self {
            column: Arc::clone(&left.column),
            lower: Some(lower),
            upper: Some(upper),
        })
    }
}

/// Whether a column type has a fused kernel.
fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
    )
}

/// `value`'s position in `f64::total_cmp` order, with -0.0 placed at 0.0.
fn f64_order(value: f64) -> i64 {
    let value = if value == 0.0 { 0.0 } else { value };
    let bits = value.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// `value`'s position in `f32::total_cmp` order, with -0.0 placed at 0.0.
fn f32_order(value: f32) -> i32 {
    let value = if value == 0.0 { 0.0 } else { value };
    let bits = value.to_bits() as i32;
    bits ^ (((bits >> 31) as u32) >> 1) as i32
}

/// An integer a value maps to for comparing.
trait RangeKey: Copy + Ord {
    /// The unsigned integer of the same width.
    type Distance: Copy + Ord;
    const MIN: Self;
    const MAX: Self;
    fn next(self) -> Option<Self>;
    fn previous(self) -> Option<Self>;
    /// How far above `low` this key is, wrapping: keys below `low` are very far.
    fn above(self, low: Self) -> Self::Distance;
}

macro_rules! range_key {
    ($($type:ty => $distance:ty),*) => {$(
        impl RangeKey for $type {
            type Distance = $distance;
            const MIN: Self = <$type>::MIN;
            const MAX: Self = <$type>::MAX;
            fn next(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn previous(self) -> Option<Self> {
                self.checked_sub(1)
            }
            #[inline(always)]
            fn above(self, low: Self) -> $distance {
                self.wrapping_sub(low) as $distance
            }
        }
    )*};
}
range_key!(i32 => u32, i64 => u64, u64 => u64);

/// The verdicts of `lower <(=) key(value) <(=) upper` for every row of `array` (a bound is
/// its key and whether it is inclusive); NULL rows are NULL.
fn in_range<T, K>(
    array: &PrimitiveArray<T>,
    lower: Option<(K, bool)>,
    upper: Option<(K, bool)>,
    key: impl Fn(T::Native) -> K,
) -> BooleanArray
where
    T: ArrowPrimitiveType,
    K: RangeKey,
{
    let values = array.values();
    let bits = match inclusive_bounds(lower, upper) {
        (Some(low), Some(high)) if low <= high => {
            // `low <= k <= high` as one subtraction and one unsigned comparison: a key below
            // `low` wraps to above the range's width.
            let width = high.above(low);
            let words: Vec<u64> = values
                .chunks(64)
                .map(|chunk| key_range_word(chunk, low, width, &key))
                .collect();
            BooleanBuffer::new(words.into(), 0, values.len())
        }
        _ => BooleanBuffer::new_unset(values.len()),
    };
    BooleanArray::new(bits, array.nulls().cloned())
}

/// The inclusive key bounds of a range (an absent bound is the end of the key space): keys
/// are integers, so a strict bound becomes an inclusive one a step inward, and a strict bound
/// at the end of the key space admits nothing (`None`).
fn inclusive_bounds<K: RangeKey>(
    lower: Option<(K, bool)>,
    upper: Option<(K, bool)>,
) -> (Option<K>, Option<K>) {
    let low = match lower {
        None => Some(K::MIN),
        Some((bound, true)) => Some(bound),
        Some((bound, false)) => bound.next(),
    };
    let high = match upper {
        None => Some(K::MAX),
        Some((bound, true)) => Some(bound),
        Some((bound, false)) => bound.previous(),
    };
    (low, high)
}

/// The verdict bits of up to 64 values: whether each value's key is within `width` above `low`.
#[inline(always)]
fn key_range_word<N: Copy, K: RangeKey>(
    chunk: &[N],
    low: K,
    width: K::Distance,
    key: &impl Fn(N) -> K,
) -> u64 {
    // A byte per row without branches (the compares vectorize), then the bytes gathered into
    // bits eight at a time.
    let mut flags = [0u8; 64];
    for (flag, &value) in flags.iter_mut().zip(chunk) {
        *flag = u8::from(key(value).above(low) <= width);
    }
    gather_bits(&flags, 0)
}

/// [`in_range`] of a `DOUBLE` column, compared as floats where that gives the same verdicts
/// (two values per instruction, where a 64-bit integer compare is emulated).
///
/// Floats compare like their [`f64_order`] keys except at NaN (-0.0 already equals 0.0): a NaN
/// fails every float comparison, but in total order +NaN is above and -NaN below every number.
/// Between two bounds that are not NaN, every NaN fails either way; with a side unbounded, a
/// chunk holding a NaN is compared by keys instead. A strict bound is the inclusive bound one
/// float inward, except at infinity, which is compared by keys throughout.
fn f64_in_range(
    array: &PrimitiveArray<Float64Type>,
    lower: Option<(f64, bool)>,
    upper: Option<(f64, bool)>,
) -> BooleanArray {
    let float_bound =
        |bound: Option<(f64, bool)>, unbounded: f64, inward: fn(f64) -> f64| match bound {
            None => Some(unbounded),
            Some((value, _)) if value.is_nan() => None,
            Some((value, true)) => Some(value),
            Some((value, false)) if value.is_infinite() => None,
            Some((value, false)) => Some(inward(value)),
        };
    let (Some(low), Some(high)) = (
        float_bound(lower, f64::NEG_INFINITY, f64::next_up),
        float_bound(upper, f64::INFINITY, f64::next_down),
    ) else {
        return in_range(array, order_bound(lower), order_bound(upper), f64_order);
    };
    let values = array.values();
    let words: Vec<u64> = if lower.is_some() && upper.is_some() {
        values
            .chunks(64)
            .map(|chunk| float_range_word(chunk, low, high).0)
            .collect()
    } else {
        let keys = inclusive_bounds(order_bound(lower), order_bound(upper));
        values
            .chunks(64)
            .map(|chunk| match (float_range_word(chunk, low, high), keys) {
                ((word, false), _) => word,
                (_, (Some(key_low), Some(key_high))) if key_low <= key_high => {
                    key_range_word(chunk, key_low, key_high.above(key_low), &f64_order)
                }
                _ => 0,
            })
            .collect()
    };
    BooleanArray::new(
        BooleanBuffer::new(words.into(), 0, values.len()),
        array.nulls().cloned(),
    )
}

/// A float bound as an [`f64_order`] key.
fn order_bound(bound: Option<(f64, bool)>) -> Option<(i64, bool)> {
    bound.map(|(value, inclusive)| (f64_order(value), inclusive))
}

/// The verdict bits of up to 64 values within `low..=high` as floats, and whether any is NaN.
#[inline(always)]
fn float_range_word(chunk: &[f64], low: f64, high: f64) -> (u64, bool) {
    let mut flags = [0u8; 64];
    let mut nan = false;
    for (flag, &value) in flags.iter_mut().zip(chunk) {
        *flag = u8::from((value >= low) & (value <= high));
        nan |= value.is_nan();
    }
    (gather_bits(&flags, 0), nan)
}

/// Packs bit `bit` of each of 64 bytes into the bits of a word (byte `i`'s into bit `i`).
#[inline(always)]
pub(crate) fn gather_bits(flags: &[u8; 64], bit: u32) -> u64 {
    let mut word = 0u64;
    for (index, eight) in flags.chunks_exact(8).enumerate() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(eight);
        let flags = (u64::from_le_bytes(bytes) >> bit) & 0x0101_0101_0101_0101;
        // Byte j of the product's top byte receives exactly flag j's bit (bit 56 + j), as every
        // other flag lands on a distinct lower or overflowing bit: no carries.
        let gathered = flags.wrapping_mul(0x0102_0408_1020_4080) >> 56;
        word |= gathered << (8 * index);
    }
    word
}

/// Evaluates a range over `array`, whose type is `$arrow`, comparing `$key`s (integers).
macro_rules! range_kernel {
    ($array:expr, $lower:expr, $upper:expr, $arrow:ty, $key:expr) => {{
        let array = $array.as_primitive::<$arrow>();
        let bound = |bound: &Option<Bound>| -> Result<_> {
            bound
                .as_ref()
                .map(|b| {
                    let literal = b.value.to_array()?;
                    Ok(($key(literal.as_primitive::<$arrow>().value(0)), b.inclusive))
                })
                .transpose()
        };
        in_range(array, bound($lower)?, bound($upper)?, $key)
    }};
}

impl PartialEq for RangePredicate {
    fn eq(&self, other: &Self) -> bool {
        self.column.eq(&other.column) && self.lower == other.lower && self.upper == other.upper
    }
}

impl Eq for RangePredicate {}

impl Hash for RangePredicate {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.column.hash(state);
        self.lower.hash(state);
        self.upper.hash(state);
    }
}

impl fmt::Display for RangePredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(lower) = &self.lower {
            let op = if lower.inclusive { ">=" } else { ">" };
            parts.push(format!("{} {op} {}", self.column, lower.value));
        }
        if let Some(upper) = &self.upper {
            let op = if upper.inclusive { "<=" } else { "<" };
            parts.push(format!("{} {op} {}", self.column, upper.value));
        }
        write!(f, "{} [fused]", parts.join(" AND "))
    }
}

impl PhysicalExpr for RangePredicate {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.column.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let array: ArrayRef = self.column.evaluate(batch)?.into_array(batch.num_rows())?;
        let (lower, upper) = (&self.lower, &self.upper);
        let verdicts = match array.data_type() {
            DataType::Int8 => range_kernel!(array, lower, upper, Int8Type, i32::from),
            DataType::Int16 => range_kernel!(array, lower, upper, Int16Type, i32::from),
            DataType::Int32 => range_kernel!(array, lower, upper, Int32Type, i32::from),
            DataType::Int64 => range_kernel!(array, lower, upper, Int64Type, i64::from),
            DataType::UInt8 => range_kernel!(array, lower, upper, UInt8Type, u64::from),
            DataType::UInt16 => range_kernel!(array, lower, upper, UInt16Type, u64::from),
            DataType::UInt32 => range_kernel!(array, lower, upper, UInt32Type, u64::from),
            DataType::UInt64 => range_kernel!(array, lower, upper, UInt64Type, u64::from),
            DataType::Float32 => range_kernel!(array, lower, upper, Float32Type, f32_order),
            DataType::Float64 => {
                let bound = |bound: &Option<Bound>| -> Result<_> {
                    bound
                        .as_ref()
                        .map(|b| {
                            let literal = b.value.to_array()?;
                            Ok((literal.as_primitive::<Float64Type>().value(0), b.inclusive))
                        })
                        .transpose()
                };
                f64_in_range(array.as_primitive(), bound(lower)?, bound(upper)?)
            }
            DataType::Date32 => range_kernel!(array, lower, upper, Date32Type, i32::from),
            DataType::Date64 => range_kernel!(array, lower, upper, Date64Type, i64::from),
            DataType::Timestamp(TimeUnit::Second, _) => {
                range_kernel!(array, lower, upper, TimestampSecondType, i64::from)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                range_kernel!(array, lower, upper, TimestampMillisecondType, i64::from)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                range_kernel!(array, lower, upper, TimestampMicrosecondType, i64::from)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                range_kernel!(array, lower, upper, TimestampNanosecondType, i64::from)
            }
            other => {
                return Err(internal_datafusion_err!(
                    "no range kernel for {other} (column {})",
                    self.column
                ));
            }
        };
        Ok(ColumnarValue::Array(Arc::new(verdicts)))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.column]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let column = children
            .pop()
            .ok_or_else(|| internal_datafusion_err!("a range predicate has one child"))?;
        Ok(Arc::new(Self {
            column,
            lower: self.lower.clone(),
            upper: self.upper.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Float64Array, Int32Array, UInt8Array};
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::lit;

    /// Every operator and its mirror image, each bound alone and BETWEEN-style pairs, over
    /// `column`, evaluated fused and as DataFusion plans them.
    fn assert_fused_like_planned(array: ArrayRef, literals: &[ScalarValue]) {
        let schema = Schema::new(vec![
            Field::new("other", DataType::Int32, true),
            Field::new("x", array.data_type().clone(), true),
        ]);
        let rows = array.len();
        let other: ArrayRef = Arc::new(Int32Array::from_iter_values(0..rows as i32));
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![other, array]).unwrap();
        let x = || Arc::new(Column::new("x", 1)) as Arc<dyn PhysicalExpr>;
        let ops = [
            Operator::Lt,
            Operator::LtEq,
            Operator::Gt,
            Operator::GtEq,
            Operator::Eq,
        ];
        let mut planned: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
        for literal in literals {
            for op in ops {
                planned.push(Arc::new(BinaryExpr::new(x(), op, lit(literal.clone()))));
                planned.push(Arc::new(BinaryExpr::new(lit(literal.clone()), op, x())));
            }
            for high in literals {
                for (low_op, high_op) in [
                    (Operator::GtEq, Operator::LtEq),
                    (Operator::Gt, Operator::Lt),
                ] {
                    planned.push(Arc::new(BinaryExpr::new(
                        Arc::new(BinaryExpr::new(x(), low_op, lit(literal.clone()))),
                        Operator::And,
                        Arc::new(BinaryExpr::new(x(), high_op, lit(high.clone()))),
                    )));
                }
            }
        }
        for expr in planned {
            let fused = fuse_ranges(Arc::clone(&expr), &schema).unwrap();
            assert!(fused.transformed, "{expr}");
            assert!(
                fused.data.is::<RangePredicate>(),
                "{expr} became {}",
                fused.data
            );
            let expected = expr.evaluate(&batch).unwrap().into_array(rows).unwrap();
            let actual = fused
                .data
                .evaluate(&batch)
                .unwrap()
                .into_array(rows)
                .unwrap();
            assert_eq!(actual.as_ref(), expected.as_ref(), "{expr}");
        }
    }

    #[test]
    fn fused_ranges_evaluate_like_datafusion() {
        let floats = vec![
            Some(-0.0),
            Some(0.0),
            None,
            Some(1.5),
            Some(-1.5),
            Some(f64::NAN),
            Some(-f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(1e300),
            Some(0.5),
        ];
        assert_fused_like_planned(
            Arc::new(Float64Array::from(floats)),
            &[
                ScalarValue::from(0.0),
                ScalarValue::from(-0.0),
                ScalarValue::from(0.5),
                ScalarValue::from(f64::NAN),
                ScalarValue::from(f64::INFINITY),
            ],
        );
        // Several 64-row chunks, NaNs of both signs in some of them only: those chunks are
        // compared by keys when a side is unbounded, the others as floats.
        let special = [
            f64::NAN,
            -f64::NAN,
            -0.0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let many: Vec<Option<f64>> = (0..300)
            .map(|row| match row {
                70 | 200 => Some(f64::NAN),
                71 | 250 => Some(-f64::NAN),
                _ if row % 17 == 0 => None,
                _ if row % 11 == 0 => Some(special[(row / 11) % special.len()]),
                _ if row % 7 == 0 => Some(5e-324 * (row % 3) as f64 - 5e-324),
                _ => Some((row as f64 - 150.0) / 7.0),
            })
            .collect();
        assert_fused_like_planned(
            Arc::new(Float64Array::from(many)),
            &[
                ScalarValue::from(0.0),
                ScalarValue::from(-0.0),
                ScalarValue::from(5e-324),
                ScalarValue::from(-5e-324),
                ScalarValue::from(3.0),
                ScalarValue::from(f64::NAN),
                ScalarValue::from(f64::INFINITY),
                ScalarValue::from(f64::NEG_INFINITY),
            ],
        );
        assert_fused_like_planned(
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                Some(-1),
                None,
                Some(0),
                Some(18),
                Some(80),
                Some(i32::MAX),
            ])),
            &[
                ScalarValue::from(18),
                ScalarValue::from(i32::MAX),
                ScalarValue::from(i32::MIN),
            ],
        );
        assert_fused_like_planned(
            Arc::new(UInt8Array::from(vec![Some(0), Some(1), None, Some(255)])),
            &[ScalarValue::UInt8(Some(0)), ScalarValue::UInt8(Some(255))],
        );
        assert_fused_like_planned(
            Arc::new(Date32Array::from(vec![
                Some(-5),
                None,
                Some(0),
                Some(20_000),
            ])),
            &[
                ScalarValue::Date32(Some(0)),
                ScalarValue::Date32(Some(20_000)),
            ],
        );
    }

    #[test]
    fn only_comparisons_with_same_typed_literals_are_fused() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let a = || Arc::new(Column::new("a", 0)) as Arc<dyn PhysicalExpr>;
        let b = || Arc::new(Column::new("b", 1)) as Arc<dyn PhysicalExpr>;
        let s = Arc::new(Column::new("s", 2)) as Arc<dyn PhysicalExpr>;
        // Two columns: left alone.
        let columns: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(a(), Operator::Lt, b()));
        assert!(!fuse_ranges(columns, &schema).unwrap().transformed);
        // Text: left alone.
        let text: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(s, Operator::Lt, lit("m")));
        assert!(!fuse_ranges(text, &schema).unwrap().transformed);
        // Bounds of different columns: each comparison fused, the AND kept.
        let mixed: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(a(), Operator::GtEq, lit(1i64))),
            Operator::And,
            Arc::new(BinaryExpr::new(b(), Operator::LtEq, lit(2i64))),
        ));
        let fused = fuse_ranges(mixed, &schema).unwrap().data;
        assert_eq!(fused.to_string(), "a@0 >= 1 [fused] AND b@1 <= 2 [fused]");
        // Not equal is not a range.
        let not_equal: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(a(), Operator::NotEq, lit(1i64)));
        assert!(!fuse_ranges(not_equal, &schema).unwrap().transformed);
    }

    #[test]
    fn flags_gather_into_the_bits_of_a_word() {
        for seed in [0u64, 1, 0xdead_beef, u64::MAX, 0x8000_0000_0000_0001] {
            let mut flags = [0u8; 64];
            for (bit, flag) in flags.iter_mut().enumerate() {
                // Bit 0 from the seed, bit 2 from its complement, the others set.
                *flag = ((seed >> bit) & 1) as u8 | (((!seed >> bit) & 1) << 2) as u8 | 0xfa;
            }
            assert_eq!(gather_bits(&flags, 0), seed);
            assert_eq!(gather_bits(&flags, 2), !seed);
            assert_eq!(gather_bits(&flags, 1), u64::MAX);
        }
    }
}
