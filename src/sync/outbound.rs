//! The outbound half of two-way sync: Postgres changes → CRM writes filtered by the sync plan.
//!
//! Owns [`TwoWaySink`], the [`Sink`] a two-way sink's runner applies batches to. Invariants:
//! before a batch is written the records' current CRM values (with change times) and Postgres's
//! current rows are read; only fields the plan pushes are sent; records with nothing to push
//! cost no write; fields the CRM wins are written into Postgres instead (origin-tagged); the
//! ledger is updated once the CRM accepted. The store lock is held from the reads to the
//! ledger save, so an inbound application never interleaves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::DateTime;

use crate::event::{ChangeEvent, Op};
use crate::sink::batch::{Batch, Entry};
use crate::sink::crm;
use crate::sink::ledger::{Link, View, key_digest};
use crate::sink::mapping::id_value;
use crate::sink::{Outcome, Rejected, Sink, SinkError};
use crate::sync::plan::{CrmRecord, Plan, Side, plan, record_key};
use crate::sync::store::{InboundChange, LedgerRow, Store};

use crate::sync::engine::*;

/// The outbound destination of a two-way sink: CRM writes filtered by the sync plan.
pub(crate) struct TwoWaySink<C> {
    ctx: Arc<Context>,
    crm: C,
}

impl<C: Crm> TwoWaySink<C> {
    /// Wraps the sink's CRM destination.
    pub(crate) fn new(ctx: Arc<Context>, crm: C) -> Self {
        TwoWaySink { ctx, crm }
    }
}

/// A batch entry that is an upsert, with its record key and id value.
struct Upsert {
    index: usize,
    key: String,
    id: String,
}

/// The upserts of a batch (creates, updates and snapshot reads with a key and an id value).
fn upserts(ctx: &Context, batch: &Batch<ChangeEvent>) -> Vec<Upsert> {
    let mut upserts = Vec::new();
    for (index, e) in batch.entries.iter().enumerate() {
        let ev = &e.item;
        if !matches!(ev.op, Op::Create | Op::Update | Op::Read) {
            continue;
        }
        let (Some(after), Some(key)) = (ev.after.as_ref(), ev.key.as_ref()) else {
            continue;
        };
        if let (Some(key), Ok(id)) = (
            record_key(key),
            id_value(&ctx.rules, &ctx.id_property, after),
        ) {
            upserts.push(Upsert { index, key, id });
        }
    }
    upserts
}

/// The plans of a batch's upserts and the batch of what must be written to the CRM.
struct Planned<'a> {
    /// Plan of each upsert still to settle, by batch index.
    plans: HashMap<usize, (Plan, &'a Upsert)>,
    /// What the CRM is sent.
    sub: Batch<ChangeEvent>,
    /// The batch index of each entry of `sub`.
    origin_index: Vec<usize>,
}

/// Plans every upsert against the current row, CRM record and ledger; entries that are not
/// upserts go to the CRM as they are, upserts with nothing to push (or whose row is gone) and
/// `held` entries not at all.
fn plan_batch<'a>(
    ctx: &Context,
    batch: &Batch<ChangeEvent>,
    upserts: &'a [Upsert],
    current: &HashMap<String, serde_json::Map<String, serde_json::Value>>,
    crm: &HashMap<String, CrmRecord>,
    ledger: &HashMap<String, LedgerRow>,
    held: &HashSet<usize>,
) -> Planned<'a> {
    let mut plans: HashMap<usize, (Plan, &Upsert)> = HashMap::new();
    let mut skip: HashSet<usize> = held.clone();
    let mut entries = Vec::new();
    let mut origin_index = Vec::new();
    for u in upserts {
        let entry = &batch.entries[u.index];
        let Some(row) = current.get(&u.key) else {
            // The row is gone: its delete event follows.
            skip.insert(u.index);
            continue;
        };
        let committed_at = entry
            .item
            .source
            .commit_ts
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.to_utc());
        let record = crm.get(&u.id);
        let p = plan(
            ctx.mapping(),
            Side::Outbound {
                event_row: entry.item.after.as_ref().expect("an upsert has a row"),
                committed_at,
            },
            row,
            record,
            ledger.get(&u.key),
        );
        if p.push.is_empty() && record.is_some() {
            ctx.count(&ctx.counters.echoes, "driftless_sync_unchanged_total", 1);
            skip.insert(u.index);
        } else {
            entries.push(pushed_entry(ctx, entry, row, &p.push));
            origin_index.push(u.index);
        }
        plans.insert(u.index, (p, u));
    }
    for (index, entry) in batch.entries.iter().enumerate() {
        if !plans.contains_key(&index) && !skip.contains(&index) {
            entries.push(entry.clone());
            origin_index.push(index);
        }
    }
    let sub = Batch {
        records: entries.len(),
        entries,
        commit: BTreeMap::new(),
    };
    Planned {
        plans,
        sub,
        origin_index,
    }
}

