//! Decoded pgoutput messages → change events. Pure: no I/O, no clocks, no Kafka, no SQL.
//!
//! Owns the relation cache and the transaction state machine of a streaming session: which
//! decoded message opens or closes a transaction, which rows become which events under which
//! Relation, and which transactions are skipped. The I/O shell (`session`) feeds it messages
//! in WAL order and turns its [`Output`]s into Kafka records and progress units. Invariants:
//! - BEGIN and COMMIT pair up; a BEGIN inside a transaction, a COMMIT outside one, and rows or
//!   TRUNCATE outside a transaction are protocol errors;
//! - transactions whose commit precedes the resume point produce no events (only their
//!   `Begin`/`Commit`), so re-sent events are only those not yet acknowledged;
//! - a Relation message is not applied here: it comes back as [`Output::Describe`], the shell
//!   resolves what needs the catalog ([`RelationFacts`]) and hands it in with
//!   [`Assembler::relation`] before the next message; a relation described again replaces the
//!   old description;
//! - a non-transactional logical message is a unit of its own (`Begin`, `Event`, `Commit` at
//!   the message's LSN); driftless's heartbeat messages produce no event, and outside a
//!   transaction only a `Begin`/`Commit` pair that lets the flush position move; its backfill
//!   watermarks and requests do the same, after an [`Output::Control`] for the shell.

use std::collections::HashMap;
use std::sync::Arc;

use super::CaptureError;
use super::HEARTBEAT_PREFIX;
use super::backfill::{REQUEST_PREFIX, WATERMARK_PREFIX};
use super::normalize::{self, ColumnInfo, Images, RelationInfo, Rendering, TxnContext};
use super::value::PgType;
use crate::event::{ChangeEvent, MessagePayload, Op, SnapshotMark, TruncatePayload};
use crate::lsn::Lsn;
use crate::pgoutput::{self, Message};

/// What the catalog says about a relation, resolved by the shell for [`Assembler::relation`].
#[derive(Clone, Debug)]
pub struct RelationFacts {
    /// Kafka topic of the relation's events.
    pub topic: String,
    /// Resolved type of each column, in the Relation's column order.
    pub types: Vec<PgType>,
    /// Key columns from the catalog (primary key, or the replica identity index); when empty,
    /// the Relation's own key flags are used.
    pub key_names: Vec<String>,
}

/// One step for the shell, in order.
// Events dominate and live briefly in a reused buffer: boxing them would cost an allocation
// per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Output {
    /// A unit starts (a transaction, or a standalone message): open it.
    Begin {
        /// Commit LSN of the transaction (`Begin.final_lsn`), or the standalone message's LSN.
        commit_lsn: Lsn,
    },
    /// An event of the open unit, to publish.
    Event {
        /// Kafka topic.
        topic: Arc<str>,
        /// The event.
        event: ChangeEvent,
        /// Record timestamp (the commit time); `None` when the WAL has none (a
        /// non-transactional message): the shell uses the current time.
        timestamp_ms: Option<i64>,
    },
    /// The open unit ends at `end_lsn`.
    Commit {
        /// The position to confirm once every event of the unit is acknowledged.
        end_lsn: Lsn,
        /// Commit time of a transaction (ms since the Unix epoch), for the lag gauge.
        commit_ms: Option<i64>,
    },
    /// A Relation message: resolve its [`RelationFacts`] and call [`Assembler::relation`]
    /// before the next message.
    Describe(pgoutput::Relation),
    /// A backfill's control message (never published): a chunk's watermark, or a request.
    Control {
        /// A watermark (`low:{id}`/`high:{id}`); otherwise a request (`schema.table`).
        watermark: bool,
        /// The message's content.
        content: String,
        /// Its position.
        lsn: Lsn,
    },
}

/// The in-progress transaction.
struct OpenTxn {
    ctx: TxnContext,
    commit_ms: i64,
    /// Already acknowledged before the resume point: decode nothing, send nothing.
    skip: bool,
}

/// The relation cache and the transaction state machine of one streaming session.
pub struct Assembler {
    relations: HashMap<u32, RelationInfo>,
    txn: Option<OpenTxn>,
    resume: Lsn,
    database: Arc<str>,
    /// The pseudo-relation of logical messages (their topic).
    messages: RelationInfo,
    /// How rows are rendered (set by [`Assembler::set_rendering`]).
    render: Rendering,
    /// End LSN of the last COMMIT seen (Debezium's `source.sequence[0]`); set by
    /// [`Assembler::set_previous_commit`] on a resume.
    prev_commit_end: Option<Lsn>,
}

/// Unix epoch − PostgreSQL epoch (2000-01-01), µs.
const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

