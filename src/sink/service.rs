//! `driftless sink --name N`: builds one configured sink worker and runs it.
//!
//! Owns start-up of a worker: pick the sink from the config, read its secret, fetch the
//! destination schema and refuse (listing every problem) when the mapping does not fit it, make
//! sure the dead-letter topic exists, join the consumer group `driftless-sink-{name}`.

use tokio::sync::watch;

use super::hubspot::HubspotSink;
use super::mapping::check_schema;
use super::runner::{RunnerConfig, RunnerError, Stats, run};
use crate::config::ValidConfig;
use crate::config::sinks::SinkKind;
use crate::error::{Classify, ErrorClass};
use crate::kafka::{self, AckedProducer, Subscription};

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

/// Runs the sink named `name` until `shutdown` or a fatal error.
pub async fn run_named(
    cfg: &ValidConfig,
    name: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, ServiceError> {
    let Some(sink) = cfg.sinks.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = cfg.sinks.iter().map(|s| s.name.as_str()).collect();
        return Err(ServiceError::Refused(format!(
            "no sink named {name:?} in the config (sinks: {})",
            names.join(", ")
        )));
    };
    let index = cfg
        .sinks
        .iter()
        .position(|s| s.name == name)
        .unwrap_or_default();
    let runner_cfg = RunnerConfig {
        name: sink.name.clone(),
        topic: cfg.topic_for(&sink.table.schema, &sink.table.name),
        dead_letter_topic: dead_letter_topic(cfg, name),
        batch_max_events: sink.batch_max_events,
        batch_max_wait: std::time::Duration::from_millis(sink.batch_max_wait_ms),
    };
    let refused = |e: &dyn std::fmt::Display| ServiceError::Refused(e.to_string());
    match &sink.kind {
        SinkKind::Hubspot { .. } => {
            let token = sink
                .token
                .as_ref()
                .ok_or_else(|| refused(&"token_env is required"))?
                .read()
                .map_err(|e| refused(&format!("sinks[{index}].token_env: {e}")))?;
            let mut destination =
                HubspotSink::new(sink, token).map_err(|e| ServiceError::Runner(e.into()))?;
            let schema = destination
                .fetch_schema()
                .await
                .map_err(|e| ServiceError::Runner(e.into()))?;
            tracing::info!(
                sink = name,
                properties = schema.len(),
                "destination schema fetched"
            );
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
            ensure_dead_letter_topic(cfg, name).await?;
            let (subscription, dead_letters) = connect(cfg, &runner_cfg)?;
            tracing::info!(sink = name, topic = %runner_cfg.topic, group = %group_id(name),
                "sink worker started");
            Ok(run(
                &runner_cfg,
                &subscription,
                &dead_letters,
                &mut destination,
                shutdown,
            )
            .await?)
        }
        SinkKind::Zoho { .. } | SinkKind::Webhook { .. } => Err(ServiceError::Refused(format!(
            "sinks[{index}]: this sink kind is not available yet (HubSpot is)"
        ))),
    }
}

fn connect(
    cfg: &ValidConfig,
    runner: &RunnerConfig,
) -> Result<(Subscription, AckedProducer), ServiceError> {
    let subscription = Subscription::new(
        &cfg.brokers,
        &cfg.librdkafka,
        &group_id(&runner.name),
        &runner.topic,
    )
    .map_err(|e| ServiceError::Runner(e.into()))?;
    let dead_letters = AckedProducer::new(&cfg.brokers, &cfg.librdkafka)
        .map_err(|e| ServiceError::Runner(e.into()))?;
    Ok((subscription, dead_letters))
}

/// Creates the dead-letter topic if missing.
async fn ensure_dead_letter_topic(cfg: &ValidConfig, name: &str) -> Result<(), ServiceError> {
    kafka::ensure_topics(
        &cfg.brokers,
        &cfg.librdkafka,
        &[dead_letter_topic(cfg, name)],
        cfg.partitions,
        cfg.replication_factor,
    )
    .await
    .map_err(|e| ServiceError::Runner(e.into()))
}
