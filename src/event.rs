//! The normalized change event: the contract between capture, Kafka and every consumer.
//!
//! Owns [`ChangeEvent`] (serialized exactly as `schemas/change-event.v1.json` describes), the
//! canonical Kafka key. (The Debezium envelope is written by `capture::debezium`.) Invariants:
//! - a streamed event's bytes depend only on the WAL (no wall-clock time, no process state),
//!   so a re-sent event after a restart is byte-identical to its first copy (rows read by SQL,
//!   the initial snapshot and backfills, carry the time of their read instead);
//! - `id` is `"{commit_lsn}:{ordinal}"` (ordinal = position of the change in its transaction),
//!   unique per change even when several changes share one WAL record LSN;
//! - the Kafka key is the primary key as JSON with keys sorted, so equal keys are equal bytes;
//! - a column whose value Postgres did not send (unchanged TOAST) is listed in
//!   `unchanged_toast` and absent from `after`; no placeholder value is ever written (except
//!   for the `debezium` envelope, whose rows capture renders Debezium's way: there `after`
//!   holds Debezium's placeholder, and `before` of a delete every column).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lsn::Lsn;

/// Version tag of this event format, carried in `source.version`.
pub(crate) const EVENT_FORMAT: &str = "driftless.change-event.v1";

/// A row image: column name → JSON value, in table column order.
pub(crate) type Row = Map<String, Value>;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Insert.
    #[serde(rename = "c")]
    Create,
    /// Update.
    #[serde(rename = "u")]
    Update,
    /// Delete.
    #[serde(rename = "d")]
    Delete,
    /// Row read by the initial snapshot.
    #[serde(rename = "r")]
    Read,
    /// Table truncated.
    #[serde(rename = "t")]
    Truncate,
    /// Logical decoding message (`pg_logical_emit_message`).
    #[serde(rename = "m")]
    Message,
}

impl Op {
    /// The one-letter code.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            Op::Message => "m",
        }
    }
}

/// Where and when the change happened.
///
/// The strings shared by many events (database, table, commit time, ...) are `Arc<str>`, so
/// building an event does not copy them; they serialize exactly as plain strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Event format version (`EVENT_FORMAT`).
    #[serde(with = "arc_str")]
    pub version: Arc<str>,
    /// Database name.
    #[serde(with = "arc_str")]
    pub db: Arc<str>,
    /// Schema (namespace) of the table; empty for messages.
    #[serde(with = "arc_str")]
    pub schema: Arc<str>,
    /// Table name; empty for messages.
    #[serde(with = "arc_str")]
    pub table: Arc<str>,
    /// LSN of the change's WAL record (for snapshot rows: the slot's consistent point).
    pub lsn: Lsn,
    /// LSN of the transaction's commit record (for snapshot rows: the consistent point).
    pub commit_lsn: Lsn,
    /// Transaction id; absent for non-transactional messages and for snapshot rows (except
    /// under the `debezium` envelope, where an initial-snapshot row carries the id of the
    /// transaction that read it, as Debezium's do).
    pub xid: Option<u32>,
    /// Commit time, RFC 3339 UTC with microseconds (snapshot rows: when the snapshot began;
    /// null for non-transactional messages, which carry no time in the WAL).
    #[serde(default, with = "opt_arc_str")]
    pub commit_ts: Option<Arc<str>>,
    /// Replication origin of the transaction, if it had one.
    pub origin: Option<String>,
    /// True for rows read by SQL: the initial snapshot and backfills.
    pub snapshot: bool,
    /// Where a read row sits in its read (not serialized: the Debezium envelope's
    /// `source.snapshot` marker).
    #[serde(skip)]
    pub mark: SnapshotMark,
    /// Hash of the column list (names and types) this event was decoded with; changes when
    /// the table's schema changes.
    #[serde(with = "arc_str")]
    pub schema_version: Arc<str>,
    /// Commit time in µs since the Unix epoch (not serialized: the Debezium envelope's
    /// `ts_us`/`ts_ns`).
    #[serde(skip)]
    pub commit_us: Option<i64>,
    /// End LSN of the commit before this transaction in the stream, when the stream has seen
    /// one (not serialized: the first element of the Debezium envelope's `source.sequence`).
    #[serde(skip)]
    pub prev_commit_end: Option<Lsn>,
}

