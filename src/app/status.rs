//! `driftless status`: where capture and each sink stand, read from the live systems and the state
//! directory: the slot (active, lag in bytes and seconds), capture's checkpoint (and the backfills
//! it holds) and last error, and per sink its consumer group's lag, its retained dead letters and
//! each of its workers' state and last error (from the status topic, as the workers on other
//! machines published them; with their age). Printed as a table, or as JSON with `--json`.
//!
//! Invariants: it changes nothing (it never joins a consumer group, creates a topic or touches
//! the slot); a part that cannot be read is reported as a problem while the others are still
//! shown, and makes the exit code 1.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::capture::last_error::{self, LastError};
use crate::checkpoint::CheckpointStore;
use crate::config::ValidConfig;
use crate::kafka::{self, PartitionOffsets};
use crate::postgres::catalog;
use crate::postgres::connect::{ConnectParams, connect_sql};
use crate::sink::status_report::{HEARTBEAT, WorkerState, WorkerStatus};

/// How long one Kafka lookup may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `driftless status` shows.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    capture: Capture,
    sinks: Vec<Sink>,
    /// Parts that could not be read.
    problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct Capture {
    slot: String,
    /// `None`: the slot does not exist (or Postgres could not be read).
    exists: Option<bool>,
    active_pid: Option<i32>,
    wal_status: Option<String>,
    confirmed_flush_lsn: Option<String>,
    current_wal_lsn: Option<String>,
    lag_bytes: Option<i64>,
    lag_seconds: Option<f64>,
    checkpoint_phase: Option<String>,
    checkpoint_lsn: Option<String>,
    /// Backfills not yet complete (the first one running), as of the checkpoint.
    backfills: Vec<Backfill>,
    last_error: Option<LastError>,
    /// Retained records of `{prefix}.dlq.capture` (oversized events).
    dead_letters: Option<u64>,
}

/// A backfill as shown: never its position (primary-key values are row values).
#[derive(Debug, Serialize)]
struct Backfill {
    table: String,
    rows_sent: u64,
}

#[derive(Debug, Serialize)]
struct Sink {
    name: String,
    topic: String,
    group: String,
    /// Records of the topic the group has still to consume.
    lag: Option<u64>,
    /// Retained records of the sink's dead-letter topic.
    dead_letters: Option<u64>,
    /// Its workers' newest states on the status topic.
    workers: Vec<Worker>,
}

/// A worker's state as shown.
#[derive(Debug, Serialize)]
struct Worker {
    #[serde(flatten)]
    status: WorkerStatus,
    /// Seconds since the worker published this state.
    age_seconds: Option<i64>,
    /// A running worker that has not published for two heartbeats: killed, or its machine
    /// lost, or cut off from Kafka.
    stale: bool,
}

impl Worker {
    fn of(status: WorkerStatus, now: chrono::DateTime<chrono::Utc>) -> Worker {
        let age_seconds = chrono::DateTime::parse_from_rfc3339(&status.at)
            .ok()
            .map(|at| (now - at.with_timezone(&chrono::Utc)).num_seconds().max(0));
        let stale = status.state == WorkerState::Running
            && age_seconds.is_some_and(|a| a > 2 * HEARTBEAT.as_secs() as i64);
        Worker {
            status,
            age_seconds,
            stale,
        }
    }

    /// One line of the table.
    fn line(&self) -> String {
        let s = &self.status;
        let state = match s.state {
            WorkerState::Running => "running",
            WorkerState::Failed => "failed",
            WorkerState::Stopped => "stopped",
        };
        let mut line = format!(
            "    worker {}: {state}{}, reported {} s ago, {} error(s)",
            s.worker,
            if self.stale { " (stale)" } else { "" },
            or_dash(self.age_seconds, "?"),
            s.errors
        );
        if let Some(e) = &s.last_error {
            line += &format!("; last error {} {}: {}", e.at, e.class, e.message);
        }
        line
    }
}

