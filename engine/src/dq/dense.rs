//! A `unique` check over one integer column, kept as bitmaps while the ids are dense.
//!
//! Surrogate keys are integers drawn from a range not much wider than their count (an
//! auto-increment id, a sequence with a stride). For those, two bits per possible id — seen
//! once, seen again — take a fraction of the 16 bytes per row that a sorted key buffer needs,
//! and finding a duplicate is a bit test instead of a sort and a merge. The bits live in pages
//! of 2^16 ids, allocated when an id first falls in them, found through a directory indexed
//! by the id's page number.
//!
//! - Rows failing are counted as they stream: the second row of a key adds 2 (both rows fail),
//!   every later one adds 1.
//! - Samples are the smallest duplicated keys with their exact row counts: a small ordered
//!   map keeps the smallest repeated ids until their rows reach the sample limit; an id above
//!   all of those can never be sampled, so it is dropped (see [`SmallestRepeats`]).
//! - Two partitions' bitmaps merge word by word: an id seen once on each side is a duplicate
//!   of two rows.
//! - When the ids turn out sparse (the bitmaps would take more memory than a key buffer), the
//!   caller turns the bitmaps into a sorted run of keys ([`DenseKeys::into_sorted_keys`]) and
//!   goes on with the general key set; the rows already counted carry over exactly.

use std::collections::BTreeMap;

/// Ids per page: a page number is an id shifted right by this many bits.
const PAGE_BITS: u32 = 16;
/// Words of each bitmap in a page.
const PAGE_WORDS: usize = (1 << PAGE_BITS) / 64;
/// One page: for each word of ids, the ids seen and the ids seen more than once, side by side
/// so that a row touches one cache line.
type Page = [[u64; 2]; PAGE_WORDS];
const PAGE_BYTES: usize = size_of::<Page>();
/// Memory the bitmaps may take before they must also be smaller than a key buffer: enough for
/// tens of millions of ids in any order.
const FREE_BYTES: usize = 64 << 20;
/// Bytes a row's key takes in the general key set (a `u128`): the dense form stays only while
/// it takes less memory than that, beyond [`FREE_BYTES`].
const KEY_BYTES: usize = size_of::<u128>();

/// The ids would take more memory as bitmaps than as keys.
#[derive(Debug, PartialEq, Eq)]
pub struct TooSparse;

/// One partition's (or, once merged, the run's) ids of a `unique` check as bitmaps.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseKeys {
    /// Page number of `pages[0]`.
    first_page: i64,
    pages: Vec<Option<Box<Page>>>,
    /// Pages allocated in `pages`.
    allocated: usize,
    /// Rows observed (non-NULL ids).
    rows: u64,
    /// Rows whose id another row has.
    failed: u64,
    smallest: SmallestRepeats,
}

impl DenseKeys {
    /// An empty set whose samples hold up to `limit` rows.
    pub fn new(limit: usize) -> DenseKeys {
        DenseKeys {
            first_page: 0,
            pages: Vec::new(),
            allocated: 0,
            rows: 0,
            failed: 0,
            smallest: SmallestRepeats::new(limit),
        }
    }

    /// Bytes held.
    pub fn memory(&self) -> usize {
        self.pages.capacity() * size_of::<Option<Box<Page>>>()
            + self.allocated * PAGE_BYTES
            + self.smallest.memory()
    }

    /// Rows whose id another row has.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// The smallest duplicated ids, ascending, with their rows.
    pub fn smallest_repeats(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.smallest.counts.iter().map(|(&id, &rows)| (id, rows))
    }

