//! A sink worker's start against a CRM that is not ready: the emulators (separate processes)
//! answer the start's token and schema requests with 502/503 for a while, are not listening
//! yet, or refuse the token for good. Transient failures are retried with backoff and logged
//! until the CRM answers (the records, then a sentinel, arrive; a two-way worker then syncs
//! both ways); a shutdown during the retries is a clean stop; a 401 stops the worker at once
//! with its hint; `driftless check` reports a 502 after one attempt.

use serde_json::{Value, json};

use crate::support::two_way::{Crm, TwoWay};
use crate::support::wait::sentinel;
use crate::support::*;

/// The log line of each retry of the start.
const RETRY_LINE: &str = "destination unreachable at start (transient); retrying";

/// The variables of the sinks' credentials: a HubSpot private-app token, a Zoho OAuth client.
const ENV: [(&str, &str); 4] = [
    ("HUBSPOT_TOKEN", "test-token"),
    ("ZOHO_CLIENT_ID", "test-client-id"),
    ("ZOHO_CLIENT_SECRET", "test-client-secret"),
    ("ZOHO_REFRESH_TOKEN", "test-refresh-token"),
];

/// The secrets of [`ENV`], none of which may reach a log.
const SECRETS: [&str; 3] = ["test-token", "test-client-secret", "test-refresh-token"];

/// The captured table of `crm`'s sink and its DDL.
fn table(crm: Crm) -> (&'static str, &'static str) {
    match crm {
        Crm::Hubspot => (
            "public.contacts",
            "CREATE TABLE contacts (id bigint PRIMARY KEY, email text, first_name text)",
        ),
        Crm::Zoho => (
            "public.leads",
            "CREATE TABLE leads (id bigint PRIMARY KEY, email text, last_name text)",
        ),
    }
}

/// Row 1 (written before) reaches the CRM, then a sentinel row 2 written now.
async fn row_and_sentinel_arrive(crm: Crm, emulator: &Emulator, db: &TestDb) {
    let arrived = |key: i64| async move { crm.records(&emulator.state().await).contains_key(&key) };
    eventually("row 1 reaches the CRM", WAIT, || arrived(1)).await;
    sentinel(
        "the sentinel row reaches the CRM",
        db.exec(&insert(crm, 2)),
        || arrived(2),
    )
    .await;
}

/// A one-way sink `name` to the emulator of `crm` on `port`: HubSpot with the private-app
/// token in `HUBSPOT_TOKEN`; Zoho with OAuth against the emulator's token endpoint, or with
/// `zoho_token` the access token in `ZOHO_TOKEN`.
fn sink_toml(crm: Crm, name: &str, port: u16, zoho_token: bool) -> String {
    let (target, fields, id) = match crm {
        Crm::Hubspot => (
            "object = \"contacts\"\ntoken_env = \"HUBSPOT_TOKEN\"".to_string(),
            "email = \"email\"\nfirst_name = \"firstname\"",
            "pg_external_id",
        ),
        Crm::Zoho if zoho_token => (
            "module = \"Leads\"\ntoken_env = \"ZOHO_TOKEN\"".to_string(),
            "email = \"Email\"\nlast_name = \"Last_Name\"",
            "External_Id",
        ),
        Crm::Zoho => (
            format!(
                "module = \"Leads\"\n[sinks.oauth]\nclient_id_env = \"ZOHO_CLIENT_ID\"\n\
                 client_secret_env = \"ZOHO_CLIENT_SECRET\"\n\
                 refresh_token_env = \"ZOHO_REFRESH_TOKEN\"\n\
                 token_url = \"http://127.0.0.1:{port}/oauth/v2/token\""
            ),
            "email = \"Email\"\nlast_name = \"Last_Name\"",
            "External_Id",
        ),
    };
    // `[sinks.oauth]` opens a table: the sink's own keys come before it.
    format!(
        r#"
[[sinks]]
name = "{name}"
kind = "{kind}"
table = "{table}"
id_property = "{id}"
base_url = "http://127.0.0.1:{port}"
batch_max_wait_ms = 100
{target}
[sinks.fields]
id = "{id}"
{fields}
"#,
        kind = crm.kind(),
        table = table(crm).0,
    )
}

/// Inserts the row of key `key` into `crm`'s table.
fn insert(crm: Crm, key: i64) -> String {
    format!(
        "INSERT INTO {} VALUES ({key}, 'k{key}@example.com', 'Name{key}')",
        table(crm).0
    )
}

/// Queues `faults` on the emulator.
async fn fault(emulator: &Emulator, faults: Value) {
    let (code, answer) = emulator.post("/_emulator/faults", &faults).await;
    assert!(code < 300, "faults accepted: {answer}");
}

/// The retries of the start a worker logged.
fn retries(log: &str) -> usize {
    log.lines().filter(|l| l.contains(RETRY_LINE)).count()
}

