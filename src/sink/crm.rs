//! The write flow every CRM destination shares: ledger read → plan → upserts → deletes →
//! ledger write.
//!
//! A CRM destination implements [`CrmWrites`] (its mapping and its two requests); [`write`]
//! runs one batch through the [`ledger`](crate::sink::ledger) plan against a view of the
//! ledger, and [`Ledgered`] is the [`Sink`] that reads that view from the sink's ledger and
//! writes the new rows back. Invariants:
//! - upserts run before deletes, and a delete runs only on a record no live key holds once the
//!   upserts answered (a delete and a re-insert of one identity in a batch keep the record);
//! - the ledger rows are written after the destination accepted the batch and before the
//!   runner stores its offsets (the runner calls [`Sink::apply`] and stores after it returns);
//!   a transient failure anywhere leaves the ledger as it was, so the retried batch is planned
//!   against the same view;
//! - entries skipped as stale are counted in `driftless_sink_stale_skipped_total`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use serde::Serialize;

use crate::config::sinks::OnDelete;
use crate::event::{ChangeEvent, Op, Row};
use crate::sink::batch::Batch;
use crate::sink::ledger::store::Ledger;
use crate::sink::ledger::{
    self, Change, KeyDigest, Link, Plan, Upsert, View, identities, identity_digest, key_digest,
    value_digest,
};
use crate::sink::mapping::{MappingError, value_string};
use crate::sink::verify::{self, Record, Repair, Report, SourceRow};
use crate::sink::{Outcome, Sink, SinkError};

/// What a CRM destination brings to the shared flow.
pub(crate) trait CrmWrites: Send {
    /// A property value as the CRM takes it.
    type Value: Serialize + Send + Sync;

