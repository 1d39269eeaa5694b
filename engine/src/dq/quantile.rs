//! The state of a `quantile` check: one quantile of a column's non-null, non-NaN values.
//!
//! In an embedded run the quantile is exact: interpolated linearly between the two nearest
//! ranks, as numpy's default, DuckDB's `quantile_cont` and DataFusion's `percentile_cont` do,
//! and it does not depend on how rows were partitioned. The values are held in one of two forms,
//! their memory reserved from the session's pool:
//! - while the column has held at most `MAX_COUNTED` distinct values (ages, scores, counts,
//!   whole milliseconds), each distinct value with its count: a small table, however many rows;
//! - beyond that, every value, 8 bytes each, in runs allocated once and never reallocated.
//!   The table's values become the first run.
//!
//! When the pool refuses the memory, or where states travel (a cluster's partitions), the
//! values go into a t-digest (DataFusion's `approx_percentile_cont` digest) and the quantile is
//! an estimate.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::ScalarValue;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion_functions_aggregate_common::tdigest::{Centroid, DEFAULT_MAX_SIZE, TDigest};
use serde::{Deserialize, Serialize};

use crate::dq::float_bits;
use crate::dq::radix;

/// Most distinct values a quantile's values are counted by; beyond, every value is kept.
const MAX_COUNTED: usize = 1 << 14;

/// Slots of a fresh count table (it doubles as it fills, up to twice [`MAX_COUNTED`]).
const MIN_COUNT_SLOTS: usize = 64;

/// Keys of a quantile's first run (64 KiB).
const MIN_RUN_KEYS: usize = 1 << 13;

/// Most keys one run holds (8 MiB): runs double from [`MIN_RUN_KEYS`] up to this size.
const MAX_RUN_KEYS: usize = 1 << 20;

/// Keys a t-digest takes at a time when kept values are folded into it.
const DIGEST_CHUNK: usize = 8192;

/// One quantile of a column's values: exact while they are kept, else a t-digest estimate.
#[derive(Debug)]
pub struct QuantileSketch {
    quantile: f64,
    digest: TDigest,
    /// Every value so far, as order-preserving keys, while they are kept (boxed: a check
    /// state stays small).
    exact: Option<Box<ExactValues>>,
    /// Buffers a batch's keys are gathered and sorted in, kept between batches.
    sorting: SortBuffers,
}

/// The values of an exact quantile and the memory they hold.
#[derive(Debug)]
struct ExactValues {
    form: KeptValues,
    memory: MemoryReservation,
}

/// The two forms kept values take.
#[derive(Debug)]
enum KeptValues {
    /// Each distinct value and its count, while there are at most [`MAX_COUNTED`].
    Counted(KeyCounts),
    /// Every value. Runs are allocated at their final size and never grow, so each key is
    /// written once into memory touched once; merging partitions moves runs rather than
    /// copying them, and the quantile is selected across them.
    Runs(Vec<Vec<u64>>),
}

/// The buffers a batch of quantile values is gathered and sorted in.
#[derive(Debug, Clone, Default)]
struct SortBuffers {
    keys: Vec<u64>,
    scratch: Vec<u64>,
    sorted: Vec<f64>,
}

/// Distinct keys and how many times each was seen: an open-addressing table with linear
/// probing, doubled whenever it is half full.
///
/// Keys are [`radix::f64_key`]s of values that are not NaN, and those are never 0 (the key of
/// one NaN bit pattern), so a slot holding key 0 is empty.
#[derive(Debug, Clone)]
struct KeyCounts {
    /// Each slot's key and count.
    slots: Vec<(u64, u64)>,
    /// `64 - log2(slots)`: a key's home slot is the top bits of its Fibonacci hash.
    shift: u32,
    distinct: usize,
    /// Most distinct keys it counts ([`MAX_COUNTED`] but in tests).
    max_distinct: usize,
    total: u64,
}

/// The key of an empty [`KeyCounts`] slot.
const EMPTY: u64 = 0;

impl KeyCounts {
    fn new(max_distinct: usize) -> KeyCounts {
        KeyCounts::with_slots(MIN_COUNT_SLOTS, max_distinct)
    }

    fn with_slots(slots: usize, max_distinct: usize) -> KeyCounts {
        KeyCounts {
            slots: vec![(EMPTY, 0); slots],
            shift: 64 - slots.trailing_zeros(),
            distinct: 0,
            max_distinct,
            total: 0,
        }
    }