/// Faults met at start, and how many retries they cause: HubSpot's properties API answers 502
/// three times; Zoho's token endpoint 503 twice, then its fields API 502 twice.
fn start_faults(crm: Crm) -> (Value, usize) {
    match crm {
        Crm::Hubspot => (
            json!({"path": "/crm/v3/properties/contacts", "status": 502, "count": 3}),
            3,
        ),
        Crm::Zoho => (
            json!([
                {"path": "/oauth/v2/token", "status": 503, "count": 2},
                {"path": "/crm/v8/settings/fields", "status": 502, "count": 2}
            ]),
            4,
        ),
    }
}

/// Faults the emulator still holds.
fn pending_faults(crm: Crm, state: &Value) -> u64 {
    let field = match crm {
        Crm::Hubspot => "pendingFaults",
        Crm::Zoho => "pending_faults",
    };
    state[field].as_u64().expect("pending faults")
}

/// The emulator answers the start's requests with 5xx a few times, then recovers: the worker
/// retries (one log line each, no secret or row value in the log), starts, delivers the row
/// written before it started and then a sentinel row written after.
async fn a_worker_retries_its_start_until_the_crm_answers(crm: Crm) {
    let emulator = Emulator::start(crm.kind());
    let (faults, expected_retries) = start_faults(crm);
    fault(&emulator, faults).await;
    let (name, ddl) = table(crm);
    let (db, setup, mut cap) = capture_streaming("start_retry", ddl, &[name]).await;
    let sink_name = unique("start-retry").replace('_', "-");
    setup.append_config(&sink_toml(crm, &sink_name, emulator.port, false));
    db.exec(&insert(crm, 1)).await;
    let mut worker = setup.start_with("sink", &["--name", &sink_name], &ENV);
    row_and_sentinel_arrive(crm, &emulator, &db).await;
    let log = worker.log_text();
    assert_eq!(
        retries(&log),
        expected_retries,
        "each transient failure retried and logged once\n{log}"
    );
    assert!(log.contains("destination reachable; starting"), "{log}");
    assert_eq!(pending_faults(crm, &emulator.state().await), 0);
    for secret in SECRETS.iter().chain(&["k1@example.com", "Name1"]) {
        assert!(!log.contains(secret), "{secret} in the log\n{log}");
    }
    assert_eq!(
        worker.stop(),
        Some(0),
        "a clean stop\n{}",
        worker.log_text()
    );
    stop_cleanly(&mut cap, db).await;
}

/// The CRM is not up yet when the worker starts (connection refused): the worker retries until
/// it listens, then delivers the row written before and a sentinel row written after.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_started_before_its_crm_retries_until_it_listens() {
    let crm = Crm::Hubspot;
    let port = free_port();
    let (name, ddl) = table(crm);
    let (db, setup, mut cap) = capture_streaming("start_refused", ddl, &[name]).await;
    let sink_name = unique("start-refused").replace('_', "-");
    setup.append_config(&sink_toml(crm, &sink_name, port, false));
    db.exec(&insert(crm, 1)).await;
    let mut worker = setup.start_with("sink", &["--name", &sink_name], &ENV);
    eventually("the worker retries its start", WAIT, || async {
        retries(&worker.log_text()) >= 2
    })
    .await;
    assert!(
        worker.log_text().contains("connection failed"),
        "{}",
        worker.log_text()
    );
    let emulator = Emulator::start_on(crm.kind(), port);
    row_and_sentinel_arrive(crm, &emulator, &db).await;
    assert_eq!(
        worker.stop(),
        Some(0),
        "a clean stop\n{}",
        worker.log_text()
    );
    stop_cleanly(&mut cap, db).await;
}

/// The CRM refuses the token (401): the worker stops at once, without a retry, with the fatal
/// error, a hint naming the token's variable (never its value), and exit code 1.
async fn a_refused_token_stops_the_worker_at_once(crm: Crm) {
    let emulator = Emulator::start(crm.kind());
    let (name, ddl) = table(crm);
    let db = TestDb::new("start_401").await;
    db.exec(ddl).await;
    let setup = Setup::new(&db, &[name], "", "");
    let sink_name = unique("start-401").replace('_', "-");
    setup.append_config(&sink_toml(crm, &sink_name, emulator.port, true));
    // A token the CRM does not know (revoked): it answers 401.
    let (variable, refused) = match crm {
        Crm::Hubspot => ("HUBSPOT_TOKEN", "revoked-hubspot-token"),
        Crm::Zoho => ("ZOHO_TOKEN", "revoked-zoho-token"),
    };
    let mut worker = setup.start_with("sink", &["--name", &sink_name], &[(variable, refused)]);
    let code = worker.wait_exit(WAIT);
    let log = worker.log_text();
    assert_eq!(code, Some(1), "fatal (README exit codes)\n{log}");
    assert_eq!(retries(&log), 0, "a fatal error is not retried\n{log}");
    let hint = log.lines().find(|l| l.starts_with("hint: "));
    assert!(
        hint.is_some_and(|h| h.contains(variable)),
        "the hint names {variable}\n{log}"
    );
    assert!(
        !log.contains(refused),
        "the refused token is not logged\n{log}"
    );
    db.drop_db().await;
}

