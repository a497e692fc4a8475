//! Decoding: a bounds-checked cursor over the input `Bytes` and one function per message kind.

use bytes::Bytes;

use super::{
    Begin, BeginPrepare, Column, Commit, CommitPrepared, DecodeContext, DecodeError, Delete,
    Insert, LogicalMessage, Message, OldTuple, Origin, Prepare, Relation, RollbackPrepared,
    StreamAbort, StreamCommit, StreamStart, Truncate, Tuple, TupleValue, Type, Update,
};
use crate::lsn::Lsn;

/// Decodes one pgoutput message; `buf` starts at the tag byte.
///
/// Column values and logical message contents are zero-copy slices of `buf`. An unknown tag
/// gives [`Message::Unknown`]; a truncated or malformed message, or trailing bytes after a
/// complete one, give a [`DecodeError`]. Never panics.
///
/// # Errors
///
/// [`DecodeError`] says which field was truncated or malformed and at which offset (counted
/// from the tag byte).
pub fn decode(buf: &Bytes, ctx: &DecodeContext) -> Result<Message, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Err(DecodeError::Empty);
    };
    let mut r = Reader { buf, pos: 1 };
    let msg = match tag {
        b'B' => Message::Begin(Begin {
            final_lsn: r.lsn("Begin final_lsn")?,
            commit_ts: r.i64("Begin commit_ts")?,
            xid: r.u32("Begin xid")?,
        }),
        b'C' => Message::Commit(Commit {
            flags: r.u8("Commit flags")?,
            commit_lsn: r.lsn("Commit commit_lsn")?,
            end_lsn: r.lsn("Commit end_lsn")?,
            commit_ts: r.i64("Commit commit_ts")?,
        }),
        b'O' => Message::Origin(Origin {
            commit_lsn: r.lsn("Origin commit_lsn")?,
            name: r.string("Origin name")?,
        }),
        b'R' => Message::Relation(relation(&mut r, ctx)?),
        b'Y' => Message::Type(Type {
            xid: r.stream_xid(ctx, "Type xid")?,
            oid: r.u32("Type oid")?,
            namespace: r.string("Type namespace")?,
            name: r.string("Type name")?,
        }),
        b'I' => {
            let xid = r.stream_xid(ctx, "Insert xid")?;
            let relation_oid = r.u32("Insert relation oid")?;
            r.expect(b'N', "Insert tuple kind", "'N'")?;
            Message::Insert(Insert {
                xid,
                relation_oid,
                new: r.tuple()?,
            })
        }
        b'U' => Message::Update(update(&mut r, ctx)?),
        b'D' => Message::Delete(Delete {
            xid: r.stream_xid(ctx, "Delete xid")?,
            relation_oid: r.u32("Delete relation oid")?,
            old: r.old_tuple("Delete tuple kind")?,
        }),
        b'T' => Message::Truncate(truncate(&mut r, ctx)?),
        b'M' => Message::Message(LogicalMessage {
            xid: r.stream_xid(ctx, "Message xid")?,
            transactional: r.bool("Message flags", "0 or 1")?,
            lsn: r.lsn("Message lsn")?,
            prefix: r.string("Message prefix")?,
            content: r.counted_bytes("Message content length", "Message content")?,
        }),
        b'S' => Message::StreamStart(StreamStart {
            xid: r.u32("Stream Start xid")?,
            first_segment: r.bool("Stream Start first_segment", "0 or 1")?,
        }),
        b'E' => Message::StreamStop,
        b'c' => Message::StreamCommit(StreamCommit {
            xid: r.u32("Stream Commit xid")?,
            flags: r.u8("Stream Commit flags")?,
            commit_lsn: r.lsn("Stream Commit commit_lsn")?,
            end_lsn: r.lsn("Stream Commit end_lsn")?,
            commit_ts: r.i64("Stream Commit commit_ts")?,
        }),
        b'A' => {
            let xid = r.u32("Stream Abort xid")?;
            let subxid = r.u32("Stream Abort subxid")?;
            // The abort LSN and timestamp exist only with protocol 4 *and* parallel streaming,
            // which the context does not know: with v4 they are read when bytes remain.
            let (abort_lsn, abort_ts) = if ctx.proto_version >= 4 && r.remaining() > 0 {
                (
                    Some(r.lsn("Stream Abort abort_lsn")?),
                    Some(r.i64("Stream Abort abort_ts")?),
                )
            } else {
                (None, None)
            };
            Message::StreamAbort(StreamAbort {
                xid,
                subxid,
                abort_lsn,
                abort_ts,
            })
        }
        b'b' => Message::BeginPrepare(BeginPrepare {
            prepare_lsn: r.lsn("Begin Prepare prepare_lsn")?,
            end_lsn: r.lsn("Begin Prepare end_lsn")?,
            prepare_ts: r.i64("Begin Prepare prepare_ts")?,
            xid: r.u32("Begin Prepare xid")?,
            gid: r.string("Begin Prepare gid")?,
        }),
        b'P' => Message::Prepare(prepare(&mut r)?),
        b'p' => Message::StreamPrepare(prepare(&mut r)?),
        b'K' => Message::CommitPrepared(CommitPrepared {
            flags: r.u8("Commit Prepared flags")?,
            commit_lsn: r.lsn("Commit Prepared commit_lsn")?,
            end_lsn: r.lsn("Commit Prepared end_lsn")?,
            commit_ts: r.i64("Commit Prepared commit_ts")?,
            xid: r.u32("Commit Prepared xid")?,
            gid: r.string("Commit Prepared gid")?,
        }),
        b'r' => Message::RollbackPrepared(RollbackPrepared {
            flags: r.u8("Rollback Prepared flags")?,
            prepare_end_lsn: r.lsn("Rollback Prepared prepare_end_lsn")?,
            rollback_end_lsn: r.lsn("Rollback Prepared rollback_end_lsn")?,
            prepare_ts: r.i64("Rollback Prepared prepare_ts")?,
            rollback_ts: r.i64("Rollback Prepared rollback_ts")?,
            xid: r.u32("Rollback Prepared xid")?,
            gid: r.string("Rollback Prepared gid")?,
        }),
        _ => {
            return Ok(Message::Unknown {
                tag,
                body: buf.slice(1..),
            });
        }
    };
    r.finish(tag)?;
    Ok(msg)
}

