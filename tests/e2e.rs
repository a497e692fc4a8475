//! End to end: Postgres → capture → Kafka (tansu) → sink worker → HubSpot or Zoho emulator, all
//! real processes over TCP. One harness, [`converge`], runs every scenario ([`Scenario`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A row as the tests compare it: lower(email) → (first_name, lifecycle).
type Rows = BTreeMap<String, (String, String)>;

/// Where the sink writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Dest {
    /// HubSpot contacts, upserted by `pg_external_id`.
    #[default]
    Hubspot,
    /// Zoho CRM Leads, upserted by the external-id field `External_Id`, always with OAuth.
    Zoho,
}

/// Every secret a sink of the tests may name (the emulators' defaults).
const SINK_ENV: [(&str, &str); 7] = [
    ("HUBSPOT_TOKEN", "test-token"),
    ("HUBSPOT_CLIENT_ID", "test-client-id"),
    ("HUBSPOT_CLIENT_SECRET", "test-client-secret"),
    ("HUBSPOT_REFRESH_TOKEN", "test-refresh-token"),
    ("ZOHO_CLIENT_ID", "test-client-id"),
    ("ZOHO_CLIENT_SECRET", "test-client-secret"),
    ("ZOHO_REFRESH_TOKEN", "test-refresh-token"),
];

/// The poison row of [`Scenario::poison`]: its lifecycle is not in the sink's map.
const POISON_ID: i64 = 1001;
const POISON_EMAIL: &str = "poison@example.com";

