//! The sink worker against the real broker (tansu): offsets, dead letters, retries. The
//! destination here is a recording `Sink` so the worker's own rules are what is tested; the
//! HubSpot destination has its own tests against the emulator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftless::config::schedule::Schedule;
use driftless::event::ChangeEvent;
use driftless::kafka::{AckedProducer, AckedPublisher, GroupConsumer};
use driftless::sink::audit::{AuditTrail, KeyHasher, RecordKey};
use driftless::sink::batch::Batch;
use driftless::sink::runner::{Outputs, RunnerConfig, Stats, run};
use driftless::sink::{Outcome, Rejected, Sink, SinkError};
use serde_json::{Value, json};

use crate::support::*;

/// Applied batches: per batch, (key, event) of every applied entry.
type Applied = Vec<Vec<(String, Value)>>;

/// Records every applied batch; rejects entries whose key is in `reject`; fails the first
/// `transient_failures` calls.
#[derive(Clone, Default)]
struct Recording {
    applied: Arc<Mutex<Applied>>,
    reject: Vec<String>,
    transient_failures: Arc<Mutex<u32>>,
}

impl Sink for Recording {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        {
            let mut left = self.transient_failures.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(SinkError::Transient {
                    message: "scripted".into(),
                    retry_after: Some(Duration::from_millis(50)),
                });
            }
        }
        let mut outcome = Outcome::default();
        let mut seen = Vec::new();
        for (index, e) in batch.entries.iter().enumerate() {
            let key = String::from_utf8(e.key.clone()).unwrap();
            if self.reject.contains(&key) {
                outcome.rejected.push(Rejected {
                    index,
                    category: "VALIDATION_ERROR".into(),
                    message: "scripted rejection".into(),
                });
            } else {
                seen.push((key, serde_json::to_value(&e.item).unwrap()));
            }
        }
        self.applied.lock().unwrap().push(seen);
        Ok(outcome)
    }
}

fn event(id: i64, v: i64, op: &str) -> Value {
    json!({
        "id": format!("0/{:X}:0", 16 + v), "op": op,
        "source": {"version": "driftless.change-event.v1", "db": "d", "schema": "public",
                   "table": "t", "lsn": "0/1", "commit_lsn": "0/1", "xid": 1,
                   "commit_ts": "2026-11-27T00:00:00.000000Z", "origin": null,
                   "snapshot": false, "schema_version": "0000000000000000"},
        "key": {"id": id}, "before": null,
        "after": if op == "d" { Value::Null } else { json!({"id": id, "v": v}) }
    })
}

struct Topic {
    name: String,
    dlq: String,
    producer: AckedProducer,
}

async fn topic() -> Topic {
    let name = unique("sinktest");
    let dlq = format!("{name}.dlq");
    driftless::kafka::ensure_topics(
        &brokers(),
        &BTreeMap::new(),
        &[name.clone(), dlq.clone()],
        2,
        1,
    )
    .await
    .unwrap();
    let producer = AckedProducer::new(&brokers(), &BTreeMap::new()).unwrap();
    Topic {
        name,
        dlq,
        producer,
    }
}

impl Topic {
    /// Sends `event(id, v, op)` keyed by `id`.
    async fn send_event(&self, id: i64, v: i64, op: &str) {
        self.send(id, &serde_json::to_vec(&event(id, v, op)).unwrap())
            .await;
    }

    /// Sends an update of each key `0..keys` at each version of `versions`, version by version.
    async fn send_updates(&self, keys: i64, versions: std::ops::Range<i64>) {
        for v in versions {
            for id in 0..keys {
                self.send_event(id, v, "u").await;
            }
        }
    }

    async fn send(&self, id: i64, payload: &[u8]) {
        let key = format!("{{\"id\":{id}}}");
        self.producer
            .send(&self.name, Some(key.as_bytes()), Some(payload), &[])
            .await
            .unwrap();
    }

