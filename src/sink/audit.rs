//! The sinks' audit trail: one JSON record per applied or rejected change.
//!
//! Owns the audit record format and its two writers. Invariants:
//! - a record carries time, sink, table, a SHA-256 hash of the Kafka key (never the key or any
//!   row value), operation, outcome, destination id, correlation id (the same
//!   `{topic}-{partition}-{offset}` as the dead-letter headers), the number of source records
//!   the change coalesced and, for rejections, the error category;
//! - the audit of a batch is durable (acknowledged by Kafka with `acks=all`, or written and
//!   fsynced to the file) before the batch's offsets are stored, so a crash can repeat audit
//!   records (at-least-once, like the changes) but never lose one;
//! - to the topic (`{prefix}.audit` by default) records are keyed by the key hash, so one key's
//!   history stays in one partition, in order;
//! - the file, when driftless creates it, is owner-only (mode 0600, [`crate::files`]).

use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Outcome;
use super::batch::{Batch, Position};
use super::verify::{Repair, Report};
use crate::config::AuditTo;
use crate::event::ChangeEvent;
use crate::kafka::{AckedProducer, AckedPublisher, KafkaFailure};

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct AuditRecord {
    /// When the outcome was known (RFC 3339, UTC, milliseconds).
    pub(crate) time: String,
    /// Sink name.
    pub(crate) sink: String,
    /// Source table, `schema.table` (None for a record that is not a change event).
    pub(crate) table: Option<String>,
    /// `sha256:` + hex of the Kafka key (the canonical primary key).
    pub(crate) key_hash: String,
    /// `c`, `u`, `d` or `r` (the coalesced change's operation; None for a record that is not a
    /// change event).
    pub(crate) operation: Option<&'static str>,
    /// `applied`, `rejected` (rejected changes are in the dead-letter topic) or `repaired` (by
    /// `driftless verify --repair`).
    pub(crate) outcome: &'static str,
    /// The destination's record id, when it reported one.
    pub(crate) destination_id: Option<String>,
    /// `{topic}-{partition}-{offset}` of the change's latest source record.
    pub(crate) correlation_id: String,
    /// Source records folded into this change.
    pub(crate) records: usize,
    /// Error category of a rejection.
    pub(crate) category: Option<String>,
}

/// The correlation id of a source record, shared by dead-letter headers and the audit trail.
pub(crate) fn correlation_id(topic: &str, at: Position) -> String {
    format!("{topic}-{}-{}", at.partition, at.offset)
}

/// `sha256:<hex>` of a key.
pub(crate) fn key_hash(key: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key)))
}

/// The audit records of an applied batch (pure).
pub(crate) fn records(
    sink: &str,
    topic: &str,
    batch: &Batch<ChangeEvent>,
    outcome: &Outcome,
) -> Vec<AuditRecord> {
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    batch
        .entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let rejected = outcome.rejected.iter().find(|r| r.index == index);
            let destination_id = outcome
                .destination_ids
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, id)| id.clone());
            let last = entry.positions.last().copied().unwrap_or(Position {
                partition: 0,
                offset: 0,
            });
            AuditRecord {
                time: time.clone(),
                sink: sink.to_string(),
                table: Some(format!(
                    "{}.{}",
                    entry.item.source.schema, entry.item.source.table
                )),
                key_hash: key_hash(&entry.key),
                operation: Some(entry.item.op.code()),
                outcome: if rejected.is_some() {
                    "rejected"
                } else {
                    "applied"
                },
                destination_id,
                correlation_id: correlation_id(topic, last),
                records: entry.positions.len(),
                category: rejected.map(|r| r.category.clone()),
            }
        })
        .collect()
}

/// The audit records of `driftless verify --repair` (pure): one per repair of `report`, with
/// what the destination did (`outcome` indexes `report.repairs`); the correlation id names the
/// verify run.
pub(crate) fn repairs(
    sink: &str,
    table: &str,
    report: &Report,
    outcome: &Outcome,
    run: &str,
) -> Vec<AuditRecord> {
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    report
        .repairs
        .iter()
        .enumerate()
        .map(|(index, repair)| {
            let rejected = outcome.rejected.iter().find(|r| r.index == index);
            let (key, operation) = match repair {
                Repair::Upsert(row) => (key_hash(&row.key), "u"),
                Repair::Delete { key, .. } => (format!("sha256:{}", hex::encode(key)), "d"),
            };
            AuditRecord {
                time: time.clone(),
                sink: sink.to_string(),
                table: Some(table.to_string()),
                key_hash: key,
                operation: Some(operation),
                outcome: if rejected.is_some() {
                    "rejected"
                } else {
                    "repaired"
                },
                destination_id: outcome
                    .destination_ids
                    .iter()
                    .find(|(i, _)| *i == index)
                    .map(|(_, id)| id.clone()),
                correlation_id: run.to_string(),
                records: 0,
                category: rejected.map(|r| r.category.clone()),
            }
        })
        .collect()
}

/// The audit record of a source record rejected before it became a change (unparsable).
pub(crate) fn unparsable(
    sink: &str,
    topic: &str,
    key: Option<&[u8]>,
    at: Position,
    category: &str,
) -> AuditRecord {
    AuditRecord {
        time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        sink: sink.to_string(),
        table: None,
        key_hash: key_hash(key.unwrap_or_default()),
        operation: None,
        outcome: "rejected",
        destination_id: None,
        correlation_id: correlation_id(topic, at),
        records: 1,
        category: Some(category.to_string()),
    }
}

