//! Two-way sync with HubSpot: the outbound conflict check, the webhook receiver, the inbound
//! worker and the search reconciliation.
//!
//! Owns the I/O around [`plan`](super::plan). Invariants:
//! - outbound ([`TwoWaySink`]): before a batch is upserted, the records' current CRM values
//!   (with property history) and Postgres's current rows are read; only fields the plan pushes
//!   are sent, records with nothing to push cost no write, and fields the CRM wins are written
//!   into Postgres instead (origin-tagged); the ledger is updated once the CRM accepted;
//! - inbound: webhooks are accepted only with a valid signature (v3; v1/v2 only if configured),
//!   answered at once (204) after the object ids are queued in a bounded queue (503 when full, so
//!   HubSpot retries), and de-duplicated on `eventId`; the worker reads the records and applies
//!   the plan in one origin-tagged transaction with its ledger rows;
//! - reconciliation searches records modified since a durable cursor (keyset on last-modified
//!   time, restarting the search before the 10,000-result cap, at most 4 searches per second)
//!   and feeds them to the same worker, so lost or reordered webhooks are repaired;
//! - an echo of our own write finds the ledger equal to the CRM value and writes nothing;
//!   deletions in HubSpot are not propagated to Postgres (rows are never deleted by the CRM);
//! - no row values in logs, metrics or the audit trail (conflicts record column, times, winner).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, watch};

use super::hubspot_signature::{self as signature};
use super::plan::{Conflict, CrmRecord, Mapping, Plan, Side, new_row, plan, record_key};
use super::resolve::value_hash;
use super::store::{InboundChange, LedgerRow, Store, StoreError};
use crate::config::sinks::{OnCrmCreate, TwoWay};
use crate::error::Backoff;
use crate::event::{ChangeEvent, Op};
use crate::sink::audit::{AuditTrail, key_hash};
use crate::sink::batch::{Batch, Entry};
use crate::sink::hubspot::HubspotSink;
use crate::sink::mapping::{FieldRule, Property, id_value};
use crate::sink::{Outcome, Sink, SinkError};

/// Records per `batch/read` with property history (HubSpot's cap).
const READ_BATCH: usize = 50;
/// Object ids the webhook receiver may queue before it answers 503.
const QUEUE_CAPACITY: usize = 1_000;
/// Webhook event ids remembered for de-duplication.
const SEEN_EVENTS: usize = 100_000;

/// Counters of a two-way sink (also exported as metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// HubSpot reads (batch/read, search) made by sync.
    pub api_reads: AtomicU64,
    /// Records written into Postgres.
    pub inbound_writes: AtomicU64,
    /// CRM changes found to be our own writes (or already in sync).
    pub echoes: AtomicU64,
    /// Conflicts settled.
    pub conflicts: AtomicU64,
    /// Webhooks refused (bad or stale signature).
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

fn transient(message: String) -> SinkError {
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
    fn mapping(&self) -> Mapping<'_> {
        Mapping {
            rules: &self.rules,
            schema: &self.schema,
            two_way: &self.two_way,
            id_property: &self.id_property,
        }
    }

    fn count(&self, counter: &AtomicU64, name: &'static str, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(name, "sink" => self.sink.clone()).increment(n);
    }

    /// Counts conflicts and writes them to the audit trail.
    async fn record_conflicts(&self, key: &str, conflicts: &[Conflict]) -> Result<(), SinkError> {
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

    fn properties(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.property.as_str()).collect()
    }

    /// Reads records by `id_property` values (outbound) or by HubSpot ids (inbound), with
    /// property history, in batches of [`READ_BATCH`].
    async fn read(
        &self,
        hubspot: &mut HubspotSink,
        by_id_property: bool,
        ids: &[String],
    ) -> Result<Vec<CrmRecord>, SinkError> {
        let path = format!("/crm/v3/objects/{}/batch/read", hubspot.object());
        let properties = self.properties();
        let mut out = Vec::new();
        for chunk in ids.chunks(READ_BATCH) {
            let mut body = json!({
                "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                "properties": properties,
                "propertiesWithHistory": properties,
            });
            if by_id_property {
                body["idProperty"] = json!(self.id_property);
            }
            let answer = hubspot.read_json(&path, &body).await?;
            self.count(
                &self.counters.api_reads,
                "driftless_sync_api_reads_total",
                1,
            );
            out.extend(parse_records(&answer));
        }
        Ok(out)
    }
}

