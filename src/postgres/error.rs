//! `PgError`: every failure of a PostgreSQL connection (replication or ordinary SQL), and its
//! [`Classify`] mapping.
//!
//! Invariants:
//! - `Display` never contains a password, and never contains a server `DETAIL` (which can quote
//!   row values): server errors render as `SQLSTATE: message` only; the detail and hint stay in
//!   their fields for callers that know they may show them. For data and integrity errors
//!   (SQLSTATE classes 22 and 23) the message is left out too: Postgres quotes the offending
//!   value in it (`invalid input syntax for type integer: "12.5"`).
//! - Classification is by SQLSTATE where the server sent one, so the same server condition gets
//!   the same class whether it came through our replication client or through tokio-postgres.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use crate::error::{Classify, ErrorClass};

/// A PostgreSQL connection or protocol failure.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection could not be opened, was reset, or ended unexpectedly.
    #[error("postgres i/o error: {0}")]
    Io(io::Error),
    /// TLS could not be negotiated (refused under `require`/`verify-*`, bad certificate, ...).
    #[error("postgres tls error: {0}")]
    Tls(String),
    /// Authentication failed on our side (no password, unsupported method, bad server proof).
    #[error("postgres authentication error: {0}")]
    Auth(String),
    /// The server sent an `ErrorResponse`.
    #[error("postgres server error {code}{}", shown_message(code, message))]
    Server {
        /// SQLSTATE, e.g. `28P01`.
        code: String,
        /// The primary message (`M` field).
        message: String,
        /// The `DETAIL` field; may contain row values, so it is never part of `Display`.
        detail: Option<String>,
        /// The server's `HINT` field.
        hint: Option<String>,
    },
    /// The server sent something this client does not understand or did not expect.
    #[error("postgres protocol error: {0}")]
    Protocol(String),
    /// Invalid connection parameters (URL, TLS files, slot names, ...).
    #[error("postgres configuration error: {0}")]
    Config(String),
    /// An error from the ordinary SQL client (tokio-postgres).
    #[error("postgres query error: {}", SqlDisplay(.0))]
    Sql(tokio_postgres::Error),
}

impl From<io::Error> for PgError {
    fn from(e: io::Error) -> Self {
        PgError::Io(e)
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Sql(e)
    }
}

impl PgError {
    /// The SQLSTATE of a server error (ours or tokio-postgres'), if there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Server { code, .. } => Some(code),
            PgError::Sql(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }
}

/// Renders a tokio-postgres error without the server's DETAIL/HINT (which `DbError`'s own
/// `Display` includes), but with the non-server causes (`error connecting to server: ...`).
struct SqlDisplay<'a>(&'a tokio_postgres::Error);

