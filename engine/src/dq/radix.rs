//! Least-significant-digit radix sort of unsigned integer keys, for the sorts on the checks'
//! hot path: the keys a `unique` check collects (`u128`) and each batch of a quantile's values
//! (`f64` mapped to order-preserving `u64`).
//!
//! One pass counts every byte's histogram, then one pass per byte that differs between keys:
//! bytes every key shares (the high bytes of ids, the exponent of values in a narrow range,
//! row-format padding) are skipped. Input that is already in order (data written in key
//! order) costs one pass.
//!
//! [`select_with_next`] finds a rank among several runs of keys (an exact quantile's values,
//! one run per partition) without concatenating them: a histogram of the top 16 bits narrows
//! the rank to one bucket, and only that bucket's keys are gathered.

/// An unsigned key sorted byte by byte.
pub trait RadixKey: Copy + Ord + Default {
    /// Bytes in the key.
    const BYTES: usize;
    /// Byte `index`, 0 the least significant.
    fn byte(self, index: usize) -> usize;
}

macro_rules! radix_key {
    ($type:ty) => {
        impl RadixKey for $type {
            const BYTES: usize = size_of::<$type>();
            #[inline(always)]
            fn byte(self, index: usize) -> usize {
                ((self >> (8 * index)) & 0xff) as usize
            }
        }
    };
}
radix_key!(u64);
radix_key!(u128);

/// Below this many keys the standard sort is as fast.
const SMALL: usize = 256;

/// Sorts `keys` ascending, using `scratch` (resized to `keys.len()`) as the second buffer.
pub fn radix_sort<K: RadixKey>(keys: &mut Vec<K>, scratch: &mut Vec<K>) {
    if keys.windows(2).all(|pair| pair[0] <= pair[1]) {
        return;
    }
    // Histogram counts are `u32`, half the cache of `usize` counts; larger inputs (never a
    // batch, only an unbounded key set) take the standard sort.
    if keys.len() < SMALL || u32::try_from(keys.len()).is_err() {
        keys.sort_unstable();
        return;
    }
    // Every byte's histogram in one pass over the keys; a byte whose keys all fall in one
    // bucket is shared by every key and needs no pass of its own.
    let mut histograms = vec![[0u32; 256]; K::BYTES];
    for &key in keys.iter() {
        for (index, histogram) in histograms.iter_mut().enumerate() {
            histogram[key.byte(index)] += 1;
        }
    }
    let len = keys.len() as u32;
    scratch.clear();
    scratch.resize(keys.len(), K::default());
    for (index, histogram) in histograms.iter().enumerate() {
        if histogram.contains(&len) {
            continue;
        }
        let mut offsets = [0usize; 256];
        let mut total = 0;
        for (offset, &count) in offsets.iter_mut().zip(histogram) {
            *offset = total;
            total += count as usize;
        }
        for &key in keys.iter() {
            let bucket = key.byte(index);
            scratch[offsets[bucket]] = key;
            offsets[bucket] += 1;
        }
        std::mem::swap(keys, scratch);
    }
}

/// The key of rank `rank` (0-based) in the sorted union of `parts`, and the key of rank
/// `rank + 1` when there is one; `None` when `rank` is beyond the keys.
///
/// Each pass counts the next 16 bits of the keys that share the bits found so far, until the
/// rank's bucket is small enough to gather and select in; so the parts are neither copied
/// nor reordered, and the memory touched is a histogram and a bucket (unless every key shares
/// its top bits with more than [`GATHER`] others).
pub fn select_with_next(parts: &[Vec<u64>], rank: usize) -> Option<(u64, Option<u64>)> {
    select_gathering(parts, rank, GATHER)
}

/// [`select_with_next`], gathering buckets of at most `gather` keys.
fn select_gathering(parts: &[Vec<u64>], rank: usize, gather: usize) -> Option<(u64, Option<u64>)> {
    let keys = || parts.iter().flatten().copied();
    let total: usize = parts.iter().map(Vec::len).sum();
    if rank >= total {
        return None;
    }
    // The keys whose top `bits` bits equal `prefix` hold ranks `first..first + count`.
    let in_bucket = |key: u64, prefix: u64, bits: u32| bits == 0 || key >> (64 - bits) == prefix;
    let (mut prefix, mut bits, mut first, mut count) = (0u64, 0u32, 0usize, total);
    while count > gather && bits < 64 {
        let shift = 64 - bits - DIGIT_BITS;
        let mut counts = vec![0usize; 1 << DIGIT_BITS];
        for key in keys().filter(|&key| in_bucket(key, prefix, bits)) {
            counts[((key >> shift) as usize) & ((1 << DIGIT_BITS) - 1)] += 1;
        }
        // The rank lies in this bucket, so some digit's count reaches past it.
        let mut digit = 0;
        for (candidate, &in_digit) in counts.iter().enumerate() {
            if rank < first + in_digit {
                (digit, count) = (candidate, in_digit);
                break;
            }
            first += in_digit;
        }
        prefix = (prefix << DIGIT_BITS) | digit as u64;
        bits += DIGIT_BITS;
    }
    let (key, next_in_bucket) = if bits == 64 {
        // Every key of the bucket is `prefix`.
        (prefix, (rank + 1 < first + count).then_some(prefix))
    } else {
        let mut bucket: Vec<u64> = Vec::with_capacity(count);
        bucket.extend(keys().filter(|&key| in_bucket(key, prefix, bits)));
        let (_, &mut key, above) = bucket.select_nth_unstable(rank - first);
        (key, above.iter().copied().min())
    };
    // The next rank, when not in this bucket, is the least key of the buckets above it.
    let next = next_in_bucket.or_else(|| {
        (bits > 0 && rank + 1 < total)
            .then(|| keys().filter(|&key| key >> (64 - bits) > prefix).min())
            .flatten()
    });
    Some((key, next))
}

