//! Dead letters of a two-way sink's inbound half: CRM records that cannot be written into
//! Postgres are set aside so the others go on.
//!
//! Owns [`DeadLetters`] (the sink's dead-letter topic, `{prefix}.dlq.{sink}`, written with the
//! same acknowledged publisher and header names as the one-way runner's dead letters) and the
//! shape of a set-aside record: [`Skipped`]. Invariants:
//! - a record is set aside when Postgres refused its values (SQLSTATE classes 22 and 23: a cast
//!   failure, a value out of range, a unique or NOT NULL violation...) or when a CRM value does
//!   not map back to its column; its ledger row is not written, so nothing claims both sides
//!   agree, and a later CRM edit of the record brings it again;
//! - a dead letter carries no value and no payload: headers name the reason (category), the
//!   SQLSTATE, the sink, the CRM id, the audit trail's keyed hash of the record key (when the
//!   trail is on) and the column or constraint when known (a replay of the dead-letter topic skips these empty records);
//! - every dead letter is acknowledged by Kafka, logged (without values), written to the audit
//!   trail (`kind = "inbound_rejected"`) and counted
//!   (`driftless_sync_inbound_dead_letters_total`) before the inbound batch counts as done.

use chrono::Utc;
use serde::Serialize;

use crate::error::{Classify, ErrorClass};
use crate::kafka::{AckedProducer, AckedPublisher, KafkaFailure};
use crate::sink::SinkError;
use crate::sync::store::Refusal;

/// Category of a record whose values Postgres refused (SQLSTATE class 22).
pub(crate) const DATA_EXCEPTION: &str = "POSTGRES_DATA_EXCEPTION";
/// Category of a record that violated a constraint (SQLSTATE class 23).
pub(crate) const INTEGRITY_VIOLATION: &str = "POSTGRES_INTEGRITY_VIOLATION";
/// Category of a record with a CRM value that does not map back to its column.
pub(crate) const UNMAPPABLE_VALUE: &str = "UNMAPPABLE_VALUE";

/// A CRM record set aside by the inbound half (no values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// The CRM record id, when known.
    pub(crate) crm_id: Option<String>,
    /// The record key (primary key as text) of the row it would have changed, if any.
    pub(crate) key: Option<String>,
    /// Why ([`DATA_EXCEPTION`], [`INTEGRITY_VIOLATION`], [`UNMAPPABLE_VALUE`]).
    pub(crate) category: &'static str,
    /// The SQLSTATE Postgres answered, if it was asked.
    pub(crate) sqlstate: Option<String>,
    /// The column, when known.
    pub(crate) column: Option<String>,
    /// The constraint or index, when Postgres names it.
    pub(crate) constraint: Option<String>,
}

impl Skipped {
    /// A record Postgres refused.
    pub(crate) fn refused(crm_id: Option<String>, key: Option<String>, r: Refusal) -> Self {
        Skipped {
            crm_id,
            key,
            category: if r.sqlstate.starts_with("23") {
                INTEGRITY_VIOLATION
            } else {
                DATA_EXCEPTION
            },
            sqlstate: Some(r.sqlstate),
            column: r.column,
            constraint: r.constraint,
        }
    }

    /// A record whose CRM value for `column` does not map back to the column.
    pub(crate) fn unmappable(crm_id: &str, key: Option<String>, column: &str) -> Self {
        Skipped {
            crm_id: Some(crm_id.to_string()),
            key,
            category: UNMAPPABLE_VALUE,
            sqlstate: None,
            column: Some(column.to_string()),
            constraint: None,
        }
    }

    /// The dead letter's message: what was refused, by names only.
    fn message(&self) -> String {
        let mut text = match &self.sqlstate {
            Some(code) => format!("Postgres refused the CRM record's change: SQLSTATE {code}"),
            None => "a CRM value does not map back to its column".to_string(),
        };
        if let Some(c) = &self.column {
            text.push_str(&format!("; column {c}"));
        }
        if let Some(c) = &self.constraint {
            text.push_str(&format!("; constraint {c}"));
        }
        text
    }
}

/// A set-aside record as recorded in the audit trail.
#[derive(Serialize)]
pub(crate) struct SkippedRecord<'a> {
    time: String,
    sink: &'a str,
    kind: &'static str,
    key_hash: Option<String>,
    crm_id: Option<&'a str>,
    category: &'static str,
    sqlstate: Option<&'a str>,
    column: Option<&'a str>,
    constraint: Option<&'a str>,
    /// What the audit trail is keyed by: the key hash, else the CRM id.
    #[serde(skip)]
    pub(crate) audit_key: String,
}

