//! The real `driftless` binary as a child process ([`DriftlessProcess`]): `capture`, `sink`,
//! `run`, started from a [`Setup`]. Its log goes to a file that is printed when the test
//! panics; the process is killed when the handle is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driftless::sink::audit::{KeyHasher, RecordKey};

use super::db::{Setup, TestDb};
use super::wait::{WAIT, eventually};

/// The audit key hash secret, in the variable every test configuration's `[audit] key_env`
/// names (`DRIFTLESS_AUDIT_KEY`).
pub(crate) const AUDIT_KEY: &str = "driftless-test-audit-key";

/// The audit trail's hash of a row's record key text (`"1"` for the key `{"id":1}`).
pub(crate) fn audit_hash(key: &str) -> String {
    KeyHasher::new(AUDIT_KEY.as_bytes()).hash(RecordKey::Text(key))
}

impl Setup {
    /// `driftless {sub} --config ...` against the test database (not started).
    pub(crate) fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_driftless"));
        c.arg(sub)
            .arg("--config")
            .arg(&self.config)
            .env("DRIFTLESS_SOURCE_URL", &self.db_url)
            .env("DRIFTLESS_AUDIT_KEY", AUDIT_KEY)
            .env("DRIFTLESS_LOG", "info,rdkafka=warn");
        c
    }

    /// Starts `driftless capture`.
    pub(crate) fn start(&self) -> DriftlessProcess {
        self.start_with("capture", &[], &[])
    }

    /// Starts `driftless {sub} --config ... {args}` with extra environment variables.
    pub(crate) fn start_with(
        &self,
        sub: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> DriftlessProcess {
        let log = self
            .dir
            .path()
            .join(format!("{sub}-{}.log", rand::random::<u16>()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = self.command(sub);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file);
        let child = cmd.spawn().expect("spawn driftless");
        DriftlessProcess {
            child: Some(child),
            log,
        }
    }
}

/// A running `driftless` process (killed on drop).
pub(crate) struct DriftlessProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl DriftlessProcess {
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no chance to flush anything.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub(crate) fn stop(&mut self) -> Option<i32> {
        let c = self.child.as_ref()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let code = self.wait_exit(Duration::from_secs(30));
        self.kill9();
        code
    }

    /// Waits until capture streams from the slot (the initial snapshot is done); fails at once
    /// with the log if capture stopped.
    pub(crate) async fn wait_streaming(&self) {
        eventually("capture streaming", WAIT, || async {
            let log = self.log_text();
            assert!(!log.contains("capture stopped"), "capture exited:\n{log}");
            log.contains("replication started")
        })
        .await;
    }

    /// The process id while the process runs (None once it exited or was killed).
    pub(crate) fn running_pid(&mut self) -> Option<u32> {
        let c = self.child.as_mut()?;
        c.try_wait().unwrap().is_none().then(|| c.id())
    }

    /// Waits for the process to exit by itself; returns its exit code (None: it still runs,
    /// or was killed by a signal).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DriftlessProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- driftless log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        self.kill9();
    }
}

/// The start of most capture tests: a database of its own with `ddl` run, a [`Setup`] for
/// `tables`, and capture streaming from its slot.
pub(crate) async fn capture_streaming(
    tag: &str,
    ddl: &str,
    tables: &[&str],
) -> (TestDb, Setup, DriftlessProcess) {
    capture_streaming_with(tag, ddl, tables, "", "").await
}

/// [`capture_streaming`] with extra TOML lines of `[source]` and `[kafka]`.
pub(crate) async fn capture_streaming_with(
    tag: &str,
    ddl: &str,
    tables: &[&str],
    extra_source: &str,
    extra_kafka: &str,
) -> (TestDb, Setup, DriftlessProcess) {
    let db = TestDb::new(tag).await;
    db.exec(ddl).await;
    let setup = Setup::new(&db, tables, extra_source, extra_kafka);
    let cap = setup.start();
    cap.wait_streaming().await;
    (db, setup, cap)
}

/// The end of most capture tests: capture stops cleanly (exit 0), then the database is dropped.
pub(crate) async fn stop_cleanly(cap: &mut DriftlessProcess, db: TestDb) {
    assert_eq!(cap.stop(), Some(0), "clean shutdown exits 0");
    db.drop_db().await;
}
