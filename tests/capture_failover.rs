//! Capture across a failover (PostgreSQL 17 and later, `source.failover = true`): the primary
//! stops while rows are being written, its physical standby is promoted, and the address
//! capture connects to moves to it. Selected by `scripts/test` only for servers that have
//! failover slots (17+); the test asserts that it runs on one.
//!
//! The setup is the README's ("Failover"): a standby made from a base backup, streaming
//! through a physical slot of the primary, with `hot_standby_feedback`, `sync_replication_slots`
//! and a `dbname` in `primary_conninfo`; the primary names that physical slot in
//! `synchronized_standby_slots`, so no logical change reaches capture before the standby has
//! it. Capture (the real binary) connects through a [`Forwarder`], the stand-in for a virtual
//! IP or DNS name, and so does the write load.
//!
//! The promise checked: capture keeps running (the same process) through the failover: it
//! reconnects with backoff to the promoted server and resumes from its checkpoint on the slot
//! the standby synchronized (which trails the checkpoint: the server skips to it). Every row
//! the new primary holds arrives, no event is for a row it does not hold, and an event sent
//! twice is byte-identical to its first copy. The failover is a fast stop, or a crash with a
//! slot synchronization that lagged, or an address that moved before the promotion (capture
//! waits for it); a promoted copy of the slot that someone else consumed past the checkpoint is
//! refused (exit code 3), and so is a promoted server whose timeline forked before capture's
//! checkpoint (an asynchronous standby, without `synchronized_standby_slots`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::Client;

use crate::support::*;

/// Rows per transaction, transactions in all.
const PER_TXN: usize = 200;
const TXNS: usize = 60;
/// The primary's physical slot for the standby.
const STANDBY_SLOT: &str = "standby";
/// The standby's settings for slot synchronization (with `dbname` in `primary_conninfo`,
/// which [`OwnPostgres::standby_of`] writes).
const STANDBY_SETTINGS: &str = "hot_standby_feedback = on\nsync_replication_slots = on";
/// The sentinel rows written on the promoted server (ids above the load's).
const SENTINELS: i64 = 10;
const SENTINEL_FROM: i64 = 1_000_001;

/// `url` with another port (and the same database).
fn at_port(url: &str, port: u16) -> String {
    let mut url = url::Url::parse(url).expect("postgres url");
    url.set_port(Some(port)).unwrap();
    url.into()
}

