//! Compacted topics: creating one (`cleanup.policy=compact`, so the topic keeps the newest
//! record of each key) and reading one whole, from each partition's first retained record to
//! the end it had when the read began.
//!
//! Invariants: reading changes nothing (no consumer group, no commit: it assigns partitions
//! itself); a read is bounded by its timeout, and a read that could not reach the end is an
//! error, never a silently shorter answer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{KafkaFailure, client_config, create_topics};

/// Creates `topic` as a compacted topic when it does not exist (an existing topic is left as it
/// is). Compaction only cleans closed segments, so segments roll hourly and a tenth of
/// superseded records is enough to clean: the topic stays about one record per key, and a
/// read of it stays short.
pub(crate) async fn ensure_compacted_topic(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    replication_factor: i32,
) -> Result<(), KafkaFailure> {
    let new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    )
    .set("cleanup.policy", "compact")
    .set("segment.ms", "3600000")
    .set("min.cleanable.dirty.ratio", "0.1");
    create_topics(brokers, passthrough, &[new]).await
}

/// One record of a topic read whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Retained {
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None` for a tombstone).
    pub payload: Option<Vec<u8>>,
}

/// Every retained record of `topic`, in offset order per partition, up to the end each
/// partition had when the read began; `None` when the topic does not exist.
pub(crate) async fn read_whole(
    brokers: &str,
    passthrough: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<Retained>>, KafkaFailure> {
    let mut config = client_config(brokers, passthrough)?;
    // librdkafka assigns partitions only to a consumer with a group id; assigning (unlike
    // subscribing) never joins the group, and nothing is committed.
    config.set("group.id", "driftless-read-whole");
    config.set("enable.auto.commit", "false");
    config.set("enable.partition.eof", "true");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        use rdkafka::Message;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = config.create()?;
        let Some(marks) = super::watermarks(&consumer, &topic, timeout)? else {
            return Ok(None);
        };
        // Per partition with records: the end (high watermark) to read up to.
        let mut ends = BTreeMap::new();
        let mut assignment = rdkafka::TopicPartitionList::new();
        for (partition, low, high) in marks {
            if high > low {
                ends.insert(partition, high);
                assignment.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(low))?;
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return Ok(Some(out));
        }
        consumer.assign(&assignment)?;
        let mut open: BTreeSet<i32> = ends.keys().copied().collect();
        while !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaFailure::Client(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            match consumer.poll(left.min(Duration::from_millis(200))) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => {
                    // Records written after the read began are left out: the answer is the
                    // topic as it was then.
                    if ends
                        .get(&m.partition())
                        .is_some_and(|end| m.offset() < *end)
                    {
                        out.push(Retained {
                            key: m.key().map(<[u8]>::to_vec),
                            payload: m.payload().map(<[u8]>::to_vec),
                        });
                    }
                    if ends
                        .get(&m.partition())
                        .is_some_and(|end| m.offset() + 1 >= *end)
                    {
                        open.remove(&m.partition());
                    }
                }
            }
        }
        Ok(Some(out))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
