//! The decode hand-off: in a process that both appends and projects (`semsd`'s role `all`),
//! the command handler hands each commit it appends to the projector already decoded, so
//! the projector does not parse again what was encoded a moment before. Commits are handed
//! before the append (the log may deliver one to the projector before the append's answer
//! reaches the handler) and found again by their commit id, which every envelope's bytes
//! begin with. The projector uses a handed commit only when its bytes are, byte for byte,
//! the bytes the log delivers; anything else it decodes from the log as always.
//! `docs/DECISIONS.md`, "The decode hand-off".

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use sems_app::{AppendTap, FedCommit, OfferedCommit};
use sems_domain::{
    Aggregate,
    alert::{Alert, AlertEvent},
    crisis::{Crisis, CrisisEvent},
    handover::{Handover, HandoverEvent},
    incident::{Incident, IncidentEvent},
};

use uuid::Uuid;

use crate::projection::{Events, ProjectedCommit};

/// Commits held for the projector at most. When it is that far behind, later commits are
/// not held (it decodes them from the log when their turn comes): it takes those held
/// first, and the hand-off fills again behind them.
pub const HAND_OFF_CAPACITY: usize = 8_192;

/// Memory the held commits may take at most, counted as three times their stored size (the
/// bytes, the envelope with its payloads, the decoded events). An estimate: the bytes are
/// the handler's own buffer, which may hold a few hundred bytes of spare capacity besides.
pub const HAND_OFF_BYTES: usize = 64 << 20;

/// One handed commit in this many is also decoded from the log's bytes and compared, in
/// every build: a difference (which the tests rule out) closes the hand-off for good.
pub const HAND_OFF_CHECK_EVERY: u64 = 1_024;

/// Decoded commits waiting for the projector, by commit id.
pub struct HandOff {
    inner: Mutex<Waiting>,
    capacity: usize,
    budget: usize,
    check_every: u64,
    used: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    /// A projector leads and takes from here; while none does, nothing is held.
    open: bool,
    /// A handed commit differed from the log's: nothing is held again.
    broken: bool,
    /// The projector has taken every position up to here: a commit stored at or below it
    /// is too late to be used.
    taken_through: u64,
    /// What the held commits count against the budget.
    size: usize,
    /// Held commits, by commit id.
    commits: HashMap<Uuid, Handed>,
    /// Where the log stored held commits whose appends are over, to let go of them once
    /// the projector is past.
    stored: BTreeMap<u64, Uuid>,
}

impl Waiting {
    fn has_room(&self, capacity: usize, budget: usize) -> bool {
        self.open && !self.broken && self.commits.len() < capacity && self.size < budget
    }

    fn remove(&mut self, commit_id: &Uuid) -> Option<Handed> {
        let h = self.commits.remove(commit_id)?;
        self.size -= h.size;
        Some(h)
    }

    /// Lets go of every commit stored at or below `position`.
    fn let_go_through(&mut self, position: u64) -> Vec<Handed> {
        let kept = self.stored.split_off(&position.saturating_add(1));
        let gone = std::mem::replace(&mut self.stored, kept);
        gone.values().filter_map(|id| self.remove(id)).collect()
    }

    fn clear(&mut self) -> HashMap<Uuid, Handed> {
        self.size = 0;
        self.stored.clear();
        std::mem::take(&mut self.commits)
    }
}

struct Handed {
    bytes: Bytes,
    size: usize,
    commit: ProjectedCommit,
}

impl Default for HandOff {
    fn default() -> Self {
        Self::with_limits(HAND_OFF_CAPACITY, HAND_OFF_BYTES)
    }
}

impl HandOff {
    /// A hand-off holding at most `capacity` commits and `budget` bytes (counted as
    /// [`HAND_OFF_BYTES`] says), closed until a projector leads.
    pub fn with_limits(capacity: usize, budget: usize) -> Self {
        Self {
            inner: Mutex::new(Waiting::default()),
            capacity,
            budget,
            check_every: HAND_OFF_CHECK_EVERY,
            used: AtomicU64::new(0),
        }
    }

    /// This hand-off, checking one handed commit in `n` against the log's bytes.
    #[cfg(test)]
    fn checking_every(mut self, n: u64) -> Self {
        self.check_every = n.max(1);
        self
    }

    /// A projector leads from `checkpoint`: hold commits after it from now on.
    pub fn open(&self, checkpoint: u64) {
        let gone = {
            let mut w = self.lock();
            w.open = true;
            w.taken_through = checkpoint;
            w.let_go_through(checkpoint)
        };
        drop(gone);
    }