    /// Adds the ids of a batch's rows where `valid` is set (every row without it). Refuses, and
    /// changes nothing, when the bitmaps would take more memory than keys.
    pub fn observe<T: Copy + Into<i64>>(
        &mut self,
        ids: &[T],
        valid: Option<&arrow::buffer::BooleanBuffer>,
    ) -> Result<(), TooSparse> {
        let rows = valid.map_or(ids.len(), |v| v.count_set_bits());
        let extremes = match valid {
            None => extremes(ids.iter().map(|&id| id.into())),
            Some(valid) => extremes(valid.set_indices().map(|row| ids[row].into())),
        };
        let Some((low, high)) = extremes else {
            return Ok(());
        };
        let (low_page, high_page) = (low >> PAGE_BITS, high >> PAGE_BITS);
        // The most pages this batch could add: one per page of its range, at most one per row.
        let new_pages = usize::try_from(high_page - low_page + 1)
            .unwrap_or(usize::MAX)
            .min(rows);
        let directory = self
            .directory_len_with(low_page, high_page)
            .ok_or(TooSparse)?;
        let after = directory.saturating_mul(size_of::<Option<Box<Page>>>())
            + (self.allocated + new_pages).saturating_mul(PAGE_BYTES);
        let rows_after = self.rows as usize + rows;
        if after > FREE_BYTES.saturating_add(rows_after.saturating_mul(KEY_BYTES)) {
            return Err(TooSparse);
        }
        self.cover(low_page, high_page);
        self.rows += rows as u64;
        match valid {
            None => ids.iter().for_each(|&id| self.insert(id.into())),
            Some(valid) => valid
                .set_indices()
                .for_each(|row| self.insert(ids[row].into())),
        }
        Ok(())
    }

    /// The directory's length once it covers pages `low..=high`; `None` when it would not fit
    /// memory at all.
    fn directory_len_with(&self, low: i64, high: i64) -> Option<usize> {
        let (first, last) = if self.pages.is_empty() {
            (low, high)
        } else {
            let last = self.first_page + self.pages.len() as i64 - 1;
            (self.first_page.min(low), last.max(high))
        };
        usize::try_from(last - first + 1)
            .ok()
            .filter(|&len| len <= FREE_BYTES)
    }

    /// Extends the directory to cover pages `low..=high` (within the memory checked before).
    fn cover(&mut self, low: i64, high: i64) {
        if self.pages.is_empty() {
            self.first_page = low;
        }
        if low < self.first_page {
            let before = (self.first_page - low) as usize;
            self.pages
                .splice(0..0, std::iter::repeat_with(|| None).take(before));
            self.first_page = low;
        }
        let needed = (high - self.first_page + 1) as usize;
        if needed > self.pages.len() {
            self.pages.resize_with(needed, || None);
        }
    }

    #[inline(always)]
    fn insert(&mut self, id: i64) {
        // The directory covers the batch's pages (`cover`), so the index is in bounds.
        let slot = &mut self.pages[((id >> PAGE_BITS) - self.first_page) as usize];
        let page = match slot {
            Some(page) => page,
            None => {
                self.allocated += 1;
                slot.insert(empty_page())
            }
        };
        let word = &mut page[(id as usize >> 6) % PAGE_WORDS];
        let bit = 1u64 << (id & 63);
        if word[0] & bit == 0 {
            word[0] |= bit;
        } else if word[1] & bit == 0 {
            word[1] |= bit;
            self.failed += 2;
            self.smallest.repeated(id, true);
        } else {
            self.failed += 1;
            self.smallest.repeated(id, false);
        }
    }

    /// Page number `page`, when allocated.
    fn page(&self, page: i64) -> Option<&Page> {
        usize::try_from(page - self.first_page)
            .ok()
            .and_then(|index| self.pages.get(index))
            .and_then(Option::as_deref)
    }

    /// Rows of `id` on this side, when known: its count when sampled, 1 when seen once, 0 when
    /// not seen; `None` for a repeated id not kept (then it cannot be among the smallest).
    fn rows_of(&self, id: i64, bits: [u64; 2]) -> Option<u64> {
        let bit = 1u64 << (id & 63);
        if bits[1] & bit != 0 {
            self.smallest.counts.get(&id).copied()
        } else {
            Some(u64::from(bits[0] & bit != 0))
        }
    }

