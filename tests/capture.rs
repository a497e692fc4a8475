//! Capture behaviour against real Postgres + tansu.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn insert_update_delete_truncate_are_captured() {
    let db = TestDb::new("iudt").await;
    db.exec("CREATE TABLE contacts (id bigint PRIMARY KEY, email text, score int)")
        .await;
    let setup = Setup::new(&db, &["public.contacts"], "", "");
    let mut cap = setup.start();
    let topic = setup.topic("public.contacts");
    // The slot exists once capture has started streaming.
    eventually("slot created", WAIT, || async {
        db.slot_confirmed_flush(&setup.slot).await.is_some()
    })
    .await;
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
    assert_eq!(cap.stop(), Some(0), "clean shutdown exits 0");
    db.drop_db().await;
}

fn lsn_num(s: &str) -> u64 {
    s.parse::<driftless::lsn::Lsn>().unwrap().as_u64()
}
