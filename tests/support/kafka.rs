//! The test broker: its address ([`brokers`]), a reader of topics from the beginning
//! ([`read_topic`] and its variants), views of change events read back ([`by_key`],
//! [`captured_origins`]), and a tansu broker of a test's own ([`OwnBroker`]).

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

use super::wait::WAIT;
use super::{required_env, unique, wait_for_port};

/// Partitions of every topic of a test [`super::Setup`].
pub(crate) const PARTITIONS: usize = 2;

/// The bootstrap servers of the test broker.
pub(crate) fn brokers() -> String {
    required_env("DRIFTLESS_KAFKA_BROKERS", "the test broker")
}

/// librdkafka options the test broker needs (`DRIFTLESS_TEST_LIBRDKAFKA`, `key=value;...`),
/// as a `[kafka.librdkafka]` table (empty when there are none).
pub(crate) fn broker_workarounds() -> String {
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
/// A record read back from Kafka.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: BTreeMap<String, String>,
}

impl Record {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(self.payload.as_deref().expect("payload")).expect("json payload")
    }
}

/// Reads a topic from the beginning until `done(records)` or the timeout.
pub(crate) fn read_topic(
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    read_topic_from(&brokers(), topic, timeout, done)
}

/// [`read_topic`] from another broker.
pub(crate) fn read_topic_from(
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

/// Reads `topic` until `sentinels` records that `is_sentinel` picks are there, and checks that
/// they cover every partition of a test topic ([`PARTITIONS`]): every partition was read past
/// what was written before them. Returns all records.
pub(crate) fn read_through_sentinels(
    topic: &str,
    sentinels: usize,
    is_sentinel: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    let records = read_topic(topic, WAIT, |r| {
        r.iter().filter(|x| is_sentinel(x)).count() >= sentinels
    });
    let partitions: std::collections::BTreeSet<i32> = records
        .iter()
        .filter(|r| is_sentinel(r))
        .map(|r| r.partition)
        .collect();
    assert_eq!(
        partitions.len(),
        PARTITIONS,
        "the sentinels cover every partition"
    );
    records
}

/// Reads a capture topic of rows keyed `{"id":1}` .. `{"id":rows}` until every row is there
/// (or `timeout`), and asserts capture's delivery promise: every committed row arrived, and
/// every event that arrived more than once (a re-send after a crash) is byte-identical to its
/// first copy. Returns how many re-sent copies there were.
pub(crate) fn assert_every_row_arrived(topic: &str, rows: usize, timeout: Duration) -> usize {
    let records = read_topic(topic, timeout, |r| {
        r.len() >= rows && {
            let keys: std::collections::HashSet<&[u8]> =
                r.iter().filter_map(|x| x.key.as_deref()).collect();
            keys.len() >= rows
        }
    });
    let keys: std::collections::HashSet<&[u8]> =
        records.iter().filter_map(|r| r.key.as_deref()).collect();
    if keys.len() != rows {
        let mut missing: Vec<usize> = (1..=rows)
            .filter(|i| !keys.contains(format!("{{\"id\":{i}}}").as_bytes()))
            .collect();
        missing.truncate(20);
        panic!(
            "{} of {rows} rows arrived; missing (first 20): {missing:?}; watermarks: {:?}",
            keys.len(),
            watermarks(topic)
        );
    }
    let mut by_id: HashMap<String, Vec<&[u8]>> = HashMap::new();
    for r in &records {
        by_id
            .entry(r.json()["id"].as_str().expect("event id").to_string())
            .or_default()
            .push(r.payload.as_deref().expect("payload"));
    }
    assert_eq!(by_id.len(), rows, "one event per row");
    let mut resent = 0;
    for (id, copies) in &by_id {
        for copy in &copies[1..] {
            resent += 1;
            assert_eq!(copy, &copies[0], "re-sent event {id} is byte-identical");
        }
    }
    eprintln!(
        "{} records, {rows} rows, {resent} re-sent copies",
        records.len()
    );
    resent
}

/// Reads until at least `n` records arrived (or the timeout); returns them in per-partition
/// order.
pub(crate) fn read_n(topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
    read_topic(topic, timeout, |r| r.len() >= n)
}

/// Reads for a while after the expected records, to catch extra ones.
pub(crate) fn read_settled(topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
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

/// Exactly `n` records of `topic`: reads as [`read_settled`] (up to [`WAIT`]) and asserts that
/// no more and no fewer arrived.
pub(crate) fn read_exactly(topic: &str, n: usize) -> Vec<Record> {
    let records = read_settled(topic, n, WAIT);
    assert_eq!(records.len(), n, "{n} records of {topic}: {records:?}");
    records
}

/// Reads until at least `n` records are there and none arrived for 2 s (a topic still being
/// written to whose final count is unknown).
pub(crate) fn read_until_quiet(topic: &str, n: usize, timeout: Duration) -> Vec<Record> {
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
pub(crate) fn change_origins(records: &[Record]) -> Vec<Option<String>> {
    records
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            v["source"]["origin"].as_str().map(String::from)
        })
        .collect()
}

/// The origins of exactly `expected` captured changes of `topic` (no more arrive for 2 s).
pub(crate) fn captured_origins(topic: &str, expected: usize) -> Vec<Option<String>> {
    change_origins(&read_exactly(topic, expected))
}

/// Events of a topic as JSON, grouped by key (in offset order within the key's partition).
pub(crate) fn by_key(records: &[Record]) -> BTreeMap<String, Vec<Value>> {
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

/// A tansu broker of a test's own (sqlite storage in a temp dir), stopped on drop.
pub(crate) struct OwnBroker {
    child: Child,
    _dir: tempfile::TempDir,
}

impl OwnBroker {
    pub(crate) fn start(port: u16) -> OwnBroker {
        let bin = required_env("DRIFTLESS_TANSU_BIN", "the tansu binary");
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
        wait_for_port(port, "tansu");
        OwnBroker { child, _dir: dir }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The low and high watermarks of each partition of a test topic ([`PARTITIONS`]).
pub(crate) fn watermarks(topic: &str) -> Vec<(i32, i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    (0..PARTITIONS as i32)
        .map(|p| {
            let (lo, hi) = c
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap();
            (p, lo, hi)
        })
        .collect()
}

/// The records a topic holds now (capture writes no transaction markers: offsets are
/// contiguous).
pub(crate) fn topic_len(topic: &str) -> u64 {
    watermarks(topic)
        .iter()
        .map(|(_, lo, hi)| (hi - lo) as u64)
        .sum()
}
