//! The sinks' audit trail: one JSON record per applied or rejected change.
//!
//! Owns the audit record format and its two writers. Invariants:
//! - a record carries time, sink, table, the keyed hash of the record key (never the key or any
//!   row value; see below), operation, outcome, destination id, correlation id (the same
//!   `{topic}-{partition}-{offset}` as the dead-letter headers), the number of source records
//!   the change coalesced and, for rejections, the error category;
//! - the audit of a batch is durable (acknowledged by Kafka with `acks=all`, or written and
//!   fsynced to the file) before the batch's offsets are stored, so a crash can repeat audit
//!   records (at-least-once, like the changes) but never lose one;
//! - to the topic (`{prefix}.audit` by default) records are keyed by the key hash, so one key's
//!   history stays in one partition, in order;
//! - the file, when driftless creates it, is owner-only (mode 0600, [`crate::files`]).
//!
//! Key hashes: `hmac-sha256:<hex>`, HMAC-SHA-256 under the secret of the environment variable
//! named by `[audit] key_env` (required when a sink writes an audit trail), so a hash cannot be
//! reversed by hashing guessed keys. Every audit record (sink changes, unparsable records,
//! repairs, two-way conflicts and set-aside inbound records) hashes ONE canonical form of the
//! key, [`canonical_key`], so the records of one row join:
//! - a one-column primary key: the column's value as text (`42`, `ada@x.io`), which is the record
//!   key two-way sync names rows by;
//! - a composite key: the canonical JSON of the key object (columns sorted by name, as the Kafka
//!   key is written);
//! - a Kafka key that is not a JSON object (an unparsable record): its bytes as they are.
//!
//! The one exception: a `verify --repair` archive of a record whose row is gone knows only the
//! ledger's digest of the key; its hash is the HMAC of that digest's hex text.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use hmac::{KeyInit as _, Mac as _};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Outcome;
use super::batch::{Batch, Position};
use super::verify::{Repair, Report};
use crate::config::AuditTo;
use crate::event::ChangeEvent;
use crate::kafka::{AckedProducer, AckedPublisher, KafkaFailure};
use crate::sink::mapping::value_string;

type HmacSha256 = hmac::Hmac<Sha256>;

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct AuditRecord {
    /// When the outcome was known (RFC 3339, UTC, milliseconds).
    pub(crate) time: String,
    /// Sink name.
    pub(crate) sink: String,
    /// Source table, `schema.table` (None for a record that is not a change event).
    pub(crate) table: Option<String>,
    /// `hmac-sha256:` + hex of the keyed hash of the record key's canonical form.
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

/// `sha256:<hex>` of a Kafka key: the unkeyed reference the ledger's key digest and `verify`
/// reports use (never written to the audit trail: see [`KeyHasher`]).
pub(crate) fn key_hash(key: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key)))
}

