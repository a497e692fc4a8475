//! `driftless sink --name N`: builds one configured sink worker and runs it.
//!
//! Owns start-up of a worker: pick the sink from the config, read its secret, fetch the
//! destination schema and refuse (listing every problem) when the mapping does not fit it, make
//! sure the dead-letter topic exists, join the consumer group `driftless-sink-{name}`.

use tokio::sync::watch;

use super::audit::AuditTrail;
use super::batch::Batch;
use super::hubspot::HubspotSink;
use super::mapping::check_schema;
use super::oauth::Credentials;
use super::runner::{Outputs, RunnerConfig, RunnerError, Stats, run};
use super::webhook::WebhookSink;
use super::webhook_signature::Secret;
use super::zoho::ZohoSink;
use super::{Outcome, Sink, SinkError};
use crate::config::ValidConfig;
use crate::config::sinks::{SinkKind, ValidSink};
use crate::error::{Classify, ErrorClass};
use crate::event::ChangeEvent;
use crate::kafka::{self, AckedProducer, KafkaFailure, ReplayFrom, Subscription};

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Configuration or destination schema problems (exit code 2).
    #[error("{0}")]
    Refused(String),
    /// The worker failed.
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

impl Classify for ServiceError {
    fn class(&self) -> ErrorClass {
        match self {
            ServiceError::Refused(_) => ErrorClass::Fatal,
            ServiceError::Runner(e) => e.class(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ServiceError::Refused(_) => None,
            ServiceError::Runner(e) => e.hint(),
        }
    }
}

/// The consumer group of a sink.
pub fn group_id(name: &str) -> String {
    format!("driftless-sink-{name}")
}

/// The dead-letter topic of a sink.
pub fn dead_letter_topic(cfg: &ValidConfig, name: &str) -> String {
    format!("{}.dlq.{name}", cfg.topic_prefix)
}

fn find<'a>(cfg: &'a ValidConfig, name: &str) -> Result<(usize, &'a ValidSink), ServiceError> {
    cfg.sinks
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = cfg.sinks.iter().map(|s| s.name.as_str()).collect();
            ServiceError::Refused(format!(
                "no sink named {name:?} in the config (sinks: {})",
                names.join(", ")
            ))
        })
}

fn runner_config(cfg: &ValidConfig, sink: &ValidSink, topic: String) -> RunnerConfig {
    RunnerConfig {
        name: sink.name.clone(),
        topic,
        dead_letter_topic: dead_letter_topic(cfg, &sink.name),
        batch_max_events: sink.batch_max_events,
        batch_max_wait: std::time::Duration::from_millis(sink.batch_max_wait_ms),
        stop_at: None,
        schedule: sink.schedule.clone(),
    }
}

/// A configured destination.
pub enum Destination {
    /// HubSpot CRM v3.
    Hubspot(HubspotSink),
    /// Zoho CRM v8.
    Zoho(ZohoSink),
    /// Signed HTTP POSTs.
    Webhook(WebhookSink),
}

impl Sink for Destination {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        match self {
            Destination::Hubspot(s) => s.apply(batch).await,
            Destination::Zoho(s) => s.apply(batch).await,
            Destination::Webhook(s) => s.apply(batch).await,
        }
    }
}

