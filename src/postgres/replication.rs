//! Our own PostgreSQL logical-replication client (`replication=database`) on `postgres-protocol`.
//!
//! Owns one socket (TCP, optionally TLS via tokio-rustls) and the frontend/backend protocol on
//! it: startup and authentication (SCRAM-SHA-256, md5, cleartext), simple queries and
//! replication commands, and the CopyBoth stream of `XLogData`/keepalive messages with standby
//! status updates.
//!
//! Invariants:
//! - Framing is ours: a frame is a tag byte plus a big-endian `i32` length; frames larger than
//!   [`MAX_FRAME_LEN`] are rejected. Only complete frames are parsed, and they are cut from a
//!   buffer owned by the connection, so [`ReplicationStream::next`] is cancel-safe.
//! - TLS follows [`SslMode`](super::connect::SslMode): never falls back to plaintext under
//!   `require`/`verify-*`.
//! - Status LSNs are sent exactly as given; the caller guarantees their monotonicity and that a
//!   flushed LSN is durable downstream.
//! - Replication commands cannot take bind parameters, so slot names are validated against
//!   PostgreSQL's rule and every identifier/literal is quoted here.
//! - Nothing logged contains a password or row data (notices are logged by SQLSTATE only).
//! - An operation cancelled halfway (other than `next`) leaves the connection unusable; later
//!   calls fail with a protocol error instead of misreading the stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::connect::{CONNECT_TIMEOUT, ConnectParams, SESSION_OPTIONS, SslMode, tls_config};
use super::error::PgError;
use crate::lsn::Lsn;

/// The largest backend frame accepted (1 GiB, PostgreSQL's own allocation limit).
pub const MAX_FRAME_LEN: usize = 1 << 30;

/// Minimum free buffer space offered to each socket read.
const READ_CHUNK: usize = 64 * 1024;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The longest replication slot name PostgreSQL accepts (`NAMEDATALEN - 1`).
pub const MAX_SLOT_NAME_LEN: usize = 63;

/// Result of `IDENTIFY_SYSTEM`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's system identifier (a decimal number, as text).
    pub system_id: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database this connection is bound to.
    pub dbname: Option<String>,
}

/// Result of `CREATE_REPLICATION_SLOT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotCreated {
    /// The slot's name.
    pub slot_name: String,
    /// The first LSN from which the slot streams complete transactions.
    pub consistent_point: Lsn,
    /// The exported snapshot (with `export_snapshot`), valid until the next command on the
    /// creating connection.
    pub snapshot_name: Option<String>,
}

/// One message of the replication stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data: for logical replication, one pgoutput message.
    XLogData {
        /// WAL position where this data starts.
        wal_start: Lsn,
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// The server's clock at sending, in µs since 2000-01-01 UTC.
        server_clock: i64,
        /// The payload (a pgoutput message).
        data: Bytes,
    },
    /// Primary keepalive.
    Keepalive {
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// The server's clock at sending, in µs since 2000-01-01 UTC.
        server_clock: i64,
        /// The server asks for a status update now (or it will time the connection out).
        reply_requested: bool,
    },
}

/// The socket, plain or TLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One complete backend frame.
enum Frame {
    /// Anything `postgres-protocol` knows how to parse.
    Message(Message),
    /// `W`, which `postgres-protocol` does not know.
    CopyBothResponse,
}

/// Cuts one complete frame off the front of `buf`, or returns `None` (leaving `buf` untouched)
/// if it does not hold a complete frame yet.
fn parse_frame(buf: &mut BytesMut) -> Result<Option<Frame>, PgError> {
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
fn frame_len(buf: &[u8]) -> Result<Option<usize>, PgError> {
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
fn server_error(mut fields: ErrorFields<'_>) -> PgError {
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

fn unexpected(frame: &Frame, during: &str) -> PgError {
    let name = match frame {
        Frame::Message(m) => message_name(m),
        Frame::CopyBothResponse => "CopyBothResponse",
    };
    PgError::Protocol(format!("unexpected {name} {during}"))
}

fn closed() -> PgError {
    PgError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    ))
}

/// Maps a TLS handshake failure: certificate/protocol problems are `Tls`, network ones `Io`.
fn tls_handshake_error(e: io::Error) -> PgError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => PgError::Tls(format!("tls handshake failed: {tls}")),
        None => PgError::Io(e),
    }
}

/// Microseconds since 2000-01-01 UTC, now.
fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

/// Quotes an identifier for a (replication) command: `"..."` with inner `"` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for a (replication) command: `'...'` with inner `'` doubled.
/// (The replication grammar has no backslash escapes.)
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The value of pgoutput's `publication_names` option: each name quoted as an identifier,
/// comma-separated. [`ReplicationConnection::start_logical`] then quotes it as a literal.
pub fn publication_names_option(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks a replication slot name against PostgreSQL's rule: 1 to 63 characters among
/// lower-case ASCII letters, digits and underscore.
pub fn validate_slot_name(slot: &str) -> Result<(), PgError> {
    let ok_chars = slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if slot.is_empty() || slot.len() > MAX_SLOT_NAME_LEN || !ok_chars {
        return Err(PgError::Config(format!(
            "invalid replication slot name {slot:?}: use 1 to {MAX_SLOT_NAME_LEN} lower-case \
             letters, digits and underscores"
        )));
    }
    Ok(())
}

/// The `START_REPLICATION` command for a logical slot.
fn start_replication_command(
    slot: &str,
    start: Lsn,
    options: &[(&str, &str)],
) -> Result<String, PgError> {
    validate_slot_name(slot)?;
    let mut sql = format!(
        "START_REPLICATION SLOT {} LOGICAL {start}",
        quote_ident(slot)
    );
    if !options.is_empty() {
        let options: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("{} {}", quote_ident(k), quote_literal(v)))
            .collect();
        sql.push_str(" (");
        sql.push_str(&options.join(", "));
        sql.push(')');
    }
    Ok(sql)
}

