//! The CRM-independent engine of two-way sync.
//!
//! Owns the outbound wrapper ([`TwoWaySink`]), the inbound worker and the reconciliation loop,
//! over a [`Crm`] (HubSpot: [`super::hubspot`]; Zoho: [`super::zoho`]). Invariants:
//! - outbound: before a batch is written, the records' current CRM values (with change times)
//!   and Postgres's current rows are read; only fields the plan pushes are sent, records with
//!   nothing to push cost no write, fields the CRM wins are written into Postgres instead
//!   (origin-tagged), and the ledger is updated once the CRM accepted;
//! - inbound: the worker reads the changed records and applies their plans in one origin-tagged
//!   transaction with the ledger rows; records created in the CRM get a row and are linked to
//!   it (their id property is set), so no duplicate appears on either side;
//! - reconciliation asks the CRM for records modified since a durable cursor and feeds them to
//!   the same worker, so lost or reordered notifications are repaired;
//! - an outbound batch and an inbound application never interleave (the store lock is held from
//!   the reads to the ledger save), so neither side decides on a state the other is changing;
//!   this holds within one process: run one worker per two-way sink;
//! - an echo of our own write finds the ledger equal to the CRM value and writes nothing;
//! - deletions in the CRM (webhooks/notifications, and reconciliation from a second durable
//!   cursor) are queued apart from changes ([`Inbound::Deleted`]) and, only with
//!   `on_crm_delete = "delete"`, delete the linked row (found through the ledger) in an
//!   origin-tagged transaction that also forgets the ledger row, so the same sink sends no
//!   archive back; records not linked to a row are ignored without an API call, and records
//!   that exist again (restored) when the worker reads them keep their row;
//! - no row values in logs, metrics or the audit trail (conflicts record column, times, winner).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc, watch};

use super::plan::{Conflict, CrmRecord, Mapping, Plan, Side, new_row, plan, record_key};
use super::resolve::value_hash;
use super::store::{CursorKind, InboundChange, LedgerRow, Store, StoreError};
use crate::config::sinks::{OnCrmCreate, OnCrmDelete, TwoWay};
use crate::error::Backoff;
use crate::event::{ChangeEvent, Op};
use crate::sink::audit::{AuditTrail, key_hash};
use crate::sink::batch::{Batch, Entry};
use crate::sink::mapping::{FieldRule, Property, id_value};
use crate::sink::{Outcome, Sink, SinkError};

/// Records the inbound worker handles at once.
const INBOUND_BATCH: usize = 50;
/// Items the receivers may queue before they answer 503.
const QUEUE_CAPACITY: usize = 1_000;
/// Notification ids remembered for de-duplication.
const SEEN_EVENTS: usize = 100_000;

