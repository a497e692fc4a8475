//! `pgoutput`: a pure decoder (and encoder) for the bodies of PostgreSQL logical replication
//! messages produced by the built-in `pgoutput` plugin, protocol versions 1 to 4.
//!
//! Owns the wire format described in
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>
//! (written by PostgreSQL's `src/backend/replication/logical/proto.c`): the input of [`decode`]
//! is the payload of an XLogData (`'w'`) frame, starting at the message tag byte.
//!
//! Invariants:
//! - **Pure**: no I/O, no async, no global state. The only state the format needs (protocol
//!   version, whether we are between Stream Start and Stream Stop) comes in a [`DecodeContext`]
//!   that the caller maintains.
//! - **Never panics** on any input: every read is bounds-checked, length arithmetic is checked,
//!   a negative or oversized length is a [`DecodeError`], and no allocation is sized from an
//!   unchecked wire value (vectors are pre-sized at most to what the remaining bytes can hold).
//! - **Zero-copy values**: column values ([`TupleValue::Text`], [`TupleValue::Binary`]) and
//!   logical message contents are `Bytes` slices of the input buffer; decoding a row allocates
//!   only the `Vec` of its values.
//! - **Strict framing**: a message must be consumed exactly; trailing bytes are an error. An
//!   unknown tag is not an error: it decodes to [`Message::Unknown`].
//! - [`encode`] is the exact inverse of [`decode`]: for every buffer that decodes successfully,
//!   `encode(&decode(buf)?, ctx) == buf`.

use bytes::Bytes;

use crate::lsn::Lsn;

mod decode;
mod encode;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod tests;

pub use decode::decode;
pub use encode::encode;

/// Decoding state the wire format depends on, maintained by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeContext {
    /// The `proto_version` negotiated in `START_REPLICATION` (1 to 4).
    pub proto_version: u32,
    /// True between a Stream Start and the matching Stream Stop. With protocol version 2 or
    /// later, Relation, Type, Insert, Update, Delete, Truncate and Message then carry a leading
    /// transaction id. Ignored for protocol version 1, which has no streaming.
    pub in_stream: bool,
}

impl DecodeContext {
    /// Whether messages of the data-carrying kinds start with a transaction id.
    pub(crate) fn has_stream_xid(&self) -> bool {
        self.in_stream && self.proto_version >= 2
    }
}

/// Flag bit of [`Column::flags`]: the column is part of the replica identity key.
pub(crate) const COLUMN_FLAG_KEY: u8 = 1;
/// Flag bit of [`Truncate::options`]: `TRUNCATE ... CASCADE`.
pub(crate) const TRUNCATE_CASCADE: u8 = 1;
/// Flag bit of [`Truncate::options`]: `TRUNCATE ... RESTART IDENTITY`.
pub(crate) const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// One decoded logical replication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `'B'`: start of a (non-streamed) transaction.
    Begin(Begin),
    /// `'C'`: end of a (non-streamed) transaction.
    Commit(Commit),
    /// `'O'`: the transaction was replayed from a replication origin.
    Origin(Origin),
    /// `'R'`: description of a relation, sent before its first change in a session.
    Relation(Relation),
    /// `'Y'`: description of a non-built-in type used by a relation's column.
    Type(Type),
    /// `'I'`: a row was inserted.
    Insert(Insert),
    /// `'U'`: a row was updated.
    Update(Update),
    /// `'D'`: a row was deleted.
    Delete(Delete),
    /// `'T'`: relations were truncated.
    Truncate(Truncate),
    /// `'M'`: a message from `pg_logical_emit_message` (needs the `messages` option).
    Message(LogicalMessage),
    /// `'S'`: start of a chunk of a streamed in-progress transaction (v2+).
    StreamStart(StreamStart),
    /// `'E'`: end of a chunk of a streamed transaction (v2+).
    StreamStop,
    /// `'c'`: a streamed transaction committed (v2+).
    StreamCommit(StreamCommit),
    /// `'A'`: a streamed (sub)transaction aborted (v2+).
    StreamAbort(StreamAbort),
    /// `'b'`: start of a prepared transaction (v3+, `two_phase`).
    BeginPrepare(BeginPrepare),
    /// `'P'`: a transaction was prepared (v3+).
    Prepare(Prepare),
    /// `'K'`: a prepared transaction was committed (v3+).
    CommitPrepared(CommitPrepared),
    /// `'r'`: a prepared transaction was rolled back (v3+).
    RollbackPrepared(RollbackPrepared),
    /// `'p'`: a streamed transaction was prepared (v3+); same layout as Prepare.
    StreamPrepare(Prepare),
    /// A tag this decoder does not know; `body` is everything after the tag byte.
    Unknown {
        /// The tag byte.
        tag: u8,
        /// The bytes after the tag (a slice of the input).
        body: Bytes,
    },
}