/// Where an event sits in a read of the tables, as Debezium's `source.snapshot` tells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotMark {
    /// A streamed change, not a read.
    #[default]
    Streamed,
    /// The first row of the initial snapshot (the first row of its first table).
    First,
    /// The first row of a later table of the initial snapshot.
    FirstInTable,
    /// Any other row of the initial snapshot.
    Middle,
    /// The last row of a table of the initial snapshot (but not of the whole snapshot).
    LastInTable,
    /// The last row of the initial snapshot.
    Last,
    /// A row read by a backfill (Debezium's incremental snapshot) while streaming.
    Incremental,
}

impl SnapshotMark {
    /// The mark of row `row` (from 0) of table `table` (from 0) of an initial snapshot whose
    /// tables hold `totals` rows, in the order they are read. As Debezium marks its initial
    /// snapshot: `First` only if the first table has rows, and the snapshot's last row is
    /// `Last` even when the tables after its own are empty.
    pub(crate) fn initial(totals: &[u64], table: usize, row: u64) -> SnapshotMark {
        let last_in_table = row + 1 >= totals[table];
        if last_in_table && totals[table + 1..].iter().all(|&n| n == 0) {
            SnapshotMark::Last
        } else if table == 0 && row == 0 {
            SnapshotMark::First
        } else if last_in_table {
            SnapshotMark::LastInTable
        } else if row == 0 {
            SnapshotMark::FirstInTable
        } else {
            SnapshotMark::Middle
        }
    }
}

/// `Arc<str>` (de)serialized as a plain string (serde's own impl needs its `rc` feature).
mod arc_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        Ok(String::deserialize(d)?.into())
    }
}

/// `Option<Arc<str>>` (de)serialized as an optional plain string.
mod opt_arc_str {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&**v),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Into::into))
    }
}

/// Payload of an `m` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessagePayload {
    /// Message prefix.
    pub prefix: String,
    /// Content, base64.
    pub content_base64: String,
    /// Whether it was emitted inside a transaction.
    pub transactional: bool,
}

