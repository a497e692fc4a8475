//! Capture across restarts of the Postgres server itself (not only of its walsender): a fast
//! or immediate restart, or a stop of minutes, while rows are being written. Each runs on a
//! server of its own ([`OwnPostgres`]) so the shared cluster keeps serving the other tests.
//!
//! The promise checked: capture keeps running through the outage (it reconnects with backoff
//! and resumes from its checkpoint), every committed row arrives, and an event sent twice is
//! byte-identical to its first copy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;

/// Rows per transaction, transactions in all.
const PER_TXN: usize = 200;
const TXNS: usize = 60;

/// What happens to the server half-way through the load.
enum Outage {
    /// `pg_ctl restart -m {mode}`.
    Restart(&'static str),
    /// `pg_ctl stop -m fast`, then `start` after this long.
    Stop(Duration),
}

async fn survives(tag: &str, outage: Outage) {
    let server = OwnPostgres::start();
    let db = TestDb::on(server.admin_url(), tag).await;
    db.exec("CREATE TABLE t (id bigint PRIMARY KEY, payload text)")
        .await;
    let setup = Setup::new(&db, &["public.t"], "", "");
    let mut cap = setup.start();
    cap.wait_streaming().await;
    let done = Arc::new(AtomicUsize::new(0));
    let loader = tokio::spawn(load_rows(db.url.clone(), TXNS, PER_TXN, done.clone()));
    eventually("a third of the load is committed", WAIT, || async {
        done.load(Ordering::SeqCst) >= TXNS / 3
    })
    .await;
    match outage {
        Outage::Restart(mode) => server.pg_ctl(&["-m", mode, "restart"]),
        Outage::Stop(down) => {
            server.pg_ctl(&["-m", "fast", "stop"]);
            tokio::time::sleep(down).await;
            server.pg_ctl(&["start"]);
        }
    }
    loader.await.unwrap();
    assert_every_row_arrived(&setup.topic("public.t"), TXNS * PER_TXN, WAIT);
    let log = cap.log_text();
    assert!(
        log.contains("resuming from the checkpoint"),
        "capture went through the outage by reconnecting:\n{log}"
    );
    stop_cleanly(&mut cap, db).await;
}

scenario_tests! {
    capture_survives_a_fast_server_restart => survives("fastrestart", Outage::Restart("fast"));
    capture_survives_an_immediate_server_restart => survives("crash", Outage::Restart("immediate"));
    capture_survives_a_server_stopped_for_minutes => survives("longstop", Outage::Stop(Duration::from_secs(150)));
}
