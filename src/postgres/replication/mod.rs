//! Our own PostgreSQL logical-replication client (`replication=database`) on `postgres-protocol`.
//!
//! Owns one socket (TCP, optionally TLS via tokio-rustls) and the frontend/backend protocol on
//! it: startup and authentication (SCRAM-SHA-256 with or without channel binding; md5 and
//! cleartext only over verified TLS), simple queries and
//! replication commands, and the CopyBoth stream of `XLogData`/keepalive messages with standby
//! status updates.
//!
//! Invariants:
//! - Framing is ours (`frame`): only complete frames are parsed, and they are cut from a
//!   buffer owned by the connection, so [`ReplicationStream::next`] is cancel-safe.
//! - TLS follows [`SslMode`](super::connect::SslMode): never falls back to plaintext under
//!   `require`/`verify-*`.
//! - Status LSNs are sent exactly as given; the caller guarantees their monotonicity and that a
//!   flushed LSN is durable downstream.
//! - Replication commands cannot take bind parameters, so slot names are validated against
//!   PostgreSQL's rule and every identifier/literal is quoted by [`crate::postgres::sql`].
//! - Nothing logged contains a password or row data (notices are logged by SQLSTATE only).
//! - An operation cancelled halfway (other than `next`) leaves the connection unusable; later
//!   calls fail with a protocol error instead of misreading the stream.
//!
//! | file           | owns                                                             |
//! |----------------|------------------------------------------------------------------|
//! | `mod.rs`       | [`ReplicationConnection`], [`ReplicationStream`]: I/O and commands |
//! | `frame.rs`     | pure framing: frames, CopyData bodies, ErrorResponse fields      |
//! | `auth.rs`      | SCRAM-SHA-256(-PLUS), md5 and cleartext authentication           |
//! | `history.rs`   | pure parsing of a timeline history file                          |
//!
//! The socket (TCP or TLS, the SSLRequest exchange) is `postgres::transport`, shared with the
//! ordinary SQL connection, and what may be answered to the server's authentication requests
//! is decided by `postgres::auth_policy`.

mod auth;
pub(super) mod frame;
pub(crate) mod history;

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::{ConnectParams, SESSION_OPTIONS, within_connect_timeout};
use super::error::PgError;
use super::sql::{quote_ident, quote_literal};
use super::transport::{self, Transport};
use crate::lsn::Lsn;
use frame::{Frame, frame_len, parse_copy_data, parse_frame, server_error, unexpected};

/// Minimum free buffer space offered to each socket read.
const READ_CHUNK: usize = 64 * 1024;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The longest replication slot name PostgreSQL accepts (`NAMEDATALEN - 1`).
const MAX_SLOT_NAME_LEN: usize = 63;

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

fn closed() -> PgError {
    PgError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    ))
}

/// Microseconds since 2000-01-01 UTC, now.
fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

/// Checks a replication slot name against PostgreSQL's rule: 1 to 63 characters among
/// lower-case ASCII letters, digits and underscore.
fn validate_slot_name(slot: &str) -> Result<(), PgError> {
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
        self.io.is_tls()
    }

    /// A `Debug` builder for a wrapper `name` of this connection, with what is safe to show
    /// (whether it is encrypted and the backend's pid).
    fn debug_struct<'a, 'b: 'a>(
        &self,
        f: &'a mut std::fmt::Formatter<'b>,
        name: &str,
    ) -> std::fmt::DebugStruct<'a, 'b> {
        let mut d = f.debug_struct(name);
        d.field("tls", &self.is_tls())
            .field("backend_pid", &self.backend_pid);
        d
    }
}

/// A replication-protocol connection (`replication=database`) before streaming.
pub struct ReplicationConnection {
    conn: Conn,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conn.debug_struct(f, "ReplicationConnection").finish()
    }
}

impl ReplicationConnection {
    /// Connects with `replication=database`, negotiates TLS per `sslmode`, authenticates
    /// (SCRAM-SHA-256 with or without channel binding; md5 or cleartext only over verified TLS,
    /// see `postgres::auth_policy`) and waits for the server to be ready. The whole
    /// handshake is bounded by `CONNECT_TIMEOUT`.
    pub async fn connect(params: &ConnectParams) -> Result<Self, PgError> {
        within_connect_timeout(Self::connect_inner(params)).await
    }

