//! Check predicates over one text column, evaluated once per distinct value of each batch.
//!
//! Predicates such as `country IN ('US', 'GB', ...)`, `plan = 'basic' OR plan = 'premium'` or
//! `regexp_like(region, '^r[0-9]{2}$')` read a single text column, and the text columns that
//! data-quality checks look at usually hold a handful of distinct values (countries, plans,
//! channels). DataFusion evaluates such a predicate row by row: the regex runs 8,192 times per
//! batch, the IN list hashes every string, an OR chain compares every string once per value
//! and copies the whole batch for its right-hand side. Here the predicate runs on the batch's
//! distinct values only, and each row takes the verdict of its value.
//!
//! Finding the distinct values costs one probe of a small hash table per row. A `Utf8View`
//! row is identified by its 16-byte view: a string of up to 12 bytes is stored inline in it,
//! and a longer one by its length, prefix, buffer and offset, so equal views always hold equal
//! strings (equal strings at different offsets merely take two slots). `Utf8` and `LargeUtf8`
//! rows of up to 15 bytes are packed into the same 16 bytes. A batch with more than
//! [`MAX_DISTINCT`] distinct values, or a longer non-view string, is evaluated as before.
//!
//! Only the check projection of embedded runs is rewritten (see
//! [`crate::dq::predicates::rewrite_check_projection`]): the cluster ships its plans as
//! protobuf, which knows nothing of this expression.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericStringArray, LargeStringArray, OffsetSizeTrait,
    RecordBatch, StringArray, StringViewArray, UInt32Array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow::compute::take;
use arrow::datatypes::{ArrowNativeType, Decimal128Type, ToByteSlice};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_datafusion_err};
use datafusion::logical_expr::ColumnarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, LikeExpr,
};

use crate::dq::ranges::gather_bits;

/// Most distinct values of a batch before it is evaluated row by row instead.
pub(crate) const MAX_DISTINCT: usize = 256;

/// Slots of the probe table: a power of two, twice [`MAX_DISTINCT`], small enough for the L1
/// cache (typical batches fill a few percent of it, so probes stay short).
const TABLE_SLOTS: usize = 512;

/// Runs `$body` with `$keys` bound to the [`Keyed`] form of `$rows`, compiled once per form so
/// the loops over rows have no dispatch inside.
macro_rules! with_keys {
    ($rows:expr, $keys:ident => $body:expr) => {
        with_keys!(@arms $rows, $keys => $body; View, Utf8, LargeUtf8; W1, W2, W4, W8, W16)
    };
    (@arms $rows:expr, $keys:ident => $body:expr; $($text:ident),*; $($fixed:ident),*) => {
        match $rows {
            $(RowKeys::$text($keys) => $body,)*
            $(RowKeys::$fixed(values) => {
                let $keys = &values[..];
                $body
            })*
        }
    };
}

/// Wraps the outermost subexpressions of `expr` that qualify (see
/// [`DistinctValuePredicate::try_new`]).
pub(crate) fn memoize(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.transform_down(
        |node| match DistinctValuePredicate::try_new(&node, schema)? {
            Some(memoized) => Ok(Transformed::new(
                Arc::new(memoized) as Arc<dyn PhysicalExpr>,
                true,
                TreeNodeRecursion::Jump,
            )),
            None => Ok(Transformed::no(node)),
        },
    )
}

/// A boolean expression of one text column, evaluated on each batch's distinct values.
#[derive(Debug)]
pub(crate) struct DistinctValuePredicate {
    /// The expression as planned, over the whole batch; used when a batch has too many
    /// distinct values.
    predicate: Arc<dyn PhysicalExpr>,
    /// The column it reads, in the batch.
    column: usize,
    /// The same expression over a one-column batch of distinct values.
    on_distinct: Arc<dyn PhysicalExpr>,
    /// That one-column batch's schema.
    distinct_schema: SchemaRef,
    /// The verdicts of the values earlier batches held, shared by the partitions: once a batch
    /// holds only known values, it costs one probe per row.
    known: RwLock<Arc<KnownVerdicts>>,
}

