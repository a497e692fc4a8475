//! Capture behaviour against real Postgres + tansu.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn insert_update_delete_truncate_are_captured() {
    let (db, setup, mut cap) = capture_streaming(
        "iudt",
        "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, score int)",
        &["public.contacts"],
    )
    .await;
    let topic = setup.topic("public.contacts");
    // The slot exists once capture has started streaming.
    db.exec("INSERT INTO contacts VALUES (1, 'a@x.io', 1), (2, 'b@x.io', 2)")
        .await;
    db.exec("UPDATE contacts SET score = 10 WHERE id = 1").await;
    db.exec("DELETE FROM contacts WHERE id = 2").await;
    db.exec("TRUNCATE contacts").await;
    let records = read_n(&topic, 5, WAIT);
    assert_eq!(records.len(), 5, "{records:?}");
    let mut events: Vec<Value> = records.iter().map(|r| r.json()).collect();
    events.sort_by_key(|e| {
        (
            e["source"]["commit_lsn"].as_str().map(lsn_num),
            e["id"].as_str().map(String::from),
        )
    });
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "c", "u", "d", "t"]);
    assert_eq!(
        events[0]["after"],
        json!({"id": 1, "email": "a@x.io", "score": 1})
    );
    assert_eq!(events[0]["key"], json!({"id": 1}));
    assert_eq!(events[2]["after"]["score"], 10);
    assert_eq!(
        events[2]["before"],
        Value::Null,
        "DEFAULT identity: no old row on update"
    );
    assert_eq!(
        events[3]["before"],
        json!({"id": 2}),
        "DEFAULT identity: delete has only the key"
    );
    assert_eq!(events[3]["after"], Value::Null);
    assert_eq!(events[4]["key"], Value::Null);
    assert_eq!(events[0]["source"]["table"], "contacts");
    assert_eq!(events[0]["source"]["db"], db.name.as_str());
    assert_eq!(events[0]["source"]["snapshot"], false);
    // Kafka keys are the canonical JSON of the primary key.
    let keyed: Vec<_> = records.iter().filter_map(|r| r.key.clone()).collect();
    assert!(keyed.contains(&br#"{"id":1}"#.to_vec()));
    // Ids are commit LSN + ordinal, unique.
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert_eq!(
        events[0]["id"].as_str().unwrap(),
        format!("{}:0", events[0]["source"]["commit_lsn"].as_str().unwrap())
    );
    stop_cleanly(&mut cap, db).await;
}

/// Applies each key's events in order and returns the final row per key (deletes remove).
fn final_state(records: &[Record]) -> std::collections::BTreeMap<i64, Value> {
    let mut state = std::collections::BTreeMap::new();
    for (_, events) in by_key(records) {
        for e in events {
            match e["op"].as_str().unwrap() {
                "c" | "u" | "r" => {
                    state.insert(e["key"]["id"].as_i64().unwrap(), e["after"].clone());
                }
                "d" => {
                    state.remove(&e["key"]["id"].as_i64().unwrap());
                }
                _ => {}
            }
        }
    }
    state
}

async fn table_state(db: &TestDb, sql: &str) -> std::collections::BTreeMap<i64, Value> {
    db.client
        .query(&format!("SELECT id, to_jsonb(t) FROM ({sql}) t"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, Value>(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_with_concurrent_writes_has_no_gap_or_duplicate() {
    let db = TestDb::new("snapconc").await;
    db.exec(
        "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, pad text);
         INSERT INTO items SELECT g, 0, repeat('x', 100) FROM generate_series(1, 30000) g;",
    )
    .await;
    let setup = Setup::new(&db, &["public.items"], "snapshot_chunk_rows = 1000", "");
    // Writers run before, during and after the snapshot: updates bump v by one, inserts add
    // new keys, deletes remove some.
    let writer_url = db.url.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let (stop_w, rounds_w) = (stop.clone(), rounds.clone());
    let writer = tokio::spawn(async move {
        let c = connect(&writer_url).await;
        let mut next_id = 30001i64;
        let mut round = 0i64;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
            round += 1;
            rounds_w.store(round, std::sync::atomic::Ordering::Relaxed);
            let lo = (round * 37) % 30000;
            c.batch_execute(&format!(
                "BEGIN; UPDATE items SET v = v + 1 WHERE id BETWEEN {lo} AND {lo} + 20;
                 INSERT INTO items VALUES ({next_id}, 0, 'new');
                 DELETE FROM items WHERE id = {d}; COMMIT;",
                d = (round * 7919) % 30000 + 1
            ))
            .await
            .unwrap();
            next_id += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        round
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cap = setup.start();
    cap.wait_streaming().await;
    // Writes go on after the snapshot too: a hundred more rounds while capture streams.
    let streaming_from = rounds.load(std::sync::atomic::Ordering::Relaxed);
    eventually("the writer runs on while capture streams", WAIT, || async {
        rounds.load(std::sync::atomic::Ordering::Relaxed) >= streaming_from + 100
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.await.unwrap();
    assert!(rounds > 10, "writer made progress ({rounds} rounds)");
    let expected = table_state(&db, "SELECT id, v, pad FROM items").await;
    let topic = setup.topic("public.items");
    // Read until the topic's final state matches the table (or time out).
    let records = read_topic(&topic, WAIT, |r| final_state(r) == expected);
    let state = final_state(&records);
    assert_eq!(state.len(), expected.len(), "row count");
    assert!(state == expected, "final state differs from SELECT");
    // No duplicate and no gap per key: v goes up by exactly one per update event, and the
    // snapshot read of a key is never followed by a change already contained in it.
    for (key, events) in by_key(&records) {
        let mut last: Option<i64> = None;
        let mut reads = 0;
        for e in events {
            match e["op"].as_str().unwrap() {
                "r" => {
                    reads += 1;
                    last = e["after"]["v"].as_i64();
                }
                "c" => last = e["after"]["v"].as_i64(),
                "u" => {
                    let v = e["after"]["v"].as_i64().unwrap();
                    if let Some(prev) = last {
                        assert_eq!(v, prev + 1, "key {key}: update after v={prev} has v={v}");
                    }
                    last = Some(v);
                }
                "d" => last = None,
                _ => {}
            }
        }
        assert!(reads <= 1, "key {key} read {reads} times by the snapshot");
    }
    let snapshot_reads = records.iter().filter(|r| r.json()["op"] == "r").count();
    assert!(snapshot_reads >= 29000, "snapshot rows: {snapshot_reads}");
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_large_load_loses_nothing() {
    let (db, setup, mut cap) = capture_streaming_with(
        "kill9",
        "CREATE TABLE big (id bigint PRIMARY KEY, payload text)",
        &["public.big"],
        "",
        "max_in_flight_events = 20000",
    )
    .await;
    const TXNS: i64 = 200;
    const PER_TXN: i64 = 500;
    let url = db.url.clone();
    let loader = tokio::spawn(async move {
        let c = connect(&url).await;
        for t in 0..TXNS {
            let lo = t * PER_TXN + 1;
            c.batch_execute(&format!(
                "INSERT INTO big SELECT g, md5(g::text) FROM generate_series({lo}, {}) g",
                lo + PER_TXN - 1
            ))
            .await
            .unwrap();
        }
    });
    // Kill capture twice while the load runs, restarting it each time.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cap.kill9();
        tokio::time::sleep(Duration::from_millis(300 * (round + 1))).await;
        cap = setup.start();
    }
    loader.await.unwrap();
    let topic = setup.topic("public.big");
    assert_every_row_arrived(&topic, (TXNS * PER_TXN) as usize, Duration::from_secs(180));
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_database_advances_slot() {
    let (db, setup, mut cap) = capture_streaming(
        "idle",
        "CREATE TABLE watched (id int PRIMARY KEY); CREATE TABLE other (id int)",
        &["public.watched"],
    )
    .await;
    // WAL moves, but nothing the publication covers: PG 15 skips these transactions.
    db.exec("INSERT INTO other SELECT generate_series(1, 5000)")
        .await;
    let target: String = db
        .client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let target = lsn_num(&target);
    eventually(
        "slot confirmed_flush_lsn reaches the WAL end",
        WAIT,
        || async {
            db.slot_confirmed_flush(&setup.slot)
                .await
                .map(|l| lsn_num(&l))
                .unwrap_or(0)
                >= target
        },
    )
    .await;
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_advances_slot_and_is_not_published() {
    let (db, setup, mut cap) = capture_streaming_with(
        "heartbeat",
        "CREATE TABLE watched (id int PRIMARY KEY)",
        &["public.watched"],
        "heartbeat_interval_ms = 200",
        "",
    )
    .await;
    let first = lsn_num(&db.slot_confirmed_flush(&setup.slot).await.unwrap());
    eventually("slot advances on heartbeats alone", WAIT, || async {
        lsn_num(&db.slot_confirmed_flush(&setup.slot).await.unwrap()) > first
    })
    .await;
    db.exec("INSERT INTO watched VALUES (1)").await;
    assert_eq!(read_n(&setup.topic("public.watched"), 1, WAIT).len(), 1);
    // The slot moved past the heartbeats, so capture handled them; a logical message emitted
    // now is published after anything capture published for them.
    db.exec("SELECT pg_logical_emit_message(false, 'app.sentinel', 'after the heartbeats')")
        .await;
    let messages = read_topic(&format!("{}.messages", setup.prefix), WAIT, |r| {
        r.iter()
            .any(|m| m.json()["message"]["prefix"] == "app.sentinel")
    });
    let prefixes: Vec<Value> = messages
        .iter()
        .map(|m| m.json()["message"]["prefix"].clone())
        .collect();
    assert_eq!(
        prefixes,
        ["app.sentinel"],
        "heartbeats are not published, the sentinel is"
    );
    stop_cleanly(&mut cap, db).await;
}

/// A database with a table `t` whose slot capture has used once: one row captured, then a
/// clean stop.
async fn captured_once(tag: &str) -> (TestDb, Setup) {
    let (db, setup, mut cap) =
        capture_streaming(tag, "CREATE TABLE t (id int PRIMARY KEY)", &["public.t"]).await;
    db.exec("INSERT INTO t VALUES (1)").await;
    assert_eq!(read_n(&setup.topic("public.t"), 1, WAIT).len(), 1);
    assert_eq!(cap.stop(), Some(0));
    (db, setup)
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_slot_fails_loudly() {
    let (db, setup) = captured_once("dropslot").await;
    db.exec(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        setup.slot
    ))
    .await;
    db.exec("INSERT INTO t VALUES (2)").await;
    let mut cap = setup.start();
    assert_eq!(
        cap.wait_exit(WAIT),
        Some(3),
        "exit code 3 for slot state refusals"
    );
    let log = cap.log_text();
    assert!(log.contains("is missing"), "{log}");
    assert!(log.contains("hint:"), "{log}");
    assert!(
        db.slot_confirmed_flush(&setup.slot).await.is_none(),
        "no slot re-created silently"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recreated_slot_fails_loudly() {
    let (db, setup) = captured_once("reslot").await;
    // Separate statements: a slot cannot be created in a transaction that wrote.
    db.exec(&format!(
        "SELECT pg_drop_replication_slot('{}')",
        setup.slot
    ))
    .await;
    db.exec("INSERT INTO t VALUES (2)").await;
    db.exec(&format!(
        "SELECT pg_create_logical_replication_slot('{}', 'pgoutput')",
        setup.slot
    ))
    .await;
    let before = db.slot_confirmed_flush(&setup.slot).await;
    let mut cap = setup.start();
    assert_eq!(cap.wait_exit(WAIT), Some(3));
    let log = cap.log_text();
    assert!(log.contains("ahead of driftless's checkpoint"), "{log}");
    assert_eq!(
        db.slot_confirmed_flush(&setup.slot).await,
        before,
        "slot not advanced"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_restart_resumes_without_loss_or_duplicates() {
    let (db, setup) = captured_once("restart").await;
    db.exec("INSERT INTO t SELECT generate_series(2, 50)").await;
    let mut cap = setup.start();
    // Sentinel rows after them, on every partition: once they are read, any copy capture
    // re-sent of the rows before them is read too.
    db.exec("INSERT INTO t SELECT generate_series(1001, 1010)")
        .await;
    let is_sentinel = |r: &Record| r.json()["key"]["id"].as_i64() > Some(1000);
    let records = read_through_sentinels(&setup.topic("public.t"), 10, is_sentinel);
    let mut ids: Vec<String> = records
        .iter()
        .filter(|r| !is_sentinel(r))
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 50, "every row once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "no duplicates after a clean stop");
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn terminated_walsender_is_retried_without_loss() {
    let (db, setup, mut cap) = capture_streaming(
        "walsender",
        "CREATE TABLE t (id int PRIMARY KEY)",
        &["public.t"],
    )
    .await;
    db.exec("INSERT INTO t SELECT generate_series(1, 10)").await;
    db.exec(&format!(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '{}'",
        setup.slot
    ))
    .await;
    eventually("the interruption is logged", WAIT, || async {
        cap.log_text()
            .contains("capture interrupted by a transient fault")
    })
    .await;
    db.exec("INSERT INTO t SELECT generate_series(11, 20)")
        .await;
    let records = read_topic(&setup.topic("public.t"), WAIT, |r| {
        r.iter()
            .filter_map(|x| x.key.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 20
    });
    let keys: std::collections::HashSet<_> = records.iter().filter_map(|x| x.key.clone()).collect();
    assert_eq!(keys.len(), 20);
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_lists_all_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
        [source]
        slot = "Bad Slot"
        tables = ["nodot", "public.ok"]
        snapshot = "sometimes"
        [kafka]
        partitions = -1
        envelope = "avro"
        unknown_key = 1
        "#,
    )
    .unwrap();
    for sub in ["check", "capture"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftless"))
            .args([sub, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        for p in [
            "source.url_env",
            "source.slot",
            "source.publication",
            "source.tables[0]",
            "source.snapshot",
            "kafka.brokers",
            "kafka.partitions",
            "kafka.envelope",
            "kafka.unknown_key",
        ] {
            assert!(err.contains(p), "{sub}: {p} missing in:\n{err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_table_problems_without_side_effects() {
    let db = TestDb::new("check").await;
    db.exec("CREATE TABLE nokey (a int); CREATE TABLE ok (id int PRIMARY KEY)")
        .await;
    let setup = Setup::new(
        &db,
        &["public.nokey", "public.ok", "public.missing"],
        "",
        "",
    );
    let out = setup.command("check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("public.nokey has no primary key"), "{err}");
    assert!(err.contains("public.missing does not exist"), "{err}");
    let pubs: i64 = db
        .client
        .query_one("SELECT count(*) FROM pg_publication", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pubs, 0, "check creates nothing");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_kafka_client_reads_and_validates_events() {
    let python = std::env::var("DRIFTLESS_PYTHON")
        .expect("DRIFTLESS_PYTHON (scripts/python-env) is set by scripts/test");
    let (db, setup, mut cap) = capture_streaming(
        "python",
        "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, tags text[], data jsonb, \
         seen timestamptz, amount numeric);
         INSERT INTO contacts VALUES (1, 'a@x.io', '{a,b}', '{\"k\": 1}', now(), 1.5);",
        &["public.contacts"],
    )
    .await;
    db.exec(
        "INSERT INTO contacts VALUES (2, 'ü@x.io', NULL, NULL, 'infinity', 'NaN');
         UPDATE contacts SET email = 'b@x.io' WHERE id = 1; DELETE FROM contacts WHERE id = 2;
         TRUNCATE contacts;",
    )
    .await;
    let topic = setup.topic("public.contacts");
    let got = read_n(&topic, 5, WAIT);
    assert_eq!(
        got.len(),
        5,
        "{:?}\n{}",
        got.iter().map(|r| r.json()).collect::<Vec<_>>(),
        cap.log_text()
    );
    let stdout = run_ok(
        std::process::Command::new(python)
            .arg(repo_path("tests/python/consume_validate.py"))
            .args([&brokers(), &topic, "5"])
            .arg(repo_path("schemas/change-event.v1.json")),
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["valid"], 5, "{summary}");
    assert_eq!(
        summary["ops"],
        json!(["c", "d", "r", "t", "u"]),
        "{summary}"
    );
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_healthz_are_served() {
    let db = TestDb::new("metrics").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let port = free_port();
    let setup = Setup::new(&db, &["public.t"], "", "");
    setup.edit_config(
        "metrics_listen = \"off\"",
        &format!("metrics_listen = \"127.0.0.1:{port}\""),
    );
    let mut cap = setup.start();
    eventually("healthz is 200", WAIT, || async {
        http_get(port, "/healthz").starts_with("HTTP/1.1 200")
    })
    .await;
    db.exec("INSERT INTO t SELECT generate_series(1, 10)").await;
    assert_eq!(read_n(&setup.topic("public.t"), 10, WAIT).len(), 10);
    eventually("metrics show the events", WAIT, || async {
        let body = http_get(port, "/metrics");
        body.contains("driftless_capture_events_total 10")
            && body.contains("driftless_capture_acked_lsn")
            && body.contains("driftless_capture_replication_lag_bytes")
    })
    .await;
    stop_cleanly(&mut cap, db).await;
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_unreachable_is_retried_until_it_comes_back() {
    let db = TestDb::new("kafkadown").await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let port = free_port();
    let setup = Setup::new(&db, &["public.t"], "", "");
    setup.edit_config(
        &format!("brokers = \"{}\"", brokers()),
        &format!("brokers = \"127.0.0.1:{port}\""),
    );
    let mut cap = setup.start();
    // Two faults logged: the first was retried (the process did not exit on it).
    eventually(
        "the unreachable broker is logged as transient, and retried",
        WAIT,
        || async {
            cap.log_text()
                .matches("capture interrupted by a transient fault")
                .count()
                >= 2
        },
    )
    .await;
    assert_eq!(
        cap.wait_exit(Duration::ZERO),
        None,
        "capture keeps retrying"
    );
    assert!(
        db.slot_confirmed_flush(&setup.slot).await.is_none(),
        "nothing created yet"
    );
    let _broker = OwnBroker::start(port);
    cap.wait_streaming().await;
    db.exec("INSERT INTO t SELECT generate_series(1, 5)").await;
    let records = read_topic_from(
        &format!("127.0.0.1:{port}"),
        &setup.topic("public.t"),
        WAIT,
        |r| r.len() >= 5,
    );
    assert_eq!(records.len(), 5);
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tiny_in_flight_window_backpressures_without_loss() {
    let (db, setup, mut cap) = capture_streaming_with(
        "window",
        "CREATE TABLE t (id int PRIMARY KEY, pad text)",
        &["public.t"],
        "",
        "max_in_flight_events = 8",
    )
    .await;
    // One large transaction: far more events than the window, so the loop must stop reading
    // WAL while acks are pending, and still deliver everything in order.
    db.exec("INSERT INTO t SELECT g, repeat('x', 50) FROM generate_series(1, 3000) g")
        .await;
    let records = read_n(&setup.topic("public.t"), 3000, WAIT);
    assert_eq!(records.len(), 3000);
    for (_, events) in by_key(&records) {
        assert_eq!(events.len(), 1, "one event per key");
    }
    let mut ordinals: Vec<u64> = records
        .iter()
        .map(|r| {
            r.json()["id"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    ordinals.sort();
    assert_eq!(
        ordinals,
        (0..3000).collect::<Vec<u64>>(),
        "every ordinal once"
    );
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_tables_publish_every_partition_on_the_parents_topic() {
    let (db, setup, mut cap) = capture_streaming(
        "partitioned",
        "CREATE TABLE events (id bigint, region text, PRIMARY KEY (id, region))
             PARTITION BY LIST (region);
         CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
         CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
         CREATE TABLE events_rest PARTITION OF events DEFAULT;
         INSERT INTO events VALUES (1, 'eu'), (2, 'us'), (3, 'apac');",
        &["public.events"],
    )
    .await;
    let topic = setup.topic("public.events");
    // Streamed: a row in each partition, and a delete in one.
    db.exec("INSERT INTO events VALUES (4, 'eu'), (5, 'us'), (6, 'apac')")
        .await;
    db.exec("DELETE FROM events WHERE id = 2").await;
    let records = read_n(&topic, 7, WAIT);
    let mut seen: Vec<(String, i64, String)> = records
        .iter()
        .map(|r| {
            let e = r.json();
            let row = if e["op"] == "d" {
                &e["before"]
            } else {
                &e["after"]
            };
            assert_eq!(e["source"]["table"], "events", "{e}");
            (
                e["op"].as_str().unwrap().to_string(),
                row["id"].as_i64().unwrap(),
                row["region"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, i64, String)> = [
        ("c", 4, "eu"),
        ("c", 5, "us"),
        ("c", 6, "apac"),
        ("d", 2, "us"),
        ("r", 1, "eu"),
        ("r", 2, "us"),
        ("r", 3, "apac"),
    ]
    .into_iter()
    .map(|(op, id, region)| (op.to_string(), id, region.to_string()))
    .collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "snapshot and stream of every partition, on the parent's topic"
    );
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publication_without_the_partition_root_is_refused_for_a_partitioned_table() {
    let db = TestDb::new("partitioned_pub").await;
    db.exec(
        "CREATE TABLE events (id bigint PRIMARY KEY) PARTITION BY RANGE (id);
         CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100);",
    )
    .await;
    let setup = Setup::new(&db, &["public.events"], "", "");
    // A publication of that name exists already, made without the option.
    db.exec(&format!(
        "CREATE PUBLICATION {} FOR TABLE events",
        setup.slot
    ))
    .await;
    let mut cap = setup.start();
    let code = cap.wait_exit(WAIT);
    let log = cap.log_text();
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("publish_via_partition_root = true"), "{log}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_max_event_bytes_stops_capture_with_a_hint() {
    let (db, _setup, mut cap) = capture_streaming_with(
        "oversize_fail",
        "CREATE TABLE docs (id bigint PRIMARY KEY, body text)",
        &["public.docs"],
        "",
        "max_event_bytes = 2000",
    )
    .await;
    db.exec("INSERT INTO docs VALUES (1, repeat('x', 5000))")
        .await;
    let code = cap.wait_exit(WAIT);
    let log = cap.log_text();
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("over kafka.max_event_bytes (2000)"), "{log}");
    assert!(
        log.contains("kafka.oversize"),
        "the hint names the way on: {log}"
    );
    assert!(!log.contains("xxxxxxxx"), "no row value in the log");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_max_event_bytes_is_dead_lettered_and_the_stream_goes_on() {
    let (db, setup, mut cap) = capture_streaming_with(
        "oversize_dlq",
        "CREATE TABLE docs (id bigint PRIMARY KEY, body text)",
        &["public.docs"],
        "",
        "max_event_bytes = 2000\noversize = \"dead_letter\"",
    )
    .await;
    db.exec("INSERT INTO docs VALUES (1, repeat('x', 5000))")
        .await;
    // The sentinel: a later change of the table must arrive.
    db.exec("INSERT INTO docs VALUES (2, 'small')").await;
    let records = read_n(&setup.topic("public.docs"), 1, WAIT);
    assert_eq!(records[0].json()["after"]["id"], 2, "only the small row");
    let dead = read_n(&format!("{}.dlq.capture", setup.prefix), 1, WAIT);
    let d = dead[0].json();
    assert_eq!(d["reason"], "oversize");
    assert_eq!(d["table"], "public.docs");
    assert_eq!(d["max_event_bytes"], 2000);
    assert!(d["size_bytes"].as_u64().unwrap() > 5000, "{d}");
    assert!(d["lsn"].as_str().is_some_and(|l| l.contains('/')), "{d}");
    assert!(dead[0].key.is_none(), "no key (it holds values)");
    assert!(
        !String::from_utf8_lossy(dead[0].payload.as_deref().unwrap_or_default()).contains("xxxx")
    );
    stop_cleanly(&mut cap, db).await;
}