    /// The projector no longer leads (it stands by, failed, or stopped): hold nothing.
    pub fn close(&self) {
        self.close_and(false);
    }

    /// A handed commit differed from the log's: hold nothing, ever again.
    fn close_for_good(&self) {
        self.close_and(true);
    }

    fn close_and(&self, broken: bool) {
        let gone = {
            let mut w = self.lock();
            w.open = false;
            w.broken |= broken;
            w.clear()
        };
        drop(gone);
    }

    /// The projector's side: for each commit of a delivered batch (in position order), the
    /// handed commit when its bytes are the delivered bytes, else `None`. Every held commit
    /// stored at or below the batch's last position is let go (offers whose appends are not
    /// over yet stay).
    pub fn take(&self, batch: &[FedCommit]) -> Vec<Option<ProjectedCommit>> {
        let Some(last) = batch.last().map(|c| c.commit.position) else {
            return Vec::new();
        };
        let (found, gone) = {
            let mut w = self.lock();
            let found: Vec<Option<Handed>> = batch
                .iter()
                .map(|c| commit_id_of(&c.commit.bytes).and_then(|id| w.remove(&id)))
                .collect();
            w.taken_through = w.taken_through.max(last);
            (found, w.let_go_through(last))
        };
        drop(gone);
        let taken: Vec<Option<ProjectedCommit>> = batch
            .iter()
            .zip(found)
            .map(|(c, h)| {
                h.filter(|h| same_bytes(&h.bytes, &c.commit.bytes))
                    .map(|h| ProjectedCommit {
                        position: c.commit.position,
                        ..h.commit
                    })
            })
            .collect();
        let before = self.used.load(Ordering::Relaxed);
        let mut used = 0;
        for (c, t) in batch.iter().zip(&taken) {
            let Some(handed) = t else { continue };
            if (before + used).is_multiple_of(self.check_every)
                && ProjectedCommit::decode(&c.commit).ok().as_ref() != Some(handed)
            {
                tracing::error!(
                    position = c.commit.position,
                    "a handed commit differs from the log's; the projector decodes every commit from now on"
                );
                self.close_for_good();
                return vec![None; batch.len()];
            }
            used += 1;
        }
        self.used.fetch_add(used, Ordering::Relaxed);
        taken
    }

