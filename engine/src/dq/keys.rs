//! `unique` checks evaluated in the single pass, without a second plan over the key.
//!
//! Every output partition appends each row's key (the check's columns, encoded in Arrow's row
//! format, whose byte order is the columns' order) to a buffer. When the partition ends, the
//! buffer is sorted; when the run's partitions are merged, the sorted runs are merged and
//! every key seen more than once marks its rows as failing. This replaces a grouped aggregate
//! over the key (a second read of the key columns, a hash repartition, a hash table of every
//! distinct key) and the join the dataset then made with it.
//!
//! - Keys of fixed-width columns that fit 16 bytes of row format (an `Int64` id takes 9) are
//!   kept as `u128` and sorted by a radix sort; other keys (strings, wide column sets) as bytes.
//! - The buffer's memory is reserved from the session's memory pool. When the pool refuses
//!   more, the buffer is sorted and written to a spill file of the session's disk manager, and
//!   the merge reads it back: memory stays bounded, as for DataFusion's own spilling operators.
//! - A key of one `BIGINT` or `INT` column starts as bitmaps of the ids seen (`DenseKeys`):
//!   while the ids are dense (surrogate keys), that is a bit test per row and a fraction of
//!   the keys' memory. When they prove sparse, the bitmaps become a sorted run of keys and the
//!   set goes on as above.
//! - Rows with a NULL in a key column are never duplicates: they count as `null_skipped`, or
//!   as failing with `nulls = "fail"` (then sampled like a predicate's failing rows).
//!
//! The key set is proportional to the rows, so it is used only where every partition ends in
//! one process (the planner's `CheckPlacement::InProcess`); it is never serialized.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::row::{RowConverter, Rows};
use datafusion::execution::disk_manager::DiskManager;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::spill_file::SpillFile;
use lakeforge_planner::NullPolicy;

use crate::dq::dense::{DenseKeys, TooSparse};
use crate::dq::radix::radix_sort;
use crate::dq::state::{Samples, display_rows};
use crate::error::{EngineError, Result};

/// The most bytes a key may take in row format to be kept as a `u128`.
const FIXED_KEY_BYTES: usize = 16;

/// Where a partition's key buffer may take memory from and spill to.
#[derive(Debug, Clone)]
pub struct KeyResources {
    /// The session's memory pool.
    pub pool: Arc<dyn MemoryPool>,
    /// The session's disk manager, for spill files.
    pub disk: Arc<DiskManager>,
}

/// The width in row format of a key over `types`, when every column has a fixed width and the
/// key fits a `u128`.
pub fn fixed_key_width(types: &[DataType]) -> Option<usize> {
    let mut width = 0;
    for data_type in types {
        let value = match data_type {
            DataType::Boolean => 1,
            other => other.primitive_width()?,
        };
        // One byte marks NULL or valid, then the value.
        width += 1 + value;
    }
    (width <= FIXED_KEY_BYTES).then_some(width)
}

/// Keys not sorted yet, or one sorted run kept in memory.
#[derive(Debug, Clone, Default, PartialEq)]
enum KeyBuffer {
    /// Row-format keys of `width` bytes, big-endian in a `u128` (so integer order is byte order).
    Fixed(Vec<u128>),
    /// Variable-width row-format keys, back to back; `ends[i]` is where key `i` ends.
    Variable { bytes: Vec<u8>, ends: Vec<usize> },
    #[default]
    Empty,
}

impl KeyBuffer {
    /// Adds fixed-width keys, turning an empty buffer into a fixed-width one (a key set's
    /// buffer is never variable-width when its keys are fixed-width: see `fixed_width`).
    fn extend_fixed(&mut self, keys: impl Iterator<Item = u128>) {
        match self {
            KeyBuffer::Fixed(pending) => pending.extend(keys),
            empty => *empty = KeyBuffer::Fixed(keys.collect()),
        }
    }

    fn len(&self) -> usize {
        match self {
            KeyBuffer::Fixed(keys) => keys.len(),
            KeyBuffer::Variable { ends, .. } => ends.len(),
            KeyBuffer::Empty => 0,
        }
    }

    fn memory(&self) -> usize {
        match self {
            KeyBuffer::Fixed(keys) => keys.capacity() * size_of::<u128>(),
            KeyBuffer::Variable { bytes, ends } => {
                bytes.capacity() + ends.capacity() * size_of::<usize>()
            }
            KeyBuffer::Empty => 0,
        }
    }

    fn key<'a>(
        &'a self,
        index: usize,
        width: usize,
        scratch: &'a mut [u8; FIXED_KEY_BYTES],
    ) -> &'a [u8] {
        match self {
            KeyBuffer::Fixed(keys) => {
                *scratch = keys[index].to_be_bytes();
                &scratch[..width]
            }
            KeyBuffer::Variable { bytes, ends } => {
                let start = if index == 0 { 0 } else { ends[index - 1] };
                &bytes[start..ends[index]]
            }
            KeyBuffer::Empty => &[],
        }
    }
}