    /// Adds another partition's ids. Refuses, giving `other` back, when the two together
    /// would take more memory than keys.
    pub fn absorb(&mut self, other: DenseKeys) -> Result<(), Box<DenseKeys>> {
        if other.rows == 0 {
            return Ok(());
        }
        if self.rows == 0 {
            *self = other;
            return Ok(());
        }
        let other_last = other.first_page + other.pages.len() as i64 - 1;
        let Some(directory) = self.directory_len_with(other.first_page, other_last) else {
            return Err(Box::new(other));
        };
        let rows = (self.rows + other.rows) as usize;
        let most = directory * size_of::<Option<Box<Page>>>()
            + (self.allocated + other.allocated) * PAGE_BYTES;
        if most > FREE_BYTES.saturating_add(rows.saturating_mul(KEY_BYTES)) {
            return Err(Box::new(other));
        }
        // The smallest duplicated ids of the union, found before the bits are combined: an id
        // seen once on each side is a duplicate of two rows.
        let smallest = self.smallest_of_union(&other);
        self.cover(other.first_page, other_last);
        for (index, page) in other.pages.into_iter().enumerate() {
            let Some(theirs) = page else { continue };
            let slot =
                &mut self.pages[(other.first_page + index as i64 - self.first_page) as usize];
            match slot {
                None => {
                    *slot = Some(theirs);
                    self.allocated += 1;
                }
                Some(ours) => {
                    for (mine, their) in ours.iter_mut().zip(theirs.iter()) {
                        let ([seen, repeated], [their_seen, their_repeated]) = (*mine, *their);
                        // An id seen exactly once on one side and at all on the other: its
                        // row on the first side now fails too.
                        let once_here = seen & !repeated & their_seen;
                        let once_there = their_seen & !their_repeated & seen;
                        self.failed += u64::from(once_here.count_ones() + once_there.count_ones());
                        *mine = [
                            seen | their_seen,
                            repeated | their_repeated | (seen & their_seen),
                        ];
                    }
                }
            }
        }
        self.rows += other.rows;
        self.failed += other.failed;
        self.smallest = smallest;
        Ok(())
    }

    /// The smallest repeated ids of this set and `other` together, with their rows.
    fn smallest_of_union(&self, other: &DenseKeys) -> SmallestRepeats {
        let mut smallest = SmallestRepeats::new(self.smallest.limit);
        if smallest.limit == 0 {
            return smallest;
        }
        let first = self.first_page.min(other.first_page);
        let last = (self.first_page + self.pages.len() as i64)
            .max(other.first_page + other.pages.len() as i64);
        for page in first..last {
            let (my_page, their_page) = (self.page(page), other.page(page));
            if my_page.is_none() && their_page.is_none() {
                continue;
            }
            let bits = |page: Option<&Page>, word: usize| page.map_or([0, 0], |p| p[word]);
            for word in 0..PAGE_WORDS {
                let (mine, theirs) = (bits(my_page, word), bits(their_page, word));
                let mut repeated = mine[1] | theirs[1] | (mine[0] & theirs[0]);
                while repeated != 0 {
                    let id = (page << PAGE_BITS)
                        + (word as i64) * 64
                        + i64::from(repeated.trailing_zeros());
                    repeated &= repeated - 1;
                    // Both sides know the rows of an id this small: a repeated id a side did
                    // not keep has that side's kept ids, all smaller and all repeated in the
                    // union, before it, and those already fill the samples. At least two
                    // rows, should that ever not hold.
                    let rows = match (self.rows_of(id, mine), other.rows_of(id, theirs)) {
                        (Some(a), Some(b)) => a + b,
                        _ => 2,
                    };
                    smallest.counts.insert(id, rows);
                    smallest.rows += rows;
                    if smallest.rows >= smallest.limit as u64 {
                        return smallest;
                    }
                }
            }
        }
        smallest
    }