impl Message {
    /// The wire tag byte of this message.
    pub(crate) fn tag(&self) -> u8 {
        match self {
            Message::Begin(_) => b'B',
            Message::Commit(_) => b'C',
            Message::Origin(_) => b'O',
            Message::Relation(_) => b'R',
            Message::Type(_) => b'Y',
            Message::Insert(_) => b'I',
            Message::Update(_) => b'U',
            Message::Delete(_) => b'D',
            Message::Truncate(_) => b'T',
            Message::Message(_) => b'M',
            Message::StreamStart(_) => b'S',
            Message::StreamStop => b'E',
            Message::StreamCommit(_) => b'c',
            Message::StreamAbort(_) => b'A',
            Message::BeginPrepare(_) => b'b',
            Message::Prepare(_) => b'P',
            Message::CommitPrepared(_) => b'K',
            Message::RollbackPrepared(_) => b'r',
            Message::StreamPrepare(_) => b'p',
            Message::Unknown { tag, .. } => *tag,
        }
    }
}

/// Begin (`'B'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the transaction's commit record (equals the matching [`Commit::commit_lsn`]).
    pub final_lsn: Lsn,
    /// Commit timestamp, microseconds since 2000-01-01 00:00:00 UTC.
    pub commit_ts: i64,
    /// Transaction id.
    pub xid: u32,
}

/// Commit (`'C'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Flags; currently always 0.
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End LSN of the transaction (where a consumer resumes after it).
    pub end_lsn: Lsn,
    /// Commit timestamp, microseconds since 2000-01-01 00:00:00 UTC.
    pub commit_ts: i64,
}

/// Origin (`'O'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// LSN of the commit on the origin server.
    pub commit_lsn: Lsn,
    /// Name of the replication origin.
    pub name: String,
}

/// Relation (`'R'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Inside a stream (v2+) only: the (sub)transaction that made the change; the top-level
    /// xid is the one of the enclosing [`StreamStart`].
    pub xid: Option<u32>,
    /// Relation OID.
    pub oid: u32,
    /// Schema name; empty means `pg_catalog`.
    pub namespace: String,
    /// Relation name.
    pub name: String,
    /// `relreplident`: `b'd'` default, `b'n'` nothing, `b'f'` full, `b'i'` index.
    pub replica_identity: u8,
    /// Published columns, in attribute order.
    pub columns: Vec<Column>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Flags; `COLUMN_FLAG_KEY` (1) marks a replica identity column.
    pub flags: u8,
    /// Column name.
    pub name: String,
    /// OID of the column's type.
    pub type_oid: u32,
    /// Type modifier (`atttypmod`), -1 if none.
    pub type_modifier: i32,
}

impl Column {
    /// Whether the column is part of the replica identity key.
    pub(crate) fn is_key(&self) -> bool {
        self.flags & COLUMN_FLAG_KEY != 0
    }
}

/// Type (`'Y'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    /// The streamed (sub)transaction, as in [`Relation::xid`].
    pub xid: Option<u32>,
    /// Type OID.
    pub oid: u32,
    /// Schema name; empty means `pg_catalog`.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// Insert (`'I'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The streamed (sub)transaction, as in [`Relation::xid`].
    pub xid: Option<u32>,
    /// OID of the relation (described by an earlier [`Relation`]).
    pub relation_oid: u32,
    /// The inserted row.
    pub new: Tuple,
}

/// Update (`'U'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The streamed (sub)transaction, as in [`Relation::xid`].
    pub xid: Option<u32>,
    /// OID of the relation.
    pub relation_oid: u32,
    /// The old key (if it changed) or the full old row (REPLICA IDENTITY FULL).
    pub old: Option<OldTuple>,
    /// The new row; unchanged TOASTed columns are [`TupleValue::UnchangedToast`].
    pub new: Tuple,
}

/// Delete (`'D'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The streamed (sub)transaction, as in [`Relation::xid`].
    pub xid: Option<u32>,
    /// OID of the relation.
    pub relation_oid: u32,
    /// The old key or the full old row.
    pub old: OldTuple,
}

/// Truncate (`'T'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// The streamed (sub)transaction, as in [`Relation::xid`].
    pub xid: Option<u32>,
    /// Bits `TRUNCATE_CASCADE` (1) and `TRUNCATE_RESTART_IDENTITY` (2).
    pub options: u8,
    /// OIDs of the truncated relations.
    pub relation_oids: Vec<u32>,
}

/// Logical decoding message (`'M'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// The streamed (sub)transaction, as in [`Relation::xid`].
    pub xid: Option<u32>,
    /// Whether the message was emitted as part of its transaction (flag bit 1).
    pub transactional: bool,
    /// LSN of the message.
    pub lsn: Lsn,
    /// The prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// The content (a slice of the input).
    pub content: Bytes,
}

/// Stream Start (`'S'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// Transaction id of the streamed transaction.
    pub xid: u32,
    /// Whether this is the first chunk streamed for `xid`.
    pub first_segment: bool,
}

/// Stream Commit (`'c'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    /// Transaction id of the streamed transaction.
    pub xid: u32,
    /// Flags; currently always 0.
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End LSN of the transaction.
    pub end_lsn: Lsn,
    /// Commit timestamp, microseconds since 2000-01-01 00:00:00 UTC.
    pub commit_ts: i64,
}

