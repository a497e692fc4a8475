//! The only module that talks to Postgres.
//!
//! - [`connect`]: connection parameters (`sslmode` semantics like libpq, never falling back to
//!   plaintext under `require`/`verify-*`), ordinary SQL connections;
//! - `tls`: the rustls configuration and certificate verifiers for an `sslmode`;
//! - `transport`: the socket under both clients (SSLRequest, TLS handshake, channel binding
//!   data);
//! - `auth_policy`: the one decision on what may be answered to the server's authentication
//!   requests (passwords only over verified TLS; `channel_binding`);
//! - `sql_stream`: the transport handed to tokio-postgres, its authentication judged by
//!   `auth_policy`;
//! - [`replication`]: our own replication-protocol client (startup, SCRAM, CopyBoth, status);
//! - `access`: the privileges capture needs and the publication (created, kept, or altered
//!   only when the configuration allows it);
//! - [`catalog`]: preflight, slot state, table metadata, type resolution;
//! - `filter`: column lists and row filters (publication, snapshot, checks);
//! - `snapshot`: chunked reads inside the slot's exported snapshot;
//! - [`sql`]: the one copy of identifier and literal quoting.

pub(crate) mod access;
mod auth_policy;
#[cfg(test)]
mod auth_tests;
pub mod catalog;
pub mod connect;
pub(crate) mod ddl;
pub mod error;
pub(crate) mod filter;
pub mod replication;
pub(crate) mod snapshot;
pub mod sql;
mod sql_stream;
mod tls;
mod transport;

use crate::error::{Classify, ErrorClass};
use error::PgError;

/// An error at the Postgres boundary: a connection/server error, a refusal by driftless itself
/// (slot state, table shape, server settings), which is always fatal, or a server not ready
/// yet (a standby not promoted yet), which is transient.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Connection, protocol or server error.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// driftless refuses to go on.
    #[error("{message}")]
    Refused {
        /// What is wrong.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// The server cannot serve capture yet but will once it changes state (a standby whose
    /// copy of the slot becomes usable at its promotion): retried with backoff.
    #[error("{message}")]
    NotReady {
        /// What driftless waits for.
        message: String,
        /// What to do if the wait does not end.
        hint: String,
    },
}

impl From<tokio_postgres::Error> for SourceError {
    fn from(e: tokio_postgres::Error) -> Self {
        SourceError::Pg(PgError::Sql(e))
    }
}

impl Classify for SourceError {
    fn class(&self) -> ErrorClass {
        match self {
            SourceError::Pg(e) => e.class(),
            SourceError::Refused { .. } => ErrorClass::Fatal,
            SourceError::NotReady { .. } => ErrorClass::Transient,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            SourceError::Pg(e) => e.hint(),
            SourceError::Refused { hint, .. } | SourceError::NotReady { hint, .. } => {
                Some(hint.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_fatal_and_a_server_not_ready_is_transient() {
        let refused = SourceError::Refused {
            message: "m".into(),
            hint: "h".into(),
        };
        let not_ready = SourceError::NotReady {
            message: "m".into(),
            hint: "wait".into(),
        };
        assert_eq!(refused.class(), ErrorClass::Fatal);
        assert_eq!(not_ready.class(), ErrorClass::Transient);
        assert_eq!(not_ready.hint().as_deref(), Some("wait"));
    }
}
