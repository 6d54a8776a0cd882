//! A fast hasher for the producer's own maps.
//!
//! Their keys are shard ids the service gives, stream names the application gives
//! and numbers the producer counts: nobody can choose them to collide, so SipHash's
//! resistance to flooding buys nothing, and a shard id is looked up for every
//! record. Words are mixed in with one multiply each (as rustc's `FxHasher` does)
//! and the result goes through MurmurHash3's finalizer.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` with [`FastHash`].
pub(crate) type FastMap<K, V> = HashMap<K, V, FastHash>;
/// A `HashSet` with [`FastHash`].
pub(crate) type FastSet<K> = HashSet<K, FastHash>;

/// Builds [`FastHasher`]s.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// An odd constant with well-spread bits (from the Fx family).
const SEED: u64 = 0xf135_7aea_2e62_a9c5;

/// Adds words with one multiply each.
pub(crate) struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // The multiplies leave the low bits weakest and the table picks buckets by
        // them: MurmurHash3's finalizer spreads every bit over all of them.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_spread_over_buckets() {
        // 4,096 shard ids: the low 12 bits of their hashes (the buckets of a table
        // that size) take most values, and no two ids hash alike.
        let hashes: Vec<u64> = (0..4096)
            .map(|i| FastHash.hash_one(format!("shardId-{i:012}")))
            .collect();
        let distinct: HashSet<u64> = hashes.iter().copied().collect();
        assert_eq!(distinct.len(), hashes.len());
        let buckets: HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        // Random hashes would use about 1 − 1/e of them (2,589).
        assert!(buckets.len() > 2_450, "{} buckets used", buckets.len());
        assert_ne!(FastHash.hash_one("a"), FastHash.hash_one("a\0"));
    }

    #[test]
    fn a_map_works_as_a_map() {
        let mut m: FastMap<String, usize> = FastMap::default();
        for i in 0..10_000 {
            m.insert(format!("k{i}"), i);
        }
        assert!((0..10_000).all(|i| m[&format!("k{i}")] == i));
    }
}