    fn config(&self, group: &str) -> (RunnerConfig, GroupConsumer) {
        let cfg = RunnerConfig {
            name: group.into(),
            topic: self.name.clone(),
            dead_letter_topic: self.dlq.clone(),
            batch_max_events: 20,
            batch_max_wait: Duration::from_millis(100),
            stop_at: None,
            schedule: None,
            skip_origin: None,
        };
        let sub = GroupConsumer::new(&brokers(), &BTreeMap::new(), group, &self.name).unwrap();
        (cfg, sub)
    }
}

/// Runs a worker until `done(applied)` or the timeout, then stops it cleanly.
async fn run_until(
    t: &Topic,
    group: &str,
    sink: &mut Recording,
    timeout: Duration,
    done: impl Fn(&[Vec<(String, Value)>]) -> bool + Send + 'static,
) -> Stats {
    run_with(t, group, sink, timeout, done, |_| {}, AuditTrail::Off).await
}

/// [`run_until`] with the runner config adjusted and an audit trail.
async fn run_with(
    t: &Topic,
    group: &str,
    sink: &mut Recording,
    timeout: Duration,
    done: impl Fn(&[Vec<(String, Value)>]) -> bool + Send + 'static,
    adjust: impl FnOnce(&mut RunnerConfig),
    audit: AuditTrail,
) -> Stats {
    let (mut cfg, sub) = t.config(group);
    adjust(&mut cfg);
    let outputs = Outputs {
        dead_letters: AckedProducer::new(&brokers(), &BTreeMap::new()).unwrap(),
        audit,
        status: Default::default(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let applied = sink.applied.clone();
    let watcher = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&applied.lock().unwrap()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(true);
    });
    let stats = run(&cfg, &sub, &outputs, sink, stop_rx).await.unwrap();
    watcher.await.unwrap();
    stats
}

fn applied_keys(batches: &[Vec<(String, Value)>]) -> usize {
    batches.iter().map(Vec::len).sum()
}

