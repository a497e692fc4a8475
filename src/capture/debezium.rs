//! The `debezium` envelope: a [`ChangeEvent`] as Debezium's PostgreSQL connector writes it
//! (JsonConverter, `schemas.enable=false`): key bytes, value bytes and headers.
//!
//! Owns the envelope's shape. The row images are already rendered Debezium's way by
//! `normalize` ([`super::normalize::Rendering::Debezium`]); this module adds the envelope
//! around them. Invariants:
//! - pure: the bytes depend only on the event and the options, except with
//!   `ts_ms = "processing"`, where the top-level `ts_ms`/`ts_us`/`ts_ns` are the time of writing;
//! - the key is the key columns in the key's declaration order (as Debezium writes them), so
//!   equal keys are equal bytes and partitions match a Debezium-written topic;
//! - the value is written straight from borrowed parts (no intermediate JSON tree).
//!
//! Intended differences from Debezium: `source.version` names driftless's event format; with
//! the default `ts_ms = "commit"` the top-level timestamps are the commit time;
//! `source.sequence[0]` after a restart is the resume position; no
//! `__debezium.context.*` headers; an initial-snapshot read's `source` time, `txId` and `lsn`
//! are those of driftless's own read.

use serde::Serialize;

use crate::config::debezium::{DebeziumOptions, TsMode};
use crate::event::{ChangeEvent, Op, Row, SnapshotMark};

/// Header on the delete of a primary-key change (and its tombstone): the new key.
pub(crate) const NEW_KEY_HEADER: &str = "__debezium.newkey";
/// Header on the insert of a primary-key change: the old key.
pub(crate) const OLD_KEY_HEADER: &str = "__debezium.oldkey";

/// The Kafka key bytes: the key columns in the key's declaration order.
pub(crate) fn key(ev: &ChangeEvent) -> Option<Vec<u8>> {
    ev.key.as_ref().map(row_bytes)
}

fn row_bytes(row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    serde_json::to_writer(&mut out, row).expect("a map of JSON values always serializes");
    out
}

/// The header a primary-key change carries: (name, the other key's bytes).
pub(crate) fn key_change_header(ev: &ChangeEvent) -> Option<(&'static str, Vec<u8>)> {
    let other = ev.key_change.as_ref()?;
    let name = match ev.op {
        Op::Delete => NEW_KEY_HEADER,
        _ => OLD_KEY_HEADER,
    };
    Some((name, row_bytes(other)))
}

#[derive(Serialize)]
struct Value<'a> {
    before: &'a Option<Row>,
    after: &'a Option<Row>,
    source: Source<'a>,
    transaction: (),
    op: &'static str,
    ts_ms: i64,
    ts_us: i64,
    ts_ns: i128,
}

#[derive(Serialize)]
struct Source<'a> {
    version: &'a str,
    connector: &'static str,
    name: &'a str,
    ts_ms: Option<i64>,
    snapshot: &'static str,
    db: &'a str,
    sequence: String,
    ts_us: Option<i64>,
    ts_ns: Option<i128>,
    schema: &'a str,
    table: &'a str,
    #[serde(rename = "txId")]
    tx_id: Option<u32>,
    lsn: u64,
    xmin: (),
    origin: Option<&'a str>,
    origin_lsn: (),
}

/// Debezium's `source.snapshot`: its `SnapshotRecord`, lowercased.
fn snapshot_marker(mark: SnapshotMark) -> &'static str {
    match mark {
        SnapshotMark::Streamed => "false",
        SnapshotMark::First => "first",
        SnapshotMark::FirstInTable => "first_in_data_collection",
        SnapshotMark::Middle => "true",
        SnapshotMark::LastInTable => "last_in_data_collection",
        SnapshotMark::Last => "last",
        SnapshotMark::Incremental => "incremental",
    }
}