/// Records of a `batch/read` answer (string properties, latest change time per property).
pub fn parse_records(answer: &Value) -> Vec<CrmRecord> {
    let mut out = Vec::new();
    for r in answer["results"].as_array().into_iter().flatten() {
        let Some(id) = r["id"].as_str() else {
            continue;
        };
        let properties = r["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let changed_at = r["propertiesWithHistory"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, versions)| {
                let latest = versions
                    .as_array()?
                    .iter()
                    .filter_map(|v| parse_time(&v["timestamp"]))
                    .max()?;
                Some((k.clone(), latest))
            })
            .collect();
        out.push(CrmRecord {
            id: id.to_string(),
            properties,
            changed_at,
        });
    }
    out
}

/// An RFC 3339 string or epoch milliseconds.
fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .ok()
            .or_else(|| {
                s.parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
            }),
        Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

/// The outbound destination of a two-way sink: HubSpot writes filtered by the sync plan.
pub struct TwoWaySink {
    ctx: Arc<Context>,
    hubspot: HubspotSink,
}

impl TwoWaySink {
    /// Wraps the sink's HubSpot destination.
    pub fn new(ctx: Arc<Context>, hubspot: HubspotSink) -> Self {
        TwoWaySink { ctx, hubspot }
    }
}

/// A batch entry that is an upsert, with its record key and id value.
struct Upsert {
    index: usize,
    key: String,
    id: String,
}