impl fmt::Display for SqlDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            let code = db.code().code();
            return write!(f, "{code}{}", shown_message(code, db.message()));
        }
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Whether the server's message (and hint) for this SQLSTATE may quote a row value: data
/// exceptions (class 22: `invalid input syntax for type integer: "12.5"`), integrity violations
/// (class 23) and PL/pgSQL's `RAISE`/`ASSERT` (class P0), whose text a user's trigger writes,
/// often from `NEW.*`.
fn message_quotes_values(code: &str) -> bool {
    ["22", "23", "P0"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// The server's own hint, unless this SQLSTATE's texts may quote a row value.
fn server_hint(code: &str, hint: Option<&str>) -> Option<String> {
    hint.filter(|_| !message_quotes_values(code))
        .map(str::to_string)
}

/// `: message`, or nothing when the message may quote a row value.
fn shown_message(code: &str, message: &str) -> String {
    if message_quotes_values(code) {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The class of an error raised by writing one row that came from outside (an inbound change
/// of two-way sync): a data exception or an integrity violation of that row, or a trigger's
/// `RAISE` refusing it (SQLSTATE classes 22, 23 and P0), is poison, to be rolled back alone and
/// set aside; everything else is classified
/// as [`PgError::class`] does (connection errors transient, missing grants or objects fatal).
pub(crate) fn row_write_class(e: &PgError) -> ErrorClass {
    match e.code() {
        Some(code) if message_quotes_values(code) => ErrorClass::Poison,
        _ => e.class(),
    }
}

const AUTH_HINT: &str = "check the user name and password in the connection URL, and that the \
    server's pg_hba.conf admits this user from this host (logical replication connections match \
    the database name, not the `replication` keyword)";

/// The class of a server error with this SQLSTATE.
pub(crate) fn classify_sqlstate(code: &str) -> ErrorClass {
    match code {
        c if c.starts_with("08") || c.starts_with("53") => ErrorClass::Transient,
        "57P01" | "57P02" | "57P03" | "57014" | "55006" | "55P03" | "40001" | "40P01" => {
            ErrorClass::Transient
        }
        _ => ErrorClass::Fatal,
    }
}

/// An operator-facing hint for a server error with this SQLSTATE, if we have one.
pub(crate) fn sqlstate_hint(code: &str) -> Option<String> {
    let hint = match code {
        c if c.starts_with("28") => AUTH_HINT,
        "42501" => {
            "the user lacks a privilege; logical replication needs the REPLICATION attribute \
             (ALTER ROLE ... REPLICATION) and SELECT on the published tables"
        }
        "42704" => "the named object (e.g. the replication slot) does not exist; check its name",
        "55000" => {
            "the object is not in the required state; an invalidated replication slot must be \
             dropped and recreated, followed by a new snapshot"
        }
        "55006" => {
            "the replication slot is in use by another process; is another instance running?"
        }
        c if c.starts_with("53") => "the server is out of resources (connections, memory, disk)",
        _ => return None,
    };
    Some(hint.to_string())
}

/// Whether an I/O error kind means "the network or server hiccuped" rather than "this input is
/// wrong".
fn io_kind_is_transient(kind: io::ErrorKind) -> bool {
    !matches!(
        kind,
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::Unsupported
    )
}

/// Whether a tokio-postgres error chain contains a rustls error (a TLS failure).
fn chain_has_tls_error(e: &tokio_postgres::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// The first I/O error in a tokio-postgres error chain.
fn chain_io_error(e: &tokio_postgres::Error) -> Option<&io::Error> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

impl Classify for PgError {
    fn class(&self) -> ErrorClass {
        match self {
            PgError::Io(_) => ErrorClass::Transient,
            PgError::Tls(_) | PgError::Auth(_) | PgError::Protocol(_) | PgError::Config(_) => {
                ErrorClass::Fatal
            }
            PgError::Server { code, .. } => classify_sqlstate(code),
            PgError::Sql(e) => {
                if let Some(db) = e.as_db_error() {
                    return classify_sqlstate(db.code().code());
                }
                if e.is_closed() {
                    return ErrorClass::Transient;
                }
                // tokio-postgres' own kind is private; its Display names it.
                if chain_has_tls_error(e) || e.to_string() == "authentication error" {
                    return ErrorClass::Fatal;
                }
                match chain_io_error(e) {
                    Some(io) if io_kind_is_transient(io.kind()) => ErrorClass::Transient,
                    _ => ErrorClass::Fatal,
                }
            }
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            PgError::Auth(_) => Some(AUTH_HINT.to_string()),
            PgError::Tls(_) => Some(
                "check sslmode and sslrootcert in the connection URL against the server's TLS \
                 setup"
                    .to_string(),
            ),
            PgError::Server { code, hint, .. } => {
                sqlstate_hint(code).or_else(|| server_hint(code, hint.as_deref()))
            }
            PgError::Sql(e) => {
                if let Some(db) = e.as_db_error() {
                    let code = db.code().code();
                    sqlstate_hint(code).or_else(|| server_hint(code, db.hint()))
                } else if chain_has_tls_error(e)
                    || e.to_string() == "error performing TLS handshake"
                {
                    PgError::Tls(String::new()).hint()
                } else if e.to_string() == "authentication error" {
                    Some(AUTH_HINT.to_string())
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> PgError {
        PgError::Server {
            code: code.to_string(),
            message: "boom".to_string(),
            detail: Some("Key (email)=(alice@example.com) already exists.".to_string()),
            hint: None,
        }
    }

    #[test]
    fn classifies_sqlstates() {
        for code in [
            "08006", "08P01", "53300", "57P01", "57P02", "57P03", "57014", "55006", "55P03",
            "40001",
        ] {
            assert_eq!(server(code).class(), ErrorClass::Transient, "{code}");
        }
        assert_eq!(server("40P01").class(), ErrorClass::Transient);
        for code in ["28P01", "28000", "42704", "55000", "42601", "XX000"] {
            assert_eq!(server(code).class(), ErrorClass::Fatal, "{code}");
        }
        assert!(server("28P01").hint().unwrap().contains("pg_hba.conf"));
        assert!(server("55000").hint().unwrap().contains("invalidated"));
    }

    #[test]
    fn other_variants_classify() {
        let io = PgError::Io(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(io.class(), ErrorClass::Transient);
        for e in [
            PgError::Tls("x".into()),
            PgError::Auth("x".into()),
            PgError::Protocol("x".into()),
            PgError::Config("x".into()),
        ] {
            assert_eq!(e.class(), ErrorClass::Fatal);
        }
        assert!(
            PgError::Auth("x".into())
                .hint()
                .unwrap()
                .contains("password")
        );
    }

    #[test]
    fn display_omits_detail() {
        let text = server("42501").to_string();
        assert_eq!(text, "postgres server error 42501: boom");
        assert!(!text.contains("alice"));
    }

    #[test]
    fn display_omits_messages_that_quote_values() {
        let cast = PgError::Server {
            code: "22P02".into(),
            message: "invalid input syntax for type integer: \"12.5\"".into(),
            detail: None,
            hint: None,
        };
        assert_eq!(cast.to_string(), "postgres server error 22P02");
        assert_eq!(server("23505").to_string(), "postgres server error 23505");
    }

    #[test]
    fn row_writes_set_aside_data_and_integrity_errors_only() {
        for code in [
            "22P02", "22003", "22001", "22007", "23505", "23502", "23503", "23514", "P0001",
        ] {
            assert_eq!(row_write_class(&server(code)), ErrorClass::Poison, "{code}");
        }
        for code in ["42501", "42703", "42P01", "42804", "XX000"] {
            assert_eq!(row_write_class(&server(code)), ErrorClass::Fatal, "{code}");
        }
        for code in ["08006", "08003", "57P01", "40001", "40P01", "53300"] {
            assert_eq!(
                row_write_class(&server(code)),
                ErrorClass::Transient,
                "{code}"
            );
        }
        let io = PgError::Io(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert_eq!(row_write_class(&io), ErrorClass::Transient);
    }

    #[test]
    fn a_triggers_raise_shows_neither_its_message_nor_its_hint() {
        let raised = PgError::Server {
            code: "P0001".into(),
            message: "bad email alice@example.com".into(),
            detail: None,
            hint: Some("fix alice@example.com".into()),
        };
        assert_eq!(raised.to_string(), "postgres server error P0001");
        assert_eq!(raised.hint(), None);
        let other = PgError::Server {
            code: "42P10".into(),
            message: "invalid column reference".into(),
            detail: None,
            hint: Some("name a column of the table".into()),
        };
        assert_eq!(other.hint().as_deref(), Some("name a column of the table"));
    }
}
