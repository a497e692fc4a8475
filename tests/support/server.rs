//! A PostgreSQL server of a test's own ([`OwnPostgres`]), for tests that stop, restart or crash
//! the server itself (the shared test cluster must keep serving the other tests).
//!
//! It is started by `scripts/pg-start` (the same settings as the shared cluster: logical WAL,
//! SCRAM, TLS) on a free port with its own run directory under `/var/tmp` (the `postgres` OS
//! user cannot enter the test's temp dir), and removed when the handle is dropped. Its major
//! version is the shared cluster's (`DRIFTLESS_PG_MAJOR`, as `scripts/pg-start --env` prints
//! it), so a test run against PostgreSQL 17 restarts a PostgreSQL 17.

use std::path::PathBuf;
use std::process::Command;

use super::{free_port, repo_path, run_ok, unique};

/// A private cluster; stopped (immediate) and deleted on drop.
pub(crate) struct OwnPostgres {
    run_dir: PathBuf,
    data_dir: PathBuf,
    /// The server's binaries (`pg_ctl`).
    bin: String,
    admin_url: String,
}

impl OwnPostgres {
    /// initdb + start on a free port.
    pub(crate) fn start() -> OwnPostgres {
        let port = free_port();
        let run_dir = PathBuf::from("/var/tmp").join(unique("driftless-own-pg"));
        let major = super::required_env("DRIFTLESS_PG_MAJOR", "the test Postgres's version");
        let env = run_ok(
            Command::new(repo_path("scripts/pg-start"))
                .arg("--env")
                .env("PG_MAJOR", major)
                .env("PG_PORT", port.to_string())
                .env("DRIFTLESS_RUN", &run_dir),
        );
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}='")))
                .and_then(|l| l.strip_suffix('\''))
                .unwrap_or_else(|| panic!("pg-start printed no {name}:\n{env}"))
                .to_string()
        };
        OwnPostgres {
            data_dir: PathBuf::from(var("DRIFTLESS_PG_DATA")),
            bin: var("DRIFTLESS_PG_BIN"),
            admin_url: var("DRIFTLESS_PG_URL"),
            run_dir,
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
                .arg(format!("{}/pg_ctl", self.bin))
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
            .arg(format!("{}/pg_ctl", self.bin))
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