impl DistinctValuePredicate {
    /// The memoized form of `expr` when it is boolean, deterministic and reads exactly one
    /// column, and evaluating it per row costs more than finding the row's value:
    /// - over a text column, anything but a NULL test (which reads only the validity bitmap);
    /// - over a column of numbers, dates or times, an IN list, an OR, a CASE, a LIKE or a
    ///   function call (a plain comparison is a vectorized kernel, cheaper than a probe).
    pub(crate) fn try_new(expr: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Option<Self>> {
        if expr.children().is_empty() || expr.data_type(schema)? != DataType::Boolean {
            return Ok(None);
        }
        let tests_only_null = (expr.is::<IsNullExpr>() || expr.is::<IsNotNullExpr>())
            && expr.children()[0].is::<Column>();
        if tests_only_null {
            return Ok(None);
        }
        let mut columns = Vec::new();
        let mut volatile = false;
        let mut costly = false;
        expr.apply(|node| {
            volatile |= node.is_volatile_node();
            costly |= node.is::<InListExpr>()
                || node.is::<CaseExpr>()
                || node.is::<LikeExpr>()
                || node.is::<ScalarFunctionExpr>()
                || node
                    .downcast_ref::<BinaryExpr>()
                    .is_some_and(|binary| *binary.op() == Operator::Or);
            if let Some(column) = node.downcast_ref::<Column>()
                && !columns.contains(&column.index())
            {
                columns.push(column.index());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let [column] = columns[..] else {
            return Ok(None);
        };
        let field = schema.field(column);
        let worth_it = match field.data_type() {
            DataType::Utf8View | DataType::Utf8 | DataType::LargeUtf8 => true,
            other => costly && other.is_primitive(),
        };
        if volatile || !worth_it {
            return Ok(None);
        }
        let on_distinct = Arc::clone(expr)
            .transform(|node| match node.downcast_ref::<Column>() {
                Some(read) => Ok(Transformed::yes(
                    Arc::new(Column::new(read.name(), 0)) as Arc<dyn PhysicalExpr>
                )),
                None => Ok(Transformed::no(node)),
            })?
            .data;
        Ok(Some(Self {
            predicate: Arc::clone(expr),
            column,
            on_distinct,
            distinct_schema: Arc::new(Schema::new(vec![field.clone()])),
            known: RwLock::default(),
        }))
    }
}

impl fmt::Display for DistinctValuePredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [per distinct value]", self.predicate)
    }
}

impl PartialEq for DistinctValuePredicate {
    fn eq(&self, other: &Self) -> bool {
        self.column == other.column && self.predicate.eq(&other.predicate)
    }
}

impl Eq for DistinctValuePredicate {}

impl Hash for DistinctValuePredicate {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.column.hash(state);
        self.predicate.hash(state);
    }
}

impl PhysicalExpr for DistinctValuePredicate {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.predicate.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let column = batch.column(self.column);
        let Some(rows) = RowKeys::of(column.as_ref()) else {
            return self.predicate.evaluate(batch);
        };
        let nulls = column.logical_nulls();
        // A poisoned lock only means another partition panicked; start from nothing known.
        let known = self
            .known
            .read()
            .map(|known| Arc::clone(&known))
            .unwrap_or_default();
        with_keys!(rows, keys => self.evaluate_keyed(batch, &keys, nulls.as_ref(), &known))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        // A leaf for the optimizer: the wrapper is put in place after physical optimization,
        // and its column index must not be remapped without `on_distinct` following.
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(self)
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.predicate.fmt_sql(f)
    }
}

impl DistinctValuePredicate {
    /// Evaluates a batch whose column's values are `rows`: every row's verdict looked up when
    /// `known` has them all, else the predicate run on the batch's distinct values (and their
    /// verdicts remembered).
    fn evaluate_keyed(
        &self,
        batch: &RecordBatch,
        rows: &impl Keyed,
        nulls: Option<&NullBuffer>,
        known: &KnownVerdicts,
    ) -> Result<ColumnarValue> {
        if let Some(verdicts) = known.look_up(rows, nulls) {
            return Ok(ColumnarValue::Array(Arc::new(verdicts)));
        }
        let Some(slots) = DistinctSlots::group(rows, nulls) else {
            return self.predicate.evaluate(batch);
        };
        let column = batch.column(self.column);
        let distinct = take(column, &UInt32Array::from(slots.first_rows.clone()), None)?;
        let distinct_rows = distinct.len();
        let distinct_batch =
            RecordBatch::try_new(Arc::clone(&self.distinct_schema), vec![distinct])?;
        let verdicts = self
            .on_distinct
            .evaluate(&distinct_batch)?
            .into_array(distinct_rows)?;
        let verdicts = verdicts.as_boolean_opt().ok_or_else(|| {
            internal_datafusion_err!("{} did not evaluate to booleans", self.predicate)
        })?;
        if let Some(more) = known.with(rows, &slots, verdicts)
            && let Ok(mut shared) = self.known.write()
        {
            *shared = Arc::new(more);
        }
        Ok(ColumnarValue::Array(spread(verdicts, &slots.of_row)))
    }
}

/// Each row's verdict: the verdict of its distinct value.
fn spread(verdicts: &BooleanArray, slot_of_row: &[u32]) -> ArrayRef {
    let rows = slot_of_row.len();
    let verdict_of_slot: Vec<bool> = (0..verdicts.len()).map(|i| verdicts.value(i)).collect();
    let values =
        BooleanBuffer::collect_bool(rows, |row| verdict_of_slot[slot_of_row[row] as usize]);
    let nulls = (verdicts.null_count() > 0).then(|| {
        let valid_of_slot: Vec<bool> = (0..verdicts.len()).map(|i| verdicts.is_valid(i)).collect();
        NullBuffer::new(BooleanBuffer::collect_bool(rows, |row| {
            valid_of_slot[slot_of_row[row] as usize]
        }))
    });
    Arc::new(BooleanArray::new(values, nulls))
}

/// A batch's rows grouped by value.
#[derive(Debug, PartialEq)]
struct DistinctSlots {
    /// For each distinct value (NULL included), the first row holding it.
    first_rows: Vec<u32>,
    /// For each row, its value's index in `first_rows`.
    of_row: Vec<u32>,
    /// The index of NULL in `first_rows`, when a row is NULL.
    null_slot: Option<u32>,
}

impl DistinctSlots {
    /// The distinct values of an array; `None` when it has more than [`MAX_DISTINCT`] or its
    /// values have no [`RowKeys`].
    #[cfg(test)]
    fn of(array: &dyn Array) -> Option<Self> {
        let nulls = array.logical_nulls();
        with_keys!(RowKeys::of(array)?, keys => Self::group(&keys, nulls.as_ref()))
    }