/// The entry sent for an upsert: the current row reduced to the pushed columns and the id
/// column.
fn pushed_entry(
    ctx: &Context,
    entry: &Entry<ChangeEvent>,
    row: &serde_json::Map<String, serde_json::Value>,
    push: &[String],
) -> Entry<ChangeEvent> {
    let mut item = entry.item.clone();
    let id_column = ctx
        .rules
        .iter()
        .find(|r| r.property == ctx.id_property)
        .map(|r| r.column.as_str());
    item.after = Some(
        row.iter()
            .filter(|(c, _)| push.contains(c) || Some(c.as_str()) == id_column)
            .map(|(c, v)| (c.clone(), v.clone()))
            .collect(),
    );
    item.unchanged_toast.clear();
    Entry {
        key: entry.key.clone(),
        item,
        positions: entry.positions.clone(),
    }
}

impl<C: Crm> TwoWaySink<C> {
    /// The CRM records of the upserts, by id value: linked keys by their CRM id (so a record
    /// is found even before its id property is set), the others by the id property.
    async fn read_crm(
        &mut self,
        upserts: &[Upsert],
        ledger: &HashMap<String, LedgerRow>,
    ) -> Result<HashMap<String, CrmRecord>, SinkError> {
        let mut by_crm_id: HashMap<String, String> = HashMap::new();
        let mut by_property = Vec::new();
        for u in upserts {
            match ledger.get(&u.key).and_then(|l| l.crm_id.clone()) {
                Some(crm_id) => {
                    by_crm_id.insert(crm_id, u.id.clone());
                }
                None => by_property.push(u.id.clone()),
            }
        }
        let ctx = &self.ctx;
        let mut out = HashMap::new();
        if !by_crm_id.is_empty() {
            let ids: Vec<String> = by_crm_id.keys().cloned().collect();
            for r in self.crm.read(ctx, ReadBy::CrmId, &ids).await? {
                if let Some(id) = by_crm_id.get(&r.id) {
                    out.insert(id.clone(), r);
                }
            }
        }
        if !by_property.is_empty() {
            for r in self.crm.read(ctx, ReadBy::IdProperty, &by_property).await? {
                if let Some(id) = r.properties.get(&ctx.id_property) {
                    out.entry(id.clone()).or_insert(r);
                }
            }
        }
        Ok(out)
    }

    /// Writes the planned sub-batch (its deletes by the records `store` links their keys to);
    /// the outcome speaks of the original batch's indexes.
    async fn write(&mut self, store: &Store, planned: &Planned<'_>) -> Result<Outcome, SinkError> {
        let sub_outcome = if planned.sub.entries.is_empty() {
            Outcome::default()
        } else {
            let view = delete_links(store, &planned.sub).await?;
            crm::write_with_view(&mut self.crm, &planned.sub, &view).await?
        };
        let mut outcome = Outcome::default();
        for mut r in sub_outcome.rejected {
            r.index = planned.origin_index[r.index];
            outcome.rejected.push(r);
        }
        for (i, id) in sub_outcome.destination_ids {
            outcome.destination_ids.push((planned.origin_index[i], id));
        }
        Ok(outcome)
    }
}

/// Carries out the rest of each plan the CRM accepted: pulls into Postgres, the ledger,
/// conflicts; and forgets the ledger rows of deleted rows.
async fn settle(
    ctx: &Context,
    store: &mut Store,
    batch: &Batch<ChangeEvent>,
    planned: &Planned<'_>,
    crm: &HashMap<String, CrmRecord>,
    outcome: &Outcome,
) -> Result<(), SinkError> {
    let rejected: HashSet<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    let written: HashMap<usize, String> = outcome.destination_ids.iter().cloned().collect();
    let mut changes = Vec::new();
    let mut pulled_ledger = Vec::new();
    let mut ledger_rows = Vec::new();
    for (index, (p, u)) in &planned.plans {
        if rejected.contains(index) {
            continue;
        }
        let crm_id = written
            .get(index)
            .cloned()
            .or_else(|| crm.get(&u.id).map(|r| r.id.clone()));
        let row = LedgerRow {
            key: u.key.clone(),
            crm_id,
            fields: p.ledger.clone(),
        };
        if p.pull.is_empty() {
            ledger_rows.push(row);
        } else {
            changes.push(InboundChange::Update {
                key: u.key.clone(),
                values: p.pull.clone(),
            });
            pulled_ledger.push(row);
        }
        ctx.record_conflicts(&u.key, &p.conflicts).await?;
    }
    let deleted: Vec<String> = batch
        .entries
        .iter()
        .enumerate()
        .filter(|(i, e)| e.item.op == Op::Delete && !rejected.contains(i))
        .filter_map(|(_, e)| record_key(e.item.key.as_ref()?))
        .collect();
    store
        .save_ledger(&ledger_rows)
        .await
        .map_err(store_failed)?;
    ctx.write_inbound(store, &changes, &pulled_ledger).await?;
    if !deleted.is_empty() {
        store.forget(&deleted).await.map_err(store_failed)?;
    }
    Ok(())
}