impl Assembler {
    /// A session of `database` streaming from `resume`; logical messages go to
    /// `messages_topic`.
    pub fn new(database: &str, messages_topic: String, resume: Lsn) -> Self {
        let messages = RelationInfo::new(
            0,
            String::new(),
            String::new(),
            messages_topic,
            vec![],
            &[],
            &[],
        );
        Assembler {
            relations: HashMap::new(),
            txn: None,
            resume,
            database: database.into(),
            messages,
            render: Rendering::Driftless,
            prev_commit_end: None,
        }
    }

    /// Renders rows of relations described from now on by `render`.
    pub(crate) fn set_rendering(&mut self, render: Rendering) {
        self.render = render;
    }

    /// The end LSN of the commit before the first one streamed (a resume point), if known.
    pub(crate) fn set_previous_commit(&mut self, lsn: Option<Lsn>) {
        self.prev_commit_end = lsn;
    }

    /// True between a BEGIN and its COMMIT.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Applies a Relation message (returned as [`Output::Describe`]) with its catalog facts.
    pub fn relation(&mut self, r: pgoutput::Relation, facts: RelationFacts) {
        let flags: Vec<bool> = r.columns.iter().map(pgoutput::Column::is_key).collect();
        let columns = r
            .columns
            .into_iter()
            .zip(facts.types)
            .map(|(c, ty)| ColumnInfo {
                name: c.name,
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                ty,
            })
            .collect();
        let info = RelationInfo::new(
            r.oid,
            r.namespace,
            r.name,
            facts.topic,
            columns,
            &facts.key_names,
            &flags,
        )
        .rendered(self.render);
        tracing::debug!(relation = info.oid, schema_version = %info.schema_version,
            "relation updated");
        self.relations.insert(info.oid, info);
    }

    /// Applies one decoded message read at `lsn` (the XLogData's WAL start); appends what the
    /// shell must do to `out`.
    pub fn apply(
        &mut self,
        msg: Message,
        lsn: Lsn,
        out: &mut Vec<Output>,
    ) -> Result<(), CaptureError> {
        match msg {
            Message::Begin(b) => {
                if self.txn.is_some() {
                    return Err(CaptureError::Protocol("BEGIN inside a transaction".into()));
                }
                self.txn = Some(OpenTxn {
                    ctx: TxnContext {
                        db: self.database.clone(),
                        commit_lsn: b.final_lsn,
                        xid: Some(b.xid),
                        commit_ts: Some(crate::event::pg_timestamp_to_rfc3339(b.commit_ts).into()),
                        commit_us: Some(b.commit_ts.saturating_add(PG_EPOCH_UNIX_US)),
                        prev_commit_end: self.prev_commit_end,
                        origin: None,
                        ordinal: 0,
                        mark: SnapshotMark::Streamed,
                    },
                    commit_ms: crate::event::pg_timestamp_to_unix_millis(b.commit_ts),
                    skip: b.final_lsn < self.resume,
                });
                out.push(Output::Begin {
                    commit_lsn: b.final_lsn,
                });
            }
            Message::Commit(c) => {
                let t = self
                    .txn
                    .take()
                    .ok_or_else(|| CaptureError::Protocol("COMMIT outside a transaction".into()))?;
                self.prev_commit_end = Some(c.end_lsn);
                out.push(Output::Commit {
                    end_lsn: c.end_lsn,
                    commit_ms: Some(t.commit_ms),
                });
            }
            Message::Origin(o) => {
                if let Some(t) = self.txn.as_mut() {
                    t.ctx.origin = Some(o.name);
                }
            }
            Message::Relation(r) => out.push(Output::Describe(r)),
            Message::Type(_) => {}
            Message::Insert(i) => {
                let images =
                    |rel: &RelationInfo| vec![(Op::Create, normalize::insert_images(rel, &i.new))];
                self.row_change(i.relation_oid, lsn, images, out)?;
            }
            Message::Update(u) => {
                let images =
                    |rel: &RelationInfo| normalize::update_images(rel, u.old.as_ref(), &u.new);
                self.row_change(u.relation_oid, lsn, images, out)?;
            }
            Message::Delete(d) => {
                let images =
                    |rel: &RelationInfo| vec![(Op::Delete, normalize::delete_images(rel, &d.old))];
                self.row_change(d.relation_oid, lsn, images, out)?;
            }
            Message::Truncate(t) => self.truncate(t, lsn, out)?,
            Message::Message(m) => self.logical_message(m, lsn, out),
            other => {
                return Err(CaptureError::Protocol(format!(
                    "unexpected message for proto_version 1: {:?}",
                    message_kind(&other)
                )));
            }
        }
        Ok(())
    }

    fn row_change(
        &mut self,
        relation_oid: u32,
        lsn: Lsn,
        images: impl FnOnce(&RelationInfo) -> Vec<(Op, Images)>,
        out: &mut Vec<Output>,
    ) -> Result<(), CaptureError> {
        let Some(open) = open_unskipped(&mut self.txn, "row change")? else {
            return Ok(());
        };
        let rel = relation(&self.relations, relation_oid)?;
        for (op, img) in images(rel) {
            out.push(Output::Event {
                topic: rel.topic.clone(),
                event: open.ctx.event(rel, lsn, op, img),
                timestamp_ms: Some(open.commit_ms),
            });
        }
        Ok(())
    }