/// A record key as its producer holds it.
#[derive(Clone, Copy, Debug)]
pub enum RecordKey<'a> {
    /// The Kafka key of a change event (canonical JSON of the key object).
    Kafka(&'a [u8]),
    /// The record key two-way sync names rows by (a one-column key's value as text).
    Text(&'a str),
}

/// The one form of a key every audit record hashes (see the module doc).
pub fn canonical_key(key: RecordKey<'_>) -> Cow<'_, [u8]> {
    match key {
        RecordKey::Text(text) => Cow::Borrowed(text.as_bytes()),
        RecordKey::Kafka(bytes) => {
            match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes) {
                Ok(map) if map.len() == 1 => {
                    let value = map.values().next().expect("one column");
                    Cow::Owned(value_string(value).into_bytes())
                }
                _ => Cow::Borrowed(bytes),
            }
        }
    }
}

/// Hashes record keys for the audit trail: HMAC-SHA-256 under a secret (its `Debug` shows no
/// secret).
#[derive(Clone)]
pub struct KeyHasher(Arc<[u8]>);

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// A hasher under `secret`.
    pub fn new(secret: &[u8]) -> Self {
        KeyHasher(Arc::from(secret))
    }

    /// The hasher under the secret in environment variable `name` (set and not empty). The
    /// error names the variable, never a value.
    pub(crate) fn from_env(name: &str) -> Result<Self, AuditError> {
        match std::env::var(name) {
            Ok(secret) if !secret.is_empty() => Ok(KeyHasher::new(secret.as_bytes())),
            _ => Err(AuditError::Key(format!(
                "environment variable {name} (audit.key_env) is not set or empty"
            ))),
        }
    }

    /// `hmac-sha256:<hex>` of the key's canonical form.
    pub fn hash(&self, key: RecordKey<'_>) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(&canonical_key(key));
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// The audit records of an applied batch (pure).
pub(crate) fn records(
    hasher: &KeyHasher,
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
                key_hash: hasher.hash(RecordKey::Kafka(&entry.key)),
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
    hasher: &KeyHasher,
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
                Repair::Upsert(row) => (hasher.hash(RecordKey::Kafka(&row.key)), "u"),
                Repair::Delete { key, .. } => {
                    (hasher.hash(RecordKey::Text(&hex::encode(key))), "d")
                }
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
    hasher: &KeyHasher,
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
        key_hash: hasher.hash(RecordKey::Kafka(key.unwrap_or_default())),
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
    /// The key hash secret is missing (fatal: set the variable `[audit] key_env` names).
    #[error("audit key: {0}")]
    Key(String),
}

/// Where one worker writes its audit trail.
pub enum AuditTrail {
    /// Records to a Kafka topic.
    Topic {
        /// Topic name.
        topic: String,
        /// Producer (`acks=all`).
        producer: AckedProducer,
        /// Key hashes.
        hasher: KeyHasher,
    },
    /// JSON lines appended to a file.
    File {
        /// The file.
        path: PathBuf,
        /// Key hashes.
        hasher: KeyHasher,
    },
    /// No audit trail.
    Off,
}

impl AuditTrail {
    /// Opens the configured trail (the topic must exist; see [`AuditTrail::topic`]); reads the
    /// key hash secret from the variable `key_env` names (validation requires one when the
    /// trail is on).
    pub(crate) fn open(
        to: &AuditTo,
        key_env: Option<&str>,
        brokers: &str,
        librdkafka: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, AuditError> {
        let hasher = || match key_env {
            Some(name) => KeyHasher::from_env(name),
            None => Err(AuditError::Key("audit.key_env is not set".into())),
        };
        Ok(match to {
            AuditTo::Topic(topic) => AuditTrail::Topic {
                topic: topic.clone(),
                hasher: hasher()?,
                producer: AckedProducer::new(brokers, librdkafka)?,
            },
            AuditTo::File(path) => AuditTrail::File {
                path: path.clone(),
                hasher: hasher()?,
            },
            AuditTo::Off => AuditTrail::Off,
        })
    }

    /// The key hasher, if the trail is on.
    pub(crate) fn hasher(&self) -> Option<&KeyHasher> {
        match self {
            AuditTrail::Topic { hasher, .. } | AuditTrail::File { hasher, .. } => Some(hasher),
            AuditTrail::Off => None,
        }
    }

    /// The audit hash of `key` (None when the trail is off).
    pub(crate) fn key_hash(&self, key: RecordKey<'_>) -> Option<String> {
        self.hasher().map(|h| h.hash(key))
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
            AuditTrail::Topic {
                topic, producer, ..
            } => {
                futures::future::try_join_all(lines.iter().map(|(key, json)| {
                    producer.send(topic, Some(key.as_bytes()), Some(json), &[])
                }))
                .await?;
                Ok(())
            }
            AuditTrail::File { path, .. } => append_lines(path, &lines).await,
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

    fn hasher() -> KeyHasher {
        KeyHasher::new(b"test secret")
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
                message: "refused value".into(),
            }],
            destination_ids: vec![(0, "901".into())],
        };
        let rs = records(&hasher(), "hs", "t", &batch(), &outcome);
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
        assert_eq!(rs[0].key_hash, hasher().hash(RecordKey::Text("1")));
        assert_eq!(rs[1].outcome, "rejected");
        assert_eq!(rs[1].category.as_deref(), Some("INVALID_EMAIL"));
        let text = serde_json::to_string(&rs).unwrap();
        for leaked in ["secret@x.io", "a@x.io", "{\\\"id\\\":1}", "refused value"] {
            assert!(!text.contains(leaked), "{leaked} in {text}");
        }
    }

    #[tokio::test]
    async fn the_file_trail_appends_one_json_line_per_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let trail = AuditTrail::File {
            path: path.clone(),
            hasher: hasher(),
        };
        let rs = records(&hasher(), "hs", "t", &batch(), &Outcome::default());
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

    #[test]
    fn one_row_has_one_hash_across_record_kinds() {
        let h = hasher();
        let sink = records(&h, "hs", "t", &batch(), &Outcome::default());
        let unparsable = unparsable(
            &h,
            "hs",
            "t",
            Some(b"{\"id\":1}"),
            Position {
                partition: 0,
                offset: 1,
            },
            "MALFORMED_EVENT",
        );
        // Two-way conflict and inbound records hash the record key text.
        let conflict = h.hash(RecordKey::Text("1"));
        assert_eq!(sink[0].key_hash, conflict);
        assert_eq!(unparsable.key_hash, conflict);
        assert!(conflict.starts_with("hmac-sha256:"), "{conflict}");
        assert_ne!(sink[1].key_hash, conflict, "another key, another hash");
        // Text keys and string key columns agree too; composite keys keep their JSON.
        assert_eq!(
            h.hash(RecordKey::Kafka(br#"{"email":"ada@x.io"}"#)),
            h.hash(RecordKey::Text("ada@x.io"))
        );
        let composite = br#"{"a":1,"b":"x"}"#;
        assert_eq!(&*canonical_key(RecordKey::Kafka(composite)), composite);
        assert_eq!(&*canonical_key(RecordKey::Kafka(b"not json")), b"not json");
    }

    #[test]
    fn another_secret_gives_another_hash_and_no_plain_digest() {
        let key = RecordKey::Text("42");
        let a = KeyHasher::new(b"secret one").hash(key);
        assert_ne!(a, KeyHasher::new(b"secret two").hash(key));
        assert_eq!(
            a,
            KeyHasher::new(b"secret one").hash(RecordKey::Kafka(b"{\"id\":42}"))
        );
        assert!(!a.contains(&hex::encode(Sha256::digest(b"42"))));
        assert_eq!(
            format!("{:?}", KeyHasher::new(b"secret one")),
            "KeyHasher(..)"
        );
    }

    #[test]
    fn opening_a_trail_needs_its_key_variable() {
        let to = AuditTo::File(PathBuf::from("/nonexistent/audit.jsonl"));
        let none = AuditTrail::open(&to, None, "127.0.0.1:1", &Default::default());
        assert!(matches!(none, Err(AuditError::Key(_))));
        let unset = AuditTrail::open(
            &to,
            Some("DRIFTLESS_TEST_UNSET_AUDIT_KEY"),
            "",
            &Default::default(),
        );
        match unset {
            Err(AuditError::Key(m)) => assert!(m.contains("DRIFTLESS_TEST_UNSET_AUDIT_KEY"), "{m}"),
            _ => panic!("an unset variable is refused"),
        }
        // A missing secret stops the worker (fatal), it is not retried.
        let runner = crate::sink::runner::RunnerError::from(AuditError::Key("x".into()));
        assert_eq!(
            crate::error::Classify::class(&runner),
            crate::error::ErrorClass::Fatal
        );
        let off = AuditTrail::open(&AuditTo::Off, None, "", &Default::default()).unwrap();
        assert!(off.key_hash(RecordKey::Text("1")).is_none());
    }
}