    /// Groups the rows by key; rows whose keys are [`RowKey::Hashed`] and equal have their
    /// bytes compared before they share a slot.
    fn group(rows: &impl Keyed, nulls: Option<&NullBuffer>) -> Option<Self> {
        let mut table = ProbeTable::new();
        let mut first_rows: Vec<u32> = Vec::new();
        let mut of_row = vec![0; rows.len()];
        let mut null_slot = None;
        for (row, slot_of_row) in of_row.iter_mut().enumerate() {
            if nulls.is_some_and(|nulls| nulls.is_null(row)) {
                *slot_of_row = *null_slot.get_or_insert_with(|| {
                    first_rows.push(row as u32);
                    (first_rows.len() - 1) as u32
                });
                continue;
            }
            let next = first_rows.len() as u32;
            let slot = match rows.key(row) {
                RowKey::Whole(whole) => table.slot(whole, next, 0, |_| true),
                RowKey::Hashed(hashed) => table.slot(hashed, next, 0, |slot| {
                    rows.bytes(first_rows[slot as usize] as usize) == rows.bytes(row)
                }),
            };
            if slot == next {
                if first_rows.len() == MAX_DISTINCT {
                    return None;
                }
                first_rows.push(row as u32);
            }
            *slot_of_row = slot;
        }
        Some(Self {
            first_rows,
            of_row,
            null_slot,
        })
    }
}

/// The values of an array as probe keys: text of any of Arrow's string types, or fixed-width
/// values (numbers, dates, times) as unsigned integers of their width.
enum RowKeys<'a> {
    View(&'a StringViewArray),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    W1(ScalarBuffer<u8>),
    W2(ScalarBuffer<u16>),
    W4(ScalarBuffer<u32>),
    W8(ScalarBuffer<u64>),
    W16(ScalarBuffer<i128>),
}

impl<'a> RowKeys<'a> {
    fn of(array: &'a dyn Array) -> Option<Self> {
        let data_type = array.data_type();
        Some(match data_type {
            DataType::Utf8View => RowKeys::View(array.as_string_view()),
            DataType::Utf8 => RowKeys::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => RowKeys::LargeUtf8(array.as_string::<i64>()),
            DataType::Decimal128(_, _) => {
                RowKeys::W16(array.as_primitive::<Decimal128Type>().values().clone())
            }
            // Intervals are structs, whose fields' order is not their value's.
            DataType::Interval(_) => return None,
            other if other.is_primitive() => match other.primitive_width()? {
                1 => RowKeys::W1(reinterpreted(array)?),
                2 => RowKeys::W2(reinterpreted(array)?),
                4 => RowKeys::W4(reinterpreted(array)?),
                8 => RowKeys::W8(reinterpreted(array)?),
                _ => return None,
            },
            _ => return None,
        })
    }
}

/// A fixed-width array's values as the unsigned integers of their bytes (equal integers are
/// equal values); `None` when the buffer is not aligned for them.
fn reinterpreted<N: ArrowNativeType>(array: &dyn Array) -> Option<ScalarBuffer<N>> {
    let data = array.to_data();
    let buffer = data.buffers().first()?;
    let aligned = buffer.as_ptr().align_offset(align_of::<N>()) == 0;
    (aligned && buffer.len() >= (data.offset() + data.len()) * size_of::<N>())
        .then(|| ScalarBuffer::new(buffer.clone(), data.offset(), data.len()))
}

/// Rows' values as probe keys.
trait Keyed {
    /// Whether rows holding the same long value usually share a raw key, so that a raw key
    /// found the slow way is worth remembering for the rest of the array (views decoded from
    /// one Parquet dictionary share theirs).
    const RAW_KEYS_REPEAT: bool;
    fn len(&self) -> usize;
    /// A row's key for [`DirectVerdicts`], read without branches where the type allows:
    /// rows of one array with equal raw keys hold equal values, and a value whose
    /// [`RowKey`] is `Whole` has that key as its raw key.
    fn raw(&self, row: usize) -> u128;
    /// The key of a row that is not NULL.
    fn key(&self, row: usize) -> RowKey;
    /// A row's value as bytes, compared when keys are [`RowKey::Hashed`].
    fn bytes(&self, row: usize) -> &[u8];
}

impl Keyed for &StringViewArray {
    const RAW_KEYS_REPEAT: bool = true;

    fn len(&self) -> usize {
        Array::len(*self)
    }

    /// The view: a short value's `Whole` key, else its length, prefix, buffer and offset.
    #[inline(always)]
    fn raw(&self, row: usize) -> u128 {
        self.views()[row]
    }

    #[inline(always)]
    fn key(&self, row: usize) -> RowKey {
        let view = self.views()[row];
        // The low 32 bits of a view are the length; up to 12 bytes are inline.
        if (view as u32) <= 12 {
            RowKey::Whole(view)
        } else {
            RowKey::Hashed(long_key(self.value(row).as_bytes()))
        }
    }

    #[inline(always)]
    fn bytes(&self, row: usize) -> &[u8] {
        self.value(row).as_bytes()
    }
}

impl<O: OffsetSizeTrait> Keyed for &GenericStringArray<O> {
    const RAW_KEYS_REPEAT: bool = false;

    fn len(&self) -> usize {
        Array::len(*self)
    }