    async fn connect_inner(params: &ConnectParams) -> Result<Self, PgError> {
        tracing::debug!(url = %params.redacted_url(), "opening replication connection");
        let io = transport::open_transport(params).await?;
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
        auth::authenticate(&mut conn, params).await?;
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
            tls_verified = conn.is_tls() && params.authenticates_server(),
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

    /// `TIMELINE_HISTORY tli`: the content of the server's history file of timeline `tli` (see
    /// [`history::switch_point`]). Only timelines after the first have one.
    pub async fn timeline_history(&mut self, tli: u32) -> Result<String, PgError> {
        let rows = self
            .conn
            .simple_query(&format!("TIMELINE_HISTORY {tli}"))
            .await?;
        match rows.as_slice() {
            [row] if row.len() >= 2 => row[1].clone().ok_or_else(|| {
                PgError::Protocol("TIMELINE_HISTORY returned no content".to_string())
            }),
            _ => Err(PgError::Protocol(
                "TIMELINE_HISTORY did not return one row of 2 columns".to_string(),
            )),
        }
    }

    /// Runs a simple query (a replication command or, on a `replication=database` connection,
    /// SQL) and returns all rows as text. A server error becomes `PgError::Server`, and the
    /// connection stays usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        self.conn.simple_query(sql).await
    }

    /// `CREATE_REPLICATION_SLOT "slot" LOGICAL pgoutput (EXPORT_SNAPSHOT|NOEXPORT_SNAPSHOT)`,
    /// or with `failover` the option-list form (PostgreSQL 17+)
    /// `... LOGICAL pgoutput (SNAPSHOT 'export'|'nothing', FAILOVER true)`.
    /// An exported snapshot stays valid only until the next command on this connection: use
    /// it from another connection (`SET TRANSACTION SNAPSHOT`) before calling `start_logical`.
    pub async fn create_logical_slot(
        &mut self,
        slot: &str,
        export_snapshot: bool,
        failover: bool,
    ) -> Result<SlotCreated, PgError> {
        validate_slot_name(slot)?;
        // The keyword form is the only one PostgreSQL 14 knows; FAILOVER needs the list form.
        let options = match (failover, export_snapshot) {
            (false, true) => "EXPORT_SNAPSHOT",
            (false, false) => "NOEXPORT_SNAPSHOT",
            (true, true) => "(SNAPSHOT 'export', FAILOVER true)",
            (true, false) => "(SNAPSHOT 'nothing', FAILOVER true)",
        };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {options}",
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
            failover,
            "replication slot created"
        );
        Ok(created)
    }

    /// `ALTER_REPLICATION_SLOT "slot" (FAILOVER true)` (PostgreSQL 17+): makes an existing
    /// slot a failover slot; a no-op on one that is already.
    pub async fn enable_failover(&mut self, slot: &str) -> Result<(), PgError> {
        validate_slot_name(slot)?;
        let sql = format!(
            "ALTER_REPLICATION_SLOT {} (FAILOVER true)",
            quote_ident(slot)
        );
        self.conn.simple_query(&sql).await?;
        Ok(())
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
    /// `publication_names` use [`publication_names`](crate::postgres::sql::publication_names)).
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
        self.conn
            .debug_struct(f, "ReplicationStream")
            .field("ended", &self.ended)
            .finish()
    }
}

impl ReplicationStream {
    /// Next message; `Ok(None)` when the server ended the copy (CopyDone or CommandComplete) or closed the
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
                // A walsender that shuts down (fast or smart server stop, promotion) ends the
                // copy with CopyDone, or directly with CommandComplete once the client has
                // confirmed everything sent (PostgreSQL's `WalSndDone`).
                Frame::Message(Message::CopyDone | Message::CommandComplete(_)) => {
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

    /// The server process id serving this stream (the walsender).
    pub fn backend_pid(&self) -> Option<i32> {
        self.conn.backend_pid
    }
}

#[cfg(test)]
mod tests;
