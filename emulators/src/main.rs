//! `driftless-emulate hubspot|zoho|webhook [--port 8081] [--host 127.0.0.1]`: runs one emulator
//! until killed. Logs go to stderr, filtered by `DRIFTLESS_LOG` (default `info`).

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use driftless_emulators::Kind;

/// Run a local emulator of a SaaS API (development, demo, tests).
#[derive(Parser)]
#[command(name = "driftless-emulate", version)]
struct Cli {
    /// Which API.
    #[arg(value_enum)]
    kind: Kind,
    /// Port.
    #[arg(long, default_value_t = 8081)]
    port: u16,
    /// Address to bind (loopback by default; `0.0.0.0` inside a container).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let addr = SocketAddr::from((cli.host, cli.port));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(driftless_emulators::serve(cli.kind, addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: emulator on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
