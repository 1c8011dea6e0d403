//! The commits this process appended last, kept in memory for its projectors: the feed
//! takes a commit from here when it is the next one it wants, and reads the log file for
//! everything else (commits another process appended, commits that left memory). What is
//! held is what the writer's committed transaction stored at that position, byte for byte;
//! a log found to have lost commits drops it all. Nothing is held while no feed reads the
//! log in this process. `docs/DECISIONS.md`, "The embedded feed takes this process's
//! commits from memory".

use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;

use sems_app::{FedCommit, StoredCommit};

/// Commits held at most, and envelope bytes: about two seconds of streaming, while a
/// projector that keeps up is milliseconds behind the writer.
pub const RECENT_COMMITS: usize = 65_536;
pub const RECENT_BYTES: usize = 64 << 20;

/// One commit as the feed delivers it.
pub struct RecentCommit {
    pub position: u64,
    pub bytes: Bytes,
    pub traceparent: Option<Arc<str>>,
    pub tracestate: Option<Arc<str>>,
}

/// The last commits the writer stored, in position order (not always consecutive: other
/// processes' commits are not here).
pub struct Recent {
    commits: VecDeque<RecentCommit>,
    bytes: usize,
    max_commits: usize,
    max_bytes: usize,
    /// Feeds over the log in this process: with none, nothing is held.
    feeds: usize,
    /// Times everything held was dropped: a run taken before a drop is not used after it.
    generation: u64,
}

impl Default for Recent {
    fn default() -> Self {
        Self::with_limits(RECENT_COMMITS, RECENT_BYTES)
    }
}

impl Recent {
    pub fn with_limits(max_commits: usize, max_bytes: usize) -> Self {
        Self {
            commits: VecDeque::new(),
            bytes: 0,
            max_commits,
            max_bytes,
            feeds: 0,
            generation: 0,
        }
    }

    /// A feed over the log was made in this process: commits are held from now on.
    pub fn feed_opened(&mut self) {
        self.feeds += 1;
    }

    /// A feed was dropped: with none left, nothing is held.
    pub fn feed_closed(&mut self) {
        self.feeds = self.feeds.saturating_sub(1);
        if self.feeds == 0 {
            self.clear();
        }
    }

    /// Changes whenever everything held is dropped.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Holds a commit the writer's transaction stored, letting go of the oldest beyond the
    /// limits. A position at or below the last held one (which a log that lost commits
    /// reuses) drops everything held first.
    pub fn push(&mut self, commit: RecentCommit) {
        if self.feeds == 0 {
            return;
        }
        if self
            .commits
            .back()
            .is_some_and(|last| last.position >= commit.position)
        {
            self.clear();
        }
        self.bytes += commit.bytes.len();
        self.commits.push_back(commit);
        while self.commits.len() > self.max_commits || self.bytes > self.max_bytes {
            let Some(gone) = self.commits.pop_front() else {
                break;
            };
            self.bytes -= gone.bytes.len();
        }
    }

    /// Lets go of everything (the log lost commits: positions held may be reused).
    pub fn clear(&mut self) {
        self.commits.clear();
        self.bytes = 0;
        self.generation += 1;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.commits.len()
    }

