//! `driftless sink --name N` and `driftless replay`: one configured sink worker, wired.
//!
//! Owns start-up of a worker: pick the sink from the config, build its destination (which
//! checks the mapping against the live schema), make sure its topics exist, join the consumer
//! group `driftless-sink-{name}` and run the runner. A two-way sink also runs its inbound
//! half ([`super::two_way`]) under the same supervision. Invariants: the worker's offsets are
//! stored only by the runner, after the destination accepted (see [`crate::sink::runner`]);
//! building the destination at start (its token, its schema) is retried on transient failures
//! with [`Backoff`], each retry logged, until it succeeds, a fatal error stops the worker or a
//! shutdown stops it cleanly ([`start_destination`]); `driftless check` builds it once and
//! reports instead.

use std::time::Duration;

use tokio::sync::watch;

use super::destination::{Destination, destination};
use super::supervise::Supervisor;
use super::two_way::{self, Lease};
use super::worker_status;
use crate::config::ValidConfig;
use crate::config::sinks::ValidSink;
use crate::error::{Backoff, Classify, ErrorClass, Refusal};
use crate::kafka::{self, AckedProducer, GroupConsumer, KafkaFailure, ReplayFrom};
use crate::sink::SinkError;
use crate::sink::audit::{AuditError, AuditTrail};
use crate::sink::runner::{Outputs, RunnerConfig, RunnerError, Stats, run};
use crate::sink::status_report::StatusReport;
use crate::sync::store::origin_name;

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// Configuration or destination schema problems (exit code 2).
    #[error("{0}")]
    Refused(String),
    /// The worker (or its two-way half) failed.
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

impl From<SinkError> for WorkerError {
    fn from(e: SinkError) -> Self {
        WorkerError::Runner(e.into())
    }
}

impl From<KafkaFailure> for WorkerError {
    fn from(e: KafkaFailure) -> Self {
        WorkerError::Runner(e.into())
    }
}

impl From<AuditError> for WorkerError {
    fn from(e: AuditError) -> Self {
        WorkerError::Runner(e.into())
    }
}

impl WorkerError {
    /// How long the destination asked to wait before a retry, if it said (a 429's).
    fn retry_after(&self) -> Option<Duration> {
        match self {
            WorkerError::Runner(RunnerError::Sink(SinkError::Transient {
                retry_after, ..
            })) => *retry_after,
            _ => None,
        }
    }
}

impl Classify for WorkerError {
    fn class(&self) -> ErrorClass {
        match self {
            WorkerError::Refused(_) => ErrorClass::Fatal,
            WorkerError::Runner(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            WorkerError::Refused(_) => None,
            WorkerError::Runner(e) => e.hint(),
        }
    }

    fn refusal(&self) -> Option<Refusal> {
        matches!(self, WorkerError::Refused(_)).then_some(Refusal::Config)
    }
}

/// The consumer group of a sink.
pub(crate) fn group_id(name: &str) -> String {
    format!("driftless-sink-{name}")
}

/// The dead-letter topic of a sink.
pub(crate) fn dead_letter_topic(cfg: &ValidConfig, name: &str) -> String {
    format!("{}.dlq.{name}", cfg.topic_prefix)
}

pub(super) fn find<'a>(
    cfg: &'a ValidConfig,
    name: &str,
) -> Result<(usize, &'a ValidSink), WorkerError> {
    cfg.sinks
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = cfg.sinks.iter().map(|s| s.name.as_str()).collect();
            WorkerError::Refused(format!(
                "no sink named {name:?} in the config (sinks: {})",
                names.join(", ")
            ))
        })
}

/// Keys a one-way CRM sink plans at once, per request it may send: entries the ledger finds
/// unchanged or stale send nothing, so the CRM client packs the rest into requests of
/// `batch_max_events` records instead of sending one part-empty request per batch.
const PLANNED_KEYS_PER_REQUEST: usize = 10;

fn runner_config(cfg: &ValidConfig, sink: &ValidSink, topic: String) -> RunnerConfig {
    RunnerConfig {
        name: sink.name.clone(),
        topic,
        dead_letter_topic: dead_letter_topic(cfg, &sink.name),
        batch_max_events: if sink.keeps_ledger() {
            sink.batch_max_events * PLANNED_KEYS_PER_REQUEST
        } else {
            sink.batch_max_events
        },
        batch_max_wait: std::time::Duration::from_millis(sink.batch_max_wait_ms),
        stop_at: None,
        schedule: sink.schedule.clone(),
        skip_origin: None,
    }
}