/// A CRM as two-way sync needs it, besides writing batches ([`Sink`]).
pub trait Crm: Sink + Send + Sized {
    /// Records by id-property values (outbound), with per-property change times.
    fn read_by_id_property(
        &mut self,
        ctx: &Context,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<CrmRecord>, SinkError>> + Send;

    /// Records by CRM ids (inbound).
    fn read_by_ids(
        &mut self,
        ctx: &Context,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<CrmRecord>, SinkError>> + Send;

    /// Sets the id property of records created in the CRM: (CRM id, record key).
    fn link(
        &mut self,
        ctx: &Context,
        links: &[(String, String)],
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Queues the ids of records modified at or after `since_ms`; returns how many were queued
    /// and the newest modification time seen (the next cursor).
    fn modified_since(
        &mut self,
        ctx: &Context,
        since_ms: i64,
        queue: &mpsc::Sender<Inbound>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(usize, i64), SinkError>> + Send;

    /// Queues ([`Inbound::Deleted`]) the ids of records deleted at or after `since_ms`;
    /// returns how many were queued and the newest deletion time seen (the next cursor).
    fn deleted_since(
        &mut self,
        ctx: &Context,
        since_ms: i64,
        queue: &mpsc::Sender<Inbound>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(usize, i64), SinkError>> + Send;

    /// Another client with the same credentials (for the inbound tasks).
    fn sibling(&self) -> Self;
}

/// Counters of a two-way sink (also exported as metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// CRM reads made by sync (HubSpot batch/read and search, Zoho COQL).
    pub api_reads: AtomicU64,
    /// Records written into Postgres.
    pub inbound_writes: AtomicU64,
    /// Rows deleted in Postgres because their CRM records were deleted.
    pub inbound_deletes: AtomicU64,
    /// CRM changes found to be our own writes (or already in sync).
    pub echoes: AtomicU64,
    /// Conflicts settled.
    pub conflicts: AtomicU64,
    /// Webhooks refused (bad or stale signature; Zoho: wrong or missing token).
    pub webhooks_rejected: AtomicU64,
    /// Webhook events seen twice.
    pub webhook_duplicates: AtomicU64,
}

/// What the outbound and inbound halves share.
pub struct Context {
    /// Sink name.
    pub sink: String,
    /// Unique property records are matched by.
    pub id_property: String,
    /// Field rules.
    pub rules: Vec<FieldRule>,
    /// HubSpot properties of the object.
    pub schema: BTreeMap<String, Property>,
    /// Ownership and inbound settings.
    pub two_way: TwoWay,
    /// Durable state and origin-tagged writes.
    pub store: Mutex<Store>,
    /// Conflicts go to the audit trail.
    pub audit: AuditTrail,
    /// Counters.
    pub counters: Counters,
}

/// A conflict as recorded in the audit trail.
#[derive(Serialize)]
struct ConflictRecord<'a> {
    time: String,
    sink: &'a str,
    kind: &'static str,
    key_hash: String,
    field: &'a str,
    postgres_at: Option<String>,
    crm_at: Option<String>,
    winner: &'static str,
}

pub(crate) fn transient(message: String) -> SinkError {
    SinkError::Transient {
        message,
        retry_after: None,
    }
}

fn store_failed(e: StoreError) -> SinkError {
    match e {
        StoreError::Unfit(message) => SinkError::Fatal {
            message,
            hint: "two-way sync needs a table with a one-column primary key".into(),
        },
        e => transient(format!("sync state in Postgres: {e}")),
    }
}

impl Context {
    pub(crate) fn mapping(&self) -> Mapping<'_> {
        Mapping {
            rules: &self.rules,
            schema: &self.schema,
            two_way: &self.two_way,
            id_property: &self.id_property,
        }
    }

    pub(crate) fn count(&self, counter: &AtomicU64, name: &'static str, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(name, "sink" => self.sink.clone()).increment(n);
    }

    /// Counts conflicts and writes them to the audit trail.
    pub(crate) async fn record_conflicts(
        &self,
        key: &str,
        conflicts: &[Conflict],
    ) -> Result<(), SinkError> {
        if conflicts.is_empty() {
            return Ok(());
        }
        self.count(
            &self.counters.conflicts,
            "driftless_sync_conflicts_total",
            conflicts.len() as u64,
        );
        let time = Utc::now().to_rfc3339();
        let records: Vec<ConflictRecord<'_>> = conflicts
            .iter()
            .map(|c| ConflictRecord {
                time: time.clone(),
                sink: &self.sink,
                kind: "conflict",
                key_hash: key_hash(key.as_bytes()),
                field: &c.column,
                postgres_at: c.postgres_at.map(|t| t.to_rfc3339()),
                crm_at: c.crm_at.map(|t| t.to_rfc3339()),
                winner: c.winner,
            })
            .collect();
        self.audit
            .write_keyed(&records, |r| &r.key_hash)
            .await
            .map_err(|e| transient(e.to_string()))
    }

    /// Counts and logs a delivery refused for its credentials (never its body); 401.
    pub(crate) fn refuse(&self, message: &str) -> axum::http::StatusCode {
        self.count(
            &self.counters.webhooks_rejected,
            "driftless_sync_webhooks_rejected_total",
            1,
        );
        tracing::warn!(sink = %self.sink, "{message}");
        axum::http::StatusCode::UNAUTHORIZED
    }

    /// Counts deliveries (or events) seen before.
    pub(crate) fn count_duplicates(&self, n: u64) {
        if n > 0 {
            self.count(
                &self.counters.webhook_duplicates,
                "driftless_sync_webhook_duplicates_total",
                n,
            );
        }
    }

    /// The mapped properties.
    pub fn properties(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.property.as_str()).collect()
    }
}

/// The outbound destination of a two-way sink: CRM writes filtered by the sync plan.
pub struct TwoWaySink<C> {
    ctx: Arc<Context>,
    crm: C,
}

impl<C: Crm> TwoWaySink<C> {
    /// Wraps the sink's CRM destination.
    pub fn new(ctx: Arc<Context>, crm: C) -> Self {
        TwoWaySink { ctx, crm }
    }
}

/// A batch entry that is an upsert, with its record key and id value.
struct Upsert {
    index: usize,
    key: String,
    id: String,
}

impl<C: Crm> Sink for TwoWaySink<C> {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        let ctx = self.ctx.clone();
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
        let keys: Vec<String> = upserts.iter().map(|u| u.key.clone()).collect();
        // Held until the ledger is saved: the inbound worker never interleaves with a batch,
        // so neither side decides on a state the other is changing.
        let mut store = ctx.store.lock().await;
        let current = store.rows(&keys).await.map_err(store_failed)?;
        let ledger = store.ledger_by_keys(&keys).await.map_err(store_failed)?;
        let ids: Vec<String> = upserts.iter().map(|u| u.id.clone()).collect();
        let crm: HashMap<String, CrmRecord> = if ids.is_empty() {
            HashMap::new()
        } else {
            self.crm
                .read_by_id_property(&ctx, &ids)
                .await?
                .into_iter()
                .filter_map(|r| Some((r.properties.get(&ctx.id_property)?.clone(), r)))
                .collect()
        };
        // Plan every upsert; build the batch of what must be written.
        let mut plans: HashMap<usize, (Plan, &Upsert)> = HashMap::new();
        let mut skip: HashSet<usize> = HashSet::new();
        let mut entries = Vec::new();
        let mut origin_index = Vec::new();
        for u in &upserts {
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
                    event_row: entry.item.after.as_ref().expect("checked above"),
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
                let mut item = entry.item.clone();
                let id_column = ctx
                    .rules
                    .iter()
                    .find(|r| r.property == ctx.id_property)
                    .map(|r| r.column.as_str());
                item.after = Some(
                    row.iter()
                        .filter(|(c, _)| p.push.contains(c) || Some(c.as_str()) == id_column)
                        .map(|(c, v)| (c.clone(), v.clone()))
                        .collect(),
                );
                item.unchanged_toast.clear();
                entries.push(Entry {
                    key: entry.key.clone(),
                    item,
                    positions: entry.positions.clone(),
                });
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
        let sub_outcome = if sub.entries.is_empty() {
            Outcome::default()
        } else {
            self.crm.apply(&sub).await?
        };
        let mut outcome = Outcome::default();
        for mut r in sub_outcome.rejected {
            r.index = origin_index[r.index];
            outcome.rejected.push(r);
        }
        for (i, id) in sub_outcome.destination_ids {
            outcome.destination_ids.push((origin_index[i], id));
        }
        let rejected: HashSet<usize> = outcome.rejected.iter().map(|r| r.index).collect();
        let written: HashMap<usize, String> = outcome.destination_ids.iter().cloned().collect();
        // Carry out the rest of each plan: pulls into Postgres, the ledger, conflicts.
        let mut changes = Vec::new();
        let mut pulled_ledger = Vec::new();
        let mut ledger_rows = Vec::new();
        for (index, (p, u)) in &plans {
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
        if !changes.is_empty() {
            store
                .write_inbound(&changes, &pulled_ledger)
                .await
                .map_err(store_failed)?;
            ctx.count(
                &ctx.counters.inbound_writes,
                "driftless_sync_inbound_writes_total",
                changes.len() as u64,
            );
        }
        if !deleted.is_empty() {
            store.forget(&deleted).await.map_err(store_failed)?;
        }
        outcome.rejected.sort_by_key(|r| r.index);
        outcome.destination_ids.sort();
        Ok(outcome)
    }
}

/// Event ids seen recently (bounded).
#[derive(Default)]
pub(crate) struct Seen {
    order: VecDeque<i64>,
    set: HashSet<i64>,
}

impl Seen {
    /// True if the id is new.
    pub(crate) fn insert(&mut self, id: i64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_EVENTS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    /// Forgets ids whose delivery was refused (503), so the CRM's retry is not a duplicate.
    pub(crate) fn forget(&mut self, ids: &[i64]) {
        for id in ids {
            self.set.remove(id);
        }
    }
}

/// An item of the queue between the receiver/reconciler and the inbound worker: CRM ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Records created, changed or restored in the CRM.
    Changed(Vec<String>),
    /// Records deleted in the CRM.
    Deleted(Vec<String>),
}

/// The queue between the receiver/reconciler and the inbound worker.
pub fn queue() -> (mpsc::Sender<Inbound>, mpsc::Receiver<Inbound>) {
    mpsc::channel(QUEUE_CAPACITY)
}

/// What a receiver answers for a delivery: queues all of `items` or none. When the queue is
/// full it answers 503 and forgets the delivery's ids in `seen`, so the CRM's retry is not
/// dropped as a duplicate (reconciliation repairs what is still missed).
pub(crate) fn deliver(
    queue: &mpsc::Sender<Inbound>,
    seen: &std::sync::Mutex<Seen>,
    fresh: &[i64],
    items: Vec<Inbound>,
) -> axum::http::StatusCode {
    if offer(queue, items) {
        axum::http::StatusCode::NO_CONTENT
    } else {
        seen.lock().expect("not poisoned").forget(fresh);
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Queues all of `items` or none (false: the queue is full).
fn offer(queue: &mpsc::Sender<Inbound>, items: Vec<Inbound>) -> bool {
    let items: Vec<Inbound> = items
        .into_iter()
        .filter(|i| !matches!(i, Inbound::Changed(ids) | Inbound::Deleted(ids) if ids.is_empty()))
        .collect();
    if items.is_empty() {
        return true;
    }
    match queue.try_reserve_many(items.len()) {
        Ok(permits) => {
            for (permit, item) in permits.zip(items) {
                permit.send(item);
            }
            true
        }
        Err(_) => false,
    }
}

/// Ids waiting for the inbound worker: deletions are handled before changes.
#[derive(Default)]
struct Pending {
    changed: BTreeSet<String>,
    deleted: BTreeSet<String>,
}

impl Pending {
    fn add(&mut self, item: Inbound) {
        match item {
            Inbound::Changed(ids) => self.changed.extend(ids),
            Inbound::Deleted(ids) => self.deleted.extend(ids),
        }
    }

    fn len(&self) -> usize {
        self.changed.len() + self.deleted.len()
    }

    /// The next group: (deletions?, up to [`INBOUND_BATCH`] ids).
    fn next(&self) -> (bool, Vec<String>) {
        let deleting = !self.deleted.is_empty();
        let set = if deleting {
            &self.deleted
        } else {
            &self.changed
        };
        (deleting, set.iter().take(INBOUND_BATCH).cloned().collect())
    }

    fn done(&mut self, deleting: bool, ids: &[String]) {
        let set = if deleting {
            &mut self.deleted
        } else {
            &mut self.changed
        };
        for id in ids {
            set.remove(id);
        }
    }
}

/// Applies CRM changes and deletions to Postgres until shutdown: drains the queue in groups
/// of up to [`INBOUND_BATCH`] ids (deletions first), retrying transient failures with backoff
/// (the ids are kept).
pub async fn inbound_worker<C: Crm>(
    ctx: Arc<Context>,
    mut crm: C,
    mut queue: mpsc::Receiver<Inbound>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let mut pending = Pending::default();
    loop {
        if pending.len() == 0 {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                item = queue.recv() => match item {
                    Some(item) => pending.add(item),
                    None => return Ok(()),
                },
            }
        }
        while pending.len() < INBOUND_BATCH {
            match queue.try_recv() {
                Ok(item) => pending.add(item),
                Err(_) => break,
            }
        }
        let (deleting, ids) = pending.next();
        let mut backoff = Backoff::new();
        loop {
            let applied = if deleting {
                apply_deletions(&ctx, &mut crm, &ids).await
            } else {
                apply_inbound(&ctx, &mut crm, &ids).await
            };
            match applied {
                Ok(()) => break,
                Err(SinkError::Transient {
                    message,
                    retry_after,
                }) => {
                    let wait = retry_after.unwrap_or_else(|| backoff.next_wait());
                    tracing::warn!(sink = %ctx.sink, error = %message,
                        retry_in_ms = wait.as_millis() as u64, "inbound sync failed; retrying");
                    tokio::select! {
                        _ = shutdown.changed() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(fatal) => return Err(fatal),
            }
        }
        pending.done(deleting, &ids);
    }
}

/// Deletes the rows linked to records deleted in the CRM (`on_crm_delete = "delete"`), with
/// their ledger rows, in one origin-tagged transaction. Unlinked records cost nothing; linked
/// ones are read first (one read per 50), and those that exist again keep their row.
async fn apply_deletions<C: Crm>(
    ctx: &Context,
    crm: &mut C,
    ids: &[String],
) -> Result<(), SinkError> {
    if ctx.two_way.on_crm_delete != OnCrmDelete::Delete {
        return Ok(());
    }
    let mut store = ctx.store.lock().await;
    let linked = store.ledger_by_crm_ids(ids).await.map_err(store_failed)?;
    if linked.is_empty() {
        return Ok(());
    }
    let linked_ids: Vec<String> = linked.keys().cloned().collect();
    let alive: HashSet<String> = crm
        .read_by_ids(ctx, &linked_ids)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let changes = deletions(&linked, &alive);
    if changes.is_empty() {
        return Ok(());
    }
    store
        .write_inbound(&changes, &[])
        .await
        .map_err(store_failed)?;
    ctx.count(
        &ctx.counters.inbound_deletes,
        "driftless_sync_inbound_deletes_total",
        changes.len() as u64,
    );
    tracing::info!(sink = %ctx.sink, rows = changes.len(),
        "deleted rows whose CRM records were deleted");
    Ok(())
}

/// The row deletions for deleted CRM records linked in the ledger (by CRM id), except those
/// found to exist (`alive`); ordered by record key.
fn deletions(linked: &HashMap<String, LedgerRow>, alive: &HashSet<String>) -> Vec<InboundChange> {
    let keys: BTreeSet<&String> = linked
        .iter()
        .filter(|(crm_id, _)| !alive.contains(*crm_id))
        .map(|(_, l)| &l.key)
        .collect();
    keys.into_iter()
        .map(|key| InboundChange::Delete { key: key.clone() })
        .collect()
}

/// Reads the records and applies their plans in one origin-tagged transaction.
async fn apply_inbound<C: Crm>(
    ctx: &Context,
    crm: &mut C,
    ids: &[String],
) -> Result<(), SinkError> {
    // Read and decide under the store lock, like the outbound side (see TwoWaySink::apply).
    let mut store = ctx.store.lock().await;
    let records = crm.read_by_ids(ctx, ids).await?;
    let crm_ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let by_crm_id = store
        .ledger_by_crm_ids(&crm_ids)
        .await
        .map_err(store_failed)?;
    let key_of = |r: &CrmRecord| {
        by_crm_id.get(&r.id).map(|l| l.key.clone()).or_else(|| {
            r.properties
                .get(&ctx.id_property)
                .filter(|v| !v.is_empty())
                .cloned()
        })
    };
    let keys: Vec<String> = records.iter().filter_map(key_of).collect();
    let current = store.rows(&keys).await.map_err(store_failed)?;
    let ledger = store.ledger_by_keys(&keys).await.map_err(store_failed)?;
    let mut changes = Vec::new();
    let mut ledger_rows = Vec::new();
    let mut in_sync = Vec::new();
    let mut conflicts = Vec::new();
    let mut created = Vec::new();
    for r in &records {
        let Some(key) = key_of(r) else {
            if ctx.two_way.on_crm_create == OnCrmCreate::Insert {
                let (values, fields) = new_row(ctx.mapping(), r);
                changes.push(InboundChange::Insert { values });
                ledger_rows.push(LedgerRow {
                    key: String::new(),
                    crm_id: Some(r.id.clone()),
                    fields,
                });
                created.push((changes.len() - 1, r.id.clone()));
            }
            continue;
        };
        let Some(row) = current.get(&key) else {
            // No row (deleted in Postgres, its archive pending): nothing to update.
            continue;
        };
        let p = plan(ctx.mapping(), Side::Inbound, row, Some(r), ledger.get(&key));
        let l = LedgerRow {
            key: key.clone(),
            crm_id: Some(r.id.clone()),
            fields: p.ledger,
        };
        conflicts.push((key.clone(), p.conflicts));
        if p.pull.is_empty() {
            ctx.count(&ctx.counters.echoes, "driftless_sync_echoes_total", 1);
            in_sync.push(l);
        } else {
            changes.push(InboundChange::Update {
                key,
                values: p.pull,
            });
            ledger_rows.push(l);
        }
    }
    store.save_ledger(&in_sync).await.map_err(store_failed)?;
    let keys = if changes.is_empty() {
        Vec::new()
    } else {
        store
            .write_inbound(&changes, &ledger_rows)
            .await
            .map_err(store_failed)?
    };
    ctx.count(
        &ctx.counters.inbound_writes,
        "driftless_sync_inbound_writes_total",
        changes.len() as u64,
    );
    // Link records created in the CRM to their new rows: set the id property there too.
    let mut links = Vec::new();
    let mut link_ledger = Vec::new();
    for (i, crm_id) in &created {
        let key = &keys[*i];
        if key.is_empty() {
            continue;
        }
        links.push((crm_id.clone(), key.clone()));
        link_ledger.push(LedgerRow {
            key: key.clone(),
            crm_id: Some(crm_id.clone()),
            fields: BTreeMap::from([(ctx.id_property.clone(), value_hash(key))]),
        });
    }
    store
        .save_ledger(&link_ledger)
        .await
        .map_err(store_failed)?;
    drop(store);
    if !links.is_empty() {
        crm.link(ctx, &links).await?;
    }
    for (key, c) in &conflicts {
        ctx.record_conflicts(key, c).await?;
    }
    Ok(())
}

/// Searches for records modified (and, with `on_crm_delete = "delete"`, deleted) since the
/// cursors every `every` and queues them for the inbound worker.
pub async fn reconcile_loop<C: Crm>(
    ctx: Arc<Context>,
    mut crm: C,
    queue: mpsc::Sender<Inbound>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match reconcile_once(&ctx, &mut crm, &queue, &mut shutdown).await {
            Ok(n) => tracing::info!(sink = %ctx.sink, records = n, "reconciliation pass done"),
            Err(e) => tracing::warn!(sink = %ctx.sink, error = %e, "reconciliation pass failed"),
        }
    }
}

/// One reconciliation pass from the durable cursors; returns the number of records queued.
async fn reconcile_once<C: Crm>(
    ctx: &Context,
    crm: &mut C,
    queue: &mpsc::Sender<Inbound>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<usize, SinkError> {
    let mut kinds = vec![CursorKind::Modified];
    if ctx.two_way.on_crm_delete == OnCrmDelete::Delete {
        kinds.push(CursorKind::Deleted);
    }
    let mut queued = 0;
    for kind in kinds {
        let (since_ms, _) = ctx
            .store
            .lock()
            .await
            .cursor(kind)
            .await
            .map_err(store_failed)?
            .unwrap_or((0, String::new()));
        let (n, newest_ms) = match kind {
            CursorKind::Modified => crm.modified_since(ctx, since_ms, queue, shutdown).await?,
            CursorKind::Deleted => crm.deleted_since(ctx, since_ms, queue, shutdown).await?,
        };
        queued += n;
        if *shutdown.borrow() {
            return Ok(queued);
        }
        ctx.store
            .lock()
            .await
            .save_cursor(kind, newest_ms, "")
            .await
            .map_err(store_failed)?;
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_event_ids_are_bounded() {
        let mut seen = Seen::default();
        assert!(seen.insert(1));
        assert!(!seen.insert(1));
        for i in 2..(SEEN_EVENTS as i64 + 10) {
            seen.insert(i);
        }
        assert!(seen.set.len() <= SEEN_EVENTS);
        assert!(seen.insert(1), "forgotten after the window");
        // A refused delivery is forgotten at once: its retry is new.
        assert!(seen.insert(-5));
        assert!(!seen.insert(-5));
        seen.forget(&[-5]);
        assert!(seen.insert(-5));
    }

    #[test]
    fn deletions_skip_restored_records_and_come_first() {
        let ledger = |key: &str, crm_id: &str| {
            (
                crm_id.to_string(),
                LedgerRow {
                    key: key.into(),
                    crm_id: Some(crm_id.into()),
                    fields: BTreeMap::new(),
                },
            )
        };
        let linked = HashMap::from([ledger("2", "902"), ledger("1", "901"), ledger("3", "903")]);
        let alive = HashSet::from(["903".to_string()]);
        assert_eq!(
            deletions(&linked, &alive),
            [
                InboundChange::Delete { key: "1".into() },
                InboundChange::Delete { key: "2".into() }
            ]
        );
        let mut pending = Pending::default();
        pending.add(Inbound::Changed(vec!["1".into(), "2".into()]));
        pending.add(Inbound::Deleted(vec!["3".into()]));
        assert_eq!(pending.len(), 3);
        let (deleting, ids) = pending.next();
        assert!(deleting);
        assert_eq!(ids, ["3"]);
        pending.done(deleting, &ids);
        assert_eq!(
            pending.next(),
            (false, vec!["1".to_string(), "2".to_string()])
        );
    }

    #[tokio::test]
    async fn offers_queue_all_items_or_none() {
        let (tx, mut rx) = mpsc::channel(2);
        assert!(offer(
            &tx,
            vec![Inbound::Changed(vec!["1".into()]), Inbound::Deleted(vec![])]
        ));
        assert!(!offer(
            &tx,
            vec![
                Inbound::Changed(vec!["2".into()]),
                Inbound::Deleted(vec!["3".into()])
            ]
        ));
        assert_eq!(rx.try_recv().unwrap(), Inbound::Changed(vec!["1".into()]));
        assert!(rx.try_recv().is_err(), "nothing of the refused offer");
    }
}
