//! Progress reports of a capture session: the events-per-second meter of the streaming loop,
//! and the progress of a table read by SQL (the initial snapshot, a backfill): a bar on a
//! terminal, log lines (at most every 5 s) otherwise.

use std::time::{Duration, Instant};

/// Events per second over status intervals.
pub(super) struct RateMeter {
    count: u64,
    since: Instant,
}

impl RateMeter {
    pub(super) fn new() -> Self {
        RateMeter {
            count: 0,
            since: Instant::now(),
        }
    }

    pub(super) fn add(&mut self, n: u64) {
        self.count += n;
    }

    pub(super) fn tick(&mut self) -> f64 {
        let secs = self.since.elapsed().as_secs_f64().max(1e-3);
        let rate = self.count as f64 / secs;
        self.count = 0;
        self.since = Instant::now();
        rate
    }
}

/// Snapshot progress: a bar on a terminal, log lines (at most every 5 s) otherwise.
pub(super) struct SnapshotProgress {
    /// The table reported on.
    pub(super) table: String,
    total: u64,
    done: u64,
    bar: Option<indicatif::ProgressBar>,
    last_log: Instant,
}

impl SnapshotProgress {
    pub(super) fn new(table: &str, total: u64) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(table.to_string());
            bar
        });
        tracing::info!(table, rows_total = total, "snapshot of table started");
        SnapshotProgress {
            table: table.into(),
            total,
            done: 0,
            bar,
            last_log: Instant::now(),
        }
    }

    pub(super) fn advance(&mut self, n: u64) {
        self.done += n;
        metrics::counter!("driftless_snapshot_rows_total").increment(n);
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_log.elapsed() >= Duration::from_secs(5) => {
                self.last_log = Instant::now();
                tracing::info!(table = %self.table, rows_done = self.done, rows_total = self.total,
                    "snapshot progress");
            }
            None => {}
        }
    }

    pub(super) fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        tracing::info!(table = %self.table, rows_done = self.done, rows_total = self.total,
            "snapshot of table done");
    }
}
