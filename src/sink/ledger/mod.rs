//! The sink ledger: what a CRM sink last wrote for every source primary key, and the pure plan
//! that turns a batch into writes against it.
//!
//! Per (sink, primary key) the ledger keeps the destination record the key is linked to, the
//! hash of its `id_property` value (its identity), a hash per mapped property of what the
//! destination last accepted, the source position (commit LSN and ordinal) of the change
//! applied last, and a tombstone flag. It never holds a row value: only hashes and record ids.
//! The durable copy lives in Postgres ([`store`]); this module is pure.
//!
//! Invariants of [`plan`]:
//! - **never back in time**: an entry whose source position is not newer than its key's ledger
//!   position is skipped (it was applied already, or something newer was);
//! - **deletes by identity**: a delete removes exactly the record linked to its key, whatever
//!   the replica identity sent; a key with no live link deletes nothing; a record that another
//!   live key links to after the batch (the `id_property` value moved to another row) stays, and
//!   only the old link goes ([`Plan::deletes_to_run`] decides after the upserts answered);
//! - **identity is one-to-one**: when two live keys would hold one identity after the batch,
//!   the key already linked to it keeps it (else the first in batch order) and every other one
//!   is rejected with both keys' hashes, never merged;
//! - **only changed fields**: a linked key whose identity holds sends only the properties whose
//!   hash differs from the ledger's; when none differs nothing is sent; a new identity (or an
//!   unlinked key) sends every property;
//! - the new ledger rows ([`Plan::links`]) are computed from what the destination accepted:
//!   rejected entries keep their old row.

pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::sinks::OnDelete;
use crate::event::{ChangeEvent, Op, Row};
use crate::lsn::Lsn;
use crate::sink::audit::key_hash;
use crate::sink::batch::Batch;
use crate::sink::mapping::MappingError;
use crate::sink::{Outcome, Rejected};

/// A mapping refusal of entry `index` (poison, category `MAPPING`).
pub(crate) fn rejected(index: usize, message: String) -> Rejected {
    Rejected {
        index,
        category: "MAPPING".into(),
        message,
    }
}

/// SHA-256 of a Kafka key (the canonical primary key): the ledger's lookup key.
pub type KeyDigest = [u8; 32];

/// The ledger's lookup key of a Kafka key.
pub fn key_digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// A short hash (128 bits, hex) of a mapped property value.
pub fn value_digest<V: Serialize>(value: &V) -> String {
    let bytes = serde_json::to_vec(value).expect("mapped values serialize");
    hex::encode(&Sha256::digest(&bytes)[..16])
}

/// The hash of an `id_property` value; CRMs compare unique values without regard to case.
pub fn identity_digest(identity: &str) -> String {
    value_digest(&identity.trim().to_lowercase())
}

/// Where a change stands in the source: its transaction's commit LSN and its ordinal in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourcePosition {
    /// Commit LSN of the change's transaction (snapshot rows: the consistent point).
    pub commit_lsn: Lsn,
    /// Position of the change within its transaction.
    pub ordinal: u64,
}

impl SourcePosition {
    /// The position of an event, from its id `"{commit_lsn}:{ordinal}"` (None when the id has
    /// another form: such an event is never taken for stale).
    pub fn of(event: &ChangeEvent) -> Option<SourcePosition> {
        let (lsn, ordinal) = event.id.rsplit_once(':')?;
        Some(SourcePosition {
            commit_lsn: lsn.parse().ok()?,
            ordinal: ordinal.parse().ok()?,
        })
    }
}

/// A key's ledger row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// The destination record the key is linked to (None: not linked).
    pub record_id: Option<String>,
    /// [`identity_digest`] of the `id_property` value last written.
    pub identity: Option<String>,
    /// Property → [`value_digest`] of the value the destination last accepted.
    pub fields: BTreeMap<String, String>,
    /// Source position of the change applied last.
    pub position: SourcePosition,
    /// The row was deleted at the source.
    pub tombstone: bool,
}

impl Link {
    fn live(&self) -> bool {
        !self.tombstone
    }
}

