//! Least-significant-digit radix sort of unsigned integer keys, for the sorts on the checks'
//! hot path: the keys a `unique` check collects (`u128`) and each batch of a quantile's values
//! (`f64` mapped to order-preserving `u64`).
//!
//! One pass counts every byte's histogram, then one pass per byte that differs between keys:
//! bytes every key shares (the high bytes of ids, the exponent of values in a narrow range,
//! row-format padding) are skipped. Input that is already in order (data written in key
//! order) costs one pass.

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
