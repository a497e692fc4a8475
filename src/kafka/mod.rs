//! The only module that imports rdkafka: producer construction, topic creation, error classes;
//! compacted topics (created, and read whole without a group) in `compacted`.
//!
//! Invariants: every producer is idempotent with `acks=all` (set *after* the user's
//! passthrough options, so they cannot be turned off); keys are hashed with murmur2 like the
//! Java client, so other clients agree on partitions; delivery failures are reported to the
//! caller, which must not advance any source position past an undelivered event.
//!
//! Delivery reports come back through one channel per producer (`Publisher::next_ack`), each
//! carrying the tag given at `Publisher::enqueue`: no future or oneshot per record, and the
//! caller can drain a burst of reports in one wake-up. Exactly one report arrives per accepted
//! record, so the channel never holds more than the caller's in-flight records.
//!
//! The rest of the crate sees Kafka through three seams, so its invariants can be tested
//! without a broker: `Publisher` (capture's tagged, non-blocking producer), [`Subscription`]
//! (a sink worker's consumer with caller-stored offsets) and [`AckedPublisher`] (one record at
//! a time, acknowledged: dead letters). `Producer`, [`GroupConsumer`] and [`AckedProducer`]
//! are the rdkafka implementations.

// This module is the Kafka layer: the one place allowed to name rdkafka's clients.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use tokio::sync::mpsc;

use crate::error::{Classify, ErrorClass};

mod compacted;
pub(crate) use compacted::{ensure_compacted_topic, read_whole};

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
    /// The delivery report channel closed (producer shut down).
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

/// What capture needs from a producer: hand over a record without blocking, and learn of its
/// delivery later through a report carrying the record's tag.
pub(crate) trait Publisher<T>: Send {
    /// Enqueues a record; its delivery report will carry `tag`. `QueueFull` asks the caller to
    /// wait for reports and try again.
    fn enqueue(&self, out: &Outgoing<'_>, tag: T) -> Result<Enqueued, KafkaFailure>;

    /// Waits for the next delivery report; `Ok(tag)` once the broker acknowledged that record.
    /// Cancel-safe (usable in `select!`).
    fn next_ack(&mut self) -> impl Future<Output = Result<T, KafkaFailure>> + Send;

    /// The next delivery report if one is ready.
    fn try_ack(&mut self) -> Option<Result<T, KafkaFailure>>;
}

/// What a sink worker needs from its consumer: records in offset order per partition, and
/// offsets that count as consumed only once the caller stores them.
pub trait Subscription: Send + Sync {
    /// The next record. Cancel-safe (usable in `select!`).
    fn recv(&self) -> impl Future<Output = Result<Incoming, KafkaFailure>> + Send;

    /// Stores "next offset to read" per partition of `topic`; stored offsets are committed in
    /// the background and by [`Subscription::commit`].
    fn store(&self, topic: &str, next: &BTreeMap<i32, i64>) -> Result<(), KafkaFailure>;

    /// Commits the stored offsets now (graceful shutdown).
    fn commit(&self) -> Result<(), KafkaFailure>;

    /// Stops fetching from every partition assigned now ([`Subscription::recv`] still serves
    /// the group: rebalances, and the poll that keeps the membership).
    fn pause(&self) -> Result<(), KafkaFailure>;

    /// Fetches again from every partition assigned now.
    fn resume(&self) -> Result<(), KafkaFailure>;
}

/// Sends one record at a time and returns once the broker acknowledged it (dead letters).
pub trait AckedPublisher: Send + Sync {
    /// Sends one record with string headers; resolves once it is durable.
    fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> impl Future<Output = Result<(), KafkaFailure>> + Send;
}

/// Base client config: brokers + the user's passthrough options (`*_env` resolved).
pub(crate) fn client_config(
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
    cfg.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    Ok(cfg)
}

/// A delivery report: the record's tag and whether the broker acknowledged it.
type Ack<T> = (T, Result<(), KafkaFailure>);

/// Client context forwarding every delivery report (with its record's tag) to the channel.
struct AckContext<T> {
    tx: mpsc::UnboundedSender<Ack<T>>,
}

impl<T: Send + Sync + 'static> ClientContext for AckContext<T> {}

impl<T: Send + Sync + 'static> ProducerContext for AckContext<T> {
    type DeliveryOpaque = Box<T>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Box<T>) {
        let r = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(KafkaFailure::Client(e.clone())),
        };
        // The receiver is gone only once the Producer is dropped: nobody waits any more.
        let _ = self.tx.send((*tag, r));
    }
}

