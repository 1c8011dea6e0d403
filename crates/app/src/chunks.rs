//! Multi-row statements in a few fixed sizes. A statement of `n` rows is its own SQL text,
//! so rows cut into `max`-row chunks and one remainder of whatever size is left make a new
//! text almost every batch, which SQLite then parses and plans again (the statement cache
//! keeps texts, not shapes): a remainder is cut further into chunks of halving sizes, so
//! that every statement is one of a dozen texts, prepared once per connection.

use std::sync::{Arc, Mutex};

/// The text of a multi-row SQLite statement, `head` then `rows` groups of `columns`
/// placeholders (`VALUES (?, ?), (?, ?)`) then `tail`, built once per number of rows and
/// shared: with [`cached`] chunks a statement has a dozen texts. Writing them again for
/// every chunk (sqlx's `QueryBuilder` formats each placeholder and separator through
/// `core::fmt`) took ~2% of `semsd`'s instructions per streamed alert.
pub struct ValuesText {
    head: &'static str,
    columns: usize,
    tail: &'static str,
    texts: Mutex<Vec<(usize, Arc<str>)>>,
}

impl ValuesText {
    /// The statement `head VALUES (?, …), … tail`.
    pub const fn new(head: &'static str, columns: usize, tail: &'static str) -> Self {
        Self {
            head,
            columns,
            tail,
            texts: Mutex::new(Vec::new()),
        }
    }

    /// The text for `rows` rows.
    pub fn get(&self, rows: usize) -> Arc<str> {
        let mut texts = self.texts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, text)) = texts.iter().find(|(n, _)| *n == rows) {
            return Arc::clone(text);
        }
        let group = format!("({})", vec!["?"; self.columns].join(", "));
        let mut text =
            String::with_capacity(self.head.len() + 8 + rows * (group.len() + 2) + self.tail.len());
        text.push_str(self.head);
        text.push_str(" VALUES ");
        for i in 0..rows {
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(&group);
        }
        text.push_str(self.tail);
        let text: Arc<str> = text.into();
        texts.push((rows, Arc::clone(&text)));
        text
    }
}

/// `items` in chunks of `max`, then the rest in chunks of the largest power of two that
/// fits, smallest last. With `max` 1,000, 999 items are 512 + 256 + 128 + 64 + 32 + 4 + 2 + 1.
pub fn cached<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let max = max.max(1);
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = if rest.len() >= max {
            max
        } else {
            // The largest power of two not above what is left.
            1 << rest.len().ilog2()
        };
        let (chunk, after) = rest.split_at(size);
        rest = after;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize, max: usize) -> Vec<usize> {
        let items: Vec<usize> = (0..n).collect();
        let chunks: Vec<&[usize]> = cached(&items, max).collect();
        // Every item once, in order.
        assert_eq!(chunks.concat(), items);
        chunks.iter().map(|c| c.len()).collect()
    }

    #[test]
    fn values_texts_are_built_once_per_row_count() {
        let t = ValuesText::new("INSERT INTO t (a, b)", 2, " ON CONFLICT DO NOTHING");
        assert_eq!(
            &*t.get(3),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            &*t.get(1),
            "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING"
        );
        assert!(Arc::ptr_eq(&t.get(3), &t.get(3)), "shared, not built again");
    }

    #[test]
    fn full_chunks_then_halving_powers_of_two() {
        assert_eq!(sizes(0, 500), Vec::<usize>::new());
        assert_eq!(sizes(1, 500), vec![1]);
        assert_eq!(sizes(500, 500), vec![500]);
        assert_eq!(sizes(1_150, 500), vec![500, 500, 128, 16, 4, 2]);
        assert_eq!(sizes(999, 1_000), vec![512, 256, 128, 64, 32, 4, 2, 1]);
        assert_eq!(sizes(7, 4), vec![4, 2, 1]);
        assert_eq!(sizes(3, 0), vec![1, 1, 1], "a bound of 0 is taken as 1");
    }

    #[test]
    fn a_few_sizes_whatever_the_count() {
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..3_000 {
            seen.extend(sizes(n, 500));
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 500]
        );
    }
}