/// The ledger rows a batch needs: its own keys' and those of every live key that shares an
/// identity or a record with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Rows by key digest.
    pub links: HashMap<KeyDigest, Link>,
}

/// What a batch entry asks of a CRM once mapped (before the ledger is consulted).
#[derive(Clone, Debug, PartialEq)]
pub enum Change<V> {
    /// Create or update the record of this identity with these properties.
    Upsert {
        /// The `id_property` value.
        identity: String,
        /// Property → value, as the destination takes them.
        properties: BTreeMap<String, V>,
    },
    /// The row was deleted.
    Delete,
    /// The mapping refused the entry (poison).
    Refused(String),
    /// Nothing to do (truncates, logical messages).
    Nothing,
}

/// Maps every entry of `batch`: `map` turns an upsert's row image into its identity and
/// properties.
pub(crate) fn changes<V>(
    batch: &Batch<ChangeEvent>,
    mut map: impl FnMut(&Row) -> Result<(String, BTreeMap<String, V>), MappingError>,
) -> Vec<Change<V>> {
    batch
        .entries
        .iter()
        .map(|entry| match entry.item.op {
            Op::Create | Op::Update | Op::Read => match entry.item.after.as_ref() {
                None => Change::Refused("event has no row image".into()),
                Some(row) => match map(row) {
                    Ok((identity, properties)) => Change::Upsert {
                        identity,
                        properties,
                    },
                    Err(e) => Change::Refused(e.to_string()),
                },
            },
            Op::Delete => Change::Delete,
            Op::Truncate | Op::Message => Change::Nothing,
        })
        .collect()
}

/// The identity digests of a batch's upserts (what the ledger read must also cover).
pub fn identities<V>(changes: &[Change<V>]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Upsert { identity, .. } => Some(identity_digest(identity)),
            _ => None,
        })
        .collect()
}

/// One write the CRM is asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Upsert<V> {
    /// Entry index.
    pub index: usize,
    /// The `id_property` value to upsert by.
    pub identity: String,
    /// The properties to send (only the changed ones for a linked key).
    pub properties: BTreeMap<String, V>,
}

/// Why an entry needs no request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not newer than what the ledger holds for its key.
    Stale,
    /// No mapped property changed.
    Unchanged,
    /// A delete of a key with no live link, or one the sink ignores (`on_delete = "ignore"`).
    NothingToDelete,
    /// A truncate or a logical message.
    Nothing,
}

/// What a batch asks of the CRM after the ledger was consulted.
#[derive(Debug)]
pub struct Plan<V> {
    /// Writes, in entry order.
    pub upserts: Vec<Upsert<V>>,
    /// Delete candidates: entry index and the linked record (see [`Plan::deletes_to_run`]).
    pub deletes: Vec<(usize, String)>,
    /// Entries refused (mapping, identity conflicts).
    pub rejected: Vec<Rejected>,
    /// Entries that need no request.
    pub skipped: Vec<(usize, Skip)>,
    /// Per entry: its key digest, its ledger row before the batch, the change's position and
    /// the hashes of every mapped property (upserts).
    entries: Vec<Planned>,
    /// Live keys outside the batch (or left unchanged by it), by linked record.
    kept_records: HashMap<String, KeyDigest>,
    /// Entries planned as upserts (kept when the caller takes `upserts`).
    upserted: HashSet<usize>,
}

#[derive(Debug, Default)]
struct Planned {
    key: KeyDigest,
    before: Option<Link>,
    position: SourcePosition,
    identity: Option<String>,
    hashes: BTreeMap<String, String>,
    /// Every property was sent (new identity or no link): the hashes replace the old ones.
    full: bool,
}