/// Parses the body of a CopyData frame of the replication stream.
fn parse_copy_data(data: Bytes) -> Result<ReplicationMessage, PgError> {
    match data.first() {
        Some(b'w') => {
            if data.len() < 25 {
                return Err(PgError::Protocol(format!(
                    "XLogData message too short ({} bytes)",
                    data.len()
                )));
            }
            let mut header = &data[1..25];
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
            if data.len() < 18 {
                return Err(PgError::Protocol(format!(
                    "keepalive message too short ({} bytes)",
                    data.len()
                )));
            }
            let mut body = &data[1..18];
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

/// The connection state shared by [`ReplicationConnection`] and [`ReplicationStream`].
struct Conn {
    io: Transport,
    /// Bytes read but not yet parsed; only ever holds the tail after the last complete frame.
    rbuf: BytesMut,
    /// Bytes to send; partially written bytes are removed, the rest stays for the next flush.
    wbuf: BytesMut,
    backend_pid: Option<i32>,
    /// Set while a request/response exchange is in progress; if still set when the next one
    /// starts, the previous one was cancelled or failed mid-way and the stream is out of sync.
    busy: bool,
}

impl Conn {
    fn new(io: Transport) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            backend_pid: None,
            busy: false,
        }
    }

    /// Writes out `wbuf` and flushes. A cancelled call keeps the unwritten bytes in `wbuf`.
    async fn flush_out(&mut self) -> Result<(), PgError> {
        self.io.write_all_buf(&mut self.wbuf).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// The next complete frame, or `None` at a clean end of the connection. Cancel-safe: the
    /// only await is `read_buf`, which reads nothing when cancelled, and partial frames stay in
    /// `rbuf`.
    async fn read_frame(&mut self) -> Result<Option<Frame>, PgError> {
        loop {
            if let Some(frame) = parse_frame(&mut self.rbuf)? {
                return Ok(Some(frame));
            }
            let missing = match frame_len(&self.rbuf)? {
                Some(total) => total - self.rbuf.len(),
                None => 5 - self.rbuf.len(),
            };
            // Grow towards a large frame gradually (BytesMut doubles), not all at once.
            self.rbuf
                .reserve(missing.clamp(READ_CHUNK, 16 * READ_CHUNK));
            if self.io.read_buf(&mut self.rbuf).await? == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(PgError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection in the middle of a message",
                    )))
                };
            }
        }
    }

    /// Handles messages that may arrive at any time; returns true if `message` was one.
    fn absorb(&mut self, message: &Message) -> bool {
        match message {
            Message::ParameterStatus(body) => {
                if let (Ok(name), Ok(value)) = (body.name(), body.value()) {
                    tracing::debug!(parameter = name, value, "server parameter");
                }
                true
            }
            Message::NoticeResponse(body) => {
                let (mut severity, mut code) = (String::new(), String::new());
                let mut fields = body.fields();
                while let Ok(Some(field)) = fields.next() {
                    match field.type_() {
                        b'V' => severity = String::from_utf8_lossy(field.value_bytes()).into(),
                        b'C' => code = String::from_utf8_lossy(field.value_bytes()).into(),
                        _ => {}
                    }
                }
                tracing::debug!(%severity, %code, "server notice");
                true
            }
            Message::NotificationResponse(_) => true,
            _ => false,
        }
    }

    /// The next frame that is not an asynchronous message; end of connection is an error.
    async fn recv(&mut self) -> Result<Frame, PgError> {
        loop {
            match self.read_frame().await? {
                None => return Err(closed()),
                Some(Frame::Message(m)) if self.absorb(&m) => continue,
                Some(frame) => return Ok(frame),
            }
        }
    }

    /// Marks the start of an exchange; fails if an earlier one never completed.
    fn begin(&mut self) -> Result<(), PgError> {
        if self.busy {
            return Err(PgError::Protocol(
                "the replication connection is unusable: an earlier operation was cancelled or \
                 failed mid-way"
                    .to_string(),
            ));
        }
        self.busy = true;
        Ok(())
    }

    /// Starts an exchange by sending a simple Query message. A command the protocol cannot
    /// carry (NUL bytes) is rejected before anything is buffered or sent.
    async fn send_query(&mut self, sql: &str) -> Result<(), PgError> {
        if sql.contains('\0') {
            return Err(PgError::Config(
                "a command must not contain NUL bytes".to_string(),
            ));
        }
        self.begin()?;
        let base = self.wbuf.len();
        if let Err(e) = frontend::query(sql, &mut self.wbuf) {
            self.wbuf.truncate(base);
            self.busy = false;
            return Err(PgError::Protocol(format!("cannot frame a query: {e}")));
        }
        self.flush_out().await
    }

    /// Runs a simple query; rows as text. A server error is returned after ReadyForQuery, so
    /// the connection stays usable.
    async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        self.send_query(sql).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let message = match self.recv().await? {
                Frame::Message(m) => m,
                frame => return Err(unexpected(&frame, "in reply to a simple query")),
            };
            match message {
                Message::RowDescription(_)
                | Message::CommandComplete(_)
                | Message::EmptyQueryResponse
                | Message::CopyData(_)
                | Message::CopyDone => {}
                Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let mut values = Vec::new();
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges
                        .next()
                        .map_err(|e| PgError::Protocol(format!("malformed DataRow: {e}")))?
                    {
                        values.push(match range {
                            None => None,
                            Some(r) => {
                                Some(String::from_utf8(buffer[r].to_vec()).map_err(|_| {
                                    PgError::Protocol("a text value is not UTF-8".to_string())
                                })?)
                            }
                        });
                    }
                    rows.push(values);
                }
                Message::ErrorResponse(body) => {
                    error.get_or_insert(server_error(body.fields()));
                }
                Message::CopyInResponse(_) => {
                    frontend::copy_fail("COPY FROM STDIN is not supported here", &mut self.wbuf)
                        .map_err(|e| PgError::Protocol(e.to_string()))?;
                    self.flush_out().await?;
                }
                Message::CopyOutResponse(_) => {
                    error.get_or_insert(PgError::Protocol(
                        "COPY TO STDOUT is not supported by simple_query".to_string(),
                    ));
                }
                Message::ReadyForQuery(_) => break,
                other => {
                    return Err(unexpected(
                        &Frame::Message(other),
                        "in reply to a simple query",
                    ));
                }
            }
        }
        self.busy = false;
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self.io, Transport::Tls(_))
    }
}

/// A replication-protocol connection (`replication=database`) before streaming.
pub struct ReplicationConnection {
    conn: Conn,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("tls", &self.conn.is_tls())
            .field("backend_pid", &self.conn.backend_pid)
            .finish()
    }
}

/// Opens the socket and negotiates TLS as `params.sslmode` requires.
async fn open_transport(params: &ConnectParams) -> Result<Transport, PgError> {
    let mut tcp = TcpStream::connect((params.host.as_str(), params.port)).await?;
    tcp.set_nodelay(true)?;
    let Some(config) = tls_config(params)? else {
        return Ok(Transport::Plain(tcp));
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    // Exactly one byte: anything the server sent after it belongs to the TLS handshake.
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {
            let name = params.server_name()?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(tls_handshake_error)?;
            Ok(Transport::Tls(Box::new(tls)))
        }
        b'N' if params.sslmode == SslMode::Prefer => {
            tracing::debug!("server refused tls; continuing in plaintext (sslmode=prefer)");
            Ok(Transport::Plain(tcp))
        }
        b'N' => Err(PgError::Tls(format!(
            "the server does not accept TLS connections, but sslmode={}",
            params.sslmode
        ))),
        other => Err(PgError::Protocol(format!(
            "unexpected answer {:?} to the SSL request",
            char::from(other)
        ))),
    }
}

