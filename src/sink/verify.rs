//! Drift between a table, its sink's ledger and the destination, and the writes that repair it.
//! Pure: the I/O shell (`driftless verify`) reads the three sides and applies the repairs
//! through the sink's normal client.
//!
//! Invariants:
//! - a row is **missing** when no live record is linked to its key (never written, or deleted
//!   in the destination behind the sink's back), and **differing** when its linked record holds
//!   another value for a mapped property; both are repaired by an upsert of every mapped
//!   property by the row's identity;
//! - a record is **extra** when the ledger links it to a key whose row is gone (and the sink
//!   archives deletes), or when it is not linked but carries the identity of a row linked to
//!   another record (an unlinked duplicate); only the first kind is removed by a repair, the
//!   second is reported: a person may have created it;
//! - records the ledger does not know and no row claims are not the sink's: never counted;
//! - reports name keys by hash and properties by name, never values.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::sinks::OnDelete;
use crate::sink::audit::key_hash;
use crate::sink::ledger::{KeyDigest, Link, identity_digest, key_digest};

/// A source row as the sink would write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRow {
    /// Kafka key bytes (the canonical primary key).
    pub key: Vec<u8>,
    /// The `id_property` value.
    pub identity: String,
    /// Mapped property → value as the destination stores it.
    pub properties: BTreeMap<String, String>,
}

/// A destination record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Destination id.
    pub id: String,
    /// The `id_property` value, if it has one.
    pub identity: Option<String>,
    /// Property → value (the mapped properties only).
    pub properties: BTreeMap<String, String>,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A row with no live linked record.
    Missing {
        /// Key hash.
        key: String,
    },
    /// A linked record whose mapped properties differ from the row.
    Differing {
        /// Key hash.
        key: String,
        /// The record.
        record: String,
        /// Property names that differ.
        fields: Vec<String>,
    },
    /// A record linked to a deleted row.
    Orphan {
        /// The record.
        record: String,
        /// Key hash of the deleted row.
        key: String,
    },
    /// A record no key links to that carries the identity of a row linked elsewhere.
    Duplicate {
        /// The record.
        record: String,
        /// Key hash of the row whose identity it carries.
        key: String,
    },
}

/// A write that removes a finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Upsert every mapped property of this row by its identity.
    Upsert(SourceRow),
    /// Delete (archive) this record.
    Delete {
        /// The record.
        record: String,
        /// Key digest of the deleted row it was linked to.
        key: KeyDigest,
    },
}

/// What `driftless verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Rows compared.
    pub rows: usize,
    /// Findings, rows first (in row order), then records (by id).
    pub findings: Vec<Finding>,
    /// The repairs of the findings that can be repaired.
    pub repairs: Vec<Repair>,
}

impl Report {
    /// Counts of missing, extra (orphans and duplicates) and differing records.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for f in &self.findings {
            match f {
                Finding::Missing { .. } => counts.0 += 1,
                Finding::Orphan { .. } | Finding::Duplicate { .. } => counts.1 += 1,
                Finding::Differing { .. } => counts.2 += 1,
            }
        }
        counts
    }

    /// True when nothing drifted.
    pub fn clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Compares `rows` (the table, in one snapshot) with the ledger's `links` and the destination's