impl<C: Crm> Sink for TwoWaySink<C> {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        let ctx = self.ctx.clone();
        let mut upserts = upserts(&ctx, batch);
        let keys: Vec<String> = upserts.iter().map(|u| u.key.clone()).collect();
        // Held until the ledger is saved: the inbound worker never interleaves with a batch,
        // so neither side decides on a state the other is changing.
        let mut store = ctx.store.lock().await;
        let blocked = self.unlinked(&store, &keys).await?;
        upserts.retain(|u| !blocked.contains(&u.key));
        let keys: Vec<String> = upserts.iter().map(|u| u.key.clone()).collect();
        let current = store.rows(&keys).await.map_err(store_failed)?;
        let ledger = store.ledger_by_keys(&keys).await.map_err(store_failed)?;
        let crm = self.read_crm(&upserts, &ledger).await?;
        let held = held_back(batch, &blocked);
        let planned = plan_batch(&ctx, batch, &upserts, &current, &crm, &ledger, &held);
        let mut outcome = self.write(&store, &planned).await?;
        settle(&ctx, &mut store, batch, &planned, &crm, &outcome).await?;
        outcome.rejected.extend(held.into_iter().map(|index| {
            Rejected {
                index,
                category: "LINK_PENDING".into(),
                message:
                    "the record was created in the CRM and the CRM has not confirmed its link \
                      to this row (its id property); writing by the id property would create \
                      a second record"
                        .into(),
            }
        }));
        outcome.sort();
        Ok(outcome)
    }
}

impl<C: Crm> TwoWaySink<C> {
    /// The keys among `keys` whose link to a record created in the CRM is still pending after
    /// one more attempt to complete it.
    async fn unlinked(
        &mut self,
        store: &Store,
        keys: &[String],
    ) -> Result<HashSet<String>, SinkError> {
        let pending = store
            .pending_links(Some(keys), keys.len() as i64)
            .await
            .map_err(store_failed)?;
        let pending = complete_links(&self.ctx, store, &mut self.crm, &pending).await?;
        Ok(pending.into_iter().map(|(_, key)| key).collect())
    }
}

/// The batch indexes of the upserts of `blocked` keys (held back from the CRM; a delete goes
/// by the linked CRM id and needs no id property).
fn held_back(batch: &Batch<ChangeEvent>, blocked: &HashSet<String>) -> HashSet<usize> {
    if blocked.is_empty() {
        return HashSet::new();
    }
    batch
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(e.item.op, Op::Create | Op::Update | Op::Read)
                && e.item
                    .key
                    .as_ref()
                    .and_then(record_key)
                    .is_some_and(|k| blocked.contains(&k))
        })
        .map(|(i, _)| i)
        .collect()
}

/// The links of the deletes in `batch`, from two-way sync's own ledger: a delete removes
/// exactly the record its key is linked to (the sink ledger's rule), whatever the replica
/// identity sent.
async fn delete_links(store: &Store, batch: &Batch<ChangeEvent>) -> Result<View, SinkError> {
    let keys: Vec<_> = batch
        .entries
        .iter()
        .filter(|e| e.item.op == Op::Delete)
        .filter_map(|e| Some((key_digest(&e.key), record_key(e.item.key.as_ref()?)?)))
        .collect();
    if keys.is_empty() {
        return Ok(View::default());
    }
    let texts: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
    let rows = store.ledger_by_keys(&texts).await.map_err(store_failed)?;
    let links = keys
        .into_iter()
        .filter_map(|(digest, key)| {
            let record_id = rows.get(&key)?.crm_id.clone()?;
            Some((
                digest,
                Link {
                    record_id: Some(record_id),
                    ..Link::default()
                },
            ))
        })
        .collect();
    Ok(View { links })
}