/// Stream Abort (`'A'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAbort {
    /// Transaction id of the top-level streamed transaction.
    pub xid: u32,
    /// Aborted subtransaction id; equals `xid` when the whole transaction aborted.
    pub subxid: u32,
    /// LSN of the abort; only with protocol 4 and `streaming = parallel` (both fields are
    /// `Some` or both `None`).
    pub abort_lsn: Option<Lsn>,
    /// Abort timestamp, microseconds since 2000-01-01 UTC; present with `abort_lsn`.
    pub abort_ts: Option<i64>,
}

/// Begin Prepare (`'b'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare timestamp, microseconds since 2000-01-01 UTC.
    pub prepare_ts: i64,
    /// Transaction id.
    pub xid: u32,
    /// Global identifier of the prepared transaction.
    pub gid: String,
}

/// Prepare (`'P'`) and Stream Prepare (`'p'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Flags; currently always 0.
    pub flags: u8,
    /// LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare timestamp, microseconds since 2000-01-01 UTC.
    pub prepare_ts: i64,
    /// Transaction id.
    pub xid: u32,
    /// Global identifier of the prepared transaction.
    pub gid: String,
}

/// Commit Prepared (`'K'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Flags; currently always 0.
    pub flags: u8,
    /// LSN of the commit prepared record.
    pub commit_lsn: Lsn,
    /// End LSN of the commit prepared transaction.
    pub end_lsn: Lsn,
    /// Commit timestamp, microseconds since 2000-01-01 UTC.
    pub commit_ts: i64,
    /// Transaction id.
    pub xid: u32,
    /// Global identifier of the prepared transaction.
    pub gid: String,
}

/// Rollback Prepared (`'r'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Flags; currently always 0.
    pub flags: u8,
    /// End LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// End LSN of the rollback prepared transaction.
    pub rollback_end_lsn: Lsn,
    /// Prepare timestamp, microseconds since 2000-01-01 UTC.
    pub prepare_ts: i64,
    /// Rollback timestamp, microseconds since 2000-01-01 UTC.
    pub rollback_ts: i64,
    /// Transaction id.
    pub xid: u32,
    /// Global identifier of the prepared transaction.
    pub gid: String,
}

/// The old row of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `'K'`: only the replica identity key columns are set, the others are [`TupleValue::Null`].
    Key(Tuple),
    /// `'O'`: the full old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

#[cfg(test)]
impl OldTuple {
    /// The values, whichever kind this is.
    pub(crate) fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }

    /// Whether only the key columns were sent (`'K'`).
    pub(crate) fn is_key_only(&self) -> bool {
        matches!(self, OldTuple::Key(_))
    }
}

/// A row: one value per published column, in the order of the [`Relation`]'s columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tuple(pub Vec<TupleValue>);

/// One column value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: an unchanged TOASTed value that was not sent.
    UnchangedToast,
    /// `'t'`: the value in the type's text output format (a slice of the input).
    Text(Bytes),
    /// `'b'`: the value in the type's binary send format (a slice of the input).
    Binary(Bytes),
}

/// Why a buffer is not a well-formed pgoutput message. Offsets count from the tag byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer was empty: there is no tag byte.
    #[error("empty pgoutput message: no tag byte")]
    Empty,
    /// The message ended before a field was complete.
    #[error(
        "truncated pgoutput message: {what} at offset {offset} needs {needed} bytes, \
         {available} left"
    )]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the message.
        available: usize,
    },
    /// A string had no NUL terminator before the end of the message.
    #[error("malformed pgoutput message: {what} at offset {offset} is not NUL-terminated")]
    UnterminatedString {
        /// The field being read.
        what: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// A string was not valid UTF-8.
    #[error("malformed pgoutput message: {what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// Where the string starts.
        offset: usize,
    },
    /// A length or count field was negative.
    #[error("malformed pgoutput message: {what} at offset {offset} is {len}")]
    InvalidLength {
        /// The field being read.
        what: &'static str,
        /// Where the length field starts.
        offset: usize,
        /// The value found.
        len: i64,
    },
    /// A byte had a value the format does not allow there.
    #[error(
        "malformed pgoutput message: {what} at offset {offset} is 0x{found:02x}, \
         expected {expected}"
    )]
    UnexpectedByte {
        /// The field being read.
        what: &'static str,
        /// Where the byte is.
        offset: usize,
        /// The byte found.
        found: u8,
        /// What was allowed.
        expected: &'static str,
    },
    /// A complete message was followed by more bytes.
    #[error(
        "malformed pgoutput message: {remaining} trailing bytes at offset {offset} after a \
         complete '{}' message", char::from(*tag)
    )]
    TrailingBytes {
        /// The message's tag byte.
        tag: u8,
        /// Where the extra bytes start.
        offset: usize,
        /// How many extra bytes there are.
        remaining: usize,
    },
}
