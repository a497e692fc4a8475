//! Test harness of the integration tests: a database per test on the shared local Postgres
//! ([`db`]), a unique topic prefix on the shared tansu broker and a Kafka reader ([`kafka`]), the
//! real `driftless` binary as a child process ([`process`]), a Postgres server of a test's own
//! to stop and restart, and a standby of it ([`server`]), a TCP forwarder standing in for a
//! moved address ([`forward`]), the CRM emulators ([`emulator`]),
//! waiting for a condition or a sentinel ([`wait`]) and the two-way sync harness ([`two_way`]).
//!
//! The services are started by `scripts/test`, which exports their addresses; a test panics
//! with the missing variable's name when one is not set, it never skips.

pub(crate) mod db;
pub(crate) mod emulator;
pub(crate) mod forward;
pub(crate) mod kafka;
pub(crate) mod process;
pub(crate) mod server;
pub(crate) mod two_way;
pub(crate) mod wait;

use std::path::{Path, PathBuf};

pub(crate) use db::{Setup, TestDb, TestRole, connect, load_rows, pg_admin_url};
pub(crate) use emulator::Emulator;
pub(crate) use forward::Forwarder;
pub(crate) use kafka::{
    OwnBroker, Record, assert_every_row_arrived, brokers, by_key, read_exactly, read_n,
    read_settled, read_through_sentinels, read_topic, read_topic_from, read_until_quiet, topic_len,
};
pub(crate) use process::{
    DriftlessProcess, audit_hash, capture_streaming, capture_streaming_with, stop_cleanly,
};
pub(crate) use server::OwnPostgres;
pub(crate) use wait::{WAIT, eventually};

/// Tests that each run one shared scenario: every `name => scenario;` becomes a multi-threaded
/// tokio test `name` that awaits `scenario` (the name says the behaviour, the arguments what
/// differs between the tests).
macro_rules! scenario_tests {
    ($($name:ident => $scenario:expr;)+) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            $scenario.await;
        }
    )+};
}
pub(crate) use scenario_tests;

/// The value of an environment variable the tests need; panics with `why` when it is missing.
pub(crate) fn required_env(name: &str, why: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set ({why}): run the integration tests with scripts/test")
    })
}

/// The position of an LSN in its text form (`16/B374D848`), as a number.
pub(crate) fn lsn_num(s: &str) -> u64 {
    s.parse::<driftless::lsn::Lsn>()
        .unwrap_or_else(|e| panic!("lsn {s}: {e:?}"))
        .as_u64()
}

/// `prefix` with a random suffix: names of databases, topics, slots and sinks.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

/// A TCP port nobody listens on (right now).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (blocking, up to 30 s) until something listens on `port` of the loopback; panics
/// naming `what` otherwise.
pub(crate) fn wait_for_port(port: u16, what: &str) {
    wait_for_port_of(port, what, std::time::Duration::from_secs(30), String::new);
}

/// [`wait_for_port`] up to `timeout`, with `log()` (e.g. the process's log) in the message.
pub(crate) fn wait_for_port_of(
    port: u16,
    what: &str,
    timeout: std::time::Duration,
    log: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} does not listen on port {port}\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs `cmd` to its end and asserts that it succeeded (its stdout and stderr in the message);
/// returns its stdout.
pub(crate) fn run_ok(cmd: &mut std::process::Command) -> String {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| panic!("{program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {:?}: {}\n{stdout}\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A seeded pseudo-random source (an LCG, the same sequence on every run): `rnd(n)` is in
/// `0..n`.
pub(crate) fn seeded_random(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    }
}

/// A path inside the repository.
pub(crate) fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// An HTTP client for the emulators and the receivers (installs the TLS crypto provider
/// reqwest needs, once per process).
pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The counts a `driftless replay` prints (`replayed: records=N batches=N dead_letters=N
/// retries=N`), by name; panics when the line is missing.
pub(crate) fn replayed(stdout: &str) -> std::collections::BTreeMap<String, u64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("replayed: "))
        .unwrap_or_else(|| panic!("no replay summary in: {stdout}"));
    line.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
