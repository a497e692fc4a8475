//! Flush-LSN bookkeeping: the low watermark over in-flight transactions.
//!
//! Owns the rule that decides which LSN Postgres may be told is flushed. Invariants (tested
//! below, also by property):
//! - the flushable LSN is the commit end LSN of the longest prefix (in commit order) of
//!   transactions whose every event Kafka acknowledged; it never passes a transaction with an
//!   unacknowledged event, and it never goes backwards;
//! - a keepalive's `wal_end` is adopted only when nothing is in flight and no transaction is
//!   open (PG 15+ skips empty transactions, so an idle slot would otherwise pin WAL forever).
//!
//! Pure: no I/O, no clocks.

use std::collections::VecDeque;

use crate::lsn::Lsn;

/// Handle of a unit (transaction, standalone message or snapshot) inside [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UnitId(u64);

#[derive(Debug)]
struct Unit {
    /// Set when the unit is closed (commit seen); the LSN to confirm once it is acked.
    end_lsn: Option<Lsn>,
    pending: u64,
}

/// Tracks units in commit order and computes the flushable LSN.
#[derive(Debug)]
pub(crate) struct Progress {
    units: VecDeque<Unit>,
    /// Id of `units[0]`.
    front: u64,
    flushed: Lsn,
    in_flight: u64,
}

impl Progress {
    /// Starts at `resume` (what Postgres was last told, or the slot's consistent point).
    pub(crate) fn new(resume: Lsn) -> Self {
        Progress {
            units: VecDeque::new(),
            front: 0,
            flushed: resume,
            in_flight: 0,
        }
    }

    /// Opens a unit (a transaction at `Begin`). Units close in the order they are opened.
    pub(crate) fn open(&mut self) -> UnitId {
        self.units.push_back(Unit {
            end_lsn: None,
            pending: 0,
        });
        UnitId(self.front + self.units.len() as u64 - 1)
    }

    fn unit(&mut self, id: UnitId) -> &mut Unit {
        let idx = id.0.checked_sub(self.front).expect("unit already retired") as usize;
        &mut self.units[idx]
    }

    /// One more event of `id` was handed to Kafka.
    pub(crate) fn sent(&mut self, id: UnitId) {
        self.unit(id).pending += 1;
        self.in_flight += 1;
    }

    /// Kafka acknowledged one event of `id`.
    pub(crate) fn acked(&mut self, id: UnitId) {
        let unit = self.unit(id);
        unit.pending = unit.pending.checked_sub(1).expect("more acks than sends");
        self.in_flight -= 1;
        self.retire();
    }

    /// Closes `id` at `end_lsn` (the transaction's commit end LSN).
    pub(crate) fn close(&mut self, id: UnitId, end_lsn: Lsn) {
        self.unit(id).end_lsn = Some(end_lsn);
        self.retire();
    }

    fn retire(&mut self) {
        while let Some(u) = self.units.front() {
            match u.end_lsn {
                Some(end) if u.pending == 0 => {
                    self.flushed = self.flushed.max(end);
                    self.units.pop_front();
                    self.front += 1;
                }
                _ => break,
            }
        }
    }

    /// A keepalive reported `wal_end`: adopt it if nothing is in flight or open.
    pub(crate) fn keepalive(&mut self, wal_end: Lsn) {
        if self.units.is_empty() {
            self.flushed = self.flushed.max(wal_end);
        }
    }

    /// The LSN that may be reported as flushed.
    pub(crate) fn flushable(&self) -> Lsn {
        self.flushed
    }

    /// Events sent and not yet acknowledged.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// True when no unit is open or waiting for acks.
    pub(crate) fn is_idle(&self) -> bool {
        self.units.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn waits_for_every_event_of_earlier_transactions() {
        let mut p = Progress::new(Lsn(10));
        let a = p.open();
        p.sent(a);
        p.sent(a);
        p.close(a, Lsn(100));
        let b = p.open();
        p.sent(b);
        p.close(b, Lsn(200));
        p.acked(b);
        assert_eq!(p.flushable(), Lsn(10), "b acked but a is not");
        p.acked(a);
        assert_eq!(p.flushable(), Lsn(10), "a has one event left");
        p.acked(a);
        assert_eq!(p.flushable(), Lsn(200));
        assert!(p.is_idle());
    }

    #[test]
    fn keepalive_only_counts_when_idle() {
        let mut p = Progress::new(Lsn(10));
        let a = p.open();
        p.keepalive(Lsn(50));
        assert_eq!(p.flushable(), Lsn(10));
        p.close(a, Lsn(40));
        assert_eq!(p.flushable(), Lsn(40), "empty unit retires at close");
        p.keepalive(Lsn(50));
        assert_eq!(p.flushable(), Lsn(50));
        p.keepalive(Lsn(20));
        assert_eq!(p.flushable(), Lsn(50), "never backwards");
    }

    proptest! {
        /// Random interleavings of sends, acks and commits: the flushable LSN never passes a
        /// unit with an unacknowledged event and never decreases.
        #[test]
        fn flushable_is_a_safe_monotone_low_watermark(
            sizes in proptest::collection::vec(0u8..5, 1..20),
            order in proptest::collection::vec(any::<u16>(), 0..200),
        ) {
            let mut p = Progress::new(Lsn(0));
            let mut units = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let id = p.open();
                for _ in 0..n { p.sent(id); }
                let end = Lsn((i as u64 + 1) * 100);
                p.close(id, end);
                units.push((id, end, n));
            }
            // Acks arrive in an arbitrary order.
            let mut pending: Vec<(UnitId, Lsn)> = units.iter()
                .flat_map(|&(id, end, n)| std::iter::repeat_n((id, end), n as usize))
                .collect();
            let mut last = p.flushable();
            for k in order {
                if pending.is_empty() { break; }
                let (id, _) = pending.remove(k as usize % pending.len());
                p.acked(id);
                let f = p.flushable();
                prop_assert!(f >= last);
                let min_unacked = pending.iter().map(|&(_, end)| end).min();
                if let Some(m) = min_unacked { prop_assert!(f < m); }
                last = f;
            }
            if pending.is_empty() {
                prop_assert_eq!(p.flushable(), units.last().unwrap().1);
            }
        }
    }
}
