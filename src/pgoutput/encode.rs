//! Encoding: the exact inverse of [`super::decode`], for tests, benchmarks and test servers.

use super::{DecodeContext, Message, OldTuple, Prepare, Tuple, TupleValue};
use crate::lsn::Lsn;

/// Encodes `msg` in the wire format [`super::decode`] reads under `ctx`.
///
/// The context decides the layout, as on the wire: the leading xid of Relation, Type, Insert,
/// Update, Delete, Truncate and Message is written only when `DecodeContext::has_stream_xid`
/// (a `None` xid is then written as 0) and is dropped otherwise; Stream Abort's `abort_lsn` and
/// `abort_ts` are written only with protocol 4 or later and only when one of them is `Some`
/// (a missing one as 0). Strings are written followed by a NUL, so they must not contain one to
/// decode back unchanged.
///
/// # Panics
///
/// If a tuple or relation has more than 65535 columns, a truncate more than `i32::MAX`
/// relations, or a value or message content is longer than `i32::MAX` bytes: the wire format
/// cannot represent them.
pub fn encode(msg: &Message, ctx: &DecodeContext) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(msg.tag());
    match msg {
        Message::Begin(m) => {
            w.lsn(m.final_lsn);
            w.i64(m.commit_ts);
            w.u32(m.xid);
        }
        Message::Commit(m) => {
            w.u8(m.flags);
            w.lsn(m.commit_lsn);
            w.lsn(m.end_lsn);
            w.i64(m.commit_ts);
        }
        Message::Origin(m) => {
            w.lsn(m.commit_lsn);
            w.string(&m.name);
        }
        Message::Relation(m) => {
            w.stream_xid(ctx, m.xid);
            w.u32(m.oid);
            w.string(&m.namespace);
            w.string(&m.name);
            w.u8(m.replica_identity);
            w.count16(m.columns.len());
            for c in &m.columns {
                w.u8(c.flags);
                w.string(&c.name);
                w.u32(c.type_oid);
                w.i32(c.type_modifier);
            }
        }
        Message::Type(m) => {
            w.stream_xid(ctx, m.xid);
            w.u32(m.oid);
            w.string(&m.namespace);
            w.string(&m.name);
        }
        Message::Insert(m) => {
            w.stream_xid(ctx, m.xid);
            w.u32(m.relation_oid);
            w.u8(b'N');
            w.tuple(&m.new);
        }
        Message::Update(m) => {
            w.stream_xid(ctx, m.xid);
            w.u32(m.relation_oid);
            if let Some(old) = &m.old {
                w.old_tuple(old);
            }
            w.u8(b'N');
            w.tuple(&m.new);
        }
        Message::Delete(m) => {
            w.stream_xid(ctx, m.xid);
            w.u32(m.relation_oid);
            w.old_tuple(&m.old);
        }
        Message::Truncate(m) => {
            w.stream_xid(ctx, m.xid);
            w.len32(m.relation_oids.len());
            w.u8(m.options);
            for oid in &m.relation_oids {
                w.u32(*oid);
            }
        }
        Message::Message(m) => {
            w.stream_xid(ctx, m.xid);
            w.u8(u8::from(m.transactional));
            w.lsn(m.lsn);
            w.string(&m.prefix);
            w.len32(m.content.len());
            w.0.extend_from_slice(&m.content);
        }
        Message::StreamStart(m) => {
            w.u32(m.xid);
            w.u8(u8::from(m.first_segment));
        }
        Message::StreamStop => {}
        Message::StreamCommit(m) => {
            w.u32(m.xid);
            w.u8(m.flags);
            w.lsn(m.commit_lsn);
            w.lsn(m.end_lsn);
            w.i64(m.commit_ts);
        }
        Message::StreamAbort(m) => {
            w.u32(m.xid);
            w.u32(m.subxid);
            if ctx.proto_version >= 4 && (m.abort_lsn.is_some() || m.abort_ts.is_some()) {
                w.lsn(m.abort_lsn.unwrap_or_default());
                w.i64(m.abort_ts.unwrap_or_default());
            }
        }
        Message::BeginPrepare(m) => {
            w.lsn(m.prepare_lsn);
            w.lsn(m.end_lsn);
            w.i64(m.prepare_ts);
            w.u32(m.xid);
            w.string(&m.gid);
        }
        Message::Prepare(m) | Message::StreamPrepare(m) => w.prepare(m),
        Message::CommitPrepared(m) => {
            w.u8(m.flags);
            w.lsn(m.commit_lsn);
            w.lsn(m.end_lsn);
            w.i64(m.commit_ts);
            w.u32(m.xid);
            w.string(&m.gid);
        }
        Message::RollbackPrepared(m) => {
            w.u8(m.flags);
            w.lsn(m.prepare_end_lsn);
            w.lsn(m.rollback_end_lsn);
            w.i64(m.prepare_ts);
            w.i64(m.rollback_ts);
            w.u32(m.xid);
            w.string(&m.gid);
        }
        Message::Unknown { body, .. } => w.0.extend_from_slice(body),
    }
    w.0
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn lsn(&mut self, v: Lsn) {
        self.0.extend_from_slice(&v.0.to_be_bytes());
    }

    fn count16(&mut self, n: usize) {
        let n = u16::try_from(n).expect("pgoutput tuples and relations have at most 65535 columns");
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn len32(&mut self, n: usize) {
        let n = i32::try_from(n).expect("pgoutput lengths and counts are at most i32::MAX");
        self.i32(n);
    }

    fn string(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }

    fn stream_xid(&mut self, ctx: &DecodeContext, xid: Option<u32>) {
        if ctx.has_stream_xid() {
            self.u32(xid.unwrap_or(0));
        }
    }

    fn old_tuple(&mut self, old: &OldTuple) {
        match old {
            OldTuple::Key(t) => {
                self.u8(b'K');
                self.tuple(t);
            }
            OldTuple::Full(t) => {
                self.u8(b'O');
                self.tuple(t);
            }
        }
    }

    fn tuple(&mut self, t: &Tuple) {
        self.count16(t.0.len());
        for v in &t.0 {
            match v {
                TupleValue::Null => self.u8(b'n'),
                TupleValue::UnchangedToast => self.u8(b'u'),
                TupleValue::Text(b) => {
                    self.u8(b't');
                    self.len32(b.len());
                    self.0.extend_from_slice(b);
                }
                TupleValue::Binary(b) => {
                    self.u8(b'b');
                    self.len32(b.len());
                    self.0.extend_from_slice(b);
                }
            }
        }
    }

    fn prepare(&mut self, m: &Prepare) {
        self.u8(m.flags);
        self.lsn(m.prepare_lsn);
        self.lsn(m.end_lsn);
        self.i64(m.prepare_ts);
        self.u32(m.xid);
        self.string(&m.gid);
    }
}