    /// Every id ascending, as `key(id)`, as many times as a key merge will count it, and the
    /// rows failing beyond those: the key set this becomes when the ids are too sparse for
    /// bitmaps.
    ///
    /// An id seen once appears once. A repeated id appears as many times as its rows when it
    /// is kept for samples (so samples stay exact), twice otherwise; the rows those copies
    /// leave out are returned, to be added to the failing rows.
    pub fn into_sorted_keys<K: Copy>(self, key: impl Fn(i64) -> K) -> (Vec<K>, u64) {
        let mut keys = Vec::with_capacity(usize::try_from(self.rows).unwrap_or(0));
        let mut counted = 0u64;
        for (index, page) in self.pages.iter().enumerate() {
            let Some(page) = page else { continue };
            let base = (self.first_page + index as i64) << PAGE_BITS;
            for (word, &[seen, repeated]) in page.iter().enumerate() {
                let mut bits = seen;
                while bits != 0 {
                    let bit = bits.trailing_zeros();
                    bits &= bits - 1;
                    let id = base + (word as i64) * 64 + i64::from(bit);
                    let copies = if repeated & (1 << bit) == 0 {
                        1
                    } else {
                        let copies = self.smallest.counts.get(&id).copied().unwrap_or(2);
                        counted += copies;
                        copies
                    };
                    keys.extend(std::iter::repeat_n(key(id), copies as usize));
                }
            }
        }
        (keys, self.failed - counted)
    }
}

fn empty_page() -> Box<Page> {
    Box::new([[0; 2]; PAGE_WORDS])
}

/// The least and greatest id.
fn extremes(ids: impl Iterator<Item = i64>) -> Option<(i64, i64)> {
    ids.fold(None, |range, id| match range {
        None => Some((id, id)),
        Some((low, high)) => Some((low.min(id), high.max(id))),
    })
}

/// The smallest repeated ids and their rows, as long as their rows are needed to fill
/// `limit` samples.
///
/// Invariant: every repeated id below the greatest kept one is kept, with its exact rows, and
/// the kept ids but the greatest hold fewer than `limit` rows. An id dropped (or never kept)
/// is above ids holding `limit` rows, which only grow, so it is never sampled and its later
/// rows need no count.
#[derive(Debug, Clone, PartialEq)]
struct SmallestRepeats {
    counts: BTreeMap<i64, u64>,
    /// Rows of the kept ids.
    rows: u64,
    limit: usize,
}

impl SmallestRepeats {
    fn new(limit: usize) -> SmallestRepeats {
        SmallestRepeats {
            counts: BTreeMap::new(),
            rows: 0,
            limit,
        }
    }

    fn memory(&self) -> usize {
        self.counts.len() * 2 * size_of::<u64>()
    }

