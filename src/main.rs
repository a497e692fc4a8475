//! The `driftless` command: parses the command line and hands it to the composition root
//! ([`driftless::app::run`]), which owns everything else, exit codes included.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    driftless::app::run(driftless::cli::Cli::parse())
}
