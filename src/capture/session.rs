//! The capture session: the I/O shell around [`Assembler`].
//!
//! Owns one connection's worth of capture: connect, preflight and publication, the resume
//! point (slot life cycle against driftless's own checkpoint; on a standby in recovery that
//! holds a synchronized copy of the slot, a transient wait for its promotion), the initial
//! snapshot, and the streaming loop that moves values between the replication socket, the
//! [`Assembler`], the [`Publisher`] and [`Progress`]. Invariants:
//! - Postgres is told a flush position only after the checkpoint holding it is durable, and
//!   only up to what [`Progress`] says every earlier event's Kafka ack covers;
//! - at most `max_in_flight_events` events await acks: while that many are pending no WAL is
//!   read, but status updates keep flowing;
//! - the catalog facts of a Relation (types, key columns) are resolved here, by SQL, and
//!   handed to the assembler before the next message is applied.
//!
//! The streaming loop is one `select!` with priorities: shutdown, Kafka acks, status timer,
//! heartbeat timer, then new WAL.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::Client;

mod backfill_io;
mod report;
mod resume;

use super::assemble::{Assembler, Output, RelationFacts};
use super::backfill::Backfills;
use super::debezium;
use super::normalize::{self, ColumnInfo, Images, RelationInfo, Rendering, TxnContext};
use super::progress::{Progress, UnitId};
use super::value::PgType;
use super::{CaptureError, HEARTBEAT_PREFIX, Health, prepare_source};
use crate::checkpoint::{Checkpoint, CheckpointStore, Phase};
use crate::config::{Envelope, Oversize, ValidConfig};
use crate::event::{ChangeEvent, Op, Row, SnapshotMark};
use crate::kafka::{self, Enqueued, Outgoing, Publisher};
use crate::lsn::Lsn;
use crate::pgoutput::{self, DecodeContext, Message};
use crate::postgres::SourceError;
use crate::postgres::access;
use crate::postgres::catalog::{self, TableMeta};
use crate::postgres::connect::{ConnectParams, connect_sql};
use crate::postgres::error::PgError;
use crate::postgres::filter;
use crate::postgres::replication::{ReplicationConnection, ReplicationMessage, ReplicationStream};
use crate::postgres::snapshot::SnapshotReader;
use report::{RateMeter, SnapshotProgress};

/// One connection's worth of capture.
pub(super) struct Session<'a, P> {
    cfg: &'a ValidConfig,
    params: ConnectParams,
    sql: Client,
    /// Delivery reports are tagged with the unit of the event.
    producer: P,
    database: String,
    progress: Progress,
    /// `driftless_capture_events_total`, registered once (not looked up per event).
    events_total: metrics::Counter,
    /// Relation cache and transaction state (set when streaming starts).
    assembler: Assembler,
    /// The progress unit of the open transaction (or standalone message).
    unit: Option<UnitId>,
    /// Reused buffer of the assembler's outputs.
    outputs: Vec<Output>,
    types: HashMap<u32, PgType>,
    store: CheckpointStore,
    checkpoint: Checkpoint,
    /// Backfills (a table added to `source.tables`, or requested).
    backfills: Backfills<Row>,
    /// The running backfill's table and relation.
    backfill_rel: Option<(String, Arc<RelationInfo>)>,
    /// The running backfill's progress report.
    backfill_report: Option<SnapshotProgress>,
}

async fn connect(cfg: &ValidConfig) -> Result<(ConnectParams, Client), CaptureError> {
    let url = cfg.source_url.read().map_err(CaptureError::Url)?;
    let params = ConnectParams::from_url(&url)?;
    let sql = connect_sql(&params).await?;
    Ok((params, sql))
}

/// Topics capture writes to.
fn topics(cfg: &ValidConfig) -> Vec<String> {
    let mut t: Vec<String> = cfg
        .tables
        .iter()
        .map(|t| cfg.topic_for(&t.schema, &t.name))
        .collect();
    t.push(cfg.messages_topic());
    if cfg.oversize == Oversize::DeadLetter {
        t.push(cfg.capture_dead_letter_topic());
    }
    t
}