impl<'a> SkippedRecord<'a> {
    /// The audit record of `s`; `key_hash` is the audit hash of its record key, if any.
    pub(crate) fn new(sink: &'a str, s: &'a Skipped, key_hash: Option<String>) -> Self {
        SkippedRecord {
            time: Utc::now().to_rfc3339(),
            sink,
            kind: "inbound_rejected",
            audit_key: key_hash
                .clone()
                .or_else(|| s.crm_id.clone())
                .unwrap_or_default(),
            key_hash,
            crm_id: s.crm_id.as_deref(),
            category: s.category,
            sqlstate: s.sqlstate.as_deref(),
            column: s.column.as_deref(),
            constraint: s.constraint.as_deref(),
        }
    }
}

/// The dead-letter topic of a two-way sink's inbound half.
pub(crate) struct DeadLetters {
    topic: String,
    producer: AckedProducer,
}

impl DeadLetters {
    /// Dead letters to `topic` through `producer` (`acks=all`).
    pub(crate) fn new(topic: String, producer: AckedProducer) -> Self {
        DeadLetters { topic, producer }
    }

    /// Sends one dead letter (`key_hash`: the audit hash of its record key, if any); resolves
    /// once Kafka acknowledged it.
    pub(crate) async fn send(
        &self,
        sink: &str,
        s: &Skipped,
        key_hash: Option<&str>,
    ) -> Result<(), SinkError> {
        publish(&self.producer, &self.topic, sink, s, key_hash)
            .await
            .map_err(|e| match e.class() {
                ErrorClass::Fatal => SinkError::fatal(
                    format!("inbound dead-letter topic {}: {e}", self.topic),
                    e.hint().unwrap_or_default(),
                ),
                _ => SinkError::transient(
                    format!("inbound dead-letter topic {}: {e}", self.topic),
                    None,
                ),
            })
    }
}

/// The headers of a dead letter (the one-way runner's names where they mean the same).
fn headers(sink: &str, s: &Skipped, key_hash: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("driftless-source", "crm".to_string()),
        ("driftless-error-category", s.category.to_string()),
        ("driftless-error-message", s.message()),
        ("driftless-sink", sink.to_string()),
    ];
    let optional = [
        ("driftless-crm-id", s.crm_id.clone()),
        ("driftless-key-hash", key_hash.map(str::to_string)),
        ("driftless-sqlstate", s.sqlstate.clone()),
        ("driftless-column", s.column.clone()),
        ("driftless-constraint", s.constraint.clone()),
    ];
    h.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
    h
}

async fn publish<P: AckedPublisher>(
    publisher: &P,
    topic: &str,
    sink: &str,
    s: &Skipped,
    key_hash: Option<&str>,
) -> Result<(), KafkaFailure> {
    let headers = headers(sink, s, key_hash);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    publisher
        .send(topic, s.crm_id.as_deref().map(str::as_bytes), None, &refs)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: &str) -> Refusal {
        Refusal {
            sqlstate: code.into(),
            column: None,
            constraint: Some("contacts_email_key".into()),
        }
    }

    #[test]
    fn refusals_are_categorised_by_sqlstate_class() {
        let s = Skipped::refused(Some("901".into()), None, refusal("23505"));
        assert_eq!(s.category, INTEGRITY_VIOLATION);
        let s = Skipped::refused(Some("901".into()), Some("7".into()), refusal("22P02"));
        assert_eq!(s.category, DATA_EXCEPTION);
    }

    #[test]
    fn dead_letters_name_the_refusal_and_carry_no_key_or_value() {
        let mut s = Skipped::refused(Some("901".into()), Some("7".into()), refusal("22P02"));
        s.column = Some("revenue".into());
        let h: std::collections::BTreeMap<_, _> = headers("hs", &s, Some("hmac-sha256:ab"))
            .into_iter()
            .collect();
        assert_eq!(h["driftless-sqlstate"], "22P02");
        assert_eq!(h["driftless-error-category"], DATA_EXCEPTION);
        assert_eq!(h["driftless-crm-id"], "901");
        assert_eq!(h["driftless-column"], "revenue");
        assert_eq!(h["driftless-key-hash"], "hmac-sha256:ab");
        assert!(
            h["driftless-error-message"].contains("22P02")
                && h["driftless-error-message"].contains("revenue")
        );
        let audit =
            serde_json::to_value(SkippedRecord::new("hs", &s, Some("hmac-sha256:ab".into())))
                .unwrap();
        assert_eq!(audit["kind"], "inbound_rejected");
        assert_eq!(audit["sqlstate"], "22P02");
        assert!(audit.get("audit_key").is_none());
        let unmappable = Skipped::unmappable("902", None, "lifecycle");
        let h: std::collections::BTreeMap<_, _> =
            headers("hs", &unmappable, None).into_iter().collect();
        assert_eq!(h["driftless-error-category"], UNMAPPABLE_VALUE);
        assert!(!h.contains_key("driftless-sqlstate") && !h.contains_key("driftless-key-hash"));
    }
}