/// Builds the destination of a sink and checks its mapping against the live schema.
pub async fn destination(sink: &ValidSink, index: usize) -> Result<Destination, ServiceError> {
    let refused = |e: &dyn std::fmt::Display| ServiceError::Refused(e.to_string());
    let failed = |e: SinkError| ServiceError::Runner(e.into());
    let credentials = || {
        Credentials::from_auth(
            sink.auth
                .as_ref()
                .ok_or_else(|| refused(&"token_env or [sinks.oauth] is required"))?,
        )
        .map_err(|e| refused(&format!("sinks[{index}]: {e}")))
    };
    let (destination, schema) = match &sink.kind {
        SinkKind::Hubspot { .. } => {
            let mut d = HubspotSink::new(sink, credentials()?).map_err(failed)?;
            let schema = d.fetch_schema().await.map_err(failed)?;
            d.use_schema(schema.clone()); // one properties read, not two
            (Destination::Hubspot(d), schema)
        }
        SinkKind::Zoho { .. } => {
            let d = ZohoSink::new(sink, credentials()?).map_err(failed)?;
            let schema = d.fetch_schema().await.map_err(failed)?;
            (Destination::Zoho(d), schema)
        }
        SinkKind::Webhook { secret, .. } => {
            let secret = secret
                .read()
                .and_then(|s| Secret::parse(&s).map_err(|e| e.to_string()))
                .map_err(|e| refused(&format!("sinks[{index}].secret_env: {e}")))?;
            // A webhook has no schema to check the mapping against.
            return Ok(Destination::Webhook(
                WebhookSink::new(sink, secret).map_err(failed)?,
            ));
        }
    };
    tracing::info!(sink = %sink.name, properties = schema.len(), "destination schema fetched");
    let problems = check_schema(
        &format!("sinks[{index}]"),
        &sink.fields,
        sink.id_property.as_deref().unwrap_or_default(),
        &schema,
    );
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("  - {}: {}", p.path, p.message))
            .collect();
        return Err(ServiceError::Refused(format!(
            "the mapping does not fit the destination ({} problem(s)):\n{}",
            problems.len(),
            lines.join("\n")
        )));
    }
    Ok(destination)
}

/// Runs the sink named `name` until `shutdown` or a fatal error.
pub async fn run_named(
    cfg: &ValidConfig,
    name: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, ServiceError> {
    let (index, sink) = find(cfg, name)?;
    let runner_cfg = runner_config(
        cfg,
        sink,
        cfg.topic_for(&sink.table.schema, &sink.table.name),
    );
    let mut destination = destination(sink, index).await?;
    let subscription = Subscription::new(
        &cfg.brokers,
        &cfg.librdkafka,
        &group_id(name),
        &runner_cfg.topic,
    )
    .map_err(|e| ServiceError::Runner(e.into()))?;
    tracing::info!(sink = name, topic = %runner_cfg.topic, group = %group_id(name),
        "sink worker started");
    run_worker(cfg, &runner_cfg, &subscription, &mut destination, shutdown).await
}

/// `driftless replay`: re-applies the sink's topic (or its dead letters) from `from` up to the
/// end offsets seen at start, in a consumer group of its own (`driftless-replay-{name}`), so
/// the running workers' offsets are untouched. Applying is idempotent (upserts by a unique
/// property), so a replay converges instead of duplicating.
pub async fn replay_named(
    cfg: &ValidConfig,
    name: &str,
    from: &ReplayFrom,
    dead_letters_only: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, ServiceError> {
    let (index, sink) = find(cfg, name)?;
    let topic = if dead_letters_only {
        dead_letter_topic(cfg, name)
    } else {
        cfg.topic_for(&sink.table.schema, &sink.table.name)
    };
    let mut runner_cfg = runner_config(cfg, sink, topic);
    let mut destination = destination(sink, index).await?;
    let group = format!("driftless-replay-{name}");
    let (subscription, ends) = Subscription::replay(
        &cfg.brokers,
        &cfg.librdkafka,
        &group,
        &runner_cfg.topic,
        from,
    )
    .map_err(|e| ServiceError::Runner(e.into()))?;
    tracing::info!(sink = name, topic = %runner_cfg.topic, partitions = ends.len(),
        "replay started");
    runner_cfg.stop_at = Some(ends);
    // A replay applies what it reads now, whatever the sink's schedule.
    runner_cfg.schedule = None;
    run_worker(cfg, &runner_cfg, &subscription, &mut destination, shutdown).await
}

async fn run_worker(
    cfg: &ValidConfig,
    runner_cfg: &RunnerConfig,
    subscription: &Subscription,
    destination: &mut Destination,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, ServiceError> {
    let kafka_failed = |e: KafkaFailure| ServiceError::Runner(e.into());
    let outputs = Outputs {
        dead_letters: AckedProducer::new(&cfg.brokers, &cfg.librdkafka).map_err(kafka_failed)?,
        audit: AuditTrail::open(&cfg.audit, &cfg.brokers, &cfg.librdkafka)
            .map_err(|e| ServiceError::Runner(e.into()))?,
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
    .await
    .map_err(kafka_failed)?;
    Ok(run(runner_cfg, subscription, &outputs, destination, shutdown).await?)
}
