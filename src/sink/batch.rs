//! Sink batching: size/time windows, per-key coalescing, and the offsets a batch may commit.
//!
//! Owns the pure rules between the Kafka consumer and a destination API (the sink runner).
//! Invariants (unit- and property-tested below):
//! - a batch holds at most `max_events` *keys* (entries: what a destination request is capped
//!   at) and at most `max_records` records (bounding the positions kept, by default
//!   `max_events × 100`), and closes at the latest `max_wait` after its first record arrived;
//!   repeated changes of a key therefore coalesce into one entry instead of filling the batch;
//! - within a batch each key appears once (destinations must never receive two inputs for one
//!   record in one request); the surviving entry is the key's latest state, in the position where
//!   the key first appeared, so the order between keys follows the input;
//! - coalescing never invents values: a later row image overrides an earlier one column by
//!   column, and a column the later image does not carry (unchanged TOAST) keeps the earlier
//!   image's value; a delete replaces whatever came before;
//! - the offsets to store after a batch are, per partition, one past the highest offset it
//!   contains (Kafka's "next offset to read"); they are stored only after every entry was applied
//!   or dead-lettered, so per-key order holds across batches and retries.
//!
//! Pure: no I/O; time is passed in.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::event::{ChangeEvent, Op};

/// Where a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Something that can absorb a later version of itself (same key).
pub(crate) trait Coalesce {
    /// Folds `later` (a newer version of the same key) into `self`.
    fn absorb(&mut self, later: Self);
}

impl Coalesce for ChangeEvent {
    fn absorb(&mut self, later: ChangeEvent) {
        let keeps_row = |op: Op| matches!(op, Op::Create | Op::Update | Op::Read);
        if !(keeps_row(self.op) && keeps_row(later.op)) {
            *self = later;
            return;
        }
        let mut merged = self.after.take().unwrap_or_default();
        let mut toast = std::mem::take(&mut self.unchanged_toast);
        let later_after = later.after.clone().unwrap_or_default();
        for (column, value) in later_after {
            toast.retain(|c| c != &column);
            merged.insert(column, value);
        }
        // A column unchanged in `later` keeps the earlier value if there is one.
        let unresolved: Vec<String> = later
            .unchanged_toast
            .iter()
            .filter(|c| !merged.contains_key(*c))
            .cloned()
            .collect();
        toast.retain(|c| !merged.contains_key(c));
        for c in unresolved {
            if !toast.contains(&c) {
                toast.push(c);
            }
        }
        let op = if self.op == Op::Create {
            Op::Create
        } else {
            later.op
        };
        *self = ChangeEvent {
            op,
            after: Some(merged),
            unchanged_toast: toast,
            ..later
        };
    }
}

/// One entry of a closed batch: the latest state of one key and every position it covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<E> {
    /// Kafka key bytes (the canonical primary key).
    pub key: Vec<u8>,
    /// Latest state of the key within the batch.
    pub item: E,
    /// Positions of every record folded into this entry, in arrival order.
    pub positions: Vec<Position>,
}

/// A closed batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<E> {
    /// One entry per key, in first-appearance order.
    pub entries: Vec<Entry<E>>,
    /// Per partition, the offset to store once the batch is done (highest offset + 1).
    pub commit: BTreeMap<i32, i64>,
    /// Records received (before coalescing).
    pub records: usize,
}

/// Records per key a batch may hold on average by default: the record cap of
/// [`Batcher::new`] is `max_events` times this.
pub(crate) const RECORDS_PER_KEY: usize = 100;

/// Accumulates records into batches.
#[derive(Debug)]
pub(crate) struct Batcher<E> {
    max_events: usize,
    max_records: usize,
    max_wait: Duration,
    entries: Vec<Entry<E>>,
    index: HashMap<Vec<u8>, usize>,
    commit: BTreeMap<i32, i64>,
    records: usize,
    opened_at: Option<Instant>,
}

impl<E: Coalesce> Batcher<E> {
    /// A batcher closing batches at `max_events` keys, `max_events × RECORDS_PER_KEY` records
    /// or `max_wait` after the first record, whichever comes first.
    pub(crate) fn new(max_events: usize, max_wait: Duration) -> Self {
        let max_events = max_events.max(1);
        Batcher::with_max_records(
            max_events,
            max_events.saturating_mul(RECORDS_PER_KEY),
            max_wait,
        )
    }

    /// A batcher closing batches at `max_events` keys, `max_records` records or `max_wait`
    /// after the first record, whichever comes first.
    pub(crate) fn with_max_records(
        max_events: usize,
        max_records: usize,
        max_wait: Duration,
    ) -> Self {
        Batcher {
            max_events: max_events.max(1),
            max_records: max_records.max(1),
            max_wait,
            entries: Vec::new(),
            index: HashMap::new(),
            commit: BTreeMap::new(),
            records: 0,
            opened_at: None,
        }
    }

