//! The sink worker: one Kafka consumer-group member feeding one destination.
//!
//! Owns the loop `Kafka → batch → Sink::apply → dead letters → store offsets`. Invariants:
//! - offsets are stored only after every record up to them was applied by the destination or
//!   acknowledged on the dead-letter topic (`{prefix}.dlq.{sink}`); nothing is dropped silently;
//! - one batch at a time: a transient failure retries the *same* batch (with backoff, honouring
//!   the destination's `retry_after`), so per-key order holds across retries and batches;
//! - a poison record (unparsable event, mapping failure, per-record rejection) goes to the
//!   dead-letter topic with its source topic/partition/offset, error category, message and a
//!   correlation id in headers, and the worker continues;
//! - a fatal error stops the worker with a hint; stored offsets are committed on every stop, so
//!   a restart resumes after what was applied;
//! - logs carry keys' positions and counts, never row values.
//!
//! The loop is one `select!` with priorities: shutdown, batch deadline, new records.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::batch::{Batch, Batcher, Position};
use super::{Sink, SinkError};
use crate::error::{Backoff, Classify, ErrorClass};
use crate::event::ChangeEvent;
use crate::kafka::{AckedProducer, Incoming, KafkaFailure, Subscription};

/// What the worker needs besides the destination.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Sink name (consumer group `driftless-sink-{name}`, dead-letter topic suffix).
    pub name: String,
    /// Topic to consume.
    pub topic: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Records per batch.
    pub batch_max_events: usize,
    /// Maximum wait of a partial batch.
    pub batch_max_wait: Duration,
    /// For a replay: stop once every partition was applied up to these offsets (exclusive).
    pub stop_at: Option<BTreeMap<i32, i64>>,
}

/// A worker failure.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Kafka.
    #[error(transparent)]
    Kafka(#[from] KafkaFailure),
    /// The destination.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl Classify for RunnerError {
    fn class(&self) -> ErrorClass {
        match self {
            RunnerError::Kafka(e) => e.class(),
            RunnerError::Sink(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            RunnerError::Kafka(e) => e.hint(),
            RunnerError::Sink(e) => e.hint(),
        }
    }
}

/// Counters of one worker's life (reported at the end, and used by tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records read from Kafka.
    pub records: u64,
    /// Batches applied.
    pub batches: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Transient failures retried.
    pub retries: u64,
    /// Per partition, the offset stored last (everything before it applied or dead-lettered).
    pub stored: BTreeMap<i32, i64>,
}

impl RunnerConfig {
    /// True when a replay reached its end offsets.
    fn replay_done(&self, stats: &Stats) -> bool {
        self.stop_at.as_ref().is_some_and(|ends| {
            ends.iter()
                .all(|(p, end)| stats.stored.get(p).copied().unwrap_or(0) >= *end)
        })
    }
}