/// Plans `batch` (mapped into `changes`) against the ledger `view`.
pub fn plan<V: Serialize>(
    batch: &Batch<ChangeEvent>,
    changes: Vec<Change<V>>,
    view: &View,
    on_delete: OnDelete,
) -> Plan<V> {
    let mut plan = Plan {
        upserts: Vec::new(),
        deletes: Vec::new(),
        rejected: Vec::new(),
        skipped: Vec::new(),
        entries: Vec::with_capacity(changes.len()),
        kept_records: HashMap::new(),
        upserted: HashSet::new(),
    };
    // Which key holds each identity after the batch (decided before any entry is planned).
    let mut changing: HashSet<KeyDigest> = HashSet::new();
    for (entry, change) in batch.entries.iter().zip(&changes) {
        let key = key_digest(&entry.key);
        let before = view.links.get(&key);
        let position = SourcePosition::of(&entry.item);
        let stale = matches!((before, position), (Some(l), Some(p)) if p <= l.position);
        if !stale && matches!(change, Change::Upsert { .. } | Change::Delete) {
            changing.insert(key);
        }
    }
    let owners = identity_owners(batch, &changes, view, &changing);
    for (link_key, link) in &view.links {
        if link.live()
            && !changing.contains(link_key)
            && let Some(record) = &link.record_id
        {
            plan.kept_records.insert(record.clone(), *link_key);
        }
    }
    for (index, (entry, change)) in batch.entries.iter().zip(changes).enumerate() {
        let key = key_digest(&entry.key);
        let before = view.links.get(&key).cloned();
        let position = SourcePosition::of(&entry.item).unwrap_or_default();
        let mut planned = Planned {
            key,
            position,
            ..Planned::default()
        };
        if !changing.contains(&key) && !matches!(change, Change::Refused(_) | Change::Nothing) {
            plan.skipped.push((index, Skip::Stale));
            planned.before = before;
            plan.entries.push(planned);
            continue;
        }
        match change {
            Change::Nothing => plan.skipped.push((index, Skip::Nothing)),
            Change::Refused(message) => plan.rejected.push(rejected(index, message)),
            Change::Upsert {
                identity,
                properties,
            } => {
                let digest = identity_digest(&identity);
                if let Some(owner) = owners.get(&digest).filter(|o| **o != key) {
                    plan.rejected.push(Rejected {
                        index,
                        category: "IDENTITY_CONFLICT".into(),
                        message: format!(
                            "key {} has the id_property value of live key sha256:{}: one record \
                             per key, so it is not merged",
                            key_hash(&entry.key),
                            hex::encode(owner)
                        ),
                    });
                } else {
                    let hashes: BTreeMap<String, String> = properties
                        .iter()
                        .map(|(name, v)| (name.clone(), value_digest(v)))
                        .collect();
                    let linked = before.as_ref().filter(|l| {
                        l.live() && l.record_id.is_some() && l.identity.as_ref() == Some(&digest)
                    });
                    let full = linked.is_none();
                    let properties: BTreeMap<String, V> = match linked {
                        None => properties,
                        Some(l) => properties
                            .into_iter()
                            .filter(|(name, _)| l.fields.get(name) != hashes.get(name))
                            .collect(),
                    };
                    if properties.is_empty() && !full {
                        plan.skipped.push((index, Skip::Unchanged));
                    } else {
                        plan.upserted.insert(index);
                        plan.upserts.push(Upsert {
                            index,
                            identity,
                            properties,
                        });
                    }
                    planned.identity = Some(digest);
                    planned.hashes = hashes;
                    planned.full = full;
                }
            }
            Change::Delete => match before.as_ref().filter(|l| l.live()) {
                Some(Link {
                    record_id: Some(record),
                    ..
                }) if on_delete == OnDelete::Archive => plan.deletes.push((index, record.clone())),
                _ => plan.skipped.push((index, Skip::NothingToDelete)),
            },
        }
        planned.before = before;
        plan.entries.push(planned);
    }
    plan
}

