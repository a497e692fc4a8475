//! The composition root: the only place that wires stages together, supervises their tasks
//! and turns how they ended into an exit code.
//!
//! | file             | owns                                                               |
//! |------------------|--------------------------------------------------------------------|
//! | `mod.rs`         | [`run`]: one subcommand; logging, runtime, shutdown, exit codes    |
//! | `supervise.rs`   | [`supervise::Supervisor`]: a `JoinSet` where one failure stops all  |
//! | `destination.rs` | [`destination::Destination`]: builds a configured destination      |
//! | `sink.rs`        | a sink worker and a replay: Kafka subscription → runner → destination |
//! | `two_way.rs`     | the inbound half of a two-way sink: lease, receiver, loops          |
//! | `check.rs`       | `driftless check`: the preflight against the live systems          |
//! | `status.rs`      | `driftless status`: slot, lag, checkpoint, last error, sink lag    |
//! | `worker_status.rs` | the sink workers' states on the status topic: published, read    |
//! | `metrics.rs`     | `/metrics` and `/healthz`                                           |
//!
//! Invariants: nothing is fire-and-forget (every task is joined, and a task that fails or ends
//! on its own stops the others); exit codes come from one rule, [`exit_code`]: 0 ok, 1 failure,
//! 2 invalid config or destination schema, 3 refusal for the source's state.

pub(crate) mod check;
pub(crate) mod destination;
pub(crate) mod metrics;
pub(crate) mod sink;
mod status;
mod supervise;
mod two_way;
mod verify;
mod worker_status;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use crate::capture::{self, Health};
use crate::cli::{Cli, Command, LogFormat};
use crate::config::{self, ValidConfig};
use crate::error::{Classify, Refusal};
use crate::kafka::ReplayFrom;
use supervise::Supervisor;

/// The one exit-code rule: a refusal of the config is 2, a refusal for the source's state 3,
/// any other failure 1.
pub(crate) fn exit_code(refusal: Option<Refusal>) -> ExitCode {
    match refusal {
        Some(Refusal::Config) => ExitCode::from(2),
        Some(Refusal::SourceState) => ExitCode::from(3),
        None => ExitCode::FAILURE,
    }
}

/// A stage that stopped with an error, as reported to the operator: its text, its hint and
/// its exit code (classified where the error arose, never re-derived from its text).
#[derive(Debug)]
pub(crate) struct Stopped {
    message: String,
    hint: Option<String>,
    refusal: Option<Refusal>,
}

impl Stopped {
    fn of(e: &(impl std::fmt::Display + Classify)) -> Self {
        Stopped {
            message: e.to_string(),
            hint: e.hint(),
            refusal: e.refusal(),
        }
    }

    /// Prints the error and its hint to stderr and returns the exit code.
    fn report(&self) -> ExitCode {
        eprintln!("error: {}", self.message);
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
        exit_code(self.refusal)
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs one command to its end: logging, the async runtime, then the subcommand.
pub fn run(cli: Cli) -> ExitCode {
    // One TLS provider for every rustls client of the process (Postgres, the sinks' HTTPS).
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
    runtime.block_on(command(cli.command))
}

async fn command(command: Command) -> ExitCode {
    match command {
        Command::Check { config } => check(&config).await,
        Command::Status { config, json } => {
            with_config(&config, |cfg| async move {
                let status = status::read(&cfg).await;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&status).expect("status serializes")
                    );
                } else {
                    print!("{}", status.table());
                }
                status.exit_code()
            })
            .await
        }
        Command::Backfill { config, table } => {
            with_config(&config, |cfg| async move {
                match capture::request_backfill(&cfg, &table).await {
                    Ok(()) => {
                        println!(
                            "backfill of {table} requested: capture starts it when it reads the \
                             request from the WAL"
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => Stopped::of(&e).report(),
                }
            })
            .await
        }
        Command::Capture { config } => with_config(&config, run_capture).await,
        Command::Run { config } => with_config(&config, run_all).await,
        Command::Emulate {
            kind,
            port,
            host,
            allow_remote,
        } => emulate(kind, host, port, allow_remote).await,
        Command::Verify {
            config,
            name,
            repair,
        } => {
            with_config(&config, |cfg| async move {
                verify::run(&cfg, &name, repair)
                    .await
                    .unwrap_or_else(|e| Stopped::of(&e).report())
            })
            .await
        }
        Command::Sink {
            config,
            name,
            metrics_listen,
        } => {
            if let Some(addr) = metrics_listen {
                // Healthy while the process runs: a worker retries transient failures and
                // exits on fatal ones.
                serve_metrics(addr, Arc::new(|| true));
            }
            with_config(&config, |cfg| run_sink(cfg, name, None)).await
        }
        Command::Replay {
            config,
            name,
            from,
            dead_letters,
            full_resync,
        } => match from.parse::<ReplayFrom>() {
            Ok(from) => {
                let replay = sink::Replay {
                    from,
                    dead_letters,
                    full_resync,
                };
                with_config(&config, |cfg| run_sink(cfg, name, Some(replay))).await
            }
            Err(e) => {
                eprintln!("error: --from {e}");
                exit_code(Some(Refusal::Config))
            }
        },
    }
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

/// Loads and validates the config (every problem, with field paths), then runs `f` with it.
async fn with_config<F, Fut>(path: &Path, f: F) -> ExitCode
where
    F: FnOnce(Arc<ValidConfig>) -> Fut,
    Fut: Future<Output = ExitCode>,
{
    match config::load(path) {
        Ok(cfg) => f(Arc::new(cfg)).await,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(Some(Refusal::Config))
        }
    }
}

/// `driftless emulate`: runs `driftless-emulate` (the emulators are a binary of their own,
/// outside the product), found beside this executable or else on `PATH`; on Unix it replaces
/// this process, so stopping it stops the emulator.
async fn emulate(
    kind: crate::cli::EmulatorKind,
    host: std::net::IpAddr,
    port: u16,
    allow_remote: bool,
) -> ExitCode {
    use crate::cli::EmulatorKind;
    const PROGRAM: &str = "driftless-emulate";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(PROGRAM)))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| std::path::PathBuf::from(PROGRAM));
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
    if allow_remote {
        command.arg("--allow-remote");
    }
    let outcome = std::os::unix::process::CommandExt::exec(&mut command);
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
    with_config(path, |cfg| async move {
        let check::Preflight {
            problems: findings,
            warnings,
        } = check::preflight(&cfg).await;
        for w in warnings {
            eprintln!("warning: [{}] {}", w.system, w.message);
            if let Some(h) = &w.hint {
                eprintln!("    hint: {h}");
            }
        }
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
        exit_code(Some(Refusal::Config))
    })
    .await
}

