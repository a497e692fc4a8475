//! Pure framing of the backend side of the protocol: cutting complete frames off a byte
//! buffer, parsing the CopyData bodies of the replication stream, and turning ErrorResponse
//! fields into [`PgError`]s.
//!
//! Owns no socket and no state: the connection hands in its read buffer.
//!
//! Invariants:
//! - A frame is a tag byte plus a big-endian `i32` length (which counts itself); lengths outside
//!   `4..=`[`MAX_FRAME_LEN`] are protocol errors.
//! - [`parse_frame`] consumes bytes only when it returns a complete frame; an incomplete frame
//!   leaves the buffer untouched (what makes reading cancel-safe).
//! - A server `DETAIL` goes into its own field of [`PgError::Server`], which `Display` leaves
//!   out (it can quote row values).

use bytes::{Buf, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, Message};

use super::ReplicationMessage;
use crate::lsn::Lsn;
use crate::postgres::error::PgError;

/// The largest backend frame accepted (1 GiB, PostgreSQL's own allocation limit).
pub(super) const MAX_FRAME_LEN: usize = 1 << 30;

/// One complete backend frame.
pub(crate) enum Frame {
    /// Anything `postgres-protocol` knows how to parse.
    Message(Message),
    /// `W`, which `postgres-protocol` does not know.
    CopyBothResponse,
}

/// Cuts one complete frame off the front of `buf`, or returns `None` (leaving `buf` untouched)
/// if it does not hold a complete frame yet.
pub(crate) fn parse_frame(buf: &mut BytesMut) -> Result<Option<Frame>, PgError> {
    let Some(total) = frame_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let tag = buf[0];
    let mut frame = buf.split_to(total);
    match tag {
        b'W' => Ok(Some(Frame::CopyBothResponse)),
        b'v' => Err(PgError::Protocol(
            "the server does not support protocol 3.0 as requested (NegotiateProtocolVersion)"
                .to_string(),
        )),
        _ => match Message::parse(&mut frame) {
            Ok(Some(message)) => Ok(Some(Frame::Message(message))),
            Ok(None) => Err(PgError::Protocol(format!(
                "incomplete {:?} message after framing",
                char::from(tag)
            ))),
            Err(e) => Err(PgError::Protocol(format!(
                "cannot parse a {:?} message: {e}",
                char::from(tag)
            ))),
        },
    }
}

/// The total size (tag included) of the frame starting `buf`, once its header is complete.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, PgError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_FRAME_LEN).contains(&len) {
        return Err(PgError::Protocol(format!(
            "invalid length {len} for a {:?} message (allowed 4..={MAX_FRAME_LEN})",
            char::from(header[0])
        )));
    }
    Ok(Some(len + 1))
}

/// Builds a `PgError::Server` from ErrorResponse fields.
pub(super) fn server_error(mut fields: ErrorFields<'_>) -> PgError {
    let (mut code, mut message, mut detail, mut hint) = (None, None, None, None);
    loop {
        match fields.next() {
            Ok(Some(field)) => {
                let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
                match field.type_() {
                    b'C' => code = Some(value),
                    b'M' => message = Some(value),
                    b'D' => detail = Some(value),
                    b'H' => hint = Some(value),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return PgError::Protocol(format!("malformed ErrorResponse: {e}")),
        }
    }
    PgError::Server {
        code: code.unwrap_or_else(|| "XX000".to_string()),
        message: message.unwrap_or_default(),
        detail,
        hint,
    }
}

/// A short name for a backend message, for protocol errors.
fn message_name(message: &Message) -> &'static str {
    match message {
        Message::AuthenticationOk => "AuthenticationOk",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "an unexpected message",
    }
}

/// A protocol error for a frame that does not belong here.
pub(super) fn unexpected(frame: &Frame, during: &str) -> PgError {
    let name = match frame {
        Frame::Message(m) => message_name(m),
        Frame::CopyBothResponse => "CopyBothResponse",
    };
    PgError::Protocol(format!("unexpected {name} {during}"))
}

/// Parses the body of a CopyData frame of the replication stream.
pub(super) fn parse_copy_data(data: Bytes) -> Result<ReplicationMessage, PgError> {
    match data.first() {
        Some(b'w') => {
            let mut header = header(&data, 25, "XLogData")?;
            let wal_start = Lsn(header.get_u64());
            let wal_end = Lsn(header.get_u64());
            let server_clock = header.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_clock,
                data: data.slice(25..),
            })
        }
        Some(b'k') => {
            let mut body = header(&data, 18, "keepalive")?;
            let wal_end = Lsn(body.get_u64());
            let server_clock = body.get_i64();
            let reply_requested = body.get_u8() != 0;
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                server_clock,
                reply_requested,
            })
        }
        Some(other) => Err(PgError::Protocol(format!(
            "unknown replication message type {:?}",
            char::from(*other)
        ))),
        None => Err(PgError::Protocol("empty CopyData message".to_string())),
    }
}

/// Bytes `1..len` of a CopyData body (after its type byte), or an error naming `what` when the
/// body is shorter than `len`.
fn header<'a>(data: &'a [u8], len: usize, what: &str) -> Result<&'a [u8], PgError> {
    data.get(1..len).ok_or_else(|| {
        PgError::Protocol(format!("{what} message too short ({} bytes)", data.len()))
    })
}