/// `records` (by id). Identities compare without regard to case, as the CRMs' unique checks do.
pub fn compare(
    rows: &[SourceRow],
    links: &HashMap<KeyDigest, Link>,
    records: &HashMap<String, Record>,
    on_delete: OnDelete,
) -> Report {
    let mut report = Report {
        rows: rows.len(),
        ..Report::default()
    };
    let present: HashSet<KeyDigest> = rows.iter().map(|r| key_digest(&r.key)).collect();
    let mut claimed: HashSet<&str> = HashSet::new();
    let mut identities: HashMap<String, &SourceRow> = HashMap::new();
    for row in rows {
        let digest = key_digest(&row.key);
        identities.insert(identity_digest(&row.identity), row);
        let linked = links
            .get(&digest)
            .filter(|l| !l.tombstone)
            .and_then(|l| l.record_id.as_deref())
            .and_then(|id| records.get(id));
        let Some(record) = linked else {
            report.findings.push(Finding::Missing {
                key: key_hash(&row.key),
            });
            report.repairs.push(Repair::Upsert(row.clone()));
            continue;
        };
        claimed.insert(&record.id);
        let fields: Vec<String> = row
            .properties
            .iter()
            .filter(|(name, value)| record.properties.get(*name) != Some(*value))
            .map(|(name, _)| name.clone())
            .collect();
        if !fields.is_empty() {
            report.findings.push(Finding::Differing {
                key: key_hash(&row.key),
                record: record.id.clone(),
                fields,
            });
            report.repairs.push(Repair::Upsert(row.clone()));
        }
    }
    let linked_to: HashMap<&str, KeyDigest> = links
        .iter()
        .filter_map(|(k, l)| Some((l.record_id.as_deref()?, *k)))
        .collect();
    let mut ids: Vec<&String> = records.keys().collect();
    ids.sort();
    for id in ids {
        let record = &records[id];
        if claimed.contains(id.as_str()) {
            continue;
        }
        match linked_to.get(id.as_str()) {
            Some(key) if !present.contains(key) => {
                if on_delete == OnDelete::Archive {
                    report.findings.push(Finding::Orphan {
                        record: id.clone(),
                        key: format!("sha256:{}", hex::encode(key)),
                    });
                    report.repairs.push(Repair::Delete {
                        record: id.clone(),
                        key: *key,
                    });
                }
            }
            Some(_) => {}
            None => {
                let row = record
                    .identity
                    .as_deref()
                    .and_then(|i| identities.get(&identity_digest(i)));
                if let Some(row) = row {
                    report.findings.push(Finding::Duplicate {
                        record: id.clone(),
                        key: key_hash(&row.key),
                    });
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::ledger::SourcePosition;

    fn row(key: &str, email: &str, name: &str) -> SourceRow {
        SourceRow {
            key: key.as_bytes().to_vec(),
            identity: email.into(),
            properties: [("email", email), ("name", name)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn record(id: &str, email: &str, name: &str) -> (String, Record) {
        let properties = row("x", email, name).properties;
        (
            id.to_string(),
            Record {
                id: id.into(),
                identity: Some(email.into()),
                properties,
            },
        )
    }

    fn link(key: &str, record: &str, tombstone: bool) -> (KeyDigest, Link) {
        (
            key_digest(key.as_bytes()),
            Link {
                record_id: Some(record.into()),
                identity: None,
                fields: BTreeMap::new(),
                position: SourcePosition::default(),
                tombstone,
            },
        )
    }

    #[test]
    fn a_clean_sink_reports_nothing() {
        let rows = [row("1", "a@x", "Ada")];
        let links = HashMap::from([link("1", "R1", false)]);
        // A record nobody links to and no row claims is not the sink's.
        let records = HashMap::from([record("R1", "a@x", "Ada"), record("R7", "z@x", "Zed")]);
        let report = compare(&rows, &links, &records, OnDelete::Archive);
        assert!(report.clean(), "{report:?}");
        assert_eq!(report.rows, 1);
    }

    #[test]
    fn an_edited_and_a_deleted_record_are_found_and_repaired_by_upserts() {
        let rows = [row("1", "a@x", "Ada"), row("2", "b@x", "Bob")];
        let links = HashMap::from([link("1", "R1", false), link("2", "R2", false)]);
        let records = HashMap::from([record("R1", "a@x", "Eve")]);
        let report = compare(&rows, &links, &records, OnDelete::Archive);
        assert_eq!(report.counts(), (1, 0, 1));
        assert_eq!(
            report.findings[0],
            Finding::Differing {
                key: key_hash(b"1"),
                record: "R1".into(),
                fields: vec!["name".into()],
            }
        );
        assert_eq!(
            report.repairs,
            vec![
                Repair::Upsert(rows[0].clone()),
                Repair::Upsert(rows[1].clone())
            ]
        );
        let text = format!("{report:?}");
        assert!(!text.contains("Eve"), "findings carry no values");
    }

    #[test]
    fn a_record_of_a_deleted_row_is_extra_unless_deletes_are_ignored() {
        let links = HashMap::from([link("9", "R9", true)]);
        let records = HashMap::from([record("R9", "gone@x", "Gone")]);
        let report = compare(&[], &links, &records, OnDelete::Archive);
        assert_eq!(report.counts(), (0, 1, 0));
        assert_eq!(
            report.repairs,
            vec![Repair::Delete {
                record: "R9".into(),
                key: key_digest(b"9")
            }]
        );
        assert!(compare(&[], &links, &records, OnDelete::Ignore).clean());
    }

    #[test]
    fn an_unlinked_record_with_a_rows_identity_is_a_reported_duplicate() {
        let rows = [row("1", "a@x", "Ada")];
        let links = HashMap::from([link("1", "R1", false)]);
        let records = HashMap::from([record("R1", "a@x", "Ada"), record("R2", "A@X", "Ada")]);
        let report = compare(&rows, &links, &records, OnDelete::Archive);
        assert_eq!(
            report.findings,
            vec![Finding::Duplicate {
                record: "R2".into(),
                key: key_hash(b"1")
            }]
        );
        assert!(
            report.repairs.is_empty(),
            "a duplicate is reported, not deleted"
        );
    }
}