/// A sorted run of keys: in memory, or in a spill file.
#[derive(Clone)]
enum Run {
    Memory(KeyBuffer),
    Spilled {
        file: Arc<dyn SpillFile>,
        keys: usize,
    },
}

impl PartialEq for Run {
    fn eq(&self, other: &Run) -> bool {
        match (self, other) {
            (Run::Memory(a), Run::Memory(b)) => a == b,
            (Run::Spilled { file: a, keys: m }, Run::Spilled { file: b, keys: n }) => {
                Arc::ptr_eq(a, b) && m == n
            }
            _ => false,
        }
    }
}

/// One partition's (or, once merged, the run's) keys of a `unique` check.
pub struct KeySet {
    /// Row-format width of every key when keys are kept as `u128`.
    fixed_width: Option<usize>,
    nulls: NullPolicy,
    /// The ids of a one-integer-column key while they are dense; `None` once they are kept as
    /// keys (then `pending` and `runs` hold them).
    dense: Option<Box<DenseKeys>>,
    /// Failing rows that the keys do not show: the rows beyond two of a duplicated id when
    /// its bitmaps became keys (see [`DenseKeys::into_sorted_keys`]).
    uncounted_failures: u64,
    /// Keys of the current partition, not sorted yet.
    pending: KeyBuffer,
    /// Sorted runs.
    runs: Vec<Run>,
    /// Rows with a NULL key column.
    null_keys: u64,
    /// The smallest rows with a NULL key column, when those fail.
    null_samples: Samples,
    memory: Vec<MemoryReservation>,
    disk: Option<Arc<DiskManager>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("fixed_width", &self.fixed_width)
            .field("dense", &self.dense.is_some())
            .field("pending", &self.pending.len())
            .field("runs", &self.runs.len())
            .field("null_keys", &self.null_keys)
            .finish()
    }
}

impl Clone for KeySet {
    /// A copy of the keys; it holds no memory reservation of its own.
    fn clone(&self) -> KeySet {
        KeySet {
            fixed_width: self.fixed_width,
            nulls: self.nulls,
            dense: self.dense.clone(),
            uncounted_failures: self.uncounted_failures,
            pending: self.pending.clone(),
            runs: self.runs.clone(),
            null_keys: self.null_keys,
            null_samples: self.null_samples.clone(),
            memory: Vec::new(),
            disk: self.disk.clone(),
        }
    }
}

impl PartialEq for KeySet {
    fn eq(&self, other: &KeySet) -> bool {
        self.fixed_width == other.fixed_width
            && self.nulls == other.nulls
            && self.dense == other.dense
            && self.uncounted_failures == other.uncounted_failures
            && self.pending == other.pending
            && self.runs == other.runs
            && self.null_keys == other.null_keys
            && self.null_samples == other.null_samples
    }
}

impl serde::Serialize for KeySet {
    /// Never sent: the planner evaluates `unique` from collected keys only where every
    /// partition ends in the process that merges them.
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "the keys of a unique check are evaluated in one process and cannot be sent",
        ))
    }
}

impl<'de> serde::Deserialize<'de> for KeySet {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<KeySet, D::Error> {
        Err(serde::de::Error::custom(
            "the keys of a unique check are evaluated in one process and cannot be received",
        ))
    }
}

/// What the merged key set concludes.
#[derive(Debug, PartialEq)]
pub struct KeyVerdict {
    /// Rows failing: rows whose key another row has, and rows with a NULL key column when
    /// NULLs fail.
    pub failed: u64,
    /// Rows with a NULL key column, when NULLs pass.
    pub null_skipped: u64,
    /// The smallest failing rows.
    pub samples: Samples,
}

impl KeySet {
    /// An empty key set for a partition whose key columns are `columns`, of `types`; memory is
    /// reserved from `resources` (unaccounted without them).
    pub fn new(
        check: &str,
        types: &[DataType],
        columns: &[usize],
        nulls: NullPolicy,
        samples: usize,
        resources: Option<&KeyResources>,
    ) -> KeySet {
        let fixed_width = fixed_key_width(types);
        let dense = matches!(types, [DataType::Int64 | DataType::Int32]);
        KeySet {
            fixed_width,
            nulls,
            dense: dense.then(|| Box::new(DenseKeys::new(samples))),
            uncounted_failures: 0,
            pending: KeyBuffer::Empty,
            runs: Vec::new(),
            null_keys: 0,
            null_samples: Samples {
                limit: samples,
                columns: columns.to_vec(),
                kept: Vec::new(),
            },
            memory: resources
                .map(|r| {
                    MemoryConsumer::new(format!("unique check '{check}' keys"))
                        .with_can_spill(true)
                        .register(&r.pool)
                })
                .into_iter()
                .collect(),
            disk: resources.map(|r| Arc::clone(&r.disk)),
        }
    }