/// A producer whose delivery reports carry a caller tag `T` (e.g. the transaction a record
/// belongs to) and are read with [`Publisher::next_ack`] / [`Publisher::try_ack`].
pub(crate) struct Producer<T: Send + Sync + 'static> {
    inner: ThreadedProducer<AckContext<T>>,
    acks: mpsc::UnboundedReceiver<Ack<T>>,
}

impl<T: Send + Sync + 'static> Publisher<T> for Producer<T> {
    fn enqueue(&self, out: &Outgoing<'_>, tag: T) -> Result<Enqueued, KafkaFailure> {
        let mut record: BaseRecord<'_, [u8], [u8], Box<T>> =
            BaseRecord::with_opaque_to(out.topic, Box::new(tag)).timestamp(out.timestamp_ms);
        if let Some(k) = out.key {
            record = record.key(k);
        }
        if let Some(p) = out.payload {
            record = record.payload(p);
        }
        if !out.headers.is_empty() {
            use rdkafka::message::{Header, OwnedHeaders};
            let mut hs = OwnedHeaders::new_with_capacity(out.headers.len());
            for (key, value) in out.headers {
                hs = hs.insert(Header {
                    key,
                    value: Some(*value),
                });
            }
            record = record.headers(hs);
        }
        match self.inner.send(record) {
            Ok(()) => Ok(Enqueued::Ok),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Ok(Enqueued::QueueFull)
            }
            Err((e, _)) => Err(e.into()),
        }
    }

    async fn next_ack(&mut self) -> Result<T, KafkaFailure> {
        match self.acks.recv().await {
            Some((tag, r)) => r.map(|()| tag),
            None => Err(KafkaFailure::DeliveryCanceled),
        }
    }

    fn try_ack(&mut self) -> Option<Result<T, KafkaFailure>> {
        match self.acks.try_recv() {
            Ok((tag, r)) => Some(r.map(|()| tag)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                Some(Err(KafkaFailure::DeliveryCanceled))
            }
        }
    }
}

/// Produce requests per broker connection awaiting their response, unless the user sets it.
///
/// librdkafka's idempotent producer (2.12) sends one request per partition at a time, and while
/// one is outstanding and more records wait it polls its socket with a zero timeout: against
/// a broker that answers more slowly than capture produces, that busy wait was ~80% of
/// capture's CPU. With at most two requests per connection the next one waits in the
/// connection's queue instead, where the broker thread sleeps until a response arrives.
/// `scripts/bench-capture --mock-rtt-ms` measures both (README, Benchmark).
const DEFAULT_MAX_IN_FLIGHT_REQUESTS: u32 = 2;

/// An idempotent producer (`acks=all`, murmur2 partitioner, bounded local queue, at most
/// [`DEFAULT_MAX_IN_FLIGHT_REQUESTS`] requests per connection unless the user sets it).
pub(crate) fn producer<T: Send + Sync + 'static>(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    max_in_flight_events: usize,
) -> Result<Producer<T>, KafkaFailure> {
    let (tx, acks) = mpsc::unbounded_channel();
    let inner = producer_config(brokers, passthrough, max_in_flight_events)?
        .create_with_context(AckContext { tx })?;
    Ok(Producer { inner, acks })
}

/// The producer's options: the user's, then driftless's defaults where the user set none, then
/// what driftless enforces.
fn producer_config(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    max_in_flight_events: usize,
) -> Result<ClientConfig, KafkaFailure> {
    let mut cfg = client_config(brokers, passthrough)?;
    let in_flight = DEFAULT_MAX_IN_FLIGHT_REQUESTS.to_string();
    for (key, aliases, value) in [
        ("linger.ms", &["queue.buffering.max.ms"][..], "5"),
        ("compression.type", &["compression.codec"][..], "lz4"),
        (
            "max.in.flight.requests.per.connection",
            &["max.in.flight"][..],
            in_flight.as_str(),
        ),
    ] {
        if !passthrough.contains_key(key) && !aliases.iter().any(|a| passthrough.contains_key(*a)) {
            cfg.set(key, value);
        }
    }
    let queue = (max_in_flight_events.saturating_mul(2)).clamp(1000, 10_000_000);
    cfg.set("queue.buffering.max.messages", queue.to_string());
    cfg.set("partitioner", "murmur2_random");
    cfg.set("enable.idempotence", "true");
    cfg.set("acks", "all");
    Ok(cfg)
}

