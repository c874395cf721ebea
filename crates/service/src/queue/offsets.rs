//! Which offset each partition may commit, when messages finish out of order.
//!
//! Messages of one partition are processed concurrently and finish in any order, so
//! the committable position is the end of the contiguous prefix of received offsets
//! whose outcome is durable. Anything after the first unfinished message stays
//! uncommitted: a crash re-delivers it (idempotent storage absorbs the repeat) and
//! never skips it.

use std::collections::{BTreeMap, HashMap};

/// Proof that a message was tracked, needed to mark it done. The epoch ties it to one
/// assignment of its partition: after a revoke, late completions are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Partition the message was read from.
    pub partition: i32,
    /// Offset of the message in its partition.
    pub offset: i64,
    epoch: u64,
}

#[derive(Debug, Default)]
struct PartitionOffsets {
    epoch: u64,
    /// Received offsets not yet committable, with whether each is done.
    pending: BTreeMap<i64, bool>,
    /// Next offset to consume once everything received so far is done.
    after_last_received: Option<i64>,
    /// Last position handed out for commit.
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// Drops the done prefix and returns the position up to which all is durable.
    fn position(&mut self) -> Option<i64> {
        while let Some(entry) = self.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            entry.remove();
        }
        match self.pending.first_key_value() {
            Some((&first_unfinished, _)) => Some(first_unfinished),
            None => self.after_last_received,
        }
    }

    /// As [`Self::position`], but only when it moved since last handed out.
    fn advance(&mut self) -> Option<i64> {
        let position = self.position()?;
        if self.committed.is_some_and(|c| c >= position) {
            return None;
        }
        self.committed = Some(position);
        Some(position)
    }
}

/// Per partition, the offsets in flight and the position up to which every message
/// has a durable outcome, i.e. what may be committed.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionOffsets>,
    next_epoch: u64,
}

impl OffsetTracker {
    /// A tracker with no partition assigned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a fresh assignment of `partition`, forgetting any earlier one.
    pub fn assign(&mut self, partition: i32) {
        self.next_epoch += 1;
        self.partitions.insert(
            partition,
            PartitionOffsets {
                epoch: self.next_epoch,
                ..PartitionOffsets::default()
            },
        );
    }

    /// Ends the assignment; returns the position still to commit for it, if any.
    /// In-flight messages of the partition are abandoned: the next owner re-reads them.
    pub fn revoke(&mut self, partition: i32) -> Option<i64> {
        self.partitions.remove(&partition)?.position()
    }

    /// Records that `offset` was received and is now in flight.
    pub fn track(&mut self, partition: i32, offset: i64) -> Ticket {
        if !self.partitions.contains_key(&partition) {
            self.assign(partition);
        }
        let state = self.partitions.entry(partition).or_default();
        // The first record of an assignment is where reading started: nothing to commit
        // until something past it is done.
        state.committed.get_or_insert(offset);
        state.pending.insert(offset, false);
        state.after_last_received = Some(
            state
                .after_last_received
                .map_or(offset + 1, |p| p.max(offset + 1)),
        );
        Ticket {
            partition,
            offset,
            epoch: state.epoch,
        }
    }

    /// Marks a message's outcome as durable. Returns false for a stale ticket.
    pub fn complete(&mut self, ticket: Ticket) -> bool {
        match self.partitions.get_mut(&ticket.partition) {
            Some(state) if state.epoch == ticket.epoch => {
                if let Some(done) = state.pending.get_mut(&ticket.offset) {
                    *done = true;
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// Positions (next offset to read) that moved since the last call, per partition.
    pub fn commit_positions(&mut self) -> Vec<(i32, i64)> {
        self.positions(PartitionOffsets::advance)
    }

    /// Every partition's current position, moved or not: for a final synchronous
    /// commit, which must not rely on an earlier asynchronous one having succeeded.
    pub fn all_positions(&mut self) -> Vec<(i32, i64)> {
        self.positions(PartitionOffsets::position)
    }

    fn positions(&mut self, of: fn(&mut PartitionOffsets) -> Option<i64>) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .partitions
            .iter_mut()
            .filter_map(|(&p, state)| of(state).map(|pos| (p, pos)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Messages received but not yet durable, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions
            .values()
            .map(|s| s.pending.values().filter(|done| !**done).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_contiguous_done_prefix() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let tickets: Vec<_> = (10..15).map(|o| t.track(0, o)).collect();
        assert!(t.commit_positions().is_empty(), "nothing done yet");

        t.complete(tickets[1]);
        t.complete(tickets[2]);
        assert!(t.commit_positions().is_empty(), "offset 10 still open");

        t.complete(tickets[0]);
        assert_eq!(t.commit_positions(), vec![(0, 13)]);
        assert!(
            t.commit_positions().is_empty(),
            "no change, nothing to commit"
        );

        t.complete(tickets[4]);
        assert!(t.commit_positions().is_empty(), "13 still open");
        t.complete(tickets[3]);
        assert_eq!(t.commit_positions(), vec![(0, 15)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn gaps_in_offsets_do_not_block_commits() {
        // Compaction or transaction markers leave offsets that are never delivered.
        let mut t = OffsetTracker::new();
        let a = t.track(1, 100);
        let b = t.track(1, 105);
        t.complete(b);
        t.complete(a);
        assert_eq!(t.commit_positions(), vec![(1, 106)]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::new();
        let a = t.track(0, 5);
        let b = t.track(1, 7);
        let _c = t.track(1, 8);
        t.complete(a);
        t.complete(b);
        assert_eq!(t.commit_positions(), vec![(0, 6), (1, 8)]);
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn revoke_returns_what_is_done_and_ignores_late_completions() {
        let mut t = OffsetTracker::new();
        t.assign(2);
        let first = t.track(2, 0);
        let second = t.track(2, 1);
        t.complete(first);
        assert_eq!(t.commit_positions(), vec![(2, 1)]);
        assert_eq!(
            t.all_positions(),
            vec![(2, 1)],
            "final commit repeats the position"
        );
        assert_eq!(t.revoke(2), Some(1), "offset 0 done: commit position 1");

        t.assign(2);
        assert!(
            !t.complete(second),
            "ticket from the old assignment is stale"
        );
        let again = t.track(2, 1);
        assert!(t.complete(again));
        assert_eq!(t.commit_positions(), vec![(2, 2)]);
    }

    #[test]
    fn random_completion_order_never_commits_past_an_unfinished_offset() {
        use rand::seq::SliceRandom;
        let mut rng = rand::rng();
        for _ in 0..200 {
            let mut t = OffsetTracker::new();
            let mut tickets: Vec<_> = (0..50).map(|o| t.track(0, o)).collect();
            tickets.shuffle(&mut rng);
            let mut done = std::collections::BTreeSet::new();
            let mut last = 0;
            for ticket in tickets {
                t.complete(ticket);
                done.insert(ticket.offset);
                for (_, pos) in t.commit_positions() {
                    assert!(pos > last, "positions only move forward");
                    assert!(
                        (0..pos).all(|o| done.contains(&o)),
                        "committed past an unfinished offset"
                    );
                    last = pos;
                }
            }
            assert_eq!(last, 50);
        }
    }
}