impl<'a> Session<'a, kafka::Producer<UnitId>> {
    /// Connects, decides the resume point and streams until shutdown or an error.
    pub(super) async fn run(
        cfg: &'a ValidConfig,
        shutdown: &mut watch::Receiver<bool>,
        health: &Health,
    ) -> Result<(), CaptureError> {
        let (params, sql) = connect(cfg).await?;
        let (database, _) = prepare_source(cfg, &sql).await?;
        resume::wait_for_promotion(cfg, &sql).await?;
        access::ensure_publication(
            &sql,
            &cfg.publication,
            &cfg.tables,
            &cfg.table_filters,
            cfg.manage_publication,
        )
        .await?;
        kafka::ensure_topics(
            &cfg.brokers,
            &cfg.librdkafka,
            &topics(cfg),
            cfg.partitions,
            cfg.replication_factor,
        )
        .await?;
        let producer = kafka::producer(&cfg.brokers, &cfg.librdkafka, cfg.max_in_flight_events)?;
        let mut repl = ReplicationConnection::connect(&params).await?;
        let system = repl.identify_system().await?;
        let store = CheckpointStore::new(&cfg.state_dir, &cfg.slot);
        let fresh = Checkpoint {
            version: 1,
            system_id: system.system_id.clone(),
            database: database.clone(),
            slot: cfg.slot.clone(),
            phase: Phase::Creating,
            consistent_point: Lsn::ZERO,
            flushed_lsn: Lsn::ZERO,
            timeline: Some(system.timeline),
            tables: None,
            backfills: Vec::new(),
        };
        let assembler = Assembler::new(&database, cfg.messages_topic(), Lsn::ZERO);
        let mut session = Session {
            cfg,
            params,
            sql,
            producer,
            database,
            progress: Progress::new(Lsn::ZERO),
            events_total: metrics::counter!("driftless_capture_events_total"),
            assembler,
            unit: None,
            outputs: Vec::new(),
            types: HashMap::new(),
            checkpoint: fresh,
            store,
            backfills: Backfills::new(Vec::new()),
            backfill_rel: None,
            backfill_report: None,
        };
        let resume = session.resume_point(&mut repl, system.timeline).await?;
        if *shutdown.borrow() {
            return Ok(());
        }
        session.plan_backfills()?;
        session.progress = Progress::new(resume);
        session.assembler = Assembler::new(&session.database, cfg.messages_topic(), resume);
        session.assembler.set_rendering(Rendering::of(cfg));
        // From the slot's consistent point no earlier commit is known (Debezium: null too).
        let previous = (resume != session.checkpoint.consistent_point).then_some(resume);
        session.assembler.set_previous_commit(previous);
        let publication = format!("\"{}\"", cfg.publication);
        let stream = repl
            .start_logical(
                &cfg.slot,
                resume,
                &[
                    ("proto_version", "1"),
                    ("publication_names", publication.as_str()),
                    ("messages", "true"),
                ],
            )
            .await?;
        // START_REPLICATION silently starts at max(requested, confirmed_flush_lsn): make sure
        // nobody moved the slot between our check and the start.
        session.check_slot_not_ahead(resume).await?;
        tracing::info!(slot = %cfg.slot, lsn = %resume, "replication started");
        health.streaming.store(true, Ordering::Relaxed);
        session.stream(stream, resume, shutdown).await
    }
}

