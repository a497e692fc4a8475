//! The worker against an in-memory subscription, a scripted destination and a dead-letter
//! publisher that log what they saw, in one shared order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::*;
use crate::event::Op;
use crate::sink::test_support::event;

type Log = Arc<Mutex<Vec<String>>>;

fn log(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

/// Partition 0 of `topic`, read from memory; reads nothing more once empty.
struct MemSubscription {
    records: Mutex<VecDeque<Incoming>>,
    log: Log,
}

impl Subscription for MemSubscription {
    async fn recv(&self) -> Result<Incoming, KafkaFailure> {
        let next = self.records.lock().unwrap().pop_front();
        match next {
            Some(r) => Ok(r),
            None => std::future::pending().await,
        }
    }

    fn store(&self, _topic: &str, next: &BTreeMap<i32, i64>) -> Result<(), KafkaFailure> {
        let s: Vec<String> = next.iter().map(|(p, o)| format!("{p}:{o}")).collect();
        log(&self.log, format!("store {}", s.join(",")));
        Ok(())
    }

    fn commit(&self) -> Result<(), KafkaFailure> {
        log(&self.log, "commit".into());
        Ok(())
    }

    fn pause(&self) -> Result<(), KafkaFailure> {
        log(&self.log, "pause".into());
        Ok(())
    }

    fn resume(&self) -> Result<(), KafkaFailure> {
        log(&self.log, "resume".into());
        Ok(())
    }
}

/// Logs `dlq {offset}` once the dead letter is "acknowledged"; fails when told to.
struct MemDeadLetters {
    log: Log,
    fail: bool,
}

impl AckedPublisher for MemDeadLetters {
    async fn send(
        &self,
        _topic: &str,
        _key: Option<&[u8]>,
        _payload: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<(), KafkaFailure> {
        tokio::task::yield_now().await;
        if self.fail {
            return Err(KafkaFailure::DeliveryCanceled);
        }
        let offset = headers
            .iter()
            .find(|(k, _)| *k == "driftless-source-offset")
            .map(|(_, v)| v.to_string())
            .unwrap();
        log(&self.log, format!("dlq {offset}"));
        Ok(())
    }
}

/// Answers each `apply` from a script (then accepts everything); logs the offsets it saw.
/// Turns `shutdown` on at the end of the script, if given.
struct ScriptedSink {
    log: Log,
    script: VecDeque<Result<Outcome, SinkError>>,
    shutdown: Option<watch::Sender<bool>>,
}

impl Sink for ScriptedSink {
    async fn apply(&mut self, batch: &Batch<ChangeEvent>) -> Result<Outcome, SinkError> {
        let offsets: Vec<String> = batch
            .entries
            .iter()
            .flat_map(|e| e.positions.iter().map(|p| p.offset.to_string()))
            .collect();
        let answer = self.script.pop_front().unwrap_or(Ok(Outcome::default()));
        let verb = if answer.is_ok() { "apply" } else { "fail" };
        log(&self.log, format!("{verb} {}", offsets.join(",")));
        if self.script.is_empty()
            && let Some(tx) = self.shutdown.take()
        {
            tx.send(true).unwrap();
        }
        answer
    }
}

fn transient() -> Result<Outcome, SinkError> {
    Err(SinkError::Transient {
        message: "503".into(),
        retry_after: Some(Duration::from_millis(1)),
    })
}

/// A change of key `{"id":offset}`, or an unparsable record where `offset` is in `poison`.
fn record(offset: i64, poison: &[i64]) -> Incoming {
    let key = format!("{{\"id\":{offset}}}").into_bytes();
    let payload = if poison.contains(&offset) {
        b"not json".to_vec()
    } else {
        event(Op::Create, serde_json::json!({ "id": offset })).to_json()
    };
    Incoming {
        topic: "src".into(),
        partition: 0,
        offset,
        key: Some(key),
        payload: Some(payload),
    }
}

struct Run {
    log: Vec<String>,
    result: Result<Stats, RunnerError>,
    /// What the worker reported for `driftless status`.
    status: crate::sink::status_report::WorkerStatus,
}

/// Runs a worker over records `0..n` (a replay ending at offset `n`), `poison` unparsable.
async fn run_worker(
    n: i64,
    poison: &[i64],
    script: Vec<Result<Outcome, SinkError>>,
    stop_on_script_end: bool,
    dead_letters_fail: bool,
) -> Run {
    let shared: Log = Arc::default();
    let (report, reported) = StatusReport::watched();
    let cfg = RunnerConfig {
        name: "mem".into(),
        topic: "src".into(),
        dead_letter_topic: "src.dlq.mem".into(),
        // One batch, closed by size when the last good record arrives (never by time).
        batch_max_events: (n as usize).saturating_sub(poison.len()),
        batch_max_wait: Duration::from_secs(3600),
        stop_at: Some(BTreeMap::from([(0, n)])),
        schedule: None,
        skip_origin: None,
    };
    let subscription = MemSubscription {
        records: Mutex::new((0..n).map(|o| record(o, poison)).collect()),
        log: shared.clone(),
    };
    let outputs = Outputs {
        dead_letters: MemDeadLetters {
            log: shared.clone(),
            fail: dead_letters_fail,
        },
        audit: AuditTrail::Off,
        status: report,
    };
    let (tx, rx) = watch::channel(false);
    let mut sink = ScriptedSink {
        log: shared.clone(),
        script: script.into(),
        shutdown: stop_on_script_end.then_some(tx.clone()),
    };
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        run(&cfg, &subscription, &outputs, &mut sink, rx),
    )
    .await
    .expect("the worker stops");
    drop(tx);
    let log = shared.lock().unwrap().clone();
    let status = reported.borrow().clone();
    Run {
        log,
        result,
        status,
    }
}

#[tokio::test]
async fn offsets_are_stored_only_after_the_destination_accepted() {
    let r = run_worker(3, &[], vec![], false, false).await;
    assert_eq!(r.log, ["apply 0,1,2", "store 0:3", "commit"]);
    let stats = r.result.unwrap();
    assert_eq!(stats.stored, BTreeMap::from([(0, 3)]));
    assert_eq!((stats.records, stats.batches), (3, 1));
}

#[tokio::test]
async fn a_transient_failure_retries_the_same_batch_and_stores_nothing_before() {
    let r = run_worker(2, &[], vec![transient(), transient()], false, false).await;
    assert_eq!(
        r.log,
        ["fail 0,1", "fail 0,1", "apply 0,1", "store 0:2", "commit"]
    );
    assert_eq!(r.result.unwrap().retries, 2);
    let error = r.status.last_error.unwrap();
    assert_eq!((r.status.errors, error.class.as_str()), (2, "transient"));
}

#[tokio::test]
async fn a_long_wait_pauses_the_partitions_and_keeps_polling_instead_of_sleeping() {
    let long = Err(SinkError::Transient {
        message: "429".into(),
        retry_after: Some(POLL_WHILE_WAITING + Duration::from_millis(300)),
    });
    let r = run_worker(2, &[], vec![long, transient()], false, false).await;
    // The short retry sleeps; the long one waits with the partitions paused.
    assert_eq!(
        r.log,
        [
            "fail 0,1",
            "pause",
            "resume",
            "fail 0,1",
            "apply 0,1",
            "store 0:2",
            "commit"
        ]
    );
}

#[tokio::test]
async fn shutdown_while_a_batch_fails_stores_nothing() {
    let r = run_worker(2, &[], vec![transient(), transient()], true, false).await;
    assert_eq!(r.log, ["fail 0,1", "fail 0,1", "commit"]);
    assert!(r.result.unwrap().stored.is_empty());
}

#[tokio::test]
async fn a_fatal_failure_stores_nothing() {
    let fatal = Err(SinkError::Fatal {
        message: "403".into(),
        hint: "fix the token".into(),
    });
    let r = run_worker(2, &[], vec![fatal], false, false).await;
    assert_eq!(r.log, ["fail 0,1", "commit"]);
    assert!(matches!(r.result, Err(RunnerError::Sink(_))));
}

#[tokio::test]
async fn poison_records_are_stored_only_after_their_dead_letter_is_durable() {
    // Offset 1 is unparsable; the destination rejects the entry of offset 2.
    let rejected = Ok(Outcome {
        rejected: vec![Rejected {
            index: 1,
            category: "INVALID".into(),
            message: "bad".into(),
        }],
        destination_ids: vec![],
    });
    let r = run_worker(3, &[1], vec![rejected], false, false).await;
    assert_eq!(
        r.log,
        ["dlq 1", "apply 0,2", "dlq 2", "store 0:3", "commit"]
    );
    let stats = r.result.unwrap();
    assert_eq!(stats.dead_letters, 2);
    assert_eq!(stats.stored, BTreeMap::from([(0, 3)]));
    // Reported by category only: the destination's message may quote the record.
    let error = r.status.last_error.unwrap();
    assert_eq!(r.status.errors, 2);
    assert_eq!(
        (error.class.as_str(), error.message.as_str()),
        ("poison", "1 record(s) dead-lettered: INVALID")
    );
}

#[tokio::test]
async fn a_dead_letter_that_is_not_acknowledged_stores_nothing() {
    let r = run_worker(2, &[0], vec![], false, true).await;
    assert_eq!(r.log, ["commit"]);
    assert!(matches!(r.result, Err(RunnerError::Kafka(_))));

    let rejected = Ok(Outcome {
        rejected: vec![Rejected {
            index: 0,
            category: "INVALID".into(),
            message: "bad".into(),
        }],
        destination_ids: vec![],
    });
    let r = run_worker(1, &[], vec![rejected], false, true).await;
    assert_eq!(r.log, ["apply 0", "commit"]);
    assert!(matches!(r.result, Err(RunnerError::Kafka(_))));
}
