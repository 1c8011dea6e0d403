//! A set of UUIDs that answers "certainly absent" or "perhaps present": a Bloom filter that
//! grows by adding layers, each twice the size of the one before, so it never needs the keys
//! again to grow. No false negatives: every key inserted is reported as perhaps present. A
//! false positive (about 1% per full layer, less in one filling) only sends the caller to
//! the log. A full layer holds 10 bits per key.

use uuid::Uuid;

/// Bits per key at a layer's capacity (≈ 1% false positives with `HASHES`).
const BITS_PER_KEY: usize = 10;
/// Bit positions set per key.
const HASHES: u64 = 7;
/// Keys the first layer holds at least.
const FIRST_CAPACITY: usize = 1 << 16;

#[derive(Debug, Clone)]
struct Layer {
    bits: Vec<u64>,
    /// Number of bits minus one (a power of two minus one).
    mask: u64,
    capacity: usize,
    len: usize,
}

impl Layer {
    /// A layer for at least `capacity` keys: its bits are a power of two (positions are a
    /// mask away), and it takes as many keys as they hold at `BITS_PER_KEY`.
    fn with_capacity(capacity: usize) -> Self {
        let bits = (capacity.max(1) * BITS_PER_KEY).next_power_of_two().max(64);
        Self {
            bits: vec![0; bits / 64],
            mask: bits as u64 - 1,
            capacity: bits / BITS_PER_KEY,
            len: 0,
        }
    }

    fn positions(&self, (h1, h2): (u64, u64)) -> impl Iterator<Item = u64> + '_ {
        (0..HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & self.mask)
    }

    fn insert(&mut self, (h1, h2): (u64, u64)) {
        for i in 0..HASHES {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.len += 1;
    }

    fn may_contain(&self, hashes: (u64, u64)) -> bool {
        self.positions(hashes)
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// A growing Bloom filter of UUIDs.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyFilter {
    layers: Vec<Layer>,
}

impl KeyFilter {
    /// Adds `key`.
    pub(crate) fn insert(&mut self, key: Uuid) {
        let full = self.layers.last().is_none_or(|l| l.len >= l.capacity);
        if full {
            let capacity = self
                .layers
                .last()
                .map_or(FIRST_CAPACITY, |l| l.capacity * 2);
            self.layers.push(Layer::with_capacity(capacity));
        }
        if let Some(layer) = self.layers.last_mut() {
            layer.insert(hashes(key));
        }
    }

    /// False only when `key` was never inserted.
    pub(crate) fn may_contain(&self, key: Uuid) -> bool {
        let h = hashes(key);
        self.layers.iter().any(|l| l.may_contain(h))
    }

    /// Takes every key of `other` (its layers are kept as they are).
    pub(crate) fn absorb(&mut self, other: KeyFilter) {
        // The growing layer stays last, so inserts keep filling it.
        let growing = self.layers.pop();
        self.layers.extend(other.layers);
        self.layers.extend(growing);
    }

    /// Bytes of bit arrays held.
    pub(crate) fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bits.len() * 8).sum()
    }
}

/// Two independent 64-bit hashes of a UUID. UUIDv7 keys share their leading (time) bits, so
/// both halves are mixed into each hash (splitmix64's finaliser).
fn hashes(key: Uuid) -> (u64, u64) {
    let (hi, lo) = key.as_u64_pair();
    let h1 = mix(hi ^ mix(lo));
    let h2 = mix(lo ^ mix(hi ^ 0x9e37_79b9_7f4a_7c15)) | 1;
    (h1, h2)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct, reproducible keys shaped like the log's: UUIDv7-like (shared time prefix)
    /// and UUIDv5-like (uniform).
    fn keys(seed: u64, n: usize) -> Vec<Uuid> {
        (0..n as u64)
            .map(|i| {
                if i % 2 == 0 {
                    Uuid::from_u64_pair(0x0190_0000_0000_7000 | (i >> 8), mix(seed ^ i))
                } else {
                    Uuid::from_u64_pair(mix(seed.wrapping_add(i)), mix(!seed ^ i))
                }
            })
            .collect()
    }

    #[test]
    fn every_inserted_key_is_found_across_grown_layers() {
        let mut filter = KeyFilter::default();
        let inserted = keys(1, 5 * FIRST_CAPACITY);
        for k in &inserted {
            filter.insert(*k);
        }
        assert!(filter.layers.len() >= 3, "{} layers", filter.layers.len());
        for layer in &filter.layers {
            assert!((layer.mask + 1) as usize >= layer.capacity * BITS_PER_KEY);
            assert!((layer.mask + 1) as usize <= (layer.capacity + 1) * BITS_PER_KEY);
        }
        assert!(inserted.iter().all(|k| filter.may_contain(*k)));
    }

    #[test]
    fn keys_never_inserted_are_mostly_reported_absent() {
        let mut filter = KeyFilter::default();
        for k in keys(2, 5 * FIRST_CAPACITY) {
            filter.insert(k);
        }
        let probes = keys(3, 100_000);
        let positives = probes.iter().filter(|k| filter.may_contain(**k)).count();
        // About 1% per full layer; three layers, the last partly full.
        assert!(positives < 3_000, "{positives} false positives in 100,000");
    }

    #[test]
    fn an_absorbed_filter_answers_for_its_keys_and_inserts_keep_working() {
        let mut scanned = KeyFilter::default();
        let old = keys(4, 70_000);
        for k in &old {
            scanned.insert(*k);
        }
        let mut live = KeyFilter::default();
        let new = keys(5, 1_000);
        for k in &new {
            live.insert(*k);
        }
        live.absorb(scanned);
        let later = keys(6, 100_000);
        for k in &later {
            live.insert(*k);
        }
        assert!(
            old.iter()
                .chain(&new)
                .chain(&later)
                .all(|k| live.may_contain(*k))
        );
    }

    #[test]
    fn an_empty_filter_contains_nothing() {
        let filter = KeyFilter::default();
        assert!(!filter.may_contain(Uuid::nil()));
        assert!(!filter.may_contain(Uuid::max()));
        assert_eq!(filter.bytes(), 0);
    }
}
