//! What differs between the PostgreSQL versions driftless supports (14 to 18): the suite runs
//! once per version (`scripts/test` starts one server per version and runs the capture and
//! replication tests against each), so these tests first prove that the server under test is
//! the version the scripts started, then check the version-dependent features.
//!
//! `source.failover = true` creates a failover slot on PostgreSQL 17 and later (and turns
//! failover on for a slot created without it), where `driftless check` warns (without failing)
//! that the server's `synchronized_standby_slots` is empty; on older servers `driftless check`
//! and capture refuse it, naming the field. Column lists and row filters need PostgreSQL 15: `check`
//! refuses them on 14 (their behaviour on 15 and later is `capture_filters::`).

use crate::support::*;

/// The major version the scripts started (`DRIFTLESS_PG_MAJOR`, from `scripts/pg-start --env`).
fn expected_major() -> i32 {
    required_env("DRIFTLESS_PG_MAJOR", "the test Postgres's version")
        .parse()
        .expect("DRIFTLESS_PG_MAJOR is a number")
}

/// Whether the test database's slot `slot` is a failover slot (PostgreSQL 17+).
async fn slot_failover(db: &TestDb, slot: &str) -> bool {
    db.client
        .query_one(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}

/// The server's major version, from `server_version_num`.
async fn server_major(db: &TestDb) -> i32 {
    let num: i32 = db
        .client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    num / 10_000
}

#[tokio::test(flavor = "multi_thread")]
async fn server_is_the_version_the_scripts_started() {
    let db = TestDb::new("version").await;
    assert_eq!(server_major(&db).await, expected_major());
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_slot_on_17_and_later_refused_before() {
    let ddl = "CREATE TABLE t (id bigint PRIMARY KEY, v text)";
    if expected_major() < 17 {
        let db = TestDb::new("failover").await;
        db.exec(ddl).await;
        let setup = Setup::new(&db, &["public.t"], "failover = true", "");
        let out = setup.command("check").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("source.failover = true needs PostgreSQL 17 or later"),
            "{err}"
        );
        let slots: i64 = db
            .client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&setup.slot],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(slots, 0, "check creates no slot");
        db.drop_db().await;
        return;
    }
    let (db, setup, mut cap) =
        capture_streaming_with("failover", ddl, &["public.t"], "failover = true", "").await;
    assert!(
        slot_failover(&db, &setup.slot).await,
        "the slot was created with FAILOVER"
    );
    db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    assert_every_row_arrived(&setup.topic("public.t"), 2, WAIT);
    let out = setup.command("check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "a warning does not fail: {err}");
    assert!(
        err.contains(
            "warning: [postgres] source.failover = true but synchronized_standby_slots is empty"
        ),
        "{err}"
    );
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_turned_on_for_an_existing_slot_refused_before_17() {
    let ddl = "CREATE TABLE t (id bigint PRIMARY KEY, v text)";
    if expected_major() < 17 {
        let db = TestDb::new("failover_old").await;
        db.exec(ddl).await;
        let setup = Setup::new(&db, &["public.t"], "failover = true", "");
        let mut cap = setup.start();
        assert_eq!(cap.wait_exit(WAIT), Some(3), "{}", cap.log_text());
        let log = cap.log_text();
        assert!(
            log.contains("source.failover = true needs PostgreSQL 17 or later"),
            "{log}"
        );
        db.drop_db().await;
        return;
    }
    let (db, setup, mut cap) = capture_streaming("failover_on", ddl, &["public.t"]).await;
    assert!(!slot_failover(&db, &setup.slot).await, "created without");
    assert_eq!(cap.stop(), Some(0));
    setup.edit_config(
        "status_interval_ms = 200",
        "status_interval_ms = 200\nfailover = true",
    );
    let mut cap = setup.start();
    cap.wait_streaming().await;
    assert!(
        slot_failover(&db, &setup.slot).await,
        "failover turned on at the restart"
    );
    db.exec("INSERT INTO t VALUES (1, 'a')").await;
    assert_every_row_arrived(&setup.topic("public.t"), 1, WAIT);
    stop_cleanly(&mut cap, db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn column_lists_and_row_filters_refused_before_15() {
    let db = TestDb::new("narrow").await;
    db.exec("CREATE TABLE people (id bigint PRIMARY KEY, email text, ssn text)")
        .await;
    let setup = Setup::new(&db, &["public.people"], "", "");
    setup.edit_config(
        r#"tables = ["public.people"]"#,
        r#"tables = [{ name = "public.people", columns = ["id", "email"], where = "id > 0" }]"#,
    );
    let out = setup.command("check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let refused = err.contains("with columns or where, which needs PostgreSQL 15 or later");
    if expected_major() < 15 {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(refused, "{err}");
    } else {
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(!refused, "{err}");
    }
    db.drop_db().await;
}