    /// A short value's `Whole` key; a long value's is its row, marked as hashed (with a length
    /// no value has), so it equals no other row's.
    #[inline(always)]
    fn raw(&self, row: usize) -> u128 {
        match text_key(self.value(row).as_bytes()) {
            RowKey::Whole(whole) => whole,
            RowKey::Hashed(_) => HASHED_MARK | ((row as u128) << 32) | u128::from(u32::MAX),
        }
    }

    #[inline(always)]
    fn key(&self, row: usize) -> RowKey {
        text_key(self.value(row).as_bytes())
    }

    #[inline(always)]
    fn bytes(&self, row: usize) -> &[u8] {
        self.value(row).as_bytes()
    }
}

impl<N: ArrowNativeType + Into<WholeBits>> Keyed for &[N] {
    const RAW_KEYS_REPEAT: bool = false;

    fn len(&self) -> usize {
        <[N]>::len(self)
    }

    #[inline(always)]
    fn raw(&self, row: usize) -> u128 {
        self[row].into().0
    }

    #[inline(always)]
    fn key(&self, row: usize) -> RowKey {
        RowKey::Whole(self[row].into().0)
    }

    #[inline(always)]
    fn bytes(&self, row: usize) -> &[u8] {
        std::slice::from_ref(&self[row]).to_byte_slice()
    }
}

/// A fixed-width value's bits in a whole key.
struct WholeBits(u128);

macro_rules! whole_bits {
    ($($type:ty),*) => {$(
        impl From<$type> for WholeBits {
            #[inline(always)]
            fn from(value: $type) -> WholeBits {
                WholeBits(value as u128)
            }
        }
    )*};
}
whole_bits!(u8, u16, u32, u64, i128);

/// A predicate's verdict on one value, as bits: [`VERDICT_TRUE`] when TRUE and
/// [`VERDICT_VALID`] unless NULL (kept as a probe entry's payload).
type Verdict = u32;
const VERDICT_TRUE: Verdict = 1;
const VERDICT_VALID: Verdict = 2;
/// Set in a [`DirectVerdicts`] entry that holds a value's verdict.
const VERDICT_KNOWN: Verdict = 4;

/// The verdicts of up to 64 rows, a bit per row.
struct VerdictWords {
    value: u64,
    valid: u64,
    known: u64,
}

impl VerdictWords {
    /// Gives the rows in `rows` the known `verdict`.
    fn overwrite(&mut self, rows: u64, verdict: Verdict) {
        let all_if = |flag: Verdict| if verdict & flag != 0 { rows } else { 0 };
        self.value = (self.value & !rows) | all_if(VERDICT_TRUE);
        self.valid = (self.valid & !rows) | all_if(VERDICT_VALID);
        self.known |= rows;
    }
}

/// Verdicts of the distinct values seen so far, at most [`MAX_DISTINCT`].
#[derive(Debug, Clone, Default)]
struct KnownVerdicts {
    /// The verdicts of the values with `Whole` keys, probed once per row.
    direct: DirectVerdicts,
    /// Key to index in `values`, with the value's verdict.
    table: ProbeTable,
    /// Per known value, its bytes when its key is a digest (compared on a hit).
    values: Vec<Option<Box<[u8]>>>,
    /// The verdict on NULL, once a batch held one.
    null: Option<Verdict>,
}

impl KnownVerdicts {
    /// Every row's verdict, when every row's value is known.
    ///
    /// Each row costs one probe of [`DirectVerdicts`] by its raw key, without branches; the
    /// few rows it misses (long text, keys that share a slot) are found the slow way, and a
    /// long view's raw key is then added to this batch's copy of the table, so the next rows
    /// holding the same view hit it.
    fn look_up<R: Keyed>(&self, rows: &R, nulls: Option<&NullBuffer>) -> Option<BooleanArray> {
        if self.values.is_empty() {
            return None;
        }
        let len = rows.len();
        let nulls = nulls.filter(|nulls| nulls.null_count() > 0);
        let null_verdict = match nulls {
            Some(_) => self.null?,
            None => 0,
        };
        let valid_chunks = nulls.map(|nulls| nulls.inner().bit_chunks());
        let mut valid_rows = valid_chunks.as_ref().map(|chunks| chunks.iter_padded());
        let mut direct = Cow::Borrowed(&self.direct);
        let mut values = Vec::with_capacity(len.div_ceil(64));
        let mut valid = Vec::with_capacity(len.div_ceil(64));
        for start in (0..len).step_by(64) {
            let end = len.min(start + 64);
            let in_chunk = u64::MAX >> (64 - (end - start));
            let table: &DirectVerdicts = &direct;
            let mut flags = [0u8; 64];
            for (flag, row) in flags.iter_mut().zip(start..end) {
                // Verdicts fit in their low three bits.
                *flag = table.get(rows.raw(row)) as u8;
            }
            let mut words = VerdictWords {
                value: gather_bits(&flags, VERDICT_TRUE.trailing_zeros()),
                valid: gather_bits(&flags, VERDICT_VALID.trailing_zeros()),
                known: gather_bits(&flags, VERDICT_KNOWN.trailing_zeros()),
            };
            if let Some(valid_rows) = &mut valid_rows {
                // NULL rows take the verdict on NULL, whatever their slot holds.
                let null_rows = !valid_rows.next().unwrap_or(0) & in_chunk;
                words.overwrite(null_rows, null_verdict);
            }
            let mut missed = !words.known & in_chunk;
            while missed != 0 {
                let bit = missed.trailing_zeros() as usize;
                missed &= missed - 1;
                let row = start + bit;
                let verdict = self.verdict_of(rows, row)?;
                words.overwrite(1 << bit, verdict);
                if R::RAW_KEYS_REPEAT && direct.is_free(rows.raw(row)) {
                    direct.to_mut().learn(rows.raw(row), verdict);
                }
            }
            values.push(words.value);
            valid.push(words.valid);
        }
        let valid = BooleanBuffer::new(valid.into(), 0, len);
        let nulls = (valid.count_set_bits() < len).then(|| NullBuffer::new(valid));
        Some(BooleanArray::new(
            BooleanBuffer::new(values.into(), 0, len),
            nulls,
        ))
    }