/// `driftless check` with the properties API answering 502 once: check reports it (exit 2, the
/// status and a hint) after one attempt and exits. A check that retried would have met the
/// recovered API and passed; the next check, which meets it, reports no sink problem.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_a_502_of_the_schema_after_one_attempt() {
    let emulator = Emulator::start("hubspot");
    let (name, ddl) = table(Crm::Hubspot);
    let db = TestDb::new("start_check").await;
    db.exec(ddl).await;
    let setup = Setup::new(&db, &[name], "", "");
    let sink_name = unique("start-check").replace('_', "-");
    setup.append_config(&sink_toml(Crm::Hubspot, &sink_name, emulator.port, false));
    fault(
        &emulator,
        json!({"path": "/crm/v3/properties/contacts", "status": 502}),
    )
    .await;
    let mut check = setup.start_with("check", &[], &ENV);
    let code = check.wait_exit(WAIT);
    let log = check.log_text();
    assert_eq!(code, Some(2), "check ends, reporting problems\n{log}");
    let finding = format!("[sinks] sink {sink_name}: HubSpot answered 502");
    assert!(log.contains(&finding), "{log}");
    assert!(
        log.contains("a transient failure, which a worker retries with backoff at start"),
        "{log}"
    );
    assert_eq!(retries(&log), 0, "{log}");
    assert_eq!(pending_faults(Crm::Hubspot, &emulator.state().await), 0);
    let mut again = setup.start_with("check", &[], &ENV);
    again.wait_exit(WAIT);
    let log = again.log_text();
    assert!(!log.contains("[sinks]"), "the API answers now\n{log}");
    db.drop_db().await;
}

/// SIGTERM while the start is being retried (the properties API keeps answering 502) stops
/// `driftless run` cleanly: capture and the waiting worker stop, exit code 0, no error.
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_while_the_start_is_retried_is_a_clean_stop() {
    let emulator = Emulator::start("hubspot");
    fault(
        &emulator,
        json!({"path": "/crm/v3/properties/contacts", "status": 502, "count": 100_000}),
    )
    .await;
    let (name, ddl) = table(Crm::Hubspot);
    let db = TestDb::new("start_stop").await;
    db.exec(ddl).await;
    let setup = Setup::new(&db, &[name], "", "");
    let sink_name = unique("start-stop").replace('_', "-");
    setup.append_config(&sink_toml(Crm::Hubspot, &sink_name, emulator.port, false));
    let mut run = setup.start_with("run", &[], &ENV);
    run.wait_streaming().await;
    eventually("the worker retries its start", WAIT, || async {
        retries(&run.log_text()) >= 2
    })
    .await;
    assert_eq!(run.stop(), Some(0), "a clean stop\n{}", run.log_text());
    let log = run.log_text();
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("error: ")),
        "no failure reported\n{log}"
    );
    db.drop_db().await;
}

/// A two-way worker restarted while the CRM's schema API answers 502 three times: it retries,
/// then runs both halves (a Postgres change reaches the CRM, a CRM edit reaches Postgres).
async fn a_two_way_worker_retries_its_start_then_syncs_both_ways(crm: Crm) {
    let mut t = TwoWay::start(crm, "").await;
    t.insert_samples(1).await;
    t.wait_in_sync("the sample row").await;
    t.stop_worker();
    let schema = match crm {
        Crm::Hubspot => "/crm/v3/properties/contacts",
        Crm::Zoho => "/crm/v8/settings/fields",
    };
    fault(
        &t.emulator,
        json!({"path": schema, "status": 502, "count": 3}),
    )
    .await;
    // Returns once the receiver listens, which the worker reaches only past its schema check.
    t.start_worker().await;
    t.outbound_sentinel(1).await;
    t.inbound_sentinel(1).await;
    let log = t.log();
    assert_eq!(retries(&log), 3, "each 502 retried and logged once\n{log}");
    t.finish().await;
}

scenario_tests! {
    a_hubspot_worker_retries_502s_of_the_properties_api_at_start =>
        a_worker_retries_its_start_until_the_crm_answers(Crm::Hubspot);
    a_zoho_worker_retries_5xx_of_its_token_and_fields_requests_at_start =>
        a_worker_retries_its_start_until_the_crm_answers(Crm::Zoho);
    a_hubspot_401_at_start_stops_the_worker_at_once =>
        a_refused_token_stops_the_worker_at_once(Crm::Hubspot);
    a_zoho_401_at_start_stops_the_worker_at_once =>
        a_refused_token_stops_the_worker_at_once(Crm::Zoho);
    a_two_way_hubspot_worker_retries_502s_of_the_properties_api_at_start =>
        a_two_way_worker_retries_its_start_then_syncs_both_ways(Crm::Hubspot);
    a_two_way_zoho_worker_retries_502s_of_the_fields_api_at_start =>
        a_two_way_worker_retries_its_start_then_syncs_both_ways(Crm::Zoho);
}