/// Reads the status.
pub(crate) async fn read(cfg: &ValidConfig) -> Status {
    let mut problems = Vec::new();
    let mut capture = Capture {
        slot: cfg.slot.clone(),
        ..Capture::default()
    };
    if let Err(e) = read_slot(cfg, &mut capture).await {
        problems.push(format!("postgres: {e}"));
    }
    let store = CheckpointStore::new(&cfg.state_dir, &cfg.slot);
    match store.load() {
        Ok(checkpoint) => {
            capture.checkpoint_phase = checkpoint
                .as_ref()
                .map(|c| format!("{:?}", c.phase).to_lowercase());
            if let Some(c) = checkpoint {
                capture.checkpoint_lsn = Some(c.flushed_lsn.to_string());
                capture.backfills = c
                    .backfills
                    .into_iter()
                    .map(|b| Backfill {
                        table: b.table,
                        rows_sent: b.rows,
                    })
                    .collect();
            }
        }
        Err(e) => problems.push(format!("state: {e}")),
    }
    match last_error::load(&cfg.state_dir, &cfg.slot) {
        Ok(last) => capture.last_error = last,
        Err(e) => problems.push(format!("state: {e}")),
    }
    capture.dead_letters = retained(cfg, &cfg.capture_dead_letter_topic(), &mut problems).await;
    let mut workers = if cfg.sinks.is_empty() {
        Default::default()
    } else {
        super::worker_status::read(cfg, KAFKA_TIMEOUT)
            .await
            .unwrap_or_else(|e| {
                problems.push(format!("kafka: {e}"));
                Default::default()
            })
    };
    let now = chrono::Utc::now();
    let mut sinks = Vec::new();
    for sink in &cfg.sinks {
        let topic = cfg.topic_for(&sink.table.schema, &sink.table.name);
        let group = super::sink::group_id(&sink.name);
        let lag = match kafka::topic_offsets(
            &cfg.brokers,
            &cfg.librdkafka,
            &topic,
            Some(&group),
            KAFKA_TIMEOUT,
        )
        .await
        {
            Ok(partitions) => Some(partitions.iter().flatten().map(PartitionOffsets::lag).sum()),
            Err(e) => {
                problems.push(format!("kafka: sink {}: {e}", sink.name));
                None
            }
        };
        let dead_letters = retained(
            cfg,
            &super::sink::dead_letter_topic(cfg, &sink.name),
            &mut problems,
        )
        .await;
        sinks.push(Sink {
            name: sink.name.clone(),
            topic,
            group,
            lag,
            dead_letters,
            workers: workers
                .remove(&sink.name)
                .unwrap_or_default()
                .into_iter()
                .map(|w| Worker::of(w, now))
                .collect(),
        });
    }
    Status {
        capture,
        sinks,
        problems,
    }
}

/// The slot's row and lag.
async fn read_slot(cfg: &ValidConfig, capture: &mut Capture) -> Result<(), String> {
    let url = cfg.source_url.read()?;
    let params = ConnectParams::from_url(&url).map_err(|e| e.to_string())?;
    let sql = connect_sql(&params).await.map_err(|e| e.to_string())?;
    let slot = catalog::slot_state(&sql, &cfg.slot)
        .await
        .map_err(|e| e.to_string())?;
    let lag = catalog::slot_lag(&sql, &cfg.slot)
        .await
        .map_err(|e| e.to_string())?;
    capture.exists = Some(slot.is_some());
    capture.current_wal_lsn = Some(lag.current_wal_lsn);
    if let Some(slot) = slot {
        capture.active_pid = slot.active_pid;
        capture.wal_status = slot.wal_status;
        capture.confirmed_flush_lsn = slot.confirmed_flush_lsn.map(|l| l.to_string());
        capture.lag_bytes = lag.lag_bytes;
        // The server measures no lag once the walsender has caught up and idles.
        capture.lag_seconds = lag
            .lag_seconds
            .or((lag.lag_bytes == Some(0)).then_some(0.0));
    }
    Ok(())
}

/// Records retained in `topic` (0 when it does not exist).
async fn retained(cfg: &ValidConfig, topic: &str, problems: &mut Vec<String>) -> Option<u64> {
    match kafka::topic_offsets(&cfg.brokers, &cfg.librdkafka, topic, None, KAFKA_TIMEOUT).await {
        Ok(partitions) => Some(
            partitions
                .iter()
                .flatten()
                .map(PartitionOffsets::retained)
                .sum(),
        ),
        Err(e) => {
            problems.push(format!("kafka: {topic}: {e}"));
            None
        }
    }
}

/// A number or `?` (could not be read) / `-` (does not apply).
fn or_dash<T: ToString>(v: Option<T>, unknown: &str) -> String {
    v.map_or_else(|| unknown.to_string(), |v| v.to_string())
}

