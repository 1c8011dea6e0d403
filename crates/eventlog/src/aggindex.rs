//! The embedded log's aggregate index, written behind the log in sweeps.
//!
//! Loading an aggregate and checking its last position need its commits by aggregate id.
//! Alert ids are derived from the dedup key (UUIDv5), so an index maintained on every append
//! puts each new alert at a random place in a B-tree and dirties a leaf page of its own:
//! measured, that index alone cost a third of the embedded store's streaming throughput
//! (`docs/BENCHMARKS.md`, session of 2026-11-29 from 10:51 UTC).
//!
//! So the index is a table of its own (`aggregate_index`: aggregate id and position) that
//! the writer fills in sweeps over the key space. The key space is cut into [`PREFIXES`]
//! ranges by the id's first 12 bits; each range has a watermark (`aggregate_index_sweep`):
//! every commit of an aggregate in that range up to the watermark is in the table. Commits
//! above their range's watermark are held here, in memory ([`Tail`]), and each group commit
//! moves the next ranges' entries into the table (as many ranges as its commits earn),
//! sorted, in the same transaction, so
//! one sweep over all ranges takes `SqliteLogConfig::index_sweep_commits` commits whatever
//! the rate (`sems_app::keyspace`).
//! A sweep's inserts land side by side in the leaves they share, instead of one leaf per
//! commit.
//!
//! The tail is the writer's: it holds every commit above its range's watermark up to
//! `complete_to`, which the writer moves after each group it commits (or commits of another
//! process it reads); at open it is read back from the log. Readers combine table, tail and
//! log in one statement (`SqliteLog::read_aggregate_after`); the tail lets entries go only
//! once the sweep that moved them is committed, so whatever a sweep does between a reader's
//! look at the tail and its snapshot, the reader misses no commit.

use std::collections::BTreeMap;

use uuid::Uuid;

pub(crate) use sems_app::keyspace::{PREFIXES, Sweep, prefix_of};
use sems_app::keyspace::{first_id, spans};

/// What a reader needs of the tail for one aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TailView {
    /// The aggregate's range.
    pub prefix: usize,
    /// The aggregate's positions the tail holds (above the range's watermark), in order.
    pub positions: Vec<u64>,
    /// The tail holds every commit above `merged` up to this position.
    pub complete_to: u64,
}

/// Entries the writer moves into the table in one group: the ranges it covers, the
/// watermark they get, and the entries, sorted by id then position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Merge {
    pub first: usize,
    pub count: usize,
    pub through: u64,
    pub entries: Vec<(Uuid, u64)>,
}

/// Commits above their range's watermark, by aggregate.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    /// (aggregate id, position) → aggregate type, as an index into `types`.
    entries: BTreeMap<(Uuid, u64), u16>,
    types: Vec<String>,
    /// Each range's watermark as this process knows it.
    merged: Vec<u64>,
    complete_to: u64,
}

impl Tail {
    /// An empty tail over ranges whose watermarks are `merged`, complete up to
    /// `complete_to` once the commits between are recorded.
    pub(crate) fn new(merged: Vec<u64>, complete_to: u64) -> Self {
        debug_assert_eq!(merged.len(), PREFIXES);
        Self {
            entries: BTreeMap::new(),
            types: Vec::new(),
            merged,
            complete_to,
        }
    }

    /// The watermark of range `prefix` as this process knows it.
    pub(crate) fn merged_at(&self, prefix: usize) -> u64 {
        self.merged[prefix % PREFIXES]
    }

    /// The lowest watermark: the tail can only need commits above it.
    pub(crate) fn lowest_merged(&self) -> u64 {
        self.merged.iter().copied().min().unwrap_or(0)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn complete_to(&self) -> u64 {
        self.complete_to
    }

    /// Every aggregate id the tail holds.
    pub(crate) fn ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.entries.keys().map(|(id, _)| *id)
    }

    fn tag(&mut self, aggregate_type: &str) -> u16 {
        match self.types.iter().position(|t| t == aggregate_type) {
            Some(i) => i as u16,
            None => {
                self.types.push(aggregate_type.to_owned());
                (self.types.len() - 1) as u16
            }
        }
    }

    /// Records a commit the log now holds. Commits at or below their range's watermark are
    /// in the table already (another process swept them) and are not held.
    pub(crate) fn record(&mut self, aggregate_type: &str, id: Uuid, position: u64) {
        if position > self.merged[prefix_of(id)] {
            let tag = self.tag(aggregate_type);
            self.entries.insert((id, position), tag);
        }
    }

    /// The tail now holds every commit up to `position`.
    pub(crate) fn completed(&mut self, position: u64) {
        self.complete_to = self.complete_to.max(position);
    }

    /// The last position of aggregate (`aggregate_type`, `id`) when the tail holds one of
    /// its commits: then no commit of it in the table is later.
    pub(crate) fn head(&self, aggregate_type: &str, id: Uuid) -> Option<u64> {
        let tag = self.types.iter().position(|t| t == aggregate_type)? as u16;
        self.entries
            .range((id, 0)..=(id, u64::MAX))
            .rev()
            .find(|(_, t)| **t == tag)
            .map(|((_, p), _)| *p)
    }