    /// The verdict on a row's value that is not NULL, found by its [`RowKey`]; `None` when
    /// the value is unknown.
    fn verdict_of(&self, rows: &impl Keyed, row: usize) -> Option<Verdict> {
        let entry = match rows.key(row) {
            RowKey::Whole(whole) => self.table.find(whole, |_| true)?,
            RowKey::Hashed(hashed) => self.table.find(hashed, |index| {
                self.values[index as usize].as_deref() == Some(rows.bytes(row))
            })?,
        };
        Some(entry.payload)
    }

    /// These verdicts and a batch's, grouped in `slots` with `verdicts` per slot; `None` when
    /// the batch taught nothing new or the values would exceed [`MAX_DISTINCT`].
    fn with(
        &self,
        rows: &impl Keyed,
        slots: &DistinctSlots,
        verdicts: &BooleanArray,
    ) -> Option<KnownVerdicts> {
        let mut more = self.clone();
        let mut learned = false;
        for (slot, &row) in slots.first_rows.iter().enumerate() {
            let verdict = if verdicts.is_valid(slot) {
                VERDICT_VALID | Verdict::from(verdicts.value(slot))
            } else {
                0
            };
            if slots.null_slot == Some(slot as u32) {
                learned |= more.null.is_none();
                more.null = Some(verdict);
                continue;
            }
            let row = row as usize;
            let next = more.values.len() as u32;
            let (key, bytes) = match rows.key(row) {
                RowKey::Whole(whole) => (whole, None),
                RowKey::Hashed(hashed) => (hashed, Some(rows.bytes(row))),
            };
            let index = more.table.slot(key, next, verdict, |index| {
                more.values[index as usize].as_deref() == bytes
            });
            if index == next {
                // The table has room for twice as many; the copy is dropped anyway.
                if more.values.len() == MAX_DISTINCT {
                    return None;
                }
                more.values.push(bytes.map(Box::from));
                learned = true;
            }
        }
        if !learned {
            return None;
        }
        more.direct = DirectVerdicts::new(
            more.table
                .entries
                .iter()
                .filter(|entry| {
                    entry.slot != ProbeTable::EMPTY && more.values[entry.slot as usize].is_none()
                })
                .map(|entry| (entry.key, entry.payload)),
        );
        Some(more)
    }
}

/// How a row's value is found in the probe table.
#[derive(Clone, Copy)]
enum RowKey {
    /// The value itself, in 16 bytes: equal keys are equal values.
    Whole(u128),
    /// A digest of a longer value: equal keys must still be compared.
    Hashed(u128),
}

/// The top bit, set in every `Hashed` key.
const HASHED_MARK: u128 = 1 << 127;

/// A text value's key: up to 15 bytes are packed with their length (so `"a"` and `"a\0"`
/// differ), longer values are hashed.
fn text_key(bytes: &[u8]) -> RowKey {
    if bytes.len() > 15 {
        return RowKey::Hashed(long_key(bytes));
    }
    let mut packed = [0u8; 16];
    packed[..bytes.len()].copy_from_slice(bytes);
    packed[15] = bytes.len() as u8;
    RowKey::Whole(u128::from_le_bytes(packed))
}

/// The digest of a long value: its hash and length, marked as hashed. It never equals a
/// `Whole` key: a view's low 32 bits are its length, at most 12 for a `Whole` view and over 12
/// for a hashed one; a packed key's top byte is a length of at most 15, without the mark.
fn long_key(bytes: &[u8]) -> u128 {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0x1a4e_f06e).hash_one(bytes);
    HASHED_MARK | (u128::from(hash) << 32) | bytes.len() as u128
}

/// Known verdicts by raw key (see [`Keyed::raw`]), one probe per row without branches: each
/// key has one slot, among 256 indexed by a byte of its hash (no bounds to check), and the
/// hash is chosen so that the known keys rarely share one. A key that lost its slot to another
/// is simply missed, and found the slow way.
#[derive(Debug, Clone)]
struct DirectVerdicts {
    /// An entry without [`VERDICT_KNOWN`] is free.
    entries: Box<[DirectEntry; 256]>,
    multiplier: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct DirectEntry {
    key: u128,
    verdict: Verdict,
}

impl Default for DirectVerdicts {
    fn default() -> Self {
        Self::new(std::iter::empty())
    }
}

impl DirectVerdicts {
    /// Odd multipliers tried in turn until the known keys land in distinct slots.
    const MULTIPLIERS: [u64; 8] = [
        0x9E37_79B9_7F4A_7C15,
        0xC2B2_AE3D_27D4_EB4F,
        0x1656_67B1_9E37_79F9,
        0xD6E8_FEB8_6659_FD93,
        0xA076_1D64_78BD_642F,
        0xE703_7ED1_A0B4_28DB,
        0x8EBC_6AF0_9C88_C6E3,
        0x5899_65CC_7537_4CC3,
    ];

