//! Ranges of the UUID key space and the pace of a sweep over them: the embedded stores keep
//! a random-key index (aggregate ids, alert ids: UUIDv5 of their natural keys) behind what
//! they append, and move it into its table one range of keys at a time, so that a range's
//! entries land side by side in the leaves they share instead of one leaf page each
//! (`sems-eventlog`'s aggregate index, `sems-readmodel`'s alert keys).

use uuid::Uuid;

/// Ranges of the key space, by an id's first 12 bits.
pub const PREFIXES: usize = 4096;

/// The range of `id`: its first 12 bits (the first three hex digits of its text, which
/// sorts as the id does).
pub fn prefix_of(id: Uuid) -> usize {
    (id.as_u128() >> 116) as usize
}

/// The smallest id of range `prefix`.
pub fn first_id(prefix: usize) -> Uuid {
    Uuid::from_u128((prefix as u128) << 116)
}

/// Where a sweep over the ranges is, and how fast it goes: one sweep over every range per
/// `per_sweep` entries appended, whatever the rate.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Next range to move.
    pub cursor: usize,
    per_sweep: u64,
    /// Entries not yet turned into ranges, times `PREFIXES`.
    credit: u64,
}

impl Sweep {
    /// A sweep starting at range `cursor`, covering every range once per `per_sweep`
    /// entries.
    pub fn new(cursor: usize, per_sweep: u64) -> Self {
        Self {
            cursor: cursor % PREFIXES,
            per_sweep: per_sweep.max(1),
            credit: 0,
        }
    }

    /// How many ranges a transaction that appended `entries` moves.
    pub fn ranges_for(&mut self, entries: usize) -> usize {
        self.credit += entries as u64 * PREFIXES as u64;
        let ranges = (self.credit / self.per_sweep).min(PREFIXES as u64);
        self.credit -= ranges * self.per_sweep;
        // What is left over past a whole sweep (every range moved) is dropped.
        self.credit = self.credit.min(self.per_sweep - 1);
        ranges as usize
    }

    /// The ranges a committed transaction moved are behind the cursor.
    pub fn advance(&mut self, count: usize) {
        self.cursor = (self.cursor + count) % PREFIXES;
    }
}

/// The ranges `count` ranges from `first` cover, wrapping past the last, as at most two
/// half-open intervals of range numbers.
pub fn spans(first: usize, count: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = count.min(PREFIXES);
    let (a, b) = if first + count <= PREFIXES {
        ((first, first + count), None)
    } else {
        ((first, PREFIXES), Some((0, first + count - PREFIXES)))
    };
    std::iter::once(a).chain(b)
}

/// [`spans`] as exactly two ranges, the second empty (`(0, 0)`) when the first does not
/// wrap: for a statement that must name both (`prefix >= ? AND prefix < ?` twice, joined by
/// `OR`), which SQLite answers with two seeks where an expression of the prefix, such as
/// `((prefix - first) & 4095) < count`, makes it read every one of the 4,096 rows.
pub fn two_spans(first: usize, count: usize) -> [(usize, usize); 2] {
    let mut two = [(0, 0); 2];
    for (slot, span) in two.iter_mut().zip(spans(first, count)) {
        *slot = span;
    }
    two
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_the_first_three_hex_digits() {
        let u = Uuid::parse_str("abc12345-0000-4000-8000-000000000000").unwrap();
        assert_eq!(prefix_of(u), 0xabc);
        assert_eq!(prefix_of(Uuid::nil()), 0);
        assert_eq!(prefix_of(Uuid::max()), PREFIXES - 1);
        assert_eq!(
            first_id(0xabc).to_string(),
            "abc00000-0000-0000-0000-000000000000"
        );
    }

    #[test]
    fn a_sweep_covers_every_range_once_per_its_entries() {
        let mut sweep = Sweep::new(0, 65_536);
        let mut ranges = 0;
        for _ in 0..(65_536 / 800) {
            let n = sweep.ranges_for(800);
            sweep.advance(n);
            ranges += n;
        }
        // 81 groups of 800 = 64,800 entries: all but the last 736 entries' worth of ranges.
        assert_eq!(ranges, 64_800 * PREFIXES / 65_536);
        let mut slow = Sweep::new(0, 65_536);
        let moved: usize = (0..16).map(|_| slow.ranges_for(1)).sum();
        assert_eq!(moved, 1, "one range per 16 single entries");
        let mut tiny = Sweep::new(0, 4);
        assert_eq!(
            tiny.ranges_for(1_000),
            PREFIXES,
            "at most every range at once"
        );
        assert_eq!(tiny.ranges_for(0), 0, "the rest of a big group is dropped");
    }

    #[test]
    fn spans_wrap_past_the_last_range() {
        assert_eq!(spans(5, 3).collect::<Vec<_>>(), [(5, 8)]);
        assert_eq!(spans(4095, 3).collect::<Vec<_>>(), [(4095, 4096), (0, 2)]);
        assert_eq!(spans(7, 9000).collect::<Vec<_>>(), [(7, 4096), (0, 7)]);
    }

    #[test]
    fn two_spans_pad_with_an_empty_range() {
        assert_eq!(two_spans(5, 3), [(5, 8), (0, 0)]);
        assert_eq!(two_spans(4095, 3), [(4095, 4096), (0, 2)]);
        assert_eq!(two_spans(0, 4096), [(0, 4096), (0, 0)]);
        assert_eq!(two_spans(7, 9000), [(7, 4096), (0, 7)]);
    }
}