/// Time allowed for an admin request (topic creation) before it counts as a transient failure.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates missing topics (existing ones are left as they are).
pub async fn ensure_topics(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
) -> Result<(), KafkaFailure> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor)))
        .collect();
    create_topics(brokers, passthrough, &new).await
}

/// Creates the topics of `new` that do not exist yet.
async fn create_topics(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    new: &[NewTopic<'_>],
) -> Result<(), KafkaFailure> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, passthrough)?.create()?;
    // Bounded, so an unreachable cluster surfaces as a (transient, logged) error quickly.
    let opts = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaFailure::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Reads the cluster's metadata once (bounded by `timeout`): the reachability probe of
/// `driftless check`. Errors are rdkafka's text (no secrets: the config is not echoed).
pub(crate) async fn probe(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<(), String> {
    let config = client_config(brokers, passthrough).map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
        consumer
            .fetch_metadata(None, timeout)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// One partition of a topic as `driftless status` shows it: its retained range and, for a
/// consumer group, the group's committed offset.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PartitionOffsets {
    /// Partition.
    pub partition: i32,
    /// Low watermark (first retained offset).
    pub low: i64,
    /// High watermark (next offset to be written).
    pub high: i64,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Records retained in the partition.
    pub(crate) fn retained(&self) -> u64 {
        (self.high - self.low).max(0) as u64
    }

    /// Records the group has still to consume (from its committed offset, or from the low
    /// watermark when it committed none: a new group starts at the earliest offset).
    pub(crate) fn lag(&self) -> u64 {
        (self.high - self.committed.unwrap_or(self.low).max(self.low)).max(0) as u64
    }
}

/// A partition and its low and high watermark.
type Watermarks = (i32, i64, i64);

/// Each partition of `topic` with its low and high watermark, per the cluster's metadata;
/// `None` when the topic does not exist (blocking: call from `spawn_blocking`).
fn watermarks(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<Watermarks>>, KafkaError> {
    use rdkafka::consumer::Consumer;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        return Ok(None);
    };
    t.partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            Ok((p.id(), low, high))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// The partitions of `topic` with their watermarks and, when `group` is given, that group's
/// committed offsets (read without joining the group). `None` when the topic does not exist.
pub(crate) async fn topic_offsets(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    topic: &str,
    group: Option<&str>,
    timeout: Duration,
) -> Result<Option<Vec<PartitionOffsets>>, KafkaFailure> {
    let mut config = client_config(brokers, passthrough)?;
    if let Some(group) = group {
        config.set("group.id", group);
    }
    let (topic, with_group) = (topic.to_string(), group.is_some());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = config.create()?;
        let Some(marks) = watermarks(&consumer, &topic, timeout)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        let mut list = rdkafka::TopicPartitionList::new();
        for (partition, low, high) in marks {
            out.push(PartitionOffsets {
                partition,
                low,
                high,
                committed: None,
            });
            list.add_partition(&topic, partition);
        }
        if with_group {
            for e in consumer.committed_offsets(list, timeout)?.elements() {
                if let (rdkafka::Offset::Offset(o), Some(p)) = (
                    e.offset(),
                    out.iter_mut().find(|p| p.partition == e.partition()),
                ) {
                    p.committed = Some(o);
                }
            }
        }
        out.sort_by_key(|p| p.partition);
        Ok(Some(out))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// One record to produce.
pub(crate) struct Outgoing<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Key bytes (partitioning), if any.
    pub key: Option<&'a [u8]>,
    /// Value bytes; `None` produces a tombstone.
    pub payload: Option<&'a [u8]>,
    /// Record timestamp, ms since the Unix epoch (the commit time: deterministic on re-send).
    pub timestamp_ms: i64,
    /// Record headers (name, value), usually none.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Result of trying to enqueue a record.
pub(crate) enum Enqueued {
    /// Accepted; its delivery report will come through [`Publisher::next_ack`].
    Ok,
    /// librdkafka's local queue is full: wait for deliveries, then try again.
    QueueFull,
}

/// A record read by a sink worker.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None` for tombstones).
    pub payload: Option<Vec<u8>>,
}

/// Where a replay starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Every retained record.
    Earliest,
    /// The first record at or after this time (ms since the Unix epoch; record timestamps are
    /// commit times).
    Timestamp(i64),
    /// Explicit `(partition, offset)` starts; unlisted partitions are not replayed.
    Offsets(Vec<(i32, i64)>),
}

impl std::str::FromStr for ReplayFrom {
    type Err = String;

    /// `earliest`, an RFC 3339 time, or `0:1200,1:980`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "earliest" {
            return Ok(ReplayFrom::Earliest);
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(ReplayFrom::Timestamp(t.timestamp_millis()));
        }
        let offsets: Option<Vec<(i32, i64)>> = s
            .split(',')
            .map(|po| {
                let (p, o) = po.split_once(':')?;
                Some((p.trim().parse().ok()?, o.trim().parse().ok()?))
            })
            .collect();
        offsets
            .filter(|o| !o.is_empty())
            .map(ReplayFrom::Offsets)
            .ok_or_else(|| {
                format!("{s:?} is not `earliest`, an RFC 3339 time or `partition:offset,...`")
            })
    }
}