impl Sink for TwoWaySink {
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
        let (current, ledger) = {
            let store = ctx.store.lock().await;
            (
                store.rows(&keys).await.map_err(store_failed)?,
                store.ledger_by_keys(&keys).await.map_err(store_failed)?,
            )
        };
        let ids: Vec<String> = upserts.iter().map(|u| u.id.clone()).collect();
        let crm: HashMap<String, CrmRecord> = if ids.is_empty() {
            HashMap::new()
        } else {
            ctx.read(&mut self.hubspot, true, &ids)
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
            self.hubspot.apply(&sub).await?
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
        let mut store = ctx.store.lock().await;
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
struct Seen {
    order: VecDeque<i64>,
    set: HashSet<i64>,
}

impl Seen {
    /// True if the id is new.
    fn insert(&mut self, id: i64) -> bool {
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
}

struct Receiver {
    ctx: Arc<Context>,
    secret: String,
    object: String,
    queue: mpsc::Sender<Vec<String>>,
    seen: std::sync::Mutex<Seen>,
}

/// The webhook route of a two-way sink: verify, de-duplicate, queue the object ids.
pub fn webhook_router(
    ctx: Arc<Context>,
    secret: String,
    object: &str,
    queue: mpsc::Sender<Vec<String>>,
) -> axum::Router {
    let path = ctx.two_way.webhook_path.clone();
    // HubSpot event types name the object in the singular: contact.propertyChange.
    let object = object.trim_end_matches('s').replace("companie", "company");
    let state = Arc::new(Receiver {
        ctx,
        secret,
        object,
        queue,
        seen: std::sync::Mutex::new(Seen::default()),
    });
    axum::Router::new()
        .route(&path, axum::routing::post(receive))
        .with_state(state)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks a webhook's signature: v3 over `http(s)://{Host}{uri}` (a proxy may terminate TLS),
/// or v1/v2 when legacy signatures are accepted.
fn authentic(r: &Receiver, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> bool {
    let host = header(headers, "host").unwrap_or_default();
    let urls = [
        format!("https://{host}{uri}"),
        format!("http://{host}{uri}"),
    ];
    let now_ms = Utc::now().timestamp_millis();
    if let (Some(sig), Some(ts)) = (
        header(headers, "x-hubspot-signature-v3"),
        header(headers, "x-hubspot-request-timestamp"),
    ) {
        let Ok(ts) = signature::parse_timestamp(ts) else {
            return false;
        };
        return urls
            .iter()
            .any(|u| signature::verify_v3(&r.secret, "POST", u, body, sig, ts, now_ms).is_ok());
    }
    if !r.ctx.two_way.accept_legacy_signatures {
        return false;
    }
    let Some(sig) = header(headers, "x-hubspot-signature") else {
        return false;
    };
    match header(headers, "x-hubspot-signature-version") {
        Some("v2") => urls
            .iter()
            .any(|u| signature::verify_v2(&r.secret, "POST", u, body, sig).is_ok()),
        _ => signature::verify_v1(&r.secret, body, sig).is_ok(),
    }
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !authentic(&r, &uri, &headers, &body) {
        r.ctx.count(
            &r.ctx.counters.webhooks_rejected,
            "driftless_sync_webhooks_rejected_total",
            1,
        );
        tracing::warn!(sink = %r.ctx.sink, "webhook refused: missing, bad or stale signature");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut ids = BTreeSet::new();
    let mut duplicates = 0;
    {
        let mut seen = r.seen.lock().expect("not poisoned");
        for e in &events {
            if let Some(id) = e["eventId"].as_i64()
                && !seen.insert(id)
            {
                duplicates += 1;
                continue;
            }
            let kind = e["subscriptionType"].as_str().unwrap_or_default();
            let (object, action) = kind.split_once('.').unwrap_or_default();
            if object == r.object
                && matches!(action, "creation" | "propertyChange" | "restore")
                && let Some(id) = e["objectId"].as_i64()
            {
                ids.insert(id.to_string());
            }
        }
    }
    if duplicates > 0 {
        r.ctx.count(
            &r.ctx.counters.webhook_duplicates,
            "driftless_sync_webhook_duplicates_total",
            duplicates,
        );
    }
    if ids.is_empty() {
        return StatusCode::NO_CONTENT;
    }
    match r.queue.try_send(ids.into_iter().collect()) {
        Ok(()) => StatusCode::NO_CONTENT,
        // HubSpot retries a 503: nothing is lost while the worker catches up.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The queue between the receiver/reconciler and the inbound worker.
pub fn queue() -> (mpsc::Sender<Vec<String>>, mpsc::Receiver<Vec<String>>) {
    mpsc::channel(QUEUE_CAPACITY)
}

/// Applies CRM changes to Postgres until shutdown: drains the queue in groups of up to
/// [`READ_BATCH`] ids, retrying transient failures with backoff (the ids are kept).
pub async fn inbound_worker(
    ctx: Arc<Context>,
    mut hubspot: HubspotSink,
    mut queue: mpsc::Receiver<Vec<String>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let mut pending: BTreeSet<String> = BTreeSet::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                ids = queue.recv() => match ids {
                    Some(ids) => pending.extend(ids),
                    None => return Ok(()),
                },
            }
        }
        while pending.len() < READ_BATCH {
            match queue.try_recv() {
                Ok(ids) => pending.extend(ids),
                Err(_) => break,
            }
        }
        let ids: Vec<String> = pending.iter().take(READ_BATCH).cloned().collect();
        let mut backoff = Backoff::new();
        loop {
            match apply_inbound(&ctx, &mut hubspot, &ids).await {
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
        for id in &ids {
            pending.remove(id);
        }
    }
}

/// Reads the records and applies their plans in one origin-tagged transaction.
async fn apply_inbound(
    ctx: &Context,
    hubspot: &mut HubspotSink,
    ids: &[String],
) -> Result<(), SinkError> {
    let records = ctx.read(hubspot, false, ids).await?;
    let crm_ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let mut store = ctx.store.lock().await;
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
    // Link records created in HubSpot to their new rows: set the id property there too.
    let mut links = Vec::new();
    let mut link_ledger = Vec::new();
    for (i, crm_id) in &created {
        let key = &keys[*i];
        if key.is_empty() {
            continue;
        }
        links.push(json!({"id": crm_id, "properties": {ctx.id_property.as_str(): key}}));
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
        let path = format!("/crm/v3/objects/{}/batch/update", hubspot.object());
        hubspot.post_json(&path, &json!({"inputs": links})).await?;
    }
    for (key, c) in &conflicts {
        ctx.record_conflicts(key, c).await?;
    }
    Ok(())
}

/// Searches for records modified since the cursor every `every` and queues them for the
/// inbound worker.
pub async fn reconcile_loop(
    ctx: Arc<Context>,
    mut hubspot: HubspotSink,
    queue: mpsc::Sender<Vec<String>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match reconcile_once(&ctx, &mut hubspot, &queue, &mut shutdown).await {
            Ok(n) => tracing::info!(sink = %ctx.sink, records = n, "reconciliation pass done"),
            Err(e) => tracing::warn!(sink = %ctx.sink, error = %e, "reconciliation pass failed"),
        }
    }
}

/// One reconciliation pass; returns the number of records queued.
pub async fn reconcile_once(
    ctx: &Context,
    hubspot: &mut HubspotSink,
    queue: &mpsc::Sender<Vec<String>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<usize, SinkError> {
    let modified = if hubspot.object() == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    };
    let path = format!("/crm/v3/objects/{}/search", hubspot.object());
    let (mut since_ms, _) = ctx
        .store
        .lock()
        .await
        .cursor()
        .await
        .map_err(store_failed)?
        .unwrap_or((0, String::new()));
    let mut queued = 0;
    let mut after: Option<String> = None;
    let mut newest_ms = since_ms;
    loop {
        if *shutdown.borrow() {
            return Ok(queued);
        }
        let mut body = json!({
            "filterGroups": [{"filters": [
                {"propertyName": modified, "operator": "GTE", "value": since_ms.to_string()}
            ]}],
            "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
            "properties": [modified],
            "limit": 100,
        });
        if let Some(a) = &after {
            body["after"] = json!(a);
        }
        // HubSpot allows 5 searches per second per token; stay under it.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let answer = hubspot.post_json(&path, &body).await?;
        ctx.count(&ctx.counters.api_reads, "driftless_sync_api_reads_total", 1);
        let mut ids = Vec::new();
        for r in answer["results"].as_array().into_iter().flatten() {
            if let Some(id) = r["id"].as_str() {
                ids.push(id.to_string());
            }
            if let Some(t) = parse_time(&r["properties"][modified]) {
                newest_ms = newest_ms.max(t.timestamp_millis());
            }
        }
        queued += ids.len();
        if !ids.is_empty() && queue.send(ids).await.is_err() {
            return Ok(queued);
        }
        after = answer["paging"]["next"]["after"].as_str().map(String::from);
        match &after {
            None => break,
            // Before the 10,000-result cap: a new search from the newest time seen.
            Some(a) if a.parse::<u64>().is_ok_and(|n| n >= 9_900) => {
                if newest_ms == since_ms {
                    tracing::warn!(sink = %ctx.sink,
                        "more than 10,000 records share one modification time; skipping ahead");
                    newest_ms += 1;
                }
                since_ms = newest_ms;
                after = None;
            }
            Some(_) => {}
        }
    }
    ctx.store
        .lock()
        .await
        .save_cursor(newest_ms, "")
        .await
        .map_err(store_failed)?;
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_read_answers_parse_with_latest_property_times() {
        let answer = json!({"results": [{
            "id": "901",
            "properties": {"firstname": "Ada", "pg_external_id": "7", "n": null},
            "propertiesWithHistory": {"firstname": [
                {"value": "Ada", "timestamp": "2026-11-27T10:00:02.000Z"},
                {"value": "Augusta", "timestamp": "2026-11-27T10:00:01.000Z"}
            ]}
        }], "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND"}]});
        let records = parse_records(&answer);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].properties["firstname"], "Ada");
        assert!(!records[0].properties.contains_key("n"));
        assert_eq!(
            records[0].changed_at["firstname"].to_rfc3339(),
            "2026-11-27T10:00:02+00:00"
        );
        assert_eq!(
            parse_time(&json!("1700000000000")).map(|t| t.timestamp()),
            Some(1_700_000_000)
        );
    }

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
    }
}