fn relation(r: &mut Reader<'_>, ctx: &DecodeContext) -> Result<Relation, DecodeError> {
    Ok(Relation {
        xid: r.stream_xid(ctx, "Relation xid")?,
        oid: r.u32("Relation oid")?,
        namespace: r.string("Relation namespace")?,
        name: r.string("Relation name")?,
        replica_identity: r.u8("Relation replica identity")?,
        columns: columns(r)?,
    })
}

/// A Relation's Int16 column count and its columns.
fn columns(r: &mut Reader<'_>) -> Result<Vec<Column>, DecodeError> {
    let ncols = usize::from(r.u16("Relation column count")?);
    // Each column needs at least 10 bytes (flags, NUL, type oid, typmod).
    let mut columns = Vec::with_capacity(ncols.min(r.remaining() / 10));
    for _ in 0..ncols {
        columns.push(Column {
            flags: r.u8("Relation column flags")?,
            name: r.string("Relation column name")?,
            type_oid: r.u32("Relation column type oid")?,
            type_modifier: r.i32("Relation column type modifier")?,
        });
    }
    Ok(columns)
}

fn update(r: &mut Reader<'_>, ctx: &DecodeContext) -> Result<Update, DecodeError> {
    let xid = r.stream_xid(ctx, "Update xid")?;
    let relation_oid = r.u32("Update relation oid")?;
    let offset = r.pos;
    let old = match r.u8("Update tuple kind")? {
        b'K' => {
            let old = OldTuple::Key(r.tuple()?);
            r.expect(b'N', "Update new tuple kind", "'N'")?;
            Some(old)
        }
        b'O' => {
            let old = OldTuple::Full(r.tuple()?);
            r.expect(b'N', "Update new tuple kind", "'N'")?;
            Some(old)
        }
        b'N' => None,
        found => {
            return Err(DecodeError::UnexpectedByte {
                what: "Update tuple kind",
                offset,
                found,
                expected: "'K', 'O' or 'N'",
            });
        }
    };
    Ok(Update {
        xid,
        relation_oid,
        old,
        new: r.tuple()?,
    })
}

fn truncate(r: &mut Reader<'_>, ctx: &DecodeContext) -> Result<Truncate, DecodeError> {
    let xid = r.stream_xid(ctx, "Truncate xid")?;
    let count = r.len32("Truncate relation count")?;
    let options = r.u8("Truncate options")?;
    let mut relation_oids = Vec::with_capacity(count.min(r.remaining() / 4));
    for _ in 0..count {
        relation_oids.push(r.u32("Truncate relation oid")?);
    }
    Ok(Truncate {
        xid,
        options,
        relation_oids,
    })
}