/// The password for an authentication request, or an `Auth` error if there is none.
fn password_for(params: &ConnectParams) -> Result<&str, PgError> {
    params
        .password
        .as_ref()
        .map(|p| p.expose())
        .ok_or_else(|| PgError::Auth("the server asks for a password but none is given".into()))
}

/// Appends a PasswordMessage (cleartext or md5 hash).
fn put_password(conn: &mut Conn, password: &[u8]) -> Result<(), PgError> {
    frontend::password_message(password, &mut conn.wbuf)
        .map_err(|_| PgError::Auth("the password must not contain NUL bytes".to_string()))
}

/// Runs the authentication exchange up to AuthenticationOk.
async fn authenticate(conn: &mut Conn, params: &ConnectParams) -> Result<(), PgError> {
    loop {
        let message = match conn.recv().await? {
            Frame::Message(m) => m,
            frame => return Err(unexpected(&frame, "during authentication")),
        };
        match message {
            Message::AuthenticationOk => {
                tracing::debug!("authenticated");
                return Ok(());
            }
            Message::AuthenticationCleartextPassword => {
                if !conn.is_tls() {
                    tracing::warn!(
                        "server asks for a cleartext password over an unencrypted connection"
                    );
                }
                put_password(conn, password_for(params)?.as_bytes())?;
                conn.flush_out().await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(
                    params.user.as_bytes(),
                    password_for(params)?.as_bytes(),
                    body.salt(),
                );
                put_password(conn, hash.as_bytes())?;
                conn.flush_out().await?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram = false;
                while let Some(m) = mechanisms
                    .next()
                    .map_err(|e| PgError::Protocol(format!("malformed SASL mechanisms: {e}")))?
                {
                    scram |= m == SCRAM_SHA_256;
                }
                if !scram {
                    return Err(PgError::Auth(
                        "the server offers no SASL mechanism this client supports (needs \
                         SCRAM-SHA-256)"
                            .to_string(),
                    ));
                }
                scram_sha_256(conn, password_for(params)?).await?;
            }
            Message::ErrorResponse(body) => return Err(server_error(body.fields())),
            Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential => {
                return Err(PgError::Auth(
                    "the server requires an authentication method this client does not support \
                     (GSSAPI/SSPI/Kerberos); use scram-sha-256 or md5 in pg_hba.conf"
                        .to_string(),
                ));
            }
            other => return Err(unexpected(&Frame::Message(other), "during authentication")),
        }
    }
}

/// SCRAM-SHA-256 without channel binding (the client says it does not support it, which
/// servers accept also over TLS).
async fn scram_sha_256(conn: &mut Conn, password: &str) -> Result<(), PgError> {
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut conn.wbuf)
        .map_err(|e| PgError::Protocol(format!("cannot frame a SASL message: {e}")))?;
    conn.flush_out().await?;
    match conn.recv().await? {
        Frame::Message(Message::AuthenticationSaslContinue(body)) => scram
            .update(body.data())
            .map_err(|e| PgError::Auth(format!("invalid SCRAM challenge from the server: {e}")))?,
        Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(body.fields())),
        frame => return Err(unexpected(&frame, "during SCRAM authentication")),
    }
    frontend::sasl_response(scram.message(), &mut conn.wbuf)
        .map_err(|e| PgError::Protocol(format!("cannot frame a SASL message: {e}")))?;
    conn.flush_out().await?;
    match conn.recv().await? {
        Frame::Message(Message::AuthenticationSaslFinal(body)) => {
            scram.finish(body.data()).map_err(|e| {
                PgError::Auth(format!("the server's SCRAM signature does not verify: {e}"))
            })?;
        }
        Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(body.fields())),
        frame => return Err(unexpected(&frame, "during SCRAM authentication")),
    }
    Ok(())
}

