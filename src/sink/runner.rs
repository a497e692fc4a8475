//! The sink worker: one Kafka consumer-group member feeding one destination.
//!
//! Owns the loop `Kafka → batch → Sink::apply → dead letters → store offsets`. Invariants:
//! - offsets are stored only after every record up to them was applied by the destination or
//!   acknowledged on the dead-letter topic (`{prefix}.dlq.{sink}`); nothing is dropped silently;
//! - one batch at a time: a transient failure retries the *same* batch (with backoff, honouring
//!   the destination's `retry_after`), so per-key order holds across retries and batches;
//! - a wait longer than a second (a rate limit's `Retry-After`, HubSpot's daily limit) pauses
//!   the assigned partitions and keeps polling, so the group never evicts the worker while it
//!   holds an unapplied batch; records that still arrive are held and read first afterwards;
//! - a poison record (unparsable event, mapping failure, per-record rejection) goes to the
//!   dead-letter topic with its source topic/partition/offset, error category, message and a
//!   correlation id in headers, and the worker continues;
//! - a fatal error stops the worker with a hint; stored offsets are committed on every stop, so
//!   a restart resumes after what was applied;
//! - every applied or rejected change is in the audit trail before its offsets are stored;
//! - with a [`Schedule`], records accumulate (coalesced per key, at most
//!   [`SCHEDULED_WINDOW_MAX_RECORDS`] records, then an early flush) until the next tick; the
//!   window is then applied in requests of `batch_max_events` entries, and its offsets are stored
//!   after the last one;
//! - logs carry keys' positions and counts, never row values.
//!
//! The loop is one `select!` with priorities: shutdown, batch deadline, new records. Kafka is
//! reached only through the [`Subscription`] and [`AckedPublisher`] seams, so these rules are
//! unit-tested below with in-memory ones.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::audit::{self, AuditError, AuditTrail};
use super::batch::{Batch, Batcher, Position};
use super::status_report::StatusReport;
use super::{Outcome, Rejected, Sink, SinkError};
use crate::config::schedule::Schedule;
use crate::error::{Backoff, Classify, ErrorClass};
use crate::event::ChangeEvent;
use crate::kafka::{AckedProducer, AckedPublisher, Incoming, KafkaFailure, Subscription};

/// What the worker needs besides the destination.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Sink name (consumer group `driftless-sink-{name}`, dead-letter topic suffix).
    pub name: String,
    /// Topic to consume.
    pub topic: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Keys (entries) per batch, i.e. per [`Sink::apply`] call (a CRM sink packs what it must
    /// send into requests of its own size); a real-time batch also closes at
    /// `batch_max_events × batch::RECORDS_PER_KEY` records.
    pub batch_max_events: usize,
    /// Maximum wait of a partial batch.
    pub batch_max_wait: Duration,
    /// For a replay: stop once every partition was applied up to these offsets (exclusive).
    pub stop_at: Option<BTreeMap<i32, i64>>,
    /// Apply in scheduled windows instead of real time.
    pub schedule: Option<Schedule>,
    /// Skip changes made under this replication origin (a two-way sink's own inbound writes).
    pub skip_origin: Option<String>,
}

/// Most records a scheduled window accumulates before it is applied early (bounds memory).
pub(crate) const SCHEDULED_WINDOW_MAX_RECORDS: usize = 100_000;