    /// Adds the keys of `batch` (key columns `columns`, encoded by `converter`).
    pub fn observe(
        &mut self,
        converter: &RowConverter,
        batch: &RecordBatch,
        columns: &[usize],
    ) -> Result<()> {
        let arrays: Vec<ArrayRef> = columns
            .iter()
            .map(|&c| Arc::clone(batch.column(c)))
            .collect();
        let mut valid: Option<BooleanBuffer> = None;
        for array in &arrays {
            if let Some(nulls) = array.logical_nulls() {
                valid = Some(match valid {
                    None => nulls.inner().clone(),
                    Some(v) => &v & nulls.inner(),
                });
            }
        }
        if let Some(valid) = &valid {
            let null_rows = valid.len() - valid.count_set_bits();
            self.null_keys += null_rows as u64;
            if null_rows > 0 && self.nulls == NullPolicy::Fail {
                self.null_samples.offer(converter, batch, &!valid)?;
            }
        }
        let before = self.pending.memory();
        if let Some(dense) = &mut self.dense {
            let held = dense.memory();
            let outcome = match &arrays[..] {
                [array] => match (
                    array.as_primitive_opt::<Int64Type>(),
                    array.as_primitive_opt::<Int32Type>(),
                ) {
                    (Some(ids), _) => dense.observe(ids.values(), valid.as_ref()),
                    (_, Some(ids)) => dense.observe(ids.values(), valid.as_ref()),
                    _ => Err(TooSparse),
                },
                _ => Err(TooSparse),
            };
            if outcome.is_ok() {
                let grown = dense.memory().saturating_sub(held);
                let refused = self
                    .memory
                    .first()
                    .is_some_and(|reservation| reservation.try_grow(grown).is_err());
                if !refused {
                    return Ok(());
                }
                // The pool refused the bitmaps' growth: the ids become keys, which spill.
                self.leave_dense();
                return self.reserve_pending(before);
            }
            // Too sparse for bitmaps: the ids so far become keys, and so does this batch.
            self.leave_dense();
        }
        if let ([array], Some(_)) = (&arrays[..], self.fixed_width)
            && let Some(ids) = array.as_primitive_opt::<Int64Type>()
        {
            // The common key, one BIGINT id, packed straight from its values: the same bytes
            // as its row format (see `int64_row_key`) without encoding every row first.
            let values = ids.values();
            let pending = &mut self.pending;
            match &valid {
                None => pending.extend_fixed(values.iter().map(|&id| int64_row_key(id))),
                Some(valid) => {
                    pending.extend_fixed(valid.set_indices().map(|i| int64_row_key(values[i])))
                }
            }
        } else {
            let rows = converter
                .convert_columns(&arrays)
                .map_err(|e| EngineError::arrow("cannot encode the key", e))?;
            match &valid {
                None => self.append(&rows, 0..rows.num_rows()),
                Some(valid) => self.append(&rows, valid.set_indices()),
            }
        }
        self.reserve_pending(before)
    }

    /// Reserves the pending keys' growth since they held `before` bytes, spilling them when
    /// the pool refuses.
    fn reserve_pending(&mut self, before: usize) -> Result<()> {
        let grown = self.pending.memory().saturating_sub(before);
        if let Some(reservation) = self.memory.first()
            && reservation.try_grow(grown).is_err()
        {
            self.spill()?;
        }
        Ok(())
    }

    /// Turns the dense ids, if any, into pending keys (sorted), releasing the bitmaps'
    /// reservation; the caller reserves the keys.
    fn leave_dense(&mut self) {
        let Some(dense) = self.dense.take() else {
            return;
        };
        let held = dense.memory();
        // A dense key set has one integer column: its row format is fixed-width.
        let value_bytes = self.fixed_width.unwrap_or(1) - 1;
        let (keys, uncounted) = dense.into_sorted_keys(|id| integer_row_key(id, value_bytes));
        self.uncounted_failures += uncounted;
        self.pending.extend_fixed(keys.into_iter());
        if let Some(reservation) = self.memory.first() {
            reservation.shrink(held.min(reservation.size()));
        }
    }

    fn append(&mut self, rows: &Rows, indices: impl Iterator<Item = usize>) {
        match (self.fixed_width, &mut self.pending) {
            (Some(_), pending) => pending.extend_fixed(indices.map(|i| pack(rows, i))),
            (None, KeyBuffer::Variable { bytes, ends }) => {
                push_variable(rows, indices, bytes, ends)
            }
            (None, pending) => {
                let (mut bytes, mut ends) = (Vec::new(), Vec::new());
                push_variable(rows, indices, &mut bytes, &mut ends);
                *pending = KeyBuffer::Variable { bytes, ends };
            }
        }
    }

    /// Sorts the pending keys into a run kept in memory (at the end of the partition).
    pub fn seal(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.len() > 0 {
            // A radix sort needs a second buffer as large as the keys; without the memory for
            // it, the keys are sorted in place.
            let scratch = match (&pending, self.memory.first()) {
                (KeyBuffer::Fixed(keys), Some(reservation)) => {
                    let bytes = keys.len() * size_of::<u128>();
                    reservation.try_grow(bytes).is_ok().then_some(bytes)
                }
                (KeyBuffer::Fixed(_), None) => Some(0),
                _ => None,
            };
            let sorted = sort(pending, scratch.is_some());
            if let (Some(bytes), Some(reservation)) = (scratch, self.memory.first()) {
                reservation.shrink(bytes.min(reservation.size()));
            }
            self.runs.push(Run::Memory(sorted));
        }
    }

