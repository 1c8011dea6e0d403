//! The handler's cache of loaded aggregates: two generations of at most half the capacity
//! each. New and refreshed entries go into the young one; when it is full, the old one is
//! dropped whole and the young one becomes old. An entry found in the old generation moves
//! back into the young one, so an aggregate in use (an incident under work) stays while
//! those not touched for a generation (the stream of alerts nobody repeats) go.
//!
//! Each insert and lookup is one or two hash-map operations: no entry is ever scanned to
//! choose what to evict, and no map fills up with deleted slots. (Evicting "an arbitrary
//! eighth" of one map took its first keys in iteration order: every eviction scanned past
//! the slots the evictions before had emptied, and the map rehashed itself in place under
//! the lock every command takes.)

use std::{any::Any, collections::HashMap, hash::Hash, mem, sync::Arc};

/// A cached value: any loaded aggregate, shared with the commands reading it.
pub(crate) type Entry = Arc<dyn Any + Send + Sync>;

/// Two generations of entries, at most `capacity` in all.
pub(crate) struct Generations<K> {
    young: HashMap<K, Entry>,
    old: HashMap<K, Entry>,
    /// Entries per generation at most (half the capacity, at least 1).
    half: usize,
}

impl<K: Hash + Eq + Copy> Generations<K> {
    /// A cache of at most `capacity` entries (at least 2), sized for them at once.
    pub(crate) fn new(capacity: usize) -> Self {
        let half = (capacity / 2).max(1);
        let sized = half.min(1 << 19);
        Self {
            young: HashMap::with_capacity(sized),
            old: HashMap::with_capacity(sized),
            half,
        }
    }

    /// The entry for `key`, moved into the young generation when it was old. What the move
    /// retires is handed back, to be dropped once the caller's lock is released.
    pub(crate) fn get(&mut self, key: &K) -> (Option<Entry>, Option<HashMap<K, Entry>>) {
        if let Some(e) = self.young.get(key) {
            return (Some(e.clone()), None);
        }
        match self.old.remove(key) {
            Some(e) => {
                let retired = self.put_young(*key, e.clone());
                (Some(e), retired)
            }
            None => (None, None),
        }
    }

    /// The entry for `key`, without moving it.
    pub(crate) fn peek(&self, key: &K) -> Option<&Entry> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    /// Stores `entry` for `key` in the young generation (replacing any copy in either).
    /// When that fills the young generation, the old one is retired and handed back, to be
    /// dropped once the caller's lock is released (freeing many entries takes a while).
    pub(crate) fn insert(&mut self, key: K, entry: Entry) -> Option<HashMap<K, Entry>> {
        self.old.remove(&key);
        self.put_young(key, entry)
    }

    /// Forgets `key`.
    pub(crate) fn remove(&mut self, key: &K) {
        self.young.remove(key);
        self.old.remove(key);
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    fn put_young(&mut self, key: K, entry: Entry) -> Option<HashMap<K, Entry>> {
        let retired = if self.young.len() >= self.half && !self.young.contains_key(&key) {
            let fresh = HashMap::with_capacity(self.young.capacity());
            let young = mem::replace(&mut self.young, fresh);
            Some(mem::replace(&mut self.old, young))
        } else {
            None
        };
        self.young.insert(key, entry);
        retired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> Entry {
        Arc::new(n)
    }

    fn value(e: Option<Entry>) -> Option<u32> {
        e.map(|e| *e.downcast::<u32>().unwrap())
    }

    #[test]
    fn holds_at_most_its_capacity_and_keeps_what_is_in_use() {
        let mut c = Generations::new(4);
        for k in 0..4u32 {
            assert!(c.insert(k, entry(k)).is_none() || k >= 2);
        }
        // 0 and 1 are old, 2 and 3 young; using 0 keeps it.
        assert_eq!(value(c.get(&0).0), Some(0));
        for k in 4..6u32 {
            c.insert(k, entry(k));
            assert!(c.len() <= 4, "{} held", c.len());
        }
        assert_eq!(value(c.get(&0).0), Some(0), "in use, kept");
        assert_eq!(value(c.get(&1).0), None, "untouched for a generation, gone");
        assert!(c.len() <= 4);
    }

    #[test]
    fn a_full_young_generation_retires_the_old_one_for_the_caller_to_drop() {
        let mut c = Generations::new(4);
        assert!(c.insert(1, entry(1)).is_none());
        assert!(c.insert(2, entry(2)).is_none());
        assert!(
            c.insert(3, entry(3)).unwrap().is_empty(),
            "nothing was old yet"
        );
        assert!(c.insert(4, entry(4)).is_none());
        let retired = c.insert(5, entry(5)).unwrap();
        let mut keys: Vec<u32> = retired.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, [1, 2]);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn an_insert_replaces_the_copy_in_either_generation() {
        let mut c = Generations::new(4);
        c.insert(1, entry(10));
        c.insert(2, entry(20));
        c.insert(3, entry(30)); // 1 and 2 are old now
        c.insert(1, entry(11));
        assert_eq!(value(c.peek(&1).cloned()), Some(11));
        assert_eq!(c.len(), 3, "one copy of 1");
        c.remove(&1);
        c.remove(&2);
        assert_eq!(value(c.get(&1).0), None);
        assert_eq!(value(c.get(&2).0), None);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_capacity_below_two_still_holds_one_entry() {
        let mut c = Generations::new(0);
        c.insert(1, entry(1));
        assert_eq!(value(c.get(&1).0), Some(1));
        c.insert(2, entry(2));
        assert!(c.len() <= 2);
        assert_eq!(value(c.get(&2).0), Some(2));
    }
}