    /// How many commits the projector has taken from the hand-off instead of decoding them.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// How many commits are held.
    pub fn held(&self) -> usize {
        self.lock().commits.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // A panic while holding the lock leaves only a map of optional shortcuts behind.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The events of a commit, by its aggregate type, when the handler's events are of that
/// aggregate's event type.
fn events_of(aggregate_type: &str, events: &(dyn std::any::Any + Send + Sync)) -> Option<Events> {
    match aggregate_type {
        Alert::TYPE => events
            .downcast_ref::<Vec<AlertEvent>>()
            .cloned()
            .map(Events::Alert),
        Incident::TYPE => events
            .downcast_ref::<Vec<IncidentEvent>>()
            .cloned()
            .map(Events::Incident),
        Handover::TYPE => events
            .downcast_ref::<Vec<HandoverEvent>>()
            .cloned()
            .map(Events::Handover),
        Crisis::TYPE => events
            .downcast_ref::<Vec<CrisisEvent>>()
            .cloned()
            .map(Events::Crisis),
        _ => None,
    }
}

impl AppendTap for HandOff {
    fn accepting(&self) -> bool {
        self.lock().has_room(self.capacity, self.budget)
    }

    fn offered(&self, commit: OfferedCommit<'_>) {
        let OfferedCommit {
            commit_id,
            bytes,
            envelope,
            events,
        } = commit;
        let Some(events) = events_of(&envelope.aggregate_type, events) else {
            return;
        };
        let handed = Handed {
            size: bytes.len().saturating_mul(3),
            bytes,
            commit: ProjectedCommit {
                // Known once the log delivers it.
                position: 0,
                envelope,
                events,
            },
        };
        let gone = {
            let mut w = self.lock();
            if !(w.has_room(self.capacity, self.budget) && w.size + handed.size <= self.budget) {
                return;
            }
            w.size += handed.size;
            let replaced = w.commits.insert(commit_id, handed);
            if let Some(r) = &replaced {
                w.size -= r.size;
            }
            replaced
        };
        drop(gone);
    }

    fn settled(&self, commit_id: Uuid, position: Option<u64>) {
        let gone = {
            let mut w = self.lock();
            match position {
                // Still held and still ahead of the projector: held until it passes.
                Some(p) if p > w.taken_through && w.commits.contains_key(&commit_id) => {
                    // A position stored twice (a log that lost commits reuses them): the
                    // older commit will not be delivered there.
                    match w.stored.insert(p, commit_id) {
                        Some(older) if older != commit_id => w.remove(&older),
                        _ => None,
                    }
                }
                _ => w.remove(&commit_id),
            }
        };
        drop(gone);
    }
}

/// Whether two envelopes are the same bytes: at once when they are the same buffer (as a
/// commit this process's feed takes from memory is the buffer its handler offered).
fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// The commit id an envelope's stored bytes begin with (`{"commit_id":"<uuid>",`), without
/// parsing the rest; `None` for bytes that do not begin so.
fn commit_id_of(bytes: &[u8]) -> Option<Uuid> {
    const HEAD: &[u8] = b"{\"commit_id\":\"";
    let id = bytes.strip_prefix(HEAD)?.get(..37)?;
    if id[36] != b'"' {
        return None;
    }
    Uuid::try_parse_ascii(&id[..36]).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use sems_app::{Envelope, GENESIS_HASH, NewEvent, StoredCommit};
    use sems_domain::{Severity, alert::AlertReport};
    use uuid::Uuid;

    use super::*;

    /// An alert commit at `position` as the handler would show it, and as the log delivers it.
    fn appended(position: u64, title: &str) -> (Vec<u8>, Envelope, Vec<AlertEvent>) {
        let events = vec![AlertEvent::AlertReceived(Arc::new(AlertReport {
            source: "edr".into(),
            source_ref: format!("ref-{position}"),
            title: title.into(),
            description: String::new(),
            severity: Severity::High,
            occurred_at: Utc::now(),
            observables: vec![],
            labels: Default::default(),
            raw: serde_json::json!({"score": 0.1 + 0.2, "n": position}),
        }))];
        let head = Envelope {
            commit_id: Uuid::now_v7(),
            aggregate_type: Alert::TYPE.into(),
            aggregate_id: Uuid::now_v7(),
            aggregate_version: 1,
            recorded_at: Utc::now(),
            actor: "semsd".into(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            trace_context: None,
            prev_hash: GENESIS_HASH.into(),
            events: vec![],
        };
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| NewEvent::new(e, Utc::now(), None).unwrap())
            .collect();
        let bytes = head.encode_new(&new).unwrap();
        let envelope = Envelope {
            events: new.iter().map(NewEvent::to_envelope_event).collect(),
            ..head
        };
        (bytes, envelope, events)
    }

    fn offer(h: &HandOff, position: u64, title: &str) -> Vec<u8> {
        offer_with(h, position, title, |_| {})
    }

    /// Offers a commit as the handler does, after `alter` changed its envelope, and settles
    /// it as stored at `position`.
    fn offer_with(h: &HandOff, position: u64, title: &str, alter: fn(&mut Envelope)) -> Vec<u8> {
        let (bytes, id) = offer_unsettled(h, position, title, alter);
        h.settled(id, Some(position));
        bytes
    }

    /// Offers a commit as the handler does before its append.
    fn offer_unsettled(
        h: &HandOff,
        position: u64,
        title: &str,
        alter: fn(&mut Envelope),
    ) -> (Vec<u8>, Uuid) {
        let (bytes, mut envelope, events) = appended(position, title);
        alter(&mut envelope);
        let commit_id = envelope.commit_id;
        h.offered(OfferedCommit {
            commit_id,
            bytes: bytes.clone().into(),
            envelope,
            events: &events,
        });
        (bytes, commit_id)
    }

    fn fed(position: u64, bytes: impl Into<Bytes>) -> FedCommit {
        FedCommit {
            commit: StoredCommit {
                position,
                bytes: bytes.into(),
            },
            traceparent: None,
            tracestate: None,
            pending: 0,
        }
    }

    /// A hand-off open from position 0, as the projector opens it when it leads.
    fn opened(capacity: usize, budget: usize) -> HandOff {
        let h = HandOff::with_limits(capacity, budget);
        h.open(0);
        h
    }

    #[test]
    fn a_handed_commit_is_what_decoding_the_delivered_bytes_gives() {
        let h = opened(HAND_OFF_CAPACITY, HAND_OFF_BYTES);
        let first = offer(&h, 7, "first");
        let second = offer(&h, 8, "second");
        let batch = [fed(7, first.clone()), fed(8, second.clone())];
        let taken = h.take(&batch);
        for (t, c) in taken.iter().zip(&batch) {
            let decoded = ProjectedCommit::decode(&c.commit).unwrap();
            assert_eq!(t.as_ref(), Some(&decoded));
        }
        assert_eq!(h.used(), 2);
        assert_eq!(h.held(), 0);
    }

    #[test]
    fn bytes_are_the_same_by_buffer_or_by_content_and_only_so() {
        let offered = Bytes::from(b"{\"commit_id\":\"x\"}".to_vec());
        assert!(same_bytes(&offered, &offered.clone()));
        assert!(same_bytes(&offered, &Bytes::from(offered.to_vec())));
        // The same buffer, cut short: not the same bytes.
        assert!(!same_bytes(&offered, &offered.slice(..5)));
        assert!(!same_bytes(
            &offered,
            &Bytes::from(b"{\"commit_id\":\"y\"}".to_vec())
        ));
    }

    #[test]
    fn other_bytes_at_the_position_are_decoded_not_taken() {
        let h = opened(HAND_OFF_CAPACITY, HAND_OFF_BYTES);
        // One taken first, so that the next is not among those decoded to be checked.
        let first = offer(&h, 2, "taken");
        assert!(h.take(&[fed(2, first)])[0].is_some());
        // The same commit id with other bytes (a request retried with its request id, as
        // another process decided it).
        let (ours, id) = offer_unsettled(&h, 3, "what the handler encoded", |_| {});
        h.settled(id, Some(3));
        let (theirs, _, _) = appended(3, "what the log holds");
        let mut other = ours[..51].to_vec();
        other.extend_from_slice(&theirs[51..]);
        assert_eq!(commit_id_of(&other), Some(id));
        assert_ne!(other, ours);
        assert_eq!(h.take(&[fed(3, other)]), vec![None]);
        assert_eq!(h.used(), 1);
        assert_eq!(h.held(), 0, "the position is let go all the same");
        assert!(
            h.accepting(),
            "a commit not taken does not close the hand-off"
        );
    }

    #[test]
    fn offers_the_projector_has_passed_are_let_go_or_refused() {
        let h = opened(HAND_OFF_CAPACITY, HAND_OFF_BYTES);
        offer(&h, 5, "never in a batch");
        let six = offer(&h, 6, "delivered");
        let twelve = offer(&h, 12, "later");
        // The batch ends at 10: 5 and 6 go, 12 stays.
        assert_eq!(h.take(&[fed(6, six.clone()), fed(10, six)]).len(), 2);
        assert_eq!(h.held(), 1);
        // A commit stored at or below what was taken comes too late.
        offer(&h, 9, "late");
        assert_eq!(h.held(), 1);
        assert!(h.take(&[fed(12, twelve)])[0].is_some());
        assert_eq!(h.used(), 2);
    }

    #[test]
    fn at_its_capacity_later_commits_are_not_held_until_the_projector_takes_some() {
        let h = opened(3, HAND_OFF_BYTES);
        let bytes: Vec<Vec<u8>> = (1..=5).map(|p| offer(&h, p, "alert")).collect();
        assert_eq!(h.held(), 3);
        assert!(!h.accepting(), "full");
        let fed_all: Vec<FedCommit> = bytes
            .into_iter()
            .enumerate()
            .map(|(i, b)| fed(i as u64 + 1, b))
            .collect();
        let taken: Vec<bool> = h.take(&fed_all[..2]).iter().map(Option::is_some).collect();
        assert_eq!(taken, [true, true], "the oldest are kept for the projector");
        assert!(h.accepting());
        // 4 and 5 came while it was full: decoded from the log.
        let taken: Vec<bool> = h.take(&fed_all[2..]).iter().map(Option::is_some).collect();
        assert_eq!(taken, [true, false, false]);
        assert_eq!(h.held(), 0);
    }

    #[test]
    fn held_commits_stay_within_the_memory_budget() {
        let one = appended(1, "alert").0.len() * 3;
        let h = opened(HAND_OFF_CAPACITY, one * 5 / 2);
        for p in 1..=5 {
            offer(&h, p, "alert");
        }
        assert_eq!(h.held(), 2, "a third would go over the budget");
        let h = opened(HAND_OFF_CAPACITY, one / 2);
        offer(&h, 1, "larger than the whole budget");
        assert_eq!(h.held(), 0);
    }

    /// A handed commit whose bytes are the log's but whose values are not (what a decoder
    /// that reads back other values than were encoded would give).
    fn offer_altered(h: &HandOff, position: u64) -> Vec<u8> {
        offer_with(h, position, "altered", |e| e.actor.push('!'))
    }

    #[test]
    fn a_checked_commit_that_differs_from_the_log_closes_the_hand_off_for_good() {
        let h = HandOff::default().checking_every(2);
        h.open(0);
        let first = offer(&h, 1, "checked: the first");
        let second = offer_altered(&h, 2);
        let third = offer(&h, 3, "checked: the third");
        let taken = h.take(&[fed(1, first), fed(2, second), fed(3, third)]);
        assert_eq!(
            taken.iter().map(Option::is_some).collect::<Vec<_>>(),
            [true, true, true],
            "only one commit in two is checked"
        );
        assert_eq!(h.used(), 3);
        let fourth = offer(&h, 4, "unchecked");
        let fifth = offer_altered(&h, 5);
        let sixth = offer(&h, 6, "after it");
        let taken = h.take(&[fed(4, fourth), fed(5, fifth), fed(6, sixth)]);
        assert_eq!(taken, vec![None, None, None], "the whole batch is decoded");
        assert_eq!(h.used(), 3, "a batch decoded whole counts for nothing");
        assert_eq!(h.held(), 0);
        assert!(!h.accepting(), "closed");
        h.open(6);
        assert!(!h.accepting(), "for good");
    }

    #[test]
    fn nothing_is_held_while_no_projector_leads() {
        let h = HandOff::default();
        assert!(!h.accepting());
        offer(&h, 1, "before any projector leads");
        assert_eq!(h.held(), 0);
        h.open(0);
        offer(&h, 2, "while one leads");
        assert_eq!(h.held(), 1);
        h.close();
        assert_eq!(
            h.held(),
            0,
            "a projector that stops leading lets go of everything"
        );
        assert!(!h.accepting());
        // Leading again from a checkpoint: nothing stored at or below it is held.
        h.open(10);
        offer(&h, 10, "at the checkpoint");
        assert_eq!(h.held(), 0);
        offer(&h, 11, "after it");
        assert_eq!(h.held(), 1);
    }

    #[test]
    fn a_commit_delivered_before_its_append_is_answered_is_taken() {
        let h = opened(HAND_OFF_CAPACITY, HAND_OFF_BYTES);
        let (bytes, id) = offer_unsettled(&h, 4, "delivered first", |_| {});
        let taken = h.take(&[fed(4, bytes.clone())]);
        assert_eq!(
            taken[0].as_ref(),
            Some(&ProjectedCommit::decode(&fed(4, bytes).commit).unwrap()),
            "with the position the log delivered it at"
        );
        h.settled(id, Some(4));
        assert_eq!(h.held(), 0);
        assert_eq!(h.used(), 1);
    }

    #[test]
    fn a_position_stored_twice_lets_go_of_the_older_commit() {
        let h = opened(HAND_OFF_CAPACITY, HAND_OFF_BYTES);
        offer(&h, 5, "stored, then lost with the log's tail");
        let again = offer(&h, 5, "stored at the same position after the loss");
        assert_eq!(h.held(), 1, "the older commit is let go");
        assert!(h.take(&[fed(5, again)])[0].is_some());
        assert_eq!(h.held(), 0);
    }

    #[test]
    fn an_offer_whose_append_stored_nothing_is_let_go() {
        let h = opened(HAND_OFF_CAPACITY, HAND_OFF_BYTES);
        let (_, refused) = offer_unsettled(&h, 1, "refused", |_| {});
        let (pending, _) = offer_unsettled(&h, 2, "still appending", |_| {});
        assert_eq!(h.held(), 2);
        h.settled(refused, None);
        assert_eq!(h.held(), 1);
        // One not yet settled is held whatever the projector takes meanwhile.
        let other = appended(7, "another process's").0;
        assert_eq!(h.take(&[fed(7, other)]), vec![None]);
        assert_eq!(h.held(), 1);
        assert!(h.take(&[fed(8, pending)])[0].is_some());
        assert_eq!(h.held(), 0);
    }

    #[test]
    fn the_commit_id_is_read_from_the_head_of_the_bytes() {
        let (bytes, envelope, _) = appended(1, "alert");
        assert_eq!(commit_id_of(&bytes), Some(envelope.commit_id));
        assert_eq!(
            commit_id_of(b"{\"commit_id\":\"not-a-uuid-not-a-uuid-not-a-uuid-xyz\",\"a\":1}"),
            None,
            "36 characters, not a UUID"
        );
        assert_eq!(commit_id_of(&bytes[..40]), None);
        assert_eq!(commit_id_of(b"{\"aggregate_id\":\"x\"}"), None);
        let mut unquoted = bytes.clone();
        unquoted[50] = b'x';
        assert_eq!(commit_id_of(&unquoted), None);
    }
}