/// Per identity digest, the key that holds it after the batch: the live key already linked
/// to it (and not changing it), else the first key of the batch that asks for it.
fn identity_owners<V>(
    batch: &Batch<ChangeEvent>,
    changes: &[Change<V>],
    view: &View,
    changing: &HashSet<KeyDigest>,
) -> HashMap<String, KeyDigest> {
    let mut owners: HashMap<String, KeyDigest> = HashMap::new();
    let mut established: HashSet<String> = HashSet::new();
    let asked: HashMap<KeyDigest, String> = batch
        .entries
        .iter()
        .zip(changes)
        .filter_map(|(entry, change)| match change {
            Change::Upsert { identity, .. } => {
                Some((key_digest(&entry.key), identity_digest(identity)))
            }
            _ => None,
        })
        .filter(|(key, _)| changing.contains(key))
        .collect();
    // Keys linked to an identity keep it unless the batch moves or deletes them.
    for (key, link) in &view.links {
        let Some(identity) = link.identity.as_ref().filter(|_| link.live()) else {
            continue;
        };
        let keeps = match asked.get(key) {
            Some(new) => new == identity,
            None => !changing.contains(key),
        };
        if keeps && established.insert(identity.clone()) {
            owners.insert(identity.clone(), *key);
        }
    }
    for entry in &batch.entries {
        let key = key_digest(&entry.key);
        if let Some(identity) = asked.get(&key) {
            owners.entry(identity.clone()).or_insert(key);
        }
    }
    owners
}

impl<V> Plan<V> {
    /// The delete candidates to run once the upserts answered (`out.destination_ids`): a record
    /// that a live key still links to, or that an upsert of this batch just landed on, stays.
    pub fn deletes_to_run(&self, out: &Outcome) -> Vec<(usize, String)> {
        let claimed: HashSet<&str> = out
            .destination_ids
            .iter()
            .filter(|(index, _)| self.upserted.contains(index))
            .map(|(_, id)| id.as_str())
            .chain(self.kept_records.keys().map(String::as_str))
            .collect();
        self.deletes
            .iter()
            .filter(|(_, record)| !claimed.contains(record.as_str()))
            .cloned()
            .collect()
    }

    /// The record ids of entries that needed no request but are linked (for the audit trail).
    pub fn linked_skips(&self) -> Vec<(usize, String)> {
        self.skipped
            .iter()
            .filter(|(_, why)| *why == Skip::Unchanged)
            .filter_map(|(index, _)| {
                let record = self.entries[*index].before.as_ref()?.record_id.clone()?;
                Some((*index, record))
            })
            .collect()
    }

    /// The ledger rows to write once the destination accepted `out`: every entry that was not
    /// rejected or stale.
    pub fn links(&self, out: &Outcome) -> Vec<(KeyDigest, Link)> {
        let rejected: HashSet<usize> = (out.rejected.iter().chain(&self.rejected))
            .map(|r| r.index)
            .collect();
        let ids: HashMap<usize, &str> = out
            .destination_ids
            .iter()
            .map(|(i, id)| (*i, id.as_str()))
            .collect();
        let deleted: HashSet<usize> = self.deletes.iter().map(|(i, _)| *i).collect();
        let unwritten: HashSet<usize> = self
            .skipped
            .iter()
            .filter(|(_, s)| matches!(s, Skip::Stale | Skip::Nothing))
            .map(|(i, _)| *i)
            .collect();
        let mut rows = Vec::new();
        for (index, planned) in self.entries.iter().enumerate() {
            if rejected.contains(&index) || unwritten.contains(&index) {
                continue;
            }
            let before = planned.before.clone().unwrap_or_default();
            let link = if let Some(identity) = &planned.identity {
                let mut fields = if planned.full {
                    BTreeMap::new()
                } else {
                    before.fields.clone()
                };
                fields.extend(planned.hashes.clone());
                Link {
                    record_id: ids
                        .get(&index)
                        .map(|id| id.to_string())
                        .or(before.record_id.filter(|_| !planned.full)),
                    identity: Some(identity.clone()),
                    fields,
                    position: planned.position,
                    tombstone: false,
                }
            } else {
                // A delete: the link goes when the record was deleted or another key holds
                // it; a record the sink leaves (`on_delete = "ignore"`) stays noted.
                let keeps = !deleted.contains(&index) && before.live();
                Link {
                    record_id: before.record_id.filter(|_| keeps),
                    identity: None,
                    fields: BTreeMap::new(),
                    position: planned.position,
                    tombstone: true,
                }
            };
            rows.push((planned.key, link));
        }
        rows
    }

    /// Entries skipped as stale.
    pub fn stale(&self) -> usize {
        self.skipped
            .iter()
            .filter(|(_, s)| *s == Skip::Stale)
            .count()
    }
}

#[cfg(test)]
mod tests;