    /// Adds a record; returns true when the batch is full and should be taken.
    pub(crate) fn push(&mut self, key: Vec<u8>, item: E, at: Position, now: Instant) -> bool {
        self.skip(at, now);
        match self.index.get(&key) {
            Some(&i) => {
                let entry = &mut self.entries[i];
                entry.item.absorb(item);
                entry.positions.push(at);
            }
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push(Entry {
                    key,
                    item,
                    positions: vec![at],
                });
            }
        }
        self.is_full()
    }

    /// Accounts for a record that carries nothing to apply (a tombstone, or a record already
    /// dead-lettered): its offset is committed with the batch.
    pub(crate) fn skip(&mut self, at: Position, now: Instant) {
        self.opened_at.get_or_insert(now);
        self.records += 1;
        let next = self.commit.entry(at.partition).or_insert(at.offset + 1);
        *next = (*next).max(at.offset + 1);
    }

    /// When the open batch must close (None when empty).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.max_wait)
    }

    /// True when the batch holds `max_events` keys or `max_records` records.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.max_events || self.records >= self.max_records
    }

    /// True when the batch is non-empty and full or past its deadline.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.is_full() || self.deadline().is_some_and(|d| now >= d)
    }

    /// Records in the open batch (before coalescing, skipped ones included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records
    }

    /// Keys (entries) in the open batch.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.entries.len()
    }

    /// True when no record is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Closes and returns the open batch (None when empty).
    pub(crate) fn take(&mut self) -> Option<Batch<E>> {
        if self.records == 0 {
            return None;
        }
        self.index.clear();
        self.opened_at = None;
        Some(Batch {
            entries: std::mem::take(&mut self.entries),
            commit: std::mem::take(&mut self.commit),
            records: std::mem::replace(&mut self.records, 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::test_support;
    use proptest::prelude::*;
    use serde_json::json;

    /// An event carrying `after` (none for a delete), with `toast` columns left out.
    fn event(op: Op, after: serde_json::Value, toast: &[&str]) -> ChangeEvent {
        let mut e = test_support::event(op, after);
        e.unchanged_toast = toast.iter().map(|s| s.to_string()).collect();
        e
    }

    fn pos(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    #[test]
    fn one_entry_per_key_latest_state_first_position() {
        let now = Instant::now();
        let mut b = Batcher::new(10, Duration::from_secs(1));
        b.push(
            b"a".to_vec(),
            event(Op::Create, json!({"id": 1, "v": 1}), &[]),
            pos(0, 5),
            now,
        );
        b.push(
            b"b".to_vec(),
            event(Op::Create, json!({"id": 2, "v": 1}), &[]),
            pos(1, 9),
            now,
        );
        b.push(
            b"a".to_vec(),
            event(Op::Update, json!({"id": 1, "v": 2}), &[]),
            pos(0, 6),
            now,
        );
        let batch = b.take().unwrap();
        assert_eq!(batch.records, 3);
        assert_eq!(batch.entries.len(), 2);
        assert_eq!(batch.entries[0].key, b"a");
        assert_eq!(batch.entries[0].item.after.as_ref().unwrap()["v"], 2);
        assert_eq!(
            batch.entries[0].item.op,
            Op::Create,
            "create then update is still a create"
        );
        assert_eq!(batch.entries[0].positions, [pos(0, 5), pos(0, 6)]);
        assert_eq!(batch.commit, BTreeMap::from([(0, 7), (1, 10)]));
        assert!(b.take().is_none(), "taking empties the batcher");
        b.skip(pos(1, 12), now);
        let only_skipped = b.take().unwrap();
        assert!(only_skipped.entries.is_empty());
        assert_eq!(
            only_skipped.commit,
            BTreeMap::from([(1, 13)]),
            "skipped records commit too"
        );
    }

    #[test]
    fn unchanged_toast_keeps_the_earlier_value_and_delete_wins() {
        let mut e = event(Op::Create, json!({"id": 1, "bio": "long", "n": 1}), &[]);
        e.absorb(event(Op::Update, json!({"id": 1, "n": 2}), &["bio"]));
        assert_eq!(e.after.as_ref().unwrap()["bio"], "long");
        assert_eq!(e.after.as_ref().unwrap()["n"], 2);
        assert!(e.unchanged_toast.is_empty());
        let mut u = event(Op::Update, json!({"id": 1, "n": 2}), &["bio"]);
        u.absorb(event(Op::Update, json!({"id": 1, "n": 3}), &["bio"]));
        assert_eq!(
            u.unchanged_toast,
            ["bio"],
            "still unknown: stays listed, no placeholder"
        );
        u.absorb(event(Op::Delete, json!(null), &[]));
        assert_eq!(u.op, Op::Delete);
        assert!(u.after.is_none());
        u.absorb(event(Op::Create, json!({"id": 1, "n": 9}), &[]));
        assert_eq!(u.op, Op::Create, "delete then re-create is a create");
    }

    #[test]
    fn closes_on_keys_on_records_and_on_time() {
        let t0 = Instant::now();
        let mut b = Batcher::with_max_records(2, 4, Duration::from_millis(100));
        assert!(!b.is_due(t0));
        let push = |b: &mut Batcher<ChangeEvent>, key: &[u8], offset| {
            b.push(
                key.to_vec(),
                event(Op::Update, json!({"v": offset}), &[]),
                pos(0, offset),
                t0,
            )
        };
        assert!(!push(&mut b, b"a", 0));
        assert!(!b.is_due(t0 + Duration::from_millis(99)));
        assert!(b.is_due(t0 + Duration::from_millis(100)), "max_wait");
        assert!(!push(&mut b, b"a", 1), "a repeated key coalesces");
        assert!(!push(&mut b, b"a", 2));
        assert_eq!((b.keys(), b.len()), (1, 3));
        assert!(!b.is_due(t0));
        assert!(push(&mut b, b"b", 3), "two keys fill a batch of 2 keys");
        assert!(b.is_due(t0));
        let batch = b.take().unwrap();
        assert_eq!((batch.entries.len(), batch.records), (2, 4));
        for offset in 0..3 {
            assert!(!push(&mut b, b"c", offset));
        }
        assert!(push(&mut b, b"c", 3), "the record cap bounds one hot key");
        assert_eq!((b.keys(), b.len()), (1, 4));
        b.take();
        b.skip(pos(1, 0), t0);
        assert!(!b.is_full(), "skipped records count as records, not keys");
        assert_eq!((b.keys(), b.len()), (0, 1));
    }

    #[test]
    fn default_record_cap_is_a_hundred_records_per_key() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, Duration::from_secs(1));
        for offset in 0..(2 * RECORDS_PER_KEY as i64 - 1) {
            assert!(!b.push(
                b"hot".to_vec(),
                event(Op::Update, json!({}), &[]),
                pos(0, offset),
                t0
            ));
        }
        assert!(b.push(
            b"hot".to_vec(),
            event(Op::Update, json!({}), &[]),
            pos(0, 999),
            t0
        ));
        let batch = b.take().unwrap();
        assert_eq!(batch.entries.len(), 1);
        assert_eq!(batch.entries[0].positions.len(), 2 * RECORDS_PER_KEY);
    }

    proptest! {
        /// Whatever the keys, a batch closes exactly when it reaches `max_events` keys or
        /// `max_records` records, and never holds more.
        #[test]
        fn batches_respect_the_key_and_record_caps(
            keys in proptest::collection::vec(0u8..8, 1..200),
            max_events in 1usize..6,
            max_records in 1usize..20,
        ) {
            let now = Instant::now();
            let mut b = Batcher::with_max_records(max_events, max_records, Duration::from_secs(1));
            let mut batches = vec![];
            for (i, key) in keys.iter().enumerate() {
                let full = b.push(vec![*key], event(Op::Update, json!({"v": i}), &[]), pos(0, i as i64), now);
                prop_assert_eq!(full, b.keys() >= max_events || b.len() >= max_records);
                if full {
                    batches.push(b.take().unwrap());
                }
            }
            batches.extend(b.take());
            let mut records = 0;
            for batch in &batches {
                prop_assert!(batch.entries.len() <= max_events);
                prop_assert!(batch.records <= max_records);
                records += batch.records;
            }
            prop_assert_eq!(records, keys.len());
        }

        /// Applying a batch's entries gives the same final state per key as applying every
        /// record in order, and the commit offsets cover every record.
        #[test]
        fn coalescing_keeps_the_final_state_per_key(
            ops in proptest::collection::vec((0u8..4, 0u8..3, 0i32..2), 1..60),
        ) {
            let now = Instant::now();
            let mut b = Batcher::new(1000, Duration::from_secs(1));
            let mut expected: BTreeMap<u8, Option<i64>> = BTreeMap::new();
            let mut offsets = [0i64; 2];
            for (i, (key, kind, partition)) in ops.iter().enumerate() {
                let (op, after) = match kind {
                    0 => (Op::Create, json!({"v": i})),
                    1 => (Op::Update, json!({"v": i})),
                    _ => (Op::Delete, json!(null)),
                };
                expected.insert(*key, (op != Op::Delete).then_some(i as i64));
                let offset = offsets[*partition as usize];
                offsets[*partition as usize] += 1;
                b.push(vec![*key], event(op, after, &[]), pos(*partition, offset), now);
            }
            let batch = b.take().unwrap();
            let keys: Vec<u8> = batch.entries.iter().map(|e| e.key[0]).collect();
            let mut unique = keys.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), keys.len(), "one entry per key");
            for entry in &batch.entries {
                let got = entry.item.after.as_ref().map(|a| a["v"].as_i64().unwrap());
                let got = if entry.item.op == Op::Delete { None } else { got };
                prop_assert_eq!(got, expected[&entry.key[0]]);
            }
            for (p, next) in offsets.iter().enumerate() {
                if *next > 0 {
                    prop_assert_eq!(batch.commit.get(&(p as i32)), Some(next));
                }
            }
        }
    }
}