/// Runs the worker until `shutdown` turns true or a fatal error occurs.
pub async fn run<S: Sink>(
    cfg: &RunnerConfig,
    subscription: &Subscription,
    dead_letters: &AckedProducer,
    sink: &mut S,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Stats, RunnerError> {
    let mut batcher: Batcher<ChangeEvent> = Batcher::new(cfg.batch_max_events, cfg.batch_max_wait);
    let mut stats = Stats::default();
    let result = loop {
        if cfg.replay_done(&stats) {
            break Ok(());
        }
        let deadline = batcher.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Ok(()),
            _ = sleep_until(deadline), if deadline.is_some() => {
                if let Err(e) = flush(cfg, subscription, dead_letters, sink, &mut batcher, &mut stats, &mut shutdown).await {
                    break Err(e);
                }
            }
            incoming = subscription.recv() => {
                let record = match incoming {
                    Ok(r) => r,
                    Err(e) if e.class() == ErrorClass::Transient => {
                        tracing::warn!(sink = %cfg.name, error = %e, "kafka read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Err(e) => break Err(e.into()),
                };
                stats.records += 1;
                if let Err(e) = accept(cfg, dead_letters, &mut batcher, &mut stats, record).await {
                    break Err(e);
                }
                if batcher.is_due(Instant::now())
                    && let Err(e) = flush(cfg, subscription, dead_letters, sink, &mut batcher, &mut stats, &mut shutdown).await
                {
                    break Err(e);
                }
            }
        }
    };
    // Whatever happened, commit what was stored (applied or dead-lettered).
    if let Err(e) = subscription.commit() {
        tracing::warn!(sink = %cfg.name, error = %e, "final offset commit failed");
    }
    tracing::info!(sink = %cfg.name, records = stats.records, batches = stats.batches,
        dead_letters = stats.dead_letters, retries = stats.retries, "sink worker stopped");
    result.map(|()| stats)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Parses a record into the batch, or dead-letters it.
async fn accept(
    cfg: &RunnerConfig,
    dead_letters: &AckedProducer,
    batcher: &mut Batcher<ChangeEvent>,
    stats: &mut Stats,
    record: Incoming,
) -> Result<(), RunnerError> {
    let at = Position {
        partition: record.partition,
        offset: record.offset,
    };
    let Some(payload) = record.payload.as_deref() else {
        // A tombstone (Debezium envelope) carries nothing to apply.
        batcher.skip(at, Instant::now());
        return Ok(());
    };
    match serde_json::from_slice::<ChangeEvent>(payload) {
        Ok(event) => {
            let key = record.key.clone().unwrap_or_default();
            batcher.push(key, event, at, Instant::now());
        }
        Err(e) => {
            let reason = format!("not a driftless change event: {e}");
            dead_letter(cfg, dead_letters, &record, "MALFORMED_EVENT", &reason).await?;
            stats.dead_letters += 1;
            batcher.skip(at, Instant::now());
        }
    }
    Ok(())
}

async fn dead_letter(
    cfg: &RunnerConfig,
    dead_letters: &AckedProducer,
    record: &Incoming,
    category: &str,
    message: &str,
) -> Result<(), RunnerError> {
    let correlation = format!("{}-{}-{}", record.topic, record.partition, record.offset);
    let (partition, offset) = (record.partition.to_string(), record.offset.to_string());
    tracing::warn!(sink = %cfg.name, topic = %record.topic, partition = record.partition,
        offset = record.offset, category, "record dead-lettered");
    dead_letters
        .send(
            &cfg.dead_letter_topic,
            record.key.as_deref(),
            record.payload.as_deref(),
            &[
                ("driftless-source-topic", &record.topic),
                ("driftless-source-partition", &partition),
                ("driftless-source-offset", &offset),
                ("driftless-error-category", category),
                ("driftless-error-message", message),
                ("driftless-correlation-id", &correlation),
                ("driftless-sink", &cfg.name),
            ],
        )
        .await?;
    Ok(())
}

/// Applies the open batch until it is done (applied and/or dead-lettered), then stores offsets.
async fn flush<S: Sink>(
    cfg: &RunnerConfig,
    subscription: &Subscription,
    dead_letters: &AckedProducer,
    sink: &mut S,
    batcher: &mut Batcher<ChangeEvent>,
    stats: &mut Stats,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), RunnerError> {
    let Some(batch) = batcher.take() else {
        return Ok(());
    };
    let outcome = if batch.entries.is_empty() {
        Some(super::Outcome::default())
    } else {
        apply_with_retries(cfg, sink, &batch, stats, shutdown).await?
    };
    let Some(outcome) = outcome else {
        // Shutdown while retrying: nothing stored; the batch is read again after a restart.
        return Ok(());
    };
    for rejected in &outcome.rejected {
        let entry = &batch.entries[rejected.index];
        // Every record folded into a rejected entry goes to the dead-letter topic; the latest
        // state is what a replay re-applies after a fix.
        let payload = serde_json::to_vec(&entry.item).expect("events serialize");
        for at in &entry.positions {
            let record = Incoming {
                topic: cfg.topic.clone(),
                partition: at.partition,
                offset: at.offset,
                key: Some(entry.key.clone()),
                payload: Some(payload.clone()),
            };
            dead_letter(
                cfg,
                dead_letters,
                &record,
                &rejected.category,
                &rejected.message,
            )
            .await?;
            stats.dead_letters += 1;
        }
    }
    subscription.store(&cfg.topic, &batch.commit)?;
    stats
        .stored
        .extend(batch.commit.iter().map(|(p, o)| (*p, *o)));
    stats.batches += 1;
    metrics::counter!("driftless_sink_records_applied_total", "sink" => cfg.name.clone())
        .increment((batch.records - outcome.rejected.len()) as u64);
    Ok(())
}

/// `Ok(None)` when shutdown interrupted the retries.
async fn apply_with_retries<S: Sink>(
    cfg: &RunnerConfig,
    sink: &mut S,
    batch: &Batch<ChangeEvent>,
    stats: &mut Stats,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<super::Outcome>, RunnerError> {
    let mut backoff = Backoff::new();
    loop {
        match sink.apply(batch).await {
            Ok(outcome) => return Ok(Some(outcome)),
            Err(SinkError::Transient {
                message,
                retry_after,
            }) => {
                stats.retries += 1;
                let wait = retry_after.unwrap_or_else(|| backoff.next_wait());
                tracing::warn!(sink = %cfg.name, entries = batch.entries.len(), error = %message,
                    retry_in_ms = wait.as_millis() as u64, "batch failed transiently; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(None),
                }
            }
            Err(fatal) => return Err(fatal.into()),
        }
    }
}