fn prepare(r: &mut Reader<'_>) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: r.u8("Prepare flags")?,
        prepare_lsn: r.lsn("Prepare prepare_lsn")?,
        end_lsn: r.lsn("Prepare end_lsn")?,
        prepare_ts: r.i64("Prepare prepare_ts")?,
        xid: r.u32("Prepare xid")?,
        gid: r.string("Prepare gid")?,
    })
}

/// A cursor over the message; `pos` is the offset of the next unread byte.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes as a borrowed slice, advancing past them.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        let truncated = || DecodeError::Truncated {
            what,
            offset: self.pos,
            needed: n,
            available: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn lsn(&mut self, what: &'static str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.array(what)?)))
    }

    /// A byte that must be 0 (false) or 1 (true).
    fn bool(&mut self, what: &'static str, expected: &'static str) -> Result<bool, DecodeError> {
        let offset = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            found => Err(DecodeError::UnexpectedByte {
                what,
                offset,
                found,
                expected,
            }),
        }
    }

    /// A byte that must equal `want`.
    fn expect(
        &mut self,
        want: u8,
        what: &'static str,
        expected: &'static str,
    ) -> Result<(), DecodeError> {
        let offset = self.pos;
        let found = self.u8(what)?;
        if found == want {
            Ok(())
        } else {
            Err(DecodeError::UnexpectedByte {
                what,
                offset,
                found,
                expected,
            })
        }
    }

    /// An Int32 length that must not be negative.
    fn len32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let len = self.i32(what)?;
        usize::try_from(len).map_err(|_| DecodeError::InvalidLength {
            what,
            offset,
            len: i64::from(len),
        })
    }

    /// An Int32 length, then that many bytes as a zero-copy slice of the input.
    fn counted_bytes(
        &mut self,
        len_what: &'static str,
        what: &'static str,
    ) -> Result<Bytes, DecodeError> {
        let len = self.len32(len_what)?;
        self.bytes(len, what)
    }

    /// The next `n` bytes as a zero-copy slice of the input.
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n, what)?;
        Ok(self.buf.slice(start..self.pos))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let offset = self.pos;
        let rest = self.buf.get(offset..).unwrap_or_default();
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString { what, offset })?;
        let s = rest
            .get(..nul)
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .ok_or(DecodeError::InvalidUtf8 { what, offset })?;
        let s = s.to_owned();
        self.pos = offset.saturating_add(nul).saturating_add(1);
        Ok(s)
    }

    /// The leading xid of data-carrying messages inside a stream (v2+).
    fn stream_xid(
        &mut self,
        ctx: &DecodeContext,
        what: &'static str,
    ) -> Result<Option<u32>, DecodeError> {
        if ctx.has_stream_xid() {
            self.u32(what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `'K'` or `'O'` followed by a tuple.
    fn old_tuple(&mut self, what: &'static str) -> Result<OldTuple, DecodeError> {
        let offset = self.pos;
        match self.u8(what)? {
            b'K' => Ok(OldTuple::Key(self.tuple()?)),
            b'O' => Ok(OldTuple::Full(self.tuple()?)),
            found => Err(DecodeError::UnexpectedByte {
                what,
                offset,
                found,
                expected: "'K' or 'O'",
            }),
        }
    }

    /// TupleData: Int16 column count, then per column a kind byte and, for `'t'`/`'b'`, an
    /// Int32 length and that many bytes.
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let ncols = usize::from(self.u16("tuple column count")?);
        // Each value needs at least its kind byte.
        let mut values = Vec::with_capacity(ncols.min(self.remaining()));
        for _ in 0..ncols {
            let offset = self.pos;
            let value = match self.u8("tuple value kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => TupleValue::Text(self.counted_bytes("text value length", "text value")?),
                b'b' => {
                    TupleValue::Binary(self.counted_bytes("binary value length", "binary value")?)
                }
                found => {
                    return Err(DecodeError::UnexpectedByte {
                        what: "tuple value kind",
                        offset,
                        found,
                        expected: "'n', 'u', 't' or 'b'",
                    });
                }
            };
            values.push(value);
        }
        Ok(Tuple(values))
    }

    /// Errors if bytes remain after a complete message.
    fn finish(self, tag: u8) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(DecodeError::TrailingBytes {
                tag,
                offset: self.pos,
                remaining,
            }),
        }
    }
}
