//! The sink workers' states on the status topic `{topic_prefix}.status`: started for a worker
//! (its id, its producer, the compacted topic) and read back by `driftless status`.
//!
//! Owns the worker id (`DRIFTLESS_WORKER_ID`, else `{hostname}-{pid}`: no secrets) and the
//! status topic's name. The record format and the publishing rules are
//! [`crate::sink::status_report`]'s. Invariants: nothing here can stop a worker (a producer
//! that cannot be made, or a topic that cannot be created, is logged and the worker runs on);
//! reading the topic joins no consumer group, and the newest record of a key wins.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::ValidConfig;
use crate::kafka::{self, AckedProducer};
use crate::sink::status_report::{self, Publishing, WorkerStatus};

/// Partitions of the status topic (a handful of small records per worker).
const PARTITIONS: i32 = 1;

/// The status topic.
pub(crate) fn topic(cfg: &ValidConfig) -> String {
    format!("{}.status", cfg.topic_prefix)
}

/// This worker's id: `DRIFTLESS_WORKER_ID` if set, else `{hostname}-{pid}`.
pub(crate) fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok());
    id_from(
        std::env::var("DRIFTLESS_WORKER_ID").ok(),
        host,
        std::process::id(),
    )
}

fn id_from(configured: Option<String>, host: Option<String>, pid: u32) -> String {
    let given = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    given(configured).unwrap_or_else(|| {
        let host = given(host).unwrap_or_else(|| "unknown-host".to_string());
        format!("{host}-{pid}")
    })
}

/// Starts publishing the state of this process's worker of sink `name` (best effort).
pub(crate) fn start(cfg: &ValidConfig, name: &str) -> Publishing {
    let producer = match AckedProducer::new(&cfg.brokers, &cfg.librdkafka) {
        Ok(p) => p,
        Err(error) => {
            tracing::warn!(sink = name, %error, "cannot publish the worker's state; running without");
            return Publishing::detached();
        }
    };
    let topic = topic(cfg);
    let (brokers, options) = (cfg.brokers.clone(), cfg.librdkafka.clone());
    let (replication, created) = (cfg.replication_factor, topic.clone());
    let prepare = async move {
        let made =
            kafka::ensure_compacted_topic(&brokers, &options, &created, PARTITIONS, replication);
        if let Err(error) = made.await {
            tracing::warn!(topic = %created, %error, "cannot create the status topic");
        }
    };
    status_report::start(producer, topic, name, &worker_id(), prepare)
}

/// Every worker's newest state on the status topic, by sink name (workers in id order).
pub(crate) async fn read(
    cfg: &ValidConfig,
    timeout: Duration,
) -> Result<BTreeMap<String, Vec<WorkerStatus>>, String> {
    let topic = topic(cfg);
    let records = kafka::read_whole(&cfg.brokers, &cfg.librdkafka, &topic, timeout)
        .await
        .map_err(|e| format!("{topic}: {e}"))?
        .unwrap_or_default();
    Ok(newest(records.into_iter().map(|r| (r.key, r.payload))))
}

/// The newest state per key (records in offset order per key); tombstones remove a key,
/// records that are not a state are skipped.
fn newest(
    records: impl Iterator<Item = (Option<Vec<u8>>, Option<Vec<u8>>)>,
) -> BTreeMap<String, Vec<WorkerStatus>> {
    let mut by_key: BTreeMap<Vec<u8>, WorkerStatus> = BTreeMap::new();
    for (key, payload) in records {
        let Some(key) = key else { continue };
        match payload.map(|p| serde_json::from_slice::<WorkerStatus>(&p)) {
            None => {
                by_key.remove(&key);
            }
            Some(Ok(status)) => {
                by_key.insert(key, status);
            }
            Some(Err(error)) => tracing::debug!(%error, "not a worker state; skipped"),
        }
    }
    let mut by_sink: BTreeMap<String, Vec<WorkerStatus>> = BTreeMap::new();
    for status in by_key.into_values() {
        by_sink.entry(status.sink.clone()).or_default().push(status);
    }
    by_sink
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::status_report::{WorkerState, key};

    fn state(sink: &str, worker: &str, state: WorkerState) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let s = WorkerStatus {
            sink: sink.into(),
            worker: worker.into(),
            state,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            at: "2026-01-01T00:00:01.000Z".into(),
            errors: 0,
            last_error: None,
        };
        (
            Some(key(sink, worker).into_bytes()),
            Some(serde_json::to_vec(&s).unwrap()),
        )
    }

    #[test]
    fn the_newest_record_of_a_worker_wins_and_a_tombstone_removes_it() {
        let records = vec![
            state("a", "w1", WorkerState::Running),
            state("b", "w1", WorkerState::Running),
            state("a", "w2", WorkerState::Running),
            state("a", "w1", WorkerState::Failed),
            (Some(key("b", "w1").into_bytes()), None),
            (Some(b"x".to_vec()), Some(b"not json".to_vec())),
        ];
        let by_sink = newest(records.into_iter());
        let states: Vec<(&str, WorkerState)> = by_sink["a"]
            .iter()
            .map(|s| (s.worker.as_str(), s.state))
            .collect();
        assert_eq!(
            states,
            [("w1", WorkerState::Failed), ("w2", WorkerState::Running)]
        );
        assert!(!by_sink.contains_key("b"), "{by_sink:?}");
    }

    #[test]
    fn the_worker_id_is_the_configured_one_or_host_and_pid() {
        let id =
            |c: Option<&str>, h: Option<&str>| id_from(c.map(Into::into), h.map(Into::into), 42);
        assert_eq!(id(Some(" eu-1 "), Some("box")), "eu-1");
        assert_eq!(id(Some(""), Some("box\n")), "box-42");
        assert_eq!(id(None, None), "unknown-host-42");
    }
}