/// The captured slot as the standby sees it: `(synced, temporary, confirmed_flush_lsn)`.
async fn slot_on(server: &Client, slot: &str) -> Option<(bool, bool, Option<String>)> {
    server
        .query_opt(
            "SELECT synced, temporary, confirmed_flush_lsn::text FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// The flushed LSN of capture's checkpoint.
fn checkpoint_lsn(setup: &Setup) -> u64 {
    let path = setup
        .dir
        .path()
        .join("state")
        .join(format!("{}.checkpoint.json", setup.slot));
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("checkpoint")).unwrap();
    lsn_num(cp["flushed_lsn"].as_str().expect("flushed_lsn"))
}

/// The row id of a change event (its Kafka key `{"id":N}`).
fn row_id(r: &Record) -> i64 {
    let key: serde_json::Value = serde_json::from_slice(r.key.as_deref().expect("key")).unwrap();
    key["id"].as_i64().expect("id key")
}

/// How the failover goes.
struct Failover {
    /// `pg_ctl stop -m {stop_mode}` of the primary.
    stop_mode: &'static str,
    /// The standby stops synchronizing the slot once it has it, so its copy trails capture's
    /// checkpoint by the changes capture confirmed since (a slot synchronization that lags).
    sync_lags: bool,
    /// The address moves to the standby before its promotion (capture meets a server still in
    /// recovery, whose copy of the slot cannot be used yet), not after.
    moved_early: bool,
}

/// A primary and its standby (synchronizing slots, named in the primary's
/// `synchronized_standby_slots`), capture streaming from the primary through `address` with
/// `failover = true`, and the standby holding its copy of capture's slot.
struct Pair {
    primary: OwnPostgres,
    standby: OwnPostgres,
    /// The standby's (later the promoted server's) copy of the test database.
    on_standby: Client,
    address: Forwarder,
    setup: Setup,
    cap: DriftlessProcess,
}

impl Pair {
    async fn start(tag: &str) -> Pair {
        let primary = OwnPostgres::start();
        let db = TestDb::on(primary.admin_url(), tag).await;
        let version: i32 = db
            .client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .unwrap()
            .get(0);
        assert!(
            version >= 170_000,
            "failover slots need PostgreSQL 17: scripts/test selects capture_failover:: only there"
        );
        db.exec("CREATE TABLE t (id bigint PRIMARY KEY, payload text)")
            .await;
        let standby = OwnPostgres::standby_of(&primary, STANDBY_SLOT, STANDBY_SETTINGS).await;
        db.exec(&format!(
            "ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'"
        ))
        .await;
        db.exec("SELECT pg_reload_conf()").await;
        let address = Forwarder::start(primary.port()).await;
        let mut setup = Setup::new(&db, &["public.t"], "failover = true", "");
        setup.db_url = at_port(&db.url, address.port());
        let cap = setup.start();
        cap.wait_streaming().await;
        let on_standby = connect(&at_port(&db.url, standby.port())).await;
        eventually("the standby synchronized the slot", WAIT, || async {
            matches!(
                slot_on(&on_standby, &setup.slot).await,
                Some((true, false, Some(_)))
            )
        })
        .await;
        Pair {
            primary,
            standby,
            on_standby,
            address,
            setup,
            cap,
        }
    }

    /// The `confirmed_flush_lsn` of the standby's copy of the slot.
    async fn synced_lsn(&self) -> u64 {
        let (_, _, lsn) = slot_on(&self.on_standby, &self.setup.slot).await.unwrap();
        lsn_num(&lsn.expect("confirmed_flush_lsn"))
    }

    /// `pg_ctl promote` of the standby (waits until it is out of recovery).
    fn promote(&self) {
        self.standby.pg_ctl(&["promote"]);
    }
}

async fn fails_over(tag: &str, how: Failover) {
    let mut pair = Pair::start(tag).await;
    let pid = pair.cap.running_pid().expect("capture runs");
    let mut synced_then = 0;
    if how.sync_lags {
        for sql in [
            "ALTER SYSTEM SET sync_replication_slots = off",
            "SELECT pg_reload_conf()",
        ] {
            pair.on_standby.batch_execute(sql).await.unwrap();
        }
        eventually("the standby's slot sync worker stopped", WAIT, || async {
            let workers: i64 = pair
                .on_standby
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'slotsync worker'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            workers == 0
        })
        .await;
        synced_then = pair.synced_lsn().await;
    }
    let done = Arc::new(AtomicUsize::new(0));
    let url = pair.setup.db_url.clone();
    let loader = tokio::spawn(load_rows(url, TXNS, PER_TXN, done.clone()));
    eventually("a third of the load is committed", WAIT, || async {
        done.load(Ordering::SeqCst) >= TXNS / 3
    })
    .await;
    eventually("capture confirmed some of the load", WAIT, || async {
        checkpoint_lsn(&pair.setup) > synced_then
    })
    .await;

    pair.primary.pg_ctl(&["-m", how.stop_mode, "stop"]);
    if how.moved_early {
        pair.address.point_to(pair.standby.port());
        eventually("capture met the standby in recovery", WAIT, || async {
            pair.cap.log_text().contains("is a standby in recovery")
        })
        .await;
    }
    pair.promote();
    let (synced, checkpoint) = (pair.synced_lsn().await, checkpoint_lsn(&pair.setup));
    eprintln!("synced slot at {synced:x}, capture's checkpoint at {checkpoint:x}");
    assert!(
        synced <= checkpoint,
        "the synced slot never passes what capture confirmed"
    );
    if how.sync_lags {
        assert!(synced < checkpoint, "the synced slot trails the checkpoint");
    }
    pair.address.point_to(pair.standby.port());
    loader.await.unwrap();
    pair.on_standby
        .batch_execute(&format!(
            "INSERT INTO t SELECT g, 'sentinel' FROM generate_series({SENTINEL_FROM}, {}) g",
            SENTINEL_FROM + SENTINELS - 1
        ))
        .await
        .unwrap();

    let sentinel_commit = assert_captured_what_the_new_primary_holds(&pair).await;
    eventually(
        "capture confirms the sentinel on the promoted server's slot",
        WAIT,
        || async { pair.synced_lsn().await >= sentinel_commit },
    )
    .await;
    assert_eq!(
        pair.cap.running_pid(),
        Some(pid),
        "the same capture process runs"
    );
    let log = pair.cap.log_text();
    for line in log.lines().filter(|l| l.contains(" WARN ")) {
        eprintln!("{line}");
    }
    assert!(
        log.contains("capture interrupted by a transient fault; resuming from the checkpoint")
            && !log.contains("capture stopped"),
        "capture went through the failover by reconnecting:\n{log}"
    );
    assert_eq!(pair.cap.stop(), Some(0), "clean shutdown exits 0");
}

/// Reads the topic through the sentinels and asserts that the events are exactly the rows the
/// promoted server holds, one event per row, re-sent copies byte-identical to the first.
/// Returns the sentinels' commit LSN.
async fn assert_captured_what_the_new_primary_holds(pair: &Pair) -> u64 {
    let records = read_through_sentinels(&pair.setup.topic("public.t"), SENTINELS as usize, |r| {
        row_id(r) >= SENTINEL_FROM
    });
    let held: BTreeSet<i64> = pair
        .on_standby
        .query("SELECT id FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let captured: BTreeSet<i64> = records.iter().map(row_id).collect();
    let missing: Vec<_> = held.difference(&captured).take(20).collect();
    let extra: Vec<_> = captured.difference(&held).take(20).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} rows on the new primary, {} captured; missing (first 20) {missing:?}, not on the \
         new primary (first 20) {extra:?}",
        held.len(),
        captured.len()
    );
    let mut copies: HashMap<String, Vec<&[u8]>> = HashMap::new();
    for r in &records {
        let id = r.json()["id"].as_str().expect("event id").to_string();
        copies
            .entry(id)
            .or_default()
            .push(r.payload.as_deref().unwrap());
    }
    assert_eq!(copies.len(), held.len(), "one event per row");
    for (id, c) in &copies {
        assert!(
            c.iter().all(|x| x == &c[0]),
            "re-sent event {id} is byte-identical"
        );
    }
    eprintln!(
        "{} rows, {} re-sent copies",
        held.len(),
        records.len() - copies.len()
    );
    records
        .iter()
        .filter(|r| row_id(r) >= SENTINEL_FROM)
        .map(|r| lsn_num(r.json()["source"]["commit_lsn"].as_str().unwrap()))
        .max()
        .unwrap()
}

