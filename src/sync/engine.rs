//! The vocabulary two-way sync shares between its loops: the [`Crm`] a destination implements,
//! the [`Context`] the outbound and inbound halves share (with the durable [`Inbox`] between
//! the receivers / reconciliation and the inbound worker), the state of a CRM's webhook route
//! ([`Receiver`]) and a reconciliation listing in progress ([`Listing`]).
//!
//! The loops themselves: [`super::outbound`] (Postgres → CRM, filtered by the plan),
//! [`super::inbound`] (CRM → Postgres) and [`super::reconcile`] (the safety net for lost
//! notifications). Invariants of the whole engine:
//! - outbound: before a batch is written, the records' current CRM values (with change times)
//!   and Postgres's current rows are read; only fields the plan pushes are sent, records with
//!   nothing to push cost no write, fields the CRM wins are written into Postgres instead
//!   (origin-tagged), and the ledger is updated once the CRM accepted;
//! - inbound: the worker reads the changed records and applies their plans in one origin-tagged
//!   transaction with the ledger rows; records created in the CRM get a row and are linked to
//!   it (their id property is set), so no duplicate appears on either side; such a link is
//!   kept pending in the ledger until the CRM confirms it for that record, retried while the
//!   worker is idle, and an outbound write of a key whose link is still pending is refused
//!   (dead-lettered) rather than upserted by the id property, which would create a second
//!   record; outbound reads of linked keys go by the linked CRM id;
//! - reconciliation asks the CRM for records modified in a window that starts at a durable
//!   cursor and ends `reconcile_lag` before now, commits their ids to the inbox, and only then
//!   moves the cursor to the window's end, so lost or reordered notifications are repaired and
//!   a kill at any point loses nothing; the receivers answer 2xx only once a delivery's ids are
//!   in the inbox, and refuse a body over [`MAX_DELIVERY_BYTES`] (413) unread;
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
//! - an inbound change Postgres refuses for its values (SQLSTATE classes 22, 23) or whose CRM
//!   value does not map back is set aside alone ([`super::dead_letter`]): the others commit,
//!   its ledger row is not written; missing grants or a changed table (class 42) are fatal;
//! - no row values in logs, metrics or the audit trail (conflicts record column, times, winner).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::{Mutex, watch};

use crate::config::fields::FieldRule;
use crate::config::two_way::TwoWay;
use crate::error::{Classify, ErrorClass};
use crate::sink::SinkError;
use crate::sink::audit::{AuditTrail, RecordKey};
use crate::sink::crm::CrmWrites;
use crate::sink::mapping::Property;
use crate::sink::status_report::StatusReport;
use crate::sync::dead_letter::{DeadLetters, Skipped, SkippedRecord};
use crate::sync::inbox::{CursorKind, Inbox};
use crate::sync::plan::{Conflict, CrmRecord, Mapping};
use crate::sync::store::{InboundChange, LedgerRow, Store, StoreError, Written};

/// Records the inbound worker handles at once.
pub(crate) const INBOUND_BATCH: usize = 50;
/// Notification ids remembered for de-duplication.
const SEEN_EVENTS: usize = 100_000;

/// Which records a [`Crm::read`] looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadBy {
    /// By id-property values (outbound).
    IdProperty,
    /// By CRM ids (inbound).
    CrmId,
}

