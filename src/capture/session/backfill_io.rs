//! The I/O half of backfills (`capture::backfill` is the pure half): which tables to backfill
//! when a session starts, writing a chunk's watermarks and reading it, sending what is left of
//! it at its high watermark, and storing progress once Kafka acknowledged it.
//!
//! The relation the chunks are read with is cached and dropped at a Relation message of its
//! table; whether a streamed change belongs to the running backfill is decided by the names
//! the change carries, never by that cache (a Relation message may come inside a window).

use std::sync::Arc;

use tokio_postgres::SimpleQueryMessage;

use super::{Session, SnapshotProgress};
use crate::capture::CaptureError;
use crate::capture::backfill::{AtWatermark, Chunk, REQUEST_PREFIX, Snapshot, WATERMARK_PREFIX};
use crate::capture::normalize::{self, Images, RelationInfo, TxnContext};
use crate::capture::progress::UnitId;
use crate::config::{Envelope, SnapshotMode, TableName};
use crate::event::{ChangeEvent, Op, Row, SnapshotMark, canonical_key};
use crate::kafka::Publisher;
use crate::lsn::Lsn;
use crate::postgres::SourceError;
use crate::postgres::catalog;
use crate::postgres::filter;
use crate::postgres::sql::{quote_ident, quote_literal, quote_table};