/// A consumer-group member whose offsets are stored only when the caller says so
/// (`enable.auto.offset.store=false`): a record counts as consumed once it was applied or
/// dead-lettered, never when it was merely read.
pub struct GroupConsumer {
    consumer: rdkafka::consumer::StreamConsumer,
}

impl GroupConsumer {
    /// Joins `group_id` and subscribes to `topic`; a new group starts at the earliest offset.
    pub fn new(
        brokers: &str,
        passthrough: &BTreeMap<String, String>,
        group_id: &str,
        topic: &str,
    ) -> Result<Self, KafkaFailure> {
        use rdkafka::consumer::Consumer;
        let mut cfg = client_config(brokers, passthrough)?;
        if !passthrough.contains_key("auto.offset.reset") {
            cfg.set("auto.offset.reset", "earliest");
        }
        cfg.set("group.id", group_id);
        cfg.set("enable.auto.commit", "true");
        cfg.set("enable.auto.offset.store", "false");
        let consumer: rdkafka::consumer::StreamConsumer = cfg.create()?;
        consumer.subscribe(&[topic])?;
        Ok(GroupConsumer { consumer })
    }

    /// A member of `group_id` assigned (not subscribed) to every partition of `topic`, starting
    /// at `from`; returns it with the high watermarks at start (where a replay ends).
    pub(crate) fn replay(
        brokers: &str,
        passthrough: &BTreeMap<String, String>,
        group_id: &str,
        topic: &str,
        from: &ReplayFrom,
    ) -> Result<(Self, BTreeMap<i32, i64>), KafkaFailure> {
        use rdkafka::consumer::Consumer;
        let mut cfg = client_config(brokers, passthrough)?;
        cfg.set("group.id", group_id);
        cfg.set("enable.auto.commit", "true");
        cfg.set("enable.auto.offset.store", "false");
        let consumer: rdkafka::consumer::StreamConsumer = cfg.create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut starts = BTreeMap::new();
        let mut highs = BTreeMap::new();
        for &p in &partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
            highs.insert(p, high);
            let start = match from {
                ReplayFrom::Earliest | ReplayFrom::Timestamp(_) => low,
                ReplayFrom::Offsets(list) => list
                    .iter()
                    .find(|(q, _)| *q == p)
                    .map(|(_, o)| *o)
                    .unwrap_or(high),
            };
            starts.insert(p, start.max(low));
        }
        if let ReplayFrom::Timestamp(ms) = from {
            let mut query = rdkafka::TopicPartitionList::new();
            for &p in &partitions {
                query.add_partition_offset(topic, p, rdkafka::Offset::Offset(*ms))?;
            }
            for e in consumer.offsets_for_times(query, timeout)?.elements() {
                // No record at or after the time: nothing to replay in that partition.
                let at = match e.offset() {
                    rdkafka::Offset::Offset(o) => o,
                    _ => highs[&e.partition()],
                };
                starts.insert(e.partition(), at);
            }
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for (&p, &start) in &starts {
            if start < highs[&p] {
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(start))?;
                ends.insert(p, highs[&p]);
            }
        }
        consumer.assign(&tpl)?;
        Ok((GroupConsumer { consumer }, ends))
    }
}

impl Subscription for GroupConsumer {
    async fn recv(&self) -> Result<Incoming, KafkaFailure> {
        use rdkafka::Message;
        let m = self.consumer.recv().await?;
        Ok(Incoming {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        })
    }

