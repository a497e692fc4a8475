//! Two-way sync when things go wrong between a CRM change and its application: a worker killed
//! after reconciliation found changes, a search index that lags behind writes, a link to a
//! record created in the CRM that fails. Real Postgres, tansu and the HubSpot emulator as a
//! separate process; webhooks are dropped where the test is about reconciliation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::two_way::{Crm, Options, TwoWay};
use crate::support::*;

/// Every webhook the emulator would send is dropped: only reconciliation sees CRM edits.
fn no_webhooks() -> Value {
    json!({"drop_every": 1})
}

/// The sink's modification cursor (epoch ms), if saved.
async fn modified_cursor(t: &TwoWay) -> Option<i64> {
    t.db.client
        .query_opt(
            "SELECT modified_after_ms FROM driftless.sync_cursor WHERE sink = $1",
            &[&t.name],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Live HubSpot contacts in the emulator, whatever their id property.
async fn live_contacts(t: &TwoWay) -> usize {
    let state = t.emulator.state().await;
    state["objects"]["contacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["archived"] != true)
        .count()
}

/// Waits until Postgres holds `name` as the first name of every key in `keys`.
async fn wait_names(t: &TwoWay, keys: std::ops::RangeInclusive<i64>, name: impl Fn(i64) -> String) {
    eventually("every CRM edit reached Postgres", WAIT, || async {
        let pg = t.postgres().await;
        keys.clone()
            .all(|k| pg.get(&k).is_some_and(|r| r[1] == name(k)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_after_reconciliation_found_edits_loses_none() {
    let mut t = TwoWay::start_with(
        Crm::Hubspot,
        Options {
            inbound: "reconcile_every = \"1s\"\nreconcile_lag = \"2s\"",
            hooks: no_webhooks(),
            ..Options::default()
        },
    )
    .await;
    t.insert_samples(10).await;
    t.wait_in_sync("initial rows").await;
    // The inbound worker's next read hangs, so the ids reconciliation finds are not applied
    // before the kill.
    let (status, _) = t
        .emulator
        .post(
            "/_emulator/faults",
            &json!({"path": "batch/read", "delay_ms": 120_000, "count": 1}),
        )
        .await;
    assert!(status < 300);
    for key in 1..=10 {
        t.edit_in_crm(key, json!({"firstname": format!("killed{key}")}))
            .await;
    }
    let edited_ms = chrono::Utc::now().timestamp_millis();
    eventually(
        "reconciliation moved its cursor past the edits",
        WAIT,
        || async { modified_cursor(&t).await.is_some_and(|c| c > edited_ms) },
    )
    .await;
    t.worker.as_mut().expect("a worker runs").kill9();
    t.worker = None;
    t.start_worker().await;
    wait_names(&t, 1..=10, |k| format!("killed{k}")).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lagging_search_index_with_edits_during_paging_skips_nothing() {
    let t = TwoWay::start_with(
        Crm::Hubspot,
        Options {
            inbound: "reconcile_every = \"1s\"\nreconcile_lag = \"5s\"",
            hooks: no_webhooks(),
            ..Options::default()
        },
    )
    .await;
    const KEYS: i64 = 300;
    t.insert_samples(KEYS).await;
    t.wait_in_sync("initial rows").await;
    let (status, answer) = t
        .emulator
        .post("/_emulator/settings", &json!({"searchIndexLagMs": 3_000}))
        .await;
    assert!(status < 300, "settings accepted: {status} {answer}");
    let ids: BTreeMap<i64, String> = t
        .crm_records()
        .await
        .into_iter()
        .map(|(key, (id, _))| (key, id))
        .collect();
    // Rounds of edits over every key (as HubSpot users, straight to the emulator) while
    // reconciliation pages (two pages of 200 per pass) and the index lags three seconds.
    for round in 0..3 {
        for (key, id) in &ids {
            let body = json!({"properties": {"firstname": format!("lag{round}k{key}")}});
            let path = format!("/_emulator/objects/contacts/{id}/edit");
            let (status, answer) = t.emulator.post(&path, &body).await;
            assert_eq!(status, 200, "edit accepted: {answer}");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    wait_names(&t, 1..=KEYS, |k| format!("lag2k{k}")).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_that_fails_once_creates_no_duplicate_record() {
    let t = TwoWay::start(Crm::Hubspot, "reconcile_every = \"off\"").await;
    t.insert_samples(1).await;
    t.wait_in_sync("initial rows").await;
    // The first attempt to set the id property of the record created in HubSpot fails.
    let (status, _) = t
        .emulator
        .post(
            "/_emulator/faults",
            &json!({"path": "batch/update", "status": 500, "count": 1}),
        )
        .await;
    assert!(status < 300);
    t.create_in_crm(json!({
        "email": "created.in.crm@example.com",
        "firstname": "Created",
        "lifecyclestage": "lead",
    }))
    .await;
    let created = || async {
        t.postgres()
            .await
            .into_iter()
            .find(|(_, r)| r[0] == "created.in.crm@example.com")
            .map(|(k, _)| k)
    };
    eventually("the record created in HubSpot has a row", WAIT, || async {
        created().await.is_some()
    })
    .await;
    let key = created().await.expect("found above");
    // A Postgres edit of the new row: written to the record created in HubSpot, never to a
    // second one.
    t.outbound_sentinel(key).await;
    assert_eq!(live_contacts(&t).await, 2, "no duplicate record");
    assert_eq!(t.crm_records().await.len(), 2, "both records are linked");
    t.finish().await;
}
