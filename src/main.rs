//! The `driftless` command: parse the CLI, load and validate the config, init logging, run one
//! subcommand. Exit codes: 0 ok, 1 failure, 2 invalid config or preflight problems, 3 refusal
//! (slot or checkpoint state, server settings, table shape).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use driftless::capture::{self, Health};
use driftless::config;
use driftless::error::Classify;

#[derive(Parser)]
#[command(
    name = "driftless",
    version,
    about = "Postgres change-data-capture to Kafka"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DRIFTLESS_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config and check Postgres and Kafka; prints every problem.
    Check {
        /// Config file.
        #[arg(long, short)]
        config: PathBuf,
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
    },
    /// Run a local emulator of a SaaS API (development, demo, tests).
    Emulate {
        /// Which API.
        #[arg(value_enum)]
        kind: EmulatorKind,
        /// Port.
        #[arg(long, default_value_t = 8081)]
        port: u16,
        /// Address to bind (loopback by default; `0.0.0.0` inside a container).
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum EmulatorKind {
    Hubspot,
    Zoho,
    Webhook,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(path: &Path) -> Result<config::ValidConfig, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for every HTTPS client (sinks); ring, as everywhere else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Check { config } => check(&config).await,
            Command::Capture { config } => run_capture(&config).await,
            Command::Run { config } => run_all(&config).await,
            Command::Emulate { kind, port, host } => emulate(kind, host, port).await,
            Command::Sink {
                config,
                name,
                metrics_listen,
            } => {
                if let Some(addr) = metrics_listen {
                    // Healthy while the process runs: a worker retries transient failures and
                    // exits on fatal ones.
                    let health = Arc::new(Health::default());
                    health
                        .streaming
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    serve_metrics_on(addr, health);
                }
                run_sink(&config, &name, None).await
            }
            Command::Replay {
                config,
                name,
                from,
                dead_letters,
            } => match from.parse::<driftless::kafka::ReplayFrom>() {
                Ok(from) => run_sink(&config, &name, Some((from, dead_letters))).await,
                Err(e) => {
                    eprintln!("error: --from {e}");
                    ExitCode::from(2)
                }
            },
        }
    })
}

/// `driftless emulate KIND`: the emulators are a separate program, `driftless-emulate`; this runs
/// it (the copy next to this executable, else the one on `PATH`) with the same arguments. On Unix
/// it replaces this process, so signals reach the emulator directly.
async fn emulate(kind: EmulatorKind, host: std::net::IpAddr, port: u16) -> ExitCode {
    const PROGRAM: &str = "driftless-emulate";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(PROGRAM)))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(PROGRAM));
    let kind = match kind {
        EmulatorKind::Hubspot => "hubspot",
        EmulatorKind::Zoho => "zoho",
        EmulatorKind::Webhook => "webhook",
    };
    let mut command = std::process::Command::new(&program);
    command.args([
        kind,
        "--port",
        &port.to_string(),
        "--host",
        &host.to_string(),
    ]);
    #[cfg(unix)]
    let outcome = std::os::unix::process::CommandExt::exec(&mut command);
    #[cfg(not(unix))]
    let outcome = match command.status() {
        Ok(status) => return ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => e,
    };
    if outcome.kind() == std::io::ErrorKind::NotFound {
        eprintln!(
            "error: `driftless emulate` runs `{PROGRAM}`, which is neither next to this executable \
             nor on PATH; build it with `cargo build -p driftless-emulators`"
        );
    } else {
        eprintln!("error: cannot run {}: {outcome}", program.display());
    }
    ExitCode::FAILURE
}

async fn check(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let findings = driftless::check::preflight(&cfg).await;
    if findings.is_empty() {
        println!("ok: config valid, postgres and kafka ready");
        return ExitCode::SUCCESS;
    }
    eprintln!("{} problem(s):", findings.len());
    for f in &findings {
        eprintln!("  - [{}] {}", f.system, f.message);
        if let Some(h) = &f.hint {
            eprintln!("    hint: {h}");
        }
    }
    ExitCode::from(2)
}

/// A watch channel that turns true on SIGINT or SIGTERM (or when the sender is used).
fn shutdown_channel() -> (
    Arc<tokio::sync::watch::Sender<bool>>,
    tokio::sync::watch::Receiver<bool>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        let _ = on_signal.send(true);
    });
    (stop_tx, stop_rx)
}

