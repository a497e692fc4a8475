//! End to end: Postgres → capture → Kafka (tansu) → sink worker → HubSpot emulator, all real
//! processes over TCP.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

struct Emulator {
    child: Child,
    port: u16,
}

impl Emulator {
    fn start(kind: &str) -> Emulator {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_driftless"))
            .args(["emulate", kind, "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "emulator did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Emulator { child, port }
    }

    async fn state(&self) -> Value {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/_emulator/state", self.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Live (not archived) contacts by email → (firstname, lifecyclestage), and the number of
/// objects (archived included) per email.
fn hubspot_contacts(
    state: &Value,
) -> (BTreeMap<String, (String, String)>, BTreeMap<String, usize>) {
    let mut live = BTreeMap::new();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for o in state["objects"]["contacts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let p = &o["properties"];
        let email = p["email"].as_str().unwrap_or_default().to_string();
        *count.entry(email.clone()).or_default() += 1;
        if o["archived"] != true {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            live.insert(email, (s("firstname"), s("lifecyclestage")));
        }
    }
    (live, count)
}

/// What can go wrong during an end-to-end run.
#[derive(Default)]
struct Scenario {
    /// Fault script posted to the emulator before the workload (`/_emulator/faults`).
    faults: Option<Value>,
    /// kill -9 the (first) sink worker after the inserts, restart it after the updates.
    kill_worker: bool,
    /// Sink worker processes in the consumer group.
    workers: usize,
    /// After converging: wipe the emulator and rebuild it with `driftless replay`.
    replay: bool,
}

impl Emulator {
    async fn faults(&self, script: &Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/_emulator/faults", self.port))
            .json(script)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "fault script accepted");
    }
}

/// Random inserts/updates/deletes on Postgres → capture → Kafka → sink worker(s) → HubSpot
/// emulator; at the end the emulator's live contacts equal `SELECT` (emails lower-cased), with
/// exactly one object per source key, and the emulator's rate limit was never exceeded.
async fn converge(scenario: Scenario) {
    let emulator = Emulator::start("hubspot");
    let db = TestDb::new("e2e").await;
    db.exec(
        "CREATE TABLE contacts (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, \
         first_name text, lifecycle text NOT NULL)",
    )
    .await;
    // A consumer group of its own: a member left behind by another run would delay assignment.
    let name = unique("hubspot-contacts").replace('_', "-");
    let sink = format!(
        r#"
[[sinks]]
name = "{name}"
kind = "hubspot"
table = "public.contacts"
object = "contacts"
id_property = "pg_external_id"
token_env = "HUBSPOT_TOKEN"
base_url = "http://127.0.0.1:{}"
batch_max_wait_ms = 200
[sinks.fields]
id = "pg_external_id"
email = {{ property = "email", transform = "lowercase" }}
first_name = "firstname"
lifecycle = {{ property = "lifecyclestage", map = {{ lead = "lead", customer = "customer" }} }}
"#,
        emulator.port,
    );
    let setup = Setup::new(&db, &["public.contacts"], "", "");
    let text = std::fs::read_to_string(&setup.config).unwrap() + &sink;
    std::fs::write(&setup.config, text).unwrap();
    let mut cap = setup.start();
    cap.wait_streaming().await;
    let start_worker = || {
        setup.start_with(
            "sink",
            &["--name", &name],
            &[("HUBSPOT_TOKEN", "test-token")],
        )
    };
    let mut workers: Vec<Capture> = (0..scenario.workers.max(1))
        .map(|_| start_worker())
        .collect();
    if workers.len() > 1 {
        // Let the group settle (every member joined and got its partitions) before the load.
        eventually("every worker started", Duration::from_secs(30), || async {
            workers
                .iter()
                .all(|w| w.log_text().contains("sink worker started"))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    if let Some(script) = &scenario.faults {
        emulator.faults(script).await;
    }

    // Random workload: inserts, many updates of a few hot keys, some deletes.
    let mut rng_state = 42u64;
    let mut rnd = move |n: u64| {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng_state >> 33) % n
    };
    db.exec(
        "INSERT INTO contacts SELECT g, 'User' || g || '@Example.com', 'first' || g, \
         CASE WHEN g % 2 = 0 THEN 'lead' ELSE 'customer' END FROM generate_series(1, 1000) g",
    )
    .await;
    if scenario.kill_worker {
        tokio::time::sleep(Duration::from_millis(700)).await;
        workers[0].kill9();
    }
    for round in 0..300 {
        let id = if round % 3 == 0 {
            1 + rnd(5)
        } else {
            1 + rnd(1000)
        };
        let stage = if rnd(2) == 0 { "lead" } else { "customer" };
        db.exec(&format!(
            "UPDATE contacts SET first_name = 'n{round}', lifecycle = '{stage}' WHERE id = {id}"
        ))
        .await;
    }
    db.exec("DELETE FROM contacts WHERE id % 97 = 0").await;
    if scenario.kill_worker {
        workers[0] = start_worker();
    }

    let expected: BTreeMap<String, (String, String)> = db
        .client
        .query(
            "SELECT lower(email), first_name, lifecycle FROM contacts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2))))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let (live, _) = hubspot_contacts(&emulator.state().await);
        if live == expected {
            break;
        }
        if std::time::Instant::now() > deadline {
            let missing = expected.keys().filter(|k| !live.contains_key(*k)).count();
            let extra = live.keys().filter(|k| !expected.contains_key(*k)).count();
            let differ = expected
                .iter()
                .filter(|(k, v)| live.get(*k).is_some_and(|l| l != *v));
            let logs: Vec<String> = workers.iter().map(Capture::log_text).collect();
            panic!(
                "emulator != SELECT: {missing} missing, {extra} extra, {} differing\n{}",
                differ.count(),
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let state = emulator.state().await;
    let (_, count) = hubspot_contacts(&state);
    assert!(
        count.values().all(|&n| n == 1),
        "exactly one object per source key"
    );
    assert_eq!(
        count.len(),
        1000,
        "every key ever inserted exists once (deleted ones archived)"
    );
    let max_window = state["requests"]["maxInAnyWindow"].as_u64().unwrap();
    assert!(
        max_window <= 100,
        "never above the 10-second limit: {max_window}"
    );
    if scenario.replay {
        let replay = |from: &str| {
            setup
                .command("replay")
                .args(["--name", &name, "--from", from])
                .env("HUBSPOT_TOKEN", "test-token")
                .output()
                .unwrap()
        };
        // From scratch: the destination is emptied, a replay from the earliest offset rebuilds it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/_emulator/reset",
                emulator.port
            ))
            .send()
            .await
            .unwrap();
        assert!(hubspot_contacts(&emulator.state().await).0.is_empty());
        let out = replay("earliest");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("replayed: records="), "{stdout}");
        let after = emulator.state().await;
        assert!(
            hubspot_contacts(&after).0 == expected,
            "replay rebuilt the destination"
        );
        // Idempotent: replaying again from a time and from explicit offsets changes nothing.
        let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        for from in [hour_ago.as_str(), "0:0,1:0"] {
            let out = replay(from);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let state = emulator.state().await;
            let (live, _) = hubspot_contacts(&state);
            assert!(live == expected, "replay from {from} changed the result");
            // Re-applying a deleted key's history re-creates it before archiving it again (an
            // upsert never matches an archived record), so archived copies may multiply; live
            // records never do.
            let mut live_per_key: BTreeMap<String, usize> = BTreeMap::new();
            for o in state["objects"]["contacts"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if o["archived"] != true {
                    let email = o["properties"]["email"].as_str().unwrap_or_default();
                    *live_per_key.entry(email.to_string()).or_default() += 1;
                }
            }
            assert!(
                live_per_key.values().all(|&n| n == 1),
                "replay from {from} duplicated"
            );
        }
    }
    let several = workers.len() > 1;
    for w in &mut workers {
        assert_eq!(w.stop(), Some(0));
        if several {
            // Every member of the group got partitions and applied records.
            let log = w.log_text();
            let records = log
                .lines()
                .find(|l| l.contains("sink worker stopped"))
                .and_then(|l| l.split("records=").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok());
            assert!(
                records.is_some_and(|n| n > 0),
                "worker applied nothing:\n{log}"
            );
        }
    }
    assert_eq!(cap.stop(), Some(0));
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_changes_converge_in_the_hubspot_emulator_once_per_key() {
    converge(Scenario::default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hubspot_faults_429_500_resets_and_fail_after_write_still_converge() {
    let faults = serde_json::json!([
        {"path": "batch/upsert", "status": 429, "count": 3},
        {"path": "batch/upsert", "status": 500, "count": 2},
        {"path": "batch/upsert", "reset_connection": true, "count": 2},
        {"path": "batch/upsert", "fail_after_write": true, "count": 2},
        {"path": "batch/archive", "status": 503, "count": 2}
    ]);
    converge(Scenario {
        faults: Some(faults),
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_worker_killed_mid_load_restarts_and_converges() {
    converge(Scenario {
        kill_worker: true,
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sink_workers_share_partitions_and_converge() {
    converge(Scenario {
        workers: 2,
        ..Default::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_rebuilds_the_destination_and_reapplies_idempotently() {
    converge(Scenario {
        replay: true,
        ..Default::default()
    })
    .await;
}