    /// A table of `known` keys and verdicts, each key distinct: the first multiplier that
    /// gives each key its own slot, else the one that misses fewest.
    fn new(known: impl Iterator<Item = (u128, Verdict)> + Clone) -> Self {
        let mut fewest_missed = (usize::MAX, Self::empty(Self::MULTIPLIERS[0]));
        for multiplier in Self::MULTIPLIERS {
            let mut table = Self::empty(multiplier);
            let mut missed = 0;
            for (key, verdict) in known.clone() {
                if table.is_free(key) {
                    table.learn(key, verdict);
                } else {
                    missed += 1;
                }
            }
            if missed < fewest_missed.0 {
                fewest_missed = (missed, table);
            }
            if missed == 0 {
                break;
            }
        }
        fewest_missed.1
    }

    fn empty(multiplier: u64) -> Self {
        Self {
            entries: Box::new([DirectEntry::default(); 256]),
            multiplier,
        }
    }

    #[inline(always)]
    fn slot(&self, key: u128) -> usize {
        usize::from((mix(key).wrapping_mul(self.multiplier) >> 56) as u8)
    }

    /// The verdict on `key` with [`VERDICT_KNOWN`] set, or 0 when it is not in the table.
    #[inline(always)]
    fn get(&self, key: u128) -> Verdict {
        let entry = &self.entries[self.slot(key)];
        if entry.key == key { entry.verdict } else { 0 }
    }

    /// Whether `key`'s slot is free.
    fn is_free(&self, key: u128) -> bool {
        self.entries[self.slot(key)].verdict & VERDICT_KNOWN == 0
    }

    /// Puts `key` in its slot, which [`DirectVerdicts::is_free`].
    fn learn(&mut self, key: u128, verdict: Verdict) {
        self.entries[self.slot(key)] = DirectEntry {
            key,
            verdict: verdict | VERDICT_KNOWN,
        };
    }
}

/// A key's 128 bits folded into 64 for hashing.
#[inline(always)]
fn mix(key: u128) -> u64 {
    (key as u64) ^ ((key >> 64) as u64).rotate_left(29)
}

/// Open-addressing table from a 16-byte key to its slot, for at most [`MAX_DISTINCT`] keys.
#[derive(Debug, Clone)]
struct ProbeTable {
    /// Key, slot and payload side by side, so a probe reads one cache line; a fixed-size array,
    /// so masked indices need no bounds checks.
    entries: Box<[ProbeEntry; TABLE_SLOTS]>,
}

#[derive(Debug, Clone, Copy)]
struct ProbeEntry {
    key: u128,
    slot: u32,
    /// What the table's owner keeps with the slot ([`KnownVerdicts`]: the verdict).
    payload: u32,
}

impl Default for ProbeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeTable {
    const EMPTY: u32 = u32::MAX;

    fn new() -> Self {
        let empty = ProbeEntry {
            key: 0,
            slot: Self::EMPTY,
            payload: 0,
        };
        Self {
            entries: Box::new([empty; TABLE_SLOTS]),
        }
    }

    /// Where probing for `key` starts.
    #[inline(always)]
    fn home(key: u128) -> usize {
        let mixed = mix(key);
        let bits = TABLE_SLOTS.trailing_zeros();
        (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// The entry keyed `key` for which `same(slot)` holds, if any.
    #[inline(always)]
    fn find(&self, key: u128, same: impl Fn(u32) -> bool) -> Option<&ProbeEntry> {
        let mut index = Self::home(key);
        loop {
            let entry = &self.entries[index & (TABLE_SLOTS - 1)];
            if entry.slot == Self::EMPTY {
                return None;
            }
            if entry.key == key && same(entry.slot) {
                return Some(entry);
            }
            index += 1;
        }
    }

    /// The slot of the value keyed `key`: the slot of an entry with the same key for which
    /// `same(slot)` holds, else `next`, which is recorded with `payload`.
    #[inline(always)]
    fn slot(&mut self, key: u128, next: u32, payload: u32, same: impl Fn(u32) -> bool) -> u32 {
        let mut index = Self::home(key);
        loop {
            let entry = &mut self.entries[index & (TABLE_SLOTS - 1)];
            if entry.slot == Self::EMPTY {
                *entry = ProbeEntry {
                    key,
                    slot: next,
                    payload,
                };
                return next;
            }
            if entry.key == key && same(entry.slot) {
                return entry.slot;
            }
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, InListExpr, lit};

    fn schema(data_type: DataType) -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("country", data_type, true),
        ])
    }