    /// Writes the pending keys, sorted, to a spill file and frees their memory.
    fn spill(&mut self) -> Result<()> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let pending = std::mem::take(&mut self.pending);
        let keys = pending.len();
        let sorted = sort(pending, false);
        const SPILLING: &str = "cannot spill the keys";
        let file = disk
            .create_tmp_file("a unique check's keys")
            .map_err(|e| EngineError::datafusion(SPILLING, e))?;
        let writer = file
            .open_writer()
            .map_err(|e| EngineError::datafusion(SPILLING, e))?;
        let mut writer = BufWriter::new(writer);
        let width = self.fixed_width.unwrap_or(0);
        let mut scratch = [0u8; FIXED_KEY_BYTES];
        for index in 0..keys {
            let key = sorted.key(index, width, &mut scratch);
            if self.fixed_width.is_none() {
                let length = u32::try_from(key.len()).map_err(|_| {
                    EngineError::Invariant(format!("a key of {} bytes to spill", key.len()))
                })?;
                writer
                    .write_all(&length.to_le_bytes())
                    .map_err(|e| EngineError::io(SPILLING, e))?;
            }
            writer
                .write_all(key)
                .map_err(|e| EngineError::io(SPILLING, e))?;
        }
        let mut writer = writer
            .into_inner()
            .map_err(|e| EngineError::io(SPILLING, e.into_error()))?;
        writer
            .finish()
            .map_err(|e| EngineError::datafusion(SPILLING, e))?;
        self.runs.push(Run::Spilled { file, keys });
        if let Some(reservation) = self.memory.first() {
            reservation.free();
        }
        Ok(())
    }

    /// Adds another partition's keys.
    ///
    /// Two dense sets merge their bitmaps. Otherwise a dense side becomes keys here, its
    /// memory reserved without the pool's consent (a merge cannot spill): that happens only
    /// when the partitions' ids together are too sparse for bitmaps, or one partition's alone.
    pub fn absorb(&mut self, mut other: KeySet) {
        let merged = match (self.dense.as_mut(), other.dense.take()) {
            (Some(mine), Some(theirs)) => match mine.absorb(*theirs) {
                Ok(()) => true,
                Err(theirs) => {
                    other.dense = Some(theirs);
                    false
                }
            },
            (_, theirs) => {
                other.dense = theirs;
                false
            }
        };
        if !merged {
            for set in [&mut *self, &mut other] {
                if set.dense.is_some() {
                    set.leave_dense();
                    if let Some(reservation) = set.memory.first() {
                        reservation.grow(set.pending.memory());
                    }
                }
            }
            self.seal();
        }
        other.seal();
        self.uncounted_failures += other.uncounted_failures;
        self.runs.append(&mut other.runs);
        self.null_keys += other.null_keys;
        self.null_samples.absorb(other.null_samples);
        self.memory.append(&mut other.memory);
    }

    /// Merges every run: counts the rows whose key is duplicated and keeps the smallest
    /// failing rows' keys (decoded by `converter`).
    pub fn conclude(mut self, converter: &RowConverter) -> Result<KeyVerdict> {
        self.seal();
        let limit = self.null_samples.limit;
        let mut duplicates = Duplicates {
            failed: 0,
            keys: Vec::new(),
            limit,
        };
        let width = self.fixed_width.unwrap_or(0);
        if let Some(dense) = self.dense.take() {
            // Every partition's ids stayed dense: no runs, the bitmaps know the counts.
            let value_bytes = width.saturating_sub(1);
            for (id, rows) in dense.smallest_repeats() {
                duplicates.key(
                    &integer_row_key(id, value_bytes).to_be_bytes()[..width],
                    rows,
                );
            }
            duplicates.failed = dense.failed();
        }
        let in_memory_fixed: Option<Vec<&[u128]>> = self
            .runs
            .iter()
            .map(|run| match run {
                Run::Memory(KeyBuffer::Fixed(keys)) => Some(keys.as_slice()),
                Run::Memory(KeyBuffer::Empty) => Some(&[][..]),
                _ => None,
            })
            .collect();
        match in_memory_fixed {
            Some(runs) => merge_fixed(&runs, width, &mut duplicates),
            None => merge_runs(&self.runs, self.fixed_width, &mut duplicates)?,
        }
        let mut samples = std::mem::replace(
            &mut self.null_samples,
            Samples {
                limit,
                columns: Vec::new(),
                kept: Vec::new(),
            },
        );
        if !duplicates.keys.is_empty() {
            let parser = converter.parser();
            let rows = converter
                .convert_rows(duplicates.keys.iter().map(|k| parser.parse(k)))
                .map_err(|e| EngineError::arrow("cannot decode the duplicated keys", e))?;
            for (key, values) in duplicates.keys.into_iter().zip(display_rows(&rows)?) {
                samples.kept.push((key, values));
            }
            samples.trim();
        }
        let (failing_nulls, null_skipped) = match self.nulls {
            NullPolicy::Fail => (self.null_keys, 0),
            NullPolicy::Pass => (0, self.null_keys),
        };
        Ok(KeyVerdict {
            failed: duplicates.failed + self.uncounted_failures + failing_nulls,
            null_skipped,
            samples,
        })
    }
}

