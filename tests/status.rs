//! `driftless status` against a streaming capture, a sink whose group has consumed nothing yet,
//! and a capture error.

use serde_json::Value;

use crate::support::*;

fn status(setup: &Setup, json: bool) -> String {
    let mut cmd = setup.command("status");
    if json {
        cmd.arg("--json");
    }
    run_ok(cmd.env("WEBHOOK_SECRET", "whsec_c2VjcmV0"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_slot_checkpoint_last_error_and_each_sinks_lag() {
    let (db, setup, mut cap) = capture_streaming(
        "status",
        "CREATE TABLE contacts (id bigint PRIMARY KEY, email text)",
        &["public.contacts"],
    )
    .await;
    setup.append_config(
        r#"
[[sinks]]
name = "hook"
kind = "webhook"
table = "public.contacts"
url = "http://127.0.0.1:9/hook"
secret_env = "WEBHOOK_SECRET"
"#,
    );
    db.exec("INSERT INTO contacts SELECT g, 'x' FROM generate_series(1, 7) g")
        .await;
    read_n(&setup.topic("public.contacts"), 7, WAIT);
    let s: Value = serde_json::from_str(&status(&setup, true)).unwrap();
    let capture = &s["capture"];
    assert_eq!(capture["slot"], setup.slot.as_str());
    assert_eq!(capture["exists"], true);
    assert!(capture["active_pid"].as_i64().is_some(), "{s}");
    assert_eq!(capture["checkpoint_phase"], "streaming");
    assert!(capture["lag_bytes"].as_i64().is_some_and(|b| b >= 0), "{s}");
    assert_eq!(capture["last_error"], Value::Null);
    assert_eq!(capture["backfills"], serde_json::json!([]));
    assert_eq!(capture["dead_letters"], 0);
    // The sink's group has consumed nothing: its lag is the whole topic.
    assert_eq!(s["sinks"][0]["name"], "hook");
    assert_eq!(s["sinks"][0]["lag"], 7);
    assert_eq!(s["sinks"][0]["dead_letters"], 0);
    assert_eq!(s["problems"], serde_json::json!([]));

    // A terminated walsender: capture retries, and status shows the error it retried.
    db.exec(&format!(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
         WHERE slot_name = '{}'",
        setup.slot
    ))
    .await;
    eventually("status shows the last error", WAIT, || async {
        let s: Value = serde_json::from_str(&status(&setup, true)).unwrap();
        s["capture"]["last_error"]["class"] == "transient"
    })
    .await;
    let table = status(&setup, false);
    for expected in [
        "capture (slot ",
        "  last error    ",
        "transient",
        "hook",
        "DEAD LETTERS",
    ] {
        assert!(table.contains(expected), "{expected:?} in:\n{table}");
    }
    let sink_row = table
        .lines()
        .find(|l| l.trim_start().starts_with("hook"))
        .unwrap();
    let columns: Vec<&str> = sink_row.split_whitespace().collect();
    assert_eq!(columns[2..], ["7", "0"], "{table}");
    stop_cleanly(&mut cap, db).await;
}