    fn country(schema: &Schema) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new_with_schema("country", schema).unwrap())
    }

    /// A text literal of the type of `country`.
    fn text(schema: &Schema, value: &str) -> Arc<dyn PhysicalExpr> {
        let value = ScalarValue::from(value)
            .cast_to(schema.field(1).data_type())
            .unwrap();
        lit(value)
    }

    /// `country IN ('US', 'GB', <a 20-byte string>) OR country = 'x'`.
    fn predicate(schema: &Schema) -> Arc<dyn PhysicalExpr> {
        let long = "a-country-of-20-byte";
        let in_list = InListExpr::try_new(
            country(schema),
            vec![text(schema, "US"), text(schema, "GB"), text(schema, long)],
            false,
            schema,
        )
        .unwrap();
        let equals_x = BinaryExpr::new(country(schema), Operator::Eq, text(schema, "x"));
        Arc::new(BinaryExpr::new(
            Arc::new(in_list),
            Operator::Or,
            Arc::new(equals_x),
        ))
    }

    fn values(rows: usize) -> Vec<Option<String>> {
        let pool = [
            Some("US"),
            Some("GB"),
            None,
            Some("DE"),
            Some("a-country-of-20-byte"),
            Some("another-long-country"),
            Some("x"),
            Some(""),
        ];
        (0..rows)
            .map(|row| pool[(row * 7 + row / 3) % pool.len()].map(str::to_string))
            .collect()
    }

    fn batch(schema: &Schema, countries: ArrayRef) -> RecordBatch {
        let ids = Arc::new(arrow::array::Int64Array::from_iter_values(
            0..countries.len() as i64,
        ));
        RecordBatch::try_new(Arc::new(schema.clone()), vec![ids, countries]).unwrap()
    }

    #[test]
    fn verdicts_equal_row_by_row_evaluation_for_every_text_type() {
        let rows = values(1000);
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringViewArray::from_iter(
                rows.iter().map(|v| v.as_deref()),
            )),
            Arc::new(StringArray::from_iter(rows.iter().map(|v| v.as_deref()))),
            Arc::new(LargeStringArray::from_iter(
                rows.iter().map(|v| v.as_deref()),
            )),
        ];
        for array in arrays {
            let schema = schema(array.data_type().clone());
            let batch = batch(&schema, array);
            let predicate = predicate(&schema);
            let memoized = DistinctValuePredicate::try_new(&predicate, &schema)
                .unwrap()
                .expect("a predicate of one text column qualifies");
            assert!(DistinctSlots::of(batch.column(1).as_ref()).is_some());
            let expected = predicate
                .evaluate(&batch)
                .unwrap()
                .into_array(1000)
                .unwrap();
            let actual = memoized.evaluate(&batch).unwrap().into_array(1000).unwrap();
            assert_eq!(actual.as_ref(), expected.as_ref(), "{}", schema.field(1));
            // NULL rows stay NULL, as row by row.
            assert!(actual.null_count() > 0);
            // Every value is known now: the batch again, and a slice of it (NULLs at an
            // offset), are answered by the look-up alone.
            let again = memoized.evaluate(&batch).unwrap().into_array(1000).unwrap();
            assert_eq!(again.as_ref(), expected.as_ref(), "{}", schema.field(1));
            let slice = batch.slice(5, 900);
            let column = slice.column(1);
            let known = Arc::clone(&memoized.known.read().unwrap());
            let looked_up = RowKeys::of(column.as_ref()).and_then(|rows| {
                with_keys!(rows, keys => known.look_up(&keys, column.logical_nulls().as_ref()))
            });
            let expected = predicate.evaluate(&slice).unwrap().into_array(900).unwrap();
            assert_eq!(
                looked_up.map(|v| Arc::new(v) as ArrayRef).as_ref(),
                Some(&expected),
                "{}",
                schema.field(1)
            );
        }
    }

    #[test]
    fn look_ups_of_many_values_equal_row_by_row_evaluation() {
        // 200 distinct values: the look-up table cannot give each its own slot, so some rows
        // are found the slow way. Long text values are stored at a different offset in each
        // batch.
        let words: Vec<String> = (0..200)
            .map(|i| format!("{i}{}", "-".repeat(i % 19)))
            .collect();
        let text_rows = |batch: usize| {
            (0..1000).map(move |row| (row % 13 != 0).then_some((row * 7 + batch * 11) % 200))
        };
        let arrays = |batch: usize| -> Vec<ArrayRef> {
            vec![
                Arc::new(StringViewArray::from_iter(
                    text_rows(batch).map(|i| i.map(|i| words[i].as_str())),
                )),
                Arc::new(StringArray::from_iter(
                    text_rows(batch).map(|i| i.map(|i| words[i].as_str())),
                )),
                Arc::new(arrow::array::Int32Array::from_iter(
                    text_rows(batch).map(|i| i.map(|i| i as i32 * 1_000_003)),
                )),
            ]
        };
        for kind in 0..3 {
            let schema = schema(arrays(0)[kind].data_type().clone());
            let column = country(&schema);
            let list = match kind {
                2 => vec![lit(3_000_009i32), lit(0i32), lit(199_000_597i32)],
                _ => vec![
                    text(&schema, &words[3]),
                    text(&schema, &words[0]),
                    text(&schema, &words[18]),
                ],
            };
            let predicate: Arc<dyn PhysicalExpr> =
                Arc::new(InListExpr::try_new(column, list, false, &schema).unwrap());
            let memoized = DistinctValuePredicate::try_new(&predicate, &schema)
                .unwrap()
                .unwrap();
            for index in 0..4 {
                let batch = batch(&schema, Arc::clone(&arrays(index)[kind]));
                let expected = predicate.evaluate(&batch).unwrap().into_array(0).unwrap();
                let actual = memoized.evaluate(&batch).unwrap().into_array(0).unwrap();
                assert_eq!(
                    actual.as_ref(),
                    expected.as_ref(),
                    "{} batch {index}",
                    schema.field(1)
                );
                assert!(actual.as_boolean().true_count() > 0);
            }
            let known = memoized.known.read().unwrap();
            assert_eq!(known.values.len(), 200, "{}", schema.field(1));
        }
    }

    #[test]
    fn verdicts_remembered_across_batches_equal_row_by_row_evaluation() {
        let schema = schema(DataType::Utf8View);
        let predicate = predicate(&schema);
        let memoized = DistinctValuePredicate::try_new(&predicate, &schema)
            .unwrap()
            .unwrap();
        let batch_of = |values: &[Option<&str>]| {
            batch(
                &schema,
                Arc::new(StringViewArray::from_iter(values.iter().copied())),
            )
        };
        let long = Some("a-country-of-20-byte");
        let batches = [
            // Learned: US, DE, the long value.
            batch_of(&[Some("US"), Some("DE"), long, Some("US")]),
            // Every value known: answered by look-up alone.
            batch_of(&[long, Some("DE"), Some("US")]),
            // A long value equal to a known one in its first 16 bytes, then a NULL: learned.
            batch_of(&[Some("a-country-of-20-byteX"), None, Some("DE")]),
            // Known again, NULL included.
            batch_of(&[None, Some("a-country-of-20-byteX"), long, Some("US")]),
            // An unknown short value among known ones.
            batch_of(&[Some("US"), Some("x"), Some("GB")]),
        ];
        for (index, batch) in batches.iter().enumerate() {
            let rows = batch.num_rows();
            let expected = predicate.evaluate(batch).unwrap().into_array(rows).unwrap();
            let actual = memoized.evaluate(batch).unwrap().into_array(rows).unwrap();
            assert_eq!(actual.as_ref(), expected.as_ref(), "batch {index}");
        }
        let known = memoized.known.read().unwrap();
        assert_eq!(known.values.len(), 6, "US, DE, two long values, x and GB");
        assert!(known.null.is_some());
        // Batches of known values (NULL included) are answered by the look-up.
        let column = batches[3].column(1);
        let rows = column.as_string_view();
        let looked_up = known.look_up(&rows, column.logical_nulls().as_ref());
        let expected = predicate
            .evaluate(&batches[3])
            .unwrap()
            .into_array(4)
            .unwrap();
        assert_eq!(
            looked_up.map(|v| Arc::new(v) as ArrayRef).as_ref(),
            Some(&expected)
        );
    }

    #[test]
    fn many_distinct_values_are_evaluated_row_by_row() {
        let many: Vec<String> = (0..MAX_DISTINCT + 1).map(|i| format!("c{i}")).collect();
        let array: ArrayRef = Arc::new(StringViewArray::from_iter_values(&many));
        assert_eq!(DistinctSlots::of(array.as_ref()), None);
        let schema = schema(DataType::Utf8View);
        let batch = batch(&schema, array);
        let predicate = predicate(&schema);
        let memoized = DistinctValuePredicate::try_new(&predicate, &schema)
            .unwrap()
            .unwrap();
        let expected = predicate.evaluate(&batch).unwrap().into_array(0).unwrap();
        let actual = memoized.evaluate(&batch).unwrap().into_array(0).unwrap();
        assert_eq!(actual.as_ref(), expected.as_ref());
        // Long strings are grouped by value, wherever they are stored.
        let long: ArrayRef = Arc::new(StringViewArray::from(vec![
            "a-string-of-21-bytes!",
            "a-string-of-21-bytes!",
            "a-string-of-21-bytes?",
            "a-string-of-21-bytes!",
        ]));
        assert_eq!(
            DistinctSlots::of(long.as_ref()).map(|s| s.of_row),
            Some(vec![0, 0, 1, 0])
        );
    }

    #[test]
    fn only_subexpressions_of_one_text_column_are_memoized() {
        let schema = schema(DataType::Utf8View);
        let id: Arc<dyn PhysicalExpr> = Arc::new(Column::new_with_schema("id", &schema).unwrap());
        // `country = 'x' OR id < 5`: the comparison of country is wrapped, the OR is not.
        let mixed: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(
                country(&schema),
                Operator::Eq,
                text(&schema, "x"),
            )),
            Operator::Or,
            Arc::new(BinaryExpr::new(id, Operator::Lt, lit(5i64))),
        ));
        let rewritten = memoize(Arc::clone(&mixed), &schema).unwrap();
        assert!(rewritten.transformed);
        assert_eq!(
            rewritten.data.to_string(),
            "country@1 = x [per distinct value] OR id@0 < 5"
        );
        // A NULL test reads only the validity bitmap: left alone.
        let null_test: Arc<dyn PhysicalExpr> = Arc::new(IsNotNullExpr::new(country(&schema)));
        assert!(!memoize(null_test, &schema).unwrap().transformed);
        // A predicate of a number column: left alone.
        let id: Arc<dyn PhysicalExpr> = Arc::new(Column::new_with_schema("id", &schema).unwrap());
        let numeric: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(id, Operator::Lt, lit(5i64)));
        assert!(!memoize(numeric, &schema).unwrap().transformed);
        // The rewritten expression evaluates like the original.
        let batch = batch(
            &schema,
            Arc::new(StringViewArray::from_iter(
                values(300).iter().map(|v| v.as_deref()),
            )),
        );
        assert_eq!(
            rewritten
                .data
                .evaluate(&batch)
                .unwrap()
                .into_array(300)
                .unwrap()
                .as_ref(),
            mixed
                .evaluate(&batch)
                .unwrap()
                .into_array(300)
                .unwrap()
                .as_ref()
        );
    }
}