/// The value bytes. `server_name` is Debezium's `topic.prefix`; `record_ms` the Kafka record
/// timestamp (the commit time, or the time of writing for an event the WAL gives no time).
pub(crate) fn value(
    ev: &ChangeEvent,
    server_name: &str,
    opts: &DebeziumOptions,
    record_ms: i64,
) -> Vec<u8> {
    let src = &ev.source;
    let commit_us = src.commit_us;
    let ts_us = match opts.ts {
        TsMode::Commit => commit_us.unwrap_or(record_ms.saturating_mul(1000)),
        TsMode::Processing => chrono::Utc::now().timestamp_micros(),
    };
    let sequence = match src.prev_commit_end {
        Some(prev) => format!("[\"{}\",\"{}\"]", prev.as_u64(), src.lsn.as_u64()),
        None => format!("[null,\"{}\"]", src.lsn.as_u64()),
    };
    let value = Value {
        before: &ev.before,
        after: &ev.after,
        source: Source {
            version: &src.version,
            connector: "postgresql",
            name: server_name,
            ts_ms: commit_us.map(|us| us.div_euclid(1000)),
            snapshot: snapshot_marker(src.mark),
            db: &src.db,
            sequence,
            ts_us: commit_us,
            ts_ns: commit_us.map(|us| i128::from(us) * 1000),
            schema: &src.schema,
            table: &src.table,
            tx_id: src.xid,
            lsn: src.lsn.as_u64(),
            xmin: (),
            origin: src.origin.as_deref(),
            origin_lsn: (),
        },
        transaction: (),
        op: ev.op.code(),
        ts_ms: ts_us.div_euclid(1000),
        ts_us,
        ts_ns: i128::from(ts_us) * 1000,
    };
    let mut out = Vec::with_capacity(1024);
    serde_json::to_writer(&mut out, &value).expect("events always serialize");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EVENT_FORMAT, Source as EventSource};
    use crate::lsn::Lsn;
    use serde_json::json;

    fn event(op: Op) -> ChangeEvent {
        let row = |v: serde_json::Value| v.as_object().cloned();
        ChangeEvent {
            id: "0/10:0".into(),
            op,
            source: EventSource {
                version: EVENT_FORMAT.into(),
                db: "db".into(),
                schema: "public".into(),
                table: "t".into(),
                lsn: Lsn(200),
                commit_lsn: Lsn(300),
                xid: Some(7),
                commit_ts: Some("2024-02-29T11:45:30.123456Z".into()),
                origin: None,
                snapshot: false,
                mark: SnapshotMark::Streamed,
                schema_version: "0".into(),
                commit_us: Some(1_709_207_130_123_456),
                prev_commit_end: Some(Lsn(100)),
            },
            key: row(json!({"region": "eu", "id": 1})),
            before: None,
            after: row(json!({"region": "eu", "id": 1, "v": null})),
            unchanged_toast: vec![],
            truncate: None,
            message: None,
            key_change: row(json!({"region": "us", "id": 1})),
        }
    }

    #[test]
    fn value_has_debeziums_fields_and_commit_times() {
        let ev = event(Op::Create);
        let v: serde_json::Value =
            serde_json::from_slice(&value(&ev, "prefix", &DebeziumOptions::default(), 0)).unwrap();
        assert_eq!(
            v,
            json!({
                "before": null,
                "after": {"region": "eu", "id": 1, "v": null},
                "source": {
                    "version": EVENT_FORMAT, "connector": "postgresql", "name": "prefix",
                    "ts_ms": 1_709_207_130_123_i64, "snapshot": "false", "db": "db",
                    "sequence": "[\"100\",\"200\"]", "ts_us": 1_709_207_130_123_456_i64,
                    "ts_ns": 1_709_207_130_123_456_000_i64, "schema": "public", "table": "t",
                    "txId": 7, "lsn": 200, "xmin": null, "origin": null, "origin_lsn": null
                },
                "transaction": null,
                "op": "c",
                "ts_ms": 1_709_207_130_123_i64,
                "ts_us": 1_709_207_130_123_456_i64,
                "ts_ns": 1_709_207_130_123_456_000_i64
            })
        );
    }

    #[test]
    fn key_keeps_column_order_and_pk_changes_carry_the_other_key() {
        let ev = event(Op::Create);
        assert_eq!(key(&ev).unwrap(), br#"{"region":"eu","id":1}"#);
        let (name, bytes) = key_change_header(&ev).unwrap();
        assert_eq!(
            (name, bytes.as_slice()),
            (OLD_KEY_HEADER, &br#"{"region":"us","id":1}"#[..])
        );
        assert_eq!(
            key_change_header(&event(Op::Delete)).unwrap().0,
            NEW_KEY_HEADER
        );
    }

    #[test]
    fn processing_time_mode_writes_the_time_of_writing_at_top_level_only() {
        let opts = DebeziumOptions {
            ts: TsMode::Processing,
            ..DebeziumOptions::default()
        };
        let before = chrono::Utc::now().timestamp_micros();
        let v: serde_json::Value =
            serde_json::from_slice(&value(&event(Op::Create), "p", &opts, 0)).unwrap();
        let after = chrono::Utc::now().timestamp_micros();
        let ts_us = v["ts_us"].as_i64().unwrap();
        assert!((before..=after).contains(&ts_us), "{v}");
        assert_eq!(v["ts_ms"].as_i64().unwrap(), ts_us / 1000);
        assert_eq!(
            v["source"]["ts_us"], 1_709_207_130_123_456_i64,
            "commit time"
        );
    }

    #[test]
    fn reads_carry_debeziums_snapshot_markers() {
        let marker = |mark| {
            let mut ev = event(Op::Read);
            ev.source.snapshot = true;
            ev.source.mark = mark;
            let v: serde_json::Value =
                serde_json::from_slice(&value(&ev, "p", &DebeziumOptions::default(), 0)).unwrap();
            v["source"]["snapshot"].as_str().unwrap().to_owned()
        };
        for (mark, text) in [
            (SnapshotMark::First, "first"),
            (SnapshotMark::FirstInTable, "first_in_data_collection"),
            (SnapshotMark::Middle, "true"),
            (SnapshotMark::LastInTable, "last_in_data_collection"),
            (SnapshotMark::Last, "last"),
            (SnapshotMark::Incremental, "incremental"),
        ] {
            assert_eq!(marker(mark), text);
        }
    }

    #[test]
    fn first_event_after_a_fresh_start_has_no_previous_commit() {
        let mut ev = event(Op::Update);
        ev.source.prev_commit_end = None;
        let v: serde_json::Value =
            serde_json::from_slice(&value(&ev, "p", &DebeziumOptions::default(), 0)).unwrap();
        assert_eq!(v["source"]["sequence"], "[null,\"200\"]");
    }
}
