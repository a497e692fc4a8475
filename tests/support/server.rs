//! A PostgreSQL server of a test's own ([`OwnPostgres`]), for tests that stop, restart or crash
//! the server itself (the shared test cluster must keep serving the other tests).
//!
//! It is started by `scripts/pg-start` (the same settings as the shared cluster: logical WAL,
//! SCRAM, TLS) on a free port with its own run directory under `/var/tmp` (the `postgres` OS
//! user cannot enter the test's temp dir), and removed when the handle is dropped. Its major
//! version is the shared cluster's (`DRIFTLESS_PG_MAJOR`, as `scripts/pg-start --env` prints
//! it), so a test run against PostgreSQL 17 restarts a PostgreSQL 17.
//!
//! [`OwnPostgres::standby_of`] makes a physical standby of such a server, as `pg_basebackup
//! -R` would (the npm server packages ship no `pg_basebackup`, and Debian's 15 does not stream
//! from newer servers): a low-level base backup (`pg_backup_start` / copy / `pg_backup_stop`),
//! then `standby.signal` and the connection to the primary in `postgresql.auto.conf`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{connect, free_port, repo_path, run_ok, unique};

/// A private cluster; stopped (immediate) and deleted on drop.
pub(crate) struct OwnPostgres {
    run_dir: PathBuf,
    data_dir: PathBuf,
    /// The server's binaries (`pg_ctl`).
    bin: String,
    admin_url: String,
    port: u16,
}

/// What a base backup leaves out of the data directory (PostgreSQL's "Making a Base Backup
/// Using the Low Level API"): the server's run-time files (and its log, which `pg_ctl -l`
/// writes there), and the contents (not the directories) of the WAL, the replication slots
/// and the temporary state.
const NOT_BACKED_UP: [&str; 3] = ["postmaster.pid", "postmaster.opts", "server.log"];
const EMPTIED: [&str; 8] = [
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

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
            port,
        }
    }

    /// A physical standby of `primary` (same version, same settings), started: it streams
    /// from `primary` through the physical slot `slot` (created here, reserving WAL before the
    /// backup starts) and has `settings` (`postgresql.conf` lines) added to its configuration.
    pub(crate) async fn standby_of(primary: &OwnPostgres, slot: &str, settings: &str) -> Self {
        let port = free_port();
        let run_dir = PathBuf::from("/var/tmp").join(unique("driftless-own-pg"));
        let data_dir = run_dir.join(format!("standby-{port}"));
        let admin = connect(&primary.admin_url).await;
        admin
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true)",
                &[&slot],
            )
            .await
            .expect("physical slot for the standby");
        admin
            .execute("SELECT pg_backup_start('standby', true)", &[])
            .await
            .expect("pg_backup_start");
        copy_data_dir(&primary.data_dir, &data_dir, true);
        let stop = admin
            .query_one(
                "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)",
                &[],
            )
            .await
            .expect("pg_backup_stop");
        std::fs::write(data_dir.join("backup_label"), stop.get::<_, String>(0)).unwrap();
        let spcmap: String = stop.get(1);
        if !spcmap.is_empty() {
            std::fs::write(data_dir.join("tablespace_map"), spcmap).unwrap();
        }
        let mut url = url::Url::parse(&primary.admin_url).expect("admin url");
        let password = url
            .password()
            .expect("admin url has a password")
            .to_string();
        let conf = format!(
            "\n# standby of port {primary_port}, as pg_basebackup -R writes it\n\
             port = {port}\n\
             unix_socket_directories = '{dir}'\n\
             primary_conninfo = 'host=127.0.0.1 port={primary_port} user={user} \
             password={password} dbname=postgres sslmode=prefer application_name=standby'\n\
             primary_slot_name = '{slot}'\n{settings}\n",
            primary_port = primary.port,
            dir = data_dir.display(),
            user = url.username(),
        );
        let auto = data_dir.join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&auto).unwrap_or_default() + &conf;
        std::fs::write(&auto, text).unwrap();
        std::fs::write(data_dir.join("standby.signal"), "").unwrap();
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&run_dir),
        );
        url.set_port(Some(port)).unwrap();
        let standby = OwnPostgres {
            run_dir,
            data_dir,
            bin: primary.bin.clone(),
            admin_url: url.into(),
            port,
        };
        standby.pg_ctl(&["start"]);
        standby
    }

    /// The superuser URL (database `postgres`).
    pub(crate) fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The port it listens on (127.0.0.1).
    pub(crate) fn port(&self) -> u16 {
        self.port
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

/// Copies a running server's data directory (`root`: the top level) for a base backup,
/// leaving out what [`NOT_BACKED_UP`] and [`EMPTIED`] name. Files that vanish while it copies
/// (temporary files of the running server) are skipped: WAL replay from the backup's start
/// makes the copy consistent.
fn copy_data_dir(from: &Path, to: &Path, root: bool) {
    std::fs::create_dir_all(to).unwrap();
    if root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if root && NOT_BACKED_UP.contains(&name_str.as_ref()) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let target = to.join(&name);
        if kind.is_dir() {
            if root && EMPTIED.contains(&name_str.as_ref()) {
                std::fs::create_dir_all(&target).unwrap();
            } else {
                copy_data_dir(&entry.path(), &target, false);
            }
        } else if kind.is_file() {
            match std::fs::copy(entry.path(), &target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => {
                    r.unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
                }
            }
        }
    }
    if root {
        std::fs::create_dir_all(to.join("pg_wal/archive_status")).unwrap();
    }
}