/// A watch channel that turns true on SIGINT or SIGTERM.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// What `/healthz` asks: true while the process is healthy.
type HealthProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serves `/metrics` and `/healthz` on `addr` for the life of the process (a failure to
/// serve is logged: metrics are not worth stopping the pipeline for).
fn serve_metrics(addr: std::net::SocketAddr, healthy: HealthProbe) {
    match metrics::install() {
        Ok(handle) => {
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr, handle, healthy).await {
                    tracing::error!(%addr, error = %e, "metrics endpoint failed");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "metrics recorder not installed"),
    }
}

/// Serves the capture's metrics when the config asks for them.
fn serve_capture_metrics(cfg: &ValidConfig, health: &Arc<Health>) {
    if let Some(addr) = cfg.metrics_listen {
        let health = health.clone();
        serve_metrics(
            addr,
            Arc::new(move || health.streaming.load(Ordering::Relaxed)),
        );
    }
}

/// `driftless capture`: capture until a signal or a fatal error.
async fn run_capture(cfg: Arc<ValidConfig>) -> ExitCode {
    let health = Arc::new(Health::default());
    serve_capture_metrics(&cfg, &health);
    match capture::run(&cfg, shutdown_signal(), health).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "capture stopped");
            Stopped::of(&e).report()
        }
    }
}

/// `driftless run`: capture and every sink as supervised tasks of one process. The first task
/// to fail stops the others (each commits what it applied) and sets the exit code.
async fn run_all(cfg: Arc<ValidConfig>) -> ExitCode {
    let health = Arc::new(Health::default());
    serve_capture_metrics(&cfg, &health);
    let mut tasks = Supervisor::new(shutdown_signal());
    let (capture_cfg, stop) = (cfg.clone(), tasks.stop_signal());
    tasks.spawn("capture".into(), async move {
        capture::run(&capture_cfg, stop, health)
            .await
            .map_err(|e| Stopped::of(&e))
    });
    for sink in &cfg.sinks {
        let (cfg, name, stop) = (cfg.clone(), sink.name.clone(), tasks.stop_signal());
        tasks.spawn(format!("sink {name}"), async move {
            sink::run_named(&cfg, &name, stop)
                .await
                .map(|_| ())
                .map_err(|e| Stopped::of(&e))
        });
    }
    match tasks.join().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(stopped) => stopped.report(),
    }
}

/// `driftless sink`, or with `replay` `driftless replay` (ends when caught up).
async fn run_sink(cfg: Arc<ValidConfig>, name: String, replay: Option<sink::Replay>) -> ExitCode {
    let result = match &replay {
        None => sink::run_named(&cfg, &name, shutdown_signal()).await,
        Some(replay) => sink::replay_named(&cfg, &name, replay, shutdown_signal()).await,
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
            Stopped::of(&e).report()
        }
    }
}
