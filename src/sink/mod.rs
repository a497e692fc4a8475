//! The destination-agnostic sink engine: Kafka change topics → any [`Sink`].
//!
//! Pure parts: batching and per-key coalescing ([`batch`]), the splitting of refused requests
//! ([`bisect`]), field mapping with its schema check ([`mapping`]), the sink ledger's plan of a
//! batch into CRM upserts, deletes and rejections ([`ledger`]) and the drift comparison of
//! `driftless verify` ([`verify`]). Shared I/O policy: one HTTP client set-up and status
//! classification ([`http`]) and one CRM write flow behind the ledger ([`crm`]). Around them:
//! the worker loop ([`runner`]), the audit trail ([`audit`]) and the worker's published state
//! ([`status_report`]). The
//! seam between the runner (Kafka consumer group, offsets, dead letters) and a destination is
//! the [`Sink`] trait below; the destinations themselves live in [`crate::destinations`], and
//! this module names none of them.

pub mod audit;
pub mod batch;
pub(crate) mod bisect;
pub(crate) mod crm;
pub(crate) mod http;
pub mod ledger;
pub mod mapping;
pub mod runner;
pub mod status_report;
pub mod verify;

use std::time::Duration;

use crate::error::{Classify, ErrorClass};
use crate::event::ChangeEvent;
use batch::Batch;

/// A batch entry the destination refused for good (poison: goes to the dead-letter topic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Index into `Batch::entries`.
    pub index: usize,
    /// Error category (e.g. the API's `category` or `code`), for the dead-letter headers.
    pub category: String,
    /// What was wrong (never row values).
    pub message: String,
}

/// What a destination did with a batch: every entry not listed in `rejected` was applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Entries refused as poison.
    pub rejected: Vec<Rejected>,
    /// Destination record ids of applied entries, by entry index (for the audit trail).
    pub destination_ids: Vec<(usize, String)>,
}

impl Outcome {
    /// Puts the rejected and the applied entries in entry order.
    pub fn sort(&mut self) {
        self.rejected.sort_by_key(|r| r.index);
        self.destination_ids.sort();
    }
}

/// A failure of a whole batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Retry the same batch later (429, 5xx, timeouts, resets); offsets stay untouched.
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// How long the destination asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Stop the worker (401 after a refresh, 403, misconfiguration).
    #[error("{message}")]
    Fatal {
        /// What happened.
        message: String,
        /// What to do.
        hint: String,
    },
}

impl SinkError {
    /// Stop the worker: `message` says what happened, `hint` what to do.
    pub fn fatal(message: impl Into<String>, hint: impl Into<String>) -> Self {
        SinkError::Fatal {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Retry the same batch later, after `retry_after` when the destination said.
    pub fn transient(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        SinkError::Transient {
            message: message.into(),
            retry_after,
        }
    }
}

impl Classify for SinkError {
    fn class(&self) -> ErrorClass {
        match self {
            SinkError::Transient { .. } => ErrorClass::Transient,
            SinkError::Fatal { .. } => ErrorClass::Fatal,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            SinkError::Fatal { hint, .. } => Some(hint.clone()),
            SinkError::Transient { .. } => None,
        }
    }
}

/// A destination. Contract:
/// - `apply` is idempotent (upserts by a stable unique property; archives of absent records
///   succeed), because delivery is at-least-once and replay re-applies;
/// - batches of one worker are applied one at a time, in order; an entry holds the latest
///   state of its key, so applying a batch never goes back in time for a key;
/// - a partial failure reports the poison entries and applies the rest; transient failures
///   make the runner retry the same batch (the destination may then see some entries twice).
pub trait Sink {
    /// Applies a batch.
    fn apply(
        &mut self,
        batch: &Batch<ChangeEvent>,
    ) -> impl std::future::Future<Output = Result<Outcome, SinkError>> + Send;
}

#[cfg(test)]
pub(crate) mod test_support;
