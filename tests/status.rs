//! `driftless status` against a streaming capture, a sink whose group has consumed nothing yet,
//! and a capture error; and the states sink workers publish on the status topic: a healthy
//! worker running (then stopped), a worker whose CRM refused its token failed, with its error's
//! class and text but no row value.

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

/// A HubSpot contacts sink `name` against the emulator on `port` (token `HUBSPOT_TOKEN`).
fn hubspot_sink(name: &str, port: u16) -> String {
    format!(
        r#"
[[sinks]]
name = "{name}"
kind = "hubspot"
table = "public.contacts"
object = "contacts"
id_property = "email"
token_env = "HUBSPOT_TOKEN"
base_url = "http://127.0.0.1:{port}"
batch_max_wait_ms = 200
[sinks.fields]
email = "email"
first_name = "firstname"
"#
    )
}

/// The workers `status --json` shows for sink `name`.
fn workers(status: &Value, name: &str) -> Vec<Value> {
    let sinks = status["sinks"].as_array().unwrap();
    let sink = sinks.iter().find(|s| s["name"] == name).unwrap();
    sink["workers"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_each_sink_workers_state_and_a_failed_ones_error_without_row_values() {
    const SENTINEL: &str = "Sentinel7f3a";
    let (ok_crm, bad_crm) = (Emulator::start("hubspot"), Emulator::start("hubspot"));
    let (db, setup, mut cap) = capture_streaming(
        "status_workers",
        "CREATE TABLE contacts (id bigint PRIMARY KEY, email text NOT NULL, \
         first_name text NOT NULL)",
        &["public.contacts"],
    )
    .await;
    let ok = unique("ok").replace('_', "-");
    let bad = unique("bad").replace('_', "-");
    setup.append_config(&hubspot_sink(&ok, ok_crm.port));
    setup.append_config(&hubspot_sink(&bad, bad_crm.port));
    let token = ("HUBSPOT_TOKEN", "test-token");
    let mut ok_worker = setup.start_with("sink", &["--name", &ok], &[token]);
    let mut bad_worker = setup.start_with(
        "sink",
        &["--name", &bad],
        &[token, ("DRIFTLESS_WORKER_ID", "worker-bad")],
    );
    // Both started: each published "running".
    eventually("both workers report running", WAIT, || async {
        let s: Value = serde_json::from_str(&status(&setup, true)).unwrap();
        [&ok, &bad].iter().all(|n| {
            workers(&s, n)
                .first()
                .is_some_and(|w| w["state"] == "running")
        })
    })
    .await;
    // The bad CRM refuses the token from its first write on (401: fatal).
    let (code, _) = bad_crm
        .post(
            "/_emulator/faults",
            &serde_json::json!({"path": "batch/upsert", "expire_tokens": true}),
        )
        .await;
    assert!(code < 300);
    db.exec(&format!(
        "INSERT INTO contacts VALUES (1, '{}@example.com', '{SENTINEL}')",
        SENTINEL.to_lowercase()
    ))
    .await;
    assert_eq!(
        bad_worker.wait_exit(WAIT),
        Some(1),
        "the refused token stops the worker\n{}",
        bad_worker.log_text()
    );
    // The healthy worker wrote the row.
    eventually("the row reaches the healthy CRM", WAIT, || async {
        let state = ok_crm.state().await;
        state["objects"]["contacts"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["properties"]["firstname"] == SENTINEL))
    })
    .await;

    // The failed worker published its state before it exited.
    let text = status(&setup, true);
    let s: Value = serde_json::from_str(&text).unwrap();
    let failed = workers(&s, &bad);
    assert_eq!(failed.len(), 1, "{s}");
    let w = &failed[0];
    assert_eq!(
        (&w["worker"], &w["state"], &w["last_error"]["class"]),
        (&"worker-bad".into(), &"failed".into(), &"fatal".into()),
        "{s}"
    );
    let message = w["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("HubSpot refused the token (401"), "{s}");
    assert!(
        w["last_error"]["hint"]
            .as_str()
            .unwrap()
            .contains("HUBSPOT_TOKEN"),
        "{s}"
    );
    assert!(w["age_seconds"].as_i64().is_some_and(|a| a >= 0), "{s}");
    assert_eq!(w["stale"], false);
    assert!(
        !text.to_lowercase().contains(&SENTINEL.to_lowercase()),
        "no row value in the status: {text}"
    );
    let running = workers(&s, &ok);
    assert_eq!(running.len(), 1, "{s}");
    assert_eq!(
        (&running[0]["state"], &running[0]["errors"]),
        (&"running".into(), &0.into())
    );
    // Unconfigured, a worker is `{hostname}-{pid}`.
    let id = running[0]["worker"].as_str().unwrap();
    assert!(
        id.rsplit_once('-')
            .is_some_and(|(host, pid)| !host.is_empty() && pid.parse::<u32>().is_ok()),
        "{s}"
    );
    let table = status(&setup, false);
    for expected in [
        "    worker worker-bad: failed, reported ",
        "fatal: HubSpot refused the token (401",
        ": running, reported ",
    ] {
        assert!(table.contains(expected), "{expected:?} in:\n{table}");
    }

    // A graceful stop is published as such.
    assert_eq!(ok_worker.stop(), Some(0));
    let s: Value = serde_json::from_str(&status(&setup, true)).unwrap();
    assert_eq!(workers(&s, &ok)[0]["state"], "stopped", "{s}");
    // The (compacted) status topic was created and every state published.
    for log in [ok_worker.log_text(), bad_worker.log_text()] {
        assert!(
            !log.contains("status topic") && !log.contains("worker's state"),
            "{log}"
        );
    }
    stop_cleanly(&mut cap, db).await;
}
