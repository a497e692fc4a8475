//! The command line: clap types only, no behaviour. [`crate::app`] runs what they describe.
//!
//! Invariant: every subcommand that reads a config takes it as `--config FILE`; secrets never
//! appear as arguments (they come from the environment or files named in the config).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "driftless",
    version,
    about = "Postgres change-data-capture to Kafka"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DRIFTLESS_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate the config and check Postgres and Kafka; prints every problem.
    Check {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show where capture and each sink stand: slot and lag, checkpoint, last error, each
    /// sink's consumer-group lag and dead letters. Changes nothing.
    Status {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running capture to read a table again (in chunks, while it streams): its rows
    /// go out as `r` events, never over a newer change.
    Backfill {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// `schema.table`, one of `source.tables`.
        #[arg(long)]
        table: String,
    },
    /// Snapshot (first run), then stream changes to Kafka until interrupted.
    Capture {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Capture and every configured sink in one process (small setups, the demo).
    Run {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one sink worker: Kafka change topic → destination API (consumer group per sink).
    Sink {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Name of the `[[sinks]]` entry.
        #[arg(long)]
        name: String,
        /// `ip:port` for this worker's `/metrics` and `/healthz` (off by default: several
        /// workers may run on one host).
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Re-apply a sink's topic (or its dead letters) from a point, then exit with counts.
    Replay {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Name of the `[[sinks]]` entry.
        #[arg(long)]
        name: String,
        /// `earliest`, an RFC 3339 time (record times are commit times), or `0:1200,1:980`.
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Replay the sink's dead-letter topic instead (after fixing the cause).
        #[arg(long)]
        dead_letters: bool,
        /// Forget what the sink's ledger holds first, so every change read is re-applied (a
        /// destination that lost records). Without it a replay skips changes the destination
        /// already has, and never puts a record back to an older state.
        #[arg(long, conflicts_with = "dead_letters")]
        full_resync: bool,
    },
    /// Compare a HubSpot or Zoho sink's table, ledger and destination; print what drifted
    /// (key hashes and property names, no values). Exit 0 only when no drift remains.
    Verify {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Name of the `[[sinks]]` entry.
        #[arg(long)]
        name: String,
        /// Write the corrections through the sink's client (upserts of missing and differing
        /// rows, deletes of records whose row is gone) and relink the ledger.
        #[arg(long)]
        repair: bool,
    },
    /// Run a local emulator of a SaaS API (development, demo, tests).
    Emulate {
        /// Which API.
        #[arg(value_enum)]
        kind: EmulatorKind,
        /// Port.
        #[arg(long, default_value_t = 8081)]
        port: u16,
        /// Address to bind (loopback by default).
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Allow a non-loopback `--host` (e.g. `0.0.0.0` inside a container).
        #[arg(long)]
        allow_remote: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EmulatorKind {
    Hubspot,
    Zoho,
    Webhook,
}
