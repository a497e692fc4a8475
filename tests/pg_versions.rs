//! What differs between the PostgreSQL versions driftless supports (14 to 18): the suite runs
//! once per version (`scripts/test` starts one server per version and runs the capture and
//! replication tests against each), so these tests first prove that the server under test is
//! the version the scripts started, then check the version-dependent features.
//!
//! `source.failover = true` creates a failover slot on PostgreSQL 17 and later; on older
//! servers `driftless check` and capture refuse it, naming the field.

use crate::support::*;

/// The major version the scripts started (`DRIFTLESS_PG_MAJOR`, from `scripts/pg-start --env`).
fn expected_major() -> i32 {
    required_env("DRIFTLESS_PG_MAJOR", "the test Postgres's version")
        .parse()
        .expect("DRIFTLESS_PG_MAJOR is a number")
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
    let failover: bool = db
        .client
        .query_one(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
            &[&setup.slot],
        )
        .await
        .unwrap()
        .get(0);
    assert!(failover, "the slot was created with FAILOVER");
    db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    assert_every_row_arrived(&setup.topic("public.t"), 2, WAIT);
    stop_cleanly(&mut cap, db).await;
}