impl ReplicationConnection {
    /// Connects with `replication=database`, negotiates TLS per `sslmode`, authenticates
    /// (SCRAM-SHA-256, md5 or cleartext) and waits for the server to be ready. The whole
    /// handshake is bounded by [`CONNECT_TIMEOUT`].
    pub async fn connect(params: &ConnectParams) -> Result<Self, PgError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(params)).await {
            Ok(result) => result,
            Err(_) => Err(PgError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting took longer than {CONNECT_TIMEOUT:?}"),
            ))),
        }
    }

    async fn connect_inner(params: &ConnectParams) -> Result<Self, PgError> {
        tracing::debug!(url = %params.redacted_url(), "opening replication connection");
        let io = open_transport(params).await?;
        let mut conn = Conn::new(io);
        conn.busy = true;
        frontend::startup_message(
            [
                ("user", params.user.as_str()),
                ("database", params.dbname.as_str()),
                ("replication", "database"),
                ("application_name", params.application_name.as_str()),
                ("options", SESSION_OPTIONS),
            ],
            &mut conn.wbuf,
        )
        .map_err(|_| {
            PgError::Config(
                "user, database and application_name must not contain NUL bytes".to_string(),
            )
        })?;
        conn.flush_out().await?;
        authenticate(&mut conn, params).await?;
        loop {
            match conn.recv().await? {
                Frame::Message(Message::BackendKeyData(body)) => {
                    conn.backend_pid = Some(body.process_id());
                }
                Frame::Message(Message::ReadyForQuery(_)) => break,
                Frame::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(body.fields()));
                }
                frame => return Err(unexpected(&frame, "after authentication")),
            }
        }
        conn.busy = false;
        tracing::info!(
            host = %params.host,
            port = params.port,
            dbname = %params.dbname,
            tls = conn.is_tls(),
            backend_pid = conn.backend_pid,
            "replication connection ready"
        );
        Ok(ReplicationConnection { conn })
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// The server process id serving this connection (from BackendKeyData).
    pub fn backend_pid(&self) -> Option<i32> {
        self.conn.backend_pid
    }

    /// `IDENTIFY_SYSTEM`: system id, timeline, current WAL position and database.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, PgError> {
        let rows = self.conn.simple_query("IDENTIFY_SYSTEM").await?;
        let row = match rows.as_slice() {
            [row] if row.len() >= 3 => row,
            _ => {
                return Err(PgError::Protocol(
                    "IDENTIFY_SYSTEM did not return one row of at least 3 columns".to_string(),
                ));
            }
        };
        let text = |i: usize, what: &str| {
            row[i]
                .clone()
                .ok_or_else(|| PgError::Protocol(format!("IDENTIFY_SYSTEM returned no {what}")))
        };
        let timeline = text(1, "timeline")?;
        let xlogpos = text(2, "xlogpos")?;
        Ok(SystemInfo {
            system_id: text(0, "systemid")?,
            timeline: timeline
                .parse()
                .map_err(|_| PgError::Protocol(format!("invalid timeline {timeline:?}")))?,
            xlogpos: xlogpos
                .parse()
                .map_err(|_| PgError::Protocol(format!("invalid xlogpos {xlogpos:?}")))?,
            dbname: row.get(3).cloned().flatten(),
        })
    }

    /// Runs a simple query (a replication command or, on a `replication=database` connection,
    /// SQL) and returns all rows as text. A server error becomes `PgError::Server`, and the
    /// connection stays usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        self.conn.simple_query(sql).await
    }

    /// `CREATE_REPLICATION_SLOT "slot" LOGICAL pgoutput (EXPORT_SNAPSHOT|NOEXPORT_SNAPSHOT)`.
    /// An exported snapshot stays valid only until the next command on this connection: use
    /// it from another connection (`SET TRANSACTION SNAPSHOT`) before calling `start_logical`.
    pub async fn create_logical_slot(
        &mut self,
        slot: &str,
        export_snapshot: bool,
    ) -> Result<SlotCreated, PgError> {
        validate_slot_name(slot)?;
        let snapshot = if export_snapshot {
            "EXPORT_SNAPSHOT"
        } else {
            "NOEXPORT_SNAPSHOT"
        };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {snapshot}",
            quote_ident(slot)
        );
        let rows = self.conn.simple_query(&sql).await?;
        let row = match rows.as_slice() {
            [row] if row.len() >= 3 => row,
            _ => {
                return Err(PgError::Protocol(
                    "CREATE_REPLICATION_SLOT did not return one row of at least 3 columns"
                        .to_string(),
                ));
            }
        };
        let consistent_point = row[1].as_deref().unwrap_or_default();
        let created = SlotCreated {
            slot_name: row[0].clone().unwrap_or_else(|| slot.to_string()),
            consistent_point: consistent_point.parse().map_err(|_| {
                PgError::Protocol(format!("invalid consistent_point {consistent_point:?}"))
            })?,
            snapshot_name: row[2].clone(),
        };
        tracing::info!(
            slot,
            consistent_point = %created.consistent_point,
            exported_snapshot = created.snapshot_name.is_some(),
            "replication slot created"
        );
        Ok(created)
    }

    /// `DROP_REPLICATION_SLOT "slot" [WAIT]`; with `wait`, waits for a process still using the
    /// slot to release it instead of failing with SQLSTATE 55006.
    pub async fn drop_slot(&mut self, slot: &str, wait: bool) -> Result<(), PgError> {
        validate_slot_name(slot)?;
        let wait = if wait { " WAIT" } else { "" };
        let sql = format!("DROP_REPLICATION_SLOT {}{wait}", quote_ident(slot));
        self.conn.simple_query(&sql).await?;
        tracing::info!(slot, "replication slot dropped");
        Ok(())
    }

    /// `START_REPLICATION SLOT "slot" LOGICAL X/Y ("k" 'v', ...)` and switch to streaming.
    /// Option names are quoted as identifiers and values as literals, so pass values raw (for
    /// `publication_names` use [`publication_names_option`]).
    pub async fn start_logical(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream, PgError> {
        let sql = start_replication_command(slot, start, options)?;
        self.conn.send_query(&sql).await?;
        match self.conn.recv().await? {
            Frame::CopyBothResponse => {}
            Frame::Message(Message::ErrorResponse(body)) => {
                return Err(server_error(body.fields()));
            }
            frame => return Err(unexpected(&frame, "in reply to START_REPLICATION")),
        }
        tracing::info!(slot, start = %start, "logical replication started");
        Ok(ReplicationStream {
            conn: self.conn,
            ended: false,
        })
    }
}

/// The CopyBoth stream of a started logical replication.
pub struct ReplicationStream {
    conn: Conn,
    ended: bool,
}

impl std::fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("tls", &self.conn.is_tls())
            .field("backend_pid", &self.conn.backend_pid)
            .field("ended", &self.ended)
            .finish()
    }
}

impl ReplicationStream {
    /// Next message; `Ok(None)` when the server ended the copy (CopyDone) or closed the
    /// connection cleanly. Cancel-safe: partial frames stay buffered in the stream, so it can
    /// be used inside `tokio::select!` without losing bytes.
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>, PgError> {
        while !self.ended {
            let frame = match self.conn.read_frame().await? {
                Some(frame) => frame,
                None => {
                    tracing::debug!("server closed the replication connection");
                    self.ended = true;
                    break;
                }
            };
            match frame {
                Frame::Message(m) if self.conn.absorb(&m) => {}
                Frame::Message(Message::CopyData(body)) => {
                    return parse_copy_data(body.into_bytes()).map(Some);
                }
                Frame::Message(Message::CopyDone) => {
                    tracing::debug!("server ended the replication stream");
                    self.ended = true;
                }
                Frame::Message(Message::ErrorResponse(body)) => {
                    self.ended = true;
                    return Err(server_error(body.fields()));
                }
                frame => return Err(unexpected(&frame, "in the replication stream")),
            }
        }
        Ok(None)
    }

