//! The sink ledger's Postgres store: what one batch reads, and that a write never moves a key
//! back in time (two workers racing after a rebalance).

use std::collections::BTreeMap;

use driftless::lsn::Lsn;
use driftless::postgres::connect::ConnectParams;
use driftless::sink::ledger::store::Ledger;
use driftless::sink::ledger::{Link, SourcePosition, identity_digest, key_digest};

use crate::support::db::TestDb;

fn link(record: &str, email: &str, lsn: u64, tombstone: bool) -> Link {
    Link {
        record_id: Some(record.into()),
        identity: Some(identity_digest(email)),
        fields: BTreeMap::from([("email".to_string(), "h1".to_string())]),
        position: SourcePosition {
            commit_lsn: Lsn(lsn),
            ordinal: 3,
        },
        tombstone,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_reads_a_batchs_keys_and_the_live_keys_sharing_an_identity_or_record() {
    let db = TestDb::new("ledger_read").await;
    let params = ConnectParams::from_url(&db.url).unwrap();
    let mut ledger = Ledger::new(params.clone(), "crm");
    let (k1, k2, k3, k4) = (
        key_digest(b"{\"id\":1}"),
        key_digest(b"{\"id\":2}"),
        key_digest(b"{\"id\":3}"),
        key_digest(b"{\"id\":4}"),
    );
    ledger
        .write(&[
            (k1, link("R1", "a@x", 10, false)),
            // Shares R1 with key 1 (a legacy double link).
            (k2, link("R1", "b@x", 10, false)),
            // Holds the identity the batch asks for.
            (k3, link("R3", "c@x", 10, false)),
            // A tombstone holding that identity too: not a live holder.
            (k4, link("R4", "c@x", 10, true)),
        ])
        .await
        .unwrap();
    // Another sink's rows are invisible.
    Ledger::new(params, "other")
        .write(&[(k1, link("X1", "a@x", 99, false))])
        .await
        .unwrap();

    let view = ledger.read(&[k1], &[identity_digest("C@x")]).await.unwrap();
    let mut keys: Vec<_> = view.links.keys().copied().collect();
    keys.sort();
    let mut expected = vec![k1, k2, k3];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(view.links[&k1], link("R1", "a@x", 10, false));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_write_never_moves_a_key_back_in_time() {
    let db = TestDb::new("ledger_order").await;
    let params = ConnectParams::from_url(&db.url).unwrap();
    let mut newer = Ledger::new(params.clone(), "crm");
    let mut older = Ledger::new(params, "crm");
    let key = key_digest(b"{\"id\":1}");
    newer
        .write(&[(key, link("R2", "new@x", 20, false))])
        .await
        .unwrap();
    // A worker that applied an older batch writes after the newer one: left out.
    older
        .write(&[(key, link("R1", "old@x", 10, false))])
        .await
        .unwrap();
    // A newer tombstone replaces the row.
    older
        .write(&[(key, link("R2", "new@x", 30, true))])
        .await
        .unwrap();
    let view = newer.read(&[key], &[]).await.unwrap();
    assert_eq!(view.links[&key], link("R2", "new@x", 30, true));
    db.drop_db().await;
}