/// The packed row-format key of a non-NULL `Int64` (as [`pack`] makes of Arrow's row format):
/// the valid marker byte 1, then the value big-endian with its sign bit flipped, so that
/// integer order is the values' order.
fn int64_row_key(id: i64) -> u128 {
    integer_row_key(id, 8)
}

/// The packed row-format key of a non-NULL signed integer of `value_bytes` bytes (1 to 8)
/// holding `id`: the valid marker byte, then the value's bytes big-endian with the sign bit
/// flipped.
fn integer_row_key(id: i64, value_bytes: usize) -> u128 {
    const VALID: u128 = 1 << 120;
    let bits = 8 * value_bytes.clamp(1, 8) as u32;
    let value = (id as u64) & (u64::MAX >> (64 - bits));
    VALID | (u128::from(value ^ (1 << (bits - 1))) << (120 - bits))
}

fn pack(rows: &Rows, index: usize) -> u128 {
    let row = rows.row(index);
    let bytes = row.as_ref();
    let mut packed = [0u8; FIXED_KEY_BYTES];
    // Only keys of at most FIXED_KEY_BYTES take this path (see `fixed_key_width`).
    let length = bytes.len().min(FIXED_KEY_BYTES);
    packed[..length].copy_from_slice(&bytes[..length]);
    u128::from_be_bytes(packed)
}

fn push_variable(
    rows: &Rows,
    indices: impl Iterator<Item = usize>,
    bytes: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) {
    for index in indices {
        bytes.extend_from_slice(rows.row(index).as_ref());
        ends.push(bytes.len());
    }
}

fn sort(keys: KeyBuffer, radix: bool) -> KeyBuffer {
    match keys {
        KeyBuffer::Fixed(mut keys) => {
            if radix {
                radix_sort(&mut keys, &mut Vec::new());
            } else {
                keys.sort_unstable();
            }
            KeyBuffer::Fixed(keys)
        }
        KeyBuffer::Variable { bytes, ends } => {
            let slice = |i: usize| &bytes[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
            let mut order: Vec<usize> = (0..ends.len()).collect();
            order.sort_unstable_by(|&a, &b| slice(a).cmp(slice(b)));
            let mut sorted = Vec::with_capacity(bytes.len());
            let mut sorted_ends = Vec::with_capacity(ends.len());
            for index in order {
                sorted.extend_from_slice(slice(index));
                sorted_ends.push(sorted.len());
            }
            KeyBuffer::Variable {
                bytes: sorted,
                ends: sorted_ends,
            }
        }
        KeyBuffer::Empty => KeyBuffer::Empty,
    }
}

/// Counts duplicated keys while sorted keys stream by, keeping the smallest failing ones.
struct Duplicates {
    failed: u64,
    keys: Vec<Vec<u8>>,
    limit: usize,
}

impl Duplicates {
    /// A key seen `count` times in a row.
    fn key(&mut self, key: &[u8], count: u64) {
        if count < 2 {
            return;
        }
        self.failed += count;
        let room = self.limit.saturating_sub(self.keys.len());
        for _ in 0..(count as usize).min(room) {
            self.keys.push(key.to_vec());
        }
    }
}

/// Merges sorted in-memory `u128` runs, counting each key's rows.
fn merge_fixed(runs: &[&[u128]], width: usize, duplicates: &mut Duplicates) {
    let runs: Vec<&[u128]> = runs.iter().copied().filter(|run| !run.is_empty()).collect();
    let mut tally = Tally::new(width);
    match runs[..] {
        [] => {}
        [run] => run.iter().for_each(|&key| tally.push(key, duplicates)),
        // Two runs (one per partition of a two-core machine): the smaller head is picked
        // without a branch, as the runs interleave unpredictably.
        [a, b] => {
            let (mut i, mut j) = (0, 0);
            while i < a.len() && j < b.len() {
                let (x, y) = (a[i], b[j]);
                let take_a = x <= y;
                tally.push(if take_a { x } else { y }, duplicates);
                i += usize::from(take_a);
                j += usize::from(!take_a);
            }
            for &key in a[i..].iter().chain(&b[j..]) {
                tally.push(key, duplicates);
            }
        }
        _ => {
            let mut at = vec![0usize; runs.len()];
            loop {
                let mut smallest: Option<(u128, usize)> = None;
                for (index, (keys, &position)) in runs.iter().zip(&at).enumerate() {
                    if let Some(&key) = keys.get(position)
                        && smallest.is_none_or(|(s, _)| key < s)
                    {
                        smallest = Some((key, index));
                    }
                }
                let Some((key, run)) = smallest else { break };
                at[run] += 1;
                tally.push(key, duplicates);
            }
        }
    }
    tally.finish(duplicates);
}

/// Counts the rows of each key of a sorted stream, reporting a key's count when the next
/// key differs.
struct Tally {
    previous: u128,
    /// Rows of `previous` so far; 0 before the first key.
    count: u64,
    /// Bytes of a key that hold its value.
    width: usize,
}

impl Tally {
    fn new(width: usize) -> Self {
        Self {
            previous: 0,
            count: 0,
            width,
        }
    }

    #[inline(always)]
    fn push(&mut self, key: u128, duplicates: &mut Duplicates) {
        if key == self.previous && self.count > 0 {
            self.count += 1;
        } else {
            self.finish(duplicates);
            (self.previous, self.count) = (key, 1);
        }
    }

    /// Reports the current key's count.
    #[inline(always)]
    fn finish(&mut self, duplicates: &mut Duplicates) {
        if self.count > 1 {
            duplicates.key(&self.previous.to_be_bytes()[..self.width], self.count);
        }
    }
}

/// Reads back one sorted run.
enum Cursor<'a> {
    Memory {
        keys: &'a KeyBuffer,
        at: usize,
        width: usize,
        scratch: [u8; FIXED_KEY_BYTES],
        current: Vec<u8>,
    },
    File {
        reader: BufReader<File>,
        width: Option<usize>,
        left: usize,
        current: Vec<u8>,
    },
}