    /// Sends a standby status update (`r`) with these write/flush/apply LSNs and the current
    /// time, and flushes the socket. LSNs are sent as given. If cancelled, the unsent rest of
    /// the message stays buffered and goes out first on the next call.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), PgError> {
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(write.0);
        payload.put_u64(flush.0);
        payload.put_u64(apply.0);
        payload.put_i64(pg_now_micros());
        payload.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(payload.freeze())
            .map_err(|e| PgError::Protocol(format!("cannot frame a status update: {e}")))?
            .write(&mut self.conn.wbuf);
        tracing::trace!(%write, %flush, %apply, "sending standby status");
        self.conn.flush_out().await
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// The server process id serving this stream (the walsender).
    pub fn backend_pid(&self) -> Option<i32> {
        self.conn.backend_pid
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::{Classify, ErrorClass};
    use crate::postgres::connect::test_support::{
        is_stale, server_ca, server_params, test_db_params, unique_name,
    };
    use crate::postgres::connect::{Password, connect_sql};

    // ---- pure unit tests -------------------------------------------------------------------

    #[test]
    fn validates_slot_names() {
        for ok in ["a", "driftless_main", "s_123", &"x".repeat(63)] {
            validate_slot_name(ok).unwrap();
        }
        for bad in [
            "",
            "Upper",
            "with-dash",
            "sp ace",
            "q\"uote",
            "é",
            &"x".repeat(64),
        ] {
            let err = validate_slot_name(bad).unwrap_err();
            assert!(matches!(err, PgError::Config(_)), "{bad:?}");
        }
    }

    #[test]
    fn quotes_commands() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        let pubs = publication_names_option(&["p1", "we\"ird,'name"]);
        assert_eq!(pubs, "\"p1\",\"we\"\"ird,'name\"");
        let sql = start_replication_command(
            "slot_1",
            Lsn(0x16_B374_D848),
            &[
                ("proto_version", "1"),
                ("publication_names", &pubs),
                ("messages", "true"),
            ],
        )
        .unwrap();
        assert_eq!(
            sql,
            "START_REPLICATION SLOT \"slot_1\" LOGICAL 16/B374D848 (\"proto_version\" '1', \
             \"publication_names\" '\"p1\",\"we\"\"ird,''name\"', \"messages\" 'true')"
        );
        assert_eq!(
            start_replication_command("s", Lsn::ZERO, &[]).unwrap(),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0"
        );
        assert!(start_replication_command("S; DROP", Lsn::ZERO, &[]).is_err());
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn xlog(wal_start: u64, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![b'w'];
        body.extend_from_slice(&wal_start.to_be_bytes());
        body.extend_from_slice(&(wal_start + 100).to_be_bytes());
        body.extend_from_slice(&7i64.to_be_bytes());
        body.extend_from_slice(payload);
        frame(b'd', &body)
    }

    #[test]
    fn frames_arrive_byte_by_byte() {
        let mut wire = xlog(1, b"Bbegin");
        let mut keepalive = vec![b'k'];
        keepalive.extend_from_slice(&9u64.to_be_bytes());
        keepalive.extend_from_slice(&(-3i64).to_be_bytes());
        keepalive.push(1);
        wire.extend(frame(b'd', &keepalive));
        wire.extend(frame(b'W', &[0, 0, 0]));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            if let Some(f) = parse_frame(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got.len(), 3);
        let mut got = got.into_iter();
        let Some(Frame::Message(Message::CopyData(d))) = got.next() else {
            panic!()
        };
        assert_eq!(
            parse_copy_data(d.into_bytes()).unwrap(),
            ReplicationMessage::XLogData {
                wal_start: Lsn(1),
                wal_end: Lsn(101),
                server_clock: 7,
                data: Bytes::from_static(b"Bbegin"),
            }
        );
        let Some(Frame::Message(Message::CopyData(d))) = got.next() else {
            panic!()
        };
        assert_eq!(
            parse_copy_data(d.into_bytes()).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: Lsn(9),
                server_clock: -3,
                reply_requested: true
            }
        );
        assert!(matches!(got.next(), Some(Frame::CopyBothResponse)));
    }