    /// Readies what [`map`](Self::map) needs (e.g. the destination schema); called before a
    /// batch with row images is mapped.
    fn prepare(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// A row image's identity (`id_property` value) and properties.
    fn map(&self, row: &Row) -> Result<(String, BTreeMap<String, Self::Value>), MappingError>;

    /// Creates or updates records by identity; reports the record id of every applied entry
    /// in `out.destination_ids` and the refused ones in `out.rejected`.
    fn upsert(
        &mut self,
        upserts: Vec<Upsert<Self::Value>>,
        out: &mut Outcome,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Deletes (archives) these records; a record already gone is success.
    fn delete(
        &mut self,
        records: Vec<(usize, String)>,
        out: &mut Outcome,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// What a delete does.
    fn on_delete(&self) -> OnDelete;

    /// Every live record with its mapped properties as text, page by page through the
    /// client's rate limiter (`driftless verify`).
    fn list(&mut self) -> impl Future<Output = Result<Vec<Record>, SinkError>> + Send;
}

/// Writes `batch` (mapped into `changes` by [`ledger::changes`] with [`CrmWrites::map`]) to
/// `crm` as planned against `view`; returns what the CRM accepted and the plan (whose
/// [`Plan::links`] are the ledger rows to write).
pub async fn write<C: CrmWrites>(
    crm: &mut C,
    batch: &Batch<ChangeEvent>,
    changes: Vec<Change<C::Value>>,
    view: &View,
) -> Result<(Outcome, Plan<C::Value>), SinkError> {
    let mut plan = ledger::plan(batch, changes, view, crm.on_delete());
    let mut out = Outcome {
        rejected: plan.rejected.clone(),
        destination_ids: plan.linked_skips(),
    };
    let upserts = std::mem::take(&mut plan.upserts);
    if !upserts.is_empty() {
        crm.upsert(upserts, &mut out).await?;
    }
    let deletes = plan.deletes_to_run(&out);
    if !deletes.is_empty() {
        crm.delete(deletes, &mut out).await?;
    }
    out.sort();
    Ok((out, plan))
}

/// Readies `crm` to map `batch` when it holds row images (creates, updates, snapshot reads).
async fn prepare<C: CrmWrites>(crm: &mut C, batch: &Batch<ChangeEvent>) -> Result<(), SinkError> {
    let rows = batch
        .entries
        .iter()
        .any(|e| matches!(e.item.op, Op::Create | Op::Update | Op::Read));
    if rows {
        crm.prepare().await?;
    }
    Ok(())
}

/// Prepares, maps and writes `batch` against `view`, for a caller that keeps links in a ledger
/// of its own (two-way sync) and writes no sink-ledger rows.
pub async fn write_with_view<C: CrmWrites>(
    crm: &mut C,
    batch: &Batch<ChangeEvent>,
    view: &View,
) -> Result<Outcome, SinkError> {
    prepare(crm, batch).await?;
    let changes = ledger::changes(batch, |row| crm.map(row));
    Ok(write(crm, batch, changes, view).await?.0)
}

/// Where a [`Ledgered`] sink keeps its ledger.
enum Store {
    /// The sink ledger in Postgres.
    Postgres(Box<Ledger>),
    /// In memory, for the destinations' unit tests.
    #[cfg(test)]
    Memory(View),
}

/// A CRM destination behind its ledger: the [`Sink`] the runner drives.
pub struct Ledgered<C> {
    crm: C,
    store: Store,
    sink: String,
}

impl<C> Ledgered<C> {
    /// `crm`, with the ledger of sink `sink` in Postgres.
    pub fn new(crm: C, ledger: Ledger, sink: &str) -> Self {
        Ledgered {
            crm,
            store: Store::Postgres(Box::new(ledger)),
            sink: sink.to_string(),
        }
    }

    /// `crm`, with a ledger in memory (for tests).
    #[cfg(test)]
    pub fn in_memory(crm: C) -> Self {
        Ledgered {
            crm,
            store: Store::Memory(View::default()),
            sink: "test".into(),
        }
    }

    /// Forgets every ledger row of the sink: the next batches are planned as if nothing had
    /// been written (links, positions and hashes are learnt again from the upserts).
    pub async fn forget_ledger(&mut self) -> Result<(), SinkError> {
        match &mut self.store {
            Store::Postgres(l) => l.forget().await,
            #[cfg(test)]
            Store::Memory(v) => {
                v.links.clear();
                Ok(())
            }
        }
    }

    /// The destination, without its ledger.
    pub fn into_crm(self) -> C {
        self.crm
    }
}

impl<C: CrmWrites> Sink for Ledgered<C> {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        prepare(&mut self.crm, batch).await?;
        let keys: Vec<_> = batch.entries.iter().map(|e| key_digest(&e.key)).collect();
        let changes = ledger::changes(batch, |row| self.crm.map(row));
        let identities = identities(&changes);
        let view = match &mut self.store {
            Store::Postgres(l) => l.read(&keys, &identities).await?,
            #[cfg(test)]
            Store::Memory(v) => v.clone(),
        };
        let (out, plan) = write(&mut self.crm, batch, changes, &view).await?;
        let rows = plan.links(&out);
        match &mut self.store {
            Store::Postgres(l) => l.write(&rows).await?,
            #[cfg(test)]
            Store::Memory(v) => v.links.extend(rows),
        }
        let stale = plan.stale();
        if stale > 0 {
            metrics::counter!("driftless_sink_stale_skipped_total", "sink" => self.sink.clone())
                .increment(stale as u64);
            tracing::info!(sink = %self.sink, stale, "changes older than the ledger skipped");
        }
        Ok(out)
    }
}

impl<C: CrmWrites> Ledgered<C> {
    /// Compares the table's `rows` (Kafka key, row image; one snapshot) with the ledger and
    /// the destination; with `repair`, applies the report's repairs through the client and
    /// relinks the ledger. Returns the report and what the destination did with the repairs
    /// (entry indexes are indexes into `report.repairs`; empty without `repair`).
    pub async fn verify(
        &mut self,
        rows: Vec<(Vec<u8>, Row)>,
        repair: bool,
    ) -> Result<(Report, Outcome), SinkError> {
        self.crm.prepare().await?;
        let mut source = Vec::with_capacity(rows.len());
        let mut typed = HashMap::with_capacity(rows.len());
        for (key, row) in rows {
            // A row the mapping refuses is the dead-letter topic's business, not drift.
            let Ok((identity, properties)) = self.crm.map(&row) else {
                continue;
            };
            source.push(SourceRow {
                key: key.clone(),
                identity: identity.clone(),
                properties: properties
                    .iter()
                    .map(|(name, v)| (name.clone(), as_text(v)))
                    .collect(),
            });
            typed.insert(key, (identity, properties));
        }
        let links = match &mut self.store {
            Store::Postgres(l) => l.all().await?.links,
            #[cfg(test)]
            Store::Memory(v) => v.links.clone(),
        };
        let records: HashMap<String, Record> = self
            .crm
            .list()
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let report = verify::compare(&source, &links, &records, self.crm.on_delete());
        if !repair || report.repairs.is_empty() {
            return Ok((report, Outcome::default()));
        }
        let out = self.repair(&report, typed, &links).await?;
        Ok((report, out))
    }

    /// Applies `report`'s repairs; returns what the destination did with them.
    async fn repair(
        &mut self,
        report: &Report,
        mut typed: Mapped<C::Value>,
        links: &HashMap<KeyDigest, Link>,
    ) -> Result<Outcome, SinkError> {
        let position = |key: &KeyDigest| links.get(key).map(|l| l.position).unwrap_or_default();
        // Per repair: the request, and the ledger row to write once the destination accepted it.
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        let mut rows: Vec<(usize, KeyDigest, Link)> = Vec::new();
        for (index, r) in report.repairs.iter().enumerate() {
            match r {
                Repair::Upsert(row) => {
                    let Some((identity, properties)) = typed.remove(&row.key) else {
                        continue;
                    };
                    let key = key_digest(&row.key);
                    let link = Link {
                        record_id: None,
                        identity: Some(identity_digest(&identity)),
                        fields: properties
                            .iter()
                            .map(|(name, v)| (name.clone(), value_digest(v)))
                            .collect(),
                        position: position(&key),
                        tombstone: false,
                    };
                    rows.push((index, key, link));
                    upserts.push(Upsert {
                        index,
                        identity,
                        properties,
                    });
                }
                Repair::Delete { record, key } => {
                    let link = Link {
                        position: position(key),
                        tombstone: true,
                        ..Link::default()
                    };
                    rows.push((index, *key, link));
                    deletes.push((index, record.clone()));
                }
            }
        }
        let mut out = Outcome::default();
        if !upserts.is_empty() {
            self.crm.upsert(upserts, &mut out).await?;
        }
        if !deletes.is_empty() {
            self.crm.delete(deletes, &mut out).await?;
        }
        let ids: HashMap<usize, String> = out.destination_ids.iter().cloned().collect();
        let relinked: Vec<(KeyDigest, Link)> = rows
            .into_iter()
            .filter(|(index, _, _)| ids.contains_key(index))
            .map(|(index, key, mut link)| {
                if !link.tombstone {
                    link.record_id = ids.get(&index).cloned();
                }
                (key, link)
            })
            .collect();
        match &mut self.store {
            Store::Postgres(l) => l.relink(&relinked).await?,
            #[cfg(test)]
            Store::Memory(v) => v.links.extend(relinked),
        }
        out.sort();
        Ok(out)
    }
}

/// Rows as mapped for a repair: Kafka key → identity and properties.
type Mapped<V> = HashMap<Vec<u8>, (String, BTreeMap<String, V>)>;

/// A mapped value as text, as the destinations list it.
fn as_text<V: Serialize>(v: &V) -> String {
    value_string(&serde_json::to_value(v).expect("mapped values serialize"))
}

/// Tests reach the destination's own methods and fields through its ledgered sink.
#[cfg(test)]
impl<C> std::ops::Deref for Ledgered<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.crm
    }
}

#[cfg(test)]
impl<C> std::ops::DerefMut for Ledgered<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.crm
    }
}