/// The promoted server's copy of the slot was consumed past capture's checkpoint by someone
/// else: the changes in between are gone, and capture stops with exit code 3 (as it does on
/// any server) instead of going on from there.
#[tokio::test(flavor = "multi_thread")]
async fn capture_refuses_a_promoted_slot_ahead_of_its_checkpoint() {
    let mut pair = Pair::start("failover_ahead").await;
    pair.primary.pg_ctl(&["-m", "fast", "stop"]);
    pair.promote();
    pair.on_standby
        .batch_execute("INSERT INTO t VALUES (1, 'consumed by someone else')")
        .await
        .unwrap();
    pair.on_standby
        .execute(
            "SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())",
            &[&pair.setup.slot],
        )
        .await
        .unwrap();
    pair.address.point_to(pair.standby.port());
    assert_eq!(pair.cap.wait_exit(WAIT), Some(3), "{}", pair.cap.log_text());
    let log = pair.cap.log_text();
    assert!(log.contains("ahead of driftless's checkpoint"), "{log}");
}

/// The asynchronous setup the README warns about (no `synchronized_standby_slots`): capture
/// confirms changes the standby never received, the standby is promoted, and its timeline
/// forks before capture's checkpoint. The new primary writes its own changes at LSNs capture
/// already confirmed, which the server would skip: capture stops with exit code 3 instead.
#[tokio::test(flavor = "multi_thread")]
async fn capture_refuses_a_promoted_server_whose_timeline_forked_before_its_checkpoint() {
    let mut pair = Pair::start("failover_fork").await;
    let primary = connect(&pair.setup.db_url).await;
    for sql in [
        "ALTER SYSTEM SET synchronized_standby_slots = ''",
        "SELECT pg_reload_conf()",
    ] {
        primary.batch_execute(sql).await.unwrap();
    }
    // The standby stops receiving WAL: what follows exists only on the old primary.
    pair.standby.pg_ctl(&["-m", "fast", "stop"]);
    let before: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    primary
        .batch_execute(
            "INSERT INTO t SELECT g, 'only on the old primary' FROM generate_series(1, 1000) g",
        )
        .await
        .unwrap();
    eventually(
        "capture confirmed changes the standby never received",
        WAIT,
        || async { checkpoint_lsn(&pair.setup) > lsn_num(&before) },
    )
    .await;
    pair.primary.pg_ctl(&["-m", "fast", "stop"]);
    pair.standby.pg_ctl(&["start"]);
    pair.promote();
    let on_new = connect(&at_port(&pair.setup.db_url, pair.standby.port())).await;
    on_new
        .batch_execute("INSERT INTO t VALUES (1000001, 'written on the new primary')")
        .await
        .unwrap();
    let written: String = on_new
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let checkpoint = checkpoint_lsn(&pair.setup);
    assert!(
        lsn_num(&written) < checkpoint,
        "the new primary's row ({written}) lies below capture's checkpoint ({checkpoint:x}), \
         where resuming would skip it"
    );
    pair.address.point_to(pair.standby.port());
    assert_eq!(pair.cap.wait_exit(WAIT), Some(3), "{}", pair.cap.log_text());
    let log = pair.cap.log_text();
    assert!(
        log.contains("the promoted server's timeline 2 forked from timeline 1 at")
            && log.contains("would be skipped"),
        "{log}"
    );
}

scenario_tests! {
    capture_follows_a_failover_to_the_promoted_standby => fails_over("failover", Failover {
        stop_mode: "fast", sync_lags: false, moved_early: false,
    });
    capture_follows_a_failover_after_a_primary_crash_from_a_trailing_slot =>
        fails_over("failover_crash", Failover {
            stop_mode: "immediate", sync_lags: true, moved_early: false,
        });
    capture_waits_for_the_promotion_of_a_standby_it_reaches_early =>
        fails_over("failover_early", Failover {
            stop_mode: "fast", sync_lags: false, moved_early: true,
        });
}
