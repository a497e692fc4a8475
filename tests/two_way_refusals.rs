//! Two-way sync when Postgres refuses what the CRM sends (HubSpot end to end): a record whose
//! value does not fit its column or breaks a constraint is dead-lettered alone (SQLSTATE, no
//! value) and sync goes on both ways; a missing grant stops the worker with a fatal error.

use serde_json::{Value, json};

use crate::support::kafka::{Record, read_n};
use crate::support::two_way::{Crm, Options, RECONCILE_OFF, TwoWay};
use crate::support::*;

/// The dead letters of the sink once `n` arrived (they are acknowledged before the inbound
/// batch counts as done, so after a later sentinel they are all there).
fn dead_letters(t: &TwoWay, n: usize) -> Vec<Record> {
    let letters = read_n(&t.dead_letter_topic(), n, WAIT);
    assert_eq!(letters.len(), n, "{letters:?}");
    letters
}

/// The audit records of records the inbound half set aside.
fn rejected_in_audit(t: &TwoWay) -> Vec<Value> {
    std::fs::read_to_string(&t.audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "inbound_rejected")
        .collect()
}

/// Neither the dead letters, the audit trail nor the worker's log carry `value`.
fn assert_value_nowhere(t: &TwoWay, letters: &[Record], value: &str) {
    for l in letters {
        let text = format!(
            "{:?} {:?} {:?}",
            l.key.as_deref().map(String::from_utf8_lossy),
            l.payload,
            l.headers
        );
        assert!(!text.contains(value), "value in a dead letter: {text}");
    }
    let audit = std::fs::read_to_string(&t.audit).unwrap_or_default();
    assert!(!audit.contains(value), "value in the audit trail");
    let log = t.log();
    assert!(!log.contains(value), "value in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crm_number_that_does_not_fit_an_integer_column_is_dead_lettered_and_sync_goes_on() {
    const BAD: &str = "4711.5";
    let t = TwoWay::start_with(
        Crm::Hubspot,
        Options {
            columns: ", revenue integer",
            fields: r#"revenue = "annualrevenue""#,
            ..Options::default()
        },
    )
    .await;
    t.insert_samples(2).await;
    t.wait_in_sync("initial rows").await;
    let crm_id = t.crm_records().await[&1].0.clone();
    t.edit_in_crm(1, json!({ "annualrevenue": BAD })).await;
    // Notified after the bad edit: both directions still flow.
    t.inbound_sentinel(2).await;
    t.outbound_sentinel(2).await;
    let letters = dead_letters(&t, 1);
    let h = &letters[0].headers;
    assert_eq!(h["driftless-sqlstate"], "22P02", "{h:?}");
    assert_eq!(h["driftless-error-category"], "POSTGRES_DATA_EXCEPTION");
    assert_eq!(h["driftless-crm-id"], crm_id);
    assert_eq!(h["driftless-sink"], t.name);
    assert_eq!(
        h["driftless-key-hash"],
        audit_hash("1"),
        "the audit hash of row 1"
    );
    assert!(
        letters[0].payload.is_none(),
        "no payload: it would carry values"
    );
    let revenue: Option<i32> =
        t.db.client
            .query_one("SELECT revenue FROM contacts WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(revenue, None, "the bad value was not written");
    let audit = rejected_in_audit(&t);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["sqlstate"], "22P02");
    assert_eq!(audit[0]["crm_id"], crm_id.as_str());
    assert_value_nowhere(&t, &letters, BAD);
    assert!(t.log().contains("22P02"), "the SQLSTATE is logged");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crm_contact_whose_email_is_on_an_unlinked_row_is_dead_lettered_and_sync_goes_on() {
    const EMAIL: &str = "taken-9c41@example.com";
    let t = TwoWay::start(Crm::Hubspot, RECONCILE_OFF).await;
    t.insert_samples(1).await;
    t.wait_in_sync("initial row").await;
    // A row the CRM never saw (written under the sink's own origin, which the sink skips)
    // holds the email, which is unique in Postgres. A commit carries the session's origin as it
    // is at COMMIT, so the insert commits on its own before the origin is reset (in one batch,
    // one implicit transaction, the reset came first and the row went out without an origin:
    // the sink then raced the CRM write below with a create of its own).
    let origin = t.origin().unwrap();
    t.db.exec("CREATE UNIQUE INDEX contacts_email ON contacts (email)")
        .await;
    t.db.exec(&format!(
        "SELECT pg_replication_origin_session_setup('{origin}')"
    ))
    .await;
    t.db.exec(&format!(
        "INSERT INTO contacts (email, first_name, lifecycle) VALUES ('{EMAIL}', 'Row', 'lead')"
    ))
    .await;
    t.db.exec("SELECT pg_replication_origin_session_reset()")
        .await;
    t.create_in_crm(json!({"email": EMAIL, "firstname": "Crm", "lifecyclestage": "lead"}))
        .await;
    t.inbound_sentinel(1).await;
    t.outbound_sentinel(1).await;
    let letters = dead_letters(&t, 1);
    let h = &letters[0].headers;
    assert_eq!(h["driftless-sqlstate"], "23505", "{h:?}");
    assert_eq!(
        h["driftless-error-category"],
        "POSTGRES_INTEGRITY_VIOLATION"
    );
    assert_eq!(h["driftless-constraint"], "contacts_email");
    let state = t.emulator.state().await;
    let created = state["objects"]["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["properties"]["email"] == EMAIL)
        .expect("the CRM record");
    assert_eq!(h["driftless-crm-id"], created["id"].as_str().unwrap());
    assert_eq!(
        created["properties"]["pg_external_id"]
            .as_str()
            .unwrap_or_default(),
        "",
        "not linked"
    );
    assert!(!h.contains_key("driftless-key-hash"), "no row to name");
    assert_eq!(t.postgres().await.len(), 2, "no row was inserted");
    assert_eq!(
        t.ledger_keys().await,
        ["1"],
        "nothing linked to the CRM record"
    );
    let audit = rejected_in_audit(&t);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["sqlstate"], "23505");
    assert_value_nowhere(&t, &letters, EMAIL);
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_update_grant_stops_the_worker_with_a_fatal_error_naming_it() {
    let mut t = TwoWay::start(Crm::Hubspot, RECONCILE_OFF).await;
    t.insert_samples(1).await;
    t.wait_in_sync("initial row").await;
    t.stop_worker();
    // The worker goes on as a role of its own, with what two-way sync needs.
    let role = t.db.role("").await;
    t.db.exec(&format!(
        "GRANT CREATE ON DATABASE {db} TO {role};
         GRANT SELECT, INSERT, UPDATE ON contacts TO {role};
         ALTER SCHEMA driftless OWNER TO {role};
         ALTER TABLE driftless.sync_ledger OWNER TO {role};
         ALTER TABLE driftless.sync_cursor OWNER TO {role};
         ALTER TABLE driftless.sync_inbox OWNER TO {role};
         GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text),
             pg_replication_origin_session_reset(), pg_replication_origin_create(text),
             pg_replication_origin_oid(text) TO {role};",
        db = t.db.name,
        role = role.name
    ))
    .await;
    let mut env = Crm::Hubspot.worker_env();
    env.push(("DRIFTLESS_SOURCE_URL", role.url.as_str()));
    let mut worker = t.setup.start_with("sink", &["--name", &t.name], &env);
    wait_for_port(t.hook_port, "the receiver");
    t.edit_in_crm(1, json!({"firstname": "Granted"})).await;
    eventually("the edit reaches Postgres under the role", WAIT, || async {
        t.postgres().await[&1][1] == "Granted"
    })
    .await;
    t.db.exec(&format!("REVOKE UPDATE ON contacts FROM {}", role.name))
        .await;
    t.edit_in_crm(1, json!({"firstname": "Revoked"})).await;
    let code = worker.wait_exit(WAIT);
    let log = worker.log_text();
    assert!(
        matches!(code, Some(c) if c != 0),
        "the worker stops: {code:?}\n{log}"
    );
    assert!(
        log.contains("42501") && log.contains("UPDATE") && log.contains("grant"),
        "the fatal error names the grant:\n{log}"
    );
    assert_eq!(t.postgres().await[&1][1], "Granted");
    t.db.exec(&format!("DROP OWNED BY {0}; DROP ROLE {0}", role.name))
        .await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crm_option_missing_from_the_value_map_sets_the_record_aside() {
    let t = TwoWay::start(Crm::Hubspot, RECONCILE_OFF).await;
    t.insert_samples(2).await;
    t.wait_in_sync("initial rows").await;
    let crm_id = t.crm_records().await[&1].0.clone();
    // `evangelist` is a HubSpot stage the sink's `lifecycle` map has no column value for.
    t.edit_in_crm(
        1,
        json!({"lifecyclestage": "evangelist", "firstname": "Unmapped"}),
    )
    .await;
    t.inbound_sentinel(2).await;
    t.outbound_sentinel(2).await;
    let letters = dead_letters(&t, 1);
    let h = &letters[0].headers;
    assert_eq!(h["driftless-error-category"], "UNMAPPABLE_VALUE", "{h:?}");
    assert_eq!(h["driftless-column"], "lifecycle");
    assert_eq!(h["driftless-crm-id"], crm_id);
    assert!(
        !h.contains_key("driftless-sqlstate"),
        "Postgres was not asked"
    );
    assert_eq!(
        t.postgres().await[&1],
        ["k1@example.com", "K1", "lead"],
        "the whole record was set aside"
    );
    assert_value_nowhere(&t, &letters, "Unmapped");
    t.finish().await;
}