impl<P: Publisher<UnitId>> Session<'_, P> {
    async fn relation_from_meta(&mut self, t: &TableMeta) -> Result<RelationInfo, CaptureError> {
        let mut columns = Vec::with_capacity(t.columns.len());
        for c in &t.columns {
            let ty = self.resolve_type(c.type_oid).await?;
            columns.push(ColumnInfo {
                name: c.name.clone(),
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                ty,
            });
        }
        Ok(RelationInfo::new(
            t.oid,
            t.name.schema.clone(),
            t.name.name.clone(),
            self.cfg.topic_for(&t.name.schema, &t.name.name),
            columns,
            &t.key_columns,
            &[],
        )
        .rendered(Rendering::of(self.cfg)))
    }

    async fn resolve_type(&mut self, oid: u32) -> Result<PgType, CaptureError> {
        if let Some(t) = self.types.get(&oid) {
            return Ok(t.clone());
        }
        let t = catalog::resolve_type(&self.sql, oid).await?;
        self.types.insert(oid, t.clone());
        Ok(t)
    }

    /// Reads every table in the exported snapshot and publishes `r` events; returns once Kafka
    /// acknowledged all of them.
    async fn snapshot(
        &mut self,
        snapshot_name: &str,
        consistent_point: Lsn,
    ) -> Result<(), CaptureError> {
        let started = chrono::Utc::now();
        let commit_ms = started.timestamp_millis();
        // A connection of its own: the snapshot transaction must not share the catalog one.
        let sql = connect_sql(&self.params).await?;
        let cfg = self.cfg;
        let reader =
            SnapshotReader::begin(&sql, snapshot_name, cfg.snapshot_chunk_rows, &cfg.tables)
                .await?;
        // Columns as of now that the tables are locked (DDL may have run since preflight).
        let mut tables = catalog::tables(&sql, &cfg.tables).await?;
        filter::project(&mut tables, &cfg.table_filters);
        let mut rels = Vec::new();
        for t in &tables {
            rels.push(self.relation_from_meta(t).await?);
        }
        // Every count first (exact: in the snapshot), so each row knows its Debezium mark.
        let mut totals = Vec::with_capacity(tables.len());
        for meta in &tables {
            totals.push(reader.count(meta, cfg.row_filter(&meta.name)).await?);
        }
        // Debezium's reads carry the id of the transaction that read them (driftless's own
        // envelope: none).
        let xid = match cfg.envelope {
            Envelope::Debezium => Some(reader.transaction_id().await?),
            Envelope::Driftless => None,
        };
        let unit = self.progress.open();
        for (i, (meta, rel)) in tables.iter().zip(&rels).enumerate() {
            let row_filter = cfg.row_filter(&meta.name);
            let mut report = SnapshotProgress::new(&meta.name.to_string(), totals[i]);
            let mut ctx = TxnContext::read(
                &self.database,
                consistent_point,
                started,
                SnapshotMark::Middle,
            );
            ctx.xid = xid;
            let mut cursor = reader.open(meta, row_filter).await?;
            let mut n = 0;
            while let Some(rows) = cursor.next_chunk().await? {
                for row in &rows {
                    ctx.mark = SnapshotMark::initial(&totals, i, n);
                    n += 1;
                    let after = rel.row_from_text(|i| row.get(i));
                    let images = Images {
                        key: normalize::key_of(rel, &after),
                        before: None,
                        after: Some(after),
                        unchanged_toast: vec![],
                        key_change: None,
                    };
                    let ev = ctx.event(rel, consistent_point, Op::Read, images);
                    self.send(unit, &rel.topic, &ev, commit_ms).await?;
                }
                report.advance(rows.len() as u64);
                // Drain acks that are ready so the in-flight window keeps moving.
                self.drain_ready()?;
            }
            report.finish();
        }
        reader.finish().await?;
        self.progress.close(unit, consistent_point);
        while self.progress.in_flight() > 0 {
            self.wait_acks().await?;
        }
        tracing::info!(
            tables = tables.len(),
            "snapshot complete and acknowledged by kafka"
        );
        Ok(())
    }

    /// Applies the delivery reports that are ready (a delivery error ends the session).
    fn drain_ready(&mut self) -> Result<(), CaptureError> {
        while let Some(r) = self.producer.try_ack() {
            self.progress.acked(r?);
        }
        Ok(())
    }

    /// Waits for one delivery report, then applies the others already there. Cancel-safe.
    async fn wait_acks(&mut self) -> Result<(), CaptureError> {
        let unit = self.producer.next_ack().await?;
        self.progress.acked(unit);
        self.drain_ready()
    }

    /// Hands one event to Kafka (waiting for acks while the in-flight window is full).
    async fn send(
        &mut self,
        unit: UnitId,
        topic: &str,
        ev: &ChangeEvent,
        timestamp_ms: i64,
    ) -> Result<(), CaptureError> {
        let dbz = &self.cfg.debezium;
        let (key, payload, key_change) = match self.cfg.envelope {
            Envelope::Driftless => (ev.kafka_key(), ev.to_json(), None),
            Envelope::Debezium if dbz.skips(ev.op.code()) => return Ok(()),
            Envelope::Debezium => (
                debezium::key(ev),
                debezium::value(ev, &self.cfg.topic_prefix, dbz, timestamp_ms),
                debezium::key_change_header(ev),
            ),
        };
        let size_bytes = payload.len() + key.as_ref().map_or(0, Vec::len);
        if size_bytes > self.cfg.max_event_bytes {
            return self.oversize(unit, ev, size_bytes, timestamp_ms).await;
        }
        let header;
        let headers: &[(&str, &[u8])] = match &key_change {
            Some((name, bytes)) => {
                header = [(*name, bytes.as_slice())];
                &header
            }
            None => &[],
        };
        let record = Outgoing {
            topic,
            key: key.as_deref(),
            payload: Some(&payload),
            timestamp_ms,
            headers,
        };
        self.produce(unit, &record).await?;
        if self.cfg.envelope == Envelope::Debezium && ev.op == Op::Delete {
            // Debezium follows a delete with a tombstone so compacted topics drop the key.
            let tombstone = Outgoing {
                payload: None,
                ..record
            };
            self.produce(unit, &tombstone).await?;
        }
        self.events_total.increment(1);
        Ok(())
    }

    /// An event over `max_event_bytes`: refused, or (`oversize = "dead_letter"`) its position
    /// and size (never its values or key) go to the capture dead-letter topic, acknowledged
    /// like the event would have been, and the stream goes on.
    async fn oversize(
        &mut self,
        unit: UnitId,
        ev: &ChangeEvent,
        size_bytes: usize,
        timestamp_ms: i64,
    ) -> Result<(), CaptureError> {
        let table = format!("{}.{}", ev.source.schema, ev.source.table);
        let max_event_bytes = self.cfg.max_event_bytes;
        if self.cfg.oversize == Oversize::Fail {
            return Err(CaptureError::Oversize {
                table,
                lsn: ev.source.lsn.to_string(),
                size_bytes,
                max_event_bytes,
            });
        }
        tracing::warn!(table = %table, lsn = %ev.source.lsn, size_bytes, max_event_bytes,
            "event over kafka.max_event_bytes sent to the capture dead-letter topic");
        let record = serde_json::json!({
            "reason": "oversize",
            "table": table,
            "op": ev.op,
            "id": ev.id,
            "lsn": ev.source.lsn.to_string(),
            "commit_lsn": ev.source.commit_lsn.to_string(),
            "size_bytes": size_bytes,
            "max_event_bytes": max_event_bytes,
        });
        let payload = serde_json::to_vec(&record).expect("json values serialize");
        let topic = self.cfg.capture_dead_letter_topic();
        let record = Outgoing {
            topic: &topic,
            key: None,
            payload: Some(&payload),
            timestamp_ms,
            headers: &[],
        };
        self.produce(unit, &record).await
    }

    async fn produce(&mut self, unit: UnitId, out: &Outgoing<'_>) -> Result<(), CaptureError> {
        loop {
            if self.progress.in_flight() as usize >= self.cfg.max_in_flight_events {
                self.wait_one_ack().await?;
                continue;
            }
            match self.producer.enqueue(out, unit)? {
                Enqueued::Ok => {
                    self.progress.sent(unit);
                    return Ok(());
                }
                Enqueued::QueueFull => self.wait_one_ack().await?,
            }
        }
    }

    async fn wait_one_ack(&mut self) -> Result<(), CaptureError> {
        if self.progress.in_flight() > 0 {
            self.wait_acks().await
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        }
    }

    /// Stores the checkpoint (if it moved) and tells Postgres the flushable LSN.
    async fn send_status(
        &mut self,
        stream: &mut ReplicationStream,
        received: Lsn,
        reply: bool,
    ) -> Result<(), CaptureError> {
        let flush = self.progress.flushable();
        if flush > self.checkpoint.flushed_lsn {
            self.checkpoint.flushed_lsn = flush;
            self.backfill_flushed(flush);
            self.store.store(&self.checkpoint)?;
        }
        let flush = self.checkpoint.flushed_lsn;
        stream
            .send_status(received.max(flush), flush, flush, reply)
            .await?;
        metrics::gauge!("driftless_capture_acked_lsn").set(flush.as_u64() as f64);
        metrics::gauge!("driftless_capture_replication_lag_bytes")
            .set(received.as_u64().saturating_sub(flush.as_u64()) as f64);
        metrics::gauge!("driftless_capture_in_flight_events").set(self.progress.in_flight() as f64);
        Ok(())
    }

    async fn stream(
        &mut self,
        mut stream: ReplicationStream,
        resume: Lsn,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), CaptureError> {
        let cfg = self.cfg;
        let mut status = tokio::time::interval(Duration::from_millis(cfg.status_interval_ms));
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let heartbeat_ms = cfg.heartbeat_interval_ms.unwrap_or(3_600_000);
        let mut heartbeat = tokio::time::interval(Duration::from_millis(heartbeat_ms));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        // How often a backfill checks whether its next chunk may be read.
        let mut backfill = tokio::time::interval(Duration::from_millis(20));
        backfill.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut received = resume;
        let decode_ctx = DecodeContext {
            proto_version: 1,
            in_stream: false,
        };
        let mut rate = RateMeter::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    // Wait (bounded) for outstanding acks so the final status covers them.
                    let deadline = tokio::time::sleep(Duration::from_secs(10));
                    tokio::pin!(deadline);
                    while self.progress.in_flight() > 0 {
                        tokio::select! {
                            r = self.wait_acks() => r?,
                            _ = &mut deadline => break,
                        }
                    }
                    self.send_status(&mut stream, received, false).await?;
                    tracing::info!(lsn = %self.checkpoint.flushed_lsn, "capture stopped");
                    return Ok(());
                }
                r = self.producer.next_ack(), if self.progress.in_flight() > 0 => {
                    self.progress.acked(r?);
                    self.drain_ready()?;
                }
                _ = status.tick() => {
                    self.send_status(&mut stream, received, false).await?;
                    metrics::gauge!("driftless_capture_events_per_second").set(rate.tick());
                }
                _ = backfill.tick(), if self.backfills.running().is_some() => {
                    self.backfill_chunk().await?;
                }
                _ = heartbeat.tick(), if cfg.heartbeat_interval_ms.is_some() => {
                    self.sql
                        .execute("SELECT pg_logical_emit_message(false, $1, '')", &[&HEARTBEAT_PREFIX])
                        .await
                        .map_err(SourceError::from)?;
                }
                msg = stream.next(), if (self.progress.in_flight() as usize) < cfg.max_in_flight_events => {
                    match msg? {
                        None => {
                            return Err(PgError::Io(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "server ended the replication stream",
                            )).into());
                        }
                        Some(ReplicationMessage::Keepalive { wal_end, reply_requested, .. }) => {
                            received = received.max(wal_end);
                            if !self.assembler.in_transaction() {
                                self.progress.keepalive(wal_end);
                                if self.progress.is_idle() {
                                    metrics::gauge!("driftless_capture_replication_lag_seconds").set(0.0);
                                }
                            }
                            if reply_requested {
                                self.send_status(&mut stream, received, false).await?;
                            }
                        }
                        Some(ReplicationMessage::XLogData { wal_start, wal_end, data, .. }) => {
                            received = received.max(wal_end);
                            let msg = pgoutput::decode(&data, &decode_ctx)
                                .map_err(|e| CaptureError::Protocol(e.to_string()))?;
                            let sent = self.handle(msg, wal_start).await?;
                            rate.add(sent);
                        }
                    }
                }
            }
        }
    }

    /// Applies one decoded message through the assembler; returns the number of events sent.
    async fn handle(&mut self, msg: Message, lsn: Lsn) -> Result<u64, CaptureError> {
        let mut outputs = std::mem::take(&mut self.outputs);
        self.assembler.apply(msg, lsn, &mut outputs)?;
        let mut sent = 0;
        for out in outputs.drain(..) {
            match out {
                Output::Begin { .. } => self.unit = Some(self.progress.open()),
                Output::Event {
                    topic,
                    event,
                    timestamp_ms,
                } => {
                    let unit = self.unit.ok_or_else(|| outside_unit("event"))?;
                    let timestamp_ms =
                        timestamp_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                    self.backfill_saw(&event);
                    self.send(unit, &topic, &event, timestamp_ms).await?;
                    sent += 1;
                }
                Output::Commit { end_lsn, commit_ms } => {
                    let unit = self.unit.take().ok_or_else(|| outside_unit("commit"))?;
                    self.progress.close(unit, end_lsn);
                    if let Some(commit_ms) = commit_ms {
                        let lag_ms = chrono::Utc::now().timestamp_millis() - commit_ms;
                        metrics::gauge!("driftless_capture_replication_lag_seconds")
                            .set(lag_ms.max(0) as f64 / 1000.0);
                    }
                }
                Output::Describe(r) => {
                    self.backfill_relation_changed(r.oid);
                    let facts = self.describe(&r).await?;
                    self.assembler.relation(r, facts);
                }
                Output::Control {
                    watermark,
                    content,
                    lsn,
                } => self.backfill_control(watermark, &content, lsn).await?,
            }
        }
        self.outputs = outputs;
        Ok(sent)
    }

    /// The catalog facts of a Relation message: column types and key columns.
    async fn describe(&mut self, r: &pgoutput::Relation) -> Result<RelationFacts, CaptureError> {
        let mut types = Vec::with_capacity(r.columns.len());
        for c in &r.columns {
            types.push(self.resolve_type(c.type_oid).await?);
        }
        let ident = (r.replica_identity as char).to_string();
        let key_names = catalog::key_columns(&self.sql, r.oid, &ident).await?;
        Ok(RelationFacts {
            topic: self.cfg.topic_for(&r.namespace, &r.name),
            types,
            key_names,
        })
    }
}

fn outside_unit(what: &str) -> CaptureError {
    CaptureError::Protocol(format!("assembler: {what} outside a unit"))
}
