//! A sink worker's state, published for `driftless status` (which runs elsewhere): Kafka
//! Connect's status topic, for driftless's workers.
//!
//! Owns [`WorkerStatus`] (the JSON value), the [`StatusReport`] handle a worker reports
//! through, and the publishing loop. A worker's record is keyed `{sink}/{worker id}` on the
//! compacted status topic, so the newest record of each worker is its state. Invariants:
//! - reporting never blocks and never fails: the handle only replaces the worker's state in a
//!   watch channel; a task of its own publishes it;
//! - the state is published on start, every [`HEARTBEAT`] while running, on a new error (at
//!   most once per [`MIN_INTERVAL`], so an error storm publishes the last error and a count,
//!   not every error) and at once when the worker stops (`stopped`) or fails (`failed`, with
//!   the error);
//! - a publish is best effort: bounded by [`PUBLISH_TIMEOUT`], a failure is logged and the
//!   worker goes on; the worker waits at most [`FINAL_WAIT`] for its last state on exit;
//! - the record holds the error's class, its text and hint (which never carry row values,
//!   CRM values or secrets: the errors' own invariant) and, for a poison record, only its
//!   category, never the destination's message about it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub(crate) use crate::error::LastError;
use crate::error::{Classify, ErrorClass};
use crate::kafka::AckedPublisher;

/// Least time between two publishes of a running worker's state.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// A running worker republishes its state this often, so an old record means a worker gone
/// without a word (killed, or its machine lost).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(60);
/// Longest wait for one publish (its acknowledgement included).
pub(crate) const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait of a stopping worker for its last state to be published.
pub(crate) const FINAL_WAIT: Duration = Duration::from_secs(5);

/// Where a worker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WorkerState {
    /// Consuming and applying (transient errors are retried in this state).
    Running,
    /// Stopped by a fatal error.
    Failed,
    /// Stopped on request.
    Stopped,
}

/// The value a worker publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkerStatus {
    /// The sink's name.
    pub sink: String,
    /// The worker's id.
    pub worker: String,
    /// Its state.
    pub state: WorkerState,
    /// When the worker started (RFC 3339, UTC).
    pub started_at: String,
    /// When this state was published (RFC 3339, UTC).
    pub at: String,
    /// Errors since the worker started (transient ones retried, poison records, a fatal one).
    pub errors: u64,
    /// The newest of them.
    pub last_error: Option<LastError>,
}

/// The record key of a worker's state.
pub(crate) fn key(sink: &str, worker: &str) -> String {
    format!("{sink}/{worker}")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The handle a worker reports through. The default one reports nowhere (a replay, tests).
#[derive(Clone, Debug, Default)]
pub struct StatusReport {
    state: Option<Arc<watch::Sender<WorkerStatus>>>,
}

impl StatusReport {
    /// A handle whose reports land in the returned receiver (tests of reporting workers).
    #[cfg(test)]
    pub(crate) fn watched() -> (StatusReport, watch::Receiver<WorkerStatus>) {
        let (tx, rx) = watch::channel(WorkerStatus {
            sink: "test".into(),
            worker: "test".into(),
            state: WorkerState::Running,
            started_at: now(),
            at: now(),
            errors: 0,
            last_error: None,
        });
        let report = StatusReport {
            state: Some(Arc::new(tx)),
        };
        (report, rx)
    }

    fn update(&self, f: impl FnOnce(&mut WorkerStatus)) {
        if let Some(state) = &self.state {
            state.send_modify(f);
        }
    }

    fn record(&self, class: ErrorClass, message: String, hint: Option<String>) {
        self.update(|s| {
            s.errors += 1;
            s.last_error = Some(LastError::now(class, message, hint));
        });
    }

    /// A new error of the worker (retried, or about to stop it).
    pub(crate) fn error(&self, e: &(impl std::fmt::Display + Classify)) {
        self.record(e.class(), e.to_string(), e.hint());
    }

    /// `records` records went to the dead-letter topic with `category`.
    pub(crate) fn poison(&self, category: &str, records: usize) {
        self.update(|s| {
            s.errors += records as u64;
            s.last_error = Some(LastError::now(
                ErrorClass::Poison,
                format!("{records} record(s) dead-lettered: {category}"),
                None,
            ));
        });
    }
}

/// The task publishing a worker's state.
pub(crate) struct Publishing {
    report: StatusReport,
    task: tokio::task::JoinHandle<()>,
}

/// Starts publishing the state of worker `worker` of sink `sink` on `topic` through
/// `publisher`, once `prepare` (e.g. creating the topic) is done; returns the worker's handle.
pub(crate) fn start<P: AckedPublisher + 'static>(
    publisher: P,
    topic: String,
    sink: &str,
    worker: &str,
    prepare: impl Future<Output = ()> + Send + 'static,
) -> Publishing {
    start_paced(publisher, topic, sink, worker, prepare, Pace::default())
}

