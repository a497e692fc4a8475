//! The only module that imports rdkafka: producer construction, topic creation, error classes.
//!
//! Invariants: every producer is idempotent with `acks=all` (set *after* the user's
//! passthrough options, so they cannot be turned off); keys are hashed with murmur2 like the
//! Java client, so other clients agree on partitions; delivery failures are reported to the
//! caller, which must not advance any source position past an undelivered event.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::error::{Classify, ErrorClass};

/// A Kafka failure, classified.
#[derive(Debug, thiserror::Error)]
pub enum KafkaFailure {
    /// Client or broker error.
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    /// An option's `_env` variable is missing.
    #[error("kafka option {option}: environment variable {var} is not set")]
    MissingEnv {
        /// Option key.
        option: String,
        /// Variable name.
        var: String,
    },
    /// A topic could not be created.
    #[error("kafka: cannot create topic {topic}: {code}")]
    CreateTopic {
        /// Topic.
        topic: String,
        /// Broker error code.
        code: RDKafkaErrorCode,
    },
    /// The delivery future was dropped by the client (producer shut down).
    #[error("kafka: delivery report lost (producer closed)")]
    DeliveryCanceled,
}

fn code_class(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        C::SaslAuthenticationFailed
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::InvalidConfig
        | C::UnsupportedSASLMechanism
        | C::MessageSizeTooLarge
        | C::InvalidReplicationFactor
        | C::PolicyViolation => ErrorClass::Fatal,
        _ => ErrorClass::Transient,
    }
}

impl Classify for KafkaFailure {
    fn class(&self) -> ErrorClass {
        match self {
            KafkaFailure::Client(e) => match e {
                KafkaError::ClientConfig(..) => ErrorClass::Fatal,
                e => e
                    .rdkafka_error_code()
                    .map(code_class)
                    .unwrap_or(ErrorClass::Transient),
            },
            KafkaFailure::MissingEnv { .. } => ErrorClass::Fatal,
            KafkaFailure::CreateTopic { code, .. } => code_class(*code),
            KafkaFailure::DeliveryCanceled => ErrorClass::Transient,
        }
    }

    fn hint(&self) -> Option<String> {
        match self.class() {
            ErrorClass::Fatal => Some(
                "check kafka.brokers, credentials and ACLs in kafka.librdkafka, and that the \
                 topics may be created (or pre-create them)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Base client config: brokers + the user's passthrough options (`*_env` resolved).
pub fn client_config(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
) -> Result<ClientConfig, KafkaFailure> {
    let mut cfg = ClientConfig::new();
    for (key, value) in passthrough {
        match key.strip_suffix("_env") {
            Some(option) => {
                let v = std::env::var(value).map_err(|_| KafkaFailure::MissingEnv {
                    option: option.to_string(),
                    var: value.clone(),
                })?;
                cfg.set(option, v);
            }
            None => {
                cfg.set(key, value);
            }
        }
    }
    cfg.set("bootstrap.servers", brokers);
    // librdkafka may resolve "localhost" to ::1 first; brokers here listen on IPv4.
    cfg.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    Ok(cfg)
}

/// An idempotent producer (`acks=all`, murmur2 partitioner, bounded local queue).
pub fn producer(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    max_in_flight_events: usize,
) -> Result<FutureProducer, KafkaFailure> {
    let mut cfg = client_config(brokers, passthrough)?;
    if !passthrough.contains_key("linger.ms") {
        cfg.set("linger.ms", "5");
    }
    if !passthrough.contains_key("compression.type") {
        cfg.set("compression.type", "lz4");
    }
    let queue = (max_in_flight_events.saturating_mul(2)).clamp(1000, 10_000_000);
    cfg.set("queue.buffering.max.messages", queue.to_string());
    cfg.set("partitioner", "murmur2_random");
    cfg.set("enable.idempotence", "true");
    cfg.set("acks", "all");
    Ok(cfg.create()?)
}

/// Creates missing topics (existing ones are left as they are).
pub async fn ensure_topics(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
) -> Result<(), KafkaFailure> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, passthrough)?.create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaFailure::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// One record to produce.
pub struct Outgoing<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key bytes (partitioning), if any.
    pub key: Option<&'a [u8]>,
    /// Value bytes; `None` produces a tombstone.
    pub payload: Option<&'a [u8]>,
    /// Record timestamp, ms since the Unix epoch (the commit time: deterministic on re-send).
    pub timestamp_ms: i64,
}

/// Result of trying to enqueue a record.
pub enum Enqueued {
    /// Accepted; resolves when the broker acknowledged (or failed) it.
    Ok(DeliveryFuture),
    /// librdkafka's local queue is full: wait for deliveries, then try again.
    QueueFull,
}

/// Enqueues a record without blocking.
pub fn enqueue(producer: &FutureProducer, out: &Outgoing<'_>) -> Result<Enqueued, KafkaFailure> {
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(out.topic).timestamp(out.timestamp_ms);
    if let Some(k) = out.key {
        record = record.key(k);
    }
    if let Some(p) = out.payload {
        record = record.payload(p);
    }
    match producer.send_result(record) {
        Ok(f) => Ok(Enqueued::Ok(f)),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
            Ok(Enqueued::QueueFull)
        }
        Err((e, _)) => Err(e.into()),
    }
}

/// Waits for a delivery report: `Ok(())` once the broker acknowledged the record.
pub async fn delivered(f: DeliveryFuture) -> Result<(), KafkaFailure> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(KafkaFailure::DeliveryCanceled),
    }
}