impl<P: Publisher<UnitId>> Session<'_, P> {
    /// At a streaming start: a table configured since the last start is backfilled (unless
    /// `source.snapshot = "never"`), a backfill of a table no longer configured is dropped,
    /// and the checkpoint records the tables.
    pub(super) fn plan_backfills(&mut self) -> Result<(), CaptureError> {
        let configured: Vec<String> = self.cfg.tables.iter().map(|t| t.to_string()).collect();
        let cp = &mut self.checkpoint;
        cp.backfills.retain(|b| configured.contains(&b.table));
        let mut backfills = crate::capture::backfill::Backfills::new(cp.backfills.clone());
        if let Some(known) = &cp.tables
            && self.cfg.snapshot == SnapshotMode::Initial
        {
            for t in configured.iter().filter(|t| !known.contains(t)) {
                if backfills.request(t) {
                    tracing::info!(table = %t, "table added to source.tables: backfilling it");
                }
            }
        }
        for b in backfills.stored() {
            tracing::info!(table = %b.table, rows = b.rows, resumed = b.after_key.is_some(),
                "backfill pending");
        }
        cp.backfills = backfills.stored().to_vec();
        cp.tables = Some(configured);
        self.store.store(cp)?;
        self.backfills = backfills;
        Ok(())
    }

    /// Writes the low watermark, reads the running backfill's next chunk and writes the high
    /// watermark (nothing when a chunk is in flight or no backfill runs).
    pub(super) async fn backfill_chunk(&mut self) -> Result<(), CaptureError> {
        let Some((id, progress)) = self.backfills.next_chunk() else {
            return Ok(());
        };
        let (table, after_key) = (progress.table.clone(), progress.after_key.clone());
        let rel = self.backfill_relation(&table).await?;
        self.emit_watermark(&format!("low:{id}")).await?;
        let chunk = self.read_chunk(id, &rel, after_key.as_deref()).await?;
        self.backfills.read(chunk);
        self.emit_watermark(&format!("high:{id}")).await
    }

    async fn emit_watermark(&self, content: &str) -> Result<(), CaptureError> {
        self.sql
            .execute(
                "SELECT pg_logical_emit_message(false, $1, $2)",
                &[&WATERMARK_PREFIX, &content],
            )
            .await
            .map_err(SourceError::from)?;
        Ok(())
    }

    /// The relation of a backfilled table, as the snapshot reads it (column list applied).
    async fn backfill_relation(&mut self, table: &str) -> Result<Arc<RelationInfo>, CaptureError> {
        if let Some((name, rel)) = &self.backfill_rel
            && name == table
        {
            return Ok(rel.clone());
        }
        let name =
            self.cfg.table(table).cloned().ok_or_else(|| {
                CaptureError::Protocol(format!("backfill of unknown table {table}"))
            })?;
        let mut metas = catalog::tables(&self.sql, std::slice::from_ref(&name)).await?;
        filter::project(&mut metas, &self.cfg.table_filters);
        let rel = Arc::new(self.relation_from_meta(&metas[0]).await?);
        self.backfill_rel = Some((table.to_string(), rel.clone()));
        Ok(rel)
    }

    /// Up to `snapshot_chunk_rows` rows after `after_key`, by primary key.
    async fn read_chunk(
        &self,
        id: u64,
        rel: &RelationInfo,
        after_key: Option<&[String]>,
    ) -> Result<Chunk<Row>, CaptureError> {
        let name = TableName {
            schema: rel.schema.to_string(),
            name: rel.table.to_string(),
        };
        let key_names: Vec<String> = rel
            .key
            .iter()
            .map(|&i| quote_ident(&rel.columns[i].name))
            .collect();
        let mut conditions = Vec::new();
        if let Some(f) = self.cfg.row_filter(&name) {
            conditions.push(format!("({f})"));
        }
        if let Some(after) = after_key {
            let values: Vec<String> = after.iter().map(|v| quote_literal(v)).collect();
            conditions.push(format!(
                "({}) > ({})",
                key_names.join(", "),
                values.join(", ")
            ));
        }
        let columns: Vec<String> = rel.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let limit = self.cfg.snapshot_chunk_rows;
        let query = format!(
            "SELECT {} FROM {}{}{} ORDER BY {} LIMIT {limit}",
            columns.join(", "),
            quote_table(&name),
            if conditions.is_empty() { "" } else { " WHERE " },
            conditions.join(" AND "),
            key_names.join(", ")
        );
        // One snapshot for the read, known to the window (see `backfill::Snapshot`).
        let read = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SELECT pg_current_snapshot()::text; {query}; COMMIT"
        );
        let mut snapshot = None;
        let mut rows = Vec::new();
        let mut last_key = None;
        for message in self
            .sql
            .simple_query(&read)
            .await
            .map_err(SourceError::from)?
        {
            let SimpleQueryMessage::Row(r) = message else {
                continue;
            };
            if snapshot.is_none() {
                snapshot = Some(r.get(0).and_then(Snapshot::parse).ok_or_else(|| {
                    CaptureError::Protocol("pg_current_snapshot() is not xmin:xmax:xip".into())
                })?);
                continue;
            }
            let after = rel.row_from_text(|i| r.get(i));
            last_key = Some(
                rel.key
                    .iter()
                    .map(|&i| r.get(i).unwrap_or_default().to_string())
                    .collect(),
            );
            let key = normalize::key_of(rel, &after).map(|k| canonical_key(&k));
            rows.push((key.unwrap_or_default(), after));
        }
        Ok(Chunk {
            id,
            last: rows.len() < limit as usize,
            rows,
            last_key,
            snapshot: snapshot.unwrap_or_default(),
        })
    }

    /// A backfill control message went by in the stream.
    pub(super) async fn backfill_control(
        &mut self,
        watermark: bool,
        content: &str,
        lsn: Lsn,
    ) -> Result<(), CaptureError> {
        if !watermark {
            if self.cfg.table(content).is_some() && self.backfills.request(content) {
                tracing::info!(table = %content, "backfill requested");
                self.checkpoint.backfills = self.backfills.stored().to_vec();
                self.store.store(&self.checkpoint)?;
            } else {
                tracing::info!(prefix = REQUEST_PREFIX, table = %content,
                    "backfill request ignored (not in source.tables, or already running)");
            }
            return Ok(());
        }
        let AtWatermark::Send {
            table,
            rows,
            lsn,
            last,
        } = self.backfills.watermark(content, lsn)
        else {
            return Ok(());
        };
        let rel = self.backfill_relation(&table).await?;
        if self
            .backfill_report
            .as_ref()
            .is_none_or(|r| r.table != table)
        {
            // The planner's estimate: counting would read the whole table once more.
            let estimate: i64 = self
                .sql
                .query_one(
                    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1",
                    &[&rel.oid],
                )
                .await
                .map_err(SourceError::from)?
                .get(0);
            self.backfill_report = Some(SnapshotProgress::new(&table, estimate as u64));
        }
        let now = chrono::Utc::now();
        let mut ctx = TxnContext::read(&self.database, lsn, now, SnapshotMark::Incremental);
        let unit = self.progress.open();
        let sent = rows.len();
        for after in rows {
            let images = Images {
                key: normalize::key_of(&rel, &after),
                before: None,
                after: Some(after),
                unchanged_toast: vec![],
                key_change: None,
            };
            let ev = ctx.event(&rel, lsn, Op::Read, images);
            self.send(unit, &rel.topic, &ev, now.timestamp_millis())
                .await?;
        }
        self.progress.close(unit, lsn);
        if let Some(report) = &mut self.backfill_report {
            report.advance(sent as u64);
        }
        if last && let Some(report) = self.backfill_report.take() {
            report.finish();
        }
        Ok(())
    }

    /// A change event went by: a change of the running backfill's table (as the event names
    /// it) drops its key from the chunk in flight, a truncate of it the whole chunk.
    pub(super) fn backfill_saw(&mut self, event: &ChangeEvent) {
        let (schema, table) = (&*event.source.schema, &*event.source.table);
        if !self.backfills.runs(schema, table) {
            return;
        }
        // An operation the Debezium envelope does not write leaves the row to the backfill's
        // read (a truncate still empties the chunk: its rows are gone either way).
        let written =
            !(self.cfg.envelope == Envelope::Debezium && self.cfg.debezium.skips(event.op.code()));
        match (&event.key, event.op) {
            (_, Op::Truncate) => self.backfills.truncated(schema, table),
            (Some(key), _) if written => {
                self.backfills
                    .changed(schema, table, canonical_key(key), event.source.xid)
            }
            _ => {}
        }
    }

    /// A Relation message for `oid`: the running backfill reads the table's new shape.
    pub(super) fn backfill_relation_changed(&mut self, oid: u32) {
        if self
            .backfill_rel
            .as_ref()
            .is_some_and(|(_, rel)| rel.oid == oid)
        {
            self.backfill_rel = None;
        }
    }

    /// Everything up to `flushed` is acknowledged: store the chunks' progress with it.
    pub(super) fn backfill_flushed(&mut self, flushed: Lsn) {
        if self.backfills.flushed(flushed) {
            self.checkpoint.backfills = self.backfills.stored().to_vec();
        }
    }
}