/// A CRM as two-way sync needs it, besides writing batches ([`Sink`]).
pub(crate) trait Crm: CrmWrites + Sized {
    /// Records by id-property values or CRM ids, with per-property change times.
    fn read(
        &mut self,
        ctx: &Context,
        by: ReadBy,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<CrmRecord>, SinkError>> + Send;

    /// Sets the id property of records created in the CRM, (CRM id, record key), and returns
    /// the CRM ids whose link the CRM confirmed; the others stay pending (retried later).
    fn link(
        &mut self,
        ctx: &Context,
        links: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<String>, SinkError>> + Send;

    /// Queues, through [`Listing::queue`], the ids of the records last modified in the
    /// listing's window `[from_ms, until_ms)`, paging by keyset on the record id (a page never
    /// depends on an offset into a result set that changes while paging). Stops early once
    /// [`Listing::stopped`].
    fn list_modified(
        &mut self,
        listing: &mut Listing<'_>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Like [`Crm::list_modified`], for the records deleted in the window.
    fn list_deleted(
        &mut self,
        listing: &mut Listing<'_>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Another client with the same credentials (for the inbound tasks).
    fn sibling(&self) -> Self;
}

/// One reconciliation listing in progress: its window and what it queued (durably) for the
/// inbound worker.
pub(crate) struct Listing<'a> {
    /// The two-way sink.
    pub(crate) ctx: &'a Context,
    /// Modified or deleted records.
    pub(crate) kind: CursorKind,
    /// Start of the window (epoch milliseconds, inclusive): the saved cursor.
    pub(crate) from_ms: i64,
    /// End of the window (epoch milliseconds, exclusive): `reconcile_lag` before the pass
    /// began, so a change younger than that (which a lagging search index may not show yet)
    /// is left for the next pass.
    pub(crate) until_ms: i64,
    queued: usize,
    shutdown: &'a watch::Receiver<bool>,
}

impl<'a> Listing<'a> {
    pub(crate) fn new(
        ctx: &'a Context,
        kind: CursorKind,
        (from_ms, until_ms): (i64, i64),
        shutdown: &'a watch::Receiver<bool>,
    ) -> Self {
        Listing {
            ctx,
            kind,
            from_ms,
            until_ms,
            queued: 0,
            shutdown,
        }
    }

    /// True once shutdown was asked for: the listing stops where it is (and its cursor stays).
    pub(crate) fn stopped(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The window, `[from_ms, until_ms)`.
    pub(crate) fn window(&self) -> (i64, i64) {
        (self.from_ms, self.until_ms)
    }

    /// Commits the ids found to the inbox ([`Inbound::Changed`] or [`Inbound::Deleted`] after
    /// `kind`).
    pub(crate) async fn queue(&mut self, ids: Vec<String>) -> Result<(), SinkError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.queued += ids.len();
        let item = match self.kind {
            CursorKind::Modified => Inbound::Changed(ids),
            CursorKind::Deleted => Inbound::Deleted(ids),
        };
        self.ctx.inbox.add(&[item]).await.map_err(store_failed)
    }

    /// How many ids were queued.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }
}

/// Paging of a listing's window by ascending record id (a keyset, never an offset):
/// `while !keyset.done(l)`, fetch the ids after [`ById::after`] and hand them to
/// [`ById::page`], which commits them to the inbox before the next page is asked for.
#[derive(Default)]
pub(crate) struct ById {
    last_id: Option<String>,
    finished: bool,
}

impl ById {
    /// The last id seen (None before the first page).
    pub(crate) fn after(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// True once the last page was handed over, or at shutdown.
    pub(crate) fn done(&self, l: &Listing<'_>) -> bool {
        self.finished || l.stopped()
    }

    /// Queues one page's ids (ascending); `more`: whether the CRM said more may follow.
    pub(crate) async fn page(
        &mut self,
        l: &mut Listing<'_>,
        ids: Vec<String>,
        more: bool,
    ) -> Result<(), SinkError> {
        self.finished = !more || ids.is_empty();
        if let Some(last) = ids.last() {
            self.last_id = Some(last.clone());
        }
        l.queue(ids).await
    }
}

/// Counters of a two-way sink (also exported as metrics).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// CRM reads made by sync (HubSpot batch/read and search, Zoho COQL).
    pub(crate) api_reads: AtomicU64,
    /// Records written into Postgres.
    pub(crate) inbound_writes: AtomicU64,
    /// Rows deleted in Postgres because their CRM records were deleted.
    pub(crate) inbound_deletes: AtomicU64,
    /// CRM changes found to be our own writes (or already in sync).
    pub(crate) echoes: AtomicU64,
    /// Conflicts settled.
    pub(crate) conflicts: AtomicU64,
    /// Webhooks refused (bad or stale signature; Zoho: wrong or missing token; a body over
    /// [`MAX_DELIVERY_BYTES`]).
    pub(crate) webhooks_rejected: AtomicU64,
    /// Webhook events seen twice.
    pub(crate) webhook_duplicates: AtomicU64,
}

/// What the outbound and inbound halves share.
pub(crate) struct Context {
    /// Sink name.
    pub(crate) sink: String,
    /// Unique property records are matched by.
    pub(crate) id_property: String,
    /// Field rules.
    pub(crate) rules: Vec<FieldRule>,
    /// HubSpot properties of the object.
    pub(crate) schema: BTreeMap<String, Property>,
    /// Ownership and inbound settings.
    pub(crate) two_way: TwoWay,
    /// Durable state and origin-tagged writes.
    pub(crate) store: Mutex<Store>,
    /// CRM ids waiting for the inbound worker (durable).
    pub(crate) inbox: Inbox,
    /// Conflicts and set-aside records go to the audit trail.
    pub(crate) audit: AuditTrail,
    /// Inbound records Postgres refused (or that do not map back) go to the dead-letter topic.
    pub(crate) dead_letters: DeadLetters,
    /// Counters.
    pub(crate) counters: Counters,
    /// Where the inbound half's errors are reported for `driftless status`.
    pub(crate) status: StatusReport,
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

pub(crate) fn store_failed(e: StoreError) -> SinkError {
    match e.class() {
        ErrorClass::Fatal => SinkError::Fatal {
            hint: e.hint().unwrap_or_default(),
            message: e.to_string(),
        },
        _ => SinkError::transient(format!("sync state in Postgres: {e}"), None),
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

    /// Counts one read API call made by sync.
    pub(crate) fn count_read(&self) {
        self.count(
            &self.counters.api_reads,
            "driftless_sync_api_reads_total",
            1,
        );
    }

    /// Writes CRM changes into Postgres in one origin-tagged transaction with their ledger
    /// rows (`ledger[i]` belongs to `changes[i]`, when there are any; nothing when there are no
    /// changes) and counts them: deletions as inbound deletes, the rest as inbound writes.
    /// Changes Postgres refuses for their values are rolled back alone and set aside
    /// ([`Context::dead_letter`]). Returns the keys of the changed rows, in order (empty for a
    /// change set aside or whose row is gone).
    pub(crate) async fn write_inbound(
        &self,
        store: &mut Store,
        changes: &[InboundChange],
        ledger: &[LedgerRow],
    ) -> Result<Vec<String>, SinkError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let written = store
            .write_inbound(changes, ledger)
            .await
            .map_err(store_failed)?;
        let (mut keys, mut skipped) = (Vec::new(), Vec::new());
        let (mut writes, mut deletes) = (0, 0);
        for (i, (w, change)) in written.into_iter().zip(changes).enumerate() {
            match (w, change) {
                (Written::Applied(key), InboundChange::Delete { .. }) => {
                    deletes += 1;
                    keys.push(key);
                }
                (Written::Applied(key), _) => {
                    writes += 1;
                    keys.push(key);
                }
                (Written::Refused(r), change) => {
                    let key = match change {
                        InboundChange::Update { key, .. } | InboundChange::Delete { key } => {
                            Some(key.clone())
                        }
                        InboundChange::Insert { .. } => None,
                    };
                    let crm_id = ledger.get(i).and_then(|l| l.crm_id.clone());
                    skipped.push(Skipped::refused(crm_id, key, r));
                    keys.push(String::new());
                }
            }
        }
        let counted = [
            (
                &self.counters.inbound_writes,
                "driftless_sync_inbound_writes_total",
                writes,
            ),
            (
                &self.counters.inbound_deletes,
                "driftless_sync_inbound_deletes_total",
                deletes,
            ),
        ];
        for (counter, name, n) in counted {
            if n > 0 {
                self.count(counter, name, n);
            }
        }
        self.dead_letter(&skipped).await?;
        Ok(keys)
    }

    /// Sets inbound records aside: each goes to the dead-letter topic (acknowledged), the log
    /// and the audit trail, with names and SQLSTATEs only, and is counted.
    pub(crate) async fn dead_letter(&self, skipped: &[Skipped]) -> Result<(), SinkError> {
        if skipped.is_empty() {
            return Ok(());
        }
        let hashes: Vec<Option<String>> = skipped
            .iter()
            .map(|s| {
                let key = s.key.as_deref()?;
                self.audit.key_hash(RecordKey::Text(key))
            })
            .collect();
        for (s, key_hash) in skipped.iter().zip(&hashes) {
            self.dead_letters
                .send(&self.sink, s, key_hash.as_deref())
                .await?;
            tracing::warn!(sink = %self.sink, category = s.category,
                sqlstate = s.sqlstate.as_deref().unwrap_or_default(),
                column = s.column.as_deref().unwrap_or_default(),
                constraint = s.constraint.as_deref().unwrap_or_default(),
                crm_id = s.crm_id.as_deref().unwrap_or_default(),
                key_hash = key_hash.as_deref().unwrap_or_default(),
                "inbound record dead-lettered");
        }
        let records: Vec<SkippedRecord<'_>> = skipped
            .iter()
            .zip(hashes)
            .map(|(s, key_hash)| SkippedRecord::new(&self.sink, s, key_hash))
            .collect();
        self.audit
            .write_keyed(&records, |r| &r.audit_key)
            .await
            .map_err(|e| SinkError::transient(e.to_string(), None))?;
        metrics::counter!("driftless_sync_inbound_dead_letters_total", "sink" => self.sink.clone())
            .increment(skipped.len() as u64);
        Ok(())
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
        let Some(key_hash) = self.audit.key_hash(RecordKey::Text(key)) else {
            return Ok(());
        };
        let time = Utc::now().to_rfc3339();
        let records: Vec<ConflictRecord<'_>> = conflicts
            .iter()
            .map(|c| ConflictRecord {
                time: time.clone(),
                sink: &self.sink,
                kind: "conflict",
                key_hash: key_hash.clone(),
                field: &c.column,
                postgres_at: c.postgres_at.map(|t| t.to_rfc3339()),
                crm_at: c.crm_at.map(|t| t.to_rfc3339()),
                winner: c.winner,
            })
            .collect();
        self.audit
            .write_keyed(&records, |r| &r.key_hash)
            .await
            .map_err(|e| SinkError::transient(e.to_string(), None))
    }

    /// Counts and logs a delivery refused for its credentials (never its body); 401.
    pub(crate) fn refuse(&self, message: &str) -> axum::http::StatusCode {
        self.refused(message);
        axum::http::StatusCode::UNAUTHORIZED
    }

    /// Counts and logs a refused delivery (never its body).
    fn refused(&self, message: &str) {
        self.count(
            &self.counters.webhooks_rejected,
            "driftless_sync_webhooks_rejected_total",
            1,
        );
        tracing::warn!(sink = %self.sink, "{message}");
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
    pub(crate) fn properties(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.property.as_str()).collect()
    }
}

/// Asks the CRM to link records created there to their rows, (CRM id, record key), and marks
/// the links it confirmed; returns the links still pending.
pub(crate) async fn complete_links<C: Crm>(
    ctx: &Context,
    store: &Store,
    crm: &mut C,
    links: &[(String, String)],
) -> Result<Vec<(String, String)>, SinkError> {
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let confirmed: HashSet<String> = crm.link(ctx, links).await?.into_iter().collect();
    let (done, pending): (Vec<_>, Vec<_>) = links
        .iter()
        .cloned()
        .partition(|(crm_id, _)| confirmed.contains(crm_id));
    let done: Vec<String> = done.into_iter().map(|(crm_id, _)| crm_id).collect();
    store.confirm_links(&done).await.map_err(store_failed)?;
    Ok(pending)
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

/// CRM ids for the inbound worker, as the receivers and reconciliation hand them to the
/// [`Inbox`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Records created, changed or restored in the CRM.
    Changed(Vec<String>),
    /// Records deleted in the CRM.
    Deleted(Vec<String>),
}

/// The largest webhook (notification) body a receiver reads. HubSpot sends at most 100 events
/// of a few hundred bytes per delivery and Zoho a list of ids, so a larger body is not the CRM's.
pub(crate) const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

/// Counts and logs a delivery refused for its size (axum answered 413 without reading it).
async fn too_large(
    axum::extract::State(r): axum::extract::State<Arc<Receiver>>,
    response: axum::response::Response,
) -> axum::response::Response {
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        r.ctx.refused(&format!(
            "delivery refused: body over {MAX_DELIVERY_BYTES} bytes (413)"
        ));
    }
    response
}

/// The state of a CRM's webhook (notification) route, shared by its handler.
pub(crate) struct Receiver {
    /// The two-way sink.
    pub(crate) ctx: Arc<Context>,
    /// What deliveries are checked against (a signing secret or a channel token).
    pub(crate) secret: String,
    /// The object (module) as the CRM names it in deliveries.
    pub(crate) object: String,
    /// Delivery (or event) ids seen recently.
    pub(crate) seen: std::sync::Mutex<Seen>,
}

impl Receiver {
    pub(crate) fn new(ctx: Arc<Context>, secret: String, object: &str) -> Self {
        Receiver {
            ctx,
            secret,
            object: object.to_string(),
            seen: std::sync::Mutex::new(Seen::default()),
        }
    }

    /// The route at the sink's `webhook_path`: POSTs go to `handler`, with this state. A body
    /// over [`MAX_DELIVERY_BYTES`] is answered 413 unread (nothing queued), counted and logged
    /// without the body.
    pub(crate) fn router<H, T>(self, handler: H) -> axum::Router
    where
        H: axum::handler::Handler<T, Arc<Receiver>>,
        T: 'static,
    {
        let path = self.ctx.two_way.webhook_path.clone();
        let receiver = Arc::new(self);
        axum::Router::new()
            .route(&path, axum::routing::post(handler))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_DELIVERY_BYTES))
            .layer(axum::middleware::map_response_with_state(
                receiver.clone(),
                too_large,
            ))
            .with_state(receiver)
    }

    /// What the receiver answers for a delivery: 204 once all of `items` are committed to the
    /// inbox. When Postgres cannot take them it answers 503 and forgets the delivery's `fresh`
    /// ids, so the CRM's retry is not dropped as a duplicate (reconciliation repairs what is
    /// still missed).
    pub(crate) async fn deliver(
        &self,
        fresh: &[i64],
        items: Vec<Inbound>,
    ) -> axum::http::StatusCode {
        match self.ctx.inbox.add(&items).await {
            Ok(()) => axum::http::StatusCode::NO_CONTENT,
            Err(e) => {
                tracing::warn!(sink = %self.ctx.sink, error = %e,
                    "cannot queue a notification in Postgres; answering 503");
                self.seen.lock().expect("not poisoned").forget(fresh);
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
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
}
