//! A PostgreSQL server of a test's own ([`OwnPostgres`]), for tests that stop, restart or crash
//! the server itself (the shared test cluster must keep serving the other tests).
//!
//! It is started by `scripts/pg-start` (the same settings as the shared cluster: logical WAL,
//! SCRAM, TLS) on a free port with its own run directory under `/var/tmp` (the `postgres` OS
//! user cannot enter the test's temp dir), and removed when the handle is dropped.

use std::path::PathBuf;
use std::process::Command;

use super::{free_port, repo_path, run_ok, unique};

/// A private cluster; stopped (immediate) and deleted on drop.
pub(crate) struct OwnPostgres {
    run_dir: PathBuf,
    data_dir: PathBuf,
    admin_url: String,
}

/// The PostgreSQL binaries the scripts use (`PG_BIN`, as in `scripts/lib.sh`).
fn pg_bin() -> String {
    std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

impl OwnPostgres {
    /// initdb + start on a free port.
    pub(crate) fn start() -> OwnPostgres {
        let port = free_port();
        let run_dir = PathBuf::from("/var/tmp").join(unique("driftless-own-pg"));
        let env = run_ok(
            Command::new(repo_path("scripts/pg-start"))
                .arg("--env")
                .env("PG_PORT", port.to_string())
                .env("DRIFTLESS_RUN", &run_dir),
        );
        let admin_url = env
            .lines()
            .find_map(|l| l.strip_prefix("export DRIFTLESS_PG_URL='"))
            .and_then(|l| l.strip_suffix('\''))
            .unwrap_or_else(|| panic!("pg-start printed no URL:\n{env}"))
            .to_string();
        OwnPostgres {
            data_dir: run_dir.join(format!("pg15-{port}")),
            run_dir,
            admin_url,
        }
    }

    /// The superuser URL (database `postgres`).
    pub(crate) fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// `pg_ctl {args}` on this cluster, as the `postgres` user; panics if it fails.
    pub(crate) fn pg_ctl(&self, args: &[&str]) {
        let log = self.data_dir.join("server.log");
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{}/pg_ctl", pg_bin()))
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60"])
                .args(args),
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{}/pg_ctl", pg_bin()))
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