/// Whether the last applied version of each of `keys` keys is `v`.
fn every_key_last_at(batches: &[Vec<(String, Value)>], keys: usize, v: i64) -> bool {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (k, e) in batches.iter().flatten() {
        last.insert(k, e["after"]["v"].as_i64().unwrap());
    }
    last.len() == keys && last.values().all(|&last| last == v)
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_worker_coalesces_per_key_and_resumes_after_committed_offsets() {
    let t = topic().await;
    t.send_updates(10, 0..5).await;
    let group = unique("g");
    let mut sink = Recording::default();
    let stats = run_until(&t, &group, &mut sink, Duration::from_secs(60), |b| {
        every_key_last_at(b, 10, 4)
    })
    .await;
    assert_eq!(stats.records, 50);
    for batch in sink.applied.lock().unwrap().iter() {
        let mut keys: Vec<&String> = batch.iter().map(|(k, _)| k).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "never two inputs for one key in a batch");
    }
    assert!(
        applied_keys(&sink.applied.lock().unwrap()) < 50,
        "coalesced"
    );
    // Same group again: everything was committed, nothing is re-applied. A new record on every
    // key (so on every partition, after the committed offsets) is picked up; once all of them
    // are applied, every partition was read past the old records.
    t.send_updates(10, 9..10).await;
    let mut again = Recording::default();
    let stats = run_until(&t, &group, &mut again, Duration::from_secs(30), |b| {
        applied_keys(b) == 10
    })
    .await;
    assert_eq!(
        stats.records, 10,
        "resumed after the committed offsets: only the new records"
    );
    assert!(
        again
            .applied
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .all(|(_, e)| e["after"]["v"] == 9)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_records_go_to_the_dead_letter_topic_and_others_continue() {
    let t = topic().await;
    t.send_event(1, 1, "c").await;
    t.send(2, b"{not an event").await;
    t.send_event(3, 1, "c").await;
    t.send_event(4, 1, "c").await;
    let mut sink = Recording {
        reject: vec!["{\"id\":3}".into()],
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let stats = run_with(
        &t,
        &unique("g"),
        &mut sink,
        Duration::from_secs(60),
        |b| applied_keys(b) == 2,
        |_| {},
        AuditTrail::File {
            path: audit_path.clone(),
            hasher: KeyHasher::new(b"sink-test-secret"),
        },
    )
    .await;
    assert_eq!(stats.dead_letters, 2);
    // The audit trail has every outcome, and no key or row value.
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let mut outcomes: Vec<(String, String)> = audit
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["outcome"].as_str().unwrap().to_string(),
                v["category"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("applied".to_string(), String::new()),
            ("applied".to_string(), String::new()),
            ("rejected".to_string(), "MALFORMED_EVENT".to_string()),
            ("rejected".to_string(), "VALIDATION_ERROR".to_string()),
        ]
    );
    assert!(!audit.contains("\"id\":"), "no keys or values: {audit}");
    // Key 3 is hashed in its canonical form (the text two-way sync names the row by).
    let key3 = KeyHasher::new(b"sink-test-secret").hash(RecordKey::Text("3"));
    assert!(
        audit
            .lines()
            .any(|l| l.contains(&key3) && l.contains("VALIDATION_ERROR")),
        "{audit}"
    );
    let dlq = read_n(&t.dlq, 2, Duration::from_secs(30));
    assert_eq!(dlq.len(), 2);
    let mut categories: Vec<&str> = dlq
        .iter()
        .map(|r| r.headers["driftless-error-category"].as_str())
        .collect();
    categories.sort();
    assert_eq!(categories, ["MALFORMED_EVENT", "VALIDATION_ERROR"]);
    for r in &dlq {
        assert_eq!(r.headers["driftless-source-topic"], t.name);
        assert!(r.headers.contains_key("driftless-source-offset"));
        assert!(r.headers.contains_key("driftless-correlation-id"));
        assert!(!r.headers["driftless-error-message"].is_empty());
    }
    let malformed = dlq
        .iter()
        .find(|r| r.headers["driftless-error-category"] == "MALFORMED_EVENT");
    assert_eq!(
        malformed.unwrap().payload.as_deref(),
        Some(&b"{not an event"[..]),
        "kept as is"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_retry_the_same_batch_without_losing_order() {
    let t = topic().await;
    for v in 0..3 {
        t.send_event(7, v, "u").await;
    }
    let mut sink = Recording {
        transient_failures: Arc::new(Mutex::new(3)),
        ..Default::default()
    };
    let stats = run_until(&t, &unique("g"), &mut sink, Duration::from_secs(60), |b| {
        b.iter().flatten().any(|(_, e)| e["after"]["v"] == 2)
    })
    .await;
    assert!(stats.retries >= 3, "{stats:?}");
    let applied = sink.applied.lock().unwrap();
    let versions: Vec<i64> = applied
        .iter()
        .flatten()
        .map(|(_, e)| e["after"]["v"].as_i64().unwrap())
        .collect();
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(versions, sorted, "never an older version after a newer one");
    assert_eq!(versions.last(), Some(&2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_sink_applies_coalesced_windows_in_requests_of_batch_size() {
    let t = topic().await;
    t.send_updates(10, 0..5).await;
    let mut sink = Recording::default();
    let stats = run_with(
        &t,
        &unique("g"),
        &mut sink,
        Duration::from_secs(60),
        |b| every_key_last_at(b, 10, 4),
        |cfg| {
            cfg.batch_max_events = 4;
            cfg.schedule = Some(Schedule::parse("every 10s").unwrap());
        },
        AuditTrail::Off,
    )
    .await;
    assert_eq!(stats.records, 50);
    let applied = sink.applied.lock().unwrap();
    assert!(
        applied.iter().all(|b| b.len() <= 4),
        "requests hold at most batch_max_events entries"
    );
    // 50 records of 10 keys: one window (two if the records straddled a tick) of one change
    // per key, where real time with 4-record batches would send one change per record.
    let changes = applied_keys(&applied);
    assert!((10..=20).contains(&changes), "{changes} changes applied");
}
