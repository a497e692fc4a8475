//! Backfills: a table added to `source.tables`, or `driftless backfill --table T`, is read again
//! in chunks while changes stream, and a row changed during the backfill is never overwritten by
//! an older read (the last event of every key is the row as it is); a killed backfill resumes
//! from its last acknowledged chunk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::support::*;

const CHUNK: &str = "snapshot_chunk_rows = 200\nmanage_publication = true";

/// The last event of each key of `topic` (records of one key are in one partition, in order).
fn last_per_key(records: &[Record]) -> BTreeMap<i64, Value> {
    let mut last = BTreeMap::new();
    for r in records.iter().filter(|r| r.payload.is_some()) {
        let e = r.json();
        last.insert(e["key"]["id"].as_i64().unwrap(), e);
    }
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_added_to_source_tables_is_backfilled_without_overwriting_newer_changes() {
    const ROWS: i64 = 3000;
    let db = TestDb::new("backfill").await;
    db.exec(&format!(
        "CREATE TABLE a (id int PRIMARY KEY); \
         CREATE TABLE b (id bigint PRIMARY KEY, v int NOT NULL); \
         INSERT INTO b SELECT g, 0 FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let setup = Setup::new(&db, &["public.a"], CHUNK, "");
    let mut cap = setup.start();
    cap.wait_streaming().await;
    assert_eq!(cap.stop(), Some(0));
    setup.edit_config(
        r#"tables = ["public.a"]"#,
        r#"tables = ["public.a", "public.b"]"#,
    );
    let mut cap = setup.start();
    // Changes to b while it is backfilled.
    let stop = Arc::new(AtomicBool::new(false));
    let updater = {
        let (url, stop) = (db.url.clone(), stop.clone());
        tokio::spawn(async move {
            let c = connect(&url).await;
            let mut rnd = seeded_random(7);
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = 1 + rnd(ROWS as u64);
                c.execute("UPDATE b SET v = v + 1 WHERE id = $1", &[&(id as i64)])
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    eventually("the backfill completes", WAIT, || async {
        cap.log_text().contains("backfill complete")
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let updates = updater.await.unwrap();
    assert!(updates > 0);
    // Sentinels after the updates, on every partition.
    db.exec(&format!(
        "INSERT INTO b SELECT g, -1 FROM generate_series({}, {}) g",
        ROWS + 1,
        ROWS + 10
    ))
    .await;
    let topic = setup.topic("public.b");
    let records = read_through_sentinels(&topic, 10, |r| {
        r.payload.is_some() && r.json()["key"]["id"].as_i64() > Some(ROWS)
    });
    let reads = records
        .iter()
        .filter(|r| r.payload.is_some() && r.json()["op"] == "r")
        .count();
    let last = last_per_key(&records);
    let rows = db
        .client
        .query("SELECT id, v FROM b ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(last.len(), rows.len(), "every row of b arrived");
    for row in &rows {
        let (id, v): (i64, i32) = (row.get(0), row.get(1));
        assert_eq!(
            last[&id]["after"]["v"], v,
            "row {id}: the last event is the row as it is ({updates} updates during the backfill, \
             {reads} rows read)"
        );
    }
    assert!(reads > 0 && reads <= ROWS as usize, "{reads}");
    eprintln!("{updates} updates during the backfill; {reads} rows read");
    let log = cap.log_text();
    assert!(
        log.contains("table added to source.tables: backfilling it"),
        "{log}"
    );
    stop_cleanly(&mut cap, db).await;
}

/// The window of a chunk held open on purpose: the chunk's read waits for a lock on the table
/// (after its low watermark and snapshot), while the lock's holder changes the table's
/// definition (PostgreSQL then sends a Relation message ahead of the table's next change) and
/// updates a row the read will find at its old value.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_changed_after_a_relation_message_in_the_window_is_not_overwritten_by_the_read() {
    let (db, setup, mut cap) = capture_streaming_with(
        "backfill_relmsg",
        "CREATE TABLE b (id bigint PRIMARY KEY, v int NOT NULL); \
         INSERT INTO b SELECT g, 0 FROM generate_series(1, 3) g",
        &["public.b"],
        CHUNK,
        "",
    )
    .await;
    let blocker = connect(&db.url).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE b IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let out = run_ok(setup.command("backfill").args(["--table", "public.b"]));
    assert!(out.contains("backfill of public.b requested"), "{out}");
    eventually("the chunk's read waits for the lock", WAIT, || async {
        let waiting: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND query LIKE '%pg_current_snapshot()%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        waiting == 1
    })
    .await;
    blocker
        .batch_execute(
            "ALTER TABLE b ALTER COLUMN v SET STATISTICS 500; \
             UPDATE b SET v = 1 WHERE id = 2; COMMIT",
        )
        .await
        .unwrap();
    eventually("the backfill completes", WAIT, || async {
        cap.log_text().contains("backfill complete")
    })
    .await;
    // Sentinels after the backfill, on every partition.
    db.exec("INSERT INTO b SELECT g, -1 FROM generate_series(101, 110) g")
        .await;
    let records = read_through_sentinels(&setup.topic("public.b"), 10, |r| {
        r.payload.is_some() && r.json()["key"]["id"].as_i64() > Some(100)
    });
    let last = last_per_key(&records);
    let read_twice: Vec<i64> = [1, 2, 3]
        .into_iter()
        .filter(|id| {
            let reads = records.iter().filter(|r| {
                r.payload.is_some() && r.json()["op"] == "r" && r.json()["key"]["id"] == *id
            });
            reads.count() == 2
        })
        .collect();
    assert_eq!(
        read_twice,
        [1, 3],
        "the snapshot and the backfill read the rows not changed in the window"
    );
    assert_eq!(last[&2]["op"], "u", "{:?}", last[&2]);
    assert_eq!(last[&2]["after"]["v"], 1, "{:?}", last[&2]);
    assert_eq!(last[&1]["after"]["v"], 0);
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requested_backfill_killed_midway_resumes_from_its_last_acknowledged_chunk() {
    const ROWS: i64 = 10_000;
    let (db, setup, mut cap) = capture_streaming_with(
        "backfill_kill",
        &format!(
            "CREATE TABLE a (id bigint PRIMARY KEY, payload text); \
             INSERT INTO a SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g"
        ),
        &["public.a"],
        "snapshot_chunk_rows = 100",
        "",
    )
    .await;
    let out = run_ok(setup.command("backfill").args(["--table", "public.a"]));
    assert!(out.contains("backfill of public.a requested"), "{out}");
    let refused = setup
        .command("backfill")
        .args(["--table", "public.nope"])
        .output()
        .unwrap();
    assert_ne!(refused.status.code(), Some(0));
    // Kill capture once some chunks are acknowledged (their progress is in the checkpoint).
    let checkpoint = setup
        .dir
        .path()
        .join("state")
        .join(format!("{}.checkpoint.json", setup.slot));
    eventually("a backfill chunk is acknowledged", WAIT, || async {
        std::fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|cp| cp["backfills"][0]["after_key"].is_array())
    })
    .await;
    cap.kill9();
    // `driftless status` shows the backfill where the checkpoint left it.
    let status: Value =
        serde_json::from_str(&run_ok(setup.command("status").arg("--json"))).unwrap();
    assert_eq!(
        status["capture"]["backfills"][0]["table"], "public.a",
        "{status}"
    );
    let mut cap = setup.start();
    eventually("the backfill completes", WAIT, || async {
        cap.log_text().contains("backfill complete")
    })
    .await;
    let log = cap.log_text();
    assert!(
        log.contains("resumed=true"),
        "the restart resumed the backfill:\n{log}"
    );
    // Every row arrived twice at least as a read: the initial snapshot and the backfill.
    let reads = |records: &[Record]| {
        let mut reads: BTreeMap<i64, usize> = BTreeMap::new();
        for r in records.iter().filter(|r| r.payload.is_some()) {
            let e = r.json();
            if e["op"] == "r" {
                *reads.entry(e["key"]["id"].as_i64().unwrap()).or_default() += 1;
            }
        }
        reads
    };
    let records = read_topic(&setup.topic("public.a"), WAIT, |r| {
        reads(r).values().filter(|n| **n >= 2).count() >= ROWS as usize
    });
    let reads = reads(&records);
    assert_eq!(reads.len(), ROWS as usize);
    let once: Vec<&i64> = reads
        .iter()
        .filter(|(_, n)| **n < 2)
        .map(|(id, _)| id)
        .collect();
    assert!(once.is_empty(), "rows not backfilled: {once:?}");
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_reads_carry_debeziums_snapshot_markers_and_backfills_are_incremental() {
    let db = TestDb::new("dbz_marks").await;
    db.exec(
        "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE e (id int PRIMARY KEY); \
         CREATE TABLE b (id int PRIMARY KEY); CREATE TABLE z (id int PRIMARY KEY); \
         INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES (1), (2), (3)",
    )
    .await;
    let setup = Setup::new(
        &db,
        &["public.a", "public.e", "public.b", "public.z"],
        "manage_publication = true",
        "envelope = \"debezium\"",
    );
    let mut cap = setup.start();
    let marks = |records: &[Record]| {
        let mut marks: Vec<String> = records
            .iter()
            .filter(|r| r.payload.is_some())
            .map(|r| r.json())
            .filter(|e| e["op"] == "r")
            .map(|e| e["source"]["snapshot"].as_str().unwrap().to_owned())
            .collect();
        marks.sort();
        marks
    };
    // Per table in any order (a table's rows may sit in several partitions).
    let (topic_a, topic_b) = (setup.topic("public.a"), setup.topic("public.b"));
    assert_eq!(
        marks(&read_exactly(&topic_a, 2)),
        ["first", "last_in_data_collection"]
    );
    // The empty table after b does not keep b's last row from being the snapshot's last.
    assert_eq!(
        marks(&read_exactly(&topic_b, 3)),
        ["first_in_data_collection", "last", "true"]
    );
    cap.wait_streaming().await;
    let out = run_ok(setup.command("backfill").args(["--table", "public.a"]));
    assert!(out.contains("backfill of public.a requested"), "{out}");
    let records = read_topic(&topic_a, WAIT, |r| marks(r).len() >= 4);
    assert_eq!(
        marks(&records),
        [
            "first",
            "incremental",
            "incremental",
            "last_in_data_collection"
        ]
    );
    stop_cleanly(&mut cap, db).await;
}