    /// The table's memory.
    fn bytes(&self) -> usize {
        self.slots.len() * size_of::<(u64, u64)>()
    }

    /// Adds `count` occurrences of `key` (not [`EMPTY`]); `false` (and nothing added) when
    /// `key` would be one distinct key too many.
    #[inline]
    fn add(&mut self, key: u64, count: u64) -> bool {
        debug_assert_ne!(key, EMPTY, "0 is not the key of a number");
        // The table has a power-of-two number of slots and is never full, so the probe ends.
        let mask = self.slots.len() - 1;
        let mut slot = self.home(key);
        loop {
            let (held, held_count) = &mut self.slots[slot];
            if *held == key {
                *held_count += count;
                self.total += count;
                return true;
            }
            if *held == EMPTY {
                return self.insert(slot, key, count);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Puts a new key in empty slot `slot`, unless it is a distinct key too many.
    #[cold]
    #[inline(never)]
    fn insert(&mut self, slot: usize, key: u64, count: u64) -> bool {
        if self.distinct == self.max_distinct {
            return false;
        }
        self.slots[slot] = (key, count);
        self.distinct += 1;
        self.total += count;
        if self.distinct * 2 > self.slots.len() {
            self.grow();
        }
        true
    }

    /// Whether `key` has been counted.
    fn contains(&self, key: u64) -> bool {
        let mask = self.slots.len() - 1;
        let mut slot = self.home(key);
        loop {
            match self.slots[slot].0 {
                held if held == key => return true,
                EMPTY => return false,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// The slot a key's probe starts at.
    #[inline]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    /// Counts `keys` in order until one is a distinct value too many; returns how many were
    /// counted.
    fn count_all(&mut self, keys: &[u64]) -> usize {
        for (index, &key) in keys.iter().enumerate() {
            if !self.add(key, 1) {
                return index;
            }
        }
        keys.len()
    }

    fn grow(&mut self) {
        let mut grown = KeyCounts::with_slots(self.slots.len() * 2, self.max_distinct);
        for (key, count) in self.entries() {
            grown.add(key, count);
        }
        *self = grown;
    }

    /// Each distinct key with its count, in no particular order.
    fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slots.iter().filter(|(key, _)| *key != EMPTY).copied()
    }

    /// The entries in key order.
    fn sorted(&self) -> Vec<(u64, u64)> {
        let mut sorted: Vec<(u64, u64)> = self.entries().collect();
        sorted.sort_unstable_by_key(|&(key, _)| key);
        sorted
    }

    /// The key of rank `rank` and the key of rank `rank + 1` when there is one, as
    /// [`radix::select_with_next`] gives them for the expanded keys.
    fn select_with_next(&self, rank: u64) -> Option<(u64, Option<u64>)> {
        let sorted = self.sorted();
        let mut below = 0u64;
        for (index, &(key, count)) in sorted.iter().enumerate() {
            if rank < below + count {
                let next = if rank + 1 < below + count {
                    Some(key)
                } else {
                    sorted.get(index + 1).map(|&(next, _)| next)
                };
                return Some((key, next));
            }
            below += count;
        }
        None
    }

    /// Every key, each repeated as often as it was counted, as runs.
    fn expand(&self) -> Vec<Vec<u64>> {
        let mut runs = Vec::new();
        self.expand_into(&mut runs);
        runs
    }

    /// Appends every key, repeated as often as it was counted, to `runs`.
    fn expand_into(&self, runs: &mut Vec<Vec<u64>>) {
        for (key, count) in self.entries() {
            let mut left = usize::try_from(count).unwrap_or(usize::MAX);
            while left > 0 {
                let taken = left.min(MAX_RUN_KEYS);
                run_with_room(runs, taken).extend(std::iter::repeat_n(key, taken));
                left -= taken;
            }
        }
    }
}

impl ExactValues {
    fn len(&self) -> u64 {
        match &self.form {
            KeptValues::Counted(counts) => counts.total,
            KeptValues::Runs(runs) => runs.iter().map(|run| run.len() as u64).sum(),
        }
    }

    /// The bytes the values take.
    fn bytes(&self) -> usize {
        match &self.form {
            KeptValues::Counted(counts) => counts.bytes(),
            KeptValues::Runs(runs) => {
                runs.iter().map(Vec::capacity).sum::<usize>() * size_of::<u64>()
            }
        }
    }

    /// Keeps the keys of `values`; `false` when the pool refuses the memory they need.
    fn observe(&mut self, values: &Float64Array, sorting: &mut SortBuffers) -> bool {
        let before = self.bytes();
        if let KeptValues::Counted(counts) = &mut self.form {
            sorting.keys.clear();
            push_keys(&mut sorting.keys, &mut sorting.scratch, values);
            let counted = counts.count_all(&sorting.keys);
            if counted < sorting.keys.len() {
                let mut runs = counts.expand();
                push_to_runs(&mut runs, &sorting.keys[counted..]);
                self.form = KeptValues::Runs(runs);
            }
        } else if let KeptValues::Runs(runs) = &mut self.form {
            push_keys(
                run_with_room(runs, values.len()),
                &mut sorting.scratch,
                values,
            );
        }
        self.reserve_change(before)
    }

    /// Grows or shrinks the reservation from `before` bytes to what the values now take;
    /// `false` when the pool refuses the growth.
    fn reserve_change(&mut self, before: usize) -> bool {
        let after = self.bytes();
        if after > before {
            self.memory.try_grow(after - before).is_ok()
        } else {
            self.memory.shrink(before - after);
            true
        }
    }

    /// Takes in `other`'s values (and the memory they hold); `false` when the pool refuses
    /// what merging them needs.
    fn merge(&mut self, other: ExactValues) -> bool {
        let before = self.bytes();
        let ExactValues {
            form: theirs,
            memory: their_memory,
        } = other;
        // Their reservation is freed when it drops: this one takes over their bytes.
        let taken = their_memory.size();
        drop(their_memory);
        self.memory.grow(taken);
        let mine = std::mem::replace(&mut self.form, KeptValues::Runs(Vec::new()));
        self.form = match (mine, theirs) {
            (KeptValues::Counted(mut mine), KeptValues::Counted(theirs)) => {
                // Checked before adding anything, so a table is either merged whole or not
                // at all.
                let new = theirs
                    .entries()
                    .filter(|&(key, _)| !mine.contains(key))
                    .count();
                if mine.distinct + new <= mine.max_distinct {
                    for (key, count) in theirs.entries() {
                        mine.add(key, count);
                    }
                    KeptValues::Counted(mine)
                } else {
                    let mut runs = mine.expand();
                    theirs.expand_into(&mut runs);
                    KeptValues::Runs(runs)
                }
            }
            (mine, theirs) => {
                let mut runs = into_runs(mine);
                runs.extend(into_runs(theirs));
                KeptValues::Runs(runs)
            }
        };
        self.reserve_change(before + taken)
    }

    /// The keys of ranks `rank` and `rank + 1`.
    fn select_with_next(&self, rank: u64) -> Option<(u64, Option<u64>)> {
        match &self.form {
            KeptValues::Counted(counts) => counts.select_with_next(rank),
            KeptValues::Runs(runs) => radix::select_with_next(runs, usize::try_from(rank).ok()?),
        }
    }

    /// The values as a sorted multiset, for comparisons.
    fn sorted_keys(&self) -> Vec<u64> {
        let mut keys: Vec<u64> = match &self.form {
            KeptValues::Counted(counts) => counts.expand().into_iter().flatten().collect(),
            KeptValues::Runs(runs) => runs.iter().flatten().copied().collect(),
        };
        keys.sort_unstable();
        keys
    }
}

/// The form's values as runs.
fn into_runs(form: KeptValues) -> Vec<Vec<u64>> {
    match form {
        KeptValues::Counted(counts) => counts.expand(),
        KeptValues::Runs(runs) => runs,
    }
}

/// The capacity of the run after `runs` that must hold at least `needed` keys: double the
/// last, within [`MIN_RUN_KEYS`]..=[`MAX_RUN_KEYS`].
fn next_run_capacity(runs: &[Vec<u64>], needed: usize) -> usize {
    let previous = runs.last().map_or(0, Vec::capacity);
    (previous * 2).clamp(MIN_RUN_KEYS, MAX_RUN_KEYS).max(needed)
}

/// Appends `keys` to the last run, starting one when it lacks room.
fn push_to_runs(runs: &mut Vec<Vec<u64>>, keys: &[u64]) {
    run_with_room(runs, keys.len()).extend_from_slice(keys);
}

/// The last run when it has room for `needed` more keys, else a new one that has.
fn run_with_room(runs: &mut Vec<Vec<u64>>, needed: usize) -> &mut Vec<u64> {
    match runs.last() {
        Some(run) if run.capacity() - run.len() >= needed => {}
        _ => runs.push(Vec::with_capacity(next_run_capacity(runs, needed))),
    }
    let last = runs.len() - 1;
    // `runs` is not empty: it had a last run with room, or one was just pushed.
    &mut runs[last]
}

/// Appends the order-preserving keys of `values`' non-NULL, non-NaN values to `keys`, using
/// `scratch` (kept between batches) when some values are left out.
fn push_keys(keys: &mut Vec<u64>, scratch: &mut Vec<u64>, values: &Float64Array) {
    let slice = values.values();
    let nulls = values.nulls().filter(|nulls| nulls.null_count() > 0);
    // Or-ing every test (rather than stopping at the first NaN) keeps the scan vectorized.
    let any_nan = || slice.iter().fold(false, |any, v| any | v.is_nan());
    if nulls.is_none() && !any_nan() {
        keys.extend(slice.iter().map(|&v| radix::f64_key(v)));
        return;
    }
    // Every value's key is written at the next free slot of `scratch`, which advances only
    // past a value kept: no branch per value, as NULLs and NaNs fall anywhere. The slots are
    // written in a buffer that stays in cache (zeroed once, not per batch); the kept keys are
    // then copied out in one go.
    if scratch.len() < slice.len() {
        scratch.resize(slice.len(), 0);
    }
    let out = &mut scratch[..];
    let mut kept = 0;
    let mut write = |value: f64, valid: bool| {
        // `kept` never passes the value's index, so the slot is in bounds.
        out[kept] = radix::f64_key(value);
        kept += usize::from(valid & !value.is_nan());
    };
    match nulls {
        None => slice.iter().for_each(|&v| write(v, true)),
        Some(nulls) => {
            let words = nulls.inner().bit_chunks().iter_padded();
            for (chunk, mut valid) in slice.chunks(64).zip(words) {
                for &value in chunk {
                    write(value, valid & 1 == 1);
                    valid >>= 1;
                }
            }
        }
    }
    keys.extend_from_slice(&scratch[..kept]);
}

impl Clone for QuantileSketch {
    /// A copy of the values and digest; it holds no memory reservation, so a copy's values go
    /// into its digest.
    fn clone(&self) -> QuantileSketch {
        let mut copy = QuantileSketch {
            quantile: self.quantile,
            digest: self.digest.clone(),
            exact: None,
            sorting: SortBuffers::default(),
        };
        if let Some(exact) = &self.exact {
            copy.digest_values(&exact.form);
        }
        copy
    }
}

impl PartialEq for QuantileSketch {
    fn eq(&self, other: &Self) -> bool {
        self.quantile == other.quantile
            && self.digest == other.digest
            && match (&self.exact, &other.exact) {
                (Some(mine), Some(theirs)) => mine.sorted_keys() == theirs.sorted_keys(),
                (mine, theirs) => mine.is_none() && theirs.is_none(),
            }
    }
}

impl QuantileSketch {
    /// A sketch of quantile `quantile` (0 to 1) that estimates until told to keep values.
    pub(crate) fn new(quantile: f64) -> QuantileSketch {
        QuantileSketch {
            quantile,
            digest: TDigest::new(DEFAULT_MAX_SIZE),
            exact: None,
            sorting: SortBuffers::default(),
        }
    }

    /// Keeps every value from now on, reserving their memory from `pool` (for check `name`).
    pub(crate) fn keep_values(&mut self, name: &str, pool: &Arc<dyn MemoryPool>) {
        self.keep_values_counting(name, pool, MAX_COUNTED);
    }

    /// [`QuantileSketch::keep_values`], counting up to `max_counted` distinct values.
    fn keep_values_counting(&mut self, name: &str, pool: &Arc<dyn MemoryPool>, max_counted: usize) {
        let mut exact = ExactValues {
            form: KeptValues::Counted(KeyCounts::new(max_counted)),
            memory: MemoryConsumer::new(format!("quantile check '{name}' values")).register(pool),
        };
        if exact.reserve_change(0) {
            self.exact = Some(Box::new(exact));
        }
    }

    /// Takes in a batch's values (a column that is not `DOUBLE` has none to take).
    pub(crate) fn observe(&mut self, array: &ArrayRef) {
        let Some(values) = array.as_primitive_opt::<Float64Type>() else {
            return;
        };
        match &mut self.exact {
            Some(exact) => {
                if !exact.observe(values, &mut self.sorting) {
                    self.give_up_exact();
                }
            }
            None => {
                self.sorting.keys.clear();
                push_keys(&mut self.sorting.keys, &mut self.sorting.scratch, values);
                self.digest_sorting_keys();
            }
        }
    }

    /// Moves the kept values into the digest and frees their memory: from now on the
    /// quantile is estimated.
    fn give_up_exact(&mut self) {
        if let Some(exact) = self.exact.take() {
            self.digest_values(&exact.form);
        }
    }

    /// Merges kept values into the digest: counted values as one centroid per distinct value,
    /// every value a batch-sized chunk at a time (as if observed in batches: memory has just
    /// been refused, so the sort takes no more than a chunk's worth).
    fn digest_values(&mut self, form: &KeptValues) {
        match form {
            KeptValues::Counted(counts) => {
                let singles: Vec<TDigest> = counts
                    .entries()
                    .map(|(key, count)| {
                        TDigest::new_with_centroid(
                            DEFAULT_MAX_SIZE,
                            Centroid::new(radix::f64_from_key(key), count as f64),
                        )
                    })
                    .collect();
                if !singles.is_empty() {
                    self.digest =
                        TDigest::merge_digests(std::iter::once(&self.digest).chain(&singles));
                }
            }
            KeptValues::Runs(runs) => {
                for chunk in runs.iter().flat_map(|run| run.chunks(DIGEST_CHUNK)) {
                    self.sorting.keys.clear();
                    self.sorting.keys.extend_from_slice(chunk);
                    self.digest_sorting_keys();
                }
            }
        }
    }

    /// Sorts the keys in `sorting.keys` and merges them into the digest.
    fn digest_sorting_keys(&mut self) {
        let SortBuffers {
            keys,
            scratch,
            sorted,
        } = &mut self.sorting;
        if keys.is_empty() {
            return;
        }
        radix::radix_sort(keys, scratch);
        sorted.clear();
        sorted.extend(keys.iter().map(|&key| radix::f64_from_key(key)));
        self.digest = self.digest.merge_sorted_f64(sorted);
    }

    /// Merges another partition's sketch of the same quantile into this one.
    pub(crate) fn merge(&mut self, mut other: QuantileSketch) {
        match (self.exact.as_mut(), other.exact.take()) {
            (Some(mine), Some(theirs)) => {
                if !mine.merge(*theirs) {
                    self.give_up_exact();
                }
            }
            (_, theirs) => {
                self.give_up_exact();
                if let Some(theirs) = theirs {
                    other.digest_values(&theirs.form);
                }
            }
        }
        if other.digest.count() > 0.0 {
            self.digest = TDigest::merge_digests([&self.digest, &other.digest]);
        }
    }

    /// Whether [`QuantileSketch::value`] is exact rather than a t-digest estimate.
    pub(crate) fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    /// The quantile: exact over the kept values, else the digest's estimate; `None` without
    /// values.
    pub(crate) fn value(&self) -> Option<f64> {
        let Some(exact) = &self.exact else {
            return (self.digest.count() > 0.0)
                .then(|| self.digest.estimate_quantile(self.quantile));
        };
        let len = exact.len();
        if len == 0 {
            return None;
        }
        let position = self.quantile.clamp(0.0, 1.0) * (len - 1) as f64;
        // `position` is within 0..=len-1, so the lower rank is a key's.
        let lower_rank = position.floor() as u64;
        let (lower, upper) = exact.select_with_next(lower_rank)?;
        let lower = radix::f64_from_key(lower);
        let fraction = position - lower_rank as f64;
        if fraction == 0.0 {
            return Some(lower);
        }
        let upper = upper.map_or(lower, radix::f64_from_key);
        Some(lower + (upper - lower) * fraction)
    }
}

/// A [`QuantileSketch`] as it travels: the digest's own scalar state, floats as bit patterns.
#[derive(Serialize, Deserialize)]
struct SketchState {
    #[serde(with = "float_bits")]
    quantile: f64,
    max_size: u64,
    /// sum, count, max, min
    #[serde(with = "float_bits::many")]
    totals: Vec<f64>,
    /// Each centroid's mean and weight.
    #[serde(with = "float_bits::many")]
    centroids: Vec<f64>,
}

impl Serialize for QuantileSketch {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error;
        // Kept values travel folded into the digest.
        let folded;
        let digest = match &self.exact {
            Some(_) => {
                folded = self.clone();
                &folded.digest
            }
            None => &self.digest,
        };
        let state = digest.to_scalar_state();
        let float = |value: &ScalarValue| match value {
            ScalarValue::Float64(Some(v)) => Ok(*v),
            other => Err(S::Error::custom(format!(
                "unexpected t-digest state {other:?}"
            ))),
        };
        let [
            ScalarValue::UInt64(Some(max_size)),
            sum,
            count,
            max,
            min,
            ScalarValue::List(centroids),
        ] = state.as_slice()
        else {
            return Err(S::Error::custom("unexpected t-digest state"));
        };
        let centroids = centroids
            .values()
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| S::Error::custom("unexpected t-digest centroids"))?
            .values()
            .to_vec();
        SketchState {
            quantile: self.quantile,
            max_size: *max_size,
            totals: vec![float(sum)?, float(count)?, float(max)?, float(min)?],
            centroids,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for QuantileSketch {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let state = SketchState::deserialize(deserializer)?;
        let [sum, count, max, min] = state.totals[..] else {
            return Err(D::Error::custom("a t-digest needs sum, count, max and min"));
        };
        // `TDigest::from_scalar_state` panics on these; refuse them as bad input instead.
        if state.centroids.len() % 2 != 0 || (min.is_finite() && max.is_finite() && max < min) {
            return Err(D::Error::custom("inconsistent t-digest state"));
        }
        let centroids: Vec<ScalarValue> = state
            .centroids
            .iter()
            .map(|v| ScalarValue::Float64(Some(*v)))
            .collect();
        let digest = TDigest::from_scalar_state(&[
            ScalarValue::UInt64(Some(state.max_size)),
            ScalarValue::Float64(Some(sum)),
            ScalarValue::Float64(Some(count)),
            ScalarValue::Float64(Some(max)),
            ScalarValue::Float64(Some(min)),
            ScalarValue::List(ScalarValue::new_list_nullable(
                &centroids,
                &DataType::Float64,
            )),
        ]);
        Ok(QuantileSketch {
            quantile: state.quantile,
            digest,
            exact: None,
            sorting: SortBuffers::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    /// Numpy's quantiles are in the drift golden file (tests/fixtures/dq/drift_golden.py).
    use crate::dq::drift::tests::{GOLDEN, floats};

    #[test]
    fn quantile_keys_skip_nulls_and_nans_at_any_offset() {
        let values: Vec<Option<f64>> = (0..300)
            .map(|i| match i % 7 {
                0 => None,
                3 if i % 2 == 0 => Some(f64::NAN),
                _ => Some(i as f64 - 150.5),
            })
            .collect();
        let array = Float64Array::from(values.clone());
        for (offset, length) in [(0, 300), (5, 200), (64, 130), (1, 0)] {
            let slice = array.slice(offset, length);
            let expected: Vec<u64> = values[offset..offset + length]
                .iter()
                .flatten()
                .filter(|v| !v.is_nan())
                .map(|&v| radix::f64_key(v))
                .collect();
            let mut keys = vec![7];
            push_keys(&mut keys, &mut vec![1; 3], &slice);
            assert_eq!(keys[0], 7, "appended after what was there");
            assert_eq!(keys[1..], expected, "offset {offset}, length {length}");
        }
        let no_nulls = Float64Array::from(vec![1.0, f64::NAN, -2.0]);
        let mut keys = Vec::new();
        push_keys(&mut keys, &mut Vec::new(), &no_nulls);
        assert_eq!(keys, vec![radix::f64_key(1.0), radix::f64_key(-2.0)]);
    }

    /// A sketch over `values` fed to three partitions in batches of 3, with a NULL and a NaN
    /// in every batch (both ignored), counting up to `max_counted` distinct values, merged in
    /// partition order `order`.
    fn sketch_of(
        values: &[f64],
        quantile: f64,
        pool: &Arc<dyn MemoryPool>,
        max_counted: usize,
        order: [usize; 3],
    ) -> QuantileSketch {
        let mut partitions: Vec<QuantileSketch> = (0..3)
            .map(|_| {
                let mut sketch = QuantileSketch::new(quantile);
                sketch.keep_values_counting("q", pool, max_counted);
                sketch
            })
            .collect();
        for (index, chunk) in values.chunks(3).enumerate() {
            let mut batch: Vec<Option<f64>> = chunk.iter().copied().map(Some).collect();
            batch.extend([None, Some(f64::NAN)]);
            let array: ArrayRef = Arc::new(Float64Array::from(batch));
            partitions[index % 3].observe(&array);
        }
        merged(partitions, order)
    }

    fn merged(partitions: Vec<QuantileSketch>, order: [usize; 3]) -> QuantileSketch {
        let mut partitions: Vec<Option<QuantileSketch>> =
            partitions.into_iter().map(Some).collect();
        let mut merged = partitions[order[0]].take().unwrap();
        for &next in &order[1..] {
            merged.merge(partitions[next].take().unwrap());
        }
        merged
    }

    /// numpy's default quantile (linear between the nearest ranks), computed by sorting.
    fn sorted_quantile(values: &[f64], quantile: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let position = quantile * (sorted.len() - 1) as f64;
        let lower = position.floor() as usize;
        let upper = (lower + 1).min(sorted.len() - 1);
        sorted[lower] + (sorted[upper] - sorted[lower]) * (position - lower as f64)
    }

    /// Whether the kept values are counted (rather than kept one by one).
    fn is_counted(sketch: &QuantileSketch) -> bool {
        matches!(
            sketch.exact.as_ref().map(|exact| &exact.form),
            Some(KeptValues::Counted(_))
        )
    }

    #[test]
    fn quantiles_are_numpys_whatever_the_partitioning_and_the_form() {
        let golden: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        // Every value kept; counted until a partition sees a 6th distinct value; all counted.
        for max_counted in [0, 5, MAX_COUNTED] {
            for case in golden["quantiles"].as_array().unwrap() {
                let values = floats(&case["values"]);
                for pair in case["quantiles"].as_array().unwrap() {
                    let (q, expected) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
                    for order in [[0, 1, 2], [2, 0, 1]] {
                        let sketch = sketch_of(&values, q, &pool, max_counted, order);
                        assert!(sketch.is_exact());
                        let ours = sketch.value().unwrap();
                        assert!(
                            (ours - expected).abs() <= 1e-12 * expected.abs().max(1e-300),
                            "{} q={q} counting {max_counted}: lakeforge {ours} vs numpy {expected}",
                            case["name"]
                        );
                    }
                }
            }
        }
        assert_eq!(pool.reserved(), 0, "every sketch gave its memory back");
        let mut empty = QuantileSketch::new(0.5);
        empty.keep_values("q", &pool);
        assert_eq!(empty.value(), None);
    }

    #[test]
    fn few_distinct_values_are_counted_in_little_memory() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        // 300,000 values, 37 distinct (whole milliseconds, say), in batches of 8,192.
        let values: Vec<f64> = (0..300_000u64).map(|i| ((i * 7919) % 37) as f64).collect();
        let mut sketch = QuantileSketch::new(0.99);
        sketch.keep_values("q", &pool);
        for batch in values.chunks(8192) {
            let array: ArrayRef = Arc::new(Float64Array::from(batch.to_vec()));
            sketch.observe(&array);
        }
        assert!(is_counted(&sketch));
        assert!(
            pool.reserved() < 4096,
            "a table of 37 values, not 300,000 keys: {} bytes",
            pool.reserved()
        );
        assert_eq!(sketch.value(), Some(sorted_quantile(&values, 0.99)));
    }

    #[test]
    fn counted_and_kept_partitions_merge_in_any_order() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        // Partition 0 repeats 4 values; partition 1 has 8 distinct ones (past the limit of 6,
        // so they are kept one by one); partition 2 has 4 others: merging it into partition 0
        // needs 8 distinct values, so the counts are expanded.
        let parts: [Vec<f64>; 3] = [
            (0..40).map(|i| f64::from(i % 4)).collect(),
            (0..8).map(|i| 100.0 - f64::from(i) * 3.5).collect(),
            (0..12).map(|i| 10.0 + f64::from(i % 4)).collect(),
        ];
        let all: Vec<f64> = parts.iter().flatten().copied().collect();
        for order in [[0, 1, 2], [1, 0, 2], [0, 2, 1], [2, 0, 1], [2, 1, 0]] {
            for quantile in [0.0, 0.1, 0.5, 0.62, 0.9, 1.0] {
                let partitions: Vec<QuantileSketch> = parts
                    .iter()
                    .map(|values| {
                        let mut sketch = QuantileSketch::new(quantile);
                        sketch.keep_values_counting("q", &pool, 6);
                        let array: ArrayRef = Arc::new(Float64Array::from(values.clone()));
                        sketch.observe(&array);
                        sketch
                    })
                    .collect();
                assert!(is_counted(&partitions[0]) && !is_counted(&partitions[1]));
                let sketch = merged(partitions, order);
                assert!(!is_counted(&sketch), "8 distinct values are past 6");
                assert_eq!(
                    sketch.value(),
                    Some(sorted_quantile(&all, quantile)),
                    "order {order:?}, q={quantile}"
                );
            }
        }
        // Two tables that fit one stay counted.
        let partitions: Vec<QuantileSketch> = [[1.0, 2.0, 2.0], [2.0, 3.0, 3.0], [1.0, 1.0, 4.0]]
            .iter()
            .map(|values| {
                let mut sketch = QuantileSketch::new(0.5);
                sketch.keep_values_counting("q", &pool, 6);
                sketch.observe(&(Arc::new(Float64Array::from(values.to_vec())) as ArrayRef));
                sketch
            })
            .collect();
        let sketch = merged(partitions, [2, 1, 0]);
        assert!(is_counted(&sketch));
        assert_eq!(sketch.value(), Some(2.0));
        drop(sketch);
        assert_eq!(pool.reserved(), 0);
    }

    #[test]
    fn counted_ranks_are_the_expanded_keys_ranks() {
        let mut counts = KeyCounts::new(100);
        for (key, count) in [(30u64, 2u64), (10, 1), (20, 3), (40, 1)] {
            assert!(counts.add(key, count));
        }
        let expanded = {
            let mut keys: Vec<u64> = counts.expand().into_iter().flatten().collect();
            keys.sort_unstable();
            keys
        };
        assert_eq!(expanded, vec![10, 20, 20, 20, 30, 30, 40]);
        for rank in 0..expanded.len() as u64 {
            assert_eq!(
                counts.select_with_next(rank),
                radix::select_with_next(std::slice::from_ref(&expanded), rank as usize),
                "rank {rank}"
            );
        }
        assert_eq!(counts.select_with_next(7), None);
        // The table doubles as it fills and refuses a distinct key too many.
        let mut counts = KeyCounts::new(1000);
        assert_eq!(counts.count_all(&(1..=1500u64).collect::<Vec<_>>()), 1000);
        assert_eq!((counts.distinct, counts.total), (1000, 1000));
        assert!(counts.add(1000, 4) && !counts.add(1001, 1));
        assert!(counts.contains(1) && counts.contains(1000) && !counts.contains(1001));
    }

    #[test]
    fn quantiles_fall_back_to_a_t_digest_when_memory_runs_out() {
        let values: Vec<f64> = (0..3000).map(|i| ((i * 37) % 1001) as f64).collect();
        let exact = sorted_quantile(&values, 0.9);
        // No room for the table; room for the table but not for kept values (counting 0
        // distinct values keeps every one); room for the table's first slots only.
        for (room, max_counted) in [(256, MAX_COUNTED), (2048, 0), (4096, MAX_COUNTED)] {
            let tight: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(room));
            let estimated = sketch_of(&values, 0.9, &tight, max_counted, [0, 1, 2]);
            assert!(!estimated.is_exact(), "room {room}");
            let estimate = estimated.value().unwrap();
            assert!(
                (estimate - exact).abs() <= 0.01 * exact,
                "room {room}: {estimate} vs {exact}"
            );
            drop(estimated);
            assert_eq!(tight.reserved(), 0);
        }

        // A sketch that travels carries its kept values in the digest, counted or not.
        let roomy: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        for max_counted in [0, MAX_COUNTED] {
            let kept = sketch_of(&values, 0.9, &roomy, max_counted, [0, 1, 2]);
            assert!(kept.is_exact());
            assert_eq!(kept.value(), Some(exact));
            let json = serde_json::to_string(&kept).unwrap();
            let received: QuantileSketch = serde_json::from_str(&json).unwrap();
            assert!(!received.is_exact());
            assert!((received.value().unwrap() - exact).abs() <= 0.01 * exact);
        }
    }
}
