//! Capture: Postgres WAL (pgoutput) → normalized change events → Kafka.
//!
//! Owns the capture stage: the restart loop (`run`), the error vocabulary, and the module
//! layout. The work is split into a pure core and an I/O shell:
//!
//! | module | owns |
//! |---|---|
//! | [`assemble`] | pure: relation cache + transaction state machine, messages → events |
//! | `normalize` | pure: row images under a Relation → [`ChangeEvent`](crate::event::ChangeEvent) |
//! | `progress` | pure: the flush LSN as the low watermark of acknowledged transactions |
//! | [`value`] | pure: Postgres text values → JSON |
//! | `source` | I/O, reads only: every problem of the source (server, privileges, publication, tables) |
//! | `session` | I/O: connect, preflight, slot and checkpoint, snapshot, the streaming loop |
//! | `backfill` | pure: backfill chunks between watermarks (the session does their I/O) |
//! | `last_error` | I/O: the last error, kept for `driftless status` |
//!
//! Invariants:
//! - **flush LSN = low watermark**: Postgres is told a position only when every event of every
//!   transaction up to it was acknowledged by Kafka (`progress::Progress`), and only after the
//!   checkpoint holding it is durable;
//! - the slot is never created silently over an existing history: a missing, invalidated or
//!   re-created slot, or one whose `confirmed_flush_lsn` is ahead of the checkpoint, stops
//!   capture with a message and a hint (exit code 3);
//! - transactions whose commit precedes the resume point are skipped (the slot can go back
//!   after a server crash), so re-sent events are only ever those not yet acknowledged, and
//!   they are byte-identical to their first copy;
//! - every queue is bounded: at most `max_in_flight_events` events await Kafka acks; while
//!   that many are pending no WAL is read, but status updates keep flowing;
//! - transient faults (Postgres or Kafka unreachable, a standby reached before its promotion
//!   whose slot is a synchronized copy) restart the session with backoff from the checkpoint;
//!   nothing is acknowledged past what Kafka holds.
//!
//! The streaming loop is one `select!` with priorities: shutdown, Kafka acks, status timer,
//! heartbeat timer, then new WAL.

pub mod assemble;
pub(crate) mod backfill;
pub(crate) mod debezium;
pub(crate) mod last_error;
pub(crate) mod normalize;
pub(crate) mod progress;
mod session;
mod source;
pub(crate) mod table;
pub mod value;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::checkpoint::CheckpointError;
use crate::config::ValidConfig;
use crate::error::{Backoff, Classify, ErrorClass, Refusal};
use crate::kafka::KafkaFailure;
use crate::postgres::SourceError;
use crate::postgres::error::PgError;
use session::Session;
pub(crate) use source::{inspect_source, prepare_source};

/// Prefix of the heartbeat messages driftless emits; they advance the slot and are not
/// published.
pub(crate) const HEARTBEAT_PREFIX: &str = "driftless.heartbeat";

/// A capture failure, classified.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Postgres side.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Kafka side.
    #[error(transparent)]
    Kafka(#[from] KafkaFailure),
    /// Local checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The source URL could not be read.
    #[error("source url: {0}")]
    Url(String),
    /// The server sent something driftless did not ask for or cannot decode.
    #[error("replication stream: {0}")]
    Protocol(String),
    /// An event larger than `kafka.max_event_bytes` (with `kafka.oversize = "fail"`).
    #[error(
        "an event of {table} at LSN {lsn} is {size_bytes} bytes, over kafka.max_event_bytes \
         ({max_event_bytes})"
    )]
    Oversize {
        /// `schema.table`.
        table: String,
        /// The change's WAL position.
        lsn: String,
        /// Key and value bytes.
        size_bytes: usize,
        /// The limit.
        max_event_bytes: usize,
    },
}

impl From<PgError> for CaptureError {
    fn from(e: PgError) -> Self {
        CaptureError::Source(SourceError::Pg(e))
    }
}

impl Classify for CaptureError {
    fn class(&self) -> ErrorClass {
        match self {
            CaptureError::Source(e) => e.class(),
            CaptureError::Kafka(e) => e.class(),
            CaptureError::Checkpoint(_)
            | CaptureError::Url(_)
            | CaptureError::Protocol(_)
            | CaptureError::Oversize { .. } => ErrorClass::Fatal,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            CaptureError::Source(e) => e.hint(),
            CaptureError::Kafka(e) => e.hint(),
            CaptureError::Checkpoint(_) => {
                Some("check capture.state_dir is writable and on a durable disk".into())
            }
            CaptureError::Url(_) => {
                Some("export the variable named by source.url_env (or fix source.url_file)".into())
            }
            CaptureError::Protocol(_) => None,
            CaptureError::Oversize { .. } => Some(
                "nothing was skipped and capture resumes from this change; raise \
                 kafka.librdkafka.\"message.max.bytes\" with kafka.max_event_bytes (and the \
                 topic's max.message.bytes on the brokers), or set kafka.oversize = \
                 \"dead_letter\" to send such events' position and size to {prefix}.dlq.capture \
                 and go on"
                    .into(),
            ),
        }
    }

    fn refusal(&self) -> Option<Refusal> {
        matches!(self, CaptureError::Source(SourceError::Refused { .. }))
            .then_some(Refusal::SourceState)
    }
}

/// `driftless backfill`: writes a request for `table` (one of `source.tables`) into the WAL,
/// where the running capture reads it in order with the changes (transactional logical
/// message): it is acted on exactly once whichever capture process streams the slot.
pub(crate) async fn request_backfill(cfg: &ValidConfig, table: &str) -> Result<(), CaptureError> {
    if cfg.table(table).is_none() {
        return Err(SourceError::Refused {
            message: format!("{table} is not one of source.tables"),
            hint: "add it to source.tables (capture then backfills it at its next start)".into(),
        }
        .into());
    }
    let url = cfg.source_url.read().map_err(CaptureError::Url)?;
    let sql = crate::postgres::connect::connect_sql(
        &crate::postgres::connect::ConnectParams::from_url(&url)?,
    )
    .await?;
    sql.execute(
        "SELECT pg_logical_emit_message(true, $1, $2)",
        &[&backfill::REQUEST_PREFIX, &table],
    )
    .await
    .map_err(SourceError::from)?;
    Ok(())
}

/// Shared, observable capture state (for `/healthz`).
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// True while a session is streaming.
    pub streaming: AtomicBool,
}

/// Runs capture until `shutdown` turns true or a fatal error occurs; transient errors restart
/// the session with backoff.
pub(crate) async fn run(
    cfg: &ValidConfig,
    mut shutdown: watch::Receiver<bool>,
    health: Arc<Health>,
) -> Result<(), CaptureError> {
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        let result = Session::run(cfg, &mut shutdown, &health).await;
        health.streaming.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.class() == ErrorClass::Transient => {
                last_error::record(&cfg.state_dir, &cfg.slot, &e);
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Backoff::new();
                }
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64,
                    "capture interrupted by a transient fault; resuming from the checkpoint");
                metrics::counter!("driftless_capture_restarts_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) => {
                last_error::record(&cfg.state_dir, &cfg.slot, &e);
                return Err(e);
            }
        }
    }
}