fn start_paced<P: AckedPublisher + 'static>(
    publisher: P,
    topic: String,
    sink: &str,
    worker: &str,
    prepare: impl Future<Output = ()> + Send + 'static,
    pace: Pace,
) -> Publishing {
    let at = now();
    let (tx, rx) = watch::channel(WorkerStatus {
        sink: sink.to_string(),
        worker: worker.to_string(),
        state: WorkerState::Running,
        started_at: at.clone(),
        at,
        errors: 0,
        last_error: None,
    });
    let key = key(sink, worker);
    let task = tokio::spawn(async move {
        prepare.await;
        publish_loop(&publisher, &topic, &key, rx, pace).await;
    });
    Publishing {
        report: StatusReport {
            state: Some(Arc::new(tx)),
        },
        task,
    }
}

impl Publishing {
    /// Publishing nowhere (no producer could be made): the worker runs without it.
    pub(crate) fn detached() -> Publishing {
        Publishing {
            report: StatusReport::default(),
            task: tokio::spawn(async {}),
        }
    }

    /// The worker's handle.
    pub(crate) fn report(&self) -> StatusReport {
        self.report.clone()
    }

    /// The worker ended: `failure` is the error that stopped it, if one did. Waits (at most
    /// [`FINAL_WAIT`]) until its last state is published.
    pub(crate) async fn finish(self, failure: Option<&(impl std::fmt::Display + Classify)>) {
        if let Some(e) = failure {
            self.report.error(e);
        }
        self.report.update(|s| {
            s.state = match failure {
                Some(_) => WorkerState::Failed,
                None => WorkerState::Stopped,
            };
        });
        let mut task = self.task;
        if tokio::time::timeout(FINAL_WAIT, &mut task).await.is_err() {
            tracing::warn!(
                wait_ms = FINAL_WAIT.as_millis() as u64,
                "worker state not published in time; stopping without it"
            );
            task.abort();
        }
    }
}

/// How often a running worker's state is published.
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// Least time between two publishes.
    min_interval: Duration,
    /// Longest time without one.
    heartbeat: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            min_interval: MIN_INTERVAL,
            heartbeat: HEARTBEAT,
        }
    }
}

