//! The embedded read model's alert keys, written behind the projector in sweeps (the same
//! scheme as the embedded log's aggregate index, `sems_app::keyspace`). Alert rows are
//! numbered in the order the projector creates them (`seq`); `alert_keys` maps an alert id
//! to its row, and is filled one range of the key space at a time, each range with a
//! watermark (`alert_keys_sweep`): every row of an alert in that range up to the watermark
//! has its key in the table. The projector holds the keys of the rows above their range's
//! watermark here ([`KeyTail`]), complete up to the last row it created; a lookup reads the
//! table up to the watermark its snapshot holds, the tail's rows above it, and the rows
//! after the tail's last (none while this process's projector is the only writer).

use std::collections::BTreeMap;

use sems_app::keyspace::{PREFIXES, first_id, prefix_of, spans};
use uuid::Uuid;

/// Keys the projector moves into the table in one batch: the ranges, their new watermark
/// and the keys, sorted by alert id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyMerge {
    pub first: usize,
    pub count: usize,
    pub through: i64,
    pub keys: Vec<(Uuid, i64)>,
}

/// Alert rows above their range's watermark, by alert id.
#[derive(Debug, Clone)]
pub(crate) struct KeyTail {
    seqs: BTreeMap<Uuid, i64>,
    merged: Vec<i64>,
    /// The last row created: the tail holds every key above its range's watermark up to it.
    last: i64,
}

impl KeyTail {
    pub(crate) fn new(merged: Vec<i64>, last: i64) -> Self {
        debug_assert_eq!(merged.len(), PREFIXES);
        Self {
            seqs: BTreeMap::new(),
            merged,
            last,
        }
    }

    pub(crate) fn lowest_merged(&self) -> i64 {
        self.merged.iter().copied().min().unwrap_or(0)
    }

    pub(crate) fn merged_at(&self, prefix: usize) -> i64 {
        self.merged[prefix % PREFIXES]
    }

    pub(crate) fn len(&self) -> usize {
        self.seqs.len()
    }

    /// The last row created.
    pub(crate) fn last(&self) -> i64 {
        self.last
    }

    /// The row of `id`, when the tail holds its key.
    pub(crate) fn get(&self, id: Uuid) -> Option<i64> {
        self.seqs.get(&id).copied()
    }

    /// Records row `seq` of alert `id` (rows at or below their range's watermark have their
    /// key in the table already).
    pub(crate) fn record(&mut self, id: Uuid, seq: i64) {
        if seq > self.merged[prefix_of(id)] {
            self.seqs.insert(id, seq);
        }
        self.last = self.last.max(seq);
    }

    /// The keys of `count` ranges from `first` (wrapping), sorted, to move into the table:
    /// the tail's, and those of `created` (rows numbered after `last()`, written in the same
    /// transaction) in those ranges; the ranges' watermark becomes the last of them.
    pub(crate) fn merge(&self, first: usize, count: usize, created: &[(Uuid, i64)]) -> KeyMerge {
        let count = count.min(PREFIXES);
        let mut keys = Vec::new();
        for (from, to) in spans(first, count) {
            keys.extend(
                self.seqs
                    .range(first_id(from)..)
                    .take_while(|(id, _)| prefix_of(**id) < to)
                    .map(|(id, seq)| (*id, *seq)),
            );
        }
        let within =
            |id: &Uuid| spans(first, count).any(|(from, to)| (from..to).contains(&prefix_of(*id)));
        keys.extend(created.iter().filter(|(id, _)| within(id)).copied());
        keys.sort_unstable();
        KeyMerge {
            first,
            count,
            through: created
                .iter()
                .map(|(_, seq)| *seq)
                .fold(self.last, i64::max),
            keys,
        }
    }

    /// `merge` is committed (before the rows it was made with are recorded).
    pub(crate) fn merged(&mut self, merge: &KeyMerge) {
        for (id, _) in &merge.keys {
            self.seqs.remove(id);
        }
        for (from, to) in spans(merge.first, merge.count) {
            for m in &mut self.merged[from..to] {
                *m = (*m).max(merge.through);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: usize, rest: u128) -> Uuid {
        Uuid::from_u128(((prefix as u128) << 116) | rest)
    }

    #[test]
    fn a_merge_moves_its_ranges_keys_and_the_tail_lets_them_go() {
        let mut tail = KeyTail::new(vec![0; PREFIXES], 0);
        for (p, seq) in [(4095, 1), (0, 2), (1, 3), (2, 4)] {
            tail.record(id(p, seq as u128), seq);
        }
        assert_eq!(tail.get(id(1, 3)), Some(3));
        // Rows created in the merge's own transaction: one in its ranges, one outside.
        let created = [(id(0, 7), 5), (id(3, 8), 6)];
        let merge = tail.merge(4095, 3, &created);
        assert_eq!(
            merge.keys,
            vec![
                (id(0, 2), 2),
                (id(0, 7), 5),
                (id(1, 3), 3),
                (id(4095, 1), 1)
            ]
        );
        assert_eq!(merge.through, 6);
        tail.merged(&merge);
        for (i, seq) in created {
            tail.record(i, seq);
        }
        assert_eq!(tail.get(id(0, 7)), None, "in the table already");
        assert_eq!(tail.get(id(3, 8)), Some(6));
        assert_eq!(tail.len(), 2);
        assert_eq!(tail.get(id(1, 3)), None);
        assert_eq!(tail.merged_at(4095), 6);
        assert_eq!(tail.merged_at(2), 0);
        assert_eq!(tail.lowest_merged(), 0);
        // A row at or below its range's watermark is the table's.
        tail.record(id(0, 9), 3);
        assert_eq!(tail.get(id(0, 9)), None);
        tail.record(id(0, 10), 9);
        assert_eq!((tail.get(id(0, 10)), tail.last()), (Some(9), 9));
    }
}