    /// The commits from `after + 1` on, as long as they are held one after the other, up
    /// to `max` and up to the commit that brings their envelopes to `budget` bytes (as the
    /// feed's read of the file stops). Empty when `after + 1` is not held.
    pub fn after(&self, after: u64, max: usize, budget: usize) -> Vec<FedCommit> {
        let Some(next) = after.checked_add(1) else {
            return Vec::new();
        };
        let Ok(from) = self.commits.binary_search_by_key(&next, |c| c.position) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        let mut bytes = 0;
        for (expected, c) in (next..).zip(self.commits.range(from..)) {
            if taken.len() >= max || bytes >= budget || c.position != expected {
                break;
            }
            taken.push(FedCommit {
                commit: StoredCommit {
                    position: c.position,
                    bytes: c.bytes.clone(),
                },
                traceparent: c.traceparent.clone(),
                tracestate: c.tracestate.clone(),
                pending: 0,
            });
            bytes += c.bytes.len();
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(position: u64, size: usize) -> RecentCommit {
        RecentCommit {
            position,
            bytes: vec![u8::try_from(position % 251).unwrap(); size].into(),
            traceparent: Some(format!("tp-{position}").into()),
            tracestate: None,
        }
    }

    /// Holding, as while a feed reads the log.
    fn read() -> Recent {
        let mut r = Recent::default();
        r.feed_opened();
        r
    }

    fn positions(fed: &[FedCommit]) -> Vec<u64> {
        fed.iter().map(|c| c.commit.position).collect()
    }

    #[test]
    fn serves_consecutive_commits_from_the_next_one_wanted() {
        let mut r = read();
        for p in 5..=9 {
            r.push(commit(p, 10));
        }
        assert_eq!(positions(&r.after(4, 100, usize::MAX)), vec![5, 6, 7, 8, 9]);
        assert_eq!(positions(&r.after(6, 100, usize::MAX)), vec![7, 8, 9]);
        assert_eq!(positions(&r.after(6, 2, usize::MAX)), vec![7, 8]);
        let fed = r.after(7, 1, usize::MAX);
        assert_eq!(fed[0].commit.bytes, vec![8; 10]);
        assert_eq!(fed[0].traceparent.as_deref(), Some("tp-8"));
        // Not held: before the first, or past the last.
        assert!(r.after(3, 100, usize::MAX).is_empty());
        assert!(r.after(9, 100, usize::MAX).is_empty());
        assert!(r.after(u64::MAX, 100, usize::MAX).is_empty());
    }

    #[test]
    fn stops_at_a_gap_left_by_another_process_and_at_the_budget() {
        let mut r = read();
        for p in [1, 2, 3, 7, 8, 10] {
            r.push(commit(p, 100));
        }
        assert_eq!(positions(&r.after(0, 100, usize::MAX)), vec![1, 2, 3]);
        assert!(
            r.after(3, 100, usize::MAX).is_empty(),
            "4 is another process's"
        );
        assert_eq!(positions(&r.after(6, 100, usize::MAX)), vec![7, 8]);
        assert_eq!(positions(&r.after(9, 100, usize::MAX)), vec![10]);
        // The commit that reaches the budget is the last one.
        assert_eq!(positions(&r.after(0, 100, 150)), vec![1, 2]);
        assert_eq!(positions(&r.after(0, 100, 100)), vec![1]);
    }

    #[test]
    fn lets_go_of_the_oldest_beyond_its_limits() {
        let mut r = Recent::with_limits(3, 1_000);
        r.feed_opened();
        for p in 1..=5 {
            r.push(commit(p, 10));
        }
        assert_eq!(r.len(), 3);
        assert!(r.after(1, 100, usize::MAX).is_empty());
        assert_eq!(positions(&r.after(2, 100, usize::MAX)), vec![3, 4, 5]);

        let mut r = Recent::with_limits(100, 250);
        r.feed_opened();
        for p in 1..=5 {
            r.push(commit(p, 100));
        }
        assert_eq!(positions(&r.after(3, 100, usize::MAX)), vec![4, 5]);
        assert!(r.after(2, 100, usize::MAX).is_empty());
    }

    #[test]
    fn a_reused_position_drops_everything_held() {
        let mut r = read();
        for p in 1..=5 {
            r.push(commit(p, 10));
        }
        // The log lost 4 and 5; the writer stores a new commit at 4.
        let before = r.generation();
        r.push(commit(4, 20));
        assert_eq!(r.len(), 1);
        assert_ne!(r.generation(), before);
        assert!(r.after(0, 100, usize::MAX).is_empty());
        assert_eq!(r.after(3, 100, usize::MAX)[0].commit.bytes.len(), 20);
    }

    #[test]
    fn nothing_is_held_while_no_feed_reads() {
        let mut r = Recent::default();
        r.push(commit(1, 10));
        assert_eq!(r.len(), 0);
        r.feed_opened();
        r.feed_opened();
        r.push(commit(2, 10));
        r.feed_closed();
        assert_eq!(r.len(), 1, "one feed is left");
        r.feed_closed();
        assert_eq!(r.len(), 0, "the last feed gone");
        r.push(commit(3, 10));
        assert_eq!(r.len(), 0);
    }
}