    fn truncate(
        &mut self,
        t: pgoutput::Truncate,
        lsn: Lsn,
        out: &mut Vec<Output>,
    ) -> Result<(), CaptureError> {
        let Some(open) = open_unskipped(&mut self.txn, "TRUNCATE")? else {
            return Ok(());
        };
        for oid in &t.relation_oids {
            let rel = relation(&self.relations, *oid)?;
            let mut ev = open.ctx.event(rel, lsn, Op::Truncate, Images::default());
            ev.truncate = Some(TruncatePayload {
                cascade: t.options & pgoutput::TRUNCATE_CASCADE != 0,
                restart_identity: t.options & pgoutput::TRUNCATE_RESTART_IDENTITY != 0,
            });
            out.push(Output::Event {
                topic: rel.topic.clone(),
                event: ev,
                timestamp_ms: Some(open.commit_ms),
            });
        }
        Ok(())
    }

    fn logical_message(&mut self, m: pgoutput::LogicalMessage, lsn: Lsn, out: &mut Vec<Output>) {
        use base64::Engine;
        if m.prefix == WATERMARK_PREFIX || m.prefix == REQUEST_PREFIX {
            if self.txn.as_ref().is_some_and(|open| open.skip) {
                return;
            }
            out.push(Output::Control {
                watermark: m.prefix == WATERMARK_PREFIX,
                content: String::from_utf8_lossy(&m.content).into_owned(),
                lsn: m.lsn,
            });
        }
        if m.prefix == HEARTBEAT_PREFIX
            || m.prefix == WATERMARK_PREFIX
            || m.prefix == REQUEST_PREFIX
        {
            if self.txn.is_none() {
                out.push(Output::Begin { commit_lsn: m.lsn });
                out.push(Output::Commit {
                    end_lsn: m.lsn,
                    commit_ms: None,
                });
            }
            return;
        }
        let mut standalone = None;
        let (ctx, timestamp_ms) = match self.txn.as_mut() {
            Some(open) if open.skip => return,
            Some(open) => (&mut open.ctx, Some(open.commit_ms)),
            None => {
                // Non-transactional: a unit of its own, closed at the message's LSN. The WAL
                // has no time for it, so `commit_ts` is null (the Kafka record gets "now").
                out.push(Output::Begin { commit_lsn: m.lsn });
                let ctx = standalone.insert(TxnContext {
                    db: self.database.clone(),
                    commit_lsn: m.lsn,
                    xid: None,
                    commit_ts: None,
                    commit_us: None,
                    prev_commit_end: self.prev_commit_end,
                    origin: None,
                    ordinal: 0,
                    mark: SnapshotMark::Streamed,
                });
                (ctx, None)
            }
        };
        let rel = &self.messages;
        let mut ev = ctx.event(rel, lsn, Op::Message, Images::default());
        ev.message = Some(MessagePayload {
            prefix: m.prefix,
            content_base64: base64::engine::general_purpose::STANDARD.encode(&m.content),
            transactional: m.transactional,
        });
        out.push(Output::Event {
            topic: rel.topic.clone(),
            event: ev,
            timestamp_ms,
        });
        if standalone.is_some() {
            out.push(Output::Commit {
                end_lsn: m.lsn,
                commit_ms: None,
            });
        }
    }
}

/// The open transaction for a `what` (rows or TRUNCATE) that must stand inside one: `None`
/// when it is skipped (already acknowledged), a protocol error when there is none.
fn open_unskipped<'a>(
    txn: &'a mut Option<OpenTxn>,
    what: &str,
) -> Result<Option<&'a mut OpenTxn>, CaptureError> {
    match txn {
        None => Err(CaptureError::Protocol(format!(
            "{what} outside a transaction"
        ))),
        Some(open) if open.skip => Ok(None),
        Some(open) => Ok(Some(open)),
    }
}

fn relation(
    relations: &HashMap<u32, RelationInfo>,
    oid: u32,
) -> Result<&RelationInfo, CaptureError> {
    relations
        .get(&oid)
        .ok_or_else(|| CaptureError::Protocol(format!("change for unknown relation {oid}")))
}

fn message_kind(m: &Message) -> &'static str {
    match m {
        Message::StreamStart(..) => "StreamStart",
        Message::StreamStop => "StreamStop",
        Message::StreamCommit(..) => "StreamCommit",
        Message::StreamAbort(..) => "StreamAbort",
        Message::BeginPrepare(..) => "BeginPrepare",
        Message::Prepare(..) => "Prepare",
        Message::CommitPrepared(..) => "CommitPrepared",
        Message::RollbackPrepared(..) => "RollbackPrepared",
        Message::StreamPrepare(..) => "StreamPrepare",
        Message::Unknown { .. } => "Unknown",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