    /// Stores "next offset to read" per partition of `topic` (committed by the background
    /// auto-commit). Partitions no longer assigned (after a rebalance) are skipped: their new
    /// owner re-reads from the last committed offset, and applying is idempotent.
    fn store(&self, topic: &str, next: &BTreeMap<i32, i64>) -> Result<(), KafkaFailure> {
        use rdkafka::consumer::Consumer;
        let assigned = self.consumer.assignment()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (&partition, &offset) in next {
            if assigned.find_partition(topic, partition).is_some() {
                tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))?;
            }
        }
        if tpl.count() > 0 {
            self.consumer.store_offsets(&tpl)?;
        }
        Ok(())
    }

    /// Commits the stored offsets now (graceful shutdown).
    fn commit(&self) -> Result<(), KafkaFailure> {
        use rdkafka::consumer::{CommitMode, Consumer};
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            other => Ok(other?),
        }
    }

    fn pause(&self) -> Result<(), KafkaFailure> {
        use rdkafka::consumer::Consumer;
        Ok(self.consumer.pause(&self.consumer.assignment()?)?)
    }

    fn resume(&self) -> Result<(), KafkaFailure> {
        use rdkafka::consumer::Consumer;
        Ok(self.consumer.resume(&self.consumer.assignment()?)?)
    }
}

/// Produces dead letters (and other low-volume records) and waits for each acknowledgement.
pub struct AckedProducer {
    producer: rdkafka::producer::FutureProducer,
}

impl AckedProducer {
    /// An idempotent producer (`acks=all`).
    pub fn new(
        brokers: &str,
        passthrough: &BTreeMap<String, String>,
    ) -> Result<Self, KafkaFailure> {
        let mut cfg = client_config(brokers, passthrough)?;
        cfg.set("enable.idempotence", "true");
        cfg.set("acks", "all");
        Ok(AckedProducer {
            producer: cfg.create()?,
        })
    }
}

impl AckedPublisher for AckedProducer {
    async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<(), KafkaFailure> {
        use rdkafka::message::{Header, OwnedHeaders};
        let mut hs = OwnedHeaders::new();
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: rdkafka::producer::FutureRecord<'_, [u8], [u8]> =
            rdkafka::producer::FutureRecord::to(topic).headers(hs);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        self.producer
            .send(record, rdkafka::util::Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_defaults_yield_to_the_users_options_but_idempotence_does_not() {
        let opts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let get = |cfg: &ClientConfig, key: &str| cfg.get(key).map(str::to_string);
        let defaults = producer_config("b:9092", &opts(&[]), 50_000).unwrap();
        assert_eq!(
            get(&defaults, "max.in.flight.requests.per.connection").as_deref(),
            Some("2")
        );
        assert_eq!(get(&defaults, "linger.ms").as_deref(), Some("5"));
        assert_eq!(get(&defaults, "compression.type").as_deref(), Some("lz4"));
        assert_eq!(
            get(&defaults, "enable.idempotence").as_deref(),
            Some("true")
        );
        assert_eq!(
            get(&defaults, "queue.buffering.max.messages").as_deref(),
            Some("100000")
        );

        let user = producer_config(
            "b:9092",
            &opts(&[
                ("max.in.flight", "5"),
                ("queue.buffering.max.ms", "20"),
                ("compression.type", "zstd"),
                ("enable.idempotence", "false"),
            ]),
            50_000,
        )
        .unwrap();
        assert_eq!(get(&user, "max.in.flight").as_deref(), Some("5"));
        assert_eq!(get(&user, "max.in.flight.requests.per.connection"), None);
        assert_eq!(get(&user, "linger.ms"), None);
        assert_eq!(get(&user, "compression.type").as_deref(), Some("zstd"));
        assert_eq!(get(&user, "enable.idempotence").as_deref(), Some("true"));
    }

    #[test]
    fn env_options_are_read_from_the_environment_and_a_missing_one_names_only_the_variable() {
        let path = std::env::var("PATH").expect("PATH is set in tests");
        let options = BTreeMap::from([("sasl.username_env".to_string(), "PATH".to_string())]);
        let cfg = client_config("127.0.0.1:9092", &options).unwrap();
        assert_eq!(cfg.get("sasl.username"), Some(path.as_str()));
        assert_eq!(cfg.get("sasl.username_env"), None);

        let options = BTreeMap::from([(
            "sasl.password_env".to_string(),
            "DRIFTLESS_TEST_UNSET_VARIABLE".to_string(),
        )]);
        let err = client_config("127.0.0.1:9092", &options).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kafka option sasl.password: environment variable DRIFTLESS_TEST_UNSET_VARIABLE \
             is not set"
        );
    }
}