impl Dest {
    fn emulator(self) -> &'static str {
        match self {
            Dest::Hubspot => "hubspot",
            Dest::Zoho => "zoho",
        }
    }

    /// The `[[sinks]]` table. `oauth`: `[sinks.oauth]` against the emulator's token endpoint
    /// instead of a static token (Zoho always). `evangelist`: the lifecycle map also knows
    /// `evangelist` (the fix of the poison scenario).
    fn sink_toml(self, name: &str, port: u16, oauth: bool, evangelist: bool) -> String {
        let base = format!("http://127.0.0.1:{port}");
        match self {
            Dest::Hubspot => {
                let auth = if oauth {
                    format!(
                        "[sinks.oauth]\nclient_id_env = \"HUBSPOT_CLIENT_ID\"\n\
                         client_secret_env = \"HUBSPOT_CLIENT_SECRET\"\n\
                         refresh_token_env = \"HUBSPOT_REFRESH_TOKEN\"\n\
                         token_url = \"{base}/oauth/v3/token\"\n"
                    )
                } else {
                    String::new()
                };
                let token = if oauth {
                    ""
                } else {
                    "token_env = \"HUBSPOT_TOKEN\"\n"
                };
                let extra = if evangelist {
                    ", evangelist = \"evangelist\""
                } else {
                    ""
                };
                format!(
                    r#"
[[sinks]]
name = "{name}"
kind = "hubspot"
table = "public.contacts"
object = "contacts"
id_property = "pg_external_id"
{token}base_url = "{base}"
batch_max_wait_ms = 200
{auth}[sinks.fields]
id = "pg_external_id"
email = {{ property = "email", transform = "lowercase" }}
first_name = "firstname"
lifecycle = {{ property = "lifecyclestage", map = {{ lead = "lead", customer = "customer"{extra} }} }}
"#
                )
            }
            Dest::Zoho => {
                assert!(!evangelist, "the poison scenario runs against HubSpot");
                // Leads: Last_Name is mandatory (first_name is never NULL in the workload);
                // the lifecycle becomes a Lead_Status picklist value.
                format!(
                    r#"
[[sinks]]
name = "{name}"
kind = "zoho"
table = "public.contacts"
module = "Leads"
id_property = "External_Id"
base_url = "{base}"
batch_max_wait_ms = 200
[sinks.oauth]
client_id_env = "ZOHO_CLIENT_ID"
client_secret_env = "ZOHO_CLIENT_SECRET"
refresh_token_env = "ZOHO_REFRESH_TOKEN"
token_url = "{base}/oauth/v2/token"
[sinks.fields]
id = "External_Id"
email = {{ property = "Email", transform = "lowercase" }}
first_name = "Last_Name"
lifecycle = {{ property = "Lead_Status", map = {{ lead = "Not Contacted", customer = "Qualified" }} }}
"#
                )
            }
        }
    }

    /// Live records by email → (first name, lifecycle) normalised back to the source's
    /// values, and the number of records (archived / in the recycle bin included) per email.
    fn contacts(self, state: &Value) -> (Rows, BTreeMap<String, usize>) {
        let mut live = BTreeMap::new();
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        let (records, email, first, stage, deleted) = match self {
            Dest::Hubspot => (
                &state["objects"]["contacts"],
                "/properties/email",
                "/properties/firstname",
                "/properties/lifecyclestage",
                "/archived",
            ),
            Dest::Zoho => (
                &state["records"]["Leads"],
                "/Email",
                "/Last_Name",
                "/Lead_Status",
                "/$deleted",
            ),
        };
        for o in records.as_array().into_iter().flatten() {
            let s = |ptr: &str| {
                o.pointer(ptr)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let key = s(email);
            *count.entry(key.clone()).or_default() += 1;
            if o.pointer(deleted) != Some(&Value::Bool(true)) {
                let lifecycle = match s(stage).as_str() {
                    "Not Contacted" if self == Dest::Zoho => "lead".to_string(),
                    "Qualified" if self == Dest::Zoho => "customer".to_string(),
                    other => other.to_string(),
                };
                live.insert(key, (s(first), lifecycle));
            }
        }
        (live, count)
    }

    /// A fault expiring every access token at the next request matching `path` (`None`: any
    /// write or lookup).
    fn expire_tokens(self, upserts_only: bool) -> Value {
        let path = match (self, upserts_only) {
            (Dest::Hubspot, true) => "batch/upsert",
            (Dest::Hubspot, false) => "batch/",
            (Dest::Zoho, true) => "/upsert",
            (Dest::Zoho, false) => "/crm/v8/",
        };
        serde_json::json!({"path": path, "expire_tokens": true})
    }

    fn pending_faults(self, state: &Value) -> u64 {
        let v = match self {
            Dest::Hubspot => &state["pendingFaults"],
            Dest::Zoho => &state["pending_faults"],
        };
        v.as_u64().unwrap()
    }

    /// Calls of the OAuth token endpoint.
    fn token_requests(self, state: &Value) -> u64 {
        let v = match self {
            Dest::Hubspot => &state["requests"]["byPath"]["/oauth/v3/token"],
            Dest::Zoho => &state["request_counts"]["POST /oauth/v2/token"],
        };
        v.as_u64().unwrap_or(0)
    }

    /// Destination-specific checks of the final state.
    fn check_final(self, state: &Value) {
        match self {
            Dest::Hubspot => {
                let max_window = state["requests"]["maxInAnyWindow"].as_u64().unwrap();
                assert!(
                    max_window <= 100,
                    "never above the 10-second limit: {max_window}"
                );
            }
            Dest::Zoho => {
                let calls = state["write_calls"].as_array().unwrap();
                assert!(!calls.is_empty(), "upserts were made");
                for c in calls {
                    assert_eq!(c["trigger"], serde_json::json!([]), "every write: {c}");
                    assert_eq!(c["workflows_fired"], false, "{c}");
                }
                assert_eq!(state["workflow_runs"], 0, "no workflow ran");
            }
        }
    }
}

/// What can go wrong during an end-to-end run.
#[derive(Default)]
struct Scenario {
    /// The destination.
    dest: Dest,
    /// HubSpot with `[sinks.oauth]` instead of a static token (Zoho always uses OAuth).
    oauth: bool,
    /// Fault script posted to the emulator before the workload (`/_emulator/faults`).
    faults: Option<Value>,
    /// Expire every access token mid-run, twice: at an upsert after the inserts, at a request
    /// after the updates (each waits until the previous one fired).
    expire_tokens: bool,
    /// kill -9 the (first) sink worker after the inserts, restart it after the updates.
    kill_worker: bool,
    /// Sink worker processes in the consumer group.
    workers: usize,
    /// Capture and the sink in one `driftless run` process instead of separate ones.
    one_process: bool,
    /// Check the audit topic: every key applied at least once, no keys or values in it.
    audit: bool,
    /// After converging: wipe the emulator and rebuild it with `driftless replay`.
    replay: bool,
    /// Insert a row the sink cannot map (a lifecycle missing from the map); it must land on
    /// the dead-letter topic while the rest converges, then be applied once by
    /// `driftless replay --dead-letters` after the map is fixed.
    poison: bool,
}