    /// Another row of `id`, which was already seen; `first` when it is its second row.
    #[cold]
    fn repeated(&mut self, id: i64, first: bool) {
        if let Some(rows) = self.counts.get_mut(&id) {
            *rows += 1;
            self.rows += 1;
        } else if first
            && self.limit > 0
            && (self.rows < self.limit as u64
                || self
                    .counts
                    .last_key_value()
                    .is_some_and(|(&last, _)| id < last))
        {
            self.counts.insert(id, 2);
            self.rows += 2;
        } else {
            return;
        }
        // Drop the greatest ids while the others still fill the samples.
        while let Some((_, &last)) = self.counts.last_key_value()
            && self.counts.len() > 1
            && self.rows - last >= self.limit as u64
        {
            self.counts.pop_last();
            self.rows -= last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// What a full count says: rows failing, and the smallest duplicated ids with their rows
    /// until `limit` rows.
    fn oracle(ids: &[i64], limit: usize) -> (u64, Vec<(i64, u64)>) {
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for &id in ids {
            *counts.entry(id).or_default() += 1;
        }
        let mut repeated: Vec<(i64, u64)> = counts.into_iter().filter(|&(_, c)| c > 1).collect();
        repeated.sort();
        let failed = repeated.iter().map(|&(_, c)| c).sum();
        let mut rows = 0;
        let smallest = repeated
            .into_iter()
            .take_while(|&(_, c)| {
                let needed = rows < limit as u64;
                rows += c;
                needed
            })
            .collect();
        (failed, smallest)
    }

    fn pseudo_random(seed: u64, count: usize, modulo: i64, offset: i64) -> Vec<i64> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                offset + ((state >> 33) as i64 % modulo)
            })
            .collect()
    }

    fn dense(partitions: &[&[i64]], limit: usize) -> DenseKeys {
        let mut sets: Vec<DenseKeys> = partitions
            .iter()
            .map(|ids| {
                let mut set = DenseKeys::new(limit);
                for batch in ids.chunks(100) {
                    set.observe(batch, None).unwrap();
                }
                set
            })
            .collect();
        let mut merged = sets.remove(0);
        for other in sets {
            merged.absorb(other).unwrap();
        }
        merged
    }

    #[test]
    fn duplicates_and_samples_match_a_full_count_across_partitions() {
        // Ids around zero and across page boundaries, drawn with repeats (within and across
        // partitions), in any order.
        let ids = pseudo_random(7, 3000, 200_000, -100_000);
        for limit in [0, 1, 3, 10, 10_000] {
            let expected = oracle(&ids, limit);
            for parts in [1, 2, 3] {
                let chunk = ids.len().div_ceil(parts);
                let partitions: Vec<&[i64]> = ids.chunks(chunk).collect();
                let set = dense(&partitions, limit);
                assert_eq!(
                    set.failed(),
                    expected.0,
                    "limit {limit}, {parts} partitions"
                );
                assert_eq!(
                    set.smallest_repeats().collect::<Vec<_>>(),
                    expected.1,
                    "limit {limit}, {parts} partitions"
                );
            }
        }
    }

    #[test]
    fn an_id_once_on_each_side_fails_both_rows() {
        let set = dense(&[&[5, 9, 9], &[5, 9, 70_000]], 10);
        assert_eq!(set.failed(), 5, "5 twice, 9 three times");
        assert_eq!(
            set.smallest_repeats().collect::<Vec<_>>(),
            vec![(5, 2), (9, 3)]
        );
    }

    #[test]
    fn nulls_are_skipped_through_the_validity_mask() {
        let mut set = DenseKeys::new(5);
        let valid = arrow::buffer::BooleanBuffer::from(vec![true, false, true, true]);
        set.observe(&[3i32, 3, 4, 3], Some(&valid)).unwrap();
        assert_eq!(set.failed(), 2);
        assert_eq!(set.rows, 3);
    }

    #[test]
    fn sparse_ids_are_refused_without_changing_the_set() {
        let mut set = DenseKeys::new(5);
        set.observe(&[1i64, 2, 2], None).unwrap();
        let before = set.clone();
        let sparse: Vec<i64> = (0..8192).map(|i| i * 1_000_000_007).collect();
        assert_eq!(set.observe(&sparse, None), Err(TooSparse));
        assert_eq!(set, before);
        // A range the directory could hold, with more pages than keys would take.
        let spread: Vec<i64> = (0..8192).map(|i| i * 1_000_007).collect();
        assert_eq!(set.observe(&spread, None), Err(TooSparse));
        assert_eq!(set, before);
        assert_eq!(set.observe(&[i64::MIN, i64::MAX], None), Err(TooSparse));
        assert_eq!(set, before);
        // Far apart partitions are refused at the merge.
        let mut far = DenseKeys::new(5);
        far.observe(&[i64::MAX - 1], None).unwrap();
        assert!(set.absorb(far).is_err());
        assert_eq!(set, before);
    }

    #[test]
    fn sorted_ids_carry_every_failing_row() {
        let ids = pseudo_random(11, 2000, 500, 1 << 20);
        let limit = 4;
        let set = dense(&[&ids[..1000], &ids[1000..]], limit);
        let failed = set.failed();
        let kept: Vec<(i64, u64)> = set.smallest_repeats().collect();
        let (sorted, beyond) = set.into_sorted_keys(|id| id);
        assert!(sorted.is_sorted());
        // Counting the sorted ids as a key merge does, plus the rows beyond, gives the same.
        let (from_sorted, smallest) = oracle(&sorted, limit);
        assert_eq!(from_sorted + beyond, failed);
        assert_eq!(smallest, kept, "the sampled ids keep their exact rows");
    }
}
