//! Two-way sync with HubSpot end to end: Postgres ⇄ driftless (capture + a `direction = "both"`
//! HubSpot sink) ⇄ the HubSpot emulator, whose signed webhooks reach the sink's receiver over
//! TCP. The harness is [`crate::support::two_way`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::two_way::{
    Crm, HUBSPOT_SECRET, Options, RECONCILE_OFF, TwoWay, deletion_in_crm,
    edits_cross_once_and_never_echo_back,
};
use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn edits_on_either_side_cross_once_and_never_echo_back() {
    let t = TwoWay::start(Crm::Hubspot, RECONCILE_OFF).await;
    edits_cross_once_and_never_echo_back(&t).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_edits_converge_to_each_fields_owner() {
    let mut t = TwoWay::start_with(
        Crm::Hubspot,
        Options {
            ownership: r#"first_name = "postgres"
lifecycle = "hubspot"
"*" = "latest""#,
            ..Options::default()
        },
    )
    .await;
    t.db.exec(
        "INSERT INTO contacts (email, first_name, lifecycle) VALUES \
         ('ada@example.com', 'Ada', 'lead'), ('grace@example.com', 'Grace', 'lead')",
    )
    .await;
    t.wait_in_sync("initial rows").await;
    // Both sides edit every field of both records within the same second, while the sink is
    // down (so neither side has seen the other's edit). Record 1: Postgres first; record 2:
    // HubSpot first (200 ms apart, so the change times differ).
    t.stop_worker();
    t.db.exec(
        "UPDATE contacts SET email = 'pg1@example.com', first_name = 'PgAda', \
         lifecycle = 'customer' WHERE id = 1",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.edit_in_crm(
        1,
        json!({"email": "hs1@example.com", "firstname": "HsAda", "lifecyclestage": "other"}),
    )
    .await;
    t.edit_in_crm(
        2,
        json!({"email": "hs2@example.com", "firstname": "HsGrace", "lifecyclestage": "customer"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.db.exec(
        "UPDATE contacts SET email = 'pg2@example.com', first_name = 'PgGrace', \
         lifecycle = 'other' WHERE id = 2",
    )
    .await;
    t.start_worker().await;
    t.wait_in_sync("after the concurrent edits").await;
    let pg = t.postgres().await;
    // first_name: Postgres owns it; lifecycle: HubSpot owns it; email: the later edit wins.
    assert_eq!(pg[&1], ["hs1@example.com", "PgAda", "other"]);
    assert_eq!(pg[&2], ["pg2@example.com", "PgGrace", "customer"]);
    // Every conflict is in the audit trail: field, both times, winner; no values.
    let audit = std::fs::read_to_string(&t.audit).unwrap();
    let conflicts: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "conflict")
        .collect();
    let mut fields: Vec<(String, String)> = conflicts
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["winner"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    fields.sort();
    fields.dedup();
    assert!(
        fields.contains(&("first_name".into(), "postgres".into()))
            && fields.contains(&("lifecycle".into(), "crm".into()))
            && fields.contains(&("email".into(), "crm".into()))
            && fields.contains(&("email".into(), "postgres".into())),
        "{fields:?}"
    );
    assert!(conflicts.iter().all(|c| c["crm_at"].is_string()));
    // Keyed by the canonical key form every audit record uses (a sink's record of row 1 carries
    // the same hash), under the secret of `[audit] key_env`.
    let mut keys: Vec<&str> = conflicts
        .iter()
        .map(|c| c["key_hash"].as_str().unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    let mut expected = [audit_hash("1"), audit_hash("2")];
    expected.sort();
    assert_eq!(keys, expected);
    assert!(
        !audit.contains("PgAda") && !audit.contains("hs1@"),
        "no values"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_or_stale_webhook_signatures_are_refused() {
    let t = TwoWay::start(Crm::Hubspot, RECONCILE_OFF).await;
    let url = format!("http://127.0.0.1:{}/hooks/hubspot", t.hook_port);
    let client = http();
    let body = r#"[{"eventId":1,"subscriptionType":"contact.propertyChange","objectId":1}]"#;
    let now = chrono::Utc::now().timestamp_millis();
    let sign = |secret: &str, ts: i64| {
        driftless_emulators::hubspot::signature::sign_v3(secret, "POST", &url, body.as_bytes(), ts)
    };
    for (what, signature, ts) in [
        ("forged", sign("not-the-secret", now), now),
        (
            "stale",
            sign(HUBSPOT_SECRET, now - 6 * 60_000),
            now - 6 * 60_000,
        ),
        ("missing", String::new(), now),
    ] {
        let mut req = client
            .post(&url)
            .header("x-hubspot-request-timestamp", ts.to_string())
            .body(body);
        if !signature.is_empty() {
            req = req.header("x-hubspot-signature-v3", signature);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert_eq!(status, 401, "{what} signature");
    }
    let ok = client
        .post(&url)
        .header("x-hubspot-request-timestamp", now.to_string())
        .header("x-hubspot-signature-v3", sign(HUBSPOT_SECRET, now))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(ok, 204, "a valid signature is accepted");
    assert_eq!(
        t.log().matches("webhook refused").count(),
        3,
        "each refusal is logged"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_duplicated_and_reordered_webhooks_are_repaired_by_reconciliation() {
    let t = TwoWay::start_with(
        Crm::Hubspot,
        Options {
            inbound: r#"reconcile_every = "3s"
reconcile_lag = "3s""#,
            hooks: json!({"drop_every": 3, "duplicate_every": 2, "shuffle": true}),
            ..Options::default()
        },
    )
    .await;
    t.insert_samples(20).await;
    t.wait_in_sync("initial rows").await;
    for round in 0..3 {
        for key in 1..=20 {
            t.edit_in_crm(key, json!({"firstname": format!("R{round}K{key}")}))
                .await;
        }
    }
    t.wait_in_sync("after 60 HubSpot edits with lossy webhooks")
        .await;
    let pg = t.postgres().await;
    assert!(
        pg.values().all(|c| c[1].starts_with("R2K")),
        "the last edit won"
    );
    let hooks = t.emulator.get("/_emulator/webhooks").await;
    let stats = &hooks["stats"];
    assert!(
        stats["dropped"].as_u64().unwrap() > 0 && stats["duplicated"].as_u64().unwrap() > 0,
        "the emulator lost and duplicated webhooks: {stats}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_random_two_sided_edits_converge_with_bounded_api_calls() {
    let t = TwoWay::start(
        Crm::Hubspot,
        r#"reconcile_every = "5s"
reconcile_lag = "3s""#,
    )
    .await;
    const KEYS: i64 = 40;
    t.insert_samples(KEYS).await;
    t.wait_in_sync("initial rows").await;
    let requests = |state: &Value| state["requests"]["total"].as_u64().unwrap();
    let requests_before = requests(&t.emulator.state().await);
    // Random edits on both sides of a few shared keys, as fast as they can be made.
    let mut rnd = seeded_random(7);
    let (mut pg_edits, mut hs_edits) = (0u64, 0u64);
    for i in 0..1_000 {
        let key = 1 + rnd(KEYS as u64) as i64;
        let stage = ["lead", "customer", "other"][rnd(3) as usize];
        if rnd(2) == 0 {
            t.db.exec(&format!(
                "UPDATE contacts SET first_name = 'P{i}', lifecycle = '{stage}' WHERE id = {key}"
            ))
            .await;
            pg_edits += 1;
        } else {
            t.edit_in_crm(
                key,
                json!({"firstname": format!("H{i}"), "lifecyclestage": stage}),
            )
            .await;
            hs_edits += 1;
        }
    }
    t.wait_in_sync("after 1,000 random edits on both sides")
        .await;
    // No ping-pong: once converged, nothing moves any more. Two reconciliation passes that
    // start after convergence queue what they find before the sentinel's webhook, so once
    // the sentinel reached Postgres their writes (there must be none) are in.
    let settled = requests(&t.emulator.state().await);
    let tagged_before = t.tagged(&t.origins_any());
    t.wait_reconciliation_passes(2).await;
    t.inbound_sentinel(1).await;
    let after_quiet = requests(&t.emulator.state().await);
    assert!(t.in_sync().await, "still in sync");
    let tagged_after = t.tagged(&t.origins_any());
    assert_eq!(
        tagged_after,
        tagged_before + 1,
        "no inbound writes once converged but the sentinel's"
    );
    let upserts = t.sink_writes().await;
    let api_calls = settled - requests_before;
    let per_edit = api_calls as f64 / (pg_edits + hs_edits) as f64;
    println!(
        "two-way: {pg_edits} Postgres edits, {hs_edits} HubSpot edits, {api_calls} HubSpot API \
         calls ({per_edit:.2} per edit), {tagged_before} inbound row writes, {upserts} upserts \
         and updates, {} calls while quiet (reconciliation and the sentinel)",
        after_quiet - settled
    );
    let bound = readme_calls_per_edit();
    assert!(
        per_edit <= bound,
        "README states at most {bound} HubSpot API calls per edit: {per_edit:.2}"
    );
    assert!(
        (tagged_before as u64) <= hs_edits,
        "at most one Postgres write per HubSpot edit ({tagged_before} > {hs_edits})"
    );
    t.finish().await;
}

/// The figure README states for two-way sync's cost ("at most N HubSpot API calls per edit",
/// over the 1,000 random edits of the test above): one number, stated once, asserted here.
fn readme_calls_per_edit() -> f64 {
    const CLAIM: &str = " HubSpot API calls per edit over 1,000 random edits on both sides";
    let text = std::fs::read_to_string(repo_path("README.md")).unwrap();
    // As one line of words: the sentence may be wrapped anywhere.
    let readme = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let (before, _) = readme
        .split_once(CLAIM)
        .unwrap_or_else(|| panic!("README states \"at most N{CLAIM}\""));
    let figure = before.split_whitespace().last().unwrap_or_default();
    assert!(
        before
            .trim_end()
            .strip_suffix(figure)
            .is_some_and(|b| b.ends_with("at most ")),
        "README states \"at most N{CLAIM}\""
    );
    figure.parse().expect("a number")
}

#[test]
fn readme_states_the_api_call_bound_the_random_edits_test_asserts() {
    // Found and a number (the figure itself is stated only in README).
    let bound = readme_calls_per_edit();
    assert!(bound.is_finite() && bound > 0.0, "{bound}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_missing_two_way_grants_and_unmappable_fields() {
    let emulator = Emulator::start("hubspot");
    let db = TestDb::new("synccheck").await;
    db.exec("CREATE TABLE contacts (id bigint PRIMARY KEY, email text)")
        .await;
    let role = db.role("REPLICATION").await;
    db.exec(&format!("GRANT SELECT ON contacts TO {}", role.name))
        .await;
    let setup = Setup::new(&db, &["public.contacts"], "", "");
    setup.append_config(&format!(
        r#"
[[sinks]]
name = "both"
kind = "hubspot"
table = "public.contacts"
object = "contacts"
id_property = "pg_external_id"
token_env = "HUBSPOT_TOKEN"
base_url = "http://127.0.0.1:{}"
direction = "both"
[sinks.inbound]
client_secret_env = "HUBSPOT_CLIENT_SECRET"
[sinks.fields]
id = "pg_external_id"
email = "no_such_property"
"#,
        emulator.port
    ));
    let out = setup
        .command("check")
        .env("DRIFTLESS_SOURCE_URL", &role.url)
        .envs(Crm::Hubspot.worker_env())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("two-way sync cannot write inbound changes")
            && err.contains("pg_replication_origin_session_setup")
            && err.contains("INSERT, UPDATE on the inbound table"),
        "{err}"
    );
    assert!(err.contains("no_such_property"), "{err}");
    let schemas: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'driftless'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "check creates no sync state");
    db.drop_db().await;
    role.drop_role().await;
}

scenario_tests! {
    archives_delete_rows_when_configured => deletion_in_crm(Crm::Hubspot, "delete", false);
    archives_with_lost_webhooks_are_repaired_by_reconciliation => deletion_in_crm(Crm::Hubspot, "delete", true);
    archives_keep_rows_by_default => deletion_in_crm(Crm::Hubspot, "ignore", false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_two_way_worker_stands_by_and_takes_over_when_the_first_dies() {
    let mut t = TwoWay::start(Crm::Hubspot, RECONCILE_OFF).await;
    t.insert_samples(1).await;
    t.wait_in_sync("initial row").await;
    let standby = t.start_second_worker();
    eventually("the second worker stands by", WAIT, || async {
        standby.log_text().contains("standing by")
    })
    .await;
    // A replay of a two-way sink is refused while a worker is active.
    let out = t
        .setup
        .command("replay")
        .args(["--name", &t.name, "--from", "earliest"])
        .envs(Crm::Hubspot.worker_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is running"));
    // The active worker dies: the lease goes with its connection, the standby takes over.
    t.worker.take().unwrap().kill9();
    eventually("the standby takes over", WAIT, || async {
        standby.log_text().contains("taken over")
    })
    .await;
    t.worker = Some(standby);
    t.edit_in_crm(1, json!({"firstname": "After failover"}))
        .await;
    eventually("the edit reaches Postgres", WAIT, || async {
        t.postgres().await[&1][1] == "After failover"
    })
    .await;
    t.finish().await;
}

/// A row whose email has capitals: HubSpot keeps it lowercased, which is the row's email in
/// HubSpot's form, so nothing flows back into Postgres and nothing is rewritten to HubSpot.
/// Proven by a sentinel each way: the Postgres one is the only write to HubSpot, the HubSpot
/// one the only write into Postgres.
#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_case_email_is_neither_pulled_back_nor_rewritten() {
    let t = TwoWay::start(Crm::Hubspot, RECONCILE_OFF).await;
    t.db.exec(
        "INSERT INTO contacts (email, first_name, lifecycle) \
         VALUES ('Ana@Example.COM', 'Ana', 'lead')",
    )
    .await;
    eventually("the contact reaches HubSpot, lowercased", WAIT, || async {
        t.crm_records()
            .await
            .get(&1)
            .is_some_and(|(_, r)| r[0] == "ana@example.com" && r[1] == "Ana")
    })
    .await;
    let writes = t.sink_writes().await;
    t.outbound_sentinel(1).await;
    t.inbound_sentinel(1).await;
    assert_eq!(
        t.sink_writes().await,
        writes + 1,
        "only the Postgres sentinel was written to HubSpot"
    );
    assert_eq!(
        t.postgres().await[&1][0],
        "Ana@Example.COM",
        "kept as written"
    );
    // The insert, the Postgres sentinel and the HubSpot sentinel's inbound write.
    let origins = t.origins(3);
    assert_eq!(origins.len(), 3, "{origins:?}");
    assert_eq!(
        t.tagged(&origins),
        1,
        "only the sentinel came back: {origins:?}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_proxy_signatures_are_checked_against_the_public_url() {
    let public = "https://sync.example.com/driftless/hooks";
    let inbound = format!("{RECONCILE_OFF}\npublic_url = \"{public}\"");
    let t = TwoWay::start(Crm::Hubspot, &inbound).await;
    // The receiver listens on 127.0.0.1; the proxy in front of it is reached at `public`.
    let local = format!("http://127.0.0.1:{}/hooks/hubspot", t.hook_port);
    let body = r#"[{"eventId":1,"subscriptionType":"contact.propertyChange","objectId":1}]"#;
    let now = chrono::Utc::now().timestamp_millis();
    let deliver = |signed_for: &str| {
        let signature = driftless_emulators::hubspot::signature::sign_v3(
            HUBSPOT_SECRET,
            "POST",
            signed_for,
            body.as_bytes(),
            now,
        );
        http()
            .post(&local)
            .header("x-hubspot-request-timestamp", now.to_string())
            .header("x-hubspot-signature-v3", signature)
            .body(body)
            .send()
    };
    let status = deliver(&local).await.unwrap().status().as_u16();
    assert_eq!(
        status, 401,
        "signed for the address the receiver sees: refused"
    );
    let status = deliver(public).await.unwrap().status().as_u16();
    assert_eq!(status, 204, "signed for the public URL: accepted");
    assert_eq!(t.log().matches("webhook refused").count(), 1);
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_account_stays_within_the_burst_budget_both_ways() {
    // Outbound, the inbound worker and reconciliation (every second) of one sink are three
    // clients of one HubSpot account; edits on both sides as fast as they can be made keep all
    // three busy.
    let t = TwoWay::start(
        Crm::Hubspot,
        "reconcile_every = \"1s\"\nreconcile_lag = \"3s\"",
    )
    .await;
    const KEYS: i64 = 30;
    t.insert_samples(KEYS).await;
    t.wait_in_sync("initial rows").await;
    for i in 0..600 {
        let key = 1 + i % KEYS;
        if i % 2 == 0 {
            t.db.exec(&format!(
                "UPDATE contacts SET first_name = 'P{i}' WHERE id = {key}"
            ))
            .await;
        } else {
            t.edit_in_crm(key, json!({"firstname": format!("H{i}")}))
                .await;
        }
    }
    t.wait_in_sync("after 600 edits on both sides").await;
    let st = t.emulator.state().await;
    let requests = &st["requests"];
    println!(
        "one account, three clients: {} requests, at most {} in a 10 s window, {} rate limited",
        requests["total"], requests["maxInAnyWindow"], requests["rateLimited"]
    );
    // The emulator's burst limit is HubSpot's default, 100 per 10 s.
    assert_eq!(requests["rateLimited"], 0, "{requests}");
    assert!(
        requests["maxInAnyWindow"].as_u64().unwrap() <= 100,
        "{requests}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_two_way_sinks_on_one_account_stay_within_the_burst_budget() {
    // `driftless run`: capture and two two-way sinks with the same token in one process, on two
    // tables whose keys differ (1.. and 1001..), both writing HubSpot contacts. Webhooks reach
    // sink A (it skips B's records, which it has no row for); reconciliation every second
    // brings B its CRM edits. Six clients of one account, all busy.
    let emulator = Emulator::start("hubspot");
    let db = TestDb::new("two_sinks_one_account").await;
    for (table, start) in [("contacts", 1), ("contacts_b", 1001)] {
        db.exec(&format!(
            "CREATE TABLE {table} (id bigint GENERATED BY DEFAULT AS IDENTITY (START WITH \
             {start}) PRIMARY KEY, email text, first_name text, lifecycle text)"
        ))
        .await;
    }
    let setup = Setup::new(&db, &["public.contacts", "public.contacts_b"], "", "");
    let (port_a, port_b) = (free_port(), free_port());
    let opts = Options {
        inbound: "reconcile_every = \"1s\"\nreconcile_lag = \"3s\"",
        ..Options::default()
    };
    let name_a = unique("hs-a").replace('_', "-");
    let name_b = unique("hs-b").replace('_', "-");
    setup.append_config(&Crm::Hubspot.sink_toml(&name_a, emulator.port, port_a, &opts));
    setup.append_config(
        &Crm::Hubspot
            .sink_toml(&name_b, emulator.port, port_b, &opts)
            .replace("\"public.contacts\"", "\"public.contacts_b\""),
    );
    let hooks = json!({
        "target_url": format!("http://127.0.0.1:{port_a}/hooks/hubspot"),
        "client_secret": HUBSPOT_SECRET,
        "retry_base_ms": 200,
    });
    let (status, _) = emulator.post("/_emulator/webhooks", &hooks).await;
    assert!(status < 300, "webhook subscription accepted: {status}");
    let mut run = setup.start_with("run", &[], &Crm::Hubspot.worker_env());
    // Capture and both sinks start in one process: allow it the tests' usual wait, and show
    // its log if a receiver never listens.
    wait_for_port_of(port_a, "sink A's receiver", WAIT, || run.log_text());
    wait_for_port_of(port_b, "sink B's receiver", WAIT, || run.log_text());
    const KEYS: i64 = 20;
    for (table, start) in [("contacts", 1), ("contacts_b", 1001)] {
        for key in start..start + KEYS {
            db.exec(&format!(
                "INSERT INTO {table} (email, first_name, lifecycle) \
                 VALUES ('k{key}@example.com', 'N{key}', 'lead')"
            ))
            .await;
        }
    }
    // Postgres's names by key, and HubSpot's.
    let (db, emulator) = (&db, &emulator);
    let names = move || async move {
        let pg: BTreeMap<i64, String> = db
            .client
            .query(
                "SELECT id, first_name FROM contacts UNION ALL \
                 SELECT id, first_name FROM contacts_b",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let crm: BTreeMap<i64, (String, String)> = Crm::Hubspot
            .records(&emulator.state().await)
            .into_iter()
            .map(|(key, (id, row))| (key, (id, row[1].clone())))
            .collect();
        (pg, crm)
    };
    let names = &names;
    let converged = move || async move {
        let (pg, crm) = names().await;
        pg.len() == 2 * KEYS as usize
            && pg
                .iter()
                .all(|(k, name)| crm.get(k).is_some_and(|(_, n)| n == name))
    };
    eventually("both tables reach HubSpot", WAIT, converged).await;
    let (_, crm) = names().await;
    for i in 0..400 {
        let (table, key) = if i % 4 < 2 {
            ("contacts", 1 + i % KEYS)
        } else {
            ("contacts_b", 1001 + i % KEYS)
        };
        if i % 2 == 0 {
            db.exec(&format!(
                "UPDATE {table} SET first_name = 'P{i}' WHERE id = {key}"
            ))
            .await;
        } else {
            let id = &crm[&key].0;
            let body = json!({"properties": {"firstname": format!("H{i}")}});
            let (status, _) = emulator
                .post(&format!("/_emulator/objects/contacts/{id}/edit"), &body)
                .await;
            assert_eq!(status, 200);
        }
    }
    eventually("both sinks converge both ways", 2 * WAIT, converged).await;
    let st = emulator.state().await;
    let requests = &st["requests"];
    println!(
        "two sinks, one account: {} requests, at most {} in a 10 s window, {} rate limited",
        requests["total"], requests["maxInAnyWindow"], requests["rateLimited"]
    );
    // The emulator's burst limit is HubSpot's default, 100 per 10 s.
    assert_eq!(requests["rateLimited"], 0, "{requests}");
    assert!(
        requests["maxInAnyWindow"].as_u64().unwrap() <= 100,
        "{requests}"
    );
    assert_eq!(run.stop(), Some(0), "{}", run.log_text());
}