    #[test]
    fn rejects_bad_frames() {
        let mut huge = BytesMut::from(&[b'd', 0x40, 0, 0, 5][..]);
        assert!(matches!(parse_frame(&mut huge), Err(PgError::Protocol(_))));
        let mut short = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(matches!(parse_frame(&mut short), Err(PgError::Protocol(_))));
        let mut unknown = BytesMut::from(&frame(b'~', b"x")[..]);
        assert!(matches!(
            parse_frame(&mut unknown),
            Err(PgError::Protocol(_))
        ));
        assert!(parse_copy_data(Bytes::from_static(b"w123")).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"k1")).is_err());
        assert!(parse_copy_data(Bytes::from_static(b"zzz")).is_err());
        assert!(parse_copy_data(Bytes::new()).is_err());
        // 1 GiB exactly is allowed (header only, so not complete yet).
        let mut max = BytesMut::from(&[b'd', 0x40, 0, 0, 0][..]);
        assert!(parse_frame(&mut max).unwrap().is_none());
    }

    #[test]
    fn server_errors_keep_detail_out_of_display() {
        let mut body = Vec::new();
        for (t, v) in [
            (b'S', "ERROR"),
            (b'C', "23505"),
            (b'M', "dup"),
            (b'D', "Key (x)=(42)"),
        ] {
            body.push(t);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut buf = BytesMut::from(&frame(b'E', &body)[..]);
        let Some(Frame::Message(Message::ErrorResponse(e))) = parse_frame(&mut buf).unwrap() else {
            panic!()
        };
        let err = server_error(e.fields());
        assert_eq!(err.to_string(), "postgres server error 23505: dup");
        let PgError::Server { detail, .. } = err else {
            panic!()
        };
        assert_eq!(detail.as_deref(), Some("Key (x)=(42)"));
    }

    #[tokio::test]
    async fn next_is_cancel_safe_with_frames_split_anywhere() {
        use tokio::net::TcpListener;
        const N: u64 = 200;
        let payload = |i: u64| vec![(i % 251) as u8; (i as usize * 37) % 3000 + 1];
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A fake walsender that dribbles frames out in odd-sized chunks with pauses.
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            sock.set_nodelay(true).unwrap();
            let mut wire = Vec::new();
            for i in 0..N {
                wire.extend(xlog(i, &payload(i)));
                if i % 10 == 0 {
                    let mut keepalive = vec![b'k'];
                    keepalive.extend_from_slice(&i.to_be_bytes());
                    keepalive.extend_from_slice(&0i64.to_be_bytes());
                    keepalive.push(0);
                    wire.extend(frame(b'd', &keepalive));
                }
            }
            wire.extend(frame(b'c', &[]));
            let (mut pos, mut k) = (0, 0);
            while pos < wire.len() {
                let n = [1, 3, 7, 64, 500, 5, 4096][k % 7].min(wire.len() - pos);
                sock.write_all(&wire[pos..pos + n]).await.unwrap();
                pos += n;
                k += 1;
                if k % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
            // Keep the socket open until the client has read everything.
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut stream = ReplicationStream {
            conn: Conn::new(Transport::Plain(tcp)),
            ended: false,
        };
        let (mut xlogs, mut keepalives, mut cancelled, mut mid_frame) = (Vec::new(), 0, 0, 0);
        loop {
            let next = tokio::select! {
                biased;
                m = stream.next() => m.unwrap(),
                _ = tokio::task::yield_now() => {
                    cancelled += 1;
                    mid_frame += u32::from(!stream.conn.rbuf.is_empty());
                    continue;
                }
            };
            match next {
                None => break,
                Some(ReplicationMessage::XLogData {
                    wal_start, data, ..
                }) => {
                    assert_eq!(data, payload(wal_start.0), "frame {wal_start}");
                    xlogs.push(wal_start.0);
                }
                Some(ReplicationMessage::Keepalive { .. }) => keepalives += 1,
            }
        }
        assert_eq!(xlogs, (0..N).collect::<Vec<_>>());
        assert_eq!(keepalives, N / 10);
        assert!(
            mid_frame > 10,
            "{mid_frame} of {cancelled} cancellations were mid-frame"
        );
        // After CopyDone the stream stays ended.
        assert!(stream.next().await.unwrap().is_none());
        drop(stream);
        server.await.unwrap();
    }

    /// A fake server that answers one SSL request with `N` and reports what it received.
    async fn refuse_tls(
        mode: SslMode,
        root: Option<std::path::PathBuf>,
    ) -> (Result<bool, PgError>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 8];
            sock.read_exact(&mut request).await.unwrap();
            sock.write_all(b"N").await.unwrap();
            request.to_vec()
        });
        let params = ConnectParams {
            port,
            sslmode: mode,
            sslrootcert: root,
            ..ConnectParams::from_url("postgres://u:pw@127.0.0.1/db").unwrap()
        };
        let result = open_transport(&params)
            .await
            .map(|t| matches!(t, Transport::Tls(_)));
        (result, server.await.unwrap())
    }

    #[tokio::test]
    async fn refused_tls_falls_back_only_under_prefer() {
        let (result, request) = refuse_tls(SslMode::Prefer, None).await;
        assert!(!result.unwrap(), "prefer continues in plaintext");
        assert_eq!(
            request,
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
            "an SSLRequest"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = crate::postgres::connect::test_support::wrong_ca(dir.path());
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let (result, _) = refuse_tls(mode, Some(root.clone())).await;
            let err = result.unwrap_err();
            assert!(matches!(err, PgError::Tls(_)), "{mode}: {err:?}");
            assert_eq!(err.class(), ErrorClass::Fatal);
        }
    }

    // ---- live tests against DRIFTLESS_PG_URL ------------------------------------------------

    /// A table, a publication and a slot name in the test database, dropped by `cleanup`.
    struct Fixture {
        params: ConnectParams,
        sql: tokio_postgres::Client,
        table: String,
        publication: String,
        slot: String,
    }

    impl Fixture {
        async fn new(test: &str) -> Option<Fixture> {
            let params = test_db_params(test).await?;
            let sql = connect_sql(&params).await.unwrap();
            drop_stale_objects(&sql).await;
            let table = unique_name("rc_t");
            let publication = unique_name("rc_p");
            sql.batch_execute(&format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, v text);
                 CREATE PUBLICATION {publication} FOR TABLE {table};"
            ))
            .await
            .unwrap();
            Some(Fixture {
                params,
                sql,
                table,
                publication,
                slot: slot_name(),
            })
        }

        fn options(&self) -> String {
            publication_names_option(&[&self.publication])
        }

        async fn cleanup(self) {
            drop_slot_when_released(&self.sql, &self.slot).await;
            self.sql
                .batch_execute(&format!(
                    "DROP PUBLICATION {}; DROP TABLE {};",
                    self.publication, self.table
                ))
                .await
                .unwrap();
        }
    }

    fn slot_name() -> String {
        unique_name("rc_test")
    }

    /// Drops inactive slots, publications and tables left behind by earlier failed runs of
    /// these tests (more than an hour old, so never those of a concurrent run).
    async fn drop_stale_objects(sql: &tokio_postgres::Client) {
        let queries = [
            (
                "rc_test",
                "select slot_name::text from pg_replication_slots where not active",
                "select pg_drop_replication_slot($1)",
            ),
            (
                "rc_p",
                "select pubname::text from pg_publication",
                "DROP PUBLICATION IF EXISTS",
            ),
            (
                "rc_t",
                "select tablename::text from pg_tables where schemaname = 'public'",
                "DROP TABLE IF EXISTS",
            ),
        ];
        for (prefix, list, drop) in queries {
            for row in sql.query(list, &[]).await.unwrap() {
                let name: String = row.get(0);
                if !is_stale(&name, prefix) {
                    continue;
                }
                let result = if drop.contains("$1") {
                    sql.execute(drop, &[&name]).await.map(|_| ())
                } else {
                    sql.batch_execute(&format!("{drop} {name}")).await
                };
                if let Err(e) = result {
                    eprintln!("could not drop stale test object {name}: {e}");
                }
            }
        }
    }

    /// Drops a slot once its walsender has let go of it (dropping a stream is asynchronous).
    async fn drop_slot_when_released(sql: &tokio_postgres::Client, slot: &str) {
        for _ in 0..80 {
            let r = sql
                .execute(
                    "select pg_drop_replication_slot(slot_name) from pg_replication_slots \
                     where slot_name = $1",
                    &[&slot],
                )
                .await;
            match r {
                Ok(_) => return,
                Err(e) if e.code().map(|c| c.code()) == Some("55006") => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("drop slot {slot}: {e:?}"),
            }
        }
        panic!("slot {slot} stayed active");
    }

    /// The next XLogData payload, skipping keepalives; fails after `limit`.
    async fn next_data(stream: &mut ReplicationStream, limit: Duration) -> Bytes {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("timed out waiting for XLogData");
            match next.unwrap().expect("stream ended") {
                ReplicationMessage::XLogData { data, .. } => return data,
                ReplicationMessage::Keepalive { .. } => {}
            }
        }
    }

    /// The end LSN of a pgoutput Commit message.
    fn commit_end_lsn(data: &[u8]) -> Lsn {
        assert_eq!(data[0], b'C');
        Lsn(u64::from_be_bytes(data[10..18].try_into().unwrap()))
    }

    /// The first column (as text) and the length of the second of a pgoutput Insert.
    fn insert_values(data: &[u8]) -> (String, usize) {
        assert_eq!(data[0], b'I');
        assert_eq!(data[5], b'N');
        let mut rest = &data[6..];
        assert_eq!(rest.get_u16(), 2);
        let mut cols = Vec::new();
        for _ in 0..2 {
            assert_eq!(rest.get_u8(), b't');
            let len = rest.get_u32() as usize;
            cols.push(rest[..len].to_vec());
            rest.advance(len);
        }
        (String::from_utf8(cols[0].clone()).unwrap(), cols[1].len())
    }

    async fn confirmed_flush(sql: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
        let row = sql
            .query_opt(
                "select confirmed_flush_lsn::text from pg_replication_slots where slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()?;
        row.get::<_, Option<String>>(0).map(|s| s.parse().unwrap())
    }

    async fn ssl_of_pid(sql: &tokio_postgres::Client, pid: i32) -> bool {
        sql.query_one("select ssl from pg_stat_ssl where pid = $1", &[&pid])
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn login_identify_system_and_session_settings() {
        let Some(params) = test_db_params("login_identify_system_and_session_settings").await
        else {
            return;
        };
        for mode in [SslMode::Disable, SslMode::Prefer] {
            let p = ConnectParams {
                sslmode: mode,
                ..params.clone()
            };
            let mut repl = ReplicationConnection::connect(&p).await.unwrap();
            assert_eq!(repl.is_tls(), mode == SslMode::Prefer);
            assert!(repl.backend_pid().is_some());
            let info = repl.identify_system().await.unwrap();
            assert!(info.system_id.parse::<u64>().is_ok(), "{info:?}");
            assert!(info.timeline >= 1);
            assert!(info.xlogpos > Lsn::ZERO);
            assert_eq!(info.dbname.as_deref(), Some(p.dbname.as_str()));
            // SQL works on a replication=database connection, and SESSION_OPTIONS applied.
            let rows = repl
                .simple_query("select current_setting('TimeZone'), 1::int, null::text")
                .await
                .unwrap();
            assert_eq!(
                rows,
                vec![vec![Some("UTC".to_string()), Some("1".into()), None]]
            );
            // A server error keeps the connection usable.
            let err = repl
                .simple_query("select * from no_such_table")
                .await
                .unwrap_err();
            assert_eq!(err.code(), Some("42P01"), "{err:?}");
            let rows = repl.simple_query("SHOW DateStyle").await.unwrap();
            assert_eq!(rows, vec![vec![Some("ISO, MDY".to_string())]]);
        }
    }

    #[tokio::test]
    async fn wrong_password_and_refused_connection_are_classified() {
        let Some(params) = server_params("wrong_password_and_refused_connection_are_classified")
        else {
            return;
        };
        let bad = ConnectParams {
            password: Some(Password::new("not-the-password-xyz")),
            ..params.clone()
        };
        let err = ReplicationConnection::connect(&bad).await.unwrap_err();
        assert_eq!(err.code(), Some("28P01"), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert!(err.hint().unwrap().contains("pg_hba.conf"));
        assert!(!format!("{err} {err:?}").contains("not-the-password-xyz"));

        let none = ConnectParams {
            password: None,
            ..params.clone()
        };
        let err = ReplicationConnection::connect(&none).await.unwrap_err();
        assert!(matches!(err, PgError::Auth(_)), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Fatal);

        let refused = ConnectParams { port: 1, ..params };
        let err = ReplicationConnection::connect(&refused).await.unwrap_err();
        assert!(matches!(err, PgError::Io(_)), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Transient);
    }

    #[tokio::test]
    async fn tls_modes() {
        let Some(params) = server_params("tls_modes") else {
            return;
        };
        let sql = connect_sql(&params).await.unwrap();
        let with = |mode: SslMode, root: Option<std::path::PathBuf>| ConnectParams {
            sslmode: mode,
            sslrootcert: root,
            ..params.clone()
        };
        // require without a root: TLS, and the server sees this walsender as TLS.
        let repl = ReplicationConnection::connect(&with(SslMode::Require, None))
            .await
            .unwrap();
        assert!(repl.is_tls());
        assert!(ssl_of_pid(&sql, repl.backend_pid().unwrap()).await);
        // disable: plaintext.
        let repl = ReplicationConnection::connect(&with(SslMode::Disable, None))
            .await
            .unwrap();
        assert!(!repl.is_tls());
        assert!(!ssl_of_pid(&sql, repl.backend_pid().unwrap()).await);
        // verify-full and verify-ca against the server's CA; host 127.0.0.1 is in the SAN.
        assert_eq!(params.host, "127.0.0.1");
        for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
            let repl = ReplicationConnection::connect(&with(mode, Some(server_ca()))).await;
            assert!(repl.unwrap().is_tls(), "{mode}");
        }
        // A CA that did not sign the server certificate fails, under every verifying mode.
        let dir = tempfile::tempdir().unwrap();
        let wrong = crate::postgres::connect::test_support::wrong_ca(dir.path());
        for mode in [SslMode::VerifyFull, SslMode::VerifyCa, SslMode::Require] {
            let err = ReplicationConnection::connect(&with(mode, Some(wrong.clone())))
                .await
                .unwrap_err();
            assert!(matches!(err, PgError::Tls(_)), "{mode}: {err:?}");
            assert_eq!(err.class(), ErrorClass::Fatal);
        }
    }

    #[tokio::test]
    async fn snapshot_stream_and_feedback() {
        let Some(fx) = Fixture::new("snapshot_stream_and_feedback").await else {
            return;
        };
        let table = &fx.table;
        fx.sql
            .batch_execute(&format!(
                "INSERT INTO {table} SELECT g, 'before' FROM generate_series(1, 3) g"
            ))
            .await
            .unwrap();
        let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
        let created = repl.create_logical_slot(&fx.slot, true).await.unwrap();
        assert_eq!(created.slot_name, fx.slot);
        assert!(created.consistent_point > Lsn::ZERO);
        let snapshot = created.snapshot_name.clone().expect("exported snapshot");

        // Changed after the slot: in the stream, not in the snapshot.
        fx.sql
            .batch_execute(&format!(
                "INSERT INTO {table} VALUES (4, 'after');
                 SELECT pg_logical_emit_message(true, 'driftless', 'hello');"
            ))
            .await
            .unwrap();
        let snap = connect_sql(&fx.params).await.unwrap();
        snap.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}';"
        ))
        .await
        .unwrap();
        let n: i64 = snap
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n, 3,
            "the exported snapshot sees exactly the rows before the slot"
        );
        snap.batch_execute("COMMIT").await.unwrap();

        let pubs = fx.options();
        let mut stream = repl
            .start_logical(
                &fx.slot,
                created.consistent_point,
                &[
                    ("proto_version", "1"),
                    ("publication_names", &pubs),
                    ("messages", "true"),
                ],
            )
            .await
            .unwrap();
        let limit = Duration::from_secs(20);
        let begin = next_data(&mut stream, limit).await;
        assert_eq!(begin[0], b'B');
        let relation = next_data(&mut stream, limit).await;
        assert_eq!(relation[0], b'R');
        let insert = next_data(&mut stream, limit).await;
        assert_eq!(insert_values(&insert), ("4".to_string(), 5));
        // The transactional logical message was emitted in the same (implicit) transaction.
        let message = next_data(&mut stream, limit).await;
        assert_eq!(message[0], b'M');
        assert!(
            message.ends_with(b"driftless\0\0\0\0\x05hello"),
            "{message:?}"
        );
        let end = commit_end_lsn(&next_data(&mut stream, limit).await);
        assert!(end > created.consistent_point);

        assert!(confirmed_flush(&fx.sql, &fx.slot).await.unwrap() < end);
        stream.send_status(end, end, end, false).await.unwrap();
        let mut confirmed = None;
        for _ in 0..100 {
            confirmed = confirmed_flush(&fx.sql, &fx.slot).await;
            if confirmed == Some(end) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            confirmed,
            Some(end),
            "confirmed_flush_lsn follows the status update"
        );
        drop(stream);
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn slot_errors_are_classified_and_drop_slot_works() {
        let Some(fx) = Fixture::new("slot_errors_are_classified_and_drop_slot_works").await else {
            return;
        };
        let pubs = fx.options();
        let options = [("proto_version", "1"), ("publication_names", pubs.as_str())];
        let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
        let created = repl.create_logical_slot(&fx.slot, false).await.unwrap();
        // The same name again: duplicate object, fatal; the connection stays usable.
        let err = repl.create_logical_slot(&fx.slot, false).await.unwrap_err();
        assert_eq!(err.code(), Some("42710"), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        let mut stream = repl
            .start_logical(&fx.slot, created.consistent_point, &options)
            .await
            .unwrap();
        // A second consumer of an active slot: object in use, transient (retry later).
        let other = ReplicationConnection::connect(&fx.params).await.unwrap();
        let err = other
            .start_logical(&fx.slot, created.consistent_point, &options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("55006"), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Transient);
        // A slot that does not exist: undefined object, fatal.
        let missing = ReplicationConnection::connect(&fx.params).await.unwrap();
        let err = missing
            .start_logical("rc_test_no_such_slot", Lsn::ZERO, &options)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("42704"), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        // Invalid names and NUL bytes never reach the server; the connection stays usable.
        let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
        let err = repl
            .create_logical_slot("Bad\"Name", false)
            .await
            .unwrap_err();
        assert!(matches!(err, PgError::Config(_)), "{err:?}");
        let err = repl.simple_query("select 'a\0b'").await.unwrap_err();
        assert!(matches!(err, PgError::Config(_)), "{err:?}");
        repl.identify_system().await.unwrap();
        // The walsender is terminated mid-stream: its FATAL arrives as a transient error.
        let pid = stream.backend_pid().unwrap();
        fx.sql
            .execute("select pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        let err = loop {
            let next = tokio::time::timeout(Duration::from_secs(20), stream.next()).await;
            match next.expect("stream did not end") {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without the server's error"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.code(), Some("57P01"), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Transient);
        assert!(stream.next().await.unwrap().is_none());
        // DROP_REPLICATION_SLOT ... WAIT waits for the walsender to let go of it.
        drop(stream);
        repl.drop_slot(&fx.slot, true).await.unwrap();
        assert_eq!(confirmed_flush(&fx.sql, &fx.slot).await, None);
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn keepalive_requesting_a_reply_is_parsed() {
        let Some(fx) = Fixture::new("keepalive_requesting_a_reply_is_parsed").await else {
            return;
        };
        let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
        // wal_sender_timeout is user-settable: make the server ask for a reply within ~1 s.
        repl.simple_query("SET wal_sender_timeout = '2s'")
            .await
            .unwrap();
        let created = repl.create_logical_slot(&fx.slot, false).await.unwrap();
        assert_eq!(created.snapshot_name, None);
        let pubs = fx.options();
        let mut stream = repl
            .start_logical(
                &fx.slot,
                created.consistent_point,
                &[("proto_version", "1"), ("publication_names", &pubs)],
            )
            .await
            .unwrap();
        let mut replies = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while replies < 3 {
            let message = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("no keepalive asking for a reply")
                .unwrap()
                .expect("stream ended");
            if let ReplicationMessage::Keepalive {
                wal_end,
                reply_requested: true,
                ..
            } = message
            {
                assert!(wal_end >= created.consistent_point);
                replies += 1;
                // Replying keeps the connection alive past wal_sender_timeout.
                let at = created.consistent_point;
                stream.send_status(at, at, at, false).await.unwrap();
            }
        }
        drop(stream);
        fx.cleanup().await;
    }

    #[tokio::test]
    async fn next_is_cancel_safe() {
        let Some(fx) = Fixture::new("next_is_cancel_safe").await else {
            return;
        };
        const ROWS: i32 = 300;
        const BATCH: i32 = 50;
        let mut repl = ReplicationConnection::connect(&fx.params).await.unwrap();
        let created = repl.create_logical_slot(&fx.slot, false).await.unwrap();
        let pubs = fx.options();
        let mut stream = repl
            .start_logical(
                &fx.slot,
                created.consistent_point,
                &[("proto_version", "1"), ("publication_names", &pubs)],
            )
            .await
            .unwrap();
        let writer = {
            let params = fx.params.clone();
            let table = fx.table.clone();
            tokio::spawn(async move {
                let sql = connect_sql(&params).await.unwrap();
                for first in (1..=ROWS).step_by(BATCH as usize) {
                    sql.batch_execute(&format!(
                        "INSERT INTO {table} SELECT g, repeat(md5(g::text), 625) \
                         FROM generate_series({first}, {}) g",
                        first + BATCH - 1
                    ))
                    .await
                    .unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let mut ids = Vec::new();
        let mut commits = 0;
        let mut cancelled = 0u32;
        let mut mid_frame = 0u32;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while commits < ROWS / BATCH {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out; got {} rows",
                ids.len()
            );
            // Alternate between cancelling after one scheduler round and after ~1 ms.
            let message = if cancelled.is_multiple_of(2) {
                tokio::select! {
                    biased;
                    m = stream.next() => m,
                    _ = tokio::task::yield_now() => {
                        cancelled += 1;
                        mid_frame += u32::from(!stream.conn.rbuf.is_empty());
                        continue;
                    }
                }
            } else {
                match tokio::time::timeout(Duration::from_micros(500), stream.next()).await {
                    Ok(m) => m,
                    Err(_) => {
                        cancelled += 1;
                        mid_frame += u32::from(!stream.conn.rbuf.is_empty());
                        continue;
                    }
                }
            };
            if let ReplicationMessage::XLogData { data, .. } = message.unwrap().unwrap() {
                match data[0] {
                    b'I' => {
                        let (id, len) = insert_values(&data);
                        assert_eq!(len, 20_000);
                        ids.push(id.parse::<i32>().unwrap());
                    }
                    b'C' => commits += 1,
                    _ => {}
                }
            }
        }
        writer.await.unwrap();
        assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>());
        assert!(
            cancelled > 10,
            "the test must actually cancel next() ({cancelled})"
        );
        eprintln!(
            "next_is_cancel_safe: {cancelled} cancelled calls, {mid_frame} with a partial frame \
             buffered; no bytes lost"
        );
        drop(stream);
        fx.cleanup().await;
    }
}