/// Runs the sink named `name` until `shutdown` or a fatal error. A two-way sink runs its
/// inbound half beside the runner; whichever fails first stops the other. The worker's state
/// (running, its errors, then stopped or failed) goes to the status topic
/// ([`super::worker_status`]).
pub(crate) async fn run_named(
    cfg: &ValidConfig,
    name: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, WorkerError> {
    find(cfg, name)?;
    let publishing = worker_status::start(cfg, name);
    let result = serve(cfg, name, shutdown, publishing.report()).await;
    publishing.finish(result.as_ref().err()).await;
    result
}

/// [`run_named`]'s worker, reporting its errors to `status`.
async fn serve(
    cfg: &ValidConfig,
    name: &str,
    shutdown: watch::Receiver<bool>,
    status: StatusReport,
) -> Result<Stats, WorkerError> {
    let (index, sink) = find(cfg, name)?;
    let mut runner_cfg = runner_config(
        cfg,
        sink,
        cfg.topic_for(&sink.table.schema, &sink.table.name),
    );
    let mut starting = shutdown.clone();
    let Some(mut destination) = start_destination(cfg, sink, index, &mut starting, &status).await?
    else {
        // Stopped while the destination was unreachable: nothing was read or applied.
        return Ok(Stats::default());
    };
    let mut standby = shutdown.clone();
    let mut tasks = Supervisor::new(shutdown);
    if let Some(settings) = &sink.two_way {
        let lease = Lease::Wait(&mut standby);
        let prepared = two_way::prepare(cfg, sink, settings, destination, lease, status.clone());
        let Some(parts) = prepared.await? else {
            // Stopped while standing by: nothing was applied.
            return Ok(Stats::default());
        };
        destination = parts.destination;
        runner_cfg.skip_origin = Some(origin_name(&sink.name));
        two_way::start(parts.context, parts.crm, &mut tasks).await?;
    }
    if let Some(schedule) = sink.verify_every.clone() {
        let (cfg, name, stop) = (cfg.clone(), sink.name.clone(), tasks.stop_signal());
        tasks.spawn(
            format!("verify of sink {name}"),
            super::verify::every(cfg, name, schedule, stop),
        );
    }
    // The table's topic may not exist yet (a new table, or `driftless run` starting capture at
    // the same time): create it as capture would, or the subscription would wait for a
    // metadata refresh (minutes) before seeing it.
    kafka::ensure_topics(
        &cfg.brokers,
        &cfg.librdkafka,
        std::slice::from_ref(&runner_cfg.topic),
        cfg.partitions,
        cfg.replication_factor,
    )
    .await?;
    let subscription = GroupConsumer::new(
        &cfg.brokers,
        &cfg.librdkafka,
        &group_id(name),
        &runner_cfg.topic,
    )?;
    tracing::info!(sink = name, topic = %runner_cfg.topic, group = %group_id(name),
        "sink worker started");
    let (stop, stopper) = (tasks.stop_signal(), tasks.stopper());
    let runner = async {
        let result = run_worker(
            cfg,
            &runner_cfg,
            &subscription,
            &mut destination,
            stop,
            status,
        )
        .await;
        let _ = stopper.send(true);
        result
    };
    let (result, others) = tokio::join!(runner, tasks.join());
    others?;
    result
}

/// `driftless replay`: re-applies the sink's topic (or its dead letters) from `from` up to the
/// end offsets seen at start, in a consumer group of its own (`driftless-replay-{name}`), so
/// the running workers' offsets are untouched. Applying is idempotent (upserts by a unique
/// property), so a replay converges instead of duplicating.
/// What `driftless replay` re-applies.
pub(crate) struct Replay {
    /// Where in the topic it starts.
    pub(crate) from: ReplayFrom,
    /// The sink's dead-letter topic instead of its table's topic.
    pub(crate) dead_letters: bool,
    /// Forget the sink ledger first: every change read is re-applied.
    pub(crate) full_resync: bool,
}

pub(crate) async fn replay_named(
    cfg: &ValidConfig,
    name: &str,
    replay: &Replay,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, WorkerError> {
    let (index, sink) = find(cfg, name)?;
    let (from, dead_letters_only) = (&replay.from, replay.dead_letters);
    let topic = if dead_letters_only {
        dead_letter_topic(cfg, name)
    } else {
        cfg.topic_for(&sink.table.schema, &sink.table.name)
    };
    let mut runner_cfg = runner_config(cfg, sink, topic);
    let (mut starting, status) = (shutdown.clone(), StatusReport::default());
    let Some(mut destination) = start_destination(cfg, sink, index, &mut starting, &status).await?
    else {
        return Ok(Stats::default());
    };
    if replay.full_resync {
        destination.forget_ledger().await?;
    }
    if let Some(settings) = &sink.two_way {
        let status = StatusReport::default();
        destination = two_way::prepare(cfg, sink, settings, destination, Lease::Require, status)
            .await?
            .expect("a replay never stands by")
            .destination;
        runner_cfg.skip_origin = Some(origin_name(&sink.name));
    }
    let group = format!("driftless-replay-{name}");
    let (subscription, ends) = GroupConsumer::replay(
        &cfg.brokers,
        &cfg.librdkafka,
        &group,
        &runner_cfg.topic,
        from,
    )?;
    tracing::info!(sink = name, topic = %runner_cfg.topic, partitions = ends.len(),
        "replay started");
    runner_cfg.stop_at = Some(ends);
    // A replay applies what it reads now, whatever the sink's schedule.
    runner_cfg.schedule = None;
    let status = StatusReport::default();
    run_worker(
        cfg,
        &runner_cfg,
        &subscription,
        &mut destination,
        shutdown,
        status,
    )
    .await
}

/// Builds the destination of `sinks[index]` ([`destination`]: its token, its schema and the
/// mapping check), retrying transient failures (429, 5xx, a refused connection, a timeout)
/// with [`Backoff`] or the destination's own wait, each one logged and reported to `status`,
/// for as long as it takes. A fatal error (401, 403, a mapping that does not fit) is returned
/// at once; `Ok(None)` when `shutdown` came first (a clean stop).
async fn start_destination(
    cfg: &ValidConfig,
    sink: &ValidSink,
    index: usize,
    shutdown: &mut watch::Receiver<bool>,
    status: &StatusReport,
) -> Result<Option<Destination>, WorkerError> {
    let mut backoff = Backoff::new();
    let mut retries: u64 = 0;
    loop {
        let built = tokio::select! {
            built = destination(cfg, sink, index) => built,
            Ok(_) = shutdown.wait_for(|stop| *stop) => return Ok(None),
        };
        let e = match built {
            Ok(destination) => {
                if retries > 0 {
                    tracing::info!(sink = %sink.name, retries, "destination reachable; starting");
                }
                return Ok(Some(destination));
            }
            Err(e) if e.class() == ErrorClass::Transient => e,
            Err(fatal) => return Err(fatal),
        };
        status.error(&e);
        retries += 1;
        let wait = e.retry_after().unwrap_or_else(|| backoff.next_wait());
        tracing::warn!(sink = %sink.name, retry = retries, error = %e,
            retry_in_ms = wait.as_millis() as u64,
            "destination unreachable at start (transient); retrying");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Ok(_) = shutdown.wait_for(|stop| *stop) => return Ok(None),
        }
    }
}

async fn run_worker(
    cfg: &ValidConfig,
    runner_cfg: &RunnerConfig,
    subscription: &GroupConsumer,
    destination: &mut Destination,
    shutdown: watch::Receiver<bool>,
    status: StatusReport,
) -> Result<Stats, WorkerError> {
    let outputs = Outputs {
        dead_letters: AckedProducer::new(&cfg.brokers, &cfg.librdkafka)?,
        audit: AuditTrail::open(
            &cfg.audit,
            cfg.audit_key_env.as_deref(),
            &cfg.brokers,
            &cfg.librdkafka,
        )?,
        status,
    };
    let mut topics = vec![runner_cfg.dead_letter_topic.clone()];
    topics.extend(outputs.audit.topic().map(str::to_string));
    kafka::ensure_topics(
        &cfg.brokers,
        &cfg.librdkafka,
        &topics,
        cfg.partitions,
        cfg.replication_factor,
    )
    .await?;
    Ok(run(runner_cfg, subscription, &outputs, destination, shutdown).await?)
}