impl Status {
    /// The table shown to an operator.
    pub(crate) fn table(&self) -> String {
        let c = &self.capture;
        let mut out = String::new();
        let slot = match (c.exists, c.active_pid) {
            (None, _) => "unknown".to_string(),
            (Some(false), _) => "missing".to_string(),
            (Some(true), Some(pid)) => format!("active (walsender pid {pid})"),
            (Some(true), None) => "inactive".to_string(),
        };
        let wal = c.wal_status.as_deref().unwrap_or("-");
        out += &format!("capture (slot {})\n", c.slot);
        out += &format!("  slot          {slot}, wal_status {wal}\n");
        out += &format!(
            "  confirmed     {} (server at {}): {} bytes, {} s behind\n",
            or_dash(c.confirmed_flush_lsn.as_ref(), "-"),
            or_dash(c.current_wal_lsn.as_ref(), "?"),
            or_dash(c.lag_bytes, "?"),
            or_dash(c.lag_seconds.map(|s| format!("{s:.1}")), "?"),
        );
        out += &format!(
            "  checkpoint    {}\n",
            match (&c.checkpoint_phase, &c.checkpoint_lsn) {
                (Some(phase), Some(lsn)) => format!("{phase}, flushed {lsn}"),
                _ => "none".to_string(),
            }
        );
        for b in &c.backfills {
            out += &format!("  backfill      {}: {} rows sent\n", b.table, b.rows_sent);
        }
        out += &format!(
            "  last error    {}\n",
            c.last_error
                .as_ref()
                .map_or("none".to_string(), |e| format!(
                    "{} {}: {}",
                    e.at, e.class, e.message
                ))
        );
        out += &format!("  dead letters  {}\n", or_dash(c.dead_letters, "?"));
        if !self.sinks.is_empty() {
            let name_w = self
                .sinks
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(0)
                .max(4);
            let group_w = self.sinks.iter().map(|s| s.group.len()).max().unwrap_or(0);
            out += &format!(
                "sinks\n  {:name_w$}  {:group_w$}  {:>8}  {:>12}\n",
                "NAME", "GROUP", "LAG", "DEAD LETTERS"
            );
            for s in &self.sinks {
                out += &format!(
                    "  {:name_w$}  {:group_w$}  {:>8}  {:>12}\n",
                    s.name,
                    s.group,
                    or_dash(s.lag, "?"),
                    or_dash(s.dead_letters, "?")
                );
                for w in &s.workers {
                    out += &w.line();
                    out.push('\n');
                }
            }
        }
        for p in &self.problems {
            out += &format!("problem: {p}\n");
        }
        out
    }

    /// 0 when every part could be read, 1 otherwise.
    pub(crate) fn exit_code(&self) -> ExitCode {
        if self.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(state: WorkerState, at: &str) -> WorkerStatus {
        WorkerStatus {
            sink: "s".into(),
            worker: "host-7".into(),
            state,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            at: at.into(),
            errors: 2,
            last_error: Some(LastError {
                at: "2026-01-01T00:00:30.000Z".into(),
                class: "fatal".into(),
                message: "HubSpot refused the token (401 X)".into(),
                hint: None,
            }),
        }
    }

    #[test]
    fn a_running_worker_silent_for_two_heartbeats_is_stale_and_its_age_shown() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:03:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let old = "2026-01-01T00:00:59.000Z";
        let silent = Worker::of(worker(WorkerState::Running, old), now);
        assert_eq!((silent.age_seconds, silent.stale), (Some(121), true));
        let recent = Worker::of(worker(WorkerState::Running, "2026-01-01T00:02:30Z"), now);
        assert_eq!((recent.age_seconds, recent.stale), (Some(30), false));
        // A failed or stopped worker publishes no more: old is what it is, not stale.
        let failed = Worker::of(worker(WorkerState::Failed, old), now);
        assert!(!failed.stale);
        assert_eq!(
            failed.line(),
            "    worker host-7: failed, reported 121 s ago, 2 error(s); last error \
             2026-01-01T00:00:30.000Z fatal: HubSpot refused the token (401 X)"
        );
        assert!(
            silent
                .line()
                .contains("running (stale), reported 121 s ago")
        );
    }
}