impl Emulator {
    async fn faults(&self, script: &Value) {
        let (status, _) = self.post("/_emulator/faults", script).await;
        assert!((200..300).contains(&status), "fault script accepted");
    }

    /// Waits until the emulator's live records equal `expected`; panics with a summary and the
    /// workers' logs after `timeout`.
    async fn wait_for(
        &self,
        dest: Dest,
        expected: &Rows,
        timeout: Duration,
        workers: &[DriftlessProcess],
    ) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (live, _) = dest.contacts(&self.state().await);
            if live == *expected {
                return;
            }
            if std::time::Instant::now() > deadline {
                let missing = expected.keys().filter(|k| !live.contains_key(*k)).count();
                let extra = live.keys().filter(|k| !expected.contains_key(*k)).count();
                let differ = expected
                    .iter()
                    .filter(|(k, v)| live.get(*k).is_some_and(|l| l != *v));
                let logs: Vec<String> = workers.iter().map(DriftlessProcess::log_text).collect();
                panic!(
                    "emulator != SELECT: {missing} missing, {extra} extra, {} differing\n{}",
                    differ.count(),
                    logs.join("\n----\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until every scripted fault fired.
    async fn wait_faults_fired(&self, dest: Dest) {
        eventually("the scripted faults fired", WAIT, || async {
            dest.pending_faults(&self.state().await) == 0
        })
        .await;
    }
}

/// The emulator, a database with the `contacts` table and a capture setup with the sink
/// `name` configured (no process started yet).
struct Stack {
    emulator: Emulator,
    db: TestDb,
    name: String,
    setup: Setup,
    /// The configuration before the sink was added.
    base_config: String,
}

impl Stack {
    async fn start(dest: Dest, tag: &str, oauth: bool) -> Stack {
        let emulator = Emulator::start(dest.emulator());
        let db = TestDb::new(tag).await;
        db.exec(
            "CREATE TABLE contacts (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, \
             first_name text, lifecycle text NOT NULL)",
        )
        .await;
        // A consumer group of its own: a member left behind by another run would delay
        // assignment.
        let name = unique(&format!("{}-contacts", dest.emulator())).replace('_', "-");
        let setup = Setup::new(&db, &["public.contacts"], "", "");
        let base_config = std::fs::read_to_string(&setup.config).unwrap();
        setup.append_config(&dest.sink_toml(&name, emulator.port, oauth, false));
        Stack {
            emulator,
            db,
            name,
            setup,
            base_config,
        }
    }
}

/// Random inserts/updates/deletes on Postgres → capture → Kafka → sink worker(s) → emulator; at
/// the end the emulator's live records equal `SELECT` (emails lower-cased, Zoho's picklist
/// values mapped back), with exactly one record per source key (deleted ones archived or in the
/// recycle bin), plus the destination's own checks ([`Dest::check_final`]).
async fn converge(scenario: Scenario) {
    let dest = scenario.dest;
    let oauth = scenario.oauth || dest == Dest::Zoho;
    let Stack {
        emulator,
        db,
        name,
        setup,
        base_config,
    } = Stack::start(dest, "e2e", oauth).await;
    let mut cap = if scenario.one_process {
        setup.start_with("run", &[], &SINK_ENV)
    } else {
        setup.start()
    };
    cap.wait_streaming().await;
    let separate = if scenario.one_process {
        0
    } else {
        scenario.workers.max(1)
    };
    let start_worker = || setup.start_with("sink", &["--name", &name], &SINK_ENV);
    let mut workers: Vec<DriftlessProcess> = (0..separate).map(|_| start_worker()).collect();
    if workers.len() > 1 {
        // Let the group settle (every member joined and got its partitions) before the load.
        // A fixed wait: tansu can neither describe the group nor does the worker log its
        // partitions, so there is no arrival to wait for.
        eventually("every worker started", WAIT, || async {
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
    let mut rnd = seeded_random(42);
    db.exec(
        "INSERT INTO contacts SELECT g, 'User' || g || '@Example.com', 'first' || g, \
         CASE WHEN g % 2 = 0 THEN 'lead' ELSE 'customer' END FROM generate_series(1, 1000) g",
    )
    .await;
    if scenario.expire_tokens {
        emulator.faults(&dest.expire_tokens(true)).await;
    }
    if scenario.poison {
        db.exec(&format!(
            "INSERT INTO contacts VALUES ({POISON_ID}, '{POISON_EMAIL}', 'poison', 'evangelist')"
        ))
        .await;
    }
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
    if scenario.expire_tokens {
        // One expiry at a time: a token expiring again right after its refresh is refused twice,
        // which stops the worker by design.
        emulator.wait_faults_fired(dest).await;
        emulator.faults(&dest.expire_tokens(false)).await;
    }
    db.exec("DELETE FROM contacts WHERE id % 97 = 0").await;
    if scenario.kill_worker {
        workers[0] = start_worker();
    }

    let mut expected: Rows = db
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
    let poisoned = expected.remove(POISON_EMAIL);
    assert_eq!(poisoned.is_some(), scenario.poison);
    // The processes whose logs explain a failure: the workers, or `driftless run` itself.
    let logs = if workers.is_empty() {
        std::slice::from_ref(&cap)
    } else {
        &workers[..]
    };
    emulator
        .wait_for(dest, &expected, Duration::from_secs(150), logs)
        .await;
    let state = emulator.state().await;
    let (_, count) = dest.contacts(&state);
    assert!(
        count.values().all(|&n| n == 1),
        "exactly one record per source key"
    );
    // A key inserted and deleted before the sink applied its insert coalesces into one
    // delete, which creates nothing; every other key exists once (deleted ones archived).
    let ever = 1000;
    assert!(
        (expected.len()..=ever).contains(&count.len()),
        "every live key once, at most every key ever inserted, the poison row not: {}",
        count.len()
    );
    dest.check_final(&state);
    if scenario.expire_tokens {
        emulator.wait_faults_fired(dest).await;
        let state = emulator.state().await;
        assert!(
            dest.token_requests(&state) >= 3,
            "a token at start and a refresh after each expiry: {}",
            dest.token_requests(&state)
        );
        assert!(
            workers
                .iter()
                .all(|w| w.log_text().contains("refreshing once")),
            "the worker saw the 401s"
        );
    }
    if let Some(row) = poisoned {
        poison_is_dead_lettered_then_replayed(&setup, &name, &emulator, &base_config).await;
        expected.insert(POISON_EMAIL.to_string(), row);
        emulator
            .wait_for(dest, &expected, Duration::from_secs(10), &workers)
            .await;
        let state = emulator.state().await;
        let (_, count) = dest.contacts(&state);
        assert_eq!(
            count.get(POISON_EMAIL),
            Some(&1),
            "the replayed row exists once"
        );
        assert!(count.values().all(|&n| n == 1), "replay duplicated");
    }
    if scenario.replay {
        assert_eq!(
            dest,
            Dest::Hubspot,
            "the replay scenario runs against HubSpot"
        );
        let replay = |from: &str, extra: &[&str]| {
            run_ok(
                setup
                    .command("replay")
                    .args(["--name", &name, "--from", from])
                    .args(extra)
                    .envs(SINK_ENV),
            )
        };
        // From scratch: the destination is emptied, a full resync (the sink ledger forgotten)
        // from the earliest offset rebuilds it.
        http()
            .post(emulator.url("/_emulator/reset"))
            .send()
            .await
            .unwrap();
        assert!(dest.contacts(&emulator.state().await).0.is_empty());
        // The sink converged and nothing is written any more: the topic holds every change.
        let changes = topic_len(&setup.topic("public.contacts"));
        assert!(
            changes >= 1_300,
            "1,000 inserts and 300 updates at least: {changes}"
        );
        let stdout = replay("earliest", &["--full-resync"]);
        let counts = replayed(&stdout);
        assert_eq!(
            (counts["records"], counts["dead_letters"]),
            (changes, 0),
            "every change replayed once: {stdout}"
        );
        let after = emulator.state().await;
        assert!(
            dest.contacts(&after).0 == expected,
            "replay rebuilt the destination"
        );
        let records = |state: &Value| state["objects"]["contacts"].as_array().map(Vec::len);
        let rebuilt = records(&after);
        // Idempotent: replaying again from a time and from explicit offsets changes nothing:
        // the ledger holds every key's newest change, so older ones are skipped.
        let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        for from in [hour_ago.as_str(), "0:0,1:0"] {
            // Both start at the first change of every partition (the test topic has two).
            let counts = replayed(&replay(from, &[]));
            assert_eq!(
                (counts["records"], counts["dead_letters"]),
                (changes, 0),
                "replay from {from} reads every change"
            );
            let state = emulator.state().await;
            let (live, _) = dest.contacts(&state);
            assert!(live == expected, "replay from {from} changed the result");
            assert_eq!(records(&state), rebuilt, "replay from {from} wrote records");
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
    if scenario.audit {
        check_audit_topic(&setup, 1000);
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
    stop_cleanly(&mut cap, db).await;
}

/// `driftless_sink_records_applied_total` of sink `name` as the worker serving metrics on
/// `listen` reports it (0 while it does not answer).
async fn applied_records(listen: &str, name: &str) -> u64 {
    let Ok(r) = http().get(format!("http://{listen}/metrics")).send().await else {
        return 0;
    };
    let body = r.text().await.unwrap_or_default();
    let metric = format!("driftless_sink_records_applied_total{{sink=\"{name}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&metric)?.trim().parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

/// The poison row is on `{prefix}.dlq.{name}` with its provenance in headers; after the map
/// gains its value, `driftless replay --dead-letters` applies it.
async fn poison_is_dead_lettered_then_replayed(
    setup: &Setup,
    name: &str,
    emulator: &Emulator,
    base_config: &str,
) {
    let dlq = format!("{}.dlq.{name}", setup.prefix);
    let topic = setup.topic("public.contacts");
    let records = tokio::task::block_in_place(|| read_settled(&dlq, 1, Duration::from_secs(30)));
    assert_eq!(records.len(), 1, "only the poison row is dead-lettered");
    let r = &records[0];
    let event = r.json();
    assert_eq!(event["after"]["id"], POISON_ID, "{event}");
    let h = |k: &str| r.headers.get(k).cloned().unwrap_or_default();
    assert_eq!(h("driftless-source-topic"), topic);
    let partition: i32 = h("driftless-source-partition").parse().unwrap();
    let offset: i64 = h("driftless-source-offset").parse().unwrap();
    assert_eq!(h("driftless-error-category"), "MAPPING");
    assert!(
        h("driftless-error-message").contains("lifecycle"),
        "{:?}",
        r.headers
    );
    assert_eq!(
        h("driftless-correlation-id"),
        format!("{topic}-{partition}-{offset}")
    );
    assert_eq!(h("driftless-sink"), name);
    // The source record at that position is the poison row.
    let source = tokio::task::block_in_place(|| {
        read_topic(&topic, Duration::from_secs(30), |rs| {
            rs.iter()
                .any(|x| x.partition == partition && x.offset == offset)
        })
    });
    let original = source
        .iter()
        .find(|x| x.partition == partition && x.offset == offset)
        .expect("the dead letter's source record");
    assert_eq!(original.json()["after"]["id"], POISON_ID);

    // Fix the mapping, then re-apply the dead letters.
    let fixed =
        base_config.to_string() + &Dest::Hubspot.sink_toml(name, emulator.port, false, true);
    std::fs::write(&setup.config, fixed).unwrap();
    let stdout = run_ok(
        setup
            .command("replay")
            .args(["--name", name, "--dead-letters"])
            .envs(SINK_ENV),
    );
    let counts = replayed(&stdout);
    assert_eq!(
        (counts["records"], counts["dead_letters"]),
        (1, 0),
        "the one dead letter is replayed and applied: {stdout}"
    );
}

/// The audit topic (`{prefix}.audit`) holds one record per applied change: every key of the
/// workload at least once (by its hash), outcomes only `applied`/`rejected`, no keys or values.
fn check_audit_topic(setup: &Setup, keys: i64) {
    let topic = format!("{}.audit", setup.prefix);
    let records = read_until_quiet(&topic, keys as usize, Duration::from_secs(60));
    let mut hashes = std::collections::BTreeSet::new();
    for r in &records {
        let text = String::from_utf8(r.payload.clone().unwrap()).unwrap();
        assert!(
            !text.contains("@example.com") && !text.contains("{\"id\""),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(v["outcome"].as_str(), Some("applied" | "rejected")),
            "{v}"
        );
        assert_eq!(v["table"], "public.contacts");
        hashes.insert(v["key_hash"].as_str().unwrap().to_string());
    }
    for id in 1..=keys {
        let hash = audit_hash(&id.to_string());
        assert!(hashes.contains(&hash), "key {id} has no audit record");
    }
}

scenario_tests! {
    postgres_changes_converge_in_the_hubspot_emulator_once_per_key => converge(Scenario { audit: true, ..Default::default() });
    hubspot_faults_429_500_resets_and_fail_after_write_still_converge => converge(Scenario {
        faults: Some(serde_json::json!([
            {"path": "batch/upsert", "status": 429, "count": 3},
            {"path": "batch/upsert", "status": 500, "count": 2},
            {"path": "batch/upsert", "reset_connection": true, "count": 2},
            {"path": "batch/upsert", "fail_after_write": true, "count": 2},
            {"path": "batch/archive", "status": 503, "count": 2}
        ])),
        ..Default::default()
    });
    sink_worker_killed_mid_load_restarts_and_converges => converge(Scenario { kill_worker: true, ..Default::default() });
    driftless_run_captures_and_sinks_in_one_process_and_converges => converge(Scenario { one_process: true, ..Default::default() });
    two_sink_workers_share_partitions_and_converge => converge(Scenario { workers: 2, ..Default::default() });
    replay_rebuilds_the_destination_and_reapplies_idempotently => converge(Scenario { replay: true, ..Default::default() });
    postgres_changes_converge_in_the_zoho_emulator_once_per_key_without_workflows => converge(Scenario { dest: Dest::Zoho, ..Default::default() });
    hubspot_oauth_tokens_expiring_mid_load_are_refreshed_and_converge => converge(Scenario { oauth: true, expire_tokens: true, ..Default::default() });
    zoho_oauth_tokens_expiring_mid_load_are_refreshed_and_converge => converge(Scenario { dest: Dest::Zoho, expire_tokens: true, ..Default::default() });
    unmappable_row_is_dead_lettered_then_replayed_once_after_the_fix => converge(Scenario { poison: true, ..Default::default() });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_worker_serves_its_metrics_when_asked() {
    let Stack {
        emulator: _emulator,
        db,
        name,
        setup,
        ..
    } = Stack::start(Dest::Hubspot, "sinkmetrics", false).await;
    let mut cap = setup.start();
    cap.wait_streaming().await;
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut worker = setup.start_with(
        "sink",
        &["--name", &name, "--metrics-listen", &listen],
        &SINK_ENV,
    );
    db.exec(
        "INSERT INTO contacts SELECT g, 'm' || g || '@example.com', 'M', 'lead' \
         FROM generate_series(1, 5) g",
    )
    .await;
    eventually("the worker reports 5 applied records", WAIT, || async {
        applied_records(&listen, &name).await == 5
    })
    .await;
    let health = http()
        .get(format!("http://{listen}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(worker.stop(), Some(0));
    stop_cleanly(&mut cap, db).await;
}

#[test]
fn an_emulator_refuses_a_non_loopback_address_unless_allowed() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["emulate", "hubspot", "--host", "0.0.0.0", "--port"])
        .arg(free_port().to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refusing to listen on 0.0.0.0") && err.contains("--allow-remote"),
        "{err}"
    );
}