impl Cursor<'_> {
    /// Moves to the next key; `false` at the end.
    fn advance(&mut self) -> std::io::Result<bool> {
        match self {
            Cursor::Memory {
                keys,
                at,
                width,
                scratch,
                current,
            } => {
                if *at >= keys.len() {
                    return Ok(false);
                }
                current.clear();
                current.extend_from_slice(keys.key(*at, *width, scratch));
                *at += 1;
                Ok(true)
            }
            Cursor::File {
                reader,
                width,
                left,
                current,
            } => {
                if *left == 0 {
                    return Ok(false);
                }
                let length = match width {
                    Some(width) => *width,
                    None => {
                        let mut length = [0u8; 4];
                        reader.read_exact(&mut length)?;
                        u32::from_le_bytes(length) as usize
                    }
                };
                current.resize(length, 0);
                reader.read_exact(current)?;
                *left -= 1;
                Ok(true)
            }
        }
    }

    fn current(&self) -> &[u8] {
        match self {
            Cursor::Memory { current, .. } | Cursor::File { current, .. } => current,
        }
    }
}

/// Merges sorted runs of any kind (variable-width keys, spill files).
fn merge_runs(runs: &[Run], fixed_width: Option<usize>, duplicates: &mut Duplicates) -> Result<()> {
    const READING: &str = "cannot read the spilled keys";
    let failed = |e: std::io::Error| EngineError::io(READING, e);
    let mut cursors = Vec::with_capacity(runs.len());
    for run in runs {
        let mut cursor = match run {
            Run::Memory(keys) => Cursor::Memory {
                keys,
                at: 0,
                width: fixed_width.unwrap_or(0),
                scratch: [0; FIXED_KEY_BYTES],
                current: Vec::new(),
            },
            Run::Spilled { file, keys } => {
                let path = file.path().ok_or_else(|| {
                    EngineError::Invariant("a spill file that is not a local file".to_string())
                })?;
                Cursor::File {
                    reader: BufReader::new(File::open(path).map_err(failed)?),
                    width: fixed_width,
                    left: *keys,
                    current: Vec::new(),
                }
            }
        };
        if cursor.advance().map_err(failed)? {
            cursors.push(cursor);
        }
    }
    let mut previous: Vec<u8> = Vec::new();
    let mut count = 0u64;
    while !cursors.is_empty() {
        let mut smallest = 0;
        for index in 1..cursors.len() {
            if cursors[index].current() < cursors[smallest].current() {
                smallest = index;
            }
        }
        let key = cursors[smallest].current();
        if count > 0 && key == previous.as_slice() {
            count += 1;
        } else {
            duplicates.key(&previous, count);
            previous.clear();
            previous.extend_from_slice(key);
            count = 1;
        }
        if !cursors[smallest].advance().map_err(failed)? {
            cursors.swap_remove(smallest);
        }
    }
    duplicates.key(&previous, count);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dq::state::row_converter;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::execution::disk_manager::DiskManagerBuilder;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    fn batch(ids: Vec<Option<i64>>, names: Vec<Option<&str>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    /// The verdict of a key set over `batches`, dealt to `partitions` in turn; keys of one
    /// integer column are kept both as bitmaps and as keys, and the two must agree.
    fn verdict(
        batches: &[RecordBatch],
        columns: &[usize],
        nulls: NullPolicy,
        resources: Option<&KeyResources>,
        partitions: usize,
    ) -> KeyVerdict {
        let as_keys = verdict_as(batches, columns, nulls, resources, partitions, false);
        let as_bitmaps = verdict_as(batches, columns, nulls, resources, partitions, true);
        assert_eq!(as_keys, as_bitmaps, "bitmaps and keys agree");
        as_keys
    }

    fn verdict_as(
        batches: &[RecordBatch],
        columns: &[usize],
        nulls: NullPolicy,
        resources: Option<&KeyResources>,
        partitions: usize,
        dense: bool,
    ) -> KeyVerdict {
        let schema = batches[0].schema();
        let types: Vec<DataType> = columns
            .iter()
            .map(|&c| schema.field(c).data_type().clone())
            .collect();
        let converter = row_converter(&types).unwrap();
        let mut sets: Vec<KeySet> = (0..partitions)
            .map(|_| {
                let mut set = KeySet::new("u", &types, columns, nulls, 3, resources);
                if !dense {
                    set.dense = None;
                }
                set
            })
            .collect();
        for (i, b) in batches.iter().enumerate() {
            sets[i % partitions]
                .observe(&converter, b, columns)
                .unwrap();
        }
        let mut merged = sets.remove(0);
        merged.seal();
        for other in sets {
            merged.absorb(other);
        }
        if merged.dense.is_some() {
            return merged.conclude(&converter).unwrap();
        }
        let spilled = merged
            .runs
            .iter()
            .filter(|run| matches!(run, Run::Spilled { .. }))
            .count();
        assert_eq!(
            spilled > 0,
            resources.is_some() && batches.len() > 10,
            "keys spill exactly when a small pool is given"
        );
        merged.conclude(&converter).unwrap()
    }

    /// Sample rows of non-NULL values.
    fn rows(values: &[&[&str]]) -> Vec<Vec<Option<String>>> {
        values
            .iter()
            .map(|row| row.iter().map(|v| Some(v.to_string())).collect())
            .collect()
    }

    fn sample_values(verdict: &KeyVerdict) -> Vec<Vec<Option<String>>> {
        verdict
            .samples
            .kept
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    #[test]
    fn duplicated_keys_fail_every_row_that_shares_them_across_partitions() {
        let batches = [
            batch(vec![Some(5), Some(1), None, Some(7)], vec![None; 4]),
            batch(vec![Some(7), Some(-3), Some(5), Some(7)], vec![None; 4]),
        ];
        for partitions in [1, 2] {
            let result = verdict(&batches, &[0], NullPolicy::Pass, None, partitions);
            assert_eq!(result.failed, 5, "5 twice, 7 three times");
            assert_eq!(result.null_skipped, 1);
            assert_eq!(sample_values(&result), rows(&[&["5"], &["5"], &["7"]]));
        }
        // Three runs: the general merge.
        let three = [
            batches[0].clone(),
            batches[1].clone(),
            batch(vec![Some(1), Some(8)], vec![None; 2]),
        ];
        let result = verdict(&three, &[0], NullPolicy::Pass, None, 3);
        assert_eq!(result.failed, 7, "1 and 5 twice, 7 three times");
        assert_eq!(sample_values(&result), rows(&[&["1"], &["1"], &["5"]]));
        let result = verdict(&batches, &[0], NullPolicy::Fail, None, 2);
        assert_eq!((result.failed, result.null_skipped), (6, 0));
        assert_eq!(
            sample_values(&result)[0],
            vec![None],
            "NULL keys sort first"
        );
    }

    #[test]
    fn bigint_keys_pack_like_their_row_format() {
        let ids = [i64::MIN, -300, -1, 0, 1, 255, 256, i64::MAX];
        let converter = row_converter(&[DataType::Int64]).unwrap();
        let array: ArrayRef = Arc::new(arrow::array::Int64Array::from(ids.to_vec()));
        let rows = converter.convert_columns(&[array]).unwrap();
        let packed: Vec<u128> = (0..ids.len()).map(|i| pack(&rows, i)).collect();
        let direct: Vec<u128> = ids.iter().map(|&id| int64_row_key(id)).collect();
        assert_eq!(direct, packed);
        assert!(direct.is_sorted(), "integer order is the ids' order");

        let ints = [i32::MIN, -300, -1, 0, 1, 255, 256, i32::MAX];
        let converter = row_converter(&[DataType::Int32]).unwrap();
        let array: ArrayRef = Arc::new(arrow::array::Int32Array::from(ints.to_vec()));
        let rows = converter.convert_columns(&[array]).unwrap();
        let packed: Vec<u128> = (0..ints.len()).map(|i| pack(&rows, i)).collect();
        let direct: Vec<u128> = ints
            .iter()
            .map(|&id| integer_row_key(id.into(), 4))
            .collect();
        assert_eq!(direct, packed, "an INT key packs in 5 bytes");
    }

    #[test]
    fn dense_ids_that_turn_sparse_become_keys_without_losing_a_row() {
        // Dense ids with duplicates, then ids a trillion apart (too sparse for bitmaps), one
        // of which repeats a dense id three times over; dealt to 1 to 3 partitions, so some
        // partitions stay dense and others do not.
        let dense_ids =
            |b: i64| -> Vec<Option<i64>> { (0..1000).map(|i| Some(b * 700 + i % 900)).collect() };
        let mut batches: Vec<RecordBatch> = (0..3)
            .map(|b| batch(dense_ids(b), vec![None; 1000]))
            .collect();
        let sparse: Vec<Option<i64>> = (0..9000)
            .map(|i| {
                Some(if i % 3000 == 0 {
                    5
                } else {
                    i * 1_000_000_000_000
                })
            })
            .collect();
        batches.push(batch(sparse, vec![None; 9000]));
        for partitions in [1, 2, 3] {
            let result = verdict(&batches, &[0], NullPolicy::Pass, None, partitions);
            assert!(result.failed > 0);
            assert_eq!(sample_values(&result), rows(&[&["0"], &["0"], &["1"]]));
        }
        // A sparse key set alone, and one merged with a dense one.
        let sparse_only = verdict(&batches[3..], &[0], NullPolicy::Pass, None, 1);
        assert_eq!(sparse_only.failed, 3, "id 5 three times");
        let mixed = [batches[3].clone(), batches[0].clone()];
        verdict(&mixed, &[0], NullPolicy::Pass, None, 2);
    }

    /// A 64 KiB memory pool and a disk manager: keys beyond a few thousand spill.
    fn small_pool() -> KeyResources {
        KeyResources {
            pool: Arc::new(GreedyMemoryPool::new(64 * 1024)),
            disk: Arc::new(DiskManagerBuilder::default().build().unwrap()),
        }
    }

    #[test]
    fn dense_ids_spill_as_keys_when_the_pool_refuses_their_pages() {
        let resources = small_pool();
        // Ids a page apart: each batch takes new pages, beyond the pool after a few.
        let batches: Vec<RecordBatch> = (0..12)
            .map(|b| {
                let ids: Vec<Option<i64>> = (0..1000)
                    .map(|i| Some((b * 1000 + i % 900) * 70_000))
                    .collect();
                batch(ids, vec![None; 1000])
            })
            .collect();
        let mut set = KeySet::new(
            "u",
            &[DataType::Int64],
            &[0],
            NullPolicy::Pass,
            3,
            Some(&resources),
        );
        let converter = row_converter(&[DataType::Int64]).unwrap();
        for b in &batches {
            set.observe(&converter, b, &[0]).unwrap();
        }
        assert!(set.dense.is_none(), "the pool refused the bitmaps");
        assert!(
            set.runs
                .iter()
                .any(|run| matches!(run, Run::Spilled { .. }))
        );
        let spilled = set.conclude(&converter).unwrap();
        let in_memory = verdict(&batches, &[0], NullPolicy::Pass, None, 1);
        assert_eq!(spilled, in_memory);
        assert_eq!(spilled.failed, 12 * 200, "a hundred ids twice per batch");
        assert_eq!(
            resources.pool.reserved(),
            0,
            "the reservations are released"
        );
    }

    #[test]
    fn string_and_multi_column_keys_are_compared_as_bytes() {
        let batches = [
            batch(
                vec![Some(1), Some(1), Some(2)],
                vec![Some("a"), Some("b"), Some("a")],
            ),
            batch(
                vec![Some(1), Some(2), Some(3)],
                vec![Some("b"), Some("a"), None],
            ),
        ];
        let by_name = verdict(&batches, &[1], NullPolicy::Pass, None, 2);
        assert_eq!((by_name.failed, by_name.null_skipped), (5, 1));
        let by_both = verdict(&batches, &[0, 1], NullPolicy::Pass, None, 2);
        assert_eq!((by_both.failed, by_both.null_skipped), (4, 1));
        assert_eq!(
            sample_values(&by_both),
            rows(&[&["1", "b"], &["1", "b"], &["2", "a"]])
        );
    }

    #[test]
    fn keys_spill_when_the_memory_pool_refuses_and_still_find_every_duplicate() {
        let resources = small_pool();
        // 20,000 ids, every id divisible by 7 twice: more than the pool holds.
        let batches: Vec<RecordBatch> = (0..20)
            .map(|b| {
                let ids: Vec<Option<i64>> = (b * 1000..(b + 1) * 1000)
                    .map(|i| Some(if i % 2 == 0 { i / 2 } else { 1_000_000 + i }))
                    .collect();
                let names: Vec<Option<&str>> = ids.iter().map(|_| Some("x")).collect();
                batch(ids, names)
            })
            .collect();
        for columns in [vec![0], vec![0, 1]] {
            let spilled = verdict(&batches, &columns, NullPolicy::Pass, Some(&resources), 2);
            let in_memory = verdict(&batches, &columns, NullPolicy::Pass, None, 2);
            assert_eq!(spilled, in_memory);
            assert_eq!(spilled.failed, 0, "the even ids are 0..10000, once each");
        }
        let with_duplicates: Vec<RecordBatch> = (0..20)
            .map(|b| {
                let ids: Vec<Option<i64>> = (0..1000).map(|i| Some((b % 10) * 1000 + i)).collect();
                batch(ids, vec![Some("y"); 1000])
            })
            .collect();
        let spilled = verdict(
            &with_duplicates,
            &[0],
            NullPolicy::Pass,
            Some(&resources),
            2,
        );
        assert_eq!(spilled.failed, 20_000, "every id twice");
        assert_eq!(sample_values(&spilled), rows(&[&["0"], &["0"], &["1"]]));
        assert_eq!(
            resources.pool.reserved(),
            0,
            "the reservations are released"
        );
    }
}
