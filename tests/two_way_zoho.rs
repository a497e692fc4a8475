//! Two-way sync with Zoho end to end: Postgres ⇄ driftless (capture + a `direction = "both"`
//! Zoho sink) ⇄ the Zoho emulator, whose watch-channel notifications reach the sink's receiver
//! over TCP. The harness is [`crate::support::two_way`].

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::two_way::{
    Crm, Options, RECONCILE_OFF, TwoWay, deletion_in_crm, edits_cross_once_and_never_echo_back,
};
use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn edits_on_either_side_cross_once_and_never_echo_back() {
    let t = TwoWay::start(Crm::Zoho, RECONCILE_OFF).await;
    let channel = t.channel().await.unwrap();
    assert_eq!(channel["events"], json!(["Leads.all"]));
    assert_eq!(
        channel["notify_url"],
        format!("http://127.0.0.1:{}/hooks/zoho", t.hook_port),
        "public_url defaults to the receiver's address"
    );
    edits_cross_once_and_never_echo_back(&t).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_with_a_wrong_token_are_refused() {
    let t = TwoWay::start(Crm::Zoho, RECONCILE_OFF).await;
    let channel = t.channel().await.unwrap();
    let token = channel["token"].as_str().expect("the channel has a token");
    assert!(!token.is_empty() && token.len() <= 50);
    t.db.exec("INSERT INTO leads (email, last_name) VALUES ('ada@example.com', 'Lovelace')")
        .await;
    t.wait_in_sync("initial row").await;
    let id = t.crm_records().await[&1].0.clone();
    let body = |token: Value| {
        json!({"server_time": 1, "module": "Leads", "operation": "update", "ids": [id],
               "channel_id": channel["channel_id"], "token": token})
    };
    let url = format!("http://127.0.0.1:{}/hooks/zoho", t.hook_port);
    let notify = |body: Value| {
        let req = http().post(&url).json(&body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let wrong = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(notify(body(json!(wrong))).await, 401, "wrong");
    assert_eq!(notify(body(Value::Null)).await, 401, "missing");
    assert_eq!(notify(json!({"hello": 1})).await, 401, "junk");
    assert_eq!(
        notify(body(json!(token))).await,
        204,
        "the channel's token is accepted"
    );
    assert_eq!(
        t.log().matches("notification refused").count(),
        3,
        "each refusal is logged and counted"
    );
    // The accepted notification was read, found in sync and wrote nothing: the sentinel's
    // notification follows it.
    t.inbound_sentinel(1).await;
    assert_eq!(
        t.origins(2),
        [None, t.origin()],
        "only the sentinel was written"
    );
    assert!(t.in_sync().await);
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_restarted_after_a_crash_takes_over_its_channel() {
    let mut t = TwoWay::start(Crm::Zoho, RECONCILE_OFF).await;
    t.db.exec("INSERT INTO leads (email, last_name) VALUES ('ada@example.com', 'Lovelace')")
        .await;
    t.wait_in_sync("initial row").await;
    t.inbound_sentinel(1).await;
    let first = t.channel().await.unwrap();
    // Killed: the channel stays subscribed, and Zoho refuses to subscribe its id again.
    t.worker.take().unwrap().kill9();
    t.start_worker().await;
    eventually("the restarted worker owns the channel", WAIT, || async {
        t.channel().await.unwrap()["token"] != first["token"]
    })
    .await;
    let state = t.emulator.state().await;
    assert_eq!(state["channels"].as_array().unwrap().len(), 1);
    assert_eq!(state["channels"][0]["channel_id"], first["channel_id"]);
    assert_eq!(state["request_counts"]["PUT /crm/v8/actions/watch"], 1);
    // Notifications reach the new worker (with its token): a Zoho edit arrives in Postgres.
    t.inbound_sentinel(1).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spent_credits_are_waited_out_with_doubling_waits() {
    let t = TwoWay::start(Crm::Zoho, RECONCILE_OFF).await;
    // The day's credits are spent, answered like the concurrency gate (the default body).
    let used = t.emulator.state().await["credits_used"].as_u64().unwrap();
    let spent = json!({"creditsPerDay": used});
    assert_eq!(t.emulator.post("/_emulator/settings", &spent).await.0, 204);
    t.db.exec("INSERT INTO leads (email, last_name) VALUES ('ada@example.com', 'Lovelace')")
        .await;
    eventually("two 429s in a row", WAIT, || async {
        t.log().contains("2 in a row")
    })
    .await;
    let more = json!({"creditsPerDay": 5000});
    assert_eq!(t.emulator.post("/_emulator/settings", &more).await.0, 204);
    t.wait_in_sync("after the credits came back").await;
    let waits: Vec<u64> = t
        .log()
        .lines()
        .filter(|l| l.contains("batch failed transiently"))
        .filter_map(|l| {
            l.split("retry_in_ms=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(waits.len() >= 2, "{waits:?}");
    assert_eq!(waits[0], 2_000, "{waits:?}");
    assert!(
        waits.windows(2).all(|w| w[1] == 2 * w[0]),
        "each 429 in a row doubles the wait: {waits:?}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_notifications_are_repaired_by_reconciliation() {
    // Zoho posts to a port nobody listens on: only the COQL reconciliation sees the edit.
    let lost = free_port();
    let t = TwoWay::start(
        Crm::Zoho,
        &format!("reconcile_every = \"1s\"\nreconcile_lag = \"3s\"\npublic_url = \"http://127.0.0.1:{lost}/hooks/zoho\""),
    )
    .await;
    assert_eq!(
        t.channel().await.unwrap()["notify_url"],
        format!("http://127.0.0.1:{lost}/hooks/zoho")
    );
    t.db.exec("INSERT INTO leads (email, last_name) VALUES ('ada@example.com', 'Lovelace')")
        .await;
    t.wait_in_sync("initial row").await;
    let crm_before = t.sink_writes().await;
    t.edit_in_crm(1, json!({"Last_Name": "King"})).await;
    eventually(
        "reconciliation brings the Zoho edit to Postgres",
        WAIT,
        || async { t.postgres().await[&1][1] == "King" },
    )
    .await;
    // Passes after the repair queue what they find before the next edit, which a later pass
    // brings in: once that sentinel reached Postgres, the passes' writes are in.
    t.wait_reconciliation_passes(2).await;
    t.inbound_sentinel(1).await;
    // The sentinel follows the inbound writes in the key's partition.
    t.outbound_sentinel(1).await;
    let origins = t.origins(4);
    assert_eq!(
        t.tagged(&origins),
        2,
        "the repair and the inbound sentinel are inbound writes; repeated passes write \
         nothing more: {origins:?}"
    );
    assert_eq!(
        t.sink_writes().await,
        crm_before + 1,
        "only the sentinel: nothing went back to Zoho"
    );
    assert!(t.log().contains("reconciliation pass done"));
    t.finish().await;
}

scenario_tests! {
    deletions_delete_rows_when_configured => deletion_in_crm(Crm::Zoho, "delete", false);
    lost_deletions_are_repaired_by_reconciliation => deletion_in_crm(Crm::Zoho, "delete", true);
    deletions_keep_rows_by_default => deletion_in_crm(Crm::Zoho, "ignore", false);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_edits_converge_to_each_fields_owner() {
    let mut t = TwoWay::start_with(
        Crm::Zoho,
        Options {
            inbound: r#"reconcile_every = "3s"
reconcile_lag = "3s""#,
            ownership: r#"email = "postgres"
last_name = "zoho""#,
            ..Options::default()
        },
    )
    .await;
    t.db.exec(
        "INSERT INTO leads (email, last_name) VALUES ('ada@example.com', 'Lovelace'), \
         ('grace@example.com', 'Hopper')",
    )
    .await;
    t.wait_in_sync("initial rows").await;
    // Both sides edit both fields while the sink is down: record 1 Postgres first, record 2
    // Zoho first (Zoho's change times have second precision: a second apart).
    t.stop_worker();
    t.db.exec("UPDATE leads SET email = 'pg1@example.com', last_name = 'Pg1' WHERE id = 1")
        .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    t.edit_in_crm(1, json!({"Email": "zo1@example.com", "Last_Name": "Zo1"}))
        .await;
    t.edit_in_crm(2, json!({"Email": "zo2@example.com", "Last_Name": "Zo2"}))
        .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    t.db.exec("UPDATE leads SET email = 'pg2@example.com', last_name = 'Pg2' WHERE id = 2")
        .await;
    t.start_worker().await;
    t.wait_in_sync("after the concurrent edits").await;
    let pg = t.postgres().await;
    // email: Postgres owns it; last_name: Zoho owns it, whichever side edited last.
    assert_eq!(pg[&1], ["pg1@example.com", "Zo1"]);
    assert_eq!(pg[&2], ["pg2@example.com", "Zo2"]);
    t.finish().await;
}