/// A watch channel that turns true on SIGINT or SIGTERM.
fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    shutdown_channel().1
}

/// Serves `/metrics` and `/healthz` when configured.
fn serve_metrics(cfg: &config::ValidConfig, health: Arc<Health>) {
    if let Some(addr) = cfg.metrics_listen {
        serve_metrics_on(addr, health);
    }
}

/// Serves `/metrics` and `/healthz` on `addr`.
fn serve_metrics_on(addr: std::net::SocketAddr, health: Arc<Health>) {
    match driftless::metrics::install() {
        Ok(handle) => {
            tokio::spawn(async move {
                if let Err(e) = driftless::metrics::serve(addr, handle, health).await {
                    tracing::error!(%addr, error = %e, "metrics endpoint failed");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "metrics recorder not installed"),
    }
}

/// Prints a stopped task's error and hint to stderr.
fn report(e: &(impl std::fmt::Display + Classify)) {
    eprintln!("error: {e}");
    if let Some(h) = e.hint() {
        eprintln!("hint: {h}");
    }
}

/// `driftless run`: capture and every sink as tasks of one process. The first task to fail
/// stops the others (each commits what it applied) and sets the exit code.
async fn run_all(path: &Path) -> ExitCode {
    use driftless::sink::service::{self, ServiceError};
    use futures::FutureExt;
    use futures::future::BoxFuture;
    use futures::stream::{FuturesUnordered, StreamExt};
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let health = Arc::new(Health::default());
    serve_metrics(&cfg, health.clone());
    let (stop_tx, stop_rx) = shutdown_channel();
    let mut tasks: FuturesUnordered<BoxFuture<'_, (String, Result<(), ExitCode>)>> =
        FuturesUnordered::new();
    let capture_stop = stop_rx.clone();
    let cfg = &cfg;
    tasks.push(
        async move {
            let result = capture::run(cfg, capture_stop, health).await.map_err(|e| {
                tracing::error!(error = %e, "capture stopped");
                report(&e);
                ExitCode::from(e.exit_code() as u8)
            });
            ("capture".to_string(), result)
        }
        .boxed(),
    );
    for sink in &cfg.sinks {
        let stop = stop_rx.clone();
        tasks.push(
            async move {
                let result = service::run_named(cfg, &sink.name, stop)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        tracing::error!(sink = %sink.name, error = %e, "sink worker stopped");
                        report(&e);
                        match e {
                            ServiceError::Refused(_) => ExitCode::from(2),
                            _ => ExitCode::FAILURE,
                        }
                    });
                (format!("sink {}", sink.name), result)
            }
            .boxed(),
        );
    }
    let mut code = ExitCode::SUCCESS;
    while let Some((task, result)) = tasks.next().await {
        if let Err(failed) = result
            && code == ExitCode::SUCCESS
        {
            tracing::error!(task, "stopping the other tasks");
            code = failed;
            let _ = stop_tx.send(true);
        } else if !*stop_rx.borrow() {
            tracing::warn!(task, "stopped on its own; stopping the others");
            let _ = stop_tx.send(true);
        }
    }
    code
}

/// Runs a sink worker, or with `replay` a replay that ends when caught up.
async fn run_sink(
    path: &Path,
    name: &str,
    replay: Option<(driftless::kafka::ReplayFrom, bool)>,
) -> ExitCode {
    use driftless::sink::service;
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match &replay {
        None => service::run_named(&cfg, name, shutdown_signal()).await,
        Some((from, dlq)) => service::replay_named(&cfg, name, from, *dlq, shutdown_signal()).await,
    };
    match result {
        Ok(stats) => {
            if replay.is_some() {
                println!(
                    "replayed: records={} batches={} dead_letters={} retries={}",
                    stats.records, stats.batches, stats.dead_letters, stats.retries
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(sink = name, error = %e, "sink worker stopped");
            report(&e);
            match e {
                driftless::sink::service::ServiceError::Refused(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run_capture(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let health = Arc::new(Health::default());
    serve_metrics(&cfg, health.clone());
    match capture::run(&cfg, shutdown_signal(), health).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "capture stopped");
            report(&e);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