    /// What a reader of aggregate (`aggregate_type`, `id`) needs of the tail.
    pub(crate) fn view(&self, aggregate_type: &str, id: Uuid) -> TailView {
        let prefix = prefix_of(id);
        let tag = self.types.iter().position(|t| t == aggregate_type);
        TailView {
            prefix,
            positions: self
                .entries
                .range((id, 0)..=(id, u64::MAX))
                .filter(|(_, t)| Some(**t as usize) == tag)
                .map(|((_, p), _)| *p)
                .collect(),
            complete_to: self.complete_to,
        }
    }

    /// The entries of `count` ranges from `first` (wrapping past the last), sorted, to move
    /// into the table with watermark `through` (the tail must be complete up to it).
    pub(crate) fn merge(&self, first: usize, count: usize, through: u64) -> Merge {
        let count = count.min(PREFIXES);
        let mut entries = Vec::new();
        for (from, to) in spans(first, count) {
            let within = self.entries.range((first_id(from), 0)..);
            entries.extend(
                within
                    .take_while(|(k, _)| prefix_of(k.0) < to)
                    .map(|(k, _)| *k),
            );
        }
        // Two pieces when wrapping: the second sorts before the first.
        entries.sort_unstable();
        Merge {
            first,
            count,
            through,
            entries,
        }
    }

    /// `merge` is committed: its ranges' entries are in the table up to its watermark.
    pub(crate) fn merged(&mut self, merge: &Merge) {
        for (id, position) in &merge.entries {
            self.entries.remove(&(*id, *position));
        }
        for i in 0..merge.count {
            let m = &mut self.merged[(merge.first + i) % PREFIXES];
            *m = (*m).max(merge.through);
        }
    }

    /// Takes in watermarks another process moved (read from the table): what they cover is
    /// in the table, so the tail lets it go. False when a watermark is below the one the
    /// tail knows: another process cut the index back (the log lost commits), and the tail
    /// must be read again (nothing is changed then).
    pub(crate) fn absorb_watermarks(&mut self, watermarks: &[u64]) -> bool {
        let marks = &watermarks[..PREFIXES.min(watermarks.len())];
        if marks.iter().zip(&self.merged).any(|(w, m)| w < m) {
            return false;
        }
        for (m, &w) in self.merged.iter_mut().zip(marks) {
            *m = (*m).max(w);
        }
        let merged = &self.merged;
        self.entries
            .retain(|(id, position), _| *position > merged[prefix_of(*id)]);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: usize, rest: u128) -> Uuid {
        Uuid::from_u128(((prefix as u128) << 116) | rest)
    }

    #[test]
    fn the_head_is_the_last_position_of_that_type_only() {
        let mut tail = Tail::new(vec![0; PREFIXES], 0);
        let a = id(5, 1);
        tail.record("alert", a, 3);
        tail.record("alert", a, 9);
        tail.record("incident", a, 12);
        tail.record("alert", id(5, 2), 20);
        assert_eq!(tail.head("alert", a), Some(9));
        assert_eq!(tail.head("incident", a), Some(12));
        assert_eq!(tail.head("handover", a), None);
        assert_eq!(tail.head("alert", id(6, 1)), None);
        assert_eq!(tail.view("alert", a).positions, vec![3, 9]);
    }

    #[test]
    fn a_merge_takes_its_ranges_sorted_and_wraps_past_the_last() {
        let mut tail = Tail::new(vec![0; PREFIXES], 0);
        for (p, pos) in [(4095, 1), (0, 2), (1, 3), (2, 4), (4094, 5), (0, 6)] {
            tail.record("alert", id(p, pos as u128), pos);
        }
        let merge = tail.merge(4095, 3, 6);
        let prefixes: Vec<usize> = merge.entries.iter().map(|(i, _)| prefix_of(*i)).collect();
        assert_eq!(prefixes, vec![0, 0, 1, 4095]);
        assert!(merge.entries.windows(2).all(|w| w[0] < w[1]));
        tail.merged(&merge);
        assert_eq!(tail.len(), 2, "ranges 2 and 4094 stay");
        assert_eq!(tail.merged_at(0), 6);
        assert_eq!(tail.merged_at(2), 0);
        // Commits at or below a range's watermark are the table's.
        tail.record("alert", id(1, 9), 5);
        assert_eq!(tail.head("alert", id(1, 9)), None);
    }

    #[test]
    fn watermarks_moved_elsewhere_release_what_they_cover() {
        let mut tail = Tail::new(vec![0; PREFIXES], 0);
        tail.record("alert", id(7, 1), 4);
        tail.record("alert", id(7, 1), 8);
        let mut marks = vec![0; PREFIXES];
        marks[7] = 5;
        assert!(tail.absorb_watermarks(&marks));
        assert_eq!(tail.view("alert", id(7, 1)).positions, vec![8]);
        assert_eq!(tail.lowest_merged(), 0);
        // A watermark moved back: the index was cut elsewhere; the tail is left as it was.
        marks[7] = 3;
        assert!(!tail.absorb_watermarks(&marks));
        assert_eq!(tail.merged_at(7), 5);
    }
}