/// Bits a [`select_with_next`] pass narrows the rank by.
const DIGIT_BITS: u32 = 16;

/// Most keys [`select_with_next`] gathers to select among.
const GATHER: usize = 1 << 20;

/// `value`'s bits mapped so that unsigned order is `f64::total_cmp` order.
pub fn f64_key(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The inverse of [`f64_key`].
pub fn f64_from_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_the_standard_sort() {
        let mut scratch = Vec::new();
        for n in [0usize, 5, 300, 5000] {
            let mut keys: Vec<u128> = (0..n as u128)
                .map(|i| ((i * 2_654_435_761) % 1_000_003) | (1 << 120))
                .collect();
            let mut expected = keys.clone();
            expected.sort_unstable();
            radix_sort(&mut keys, &mut scratch);
            assert_eq!(keys, expected);
        }
        let mut keys: Vec<u64> = (0..4000u64)
            .rev()
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut expected = keys.clone();
        expected.sort_unstable();
        radix_sort(&mut keys, &mut Vec::new());
        assert_eq!(keys, expected);
    }

    #[test]
    fn selects_ranks_across_parts_like_a_sort() {
        // Random keys; keys sharing their top bits (several passes); many equal keys (a
        // bucket of one value); a rank at the end of its bucket (the next is in another).
        // Buckets of more than 100 keys are narrowed further.
        let gather = 100;
        let spread: Vec<u64> = (0..30_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let narrow: Vec<u64> = (0..25_000u64)
            .map(|i| (7 << 48) | (i.wrapping_mul(2_654_435_761) % 50_000))
            .collect();
        let equal = vec![42u64; 15_000];
        let cases: Vec<Vec<Vec<u64>>> = vec![
            vec![spread[..10_000].to_vec(), spread[10_000..].to_vec()],
            vec![narrow.clone(), vec![1, u64::MAX], Vec::new()],
            vec![equal.clone(), vec![41, 43, 43]],
            vec![vec![5, 1, 9, 3]],
            vec![Vec::new()],
        ];
        for parts in cases {
            let mut sorted: Vec<u64> = parts.iter().flatten().copied().collect();
            sorted.sort_unstable();
            let n = sorted.len();
            let ranks = [
                0,
                1,
                n / 2,
                n.saturating_sub(2),
                n.saturating_sub(1),
                n / 3 + 7,
            ];
            for rank in ranks.into_iter().filter(|&rank| rank < n) {
                assert_eq!(
                    select_gathering(&parts, rank, gather),
                    Some((sorted[rank], sorted.get(rank + 1).copied())),
                    "rank {rank} of {n}"
                );
            }
            assert_eq!(select_gathering(&parts, n, gather), None);
            // Gathering every key at once agrees.
            assert_eq!(
                select_with_next(&parts, n / 2),
                select_gathering(&parts, n / 2, gather)
            );
        }
        // The last key of a bucket whose next key is in a later bucket.
        let parts = vec![
            vec![(1u64 << 48) | 5; gather + 1],
            vec![(3u64 << 48) | 2, 9 << 48],
        ];
        assert_eq!(
            select_gathering(&parts, gather, gather),
            Some(((1 << 48) | 5, Some((3 << 48) | 2)))
        );
    }

    #[test]
    fn float_keys_keep_total_order() {
        let mut values = vec![
            3.5,
            -0.0,
            0.0,
            -1e300,
            1e-300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -2.25,
            7.0,
            1.0,
        ];
        let mut keys: Vec<u64> = values.iter().map(|&v| f64_key(v)).collect();
        keys.sort_unstable();
        values.sort_by(f64::total_cmp);
        let back: Vec<f64> = keys.into_iter().map(f64_from_key).collect();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