/// Publishes the state in `rx` until it is final (published too) or its sender is gone; while
/// it is running, at most once per `min_interval` and at least once per `heartbeat`.
async fn publish_loop<P: AckedPublisher>(
    publisher: &P,
    topic: &str,
    key: &str,
    mut rx: watch::Receiver<WorkerStatus>,
    pace: Pace,
) {
    loop {
        let mut status = rx.borrow_and_update().clone();
        status.at = now();
        let value = serde_json::to_vec(&status).expect("a status serializes");
        let published = tokio::time::Instant::now();
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            publisher.send(topic, Some(key.as_bytes()), Some(&value), &[]),
        )
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(topic, %error, "cannot publish the worker's state; going on");
            }
            Err(_) => tracing::warn!(topic, "publishing the worker's state timed out; going on"),
        }
        if status.state != WorkerState::Running {
            return;
        }
        match tokio::time::timeout_at(published + pace.heartbeat, rx.changed()).await {
            // The heartbeat: the same state again.
            Err(_) => continue,
            // The worker is gone without saying how it ended.
            Ok(Err(_)) => return,
            Ok(Ok(())) => {}
        }
        // A running worker's next state waits out the interval; a final one goes at once.
        let _ = tokio::time::timeout_at(
            published + pace.min_interval,
            rx.wait_for(|s| s.state != WorkerState::Running),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::kafka::KafkaFailure;
    use crate::sink::SinkError;

    /// Records what it is asked to publish; fails every send when `fail`.
    #[derive(Clone, Default)]
    struct Recording {
        sent: Arc<Mutex<Vec<(String, String, WorkerStatus)>>>,
        fail: bool,
    }

    impl AckedPublisher for Recording {
        async fn send(
            &self,
            topic: &str,
            key: Option<&[u8]>,
            payload: Option<&[u8]>,
            _headers: &[(&str, &str)],
        ) -> Result<(), KafkaFailure> {
            let status = serde_json::from_slice(payload.unwrap()).unwrap();
            let key = String::from_utf8(key.unwrap().to_vec()).unwrap();
            self.sent.lock().unwrap().push((topic.into(), key, status));
            if self.fail {
                return Err(KafkaFailure::DeliveryCanceled);
            }
            Ok(())
        }
    }

    impl Recording {
        fn states(&self) -> Vec<WorkerStatus> {
            self.sent
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.2.clone())
                .collect()
        }
    }

    const SLOW: Pace = Pace {
        min_interval: Duration::from_secs(3600),
        heartbeat: Duration::from_secs(3600),
    };

    fn publishing(publisher: &Recording, pace: Pace) -> Publishing {
        start_paced(
            publisher.clone(),
            "p.status".into(),
            "s",
            "w",
            async {},
            pace,
        )
    }

    #[tokio::test]
    async fn an_error_storm_publishes_its_count_and_the_failure_at_once() {
        let publisher = Recording::default();
        let p = publishing(&publisher, SLOW);
        let report = p.report();
        for n in 0..100 {
            report.error(&SinkError::transient(
                format!("HubSpot answered 50{}", n % 4),
                None,
            ));
        }
        report.poison("INVALID_EMAIL", 3);
        let fatal = SinkError::fatal("HubSpot refused the token (401 X)", "check the token");
        p.finish(Some(&fatal)).await;
        let states = publisher.states();
        // The first state, then (the interval being an hour) only the final one.
        assert!(states.len() <= 2, "{states:?}");
        let last = states.last().unwrap();
        assert_eq!((last.state, last.errors), (WorkerState::Failed, 104));
        let error = last.last_error.as_ref().unwrap();
        assert_eq!(
            (
                error.class.as_str(),
                error.message.as_str(),
                error.hint.as_deref()
            ),
            (
                "fatal",
                "HubSpot refused the token (401 X)",
                Some("check the token")
            )
        );
        let (topic, key, _) = publisher.sent.lock().unwrap()[0].clone();
        assert_eq!((topic.as_str(), key.as_str()), ("p.status", "s/w"));
    }

    #[tokio::test]
    async fn a_graceful_stop_is_published_as_stopped() {
        let publisher = Recording::default();
        let p = publishing(&publisher, SLOW);
        p.report().poison("MALFORMED_EVENT", 1);
        p.finish(None::<&SinkError>).await;
        let last = publisher.states().pop().unwrap();
        assert_eq!((last.state, last.errors), (WorkerState::Stopped, 1));
        let error = last.last_error.unwrap();
        assert_eq!(
            (error.class.as_str(), error.message.as_str()),
            ("poison", "1 record(s) dead-lettered: MALFORMED_EVENT")
        );
    }

    #[tokio::test]
    async fn a_publisher_that_fails_stops_nothing() {
        let publisher = Recording {
            fail: true,
            ..Recording::default()
        };
        let p = publishing(&publisher, SLOW);
        p.report()
            .error(&SinkError::transient("HubSpot answered 503", None));
        p.finish(Some(&SinkError::fatal("gone", "hint"))).await;
        assert_eq!(
            publisher.states().last().unwrap().state,
            WorkerState::Failed
        );
    }

    #[tokio::test]
    async fn a_running_worker_republishes_its_state() {
        let publisher = Recording::default();
        let pace = Pace {
            min_interval: Duration::from_millis(1),
            heartbeat: Duration::from_millis(5),
        };
        let p = publishing(&publisher, pace);
        let three = async {
            while publisher.states().len() < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), three)
            .await
            .expect("three heartbeats within 10 s");
        p.finish(None::<&SinkError>).await;
        let states = publisher.states();
        assert!(states[..3].iter().all(|s| s.state == WorkerState::Running));
        assert_eq!(states.last().unwrap().state, WorkerState::Stopped);
    }

    #[tokio::test]
    async fn a_detached_report_records_nothing_and_finishes() {
        let p = Publishing::detached();
        p.report().error(&SinkError::transient("x", None));
        p.finish(Some(&SinkError::fatal("y", "z"))).await;
    }
}
