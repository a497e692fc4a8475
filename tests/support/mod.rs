//! Test harness: a database per test on the shared local Postgres, a unique topic prefix on the
//! shared tansu broker, the real `driftless` binary as a child process, and a Kafka reader.
//!
//! The services are started by `scripts/test` (which exports `DRIFTLESS_PG_URL` and
//! `DRIFTLESS_KAFKA_BROKERS`); a test fails loudly when they are missing.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driftless::postgres::connect::{ConnectParams, connect_sql};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use tokio_postgres::Client;

/// Env var with the superuser URL of the test cluster (database `postgres`).
pub const PG_URL_ENV: &str = "DRIFTLESS_PG_URL";
/// Env var with the bootstrap servers of the test broker.
pub const KAFKA_ENV: &str = "DRIFTLESS_KAFKA_BROKERS";

pub fn pg_admin_url() -> String {
    std::env::var(PG_URL_ENV)
        .unwrap_or_else(|_| panic!("{PG_URL_ENV} is not set: run the tests with scripts/test"))
}

pub fn brokers() -> String {
    std::env::var(KAFKA_ENV)
        .unwrap_or_else(|_| panic!("{KAFKA_ENV} is not set: run the tests with scripts/test"))
}

/// librdkafka options the test broker needs (`DRIFTLESS_TEST_LIBRDKAFKA`, `key=value;...`).
pub fn broker_workarounds() -> String {
    let Ok(opts) = std::env::var("DRIFTLESS_TEST_LIBRDKAFKA") else {
        return String::new();
    };
    let pairs: Vec<String> = opts
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
        .collect();
    format!("[kafka.librdkafka]\n{}", pairs.join("\n"))
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

/// Replaces the database of a Postgres URL.
pub fn url_with_db(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map(|(b, q)| (b, Some(q)))
        .unwrap_or((url, None));
    let idx = base.rfind('/').expect("url has a path");
    let mut out = format!("{}/{db}", &base[..idx]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

pub async fn connect(url: &str) -> Client {
    let params = ConnectParams::from_url(url).expect("valid url");
    connect_sql(&params)
        .await
        .expect("connect to test postgres")
}

/// A database of its own, dropped (with its slots) at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub client: Client,
}

impl TestDb {
    pub async fn new(tag: &str) -> TestDb {
        let name = unique(&format!("t_{tag}"));
        let admin = connect(&pg_admin_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let url = url_with_db(&pg_admin_url(), &name);
        let client = connect(&url).await;
        TestDb { name, url, client }
    }

    pub async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    pub async fn slot_confirmed_flush(&self, slot: &str) -> Option<String> {
        self.client
            .query_opt(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .and_then(|r| r.get(0))
    }

    pub async fn drop_db(self) {
        let admin = connect(&pg_admin_url()).await;
        let _ = admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                 WHERE database = '{0}' AND active_pid IS NOT NULL; \
                 SELECT pg_sleep(0.2); \
                 SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE database = '{0}'; \
                 DROP DATABASE IF EXISTS {0} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// One capture configuration in a temporary directory.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub prefix: String,
    pub slot: String,
    pub db_url: String,
}

impl Setup {
    /// `tables` as `schema.table`; `extra_source` / `extra_kafka` are appended TOML lines.
    pub fn new(db: &TestDb, tables: &[&str], extra_source: &str, extra_kafka: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let prefix = unique("dl");
        let slot = unique("slot");
        let tables = tables
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"
[source]
url_env = "DRIFTLESS_SOURCE_URL"
slot = "{slot}"
publication = "{slot}"
tables = [{tables}]
status_interval_ms = 200
{extra_source}

[kafka]
brokers = "{brokers}"
topic_prefix = "{prefix}"
partitions = 2
{extra_kafka}
{librdkafka}

[capture]
state_dir = "{state}"
metrics_listen = "off"
"#,
            brokers = brokers(),
            librdkafka = broker_workarounds(),
            state = dir.path().join("state").display(),
        );
        let config = dir.path().join("driftless.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            dir,
            config,
            prefix,
            slot,
            db_url: db.url.clone(),
        }
    }

    pub fn topic(&self, table: &str) -> String {
        format!("{}.{}", self.prefix, table)
    }

    pub fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_driftless"));
        c.arg(sub)
            .arg("--config")
            .arg(&self.config)
            .env("DRIFTLESS_SOURCE_URL", &self.db_url)
            .env("DRIFTLESS_LOG", "info,rdkafka=warn");
        c
    }

    /// Starts `driftless capture`; its log goes to a file shown when the test fails.
    pub fn start(&self) -> Capture {
        self.start_with("capture", &[], &[])
    }

    /// Starts `driftless {sub} --config ... {args}` with extra environment variables.
    pub fn start_with(&self, sub: &str, args: &[&str], env: &[(&str, &str)]) -> Capture {
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
        Capture {
            child: Some(child),
            log,
        }
    }
}

/// A running capture process (killed on drop).
pub struct Capture {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Capture {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until capture streams from the slot (the initial snapshot is done); fails at once
    /// with the log if capture stopped.
    pub async fn wait_streaming(&self) {
        eventually("capture streaming", Duration::from_secs(60), || async {
            let log = self.log_text();
            assert!(!log.contains("capture stopped"), "capture exited:\n{log}");
            log.contains("replication started")
        })
        .await;
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
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

impl Drop for Capture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- capture log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        self.kill9();
    }
}

/// A record read back from Kafka.
#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub timestamp_ms: Option<i64>,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.payload.as_deref().expect("payload")).expect("json payload")
    }
}

/// Reads a topic from the beginning until `done(records)` or the timeout.
pub fn read_topic(
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    read_topic_from(&brokers(), topic, timeout, done)
}

/// [`read_topic`] from another broker.
pub fn read_topic_from(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let partitions = loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
        if let Ok(md) = md {
            let n = md
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if n > 0 {
                break n as i32;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    // `done` may be costly (it can look at every record): ask it only when caught up (no
    // message within the poll interval) or every 10k records, never per record.
    let mut check = true;
    while !(check && done(&out)) && Instant::now() < deadline {
        check = out.len() % 10_000 == 0;
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("kafka read");
            out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| k.to_vec()),
                payload: m.payload().map(|p| p.to_vec()),
                timestamp_ms: m.timestamp().to_millis(),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                                (h.key.to_string(), v.to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        } else {
            check = true;
        }
    }
    out
}

/// Reads until at least `n` records arrived (or the timeout); returns them in per-partition
/// order.
pub fn read_n(topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
    read_topic(topic, timeout, |r| r.len() >= n)
}

/// Reads for a while after the expected records, to catch extra ones.
pub fn read_settled(topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
    let mut seen_at: Option<Instant> = None;
    read_topic(topic, timeout, |r| {
        if r.len() >= n {
            let t = *seen_at.get_or_insert_with(Instant::now);
            t.elapsed() > Duration::from_secs(2)
        } else {
            false
        }
    })
}

/// Reads until at least `n` records are there and none arrived for 2 s (a topic still being
/// written to whose final count is unknown).
pub fn read_until_quiet(topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
    let mut last = 0;
    let mut quiet_since = Instant::now();
    read_topic(topic, timeout, |r| {
        if r.len() != last {
            last = r.len();
            quiet_since = Instant::now();
        }
        r.len() >= n && quiet_since.elapsed() > Duration::from_secs(2)
    })
}

/// The `source.origin` of each change event (None: not written under a replication origin).
pub fn change_origins(records: &[Record]) -> Vec<Option<String>> {
    records
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            v["source"]["origin"].as_str().map(String::from)
        })
        .collect()
}

/// The origins of exactly `expected` captured changes of `topic` (no more arrive for 2 s).
pub fn captured_origins(topic: &str, expected: usize) -> Vec<Option<String>> {
    let records = read_settled(topic, expected, Duration::from_secs(30));
    assert_eq!(records.len(), expected, "changes captured");
    change_origins(&records)
}

/// Waits until `cond` or panics with `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Events of a topic as JSON, grouped by key (in offset order within the key's partition).
pub fn by_key(records: &[Record]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for r in sorted {
        let key = String::from_utf8(r.key.clone().unwrap_or_default()).unwrap();
        if r.payload.is_some() {
            out.entry(key).or_default().push(r.json());
        }
    }
    out
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A tansu broker of a test's own (sqlite storage in a temp dir), stopped on drop.
pub struct OwnBroker {
    child: Child,
    _dir: tempfile::TempDir,
}

impl OwnBroker {
    pub fn start(port: u16) -> OwnBroker {
        let bin = std::env::var("DRIFTLESS_TANSU_BIN")
            .expect("DRIFTLESS_TANSU_BIN (set by scripts/test) names the tansu binary");
        let dir = tempfile::tempdir().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not open port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnBroker { child, _dir: dir }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port nobody listens on (right now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An emulator process on a free loopback port, started as users start it (`driftless emulate
/// KIND`, which runs the `driftless-emulate` binary built next to `driftless`); killed on drop.
pub struct Emulator {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Emulator {
    /// Starts the emulator and waits until it accepts connections.
    pub fn start(kind: &str) -> Emulator {
        let driftless = std::path::Path::new(env!("CARGO_BIN_EXE_driftless"));
        let emulate =
            driftless.with_file_name(format!("driftless-emulate{}", std::env::consts::EXE_SUFFIX));
        assert!(
            emulate.is_file(),
            "{} is missing: build it first with `cargo build -p driftless-emulators` \
             (scripts/test does)",
            emulate.display()
        );
        let port = free_port();
        let child = Command::new(driftless)
            .args(["emulate", kind, "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "emulator did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Emulator { child, port }
    }

    /// `GET /_emulator/state`.
    pub async fn state(&self) -> Value {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/_emulator/state", self.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs JSON to a path of the emulator; returns the status and the JSON answer (Null when
    /// empty).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}{path}", self.port))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