/// A failure to record the audit trail (transient: the batch is retried).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit topic.
    #[error("audit topic: {0}")]
    Kafka(#[from] KafkaFailure),
    /// The audit file.
    #[error("audit file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where one worker writes its audit trail.
pub enum AuditTrail {
    /// Records to a Kafka topic.
    Topic {
        /// Topic name.
        topic: String,
        /// Producer (`acks=all`).
        producer: AckedProducer,
    },
    /// JSON lines appended to a file.
    File(PathBuf),
    /// No audit trail.
    Off,
}

impl AuditTrail {
    /// Opens the configured trail (the topic must exist; see [`AuditTrail::topic`]).
    pub(crate) fn open(
        to: &AuditTo,
        brokers: &str,
        librdkafka: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, AuditError> {
        Ok(match to {
            AuditTo::Topic(topic) => AuditTrail::Topic {
                topic: topic.clone(),
                producer: AckedProducer::new(brokers, librdkafka)?,
            },
            AuditTo::File(path) => AuditTrail::File(path.clone()),
            AuditTo::Off => AuditTrail::Off,
        })
    }

    /// The audit topic, if the trail goes to Kafka.
    pub(crate) fn topic(&self) -> Option<&str> {
        match self {
            AuditTrail::Topic { topic, .. } => Some(topic),
            _ => None,
        }
    }

    /// Writes records durably; returns once Kafka acknowledged all of them or the file was
    /// fsynced.
    pub(crate) async fn write(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        self.write_keyed(records, |r| &r.key_hash).await
    }

    /// Writes any audit records (e.g. two-way sync conflicts), keyed by `key`.
    pub(crate) async fn write_keyed<R: Serialize>(
        &self,
        records: &[R],
        key: impl Fn(&R) -> &str,
    ) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let lines: Vec<(&str, Vec<u8>)> = records
            .iter()
            .map(|r| {
                let json = serde_json::to_vec(r).expect("audit records serialize");
                (key(r), json)
            })
            .collect();
        match self {
            AuditTrail::Off => Ok(()),
            AuditTrail::Topic { topic, producer } => {
                futures::future::try_join_all(lines.iter().map(|(key, json)| {
                    producer.send(topic, Some(key.as_bytes()), Some(json), &[])
                }))
                .await?;
                Ok(())
            }
            AuditTrail::File(path) => append_lines(path, &lines).await,
        }
    }
}

async fn append_lines(path: &Path, lines: &[(&str, Vec<u8>)]) -> Result<(), AuditError> {
    let failed = |source| AuditError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut text = Vec::new();
    for (_, json) in lines {
        text.extend_from_slice(json);
        text.push(b'\n');
    }
    let mut file = tokio::fs::OpenOptions::from(crate::files::private())
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(failed)?;
    // One write per batch: with O_APPEND, workers sharing the file never interleave lines.
    file.write_all(&text).await.map_err(failed)?;
    file.sync_data().await.map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use crate::sink::Rejected;
    use crate::sink::batch::Batcher;
    use crate::sink::test_support;
    use serde_json::json;
    use std::time::{Duration, Instant};

    /// A change of `public.contacts` row `id`, keyed by it.
    fn event(op: Op, id: i64, email: &str) -> ChangeEvent {
        let mut e = test_support::event(op, json!({"id": id, "email": email}));
        e.source.table = "contacts".into();
        e.key = json!({"id": id}).as_object().cloned();
        e
    }

    fn batch() -> Batch<ChangeEvent> {
        let mut b = Batcher::new(10, Duration::from_secs(1));
        let now = Instant::now();
        let at = |offset| Position {
            partition: 1,
            offset,
        };
        b.push(
            b"{\"id\":1}".to_vec(),
            event(Op::Create, 1, "a@x.io"),
            at(5),
            now,
        );
        b.push(
            b"{\"id\":2}".to_vec(),
            event(Op::Update, 2, "secret@x.io"),
            at(6),
            now,
        );
        b.push(
            b"{\"id\":1}".to_vec(),
            event(Op::Update, 1, "b@x.io"),
            at(7),
            now,
        );
        b.take().unwrap()
    }

    #[test]
    fn records_say_what_happened_without_keys_or_values() {
        let outcome = Outcome {
            rejected: vec![Rejected {
                index: 1,
                category: "INVALID_EMAIL".into(),
                message: "bad".into(),
            }],
            destination_ids: vec![(0, "901".into())],
        };
        let rs = records("hs", "t", &batch(), &outcome);
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].outcome, "applied");
        assert_eq!(
            rs[0].operation,
            Some("c"),
            "a create then update stays a create"
        );
        assert_eq!(rs[0].destination_id.as_deref(), Some("901"));
        assert_eq!(rs[0].correlation_id, "t-1-7");
        assert_eq!(rs[0].records, 2);
        assert_eq!(rs[0].table.as_deref(), Some("public.contacts"));
        assert_eq!(rs[0].key_hash, key_hash(b"{\"id\":1}"));
        assert_eq!(rs[1].outcome, "rejected");
        assert_eq!(rs[1].category.as_deref(), Some("INVALID_EMAIL"));
        let text = serde_json::to_string(&rs).unwrap();
        for leaked in ["secret@x.io", "a@x.io", "{\\\"id\\\":1}", "bad"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
    }

    #[tokio::test]
    async fn the_file_trail_appends_one_json_line_per_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let trail = AuditTrail::File(path.clone());
        let rs = records("hs", "t", &batch(), &Outcome::default());
        trail.write(&rs).await.unwrap();
        trail.write(&rs[..1]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["correlation_id"], "t-1-7");
        assert_eq!(lines[1]["outcome"], "applied");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner only");
    }
}
