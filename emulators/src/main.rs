//! `driftless-emulate hubspot|zoho|webhook [--port 8081] [--host 127.0.0.1] [--allow-remote]`:
//! runs one emulator until killed. Logs go to stderr, filtered by `DRIFTLESS_LOG` (default
//! `info`). An emulator has open fault and reset endpoints and fixed credentials, so it binds
//! only loopback addresses unless `--allow-remote` says otherwise (inside a container whose
//! port is published on the host's loopback only).

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
    /// Address to bind (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Allow a non-loopback `--host` (e.g. `0.0.0.0` inside a container).
    #[arg(long)]
    allow_remote: bool,
}

/// Why binding `host` is refused, if it is.
fn bind_refusal(host: IpAddr, allow_remote: bool) -> Option<String> {
    (!host.is_loopback() && !allow_remote).then(|| {
        format!(
            "refusing to listen on {host}: an emulator has open fault and reset endpoints and \
             fixed credentials; bind a loopback address, or pass --allow-remote (e.g. inside a \
             container whose port is published on loopback only)"
        )
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(refusal) = bind_refusal(cli.host, cli.allow_remote) {
        eprintln!("error: {refusal}");
        return ExitCode::from(2);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_bound_unless_remote_is_allowed() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        for loopback in ["127.0.0.1", "::1"] {
            assert_eq!(bind_refusal(loopback.parse().unwrap(), false), None);
        }
        assert!(bind_refusal(any, false).unwrap().contains("--allow-remote"));
        assert!(bind_refusal(lan, false).is_some());
        assert_eq!(bind_refusal(any, true), None);
    }
}