/// Where a worker writes besides the destination.
pub struct Outputs<D = AckedProducer> {
    /// Producer of the dead-letter topic.
    pub dead_letters: D,
    /// The audit trail.
    pub audit: AuditTrail,
    /// Where the worker's errors are reported for `driftless status`.
    pub status: StatusReport,
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
    /// The audit trail.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl Classify for RunnerError {
    fn class(&self) -> ErrorClass {
        match self {
            RunnerError::Kafka(e) => e.class(),
            RunnerError::Sink(e) => e.class(),
            RunnerError::Audit(AuditError::Key(_)) => ErrorClass::Fatal,
            RunnerError::Audit(_) => ErrorClass::Transient,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            RunnerError::Kafka(e) => e.hint(),
            RunnerError::Sink(e) => e.hint(),
            RunnerError::Audit(_) => None,
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
    /// Changes skipped because this sink wrote them (two-way sync).
    pub own_writes: u64,
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

/// When the open window must be applied.
struct Window {
    schedule: Option<Schedule>,
    /// Next tick of a scheduled sink, fixed when the window opens.
    tick: Option<Instant>,
}

impl Window {
    fn batcher(&self, cfg: &RunnerConfig) -> Batcher<ChangeEvent> {
        match self.schedule {
            // The deadline of a scheduled window is the tick, not the batcher's.
            Some(_) => Batcher::with_max_records(
                SCHEDULED_WINDOW_MAX_RECORDS,
                SCHEDULED_WINDOW_MAX_RECORDS,
                Duration::from_secs(86_400),
            ),
            None => Batcher::new(cfg.batch_max_events, cfg.batch_max_wait),
        }
    }

    fn deadline(&mut self, batcher: &Batcher<ChangeEvent>) -> Option<Instant> {
        match &self.schedule {
            None => batcher.deadline(),
            Some(_) if batcher.is_empty() => None,
            Some(schedule) => Some(
                *self
                    .tick
                    .get_or_insert_with(|| Instant::now() + schedule.wait_from(chrono::Utc::now())),
            ),
        }
    }

    fn is_due(&mut self, batcher: &Batcher<ChangeEvent>, now: Instant) -> bool {
        match self.schedule {
            None => batcher.is_due(now),
            Some(_) => batcher.is_full() || self.deadline(batcher).is_some_and(|d| now >= d),
        }
    }

    fn closed(&mut self) {
        self.tick = None;
    }
}

/// Runs the worker until `shutdown` turns true or a fatal error occurs.
pub async fn run<S: Sink, C: Subscription, D: AckedPublisher>(
    cfg: &RunnerConfig,
    subscription: &C,
    outputs: &Outputs<D>,
    sink: &mut S,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Stats, RunnerError> {
    let subscription = &Held::new(subscription);
    let mut window = Window {
        schedule: cfg.schedule.clone(),
        tick: None,
    };
    let mut batcher = window.batcher(cfg);
    let mut stats = Stats::default();
    let result = loop {
        // A shutdown seen while a batch was retrying (that batch is not stored) ends the
        // worker here: `changed()` below would not fire again for it.
        if cfg.replay_done(&stats) || *shutdown.borrow() {
            break Ok(());
        }
        let deadline = window
            .deadline(&batcher)
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Ok(()),
            _ = sleep_until(deadline), if deadline.is_some() => {
                window.closed();
                if let Err(e) = flush(cfg, subscription, outputs, sink, &mut batcher, &mut stats, &mut shutdown).await {
                    break Err(e);
                }
            }
            incoming = subscription.recv() => {
                let record = match incoming {
                    Ok(r) => r,
                    Err(e) if e.class() == ErrorClass::Transient => {
                        tracing::warn!(sink = %cfg.name, error = %e, "kafka read failed; retrying");
                        outputs.status.error(&e);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Err(e) => break Err(e.into()),
                };
                stats.records += 1;
                if let Err(e) = accept(cfg, outputs, &mut batcher, &mut stats, record).await {
                    break Err(e);
                }
                if window.is_due(&batcher, Instant::now()) {
                    window.closed();
                    if let Err(e) = flush(cfg, subscription, outputs, sink, &mut batcher, &mut stats, &mut shutdown).await {
                        break Err(e);
                    }
                }
            }
        }
    };
    // Whatever happened, commit what was stored (applied or dead-lettered).
    if let Err(e) = subscription.commit() {
        tracing::warn!(sink = %cfg.name, error = %e, "final offset commit failed");
    }
    tracing::info!(sink = %cfg.name, records = stats.records, batches = stats.batches,
        dead_letters = stats.dead_letters, retries = stats.retries, own_writes = stats.own_writes,
        "sink worker stopped");
    result.map(|()| stats)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Parses a record into the batch, or dead-letters (and audits) it.
async fn accept<D: AckedPublisher>(
    cfg: &RunnerConfig,
    outputs: &Outputs<D>,
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
        Ok(event)
            if cfg.skip_origin.is_some()
                && event.source.origin.as_deref() == cfg.skip_origin.as_deref() =>
        {
            // Written by this sink's inbound half: the CRM already has it.
            stats.own_writes += 1;
            batcher.skip(at, Instant::now());
        }
        Ok(event) => {
            let key = record.key.clone().unwrap_or_default();
            batcher.push(key, event, at, Instant::now());
        }
        Err(e) => {
            const CATEGORY: &str = "MALFORMED_EVENT";
            let reason = format!("not a driftless change event: {e}");
            dead_letter(cfg, &outputs.dead_letters, &record, CATEGORY, &reason).await?;
            outputs.status.poison(CATEGORY, 1);
            if let Some(hasher) = outputs.audit.hasher() {
                let audit = audit::unparsable(
                    hasher,
                    &cfg.name,
                    &record.topic,
                    record.key.as_deref(),
                    at,
                    CATEGORY,
                );
                outputs.audit.write(&[audit]).await?;
            }
            stats.dead_letters += 1;
            batcher.skip(at, Instant::now());
        }
    }
    Ok(())
}

async fn dead_letter<D: AckedPublisher>(
    cfg: &RunnerConfig,
    dead_letters: &D,
    record: &Incoming,
    category: &str,
    message: &str,
) -> Result<(), RunnerError> {
    let at = Position {
        partition: record.partition,
        offset: record.offset,
    };
    let correlation = audit::correlation_id(&record.topic, at);
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

/// Applies the open batch (in requests of at most `batch_max_events` entries) until it is done
/// (applied and/or dead-lettered, and audited), then stores its offsets.
async fn flush<S: Sink, C: Subscription, D: AckedPublisher>(
    cfg: &RunnerConfig,
    subscription: &Held<'_, C>,
    outputs: &Outputs<D>,
    sink: &mut S,
    batcher: &mut Batcher<ChangeEvent>,
    stats: &mut Stats,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), RunnerError> {
    let Some(mut window) = batcher.take() else {
        return Ok(());
    };
    let per_request = cfg.batch_max_events.max(1);
    let mut entries = std::mem::take(&mut window.entries);
    let mut rejected = 0;
    while !entries.is_empty() {
        let rest = entries.split_off(per_request.min(entries.len()));
        let batch = Batch {
            records: entries.iter().map(|e| e.positions.len()).sum(),
            entries: std::mem::replace(&mut entries, rest),
            commit: BTreeMap::new(),
        };
        let status = &outputs.status;
        let Some(outcome) =
            apply_with_retries(cfg, subscription, status, sink, &batch, stats, shutdown).await?
        else {
            // Shutdown while retrying: nothing stored; the window is read again after a
            // restart (re-applying its first requests is idempotent).
            return Ok(());
        };
        dead_letter_rejected(cfg, &outputs.dead_letters, &batch, &outcome.rejected, stats).await?;
        if let Some(last) = outcome.rejected.last() {
            outputs
                .status
                .poison(&last.category, outcome.rejected.len());
        }
        if let Some(hasher) = outputs.audit.hasher() {
            let records = audit::records(hasher, &cfg.name, &cfg.topic, &batch, &outcome);
            outputs.audit.write(&records).await?;
        }
        rejected += outcome.rejected.len();
        stats.batches += 1;
    }
    subscription.store(&cfg.topic, &window.commit)?;
    stats
        .stored
        .extend(window.commit.iter().map(|(p, o)| (*p, *o)));
    metrics::counter!("driftless_sink_records_applied_total", "sink" => cfg.name.clone())
        .increment(window.records.saturating_sub(rejected) as u64);
    Ok(())
}

/// Sends every record folded into a rejected entry to the dead-letter topic; the payload is
/// the entry's latest state, which is what a replay re-applies after a fix.
async fn dead_letter_rejected<D: AckedPublisher>(
    cfg: &RunnerConfig,
    dead_letters: &D,
    batch: &Batch<ChangeEvent>,
    rejected: &[Rejected],
    stats: &mut Stats,
) -> Result<(), RunnerError> {
    for r in rejected {
        let entry = &batch.entries[r.index];
        let payload = serde_json::to_vec(&entry.item).expect("events serialize");
        for at in &entry.positions {
            let record = Incoming {
                topic: cfg.topic.clone(),
                partition: at.partition,
                offset: at.offset,
                key: Some(entry.key.clone()),
                payload: Some(payload.clone()),
            };
            dead_letter(cfg, dead_letters, &record, &r.category, &r.message).await?;
            stats.dead_letters += 1;
        }
    }
    Ok(())
}

/// `Ok(None)` when shutdown interrupted the retries.
async fn apply_with_retries<S: Sink, C: Subscription>(
    cfg: &RunnerConfig,
    subscription: &Held<'_, C>,
    status: &StatusReport,
    sink: &mut S,
    batch: &Batch<ChangeEvent>,
    stats: &mut Stats,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Outcome>, RunnerError> {
    if batch.entries.is_empty() {
        return Ok(Some(Outcome::default()));
    }
    let mut backoff = Backoff::new();
    loop {
        match sink.apply(batch).await {
            Ok(outcome) => return Ok(Some(outcome)),
            Err(e @ SinkError::Transient { retry_after, .. }) => {
                status.error(&e);
                stats.retries += 1;
                let wait = retry_after.unwrap_or_else(|| backoff.next_wait());
                tracing::warn!(sink = %cfg.name, entries = batch.entries.len(), error = %e,
                    retry_in_ms = wait.as_millis() as u64, "batch failed transiently; retrying");
                if !subscription.wait_polling(wait, shutdown).await? {
                    return Ok(None);
                }
            }
            Err(fatal) => return Err(fatal.into()),
        }
    }
}

/// The worker's subscription, with the records that arrived while it waited: they are handed
/// out before anything new is read, so per-partition order holds.
struct Held<'a, C> {
    inner: &'a C,
    held: std::sync::Mutex<std::collections::VecDeque<Incoming>>,
}

/// Waits longer than this keep the membership by polling with the partitions paused.
const POLL_WHILE_WAITING: Duration = Duration::from_secs(1);

impl<'a, C: Subscription> Held<'a, C> {
    fn new(inner: &'a C) -> Self {
        Held {
            inner,
            held: Default::default(),
        }
    }

    /// Waits `wait` (false: shutdown came first). A long wait pauses the assigned partitions
    /// and keeps polling (at least once a second) instead of sleeping, so the group does not
    /// evict the worker after `max.poll.interval.ms` and hand its partitions to another
    /// worker while it holds an unapplied batch; records still arriving (fetched before the
    /// pause, or from partitions assigned meanwhile, which are paused in turn) are held.
    async fn wait_polling(
        &self,
        wait: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, RunnerError> {
        if wait <= POLL_WHILE_WAITING {
            return Ok(tokio::select! {
                _ = tokio::time::sleep(wait) => true,
                _ = shutdown.changed() => false,
            });
        }
        self.inner.pause()?;
        let until = tokio::time::Instant::now() + wait;
        let waited = loop {
            let tick = until.min(tokio::time::Instant::now() + POLL_WHILE_WAITING);
            tokio::select! {
                _ = shutdown.changed() => break false,
                _ = tokio::time::sleep_until(tick) => {
                    if tick >= until {
                        break true;
                    }
                }
                r = self.inner.recv() => match r {
                    Ok(record) => {
                        self.held.lock().expect("not poisoned").push_back(record);
                        self.inner.pause()?;
                    }
                    Err(e) if e.class() == ErrorClass::Transient => {}
                    Err(e) => return Err(e.into()),
                },
            }
        };
        self.inner.resume()?;
        Ok(waited)
    }
}

impl<C: Subscription> Subscription for Held<'_, C> {
    async fn recv(&self) -> Result<Incoming, KafkaFailure> {
        let held = self.held.lock().expect("not poisoned").pop_front();
        match held {
            Some(record) => Ok(record),
            None => self.inner.recv().await,
        }
    }

    fn store(&self, topic: &str, next: &BTreeMap<i32, i64>) -> Result<(), KafkaFailure> {
        self.inner.store(topic, next)
    }

    fn commit(&self) -> Result<(), KafkaFailure> {
        self.inner.commit()
    }

    fn pause(&self) -> Result<(), KafkaFailure> {
        self.inner.pause()
    }

    fn resume(&self) -> Result<(), KafkaFailure> {
        self.inner.resume()
    }
}

#[cfg(test)]
mod tests;