/// Payload of a `t` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruncatePayload {
    /// `TRUNCATE ... CASCADE`.
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY`.
    pub restart_identity: bool,
}

/// One change, as written to Kafka (driftless envelope).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Deterministic id: `"{commit_lsn}:{ordinal}"`, snapshot rows
    /// `"snapshot:{consistent_point}:{schema}.{table}:{n}"`.
    pub id: String,
    /// Operation.
    pub op: Op,
    /// Origin of the change.
    pub source: Source,
    /// Primary-key columns (null for `t` and `m`).
    pub key: Option<Row>,
    /// Old row: the full row under `REPLICA IDENTITY FULL`, only the key columns for deletes
    /// (and key-changing updates) under `DEFAULT`, otherwise null.
    pub before: Option<Row>,
    /// New row (null for deletes, truncates, messages); unchanged TOAST columns absent.
    pub after: Option<Row>,
    /// Columns whose value was unchanged and not sent (TOAST); absent from `after`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged_toast: Vec<String>,
    /// Truncate options (`t` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<TruncatePayload>,
    /// Logical message (`m` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessagePayload>,
    /// On the two events a primary-key change becomes: the other key (the new key on the
    /// delete, the old key on the insert). Not serialized: the Debezium envelope's
    /// `__debezium.newkey`/`__debezium.oldkey` headers.
    #[serde(skip)]
    pub key_change: Option<Row>,
}

/// Canonical JSON of a key: object keys sorted, compact. Equal keys give equal bytes, so Kafka
/// partitions (and per-key order) are stable across restarts and key column order.
pub(crate) fn canonical_key(key: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    if key.len() <= 1 {
        // Already sorted: skip building an ordered copy.
        serde_json::to_writer(&mut out, key).expect("a map of JSON values always serializes");
    } else {
        let mut sorted: Vec<(&String, &Value)> = key.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut ser = serde_json::Serializer::new(&mut out);
        serde::Serializer::collect_map(&mut ser, sorted).expect("JSON values always serialize");
    }
    out
}

impl ChangeEvent {
    /// The Kafka key bytes, if the event has a key.
    pub fn kafka_key(&self) -> Option<Vec<u8>> {
        self.key.as_ref().map(canonical_key)
    }

    /// Serializes with the driftless envelope.
    pub fn to_json(&self) -> Vec<u8> {
        // Most events fit: saves the doubling reallocations from serde_json's default buffer.
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(&mut out, self).expect("events always serialize");
        out
    }
}

/// Microseconds since 2000-01-01 (Postgres epoch) → RFC 3339 UTC with 6 fractional digits.
pub(crate) fn pg_timestamp_to_rfc3339(us_since_2000: i64) -> String {
    const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
    let unix_us = us_since_2000.saturating_add(PG_EPOCH_OFFSET_US);
    match chrono::DateTime::from_timestamp_micros(unix_us) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => us_since_2000.to_string(),
    }
}

/// Milliseconds since the Unix epoch of a Postgres timestamp (µs since 2000-01-01).
pub(crate) fn pg_timestamp_to_unix_millis(us_since_2000: i64) -> i64 {
    (us_since_2000 / 1000).saturating_add(946_684_800_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_key_sorts_columns() {
        let mut a = Row::new();
        a.insert("b".into(), Value::from(2));
        a.insert("a".into(), Value::from("x"));
        assert_eq!(canonical_key(&a), br#"{"a":"x","b":2}"#);
    }

    #[test]
    fn canonical_key_matches_a_sorted_map() {
        for names in [&["id"][..], &["z", "a", "m"], &[]] {
            let mut k = Row::new();
            for (i, n) in names.iter().enumerate() {
                k.insert(n.to_string(), Value::from(format!("v\"{i}")));
            }
            let sorted: std::collections::BTreeMap<_, _> = k.iter().collect();
            assert_eq!(canonical_key(&k), serde_json::to_vec(&sorted).unwrap());
        }
    }

    #[test]
    fn initial_snapshot_marks_follow_debezium() {
        use SnapshotMark::*;
        let marks = |totals: &[u64]| -> Vec<SnapshotMark> {
            (0..totals.len())
                .flat_map(|t| (0..totals[t]).map(move |r| (t, r)))
                .map(|(t, r)| SnapshotMark::initial(totals, t, r))
                .collect()
        };
        assert_eq!(
            marks(&[3, 2, 3]),
            [
                First,
                Middle,
                LastInTable,
                FirstInTable,
                LastInTable,
                FirstInTable,
                Middle,
                Last
            ]
        );
        // A one-row first table: first wins over last-in-table; empty tables at either end.
        assert_eq!(marks(&[1, 2]), [First, FirstInTable, Last]);
        assert_eq!(marks(&[0, 2, 1, 0]), [FirstInTable, LastInTable, Last]);
        assert_eq!(marks(&[1]), [Last]);
        assert_eq!(marks(&[2, 0]), [First, Last]);
        assert_eq!(marks(&[0, 0]), []);
    }

    #[test]
    fn pg_timestamps_convert_to_utc() {
        assert_eq!(pg_timestamp_to_rfc3339(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(
            pg_timestamp_to_rfc3339(1_500_001),
            "2000-01-01T00:00:01.500001Z"
        );
        assert_eq!(pg_timestamp_to_unix_millis(0), 946_684_800_000);
    }
}
